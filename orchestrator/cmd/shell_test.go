package cmd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/store"
)

func shellJob(state job.State, code *int) orchestrator.JobView {
	return orchestrator.JobView{Job: &store.Job{ID: 5, UID: "c-5", Name: "shell", Node: "box", NumGPUs: 1, GPUs: []int{0},
		State: state, ExitCode: code}, NodeReachable: true}
}

// Without a terminal there is nothing to type into: say what works instead,
// before anything is submitted.
func TestShellWithoutTerminalPointsToLaunch(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	code := h.run("shell", "--gpus", "1")
	if code != ExitUsage || !strings.Contains(h.err.String(), "sshq launch") || h.opened != 0 {
		t.Errorf("exit %d, controller opened %d times, stderr %s", code, h.opened, h.err.String())
	}
}

// The shell's place in the queue is shown while it waits; sshq exits with
// the shell's own exit code.
func TestShellShowsItsPlaceAndExitsWithTheShellsCode(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.inTTY, h.outTTY = true, true
	var req orchestrator.ShellRequest
	h.fake.shell = func(_ context.Context, r orchestrator.ShellRequest) (*orchestrator.ShellView, error) {
		req = r
		two, one := 2, 1
		w := shellJob(job.Pending, nil)
		w.QueuePosition = &two
		r.Waiting(w)
		r.Waiting(w) // unchanged: printed once
		w.QueuePosition = &one
		r.Waiting(w)
		r.Attaching(shellJob(job.Running, nil))
		seven := 7
		return &orchestrator.ShellView{Job: shellJob(job.Failed, &seven), Ended: true, ExitCode: 7}, nil
	}
	code := h.run("shell", "--gpus", "A100:1", "--node", "box")
	errs := h.err.String()
	if code != 7 {
		t.Errorf("exit %d, want the shell's 7\n%s", code, errs)
	}
	if strings.Count(errs, "waiting for 1 GPU on box, #2 in queue") != 1 || !strings.Contains(errs, "#1 in queue") {
		t.Errorf("the queue place is not shown once per change:\n%s", errs)
	}
	if !strings.Contains(errs, "sshq attach 5") || !strings.Contains(errs, "GPU 0") {
		t.Errorf("no word on how to come back, or which GPU:\n%s", errs)
	}
	if req.Node != "box" || req.Idle != time.Hour || req.Task.Run != orchestrator.ShellRun ||
		len(req.Task.Resources.Accelerators) != 1 || req.Task.Resources.Accelerators[0].Type != "A100" || req.Task.Name != "shell" {
		t.Errorf("request: node %q idle %s run %q accels %+v name %q", req.Node, req.Idle, req.Task.Run, req.Task.Resources.Accelerators, req.Task.Name)
	}
}

// A detached client leaves the shell running: exit 0, and how to return.
func TestShellDetachedSaysHowToReturn(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.inTTY, h.outTTY = true, true
	h.fake.shell = func(_ context.Context, r orchestrator.ShellRequest) (*orchestrator.ShellView, error) {
		if r.Idle != 0 {
			t.Errorf("--idle 0 arrived as %s", r.Idle)
		}
		return &orchestrator.ShellView{Job: shellJob(job.Running, nil)}, nil
	}
	if code := h.run("shell", "--idle", "0"); code != 0 || !strings.Contains(h.err.String(), "`sshq attach 5` returns") ||
		!strings.Contains(h.err.String(), "never ends by itself") {
		t.Errorf("exit %d\n%s", code, h.err.String())
	}
}

// A task file brings its setup and environment; its run gives way to the
// shell, with a note. A command is not what shell takes.
func TestShellTaskFileAndRefusedArguments(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "dev.yaml")
	os.WriteFile(p, []byte("name: dev\nenvs:\n  A: b\nsetup: echo prepare\nrun: python train.py\n"), 0o644)
	h := newHarness(t)
	h.inTTY, h.outTTY = true, true
	var req orchestrator.ShellRequest
	h.fake.shell = func(_ context.Context, r orchestrator.ShellRequest) (*orchestrator.ShellView, error) {
		req = r
		zero := 0
		return &orchestrator.ShellView{Job: shellJob(job.Succeeded, &zero), Ended: true}, nil
	}
	if code := h.run("shell", p, "--env", "C=d"); code != 0 {
		t.Fatalf("exit %d\n%s", code, h.err.String())
	}
	if req.Task.Name != "dev" || req.Task.Setup != "echo prepare" || req.Task.Run != orchestrator.ShellRun || req.Task.Envs["A"] != "b" || req.Task.Envs["C"] != "d" {
		t.Errorf("task: %+v", req.Task)
	}
	if !strings.Contains(h.err.String(), "run is not run") {
		t.Errorf("no note that the run gives way to the shell:\n%s", h.err.String())
	}
	for _, args := range [][]string{{"shell", "python", "x.py"}, {"shell", "missing.yaml"}, {"shell", "--idle", "-1s"}} {
		h := newHarness(t)
		h.inTTY, h.outTTY = true, true
		if code := h.run(args...); code != ExitUsage || h.opened != 0 {
			t.Errorf("sshq %s: exit %d, opened %d\n%s", strings.Join(args, " "), code, h.opened, h.err.String())
		}
	}
}

// Setup that fails ends the job before any shell: its code, and where to
// read why.
func TestShellSetupFailureSaysWhereToLook(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.inTTY, h.outTTY = true, true
	h.fake.shell = func(_ context.Context, r orchestrator.ShellRequest) (*orchestrator.ShellView, error) {
		three := 3
		return &orchestrator.ShellView{Job: shellJob(job.FailedSetup, &three), Ended: true, ExitCode: 3}, nil
	}
	if code := h.run("shell"); code != 3 || !strings.Contains(h.err.String(), "sshq logs 5") {
		t.Errorf("exit %d\n%s", code, h.err.String())
	}
}

// --mem, --time and --cpus reach the shell's job as they reach a launch's;
// a shell a limit ended says which, and exits with the limit's code.
func TestShellLimits(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.inTTY, h.outTTY = true, true
	var req orchestrator.ShellRequest
	h.fake.shell = func(_ context.Context, r orchestrator.ShellRequest) (*orchestrator.ShellView, error) {
		req = r
		code := 124
		v := shellJob(job.Timeout, &code)
		v.Reason = "time limit 4h reached (--time)"
		return &orchestrator.ShellView{Job: v, Ended: true, ExitCode: code}, nil
	}
	code := h.run("shell", "--gpus", "1", "--mem", "32G", "--time", "4h", "--cpus", "2")
	if code != 124 || !strings.Contains(h.err.String(), "TIMEOUT") || !strings.Contains(h.err.String(), "time limit 4h") {
		t.Errorf("exit %d, want TIMEOUT's 124 and the reason\n%s", code, h.err.String())
	}
	l := req.Options.Limits
	if l.MemMiB == nil || *l.MemMiB != 32*1024 || l.Time == nil || *l.Time != 4*time.Hour || l.CPUs != 2 {
		t.Errorf("limits arrived as %+v", l)
	}
	for _, args := range [][]string{{"shell", "--mem", "lots"}, {"shell", "--time", "soon"}, {"shell", "--cpus", "-1"}} {
		h := newHarness(t)
		h.inTTY, h.outTTY = true, true
		if code := h.run(args...); code != ExitUsage || h.opened != 0 {
			t.Errorf("sshq %s: exit %d, opened %d\n%s", strings.Join(args, " "), code, h.opened, h.err.String())
		}
	}
}
