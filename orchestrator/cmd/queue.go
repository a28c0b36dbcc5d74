package cmd

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/ui"
)

// QueueOptions are `sshq queue`'s.
type QueueOptions struct {
	IO         *IOStreams
	Ctx        context.Context
	Controller func() (Controller, error)

	All  bool
	JSON bool
}

// NewCmdQueue builds `sshq queue`; runF replaces queueRun in tests.
func NewCmdQueue(f *Factory, runF func(*QueueOptions) error) *cli.Command {
	return &cli.Command{
		Name:  "queue",
		Usage: "this controller's jobs, checked against their nodes",
		Description: `Asks each node about this controller's unfinished jobs (one command per node) and shows them.
Jobs on a node that does not answer keep their last known state and are marked.

Examples:
   sshq queue
   sshq queue -a                 # include ended jobs
   sshq queue --json | jq '.[] | select(.state=="FAILED") | .id'

LIMITS are the job's --mem, --time and --cpus (or config.yaml's defaults); REASON is why it
waits (the node's disk under its floor) or how a limit ended it (OUT_OF_MEMORY: its memory
peak and limit, or "node memory low"; TIMEOUT: its time limit).`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "include ended jobs"},
			&cli.BoolFlag{Name: "json", Usage: "machine-readable output"},
		},
		Action: func(c *cli.Context) error {
			opts := &QueueOptions{IO: f.IO, Ctx: c.Context, Controller: opener(c, f), All: c.Bool("all"), JSON: c.Bool("json")}
			if runF != nil {
				return runF(opts)
			}
			return queueRun(opts)
		},
	}
}

func queueRun(opts *QueueOptions) error {
	ctrl, err := opts.Controller()
	if err != nil {
		return err
	}
	defer ctrl.Close()
	v, err := ctrl.Queue(opts.Ctx, opts.All)
	if err != nil {
		return err
	}
	if opts.JSON {
		if err := writeJSONLines(opts.IO.Out, v.Jobs); err != nil {
			return err
		}
	} else {
		renderQueue(opts.IO, v.Jobs)
	}
	if v.NotRecorded != nil {
		// The jobs shown are what the nodes said; only the record is
		// behind, and the next launch would fail on it.
		fmt.Fprintf(opts.IO.ErrOut, "sshq: warning: the jobs are shown as their nodes said, but that could not be recorded: %v\n", v.NotRecorded)
	}
	return v.Err()
}

func renderQueue(io *IOStreams, views []orchestrator.JobView) {
	st := ui.For(io.Out, io.Getenv)
	if len(views) == 0 {
		fmt.Fprintln(io.Out, "no jobs (`sshq queue -a` includes ended ones; `sshq launch` starts one)")
		return
	}
	var rows [][]string
	for _, v := range views {
		state := string(v.State)
		if v.State == job.Pending && v.QueuePosition != nil {
			state = fmt.Sprintf("PENDING (#%d in queue)", *v.QueuePosition)
		}
		if v.Gang != nil {
			state = gangState(v)
		}
		state = st.Paint(stateColor(v.State), state)
		if !v.NodeReachable {
			state += st.Paint(ui.Gray, " (node unreachable)")
		}
		gpus := gpusCell(v)
		started, dur := "-", "-"
		if v.Started != nil {
			started = v.Started.Local().Format("01-02 15:04")
			end := time.Now()
			if v.Ended != nil {
				end = *v.Ended
			}
			dur = humanDuration(end.Sub(*v.Started))
		}
		exit := "-"
		if v.ExitCode != nil {
			exit = fmt.Sprint(*v.ExitCode)
		}
		node := orDash(v.NodeList())
		if isSlurm(v) {
			node = slurmNode(v)
		}
		rows = append(rows, []string{fmt.Sprint(v.ID), v.Name, v.User, node, gpus, limitsCell(v.Job), state,
			v.Submitted.Local().Format("01-02 15:04"), started, dur, exit, ui.Safe(orDash(v.Reason))})
	}
	fmt.Fprint(io.Out, st.Table([]string{"ID", "NAME", "USER", "NODE", "GPUS", "LIMITS", "STATE", "SUBMITTED", "STARTED", "DURATION", "EXIT", "REASON"}, rows))
}

// gpusCell is the GPUS column: how many, then which: `2 (0,1)` once they
// are leased, `1 (waiting)` before, `-` for a job that asked for none.
func gpusCell(v orchestrator.JobView) string {
	if v.Gang != nil && v.NumGPUs > 0 {
		// Per node, as the task asks; each rank's are in --json.
		return fmt.Sprintf("%d/node", v.NumGPUs)
	}
	switch {
	case isSlurm(v) && v.NumGPUs > 0:
		// Slurm names no GPU indices: CUDA_VISIBLE_DEVICES tells the job.
		return fmt.Sprint(v.NumGPUs)
	case len(v.GPUs) > 0:
		idx := make([]string, len(v.GPUs))
		for i, g := range v.GPUs {
			idx[i] = fmt.Sprint(g)
		}
		return fmt.Sprintf("%d (%s)", len(v.GPUs), strings.Join(idx, ","))
	case v.NumGPUs == 0:
		return "-"
	case !v.State.Terminal():
		return fmt.Sprintf("%d (waiting)", v.NumGPUs)
	}
	return fmt.Sprintf("%d (none)", v.NumGPUs) // it ended before it got them
}

// gangState is a multi-node job's STATE cell: while it waits, how many
// ranks hold their GPUs and which are parked; once it ended otherwise than
// well, the rank that ended it.
func gangState(v orchestrator.JobView) string {
	g := v.Gang
	switch {
	case v.State == job.Pending:
		hold, park := 0, []string{}
		for _, r := range g.Ranks {
			switch r.Mode {
			case "hold":
				hold++
			case "park":
				park = append(park, fmt.Sprint(r.Rank))
			}
		}
		s := fmt.Sprintf("PENDING (%d/%d ranks hold their GPUs", hold, len(g.Ranks))
		if len(park) > 0 {
			s += "; parked: rank " + strings.Join(park, ",")
		}
		return s + ")"
	case v.State.Terminal() && v.State != job.Succeeded && g.Cause != "":
		return fmt.Sprintf("%s (%s)", v.State, g.Cause)
	}
	return string(v.State)
}
