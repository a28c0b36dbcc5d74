package remote

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/orchestrator/job"
)

// A long queue costs a node nothing while nothing changes, and a GPU freed
// costs the waiters behind the head no reading of the queue: with sixty
// jobs waiting for the only GPU, quiet polls read no waiting record and
// start next to no process (once every poll forked df, and every waiter read
// the whole queue whenever a GPU looked free: sixty times sixty records),
// and when the GPU is freed the head takes it while no waiter reads a
// waiting record past the first few.
func TestLongQueueWaitsCheaply(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.T4x1("longq"))
	n.setEnv("SSHQ_POLL_INTERVAL", "0.2")
	// Every process a poll could start is logged with its arguments, and
	// whether a job's wrapper started it (or an action the test runs).
	execs := filepath.Join(n.dir, "execs")
	for _, tool := range []string{"flock", "grep", "stat", "df", "ps", "sort"} {
		real, err := exec.LookPath(tool)
		if err != nil {
			t.Fatal(err)
		}
		w := fmt.Sprintf(`#!/bin/bash
mapfile -d '' -t a </proc/$PPID/cmdline
by=action
[[ " ${a[*]} " == *"wrapper.sh wrapper "* ]] && by=wrapper
printf '%%s\n' "$by %s $*" >> %s
exec %s "$@"
`, tool, shellQuote(execs), real)
		if err := os.WriteFile(filepath.Join(n.dir, "bin", tool), []byte(w), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	logged := func() []string {
		b, _ := os.ReadFile(execs)
		return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	}

	n.submit(spec("lq-hold", 1, blockUntil("lq-hold")))
	n.waitState("lq-hold", job.Running)
	const waiters = 60
	var wg sync.WaitGroup
	sem := make(chan struct{}, 6)
	for i := range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			name := fmt.Sprintf("lq-%02d", i)
			if st, err := n.trySubmit(spec(name, 1, blockUntil(name))); err != nil || st != job.Pending {
				b, _ := os.ReadFile(filepath.Join(n.jobDir(name), "log"))
				t.Errorf("submit %s: %s %v\n%s", name, st, err, b)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	tickets := n.records("w")
	slices.Sort(tickets) // queue order
	if len(tickets) != waiters {
		t.Fatalf("%d waiting records, want %d: %v", len(tickets), waiters, tickets)
	}
	time.Sleep(time.Second) // every waiter has looked since the last change

	quiet := len(logged())
	time.Sleep(2 * time.Second) // ten poll intervals
	during := logged()[quiet:]
	var reads []string
	for _, l := range during {
		if strings.Contains(l, "/w.") {
			reads = append(reads, l)
		}
	}
	t.Logf("%d processes started in ten quiet polls of %d waiters", len(during), waiters)
	if len(reads) > 0 {
		t.Errorf("quiet waiters read waiting records:\n%s", strings.Join(reads, "\n"))
	}
	if len(during) >= waiters {
		t.Errorf("%d waiters started %d processes in ten quiet polls:\n%s", waiters, len(during), strings.Join(during, "\n"))
	}

	// The GPU is freed: the head takes it, and no waiter reads the queue
	// past the first records ahead of it (waiting records are read a few
	// at a time, and only until the free GPU is spoken for).
	head := tickets[0][strings.LastIndexByte(tickets[0], '.')+1:]
	before := len(logged())
	n.release("lq-hold")
	n.waitState(untagged(head), job.Running)
	time.Sleep(time.Second) // every waiter has looked since the claim
	pos := map[string]int{}
	for i, name := range tickets {
		pos[name] = i + 1
	}
	deepest, readers := 0, 0
	for _, l := range logged()[before:] {
		// Jobs, which waitState asks, reads the queue to say where the
		// job is in it.
		if !strings.HasPrefix(l, "wrapper ") || !strings.Contains(l, "/w.") {
			continue
		}
		readers++
		for _, f := range strings.Fields(l) {
			if p := pos[filepath.Base(f)]; p > deepest {
				deepest = p
			}
		}
	}
	t.Logf("%d reads of the queue when the GPU was freed, none past position %d of %d", readers, deepest, waiters)
	if deepest > 40 {
		t.Errorf("a waiter read the waiting record at position %d of %d when one GPU was freed", deepest, waiters)
	}
}
