package main

// The node-work targets of `sshq status` and `sshq launch`, measured
// against what a user does by hand over ssh, in the same run and round by
// round (see bench_test.go for the method). The nodes' simulated
// nvidia-smi costs what a real one does (smiCost a call), so a command that
// asks the driver more often than the user would pays for it.
//
//	go test -run '^$' -bench 'NodeWork' -benchtime 1x .

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/gpu"
	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/sshpool"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// smiCost is what one nvidia-smi call costs on a node: NVML's start, tens
// of milliseconds on real drivers.
const smiCost = 40 * time.Millisecond

// byHandQuery is what a user types to see a node's GPUs and who uses them.
var byHandQuery = sshpool.Command("nvidia-smi", "--query-gpu="+gpu.QueryGPUFields, "--format=csv") + "; " +
	sshpool.Command("nvidia-smi", "--query-compute-apps="+gpu.ComputeAppsFields, "--format=csv")

// byHandTmux starts a command in tmux, as a user would start a job.
func byHandTmux(round int) string {
	return sshpool.Command("tmux", "-L", "byhand", "new", "-d", "-s", fmt.Sprintf("r%d", round), "echo hi")
}

func costlyNodes(b *testing.B, names []string) *sshtest.Cluster {
	c := sshtest.Start(b, sshtest.Options{Names: names})
	for _, n := range c.Nodes {
		if err := gpusim.Install(n.Dir, gpusim.A100x2(b.Name()+n.Name)); err != nil {
			b.Fatal(err)
		}
		if err := gpusim.SetDelay(gpusim.SimDir(n.Dir), smiCost); err != nil {
			b.Fatal(err)
		}
	}
	return c
}

// parallel runs the commands at once and returns when the last is done.
func parallel(b *testing.B, cmds []*exec.Cmd) time.Duration {
	b.Helper()
	var wg sync.WaitGroup
	t0 := time.Now()
	for _, c := range cmds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var errb bytes.Buffer
			c.Stderr = &errb
			if err := c.Run(); err != nil {
				b.Errorf("%s: %v\n%s", strings.Join(c.Args, " "), err, errb.Bytes())
			}
		}()
	}
	wg.Wait()
	return time.Since(t0)
}

// BenchmarkNodeWorkStatus: `sshq status` on 1 node against one ssh that
// runs the two nvidia-smi queries (target ≤ 1.2×), and on 3 nodes against
// three such ssh commands in parallel (target ≤ 1.2×).
func BenchmarkNodeWorkStatus(b *testing.B) {
	names := []string{"s1", "s2", "s3"}
	c := costlyNodes(b, names)
	home := b.TempDir()
	ctx := context.Background()
	one := &series{name: "sshq status --json (1 node)"}
	oneHand := &series{name: "ssh s1 'nvidia-smi --query-gpu…; nvidia-smi --query-compute-apps…'"}
	three := &series{name: "sshq status --json (3 nodes)"}
	threeHand := &series{name: "the same ssh to 3 nodes in parallel"}
	check := func(r timedRun, want int) {
		var got statusJSON
		if err := json.Unmarshal(r.stdout, &got); err != nil || len(got.Nodes) != want {
			b.Fatalf("status --json: %v\n%s", err, r.stdout)
		}
		for _, n := range got.Nodes {
			if !n.Reachable || n.GPUState != "ok" || len(n.GPUs) != 2 {
				b.Fatalf("node %s not fully seen: %+v", n.Name, n)
			}
		}
	}
	for round := -1; round < benchRounds; round++ {
		r1 := timeCmd(b, sshqCmd(ctx, c.ConfigPath, home, []string{"SSHQ_NODES=s1"}, "status", "--json"))
		check(r1, 1)
		h1 := timeCmd(b, c.SSH("s1", byHandQuery))
		r3 := timeCmd(b, sshqCmd(ctx, c.ConfigPath, home, []string{"SSHQ_NODES=" + strings.Join(names, ",")}, "status", "--json"))
		check(r3, 3)
		var cmds []*exec.Cmd
		for _, n := range names {
			cmds = append(cmds, c.SSH(n, byHandQuery))
		}
		h3 := parallel(b, cmds)
		if round >= 0 {
			one.addRun(r1)
			oneHand.addRun(h1)
			three.addRun(r3)
			threeHand.add(h3)
		}
	}
	logTable(b, "BenchmarkNodeWorkStatus (nvidia-smi costs "+smiCost.String()+" a call)", one, oneHand, three, threeHand)
	r1 := float64(one.median()) / float64(oneHand.median())
	r3 := float64(three.median()) / float64(threeHand.median())
	b.Logf("status / by hand: 1 node %.2f (target ≤ 1.2: %s), 3 nodes %.2f (target ≤ 1.2: %s)", r1, verdict(r1, 1.2), r3, verdict(r3, 1.2))
	b.ReportMetric(r1, "status/hand-1-node")
	b.ReportMetric(r3, "status/hand-3-nodes")
}

// BenchmarkNodeWorkLaunch: `sshq launch -d --gpus 1` against the GPU query
// followed by `ssh node tmux new -d` (target ≤ 1.0×), and `sshq launch -d`
// of a job without GPUs against `ssh node tmux new -d` alone (target ≤
// 1.5×), each until the command returns.
func BenchmarkNodeWorkLaunch(b *testing.B) {
	c := costlyNodes(b, []string{"box"})
	node := c.Node("box")
	home := b.TempDir()
	ctx := context.Background()
	env := []string{"SSHQ_NODES=box"}
	gpuLaunch := &series{name: "sshq launch -d --gpus 1"}
	gpuHand := &series{name: "ssh box '<query>'; ssh box 'tmux new -d …'"}
	cpuLaunch := &series{name: "sshq launch -d (no GPU)"}
	cpuHand := &series{name: "ssh box 'tmux new -d …'"}
	waitEnded := func() {
		// Rounds must not overlap: the job of the last one holds the GPU.
		pollUntil(b, 60*time.Second, "the round's jobs to end", func() bool {
			dirs, _ := filepath.Glob(filepath.Join(node.Home, ".sshq", "jobs", "*"))
			for _, d := range dirs {
				if _, err := os.Stat(filepath.Join(d, "exit")); err != nil {
					return false
				}
			}
			return true
		}, time.Now())
	}
	for round := -1; round < benchRounds; round++ {
		g := timeCmd(b, sshqCmd(ctx, c.ConfigPath, home, env, "launch", "-d", "--gpus", "1", "--", "true"))
		waitEnded()
		t0 := time.Now()
		timeCmd(b, c.SSH("box", byHandQuery))
		timeCmd(b, c.SSH("box", byHandTmux(2*round+2)))
		gh := time.Since(t0)
		u := timeCmd(b, sshqCmd(ctx, c.ConfigPath, home, env, "launch", "-d", "--", "true"))
		waitEnded()
		uh := timeCmd(b, c.SSH("box", byHandTmux(2*round+3)))
		if round >= 0 {
			gpuLaunch.addRun(g)
			gpuHand.add(gh)
			cpuLaunch.addRun(u)
			cpuHand.addRun(uh)
		}
	}
	logTable(b, "BenchmarkNodeWorkLaunch (nvidia-smi costs "+smiCost.String()+" a call)", gpuLaunch, gpuHand, cpuLaunch, cpuHand)
	rg := float64(gpuLaunch.median()) / float64(gpuHand.median())
	rc := float64(cpuLaunch.median()) / float64(cpuHand.median())
	b.Logf("launch / by hand: --gpus 1 %.2f (target ≤ 1.0: %s), no GPU %.2f (target ≤ 1.5: %s)", rg, verdict(rg, 1.0), rc, verdict(rc, 1.5))
	b.ReportMetric(rg, "launch-gpu/hand")
	b.ReportMetric(rc, "launch-cpu/hand")
}

// benchWorkdir writes 2,000 files, about 100 MB: 1,990 source-like files
// (1–24 kB) in nested directories and 10 data files (~7.5 MB each). It
// returns two small files to change between launches.
func benchWorkdir(b *testing.B, root string, seed uint64) (a, c string) {
	b.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	buf := make([]byte, 9<<20)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	for i := range 2000 {
		var p string
		var size int
		if i < 10 {
			p = filepath.Join(root, "data", fmt.Sprintf("shard%02d.bin", i))
			size = 7<<20 + r.IntN(1<<20)
		} else {
			p = filepath.Join(root, fmt.Sprintf("pkg%02d/mod%02d/file%04d.py", i%20, i%7, i))
			size = 1024 + r.IntN(23*1024)
			a, c = c, p
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.Fatal(err)
		}
		off := r.IntN(len(buf) - size)
		if err := os.WriteFile(p, buf[off:off+size], 0o644); err != nil {
			b.Fatal(err)
		}
		// A checkout, not files written this very second (which a sync
		// must read again to be sure an edit did not hide in their mtime).
		old := time.Now().Add(-time.Hour)
		if err := os.Chtimes(p, old, old); err != nil {
			b.Fatal(err)
		}
	}
	return a, c
}

// BenchmarkNodeWorkLaunchWorkdir: `sshq launch -d --workdir` of a 2,000-file,
// ~100 MB tree against `rsync -a` of it followed by `ssh node tmux new -d`,
// the first time (target ≤ 1.0×) and after touching one file and appending
// to another (target ≤ 0.8×).
func BenchmarkNodeWorkLaunchWorkdir(b *testing.B) {
	if _, err := exec.LookPath("rsync"); err != nil {
		b.Skip("rsync not installed")
	}
	c := costlyNodes(b, []string{"box"})
	node := c.Node("box")
	home := b.TempDir()
	ctx := context.Background()
	env := []string{"SSHQ_NODES=box"}
	first := &series{name: "sshq launch -d --workdir, first time"}
	firstHand := &series{name: "rsync -a; ssh box 'tmux new -d …', first time"}
	again := &series{name: "sshq launch -d --workdir, 2 files changed"}
	againHand := &series{name: "rsync -a; ssh box 'tmux new -d …', 2 files changed"}
	rsync := func(src, dst string) {
		cmd := exec.Command("rsync", "-a", "--mkpath", "-e", "ssh -F "+c.ConfigPath, src+"/", "box:"+dst+"/")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("rsync: %v\n%s", err, out)
		}
	}
	const rounds = 5
	for round := -1; round < rounds; round++ {
		src := filepath.Join(b.TempDir(), "work")
		touch, grow := benchWorkdir(b, src, uint64(round+2))
		dst := filepath.Join(node.Home, fmt.Sprintf("byhand%d", round+1))
		launch := func() timedRun {
			return timeCmd(b, sshqCmd(ctx, c.ConfigPath, home, env, "launch", "-d", "--workdir", src, "--", "true"))
		}
		byHand := func(i int) time.Duration {
			t0 := time.Now()
			rsync(src, dst)
			timeCmd(b, c.SSH("box", byHandTmux(i)))
			return time.Since(t0)
		}
		l1 := launch()
		h1 := byHand(2*round + 2)
		now := time.Now()
		if err := os.Chtimes(touch, now, now); err != nil {
			b.Fatal(err)
		}
		f, err := os.OpenFile(grow, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		f.WriteString("# one more line\n")
		f.Close()
		l2 := launch()
		h2 := byHand(2*round + 3)
		if round >= 0 {
			first.addRun(l1)
			firstHand.add(h1)
			again.addRun(l2)
			againHand.add(h2)
		}
	}
	logTable(b, "BenchmarkNodeWorkLaunchWorkdir", first, firstHand, again, againHand)
	r1 := float64(first.median()) / float64(firstHand.median())
	r2 := float64(again.median()) / float64(againHand.median())
	b.Logf("launch --workdir / by hand: first %.2f (target ≤ 1.0: %s), 2 files changed %.2f (target ≤ 0.8: %s)", r1, verdict(r1, 1.0), r2, verdict(r2, 0.8))
	b.ReportMetric(r1, "workdir-first/hand")
	b.ReportMetric(r2, "workdir-again/hand")
}
