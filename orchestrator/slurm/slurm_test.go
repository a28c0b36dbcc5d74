package slurm

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sshq/sshq/inventory"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/slurm/slurmtest"
	"github.com/sshq/sshq/sshpool"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// One Slurm (two compute nodes, two A100s each) and one login node for the
// package: starting them costs a few seconds, and every test's jobs fit
// side by side.
var cluster = &slurmtest.Shared{Options: slurmtest.Options{Nodes: 2}}

func TestMain(m *testing.M) {
	code := m.Run()
	cluster.Close()
	os.Exit(code)
}

// recorder is the real SSH connection to the login node, remembering every
// command line it carried.
type recorder struct {
	c    *sshpool.Client
	mu   sync.Mutex
	cmds []string
}

func (r *recorder) Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	r.mu.Lock()
	r.cmds = append(r.cmds, cmd)
	r.mu.Unlock()
	return r.c.Stream(ctx, cmd, stdin, stdout, stderr)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.cmds)
}

func (r *recorder) commands() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.cmds, "\n")
}

var seq atomic.Int64

// uid names a job uniquely in the process, so -count=N reruns against the
// shared cluster never meet a job directory of an earlier run.
func uid(name string) string { return fmt.Sprintf("%s-%d", name, seq.Add(1)) }

type env struct {
	sl    *slurmtest.Cluster
	login *sshtest.Node
	c     *Client
	rec   *recorder
	ctx   context.Context
}

// setup dials the shared login node through a fresh pool, as one CLI
// invocation does.
func setup(t *testing.T) *env {
	t.Helper()
	sl, lc := cluster.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	cfg, err := inventory.Load(lc.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	p := sshpool.New(inventory.NewResolver(cfg))
	t.Cleanup(func() { p.Close() })
	sc, err := p.Get(ctx, "login")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{c: sc}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(sl.LogTail(20))
		}
	})
	return &env{sl: sl, login: lc.Nodes[0], c: New("login", rec), rec: rec, ctx: ctx}
}

// wait follows the job's log to its end, as `sshq logs -f` and `sshq
// wait` do, and returns the output and the job's exit status.
func (e *env) wait(t *testing.T, jobDir, id string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	code, err := e.c.Logs(e.ctx, jobDir, id, -1, true, &out)
	if err != nil {
		rec, _ := e.sl.Output(context.Background(), "scontrol", "show", "job", "-d", id)
		t.Fatalf("logs -f of job %s: %v\nSlurm's record of it:\n%s", id, err, rec)
	}
	return out.String(), code
}

func (e *env) status(t *testing.T, id string) JobStatus {
	t.Helper()
	js, err := e.c.Jobs(e.ctx, []string{id})
	if err != nil {
		t.Fatal(err)
	}
	return js[id]
}

// A task asking A100:1 runs in its workdir snapshot with the GPU Slurm gave
// it, its envs and its secret; the secret never crosses a command line and
// its file is gone once the job ran.
func TestA100JobRunsWithSlurmGPU(t *testing.T) {
	t.Parallel()
	e := setup(t)
	wd := filepath.Join(e.login.Home, "wd-a100")
	if err := os.MkdirAll(wd, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(wd, "data.txt"), []byte("from the workdir\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const secret = "s3cr3t-'$(reboot)'"
	spec := JobSpec{UID: uid("a100"), ID: 7, Name: `train "a100" $(id)`, NumGPUs: 1, GPUType: "A100",
		CPUs: 1, MemoryMB: 200, Time: 10 * time.Minute, Workdir: "wd-a100",
		Env:     []EnvVar{{"GREETING", "hello world"}},
		Secrets: []EnvVar{{"TOKEN", secret}},
		Setup:   "echo setup-ran > setup.out",
		Run: `echo "cvd=$CUDA_VISIBLE_DEVICES slurm=$SLURM_JOB_GPUS"
cat data.txt setup.out
echo "greeting=$GREETING"
[ "$TOKEN" = "$EXPECT" ] && echo secret-ok
echo "name=$SSHQ_JOB_NAME"
echo "rank=$SKYPILOT_NODE_RANK nodes=$SKYPILOT_NUM_NODES gpus=$SKYPILOT_NUM_GPUS_PER_NODE id=$SSHQ_JOB_ID"
echo "ips=$SKYPILOT_NODE_IPS master=$MASTER_ADDR:$MASTER_PORT"
ls "$SSHQ_JOB_DIR_CHECK"/secrets.sh 2>/dev/null || echo secrets-gone
pwd`,
	}
	jobDir := filepath.Join(e.login.Home, DefaultJobDir(spec.UID))
	spec.Env = append(spec.Env, EnvVar{"SSHQ_JOB_DIR_CHECK", jobDir})
	// The comparison value travels as a secret too, so nothing on a
	// command line can hold the secret.
	spec.Secrets = append(spec.Secrets, EnvVar{"EXPECT", secret})
	id, err := e.c.Submit(e.ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	out, code := e.wait(t, DefaultJobDir(spec.UID), id)
	if code != 0 {
		t.Fatalf("job exited %d, want 0; output:\n%s", code, out)
	}
	// Which of the two GPUs depends on the other tests' jobs; without
	// device cgroups Slurm exports its own index of the GPU.
	if !strings.Contains(out, "cvd=0 slurm=0\n") && !strings.Contains(out, "cvd=1 slurm=1\n") {
		t.Errorf("the job did not see the one GPU Slurm gave it in CUDA_VISIBLE_DEVICES:\n%s", out)
	}
	for _, want := range []string{
		"from the workdir\nsetup-ran\n", "greeting=hello world\n", "secret-ok\n", "name=train \"a100\" $(id)\n",
		"rank=0 nodes=1 gpus=1 id=7\n", "ips=127.0.0.1 master=127.0.0.1:", "secrets-gone\n",
		filepath.Join(jobDir, "workdir") + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("job output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(e.rec.commands(), "s3cr3t") {
		t.Error("the secret appeared on a command line sent to the login node")
	}
	if js := e.status(t, id); js.State != job.Succeeded || js.ExitCode == nil || *js.ExitCode != 0 {
		t.Errorf("Jobs: %+v, want SUCCEEDED exit 0", js)
	}
	sc, err := e.sl.Output(e.ctx, "scontrol", "show", "job", "-o", id)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`JobName=train "a100" $(id) `, "TresPerNode=gres:gpu:a100:1", "NumCPUs=1 ", "MinMemoryNode=200M", "TimeLimit=00:10:00"} {
		if !strings.Contains(sc, want) {
			t.Errorf("Slurm's record of the job lacks %q:\n%s", want, sc)
		}
	}
}

// `exit 3` comes back as the job's exit status, through logs -f and Jobs.
func TestExitCodeComesBack(t *testing.T) {
	t.Parallel()
	e := setup(t)
	spec := JobSpec{UID: uid("exit3"), ID: 8, Name: "fails", Run: "echo about to fail; exit 3"}
	id, err := e.c.Submit(e.ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	out, code := e.wait(t, DefaultJobDir(spec.UID), id)
	if code != 3 {
		t.Errorf("logs -f returned %d, want the job's 3; output:\n%s", code, out)
	}
	if !strings.Contains(out, "about to fail\n") {
		t.Errorf("output lacks the job's line:\n%s", out)
	}
	js := e.status(t, id)
	if js.State != job.Failed || js.ExitCode == nil || *js.ExitCode != 3 {
		t.Errorf("Jobs: %+v, want FAILED exit 3", js)
	}
	// Without follow, logs prints the output as it is now.
	var b bytes.Buffer
	if _, err := e.c.Logs(e.ctx, DefaultJobDir(spec.UID), id, 1, false, &b); err != nil {
		t.Fatal(err)
	}
	if strings.Count(b.String(), "\n") != 1 || !strings.HasSuffix(out, b.String()) {
		t.Errorf("logs with tail 1 printed %q, want one line", b.String())
	}
}

// Cancel takes a running job out of squeue and it reads CANCELLED.
func TestCancelRunningJob(t *testing.T) {
	t.Parallel()
	e := setup(t)
	spec := JobSpec{UID: uid("cancel"), ID: 9, Name: "long", NumGPUs: 1, Run: "echo started; sleep 300"}
	id, err := e.c.Submit(e.ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	for {
		js := e.status(t, id)
		if js.State == job.Running {
			break
		}
		if js.State.Terminal() || e.ctx.Err() != nil {
			t.Fatalf("job never ran: %+v", js)
		}
		time.Sleep(100 * time.Millisecond)
	}
	got, err := e.c.Cancel(e.ctx, []string{id}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got[id].State != job.Cancelled {
		t.Errorf("after Cancel: %+v, want CANCELLED", got[id])
	}
	q, err := e.sl.Output(e.ctx, "squeue", "-h", "-o", "%i")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Fields(q) {
		if l == id {
			t.Errorf("cancelled job %s is still in squeue:\n%s", id, q)
		}
	}
	if js := e.status(t, id); js.State != job.Cancelled {
		t.Errorf("Jobs after cancel: %+v, want CANCELLED", js)
	}
}

// Status shows the partition, the node's a100 gres and the queue, in one
// session.
func TestStatusShowsGres(t *testing.T) {
	t.Parallel()
	e := setup(t)
	spec := JobSpec{UID: uid("status"), ID: 10, Name: "holder", NumGPUs: 1, GPUType: "a100", Run: "sleep 300"}
	id, err := e.c.Submit(e.ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.c.Cancel(context.Background(), []string{id}, 10*time.Second) })
	var st *Status
	for {
		st, err = e.c.Status(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if q := findJob(st.Queue, id); q != nil && q.State == job.Running {
			break
		}
		if e.ctx.Err() != nil {
			t.Fatalf("job %s never ran: %+v", id, st.Queue)
		}
		time.Sleep(100 * time.Millisecond)
	}
	before := e.rec.count()
	if st, err = e.c.Status(e.ctx); err != nil {
		t.Fatal(err)
	}
	if n := e.rec.count() - before; n != 1 {
		t.Errorf("Status took %d sessions, want 1", n)
	}
	if len(st.Partitions) != 1 || st.Partitions[0].Name != "gpu" || !st.Partitions[0].Default || !st.Partitions[0].Up {
		t.Errorf("partitions: %+v, want gpu (default, up)", st.Partitions)
	}
	if len(st.Nodes) != len(e.sl.Nodes) {
		t.Fatalf("nodes: %+v, want %v", st.Nodes, e.sl.Nodes)
	}
	q := findJob(st.Queue, id)
	for i, n := range st.Nodes {
		if n.Name != e.sl.Nodes[i] || len(n.GPUs) != 1 || n.GPUs[0].Type != "a100" || n.GPUs[0].Total != 2 {
			t.Errorf("node: %+v, want %s with a100 x2", n, e.sl.Nodes[i])
		}
		if n.Name == q.NodeList && n.GPUs[0].Used < 1 {
			t.Errorf("node %s shows %d GPUs in use while job %s holds one there", n.Name, n.GPUs[0].Used, id)
		}
	}
	if q.Name != "holder" || q.Partition != "gpu" || !strings.Contains(q.GRES, "a100") {
		t.Errorf("queue entry: %+v", *q)
	}
	if got := st.GPUTypes(); len(got) != 1 || got[0] != "a100" {
		t.Errorf("GPUTypes: %v", got)
	}
}

func findJob(q []QueueEntry, id string) *QueueEntry {
	for i := range q {
		if q[i].ID == id {
			return &q[i]
		}
	}
	return nil
}

// A GPU type the cluster lacks fails before anything reaches sbatch, with
// the types it has.
func TestUnknownGPUTypeListsTypes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	h100 := uid("h100")
	_, err := e.c.Submit(e.ctx, JobSpec{UID: h100, NumGPUs: 1, GPUType: "H100", Run: "true"})
	if err == nil || !strings.Contains(err.Error(), "H100") || !strings.Contains(err.Error(), "a100") {
		t.Fatalf("Submit H100: %v, want an error naming H100 and the cluster's a100", err)
	}
	if _, err := os.Stat(filepath.Join(e.login.Home, DefaultJobDir(h100))); !os.IsNotExist(err) {
		t.Errorf("a refused job left its directory: %v", err)
	}
	_, err = e.c.Submit(e.ctx, JobSpec{UID: uid("3nodes"), NumNodes: 3, Run: "true"})
	if err == nil || !strings.Contains(err.Error(), "has only 2 node(s)") {
		t.Errorf("Submit on 3 nodes of a 2-node partition: %v, want a clear refusal", err)
	}
}

// sbatch's own refusal comes back in its words, and the job's directory
// (with its secrets) does not outlive it.
func TestSbatchRefusalCleansUp(t *testing.T) {
	t.Parallel()
	e := setup(t)
	spec := JobSpec{UID: uid("toobig"), Run: "true", MemoryMB: 1 << 20, Secrets: []EnvVar{{"T", "x"}}}
	_, err := e.c.Submit(e.ctx, spec)
	if err == nil || !strings.Contains(err.Error(), "sbatch") && !strings.Contains(err.Error(), "not available") {
		t.Fatalf("Submit of 1 TiB: %v, want sbatch's refusal", err)
	}
	if _, err := os.Stat(filepath.Join(e.login.Home, DefaultJobDir(spec.UID))); !os.IsNotExist(err) {
		t.Errorf("refused job left its directory: %v", err)
	}
}

// A two-node job runs setup and run once per node, each with its rank, the
// nodes' addresses and the master's; one rank's failure is the job's.
func TestTwoNodesRunOneTaskEach(t *testing.T) {
	t.Parallel()
	e := setup(t)
	spec := JobSpec{UID: uid("2n"), ID: 11, Name: "ddp", NumNodes: 2, NumGPUs: 1, GPUType: "A100",
		Setup: `echo "setup rank $SKYPILOT_NODE_RANK"`,
		Run: `echo "rank=$SKYPILOT_NODE_RANK/$SKYPILOT_NUM_NODES node=$SLURMD_NODENAME gpus=$CUDA_VISIBLE_DEVICES master=$MASTER_ADDR ips=$(echo $SKYPILOT_NODE_IPS)"
[ "$SSHQ_NODE_RANK" = "$SKYPILOT_NODE_RANK" ] || echo "rank mismatch"`}
	id, err := e.c.Submit(e.ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	out, code := e.wait(t, DefaultJobDir(spec.UID), id)
	if code != 0 {
		t.Fatalf("two-node job exited %d:\n%s", code, out)
	}
	var ranks []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "rank=") {
			ranks = append(ranks, l)
		}
	}
	sort.Strings(ranks)
	// Each node has two GPUs; which one a rank gets depends on the other
	// tests' jobs.
	gpu := regexp.MustCompile(`gpus=[01] `)
	for i := range ranks {
		ranks[i] = gpu.ReplaceAllString(ranks[i], "gpus=N ")
	}
	want := []string{
		"rank=0/2 node=" + e.sl.Nodes[0] + " gpus=N master=127.0.0.1 ips=127.0.0.1 127.0.0.1",
		"rank=1/2 node=" + e.sl.Nodes[1] + " gpus=N master=127.0.0.1 ips=127.0.0.1 127.0.0.1",
	}
	if !reflect.DeepEqual(ranks, want) {
		t.Errorf("ranks printed:\n%s\nwant:\n%s\nwhole output:\n%s", strings.Join(ranks, "\n"), strings.Join(want, "\n"), out)
	}
	for _, w := range []string{"setup rank 0\n", "setup rank 1\n"} {
		if !strings.Contains(out, w) || strings.Contains(out, "rank mismatch") {
			t.Errorf("output lacks %q or has a rank mismatch:\n%s", w, out)
		}
	}

	spec = JobSpec{UID: uid("2n-fail"), ID: 12, NumNodes: 2, Run: `[ "$SKYPILOT_NODE_RANK" = 1 ] && exit 5; sleep 60`}
	if id, err = e.c.Submit(e.ctx, spec); err != nil {
		t.Fatal(err)
	}
	if out, code = e.wait(t, DefaultJobDir(spec.UID), id); code != 5 {
		t.Errorf("rank 1 exited 5 but the job exited %d:\n%s", code, out)
	}
	if js := e.status(t, id); js.State != job.Failed {
		t.Errorf("Jobs: %+v, want FAILED", js)
	}
}

// What a task leaves running in the background ends with it, as on plain
// nodes: it neither keeps the job alive nor outlives it.
func TestBackgroundProcessEndsWithJob(t *testing.T) {
	t.Parallel()
	e := setup(t)
	spec := JobSpec{UID: uid("bg"), Run: `sleep 300 & echo $! > bg.pid; echo left one behind`}
	id, err := e.c.Submit(e.ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if out, code := e.wait(t, DefaultJobDir(spec.UID), id); code != 0 {
		t.Fatalf("job exited %d:\n%s", code, out)
	}
	data, err := os.ReadFile(filepath.Join(e.login.Home, "bg.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimSpace(string(data))
	for {
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		// A zombie waiting for init's reaping has ended too.
		if err != nil || strings.Contains(string(stat), ") Z ") {
			break
		}
		if e.ctx.Err() != nil {
			t.Fatalf("the background sleep (pid %s) outlived its job", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
