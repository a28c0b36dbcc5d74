package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/orchestrator/task"
	"github.com/sshq/sshq/orchestrator/ui"
	"github.com/sshq/sshq/orchestrator/wsync"
	"github.com/sshq/sshq/sshpool"
)

// LaunchOptions are `sshq launch`'s.
type LaunchOptions struct {
	IO         *IOStreams
	Ctx        context.Context
	Controller func() (Controller, error)
	Hostname   func() (string, error)

	Args    []string // a task file and extra words, or a command
	Name    string
	GPUs    string
	Node    string
	Env     []string
	EnvFile string
	Secrets []string
	Workdir string
	Forward []string // [LOCAL:]REMOTE, while attached
	Mem     string   // --mem as typed; "" takes config.yaml's default
	Time    string   // --time as typed; "" takes the default
	CPUs    int      // --cpus; 0 pins nothing
	Detach  bool
	DryRun  bool
	JSON    bool

	// NumNodes replaces the task's num_nodes when not 0.
	NumNodes int
}

// NewCmdLaunch builds `sshq launch`; runF replaces launchRun in tests.
func NewCmdLaunch(f *Factory, runF func(*LaunchOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "launch",
		Usage:     "run a task file or a command on a free GPU",
		ArgsUsage: "TASK.yaml | COMMAND...",
		Description: `An existing .yaml/.yml file is a task (SkyPilot's format: name, workdir, resources.accelerators,
envs, secrets, file_mounts, setup, run); any other words are the command to run.
sshq picks a node where the GPUs are free now (or queues the job on the node with the least
waiting demand), syncs the workdir, and starts the job under tmux on the node. The job keeps
running if this process, or the laptop, goes away.

Attached (the default), sshq streams the job's output and exits with its exit code; Ctrl-C
detaches and leaves the job running. With -d it prints the job id and returns at once.

Examples:
   sshq launch examples/hello.yaml
   sshq launch task.yaml --gpus A100:2 --env LR=3e-4 -d
   sshq launch task.yaml --env-file .env    # dotenv, as sky launch --env-file
   sshq launch --gpus 1 -- python train.py --epochs 3
   sshq launch --gpus 1 --mem 32G --time 4h --cpus 8 task.yaml
   sshq launch --dry-run task.yaml          # validate and show the placement, touch nothing

Limits: --mem bounds the memory of the job's whole process tree (past it the job ends
OUT_OF_MEMORY, exit code 137); --time bounds its time from the start of setup (past it the
job gets SIGTERM, SIGKILL 10s later, and ends TIMEOUT, exit code 124); --cpus pins it to N
cores. Without --mem or --time, config.yaml's defaults apply (defaults: {mem_per_gpu: 60G,
mem: 16G, time: 3d}); --mem none or --time none lifts them.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "name", Usage: "job name (default: the task's name, or the command's program)"},
			&cli.StringFlag{Name: "gpus", Usage: "GPUs to use: `N` or TYPE:N (A100:2); overrides the task's resources"},
			&cli.StringFlag{Name: "node", Usage: "run on this node only"},
			&cli.IntFlag{Name: "num-nodes", Usage: "run on `N` distinct nodes at once, each with the task's resources (SkyPilot's num_nodes)"},
			&cli.GenericFlag{Name: "env", Value: &verbatim{}, Usage: "set an env var: `NAME=VALUE` (the value verbatim, commas included), or NAME to pass the local value (repeatable)"},
			&cli.StringFlag{Name: "env-file", Usage: "set env vars from a dotenv `FILE` (NAME=VALUE lines, # comments, quotes, export); --env wins over it"},
			&cli.GenericFlag{Name: "secret", Value: &verbatim{}, Usage: "like --env, but never printed, logged or stored on this machine"},
			&cli.StringFlag{Name: "workdir", Usage: "local directory to sync and run in"},
			&cli.GenericFlag{Name: "forward", Value: &verbatim{}, Usage: "while attached, reach the job's port here: `[LOCAL:]REMOTE` (repeatable; resources.ports are forwarded too)"},
			limitFlagDefs[0], limitFlagDefs[1], limitFlagDefs[2],
			&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "print the job id and return once it is queued"},
			&cli.BoolFlag{Name: "dry-run", Usage: "validate, place and print the plan; change nothing"},
			&cli.BoolFlag{Name: "json", Usage: "machine-readable result (implies --detach)"},
		},
		// Nothing: the shell completes file names.
		BashComplete: func(*cli.Context) {},
		Action: func(c *cli.Context) error {
			opts := &LaunchOptions{IO: f.IO, Ctx: c.Context, Controller: opener(c, f), Hostname: f.Hostname,
				Args: c.Args().Slice(), Name: c.String("name"), GPUs: c.String("gpus"), Node: c.String("node"),
				Env: *c.Generic("env").(*verbatim), EnvFile: c.String("env-file"), Secrets: *c.Generic("secret").(*verbatim), Workdir: c.String("workdir"),
				Forward: *c.Generic("forward").(*verbatim), Mem: c.String("mem"), Time: c.String("time"), CPUs: c.Int("cpus"),
				Detach: c.Bool("detach") || c.Bool("json"), DryRun: c.Bool("dry-run"), JSON: c.Bool("json")}
			opts.NumNodes = c.Int("num-nodes")
			if c.IsSet("num-nodes") && opts.NumNodes < 1 {
				return usageErr("--num-nodes %d: a job runs on 1 or more nodes", opts.NumNodes)
			}
			if runF != nil {
				return runF(opts)
			}
			return launchRun(opts)
		},
	}
}

// buildTask reads the task file or wraps the command, and applies the
// flags.
func buildTask(opts *LaunchOptions) (*task.Task, error) {
	args := opts.Args
	if len(args) == 0 {
		return nil, usageErr("launch needs a task file or a command: `sshq launch task.yaml` or `sshq launch -- python train.py`")
	}
	var t *task.Task
	var warns []task.Warning
	var err error
	run := ""
	if isTaskFile(args[0]) {
		t, warns, err = task.Load(args[0])
		if err != nil {
			return nil, &ExitError{ExitUsage, err}
		}
		if len(args) > 1 {
			run = shellJoin(args[1:])
		}
	} else {
		if strings.HasSuffix(args[0], ".yaml") || strings.HasSuffix(args[0], ".yml") {
			return nil, usageErr("task file %s does not exist (a word ending in .yaml is read as a task file; check the path)", args[0])
		}
		t, warns, err = task.Parse("command line", []byte("run: \"\"\n"))
		if err != nil {
			return nil, err
		}
		run = shellJoin(args)
		// The program's name, also for `sshq launch 'python train.py'`.
		if f := strings.Fields(args[0]); len(f) > 0 {
			t.Name = filepath.Base(f[0])
		}
	}
	for _, w := range warns {
		fmt.Fprintf(opts.IO.ErrOut, "sshq: warning: %s\n", w)
	}
	ov := task.Overrides{Name: opts.Name, Run: run, Workdir: opts.Workdir, NumNodes: opts.NumNodes}
	return applyTaskFlags(t, ov, opts.GPUs, opts.EnvFile, opts.Env, opts.Secrets, opts.IO)
}

// applyTaskFlags puts what launch and shell take from their flags
// (--gpus, --env-file, --env, --secret, on top of ov) into t, and checks
// the result as a task file is checked.
func applyTaskFlags(t *task.Task, ov task.Overrides, gpus, envFile string, env, secrets []string, io *IOStreams) (*task.Task, error) {
	var err error
	if gpus != "" {
		a, err := task.ParseGPUFlag(gpus)
		if err != nil {
			return nil, &ExitError{ExitUsage, err}
		}
		ov.GPUs = &a
	}
	if envFile != "" {
		if ov.EnvFile, err = task.LoadEnvFile(envFile, io.LookupEnv); err != nil {
			return nil, &ExitError{ExitUsage, err}
		}
	}
	if ov.Env, err = kvFlags(env, "--env", io); err != nil {
		return nil, err
	}
	sec, err := kvFlags(secrets, "--secret", io)
	if err != nil {
		return nil, err
	}
	ov.Secrets = task.Secrets(sec)
	if err := t.Apply(ov); err != nil {
		return nil, &ExitError{ExitUsage, err}
	}
	if err := t.Validate(); err != nil {
		return nil, &ExitError{ExitUsage, err}
	}
	return t, nil
}

// limitFlagDefs are --mem, --time and --cpus, which launch and shell share.
var limitFlagDefs = [3]cli.Flag{
	&cli.StringFlag{Name: "mem", Usage: "memory limit of the job's whole process tree: `SIZE` as 300M, 32G (binary units; none lifts the default)"},
	&cli.StringFlag{Name: "time", Usage: "time limit: `DURATION` as 90s, 30m, 4h, 3d, HH:MM:SS or D-HH:MM:SS (none lifts the default)"},
	&cli.IntFlag{Name: "cpus", Usage: "pin the job to `N` cores (taskset), apart from other sshq jobs' and near its GPUs"},
}

// limitFlags reads --mem, --time and --cpus as typed ("" for a flag not
// given: config.yaml's default).
func limitFlags(mem, dur string, cpus int) (orchestrator.LimitFlags, error) {
	var f orchestrator.LimitFlags
	if mem != "" {
		mib, err := orchestrator.ParseMem(mem)
		if err != nil {
			return f, usageErr("--mem: %v", err)
		}
		f.MemMiB = &mib
	}
	if dur != "" {
		d, err := orchestrator.ParseTime(dur)
		if err != nil {
			return f, usageErr("--time: %v", err)
		}
		f.Time = &d
	}
	if cpus < 0 {
		return f, usageErr("--cpus %d: give a number of cores, 1 or more", cpus)
	}
	f.CPUs = cpus
	return f, nil
}

func launchRun(opts *LaunchOptions) error {
	t, err := buildTask(opts)
	if err != nil {
		return err
	}
	limits, err := limitFlags(opts.Mem, opts.Time, opts.CPUs)
	if err != nil {
		return err
	}
	ports, err := launchPorts(opts, t)
	if err != nil {
		return err
	}
	ctrl, err := opts.Controller()
	if err != nil {
		return err
	}
	defer ctrl.Close()
	ctx, out, errOut := opts.Ctx, opts.IO.Out, opts.IO.ErrOut
	if opts.DryRun {
		return dryRun(opts, ctrl, t)
	}
	errStyle := ui.For(errOut, opts.IO.Getenv)
	bar := newProgress(errOut, errStyle.TTY && !opts.JSON)
	host, _ := opts.Hostname()
	v, err := ctrl.Launch(ctx, orchestrator.LaunchRequest{Task: t, Node: opts.Node, Options: orchestrator.LaunchOptions{
		Origin: host, Progress: bar.update, Limits: limits,
		Notef: func(f string, a ...any) {
			if !opts.JSON {
				bar.clear()
				fmt.Fprintf(errOut, "sshq: "+f+"\n", a...)
			}
		},
	}})
	bar.clear()
	if err != nil {
		return err
	}
	j, p := v.Job, v.Placement
	if opts.JSON {
		return writeJSON(out, map[string]any{"id": j.ID, "uid": j.UID, "name": j.Name, "node": j.Node, "nodes": j.Nodes(),
			"gpus": j.GPUs, "num_gpus": j.NumGPUs, "state": j.State, "backend": j.Backend, "slurm_id": j.SlurmID,
			"mem_limit_mib": j.MemLimitMiB, "time_limit_s": j.TimeLimitS, "cpus": j.CPUs})
	}
	where := "starting"
	switch {
	case !p.FitsNow && p.QueueAhead > 0:
		where = fmt.Sprintf("waiting in the node's queue behind %d job(s) for %d GPU(s)", p.QueueAhead, p.NumGPUs)
	case !p.FitsNow:
		where = fmt.Sprintf("waiting in the node's queue until %d GPU(s) free up", p.NumGPUs)
	}
	if len(p.Ranks) > 0 {
		where = fmt.Sprintf("%d ranks, starting together once each holds its GPUs", len(p.Ranks))
		if !p.FitsNow {
			where = fmt.Sprintf("%d ranks, waiting until every node can give %d GPU(s)", len(p.Ranks), p.NumGPUs)
		}
	}
	if j.Backend == store.BackendSlurm {
		where = fmt.Sprintf("Slurm job %s (%s)", j.SlurmID, p.Reason)
	}
	if p.NumGPUs == 0 {
		where += " (no GPU requested: add --gpus N, or resources.accelerators in the task, for GPUs)"
	}
	if l := limitsCell(j); l != "-" {
		where += "; limits: " + l
	}
	fmt.Fprintf(errOut, "sshq: job #%d (%s) submitted to %s: %s\n", j.ID, j.Name, j.NodeList(), where)
	if opts.Detach {
		fmt.Fprintf(out, "%d\n", j.ID)
		fmt.Fprintf(errOut, "sshq: follow it with `sshq logs -f %d`; list jobs with `sshq queue`\n", j.ID)
		if len(t.Resources.Ports) > 0 {
			fmt.Fprintf(errOut, "sshq: reach its ports (%s) with `sshq forward %d %s`\n", task.PortsString(t.Resources.Ports), j.ID, portWords(t.Resources.Ports))
		}
		return nil
	}
	stopForwards := startForwards(ctx, opts.IO, ctrl, j.ID, ports)
	lv, err := ctrl.Logs(ctx, orchestrator.LogsRequest{Ref: fmt.Sprint(j.ID), Tail: -1, Follow: true, Out: out, ErrOut: errOut})
	stopForwards()
	if ctx.Err() != nil || errors.Is(err, context.Canceled) {
		fmt.Fprintf(errOut, "\nsshq: detached; job #%d keeps running on %s. Follow it with `sshq logs -f %d`, stop it with `sshq cancel %d`\n",
			j.ID, j.Node, j.ID, j.ID)
		return nil
	}
	if err != nil {
		return &orchestrator.UnreachableError{Err: fmt.Errorf("lost the job's output stream: %w; it may still run: `sshq logs -f %d`", err, j.ID)}
	}
	fmt.Fprintf(errOut, "sshq: job #%d %s", j.ID, lv.Job.State)
	if lv.Job.ExitCode != nil {
		fmt.Fprintf(errOut, " (exit code %d)", *lv.Job.ExitCode)
	}
	if lv.Job.Reason != "" && lv.Job.State.Terminal() {
		fmt.Fprintf(errOut, ": %s", ui.Safe(lv.Job.Reason))
	}
	fmt.Fprintln(errOut)
	if lv.ExitCode != 0 {
		return &ExitError{Code: lv.ExitCode}
	}
	return nil
}

func dryRun(opts *LaunchOptions, ctrl Controller, t *task.Task) error {
	out := opts.IO.Out
	p, err := ctrl.Plan(opts.Ctx, t, opts.Node)
	if err != nil {
		return err
	}
	if opts.JSON {
		return writeJSON(out, map[string]any{"dry_run": true, "name": t.Name, "placement": p, "workdir": t.Workdir})
	}
	if len(p.Ranks) > 0 {
		printGangPlan(out, t, p)
		return nil
	}
	fmt.Fprintf(out, "plan for %q (nothing was changed):\n  node:     %s (%s)\n", t.Name, p.Node, p.Reason)
	if p.NumGPUs > 0 {
		fmt.Fprintf(out, "  gpus:     %d × %s\n", p.NumGPUs, orAny(p.Accelerator))
	}
	switch {
	case p.Backend == store.BackendSlurm:
		fmt.Fprintf(out, "  slurm:    sbatch through %s (Slurm picks the compute nodes; num_nodes %d)\n", p.Node, max(t.NumNodes, 1))
	case !p.FitsNow:
		fmt.Fprintf(out, "  queue:    would wait behind %d job(s) until GPUs free up\n", p.QueueAhead)
	}
	if t.Workdir != "" {
		fmt.Fprintf(out, "  workdir:  %s → %s:~/.sshq/workdirs/\n", t.Workdir, p.Node)
	}
	for r, l := range t.FileMounts {
		fmt.Fprintf(out, "  mount:    %s → %s:%s\n", l, p.Node, r)
	}
	if len(t.Resources.Ports) > 0 {
		fmt.Fprintf(out, "  ports:    %s (forwarded to this machine while attached)\n", task.PortsString(t.Resources.Ports))
	}
	return nil
}

// launchPorts are the ports an attached launch forwards: --forward, then
// resources.ports. A local port given explicitly and taken is refused
// before anything is submitted; the others move to a free port.
func launchPorts(opts *LaunchOptions, t *task.Task) ([]orchestrator.PortForward, error) {
	if len(opts.Forward) == 0 {
		return taskPorts(t), nil
	}
	if opts.Detach {
		return nil, usageErr("--forward works while attached: drop -d/--json, or forward later with `sshq forward JOB PORT`")
	}
	ports, err := parsePortSpecs(opts.Forward, "--forward ")
	if err != nil {
		return nil, err
	}
	seen := map[int]bool{}
	for i, p := range ports {
		seen[p.Remote] = true
		if !strings.Contains(opts.Forward[i], ":") {
			ports[i].AnyIfTaken = true
			continue
		}
		if p.Local == 0 {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", fmt.Sprint(p.Local)))
		if err != nil {
			return nil, usageErr("--forward %s: local port %d is taken on this machine (%v): choose another, as in %d:%d", opts.Forward[i], p.Local, err, p.Local+10000, p.Remote)
		}
		ln.Close()
	}
	for _, p := range taskPorts(t) {
		if !seen[p.Remote] {
			ports = append(ports, p)
		}
	}
	return ports, nil
}

func portWords(ports []int) string {
	w := make([]string, len(ports))
	for i, p := range ports {
		w[i] = fmt.Sprint(p)
	}
	return strings.Join(w, " ")
}

// startForwards forwards the ports while the launch streams; the returned
// function stops them and waits until they are closed.
func startForwards(ctx context.Context, io *IOStreams, ctrl Controller, id int, ports []orchestrator.PortForward) func() {
	if len(ports) == 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := ctrl.Forward(ctx, orchestrator.ForwardRequest{Ref: fmt.Sprint(id), Ports: ports,
			Ready: func(v *orchestrator.ForwardView) { printForwards(io, v, false) },
			Notef: func(format string, a ...any) { fmt.Fprintf(io.ErrOut, "sshq: "+format+"\n", a...) },
		})
		if err != nil && ctx.Err() == nil {
			fmt.Fprintf(io.ErrOut, "sshq: the job's ports are not forwarded: %v\n", err)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

func orAny(s string) string {
	if s == "" {
		return "any GPU"
	}
	return s
}

// shellJoin keeps `sshq launch python train.py --lr 3` as the user typed it:
// each word is quoted only if the shell would otherwise change it.
func shellJoin(words []string) string {
	if len(words) == 1 {
		return words[0] // a single word may be a whole script: `sshq launch 'make && ./run'`
	}
	return sshpool.Command(words...)
}

// verbatim is a repeatable flag that keeps each value as typed. urfave's
// StringSliceFlag splits values at commas and trims spaces, which turned
// `--env 'OPTS=a,HOME'` into OPTS=a plus the controller's HOME.
type verbatim []string

func (v *verbatim) Set(s string) error { *v = append(*v, s); return nil }
func (v *verbatim) String() string     { return "" }

// envName is what a shell accepts as a variable name.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// kvFlags parses repeated NAME=VALUE flags: the value is everything after
// the first '=', verbatim. A word without '=' takes this shell's value of
// that variable, but only when the whole word is a variable name. No
// error about a --secret shows its text: a word there may be the secret
// typed without its NAME=, so it is named by its position instead.
func kvFlags(vals []string, flag string, io *IOStreams) (map[string]string, error) {
	secret := flag == "--secret"
	out := map[string]string{}
	for i, v := range vals {
		which := fmt.Sprintf("%s %q", flag, v)
		if secret {
			which = fmt.Sprintf("%s #%d (its text is not shown)", flag, i+1)
		}
		k, val, ok := strings.Cut(v, "=")
		switch {
		case !ok && !envName.MatchString(k):
			return nil, usageErr("%s: not NAME=VALUE, nor a variable name to take from this shell; write %s NAME=VALUE", which, flag)
		case !ok:
			var set bool
			if val, set = io.LookupEnv(k); !set {
				if secret {
					return nil, usageErr("%s: no variable of that name is set in this shell; write %s NAME=VALUE, or export the variable first", which, flag)
				}
				return nil, usageErr("%s: %s is not set in this shell; give a value with %s %s=VALUE", which, k, flag, k)
			}
		case k == "":
			return nil, usageErr("%s: the name before = is empty; write %s NAME=VALUE", which, flag)
		case !envName.MatchString(k):
			return nil, usageErr("%s: the name before the first = is not a variable name (letters, digits and _, not starting with a digit); write %s NAME=VALUE", which, flag)
		}
		out[k] = val
	}
	return out, nil
}

// progress draws a one-line sync progress bar on a terminal.
type progress struct {
	label string // what is in progress: "sync" unless set
	w     io.Writer
	on    bool
	drawn bool
	last  time.Time
	mu    sync.Mutex
}

func newProgress(w io.Writer, on bool) *progress { return &progress{w: w, on: on} }

func (p *progress) update(pr wsync.Progress) {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	done := pr.FilesDone == pr.FilesTotal && pr.BytesDone == pr.BytesTotal
	if !done && time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	frac := 1.0
	if pr.BytesTotal > 0 {
		frac = float64(pr.BytesDone) / float64(pr.BytesTotal)
	}
	const width = 24
	n := int(frac * width)
	label := p.label
	if label == "" {
		label = "sync"
	}
	fmt.Fprintf(p.w, "\r\x1b[K%s [%s%s] %d/%d files  %s/%s", label, strings.Repeat("█", n), strings.Repeat("░", width-n),
		pr.FilesDone, pr.FilesTotal, ui.MiB(int(pr.BytesDone>>20)), ui.MiB(int(pr.BytesTotal>>20)))
	p.drawn = true
}

func (p *progress) clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.drawn = false
	}
}

// printGangPlan is the dry-run of a multi-node job: each rank's node and
// how it would take the job now.
func printGangPlan(out io.Writer, t *task.Task, p orchestrator.Placement) {
	nodes := make([]string, len(p.Ranks))
	for i, r := range p.Ranks {
		nodes[i] = r.Node
	}
	fmt.Fprintf(out, "plan for %q (nothing was changed):\n  nodes:    %d, %s (%s)\n", t.Name, len(p.Ranks), strings.Join(nodes, "+"), p.Reason)
	for _, r := range p.Ranks {
		what := "starts now"
		if !r.FitsNow {
			what = "waits"
		}
		fmt.Fprintf(out, "  rank %d:   %s, %s: %s\n", r.Rank, r.Node, what, r.Reason)
	}
	if p.NumGPUs > 0 {
		fmt.Fprintf(out, "  gpus:     %d × %s on each node\n", p.NumGPUs, orAny(p.Accelerator))
	}
	fmt.Fprintf(out, "  start:    all ranks together, once each holds its GPUs; MASTER_ADDR is rank 0's (%s)\n", p.Node)
	if t.Workdir != "" {
		fmt.Fprintf(out, "  workdir:  %s → each node's ~/.sshq/workdirs/\n", t.Workdir)
	}
	for r, l := range t.FileMounts {
		fmt.Fprintf(out, "  mount:    %s → each node's %s\n", l, r)
	}
	if len(t.Resources.Ports) > 0 {
		fmt.Fprintf(out, "  ports:    %s on rank 0's node (forwarded to this machine while attached)\n", task.PortsString(t.Resources.Ports))
	}
}
