package cmd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/sshq/sshq/orchestrator/demo"
	"github.com/sshq/sshq/orchestrator/ui"
)

// DemoOptions are `sshq demo`'s.
type DemoOptions struct {
	IO         *IOStreams
	Ctx        context.Context
	Executable func() (string, error)

	Tour bool
	Dir  string
}

// NewCmdDemo builds `sshq demo`; runF replaces demoRun in tests.
func NewCmdDemo(f *Factory, runF func(*DemoOptions) error) *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run a local 3-node GPU cluster inside sshq (simulated GPUs, real SSH, tmux and flock)",
		Description: `Starts three nodes in this process, each an SSH server on a 127.0.0.x address with its own home,
tmux socket, GPU lease directory and a simulated nvidia-smi (2× A100 80GB, 4× RTX 4090, 1× T4),
and prints the variables that point sshq at them. Runs until Ctrl-C (or the terminal closes),
then stops every node and job it started. Needs tmux.

Examples:
   sshq demo               # then, in another terminal, export what it printed and try sshq status
   sshq demo --tour        # a scripted walk: status, launch, queue, logs, cancel, status`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "tour", Usage: "run a short scripted tour, then stop"},
			&cli.StringFlag{Name: "dir", Usage: "where the demo keeps its nodes and files (removed after a tour)", DefaultText: "$TMPDIR/sshq-demo-$UID"},
		},
		Action: func(c *cli.Context) error {
			opts := &DemoOptions{IO: f.IO, Ctx: c.Context, Executable: f.Executable, Tour: c.Bool("tour"), Dir: c.String("dir")}
			if runF != nil {
				return runF(opts)
			}
			return demoRun(opts)
		},
	}
}

func demoRun(opts *DemoOptions) error {
	ctx, stop := demo.UntilStopped(opts.Ctx)
	defer stop()
	out := opts.IO.Out
	dir := opts.Dir
	if dir == "" {
		// The tour has its own directory, so it never disturbs a demo you
		// keep running, and it leaves nothing behind.
		name := "sshq-demo"
		if opts.Tour {
			name = "sshq-demo-tour"
		}
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("%s-%d", name, os.Getuid()))
	}
	cl, err := demo.Start(dir, demo.DefaultNodes)
	if err != nil {
		return err
	}
	defer cl.Close()
	if opts.Tour {
		defer os.RemoveAll(cl.Dir)
	}
	st := ui.For(out, opts.IO.Getenv)
	fmt.Fprintf(out, "sshq demo: %d nodes up\n", len(cl.Nodes))
	for _, n := range cl.Nodes {
		fmt.Fprintf(out, "  %-10s %s:%-5d %d× %s\n", n.Name, n.IP, n.Port, len(n.GPUs), n.GPUs[0].Name)
	}
	if opts.Tour {
		exe, err := opts.Executable()
		if err != nil {
			return err
		}
		if err := demo.Tour(ctx, cl, exe, out, st.Bold); err != nil {
			return err
		}
		fmt.Fprintln(out, "\nTour done: every job ended as expected. Run `sshq demo` to keep the cluster up and try your own commands.")
		return nil
	}
	fmt.Fprintf(out, "\nPoint sshq at it from another terminal:\n  export %s\nthen try:\n  sshq status\n  sshq launch --gpus A100:1 -- 'nvidia-smi -L -i $CUDA_VISIBLE_DEVICES'\n\nCtrl-C stops the nodes and their jobs.\n",
		strings.Join(cl.Env(), " "))
	<-ctx.Done()
	fmt.Fprintln(opts.IO.ErrOut, "\nsshq demo: stopping nodes and jobs")
	return nil
}
