package orchestrator

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/remote"
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/orchestrator/task"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// testController starts one node, "box", with a simulated T4 and opens a
// controller on it with a fresh home.
func testController(t *testing.T) (*Controller, *sshtest.Cluster) {
	t.Helper()
	c := sshtest.Start(t, sshtest.Options{Names: []string{"box"}, Env: map[string]string{"SSHQ_POLL_INTERVAL": "0.2"}})
	if err := gpusim.Install(c.Node("box").Dir, gpusim.T4x1(t.Name())); err != nil {
		t.Fatal(err)
	}
	ctrl, err := OpenController(ControllerOptions{Home: t.TempDir(), SSHConfig: c.ConfigPath, Nodes: "box"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctrl.Close() })
	return ctrl, c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// launch submits a command as a detached job and returns its id.
func launch(t *testing.T, ctrl *Controller, name, gpus, command string) int {
	t.Helper()
	tk, _, err := task.Parse("command line", []byte("run: \"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	ov := task.Overrides{Name: name, Run: command}
	if gpus != "" {
		a, err := task.ParseGPUFlag(gpus)
		if err != nil {
			t.Fatal(err)
		}
		ov.GPUs = &a
	}
	if err := tk.Apply(ov); err != nil {
		t.Fatal(err)
	}
	v, err := ctrl.Launch(ctxT(t), LaunchRequest{Task: tk})
	if err != nil {
		t.Fatalf("launch %s: %v", name, err)
	}
	return v.Job.ID
}

// untilState polls the job's node (through the controller) until the job
// is in one of the states.
func untilState(t *testing.T, ctrl *Controller, id int, states ...job.State) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		q, err := ctrl.Queue(ctxT(t), true)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range q.Jobs {
			for _, s := range states {
				if v.ID == id && v.State == s {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d never reached %v: %+v", id, states, q.Jobs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A job that asked for no GPU holds none, yet it runs: status must list
// it with the GPU holders.
func TestStatusListsJobsWithoutGPUs(t *testing.T) {
	t.Parallel()
	ctrl, _ := testController(t)
	prep := launch(t, ctrl, "prep", "", "sleep 1000")
	train := launch(t, ctrl, "train", "1", "sleep 1000")
	untilState(t, ctrl, train, job.Running)
	untilState(t, ctrl, prep, job.Running)
	v, err := ctrl.Status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	got := map[int][]int{}
	for _, r := range v.Nodes[0].Running {
		got[r.JobID] = r.GPUs
	}
	if len(got) != 2 || got[prep] == nil || len(got[prep]) != 0 || len(got[train]) != 1 || got[train][0] != 0 {
		t.Errorf("running on box: %+v, want prep without GPUs and train on GPU 0", v.Nodes[0].Running)
	}
}

// nodeState asks the node itself, leaving the store as it was.
func nodeState(t *testing.T, ctrl *Controller, id int) job.State {
	t.Helper()
	s, err := ctrl.st.Load()
	if err != nil {
		t.Fatal(err)
	}
	uid := s.Job(id).UID
	res, err := ctrl.pool.Run(ctxT(t), "box", remote.Jobs([]string{uid}), nil)
	if err != nil {
		t.Fatal(err)
	}
	js, err := remote.ParseJobs(res.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	return js[uid].State
}

// cancel must tell the truth about each job: one that had already
// succeeded is reported so (not as cancelled, not with the state the
// store last saw), one that runs is cancelled.
func TestCancelReportsEachJobsTrueOutcome(t *testing.T) {
	t.Parallel()
	ctrl, _ := testController(t)
	done := launch(t, ctrl, "quick", "", "true")
	runs := launch(t, ctrl, "long", "1", "sleep 1000")
	for deadline := time.Now().Add(time.Minute); nodeState(t, ctrl, done) != job.Succeeded || nodeState(t, ctrl, runs) != job.Running; {
		if time.Now().After(deadline) {
			t.Fatal("the jobs never got going")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if s, _ := ctrl.st.Load(); s.Job(done).State.Terminal() {
		t.Fatalf("the store already knows job %d ended; the test needs it stale", done)
	}
	v, err := ctrl.Cancel(ctxT(t), CancelRequest{Refs: []string{"quick", fmt.Sprint(runs)}, Grace: time.Second})
	if err != nil || v.Err != nil {
		t.Fatal(err, v.Err)
	}
	if len(v.Jobs) != 2 {
		t.Fatalf("outcomes: %+v", v.Jobs)
	}
	q, r := v.Jobs[0], v.Jobs[1]
	if q.ID != done || q.Outcome != CancelDone || q.State != job.Succeeded || q.ExitCode == nil || *q.ExitCode != 0 {
		t.Errorf("the job that had succeeded: %+v, want done, SUCCEEDED, exit code 0", q)
	}
	if r.ID != runs || r.Outcome != CancelCancelled || r.State != job.Cancelled {
		t.Errorf("the running job: %+v, want cancelled, CANCELLED", r)
	}
	if got := nodeState(t, ctrl, runs); got != job.Cancelled {
		t.Errorf("the running job is %s on its node", got)
	}
}

func TestNodeReadinessRules(t *testing.T) {
	t.Parallel()
	ok := map[string]string{"have_bash": "/bin/bash", "have_tmux": "/usr/bin/tmux", "have_flock": "/usr/bin/flock",
		"have_nvidia-smi": "/usr/bin/nvidia-smi", "gpus": "2", "lease_dir": "/tmp/sshq-leases", "lease_dir_state": "ok"}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range ok {
			m[a] = b
		}
		m[k] = v
		return m
	}
	for _, tc := range []struct {
		name    string
		kv      map[string]string
		ready   bool
		problem string
	}{
		{"all there", ok, true, ""},
		{"no tmux", with("have_tmux", "-"), false, "tmux missing"},
		{"no flock", with("have_flock", "-"), false, "flock missing"},
		{"no bash", with("have_bash", "-"), false, "bash missing"},
		{"CPU-only", with("have_nvidia-smi", "-"), true, "CPU-only node"},
		{"no GPU found", with("gpus", "0"), true, "finds no GPU"},
		{"lease dir symlink", with("lease_dir_state", "symlink"), false, "is a symlink"},
		{"lease dir read-only", with("lease_dir_state", "not-writable"), false, "chmod 1777"},
		{"logind kills jobs", with("kill_user_processes", "no"), false, "enable-linger"},
		{"logind with linger", with("kill_user_processes", "yes"), true, ""},
	} {
		r := NodeCheck{Problems: []string{}}
		readiness(&r, tc.kv)
		got := fmt.Sprint(r.Problems)
		if r.Ready != tc.ready || (tc.problem == "" && len(r.Problems) > 0) || !strings.Contains(got, tc.problem) {
			t.Errorf("%s: ready %v, problems %s; want ready %v and %q", tc.name, r.Ready, got, tc.ready, tc.problem)
		}
	}
}

func TestWaitExitCodeRule(t *testing.T) {
	t.Parallel()
	code := func(c int) *int { return &c }
	v := func(s job.State, c *int) JobView { return JobView{Job: &store.Job{State: s, ExitCode: c}} }
	for _, tc := range []struct {
		name string
		jobs []JobView
		done bool
		want int
	}{
		{"all succeeded", []JobView{v(job.Succeeded, code(0)), v(job.Succeeded, code(0))}, true, 0},
		{"one still runs", []JobView{v(job.Succeeded, code(0)), v(job.Running, nil)}, false, 0},
		{"the last failing job's code", []JobView{v(job.Failed, code(3)), v(job.Succeeded, code(0)), v(job.Failed, code(7))}, true, 7},
		{"lost without a code", []JobView{v(job.Lost, nil)}, true, 1},
		{"cancelled while waiting", []JobView{v(job.Cancelled, code(143))}, true, 143},
	} {
		w, done := waitOutcome(tc.jobs)
		if done != tc.done || (done && w.ExitCode != tc.want) {
			t.Errorf("%s: done %v %+v, want done %v code %d", tc.name, done, w, tc.done, tc.want)
		}
	}
}
