package orchestrator

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/sshq/sshq/orchestrator/store"
)

// StatusView is the cluster at a glance (`sshq status`).
type StatusView struct {
	Nodes []NodeView `json:"nodes"`
	// Slurm are the Slurm clusters, one per login node (--slurm).
	Slurm []SlurmStatus `json:"slurm"`
}

// NodeView is one node of StatusView: what it reported, and the jobs
// running on it.
type NodeView struct {
	NodeStatus
	// Running are the jobs running on the node, each once: every GPU
	// holder, of any user, and the jobs that hold no GPU. Nodes do not
	// report jobs without GPUs yet, so of those only this controller's
	// own are known (asked of their nodes with the status).
	Running []RunningJob `json:"running"`
}

// RunningJob is a job running on a node.
type RunningJob struct {
	JobID  int    `json:"job_id"`
	JobUID string `json:"job_uid"`
	Name   string `json:"name"`
	User   string `json:"user"`
	GPUs   []int  `json:"gpus"` // nvidia-smi indices; empty for a job without GPUs
	// Gang is set for a rank of a multi-node job.
	Gang *GangRank `json:"gang,omitempty"`
	// The limits of this controller's own jobs (another controller's
	// jobs show none): as in `sshq queue --json`.
	MemLimitMiB *int64 `json:"mem_limit_mib"`
	TimeLimitS  *int64 `json:"time_limit_s"`
	CPUs        int    `json:"cpus"`
	Cores       string `json:"cores"`
}

// Down lists the nodes that did not answer.
func (v *StatusView) Down() []string {
	var down []string
	for _, n := range v.Nodes {
		if !n.Reachable {
			down = append(down, n.Name)
		}
	}
	for _, s := range v.Slurm {
		if !s.Reachable {
			down = append(down, s.Login)
		}
	}
	return down
}

// Err is an UnreachableError naming the nodes that did not answer.
func (v *StatusView) Err() error {
	if down := v.Down(); len(down) > 0 {
		return &UnreachableError{fmt.Errorf("unreachable: %s (run `sshq nodes` for details)", strings.Join(down, ", "))}
	}
	return nil
}

// Status probes every selected node in parallel (one command per node).
// Interrupted, it returns an error wrapping ctx's rather than blaming the
// nodes.
func (c *Controller) Status(ctx context.Context) (*StatusView, error) {
	names, err := c.Names()
	if err != nil {
		return nil, err
	}
	hosts, err := c.SlurmHosts()
	if err != nil {
		return nil, err
	}
	slurmDone := c.slurmStatus(ctx, hosts)
	defer c.settlingOrphans(ctx)()
	nodes := c.cluster(names).Status(ctx)
	sl := slurmDone()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("status interrupted (%w)", err)
	}
	v := &StatusView{Nodes: make([]NodeView, len(nodes)), Slurm: sl}
	own := c.ownJobs()
	for i, n := range nodes {
		v.Nodes[i] = NodeView{NodeStatus: n, Running: running(n)}
		for k, r := range v.Nodes[i].Running {
			if j := own[r.JobUID]; j != nil {
				r.MemLimitMiB, r.TimeLimitS, r.CPUs = j.MemLimitMiB, j.TimeLimitS, j.CPUs
				if r.JobUID == j.UID {
					// A gang's record knows rank 0's cores only.
					r.Cores = j.Cores
				}
				v.Nodes[i].Running[k] = r
			}
		}
	}
	return v, nil
}

// ownJobs are this controller's unfinished jobs by uid (a multi-node
// job's under each rank's), from the store alone (no node is asked): what
// status knows of their limits.
func (c *Controller) ownJobs() map[string]*store.Job {
	out := map[string]*store.Job{}
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
		if !j.State.Terminal() {
			out[j.UID] = j
			if j.Gang != nil {
				for _, r := range j.Gang.Ranks {
					out[r.UID] = j
				}
			}
		}
	}
	return out
}

// running are the jobs running on the node, each once: the GPU holders
// with the GPUs they hold, then the jobs the node reports running
// without a GPU (of any user).
func running(n NodeStatus) []RunningJob {
	out := []RunningJob{}
	at := map[string]int{}
	for _, g := range n.GPUs {
		// A rank that holds GPUs for its peers does not run yet.
		if g.Holder == nil || g.State == GPUReserved {
			continue
		}
		i, ok := at[g.Holder.JobUID]
		if !ok {
			i = len(out)
			at[g.Holder.JobUID] = i
			out = append(out, RunningJob{JobID: g.Holder.JobID, JobUID: g.Holder.JobUID, Name: g.Holder.Name, User: g.Holder.User, GPUs: []int{}, Gang: g.Holder.Gang})
		}
		out[i].GPUs = append(out[i].GPUs, g.Index)
	}
	for _, j := range n.Jobs {
		if _, ok := at[j.JobUID]; ok || j.NumGPUs > 0 {
			continue
		}
		at[j.JobUID] = len(out)
		out = append(out, RunningJob{JobID: j.JobID, JobUID: j.JobUID, Name: j.Name, User: j.User, GPUs: []int{}, Gang: j.Gang})
	}
	return out
}

// NodeCheck is one node's readiness for sshq (`sshq nodes`).
type NodeCheck struct {
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
	// SFTP: a workdir sync can reach the node (its SFTP session opens and
	// answers); a node where it cannot is not ready.
	SFTP bool `json:"sftp"`
	// LeaseDirProvisioned: the node's admin made its lease directory
	// (README: the admin step); without it each account's lease records sit
	// beside it, as safely.
	LeaseDirProvisioned bool `json:"lease_dir_provisioned"`
	// MemLimit is how the node holds jobs to --mem: "cgroup" (a systemd
	// user scope with MemoryMax) or "watchdog" (the job's wrapper sums
	// its processes' memory every second); "" when the node did not say.
	// ReserveMemMiB, DiskFloorMiB and LogCapMiB are the node's
	// SSHQ_RESERVE_MEM, SSHQ_DISK_FLOOR and SSHQ_LOG_CAP (0: off).
	MemLimit      string `json:"mem_limit"`
	ReserveMemMiB int64  `json:"reserve_mem_mib"`
	DiskFloorMiB  int64  `json:"disk_floor_mib"`
	LogCapMiB     int64  `json:"log_cap_mib"`
}

// NodesView is every selected node's readiness, in selection order.
type NodesView struct {
	Nodes []NodeCheck `json:"nodes"`
	// Slurm are the Slurm login nodes' checks (--slurm).
	Slurm []SlurmCheck `json:"slurm"`
}

// Err is an UnreachableError counting the nodes that did not answer.
func (v *NodesView) Err() error {
	down := 0
	for _, r := range v.Nodes {
		if !r.Reachable {
			down++
		}
	}
	for _, r := range v.Slurm {
		if !r.Reachable {
			down++
		}
	}
	if down > 0 {
		return &UnreachableError{fmt.Errorf("%d of %d nodes unreachable", down, len(v.Nodes)+len(v.Slurm))}
	}
	return nil
}

// Nodes connects to every selected node in parallel and checks what sshq
// needs there.
func (c *Controller) Nodes(ctx context.Context) (*NodesView, error) {
	names, err := c.Names()
	if err != nil {
		return nil, err
	}
	hosts, err := c.SlurmHosts()
	if err != nil {
		return nil, err
	}
	var slurmChecks []SlurmCheck
	slurmDone := make(chan struct{})
	go func() {
		defer close(slurmDone)
		slurmChecks = c.slurmChecks(ctx, hosts)
	}()
	results := make([]NodeCheck, len(names))
	idx := map[string]int{}
	for i, n := range names {
		idx[n] = i
	}
	c.cluster(names).Each(ctx, func(ctx context.Context, name string) {
		r := &results[idx[name]]
		r.Name, r.Problems = name, []string{}
		n, err := c.resolver.Resolve(ctx, name)
		if err != nil {
			r.Error = err.Error()
			return
		}
		r.Host, r.Port = n.HostName, n.Port
		ctx, cancel := context.WithTimeout(ctx, n.Timeout()+10*time.Second)
		defer cancel()
		start := time.Now()
		sftpErr := c.checkSFTP(ctx, name)
		chk, err := c.cluster(nil).Node(name).Check(ctx)
		if err != nil {
			r.Error = err.Error()
			return
		}
		r.Reachable = true
		r.LatencyMS = time.Since(start).Milliseconds()
		r.GPUs = max(chk.GPUs, 0)
		r.Tmux, r.Flock, r.NvidiaSMI = chk.Has("tmux"), chk.Has("flock"), chk.Has("nvidia-smi")
		r.LeaseDirProvisioned = chk.Provisioned()
		r.Problems = chk.Problems()
		r.Ready = chk.Ready()
		if err := sftpErr(); err != nil {
			r.Problems = append(r.Problems, sftpProblem(name, err))
			r.Ready = false
		} else {
			r.SFTP = true
		}
		r.MemLimit, r.ReserveMemMiB, r.DiskFloorMiB, r.LogCapMiB = chk.MemLimit, chk.ReserveMemMiB, chk.DiskFloorMiB, chk.LogCapMiB
	})
	<-slurmDone
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("node check interrupted (%w)", err)
	}
	return &NodesView{Nodes: results, Slurm: slurmChecks}, nil
}

// checkSFTP opens SFTP on the node as a workdir sync does, and asks it one
// question, while the caller checks the rest: a node whose shell breaks
// SFTP answers every command and would look ready, yet every launch with
// a workdir would fail there. The returned func waits for the answer.
func (c *Controller) checkSFTP(ctx context.Context, name string) func() error {
	res := make(chan error, 1)
	go func() {
		res <- func() error {
			cl, err := c.pool.Get(ctx, name)
			if err != nil {
				return err
			}
			sc, release, err := cl.SFTP(ctx)
			if err != nil {
				return err
			}
			defer release()
			// SFTP calls take no context: closing the session ends them.
			stop := context.AfterFunc(ctx, release)
			defer stop()
			_, err = sc.Getwd()
			return err
		}()
	}()
	return func() error { return <-res }
}

// sftpProblem is checkSFTP's error as a problem of the node called name.
func sftpProblem(name string, err error) string {
	return "workdir sync (SFTP) fails: " + strings.TrimPrefix(err.Error(), name+": ")
}
