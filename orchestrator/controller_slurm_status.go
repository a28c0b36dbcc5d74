package orchestrator

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/slurm"
)

// SlurmStatus is one Slurm cluster in `sshq status`, as its login node
// reported it in one session: partitions, each compute node's GPUs in use
// and total (from the gres), and the whole queue, any user's.
type SlurmStatus struct {
	Login      string             `json:"login"`
	Reachable  bool               `json:"reachable"`
	Error      string             `json:"error,omitempty"`
	Version    string             `json:"version"`
	Partitions []SlurmPartition   `json:"partitions"`
	Nodes      []SlurmNodeStatus  `json:"nodes"`
	Queue      []SlurmQueueStatus `json:"queue"`
}

// SlurmPartition is one partition of a Slurm cluster.
type SlurmPartition struct {
	Name      string `json:"name"`
	Default   bool   `json:"default"`
	Up        bool   `json:"up"`
	TimeLimit string `json:"time_limit"` // as Slurm prints it: "infinite", "1-00:00:00"
	Nodes     int    `json:"nodes"`
	NodeList  string `json:"node_list"`
}

// SlurmNodeStatus is one compute node of a Slurm cluster.
type SlurmNodeStatus struct {
	Name        string     `json:"name"`
	Partitions  []string   `json:"partitions"`
	State       string     `json:"state"` // Slurm's long state: idle, mixed, allocated, drained...
	GPUs        []SlurmGPU `json:"gpus"`
	CPUsAlloc   int        `json:"cpus_alloc"`
	CPUsTotal   int        `json:"cpus_total"`
	MemoryMiB   int        `json:"memory_mib"`
	AllocMemMiB int        `json:"alloc_mem_mib"`
	Reason      string     `json:"reason"` // why it is down or drained; "" when none
}

// SlurmGPU is one GPU gres type of a node: how many it has, how many
// jobs hold. Type is as the cluster spells it; "" for untyped gres.
type SlurmGPU struct {
	Type  string `json:"type"`
	Total int    `json:"total"`
	Used  int    `json:"used"`
}

// SlurmQueueStatus is one job in a Slurm cluster's queue. JobID is this
// controller's id for it, null for a job sshq did not submit from here.
type SlurmQueueStatus struct {
	SlurmID    string    `json:"slurm_id"`
	JobID      *int      `json:"job_id"`
	Name       string    `json:"name"`
	User       string    `json:"user"`
	Partition  string    `json:"partition"`
	State      job.State `json:"state"`
	SlurmState string    `json:"slurm_state"`
	Reason     string    `json:"reason"`
	TimeUsed   string    `json:"time_used"`
	NumNodes   int       `json:"num_nodes"`
	GRES       string    `json:"gres"` // what it asked per node, "gres:gpu:a100:1"
	NodeList   string    `json:"node_list"`
}

// GPUsInUse counts the cluster's GPUs held by jobs, and all of them.
func (s SlurmStatus) GPUsInUse() (used, total int) {
	for _, n := range s.Nodes {
		for _, g := range n.GPUs {
			used += g.Used
			total += g.Total
		}
	}
	return used, total
}

// slurmStatus asks every Slurm host for its cluster's status, in
// parallel, one session each. It starts at once and the result is read
// with the returned function, so it runs alongside the nodes' probes.
func (c *Controller) slurmStatus(ctx context.Context, hosts []string) func() []SlurmStatus {
	out := make([]SlurmStatus, len(hosts))
	if len(hosts) == 0 {
		return func() []SlurmStatus { return []SlurmStatus{} }
	}
	ours := c.slurmJobIDs()
	var wg sync.WaitGroup
	for i, login := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, c.cluster(nil).opTimeout(ctx, login))
			defer cancel()
			st, err := c.slurmClient(login).Status(ctx)
			out[i] = slurmStatusView(login, st, err, ours[login])
		}()
	}
	return func() []SlurmStatus {
		wg.Wait()
		return out
	}
}

// slurmJobIDs maps this controller's unfinished Slurm jobs' Slurm ids to
// their ids, by login node, from the store as it is (no question asked).
func (c *Controller) slurmJobIDs() map[string]map[string]int {
	out := map[string]map[string]int{}
	if !c.hasStore() {
		return out
	}
	st, err := c.store()
	if err != nil {
		return out
	}
	s, err := st.Load()
	if err != nil {
		return out
	}
	for _, j := range s.Jobs {
		if j.SlurmID == "" {
			continue
		}
		if out[j.Node] == nil {
			out[j.Node] = map[string]int{}
		}
		out[j.Node][j.SlurmID] = j.ID
	}
	return out
}

func slurmStatusView(login string, st *slurm.Status, err error, ours map[string]int) SlurmStatus {
	v := SlurmStatus{Login: login, Partitions: []SlurmPartition{}, Nodes: []SlurmNodeStatus{}, Queue: []SlurmQueueStatus{}}
	if err != nil {
		v.Error = err.Error()
		// The login node answered, but it is no Slurm login node, or
		// slurmctld is down: reachable, with the reason.
		v.Reachable = !lostConnection(err)
		return v
	}
	v.Reachable, v.Version = true, st.Version
	for _, p := range st.Partitions {
		v.Partitions = append(v.Partitions, SlurmPartition{Name: p.Name, Default: p.Default, Up: p.Up, TimeLimit: p.TimeLimit, Nodes: p.Nodes, NodeList: p.NodeList})
	}
	for _, n := range st.Nodes {
		ns := SlurmNodeStatus{Name: n.Name, Partitions: n.Partitions, State: n.State, GPUs: []SlurmGPU{}, CPUsAlloc: n.CPUsAlloc,
			CPUsTotal: n.CPUsTotal, MemoryMiB: n.MemoryMB, AllocMemMiB: n.AllocMemMB, Reason: n.Reason}
		if ns.Partitions == nil {
			ns.Partitions = []string{}
		}
		for _, g := range n.GPUs {
			ns.GPUs = append(ns.GPUs, SlurmGPU{Type: g.Type, Total: g.Total, Used: g.Used})
		}
		v.Nodes = append(v.Nodes, ns)
	}
	for _, q := range st.Queue {
		e := SlurmQueueStatus{SlurmID: q.ID, Name: q.Name, User: q.User, Partition: q.Partition, State: q.State, SlurmState: q.SlurmState,
			Reason: q.Reason, TimeUsed: q.TimeUsed, NumNodes: q.NumNodes, GRES: q.GRES, NodeList: q.NodeList}
		if id, ok := ours[q.ID]; ok {
			e.JobID = &id
		}
		v.Queue = append(v.Queue, e)
	}
	return v
}

// SlurmCheck is one Slurm login node's readiness (`sshq nodes`): its
// Slurm commands, version, partitions and GPU gres.
type SlurmCheck struct {
	Name      string `json:"name"`
	Host      string `json:"hostname"`
	Port      int    `json:"port"`
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	LatencyMS int64  `json:"latency_ms,omitempty"`
	Version   string `json:"version"`
	// Partitions are their names, the default one marked with '*'.
	Partitions []string `json:"partitions"`
	Nodes      int      `json:"nodes"`
	// GPUs counts the cluster's GPUs; GRES, by gres type ("" for untyped).
	GPUs     int            `json:"gpus"`
	GRES     map[string]int `json:"gres"`
	HasSacct bool           `json:"has_sacct"`
	Problems []string       `json:"problems"`
	Ready    bool           `json:"ready"`
}

// slurmChecks probes every Slurm host in parallel: sbatch, squeue, sinfo
// and the rest on its PATH, and the cluster's partitions and gres.
func (c *Controller) slurmChecks(ctx context.Context, hosts []string) []SlurmCheck {
	out := make([]SlurmCheck, len(hosts))
	var wg sync.WaitGroup
	for i, login := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &out[i]
			r.Name, r.Problems, r.Partitions, r.GRES = login, []string{}, []string{}, map[string]int{}
			n, err := c.resolver.Resolve(ctx, login)
			if err != nil {
				r.Error = err.Error()
				return
			}
			r.Host, r.Port = n.HostName, n.Port
			ctx, cancel := context.WithTimeout(ctx, n.Timeout()+10*time.Second)
			defer cancel()
			start := time.Now()
			if _, err := c.pool.Get(ctx, login); err != nil {
				r.Error = err.Error()
				return
			}
			r.Reachable = true
			r.LatencyMS = time.Since(start).Milliseconds()
			sftpErr := c.checkSFTP(ctx, login)
			info, err := c.slurmClient(login).Probe(ctx)
			if err := sftpErr(); err != nil {
				r.Problems = append(r.Problems, sftpProblem(login, err))
			}
			if err != nil {
				r.Problems = append(r.Problems, err.Error())
				return
			}
			r.Version, r.HasSacct, r.Nodes = info.Version, info.HasSacct, len(info.Nodes)
			for _, p := range info.Partitions {
				name := p.Name
				if p.Default {
					name += "*"
				}
				r.Partitions = append(r.Partitions, name)
				if !p.Up {
					r.Problems = append(r.Problems, fmt.Sprintf("partition %s is down: jobs there wait until an admin brings it up", p.Name))
				}
			}
			for _, node := range info.Nodes {
				for _, g := range node.GPUs {
					r.GRES[g.Type] += g.Total
					r.GPUs += g.Total
				}
			}
			r.Ready = len(r.Problems) == 0
		}()
	}
	wg.Wait()
	return out
}

// GRESString is the cluster's GPU gres as people read it: "gpu:a100 ×4,
// gpu:v100 ×2"; "no GPU gres" when there is none.
func (r SlurmCheck) GRESString() string {
	if len(r.GRES) == 0 {
		return "no GPU gres"
	}
	types := make([]string, 0, len(r.GRES))
	for t := range r.GRES {
		types = append(types, t)
	}
	sort.Strings(types)
	parts := make([]string, len(types))
	for i, t := range types {
		name := "gpu"
		if t != "" {
			name += ":" + t
		}
		parts[i] = fmt.Sprintf("%s ×%d", name, r.GRES[t])
	}
	return strings.Join(parts, ", ")
}
