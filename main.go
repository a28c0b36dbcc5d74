// Command sshq is an agentless GPU job queue over SSH: the nodes are the
// hosts of your ~/.ssh/config, nothing is installed on them, and jobs run
// under tmux, leasing GPUs with flock.
//
// main.go is the CLI: flags, output formatting and exit codes. Everything it
// does to nodes goes through orchestrator, sshpool and inventory.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/sshq/sshq/inventory"
	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/demo"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/remote"
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/orchestrator/task"
	"github.com/sshq/sshq/orchestrator/ui"
	"github.com/sshq/sshq/orchestrator/wsync"
	"github.com/sshq/sshq/sshpool"
)

// version is set at release time with -ldflags "-X main.version=…".
var version = "0.1.0-dev"

// Exit codes. Scripts rely on them, so they are part of the interface.
const (
	exitOK          = 0
	exitError       = 1   // the operation failed
	exitUsage       = 2   // bad flags, bad task file, bad input: fix the command
	exitUnreachable = 3   // some nodes could not be reached; the rest was done
	exitInterrupted = 130 // Ctrl-C
)

// exitError carries an exit code through urfave/cli.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func usageErr(format string, a ...any) error {
	return &codedError{exitUsage, fmt.Errorf(format, a...)}
}

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &codedError{code, err}
}

// env is what a command may touch of the outside world; tests inject it.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	stdin          io.Reader
}

func main() {
	os.Exit(run(context.Background(), os.Args, env{os.Stdout, os.Stderr, os.Getenv, os.Stdin}))
}

// run executes one sshq invocation and returns its exit code. The first
// Ctrl-C cancels the context (commands wind down and say what is left
// running); a second one exits 130 at once.
func run(parent context.Context, args []string, e env) int {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
			return
		}
		select {
		case <-sigs:
			fmt.Fprintln(e.stderr, "\nsshq: interrupted")
			os.Exit(exitInterrupted)
		case <-ctx.Done():
		}
	}()

	// A completion request for words after `--` is about the job's own
	// command: answer nothing (the shell completes files) and never let
	// it reach the command's action, which would launch the job.
	if n := len(args); n > 0 && args[n-1] == "--generate-bash-completion" && slices.Contains(args[:n-1], "--") {
		return exitOK
	}
	app := newApp(e)
	err := app.RunContext(ctx, normalizeArgs(args))
	if err == nil {
		return exitOK
	}
	var ce *codedError
	code := exitError
	if errors.As(err, &ce) {
		code = ce.code
	}
	if ctx.Err() != nil && parent.Err() == nil && code == exitError {
		code = exitInterrupted
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintf(e.stderr, "sshq: %s\n", msg)
	}
	return code
}

func newApp(e env) *cli.App {
	app := &cli.App{
		Name:                 "sshq",
		Version:              version,
		Usage:                "a GPU job queue for the machines in your ~/.ssh/config",
		Description:          "sshq turns hosts you can already ssh into into one GPU job queue, with nothing installed on them.\nNodes are chosen with --nodes, SSHQ_NODES or `sshq init`.",
		Writer:               e.stdout,
		ErrWriter:            e.stderr,
		EnableBashCompletion: true,
		HideHelpCommand:      true,
		Flags:                globalFlags(true),
		ExitErrHandler:       func(*cli.Context, error) {}, // run() prints errors and picks codes
		Commands:             commands(e),
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			return usageErr("%v (see `sshq %s --help`)", err, c.Command.Name)
		},
	}
	app.CommandNotFound = func(c *cli.Context, name string) {
		fmt.Fprintf(e.stderr, "sshq: unknown command %q; run `sshq --help` for the list\n", name)
		os.Exit(exitUsage)
	}
	return app
}

func commands(e env) []*cli.Command {
	cmds := []*cli.Command{
		launchCommand(e),
		queueCommand(e),
		logsCommand(e),
		cancelCommand(e),
		waitCommand(e),
		attachCommand(e),
		statusCommand(e),
		nodesCommand(e),
		initCommand(e),
		demoCommand(e),
		completionCommand(e),
	}
	for _, c := range cmds {
		switch c.Name {
		case "logs", "cancel", "wait", "attach":
			c.BashComplete = completeJobs(e)
		case "launch":
			c.BashComplete = func(*cli.Context) {} // nothing: the shell completes file names
		}
		// The global flags work after the command too (`sshq status
		// --nodes gpu-1`), as users type them.
		c.Flags = append(c.Flags, globalFlags(false)...)
		if c.OnUsageError == nil {
			c.OnUsageError = func(c *cli.Context, err error, _ bool) error {
				return usageErr("%v (see `sshq %s --help`)", err, c.Command.Name)
			}
		}
	}
	return cmds
}

// completeJobs offers this controller's unfinished job ids and names.
func completeJobs(e env) cli.BashCompleteFunc {
	return func(c *cli.Context) {
		st, err := store.Open(sshqHome(c))
		if err != nil {
			return
		}
		s, err := st.Load()
		if err != nil {
			return
		}
		for _, j := range s.Jobs {
			if !j.State.Terminal() || c.Command.Name == "logs" {
				fmt.Fprintln(e.stdout, j.ID)
			}
		}
	}
}

// globalFlags are sshq's options that every command shares. The copies on
// commands carry no EnvVars, so a flag typed after the command wins over
// one typed before it, which wins over the environment (see gflag).
func globalFlags(withEnv bool) []cli.Flag {
	env := func(name string) []string {
		if withEnv {
			return []string{name}
		}
		return nil
	}
	return []cli.Flag{
		&cli.StringFlag{Name: "ssh-config", Usage: "OpenSSH client config listing the nodes", EnvVars: env("SSHQ_SSH_CONFIG"), DefaultText: "~/.ssh/config"},
		&cli.StringFlag{Name: "nodes", Usage: "which hosts are nodes: aliases or globs, comma-separated (e.g. gpu-*,!gpu-9)", EnvVars: env("SSHQ_NODES")},
		&cli.StringFlag{Name: "home", Usage: "controller state directory", EnvVars: env("SSHQ_HOME"), DefaultText: "~/.sshq"},
	}
}

// gflag reads a global flag from wherever it was given.
func gflag(c *cli.Context, name string) string {
	if c.IsSet(name) {
		return c.String(name)
	}
	for _, parent := range c.Lineage()[1:] {
		if v := parent.String(name); v != "" {
			return v
		}
	}
	return ""
}

// ---- shared plumbing ----

// sshqHome is $SSHQ_HOME or ~/.sshq.
func sshqHome(c *cli.Context) string {
	if h := gflag(c, "home"); h != "" {
		return h
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".sshq")
}

// cluster is the resolved view of the nodes for one command.
type cluster struct {
	cfg      *inventory.Config
	resolver *inventory.Resolver
	names    []string
	pool     *sshpool.Pool
}

// sshConfigPath is --ssh-config / SSHQ_SSH_CONFIG, else the file `sshq
// init` was run with, else "" (OpenSSH's default).
func sshConfigPath(c *cli.Context) string {
	if p := gflag(c, "ssh-config"); p != "" {
		return p
	}
	s, _ := inventory.LoadSettings(sshqHome(c))
	return s.SSHConfig
}

func loadConfig(c *cli.Context, e env) (*inventory.Config, error) {
	cfg, err := inventory.Load(sshConfigPath(c))
	if err != nil {
		return nil, withCode(exitUsage, err)
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(e.stderr, "sshq: warning: %s\n", w)
	}
	return cfg, nil
}

// openCluster resolves which nodes this command is about. With no node
// selection anywhere it explains how to choose and lists the hosts found.
func openCluster(c *cli.Context, e env) (*cluster, error) {
	cfg, err := loadConfig(c, e)
	if err != nil {
		return nil, err
	}
	settings, err := inventory.LoadSettings(sshqHome(c))
	if err != nil {
		return nil, withCode(exitUsage, err)
	}
	pats, _, err := inventory.Patterns(gflag(c, "nodes"), "", settings)
	if errors.Is(err, inventory.ErrNoNodes) {
		return nil, withCode(exitUsage, noNodesError(cfg))
	}
	names, err := inventory.Select(cfg.Aliases, pats)
	if err != nil {
		return nil, withCode(exitUsage, fmt.Errorf("%w (ssh config: %s)", err, cfg.Path))
	}
	r := inventory.NewResolver(cfg)
	return &cluster{cfg: cfg, resolver: r, names: names, pool: sshpool.New(r)}, nil
}

func noNodesError(cfg *inventory.Config) error {
	var b strings.Builder
	b.WriteString("no nodes chosen: sshq does not know which of your ssh hosts are GPU nodes.\n")
	if len(cfg.Aliases) > 0 {
		fmt.Fprintf(&b, "  Hosts in %s: %s\n", cfg.Path, strings.Join(cfg.Aliases, ", "))
		fmt.Fprintf(&b, "  Choose them once with `sshq init %s` (globs work: `sshq init 'gpu-*'`),\n", cfg.Aliases[0])
	} else {
		fmt.Fprintf(&b, "  %s lists no Host aliases; add a `Host` block per machine first (see README: Pointing sshq at your machines),\n", cfg.Path)
		b.WriteString("  then choose them with `sshq init ALIAS...`,\n")
	}
	b.WriteString("  or per command with --nodes a,b or SSHQ_NODES=a,b.")
	return errors.New(b.String())
}

func (cl *cluster) close() { cl.pool.Close() }

// writeJSONLines writes a JSON array with one compact element per line:
// still readable and greppable, and several times faster than indenting a
// history of thousands of jobs.
func writeJSONLines[T any](w io.Writer, items []T) error {
	bw := bufio.NewWriterSize(w, 64*1024)
	bw.WriteString("[")
	for i, it := range items {
		b, err := json.Marshal(it)
		if err != nil {
			return err
		}
		if i > 0 {
			bw.WriteString(",")
		}
		bw.WriteString("\n")
		bw.Write(b)
	}
	bw.WriteString("\n]\n")
	return bw.Flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ---- sshq nodes ----

func nodesCommand(e env) *cli.Command {
	return &cli.Command{
		Name:  "nodes",
		Usage: "list the nodes and check that each is ready for sshq",
		Description: `Connects to every node (in parallel, each within its ConnectTimeout) and checks what sshq
needs there: bash, tmux, flock, nvidia-smi and a usable GPU lease directory.

Examples:
   sshq nodes                      # check every node
   sshq nodes --resolve            # print each node's ssh settings, like ssh -G, without connecting
   sshq --nodes 'gpu-*' nodes --json`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "resolve", Usage: "print resolved ssh settings without connecting"},
			&cli.BoolFlag{Name: "json", Usage: "machine-readable output"},
		},
		Action: func(c *cli.Context) error {
			cl, err := openCluster(c, e)
			if err != nil {
				return err
			}
			defer cl.close()
			if c.Bool("resolve") {
				return resolveNodes(c, e, cl)
			}
			return checkNodes(c, e, cl)
		},
	}
}

func resolveNodes(c *cli.Context, e env, cl *cluster) error {
	nodes, err := cl.resolver.ResolveAll(c.Context, cl.names)
	if err != nil {
		return withCode(exitUsage, err)
	}
	if c.Bool("json") {
		return writeJSON(e.stdout, map[string]any{"nodes": nodes})
	}
	st := ui.For(e.stdout, e.getenv)
	var rows [][]string
	for _, n := range nodes {
		jump := n.ProxyJump
		if jump == "" {
			jump = "-"
		}
		rows = append(rows, []string{n.Name, n.HostName, fmt.Sprint(n.Port), n.User, strings.Join(existing(n.IdentityFiles), ","), jump, n.StrictHostKeyChecking})
	}
	fmt.Fprint(e.stdout, st.Table([]string{"NODE", "HOSTNAME", "PORT", "USER", "IDENTITY", "PROXYJUMP", "HOSTKEY"}, rows))
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

// nodeCheckScript reports, one `key value` per line, what a node offers
// sshq. It must run on any POSIX shell and never fail as a whole.
const nodeCheckScript = `for t in bash tmux flock nvidia-smi systemd-run; do
  if p=$(command -v "$t" 2>/dev/null); then echo "have_$t $p"; else echo "have_$t -"; fi
done
d=${SSHQ_LEASE_DIR:-/tmp/sshq-leases}
echo "lease_dir $d"
if [ -L "$d" ]; then echo "lease_dir_state symlink"
elif [ -d "$d" ]; then if [ -w "$d" ]; then echo "lease_dir_state ok"; else echo "lease_dir_state not-writable"; fi
else echo "lease_dir_state absent"; fi
if command -v nvidia-smi >/dev/null 2>&1; then
  n=$(nvidia-smi --query-gpu=uuid --format=csv,noheader 2>/dev/null | grep -c '^GPU-')
  echo "gpus $n"
fi
echo "kernel $(uname -sr)"
if grep -qsE '^[[:space:]]*KillUserProcesses[[:space:]]*=[[:space:]]*(yes|true|1)' /etc/systemd/logind.conf /etc/systemd/logind.conf.d/*.conf 2>/dev/null; then
  l=$(loginctl show-user "$(id -un)" --property=Linger --value 2>/dev/null)
  echo "kill_user_processes ${l:-unknown}"
fi`

type nodeCheck struct {
	Name      string   `json:"name"`
	Host      string   `json:"hostname"`
	Port      int      `json:"port"`
	Reachable bool     `json:"reachable"`
	Error     string   `json:"error,omitempty"`
	LatencyMS int64    `json:"latency_ms,omitempty"`
	GPUs      int      `json:"gpus"`
	Tmux      bool     `json:"tmux"`
	Flock     bool     `json:"flock"`
	NvidiaSMI bool     `json:"nvidia_smi"`
	Problems  []string `json:"problems"`
	Ready     bool     `json:"ready"`
}

func checkNodes(c *cli.Context, e env, cl *cluster) error {
	results := make([]nodeCheck, len(cl.names))
	idx := map[string]int{}
	for i, n := range cl.names {
		idx[n] = i
	}
	cl.orch().Each(c.Context, func(ctx context.Context, name string) {
		r := &results[idx[name]]
		r.Name, r.Problems = name, []string{}
		n, err := cl.resolver.Resolve(ctx, name)
		if err != nil {
			r.Error = err.Error()
			return
		}
		r.Host, r.Port = n.HostName, n.Port
		ctx, cancel := context.WithTimeout(ctx, n.Timeout()+10*time.Second)
		defer cancel()
		start := time.Now()
		res, err := cl.pool.Run(ctx, name, nodeCheckScript, nil)
		if err != nil {
			r.Error = err.Error()
			return
		}
		r.Reachable = true
		r.LatencyMS = time.Since(start).Milliseconds()
		kv := map[string]string{}
		for _, line := range strings.Split(string(res.Stdout), "\n") {
			k, v, _ := strings.Cut(line, " ")
			kv[k] = v
		}
		r.Tmux, r.Flock, r.NvidiaSMI = kv["have_tmux"] != "-", kv["have_flock"] != "-", kv["have_nvidia-smi"] != "-"
		fmt.Sscan(kv["gpus"], &r.GPUs)
		if kv["have_bash"] == "-" {
			r.Problems = append(r.Problems, "bash missing: install bash")
		}
		if !r.Tmux {
			r.Problems = append(r.Problems, "tmux missing: `sudo apt-get install -y tmux`")
		}
		if !r.Flock {
			r.Problems = append(r.Problems, "flock missing: `sudo apt-get install -y util-linux`")
		}
		if !r.NvidiaSMI {
			r.Problems = append(r.Problems, "nvidia-smi not on PATH: CPU-only node (install the NVIDIA driver for GPU jobs)")
		} else if r.GPUs == 0 {
			r.Problems = append(r.Problems, "nvidia-smi finds no GPU: run `nvidia-smi` on the node to see why")
		}
		switch kv["lease_dir_state"] {
		case "symlink":
			r.Problems = append(r.Problems, fmt.Sprintf("lease dir %s is a symlink: sshq refuses it; remove it or set SSHQ_LEASE_DIR", kv["lease_dir"]))
		case "not-writable":
			r.Problems = append(r.Problems, fmt.Sprintf("lease dir %s is not writable: `chmod 1777 %s`", kv["lease_dir"], kv["lease_dir"]))
		}
		killsJobs := false
		if linger, ok := kv["kill_user_processes"]; ok && linger != "yes" {
			killsJobs = true
			r.Problems = append(r.Problems, "logind kills a user's processes at logout (KillUserProcesses=yes) and you have no linger: jobs would die with your ssh sessions; run `loginctl enable-linger` on the node")
		}
		r.Ready = !killsJobs && r.Tmux && r.Flock && kv["have_bash"] != "-" && kv["lease_dir_state"] != "symlink" && kv["lease_dir_state"] != "not-writable"
	})

	down := 0
	for _, r := range results {
		if !r.Reachable {
			down++
		}
	}
	if c.Bool("json") {
		if err := writeJSON(e.stdout, map[string]any{"nodes": results}); err != nil {
			return err
		}
	} else {
		st := ui.For(e.stdout, e.getenv)
		var rows [][]string
		for _, r := range results {
			state := st.Paint(ui.Green, "ready")
			note := strings.Join(r.Problems, "; ")
			switch {
			case !r.Reachable:
				state = st.Paint(ui.Red, "down")
				note = r.Error
			case !r.Ready:
				state = st.Paint(ui.Yellow, "not ready")
			}
			lat := "-"
			if r.Reachable {
				lat = fmt.Sprintf("%dms", r.LatencyMS)
			}
			rows = append(rows, []string{r.Name, fmt.Sprintf("%s:%d", r.Host, r.Port), state, lat, fmt.Sprint(r.GPUs), note})
		}
		fmt.Fprint(e.stdout, st.Table([]string{"NODE", "ADDRESS", "STATE", "LATENCY", "GPUS", "NOTES"}, rows))
	}
	if down > 0 {
		return withCode(exitUnreachable, fmt.Errorf("%d of %d nodes unreachable", down, len(results)))
	}
	return nil
}

// ---- sshq init ----

func initCommand(e env) *cli.Command {
	return &cli.Command{
		Name:      "init",
		Usage:     "choose which ssh hosts are sshq nodes (writes $SSHQ_HOME/config.yaml)",
		ArgsUsage: "PATTERN...",
		Description: `Patterns are Host aliases of your ssh config or globs over them; !glob excludes.

Examples:
   sshq init gpu-1 gpu-2 dgx
   sshq init 'gpu-*' '!gpu-old'`,
		Action: func(c *cli.Context) error {
			cfg, err := loadConfig(c, e)
			if err != nil {
				return err
			}
			pats := c.Args().Slice()
			if len(pats) == 0 {
				s, _ := inventory.LoadSettings(sshqHome(c))
				if len(s.Nodes) > 0 {
					fmt.Fprintf(e.stdout, "nodes: %s (from %s)\n", strings.Join(s.Nodes, ", "), inventory.SettingsPath(sshqHome(c)))
					return nil
				}
				return withCode(exitUsage, noNodesError(cfg))
			}
			names, err := inventory.Select(cfg.Aliases, pats)
			if err != nil {
				return withCode(exitUsage, err)
			}
			settings := inventory.Settings{Nodes: pats}
			if !cfg.Default {
				// Later commands must read the same file the patterns name.
				settings.SSHConfig, _ = filepath.Abs(cfg.Path)
			}
			if err := inventory.SaveSettings(sshqHome(c), settings); err != nil {
				return err
			}
			sort.Strings(names)
			fmt.Fprintf(e.stdout, "wrote %s: %d node(s): %s\nnext: `sshq nodes` checks that each is ready\n",
				inventory.SettingsPath(sshqHome(c)), len(names), strings.Join(names, ", "))
			return nil
		},
	}
}

// normalizeArgs lets `--watch` stand without a value (`sshq status --watch`
// refreshes every 2 s), and lets flags follow a task file
// (`sshq launch task.yaml -d`), which urfave/cli cannot express by itself.
// Words of a job's command are never touched.
func normalizeArgs(args []string) []string {
	args = launchFlagsFirst(args)
	out := make([]string, 0, len(args)+1)
	inStatus := false
	for i, a := range args {
		out = append(out, a)
		if a == "--" {
			out = append(out, args[i+1:]...)
			break
		}
		if a == "status" {
			inStatus = true
		}
		if inStatus && (a == "--watch" || a == "-w") {
			next := ""
			if i+1 < len(args) {
				next = args[i+1]
			}
			if _, err := strconv.ParseFloat(next, 64); err != nil {
				out = append(out, "2")
			}
		}
	}
	return out
}

func (cl *cluster) orch() *orchestrator.Cluster {
	return &orchestrator.Cluster{Pool: cl.pool, Resolver: cl.resolver, Names: cl.names}
}

// ---- sshq status ----

func statusCommand(e env) *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "the whole cluster at a glance: GPUs, who holds them, node health",
		Description: `Probes every node in parallel over its pooled ssh connection (one command per node) and shows
each GPU's memory, utilization and holder: an sshq job (#id name (user)), a foreign process
(pid user) started outside sshq, or free. Unreachable nodes are listed with the reason.
Exit code 3 when a node is unreachable.

Examples:
   sshq status
   sshq status --watch          # refresh every 2 s until Ctrl-C
   sshq status --json | jq '.nodes[].gpus[] | select(.state=="free") | .uuid'`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "machine-readable output"},
			&cli.Float64Flag{Name: "watch", Aliases: []string{"w"}, DefaultText: "off; 2 when given without a value", Usage: "refresh every `SECONDS`"},
		},
		Action: func(c *cli.Context) error {
			cl, err := openCluster(c, e)
			if err != nil {
				return err
			}
			defer cl.close()
			oc := cl.orch()
			interval := c.Float64("watch")
			if interval <= 0 || c.Bool("json") {
				nodes := oc.Status(c.Context)
				if c.Bool("json") {
					if err := writeJSON(e.stdout, map[string]any{"nodes": nodes}); err != nil {
						return err
					}
				} else {
					fmt.Fprint(e.stdout, renderStatus(ui.For(e.stdout, e.getenv), nodes))
				}
				return unreachableErr(nodes)
			}
			st := ui.For(e.stdout, e.getenv)
			for {
				nodes := oc.Status(c.Context)
				if c.Context.Err() != nil {
					return nil
				}
				frame := renderStatus(st, nodes)
				if st.TTY {
					fmt.Fprint(e.stdout, "\x1b[H\x1b[2J"+frame)
				} else {
					fmt.Fprintf(e.stdout, "--- %s\n%s", time.Now().Format(time.TimeOnly), frame)
				}
				select {
				case <-c.Context.Done():
					return nil // Ctrl-C ends a watch normally
				case <-time.After(time.Duration(interval * float64(time.Second))):
				}
			}
		},
	}
}

func unreachableErr(nodes []orchestrator.NodeStatus) error {
	var down []string
	for _, n := range nodes {
		if !n.Reachable {
			down = append(down, n.Name)
		}
	}
	if len(down) == 0 {
		return nil
	}
	return withCode(exitUnreachable, fmt.Errorf("unreachable: %s (run `sshq nodes` for details)", strings.Join(down, ", ")))
}

func renderStatus(st ui.Style, nodes []orchestrator.NodeStatus) string {
	var b strings.Builder
	free, total, waiting := 0, 0, 0
	running := map[string]bool{}
	for _, n := range nodes {
		if !n.Reachable {
			fmt.Fprintf(&b, "%s  %s  %s\n\n", st.Bold(n.Name), st.Paint(ui.Red, "down"), n.Error)
			continue
		}
		fmt.Fprintf(&b, "%s  %s  load %s/%s CPUs  RAM %s free of %s  disk %s free\n", st.Bold(n.Name), st.Paint(ui.Green, "up"),
			fmtLoad(n.Load1), fmtInt(n.CPUs), ui.MiB(int(n.MemAvailableMiB)), ui.MiB(int(n.MemTotalMiB)), ui.MiB(int(n.DiskFreeMiB)))
		if len(n.GPUs) == 0 {
			msg := n.GPUMessage
			if msg == "" {
				msg = string(n.GPUState)
			}
			fmt.Fprintf(&b, "  no GPUs: %s\n", msg)
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
						running[g.Holder.JobUID] = true
						holder = st.Paint(ui.Blue, fmt.Sprintf("#%d %s (%s)", g.Holder.JobID, g.Holder.Name, orDash(g.Holder.User)))
					} else {
						holder = st.Paint(ui.Blue, "leased")
					}
				case "foreign":
					var ps []string
					for _, p := range g.Processes {
						ps = append(ps, fmt.Sprintf("pid %d %s", p.PID, orDash(p.User)))
					}
					holder = st.Paint(ui.Yellow, "foreign: "+strings.Join(ps, ", "))
				default:
					holder = st.Paint(ui.Red, g.State)
				}
				util := "-"
				if g.UtilizationPct != nil {
					util = fmt.Sprintf("%d%%", *g.UtilizationPct)
				}
				rows = append(rows, []string{fmt.Sprint(g.Index), g.Name, ui.MiB(g.MemoryUsedMiB) + " / " + ui.MiB(g.MemoryTotalMiB), util, holder})
			}
			b.WriteString(indent(st.Table([]string{"GPU", "MODEL", "MEMORY", "UTIL", "HOLDER"}, rows), "  "))
		}
		if len(n.Queue) > 0 {
			var rows [][]string
			for _, q := range n.Queue {
				waiting++
				rows = append(rows, []string{fmt.Sprint(q.Position), q.Name, orDash(q.User), fmt.Sprint(q.NumGPUs), humanSince(q.Since)})
			}
			b.WriteString("  waiting:\n")
			b.WriteString(indent(st.Table([]string{"POS", "JOB", "USER", "GPUS", "WAITING"}, rows), "  "))
		}
		for _, w := range n.Warnings {
			fmt.Fprintf(&b, "  %s %s\n", st.Paint(ui.Yellow, "warning:"), w)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "GPUs: %d free / %d total   jobs: %d running, %d waiting\n", free, total, len(running), waiting)
	return b.String()
}

func indent(s, pre string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = pre + lines[i]
	}
	return strings.Join(lines, "\n") + "\n"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fmtInt(n int) string {
	if n < 0 {
		return "?"
	}
	return fmt.Sprint(n)
}

func fmtLoad(f float64) string {
	if f < 0 {
		return "?"
	}
	return fmt.Sprintf("%.1f", f)
}

func humanSince(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return humanDuration(time.Since(t))
}

func humanDuration(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

// launchFlagsFirst moves flags written after a task file in front of it:
// `sshq launch task.yaml -d --env A=1` works like `sshq launch -d --env A=1
// task.yaml`. Only the flags right after the task file move; from the first
// other word (or `--`) on, everything is the job's command, in order: in
// `sshq launch task.yaml python train.py --lr 3`, --lr is the program's.
func launchFlagsFirst(args []string) []string {
	li := -1
	for i, a := range args {
		if a == "launch" {
			li = i
			break
		}
		if !strings.HasPrefix(a, "-") && i > 0 && !takesValue(args[i-1]) {
			return args // another command
		}
	}
	if li < 0 {
		return args
	}
	rest := args[li+1:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			return args
		}
		if strings.HasPrefix(a, "-") {
			if launchValueFlags[strings.TrimLeft(a, "-")] && !strings.Contains(a, "=") {
				i++
			}
			continue
		}
		if !isTaskFile(a) {
			return args
		}
		tail := rest[i+1:]
		var flags []string
		j := 0
		for ; j < len(tail); j++ {
			if tail[j] == "--" {
				j++
				break
			}
			if !strings.HasPrefix(tail[j], "-") {
				break
			}
			flags = append(flags, tail[j])
			if launchValueFlags[strings.TrimLeft(tail[j], "-")] && !strings.Contains(tail[j], "=") && j+1 < len(tail) {
				j++
				flags = append(flags, tail[j])
			}
		}
		out := append([]string{}, args[:li+1]...)
		out = append(out, rest[:i]...)
		out = append(out, flags...)
		out = append(out, "--", a)
		return append(out, tail[j:]...)
	}
	return args
}

var launchValueFlags = map[string]bool{"name": true, "gpus": true, "node": true, "env": true, "secret": true, "workdir": true}

func takesValue(flag string) bool {
	switch strings.TrimLeft(flag, "-") {
	case "ssh-config", "nodes", "home":
		return !strings.Contains(flag, "=")
	}
	return false
}

// isTaskFile is the rule of `sshq launch ARG`: an existing .yaml/.yml file
// is a task; any other word starts a command.
func isTaskFile(a string) bool {
	if !strings.HasSuffix(a, ".yaml") && !strings.HasSuffix(a, ".yml") {
		return false
	}
	fi, err := os.Stat(a)
	return err == nil && !fi.IsDir()
}

func openStore(c *cli.Context) (*store.Store, error) {
	return store.Open(sshqHome(c))
}

// ---- sshq launch ----

func launchCommand(e env) *cli.Command {
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
   sshq launch --gpus 1 -- python train.py --epochs 3
   sshq launch --dry-run task.yaml          # validate and show the placement, touch nothing`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "name", Usage: "job name (default: the task's name, or the command's program)"},
			&cli.StringFlag{Name: "gpus", Usage: "GPUs to use: `N` or TYPE:N (A100:2); overrides the task's resources"},
			&cli.StringFlag{Name: "node", Usage: "run on this node only"},
			&cli.StringSliceFlag{Name: "env", Usage: "set an env var: K=V, or K to pass the local value (repeatable)"},
			&cli.StringSliceFlag{Name: "secret", Usage: "like --env, but never printed, logged or stored on this machine"},
			&cli.StringFlag{Name: "workdir", Usage: "local directory to sync and run in"},
			&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "print the job id and return once it is queued"},
			&cli.BoolFlag{Name: "dry-run", Usage: "validate, place and print the plan; change nothing"},
			&cli.BoolFlag{Name: "json", Usage: "machine-readable result (implies --detach)"},
		},
		Action: func(c *cli.Context) error { return doLaunch(c, e) },
	}
}

func doLaunch(c *cli.Context, e env) error {
	args := c.Args().Slice()
	if len(args) == 0 {
		return usageErr("launch needs a task file or a command: `sshq launch task.yaml` or `sshq launch -- python train.py`")
	}
	var t *task.Task
	var warns []task.Warning
	var err error
	run := ""
	if isTaskFile(args[0]) {
		t, warns, err = task.Load(args[0])
		if err != nil {
			return withCode(exitUsage, err)
		}
		if len(args) > 1 {
			run = shellJoin(args[1:])
		}
	} else {
		if strings.HasSuffix(args[0], ".yaml") || strings.HasSuffix(args[0], ".yml") {
			return usageErr("task file %s does not exist (a word ending in .yaml is read as a task file; check the path)", args[0])
		}
		t, warns, err = task.Parse("command line", []byte("run: \"\"\n"))
		if err != nil {
			return err
		}
		run = shellJoin(args)
		// The program's name, also for `sshq launch 'python train.py'`.
		if f := strings.Fields(args[0]); len(f) > 0 {
			t.Name = filepath.Base(f[0])
		}
	}
	for _, w := range warns {
		fmt.Fprintf(e.stderr, "sshq: warning: %s\n", w)
	}
	ov := task.Overrides{Name: c.String("name"), Run: run, Workdir: c.String("workdir")}
	if g := c.String("gpus"); g != "" {
		a, err := task.ParseGPUFlag(g)
		if err != nil {
			return withCode(exitUsage, err)
		}
		ov.GPUs = &a
	}
	if ov.Env, err = kvFlags(c.StringSlice("env"), "--env", e); err != nil {
		return err
	}
	sec, err := kvFlags(c.StringSlice("secret"), "--secret", e)
	if err != nil {
		return err
	}
	ov.Secrets = task.Secrets(sec)
	if err := t.Apply(ov); err != nil {
		return withCode(exitUsage, err)
	}
	if err := t.Validate(); err != nil {
		return withCode(exitUsage, err)
	}
	cl, err := openCluster(c, e)
	if err != nil {
		return err
	}
	defer cl.close()
	oc := cl.orch()
	if pin := c.String("node"); pin != "" && !slices.Contains(cl.names, pin) {
		return usageErr("--node %s: not one of the nodes (%s); pick one of them, or add it with --nodes or `sshq init`", pin, strings.Join(cl.names, ", "))
	}
	if c.Bool("dry-run") {
		p, err := oc.Place(c.Context, t, c.String("node"))
		if err != nil {
			return placeErr(err)
		}
		if c.Bool("json") {
			return writeJSON(e.stdout, map[string]any{"dry_run": true, "name": t.Name, "placement": p, "workdir": t.Workdir})
		}
		fmt.Fprintf(e.stdout, "plan for %q (nothing was changed):\n  node:     %s (%s)\n", t.Name, p.Node, p.Reason)
		if p.NumGPUs > 0 {
			fmt.Fprintf(e.stdout, "  gpus:     %d × %s\n", p.NumGPUs, orAny(p.Accelerator))
		}
		if !p.FitsNow {
			fmt.Fprintf(e.stdout, "  queue:    would wait behind %d job(s) until GPUs free up\n", p.QueueAhead)
		}
		if t.Workdir != "" {
			fmt.Fprintf(e.stdout, "  workdir:  %s → %s:~/.sshq/workdirs/\n", t.Workdir, p.Node)
		}
		for r, l := range t.FileMounts {
			fmt.Fprintf(e.stdout, "  mount:    %s → %s:%s\n", l, p.Node, r)
		}
		return nil
	}
	st, err := openStore(c)
	if err != nil {
		return err
	}
	detach := c.Bool("detach") || c.Bool("json")
	errStyle := ui.For(e.stderr, e.getenv)
	bar := newProgress(e.stderr, errStyle.TTY && !c.Bool("json"))
	host, _ := os.Hostname()
	job, p, err := oc.Launch(c.Context, st, t, orchestrator.LaunchOptions{
		Node: c.String("node"), Origin: host, Progress: bar.update,
		Notef: func(f string, a ...any) {
			if !c.Bool("json") {
				bar.clear()
				fmt.Fprintf(e.stderr, "sshq: "+f+"\n", a...)
			}
		},
	})
	bar.clear()
	if err != nil {
		if c.Context.Err() != nil {
			return withCode(exitInterrupted, err)
		}
		return placeErr(err)
	}
	if c.Bool("json") {
		return writeJSON(e.stdout, map[string]any{"id": job.ID, "uid": job.UID, "name": job.Name, "node": job.Node,
			"gpus": job.GPUs, "num_gpus": job.NumGPUs, "state": job.State})
	}
	where := "starting"
	switch {
	case !p.FitsNow && p.QueueAhead > 0:
		where = fmt.Sprintf("waiting in the node's queue behind %d job(s) for %d GPU(s)", p.QueueAhead, p.NumGPUs)
	case !p.FitsNow:
		where = fmt.Sprintf("waiting in the node's queue until %d GPU(s) free up", p.NumGPUs)
	}
	if p.NumGPUs == 0 {
		where += " (no GPU requested: add --gpus N, or resources.accelerators in the task, for GPUs)"
	}
	fmt.Fprintf(e.stderr, "sshq: job #%d (%s) submitted to %s: %s\n", job.ID, job.Name, job.Node, where)
	if detach {
		fmt.Fprintf(e.stdout, "%d\n", job.ID)
		fmt.Fprintf(e.stderr, "sshq: follow it with `sshq logs -f %d`; list jobs with `sshq queue`\n", job.ID)
		return nil
	}
	code, err := oc.Logs(c.Context, job, -1, true, e.stdout, e.stderr)
	if c.Context.Err() != nil {
		fmt.Fprintf(e.stderr, "\nsshq: detached; job #%d keeps running on %s. Follow it with `sshq logs -f %d`, stop it with `sshq cancel %d`\n",
			job.ID, job.Node, job.ID, job.ID)
		return nil
	}
	if err != nil {
		return withCode(exitUnreachable, fmt.Errorf("lost the job's output stream: %w; it may still run: `sshq logs -f %d`", err, job.ID))
	}
	views, _, _ := oc.Reconcile(context.Background(), st, func(j *store.Job) bool { return j.ID == job.ID })
	if len(views) == 1 {
		fmt.Fprintf(e.stderr, "sshq: job #%d %s", job.ID, views[0].State)
		if views[0].ExitCode != nil {
			fmt.Fprintf(e.stderr, " (exit code %d)", *views[0].ExitCode)
		}
		fmt.Fprintln(e.stderr)
	}
	if code != 0 {
		return withCode(code, errors.New(""))
	}
	return nil
}

func placeErr(err error) error {
	switch {
	case errors.Is(err, orchestrator.ErrNoFit):
		return withCode(exitUsage, err)
	case errors.Is(err, orchestrator.ErrNoNode), errors.Is(err, sshpool.ErrUnreachable):
		return withCode(exitUnreachable, err)
	}
	return err
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

// kvFlags parses repeated K=V flags; a bare K takes the local value.
func kvFlags(vals []string, flag string, e env) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range vals {
		k, val, ok := strings.Cut(v, "=")
		if !ok {
			val = e.getenv(k)
			if val == "" {
				if _, set := os.LookupEnv(k); !set {
					return nil, usageErr("%s %s: %s is not set in this shell; give a value with %s %s=VALUE", flag, k, k, flag, k)
				}
			}
		}
		if k == "" {
			return nil, usageErr("%s %q: the name is empty; use %s NAME=VALUE", flag, v, flag)
		}
		out[k] = val
	}
	return out, nil
}

// progress draws a one-line sync progress bar on a terminal.
type progress struct {
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
	fmt.Fprintf(p.w, "\r\x1b[Ksync [%s%s] %d/%d files  %s/%s", strings.Repeat("█", n), strings.Repeat("░", width-n),
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

// ---- sshq queue ----

func queueCommand(e env) *cli.Command {
	return &cli.Command{
		Name:  "queue",
		Usage: "this controller's jobs, checked against their nodes",
		Description: `Asks each node about this controller's unfinished jobs (one command per node) and shows them.
Jobs on a node that does not answer keep their last known state and are marked.

Examples:
   sshq queue
   sshq queue -a                 # include ended jobs
   sshq queue --json | jq '.[] | select(.state=="FAILED") | .id'`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "include ended jobs"},
			&cli.BoolFlag{Name: "json", Usage: "machine-readable output"},
		},
		Action: func(c *cli.Context) error {
			st, err := openStore(c)
			if err != nil {
				return err
			}
			oc, closeFn, err := jobCluster(c, e)
			if err != nil {
				return err
			}
			defer closeFn()
			reconcile, only := oc.Reconcile, func(j *store.Job) bool { return !j.State.Terminal() }
			if c.Bool("all") {
				// Only -a reads the history of ended jobs.
				reconcile, only = oc.ReconcileAll, nil
			}
			views, down, err := reconcile(c.Context, st, only)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				if err := writeJSONLines(e.stdout, views); err != nil {
					return err
				}
			} else {
				renderQueue(e, views)
			}
			if len(down) > 0 {
				var names []string
				for n := range down {
					names = append(names, n)
				}
				sort.Strings(names)
				return withCode(exitUnreachable, fmt.Errorf("could not reach %s: their jobs show their last known state", strings.Join(names, ", ")))
			}
			return nil
		},
	}
}

// jobCluster is the cluster for job commands: the pool reaches whatever
// node a job was placed on, even one no longer in the node selection.
func jobCluster(c *cli.Context, e env) (*orchestrator.Cluster, func(), error) {
	cfg, err := loadConfig(c, e)
	if err != nil {
		return nil, nil, err
	}
	r := inventory.NewResolver(cfg)
	pool := sshpool.New(r)
	return &orchestrator.Cluster{Pool: pool, Resolver: r}, func() { pool.Close() }, nil
}

func renderQueue(e env, views []orchestrator.JobView) {
	st := ui.For(e.stdout, e.getenv)
	if len(views) == 0 {
		fmt.Fprintln(e.stdout, "no jobs (`sshq queue -a` includes ended ones; `sshq launch` starts one)")
		return
	}
	var rows [][]string
	for _, v := range views {
		state := string(v.State)
		if v.State == job.Pending && v.QueuePosition != nil {
			state = fmt.Sprintf("PENDING (#%d in queue)", *v.QueuePosition)
		}
		state = st.Paint(stateColor(v.State), state)
		if !v.NodeReachable {
			state += st.Paint(ui.Gray, " (node unreachable)")
		}
		gpus := "-"
		if len(v.GPUs) > 0 {
			gpus = strings.Trim(strings.Join(strings.Fields(fmt.Sprint(v.GPUs)), ","), "[]")
		} else if v.NumGPUs > 0 {
			gpus = fmt.Sprintf("(%d)", v.NumGPUs)
		}
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
		rows = append(rows, []string{fmt.Sprint(v.ID), v.Name, v.User, orDash(v.Node), gpus, state,
			v.Submitted.Local().Format("01-02 15:04"), started, dur, exit})
	}
	fmt.Fprint(e.stdout, st.Table([]string{"ID", "NAME", "USER", "NODE", "GPUS", "STATE", "SUBMITTED", "STARTED", "DURATION", "EXIT"}, rows))
}

func stateColor(s job.State) string {
	switch s {
	case job.Succeeded:
		return ui.Green
	case job.Failed, job.FailedSetup, job.Lost:
		return ui.Red
	case job.Running, job.SettingUp:
		return ui.Blue
	case job.Cancelled:
		return ui.Gray
	}
	return ui.Yellow
}

// findJobs resolves job references against the store, its history included.
func findJobs(st *store.Store, refs []string) ([]*store.Job, error) {
	var out []*store.Job
	for _, r := range refs {
		j, err := st.Find(r)
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrAmbiguous) {
			return nil, withCode(exitUsage, err)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, nil
}

// ---- sshq logs ----

func logsCommand(e env) *cli.Command {
	return &cli.Command{
		Name:      "logs",
		Usage:     "print a job's output",
		ArgsUsage: "JOB",
		Description: `JOB is an id (12 or #12), a uid or a unique name. With -f, follows the output until the job
ends and exits with the job's exit code.

Examples:
   sshq logs 12
   sshq logs -f --tail 50 train`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "follow until the job ends; exit with its code"},
			&cli.IntFlag{Name: "tail", Aliases: []string{"n"}, Value: -1, DefaultText: "all", Usage: "only the last `N` lines"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageErr("logs takes one job: `sshq logs JOB` (ids are in `sshq queue`)")
			}
			st, err := openStore(c)
			if err != nil {
				return err
			}
			jobs, err := findJobs(st, c.Args().Slice())
			if err != nil {
				return err
			}
			oc, closeFn, err := jobCluster(c, e)
			if err != nil {
				return err
			}
			defer closeFn()
			if views, _, _ := oc.Reconcile(c.Context, st, func(j *store.Job) bool { return j.ID == jobs[0].ID }); len(views) == 1 && views[0].State == job.Pending {
				pos := ""
				if views[0].QueuePosition != nil {
					pos = fmt.Sprintf(", #%d in %s's queue", *views[0].QueuePosition, views[0].Node)
				}
				fmt.Fprintf(e.stderr, "sshq: job #%d is PENDING%s: its output starts when it gets its GPUs\n", views[0].ID, pos)
			}
			code, err := oc.Logs(c.Context, jobs[0], c.Int("tail"), c.Bool("follow"), e.stdout, e.stderr)
			if c.Context.Err() != nil {
				// Like tail -f: interrupted, not the job's outcome.
				return withCode(exitInterrupted, errors.New(""))
			}
			if err != nil {
				return withCode(exitUnreachable, err)
			}
			if c.Bool("follow") {
				_, _, _ = oc.Reconcile(context.Background(), st, func(j *store.Job) bool { return j.ID == jobs[0].ID })
			}
			if code != 0 {
				return withCode(code, errors.New(""))
			}
			return nil
		},
	}
}

// ---- sshq cancel ----

func cancelCommand(e env) *cli.Command {
	return &cli.Command{
		Name:      "cancel",
		Usage:     "stop jobs: their whole process trees, freeing their GPUs",
		ArgsUsage: "JOB...",
		Description: `Sends SIGTERM to every process of each job (setsid children too), then SIGKILL after the grace
period. A waiting job leaves its node's queue and the jobs behind it move up.

Examples:
   sshq cancel 12 13
   sshq cancel --all`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all", Usage: "cancel all of this controller's unfinished jobs"},
			&cli.DurationFlag{Name: "grace", Value: remote.DefaultCancelGrace, Usage: "time between SIGTERM and SIGKILL"},
			&cli.BoolFlag{Name: "json", Usage: "machine-readable output"},
		},
		Action: func(c *cli.Context) error {
			st, err := openStore(c)
			if err != nil {
				return err
			}
			var jobs []*store.Job
			if c.Bool("all") {
				s, err := st.Load()
				if err != nil {
					return err
				}
				for _, j := range s.Jobs {
					if !j.State.Terminal() && j.Node != "" {
						jobs = append(jobs, j)
					}
				}
			} else {
				if c.NArg() == 0 {
					return usageErr("cancel needs job ids (`sshq cancel 12`) or --all")
				}
				if jobs, err = findJobs(st, c.Args().Slice()); err != nil {
					return err
				}
			}
			oc, closeFn, err := jobCluster(c, e)
			if err != nil {
				return err
			}
			defer closeFn()
			out, cerr := oc.Cancel(c.Context, st, jobs, c.Duration("grace"))
			if c.Bool("json") {
				res := []map[string]any{}
				for _, j := range jobs {
					res = append(res, map[string]any{"id": j.ID, "name": j.Name, "outcome": out[j.ID]})
				}
				writeJSON(e.stdout, res)
			} else {
				for _, j := range jobs {
					o := out[j.ID]
					switch o {
					case "done":
						o = "already ended (" + string(j.State) + "); nothing to cancel"
					case "missing":
						o = "unknown on " + j.Node + " (its record there is gone); nothing to cancel"
					}
					fmt.Fprintf(e.stdout, "#%d %s: %s\n", j.ID, j.Name, o)
				}
				if len(jobs) == 0 {
					fmt.Fprintln(e.stdout, "no unfinished jobs to cancel")
				}
			}
			if cerr != nil {
				return withCode(exitUnreachable, cerr)
			}
			return nil
		},
	}
}

// ---- sshq wait ----

func waitCommand(e env) *cli.Command {
	return &cli.Command{
		Name:      "wait",
		Usage:     "block until jobs end; exit with the last failing one's code",
		ArgsUsage: "JOB...",
		Description: `Asks the jobs' nodes every --interval until every job has ended. Exits 0 when all
SUCCEEDED, else with the exit code of the last failing job (1 for LOST or CANCELLED without one).
The jobs keep running if wait is interrupted.

Examples:
   sshq wait 12 13 && echo all good
   sshq launch -d task.yaml | xargs sshq wait`,
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "interval", Value: 2 * time.Second, Usage: "how often to ask the nodes"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return usageErr("wait needs job ids: `sshq wait 12 13`")
			}
			st, err := openStore(c)
			if err != nil {
				return err
			}
			jobs, err := findJobs(st, c.Args().Slice())
			if err != nil {
				return err
			}
			ids := map[int]bool{}
			for _, j := range jobs {
				ids[j.ID] = true
			}
			oc, closeFn, err := jobCluster(c, e)
			if err != nil {
				return err
			}
			defer closeFn()
			for {
				// ReconcileAll: a job may have ended long ago, its record in the history.
				views, _, err := oc.ReconcileAll(c.Context, st, func(j *store.Job) bool { return ids[j.ID] })
				if err != nil {
					return err
				}
				done, code := true, 0
				for _, v := range views {
					if !v.State.Terminal() {
						done = false
						continue
					}
					if v.State != job.Succeeded {
						code = 1
						if v.ExitCode != nil && *v.ExitCode != 0 {
							code = *v.ExitCode
						}
					}
				}
				if done {
					for _, v := range views {
						fmt.Fprintf(e.stdout, "#%d %s: %s\n", v.ID, v.Name, v.State)
					}
					if code != 0 {
						return withCode(code, errors.New(""))
					}
					return nil
				}
				select {
				case <-c.Context.Done():
					return withCode(exitInterrupted, errors.New("interrupted; the jobs keep running"))
				case <-time.After(c.Duration("interval")):
				}
			}
		},
	}
}

// ---- sshq attach ----

func attachCommand(e env) *cli.Command {
	return &cli.Command{
		Name:      "attach",
		Usage:     "open the job's tmux session on its node (detach with Ctrl-b d)",
		ArgsUsage: "JOB",
		Description: `Replaces this process with the system ssh client: ssh -t NODE tmux -L sshq attach -t UID.
The job keeps running when you detach (Ctrl-b d) or the connection drops.

Examples:
   sshq attach 12
   sshq attach train`,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageErr("attach takes one job: `sshq attach 12`")
			}
			st, err := openStore(c)
			if err != nil {
				return err
			}
			jobs, err := findJobs(st, c.Args().Slice())
			if err != nil {
				return err
			}
			j := jobs[0]
			if j.State.Terminal() {
				return usageErr("job #%d has ended (%s); read its output with `sshq logs %d`", j.ID, j.State, j.ID)
			}
			sshPath, err := exec.LookPath("ssh")
			if err != nil {
				return errors.New("attach needs the OpenSSH client (`ssh`) on this machine")
			}
			argv := []string{"ssh"}
			if cfg := sshConfigPath(c); cfg != "" {
				argv = append(argv, "-F", cfg)
			}
			argv = append(argv, "-t", j.Node, sshpool.Command("tmux", "-L", "sshq", "attach-session", "-t", j.UID))
			return syscall.Exec(sshPath, argv, os.Environ())
		},
	}
}

// ---- sshq completion ----

func completionCommand(e env) *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash, zsh or fish)",
		ArgsUsage: "bash|zsh|fish",
		Description: `Prints a script that completes sshq's commands, flags, job ids and files.

Examples:
   source <(sshq completion bash)                       # bash, in ~/.bashrc
   sshq completion zsh > "${fpath[1]}/_sshq"            # zsh
   sshq completion fish > ~/.config/fish/completions/sshq.fish`,
		Action: func(c *cli.Context) error {
			switch c.Args().First() {
			case "bash":
				fmt.Fprint(e.stdout, bashCompletion)
			case "zsh":
				fmt.Fprint(e.stdout, zshCompletion)
			case "fish":
				s, err := c.App.ToFishCompletion()
				if err != nil {
					return err
				}
				fmt.Fprintln(e.stdout, s)
			default:
				return usageErr("completion needs a shell: `sshq completion bash`, `zsh` or `fish`")
			}
			return nil
		},
	}
}

// The scripts ask sshq itself (urfave/cli's --generate-bash-completion), so
// they never go stale when commands or flags change.
const bashCompletion = `# bash completion for sshq
_sshq_complete() {
  local cur words
  cur="${COMP_WORDS[COMP_CWORD]}"
  words=("${COMP_WORDS[@]:0:COMP_CWORD}")
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$("${words[@]}" "$cur" --generate-bash-completion 2>/dev/null)" -- "$cur"))
  else
    COMPREPLY=($(compgen -W "$("${words[@]}" --generate-bash-completion 2>/dev/null)" -- "$cur"))
    [[ ${#COMPREPLY[@]} -eq 0 ]] && COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -o default -F _sshq_complete sshq
`

const zshCompletion = `#compdef sshq
_sshq() {
  local -a opts
  local cur=${words[-1]}
  if [[ "$cur" == -* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} ${cur} --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ -n "${opts[1]}" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
compdef _sshq sshq
`

// ---- sshq demo ----

func demoCommand(e env) *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run a local 3-node GPU cluster inside sshq (simulated GPUs, real SSH, tmux and flock)",
		Description: `Starts three nodes in this process, each an SSH server on a 127.0.0.x address with its own home,
tmux socket, GPU lease directory and a simulated nvidia-smi (2× A100 80GB, 4× RTX 4090, 1× T4),
and prints the variables that point sshq at them. Runs until Ctrl-C, then stops every node and
job it started. Needs tmux.

Examples:
   sshq demo               # then, in another terminal, export what it printed and try sshq status
   sshq demo --tour        # a scripted walk: status, launch, queue, logs, cancel, status`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "tour", Usage: "run a short scripted tour, then stop"},
			&cli.StringFlag{Name: "dir", Usage: "where the demo keeps its nodes and files (removed after a tour)", DefaultText: "$TMPDIR/sshq-demo-$UID"},
		},
		Action: func(c *cli.Context) error {
			dir := c.String("dir")
			if dir == "" {
				// The tour has its own directory, so it never disturbs a
				// demo you keep running, and it leaves nothing behind.
				name := "sshq-demo"
				if c.Bool("tour") {
					name = "sshq-demo-tour"
				}
				dir = filepath.Join(os.TempDir(), fmt.Sprintf("%s-%d", name, os.Getuid()))
			}
			cl, err := demo.Start(dir, demo.DefaultNodes)
			if err != nil {
				return err
			}
			defer cl.Close()
			if c.Bool("tour") {
				defer os.RemoveAll(cl.Dir)
			}
			st := ui.For(e.stdout, e.getenv)
			fmt.Fprintf(e.stdout, "sshq demo: %d nodes up\n", len(cl.Nodes))
			for _, n := range cl.Nodes {
				fmt.Fprintf(e.stdout, "  %-10s %s:%-5d %d× %s\n", n.Name, n.IP, n.Port, len(n.GPUs), n.GPUs[0].Name)
			}
			if c.Bool("tour") {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				if err := demo.Tour(c.Context, cl, exe, e.stdout, st.Bold); err != nil {
					return err
				}
				fmt.Fprintln(e.stdout, "\nTour done: every job ended as expected. Run `sshq demo` to keep the cluster up and try your own commands.")
				return nil
			}
			fmt.Fprintf(e.stdout, "\nPoint sshq at it from another terminal:\n  export %s\nthen try:\n  sshq status\n  sshq launch --gpus A100:1 -- 'nvidia-smi -L -i $CUDA_VISIBLE_DEVICES'\n\nCtrl-C stops the nodes and their jobs.\n",
				strings.Join(cl.Env(), " "))
			<-c.Context.Done()
			fmt.Fprintln(e.stderr, "\nsshq demo: stopping nodes and jobs")
			return nil
		},
	}
}
