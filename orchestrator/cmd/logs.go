package cmd

import (
	"context"
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/sshq/sshq/orchestrator"
)

// LogsOptions are `sshq logs`'s.
type LogsOptions struct {
	IO         *IOStreams
	Ctx        context.Context
	Controller func() (Controller, error)

	Job    string
	Follow bool
	Tail   int
	Rank   *int // one rank of a multi-node job
}

// NewCmdLogs builds `sshq logs`; runF replaces logsRun in tests.
func NewCmdLogs(f *Factory, runF func(*LogsOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "logs",
		Usage:     "print a job's output",
		ArgsUsage: "JOB",
		Description: `JOB is an id (12 or #12), a uid or a unique name. With -f, follows the output until the job
ends and exits with the job's exit code. A multi-node job's ranks interleave, each line after
"(rank N, NODE)"; --rank N shows one rank's lines as it wrote them.

Examples:
   sshq logs 12
   sshq logs -f --tail 50 train
   sshq logs --rank 1 12           # rank 1 of a multi-node job`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "follow until the job ends; exit with its code"},
			&cli.IntFlag{Name: "tail", Aliases: []string{"n"}, Value: -1, DefaultText: "all", Usage: "only the last `N` lines"},
			&cli.IntFlag{Name: "rank", Usage: "only rank `N` of a multi-node job"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageErr("logs takes one job: `sshq logs JOB` (ids are in `sshq queue`)")
			}
			opts := &LogsOptions{IO: f.IO, Ctx: c.Context, Controller: opener(c, f),
				Job: c.Args().First(), Follow: c.Bool("follow"), Tail: c.Int("tail")}
			if c.IsSet("rank") {
				r := c.Int("rank")
				opts.Rank = &r
			}
			if runF != nil {
				return runF(opts)
			}
			return logsRun(opts)
		},
	}
}

func logsRun(opts *LogsOptions) error {
	ctrl, err := opts.Controller()
	if err != nil {
		return err
	}
	defer ctrl.Close()
	v, err := ctrl.Logs(opts.Ctx, orchestrator.LogsRequest{
		Ref: opts.Job, Tail: opts.Tail, Follow: opts.Follow, Rank: opts.Rank, Out: opts.IO.Out, ErrOut: opts.IO.ErrOut,
		Notef: func(format string, a ...any) { fmt.Fprintf(opts.IO.ErrOut, "sshq: "+format+"\n", a...) },
	})
	if opts.Ctx.Err() != nil || errors.Is(err, context.Canceled) {
		// Like tail -f: interrupted, not the job's outcome.
		return &ExitError{Code: ExitInterrupted}
	}
	if err != nil {
		return err
	}
	if v.ExitCode != 0 {
		return &ExitError{Code: v.ExitCode}
	}
	return nil
}
