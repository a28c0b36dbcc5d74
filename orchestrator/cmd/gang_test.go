package cmd

import (
	"context"
	"strings"
	"testing"

	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/task"
)

// --num-nodes makes a multi-node job; its dry run shows every rank's node.
func TestNumNodesFlagAndGangPlan(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	tk, code := launched(t, h, "--num-nodes", "3")
	if code != 0 || tk.NumNodes != 3 {
		t.Fatalf("--num-nodes 3: exit %d, num_nodes %v: %s", code, tk, h.err.String())
	}
	if _, code := launched(t, newHarness(t), "--num-nodes", "0"); code != ExitUsage {
		t.Errorf("--num-nodes 0: exit %d, want 2", code)
	}
	h = newHarness(t)
	h.fake.plan = func(_ context.Context, tk *task.Task, _ string) (orchestrator.Placement, error) {
		return orchestrator.Placement{Node: "a", NumGPUs: 2, Accelerator: "A100", Reason: "1 of 2 nodes can start it now", Ranks: []orchestrator.RankPlacement{
			{Rank: 0, Node: "a", FitsNow: true, Reason: "2 of 2 matching GPUs free"},
			{Rank: 1, Node: "b", Reason: "waits behind 1 job(s)"}}}, nil
	}
	if code := h.run("launch", "--dry-run", "--num-nodes", "2", "--gpus", "A100:2", "--", "train"); code != 0 {
		t.Fatalf("dry run: exit %d %s", code, h.err.String())
	}
	for _, want := range []string{"nodes:    2, a+b", "rank 0:   a, starts now", "rank 1:   b, waits", "2 × A100 on each node"} {
		if !strings.Contains(h.out.String(), want) {
			t.Errorf("plan lacks %q:\n%s", want, h.out.String())
		}
	}
}

// logs --rank asks for one rank.
func TestLogsRank(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var got *int
	h.fake.logs = func(_ context.Context, r orchestrator.LogsRequest) (*orchestrator.LogsView, error) {
		got = r.Rank
		return &orchestrator.LogsView{}, nil
	}
	if code := h.run("logs", "--rank", "1", "7"); code != 0 || got == nil || *got != 1 {
		t.Errorf("logs --rank 1: exit %d, rank %v", code, got)
	}
	if code := h.run("logs", "7"); code != 0 || got != nil {
		t.Errorf("logs: exit %d, rank %v, want none", code, got)
	}
}
