package cmd

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/task"
)

// ForwardOptions are `sshq forward`'s.
type ForwardOptions struct {
	IO         *IOStreams
	Ctx        context.Context
	Controller func() (Controller, error)

	Job   string
	Specs []string // [LOCAL:]REMOTE
}

// NewCmdForward builds `sshq forward`; runF replaces forwardRun in tests.
func NewCmdForward(f *Factory, runF func(*ForwardOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "forward",
		Usage:     "reach a job's ports from this machine (ssh -L), until Ctrl-C",
		ArgsUsage: "JOB [LOCAL:]REMOTE...",
		Description: `Each REMOTE port of the job's node (its 127.0.0.1: where Jupyter, TensorBoard, a vLLM server
listen by default) is reachable here on 127.0.0.1:LOCAL (LOCAL is REMOTE unless given; 0 takes
any free port), through the one SSH connection to the node. It runs until Ctrl-C (exit 0);
the job is not affected. The URLs go to standard output, one per line.
The node's sshd must allow TCP forwarding (AllowTcpForwarding, the default).

Examples:
   sshq forward 12 8888              # Jupyter on the node → http://127.0.0.1:8888
   sshq forward train 16006:6006     # TensorBoard on local port 16006
   sshq forward 12 8000 8265`,
		Action: func(c *cli.Context) error {
			if c.NArg() < 2 {
				return usageErr("forward takes a job and at least one port: `sshq forward 12 8888` (or LOCAL:REMOTE, as in 18888:8888)")
			}
			opts := &ForwardOptions{IO: f.IO, Ctx: c.Context, Controller: opener(c, f),
				Job: c.Args().First(), Specs: c.Args().Tail()}
			if runF != nil {
				return runF(opts)
			}
			return forwardRun(opts)
		},
	}
}

// parsePortSpecs reads [LOCAL:]REMOTE words.
func parsePortSpecs(specs []string, flag string) ([]orchestrator.PortForward, error) {
	var out []orchestrator.PortForward
	for _, s := range specs {
		l, r, pair := strings.Cut(s, ":")
		if !pair {
			r = l
		}
		remote, rerr := strconv.Atoi(r)
		local, lerr := strconv.Atoi(l)
		if rerr != nil || lerr != nil || remote < 1 || remote > 65535 || local < 0 || local > 65535 || (!pair && local == 0) {
			return nil, usageErr("%s%q: write a port of the node (8888), or LOCAL:REMOTE (18888:8888; 0:8888 takes any free local port), each from 1 to 65535", flag, s)
		}
		out = append(out, orchestrator.PortForward{Local: local, Remote: remote})
	}
	return out, nil
}

func forwardRun(opts *ForwardOptions) error {
	ports, err := parsePortSpecs(opts.Specs, "")
	if err != nil {
		return err
	}
	ctrl, err := opts.Controller()
	if err != nil {
		return err
	}
	defer ctrl.Close()
	errOut := opts.IO.ErrOut
	var j string
	err = ctrl.Forward(opts.Ctx, orchestrator.ForwardRequest{Ref: opts.Job, Ports: ports, Check: true,
		Ready: func(v *orchestrator.ForwardView) {
			j = fmt.Sprintf("job #%d", v.Job.ID)
			fmt.Fprintf(errOut, "sshq: forwarding to job #%d (%s) on %s; Ctrl-C stops\n", v.Job.ID, v.Job.Name, v.Job.Node)
			printForwards(opts.IO, v, true)
		},
		Notef: func(format string, a ...any) { fmt.Fprintf(errOut, "sshq: "+format+"\n", a...) },
	})
	if err != nil {
		return err
	}
	if j != "" {
		fmt.Fprintf(errOut, "sshq: stopped forwarding; %s was not affected\n", j)
	}
	return nil
}

// printForwards shows where each port is reachable: the URLs on standard
// output (urls) or all on standard error.
func printForwards(io *IOStreams, v *orchestrator.ForwardView, urls bool) {
	for _, p := range v.Ports {
		line := fmt.Sprintf("%s → %s:%d", p.URL, v.Job.Node, p.Remote)
		if p.Moved {
			line += fmt.Sprintf(" (local port %d was taken)", p.Remote)
		}
		if p.Problem != "" {
			line += ": " + p.Problem + "; connections are tunnelled once it does"
		}
		if urls {
			fmt.Fprintln(io.Out, p.URL)
			if p.Problem != "" || p.Moved {
				fmt.Fprintf(io.ErrOut, "sshq: %s\n", line)
			}
			continue
		}
		fmt.Fprintf(io.ErrOut, "sshq: forwarding %s\n", line)
	}
}

// taskPorts are the ports of resources.ports, forwarded while attached.
func taskPorts(t *task.Task) []orchestrator.PortForward {
	var out []orchestrator.PortForward
	for _, p := range t.Resources.Ports {
		out = append(out, orchestrator.PortForward{Local: p, Remote: p, AnyIfTaken: true})
	}
	return out
}
