package cmd

import (
	"context"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/sshq/sshq/inventory"
	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/ui"
)

// NodesOptions are `sshq nodes`'s.
type NodesOptions struct {
	IO         *IOStreams
	Ctx        context.Context
	Controller func() (Controller, error)

	Resolve bool
	JSON    bool
}

// NewCmdNodes builds `sshq nodes`; runF replaces nodesRun in tests.
func NewCmdNodes(f *Factory, runF func(*NodesOptions) error) *cli.Command {
	return &cli.Command{
		Name:  "nodes",
		Usage: "list the nodes and check that each is ready for sshq",
		Description: `Connects to every node (in parallel, each within its ConnectTimeout) and checks what sshq
needs there: bash, tmux, flock, nvidia-smi, a usable GPU lease directory, and that a
workdir sync (SFTP) gets through. LIMITS says how the node holds a job to --mem: "cgroup"
(a systemd user scope with MemoryMax, where the user's systemd delegates memory and the
user lingers) or "watchdog" (the job's wrapper sums its processes' memory every second),
and the memory it keeps available (SSHQ_RESERVE_MEM).

Examples:
   sshq nodes                      # check every node
   sshq nodes --resolve            # print each node's ssh settings, like ssh -G, without connecting
   sshq --nodes 'gpu-*' nodes --json`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "resolve", Usage: "print resolved ssh settings without connecting"},
			&cli.BoolFlag{Name: "json", Usage: "machine-readable output"},
		},
		Action: func(c *cli.Context) error {
			opts := &NodesOptions{IO: f.IO, Ctx: c.Context, Controller: opener(c, f),
				Resolve: c.Bool("resolve"), JSON: c.Bool("json")}
			if runF != nil {
				return runF(opts)
			}
			return nodesRun(opts)
		},
	}
}

func nodesRun(opts *NodesOptions) error {
	ctrl, err := opts.Controller()
	if err != nil {
		return err
	}
	defer ctrl.Close()
	if opts.Resolve {
		return resolveRun(opts, ctrl)
	}
	v, err := ctrl.Nodes(opts.Ctx)
	if err != nil {
		return err
	}
	if opts.JSON {
		if err := writeJSON(opts.IO.Out, v); err != nil {
			return err
		}
		return v.Err()
	}
	st := ui.For(opts.IO.Out, opts.IO.Getenv)
	var rows [][]string
	for _, r := range v.Nodes {
		state := st.Paint(ui.Green, "ready")
		note := strings.Join(r.Problems, "; ")
		switch {
		case !r.Reachable:
			state = st.Paint(ui.Red, "down")
			note = r.Error
		case !r.Ready:
			state = st.Paint(ui.Yellow, "not ready")
		}
		lat, leases := "-", "-"
		if r.Reachable {
			lat = fmt.Sprintf("%dms", r.LatencyMS)
			// Whether the admin made the lease directory (README: the
			// admin step); either way no co-tenant can share a GPU.
			leases = "shared"
			if r.LeaseDirProvisioned {
				leases = "provisioned"
			}
		}
		rows = append(rows, []string{r.Name, fmt.Sprintf("%s:%d", r.Host, r.Port), state, lat, fmt.Sprint(r.GPUs), nodeLimits(r), leases, note})
	}
	rows = append(rows, slurmNodeRows(st, v.Slurm)...)
	fmt.Fprint(opts.IO.Out, st.Table([]string{"NODE", "ADDRESS", "STATE", "LATENCY", "GPUS", "LIMITS", "LEASE DIR", "NOTES"}, rows))
	return v.Err()
}

// nodeLimits is how a node holds jobs to their limits: its --mem
// mechanism and the memory it keeps back.
func nodeLimits(r orchestrator.NodeCheck) string {
	if r.MemLimit == "" {
		return "-"
	}
	return fmt.Sprintf("%s, reserve %s", r.MemLimit, ui.MiB(int(r.ReserveMemMiB)))
}

func resolveRun(opts *NodesOptions, ctrl Controller) error {
	nodes, err := ctrl.Resolve(opts.Ctx)
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(opts.IO.Out, map[string]any{"nodes": nodes})
	}
	st := ui.For(opts.IO.Out, opts.IO.Getenv)
	var rows [][]string
	for _, n := range nodes {
		jump := n.ProxyJump
		if jump == "" {
			jump = "-"
		}
		rows = append(rows, []string{n.Name, n.HostName, fmt.Sprint(n.Port), n.User, strings.Join(existing(n.IdentityFiles), ","), jump, n.StrictHostKeyChecking})
	}
	fmt.Fprint(opts.IO.Out, st.Table([]string{"NODE", "HOSTNAME", "PORT", "USER", "IDENTITY", "PROXYJUMP", "HOSTKEY"}, rows))
	return nil
}

func existing(files []string) []string {
	var out []string
	for _, f := range files {
		if inventory.IdentityExists(f) {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		return []string{"(agent)"}
	}
	return out
}
