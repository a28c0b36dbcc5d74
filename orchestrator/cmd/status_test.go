package cmd

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/store"
)

func gpu(i int, state string, holder *orchestrator.Holder) orchestrator.GPUStatus {
	return orchestrator.GPUStatus{Index: i, UUID: "GPU-" + string(rune('a'+i)), Name: "Tesla T4", MemoryTotalMiB: mib(15360), State: state, Holder: holder}
}

// A job that holds no GPU still runs: status must count and show it.
func TestStatusCountsJobsWithoutGPUs(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	train := &orchestrator.Holder{JobID: 3, JobUID: "c-3", Name: "train", User: "alice"}
	h.fake.status = func(context.Context) (*orchestrator.StatusView, error) {
		return &orchestrator.StatusView{Nodes: []orchestrator.NodeView{{
			NodeStatus: orchestrator.NodeStatus{Name: "box", Reachable: true, CPUs: 8, GPUs: []orchestrator.GPUStatus{
				gpu(0, "leased", train), gpu(1, "leased", train), gpu(2, "free", nil)}},
			Running: []orchestrator.RunningJob{
				{JobID: 3, JobUID: "c-3", Name: "train", User: "alice", GPUs: []int{0, 1}},
				{JobID: 7, JobUID: "c-7", Name: "prep", User: "alice", GPUs: []int{}},
			},
		}}}, nil
	}
	if code := h.run("status"); code != 0 {
		t.Fatalf("exit %d: %s", code, h.err.String())
	}
	out := h.out.String()
	for _, want := range []string{"GPUs: 1 free / 3 total   jobs: 2 running (1 without GPUs), 0 waiting", "running without GPUs: #7 prep (alice)", "#3 train (alice)"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
}

// The GPUS column says how many, then which, so "1" can no longer mean
// either one GPU or GPU number 1.
func TestQueueGPUsColumnIsUnambiguous(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	now := time.Now()
	jobs := []*store.Job{
		{ID: 1, Name: "two", Node: "box", NumGPUs: 2, GPUs: []int{0, 1}, State: job.Running, Submitted: now, Started: &now},
		{ID: 2, Name: "waits", Node: "box", NumGPUs: 1, State: job.Pending, Submitted: now},
		{ID: 3, Name: "cpu", Node: "box", State: job.Running, Submitted: now, Started: &now},
		{ID: 4, Name: "gpu1", Node: "box", NumGPUs: 1, GPUs: []int{1}, State: job.Succeeded, Submitted: now},
	}
	h.fake.queue = func(context.Context, bool) (*orchestrator.QueueView, error) {
		var v orchestrator.QueueView
		for _, j := range jobs {
			v.Jobs = append(v.Jobs, orchestrator.JobView{Job: j, NodeReachable: true})
		}
		return &v, nil
	}
	if code := h.run("queue", "-a"); code != 0 {
		t.Fatalf("exit %d: %s", code, h.err.String())
	}
	want := map[string]string{"two": "2 (0,1)", "waits": "1 (waiting)", "cpu": "-", "gpu1": "1 (1)"}
	lines := strings.Split(strings.TrimSpace(h.out.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("want a header and 4 rows:\n%s", h.out.String())
	}
	col := strings.Index(lines[0], "GPUS")
	for _, l := range lines[1:] {
		name := strings.Fields(l)[1]
		if got := strings.TrimSpace(l[col : col+len(want[name])]); got != want[name] {
			t.Errorf("%s: GPUS %q, want %q\n%s", name, got, want[name], h.out.String())
		}
	}
}

// Another user's job name, process user, nvidia-smi message and warning
// are theirs to choose: none of it may reach this user's terminal raw (an
// escape sequence, a newline forging a GPU row), in plain or table output.
// --json keeps the exact bytes.
func TestStatusNeverPrintsNodeTextRaw(t *testing.T) {
	t.Parallel()
	evil := "x\x1b]0;pwned\x07\x1b[2J\nGPU 9 NVIDIA H100 0M / 80G 0% free"
	view := &orchestrator.StatusView{Nodes: []orchestrator.NodeView{{
		NodeStatus: orchestrator.NodeStatus{Name: "box", Reachable: true, CPUs: 8,
			GPUs: []orchestrator.GPUStatus{
				gpu(0, "leased", &orchestrator.Holder{JobID: 3, JobUID: "c-3", Name: evil, User: evil}),
				{Index: 1, UUID: "GPU-b", Name: evil, State: "foreign", Processes: []orchestrator.GPUProcess{{PID: 9, User: evil}}},
			},
			Queue:    []orchestrator.QueueEntry{{Position: 1, JobUID: "d-1", Name: evil, User: evil, NumGPUs: 1}},
			Warnings: []string{"nvidia-smi said: " + evil},
		},
		Running: []orchestrator.RunningJob{{JobID: 7, JobUID: "d-7", Name: evil, User: evil, GPUs: []int{}}},
	}, {NodeStatus: orchestrator.NodeStatus{Name: "down", Error: evil}}}}
	for _, args := range [][]string{{"status"}, {"status", "--json"}} {
		h := newHarness(t)
		h.fake.status = func(context.Context) (*orchestrator.StatusView, error) { return view, nil }
		h.run(args...)
		out := h.out.String()
		if args[len(args)-1] == "--json" {
			if !strings.Contains(out, `x\u001b]0;pwned\u0007\u001b[2J\nGPU 9`) {
				t.Errorf("--json must keep the exact name:\n%s", out)
			}
			continue
		}
		if strings.ContainsAny(out, "\x1b\x07") {
			t.Errorf("status printed a raw escape:\n%q", out)
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "GPU 9") || strings.HasPrefix(strings.TrimSpace(l), "9 ") {
				t.Errorf("a node's text forged a line: %q\n%s", l, out)
			}
		}
	}
}

func mib(n int) *int { return &n }
