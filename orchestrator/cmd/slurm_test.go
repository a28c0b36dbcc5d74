package cmd

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/store"
)

// The Slurm hosts come from --slurm, before or after the command, else
// from SSHQ_SLURM; the controller is told which.
func TestSlurmFlagAndEnv(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.fake.queue = func(context.Context, bool) (*orchestrator.QueueView, error) { return &orchestrator.QueueView{}, nil }
	h.env["SSHQ_SLURM"] = "from-env"
	for _, args := range [][]string{{"--slurm", "login", "queue"}, {"queue", "--slurm", "login"}} {
		if code := h.run(args...); code != 0 || h.fake.opts.Slurm != "login" || h.fake.opts.SlurmFrom != "--slurm" {
			t.Errorf("sshq %v: exit %d, slurm %q from %q", args, code, h.fake.opts.Slurm, h.fake.opts.SlurmFrom)
		}
	}
	if code := h.run("queue"); code != 0 || h.fake.opts.Slurm != "from-env" || h.fake.opts.SlurmFrom != "SSHQ_SLURM" {
		t.Errorf("SSHQ_SLURM: exit %d, slurm %q from %q", code, h.fake.opts.Slurm, h.fake.opts.SlurmFrom)
	}
}

// status shows a Slurm cluster: partitions, each node's GPUs in use of
// its gres, and the queue with this controller's job by its id and a
// waiting job's reason.
func TestStatusShowsSlurm(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	three := 3
	h.fake.status = func(context.Context) (*orchestrator.StatusView, error) {
		return &orchestrator.StatusView{Nodes: []orchestrator.NodeView{}, Slurm: []orchestrator.SlurmStatus{{
			Login: "login", Reachable: true, Version: "slurm-wlm 22.05.8",
			Partitions: []orchestrator.SlurmPartition{{Name: "gpu", Default: true, Up: true, TimeLimit: "infinite", Nodes: 2}},
			Nodes: []orchestrator.SlurmNodeStatus{
				{Name: "cn1", State: "mixed", GPUs: []orchestrator.SlurmGPU{{Type: "a100", Total: 2, Used: 1}}, CPUsAlloc: 1, CPUsTotal: 8},
				{Name: "cn2", State: "idle", GPUs: []orchestrator.SlurmGPU{{Type: "a100", Total: 2}}, CPUsTotal: 8},
			},
			Queue: []orchestrator.SlurmQueueStatus{
				{SlurmID: "41", JobID: &three, Name: "train", User: "alice", State: job.Running, SlurmState: "RUNNING", NodeList: "cn1", GRES: "gres:gpu:a100:1"},
				{SlurmID: "42", Name: "other", User: "bob", State: job.Pending, SlurmState: "PENDING", Reason: "Resources"},
			},
		}, {Login: "old-login", Error: "old-login: node unreachable"}}}, nil
	}
	if code := h.run("status"); code != ExitUnreachable {
		t.Errorf("exit %d with a Slurm login node down, want %d", code, ExitUnreachable)
	}
	out := h.out.String()
	for _, want := range []string{"login  Slurm  up  slurm-wlm 22.05.8  GPUs 1 in use / 4", "gpu*", "cn1", "a100 1/2", "a100 0/2",
		"41", "#3", "train", "gpu:a100:1", "(Resources)", "old-login  Slurm  down",
		// The totals count the Slurm cluster's GPUs and jobs too.
		"GPUs: 3 free / 4 total   jobs: 1 running, 1 waiting"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

// nodes checks a Slurm login node and shows its gres.
func TestNodesShowsSlurm(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.fake.nodes = func(context.Context) (*orchestrator.NodesView, error) {
		return &orchestrator.NodesView{Nodes: []orchestrator.NodeCheck{}, Slurm: []orchestrator.SlurmCheck{
			{Name: "login", Host: "10.0.0.5", Port: 22, Reachable: true, Ready: true, Version: "slurm-wlm 22.05.8",
				Partitions: []string{"gpu*"}, Nodes: 2, GPUs: 4, GRES: map[string]int{"a100": 4}},
			{Name: "bare", Host: "10.0.0.6", Port: 22, Reachable: true, Problems: []string{"bare is not a Slurm login node: sbatch, squeue not found on its PATH"}},
		}}, nil
	}
	if code := h.run("nodes"); code != 0 {
		t.Errorf("exit %d: %s", code, h.err.String())
	}
	out := h.out.String()
	for _, want := range []string{"ready (Slurm)", "gpu:a100 ×4", "partitions gpu*", "not ready (Slurm)", "sbatch, squeue not found"} {
		if !strings.Contains(out, want) {
			t.Errorf("nodes lacks %q:\n%s", want, out)
		}
	}
}

// queue shows a Slurm job with its login node and Slurm id, and Slurm's
// reason as its REASON.
func TestQueueShowsSlurmJobs(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	now := time.Now()
	h.fake.queue = func(context.Context, bool) (*orchestrator.QueueView, error) {
		return &orchestrator.QueueView{Jobs: []orchestrator.JobView{
			{Job: &store.Job{ID: 5, Name: "big", Node: "login", Backend: store.BackendSlurm, SlurmID: "42", NumGPUs: 2, State: job.Pending, Reason: "Resources", Submitted: now}, NodeReachable: true},
			{Job: &store.Job{ID: 6, Name: "ok", Node: "login", Backend: store.BackendSlurm, SlurmID: "43", NumGPUs: 1, State: job.Running, Submitted: now, Started: &now}, NodeReachable: true},
		}}, nil
	}
	if code := h.run("queue"); code != 0 {
		t.Fatalf("exit %d: %s", code, h.err.String())
	}
	out := h.out.String()
	for _, want := range []string{"login (Slurm 42)", "login (Slurm 43)"} {
		if !strings.Contains(out, want) {
			t.Errorf("queue lacks %q:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "5 ") && (!strings.Contains(line, "PENDING") || !strings.HasSuffix(strings.TrimSpace(line), "Resources")) {
			t.Errorf("job 5's row lacks PENDING and Slurm's reason Resources: %q", line)
		}
	}
	if strings.Contains(out, "waiting") {
		t.Errorf("a Slurm job's GPUS column says waiting; Slurm names no indices:\n%s", out)
	}
}

// A big cluster's queue is cut short in the table, this controller's
// jobs kept, the rest counted.
func TestStatusCutsALongSlurmQueue(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	mine := 7
	var queue []orchestrator.SlurmQueueStatus
	for i := range 500 {
		queue = append(queue, orchestrator.SlurmQueueStatus{SlurmID: fmt.Sprint(1000 + i), Name: "theirs", User: "bob", State: job.Pending, SlurmState: "PENDING", Reason: "Priority"})
	}
	queue = append(queue, orchestrator.SlurmQueueStatus{SlurmID: "9999", JobID: &mine, Name: "mine", State: job.Pending, SlurmState: "PENDING", Reason: "Priority"})
	h.fake.status = func(context.Context) (*orchestrator.StatusView, error) {
		return &orchestrator.StatusView{Slurm: []orchestrator.SlurmStatus{{Login: "login", Reachable: true, Queue: queue}}}, nil
	}
	if code := h.run("status"); code != 0 {
		t.Fatalf("exit %d: %s", code, h.err.String())
	}
	out := h.out.String()
	if n := strings.Count(out, "theirs"); n != slurmQueueMax-1 || !strings.Contains(out, "#7") || !strings.Contains(out, "and 481 more job(s)") {
		t.Errorf("%d of their jobs shown, want %d, ours and a count of the rest:\n%s", n, slurmQueueMax-1, out)
	}
}
