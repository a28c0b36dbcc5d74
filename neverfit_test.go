package main

import (
	"strings"
	"testing"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
)

// A waiter that can never fit again (a GPU fell off the bus while it
// waited) ends FAILED_SETUP with the reason in queue, instead of waiting
// forever; the job holding the other GPU runs on.
func TestWaiterThatCanNeverFitEnds(t *testing.T) {
	t.Parallel()
	a100 := gpusim.A100x2(t.Name())
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": a100})
	launchD(t, c, home, env, "hold", "2", "sleep 600")
	waitStates(t, c, home, env, "RUNNING", "hold")
	launchD(t, c, home, env, "pair", "2", "true")
	waitStates(t, c, home, env, "PENDING", "pair")
	// GPU 1 is gone: nvidia-smi lists GPU 0 alone.
	if err := gpusim.Install(c.Node("box").Dir, a100[:1]); err != nil {
		t.Fatal(err)
	}
	m := waitStates(t, c, home, env, "FAILED_SETUP", "pair")
	if r := m["pair"].Reason; !strings.Contains(r, "never fits") || !strings.Contains(r, "only 1") {
		t.Errorf("reason %q, want it to say the job never fits on a node with 1 GPU left", r)
	}
	if m["hold"].State != "RUNNING" {
		t.Errorf("hold is %s, want RUNNING", m["hold"].State)
	}
	if r := sshq(t, c, home, env, "cancel", "hold"); r.code != 0 {
		t.Errorf("cancel: %s", r.stderr)
	}
}
