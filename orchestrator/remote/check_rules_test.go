package remote

import (
	"fmt"
	"strings"
	"testing"
)

// The readiness rule: what makes a node unfit for jobs, and what only
// deserves a note.
func TestNodeCheckReadinessRule(t *testing.T) {
	t.Parallel()
	ok := func() NodeCheck {
		return NodeCheck{
			Tools:       map[string]string{"bash": "/bin/bash", "tmux": "/usr/bin/tmux", "flock": "/usr/bin/flock", "nvidia-smi": "/usr/bin/nvidia-smi"},
			BashVersion: "5.2.15", LeaseDir: "/tmp/sshq-leases", LeaseDirState: "ok", GPUs: 2,
		}
	}
	for _, tc := range []struct {
		name    string
		change  func(*NodeCheck)
		ready   bool
		problem string
	}{
		{"all there", func(*NodeCheck) {}, true, ""},
		{"no tmux", func(c *NodeCheck) { delete(c.Tools, "tmux") }, false, "tmux missing"},
		{"no flock", func(c *NodeCheck) { delete(c.Tools, "flock") }, false, "flock missing"},
		{"no bash", func(c *NodeCheck) { delete(c.Tools, "bash") }, false, "bash missing"},
		{"old bash", func(c *NodeCheck) { c.BashVersion = "4.3.48" }, false, "too old"},
		{"CPU-only", func(c *NodeCheck) { delete(c.Tools, "nvidia-smi"); c.GPUs = -1 }, true, "CPU-only node"},
		{"no GPU found", func(c *NodeCheck) { c.GPUs = 0 }, true, "finds no GPU"},
		{"lease dir symlink", func(c *NodeCheck) { c.LeaseDirState = "symlink" }, false, "is a symlink"},
		{"lease dir read-only", func(c *NodeCheck) { c.LeaseDirState = "not-writable" }, false, "chmod 1777"},
		{"logind kills jobs", func(c *NodeCheck) { c.KillUserProcesses, c.Linger = true, "no" }, false, "enable-linger"},
		{"logind with linger", func(c *NodeCheck) { c.KillUserProcesses, c.Linger = true, "yes" }, true, ""},
		{"no python3", func(c *NodeCheck) { c.Tools["python3"] = "" }, true, "multi-node jobs"},
	} {
		c := ok()
		tc.change(&c)
		p := c.Problems()
		got := fmt.Sprint(p)
		if c.Ready() != tc.ready || (tc.problem == "" && len(p) > 0) || !strings.Contains(got, tc.problem) {
			t.Errorf("%s: ready %v, problems %s; want ready %v and %q", tc.name, c.Ready(), got, tc.ready, tc.problem)
		}
	}
}
