package main

// Speed and memory targets of the CLI, as benchmarks, never as timed test
// assertions. Each one starts its own real sshd nodes and measures sshq
// against a reference measured in the same run (OpenSSH, tmux over ssh),
// alternating the two round by round so that both see the same load: on a
// shared box only the ratios compare between runs. Where there is no
// reference (BenchmarkQueue10k) the CPU time is printed beside the wall time,
// being less sensitive to other people's load. Run them with
//
//	go test -run '^$' -bench 'Status|LaunchLatency|Queue10k' -benchtime 1x .
//
// Each benchmark repeats its own measurement (benchRounds rounds, after one
// warm-up round) and reports medians; b.N is not used.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/sshpool"
	"github.com/sshq/sshq/sshpool/sshtest"
)

const benchRounds = 15

// rssProbeEnv makes the test binary, started by peakRSS, a small parent that
// runs its arguments and writes the child's peak RSS to the file named by
// the variable. Reading the rusage of a child of the test process itself
// would be wrong: Go starts children with vfork, and Linux counts the
// parent's resident set (the test's, ~90 MiB after seeding a store) into
// the child's ru_maxrss at exec. Under a fresh Go process the floor is that
// process's few MiB, which peakRSS measures and reports.
const rssProbeEnv = "SSHQ_BENCH_RSS_OUT"

func init() {
	out := os.Getenv(rssProbeEnv)
	if out == "" {
		return
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, rssProbeEnv+"=") {
			env = append(env, kv)
		}
	}
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Env, cmd.Stdin, cmd.Stdout, cmd.Stderr = env, os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	if cmd.ProcessState == nil {
		fmt.Fprintln(os.Stderr, "rss probe:", err)
		os.Exit(127)
	}
	os.WriteFile(out, []byte(fmt.Sprint(rusageRSS(cmd.ProcessState))), 0o600)
	os.Exit(cmd.ProcessState.ExitCode())
}

// peakRSS runs cmd (not started yet) under the probe and returns its peak
// RSS in KiB, and the probe's floor (the same for /bin/true).
func peakRSS(b *testing.B, cmd *exec.Cmd) (rss, floor int64) {
	b.Helper()
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	measure := func(argv []string, env []string) int64 {
		out := filepath.Join(b.TempDir(), "rss")
		c := exec.Command(self, argv...)
		c.Env = append(slices.Clone(env), rssProbeEnv+"="+out)
		var errb bytes.Buffer
		c.Stderr = &errb
		if err := c.Run(); err != nil {
			b.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, errb.Bytes())
		}
		data, err := os.ReadFile(out)
		if err != nil {
			b.Fatal(err)
		}
		var kib int64
		fmt.Sscan(string(data), &kib)
		return kib
	}
	return measure(cmd.Args, cmd.Env), measure([]string{"/bin/true"}, cmd.Env)
}

// timedRun is one finished process: its wall time, its CPU time (user +
// system, summed over cores: less sensitive to other people's load than wall
// time) and its output.
type timedRun struct {
	wall, cpu time.Duration
	stdout    []byte
}

// timeCmd runs cmd to completion and fails b if it exits non-zero.
func timeCmd(b *testing.B, cmd *exec.Cmd) timedRun {
	b.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		b.Fatalf("%s: %v\n%s%s", strings.Join(cmd.Args, " "), err, out.Bytes(), errb.Bytes())
	}
	return timedRun{wall, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), out.Bytes()}
}

// sshqCmd is the built binary with a clean environment, as the tests run it.
func sshqCmd(ctx context.Context, cfg, home string, extraEnv []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, sshqBin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "SSHQ_HOME=" + filepath.Join(home, ".sshq"), "SSHQ_SSH_CONFIG=" + cfg}
	cmd.Env = append(cmd.Env, extraEnv...)
	return cmd
}

// series collects the samples of one measured quantity.
type series struct {
	name   string
	d, cpu []time.Duration
}

func (s *series) add(d time.Duration) { s.d = append(s.d, d) }

// addRun records a process's wall and CPU time.
func (s *series) addRun(r timedRun) {
	s.d = append(s.d, r.wall)
	s.cpu = append(s.cpu, r.cpu)
}

func median(d []time.Duration) time.Duration {
	d = slices.Clone(d)
	slices.Sort(d)
	return d[len(d)/2]
}

func (s *series) median() time.Duration { return median(s.d) }

func (s *series) spread() (min, max time.Duration) {
	return slices.Min(s.d), slices.Max(s.d)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// logTable prints one row per series: median, min and max wall time, and
// the median CPU time where it was measured.
func logTable(b *testing.B, title string, ss ...*series) {
	b.Helper()
	var buf bytes.Buffer
	w := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "\tmedian ms\tmin ms\tmax ms\tmedian CPU ms\t\n")
	for _, s := range ss {
		lo, hi := s.spread()
		cpu := "-"
		if len(s.cpu) > 0 {
			cpu = fmt.Sprintf("%.1f", ms(median(s.cpu)))
		}
		fmt.Fprintf(w, "%s\t%.1f\t%.1f\t%.1f\t%s\t\n", s.name, ms(s.median()), ms(lo), ms(hi), cpu)
	}
	w.Flush()
	b.Logf("%s (%d rounds, load average %s)\n%s", title, len(ss[0].d), loadAvg(), buf.String())
}

func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// verdict is "ok" or "MISSED" for a measured value against its target.
func verdict(v, target float64) string {
	if v <= target {
		return "ok"
	}
	return "MISSED"
}

// BenchmarkStatus compares `sshq status --json` over 8 nodes with one
// OpenSSH round trip (target: ≤ 1.5×) and with what people do today, a loop
// of `ssh node nvidia-smi` over the nodes; and checks the sshq process's peak
// RSS (target: ≤ 50 MiB).
func BenchmarkStatus(b *testing.B) {
	presets := []func(string) []gpusim.GPU{gpusim.H100x8, gpusim.A100x2, gpusim.RTX4090x4, gpusim.T4x1, gpusim.WorkstationWithDisplay}
	c := sshtest.Start(b, sshtest.Options{Nodes: 8})
	for i, n := range c.Nodes {
		if err := gpusim.Install(n.Dir, presets[i%len(presets)](b.Name()+n.Name)); err != nil {
			b.Fatal(err)
		}
	}
	home := b.TempDir()
	env := []string{"SSHQ_NODES=" + strings.Join(c.Names(), ",")}
	ctx := context.Background()
	query := "--query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu"

	status := &series{name: "sshq status --json (8 nodes)"}
	rtt := &series{name: "ssh node1 true"}
	loop := &series{name: "for n in 8 nodes: ssh $n nvidia-smi"}
	startup := &series{name: "sshq nodes --resolve (no connection)"}
	// Diagnostics: without ssh on PATH sshq parses the config itself instead
	// of running `ssh -G` per node; one node shows sshq's own cost without 8
	// local sshds competing for this box's cores (on a cluster each sshd has
	// its own machine).
	noG := &series{name: "  same, no ssh on PATH (no ssh -G)"}
	one1 := &series{name: "  same, 1 node"}
	noSSH := append(slices.Clone(env), "PATH=/nonexistent")
	checkStatus := func(r timedRun, want int) {
		var got statusJSON
		if err := json.Unmarshal(r.stdout, &got); err != nil || len(got.Nodes) != want {
			b.Fatalf("status --json: %v\n%s", err, r.stdout)
		}
		for _, n := range got.Nodes {
			if !n.Reachable || n.GPUState != "ok" || len(n.GPUs) == 0 {
				b.Fatalf("node %s not fully seen: %+v", n.Name, n)
			}
		}
	}
	for round := -1; round < benchRounds; round++ { // round -1 warms caches
		r := timeCmd(b, sshqCmd(ctx, c.ConfigPath, home, env, "status", "--json"))
		checkStatus(r, 8)
		rg := timeCmd(b, sshqCmd(ctx, c.ConfigPath, home, noSSH, "status", "--json"))
		checkStatus(rg, 8)
		r1 := timeCmd(b, sshqCmd(ctx, c.ConfigPath, home, nil, "--nodes", "node1", "status", "--json"))
		checkStatus(r1, 1)
		one := timeCmd(b, c.SSH("-o", "ControlMaster=no", "node1", "true"))
		t0 := time.Now()
		for _, n := range c.Names() {
			timeCmd(b, c.SSH(n, "nvidia-smi", query, "--format=csv"))
		}
		seq := time.Since(t0)
		st := timeCmd(b, sshqCmd(ctx, c.ConfigPath, home, env, "nodes", "--resolve", "--json"))
		if round >= 0 {
			status.addRun(r)
			noG.addRun(rg)
			one1.addRun(r1)
			rtt.addRun(one)
			loop.add(seq)
			startup.addRun(st)
		}
	}
	var rss, floor int64
	for range 3 {
		r, f := peakRSS(b, sshqCmd(ctx, c.ConfigPath, home, env, "status", "--json"))
		rss, floor = max(rss, r), max(floor, f)
	}
	logTable(b, "BenchmarkStatus", status, noG, one1, rtt, loop, startup)
	rRTT := float64(status.median()) / float64(rtt.median())
	rLoop := float64(status.median()) / float64(loop.median())
	rssMiB := float64(rss) / 1024
	b.Logf("status / ssh round trip = %.2f (target ≤ 1.5: %s; 1 node: %.2f, no ssh -G: %.2f); status / sequential loop = %.2f; sshq status peak RSS %.1f MiB, max of 3 runs (target ≤ 50: %s; probe floor %.1f MiB)",
		rRTT, verdict(rRTT, 1.5), float64(one1.median())/float64(rtt.median()), float64(noG.median())/float64(rtt.median()),
		rLoop, rssMiB, verdict(rssMiB, 50), float64(floor)/1024)
	b.ReportMetric(ms(status.median()), "status-ms")
	b.ReportMetric(ms(one1.median()), "status-1-node-ms")
	b.ReportMetric(ms(noG.median()), "status-no-ssh-G-ms")
	b.ReportMetric(ms(rtt.median()), "ssh-rtt-ms")
	b.ReportMetric(ms(loop.median()), "ssh-loop-ms")
	b.ReportMetric(rRTT, "status/rtt")
	b.ReportMetric(rLoop, "status/loop")
	b.ReportMetric(rssMiB, "peak-RSS-MiB")
}

// BenchmarkLaunchLatency compares `sshq launch -d` of a task without a
// workdir, until the job's first output line is in its log on the node, with
// starting the same in tmux by hand over ssh (target: ≤ 2×).
func BenchmarkLaunchLatency(b *testing.B) {
	c := sshtest.Start(b, sshtest.Options{Names: []string{"box"}})
	node := c.Node("box")
	if err := gpusim.Install(node.Dir, gpusim.T4x1(b.Name())); err != nil {
		b.Fatal(err)
	}
	home := b.TempDir()
	env := []string{"SSHQ_NODES=box"}
	ctx := context.Background()
	st, err := store.Open(filepath.Join(home, ".sshq"))
	if err != nil {
		b.Fatal(err)
	}
	taskPath := filepath.Join(home, "hello.yaml")

	launch := &series{name: "sshq launch -d → first log line"}
	launchRet := &series{name: "sshq launch -d → process returns"}
	tmux := &series{name: "ssh box tmux new -d → file written"}
	var uids []string
	for round := -1; round < benchRounds; round++ {
		marker := fmt.Sprintf("first-line-%d", round+1)
		if err := os.WriteFile(taskPath, []byte("name: hello\nrun: echo "+marker+"\n"), 0o644); err != nil {
			b.Fatal(err)
		}
		// The job's uid is the controller id and the next job id; `sshq
		// queue --json` confirms it after the loop.
		snap, err := st.Load()
		if err != nil {
			b.Fatal(err)
		}
		uid := fmt.Sprintf("%s-%d", snap.ControllerID, snap.NextID)
		uids = append(uids, uid)
		jobDir := filepath.Join(node.Home, ".sshq", "jobs", uid)
		cmd := sshqCmd(ctx, c.ConfigPath, home, env, "launch", "-d", taskPath)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		exited := make(chan time.Duration, 1)
		go func() { cmd.Wait(); exited <- time.Since(t0) }()
		l := pollUntil(b, 60*time.Second, "first log line of "+uid, func() bool {
			data, _ := os.ReadFile(filepath.Join(jobDir, "log"))
			return bytes.Contains(data, []byte(marker+"\n"))
		}, t0)
		ret := <-exited
		if !cmd.ProcessState.Success() {
			b.Fatalf("launch: %v\n%s%s", cmd.ProcessState, out.Bytes(), errb.Bytes())
		}
		// Let the job end before the next round so rounds do not overlap.
		pollUntil(b, 60*time.Second, "exit file of "+uid, func() bool {
			_, err := os.Stat(filepath.Join(jobDir, "exit"))
			return err == nil
		}, time.Now())

		file := filepath.Join(node.Home, fmt.Sprintf("tmux-out-%d", round+1))
		ssh := c.SSH("-o", "ControlMaster=no", "box", sshpool.Command("tmux", "-L", "bench", "new", "-d", "echo hi > "+sshpool.Quote(file)))
		var sshErr bytes.Buffer
		ssh.Stderr = &sshErr
		t1 := time.Now()
		if err := ssh.Start(); err != nil {
			b.Fatal(err)
		}
		sshDone := make(chan error, 1)
		go func() { sshDone <- ssh.Wait() }()
		m := pollUntil(b, 60*time.Second, "tmux wrote "+file, func() bool {
			data, _ := os.ReadFile(file)
			return string(data) == "hi\n"
		}, t1)
		if err := <-sshDone; err != nil {
			b.Fatalf("ssh tmux: %v\n%s", err, sshErr.Bytes())
		}
		if round >= 0 {
			launch.add(l)
			launchRet.add(ret)
			tmux.add(m)
		}
	}
	// The uids the rounds polled for are the jobs sshq reports.
	r := timeCmd(b, sshqCmd(ctx, c.ConfigPath, home, env, "queue", "-a", "--json"))
	var q []queueEntry
	if err := json.Unmarshal(r.stdout, &q); err != nil || len(q) != len(uids) {
		b.Fatalf("queue --json: %v (%d jobs, want %d)\n%s", err, len(q), len(uids), r.stdout)
	}
	for i, j := range q {
		if j.UID != uids[i] || j.State != "SUCCEEDED" {
			b.Fatalf("job %d: uid %s state %s, want %s SUCCEEDED", i, j.UID, j.State, uids[i])
		}
	}
	logTable(b, "BenchmarkLaunchLatency", launch, launchRet, tmux)
	ratio := float64(launch.median()) / float64(tmux.median())
	b.Logf("launch / tmux-over-ssh = %.2f (target ≤ 2: %s)", ratio, verdict(ratio, 2))
	b.ReportMetric(ms(launch.median()), "launch-ms")
	b.ReportMetric(ms(launchRet.median()), "launch-return-ms")
	b.ReportMetric(ms(tmux.median()), "ssh-tmux-ms")
	b.ReportMetric(ratio, "launch/ssh-tmux")
}

// cpuSelf is this process's user+system CPU time.
func cpuSelf() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func rusageRSS(ps *os.ProcessState) int64 {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss
	}
	return 0
}

// pollUntil polls cond every millisecond (the files are local, a check
// costs microseconds) and returns the time from t0 until it held.
func pollUntil(b *testing.B, timeout time.Duration, what string, cond func() bool, t0 time.Time) time.Duration {
	b.Helper()
	deadline := t0.Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			b.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(t0)
}

// seedEnded10k writes 10,000 ended jobs, each as big as a typical one, into
// the store in home.
func seedEnded10k(b *testing.B, home string) *store.Store {
	b.Helper()
	s, err := store.Open(home)
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC)
	ended := []job.State{job.Succeeded, job.Failed, job.FailedSetup, job.Cancelled, job.Lost}
	err = s.Update(func(st *store.State) error {
		for i := range 10_000 {
			j := st.NewJob(fmt.Sprintf("train-%d", i%50))
			j.User, j.Node, j.Accelerator, j.NumGPUs = "alice", fmt.Sprintf("gpu-node-%02d", i%20), "H100", 2
			j.GPUs = []int{i % 8, (i + 1) % 8}
			j.GPUUUIDs = []string{"GPU-6d5c1f2a-9b1e-4c35-8a7d-3e0f2b1c4d5e", "GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"}
			j.Workdir, j.TaskFile = "/home/alice/src/llm-finetune", "/home/alice/src/llm-finetune/task.yaml"
			j.Command = fmt.Sprintf("torchrun --nproc_per_node=2 train.py --config configs/run%d.yaml --lr 3e-4", i)
			j.EnvNames = []string{"WANDB_API_KEY", "HF_TOKEN", "DATA_DIR"}
			start, end := t0.Add(time.Duration(i)*time.Minute), t0.Add(time.Duration(i)*time.Minute+time.Hour)
			code := i % 3
			j.Submitted, j.Started, j.Ended, j.LastSeen, j.ExitCode = t0, &start, &end, &end, &code
			j.State = ended[i%len(ended)]
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkQueue10k measures `sshq queue` as whole processes over a history
// of 10,000 ended jobs (target ≤ 150 ms; no node is contacted, nothing is
// unfinished) and a launch's local bookkeeping, the store Update that adds a
// job, on that history (target ≤ 50 ms). There is no reference tool, so it
// prints absolute numbers; sshq on an empty history shows the fixed cost of
// a process.
func BenchmarkQueue10k(b *testing.B) {
	home := b.TempDir()
	s := seedEnded10k(b, filepath.Join(home, ".sshq"))
	empty := b.TempDir()
	cfg := filepath.Join(home, "ssh_config")
	if err := os.WriteFile(cfg, []byte("Host gpu-node-*\n  HostName 192.0.2.1\n  ConnectTimeout 1\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	env := []string{"SSHQ_NODES=gpu-node-*"}
	ctx := context.Background()
	fi, err := os.Stat(s.Path())
	if err != nil {
		b.Fatal(err)
	}
	hi, err := os.Stat(s.HistoryPath())
	if err != nil {
		b.Fatal(err)
	}

	q := &series{name: "sshq queue"}
	qa := &series{name: "sshq queue -a"}
	qj := &series{name: "sshq queue -a --json"}
	q0 := &series{name: "sshq queue (empty history)"}
	load := &series{name: "store All: state + history (in-process)"}
	upd := &series{name: "store Update adding a job (in-process)"}
	for round := -1; round < benchRounds; round++ {
		r := timeCmd(b, sshqCmd(ctx, cfg, home, env, "queue"))
		ra := timeCmd(b, sshqCmd(ctx, cfg, home, env, "queue", "-a"))
		if n := bytes.Count(ra.stdout, []byte("\n")); n < 10_000 {
			b.Fatalf("queue -a printed %d lines, want a row per job", n)
		}
		rj := timeCmd(b, sshqCmd(ctx, cfg, home, env, "queue", "-a", "--json"))
		r0 := timeCmd(b, sshqCmd(ctx, cfg, empty, env, "queue"))
		if round == -1 {
			var got []queueEntry
			if err := json.Unmarshal(rj.stdout, &got); err != nil || len(got) < 10_000 {
				b.Fatalf("queue -a --json: %v, %d jobs", err, len(got))
			}
		}
		t0, c0 := time.Now(), cpuSelf()
		all, err := s.All()
		dl, cl := time.Since(t0), cpuSelf()-c0
		if err != nil || len(all) < 10_000 {
			b.Fatalf("All: %d jobs, %v", len(all), err)
		}
		t0, c0 = time.Now(), cpuSelf()
		err = s.Update(func(st *store.State) error {
			j := st.NewJob("bench")
			j.State = job.Cancelled // ended, so later `sshq queue` rounds contact no node
			j.Node = "gpu-node-00"
			return nil
		})
		du, cu := time.Since(t0), cpuSelf()-c0
		if err != nil {
			b.Fatal(err)
		}
		if round >= 0 {
			q.addRun(r)
			qa.addRun(ra)
			qj.addRun(rj)
			q0.addRun(r0)
			load.addRun(timedRun{wall: dl, cpu: cl})
			upd.addRun(timedRun{wall: du, cpu: cu})
		}
	}
	rssQ, floor := peakRSS(b, sshqCmd(ctx, cfg, home, env, "queue"))
	rssJ, _ := peakRSS(b, sshqCmd(ctx, cfg, home, env, "queue", "-a", "--json"))
	// go test keeps only 10 lines of a benchmark's log: table, then one line.
	logTable(b, fmt.Sprintf("BenchmarkQueue10k, state.json %.1f MiB, history.jsonl %.1f MiB", float64(fi.Size())/(1<<20), float64(hi.Size())/(1<<20)), q, qa, qj, q0, load, upd)
	b.Logf("sshq queue %.0f ms, queue -a --json %.0f ms (target ≤ 150: %s, %s); Update %.1f ms (target ≤ 50: %s); peak RSS: queue %.1f MiB, queue -a --json %.1f MiB (probe floor %.1f MiB)",
		ms(q.median()), ms(qj.median()), verdict(ms(q.median()), 150), verdict(ms(qj.median()), 150),
		ms(upd.median()), verdict(ms(upd.median()), 50), float64(rssQ)/1024, float64(rssJ)/1024, float64(floor)/1024)
	b.ReportMetric(ms(q.median()), "queue-ms")
	b.ReportMetric(ms(qa.median()), "queue-a-ms")
	b.ReportMetric(ms(qj.median()), "queue-a-json-ms")
	b.ReportMetric(ms(q0.median()), "queue-empty-ms")
	b.ReportMetric(ms(upd.median()), "update-ms")
	b.ReportMetric(ms(median(qj.cpu)), "queue-a-json-cpu-ms")
	b.ReportMetric(ms(median(upd.cpu)), "update-cpu-ms")
	b.ReportMetric(float64(rssJ)/1024, "queue-a-json-peak-RSS-MiB")
}
