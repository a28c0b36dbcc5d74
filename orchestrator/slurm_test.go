package orchestrator

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/slurm/slurmtest"
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/orchestrator/task"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// One real Slurm (two compute nodes, two fake A100s each) for the
// package, and one ssh config holding its login node "login" and a plain
// node "box" with one simulated A100: the same task files go to either.
// The Slurm tests do not run in parallel: placement reads how many of the
// cluster's GPUs are idle.
var slurmCluster = &slurmtest.Shared{
	Options: slurmtest.Options{Nodes: 2},
	Login:   sshtest.Options{Names: []string{"login", "box"}, Env: map[string]string{"SSHQ_POLL_INTERVAL": "0.2"}},
}

func TestMain(m *testing.M) {
	code := m.Run()
	slurmCluster.Close()
	os.Exit(code)
}

var boxGPU sync.Once

// slurmController opens a controller whose nodes are nodes ("" for none)
// and whose Slurm host is "login".
func slurmController(t *testing.T, nodes string) (*Controller, *slurmtest.Cluster, *sshtest.Cluster) {
	t.Helper()
	sl, hosts := slurmCluster.Get(t)
	boxGPU.Do(func() {
		if err := gpusim.Install(hosts.Node("box").Dir, gpusim.A100x2("slurm-box")[:1]); err != nil {
			t.Fatal(err)
		}
	})
	ctrl, err := OpenController(ControllerOptions{Home: t.TempDir(), SSHConfig: hosts.ConfigPath, Nodes: nodes, Slurm: "login"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctrl.Close()
		if t.Failed() {
			t.Log(sl.LogTail(20))
		}
	})
	return ctrl, sl, hosts
}

// taskFile writes a task file and a workdir beside it, and loads it.
func taskFile(t *testing.T, yaml string) *task.Task {
	t.Helper()
	dir := t.TempDir()
	wd := filepath.Join(dir, "code")
	if err := os.MkdirAll(wd, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(wd, "data.txt"), []byte("from the workdir\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "task.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	tk, _, err := task.LoadIn(dir, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Validate(); err != nil {
		t.Fatal(err)
	}
	return tk
}

// follow reads the job's whole output to its end, as `sshq logs -f` does.
func follow(t *testing.T, ctrl *Controller, id int) (string, *LogsView) {
	t.Helper()
	var out, errb bytes.Buffer
	v, err := ctrl.Logs(ctxT(t), LogsRequest{Ref: itoa(id), Tail: -1, Follow: true, Out: &out, ErrOut: &errb})
	if err != nil {
		t.Fatalf("logs -f %d: %v\n%s%s", id, err, out.String(), errb.String())
	}
	return out.String(), v
}

func itoa(n int) string { return strconv.Itoa(n) }

const gpuTask = `name: gpu-task
workdir: code
resources:
  accelerators: A100:1
envs:
  GREETING: hello
run: |
  echo "cvd=$CUDA_VISIBLE_DEVICES"
  echo "pwd=$PWD"
  cat data.txt
  echo "greeting=$GREETING token=$TOKEN"
  exit 3
`

// A task asking A100:1 runs under Slurm with the GPU Slurm gave it, in
// its synced workdir, with its envs and secrets; its output is in
// `sshq logs`, and `sshq wait` returns its exit code.
func TestSlurmLaunchLogsWait(t *testing.T) {
	ctrl, _, _ := slurmController(t, "")
	tk := taskFile(t, gpuTask)
	if err := tk.Apply(task.Overrides{Secrets: task.Secrets{"TOKEN": "s3cret"}}); err != nil {
		t.Fatal(err)
	}
	v, err := ctrl.Launch(ctxT(t), LaunchRequest{Task: tk})
	if err != nil {
		t.Fatal(err)
	}
	j := v.Job
	if j.Node != "login" || j.Backend != store.BackendSlurm || j.SlurmID == "" || v.Placement.Backend != store.BackendSlurm {
		t.Fatalf("job %+v placed %+v, want a Slurm job through login", j, v.Placement)
	}
	out, lv := follow(t, ctrl, j.ID)
	if !regexp.MustCompile(`(?m)^cvd=[0-3]$`).MatchString(out) {
		t.Errorf("the job saw no CUDA_VISIBLE_DEVICES from Slurm:\n%s", out)
	}
	if !strings.Contains(out, "pwd=") || !strings.Contains(out, "/.sshq/slurm/"+j.UID+"/workdir\n") {
		t.Errorf("the job did not run in its workdir snapshot:\n%s", out)
	}
	if !strings.Contains(out, "from the workdir") || !strings.Contains(out, "greeting=hello token=s3cret") {
		t.Errorf("workdir, envs or secrets missing:\n%s", out)
	}
	if lv.ExitCode != 3 {
		t.Errorf("logs -f exit %d, want the job's 3", lv.ExitCode)
	}
	w, err := ctrl.Wait(ctxT(t), WaitRequest{Refs: []string{itoa(j.ID)}, Interval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if w.ExitCode != 3 || w.Jobs[0].State != job.Failed || w.Jobs[0].ExitCode == nil || *w.Jobs[0].ExitCode != 3 {
		t.Errorf("wait: exit %d, job %+v; want 3 and FAILED", w.ExitCode, w.Jobs[0].Job)
	}
	// The secret went to Slurm through a file that is gone, never into
	// the store.
	data, _ := os.ReadFile(filepath.Join(ctrl.Home(), store.StateFile))
	if bytes.Contains(data, []byte("s3cret")) {
		t.Error("the secret reached state.json")
	}
	// Download reads the job's workdir on the login node's shared home.
	local := t.TempDir()
	if _, err := ctrl.Download(ctxT(t), DownloadRequest{Ref: itoa(j.ID), Remote: "data.txt", Local: local}); err != nil {
		t.Fatalf("download: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(local, "data.txt")); string(b) != "from the workdir\n" {
		t.Errorf("downloaded %q", b)
	}
}

// `sshq cancel` of a running Slurm job takes it off squeue and marks it
// CANCELLED; queue shows it so.
func TestSlurmCancel(t *testing.T) {
	ctrl, sl, _ := slurmController(t, "")
	tk := taskFile(t, "resources:\n  accelerators: A100:1\nrun: echo started; sleep 300\n")
	v, err := ctrl.Launch(ctxT(t), LaunchRequest{Task: tk})
	if err != nil {
		t.Fatal(err)
	}
	id := v.Job.ID
	untilState(t, ctrl, id, job.Running)
	cv, err := ctrl.Cancel(ctxT(t), CancelRequest{Refs: []string{itoa(id)}})
	if err != nil || cv.Err != nil {
		t.Fatalf("cancel: %v %v", err, cv.Err)
	}
	if r := cv.Jobs[0]; r.Outcome != CancelCancelled || r.State != job.Cancelled {
		t.Errorf("cancel said %+v, want cancelled and CANCELLED", r)
	}
	out, err := sl.Output(ctxT(t), "squeue", "-h", "-j", v.Job.SlurmID, "-o", "%T")
	if err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("squeue still lists the job: %q %v", out, err)
	}
	q, err := ctrl.Queue(ctxT(t), true)
	if err != nil {
		t.Fatal(err)
	}
	if s := q.Jobs[0].State; s != job.Cancelled {
		t.Errorf("queue shows %s, want CANCELLED", s)
	}
}

// status shows each compute node's GPUs in use and total from the gres,
// the partitions, and the queue with this controller's job by its id.
func TestSlurmStatus(t *testing.T) {
	ctrl, sl, _ := slurmController(t, "")
	tk := taskFile(t, "resources:\n  accelerators: A100:1\nrun: sleep 300\n")
	v, err := ctrl.Launch(ctxT(t), LaunchRequest{Task: tk})
	if err != nil {
		t.Fatal(err)
	}
	defer ctrl.Cancel(context.Background(), CancelRequest{Refs: []string{itoa(v.Job.ID)}})
	untilState(t, ctrl, v.Job.ID, job.Running)
	st, err := ctrl.Status(ctxT(t))
	if err != nil || st.Err() != nil {
		t.Fatalf("status: %v %v", err, st.Err())
	}
	if len(st.Slurm) != 1 {
		t.Fatalf("status has %d Slurm clusters, want 1", len(st.Slurm))
	}
	c := st.Slurm[0]
	if c.Login != "login" || !c.Reachable || len(c.Partitions) != 1 || c.Partitions[0].Name != sl.Partition || !c.Partitions[0].Default {
		t.Errorf("cluster %+v", c)
	}
	used, total := c.GPUsInUse()
	if total != 4 || used < 1 || len(c.Nodes) != 2 || c.Nodes[0].GPUs[0].Type != "a100" || c.Nodes[0].GPUs[0].Total != 2 {
		t.Errorf("GPUs %d in use of %d on %+v; want 4 a100s, ours among those in use", used, total, c.Nodes)
	}
	found := false
	for _, q := range c.Queue {
		if q.SlurmID == v.Job.SlurmID {
			found = q.JobID != nil && *q.JobID == v.Job.ID && q.State == job.Running
		}
	}
	if !found {
		t.Errorf("our job %s (#%d) is not RUNNING in the status queue: %+v", v.Job.SlurmID, v.Job.ID, c.Queue)
	}

	nv, err := ctrl.Nodes(ctxT(t))
	if err != nil || nv.Err() != nil {
		t.Fatalf("nodes: %v %v", err, nv.Err())
	}
	if len(nv.Slurm) != 1 || !nv.Slurm[0].Ready || nv.Slurm[0].GPUs != 4 || nv.Slurm[0].GRESString() != "gpu:a100 ×4" {
		t.Errorf("nodes: %+v", nv.Slurm)
	}
}

// The same task file runs on a plain node and on Slurm: its workdir,
// envs and GPU request mean the same on both.
func TestSameTaskOnNodeAndSlurm(t *testing.T) {
	ctrl, _, _ := slurmController(t, "box")
	for _, target := range []string{"box", "login"} {
		tk := taskFile(t, gpuTask)
		if err := tk.Apply(task.Overrides{Secrets: task.Secrets{"TOKEN": "t"}}); err != nil {
			t.Fatal(err)
		}
		v, err := ctrl.Launch(ctxT(t), LaunchRequest{Task: tk, Node: target})
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		out, lv := follow(t, ctrl, v.Job.ID)
		if !strings.Contains(out, "from the workdir") || !strings.Contains(out, "greeting=hello token=t") ||
			!regexp.MustCompile(`(?m)^cvd=\d$`).MatchString(out) || lv.ExitCode != 3 || lv.Job.State != job.Failed {
			t.Errorf("on %s: exit %d, state %s, output:\n%s", target, lv.ExitCode, lv.Job.State, out)
		}
		if want := target == "login"; (v.Job.Backend == store.BackendSlurm) != want {
			t.Errorf("on %s: backend %q", target, v.Job.Backend)
		}
	}
}

// Unpinned, a job goes to a plain node where it starts now; when the
// nodes are busy, to a Slurm cluster with idle GPUs. num_nodes > 1 goes to
// Slurm, with one rank per node; without Slurm it is refused.
func TestSlurmPlacementRule(t *testing.T) {
	ctrl, _, _ := slurmController(t, "box")
	hold := taskFile(t, "resources:\n  accelerators: A100:1\nrun: sleep 300\n")
	v, err := ctrl.Launch(ctxT(t), LaunchRequest{Task: hold})
	if err != nil {
		t.Fatal(err)
	}
	defer ctrl.Cancel(context.Background(), CancelRequest{All: true})
	if v.Job.Node != "box" {
		t.Fatalf("with box's GPU free the job went to %s (%s), want box", v.Job.Node, v.Placement.Reason)
	}
	untilState(t, ctrl, v.Job.ID, job.Running)
	p, err := ctrl.Plan(ctxT(t), hold, "")
	if err != nil || p.Node != "login" || p.Backend != store.BackendSlurm || !p.FitsNow {
		t.Errorf("with box busy: plan %+v, %v; want Slurm through login", p, err)
	}

	ranks := taskFile(t, "num_nodes: 2\nresources:\n  accelerators: A100:1\nrun: echo rank=$SKYPILOT_NODE_RANK of $SKYPILOT_NUM_NODES\n")
	mv, err := ctrl.Launch(ctxT(t), LaunchRequest{Task: ranks})
	if err != nil {
		t.Fatal(err)
	}
	if mv.Job.Node != "login" {
		t.Fatalf("num_nodes 2 went to %s", mv.Job.Node)
	}
	out, lv := follow(t, ctrl, mv.Job.ID)
	if !strings.Contains(out, "rank=0 of 2") || !strings.Contains(out, "rank=1 of 2") || lv.ExitCode != 0 {
		t.Errorf("two ranks, exit %d:\n%s", lv.ExitCode, out)
	}
	three := taskFile(t, "num_nodes: 3\nrun: hostname\n")
	if _, err := ctrl.Plan(ctxT(t), three, ""); !errors.Is(err, ErrNoFit) || !strings.Contains(err.Error(), "needs 3") {
		t.Errorf("num_nodes 3 on 2 Slurm nodes: %v, want ErrNoFit saying so", err)
	}
	if _, err := ctrl.Plan(ctxT(t), ranks, "box"); err == nil || !strings.Contains(err.Error(), "--node pins one node") {
		t.Errorf("num_nodes 2 pinned to a plain node: %v", err)
	}
	if _, err := ctrl.Plan(ctxT(t), taskFile(t, "resources:\n  accelerators: V100:1\nrun: x\n"), "login"); !errors.Is(err, ErrNoFit) || !strings.Contains(err.Error(), "a100") {
		t.Errorf("V100 on an A100 cluster: %v, want ErrNoFit naming the cluster's types", err)
	}
}

// --mem, --time and --cpus reach sbatch, winning over the task's
// resources: Slurm holds the job to them. The job's record shows them as
// queue does for any job.
func TestSlurmLimits(t *testing.T) {
	ctrl, sl, _ := slurmController(t, "")
	tk := taskFile(t, "resources:\n  cpus: 1\n  memory: 0.5\nrun: sleep 300\n")
	mem, d := int64(200), 5*time.Minute
	v, err := ctrl.Launch(ctxT(t), LaunchRequest{Task: tk, Options: LaunchOptions{Limits: LimitFlags{MemMiB: &mem, Time: &d, CPUs: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	defer ctrl.Cancel(context.Background(), CancelRequest{Refs: []string{itoa(v.Job.ID)}})
	j := v.Job
	if j.Backend != store.BackendSlurm || j.MemLimitMiB == nil || *j.MemLimitMiB != 200 || j.TimeLimitS == nil || *j.TimeLimitS != 300 || j.CPUs != 2 {
		t.Errorf("job %+v: want a Slurm job recording mem 200 MiB, time 300 s, 2 cpus", j)
	}
	out, err := sl.Output(ctxT(t), "scontrol", "show", "job", "-o", j.SlurmID)
	if err != nil {
		t.Fatalf("scontrol: %v", err)
	}
	for _, want := range []string{"MinMemoryNode=200M", "TimeLimit=00:05:00", "NumCPUs=2 "} {
		if !strings.Contains(out, want) {
			t.Errorf("Slurm's job lacks %s:\n%s", want, out)
		}
	}
}
