package cmd

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/task"
	"github.com/sshq/sshq/orchestrator/ui"
	"github.com/sshq/sshq/sshpool"
)

// ShellOptions are `sshq shell`'s.
type ShellOptions struct {
	IO         *IOStreams
	Ctx        context.Context
	Controller func() (Controller, error)
	Hostname   func() (string, error)

	Args    []string // at most a task file
	Name    string
	GPUs    string
	Node    string
	Env     []string
	EnvFile string
	Secrets []string
	Workdir string
	Idle    time.Duration
	Mem     string // --mem as typed; "" takes config.yaml's default
	Time    string // --time as typed; "" takes the default
	CPUs    int    // --cpus; 0 pins nothing
}

// NewCmdShell builds `sshq shell`; runF replaces shellRun in tests.
func NewCmdShell(f *Factory, runF func(*ShellOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "shell",
		Usage:     "an interactive shell on a node, holding GPUs from the queue until it exits",
		ArgsUsage: "[TASK.yaml]",
		Description: `Waits in the queue like any job (its place is shown), then opens your login shell on the node,
in the job's workdir snapshot, with CUDA_VISIBLE_DEVICES and the job's environment. The GPUs
stay yours until the shell exits; sshq exits with the shell's exit code. With a task file,
its setup runs first (its run does not: the shell takes its place).

The shell lives in tmux on the node: Ctrl-b d detaches, a dropped connection loses nothing,
and sshq attach JOB returns to it. A shell with no client attached for --idle ends and
frees its GPUs. Ctrl-C while it waits in the queue cancels it. Needs a terminal; to run
a command from a script, use sshq launch.

--mem, --time and --cpus hold the shell and what it runs as they hold any job (and
config.yaml's defaults apply): at --time the shell is hung up and the job ends TIMEOUT;
past --mem it ends OUT_OF_MEMORY.

Examples:
   sshq shell --gpus 1
   sshq shell --gpus A100:2 --workdir .
   sshq shell task.yaml                 # the task's setup, then a shell (SkyPilot's dev box)
   sshq shell --gpus 1 --idle 8h
   sshq shell --gpus 1 --mem 32G --time 4h`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "gpus", Usage: "GPUs to hold: `N` or TYPE:N (A100:2); overrides the task's resources"},
			&cli.StringFlag{Name: "node", Usage: "open the shell on this node only"},
			&cli.StringFlag{Name: "workdir", Usage: "local directory to sync; the shell starts in its snapshot"},
			&cli.DurationFlag{Name: "idle", Value: orchestrator.DefaultShellIdle, Usage: "end the shell after this long with no client attached (0: never)"},
			limitFlagDefs[0], limitFlagDefs[1], limitFlagDefs[2],
			&cli.StringFlag{Name: "name", Usage: "job name (default: the task's name, or shell)"},
			&cli.GenericFlag{Name: "env", Value: &verbatim{}, Usage: "set an env var: `NAME=VALUE`, or NAME to pass the local value (repeatable)"},
			&cli.StringFlag{Name: "env-file", Usage: "set env vars from a dotenv `FILE`; --env wins over it"},
			&cli.GenericFlag{Name: "secret", Value: &verbatim{}, Usage: "like --env, but never printed, logged or stored on this machine"},
		},
		BashComplete: func(*cli.Context) {},
		Action: func(c *cli.Context) error {
			opts := &ShellOptions{IO: f.IO, Ctx: c.Context, Controller: opener(c, f), Hostname: f.Hostname,
				Args: c.Args().Slice(), Name: c.String("name"), GPUs: c.String("gpus"), Node: c.String("node"),
				Env: *c.Generic("env").(*verbatim), EnvFile: c.String("env-file"), Secrets: *c.Generic("secret").(*verbatim),
				Workdir: c.String("workdir"), Idle: c.Duration("idle"),
				Mem: c.String("mem"), Time: c.String("time"), CPUs: c.Int("cpus")}
			if runF != nil {
				return runF(opts)
			}
			return shellRun(opts)
		},
	}
}

// shellTask is the task file, or an empty task, with the flags applied.
// Its run is replaced by the shell, so a task may lack one.
func shellTask(opts *ShellOptions) (*task.Task, error) {
	var t *task.Task
	var warns []task.Warning
	var err error
	switch {
	case len(opts.Args) > 1 || (len(opts.Args) == 1 && !isTaskFile(opts.Args[0]) && !strings.HasSuffix(opts.Args[0], ".yaml") && !strings.HasSuffix(opts.Args[0], ".yml")):
		return nil, usageErr("shell takes at most a task file, not a command (%s); to run a command on a GPU, use `sshq launch --gpus N -- COMMAND`", strings.Join(opts.Args, " "))
	case len(opts.Args) == 1 && !isTaskFile(opts.Args[0]):
		return nil, usageErr("task file %s does not exist (check the path)", opts.Args[0])
	case len(opts.Args) == 1:
		if t, warns, err = task.Load(opts.Args[0]); err != nil {
			return nil, &ExitError{ExitUsage, err}
		}
	default:
		if t, warns, err = task.Parse("command line", []byte("name: shell\n")); err != nil {
			return nil, err
		}
	}
	for _, w := range warns {
		fmt.Fprintf(opts.IO.ErrOut, "sshq: warning: %s\n", w)
	}
	if strings.TrimSpace(t.Run) != "" {
		fmt.Fprintf(opts.IO.ErrOut, "sshq: note: the task's run is not run: the shell takes its place (`sshq launch %s` runs it)\n", opts.Args[0])
	}
	// The shell is the run: with it the task is complete.
	t.Run = orchestrator.ShellRun
	ov := task.Overrides{Name: opts.Name, Workdir: opts.Workdir}
	return applyTaskFlags(t, ov, opts.GPUs, opts.EnvFile, opts.Env, opts.Secrets, opts.IO)
}

func shellRun(opts *ShellOptions) error {
	if !opts.IO.InTTY || !opts.IO.OutTTY {
		return usageErr("shell needs a terminal, and this is not one; to run a command on a GPU from a script, use `sshq launch --gpus N -- COMMAND`")
	}
	if opts.Idle < 0 {
		return usageErr("--idle %s: a duration of 0 (never) or more, such as 30m or 8h", opts.Idle)
	}
	t, err := shellTask(opts)
	if err != nil {
		return err
	}
	limits, err := limitFlags(opts.Mem, opts.Time, opts.CPUs)
	if err != nil {
		return err
	}
	ctrl, err := opts.Controller()
	if err != nil {
		return err
	}
	defer ctrl.Close()
	ctx, errOut := opts.Ctx, opts.IO.ErrOut
	errStyle := ui.For(errOut, opts.IO.Getenv)
	bar := newProgress(errOut, errStyle.TTY)
	status := newStatusLine(errOut, errStyle.TTY)
	host, _ := opts.Hostname()
	tty := localTerminal(opts.IO)
	stopResize := tty.watchResize(ctx)
	defer stopResize()
	v, err := ctrl.Shell(ctx, orchestrator.ShellRequest{
		Task: t, Node: opts.Node, Idle: opts.Idle,
		Options: orchestrator.LaunchOptions{Origin: host, Progress: bar.update, Limits: limits, Notef: func(f string, a ...any) {
			bar.clear()
			fmt.Fprintf(errOut, "sshq: "+f+"\n", a...)
		}},
		Waiting: func(j orchestrator.JobView) {
			bar.clear()
			status.show(waitingLine(j))
		},
		Attaching: func(j orchestrator.JobView) {
			status.clear()
			fmt.Fprintf(errOut, "sshq: job #%d: %s (Ctrl-b d detaches; `sshq attach %d` returns)\n", j.ID, shellWhere(j), j.ID)
		},
		Terminal: tty.terminal(opts.IO),
		Raw:      tty.raw,
	})
	bar.clear()
	status.clear()
	if err != nil {
		return err
	}
	j := v.Job
	if !v.Ended {
		idle := "it never ends by itself"
		if opts.Idle > 0 {
			idle = fmt.Sprintf("with no client attached it ends after %s", opts.Idle)
		}
		fmt.Fprintf(errOut, "sshq: detached; the shell keeps running on %s as job #%d, holding its GPUs: `sshq attach %d` returns to it, `sshq cancel %d` ends it (%s)\n",
			j.Node, j.ID, j.ID, j.ID, idle)
		return nil
	}
	switch j.State {
	case job.Succeeded, job.Failed:
		free := ""
		if len(j.GPUs) > 0 || j.NumGPUs > 0 {
			free = "; its GPUs are free"
		}
		fmt.Fprintf(errOut, "sshq: job #%d: the shell exited with code %d%s\n", j.ID, v.ExitCode, free)
	case job.FailedSetup:
		fmt.Fprintf(errOut, "sshq: job #%d: setup failed before the shell started (exit code %d): `sshq logs %d` says why\n", j.ID, v.ExitCode, j.ID)
	case job.Timeout, job.OutOfMemory:
		fmt.Fprintf(errOut, "sshq: job #%d ended %s (exit code %d): %s\n", j.ID, j.State, v.ExitCode, ui.Safe(orDash(j.Reason)))
	default:
		fmt.Fprintf(errOut, "sshq: job #%d ended %s (exit code %d): `sshq logs %d` says why\n", j.ID, j.State, v.ExitCode, j.ID)
	}
	if v.ExitCode != 0 {
		return &ExitError{Code: v.ExitCode}
	}
	return nil
}

// waitingLine is a waiting shell's place: "waiting for 1 GPU on box, #2
// in queue…".
func waitingLine(j orchestrator.JobView) string {
	what := fmt.Sprintf("%d GPU", j.NumGPUs)
	if j.NumGPUs != 1 {
		what += "s"
	}
	if j.Accelerator != "" {
		what = fmt.Sprintf("%d %s", j.NumGPUs, j.Accelerator)
	}
	s := fmt.Sprintf("sshq: job #%d waiting for %s on %s", j.ID, what, j.Node)
	if j.NumGPUs == 0 {
		s = fmt.Sprintf("sshq: job #%d starting on %s", j.ID, j.Node)
	}
	if j.QueuePosition != nil {
		s += fmt.Sprintf(", #%d in queue", *j.QueuePosition)
	}
	if !j.NodeReachable {
		s += fmt.Sprintf(" (%s does not answer now)", j.Node)
	}
	return s + "… (Ctrl-C cancels it)"
}

// shellWhere says where the shell runs and with what.
func shellWhere(j orchestrator.JobView) string {
	where := "a shell on " + j.Node
	switch {
	case j.State == job.SettingUp:
		where = "setup on " + j.Node + ", then a shell"
	}
	if len(j.GPUs) > 0 {
		ids := make([]string, len(j.GPUs))
		for i, g := range j.GPUs {
			ids[i] = fmt.Sprint(g)
		}
		where += " with GPU " + strings.Join(ids, ",")
	}
	return where
}

// statusLine is one line of stderr that changes in place on a terminal
// and is printed once per change elsewhere.
type statusLine struct {
	w    interface{ Write([]byte) (int, error) }
	tty  bool
	last string
}

func newStatusLine(w interface{ Write([]byte) (int, error) }, tty bool) *statusLine {
	return &statusLine{w: w, tty: tty}
}

func (s *statusLine) show(line string) {
	if line == s.last {
		return
	}
	if s.tty {
		fmt.Fprintf(s.w, "\r\x1b[K%s", line)
	} else {
		fmt.Fprintln(s.w, line)
	}
	s.last = line
}

func (s *statusLine) clear() {
	if s.tty && s.last != "" {
		fmt.Fprint(s.w, "\r\x1b[K")
	}
	s.last = ""
}

// ttyFiles is the local terminal: stdin and stdout, when they are files.
type ttyFiles struct {
	in, out *os.File
	resize  chan [2]int
}

func localTerminal(io *IOStreams) *ttyFiles {
	t := &ttyFiles{}
	t.in, _ = io.In.(*os.File)
	t.out, _ = io.Out.(*os.File)
	return t
}

// terminal describes the local terminal for the node's pseudo-terminal.
func (t *ttyFiles) terminal(io *IOStreams) sshpool.Terminal {
	st := sshpool.Terminal{Term: io.Getenv("TERM"), In: io.In, Out: io.Out, Resize: t.resize}
	if t.out != nil {
		st.Width, st.Height, _ = term.GetSize(int(t.out.Fd()))
	}
	return st
}

// raw puts the keyboard in raw mode: every key, Ctrl-C included, goes to
// the node's terminal.
func (t *ttyFiles) raw() (func(), error) {
	if t.in == nil || !term.IsTerminal(int(t.in.Fd())) {
		return func() {}, nil
	}
	fd := int(t.in.Fd())
	old, err := term.MakeRaw(fd)
	if err != nil {
		return nil, err
	}
	return func() { _ = term.Restore(fd, old) }, nil
}

// size is the terminal's [width, height], or false.
func (t *ttyFiles) size() ([2]int, bool) {
	if t.out == nil {
		return [2]int{}, false
	}
	w, h, err := term.GetSize(int(t.out.Fd()))
	return [2]int{w, h}, err == nil
}
