package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/sshq/sshq/inventory"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/orchestrator/task"
	"github.com/sshq/sshq/sshpool"
)

// Controller is everything one sshq command works with: the settings, the
// ssh config, the resolver, the connection pool and the job store, each
// opened once. It has one method per verb of the CLI; each returns a view
// (plain data, ready to print or marshal) and leaves presentation to the
// caller.
type Controller struct {
	home     string
	settings inventory.Settings
	ssh      *inventory.Config
	resolver *inventory.Resolver
	pool     *sshpool.Pool
	patterns []string
	source   string // where patterns came from, for messages
	slurm    slurmHosts

	mu sync.Mutex
	st *store.Store
}

// ControllerOptions say where the controller's state and nodes are.
type ControllerOptions struct {
	// Home is the state directory; "" means ~/.sshq.
	Home string
	// SSHConfig is the ssh config; "" means the one `sshq init` recorded,
	// else OpenSSH's default.
	SSHConfig string
	// Nodes are node patterns (comma- or space-separated); "" means the
	// ones config.yaml lists. NodesFrom names where they came from
	// ("--nodes", "SSHQ_NODES") for messages.
	Nodes, NodesFrom string
	// Slurm names the hosts that are Slurm login nodes (comma- or
	// space-separated); "" means the ones config.yaml lists. SlurmFrom
	// names where they came from ("--slurm", "SSHQ_SLURM").
	Slurm, SlurmFrom string
	// Warn receives one line per thing of the ssh config sshq cannot
	// honour; may be nil.
	Warn func(string)
}

// UsageError is a request the user must change (an unknown job or node, a
// missing ssh config): retrying cannot help. The CLI exits 2 on it.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func usageErrorf(format string, a ...any) error { return &UsageError{fmt.Errorf(format, a...)} }

// UnreachableError means some nodes did not answer: what could be done was
// done, and their jobs show their last known state. The CLI exits 3 on it.
type UnreachableError struct{ Err error }

func (e *UnreachableError) Error() string { return e.Err.Error() }
func (e *UnreachableError) Unwrap() error { return e.Err }

// DefaultHome is ~/.sshq.
func DefaultHome() string {
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".sshq")
}

// OpenController reads the settings and the ssh config. It connects to
// nothing: nodes are dialed when a verb first needs them.
func OpenController(o ControllerOptions) (*Controller, error) {
	c := &Controller{home: o.Home}
	if c.home == "" {
		c.home = DefaultHome()
	}
	var err error
	if c.settings, err = inventory.LoadSettings(c.home); err != nil {
		return nil, &UsageError{err}
	}
	path := o.SSHConfig
	if path == "" {
		path = c.settings.SSHConfig
	}
	if c.ssh, err = inventory.Load(path); err != nil {
		return nil, &UsageError{err}
	}
	if o.Warn != nil {
		for _, w := range c.ssh.Warnings {
			o.Warn(w)
		}
	}
	c.patterns, c.source, err = inventory.Patterns(o.Nodes, "", c.settings)
	if err == nil && o.NodesFrom != "" {
		c.source = o.NodesFrom
	}
	c.resolver = inventory.NewResolver(c.ssh)
	c.pool = sshpool.New(c.resolver)
	c.slurm = newSlurmHosts(o, c.settings)
	return c, nil
}

// Close closes the connections.
func (c *Controller) Close() error { return c.pool.Close() }

// Home is the state directory.
func (c *Controller) Home() string { return c.home }

// cluster is the node set of verbs about the cluster; the pool also
// reaches nodes outside it (a job's node may have left the selection).
func (c *Controller) cluster(names []string) *Cluster {
	return &Cluster{Pool: c.pool, Resolver: c.resolver, Names: names, PerNode: c.settings.PerNode, Slurm: c.slurmClient}
}

// store opens the job store on first use.
func (c *Controller) store() (*store.Store, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st == nil {
		st, err := store.Open(c.home)
		if err != nil {
			return nil, err
		}
		c.st = st
	}
	return c.st, nil
}

// hasStore reports whether this controller ever recorded a job, so a read
// of an empty home creates nothing.
func (c *Controller) hasStore() bool {
	_, err := os.Stat(filepath.Join(c.home, store.StateFile))
	return err == nil
}

// Names are the selected nodes, less the Slurm login nodes (see
// SlurmHosts). Every plain name must be a Host of the ssh config: a typo is
// refused here, before any DNS lookup or dial.
func (c *Controller) Names() ([]string, error) {
	if len(c.patterns) == 0 {
		if len(c.slurm.patterns) > 0 {
			// A Slurm cluster alone is enough to run jobs.
			return nil, nil
		}
		return nil, &UsageError{c.noNodesError()}
	}
	if err := c.checkHosts(c.patterns, c.source); err != nil {
		return nil, err
	}
	names, err := inventory.Select(c.ssh.Aliases, c.patterns)
	if err != nil {
		return nil, usageErrorf("%w (ssh config: %s)", err, c.ssh.Path)
	}
	return c.withoutSlurm(names), nil
}

// checkHosts refuses plain names (not globs, not !exclusions) that are not
// Host aliases of the ssh config.
func (c *Controller) checkHosts(patterns []string, source string) error {
	var unknown []string
	for _, p := range patterns {
		if strings.HasPrefix(p, "!") || strings.ContainsAny(p, "*?[") {
			continue
		}
		if !slices.Contains(c.ssh.Aliases, p) {
			unknown = append(unknown, p)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	what := fmt.Sprintf("%s is not a Host", strings.Join(unknown, ", "))
	if len(unknown) > 1 {
		what = fmt.Sprintf("%s are not Hosts", strings.Join(unknown, ", "))
	}
	msg := fmt.Sprintf("%s in %s.\n%s", what, c.ssh.Path, c.hostsAdvice())
	if source != "" {
		msg = source + ": " + msg
	}
	if source == "config.yaml" {
		msg += fmt.Sprintf("\n  The node list is in %s: choose the nodes again with `sshq init`.", inventory.SettingsPath(c.home))
	}
	return &UsageError{errors.New(msg)}
}

// hostsAdvice lists the hosts sshq can use, or says how to get some.
func (c *Controller) hostsAdvice() string {
	if len(c.ssh.Aliases) > 0 {
		return fmt.Sprintf("  Hosts there: %s\n  sshq's nodes are Host entries of your ssh config: fix the name, or add a Host block for the machine.", strings.Join(c.ssh.Aliases, ", "))
	}
	if _, err := os.Stat(c.ssh.Path); err != nil {
		return fmt.Sprintf("  There is no ssh config at %s: sshq's nodes are the Host entries of your ssh config.\n  Add a `Host` block per machine (see README: Point sshq at your machines),\n  or try sshq on a local cluster first: `sshq demo --tour`.", c.ssh.Path)
	}
	return fmt.Sprintf("  %s lists no Host aliases: add a `Host` block per machine (see README: Point sshq at your machines),\n  or try sshq on a local cluster first: `sshq demo --tour`.", c.ssh.Path)
}

func (c *Controller) noNodesError() error {
	var b strings.Builder
	b.WriteString("no nodes chosen: sshq does not know which of your ssh hosts are GPU nodes.\n")
	if len(c.ssh.Aliases) > 0 {
		fmt.Fprintf(&b, "  Hosts in %s: %s\n", c.ssh.Path, strings.Join(c.ssh.Aliases, ", "))
		fmt.Fprintf(&b, "  Choose them once with `sshq init %s` (globs work: `sshq init 'gpu-*'`),\n", c.ssh.Aliases[0])
		b.WriteString("  or per command with --nodes a,b or SSHQ_NODES=a,b.\n")
		b.WriteString("  A Slurm login node among them is named with --slurm ALIAS (see README: Slurm).")
		return errors.New(b.String())
	}
	b.WriteString(c.hostsAdvice())
	b.WriteString("\n  Then choose the nodes with `sshq init ALIAS...`, or per command with --nodes a,b.")
	return errors.New(b.String())
}

// InitView is what `sshq init` did.
type InitView struct {
	Path  string   `json:"path"`  // the config.yaml written or read
	Nodes []string `json:"nodes"` // the nodes the patterns select now
	// Patterns as saved; Saved is false when init only showed them.
	Patterns []string `json:"patterns"`
	Saved    bool     `json:"saved"`
}

// Init saves the node patterns to config.yaml, after checking that they
// select hosts of the ssh config: a bad list never replaces a good one.
// Without patterns it shows the saved ones.
func (c *Controller) Init(patterns []string) (*InitView, error) {
	path := inventory.SettingsPath(c.home)
	if len(patterns) == 0 {
		if len(c.settings.Nodes) > 0 {
			return &InitView{Path: path, Patterns: c.settings.Nodes, Nodes: c.settings.Nodes}, nil
		}
		return nil, &UsageError{c.noNodesError()}
	}
	if err := c.checkHosts(patterns, "init"); err != nil {
		return nil, fmt.Errorf("%w\n  %s was left as it was.", err, path)
	}
	names, err := inventory.Select(c.ssh.Aliases, patterns)
	if err != nil {
		return nil, usageErrorf("%w; %s was left as it was", err, path)
	}
	// Everything else config.yaml says (the limits' defaults, the Slurm
	// hosts, per_node) stays.
	settings := c.settings
	settings.Nodes, settings.SSHConfig = patterns, ""
	if c.slurm.source == "--slurm" {
		// `sshq init --slurm login gpu-*` saves both lists.
		if _, err := c.SlurmHosts(); err != nil {
			return nil, fmt.Errorf("%w\n  %s was left as it was.", err, path)
		}
		settings.Slurm = c.slurm.patterns
	}
	if !c.ssh.Default {
		// Later commands must read the same file the patterns name.
		settings.SSHConfig, _ = filepath.Abs(c.ssh.Path)
	}
	if err := inventory.SaveSettings(c.home, settings); err != nil {
		return nil, err
	}
	sort.Strings(names)
	return &InitView{Path: path, Patterns: patterns, Nodes: names, Saved: true}, nil
}

// Resolve returns each selected node's ssh settings without connecting.
func (c *Controller) Resolve(ctx context.Context) ([]inventory.Node, error) {
	names, err := c.Names()
	if err != nil {
		return nil, err
	}
	hosts, err := c.SlurmHosts()
	if err != nil {
		return nil, err
	}
	nodes, err := c.resolver.ResolveAll(ctx, append(names, hosts...))
	if err != nil {
		return nil, &UsageError{err}
	}
	return nodes, nil
}

// LaunchRequest is one launch: the task and what is not in it.
type LaunchRequest struct {
	Task    *task.Task
	Node    string // pin to this node; "" lets placement choose
	Options LaunchOptions
}

// LaunchView is a submitted job and where it went.
type LaunchView struct {
	Job       *store.Job
	Placement Placement
}

func (c *Controller) pinned(node string) ([]string, error) {
	names, err := c.Names()
	if err != nil {
		return nil, err
	}
	slurmHosts, err := c.SlurmHosts()
	if err != nil {
		return nil, err
	}
	if node != "" && !slices.Contains(names, node) && !slices.Contains(slurmHosts, node) {
		return nil, usageErrorf("--node %s: not one of the nodes (%s); pick one of them, or add it with --nodes or `sshq init` (or --slurm for a Slurm login node)", node, strings.Join(append(names, slurmHosts...), ", "))
	}
	return names, nil
}

// Plan places t without changing anything (`launch --dry-run`).
func (c *Controller) Plan(ctx context.Context, t *task.Task, node string) (Placement, error) {
	names, err := c.pinned(node)
	if err != nil {
		return Placement{}, err
	}
	return c.place(ctx, names, t, node)
}

// Launch places, syncs and submits a task.
func (c *Controller) Launch(ctx context.Context, r LaunchRequest) (*LaunchView, error) {
	names, err := c.pinned(r.Node)
	if err != nil {
		return nil, err
	}
	defer c.settlingOrphans(ctx)()
	st, err := c.store()
	if err != nil {
		return nil, err
	}
	opts := r.Options
	opts.Node = r.Node
	opts.Defaults = c.settings.Defaults
	if err := c.route(ctx, names, r.Task, &opts); err != nil {
		return nil, err
	}
	j, p, err := c.cluster(names).Launch(ctx, st, r.Task, opts)
	if err != nil {
		return nil, err
	}
	return &LaunchView{Job: j, Placement: p}, nil
}

// QueueView is this controller's jobs as their nodes last said.
type QueueView struct {
	Jobs []JobView
	// Unreachable are the nodes that did not answer, with why.
	Unreachable map[string]error
	// NotRecorded, when set, is why what the nodes said could not be
	// written to the store (a full disk): Jobs show it all the same.
	NotRecorded error
}

// Queue reconciles this controller's unfinished jobs (ended ones too with
// all) and returns them in id order.
func (c *Controller) Queue(ctx context.Context, all bool) (*QueueView, error) {
	if !c.hasStore() {
		return &QueueView{Unreachable: map[string]error{}}, nil
	}
	st, err := c.store()
	if err != nil {
		return nil, err
	}
	reconcile, only := c.cluster(nil).Reconcile, func(j *store.Job) bool { return !j.State.Terminal() }
	if all {
		// Only -a reads the history of ended jobs.
		reconcile, only = c.cluster(nil).ReconcileAll, nil
	}
	views, down, err := reconcile(ctx, st, only)
	v := &QueueView{Jobs: views, Unreachable: down}
	if we := (*store.WriteError)(nil); errors.As(err, &we) {
		v.NotRecorded, err = err, nil
	}
	if err != nil {
		return nil, err
	}
	return v, nil
}

// unreachableError names the nodes that did not answer.
func unreachableError(down map[string]error, what string) error {
	if len(down) == 0 {
		return nil
	}
	names := sortedKeys(down)
	return &UnreachableError{fmt.Errorf("could not reach %s: %s", strings.Join(names, ", "), what)}
}

// Err is the QueueView's verdict: an UnreachableError when a node did not
// answer.
func (v *QueueView) Err() error {
	return unreachableError(v.Unreachable, "their jobs show their last known state")
}

// JobRefs are the ids of this controller's jobs (unfinished ones only with
// unfinished), for shell completion. It never touches the network.
func (c *Controller) JobRefs(unfinished bool) ([]string, error) {
	if !c.hasStore() {
		return nil, nil
	}
	st, err := c.store()
	if err != nil {
		return nil, err
	}
	s, err := st.Load()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, j := range s.Jobs {
		if !unfinished || !j.State.Terminal() {
			out = append(out, fmt.Sprint(j.ID))
		}
	}
	return out, nil
}

// find resolves job references as a person typed them.
func (c *Controller) find(refs []string) (*store.Store, []*store.Job, error) {
	st, err := c.store()
	if err != nil {
		return nil, nil, err
	}
	var out []*store.Job
	for _, r := range refs {
		// The store's Find reads the history too: `sshq logs 4` works for a
		// job that ended long ago.
		j, err := st.Find(r)
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrAmbiguous) {
			return nil, nil, &UsageError{err}
		}
		if err != nil {
			return nil, nil, err
		}
		out = append(out, j)
	}
	return st, out, nil
}

// reconcileIDs asks the nodes about the given jobs and returns their views
// by id.
func (c *Controller) reconcileIDs(ctx context.Context, st *store.Store, ids map[int]bool) (map[int]JobView, map[string]error, error) {
	views, down, err := c.reconcileJobs(ctx, st, ids)
	out := map[int]JobView{}
	for _, v := range views {
		out[v.ID] = v
	}
	return out, down, err
}

// reconcileJobs reconciles the jobs with the given ids. Only when one of
// them has left state.json (ended long ago) is the history read: a `wait`
// polling recent jobs must not parse thousands of old ones each time.
func (c *Controller) reconcileJobs(ctx context.Context, st *store.Store, ids map[int]bool) ([]JobView, map[string]error, error) {
	only := func(j *store.Job) bool { return ids[j.ID] }
	views, down, err := c.cluster(nil).Reconcile(ctx, st, only)
	// A store that cannot be written (a full disk) is no reason to stop
	// following the jobs: the views hold what the nodes said. The next
	// launch, or `sshq queue`, says what is wrong.
	if we := (*store.WriteError)(nil); errors.As(err, &we) {
		err = nil
	}
	if err == nil && len(views) < len(ids) {
		views, down, err = c.cluster(nil).ReconcileAll(ctx, st, only)
		if we := (*store.WriteError)(nil); errors.As(err, &we) {
			err = nil
		}
	}
	return views, down, err
}

// settleOrphans settles the SUBMITTING jobs whose launching process is
// gone (see Cluster.Reconcile), asking their nodes only, and does nothing
// when there are none (a few file locks tried, no node asked). The
// commands that read the queue without reconciling it (status, launch)
// call it, so a launch killed on its way never outlives the next command.
func (c *Controller) settleOrphans(ctx context.Context) {
	if !c.hasStore() {
		return
	}
	st, err := c.store()
	if err != nil {
		return
	}
	s, err := st.Load()
	if err != nil {
		return
	}
	ids := map[int]bool{}
	for _, j := range s.Jobs {
		if j.State == job.Submitting && st.LauncherGone(j.UID) {
			ids[j.ID] = true
		}
	}
	if len(ids) > 0 {
		_, _, _ = c.cluster(nil).Reconcile(ctx, st, func(j *store.Job) bool { return ids[j.ID] })
	}
}

// settlingOrphans runs settleOrphans beside the caller's own work; the
// returned function waits for it.
func (c *Controller) settlingOrphans(ctx context.Context) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.settleOrphans(ctx)
	}()
	return func() { <-done }
}
