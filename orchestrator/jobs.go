package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gofrs/flock"

	"github.com/sshq/sshq/inventory"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/remote"
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/orchestrator/task"
	"github.com/sshq/sshq/orchestrator/wsync"
)

// LocalUser is the controller's user name, recorded with each job.
func LocalUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return os.Getenv("USER")
}

// lockWorkdir takes an exclusive flock, in the controller's state
// directory, on one workdir cache of one node.
func lockWorkdir(ctx context.Context, st *store.Store, node, key string) (func(), error) {
	dir := filepath.Join(filepath.Dir(st.Path()), "locks")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	name := strings.NewReplacer("/", "_", ":", "_").Replace(node + "-" + key)
	fl := flock.New(filepath.Join(dir, name+".lock"))
	ok, err := fl.TryLockContext(ctx, 100*time.Millisecond)
	if err != nil || !ok {
		return nil, fmt.Errorf("waiting for another launch of this workdir to %s: %w", node, errors.Join(err, ctx.Err()))
	}
	return func() { fl.Unlock() }, nil
}

// SyncTimeout bounds the workdir and file-mount sync of one launch.
var SyncTimeout = 2 * time.Hour

// LaunchOptions are the parts of a launch that are not in the task.
type LaunchOptions struct {
	Node     string               // pin to this node
	Progress func(wsync.Progress) // sync progress, may be nil
	Notef    func(string, ...any) // progress notes for people, may be nil
	Origin   string               // controller host name, for workdir keys
	Shell    *remote.ShellSpec    // an interactive job (sshq shell); nil for a batch job
	// Limits are the launch's --mem, --time and --cpus; Defaults fill
	// what they leave unset (config.yaml's defaults) on sshq's own nodes.
	Limits   LimitFlags
	Defaults inventory.Defaults
	// Placement, when set, is where the job goes, decided by the caller
	// (the controller, when Slurm clusters are among the targets).
	Placement *Placement
}

// Launch places t, syncs its workdir and file mounts, submits it to the
// node's queue and records it in st. The job is in the store (state
// SUBMITTING, with its node) before anything is sent, and this process
// holds its launch lock until it has left SUBMITTING: a launch that dies
// on the way (SIGKILL, a crash) leaves a job whose lock is free, which the
// next reconcile settles at once (see Reconcile).
//
// A node that refuses the job as one it cannot run (see
// remote.NodeError.NodeCannotRun: no tmux, a tmux that cannot start
// sessions, a home it cannot write) makes the launch try the next node
// that fits, unless the job was pinned there (--node); if every node
// refuses, the error names each and why.
func (c *Cluster) Launch(ctx context.Context, st *store.Store, t *task.Task, opts LaunchOptions) (*store.Job, Placement, error) {
	defaults, err := parseDefaults(opts.Defaults)
	if err != nil {
		return nil, Placement{}, err
	}
	if opts.Limits.CPUs < 0 {
		return nil, Placement{}, usageErrorf("--cpus %d: give a number of cores, 1 or more", opts.Limits.CPUs)
	}
	p, asked := needsNoQuestion(t, c.Names, opts.Node)
	if opts.Placement != nil {
		p, asked = *opts.Placement, true
	}
	if p.Backend == store.BackendSlurm {
		return c.launchSlurm(ctx, st, t, p, opts)
	}
	if t.NumNodes > 1 {
		return c.launchGang(ctx, st, t, opts, defaults, opts.Placement)
	}
	if !asked {
		var err error
		if p, err = c.Place(ctx, t, opts.Node); err != nil {
			return nil, p, err
		}
	}
	lim := defaults.resolve(opts.Limits, p.NumGPUs)
	rec, lk, err := st.AddJob(t.Name, func(j *store.Job) error {
		j.User = LocalUser()
		j.Workdir = t.Workdir
		j.Command = t.Run
		j.TaskFile = t.File
		j.EnvNames = sortedKeys(t.Envs)
		placeJob(j, p, lim)
		return nil
	})
	if err != nil {
		return nil, p, fmt.Errorf("nothing was submitted: %w", err)
	}
	defer lk.Release()
	var tried, refusals []string
	for {
		j, refused, err := c.submitTo(ctx, st, rec, t, p, lim, opts)
		if refused == nil {
			return j, p, err
		}
		tried = append(tried, p.Node)
		refusals = append(refusals, fmt.Sprintf("%s (%s)", p.Node, firstLine(refused.Msg)))
		next, err := c.nextNode(ctx, t, opts.Node, tried, refusals, refused)
		if err != nil {
			return c.forget(st, rec, p, err)
		}
		if opts.Notef != nil {
			opts.Notef("%s cannot run the job (%s); trying %s", p.Node, firstLine(refused.Msg), next.Node)
		}
		p, lim = next, defaults.resolve(opts.Limits, next.NumGPUs)
		err = st.Update(func(s *store.State) error {
			j := s.Job(rec.ID)
			switch {
			case j == nil:
				return fmt.Errorf("job #%d vanished from the store", rec.ID)
			case j.State == job.Cancelled:
				return ErrCancelledDuringLaunch
			}
			placeJob(j, p, lim)
			rec = *j
			return nil
		})
		if errors.Is(err, ErrCancelledDuringLaunch) {
			return nil, p, err
		}
		if err != nil {
			return c.forget(st, rec, p, fmt.Errorf("nothing was submitted: %w", err))
		}
	}
}

// placeJob records in j where it goes and the limits it runs with there.
func placeJob(j *store.Job, p Placement, lim Limits) {
	j.Node = p.Node
	j.Accelerator = p.Accelerator
	j.NumGPUs = p.NumGPUs
	j.MemLimitMiB, j.TimeLimitS = nil, nil
	recordLimits(j, lim)
}

// forget removes a job that reached no node from the store, rather than
// leave a phantom in the queue (its id stays used), and returns err. If
// even that cannot be written, the job stays SUBMITTING until its launch
// lock is free, when the next reconcile settles it.
func (c *Cluster) forget(st *store.Store, rec store.Job, p Placement, err error) (*store.Job, Placement, error) {
	_ = st.Update(func(s *store.State) error { s.Delete(rec.ID); return nil })
	return nil, p, err
}

// nextNode is where a job goes after the nodes tried refused it as one
// they cannot run (refusals say why, the last in full in refused): the
// best of the other nodes, asked again. A pinned job goes nowhere else.
func (c *Cluster) nextNode(ctx context.Context, t *task.Task, pin string, tried, refusals []string, refused *remote.NodeError) (Placement, error) {
	if pin != "" {
		return Placement{}, fmt.Errorf("%s refused the job: %s; nothing was submitted (drop --node to let sshq choose another node)", pin, refused.Msg)
	}
	var rest []string
	for _, n := range c.Names {
		if !slices.Contains(tried, n) {
			rest = append(rest, n)
		}
	}
	if len(rest) == 0 {
		if len(refusals) == 1 {
			return Placement{}, fmt.Errorf("%s refused the job: %s; nothing was submitted", refused.Node, refused.Msg)
		}
		return Placement{}, &RefusedError{Refused: refusals}
	}
	p, err := c.subset(rest).Place(ctx, t, "")
	var others *RefusedError
	switch {
	case errors.As(err, &others):
		return Placement{}, &RefusedError{Refused: append(refusals, others.Refused...), Unreachable: others.Unreachable}
	case err != nil:
		return Placement{}, fmt.Errorf("the job was refused by %s, and no other node can take it: %w", strings.Join(refusals, "; "), err)
	}
	return p, nil
}

// submitTo syncs t to p.Node and submits it there as the recorded job rec.
// A refusal of a node that cannot run the job comes back as refused, with
// the job still SUBMITTING and nothing of it on that node; any other end
// is the launch's.
func (c *Cluster) submitTo(ctx context.Context, st *store.Store, rec store.Job, t *task.Task, p Placement, lim Limits, opts LaunchOptions) (*store.Job, *remote.NodeError, error) {
	fail := func(err error) (*store.Job, *remote.NodeError, error) {
		j, _, err := c.forget(st, rec, p, err)
		return j, nil, err
	}
	node := c.Node(p.Node)
	spec := remote.JobSpec{
		UID: rec.UID, ID: rec.ID, Name: t.Name, User: rec.User, NumGPUs: p.NumGPUs,
		AllowedGPUs: p.AllowedGPUs, Setup: t.Setup, Run: t.Run, NumNodes: 1,
		NodeIPs: []string{nodeIP(c, ctx, p.Node)}, Shell: opts.Shell,
		MemLimitMiB: lim.MemMiB, TimeLimit: lim.Time, CPUs: lim.CPUs,
	}
	if p.Accelerator == "" {
		spec.AllowedGPUs = nil
	}
	for _, k := range sortedKeys(t.Envs) {
		spec.Env = append(spec.Env, remote.EnvVar{Name: k, Value: t.Envs[k]})
	}
	for _, k := range sortedKeys(t.Secrets) {
		spec.Secrets = append(spec.Secrets, remote.EnvVar{Name: k, Value: t.Secrets[k]})
	}
	key, unlock, err := c.syncTask(ctx, st, t, p.Node, opts)
	if err != nil {
		return fail(err)
	}
	defer unlock()
	spec.WorkdirKey = key
	// `sshq cancel` may have run while we synced: it can only mark the job
	// in the store, since the node does not know it yet. A read is enough
	// (the record after the submit checks again), and needs no free disk.
	if s, err := st.Load(); err != nil {
		return fail(err)
	} else if j := s.Job(rec.ID); j != nil && j.State == job.Cancelled {
		return nil, nil, ErrCancelledDuringLaunch
	}
	subCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	_, err = node.Submit(subCtx, spec)
	var refused *remote.NodeError
	switch {
	case errors.As(err, &refused) && refused.NodeCannotRun():
		return nil, refused, nil
	case errors.As(err, &refused):
		return fail(fmt.Errorf("%s refused the job: %s", p.Node, refused.Msg))
	case errors.Is(err, remote.ErrNoAnswer):
		j, _, err := c.settleSubmit(st, rec, p, ctx.Err() != nil, err)
		return j, nil, err
	case err != nil:
		return fail(err)
	}
	cancelled := false
	err = st.Update(func(s *store.State) error {
		j := s.Job(rec.ID)
		if j == nil {
			return fmt.Errorf("job #%d vanished from the store", rec.ID)
		}
		switch {
		case j.State == job.Submitting:
			j.State = job.Pending
		case j.State == job.Lost && j.ExitCode == nil && j.Started == nil:
			// A reconcile ran before the node knew the job.
			j.State, j.Ended = job.Pending, nil
		case j.State == job.Cancelled:
			cancelled = true
		}
		now := time.Now().UTC()
		j.LastSeen = &now
		rec = *j
		return nil
	})
	if cancelled {
		// The cancel came between our check and the submit: honour it.
		_, _, _ = node.Cancel(subCtx, []string{rec.UID}, remote.DefaultCancelGrace)
		return &rec, nil, ErrCancelledDuringLaunch
	}
	var we *store.WriteError
	if errors.As(err, &we) {
		// The job is in the node's queue: only its record is behind. Once
		// this process is gone, the next reconcile asks the node.
		rec.State = job.Pending
		return &rec, nil, fmt.Errorf("job #%d is queued on %s (`sshq queue` shows it), but sshq could not record that: %w", rec.ID, p.Node, err)
	}
	return &rec, nil, err
}

// ErrSubmittedBeforeInterrupt: the launch was interrupted (Ctrl-C) after
// the node had taken the job; the job is queued and recorded.
var ErrSubmittedBeforeInterrupt = errors.New("interrupted after the job was submitted")

// settleSubmit finds out, with a fresh deadline, whether a submit whose
// answer was lost (Ctrl-C, a dropped connection) reached the node, and
// records the truth: the job is queued there, or nothing was submitted.
//
// lost is why the answer was lost; it is part of every failure reported.
func (c *Cluster) settleSubmit(st *store.Store, rec store.Job, p Placement, interrupted bool, lost error) (*store.Job, Placement, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	m, err := c.Node(p.Node).Jobs(ctx, []string{rec.UID})
	js, known := m[rec.UID], err == nil
	switch {
	case !known:
		return nil, p, fmt.Errorf("lost the answer of %s while submitting job #%d (%v); it may be queued there: `sshq queue` will tell", p.Node, rec.ID, lost)
	case !js.Found:
		_ = st.Update(func(s *store.State) error { s.Delete(rec.ID); return nil })
		return nil, p, fmt.Errorf("nothing was submitted: %w", lost)
	}
	_ = st.Update(func(s *store.State) error {
		if j := s.Job(rec.ID); j != nil {
			applyStatus(j, js, time.Now().UTC(), false)
			rec = *j
		}
		return nil
	})
	if interrupted {
		return &rec, p, fmt.Errorf("%w: job #%d is %s on %s; follow it with `sshq logs -f %d`, stop it with `sshq cancel %d`",
			ErrSubmittedBeforeInterrupt, rec.ID, rec.State, p.Node, rec.ID, rec.ID)
	}
	return &rec, p, nil
}

// ErrCancelledDuringLaunch: `sshq cancel` ran while the job was being
// synced and submitted.
var ErrCancelledDuringLaunch = errors.New("the job was cancelled while it was being submitted")

// submitGrace is how long a SUBMITTING job may be unknown to its node
// before reconcile calls it LOST: a launch syncs first, for up to
// SyncTimeout, and only then submits.
func submitGrace() time.Duration { return SyncTimeout + 5*time.Minute }

func nodeIP(c *Cluster, ctx context.Context, name string) string {
	if c.Resolver == nil {
		return name
	}
	if n, err := c.Resolver.Resolve(ctx, name); err == nil {
		return n.HostName
	}
	return name
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// JobView is a job as `sshq queue` shows it.
type JobView struct {
	*store.Job
	NodeReachable bool `json:"node_reachable"`
}

// Reconcile asks each node about this controller's unfinished jobs (one
// command per node, in parallel) and records what they say. Jobs on a node
// that does not answer keep their last known state. It returns the views of
// jobs, in id order, and the nodes that did not answer.
func (c *Cluster) Reconcile(ctx context.Context, st *store.Store, only func(*store.Job) bool) ([]JobView, map[string]error, error) {
	snap, err := st.Load()
	if err != nil {
		return nil, nil, err
	}
	byNode := map[string][]target{}
	// The SUBMITTING jobs whose launcher is gone: nothing will submit them
	// now, so what their node says is final. Read before asking the nodes:
	// a launcher alive now may be done by the time they answer, never the
	// other way round.
	gone := map[string]bool{}
	for _, j := range snap.Jobs {
		if j.State.Terminal() || j.Node == "" || (only != nil && !only(j)) {
			continue
		}
		if j.State == job.Submitting && st.LauncherGone(j.UID) {
			gone[j.UID] = true
		}
		for _, t := range targets(j) {
			byNode[t.node] = append(byNode[t.node], t)
		}
	}
	if len(byNode) == 0 {
		// Nothing to ask: do not rewrite state.json for a read.
		var views []JobView
		for _, j := range snap.Jobs {
			if only == nil || only(j) {
				views = append(views, JobView{Job: j, NodeReachable: true})
			}
		}
		return views, map[string]error{}, nil
	}
	type answer struct {
		jobs jobReport
		err  error
	}
	answers := map[string]answer{}
	nodes := make([]string, 0, len(byNode))
	for n := range byNode {
		nodes = append(nodes, n)
	}
	sub := c.subset(nodes)
	results := make(chan struct {
		node string
		a    answer
	}, len(nodes))
	sub.Each(ctx, func(ctx context.Context, node string) {
		ctx, cancel := context.WithTimeout(ctx, c.opTimeout(ctx, node))
		defer cancel()
		var a answer
		a.jobs, a.err = c.askJobs(ctx, node, byNode[node], gone)
		results <- struct {
			node string
			a    answer
		}{node, a}
	})
	close(results)
	unreachable := map[string]error{}
	for r := range results {
		answers[r.node] = r.a
		if r.a.err != nil {
			unreachable[r.node] = r.a.err
		}
	}
	var views []JobView
	err = st.Update(func(s *store.State) error {
		now := time.Now().UTC()
		views = views[:0]
		for _, j := range s.Jobs {
			a, asked := answers[j.Node]
			switch {
			case j.Gang != nil && !j.State.Terminal() && (only == nil || only(j)):
				applyGang(j, func(r int) rankStatus {
					rk := j.Gang.Ranks[r]
					a, asked := answers[rk.Node]
					js, ok := a.jobs.node[rk.UID]
					return rankStatus{js: js, answered: asked && a.err == nil && ok, launcherGone: gone[j.UID]}
				}, now)
			case asked && a.err == nil && !j.State.Terminal():
				a.jobs.apply(j, now)
			}
			if only != nil && !only(j) {
				continue
			}
			down := false
			for _, n := range j.Nodes() {
				_, d := unreachable[n]
				down = down || d
			}
			views = append(views, JobView{Job: j, NodeReachable: !down})
		}
		return nil
	})
	if err == nil {
		for _, v := range views {
			if gone[v.UID] && v.State != job.Submitting {
				st.ForgetLaunch(v.UID)
			}
		}
	}
	// A store that cannot be written (a full disk) does not stop a read:
	// the views hold what the nodes said, and the next reconcile asks
	// again. The caller tells a *store.WriteError from other errors.
	return views, unreachable, err
}

// ReconcileAll is Reconcile over every job of this controller: the views
// also hold the ended jobs that have moved from state.json to the store's
// history, where only selects them. It reads the whole history, so it is for
// commands that ask for old jobs (`sshq queue -a`, `sshq wait`).
func (c *Cluster) ReconcileAll(ctx context.Context, st *store.Store, only func(*store.Job) bool) ([]JobView, map[string]error, error) {
	views, down, err := c.Reconcile(ctx, st, only)
	var we *store.WriteError
	if err != nil && !errors.As(err, &we) {
		return views, down, err
	}
	notRecorded := err
	hist, err := st.History()
	if err != nil {
		return views, down, err
	}
	// A job that Reconcile's own update moved is in both.
	seen := make(map[int]bool, len(views))
	for _, v := range views {
		seen[v.ID] = true
	}
	for _, j := range hist {
		if !seen[j.ID] && (only == nil || only(j)) {
			views = append(views, JobView{Job: j, NodeReachable: true})
		}
	}
	slices.SortFunc(views, func(a, b JobView) int { return a.ID - b.ID })
	return views, down, notRecorded
}

// launcherDied is the reason of a job whose launching process ended
// before the job reached its node.
func launcherDied(node string) string {
	return "the launching sshq process died before the job reached " + node + "; nothing ran"
}

// settleUnsubmitted ends a SUBMITTING job that its node does not have and
// that nothing will submit any more: its launcher is gone.
func settleUnsubmitted(j *store.Job, now time.Time) {
	j.State, j.Reason = job.FailedSetup, launcherDied(j.Node)
	j.Ended, j.LastSeen = &now, &now
}

// applyStatus records what the node said about j. launcherGone: j's
// launching process is gone (see store.LauncherGone), so a SUBMITTING job
// the node does not have will never get there.
func applyStatus(j *store.Job, js remote.JobStatus, now time.Time, launcherGone bool) {
	if !js.Found {
		if j.State == job.Submitting && launcherGone {
			settleUnsubmitted(j, now)
			return
		}
		// A job still being submitted may not have reached the node yet.
		if j.State == job.Submitting && now.Sub(j.Submitted) < submitGrace() {
			return
		}
		j.State = job.Lost
		if j.Ended == nil {
			j.Ended = &now
		}
		j.LastSeen = &now
		return
	}
	j.State = js.State
	j.LastSeen = &now
	for _, tr := range js.History {
		at := tr.At
		switch {
		case tr.State == job.Running && j.Started == nil:
			j.Started = &at
		case tr.State.Terminal():
			j.Ended = &at
		}
	}
	if js.State.Terminal() && j.Ended == nil {
		j.Ended = &now
	}
	if js.Exited {
		code := js.ExitCode
		j.ExitCode = &code
	}
	if len(js.GPUs) > 0 {
		j.GPUs, j.GPUUUIDs = j.GPUs[:0], j.GPUUUIDs[:0]
		for _, g := range js.GPUs {
			j.GPUs = append(j.GPUs, g.Index)
			j.GPUUUIDs = append(j.GPUUUIDs, g.UUID)
		}
	}
	if js.QueuePosition > 0 {
		pos := js.QueuePosition
		j.QueuePosition = &pos
	} else {
		j.QueuePosition = nil
	}
	j.Reason = js.Reason
	if js.Cores != "" {
		j.Cores = js.Cores
	}
}

// Cancel ends the given jobs on their nodes (one command per node, which
// also reports how each job ended) and records what the nodes said. It
// returns per-job outcomes.
func (c *Cluster) Cancel(ctx context.Context, st *store.Store, jobs []*store.Job, grace time.Duration) (map[int]string, error) {
	// A multi-node job is cancelled on every rank's node at once.
	byNode := map[string][]target{}
	for _, j := range jobs {
		for _, t := range targets(j) {
			byNode[t.node] = append(byNode[t.node], t)
		}
	}
	out := map[int]string{}
	var errs []error
	type res struct {
		node     string
		m        map[string]string
		statuses jobReport
		err      error
	}
	ch := make(chan res, len(byNode))
	nodes := make([]string, 0, len(byNode))
	for n := range byNode {
		nodes = append(nodes, n)
	}
	c.subset(nodes).Each(ctx, func(ctx context.Context, node string) {
		ctx, cancel := context.WithTimeout(ctx, c.opTimeout(ctx, node)+grace+10*time.Second)
		defer cancel()
		m, statuses, err := c.cancelOn(ctx, node, byNode[node], grace)
		ch <- res{node, m, statuses, err}
	})
	close(ch)
	statuses := map[string]jobReport{}
	ranks := map[int]map[int]rankStatus{}
	for r := range ch {
		for _, t := range byNode[r.node] {
			j := t.job
			if t.rank >= 0 {
				if ranks[j.ID] == nil {
					ranks[j.ID] = map[int]rankStatus{}
				}
				js, ok := r.statuses.node[t.uid]
				ranks[j.ID][t.rank] = rankStatus{js: js, answered: r.err == nil && ok}
				out[j.ID] = gangOutcome(out[j.ID], r.m[t.uid], r.err)
				continue
			}
			if r.err != nil {
				out[j.ID] = "error: " + r.err.Error()
				continue
			}
			out[j.ID] = r.m[j.UID]
		}
		if r.err == nil {
			statuses[r.node] = r.statuses
		}
		if r.err != nil {
			errs = append(errs, r.err)
		}
	}
	if err := st.Update(func(s *store.State) error {
		now := time.Now().UTC()
		for id, o := range out {
			j := s.Job(id)
			switch {
			case j == nil:
			case j.State == job.Submitting && o == "missing":
				// Still being synced, not on its node yet: marked, its
				// launch will not submit it.
				j.State, j.Ended = job.Cancelled, &now
				out[id] = "cancelled"
			case j.Gang != nil && !j.State.Terminal():
				applyGang(j, func(r int) rankStatus { return ranks[id][r] }, now)
			case !j.State.Terminal():
				statuses[j.Node].apply(j, now)
			}
		}
		return nil
	}); err != nil {
		errs = append(errs, err)
	}
	return out, errors.Join(errs...)
}

// Logs streams a job's log to w. With follow it returns when the job ends,
// with the job's exit code.
func (c *Cluster) Logs(ctx context.Context, j *store.Job, tail int, follow bool, w, errw io.Writer) (int, error) {
	if j.Gang != nil {
		return c.gangLogs(ctx, j, -1, tail, follow, w, errw)
	}
	if !follow {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opTimeout(ctx, j.Node))
		defer cancel()
	}
	if j.Backend == store.BackendSlurm {
		return c.slurmLogs(ctx, j, tail, follow, w)
	}
	return c.Node(j.Node).Logs(ctx, j.UID, tail, follow, w, errw)
}
