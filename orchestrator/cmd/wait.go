package cmd

import (
	"context"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/sshq/sshq/orchestrator"
)

// WaitOptions are `sshq wait`'s.
type WaitOptions struct {
	IO         *IOStreams
	Ctx        context.Context
	Controller func() (Controller, error)

	Jobs     []string
	Interval time.Duration
	JSON     bool
}

// NewCmdWait builds `sshq wait`; runF replaces waitRun in tests.
func NewCmdWait(f *Factory, runF func(*WaitOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "wait",
		Usage:     "block until jobs end; exit with the last failing one's code",
		ArgsUsage: "JOB...",
		Description: `Asks the jobs' nodes every --interval until every job has ended. Exits 0 when all
SUCCEEDED, else with the exit code of the last failing job: its own for FAILED, 124 for TIMEOUT
(as timeout(1)), 137 for OUT_OF_MEMORY (128+SIGKILL, as for a job the kernel's OOM killer
ended), 1 for LOST or CANCELLED without one. The jobs keep running if wait is interrupted.

Examples:
   sshq wait 12 13 && echo all good
   sshq wait 12 13 --json | jq '.[] | {id, state, exit_code}'
   sshq launch -d task.yaml | xargs sshq wait`,
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "interval", Value: 2 * time.Second, Usage: "how often to ask the nodes"},
			&cli.BoolFlag{Name: "json", Usage: "print the ended jobs as JSON (the fields of `sshq queue --json`)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return usageErr("wait needs job ids: `sshq wait 12 13`")
			}
			opts := &WaitOptions{IO: f.IO, Ctx: c.Context, Controller: opener(c, f),
				Jobs: c.Args().Slice(), Interval: c.Duration("interval"), JSON: c.Bool("json")}
			if runF != nil {
				return runF(opts)
			}
			return waitRun(opts)
		},
	}
}

func waitRun(opts *WaitOptions) error {
	ctrl, err := opts.Controller()
	if err != nil {
		return err
	}
	defer ctrl.Close()
	v, err := ctrl.Wait(opts.Ctx, orchestrator.WaitRequest{Refs: opts.Jobs, Interval: opts.Interval})
	if err != nil {
		return err
	}
	if opts.JSON {
		if err := writeJSONLines(opts.IO.Out, v.Jobs); err != nil {
			return err
		}
	} else {
		for _, j := range v.Jobs {
			fmt.Fprintf(opts.IO.Out, "#%d %s: %s\n", j.ID, j.Name, j.State)
		}
	}
	if v.ExitCode != 0 {
		return &ExitError{Code: v.ExitCode}
	}
	return nil
}
