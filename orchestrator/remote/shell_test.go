package remote

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/orchestrator/job"
)

// keys types into the job's tmux pane, as a person attached to it would.
func (n *testNode) keys(uid string, keys ...string) {
	n.t.Helper()
	if _, e, rc := n.run("tmux -L sshq send-keys -t ="+tagged(uid)+": "+strings.Join(keys, " "), nil); rc != 0 {
		n.t.Fatalf("send-keys: %s", e)
	}
}

// screen returns what the job's pane shows once want appears there.
func (n *testNode) screen(uid, want string) string {
	n.t.Helper()
	var screen string
	waitFor(n.t, "the pane to show "+want, func() bool {
		screen, _, _ = n.run("tmux -L sshq capture-pane -p -t ="+tagged(uid)+":", nil)
		return strings.Contains(screen, want)
	})
	return screen
}

// A shell job: setup runs first, then the pane holds a login shell in the
// job's workdir with its environment and GPUs, and the shell's exit status
// is the job's.
func TestShellJobRunsALoginShellInThePane(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.A100x2("shell"))
	s := spec("sh-1", 1, "# sshq shell")
	s.Setup = "echo setup-said-hi; touch \"$HOME/setup-ran\""
	s.Env = []EnvVar{{"GREETING", "hello there"}}
	s.Shell = &ShellSpec{}
	n.submit(s)
	n.waitState("sh-1", job.Running)
	n.screen("sh-1", "setup-said-hi")
	// Typed words are split by "" so that only the output matches.
	n.keys("sh-1", `'echo CVD=[$CUDA_VISIBLE_DEVICES] "$GREETING" in $PWD; case $0 in -*) echo LOG""IN;; esac' Enter`)
	screen := n.screen("sh-1", "CVD=[0]")
	if !strings.Contains(screen, "hello there in "+n.home()) {
		t.Errorf("the shell lacks the job's env or is not in its directory:\n%s", screen)
	}
	n.screen("sh-1", "LOGIN")
	if _, err := os.Stat(filepath.Join(n.home(), "setup-ran")); err != nil {
		t.Error("setup did not run before the shell")
	}
	// A foreground command gets Ctrl-C; the shell and the job survive it.
	n.keys("sh-1", "'sleep 100' Enter")
	waitFor(t, "sleep to start", func() bool { return hasSleep("sh-1") })
	n.keys("sh-1", "C-c")
	n.keys("sh-1", `'echo after-""ctrl-c' Enter`)
	n.screen("sh-1", "after-ctrl-c")
	if st := n.job("sh-1"); st.State != job.Running {
		t.Fatalf("Ctrl-C in the shell ended the job: %+v", st)
	}
	n.keys("sh-1", "'exit 7' Enter")
	st := n.waitState("sh-1", job.Failed)
	if st.ExitCode != 7 {
		t.Errorf("exit code %d, want the shell's 7", st.ExitCode)
	}
	if ns := n.node(); len(ns.Leases) != 0 {
		t.Errorf("the shell's GPU is still leased after it exited: %+v", ns.Leases)
	}
}

func hasSleep(uid string) bool {
	for _, p := range markedPIDs(uid) {
		if b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p), "comm")); strings.TrimSpace(string(b)) == "sleep" {
			return true
		}
	}
	return false
}

// A shell nobody is attached to ends after its idle limit and frees its
// GPU; its log says why.
func TestIdleShellEndsAndFreesItsGPU(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.A100x2("idle"))
	s := spec("idle-1", 2, "# sshq shell")
	s.Shell = &ShellSpec{Idle: time.Second}
	n.submit(s)
	st := n.waitState("idle-1", job.Cancelled)
	if !st.Exited {
		t.Errorf("no exit record: %+v", st)
	}
	if log := n.log("idle-1"); !strings.Contains(log, "no client attached") {
		t.Errorf("the log does not say why the shell ended:\n%s", log)
	}
	if ns := n.node(); len(ns.Leases) != 0 {
		t.Errorf("GPUs still leased after the idle shell ended: %+v", ns.Leases)
	}
	if pids := markedPIDs("idle-1"); len(pids) != 0 {
		t.Errorf("processes of the idle shell left running: %v", pids)
	}
}

// An interactive shell ignores SIGTERM; cancel must not wait out its
// grace and SIGKILL it: the shell is hung up, as a closed terminal would,
// and ends with SIGHUP's status.
func TestCancelHangsUpTheShell(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.A100x2("cancel"))
	s := spec("shc-1", 1, "# sshq shell")
	s.Shell = &ShellSpec{Idle: time.Hour}
	n.submit(s)
	n.waitState("shc-1", job.Running)
	n.keys("shc-1", `'echo up-""and-running' Enter`)
	n.screen("shc-1", "up-and-running")
	if o := n.cancel(30*time.Second, "shc-1"); o["shc-1"] != "cancelled" {
		t.Fatalf("cancel: %+v", o)
	}
	st := n.job("shc-1")
	if st.State != job.Cancelled || st.ExitCode != 129 {
		t.Errorf("after cancel: %s, exit code %d; want CANCELLED with 129 (hung up, not killed after the grace)", st.State, st.ExitCode)
	}
	if pids := markedPIDs("shc-1"); len(pids) != 0 {
		t.Errorf("processes of the cancelled shell left running: %v", pids)
	}
}

// A shell is held to --time like any job: an interactive shell ignores
// SIGTERM, so it is hung up, and the job ends TIMEOUT without waiting for
// the SIGKILL; nothing of it is left, and its GPU is free.
func TestShellTimeLimit(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.A100x2("shtime"))
	s := spec("sht-1", 1, "# sshq shell")
	s.Shell = &ShellSpec{Idle: time.Hour}
	s.TimeLimit = 2 * time.Second
	n.submit(s)
	st := n.waitState("sht-1", job.Timeout)
	if st.ExitCode != 124 || !strings.Contains(st.Reason, "time limit 2s") {
		t.Errorf("exit %d, reason %q", st.ExitCode, st.Reason)
	}
	if last := lastLine(n.log("sht-1")); !strings.Contains(last, "TIMEOUT") || strings.Contains(last, "SIGKILL") {
		t.Errorf("last line %q: want TIMEOUT, the shell ended by its hangup, not SIGKILL", last)
	}
	waitFor(t, "the shell's processes to end", func() bool { return len(markedPIDs("sht-1")) == 0 })
	if ns := n.node(); len(ns.Leases) != 0 {
		t.Errorf("the shell's GPU is still leased: %+v", ns.Leases)
	}
}

// A shell is held to --mem like any job: what is typed there and grows
// past the limit ends the job OUT_OF_MEMORY, with the limit in its reason.
func TestShellMemLimit(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.A100x2("shmem"))
	s := spec("shm-1", 1, "# sshq shell")
	s.Shell = &ShellSpec{Idle: time.Hour}
	s.MemLimitMiB = 300
	n.submit(s)
	n.waitState("shm-1", job.Running)
	n.keys("shm-1", `'python3 -c "import time; held = [bytearray(50 << 20) for _ in range(60)]; time.sleep(60)"' Enter`)
	st := n.waitState("shm-1", job.OutOfMemory)
	if st.ExitCode != 137 || !strings.Contains(st.Reason, "300 MiB") {
		t.Errorf("exit %d, reason %q", st.ExitCode, st.Reason)
	}
	waitFor(t, "the shell's processes to end", func() bool { return len(markedPIDs("shm-1")) == 0 })
	if ns := n.node(); len(ns.Leases) != 0 {
		t.Errorf("the shell's GPU is still leased: %+v", ns.Leases)
	}
}
