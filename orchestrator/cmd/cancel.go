package cmd

import (
	"context"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/remote"
)

// CancelOptions are `sshq cancel`'s.
type CancelOptions struct {
	IO         *IOStreams
	Ctx        context.Context
	Controller func() (Controller, error)

	Jobs  []string
	All   bool
	Grace time.Duration
	JSON  bool
}

// NewCmdCancel builds `sshq cancel`; runF replaces cancelRun in tests.
func NewCmdCancel(f *Factory, runF func(*CancelOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "cancel",
		Usage:     "stop jobs: their whole process trees, freeing their GPUs",
		ArgsUsage: "JOB...",
		Description: `Asks the jobs' nodes how they are first: a job that has already ended is reported as it
ended, and left alone. To the others it sends SIGTERM, to every process of each job (setsid
children too), then SIGKILL after the grace period. A waiting job leaves its node's queue and
the jobs behind it move up.

Examples:
   sshq cancel 12 13
   sshq cancel --all`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all", Usage: "cancel all of this controller's unfinished jobs"},
			&cli.DurationFlag{Name: "grace", Value: remote.DefaultCancelGrace, Usage: "time between SIGTERM and SIGKILL"},
			&cli.BoolFlag{Name: "json", Usage: "machine-readable output"},
		},
		Action: func(c *cli.Context) error {
			opts := &CancelOptions{IO: f.IO, Ctx: c.Context, Controller: opener(c, f),
				Jobs: c.Args().Slice(), All: c.Bool("all"), Grace: c.Duration("grace"), JSON: c.Bool("json")}
			if !opts.All && len(opts.Jobs) == 0 {
				return usageErr("cancel needs job ids (`sshq cancel 12`) or --all")
			}
			if runF != nil {
				return runF(opts)
			}
			return cancelRun(opts)
		},
	}
}

func cancelRun(opts *CancelOptions) error {
	ctrl, err := opts.Controller()
	if err != nil {
		return err
	}
	defer ctrl.Close()
	v, err := ctrl.Cancel(opts.Ctx, orchestrator.CancelRequest{Refs: opts.Jobs, All: opts.All, Grace: opts.Grace})
	if err != nil {
		return err
	}
	if opts.JSON {
		res := v.Jobs
		if res == nil {
			res = []orchestrator.CancelResult{}
		}
		if err := writeJSON(opts.IO.Out, res); err != nil {
			return err
		}
		return v.Err
	}
	for _, r := range v.Jobs {
		fmt.Fprintf(opts.IO.Out, "#%d %s: %s\n", r.ID, r.Name, cancelText(r))
	}
	if len(v.Jobs) == 0 {
		fmt.Fprintln(opts.IO.Out, "no unfinished jobs to cancel")
	}
	return v.Err
}

// cancelText says what happened to one job.
func cancelText(r orchestrator.CancelResult) string {
	switch r.Outcome {
	case orchestrator.CancelDone:
		how := string(r.State)
		if r.ExitCode != nil {
			how += fmt.Sprintf(", exit code %d", *r.ExitCode)
		}
		return "already ended (" + how + "); nothing to cancel"
	case orchestrator.CancelMissing:
		return "unknown on " + r.Node + " (its record there is gone); nothing to cancel"
	case orchestrator.CancelError:
		return "error: " + r.Error
	}
	return r.Outcome
}
