package orchestrator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/remote"
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/orchestrator/task"
)

// A multi-node job (num_nodes > 1, a "gang") is one ordinary job per node,
// rank 0 first: the nodes' own queues start it, all ranks or none, with no
// controller needed once it is submitted (see orchestrator/remote's
// GangSpec). The controller places it on distinct nodes, syncs and submits
// every rank, and sums up the ranks' states into the job's.

// RankPlacement is where one rank of a multi-node job goes.
type RankPlacement struct {
	Rank        int      `json:"rank"`
	Node        string   `json:"node"`
	AllowedGPUs []string `json:"allowed_gpus"`
	FitsNow     bool     `json:"fits_now"`
	FreeGPUs    int      `json:"free_gpus"`
	QueueAhead  int      `json:"queue_ahead"`
	Reason      string   `json:"reason"`
}

// gangTimes reads SSHQ_GANG_HOLD (how long a rank holds its GPUs for the
// others before it lets them go, default 10m) and SSHQ_GANG_LOST (how long
// a rank may go unheard before the others stop, default 30s) from the
// controller's environment.
func gangTimes() (hold, lost time.Duration, err error) {
	for _, v := range []struct {
		name string
		d    *time.Duration
	}{{"SSHQ_GANG_HOLD", &hold}, {"SSHQ_GANG_LOST", &lost}} {
		s := os.Getenv(v.name)
		if s == "" {
			continue
		}
		if *v.d, err = time.ParseDuration(s); err != nil || *v.d < time.Second {
			return 0, 0, usageErrorf("%s=%q: give a duration of a second or more, as in 10m or 45s", v.name, s)
		}
	}
	return hold, lost, nil
}

// placeGang chooses t.NumNodes distinct nodes, each able to hold the
// task's resources (SkyPilot's meaning: per node), all with the same
// accelerator: where they fit now first (best fit), then those with the
// least queued demand. Rank 0 is the best of them.
func (c *Cluster) placeGang(ctx context.Context, t *task.Task, pin string) (Placement, error) {
	if pin != "" {
		return Placement{}, usageErrorf("--node pins one node, and this job runs on %d: choose among nodes with --nodes a,b,... instead", t.NumNodes)
	}
	if len(c.Names) < t.NumNodes {
		// Nothing to ask: no node can make up the missing ones.
		return Placement{}, fmt.Errorf("%w: num_nodes %d: it runs on %d nodes, one rank each, and the selection has %d (%s): select more with --nodes or `sshq init`, set num_nodes lower, or name a Slurm cluster with --slurm (see README: Slurm)",
			ErrNoFit, t.NumNodes, t.NumNodes, len(c.Names), strings.Join(c.Names, ", "))
	}
	_, reqs := requests(t)
	offers := c.askPlace(ctx, c.Names, reqs)
	if err := ctx.Err(); err != nil {
		return Placement{}, fmt.Errorf("nothing was submitted (%w)", err)
	}
	return rankGang(t, offers)
}

func rankGang(t *task.Task, offers []nodeOffer) (Placement, error) {
	accels, _ := requests(t)
	n := t.NumNodes
	var down, have []string
	type option struct {
		pref  int
		cands []candidate
		now   int
	}
	var options []option
	byPref := make([][]candidate, len(accels))
	for order, no := range offers {
		if no.Err != nil {
			down = append(down, fmt.Sprintf("%s (%s)", no.Name, firstLine(no.Err.Error())))
			continue
		}
		o := no.Offer
		if !offerMeets(t, o) {
			have = append(have, fmt.Sprintf("%s: %s CPUs, %s RAM", no.Name, fmtCount(o.CPUs), fmtGiB(o.MemTotalMiB)))
			continue
		}
		if len(o.Fits) != len(accels) {
			down = append(down, fmt.Sprintf("%s (%s)", no.Name, firstLine(strings.Join(o.Errors, "; "))))
			continue
		}
		have = append(have, no.Name+": "+describeGPUs(o))
		load := math.Inf(1)
		if o.CPUs > 0 && o.Load1 >= 0 {
			load = o.Load1 / float64(o.CPUs)
		}
		for pref, a := range accels {
			f := o.Fits[pref]
			if f.Verdict == remote.Never {
				continue
			}
			p := Placement{Node: no.Name, Accel: a, Accelerator: a.Type, NumGPUs: a.Count, AllowedGPUs: f.AllowedGPUs,
				FitsNow: f.Verdict == remote.FitsNow, FreeGPUs: f.Free, QueueAhead: f.Ahead}
			if a.Count == 0 {
				p.AllowedGPUs = nil
			}
			cand := candidate{Placement: p, pref: pref, spare: f.Free - a.Count, load: load, order: order}
			switch {
			case p.FitsNow && a.Count == 0:
				cand.Reason = "no GPU needed"
			case p.FitsNow:
				cand.Reason = fmt.Sprintf("%d of %d matching GPUs free", f.Free, f.Eligible)
			default:
				cand.Reason = fmt.Sprintf("waits behind %d job(s) in the node's queue; %d of %d matching GPUs free for it", f.Ahead, f.Free, f.Eligible)
				cand.spare = 1<<30 + f.Demand
			}
			byPref[pref] = append(byPref[pref], cand)
		}
	}
	for pref, cands := range byPref {
		if len(cands) < n {
			continue
		}
		sort.SliceStable(cands, func(i, j int) bool {
			a, b := cands[i], cands[j]
			if a.spare != b.spare {
				return a.spare < b.spare
			}
			return a.load < b.load
		})
		o := option{pref: pref, cands: cands[:n]}
		for _, c := range o.cands {
			if c.FitsNow {
				o.now++
			}
		}
		options = append(options, o)
	}
	if len(options) == 0 {
		want := accelString(accels)
		if len(have) == 0 && len(down) > 0 {
			return Placement{}, fmt.Errorf("%w: %s", ErrNoNode, strings.Join(down, "; "))
		}
		msg := fmt.Sprintf("it runs on %d nodes and asks each for %s; fewer nodes can hold that; the nodes have: %s", n, want, strings.Join(have, "; "))
		if len(down) > 0 {
			msg += "; unreachable: " + strings.Join(down, "; ")
		}
		msg += "; ask for fewer nodes (num_nodes, --num-nodes) or fewer GPUs per node (`sshq status` shows every GPU)"
		return Placement{}, fmt.Errorf("%w: %s", ErrNoFit, msg)
	}
	// The accelerator under which the most ranks start now; the task's
	// order breaks ties (and, when it is ordered, comes first).
	sort.SliceStable(options, func(i, j int) bool {
		a, b := options[i], options[j]
		if t.Resources.AccelOrdered && (a.now == n) != (b.now == n) {
			return a.now == n
		}
		if a.now != b.now {
			return a.now > b.now
		}
		return a.pref < b.pref
	})
	best := options[0]
	p := best.cands[0].Placement
	p.FitsNow = best.now == n
	p.Ranks = make([]RankPlacement, n)
	for r, c := range best.cands {
		p.Ranks[r] = RankPlacement{Rank: r, Node: c.Node, AllowedGPUs: c.AllowedGPUs, FitsNow: c.FitsNow,
			FreeGPUs: c.FreeGPUs, QueueAhead: c.QueueAhead, Reason: c.Reason}
		p.QueueAhead = max(p.QueueAhead, c.QueueAhead)
	}
	p.Reason = fmt.Sprintf("%d of %d nodes can start it now", best.now, n)
	if p.FitsNow {
		p.Reason = fmt.Sprintf("all %d nodes can start it now", n)
	}
	return p, nil
}

// rankIP is the address a rank's peers reach its node by, as far as the
// controller knows it: the node's `ip:` in config.yaml, else its HostName
// when that is an address; "" leaves it to the node (see GangSpec.IPs).
func (c *Cluster) rankIP(ctx context.Context, node string) string {
	if ip := c.PerNode[node].IP; ip != "" {
		return ip
	}
	if c.Resolver == nil {
		return ""
	}
	if n, err := c.Resolver.Resolve(ctx, node); err == nil && net.ParseIP(n.HostName) != nil {
		return n.HostName
	}
	return ""
}

// launchGang is Launch for t.NumNodes > 1 on sshq's own nodes: place on
// distinct nodes (unless placed, the caller's placement), sync to all of
// them at once, submit rank 0, ask it where its coordinator listens, then
// submit the other ranks pointed there. Each rank is an ordinary job with
// the launch's limits. Any rank that cannot be submitted takes the others
// back with it: nothing runs.
func (c *Cluster) launchGang(ctx context.Context, st *store.Store, t *task.Task, opts LaunchOptions, defaults limitDefaults, placed *Placement) (*store.Job, Placement, error) {
	note := opts.Notef
	if note == nil {
		note = func(string, ...any) {}
	}
	if opts.Shell != nil {
		return nil, Placement{}, usageErrorf("sshq shell opens one shell on one node; this task runs on %d nodes (num_nodes): launch it with `sshq launch`", t.NumNodes)
	}
	for node, s := range c.PerNode {
		if s.IP != "" && net.ParseIP(s.IP) == nil {
			return nil, Placement{}, usageErrorf("config.yaml: per_node.%s.ip %q is not an IP address; write the address the other nodes reach %s by", node, s.IP, node)
		}
	}
	hold, lost, err := gangTimes()
	if err != nil {
		return nil, Placement{}, err
	}
	var p Placement
	if placed != nil && len(placed.Ranks) == t.NumNodes {
		p = *placed
	} else if p, err = c.placeGang(ctx, t, opts.Node); err != nil {
		return nil, p, err
	}
	n := t.NumNodes
	lim := defaults.resolve(opts.Limits, p.NumGPUs)
	rec, lk, err := st.AddJob(t.Name, func(j *store.Job) error {
		j.User = LocalUser()
		j.Node = p.Node
		j.Accelerator = p.Accelerator
		j.NumGPUs = p.NumGPUs
		j.Workdir = t.Workdir
		j.Command = t.Run
		j.TaskFile = t.File
		j.EnvNames = sortedKeys(t.Envs)
		recordLimits(j, lim)
		j.Gang = &store.Gang{}
		for r, rp := range p.Ranks {
			j.Gang.Ranks = append(j.Gang.Ranks, store.Rank{Rank: r, Node: rp.Node, UID: remote.RankUID(j.UID, r),
				State: job.Submitting, GPUs: []int{}, Reachable: true})
		}
		return nil
	})
	if err != nil {
		return nil, p, fmt.Errorf("nothing was submitted: %w", err)
	}
	// Held until the job has left SUBMITTING: see Launch.
	defer lk.Release()
	fail := func(err error) (*store.Job, Placement, error) {
		_ = st.Update(func(s *store.State) error { s.Delete(rec.ID); return nil })
		return nil, p, err
	}

	keys := make([]string, n)
	errs := make([]error, n)
	unlocks := make([]func(), n)
	// Each node's workdir lock is held until its rank's snapshot is taken
	// (its submit).
	defer func() {
		for _, u := range unlocks {
			if u != nil {
				u()
			}
		}
	}()
	var wg sync.WaitGroup
	for r, rp := range p.Ranks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := opts
			if r > 0 {
				o.Progress = nil // one bar: rank 0's
			}
			keys[r], unlocks[r], errs[r] = c.syncTask(ctx, st, t, rp.Node, o)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fail(err)
	}
	if s, err := st.Load(); err != nil {
		return fail(err)
	} else if j := s.Job(rec.ID); j != nil && j.State == job.Cancelled {
		return nil, p, ErrCancelledDuringLaunch
	}

	var tok [16]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return fail(err)
	}
	gang := remote.GangSpec{Key: remote.NewGangKey(rec.UID, time.Now()), Token: hex.EncodeToString(tok[:]), Hold: hold, Lost: lost, IPs: make([]string, n)}
	for r, rp := range p.Ranks {
		gang.IPs[r] = c.rankIP(ctx, rp.Node)
	}
	spec := func(r int) remote.JobSpec {
		s := remote.JobSpec{UID: remote.RankUID(rec.UID, r), ID: rec.ID, Name: t.Name, User: rec.User, NumGPUs: p.NumGPUs,
			AllowedGPUs: p.Ranks[r].AllowedGPUs, Setup: t.Setup, Run: t.Run, NodeRank: r, NumNodes: n, WorkdirKey: keys[r],
			MemLimitMiB: lim.MemMiB, TimeLimit: lim.Time, CPUs: lim.CPUs}
		if p.Accelerator == "" {
			s.AllowedGPUs = nil
		}
		for _, k := range sortedKeys(t.Envs) {
			s.Env = append(s.Env, remote.EnvVar{Name: k, Value: t.Envs[k]})
		}
		for _, k := range sortedKeys(t.Secrets) {
			s.Secrets = append(s.Secrets, remote.EnvVar{Name: k, Value: t.Secrets[k]})
		}
		g := gang
		g.IPs = append([]string(nil), gang.IPs...)
		s.Gang = &g
		return s
	}
	subCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	submitted := make([]bool, n)
	// undo ends every rank that reached its node: a gang runs whole or not
	// at all.
	stopAll := func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		var wg sync.WaitGroup
		for r := range n {
			if !submitted[r] {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.Node(p.Ranks[r].Node).Cancel(cctx, []string{remote.RankUID(rec.UID, r)}, time.Second)
			}()
		}
		wg.Wait()
	}
	undo := func(why error) (*store.Job, Placement, error) {
		stopAll()
		return fail(why)
	}
	submit := func(r int, s remote.JobSpec) error {
		node := p.Ranks[r].Node
		first, err := c.Node(node).Submit(subCtx, s)
		var refused *remote.NodeError
		switch {
		case errors.As(err, &refused):
			return fmt.Errorf("%s refused rank %d: %s", node, r, refused.Msg)
		case err != nil:
			// Its fate unknown: cancel it like the others.
			submitted[r] = true
			return fmt.Errorf("submitting rank %d to %s: %w", r, node, err)
		}
		submitted[r] = true
		if first.Terminal() {
			return fmt.Errorf("rank %d on %s ended at once (%s); its node says why in ~/.sshq/jobs/%s/log", r, node, first, s.UID)
		}
		return nil
	}
	if err := submit(0, spec(0)); err != nil {
		return undo(err)
	}
	gi, err := c.Node(p.Node).Gang(subCtx, rec.UID)
	if err != nil {
		return undo(fmt.Errorf("rank 0 on %s: %w", p.Node, err))
	}
	if gang.IPs[0] == "" {
		gang.IPs[0] = gi.Addr
	}
	if gang.IPs[0] == "" {
		return undo(fmt.Errorf("cannot tell the address the other nodes reach %s by: set it in %s as per_node: {%s: {ip: ADDRESS}}", p.Node, "config.yaml", p.Node))
	}
	gang.Coordinator = net.JoinHostPort(gang.IPs[0], strconv.Itoa(gi.Port))
	note("rank 0 on %s; its coordinator listens at %s", p.Node, gang.Coordinator)
	for r := 1; r < n; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[r] = submit(r, spec(r))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return undo(err)
	}
	cancelled := false
	err = st.Update(func(s *store.State) error {
		j := s.Job(rec.ID)
		if j == nil {
			return fmt.Errorf("job #%d vanished from the store", rec.ID)
		}
		if j.State == job.Cancelled {
			cancelled = true
		} else {
			j.State = job.Pending
		}
		for r := range j.Gang.Ranks {
			j.Gang.Ranks[r].State = job.Pending
			j.Gang.Ranks[r].IP = gang.IPs[r]
		}
		now := time.Now().UTC()
		j.LastSeen = &now
		rec = *j
		return nil
	})
	if cancelled {
		// The cancel came while the ranks were submitted: honour it.
		stopAll()
		return &rec, p, ErrCancelledDuringLaunch
	}
	return &rec, p, err
}

// rankStatus is what a rank's node said about it: answered is false when
// the node could not be asked.
type rankStatus struct {
	js       remote.JobStatus
	answered bool
	// launcherGone: the job's launching process is gone, so a rank still
	// SUBMITTING that its node lacks will never get there.
	launcherGone bool
}

// applyGang records what the ranks' nodes said (get(r)) and sums the ranks
// up into the job:
//   - it has ended once every rank has: SUCCEEDED when all did, else as the
//     rank that ended it did (FailedRank: the first to end otherwise than
//     by another's stop), with that rank's exit code;
//   - before that it is RUNNING while any rank runs, SETTING_UP while any
//     sets up, else PENDING;
//   - a rank that another one says was lost (no word from its node) is
//     LOST, its node unreachable or not; a lost rank ends the job FAILED,
//     with no exit code.
func applyGang(j *store.Job, get func(r int) rankStatus, now time.Time) {
	g := j.Gang
	asked := false
	for i := range g.Ranks {
		r := &g.Ranks[i]
		a := get(i)
		r.Reachable = a.answered
		if !a.answered || r.State.Terminal() {
			continue
		}
		asked = true
		js := a.js
		if !js.Found {
			if r.State == job.Submitting && !a.launcherGone && now.Sub(j.Submitted) < submitGrace() {
				continue
			}
			r.State = job.Lost
			continue
		}
		r.State = js.State
		if js.Exited {
			code := js.ExitCode
			r.ExitCode = &code
		}
		if len(js.GPUs) > 0 {
			r.GPUs = r.GPUs[:0]
			for _, gp := range js.GPUs {
				r.GPUs = append(r.GPUs, gp.Index)
			}
		}
		r.QueuePosition = nil
		if js.QueuePosition > 0 {
			pos := js.QueuePosition
			r.QueuePosition = &pos
		}
		r.Reason = js.Reason
		if i == 0 && js.Cores != "" {
			j.Cores = js.Cores
		}
		if js.Gang != nil {
			r.Mode = string(js.Gang.Mode)
			if js.Gang.StoppedBy >= 0 {
				by := js.Gang.StoppedBy
				r.StoppedBy, r.StopCode = &by, js.Gang.StopCode
			}
		}
		for _, tr := range js.History {
			at := tr.At
			switch {
			case tr.State == job.Running && (j.Started == nil || at.Before(*j.Started)):
				j.Started = &at
			case tr.State.Terminal():
				r.Ended = &at
			}
		}
		if r.State.Terminal() && r.Ended == nil {
			r.Ended = &now
		}
	}
	// A rank whose node did not answer ended as the ranks it stopped heard:
	// lost (no word from it), or with the code its agent said.
	for i := range g.Ranks {
		r := &g.Ranks[i]
		if r.State.Terminal() || r.Reachable {
			continue
		}
		for _, o := range g.Ranks {
			if o.StoppedBy == nil || *o.StoppedBy != i || !o.State.Terminal() {
				continue
			}
			if code, err := strconv.Atoi(o.StopCode); err == nil {
				r.State, r.ExitCode = job.Failed, &code
			} else {
				r.State = job.Lost
			}
			r.Ended = o.Ended
			break
		}
	}
	if asked {
		j.LastSeen = &now
	}
	sumGang(j, now)
}

// sumGang sets the job's state from its ranks' (see applyGang).
func sumGang(j *store.Job, now time.Time) {
	g := j.Gang
	all, running, setup, pending := true, false, false, false
	for _, r := range g.Ranks {
		switch {
		case r.State.Terminal():
		case r.State == job.Running:
			running, all = true, false
		case r.State == job.SettingUp:
			setup, all = true, false
		default:
			pending, all = pending || r.State != job.Submitting, false
		}
	}
	j.GPUs = append(j.GPUs[:0], g.Ranks[0].GPUs...)
	j.QueuePosition = nil
	j.Reason = ""
	for _, r := range g.Ranks {
		if r.QueuePosition != nil && (j.QueuePosition == nil || *r.QueuePosition > *j.QueuePosition) {
			j.QueuePosition = r.QueuePosition
		}
		if j.Reason == "" && r.Reason != "" && !r.State.Terminal() {
			// Why the gang waits: a rank's node short of disk.
			j.Reason = fmt.Sprintf("rank %d (%s): %s", r.Rank, r.Node, r.Reason)
		}
	}
	if !all {
		switch {
		case running:
			j.State = job.Running
		case setup:
			j.State = job.SettingUp
		case pending:
			j.State = job.Pending
		}
		return
	}
	j.QueuePosition = nil
	if j.Ended == nil {
		end := now
		for _, r := range g.Ranks {
			if r.Ended != nil && (end == now || r.Ended.After(end)) {
				end = *r.Ended
			}
		}
		j.Ended = &end
	}
	var root *store.Rank
	for i := range g.Ranks {
		r := &g.Ranks[i]
		if r.State == job.Succeeded || r.StoppedBy != nil {
			continue
		}
		if root == nil || r.Ended != nil && root.Ended != nil && r.Ended.Before(*root.Ended) {
			root = r
		}
	}
	if root == nil {
		for i := range g.Ranks {
			if r := &g.Ranks[i]; r.StoppedBy != nil && *r.StoppedBy < len(g.Ranks) {
				root = &g.Ranks[*r.StoppedBy]
				break
			}
		}
	}
	if root == nil {
		j.State = job.Succeeded
		zero := 0
		j.ExitCode = &zero
		return
	}
	rank := root.Rank
	g.FailedRank = &rank
	j.State, j.ExitCode, j.Reason = root.State, root.ExitCode, root.Reason
	switch root.State {
	case job.Lost:
		j.State, j.ExitCode = job.Failed, nil
		g.Cause = fmt.Sprintf("rank %d (%s) lost", rank, root.Node)
	case job.Cancelled:
		g.Cause = fmt.Sprintf("rank %d (%s) cancelled", rank, root.Node)
	case job.FailedSetup:
		g.Cause = fmt.Sprintf("rank %d (%s) setup failed", rank, root.Node)
	case job.Timeout:
		g.Cause = fmt.Sprintf("rank %d (%s) reached its time limit", rank, root.Node)
	case job.OutOfMemory:
		g.Cause = fmt.Sprintf("rank %d (%s) ran out of memory", rank, root.Node)
	default:
		g.Cause = fmt.Sprintf("rank %d (%s) failed", rank, root.Node)
	}
	if root.ExitCode != nil && root.State != job.Lost {
		g.Cause += fmt.Sprintf(" with exit code %d", *root.ExitCode)
	}
}
