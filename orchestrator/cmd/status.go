package cmd

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/orchestrator/ui"
)

// StatusOptions are `sshq status`'s.
type StatusOptions struct {
	IO         *IOStreams
	Ctx        context.Context
	Controller func() (Controller, error)

	JSON  bool
	Watch time.Duration // refresh period; 0 prints once
}

// NewCmdStatus builds `sshq status`; runF replaces statusRun in tests.
func NewCmdStatus(f *Factory, runF func(*StatusOptions) error) *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "the whole cluster at a glance: GPUs, who holds them, node health",
		Description: `Probes every node in parallel over its pooled ssh connection (one command per node) and shows
each GPU's memory, utilization and holder: an sshq job (#id name (user)), a foreign process
(pid user) started outside sshq, or free. Unreachable nodes are listed with the reason.
Exit code 3 when a node is unreachable; --watch runs until Ctrl-C, then exits 130.

Examples:
   sshq status
   sshq status --watch          # refresh every 2 s until Ctrl-C
   sshq status --json | jq '.nodes[].gpus[] | select(.state=="free") | .uuid'`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "machine-readable output"},
			&cli.Float64Flag{Name: "watch", Aliases: []string{"w"}, DefaultText: "off; 2 when given without a value", Usage: "refresh every `SECONDS`"},
		},
		Action: func(c *cli.Context) error {
			opts := &StatusOptions{IO: f.IO, Ctx: c.Context, Controller: opener(c, f),
				JSON: c.Bool("json"), Watch: seconds(c.Float64("watch"))}
			if runF != nil {
				return runF(opts)
			}
			return statusRun(opts)
		},
	}
}

func statusRun(opts *StatusOptions) error {
	ctrl, err := opts.Controller()
	if err != nil {
		return err
	}
	defer ctrl.Close()
	ctx := opts.Ctx
	if opts.Watch <= 0 || opts.JSON {
		v, err := ctrl.Status(ctx)
		if err != nil {
			return err
		}
		if opts.JSON {
			if err := writeJSON(opts.IO.Out, v); err != nil {
				return err
			}
		} else {
			fmt.Fprint(opts.IO.Out, renderStatus(ui.For(opts.IO.Out, opts.IO.Getenv), v))
		}
		return v.Err()
	}
	st := ui.For(opts.IO.Out, opts.IO.Getenv)
	for {
		v, err := ctrl.Status(ctx)
		if ctx.Err() != nil {
			return &ExitError{Code: ExitInterrupted}
		}
		if err != nil {
			return err
		}
		frame := renderStatus(st, v)
		if st.TTY {
			fmt.Fprint(opts.IO.Out, "\x1b[H\x1b[2J"+frame)
		} else {
			fmt.Fprintf(opts.IO.Out, "--- %s\n%s", time.Now().Format(time.TimeOnly), frame)
		}
		select {
		case <-ctx.Done():
			// Interrupted, like every command: scripts can tell a watch
			// that was stopped from one that ended by itself.
			return &ExitError{Code: ExitInterrupted}
		case <-time.After(opts.Watch):
		}
	}
}

func renderStatus(st ui.Style, v *orchestrator.StatusView) string {
	var b strings.Builder
	free, total, waiting, running, noGPU := 0, 0, 0, 0, 0
	for _, n := range v.Nodes {
		if !n.Reachable {
			fmt.Fprintf(&b, "%s  %s  %s\n\n", st.Bold(n.Name), st.Paint(ui.Red, "down"), ui.Safe(n.Error))
			continue
		}
		running += len(n.Running)
		fmt.Fprintf(&b, "%s  %s  load %s/%s CPUs  RAM %s free of %s  disk %s free\n", st.Bold(n.Name), st.Paint(ui.Green, "up"),
			fmtLoad(n.Load1), fmtInt(n.CPUs), ui.MiB(int(n.MemAvailableMiB)), ui.MiB(int(n.MemTotalMiB)), ui.MiB(int(n.DiskFreeMiB)))
		if len(n.GPUs) == 0 {
			msg := n.GPUMessage
			if msg == "" {
				msg = string(n.GPUState)
			}
			fmt.Fprintf(&b, "  no GPUs: %s\n", ui.Safe(msg))
		} else {
			var rows [][]string
			for _, g := range n.GPUs {
				total++
				holder := st.Paint(ui.Green, "free")
				switch g.State {
				case "free":
					free++
				case "leased":
					if g.Holder != nil {
						holder = st.Paint(ui.Blue, fmt.Sprintf("#%d %s (%s)%s%s", g.Holder.JobID, ui.Safe(g.Holder.Name), ui.Safe(orDash(g.Holder.User)), gangLabel(g.Holder.Gang), runLimits(n.Running, g.Holder.JobUID)))
					} else {
						holder = st.Paint(ui.Blue, "leased")
					}
				case orchestrator.GPUReserved:
					// A rank holding its GPUs until the other ranks hold theirs.
					holder = st.Paint(ui.Yellow, "reserved")
					if g.Holder != nil {
						holder = st.Paint(ui.Yellow, fmt.Sprintf("reserved: #%d %s (%s)%s, waiting for its other nodes", g.Holder.JobID, ui.Safe(g.Holder.Name), ui.Safe(orDash(g.Holder.User)), gangLabel(g.Holder.Gang)))
					}
				case "foreign":
					var ps []string
					for _, p := range g.Processes {
						ps = append(ps, fmt.Sprintf("pid %d %s", p.PID, ui.Safe(orDash(p.User))))
					}
					holder = st.Paint(ui.Yellow, "foreign: "+strings.Join(ps, ", "))
				default:
					holder = st.Paint(ui.Red, ui.Safe(g.State))
				}
				util := "-"
				if g.UtilizationPct != nil {
					util = fmt.Sprintf("%d%%", *g.UtilizationPct)
				}
				rows = append(rows, []string{fmt.Sprint(g.Index), ui.Safe(g.Name), ui.MiBOf(g.MemoryUsedMiB) + " / " + ui.MiBOf(g.MemoryTotalMiB), util, holder})
			}
			b.WriteString(indent(st.Table([]string{"GPU", "MODEL", "MEMORY", "UTIL", "HOLDER"}, rows), "  "))
		}
		if len(n.Queue) > 0 {
			var rows [][]string
			for _, q := range n.Queue {
				waiting++
				rows = append(rows, []string{fmt.Sprint(q.Position), ui.Safe(q.Name) + gangLabel(q.Gang), ui.Safe(orDash(q.User)), fmt.Sprint(q.NumGPUs), humanSince(q.Since)})
			}
			b.WriteString("  waiting:\n")
			b.WriteString(indent(st.Table([]string{"POS", "JOB", "USER", "GPUS", "WAITING"}, rows), "  "))
		}
		var cpu []string
		for _, j := range n.Running {
			if len(j.GPUs) == 0 {
				noGPU++
				cpu = append(cpu, fmt.Sprintf("#%d %s (%s)%s%s", j.JobID, ui.Safe(j.Name), ui.Safe(orDash(j.User)), gangLabel(j.Gang), runLimits(n.Running, j.JobUID)))
			}
		}
		if len(cpu) > 0 {
			fmt.Fprintf(&b, "  running without GPUs: %s\n", st.Paint(ui.Blue, strings.Join(cpu, ", ")))
		}
		for _, w := range n.Warnings {
			fmt.Fprintf(&b, "  %s %s\n", st.Paint(ui.Yellow, "warning:"), ui.Safe(w))
		}
		b.WriteString("\n")
	}
	b.WriteString(renderSlurm(st, v.Slurm))
	sf, stot, sr, sw := slurmTotals(v.Slurm)
	free, total, running, waiting = free+sf, total+stot, running+sr, waiting+sw
	jobs := fmt.Sprintf("%d running", running)
	if noGPU > 0 {
		jobs += fmt.Sprintf(" (%d without GPUs)", noGPU)
	}
	fmt.Fprintf(&b, "GPUs: %d free / %d total   jobs: %s, %d waiting\n", free, total, jobs, waiting)
	return b.String()
}

// gangLabel names a multi-node job's rank on this node: " rank 1/2", and
// " parked" for one that let its GPUs go for a while.
func gangLabel(g *orchestrator.GangRank) string {
	if g == nil {
		return ""
	}
	s := fmt.Sprintf(" rank %d/%d", g.Rank, g.NumNodes)
	if g.Mode == "park" {
		s += " parked"
	}
	return s
}

// runLimits is " [mem 300M, time 4h]" for a running job of this
// controller's that has limits, else "".
func runLimits(running []orchestrator.RunningJob, uid string) string {
	for _, r := range running {
		if r.JobUID == uid {
			l := limitsCell(&store.Job{MemLimitMiB: r.MemLimitMiB, TimeLimitS: r.TimeLimitS, CPUs: r.CPUs, Cores: r.Cores})
			if l == "-" {
				return ""
			}
			return " [" + l + "]"
		}
	}
	return ""
}
