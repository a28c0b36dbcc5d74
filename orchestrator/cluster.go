package orchestrator

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/sshq/sshq/inventory"
	"github.com/sshq/sshq/orchestrator/gpu"
	"github.com/sshq/sshq/orchestrator/remote"
	"github.com/sshq/sshq/orchestrator/slurm"
	"github.com/sshq/sshq/sshpool"
)

// Cluster is the set of nodes one command works on. All node work goes
// through Node's client: one command, one SSH session, per node action.
type Cluster struct {
	Pool     *sshpool.Pool
	Resolver *inventory.Resolver
	Names    []string
	// Runner, when set, runs the node commands in place of Pool (a test's
	// fake, or nodes reached another way). Workdir syncs still need Pool.
	Runner func(node string) remote.Runner
	// PerNode are config.yaml's settings of single nodes (their `ip:`).
	PerNode map[string]inventory.NodeSettings
	// Slurm, when set, gives the client of a Slurm login node, for the
	// jobs submitted there; else one is made over Runner or Pool.
	Slurm func(login string) *slurm.Client
}

// Node returns the client of the node called name.
func (c *Cluster) Node(name string) *remote.Client {
	if c.Runner != nil {
		return remote.New(name, c.Runner(name))
	}
	return remote.New(name, c.Pool.Node(name))
}

// subset is c over other nodes.
func (c *Cluster) subset(names []string) *Cluster {
	sub := *c
	sub.Names = names
	return &sub
}

// opTimeout bounds one remote command on a node after it is connected: a
// node whose shell or driver hangs must not hold the others' answers.
func (c *Cluster) opTimeout(ctx context.Context, name string) time.Duration {
	if c.Resolver == nil {
		return inventory.DefaultConnectTimeout + 30*time.Second
	}
	if n, err := c.Resolver.Resolve(ctx, name); err == nil {
		t := n.Timeout()
		if t < 5*time.Second {
			t = 5 * time.Second
		}
		return t + 30*time.Second
	}
	return inventory.DefaultConnectTimeout + 30*time.Second
}

// Each runs f for every node in parallel and waits for all.
func (c *Cluster) Each(ctx context.Context, f func(ctx context.Context, name string)) {
	var wg sync.WaitGroup
	for _, n := range c.Names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(ctx, n)
		}()
	}
	wg.Wait()
}

// Holder is the sshq job that leases a GPU.
type Holder struct {
	JobID  int    `json:"job_id"`
	JobUID string `json:"job_uid"`
	Name   string `json:"name"`
	// User is who holds the GPU: the node account the job runs as, or,
	// when the node's record predates that (NodeUser empty), the
	// submitting controller's local user. ControllerUser is always the
	// latter, which alone cannot tell apart two people whose laptops both
	// run sshq as root.
	User           string    `json:"user"`
	NodeUser       string    `json:"node_user"`
	ControllerUser string    `json:"controller_user"`
	Since          time.Time `json:"since"`
	// Gang is set when the holder is a rank of a multi-node job.
	Gang *GangRank `json:"gang,omitempty"`
}

// GangRank is which rank of a multi-node job a holder, waiter or running
// job on a node is, and where it is in the gang's start: wait, hold (its
// GPUs reserved until every rank holds theirs), park (let them go after
// the hold limit; keeps its place, asks for nothing) or run.
type GangRank struct {
	Rank     int    `json:"rank"`
	NumNodes int    `json:"num_nodes"`
	Mode     string `json:"mode"`
}

// GPUProcess is a compute process on a GPU.
type GPUProcess struct {
	PID           int    `json:"pid"`
	User          string `json:"user"`
	UsedMemoryMiB *int   `json:"used_memory_mib"` // null: not reported ([N/A])
	Name          string `json:"name"`
}

// GPUStatus is one GPU as `sshq status` shows it.
type GPUStatus struct {
	Index          int          `json:"index"`
	UUID           string       `json:"uuid"`
	Name           string       `json:"name"`
	MemoryTotalMiB *int         `json:"memory_total_mib"` // null: not reported ([N/A], unified memory)
	MemoryUsedMiB  *int         `json:"memory_used_mib"`
	UtilizationPct *int         `json:"utilization_pct"`
	State          string       `json:"state"` // a remote.GPUState: free, leased, foreign, unusable; or reserved (GPUReserved)
	Holder         *Holder      `json:"holder"`
	Processes      []GPUProcess `json:"processes"`
}

// QueueEntry is a job waiting on a node, of any user or controller. The
// users are as in Holder.
type QueueEntry struct {
	Position       int       `json:"position"`
	JobUID         string    `json:"job_uid"`
	User           string    `json:"user"`
	NodeUser       string    `json:"node_user"`
	ControllerUser string    `json:"controller_user"`
	Name           string    `json:"name"`
	NumGPUs        int       `json:"num_gpus"`
	Since          time.Time `json:"since"`
	Gang           *GangRank `json:"gang,omitempty"`
}

// GPUReserved is the state `sshq status` gives a GPU a rank of a multi-node
// job holds while it waits for the other ranks to hold theirs: leased, but
// idle until the job starts.
const GPUReserved = "reserved"

// holderUser is the user to show for a job: its node account when the node
// recorded one, else its controller's user.
func holderUser(nodeUser, controllerUser string) string {
	if nodeUser != "" {
		return nodeUser
	}
	return controllerUser
}

// NodeJob is an sshq job running on a node, of any user and any
// controller, with or without GPUs.
type NodeJob struct {
	JobID  int    `json:"job_id"`
	JobUID string `json:"job_uid"`
	Name   string `json:"name"`
	// User is the node account the job runs as (the owner of its record
	// on the node, which no record can claim to be); ControllerUser is
	// the submitting controller's local user.
	User           string    `json:"user"`
	ControllerUser string    `json:"controller_user"`
	NumGPUs        int       `json:"num_gpus"`
	Since          time.Time `json:"since"`
	Gang           *GangRank `json:"gang,omitempty"`
}

// NodeStatus is one node in `sshq status`.
type NodeStatus struct {
	Name            string       `json:"name"`
	Reachable       bool         `json:"reachable"`
	Error           string       `json:"error,omitempty"`
	CPUs            int          `json:"cpus"`
	Load1           float64      `json:"load1"`
	MemTotalMiB     int64        `json:"mem_total_mib"`
	MemAvailableMiB int64        `json:"mem_available_mib"`
	DiskFreeMiB     int64        `json:"disk_free_mib"`
	GPUState        gpu.State    `json:"gpu_state,omitempty"`
	GPUMessage      string       `json:"gpu_message,omitempty"`
	GPUs            []GPUStatus  `json:"gpus"`
	Queue           []QueueEntry `json:"queue"`
	// Jobs are the sshq jobs running on the node, of every user, those
	// without GPUs included (they appear in no GPU's Holder).
	Jobs     []NodeJob `json:"jobs"`
	Warnings []string  `json:"warnings"`
}

// Probe asks one node for its status, in one command. It never fails: an
// unreachable node comes back with Reachable false and the reason.
func (c *Cluster) Probe(ctx context.Context, name string) NodeStatus {
	ns := NodeStatus{Name: name, GPUs: []GPUStatus{}, Queue: []QueueEntry{}, Jobs: []NodeJob{}, Warnings: []string{}, CPUs: -1,
		MemTotalMiB: -1, MemAvailableMiB: -1, DiskFreeMiB: -1, Load1: -1}
	ctx, cancel := context.WithTimeout(ctx, c.opTimeout(ctx, name))
	defer cancel()
	q, err := c.Node(name).Status(ctx)
	var ne *remote.NodeError
	if errors.As(err, &ne) {
		// It answered, but could not report (bash too old, say).
		ns.Reachable = true
		ns.GPUState, ns.GPUMessage = gpu.StateError, ne.Msg
		ns.Warnings = append(ns.Warnings, ne.Msg)
		return ns
	}
	if err != nil {
		ns.Error = err.Error()
		return ns
	}
	ns.Reachable = true
	host, rep := q.Host, q.Driver
	ns.CPUs, ns.Load1 = host.CPUs, host.Load1
	ns.MemTotalMiB, ns.MemAvailableMiB, ns.DiskFreeMiB = host.MemTotalMiB, host.MemAvailableMiB, host.DiskFreeMiB
	ns.GPUState, ns.GPUMessage = rep.State, rep.Message
	ns.Warnings = append(ns.Warnings, rep.Warnings...)
	ns.Warnings = append(ns.Warnings, q.Errors...)
	leases := map[string]remote.Lease{}
	for _, l := range q.Leases {
		leases[l.UUID] = l
	}
	gangs := map[string]*GangRank{}
	for _, g := range q.Gangs {
		gangs[g.JobUID] = &GangRank{Rank: g.Rank, NumNodes: g.NumNodes, Mode: string(g.Mode)}
	}
	queueState := map[string]remote.NodeGPU{}
	for _, g := range q.GPUs {
		queueState[g.UUID] = g
	}
	for _, g := range rep.GPUs {
		gs := GPUStatus{Index: g.Index, UUID: g.UUID, Name: g.Name, MemoryTotalMiB: reported(g.MemoryTotalMiB),
			MemoryUsedMiB: reported(g.MemoryUsedMiB), UtilizationPct: g.UtilizationPct, State: string(remote.GPUFree), Processes: []GPUProcess{}}
		for _, p := range rep.ProcessesOn(g.UUID) {
			gs.Processes = append(gs.Processes, GPUProcess{PID: p.PID, User: p.User, UsedMemoryMiB: reported(p.UsedMemoryMiB), Name: p.Name})
		}
		if l, ok := leases[g.UUID]; ok {
			gs.State = string(remote.GPULeased)
			gs.Holder = &Holder{JobID: l.JobID, JobUID: l.JobUID, Name: l.Name, User: holderUser(l.NodeUser, l.User),
				NodeUser: l.NodeUser, ControllerUser: l.User, Since: l.Since, Gang: gangs[l.JobUID]}
			if g := gangs[l.JobUID]; g != nil && g.Mode == string(remote.GangHolding) {
				gs.State = GPUReserved
			}
		} else if qs, ok := queueState[g.UUID]; ok && qs.State != "" {
			gs.State = string(qs.State)
		} else if len(gs.Processes) > 0 {
			// Without the queue's view, any process is someone else's.
			gs.State = string(remote.GPUForeign)
		}
		ns.GPUs = append(ns.GPUs, gs)
	}
	for _, t := range q.Queue {
		ns.Queue = append(ns.Queue, QueueEntry{Position: t.Position, JobUID: t.JobUID, User: holderUser(t.NodeUser, t.User),
			NodeUser: t.NodeUser, ControllerUser: t.User, Name: t.Name, NumGPUs: t.NumGPUs, Since: t.Since, Gang: gangs[t.JobUID]})
	}
	sort.Slice(ns.Queue, func(i, j int) bool { return ns.Queue[i].Position < ns.Queue[j].Position })
	for _, j := range q.Running {
		ns.Jobs = append(ns.Jobs, NodeJob{JobID: j.JobID, JobUID: j.JobUID, Name: j.Name, User: holderUser(j.NodeUser, j.User),
			ControllerUser: j.User, NumGPUs: j.NumGPUs, Since: j.Since, Gang: gangs[j.JobUID]})
	}
	sort.SliceStable(ns.Jobs, func(i, j int) bool { return ns.Jobs[i].Since.Before(ns.Jobs[j].Since) })
	return ns
}

// Status probes every node in parallel, in the order of c.Names.
func (c *Cluster) Status(ctx context.Context) []NodeStatus {
	out := make([]NodeStatus, len(c.Names))
	idx := map[string]int{}
	for i, n := range c.Names {
		idx[n] = i
	}
	c.Each(ctx, func(ctx context.Context, name string) {
		out[idx[name]] = c.Probe(ctx, name)
	})
	return out
}

// reported is a driver's figure for JSON: the parser's -1 (the driver said
// [N/A] or [Not Supported]) becomes null, never a number a script could
// add up.
func reported(n int) *int {
	if n < 0 {
		return nil
	}
	return &n
}
