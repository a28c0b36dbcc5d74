package cmd

import (
	"errors"
	"os"
	"os/exec"

	"github.com/urfave/cli/v2"
)

// AttachOptions are `sshq attach`'s.
type AttachOptions struct {
	IO         *IOStreams
	Controller func() (Controller, error)
	Exec       func(path string, argv, env []string) error

	Job string
}

// NewCmdAttach builds `sshq attach`; runF replaces attachRun in tests.
func NewCmdAttach(f *Factory, runF func(*AttachOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "attach",
		Usage:     "open the job's tmux session on its node (detach with Ctrl-b d)",
		ArgsUsage: "JOB",
		Description: `Replaces this process with the system ssh client: ssh -t NODE tmux -L sshq attach -t UID.
The job keeps running when you detach (Ctrl-b d) or the connection drops. Needs a terminal;
in a script or a pipe, read the output with sshq logs -f JOB.

Examples:
   sshq attach 12
   sshq attach train`,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageErr("attach takes one job: `sshq attach 12`")
			}
			opts := &AttachOptions{IO: f.IO, Controller: opener(c, f), Exec: f.Exec, Job: c.Args().First()}
			if runF != nil {
				return runF(opts)
			}
			return attachRun(opts)
		},
	}
}

func attachRun(opts *AttachOptions) error {
	ctrl, err := opts.Controller()
	if err != nil {
		return err
	}
	defer ctrl.Close()
	t, err := ctrl.Attach(opts.Job)
	if err != nil {
		return err
	}
	if !opts.IO.InTTY || !opts.IO.OutTTY {
		// ssh -t would attach tmux to no terminal and fail obscurely.
		return usageErr("attach needs a terminal, and this is not one; to read job #%d's output here, use `sshq logs -f %d`", t.Job.ID, t.Job.ID)
	}
	sshPath, err := exec.LookPath("ssh")
	if err != nil {
		return errors.New("attach needs the OpenSSH client (`ssh`) on this machine")
	}
	return opts.Exec(sshPath, t.Argv, os.Environ())
}
