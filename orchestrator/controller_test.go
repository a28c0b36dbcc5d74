package orchestrator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/remote"
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
