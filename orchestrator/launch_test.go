package orchestrator

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/remote"
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/orchestrator/task"
)

// localNode is a node run in place, without ssh: its own home, tmux
// socket, lease directory and simulated GPUs, whose nvidia-smi logs each
// call. It is the node's Runner, and counts the commands it runs.
type localNode struct {
	dir string
	env []string

	mu      sync.Mutex
	actions []string
}

// smiLog wraps the simulated nvidia-smi: each call is a line in smi-calls.
const smiLog = `#!/bin/bash
d=$(dirname "$0")
echo "$*" >> "$d/../smi-calls"
exec "$d/nvidia-smi.real" "$@"
`

func newLocalNode(t *testing.T, gpus []gpusim.GPU) *localNode {
	t.Helper()
	if os.Getenv("CI") == "" {
		for _, tool := range []string{"tmux", "flock"} {
			if _, err := exec.LookPath(tool); err != nil {
				t.Skipf("%s is not installed", tool)
			}
		}
	}
	// A short path: tmux sockets must fit in sun_path.
	dir, err := os.MkdirTemp("", "sqo")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"home", "tmux"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := gpusim.Install(dir, gpus); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	if err := os.Rename(filepath.Join(bin, "nvidia-smi"), filepath.Join(bin, "nvidia-smi.real")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "nvidia-smi"), []byte(smiLog), 0o755); err != nil {
		t.Fatal(err)
	}
	n := &localNode{dir: dir, env: []string{
		"HOME=" + filepath.Join(dir, "home"),
		"TMUX_TMPDIR=" + filepath.Join(dir, "tmux"),
		"SSHQ_LEASE_DIR=" + filepath.Join(dir, "leases"),
		"SSHQ_SIM_DIR=" + gpusim.SimDir(dir),
		"PATH=" + bin + ":/usr/local/bin:/usr/bin:/bin",
		"SSHQ_POLL_INTERVAL=0.1",
		"SSHQ_NO_SYSTEMD=1",
		"SHELL=/bin/bash",
	}}
	t.Cleanup(func() {
		exec.Command("bash", "-c", `for d in "$1"/home/.sshq/jobs/*; do
			[ -f "$d/wrapper.pid" ] && kill -KILL $(cat "$d/wrapper.pid") 2>/dev/null; done
			TMUX_TMPDIR="$1/tmux" tmux -L sshq kill-server 2>/dev/null`, "cleanup", dir).Run()
		os.RemoveAll(dir)
	})
	return n
}

func (n *localNode) Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	// The action is the word after the script's $0, "sshq".
	if i := strings.LastIndex(cmd, " sshq "); i >= 0 {
		n.mu.Lock()
		n.actions = append(n.actions, strings.Fields(cmd[i+6:])[0])
		n.mu.Unlock()
	}
	c := exec.CommandContext(ctx, "bash", "-c", cmd)
	c.Env, c.Dir, c.Stdout, c.Stderr = n.env, "/", stdout, stderr
	if stdin != nil {
		w, err := c.StdinPipe()
		if err != nil {
			return -1, err
		}
		go func() { io.Copy(w, stdin); w.Close() }()
	}
	err := c.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return -1, err
	}
	return 0, nil
}

func (n *localNode) smiCalls() int {
	b, _ := os.ReadFile(filepath.Join(n.dir, "smi-calls"))
	return strings.Count(string(b), "\n")
}

func (n *localNode) commands() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.actions...)
}

func localCluster(nodes map[string]*localNode, names ...string) *Cluster {
	return &Cluster{Names: names, Runner: func(name string) remote.Runner { return nodes[name] }}
}

// waitJob reconciles until the job reaches a terminal state.
func waitJob(t *testing.T, c *Cluster, st *store.Store, id int) *store.Job {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		views, _, err := c.Reconcile(context.Background(), st, func(j *store.Job) bool { return j.ID == id })
		if err != nil {
			t.Fatal(err)
		}
		if len(views) == 1 && views[0].State.Terminal() {
			return views[0].Job
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("job %d did not end", id)
	return nil
}

// A launch is at most one question to the chosen node and the submit; a
// job without GPUs on its only node needs no question, and no node runs
// nvidia-smi for it.
func TestLaunchCommandsPerNode(t *testing.T) {
	t.Parallel()
	n := newLocalNode(t, gpusim.A100x2("launch"))
	c := localCluster(map[string]*localNode{"n1": n}, "n1")
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	cpu := &task.Task{Name: "cpu", Run: "echo cpu"}
	j, p, err := c.Launch(ctx, st, cpu, LaunchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !p.FitsNow || p.Node != "n1" {
		t.Errorf("placement %+v", p)
	}
	if got := n.commands(); strings.Join(got, " ") != "submit" {
		t.Errorf("a CPU launch ran %v on its node, want only submit", got)
	}
	if j = waitJob(t, c, st, j.ID); j.State != job.Succeeded {
		t.Errorf("the CPU job ended %s", j.State)
	}
	if calls := n.smiCalls(); calls != 0 {
		t.Errorf("a launch without GPUs ran nvidia-smi %d times", calls)
	}

	n.mu.Lock()
	n.actions = nil
	n.mu.Unlock()
	g := &task.Task{Name: "gpu", Run: "echo $CUDA_VISIBLE_DEVICES", Resources: task.Resources{Accelerators: []task.Accel{{Type: "A100", Count: 2}}}}
	j, p, err = c.Launch(ctx, st, g, LaunchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !p.FitsNow || len(p.AllowedGPUs) != 2 {
		t.Errorf("placement %+v", p)
	}
	if got := n.commands(); strings.Join(got, " ") != "place submit" {
		t.Errorf("a GPU launch ran %v on its node, want place then submit", got)
	}
	if j = waitJob(t, c, st, j.ID); j.State != job.Succeeded || len(j.GPUs) != 2 {
		t.Errorf("the GPU job ended %s on GPUs %v", j.State, j.GPUs)
	}
}

// The node decides whether a job would start now; the controller only
// ranks the answers. Here the head of mixed's queue waits for A100s, so
// its four free RTX 4090s are no GPUs it would take: a job asking for three
// GPUs starts there now. (A count of free GPUs against the head's demand,
// as the controller once decided, says it must wait.)
func TestPlacementTakesTheNodesWord(t *testing.T) {
	t.Parallel()
	a100, rtx := gpusim.A100x2("word"), gpusim.RTX4090x4("word")
	mixed := newLocalNode(t, append(append([]gpusim.GPU{}, a100...), rtx...))
	small := newLocalNode(t, gpusim.T4x1("word"))
	nodes := map[string]*localNode{"mixed": mixed, "small": small}
	c := localCluster(nodes, "small", "mixed")
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	hold := &task.Task{Name: "hold", Run: `while [ ! -e "$HOME/release" ]; do sleep 0.05; done`,
		Resources: task.Resources{Accelerators: []task.Accel{{Type: "A100", Count: 2}}}}
	held, _, err := c.Launch(ctx, st, hold, LaunchOptions{Node: "mixed"})
	if err != nil {
		t.Fatal(err)
	}
	head := &task.Task{Name: "head", Run: "true", Resources: task.Resources{Accelerators: []task.Accel{{Type: "A100", Count: 2}}}}
	if _, p, err := c.Launch(ctx, st, head, LaunchOptions{Node: "mixed"}); err != nil || p.FitsNow {
		t.Fatalf("head: %+v %v, want it queued behind hold", p, err)
	}

	p, err := c.Place(ctx, &task.Task{Resources: task.Resources{Accelerators: []task.Accel{{Count: 3}}}}, "")
	if err != nil {
		t.Fatal(err)
	}
	if p.Node != "mixed" || !p.FitsNow || p.QueueAhead != 1 {
		t.Errorf("placed %+v, want mixed, starting now beside its waiting head", p)
	}
	os.WriteFile(filepath.Join(mixed.dir, "home", "release"), nil, 0o644)
	if j := waitJob(t, c, st, held.ID); j.State != job.Succeeded {
		t.Errorf("hold ended %s", j.State)
	}
}

// Cancel is one command per node: its answer says how each job ended,
// which the store records without asking again.
func TestCancelIsOneCommandPerNode(t *testing.T) {
	t.Parallel()
	n := newLocalNode(t, gpusim.T4x1("cancel"))
	c := localCluster(map[string]*localNode{"n1": n}, "n1")
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	run := &task.Task{Name: "long", Run: "sleep 300", Resources: task.Resources{Accelerators: []task.Accel{{Count: 1}}}}
	wait := &task.Task{Name: "waits", Run: "true", Resources: task.Resources{Accelerators: []task.Accel{{Count: 1}}}}
	j1, _, err := c.Launch(ctx, st, run, LaunchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	j2, p, err := c.Launch(ctx, st, wait, LaunchOptions{})
	if err != nil || p.FitsNow {
		t.Fatalf("second job: %+v %v, want it queued", p, err)
	}
	n.mu.Lock()
	n.actions = nil
	n.mu.Unlock()
	out, err := c.Cancel(ctx, st, []*store.Job{j1, j2}, 200*time.Millisecond)
	if err != nil || out[j1.ID] != "cancelled" || out[j2.ID] != "cancelled" {
		t.Fatalf("cancel: %v %v", out, err)
	}
	if got := n.commands(); strings.Join(got, " ") != "cancel" {
		t.Errorf("cancel ran %v on the node, want one cancel", got)
	}
	snap, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []int{j1.ID, j2.ID} {
		if j := snap.Job(id); j.State != job.Cancelled || j.ExitCode == nil || j.Ended == nil {
			t.Errorf("job %d after cancel: %s, exit %v", id, j.State, j.ExitCode)
		}
	}
}
