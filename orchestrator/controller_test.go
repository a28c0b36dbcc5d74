package orchestrator

import (
	"context"
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
	js, err := remote.New("box", ctrl.pool.Node("box")).Jobs(ctxT(t), []string{uid})
	if err != nil {
		t.Fatal(err)
	}
	return js[uid].State
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
		{"timed out", []JobView{v(job.Timeout, code(124))}, true, 124},
		{"timed out, the code unknown", []JobView{v(job.Timeout, nil)}, true, 124},
		{"out of memory, then succeeded", []JobView{v(job.OutOfMemory, code(137)), v(job.Succeeded, code(0))}, true, 137},
	} {
		w, done := waitOutcome(tc.jobs)
		if done != tc.done || (done && w.ExitCode != tc.want) {
			t.Errorf("%s: done %v %+v, want done %v code %d", tc.name, done, w, tc.done, tc.want)
		}
	}
}
