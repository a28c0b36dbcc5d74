package cmd

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/store"
)

// --mem, --time and --cpus reach the launch as typed; "none" lifts a
// default; a bad value is a usage error that says how to write it.
func TestLaunchLimitFlags(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var got orchestrator.LimitFlags
	h.fake.launch = func(_ context.Context, r orchestrator.LaunchRequest) (*orchestrator.LaunchView, error) {
		got = r.Options.Limits
		mem, secs := int64(32<<10), int64(4*3600)
		return &orchestrator.LaunchView{Job: &store.Job{ID: 1, Name: "t", Node: "box", State: job.Pending,
			MemLimitMiB: &mem, TimeLimitS: &secs, CPUs: 8}}, nil
	}
	if code := h.run("launch", "--json", "--mem", "32G", "--time", "4h", "--cpus", "8", "--", "true"); code != 0 {
		t.Fatalf("exit %d: %s", code, h.err.String())
	}
	if got.MemMiB == nil || *got.MemMiB != 32<<10 || got.Time == nil || *got.Time != 4*time.Hour || got.CPUs != 8 {
		t.Errorf("limits %+v", got)
	}
	var out map[string]any
	if err := json.Unmarshal(h.out.Bytes(), &out); err != nil || out["mem_limit_mib"] != float64(32<<10) || out["time_limit_s"] != float64(4*3600) || out["cpus"] != float64(8) {
		t.Errorf("launch --json: %s (%v)", h.out.String(), err)
	}
	if code := h.run("launch", "-d", "--mem", "none", "--time", "1-00:00:00", "--", "true"); code != 0 || got.MemMiB == nil || *got.MemMiB != 0 || *got.Time != 24*time.Hour {
		t.Errorf("--mem none --time 1-00:00:00: exit %d, limits %+v", code, got)
	}
	if code := h.run("launch", "-d", "--", "true"); code != 0 || got.MemMiB != nil || got.Time != nil {
		t.Errorf("no flags must leave the defaults to config.yaml: %+v", got)
	}
	for _, bad := range [][]string{{"--mem", "lots"}, {"--time", "soon"}, {"--cpus", "-2"}} {
		h.fake.launch = nil
		if code := h.run(append(append([]string{"launch", "-d"}, bad...), "--", "true")...); code != ExitUsage || !strings.Contains(h.err.String(), bad[0]) {
			t.Errorf("%v: exit %d, %s", bad, code, h.err.String())
		}
	}
}

// queue shows each job's limits, and why it waits or how a limit ended it.
func TestQueueShowsLimitsAndReasons(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	now := time.Now()
	mem, secs, code137, code124 := int64(300), int64(3), 137, 124
	jobs := []*store.Job{
		{ID: 1, Name: "hog", Node: "box", State: job.OutOfMemory, Submitted: now, Started: &now, Ended: &now, ExitCode: &code137,
			MemLimitMiB: &mem, Reason: "memory: peak 412 MiB, over the 300 MiB limit (--mem)"},
		{ID: 2, Name: "slow", Node: "box", State: job.Timeout, Submitted: now, Started: &now, Ended: &now, ExitCode: &code124,
			TimeLimitS: &secs, CPUs: 2, Cores: "0-1", Reason: "time limit 3s reached (--time)"},
		{ID: 3, Name: "waits", Node: "box", State: job.Pending, Submitted: now, Reason: "disk low: 1.2 GiB free in /home/u, under the 2.0 GiB floor (SSHQ_DISK_FLOOR)"},
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
	out := h.out.String()
	for _, want := range []string{"LIMITS", "REASON", "OUT_OF_MEMORY", "TIMEOUT", "mem 300M", "time 3s, 2 cpus (0-1)",
		"peak 412 MiB, over the 300 MiB limit", "time limit 3s reached", "disk low: 1.2 GiB free"} {
		if !strings.Contains(out, want) {
			t.Errorf("queue lacks %q:\n%s", want, out)
		}
	}
	if code := h.run("queue", "-a", "--json"); code != 0 {
		t.Fatalf("exit %d", code)
	}
	var js []map[string]any
	if err := json.Unmarshal(h.out.Bytes(), &js); err != nil || len(js) != 3 {
		t.Fatalf("queue --json: %v\n%s", err, h.out.String())
	}
	if js[0]["state"] != "OUT_OF_MEMORY" || js[0]["mem_limit_mib"] != float64(300) || js[0]["time_limit_s"] != nil ||
		js[1]["state"] != "TIMEOUT" || js[1]["time_limit_s"] != float64(3) || js[1]["cores"] != "0-1" ||
		!strings.Contains(js[2]["reason"].(string), "SSHQ_DISK_FLOOR") {
		t.Errorf("queue --json: %s", h.out.String())
	}
}

// wait exits 124 for a TIMEOUT and 137 for an OUT_OF_MEMORY, as its help
// says.
func TestWaitExitCodesForLimits(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for state, want := range map[job.State]int{job.Timeout: 124, job.OutOfMemory: 137} {
		h.fake.wait = func(context.Context, orchestrator.WaitRequest) (*orchestrator.WaitView, error) {
			return &orchestrator.WaitView{Jobs: []orchestrator.JobView{{Job: &store.Job{ID: 4, Name: "a", State: state}}}, ExitCode: want}, nil
		}
		if code := h.run("wait", "4"); code != want || !strings.Contains(h.out.String(), string(state)) {
			t.Errorf("wait on a %s job: exit %d, want %d; %s", state, code, want, h.out.String())
		}
	}
	if h.run("wait", "--help"); !strings.Contains(h.out.String(), "124 for TIMEOUT") || !strings.Contains(h.out.String(), "137 for OUT_OF_MEMORY") {
		t.Errorf("wait --help does not document its exit codes:\n%s", h.out.String())
	}
}

// nodes says how each node holds jobs to --mem.
func TestNodesShowsTheMemoryMechanism(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.fake.nodes = func(context.Context) (*orchestrator.NodesView, error) {
		return &orchestrator.NodesView{Nodes: []orchestrator.NodeCheck{
			{Name: "a", Host: "10.0.0.1", Port: 22, Reachable: true, Ready: true, Problems: []string{}, MemLimit: "cgroup", ReserveMemMiB: 2048},
			{Name: "b", Host: "10.0.0.2", Port: 22, Reachable: true, Ready: true, Problems: []string{}, MemLimit: "watchdog", ReserveMemMiB: 4096},
		}}, nil
	}
	if code := h.run("nodes"); code != 0 {
		t.Fatalf("exit %d: %s", code, h.err.String())
	}
	for _, want := range []string{"LIMITS", "cgroup, reserve 2.0G", "watchdog, reserve 4.0G"} {
		if !strings.Contains(h.out.String(), want) {
			t.Errorf("nodes lacks %q:\n%s", want, h.out.String())
		}
	}
}

// status shows this controller's running jobs with their limits.
func TestStatusShowsLimitsOfOwnJobs(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	train := &orchestrator.Holder{JobID: 3, JobUID: "c-3", Name: "train", User: "alice"}
	mem, secs := int64(60<<10), int64(3*86400)
	h.fake.status = func(context.Context) (*orchestrator.StatusView, error) {
		return &orchestrator.StatusView{Nodes: []orchestrator.NodeView{{
			NodeStatus: orchestrator.NodeStatus{Name: "box", Reachable: true, CPUs: 8, GPUs: []orchestrator.GPUStatus{gpu(0, "leased", train)}},
			Running: []orchestrator.RunningJob{
				{JobID: 3, JobUID: "c-3", Name: "train", User: "alice", GPUs: []int{0}, MemLimitMiB: &mem, TimeLimitS: &secs},
				{JobID: 7, JobUID: "c-7", Name: "prep", User: "alice", GPUs: []int{}, CPUs: 2, Cores: "4-5"},
			},
		}}}, nil
	}
	if code := h.run("status"); code != 0 {
		t.Fatalf("exit %d: %s", code, h.err.String())
	}
	for _, want := range []string{"#3 train (alice) [mem 60G, time 3d]", "#7 prep (alice) [2 cpus (4-5)]"} {
		if !strings.Contains(h.out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, h.out.String())
		}
	}
}
