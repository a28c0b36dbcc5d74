package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/sshq/sshq/inventory"
	"github.com/sshq/sshq/orchestrator/slurm"
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/orchestrator/task"
)

// slurmHosts are the hosts of the ssh config that are Slurm login nodes,
// and their clients, made once per controller so each cluster's GPU types
// are read once.
type slurmHosts struct {
	patterns []string
	source   string // where patterns came from, for messages

	mu      sync.Mutex
	clients map[string]*slurm.Client
}

// newSlurmHosts picks the Slurm hosts by precedence: --slurm, then
// SSHQ_SLURM (both through o), then config.yaml's slurm list.
func newSlurmHosts(o ControllerOptions, s inventory.Settings) slurmHosts {
	switch {
	case strings.TrimSpace(o.Slurm) != "":
		from := o.SlurmFrom
		if from == "" {
			from = "--slurm"
		}
		return slurmHosts{patterns: inventory.SplitPatterns(o.Slurm), source: from}
	case len(s.Slurm) > 0:
		return slurmHosts{patterns: s.Slurm, source: "slurm in config.yaml"}
	}
	return slurmHosts{}
}

// SlurmHosts are the Slurm login nodes, which must be Hosts of the ssh
// config. A Slurm host is a placement target like a node, but jobs placed
// there go through sbatch; it is never one of Names.
func (c *Controller) SlurmHosts() ([]string, error) {
	if len(c.slurm.patterns) == 0 {
		return nil, nil
	}
	if err := c.checkHosts(c.slurm.patterns, c.slurm.source); err != nil {
		return nil, err
	}
	names, err := inventory.Select(c.ssh.Aliases, c.slurm.patterns)
	if err != nil {
		return nil, usageErrorf("%s: %w (ssh config: %s)", c.slurm.source, err, c.ssh.Path)
	}
	return names, nil
}

// withoutSlurm drops the Slurm hosts from a node selection: a glob of the
// nodes may match a login node too, and that one is Slurm's.
func (c *Controller) withoutSlurm(names []string) []string {
	if len(c.slurm.patterns) == 0 {
		return names
	}
	sl, err := inventory.Select(c.ssh.Aliases, c.slurm.patterns)
	if err != nil || len(sl) == 0 {
		return names
	}
	out := names[:0:0]
	for _, n := range names {
		if !slices.Contains(sl, n) {
			out = append(out, n)
		}
	}
	return out
}

// slurmClient is the login node's client, over the pooled connection.
func (c *Controller) slurmClient(login string) *slurm.Client {
	c.slurm.mu.Lock()
	defer c.slurm.mu.Unlock()
	if c.slurm.clients == nil {
		c.slurm.clients = map[string]*slurm.Client{}
	}
	sc := c.slurm.clients[login]
	if sc == nil {
		sc = slurm.New(login, c.pool.Node(login))
		c.slurm.clients[login] = sc
	}
	return sc
}

// route decides where a launch goes when that is more than the nodes'
// own question: with Slurm hosts among the targets it places the task
// (see place) and hands the placement to Cluster.Launch.
func (c *Controller) route(ctx context.Context, names []string, t *task.Task, opts *LaunchOptions) error {
	hosts, err := c.SlurmHosts()
	if err != nil {
		return err
	}
	if len(hosts) == 0 {
		return nil
	}
	p, err := c.place(ctx, names, t, opts.Node)
	if err != nil {
		return err
	}
	opts.Placement = &p
	return nil
}

// place chooses where t runs among the nodes (names) and the Slurm
// clusters. Pinned (--node), it asks only that target. Otherwise, in this
// order: a node where the job starts now (the nodes' own rule, see
// Cluster.Place); a Slurm cluster with enough idle matching GPUs for it
// now (read from sinfo, in the order the Slurm hosts are named); a node
// whose queue will take it; a Slurm cluster whose gres could ever hold it
// (Slurm queues it). A multi-node task weighs the nodes as a gang (its
// ranks on distinct nodes, see Cluster.Place) against the clusters alike.
func (c *Controller) place(ctx context.Context, names []string, t *task.Task, pin string) (Placement, error) {
	hosts, err := c.SlurmHosts()
	if err != nil {
		return Placement{}, err
	}
	if pin != "" && slices.Contains(hosts, pin) {
		offers := c.slurmOffers(ctx, t, []string{pin})
		o := offers[0]
		switch {
		case o.err != nil && lostConnection(o.err):
			return Placement{}, fmt.Errorf("%w: %s: %v", ErrNoNode, pin, o.err)
		case o.err != nil:
			return Placement{}, &UsageError{o.err}
		case o.never != "":
			return Placement{}, fmt.Errorf("%w: it asks for %s; %s", ErrNoFit, accelString(accelsOf(t)), o.never)
		}
		return o.p, nil
	}
	if len(hosts) == 0 || pin != "" {
		return c.cluster(names).Place(ctx, t, pin)
	}
	var nodeP Placement
	nodeErr := errors.New("no nodes besides the Slurm clusters")
	if len(names) > 0 {
		if p, ok := needsNoQuestion(t, names, ""); ok {
			return p, nil
		}
		nodeP, nodeErr = c.cluster(names).Place(ctx, t, "")
		if nodeErr == nil && nodeP.FitsNow {
			return nodeP, nil
		}
		if nodeErr != nil && ctx.Err() != nil {
			return Placement{}, nodeErr
		}
	}
	offers := c.slurmOffers(ctx, t, hosts)
	for _, o := range offers {
		if o.err == nil && o.never == "" && o.p.FitsNow {
			return o.p, nil
		}
	}
	if nodeErr == nil {
		return nodeP, nil
	}
	for _, o := range offers {
		if o.err == nil && o.never == "" {
			return o.p, nil
		}
	}
	// Nowhere: say what each target has.
	var why []string
	answered := false
	if len(names) > 0 {
		why = append(why, "nodes: "+nodeErr.Error())
		answered = !errors.Is(nodeErr, ErrNoNode)
	}
	for _, o := range offers {
		if o.err != nil {
			why = append(why, fmt.Sprintf("%s: %s", o.login, firstLine(o.err.Error())))
			answered = answered || !lostConnection(o.err)
			continue
		}
		why = append(why, o.never)
		answered = true
	}
	if !answered {
		return Placement{}, fmt.Errorf("%w: %s", ErrNoNode, strings.Join(why, "; "))
	}
	return Placement{}, fmt.Errorf("%w: it asks for %s; %s", ErrNoFit, accelString(accelsOf(t)), strings.Join(why, "; "))
}

func accelsOf(t *task.Task) []task.Accel {
	if len(t.Resources.Accelerators) == 0 {
		return []task.Accel{{Count: 0}}
	}
	return t.Resources.Accelerators
}

// slurmOffer is what one Slurm cluster can do for a task: p, where it
// could go (FitsNow when idle GPUs hold it now), or never, why it cannot
// run there at all; err when the login node could not say.
type slurmOffer struct {
	login string
	p     Placement
	never string
	err   error
}

// slurmOffers probes the clusters in parallel (one session each).
func (c *Controller) slurmOffers(ctx context.Context, t *task.Task, logins []string) []slurmOffer {
	out := make([]slurmOffer, len(logins))
	var wg sync.WaitGroup
	for i, login := range logins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, c.cluster(nil).opTimeout(ctx, login))
			defer cancel()
			info, err := c.slurmClient(login).Probe(ctx)
			if err != nil {
				out[i] = slurmOffer{login: login, err: err}
				return
			}
			out[i] = judgeSlurm(login, info, t)
		}()
	}
	wg.Wait()
	return out
}

// judgeSlurm weighs a task against a cluster's nodes as sinfo shows them:
// the nodes of the default partition that have the GPUs (of the type, as
// the cluster's gres spells it), CPUs and memory the task asks per node;
// it fits now when num_nodes of them have that much idle and are up.
// Slurm decides in the end; this only picks the target.
func judgeSlurm(login string, info *slurm.Info, t *task.Task) slurmOffer {
	nodes := defaultPartitionNodes(info)
	needCPU := int(math.Ceil(t.Resources.CPUs.Value))
	needMem := int(math.Ceil(t.Resources.Memory.Value * 1024))
	want := max(t.NumNodes, 1)
	var firstNever string
	var later *Placement
	for _, a := range accelsOf(t) {
		typ := ""
		if a.Type != "" {
			var err error
			if typ, err = info.ResolveGPUType(a.Type); err != nil {
				if firstNever == "" {
					firstNever = login + ": " + err.Error()
				}
				continue
			}
		}
		ever, now, free, total := 0, 0, 0, 0
		for _, n := range nodes {
			have, used := 0, 0
			for _, g := range n.GPUs {
				if typ == "" || g.Type == typ {
					have += g.Total
					used += g.Used
				}
			}
			if have < a.Count || n.CPUsTotal > 0 && n.CPUsTotal < needCPU || n.MemoryMB > 0 && n.MemoryMB < needMem {
				continue
			}
			ever++
			total += have
			if !slurmNodeUp(n.State) {
				continue
			}
			free += have - used
			if have-used >= a.Count && n.CPUsTotal-n.CPUsAlloc >= max(needCPU, 1) && (needMem == 0 || n.MemoryMB-n.AllocMemMB >= needMem) {
				now++
			}
		}
		if ever < want {
			if firstNever == "" {
				firstNever = fmt.Sprintf("%s: its Slurm has %d node(s) that could hold %s per node (%s), and the task needs %d", login, ever, accelString([]task.Accel{a}), describeSlurm(info), want)
			}
			continue
		}
		p := Placement{Node: login, Backend: store.BackendSlurm, Accel: a, Accelerator: a.Type, NumGPUs: a.Count,
			FitsNow: now >= want, FreeGPUs: free}
		what := "GPUs"
		if typ != "" {
			what = typ + " GPUs"
		}
		if p.FitsNow {
			p.Reason = fmt.Sprintf("Slurm: %d of %d matching %s idle", free, total, what)
			return slurmOffer{login: login, p: p}
		}
		p.Reason = fmt.Sprintf("Slurm queues it: %d of %d matching %s idle", free, total, what)
		if later == nil {
			later = &p
		}
	}
	if later != nil {
		return slurmOffer{login: login, p: *later}
	}
	return slurmOffer{login: login, never: firstNever}
}

// defaultPartitionNodes are the nodes a job without --partition may get.
func defaultPartitionNodes(info *slurm.Info) []slurm.Node {
	def := ""
	for _, p := range info.Partitions {
		if p.Default {
			def = p.Name
		}
	}
	if def == "" {
		return info.Nodes
	}
	var out []slurm.Node
	for _, n := range info.Nodes {
		if slices.Contains(n.Partitions, def) {
			out = append(out, n)
		}
	}
	return out
}

// slurmNodeUp: the node can start jobs now (sinfo's long state, which
// may carry flags such as "idle*" or "mixed+drain").
func slurmNodeUp(state string) bool {
	s := strings.ToLower(state)
	for _, bad := range []string{"down", "drain", "fail", "not_responding", "maint", "reboot", "future", "unknown", "*"} {
		if strings.Contains(s, bad) {
			return false
		}
	}
	return true
}

// describeSlurm says what GPUs a cluster has, for messages.
func describeSlurm(info *slurm.Info) string {
	count := map[string]int{}
	var order []string
	for _, n := range info.Nodes {
		for _, g := range n.GPUs {
			typ := g.Type
			if typ == "" {
				typ = "untyped"
			}
			if _, ok := count[typ]; !ok {
				order = append(order, typ)
			}
			count[typ] += g.Total
		}
	}
	if len(order) == 0 {
		return "no GPU gres"
	}
	var parts []string
	for _, typ := range order {
		parts = append(parts, fmt.Sprintf("%d× gpu:%s", count[typ], typ))
	}
	return strings.Join(parts, ", ")
}
