package cmd

import (
	"strings"
	"testing"

	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/store"
)

func attachable(h *harness) {
	h.fake.attach = func(ref string) (*orchestrator.AttachTarget, error) {
		return &orchestrator.AttachTarget{Job: &store.Job{ID: 4, UID: "c-4", Node: "box", State: job.Running},
			Argv: []string{"ssh", "-t", "box", "tmux -L sshq attach-session -t c-4"}}, nil
	}
}

// Without a terminal, tmux cannot attach: say what works instead.
func TestAttachWithoutTerminalPointsToLogs(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	attachable(h)
	code := h.run("attach", "4")
	if code != ExitUsage || !strings.Contains(h.err.String(), "sshq logs -f 4") || h.execed != nil {
		t.Errorf("exit %d, exec %q, stderr %s", code, h.execed, h.err.String())
	}
}

func TestAttachOnTerminalExecsSSH(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.inTTY, h.outTTY = true, true
	attachable(h)
	if code := h.run("attach", "4"); code != 0 || len(h.execed) != 4 || h.execed[0] != "ssh" || h.execed[2] != "box" {
		t.Errorf("exit %d, exec %q, stderr %s", code, h.execed, h.err.String())
	}
}
