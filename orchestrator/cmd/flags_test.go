package cmd

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/store"
)

// Users type flags after the job: every command must read them there.
func TestFlagsAfterArgumentsWorkForEveryCommand(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var logs orchestrator.LogsRequest
	h.fake.logs = func(_ context.Context, r orchestrator.LogsRequest) (*orchestrator.LogsView, error) {
		logs = r
		return &orchestrator.LogsView{}, nil
	}
	if code := h.run("logs", "4", "-f", "--tail", "5"); code != 0 || logs.Ref != "4" || !logs.Follow || logs.Tail != 5 {
		t.Errorf("sshq logs 4 -f --tail 5: exit %d, request %+v\n%s", code, logs, h.err.String())
	}

	var cancel orchestrator.CancelRequest
	h.fake.cancel = func(_ context.Context, r orchestrator.CancelRequest) (*orchestrator.CancelView, error) {
		cancel = r
		return &orchestrator.CancelView{Jobs: []orchestrator.CancelResult{{ID: 12, Name: "x", Outcome: orchestrator.CancelCancelled, State: job.Cancelled}}}, nil
	}
	if code := h.run("cancel", "12", "--grace", "1s"); code != 0 || !slices.Equal(cancel.Refs, []string{"12"}) || cancel.Grace != time.Second {
		t.Errorf("sshq cancel 12 --grace 1s: exit %d, request %+v\n%s", code, cancel, h.err.String())
	}
	if code := h.run("cancel", "--", "-3"); code != 0 || !slices.Equal(cancel.Refs, []string{"-3"}) {
		t.Errorf("sshq cancel -- -3: exit %d, request %+v\n%s", code, cancel, h.err.String())
	}

	var wait orchestrator.WaitRequest
	h.fake.wait = func(_ context.Context, r orchestrator.WaitRequest) (*orchestrator.WaitView, error) {
		wait = r
		return &orchestrator.WaitView{Jobs: []orchestrator.JobView{
			{Job: &store.Job{ID: 4, Name: "a", State: job.Succeeded}, NodeReachable: true},
			{Job: &store.Job{ID: 5, Name: "b", State: job.Succeeded}, NodeReachable: true},
		}}, nil
	}
	if code := h.run("wait", "4", "5", "--json"); code != 0 || !slices.Equal(wait.Refs, []string{"4", "5"}) {
		t.Fatalf("sshq wait 4 5 --json: exit %d, request %+v\n%s", code, wait, h.err.String())
	}
	var got []struct {
		ID    int    `json:"id"`
		State string `json:"state"`
	}
	if err := json.Unmarshal(h.out.Bytes(), &got); err != nil || len(got) != 2 || got[1].ID != 5 || got[1].State != "SUCCEEDED" {
		t.Errorf("sshq wait --json printed %q (%v)", h.out.String(), err)
	}

	var all bool
	h.fake.queue = func(_ context.Context, a bool) (*orchestrator.QueueView, error) {
		all = a
		return &orchestrator.QueueView{}, nil
	}
	if code := h.run("queue", "--nodes", "gpu-1", "-a"); code != 0 || !all || h.fake.opts.Nodes != "gpu-1" {
		t.Errorf("sshq queue --nodes gpu-1 -a: exit %d, all=%v, nodes %q", code, all, h.fake.opts.Nodes)
	}

	var patterns []string
	h.fake.init = func(p []string) (*orchestrator.InitView, error) {
		patterns = p
		return &orchestrator.InitView{Patterns: p, Nodes: p, Saved: true}, nil
	}
	if code := h.run("init", "gpu-1", "!gpu-2", "--home", "/tmp/h"); code != 0 || !slices.Equal(patterns, []string{"gpu-1", "!gpu-2"}) || h.fake.opts.Home != "/tmp/h" {
		t.Errorf("sshq init gpu-1 !gpu-2 --home /tmp/h: exit %d, patterns %q, home %q", code, patterns, h.fake.opts.Home)
	}
}
