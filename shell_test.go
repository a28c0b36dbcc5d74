package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// ptyTerm is a tmux pane on this machine running a command: a ptyTerm
// the test types into and reads, as a person would.
type ptyTerm struct {
	t    *testing.T
	sock string
}

// openTerminal runs script with bash in a new pane whose environment
// points sshq at cluster c. The pane stays after the script ends, so its
// last words can still be read.
func openTerminal(t *testing.T, c *sshtest.Cluster, home string, env []string, script string) *ptyTerm {
	t.Helper()
	requireTmux(t)
	// A short path: a tmux socket must fit in sun_path.
	dir, err := os.MkdirTemp("", "tm")
	if err != nil {
		t.Fatal(err)
	}
	term := &ptyTerm{t: t, sock: filepath.Join(dir, "s")}
	sh := filepath.Join(dir, "run.sh")
	if err := os.WriteFile(sh, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("tmux", "-S", term.sock, "-f", "/dev/null", "new-session", "-d", "-x", "160", "-y", "50", "-s", "t", "bash "+sh,
		";", "set-option", "-t", "t", "remain-on-exit", "on")
	cmd.Env = append([]string{"PATH=" + filepath.Dir(sshqBin) + ":" + os.Getenv("PATH"), "HOME=" + home,
		"SSHQ_HOME=" + filepath.Join(home, ".sshq"), "SSHQ_SSH_CONFIG=" + c.ConfigPath, "TERM=xterm-256color"}, env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tmux: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		exec.Command("tmux", "-S", term.sock, "kill-server").Run()
		os.RemoveAll(dir)
	})
	return term
}

func (term *ptyTerm) tmux(args ...string) string {
	term.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", term.sock}, args...)...).CombinedOutput()
	if err != nil {
		term.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// typeLine types a line and Enter.
func (term *ptyTerm) typeLine(s string) {
	term.t.Helper()
	term.tmux("send-keys", "-t", "t", "-l", s)
	term.tmux("send-keys", "-t", "t", "Enter")
}

// screen is what the pane shows, scrollback included.
func (term *ptyTerm) screen() string {
	term.t.Helper()
	return term.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "t")
}

// until waits for want on the screen and returns the screen.
func (term *ptyTerm) until(want string) string {
	term.t.Helper()
	var s string
	deadline := time.Now().Add(45 * time.Second)
	for {
		if s = term.screen(); strings.Contains(s, want) {
			return s
		}
		if time.Now().After(deadline) {
			term.t.Fatalf("the ptyTerm never showed %q; it shows:\n%s", want, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pid is the pane's process: the script's bash, or what it exec'd.
func (term *ptyTerm) pid() int {
	term.t.Helper()
	pid, err := strconv.Atoi(strings.TrimSpace(term.tmux("display-message", "-p", "-t", "t", "#{pane_pid}")))
	if err != nil {
		term.t.Fatal(err)
	}
	return pid
}

// gpuStates is each GPU of the first node as `sshq status` shows it:
// "free", or the holder's job id.
func gpuStates(t *testing.T, c *sshtest.Cluster, home string, env []string) []string {
	t.Helper()
	var st statusJSON
	r := sshq(t, c, home, env, "status", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || len(st.Nodes) == 0 {
		t.Fatalf("status --json: %v\n%s%s", err, r.stdout, r.stderr)
	}
	var out []string
	for _, g := range st.Nodes[0].GPUs {
		switch {
		case g.Holder != nil:
			out = append(out, fmt.Sprintf("#%d", g.Holder.JobID))
		default:
			out = append(out, g.State)
		}
	}
	return out
}

// `sshq shell --gpus 1`: a shell on the node with the GPU it holds, which
// status shows as held until the shell exits; sshq exits with the shell's
// code, and the GPU is free after.
func TestShellHoldsItsGPUAndExitsWithTheShellsCode(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.A100x2(t.Name())})
	term := openTerminal(t, c, home, env, "sshq shell --gpus 1; echo sshq-exit=$?\n")
	term.until("Ctrl-b d detaches")
	// Typed words are split by "" so that only the output matches.
	term.typeLine(`echo CVD=[$CUDA_VISIBLE_DEVICES] JOB=$SSHQ_JOB_ID; echo IN-""$PWD`)
	s := term.until("CVD=[0] JOB=1")
	if !strings.Contains(s, "IN-"+c.Node("box").Home) {
		t.Errorf("the shell does not start in the job's directory ($HOME without a workdir):\n%s", s)
	}
	if g := gpuStates(t, c, home, env); g[0] != "#1" || g[1] != "free" {
		t.Errorf("while the shell runs, status shows GPUs %v; want [#1 free]", g)
	}
	term.typeLine("exit 7")
	s = term.until("sshq-exit=")
	if !strings.Contains(s, "sshq-exit=7") {
		t.Errorf("sshq did not exit with the shell's code 7:\n%s", s)
	}
	if g := gpuStates(t, c, home, env); g[0] != "free" || g[1] != "free" {
		t.Errorf("after the shell exited, status shows GPUs %v; want both free", g)
	}
	if q := queue(t, c, home, env); q[0].State != "FAILED" || q[0].ExitCode == nil || *q[0].ExitCode != 7 {
		t.Errorf("job after the shell: %+v", q[0])
	}
}

// With a task file, setup runs first in the workdir snapshot, and the
// shell starts there with the task's environment.
func TestShellTaskRunsSetupThenShellInTheWorkdir(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.T4x1(t.Name())})
	proj := filepath.Join(home, "proj")
	os.MkdirAll(proj, 0o755)
	os.WriteFile(filepath.Join(proj, "hello.txt"), []byte("synced-content\n"), 0o644)
	writeTask(t, proj, "dev.yaml", "name: dev\nworkdir: .\nenvs:\n  GREETING: hi-from-task\nsetup: |\n  echo setup-output\n  echo made-by-setup > made.txt\n")
	term := openTerminal(t, c, home, env, "cd "+proj+" && sshq shell dev.yaml; echo sshq-exit=$?\n")
	term.until("Ctrl-b d detaches")
	term.typeLine(`cat hello.txt made.txt; echo "G=$GREETING"; echo IN-""$PWD`)
	s := term.until("G=hi-from-task")
	for _, want := range []string{"setup-output", "synced-content", "made-by-setup", "/.sshq/jobs/"} {
		if !strings.Contains(s, want) {
			t.Errorf("the screen lacks %q:\n%s", want, s)
		}
	}
	// Ctrl-b d detaches: sshq exits 0 and the shell goes on, until a
	// cancel ends it.
	term.tmux("send-keys", "-t", "t", "C-b", "d")
	if s := term.until("sshq-exit="); !strings.Contains(s, "sshq-exit=0") || !strings.Contains(s, "`sshq attach 1` returns to it") {
		t.Errorf("sshq after Ctrl-b d:\n%s", s)
	}
	if q := queue(t, c, home, env); q[0].State != "RUNNING" {
		t.Errorf("the detached shell's job: %+v", q[0])
	}
	if r := sshq(t, c, home, env, "cancel", "1"); r.code != 0 || !strings.Contains(r.stdout, "cancelled") {
		t.Errorf("cancel of the shell: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if q := queue(t, c, home, env); q[0].State != "CANCELLED" {
		t.Errorf("the shell's job after cancel: %+v", q[0])
	}
}

// A shell waits in the queue showing its place; Ctrl-C there cancels it.
// One whose client went away while it waited starts with nobody attached,
// and the idle limit ends it and frees its GPU.
func TestShellWaitsInTheQueueAndAnIdleShellFreesItsGPU(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.A100x2(t.Name())})
	flag := filepath.Join(c.Node("box").Home, "release")
	if r := sshq(t, c, home, env, "launch", "-d", "--gpus", "2", "--", fmt.Sprintf("while [ ! -e %s ]; do sleep 0.1; done", flag)); r.code != 0 {
		t.Fatal(r.stderr)
	}
	term := openTerminal(t, c, home, env, "sshq shell --gpus 1; echo sshq-exit=$?\n")
	term.until("waiting for 1 GPU on box, #1 in queue")
	term.tmux("send-keys", "-t", "t", "C-c")
	if s := term.until("sshq-exit="); !strings.Contains(s, "sshq-exit=130") || !strings.Contains(s, "cancelled") {
		t.Errorf("Ctrl-C while waiting:\n%s", s)
	}
	if q := queue(t, c, home, env); q[1].State != "CANCELLED" {
		t.Errorf("the shell's job after Ctrl-C: %+v", q[1])
	}

	term = openTerminal(t, c, home, env, "exec sshq shell --gpus 1 --idle 2s\n")
	term.until("waiting for 1 GPU on box, #1 in queue")
	syscall.Kill(term.pid(), syscall.SIGKILL)
	os.WriteFile(flag, nil, 0o644)
	q := waitJobs(t, c, home, env)
	if q[2].State != "CANCELLED" {
		t.Errorf("the idle shell's job: %+v", q[2])
	}
	if out := sshq(t, c, home, env, "logs", "3").stdout; !strings.Contains(out, "no client attached") {
		t.Errorf("the log does not say why the shell ended:\n%s", out)
	}
	if g := gpuStates(t, c, home, env); g[0] != "free" || g[1] != "free" {
		t.Errorf("after the idle shell ended, status shows GPUs %v; want both free", g)
	}
}

// A client that drops loses nothing: `sshq attach` returns to the same
// shell, and its exit still ends the job with its code.
func TestShellSurvivesADroppedClientAndAttachReturns(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.T4x1(t.Name())})
	term := openTerminal(t, c, home, env, "exec sshq shell --gpus 1\n")
	term.until("Ctrl-b d detaches")
	term.typeLine(`export MARK=kept; echo marked-""ok`)
	term.until("marked-ok")
	syscall.Kill(term.pid(), syscall.SIGKILL)

	back := openTerminal(t, c, home, env, "sshq attach 1; echo attach-exit=$?\n")
	back.typeLine(`echo "$MARK-$((6*7))"`)
	back.until("kept-42")
	back.typeLine("exit 3")
	back.until("attach-exit=")
	if r := sshq(t, c, home, env, "wait", "1"); r.code != 3 {
		t.Errorf("sshq wait after the shell's exit 3: %d %s", r.code, r.stderr)
	}
	if g := gpuStates(t, c, home, env); g[0] != "free" {
		t.Errorf("after the shell exited, status shows GPUs %v", g)
	}
}

// `sshq shell --time` holds the shell to its time like any job: at the
// limit the shell is hung up, sshq says why and exits with TIMEOUT's 124,
// and the GPU is free again.
func TestShellTimeLimitEndsIt(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.T4x1(t.Name())})
	term := openTerminal(t, c, home, env, "sshq shell --gpus 1 --time 3s; echo sshq-exit=$?\n")
	s := term.until("sshq-exit=")
	if !strings.Contains(s, "sshq-exit=124") || !strings.Contains(s, "TIMEOUT") || !strings.Contains(s, "time limit 3s") {
		t.Errorf("sshq shell --time 3s did not end TIMEOUT with 124 and the reason:\n%s", s)
	}
	if q := queue(t, c, home, env); q[0].State != "TIMEOUT" {
		t.Errorf("job after the shell: %+v", q[0])
	}
	if g := gpuStates(t, c, home, env); g[0] != "free" {
		t.Errorf("after the shell's time ran out, status shows GPUs %v; want free", g)
	}
}
