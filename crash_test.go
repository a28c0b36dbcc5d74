package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// syncHold makes workdir syncs to a node wait, as a slow disk there
// would, from the moment a sync lists the node's copy (wsync runs find
// there for that) until it is released.
type syncHold struct{ dir string }

func holdSyncs(t *testing.T, n *sshtest.Node) *syncHold {
	t.Helper()
	find, err := exec.LookPath("find")
	if err != nil {
		t.Fatal(err)
	}
	h := &syncHold{dir: n.Dir}
	script := fmt.Sprintf(`#!/bin/sh
if [ -e %[1]s/hold-sync ]; then
	: >%[1]s/sync-held
	while [ -e %[1]s/hold-sync ]; do sleep 0.05; done
fi
exec %[2]s "$@"
`, h.dir, find)
	if err := os.WriteFile(filepath.Join(n.BinDir, "find"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.release)
	return h
}

// arm holds the next syncs.
func (h *syncHold) arm(t *testing.T) {
	t.Helper()
	os.Remove(filepath.Join(h.dir, "sync-held"))
	if err := os.WriteFile(filepath.Join(h.dir, "hold-sync"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// held reports whether a sync waits.
func (h *syncHold) held() bool {
	_, err := os.Stat(filepath.Join(h.dir, "sync-held"))
	return err == nil
}

func (h *syncHold) release() { os.Remove(filepath.Join(h.dir, "hold-sync")) }

// startSSHQ starts sshq in the background, as a user's terminal would.
func startSSHQ(t *testing.T, c *sshtest.Cluster, home string, env []string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(sshqBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "SSHQ_HOME=" + filepath.Join(home, ".sshq"), "SSHQ_SSH_CONFIG=" + c.ConfigPath}, env...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, &out
}

// storedJob reads job id from state.json as it is on disk, without
// asking any node.
func storedJob(t *testing.T, home string, id int) *store.Job {
	t.Helper()
	st, err := store.Open(filepath.Join(home, ".sshq"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	j := s.Job(id)
	if j == nil {
		t.Fatalf("job #%d is not in state.json", id)
	}
	return j
}

type queueRow struct {
	ID     int    `json:"id"`
	Node   string `json:"node"`
	State  string `json:"state"`
	Reason string `json:"reason"`
}

func queueRows(t *testing.T, r result) []queueRow {
	t.Helper()
	var q []queueRow
	if err := json.Unmarshal([]byte(r.stdout), &q); err != nil {
		t.Fatalf("queue --json (exit %d): %v\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	return q
}

// A launch SIGKILLed mid-sync leaves its job SUBMITTING with nobody to
// submit it: the next command that reads the queue (queue, status, or the
// next launch) settles it at once, having asked its node, and nothing of
// it is left there. A live launch's job is never touched by another sshq
// sharing the same ~/.sshq.
func TestKilledLaunchIsSettledAtOnce(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.T4x1(t.Name())})
	n := c.Node("box")
	hold := holdSyncs(t, n)
	wd := filepath.Join(home, "proj")
	if err := os.MkdirAll(wd, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(wd, "data"), []byte("payload\n"), 0o644)

	// killMidSync launches and kills the launch while its sync waits.
	killMidSync := func(id int, alive func()) {
		t.Helper()
		hold.arm(t)
		cmd, out := startSSHQ(t, c, home, env, "launch", "-d", "--name", fmt.Sprint("k", id), "--workdir", wd, "--", "cat data")
		waitFor(t, "the launch to be syncing", hold.held)
		if j := storedJob(t, home, id); j.State != job.Submitting {
			t.Fatalf("job #%d while its launch syncs: %s", id, j.State)
		}
		if alive != nil {
			alive()
		}
		cmd.Process.Kill()
		if err := cmd.Wait(); err == nil {
			t.Fatalf("launch #%d ended before it was killed:\n%s", id, out.String())
		}
		hold.release()
	}
	settled := func(j *store.Job) bool {
		return j.State == job.FailedSetup && strings.Contains(j.Reason, "launching sshq process died") && j.Ended != nil
	}

	killMidSync(1, func() {
		// Another sshq (a second terminal) reads the queue meanwhile: the
		// launch lives, so its job stays as it is.
		r := sshq(t, c, home, env, "queue", "--json")
		if q := queueRows(t, r); len(q) != 1 || q[0].State != "SUBMITTING" {
			t.Errorf("queue while the launch lives: %+v", q)
		}
	})
	r := sshq(t, c, home, env, "queue", "--json", "-a")
	q := queueRows(t, r)
	if r.code != 0 || len(q) != 1 || q[0].State != "FAILED_SETUP" || !strings.Contains(q[0].Reason, "launching sshq process died") {
		t.Fatalf("queue after the launch was killed (exit %d): %+v\n%s", r.code, q, r.stderr)
	}
	if j := storedJob(t, home, 1); !settled(j) {
		t.Errorf("state.json after queue: %+v", j)
	}
	if _, err := os.Stat(filepath.Join(home, ".sshq", store.LaunchDir, storedJob(t, home, 1).UID+".lock")); err == nil {
		t.Errorf("the settled job's launch lock is left behind")
	}

	// status settles such a job too, and so does the next launch.
	killMidSync(2, nil)
	if r := sshq(t, c, home, env, "status"); r.code != 0 {
		t.Fatalf("status: %d %s", r.code, r.stderr)
	}
	if j := storedJob(t, home, 2); !settled(j) {
		t.Errorf("job #2 after status: %+v", j)
	}
	killMidSync(3, nil)
	if r := sshq(t, c, home, env, "launch", "-d", "--", "true"); r.code != 0 {
		t.Fatalf("the next launch: %d %s", r.code, r.stderr)
	}
	if j := storedJob(t, home, 3); !settled(j) {
		t.Errorf("job #3 after the next launch: %+v", j)
	}
	for _, j := range waitJobs(t, c, home, env) {
		if j.ID == 4 && j.State != "SUCCEEDED" {
			t.Errorf("the next launch's job: %+v", j)
		}
	}
	nodeHasNoJobsBut(t, n, storedJob(t, home, 4).UID)
}

// nodeHasNoJobsBut fails the test if n holds a job directory other than
// those of the uids given, or a tmux session.
func nodeHasNoJobsBut(t *testing.T, n *sshtest.Node, uids ...string) {
	t.Helper()
	es, _ := os.ReadDir(filepath.Join(n.Home, ".sshq", "jobs"))
	for _, e := range es {
		if !slices.Contains(uids, e.Name()) {
			t.Errorf("%s holds the job directory of %s", n.Name, e.Name())
		}
	}
	cmd := exec.Command("tmux", "-L", "sshq", "ls")
	cmd.Env = append(os.Environ(), "TMUX_TMPDIR="+n.TmuxDir)
	if out, err := cmd.CombinedOutput(); err == nil && len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("%s runs tmux sessions: %s", n.Name, out)
	}
}

// sshqLimited is sshq run under a limit on the size of the files it
// writes, which fails its writes of state.json as a full disk does.
func sshqLimited(t *testing.T, c *sshtest.Cluster, home string, env []string, fsize int64, args ...string) result {
	t.Helper()
	prlimit := prlimitPath(t)
	return sshqWith(t, c, home, env, append([]string{prlimit, fmt.Sprintf("--fsize=%d:%d", fsize, fsize), "--", sshqBin}, args...))
}

func prlimitPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("prlimit")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("prlimit (util-linux) is not installed (CI is set: nothing may be skipped)")
		}
		t.Skip("prlimit (util-linux) is not installed")
	}
	return p
}

// sshqWith runs argv (sshq behind a wrapper) as sshq runs.
func sshqWith(t *testing.T, c *sshtest.Cluster, home string, env []string, argv []string) result {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "SSHQ_HOME=" + filepath.Join(home, ".sshq"), "SSHQ_SSH_CONFIG=" + c.ConfigPath}, env...)
	var out, errb syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", argv, err)
	}
	return result{out.String(), errb.String(), code}
}

func stateSize(t *testing.T, home string) int64 {
	t.Helper()
	fi, err := os.Stat(filepath.Join(home, ".sshq", store.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// When ~/.sshq cannot be written (a full disk; here a limit on file size,
// which fails the same writes the same way), a launch says so and what to
// do, and never leaves its job SUBMITTING: before the job is recorded,
// nothing is submitted; after the node took it, `sshq queue` shows the
// job as its node says, even while the disk is still full.
func TestFullDiskLeavesNoSubmittingJob(t *testing.T) {
	t.Parallel()
	prlimitPath(t)
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.T4x1(t.Name())})
	n := c.Node("box")
	hold := holdSyncs(t, n)
	wd := filepath.Join(home, "proj")
	if err := os.MkdirAll(wd, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(wd, "data"), []byte("payload\n"), 0o644)
	if r := sshq(t, c, home, env, "launch", "-d", "--", "true"); r.code != 0 {
		t.Fatalf("first launch: %s", r.stderr)
	}
	waitJobs(t, c, home, env)

	// Full before the launch: nothing is recorded or submitted.
	full := stateSize(t, home) - 1
	r := sshqLimited(t, c, home, env, full, "launch", "-d", "--name", "early", "--", "true")
	if r.code != 1 || !strings.Contains(r.stderr, "nothing was submitted") || !strings.Contains(r.stderr, "ulimit -f") || !strings.Contains(r.stderr, store.StateFile) {
		t.Errorf("launch with ~/.sshq full: exit %d\n%s", r.code, r.stderr)
	}
	for _, j := range queue(t, c, home, env) {
		if j.Name == "early" {
			t.Errorf("a launch that could not record its job left %+v", j)
		}
	}
	nodeHasNoJobsBut(t, n, storedJob(t, home, 1).UID)

	// Full while the launch syncs: the node takes the job, its record
	// cannot follow.
	hold.arm(t)
	cmd, out := startSSHQ(t, c, home, env, "launch", "-d", "--name", "late", "--workdir", wd, "--", "cat data")
	waitFor(t, "the launch to be syncing", hold.held)
	id := 2 // the failed launch recorded nothing, not even its id
	if j := storedJob(t, home, id); j.State != job.Submitting || j.Name != "late" {
		t.Fatalf("job #%d while its launch syncs: %+v", id, j)
	}
	full = stateSize(t, home) - 1
	if b, err := exec.Command(prlimitPath(t), "--pid", fmt.Sprint(cmd.Process.Pid), fmt.Sprintf("--fsize=%d:%d", full, full)).CombinedOutput(); err != nil {
		t.Fatalf("prlimit: %v %s", err, b)
	}
	hold.release()
	err := cmd.Wait()
	if ee, _ := err.(*exec.ExitError); ee == nil || ee.ExitCode() != 1 || !strings.Contains(out.String(), fmt.Sprintf("job #%d is queued on box (`sshq queue` shows it), but sshq could not record that", id)) || !strings.Contains(out.String(), "ulimit -f") {
		t.Fatalf("launch whose record failed after the submit: %v\n%s", err, out.String())
	}
	if j := storedJob(t, home, id); j.State != job.Submitting {
		t.Fatalf("the record was written after all (%s): this test no longer fills the disk", j.State)
	}
	// The queue still reads with the disk full, and shows the job as its
	// node says.
	r = sshqLimited(t, c, home, env, full, "queue", "--json", "-a")
	var got *queueRow
	for _, row := range queueRows(t, r) {
		if row.ID == id {
			got = &row
		}
	}
	if r.code != 0 || got == nil || got.State == "SUBMITTING" || !job.State(got.State).Valid() || !strings.Contains(r.stderr, "warning") || !strings.Contains(r.stderr, "ulimit -f") {
		t.Errorf("queue with ~/.sshq full: exit %d, job %+v\n%s", r.code, got, r.stderr)
	}
	// Once there is room, the record catches up.
	for _, j := range waitJobs(t, c, home, env) {
		if j.ID == id && j.State != "SUCCEEDED" {
			t.Errorf("job %+v", j)
		}
	}
	if j := storedJob(t, home, id); j.State != job.Succeeded {
		t.Errorf("state.json once there is room: %+v", j)
	}
	if r := sshq(t, c, home, env, "logs", fmt.Sprint(id)); !strings.Contains(r.stdout, "payload") {
		t.Errorf("the job did not run in its workdir: %s %s", r.stdout, r.stderr)
	}
}
