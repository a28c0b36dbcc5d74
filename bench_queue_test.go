package main

// The node under a long queue: 500 jobs waiting on one node for its two
// GPUs, both held. What a user runs then must stay quick (status ≤ 2 s, a
// submit ≤ 2 s), and a GPU freed must be taken by the head of the queue
// within 3 s. The waiters are submitted through the node protocol (one
// pooled connection, a few sessions at a time), as controllers would; the
// measured commands are the sshq binary, as a user runs it.
//
//	go test -run '^$' -bench Queue500 -benchtime 1x .
//
// SSHQ_BENCH_WAITERS sets another queue length (to try a change quickly).

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sshq/sshq/inventory"
	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/orchestrator/remote"
	"github.com/sshq/sshq/sshpool"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// footprint is what the processes of one test node (its sessions, tmux
// server, wrappers, keepers and displays) hold and have spent.
type footprint struct {
	procs  int
	rssKiB int64
	cpu    time.Duration // user + system, with reaped children's
}

// nodeFootprint sums over every process whose HOME or TMUX_TMPDIR is
// under dir (as sshtest's cleanup finds them). A process counts its
// reaped children's CPU too (cutime), so the forks a wrapper waits for
// are in its parent's figure.
func nodeFootprint(dir string) footprint {
	var f footprint
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		env, err := os.ReadFile(p + "/environ")
		if err != nil {
			continue
		}
		mine := false
		for _, kv := range strings.Split(string(env), "\x00") {
			k, v, _ := strings.Cut(kv, "=")
			if (k == "HOME" || k == "TMUX_TMPDIR") && (v == dir || strings.HasPrefix(v, dir+"/")) {
				mine = true
				break
			}
		}
		if !mine {
			continue
		}
		stat, err := os.ReadFile(p + "/stat")
		if err != nil {
			continue
		}
		// Fields after the command's closing parenthesis: state is the
		// first, utime the 12th, rss the 22nd.
		s := string(stat)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) < 22 {
			continue
		}
		var ticks int64
		for _, i := range []int{11, 12, 13, 14} {
			v, _ := strconv.ParseInt(fields[i], 10, 64)
			ticks += v
		}
		pages, _ := strconv.ParseInt(fields[21], 10, 64)
		f.procs++
		f.cpu += time.Duration(ticks) * 10 * time.Millisecond // USER_HZ is 100 on Linux
		f.rssKiB += pages * int64(os.Getpagesize()) / 1024
	}
	return f
}

// queueOrder lists the waiting records on the node in queue order (their
// names sort so), as the jobs' uids.
func queueOrder(b *testing.B, n *sshtest.Node) []string {
	b.Helper()
	var names []string
	for _, pat := range []string{n.LeaseDir + "/u*/w.*", n.LeaseDir + ".u*/w.*"} {
		m, _ := filepath.Glob(pat)
		for _, f := range m {
			names = append(names, filepath.Base(f))
		}
	}
	slices.Sort(names)
	uids := make([]string, len(names))
	for i, name := range names {
		// w.<ns>.<uid>
		uids[i] = name[strings.IndexByte(name[2:], '.')+3:]
	}
	return uids
}

// jobState is the last state line of a job on the node.
func jobState(n *sshtest.Node, uid string) string {
	data, _ := os.ReadFile(filepath.Join(n.Home, ".sshq", "jobs", uid, "state"))
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	st, _, _ := strings.Cut(lines[len(lines)-1], " ")
	return st
}

func BenchmarkQueue500(b *testing.B) {
	waiters := 500
	if v, err := strconv.Atoi(os.Getenv("SSHQ_BENCH_WAITERS")); err == nil && v > 0 {
		waiters = v
	}
	const rounds = 7
	// The default poll interval (2 s): what a user's node runs.
	c := sshtest.Start(b, sshtest.Options{Names: []string{"box"}})
	node := c.Node("box")
	if err := gpusim.Install(node.Dir, gpusim.A100x2(b.Name())); err != nil {
		b.Fatal(err)
	}
	if err := gpusim.SetDelay(gpusim.SimDir(node.Dir), smiCost); err != nil {
		b.Fatal(err)
	}
	home := b.TempDir()
	ctx := context.Background()
	env := []string{"SSHQ_NODES=box"}
	rel := filepath.Join(node.Dir, "release")
	if err := os.Mkdir(rel, 0o777); err != nil {
		b.Fatal(err)
	}
	// Every job holds what it gets until the benchmark releases it.
	hold := func(name string) string {
		return "while [ ! -e " + sshpool.Quote(filepath.Join(rel, name)) + " ]; do sleep 0.2; done"
	}
	release := func(name string) {
		if err := os.WriteFile(filepath.Join(rel, name), nil, 0o644); err != nil {
			b.Fatal(err)
		}
	}

	// The two GPUs' holders, as a user launches them.
	holding := []string{} // names of the jobs holding a GPU, oldest first
	for _, name := range []string{"hold0", "hold1"} {
		timeCmd(b, sshqCmd(ctx, c.ConfigPath, home, env, "launch", "-d", "--gpus", "1", "--name", name, "--", hold(name)))
		holding = append(holding, name)
	}
	uidOf := map[string]string{} // job name → uid, on the node
	pollUntil(b, time.Minute, "both GPUs held", func() bool {
		dirs, _ := filepath.Glob(filepath.Join(node.Home, ".sshq", "jobs", "*"))
		for _, d := range dirs {
			meta, _ := os.ReadFile(filepath.Join(d, "meta.sh"))
			for _, name := range holding {
				if jobState(node, filepath.Base(d)) == "RUNNING" && strings.Contains(string(meta), "SSHQ_M_NAME="+name+"\n") {
					uidOf[name] = filepath.Base(d)
				}
			}
		}
		return len(uidOf) == 2
	}, time.Now())

	// The waiters, through the node protocol as controllers submit.
	cfg, err := inventory.Load(c.ConfigPath)
	if err != nil {
		b.Fatal(err)
	}
	pool := sshpool.New(inventory.NewResolver(cfg))
	defer pool.Close()
	cl := remote.New("box", pool.Node("box"))
	nameOf := map[string]string{}
	var uids []string
	for i := range waiters {
		uid := fmt.Sprintf("q500-%03d", i)
		uids = append(uids, uid)
		nameOf[uid] = fmt.Sprintf("w%03d", i)
		uidOf[nameOf[uid]] = uid
	}
	submits := &series{name: fmt.Sprintf("%d submits, %d at a time (each)", waiters, sshpool.MaxChannels)}
	var mu sync.Mutex
	var next atomic.Int32
	var wg sync.WaitGroup
	before := nodeFootprint(node.Dir)
	t0 := time.Now()
	for range sshpool.MaxChannels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= waiters {
					return
				}
				uid := uids[i]
				spec := remote.JobSpec{UID: uid, ID: 1000 + i, Name: nameOf[uid], User: "bench", NumGPUs: 1, Run: hold(nameOf[uid])}
				sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
				s0 := time.Now()
				st, err := cl.Submit(sctx, spec)
				d := time.Since(s0)
				cancel()
				if err != nil || st != "PENDING" {
					log, _ := os.ReadFile(filepath.Join(node.Home, ".sshq", "jobs", uid, "log"))
					b.Errorf("submit %s: %s %v\n%s", uid, st, err, log)
					return
				}
				mu.Lock()
				submits.add(d)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	all := time.Since(t0)
	after := nodeFootprint(node.Dir)
	b.Logf("%d waiters submitted in %.1f s (node CPU %.1f s): median submit %.0f ms, max %.0f ms",
		waiters, all.Seconds(), (after.cpu - before.cpu).Seconds(), ms(submits.median()), ms(slices.Max(submits.d)))

	// What waiting costs the node while nothing changes.
	time.Sleep(5 * time.Second)
	const quiet = 10 * time.Second
	q0 := nodeFootprint(node.Dir)
	time.Sleep(quiet)
	q1 := nodeFootprint(node.Dir)
	b.Logf("%d waiters, quiet: %d processes, %.0f MiB resident, %.1f%% of a core (%.2f CPU s in %s)",
		waiters, q1.procs, float64(q1.rssKiB)/1024, 100*float64(q1.cpu-q0.cpu)/float64(quiet), (q1.cpu - q0.cpu).Seconds(), quiet)

	status := &series{name: fmt.Sprintf("sshq status --json (%d waiting)", waiters)}
	statusHand := &series{name: "ssh box '<nvidia-smi queries>'"}
	launch := &series{name: "sshq launch -d --gpus 1 (joins the queue)"}
	launchHand := &series{name: "ssh box '<query>'; ssh box 'tmux new -d …'"}
	freed := &series{name: "a GPU freed → the head of the queue RUNNING"}
	ended := &series{name: "  of which: the holder's run ends → its end recorded"}
	var roundCPU []time.Duration
	for round := -1; round < rounds; round++ {
		f0 := nodeFootprint(node.Dir)
		r := timeCmd(b, sshqCmd(ctx, c.ConfigPath, home, env, "status", "--json"))
		var st statusJSON
		if err := json.Unmarshal(r.stdout, &st); err != nil || len(st.Nodes) != 1 || !st.Nodes[0].Reachable {
			b.Fatalf("status --json: %v\n%s", err, r.stdout)
		}
		if got := len(st.Nodes[0].Queue); got < waiters-round-1 {
			var odd []string
			for _, u := range uids {
				if s := jobState(node, u); s != "PENDING" && s != "RUNNING" {
					log, _ := os.ReadFile(filepath.Join(node.Home, ".sshq", "jobs", u, "log"))
					odd = append(odd, fmt.Sprintf("%s %s: %s", u, s, log))
				}
			}
			b.Fatalf("status shows %d waiting, want at least %d; jobs neither waiting nor running:\n%s\n%s", got, waiters-round-1, strings.Join(odd, "\n"), r.stdout)
		}
		h := timeCmd(b, c.SSH("box", byHandQuery))

		name := fmt.Sprintf("extra%d", round+1)
		l := timeCmd(b, sshqCmd(ctx, c.ConfigPath, home, env, "launch", "-d", "--gpus", "1", "--name", name, "--", hold(name)))
		t1 := time.Now()
		timeCmd(b, c.SSH("box", byHandQuery))
		timeCmd(b, c.SSH("box", byHandTmux(round+1)))
		lh := time.Since(t1)

		// Free the oldest holder's GPU; the head of the queue takes it.
		order := queueOrder(b, node)
		if len(order) == 0 {
			b.Fatal("no job waits")
		}
		head := order[0]
		gone := holding[0]
		holding = append(holding[1:], nameOf[head])
		goneUID := uidOf[gone]
		t2 := time.Now()
		release(gone)
		var endAt time.Duration
		took := pollUntil(b, time.Minute, head+" RUNNING", func() bool {
			if endAt == 0 {
				if _, err := os.Stat(filepath.Join(node.Home, ".sshq", "jobs", goneUID, "exit")); err == nil {
					endAt = time.Since(t2)
				}
			}
			return jobState(node, head) == "RUNNING"
		}, t2)
		f1 := nodeFootprint(node.Dir)
		if round >= 0 {
			status.addRun(r)
			statusHand.addRun(h)
			launch.addRun(l)
			launchHand.add(lh)
			freed.add(took)
			if endAt > 0 {
				ended.add(endAt)
			}
			roundCPU = append(roundCPU, f1.cpu-f0.cpu)
		}
	}
	ss := []*series{status, statusHand, launch, launchHand, freed}
	if len(ended.d) > 0 {
		ss = append(ss, ended)
	}
	logTable(b, fmt.Sprintf("BenchmarkQueue500 (%d jobs waiting for 2 GPUs, poll 2 s, nvidia-smi costs %s a call)", waiters, smiCost), ss...)
	rs := float64(status.median()) / float64(statusHand.median())
	rl := float64(launch.median()) / float64(launchHand.median())
	b.Logf("status %.0f ms (target ≤ 2000: %s; %.1f× by hand), submit %.0f ms (target ≤ 2000: %s; %.1f× by hand), freed GPU taken in %.0f ms, at most %.0f ms (target ≤ 3000: %s); node CPU per round %.1f s",
		ms(status.median()), verdict(ms(status.median()), 2000), rs,
		ms(launch.median()), verdict(ms(launch.median()), 2000), rl,
		ms(freed.median()), ms(slices.Max(freed.d)), verdict(ms(slices.Max(freed.d)), 3000),
		median(roundCPU).Seconds())
	b.ReportMetric(ms(status.median()), "status-ms")
	b.ReportMetric(ms(launch.median()), "submit-ms")
	b.ReportMetric(ms(freed.median()), "freed-gpu-taken-ms")
}
