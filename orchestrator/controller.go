package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

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
	return c, nil
}

// Close closes the connections.
func (c *Controller) Close() error { return c.pool.Close() }

// Home is the state directory.
func (c *Controller) Home() string { return c.home }

// cluster is the node set of verbs about the cluster; the pool also
// reaches nodes outside it (a job's node may have left the selection).
func (c *Controller) cluster(names []string) *Cluster {
	return &Cluster{Pool: c.pool, Resolver: c.resolver, Names: names}
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

// Names are the selected nodes. Every plain name must be a Host of the ssh
// config: a typo is refused here, before any DNS lookup or dial.
func (c *Controller) Names() ([]string, error) {
	if len(c.patterns) == 0 {
		return nil, &UsageError{c.noNodesError()}
	}
	if err := c.checkHosts(c.patterns, c.source); err != nil {
		return nil, err
	}
	names, err := inventory.Select(c.ssh.Aliases, c.patterns)
	if err != nil {
		return nil, usageErrorf("%w (ssh config: %s)", err, c.ssh.Path)
	}
	return names, nil
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
		b.WriteString("  or per command with --nodes a,b or SSHQ_NODES=a,b.")
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
	settings := inventory.Settings{Nodes: patterns}
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
	nodes, err := c.resolver.ResolveAll(ctx, names)
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
	if node != "" && !slices.Contains(names, node) {
		return nil, usageErrorf("--node %s: not one of the nodes (%s); pick one of them, or add it with --nodes or `sshq init`", node, strings.Join(names, ", "))
	}
	return names, nil
}

// Plan places t without changing anything (`launch --dry-run`).
func (c *Controller) Plan(ctx context.Context, t *task.Task, node string) (Placement, error) {
	names, err := c.pinned(node)
	if err != nil {
		return Placement{}, err
	}
	return c.cluster(names).Place(ctx, t, node)
}

// Launch places, syncs and submits a task.
func (c *Controller) Launch(ctx context.Context, r LaunchRequest) (*LaunchView, error) {
	names, err := c.pinned(r.Node)
	if err != nil {
		return nil, err
	}
	st, err := c.store()
	if err != nil {
		return nil, err
	}
	opts := r.Options
	opts.Node = r.Node
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
	views, down, err := c.cluster(nil).Reconcile(ctx, st, func(j *store.Job) bool { return all || !j.State.Terminal() })
	if err != nil {
		return nil, err
	}
	return &QueueView{Jobs: views, Unreachable: down}, nil
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
	s, err := st.Load()
	if err != nil {
		return nil, nil, err
	}
	var out []*store.Job
	for _, r := range refs {
		j, err := s.Find(r)
		if err != nil {
			return nil, nil, &UsageError{err}
		}
		out = append(out, j)
	}
	return st, out, nil
}

// reconcileIDs asks the nodes about the given jobs and returns their views
// by id.
func (c *Controller) reconcileIDs(ctx context.Context, st *store.Store, ids map[int]bool) (map[int]JobView, map[string]error, error) {
	views, down, err := c.cluster(nil).Reconcile(ctx, st, func(j *store.Job) bool { return ids[j.ID] })
	out := map[int]JobView{}
	for _, v := range views {
		out[v.ID] = v
	}
	return out, down, err
}

// LogsRequest asks for one job's output.
type LogsRequest struct {
	Ref         string
	Tail        int  // only the last Tail lines; all when negative
	Follow      bool // until the job ends
	Out, ErrOut io.Writer
	// Notef receives notes for people (a job still waiting for GPUs);
	// nil asks for none, and saves asking the node about the job first.
	Notef func(format string, a ...any)
}

// LogsView is how a job's output ended.
type LogsView struct {
	Job JobView
	// ExitCode is the job's exit code when followed to its end; else the
	// status of the read (0). 125: the node does not know the job.
	ExitCode int
}

// Logs streams a job's output. When interrupted it returns an error that
// wraps ctx's; a stream that breaks is an UnreachableError.
func (c *Controller) Logs(ctx context.Context, r LogsRequest) (*LogsView, error) {
	st, jobs, err := c.find([]string{r.Ref})
	if err != nil {
		return nil, err
	}
	j := jobs[0]
	ids := map[int]bool{j.ID: true}
	if r.Notef == nil {
		// Nothing to say before the output: spare the node a question.
	} else if v, _, _ := c.reconcileIDs(ctx, st, ids); v[j.ID].Job != nil {
		if now := v[j.ID]; now.State == job.Pending {
			pos := ""
			if now.QueuePosition != nil {
				pos = fmt.Sprintf(", #%d in %s's queue", *now.QueuePosition, now.Node)
			}
			r.Notef("job #%d is PENDING%s: its output starts when it gets its GPUs", now.ID, pos)
		}
	}
	code, err := c.cluster(nil).Logs(ctx, j, r.Tail, r.Follow, r.Out, r.ErrOut)
	if ctx.Err() != nil {
		return nil, fmt.Errorf("stopped reading job #%d's output (%w); the job keeps running", j.ID, ctx.Err())
	}
	if err != nil {
		return nil, &UnreachableError{err}
	}
	view := &LogsView{Job: JobView{Job: j, NodeReachable: true}, ExitCode: code}
	if r.Follow {
		if v, _, _ := c.reconcileIDs(ctx, st, ids); v[j.ID].Job != nil {
			view.Job = v[j.ID]
		}
	}
	return view, nil
}

// CancelRequest names the jobs to cancel: Refs, or All unfinished ones.
type CancelRequest struct {
	Refs  []string
	All   bool
	Grace time.Duration // between SIGTERM and SIGKILL
}

// Cancel outcomes.
const (
	CancelCancelled = "cancelled" // sshq ended it
	CancelDone      = "done"      // it had already ended; State says how
	CancelMissing   = "missing"   // its node does not know it
	CancelError     = "error"     // its node could not be asked; Error says why
)

// CancelResult is one job's outcome, with its state as its node reports it
// after the cancel.
type CancelResult struct {
	ID       int       `json:"id"`
	Name     string    `json:"name"`
	Node     string    `json:"node"`
	Outcome  string    `json:"outcome"`
	State    job.State `json:"state"`
	ExitCode *int      `json:"exit_code"`
	Error    string    `json:"error,omitempty"`
}

// CancelView is what Cancel did, in the order the jobs were asked for.
type CancelView struct {
	Jobs []CancelResult
	// Err is set when some nodes could not be asked (an
	// UnreachableError).
	Err error
}

// Cancel asks the jobs' nodes about them first, then cancels those that
// have not ended, so each outcome is the truth: a job that had already
// ended (however it ended) is reported as such, never as cancelled.
func (c *Controller) Cancel(ctx context.Context, r CancelRequest) (*CancelView, error) {
	var st *store.Store
	var jobs []*store.Job
	var err error
	if r.All {
		if !c.hasStore() {
			return &CancelView{}, nil
		}
		if st, err = c.store(); err != nil {
			return nil, err
		}
		s, err := st.Load()
		if err != nil {
			return nil, err
		}
		for _, j := range s.Jobs {
			if !j.State.Terminal() && j.Node != "" {
				jobs = append(jobs, j)
			}
		}
	} else {
		if len(r.Refs) == 0 {
			return nil, usageErrorf("cancel needs job ids (`sshq cancel 12`) or --all")
		}
		if st, jobs, err = c.find(r.Refs); err != nil {
			return nil, err
		}
	}
	if len(jobs) == 0 {
		return &CancelView{}, nil
	}
	ids := map[int]bool{}
	for _, j := range jobs {
		ids[j.ID] = true
	}
	before, _, err := c.reconcileIDs(ctx, st, ids)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("nothing was cancelled (%w)", err)
	}
	var open []*store.Job
	for _, j := range jobs {
		if v, ok := before[j.ID]; ok && v.State.Terminal() {
			continue
		}
		open = append(open, j)
	}
	outcomes := map[int]string{}
	var cerr error
	if len(open) > 0 {
		outcomes, cerr = c.cluster(nil).Cancel(ctx, st, open, r.Grace)
	}
	after := map[int]*store.Job{}
	if s, err := st.Load(); err == nil {
		for _, j := range s.Jobs {
			if ids[j.ID] {
				after[j.ID] = j
			}
		}
	}
	view := &CancelView{}
	for _, j := range jobs {
		now := j
		if a := after[j.ID]; a != nil {
			now = a
		}
		res := CancelResult{ID: j.ID, Name: j.Name, Node: j.Node, State: now.State, ExitCode: now.ExitCode}
		o := outcomes[j.ID]
		switch {
		case !slices.Contains(open, j):
			res.Outcome = CancelDone
		case strings.HasPrefix(o, "error"):
			res.Outcome, res.Error = CancelError, strings.TrimPrefix(strings.TrimPrefix(o, "error"), ": ")
		case now.State == job.Cancelled:
			res.Outcome = CancelCancelled
		case o == CancelMissing:
			res.Outcome = CancelMissing
		case now.State.Terminal():
			// It ended by itself before the cancel reached it.
			res.Outcome = CancelDone
		case o == "":
			res.Outcome, res.Error = CancelError, "its node did not answer about it"
		default:
			res.Outcome = o
		}
		view.Jobs = append(view.Jobs, res)
	}
	if cerr != nil {
		view.Err = &UnreachableError{cerr}
	}
	return view, nil
}

// WaitRequest names the jobs to wait for.
type WaitRequest struct {
	Refs     []string
	Interval time.Duration // between questions to the nodes
}

// WaitView is how the jobs ended.
type WaitView struct {
	Jobs []JobView
	// ExitCode is 0 when every job SUCCEEDED, else the exit code of the
	// last failing job, or 1 for one that ended without a code (LOST, a
	// job cancelled before it ran).
	ExitCode int
}

// Wait asks the jobs' nodes every Interval until every job has ended. When
// interrupted it returns an error wrapping ctx's; the jobs keep running.
func (c *Controller) Wait(ctx context.Context, r WaitRequest) (*WaitView, error) {
	if len(r.Refs) == 0 {
		return nil, usageErrorf("wait needs job ids: `sshq wait 12 13`")
	}
	st, jobs, err := c.find(r.Refs)
	if err != nil {
		return nil, err
	}
	ids := map[int]bool{}
	for _, j := range jobs {
		ids[j.ID] = true
	}
	interval := r.Interval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	for {
		views, _, err := c.cluster(nil).Reconcile(ctx, st, func(j *store.Job) bool { return ids[j.ID] })
		if err != nil {
			return nil, err
		}
		if v, done := waitOutcome(views); done {
			return v, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("stopped waiting (%w); the jobs keep running", ctx.Err())
		case <-time.After(interval):
		}
	}
}

// waitOutcome is wait's exit-code rule.
func waitOutcome(views []JobView) (*WaitView, bool) {
	v := &WaitView{Jobs: views}
	for _, j := range views {
		if !j.State.Terminal() {
			return nil, false
		}
		if j.State != job.Succeeded {
			v.ExitCode = 1
			if j.ExitCode != nil && *j.ExitCode != 0 {
				v.ExitCode = *j.ExitCode
			}
		}
	}
	return v, true
}

// AttachTarget is how to reach a job's tmux session.
type AttachTarget struct {
	Job *store.Job
	// Argv is the OpenSSH client's command line; Argv[0] is "ssh".
	Argv []string
}

// Attach finds a running job's tmux session. An ended job has none.
func (c *Controller) Attach(ref string) (*AttachTarget, error) {
	_, jobs, err := c.find([]string{ref})
	if err != nil {
		return nil, err
	}
	j := jobs[0]
	if j.State.Terminal() {
		return nil, usageErrorf("job #%d has ended (%s); read its output with `sshq logs %d`", j.ID, j.State, j.ID)
	}
	argv := []string{"ssh"}
	if !c.ssh.Default {
		argv = append(argv, "-F", c.ssh.Path)
	}
	argv = append(argv, "-t", j.Node, sshpool.Command("tmux", "-L", "sshq", "attach-session", "-t", j.UID))
	return &AttachTarget{Job: j, Argv: argv}, nil
}
