package orchestrator

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/store"
)

// StatusView is the cluster at a glance (`sshq status`).
type StatusView struct {
	Nodes []NodeView `json:"nodes"`
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
}

// Down lists the nodes that did not answer.
func (v *StatusView) Down() []string {
	var down []string
	for _, n := range v.Nodes {
		if !n.Reachable {
			down = append(down, n.Name)
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
	var cpuJobs map[string][]RunningJob
	var wg sync.WaitGroup
	wg.Go(func() { cpuJobs = c.runningWithoutGPUs(ctx, names) })
	nodes := c.cluster(names).Status(ctx)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("status interrupted (%w)", err)
	}
	v := &StatusView{Nodes: make([]NodeView, len(nodes))}
	for i, n := range nodes {
		running := holders(n)
		if n.Reachable {
			running = append(running, cpuJobs[n.Name]...)
		}
		v.Nodes[i] = NodeView{NodeStatus: n, Running: running}
	}
	return v, nil
}

// runningWithoutGPUs are this controller's jobs that run on the nodes
// without holding a GPU, by node. The store alone could be hours out of
// date, so the nodes are asked about these jobs (one command per node that
// has one; usually none), in parallel with the status probe.
func (c *Controller) runningWithoutGPUs(ctx context.Context, names []string) map[string][]RunningJob {
	if !c.hasStore() {
		return nil
	}
	st, err := c.store()
	if err != nil {
		return nil
	}
	snap, err := st.Load()
	if err != nil {
		return nil
	}
	selected := map[string]bool{}
	for _, n := range names {
		selected[n] = true
	}
	ids := map[int]bool{}
	for _, j := range snap.Jobs {
		if !j.State.Terminal() && j.NumGPUs == 0 && selected[j.Node] {
			ids[j.ID] = true
		}
	}
	if len(ids) == 0 {
		return nil
	}
	jobs := snap.Jobs
	if views, _, err := c.cluster(nil).Reconcile(ctx, st, func(j *store.Job) bool { return ids[j.ID] }); err == nil {
		jobs = jobs[:0:0]
		for _, v := range views {
			jobs = append(jobs, v.Job)
		}
	}
	out := map[string][]RunningJob{}
	for _, j := range jobs {
		if ids[j.ID] && (j.State == job.Running || j.State == job.SettingUp) {
			out[j.Node] = append(out[j.Node], RunningJob{JobID: j.ID, JobUID: j.UID, Name: j.Name, User: j.User, GPUs: []int{}})
		}
	}
	return out
}

// holders are the jobs holding the node's GPUs, each once.
func holders(n NodeStatus) []RunningJob {
	out := []RunningJob{}
	at := map[string]int{}
	for _, g := range n.GPUs {
		if g.Holder == nil {
			continue
		}
		i, ok := at[g.Holder.JobUID]
		if !ok {
			i = len(out)
			at[g.Holder.JobUID] = i
			out = append(out, RunningJob{JobID: g.Holder.JobID, JobUID: g.Holder.JobUID, Name: g.Holder.Name, User: g.Holder.User, GPUs: []int{}})
		}
		out[i].GPUs = append(out[i].GPUs, g.Index)
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
}

// NodesView is every selected node's readiness, in selection order.
type NodesView struct {
	Nodes []NodeCheck `json:"nodes"`
}

// Err is an UnreachableError counting the nodes that did not answer.
func (v *NodesView) Err() error {
	down := 0
	for _, r := range v.Nodes {
		if !r.Reachable {
			down++
		}
	}
	if down > 0 {
		return &UnreachableError{fmt.Errorf("%d of %d nodes unreachable", down, len(v.Nodes))}
	}
	return nil
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

// Nodes connects to every selected node in parallel and checks what sshq
// needs there.
func (c *Controller) Nodes(ctx context.Context) (*NodesView, error) {
	names, err := c.Names()
	if err != nil {
		return nil, err
	}
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
		res, err := c.pool.Run(ctx, name, nodeCheckScript, nil)
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
		readiness(r, kv)
	})
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("node check interrupted (%w)", err)
	}
	return &NodesView{Nodes: results}, nil
}

// readiness is the rule of what a node needs to run sshq jobs, applied to
// what nodeCheckScript reported.
func readiness(r *NodeCheck, kv map[string]string) {
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
}
