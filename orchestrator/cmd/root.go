// Package cmd is sshq's command line: one file per command, each an
// options struct (its IO and flags), a NewCmdX that builds the
// urfave/cli command and an xRun that does the work against a Controller,
// the small interface *orchestrator.Controller satisfies. Tests run a
// command in-process with buffers and a fake Controller.
package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/urfave/cli/v2"

	"github.com/sshq/sshq/inventory"
	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/task"
	"github.com/sshq/sshq/sshpool"
)

// Exit codes. Scripts rely on them, so they are part of the interface.
const (
	ExitOK          = 0
	ExitFailure     = 1   // the operation failed
	ExitUsage       = 2   // bad flags, bad task file, bad input: fix the command
	ExitUnreachable = 3   // some nodes could not be reached; the rest was done
	ExitInterrupted = 130 // Ctrl-C
)

// ExitError ends sshq with Code; a nil Err prints nothing (the code is a
// job's own exit code, already explained).
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return ""
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

func usageErr(format string, a ...any) error {
	return &ExitError{ExitUsage, fmt.Errorf(format, a...)}
}

// Controller is what the commands ask of the controller: one method per
// verb, each returning a view. *orchestrator.Controller is the real one.
type Controller interface {
	Status(ctx context.Context) (*orchestrator.StatusView, error)
	Nodes(ctx context.Context) (*orchestrator.NodesView, error)
	Resolve(ctx context.Context) ([]inventory.Node, error)
	Plan(ctx context.Context, t *task.Task, node string) (orchestrator.Placement, error)
	Launch(ctx context.Context, r orchestrator.LaunchRequest) (*orchestrator.LaunchView, error)
	Queue(ctx context.Context, all bool) (*orchestrator.QueueView, error)
	Logs(ctx context.Context, r orchestrator.LogsRequest) (*orchestrator.LogsView, error)
	Cancel(ctx context.Context, r orchestrator.CancelRequest) (*orchestrator.CancelView, error)
	Wait(ctx context.Context, r orchestrator.WaitRequest) (*orchestrator.WaitView, error)
	Attach(ref string) (*orchestrator.AttachTarget, error)
	Shell(ctx context.Context, r orchestrator.ShellRequest) (*orchestrator.ShellView, error)
	Forward(ctx context.Context, r orchestrator.ForwardRequest) error
	Download(ctx context.Context, r orchestrator.DownloadRequest) (*orchestrator.DownloadView, error)
	Init(patterns []string) (*orchestrator.InitView, error)
	JobRefs(unfinished bool) ([]string, error)
	Close() error
}

// IOStreams is what a command may touch of the outside world.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
	// InTTY and OutTTY: stdin and stdout are terminals.
	InTTY, OutTTY bool
	Getenv        func(string) string
	LookupEnv     func(string) (string, bool)
}

// Factory hands commands their IO and the way to open the controller.
type Factory struct {
	IO      *IOStreams
	Version string
	// Controller opens the controller with the global flags' settings.
	Controller func(orchestrator.ControllerOptions) (Controller, error)
	// Exec replaces the process (attach).
	Exec func(path string, argv, env []string) error
	// Executable is this program's path (the demo tour runs it).
	Executable func() (string, error)
	Hostname   func() (string, error)
}

// NewFactory is the Factory of the real process.
func NewFactory(version string) *Factory {
	return &Factory{
		IO: &IOStreams{
			In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr,
			InTTY:  isatty.IsTerminal(os.Stdin.Fd()) || isatty.IsCygwinTerminal(os.Stdin.Fd()),
			OutTTY: isatty.IsTerminal(os.Stdout.Fd()) || isatty.IsCygwinTerminal(os.Stdout.Fd()),
			Getenv: os.Getenv, LookupEnv: os.LookupEnv,
		},
		Version: version,
		Controller: func(o orchestrator.ControllerOptions) (Controller, error) {
			c, err := orchestrator.OpenController(o)
			if err != nil {
				return nil, err
			}
			return c, nil
		},
		Exec:       syscall.Exec,
		Executable: os.Executable,
		Hostname:   os.Hostname,
	}
}

// globalFlags are sshq's options that every command shares; they work
// before or after the command. Their environment variables are read by
// controllerOptions, through IOStreams.Getenv.
func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "ssh-config", Usage: "OpenSSH client config listing the nodes [$SSHQ_SSH_CONFIG]", DefaultText: "~/.ssh/config"},
		&cli.StringFlag{Name: "nodes", Usage: "which hosts are nodes: aliases or globs, comma-separated (e.g. gpu-*,!gpu-9) [$SSHQ_NODES]"},
		&cli.StringFlag{Name: "home", Usage: "controller state directory [$SSHQ_HOME]", DefaultText: "~/.sshq"},
		&cli.StringFlag{Name: "slurm", Usage: "which hosts are Slurm login nodes: aliases, comma-separated; jobs placed there go through sbatch [$SSHQ_SLURM]"},
	}
}

// gflag reads a global flag from wherever it was given; one typed after
// the command wins over one typed before it.
func gflag(c *cli.Context, name string) string {
	for _, ctx := range c.Lineage() {
		if ctx.IsSet(name) {
			return ctx.String(name)
		}
	}
	return ""
}

// controllerOptions are the global flags, then the environment.
func controllerOptions(c *cli.Context, f *Factory) orchestrator.ControllerOptions {
	return optionsFrom(map[string]string{"home": gflag(c, "home"), "ssh-config": gflag(c, "ssh-config"), "nodes": gflag(c, "nodes"), "slurm": gflag(c, "slurm")}, f)
}

// optionsFrom completes the global flags' values with the environment.
func optionsFrom(flags map[string]string, f *Factory) orchestrator.ControllerOptions {
	o := orchestrator.ControllerOptions{
		Home: flags["home"], SSHConfig: flags["ssh-config"], Nodes: flags["nodes"],
		Warn: func(w string) { fmt.Fprintf(f.IO.ErrOut, "sshq: warning: %s\n", w) },
	}
	if o.Nodes != "" {
		o.NodesFrom = "--nodes"
	} else if o.Nodes = f.IO.Getenv("SSHQ_NODES"); o.Nodes != "" {
		o.NodesFrom = "SSHQ_NODES"
	}
	if o.Slurm = flags["slurm"]; o.Slurm != "" {
		o.SlurmFrom = "--slurm"
	} else if o.Slurm = f.IO.Getenv("SSHQ_SLURM"); o.Slurm != "" {
		o.SlurmFrom = "SSHQ_SLURM"
	}
	if o.Home == "" {
		o.Home = f.IO.Getenv("SSHQ_HOME")
	}
	if o.SSHConfig == "" {
		o.SSHConfig = f.IO.Getenv("SSHQ_SSH_CONFIG")
	}
	return o
}

// opener binds the Factory's Controller to this invocation's global flags.
func opener(c *cli.Context, f *Factory) func() (Controller, error) {
	return func() (Controller, error) { return f.Controller(controllerOptions(c, f)) }
}

// commands lists sshq's commands in help order.
func commands(f *Factory) []*cli.Command {
	cmds := []*cli.Command{
		NewCmdLaunch(f, nil),
		NewCmdShell(f, nil),
		NewCmdQueue(f, nil),
		NewCmdLogs(f, nil),
		NewCmdCancel(f, nil),
		NewCmdWait(f, nil),
		NewCmdAttach(f, nil),
		NewCmdForward(f, nil),
		NewCmdDownload(f, nil),
		NewCmdStatus(f, nil),
		NewCmdNodes(f, nil),
		NewCmdInit(f, nil),
		NewCmdDemo(f, nil),
		NewCmdCompletion(f, nil),
	}
	for _, c := range cmds {
		c.Flags = append(c.Flags, globalFlags()...)
		c.OnUsageError = func(c *cli.Context, err error, _ bool) error {
			return usageError(err, c.Command.Flags, "sshq "+c.Command.Name+" --help")
		}
	}
	return cmds
}

// NewApp is sshq's command line.
func NewApp(f *Factory) *cli.App {
	app := &cli.App{
		Name:                 "sshq",
		Version:              f.Version,
		Usage:                "a GPU job queue for the machines in your ~/.ssh/config",
		Description:          "sshq turns hosts you can already ssh into into one GPU job queue, with nothing installed on them.\nNodes are chosen with --nodes, SSHQ_NODES or `sshq init`; Slurm login nodes with --slurm or SSHQ_SLURM.",
		Writer:               f.IO.Out,
		ErrWriter:            f.IO.ErrOut,
		EnableBashCompletion: true,
		HideHelpCommand:      true,
		Flags:                globalFlags(),
		ExitErrHandler:       func(*cli.Context, error) {}, // Main prints errors and picks codes
		// A flag's value is the user's, commas included.
		DisableSliceFlagSeparator: true,
		Commands:                  commands(f),
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return usageError(err, c.App.Flags, "sshq --help")
		},
		Action: rootAction,
	}
	return app
}

// Main runs one sshq invocation and returns its exit code. Cancelling ctx
// (the first Ctrl-C) makes commands wind down and say what is left running.
func Main(ctx context.Context, args []string, f *Factory) int {
	if completing(args) {
		complete(args, f)
		return ExitOK
	}
	app := NewApp(f)
	err := app.RunContext(ctx, normalizeArgs(app, args))
	if err == nil {
		return ExitOK
	}
	code := exitCode(ctx, err)
	if msg := err.Error(); msg != "" {
		fmt.Fprintf(f.IO.ErrOut, "sshq: %s\n", msg)
	}
	return code
}

// exitCode maps an error to sshq's exit codes.
func exitCode(ctx context.Context, err error) int {
	var ee *ExitError
	var ue *orchestrator.UsageError
	var ur *orchestrator.UnreachableError
	switch {
	case errors.As(err, &ee):
		return ee.Code
	case errors.As(err, &ue), errors.Is(err, orchestrator.ErrNoFit):
		return ExitUsage
	case ctx.Err() != nil || errors.Is(err, context.Canceled):
		return ExitInterrupted
	case errors.As(err, &ur), errors.Is(err, sshpool.ErrUnreachable), errors.Is(err, orchestrator.ErrNoNode):
		return ExitUnreachable
	}
	return ExitFailure
}

// interval turns a number of seconds into a duration.
func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
