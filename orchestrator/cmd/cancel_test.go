package cmd

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/job"
)

func TestCancelSaysHowEachJobEnded(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	zero := 0
	h.fake.cancel = func(context.Context, orchestrator.CancelRequest) (*orchestrator.CancelView, error) {
		return &orchestrator.CancelView{
			Jobs: []orchestrator.CancelResult{
				{ID: 1, Name: "quick", Node: "box", Outcome: orchestrator.CancelDone, State: job.Succeeded, ExitCode: &zero},
				{ID: 2, Name: "long", Node: "box", Outcome: orchestrator.CancelCancelled, State: job.Cancelled},
				{ID: 3, Name: "far", Node: "gone", Outcome: orchestrator.CancelError, State: job.Running, Error: "gone: connection refused"},
			},
			Err: &orchestrator.UnreachableError{Err: errors.New("gone: connection refused")},
		}, nil
	}
	code := h.run("cancel", "1", "2", "3")
	want := "#1 quick: already ended (SUCCEEDED, exit code 0); nothing to cancel\n#2 long: cancelled\n#3 far: error: gone: connection refused\n"
	if code != ExitUnreachable || h.out.String() != want {
		t.Errorf("exit %d, printed\n%s\nwant exit 3 and\n%s", code, h.out.String(), want)
	}
}

func TestCancelNeedsJobs(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	if code := h.run("cancel"); code != ExitUsage || !strings.Contains(h.err.String(), "--all") {
		t.Errorf("exit %d: %s", code, h.err.String())
	}
}
