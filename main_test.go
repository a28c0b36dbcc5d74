package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// sshqBin is the sshq binary built once for the package: tests run it as a
// user would, as a separate process with its own environment.
var sshqBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sshq-bin")
	if err != nil {
		panic(err)
	}
	sshqBin = filepath.Join(dir, "sshq")
	if out, err := exec.Command("go", "build", "-o", sshqBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building sshq: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	closeExamples()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// sshq runs the binary with a clean environment pointing at cluster c.
func sshq(t *testing.T, c *sshtest.Cluster, home string, extraEnv []string, args ...string) result {
	t.Helper()
	return sshqIn(t, "", c, home, extraEnv, args...)
}

// sshqIn is sshq run from directory dir ("" is the test's own).
func sshqIn(t *testing.T, dir string, c *sshtest.Cluster, home string, extraEnv []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	cmd := exec.CommandContext(ctx, sshqBin, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "SSHQ_HOME=" + filepath.Join(home, ".sshq")}
	if c != nil {
		cmd.Env = append(cmd.Env, "SSHQ_SSH_CONFIG="+c.ConfigPath)
	}
	cmd.Env = append(cmd.Env, extraEnv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		// Errorf, not Fatalf: some tests run sshq from other goroutines.
		t.Errorf("sshq %v still running after %s, killed\n%s\n%s", args, patience, out.String(), errb.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("sshq %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

// A stopped node is reported down, the others checked, and the command
// ends (a hang would run into sshq's two-minute deadline in this file).
func TestNodesReportsStoppedNode(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 3})
	c.Nodes[2].Stop()
	home := t.TempDir()
	nodes := "SSHQ_NODES=node1,node2,node3"
	r := sshq(t, c, home, []string{nodes}, "nodes")
	if r.code != 3 {
		t.Errorf("exit code %d, want 3 (a node is down)\n%s%s", r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "NODE") {
		t.Fatalf("want a header and 3 rows, got:\n%s", r.stdout)
	}
	for i, want := range []string{"node1 ", "node2 ", "node3 "} {
		if !strings.HasPrefix(lines[i+1], want) {
			t.Errorf("row %d: %q", i+1, lines[i+1])
		}
	}
	if !strings.Contains(lines[3], "down") || !strings.Contains(lines[3], "refused") {
		t.Errorf("stopped node row: %q", lines[3])
	}
	// Test nodes have no nvidia-smi: reachable but flagged, never "down".
	if strings.Contains(lines[1], "down") || !strings.Contains(lines[1], "nvidia-smi") {
		t.Errorf("healthy node row: %q", lines[1])
	}

	r = sshq(t, c, home, []string{nodes}, "nodes", "--json")
	var got struct {
		Nodes []struct {
			Name      string `json:"name"`
			Reachable bool   `json:"reachable"`
			Tmux      bool   `json:"tmux"`
			Error     string `json:"error"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("--json does not parse: %v\n%s", err, r.stdout)
	}
	if len(got.Nodes) != 3 || !got.Nodes[0].Reachable || !got.Nodes[0].Tmux || got.Nodes[2].Reachable || got.Nodes[2].Error == "" {
		t.Errorf("json: %+v", got.Nodes)
	}
}

func TestNodesResolveJSON(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 2})
	c.AddHost("Host via-jump\n  HostName 10.9.9.9\n  Port 2022\n  ProxyJump node1\n")
	r := sshq(t, c, t.TempDir(), nil, "--nodes", "node*,via-jump", "nodes", "--resolve", "--json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var got struct {
		Nodes []struct {
			Name          string   `json:"name"`
			HostName      string   `json:"hostname"`
			Port          int      `json:"port"`
			User          string   `json:"user"`
			IdentityFiles []string `json:"identity_files"`
			ProxyJump     string   `json:"proxy_jump"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatal(err, r.stdout)
	}
	if len(got.Nodes) != 3 {
		t.Fatalf("nodes: %+v", got.Nodes)
	}
	n1 := got.Nodes[0]
	if n1.Name != "node1" || n1.HostName != c.Nodes[0].Addr || n1.Port != c.Nodes[0].Port || n1.User != c.User ||
		len(n1.IdentityFiles) != 1 || n1.IdentityFiles[0] != c.KeyPath {
		t.Errorf("node1: %+v", n1)
	}
	if j := got.Nodes[2]; j.Name != "via-jump" || j.HostName != "10.9.9.9" || j.Port != 2022 || j.ProxyJump != "node1" {
		t.Errorf("via-jump: %+v", j)
	}
}

func TestNoNodesChosenExplainsHow(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 2})
	home := t.TempDir()
	r := sshq(t, c, home, nil, "nodes")
	if r.code != 2 || !strings.Contains(r.stderr, "sshq init node1") || !strings.Contains(r.stderr, "node1, node2") {
		t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	r = sshq(t, c, home, nil, "init", "node*")
	if r.code != 0 || !strings.Contains(r.stdout, "2 node(s)") {
		t.Fatalf("init: %d %s %s", r.code, r.stdout, r.stderr)
	}
	r = sshq(t, c, home, nil, "nodes", "--json")
	if r.code != 0 || strings.Count(r.stdout, `"reachable": true`) != 2 {
		t.Fatalf("after init: %d %s %s", r.code, r.stdout, r.stderr)
	}
}

type statusJSON struct {
	Nodes []struct {
		Name            string  `json:"name"`
		Reachable       bool    `json:"reachable"`
		Error           string  `json:"error"`
		CPUs            int     `json:"cpus"`
		Load1           float64 `json:"load1"`
		MemTotalMiB     int     `json:"mem_total_mib"`
		MemAvailableMiB int     `json:"mem_available_mib"`
		DiskFreeMiB     int     `json:"disk_free_mib"`
		GPUState        string  `json:"gpu_state"`
		GPUMessage      string  `json:"gpu_message"`
		GPUs            []struct {
			Index          int    `json:"index"`
			UUID           string `json:"uuid"`
			Name           string `json:"name"`
			MemoryTotalMiB int    `json:"memory_total_mib"`
			MemoryUsedMiB  int    `json:"memory_used_mib"`
			UtilizationPct *int   `json:"utilization_pct"`
			State          string `json:"state"`
			Holder         *struct {
				JobID int    `json:"job_id"`
				Name  string `json:"name"`
				User  string `json:"user"`
			} `json:"holder"`
			Processes []struct {
				PID           int    `json:"pid"`
				User          string `json:"user"`
				UsedMemoryMiB int    `json:"used_memory_mib"`
			} `json:"processes"`
		} `json:"gpus"`
		Queue []struct {
			Position int    `json:"position"`
			Name     string `json:"name"`
		} `json:"queue"`
	} `json:"nodes"`
}

func TestStatusMatchesSimulatedTruth(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Names: []string{"h100", "ws", "broken", "gone"}})
	h100 := gpusim.H100x8(t.Name())
	ws := gpusim.WorkstationWithDisplay(t.Name())
	for n, gpus := range map[string][]gpusim.GPU{"h100": h100, "ws": ws, "broken": gpusim.T4x1(t.Name())} {
		if err := gpusim.Install(c.Node(n).Dir, gpus); err != nil {
			t.Fatal(err)
		}
	}
	gpusim.SetMode(c.Node("broken").SimDir, gpusim.ModeDriverFailed)
	c.Node("gone").Stop()
	// Someone ran a job by hand on h100's GPU 0.
	foreign := exec.Command("sleep", "300")
	if err := foreign.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { foreign.Process.Kill(); foreign.Wait() })
	gpusim.AddProcess(c.Node("h100").SimDir, h100[0].UUID, foreign.Process.Pid, 1234, "python")

	r := sshq(t, c, t.TempDir(), []string{"SSHQ_NODES=h100,ws,broken,gone"}, "status", "--json")
	if r.code != 3 {
		t.Errorf("exit code %d, want 3 (a node is down); stderr %s", r.code, r.stderr)
	}
	var got statusJSON
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	if len(got.Nodes) != 4 {
		t.Fatalf("want 4 nodes (the down one listed, not dropped), got %d", len(got.Nodes))
	}
	for i, truth := range [][]gpusim.GPU{h100, ws} {
		n := got.Nodes[i]
		if !n.Reachable || n.GPUState != "ok" || len(n.GPUs) != len(truth) {
			t.Fatalf("%s: reachable=%v state=%s gpus=%d want %d (%s)", n.Name, n.Reachable, n.GPUState, len(n.GPUs), len(truth), n.GPUMessage)
		}
		if n.CPUs < 1 || n.MemTotalMiB < 1 || n.MemAvailableMiB < 1 || n.DiskFreeMiB < 1 || n.Load1 < 0 {
			t.Errorf("%s host facts: %+v", n.Name, n)
		}
		for j, g := range n.GPUs {
			want := truth[j]
			wantUsed := want.MemoryUsedMiB
			wantState := "free"
			if n.Name == "h100" && j == 0 {
				wantUsed += 1234
				wantState = "foreign"
			}
			if g.Index != j || g.UUID != want.UUID || g.Name != want.Name || g.MemoryTotalMiB != want.MemoryTotalMiB ||
				g.MemoryUsedMiB != wantUsed || g.UtilizationPct == nil || *g.UtilizationPct != want.UtilizationPct || g.State != wantState {
				t.Errorf("%s GPU %d: got %+v, want %+v state %s used %d", n.Name, j, g, want, wantState, wantUsed)
			}
		}
	}
	g0 := got.Nodes[0].GPUs[0]
	if len(g0.Processes) != 1 || g0.Processes[0].PID != foreign.Process.Pid || g0.Processes[0].User != c.User || g0.Processes[0].UsedMemoryMiB != 1234 {
		t.Errorf("foreign process: %+v", g0.Processes)
	}
	if b := got.Nodes[2]; !b.Reachable || b.GPUState != "driver-failed" || len(b.GPUs) != 0 || !strings.Contains(b.GPUMessage, "driver") {
		t.Errorf("broken driver node: %+v", b)
	}
	if d := got.Nodes[3]; d.Reachable || !strings.Contains(d.Error, "refused") {
		t.Errorf("down node: %+v", d)
	}

	// The human view carries the same facts.
	r = sshq(t, c, t.TempDir(), []string{"SSHQ_NODES=h100,ws,broken,gone"}, "status")
	for _, want := range []string{"h100  up", "NVIDIA H100 80GB HBM3", fmt.Sprintf("foreign: pid %d %s", foreign.Process.Pid, c.User), "gone  down", "GPUs: 11 free / 12 total"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status output lacks %q:\n%s", want, r.stdout)
		}
	}
}

// The README's first command, as a new user runs it: every step must end
// as the tour says, whatever the machine's load.
func TestDemoTourEndToEnd(t *testing.T) {
	t.Parallel()
	requireTmux(t)
	r := sshq(t, nil, t.TempDir(), nil, "demo", "--tour", "--dir", filepath.Join(t.TempDir(), "demo"))
	if r.code != 0 || !strings.Contains(r.stdout, "Tour done") {
		t.Fatalf("tour exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	me := localUserName(t)
	// While train-big runs, status shows it as the holder of both A100s,
	// and the A100 job behind it first in demo-a100's queue.
	if n := len(linesContaining(r.stdout, fmt.Sprintf("#2 train-big (%s)", me))); n != 2 {
		t.Errorf("status shows train-big (%s) holding %d GPUs, want both A100s:\n%s", me, n, r.stdout)
	}
	if !containsRow(r.stdout, "1", "waits-for-a100", me) {
		t.Errorf("status does not list waits-for-a100 first in the queue:\n%s", r.stdout)
	}
	if w := linesContaining(r.stdout, "waits-for-a100  "); len(w) == 0 || !strings.Contains(w[0], "PENDING (#1 in queue)") {
		t.Errorf("sshq queue does not show waits-for-a100 waiting first: %q", w)
	}
	if rows := linesContaining(r.stdout, "CANCELLED"); len(rows) != 1 || !containsRow(rows[0], "2", "train-big") {
		t.Errorf("sshq queue -a does not show train-big CANCELLED:\n%s", r.stdout)
	}
	for _, want := range []string{"#2 train-big: cancelled", "waits-for-a100: SUCCEEDED", "GPUs: 7 free / 7 total"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("tour output lacks %q:\n%s", want, r.stdout)
		}
	}
}

// The demo runs until Ctrl-C, or until its terminal closes (SIGHUP), and
// then stops its nodes and every job they ran.
func TestDemoServesUntilInterrupted(t *testing.T) {
	t.Parallel()
	requireTmux(t)
	for name, sig := range map[string]os.Signal{"SIGINT": os.Interrupt, "SIGHUP": syscall.SIGHUP} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			demoUntil(t, sig)
		})
	}
}

func demoUntil(t *testing.T, sig os.Signal) {
	home := t.TempDir()
	cmd := exec.Command(sshqBin, "demo", "--dir", filepath.Join(home, "demo"))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home}
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFor(t, "demo prints its exports", func() bool { return strings.Contains(out.String(), "Ctrl-C stops") })
	var exports []string
	for _, line := range strings.Split(out.String(), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "export "); ok {
			exports = strings.Fields(rest)
		}
	}
	if len(exports) != 3 {
		t.Fatalf("exports: %q\n%s", exports, out.String())
	}
	r := sshq(t, nil, home, exports, "launch", "-d", "--gpus", "A100:1", "--", "sleep 1000")
	if r.code != 0 {
		t.Fatalf("launch on the demo: %s", r.stderr)
	}
	// A detached launch returns once the job is in the node's queue; it
	// takes the free A100 at its first decision.
	var st statusJSON
	waitFor(t, "the job to lease an A100 on the demo", func() bool {
		st = statusJSON{}
		json.Unmarshal([]byte(sshq(t, nil, home, exports, "status", "--json").stdout), &st)
		return len(st.Nodes) == 3 && st.Nodes[0].Reachable && st.Nodes[0].GPUs[0].State == "leased"
	})
	cmd.Process.Signal(sig)
	if err := cmd.Wait(); err != nil {
		t.Errorf("demo after %s: %v\n%s", sig, err, out.String())
	}
	// Its nodes and jobs are gone with it.
	r = sshq(t, nil, home, exports, "status", "--json")
	if r.code != 3 {
		t.Errorf("nodes still answer after the demo stopped: %s", r.stdout)
	}
	if b, _ := exec.Command("pgrep", "-f", "sleep 1000").Output(); len(b) > 0 {
		for _, p := range strings.Fields(string(b)) {
			if env, _ := os.ReadFile("/proc/" + p + "/environ"); strings.Contains(string(env), home) {
				t.Errorf("job process %s outlived the demo", p)
			}
		}
	}
}

func TestStatusWatchRefreshesUntilInterrupted(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1})
	gpusim.Install(c.Nodes[0].Dir, gpusim.T4x1(t.Name()))
	home := t.TempDir()
	cmd := exec.Command(sshqBin, "status", "--watch", "0.2")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "SSHQ_SSH_CONFIG=" + c.ConfigPath, "SSHQ_NODES=node1"}
	var out syncBuffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "three refreshes", func() bool { return strings.Count(out.String(), "Tesla T4") >= 3 })
	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); cmd.ProcessState.ExitCode() != 130 {
		t.Errorf("watch ended with %v after Ctrl-C, want exit 130", err)
	}
	if strings.Contains(out.String(), "\x1b[") {
		t.Error("escape sequences written to a pipe")
	}
}

func TestAttachRefusesEndedJob(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.T4x1(t.Name())})
	if r := sshq(t, c, home, env, "launch", "--", "true"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	r := sshq(t, c, home, env, "attach", "1")
	if r.code != 2 || !strings.Contains(r.stderr, "sshq logs 1") {
		t.Errorf("attach to an ended job: %d %s", r.code, r.stderr)
	}
	r = sshq(t, c, home, env, "logs", "99")
	if r.code != 2 || !strings.Contains(r.stderr, "sshq queue") {
		t.Errorf("unknown job: %d %s", r.code, r.stderr)
	}
}

// requireTmux skips a demo test where tmux is missing, except in CI, where
// nothing may be skipped.
func requireTmux(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		msg := "tmux not installed: `sudo apt-get install -y tmux`"
		if os.Getenv("CI") != "" {
			t.Fatal(msg + " (CI is set: nothing may be skipped)")
		}
		t.Skip(msg)
	}
}

// The completion script re-runs the words typed so far: after `--` that
// must never launch the job.
func TestCompletionNeverLaunches(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.T4x1(t.Name())})
	sshq(t, c, home, env, "launch", "--gpus", "1", "--", "sleep", "5", "--generate-bash-completion")
	if _, err := os.Stat(filepath.Join(home, ".sshq", "state.json")); err == nil {
		if q := queue(t, c, home, env); len(q) != 0 {
			t.Fatalf("completion launched a job: %+v", q)
		}
	}
	if r := sshq(t, c, home, env, "launch", "-d", "--", "true"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	if r := sshq(t, c, home, env, "logs", "--generate-bash-completion"); strings.TrimSpace(r.stdout) != "1" {
		t.Errorf("logs completion offers %q, want the job id 1", r.stdout)
	}
	if r := sshq(t, nil, home, nil, "completion", "bash"); r.code != 0 || !strings.Contains(r.stdout, "complete -o default -F _sshq_complete sshq") {
		t.Errorf("completion bash: %d %s", r.code, r.stdout)
	}
}

// `sshq nodes` says whether root made a node's lease directory (the
// admin step); a node without it is as ready.
func TestNodesSayWhetherTheLeaseDirIsProvisioned(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("a root-owned lease directory needs root (CI runs as root)")
	}
	c := sshtest.Start(t, sshtest.Options{Nodes: 2})
	d := c.Nodes[1].LeaseDir
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	r := sshq(t, c, t.TempDir(), []string{"SSHQ_NODES=node1,node2"}, "nodes", "--json")
	var got struct {
		Nodes []struct {
			Name        string `json:"name"`
			Ready       bool   `json:"ready"`
			Provisioned bool   `json:"lease_dir_provisioned"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got.Nodes) != 2 {
		t.Fatalf("nodes --json: %v\n%s%s", err, r.stdout, r.stderr)
	}
	if got.Nodes[0].Provisioned || !got.Nodes[1].Provisioned {
		t.Errorf("provisioned: %+v, want node2 only", got.Nodes)
	}
	r = sshq(t, c, t.TempDir(), []string{"SSHQ_NODES=node1,node2"}, "nodes")
	if !strings.Contains(r.stdout, "provisioned") || !strings.Contains(r.stdout, "shared") {
		t.Errorf("nodes table does not say which node has a provisioned lease directory:\n%s", r.stdout)
	}
}

// A node whose nvidia-smi hangs (`exec sleep`, as a wedged driver does) is
// up: status says nvidia-smi hung, within the connect timeout and a few
// seconds, and jobs without GPUs are placed and run there.
func TestHungNvidiaSmiReadsAsSuch(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Names: []string{"box", "ok"}, Env: map[string]string{"SSHQ_POLL_INTERVAL": "0.2"}})
	for _, n := range c.Nodes {
		if err := gpusim.Install(n.Dir, gpusim.T4x1(t.Name()+n.Name)); err != nil {
			t.Fatal(err)
		}
	}
	hang := "#!/bin/sh\nexec sleep 100000\n"
	if err := os.WriteFile(filepath.Join(c.Node("box").BinDir, "nvidia-smi"), []byte(hang), 0o755); err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	env := []string{"SSHQ_NODES=box,ok"}
	for i := 0; i < 2; i++ {
		// The node gives nvidia-smi its report bound (5 s) here, not the
		// waiters' 20 s; the message names the bound that applied. No
		// clock is read: a loaded machine only makes it slower.
		r := sshq(t, c, home, env, "status", "--json")
		var st struct {
			Nodes []struct {
				Name       string `json:"name"`
				Reachable  bool   `json:"reachable"`
				GPUMessage string `json:"gpu_message"`
			} `json:"nodes"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || len(st.Nodes) != 2 {
			t.Fatalf("status --json: %v\n%s%s", err, r.stdout, r.stderr)
		}
		if box := st.Nodes[0]; !box.Reachable || !strings.Contains(box.GPUMessage, "hung") || !strings.Contains(box.GPUMessage, "SSHQ_REPORT_PROBE_TIMEOUT") {
			t.Errorf("box with a hung nvidia-smi: %+v, want up with nvidia-smi hung", box)
		}
		if r.code != 0 {
			t.Errorf("status exit %d with every node up\n%s", r.code, r.stderr)
		}
	}
	// A job without GPUs goes there, pinned, or placed by asking both
	// nodes.
	for _, args := range [][]string{{"--node", "box"}, {}} {
		r := sshq(t, c, home, env, append(append([]string{"launch", "-d", "--name", "cpu"}, args...), "--", "true")...)
		if r.code != 0 {
			t.Errorf("launch %v on a node whose nvidia-smi hangs: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
		}
	}
	for _, j := range waitJobs(t, c, home, env) {
		if j.State != "SUCCEEDED" {
			t.Errorf("job %+v", j)
		}
	}
}
