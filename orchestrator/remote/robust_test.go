package remote

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/gpu"
	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/orchestrator/job"
)

// These tests put a node in the states a shared GPU box reaches in real
// life: a driver that hangs or half-fails, a busy queue lock, an NFS home,
// jobs that leave daemons behind.

// smiWrap wraps the simulated nvidia-smi: it logs each call (with the job
// whose wrapper made it, "-" for none), fails the
// process query while <node>/fail-apps exists and hangs (ignoring TERM, as
// a process stuck in the driver does) while <node>/hang exists.
const smiWrap = `#!/bin/bash
d=$(dirname "$0")
echo "${SSHQ_JOB_UID:--} $*" >> "$d/../smi-calls"
case "$*" in *--query-compute-apps*) [ -e "$d/../fail-apps" ] && { echo "Unable to determine the device handle for GPU 0000:3B:00.0: Unknown Error"; exit 15; } ;; esac
if [ -e "$d/../hang" ]; then
	echo $$ >> "$d/../hung-pids"
	trap "" HUP TERM INT
	exec sleep 100
fi
exec "$d/nvidia-smi.real" "$@"
`

func wrapSmi(t *testing.T, n *testNode) {
	t.Helper()
	b := filepath.Join(n.dir, "bin")
	if err := os.Rename(filepath.Join(b, "nvidia-smi"), filepath.Join(b, "nvidia-smi.real")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b, "nvidia-smi"), []byte(smiWrap), 0o755); err != nil {
		t.Fatal(err)
	}
	// Hung probes are abandoned by design; the test ends them. Registered
	// after newNode, so it runs before the node's directory goes.
	t.Cleanup(func() {
		b, _ := os.ReadFile(filepath.Join(n.dir, "hung-pids"))
		for _, f := range strings.Fields(string(b)) {
			if p, err := strconv.Atoi(f); err == nil {
				syscall.Kill(p, syscall.SIGKILL)
			}
		}
	})
}

func (n *testNode) setEnv(name, value string) {
	for i, e := range n.env {
		if strings.HasPrefix(e, name+"=") {
			n.env[i] = name + "=" + value
			return
		}
	}
	n.env = append(n.env, name+"="+value)
}

func (n *testNode) touch(name string) {
	n.t.Helper()
	if err := os.WriteFile(filepath.Join(n.dir, name), nil, 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// holdLock holds path's flock from another process for d (or until the
// test ends) and returns once it is held.
func holdLock(t *testing.T, path string, d time.Duration) *exec.Cmd {
	t.Helper()
	// -o: the lock is flock's own, so killing it frees the lock.
	c := exec.Command("flock", "-o", path, "sleep", strconv.FormatFloat(d.Seconds(), 'f', 1, 64))
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-c.Process.Pid, syscall.SIGKILL); c.Wait() })
	waitFor(t, "the lock to be held", func() bool { return exec.Command("flock", "-n", path, "true").Run() != nil })
	return c
}

func TestSubmitWaitsOutASlowDriver(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.A100x2("slowsmi"))
	// Longer than the 10s Submit once gave the wrapper: the job did run,
	// while the controller, told it had failed, had forgotten it.
	gpusim.SetDelay(gpusim.SimDir(n.dir), 11*time.Second)
	if st, err := n.trySubmit(spec("sd-1", 1, `echo ran > "$HOME/ran"`)); err != nil || st != job.Pending {
		t.Fatalf("submit while nvidia-smi takes 11s: %q %v", st, err)
	}
	gpusim.SetDelay(gpusim.SimDir(n.dir), 0)
	n.waitState("sd-1", job.Succeeded)
}

func TestSubmitThatGivesUpLeavesNoJob(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.A100x2("giveup"))
	n.setEnv("SSHQ_SUBMIT_WAIT", "2")
	gpusim.SetDelay(gpusim.SimDir(n.dir), 6*time.Second)
	begin := time.Now()
	_, err := n.trySubmit(spec("gu-1", 1, `echo ran > "$HOME/ran"`))
	var ne *NodeError
	if !errors.As(err, &ne) {
		t.Fatalf("submit did not fail as a refusal although the wrapper took longer than its wait (%v): %v", time.Since(begin), err)
	}
	if !strings.Contains(ne.Msg, "queue") {
		t.Errorf("submit's error does not say why: %q", ne.Msg)
	}
	// What Submit reported must be true: nothing of the job is left to
	// join the queue once the driver answers, and run.
	if left := markedPIDs("gu-1"); len(left) > 0 {
		t.Errorf("processes of the failed submit live on: %v", left)
	}
	gpusim.SetDelay(gpusim.SimDir(n.dir), 0)
	if st := n.job("gu-1"); st.Found {
		t.Errorf("the failed job is still on the node: %+v", st)
	}
	waitFor(t, "the failed job's records to go", func() bool { return len(n.records("w"))+len(n.records("r")) == 0 })
	n.submit(spec("gu-2", 2, "true"))
	n.waitState("gu-2", job.Succeeded)
	if _, err := os.Stat(filepath.Join(n.home(), "ran")); err == nil {
		t.Error("the job whose submit failed ran")
	}
}

func TestHungNvidiaSmiHoldsNothing(t *testing.T) {
	t.Parallel()
	g := gpusim.A100x2("hung")
	n := newNode(t, g)
	wrapSmi(t, n)
	n.setEnv("SSHQ_PROBE_TIMEOUT", "1")
	n.submit(spec("hs-a", 1, blockUntil("a")))
	n.waitState("hs-a", job.Running)
	n.submit(spec("hs-b", 2, "true"))
	n.touch("hang")
	waitFor(t, "a probe to hang", func() bool {
		_, err := os.Stat(filepath.Join(n.dir, "hung-pids"))
		return err == nil
	})
	// Reports answer, and say what is wrong.
	begin := time.Now()
	if js := n.jobs("hs-b"); js["hs-b"].State != job.Pending || js["hs-b"].QueuePosition != 1 {
		t.Errorf("hs-b while nvidia-smi hangs: %+v", js["hs-b"])
	}
	ns := n.node()
	if d := time.Since(begin); d > 8*time.Second {
		t.Errorf("jobs and node took %v with a hung nvidia-smi", d)
	}
	if ns.Driver.State != gpu.StateError || !strings.Contains(ns.Driver.Message, "nvidia-smi") {
		t.Errorf("node reports no nvidia-smi problem: %+v", ns)
	}
	// The waiter dies; its hung nvidia-smi lives on, but holds nothing of
	// the job's: its keeper ends, and its record goes.
	b, err := os.ReadFile(filepath.Join(n.jobDir("hs-b"), "wrapper.pid"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Fields(string(b)) {
		p, _ := strconv.Atoi(f)
		syscall.Kill(p, syscall.SIGKILL)
	}
	waitFor(t, "the dead waiter's record to go", func() bool { return len(n.records("w")) == 0 })
	os.Remove(filepath.Join(n.dir, "hang"))
	n.submit(spec("hs-c", 0, "true"))
	n.waitState("hs-c", job.Succeeded)
	n.release("a")
}

func TestFailedProcessQueryIsNotNoProcesses(t *testing.T) {
	t.Parallel()
	g := gpusim.A100x2("appsfail")
	n := newNode(t, g)
	wrapSmi(t, n)
	foreign := startSleeper(t)
	gpusim.AddProcess(gpusim.SimDir(n.dir), g[0].UUID, foreign.Process.Pid, 1000, "python")
	n.touch("fail-apps")
	af1 := spec("af-1", 1, "true")
	af1.AllowedGPUs = []string{g[0].UUID}
	n.submit(af1)
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		if st := n.job("af-1"); st.State != job.Pending {
			t.Fatalf("af-1 is %s (GPUs %+v) while nvidia-smi cannot say who uses GPU 0", st.State, st.GPUs)
		}
	}
	ns := n.node()
	if len(ns.GPUs) != 2 || !strings.Contains(strings.Join(ns.Errors, " "), "query-compute-apps") {
		t.Errorf("node with a failing process query: %+v", ns)
	}
	if err := os.Remove(filepath.Join(n.dir, "fail-apps")); err != nil {
		t.Fatal(err)
	}
	n.submit(spec("af-2", 1, "true"))
	st := n.waitState("af-2", job.Succeeded)
	if len(st.GPUs) != 1 || st.GPUs[0].UUID != g[1].UUID {
		t.Errorf("af-2 got %+v, want GPU 1 (GPU 0 has a foreign process)", st.GPUs)
	}
	if st := n.job("af-1"); st.State != job.Pending {
		t.Errorf("af-1 is %s while GPU 0 is in use", st.State)
	}
}

// nfsFlock behaves as flock(1) does on an NFS home: an exclusive lock on
// a file open read-only fails with EBADF, and with <node>/nolock present
// (a mount without locking) every lock in $HOME fails.
const nfsFlock = `#!/bin/bash
fd=${!#}
case $fd in *[!0-9]*) exec /usr/bin/flock "$@" ;; esac
f=$(readlink "/proc/$$/fd/$fd")
case $f in "$HOME"/*)
	[ -e "$HOME/../nolock" ] && { echo "flock: failed to get lock: No locks available" >&2; exit 1; }
	flags=$(sed -n 's/^flags:[[:space:]]*//p' "/proc/$$/fdinfo/$fd")
	if [ $((8#$flags & 3)) = 0 ]; then echo "flock: failed to get lock: Bad file descriptor" >&2; exit 1; fi
esac
exec /usr/bin/flock "$@"
`

func TestNFSHomeLocksWork(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.T4x1("nfs"))
	if err := os.WriteFile(filepath.Join(n.dir, "bin", "flock"), []byte(nfsFlock), 0o755); err != nil {
		t.Fatal(err)
	}
	n.submit(spec("nfs-1", 1, blockUntil("1")))
	n.waitState("nfs-1", job.Running)
	// Liveness works too: a killed wrapper is seen dead.
	for _, p := range markedPIDs("nfs-1") {
		syscallKill(p)
	}
	n.waitState("nfs-1", job.Lost)

	n.touch("nolock")
	n.submit(spec("nfs-2", 0, `touch "$HOME/ran"`))
	n.waitState("nfs-2", job.FailedSetup)
	if st := n.job("nfs-2"); st.ExitCode != 3 {
		t.Errorf("nfs-2 exit %d, want 3", st.ExitCode)
	}
	if l := n.log("nfs-2"); !strings.Contains(l, "wrapper.lock") || !strings.Contains(l, "No locks available") {
		t.Errorf("log does not say why the job failed: %q", l)
	}
}

func TestLeftoverProcessesEndWithTheJob(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.A100x2("leftover"))
	n.submit(spec("lo-1", 2, `setsid sleep 300 >/dev/null 2>&1 </dev/null &
nohup bash -c 'trap "" TERM HUP; sleep 301' >/dev/null 2>&1 &
echo started`))
	n.waitState("lo-1", job.Succeeded)
	if left := markedPIDs("lo-1"); len(left) > 0 {
		t.Errorf("processes the job left live on after it ended: %v", left)
	}
	if ns := n.node(); len(ns.Leases) != 0 {
		t.Errorf("the ended job still holds GPUs: %+v", ns.Leases)
	}
	if l := n.log("lo-1"); !strings.Contains(l, "left 2 process(es) running") {
		t.Errorf("the log does not say what was ended: %q", l)
	}
	n.submit(spec("lo-2", 2, "true"))
	n.waitState("lo-2", job.Succeeded)

	// A process of an ended job that escaped the cleanup goes on cancel,
	// which still answers "done".
	c := exec.Command("sleep", "300")
	c.Env = append(os.Environ(), "SSHQ_JOB_UID="+tagged("lo-1"))
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Process.Kill()
	if res := n.cancel(200*time.Millisecond, "lo-1"); res["lo-1"] != "done" {
		t.Errorf("cancel of the ended job: %v", res)
	}
	c.Wait()
	if !processGone(c.Process.Pid) {
		t.Error("cancel of an ended job left its process running")
	}
}

func TestCancelIsNeverSeenLost(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.T4x1("nolost"))
	for i := 0; i < 3; i++ {
		uid := "nl-" + strconv.Itoa(i)
		// Ignores SIGTERM: cancel has to SIGKILL it.
		n.submit(spec(uid, 1, `trap "" TERM; while :; do sleep 0.02; done`))
		n.waitState(uid, job.Running)
		done := make(chan string)
		go func() {
			done <- fmt.Sprint(n.cancel(100*time.Millisecond, uid))
		}()
		var seen []job.State
	poll:
		for {
			select {
			case <-done:
				break poll
			default:
			}
			st := n.job(uid)
			seen = append(seen, st.State)
			if st.State == job.Lost {
				t.Errorf("%s reads LOST while it is being cancelled (%v)", uid, seen)
			}
		}
		if st := n.job(uid); st.State != job.Cancelled || !st.Exited {
			t.Errorf("%s after cancel: %+v", uid, st)
		}
	}
}

func TestCancelTermsProcessesStartedDuringGrace(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.T4x1("late"))
	// On SIGTERM the job starts a helper that cleans up on its own
	// SIGTERM; the job itself then ignores TERM and has to be killed.
	n.submit(spec("lt-1", 1, `trap 'bash -c "trap \"echo cleaned >> \$HOME/late; exit 0\" TERM; while :; do sleep 0.02; done" & trap "" TERM' TERM
touch "$HOME/ready"
while :; do sleep 0.02; done`))
	n.waitState("lt-1", job.Running)
	waitFor(t, "the job's trap", func() bool {
		_, err := os.Stat(filepath.Join(n.home(), "ready"))
		return err == nil
	})
	if res := n.cancel(2*time.Second, "lt-1"); res["lt-1"] != "cancelled" {
		t.Fatalf("cancel: %v", res)
	}
	if b, _ := os.ReadFile(filepath.Join(n.home(), "late")); !strings.Contains(string(b), "cleaned") {
		t.Error("a process started after the first SIGTERM got no SIGTERM of its own, only the SIGKILL")
	}
	if left := markedPIDs("lt-1"); len(left) > 0 {
		t.Errorf("survivors: %v", left)
	}
}

func TestWaitersShareOneProbe(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.T4x1("share"))
	wrapSmi(t, n)
	n.setEnv("SSHQ_POLL_INTERVAL", "0.5")
	n.submit(spec("sh-a", 1, blockUntil("a")))
	n.waitState("sh-a", job.Running)
	const waiters = 10
	for i := 0; i < waiters; i++ {
		n.submit(spec("sh-w"+strconv.Itoa(i), 1, "true"))
	}
	calls := func() int {
		b, _ := os.ReadFile(filepath.Join(n.dir, "smi-calls"))
		return strings.Count(string(b), "\n")
	}
	time.Sleep(time.Second) // let every waiter settle into its polling
	c0, t0 := calls(), time.Now()
	time.Sleep(3 * time.Second)
	c1, d := calls(), time.Since(t0)
	// Unshared: two calls per waiter per poll (~40/s here). Shared: two
	// per poll interval, and some slack for polls that straddle one.
	perPoll := float64(c1-c0) / (d.Seconds() / 0.5)
	t.Logf("%d nvidia-smi calls in %v with %d waiters (%.1f per poll interval)", c1-c0, d, waiters, perPoll)
	if perPoll > 6 {
		t.Errorf("%d waiters ran nvidia-smi %.1f times per poll interval; they should share one probe", waiters, perPoll)
	}
	n.release("a")
	for i := 0; i < waiters; i++ {
		n.waitState("sh-w"+strconv.Itoa(i), job.Succeeded)
	}
}

// fullFS mounts a small tmpfs at dir (root only) and returns a function
// that fills it, as a full /tmp is.
func fullFS(t *testing.T, dir string) func() {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a file system to fill needs root (CI runs as root)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k,mode=1777", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return func() {
		exec.Command("dd", "if=/dev/zero", "of="+filepath.Join(dir, "fill"), "bs=4k").Run()
	}
}

func TestTicketThatCannotBeWrittenFailsTheJob(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.T4x1("ticketfail"))
	full := filepath.Join(n.dir, "full")
	fill := fullFS(t, full)
	n.setEnv("SSHQ_LEASE_DIR", filepath.Join(full, "sshq-leases"))
	n.submit(spec("tf-0", 1, "true"))
	n.waitState("tf-0", job.Succeeded)
	fill()
	n.submit(spec("tf-1", 1, `touch "$HOME/ran"`))
	n.waitState("tf-1", job.FailedSetup)
	if l := n.log("tf-1"); !strings.Contains(l, "full") {
		t.Errorf("log does not say why: %q", l)
	}
	if _, err := os.Stat(filepath.Join(n.home(), "ran")); err == nil {
		t.Error("the job ran without a place in the queue")
	}
}

func TestForgedTicketIsNotReported(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.T4x1("forged"))
	n.submit(spec("fg-0", 0, "true"))
	n.waitState("fg-0", job.Succeeded)
	lk := filepath.Join(n.dir, "forged.lock")
	os.WriteFile(lk, nil, 0o600)
	holdLock(t, lk, 60*time.Second) // a live record, as far as anyone can tell
	f := filepath.Join(n.recordDir(), "w.1700000000000000000.evil")
	rec := "w\tevil\x1b]0;pwned\x07\t1\tmallory\tjob\t1\t1700000000.000\t*\t-\t1\t1\t" + lockID(t, lk) + "\n"
	if err := os.WriteFile(f, []byte(rec), 0o644); err != nil {
		t.Fatal(err)
	}
	ns := n.node()
	if len(ns.Queue) != 0 {
		t.Errorf("a ticket with a forged uid is reported: %+v", ns.Queue)
	}
	// And a controller never passes one on, whatever a node prints.
	out := "SSHQ-BEGIN 1\nticket\t1\tevil\x1b[2J\tu\tn\t1\t~\t*\nticket\t2\tok-1\tu\tn\t1\t~\t*\n" +
		"lease\tGPU-x\t0\tbad\x1b[2J\t1\tu\tn\t~\nSSHQ-END\n"
	ns2, err := queueReport([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(ns2.Queue) != 1 || ns2.Queue[0].JobUID != "ok-1" {
		t.Errorf("queue %+v, want only ok-1", ns2.Queue)
	}
	if len(ns2.Leases) != 1 || ns2.Leases[0].JobUID != "" || ns2.Leases[0].Recorded {
		t.Errorf("lease with a forged uid: %+v, want an unrecorded holder", ns2.Leases)
	}
}
