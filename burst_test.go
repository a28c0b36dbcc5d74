package main

// Bursts: many launches at one node at once, from two controllers and two
// node accounts. No node-side decision waits on a lock, so every launch
// lands, and a node is never reported unreachable because it is busy.

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
)

func TestBurstOfFiftyLaunchesAllLand(t *testing.T) {
	t.Parallel()
	c, homeA, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.RTX4090x4(t.Name())})
	// A real driver's cost per call: waiters that probe under a lock keep
	// it held.
	gpusim.SetDelay(gpusim.SimDir(c.Node("box").Dir), 40*time.Millisecond)
	homeB := t.TempDir()
	envA, envB := env, env
	if os.Geteuid() == 0 {
		aliases := nodeUsers(t, c, c.Node("box"), 2)
		envA, envB = []string{"SSHQ_NODES=" + aliases[0]}, []string{"SSHQ_NODES=" + aliases[1]}
	}
	events := eventsFile(t, c.Node("box"))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []string
	for _, ctl := range []struct {
		home, prefix string
		env          []string
	}{{homeA, "a", envA}, {homeB, "b", envB}} {
		for i := range 25 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				name := fmt.Sprintf("%s%02d", ctl.prefix, i)
				gpus := "1"
				if i%5 == 4 {
					gpus = "0"
				}
				r := sshq(t, c, ctl.home, ctl.env, "launch", "-d", "--name", name, "--gpus", gpus, "--", recorded(events, "true"))
				if r.code != 0 {
					mu.Lock()
					failed = append(failed, fmt.Sprintf("%s: exit %d: %s", name, r.code, strings.TrimSpace(r.stderr)))
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("%d of 50 launches failed:\n%s", len(failed), strings.Join(failed, "\n"))
	}
	qa := waitJobs(t, c, homeA, envA)
	qb := waitJobs(t, c, homeB, envB)
	if len(qa) != 25 || len(qb) != 25 {
		t.Fatalf("controller A has %d jobs, B %d; want 25 each", len(qa), len(qb))
	}
	allSucceeded(t, qa)
	allSucceeded(t, qb)
	if spans := readSpans(t, events); len(spans) != 50 {
		t.Errorf("%d jobs ran, want 50", len(spans))
	} else {
		checkExclusive(t, spans)
	}
}
