// Command sshq is an agentless GPU job queue over SSH: the nodes are the
// hosts of your ~/.ssh/config, nothing is installed on them, and jobs run
// under tmux, leasing GPUs with flock.
//
// main.go is the CLI: flags, output formatting and exit codes. Everything it
// does to nodes goes through orchestrator, sshpool and inventory.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sshq/sshq/inventory"
	"github.com/sshq/sshq/orchestrator/ui"
	"github.com/sshq/sshq/sshpool"
	"github.com/urfave/cli/v2"
)

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

	app := newApp(e)
	err := app.RunContext(ctx, args)
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
		Usage:                "a GPU job queue for the machines in your ~/.ssh/config",
		Description:          "sshq turns hosts you can already ssh into into one GPU job queue, with nothing installed on them.\nNodes are chosen with --nodes, SSHQ_NODES or `sshq init`.",
		Writer:               e.stdout,
		ErrWriter:            e.stderr,
		EnableBashCompletion: true,
		HideHelpCommand:      true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "ssh-config", Usage: "OpenSSH client config listing the nodes", EnvVars: []string{"SSHQ_SSH_CONFIG"}, DefaultText: "~/.ssh/config"},
			&cli.StringFlag{Name: "nodes", Usage: "which hosts are nodes: aliases or globs, comma-separated (e.g. gpu-*,!gpu-9)", EnvVars: []string{"SSHQ_NODES"}},
			&cli.StringFlag{Name: "home", Usage: "controller state directory", EnvVars: []string{"SSHQ_HOME"}, DefaultText: "~/.sshq"},
		},
		ExitErrHandler: func(*cli.Context, error) {}, // run() prints errors and picks codes
		Commands:       commands(e),
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
		nodesCommand(e),
		initCommand(e),
	}
	cmds = append(cmds, extraCommands(e)...)
	for _, c := range cmds {
		if c.OnUsageError == nil {
			c.OnUsageError = func(c *cli.Context, err error, _ bool) error {
				return usageErr("%v (see `sshq %s --help`)", err, c.Command.Name)
			}
		}
	}
	return cmds
}

// extraCommands is extended by the files of the other commands' issues.
var extraCommandsList []func(env) *cli.Command

func extraCommands(e env) []*cli.Command {
	var out []*cli.Command
	for _, f := range extraCommandsList {
		out = append(out, f(e))
	}
	return out
}

// ---- shared plumbing ----

// sshqHome is $SSHQ_HOME or ~/.sshq.
func sshqHome(c *cli.Context) string {
	if h := c.String("home"); h != "" {
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

func loadConfig(c *cli.Context, e env) (*inventory.Config, error) {
	cfg, err := inventory.Load(c.String("ssh-config"))
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
	pats, _, err := inventory.Patterns(c.String("nodes"), "", settings)
	if errors.Is(err, inventory.ErrNoNodes) {
		return nil, withCode(exitUsage, noNodesError(cfg))
	}
	names, err := inventory.Select(cfg.Aliases, pats)
	if err != nil {
		return nil, withCode(exitUsage, err)
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

// forEachNode runs f for every node in parallel, each under its own
// deadline, and returns when all are done: a hung node costs its own
// timeout, never the others' answers.
func (cl *cluster) forEachNode(ctx context.Context, f func(ctx context.Context, name string)) {
	var wg sync.WaitGroup
	for _, n := range cl.names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(ctx, n)
		}()
	}
	wg.Wait()
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
echo "kernel $(uname -sr)"`

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
	cl.forEachNode(c.Context, func(ctx context.Context, name string) {
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
		r.Ready = r.Tmux && r.Flock && kv["have_bash"] != "-" && kv["lease_dir_state"] != "symlink" && kv["lease_dir_state"] != "not-writable"
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
			if err := inventory.SaveSettings(sshqHome(c), inventory.Settings{Nodes: pats}); err != nil {
				return err
			}
			sort.Strings(names)
			fmt.Fprintf(e.stdout, "wrote %s: %d node(s): %s\nnext: `sshq nodes` checks that each is ready\n",
				inventory.SettingsPath(sshqHome(c)), len(names), strings.Join(names, ", "))
			return nil
		},
	}
}
