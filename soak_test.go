package main

// The soak: two controllers for each of two node accounts, launching short
// jobs in bursts at two nodes with random cancels, while one node's sshd is
// down for a while and comes back. Afterwards the jobs' own ledger shows no
// two jobs on one GPU at once, every job has ended, and the nodes hold no
// lease record, ticket or tmux session.
//
// By default it is small enough for the suite; SSHQ_SOAK=full runs 200 jobs
// per controller (see README, Development).

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/sshpool"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// soakJob is one job a controller launches, decided before the run from the
// seed.
type soakJob struct {
	name     string
	gpus     int
	sleepMS  int
	cancel   bool // cancelled after its own burst, or the next one
	late     bool // the next one
	id       int  // from launch -d
	launched bool
}

type soakCtl struct {
	label string // u1a: node account 1, controller a
	acct  int    // 0 or 1: which of each node's accounts it logs in as
	home  string
	env   []string
	jobs  []*soakJob
	burst []int // burst sizes, in order
}

// soakRun is one job's run as its ledger lines tell it; each line is
// "start|end <µs> <HOME> <CUDA_VISIBLE_DEVICES|-> <uuid,...|-> <name> <login>".
type soakRun struct {
	name, login, home string
	cvd, uuids        []string
	start, end        int64 // µs; 0 when not written
}

// soakScript is the job: it appends its start and end to the ledger, with
// the GPUs it holds by CUDA_VISIBLE_DEVICES and by the uuids its wrapper
// leased (the job directory's gpus file). A cancel's SIGTERM writes the end
// before the job exits, and so before its GPUs are free. Nothing after the
// trap is set forks but the sleep: Cancel's signals reach every process of
// the job that appears during the grace, so a forked date would die and
// leave a line without its time.
func soakScript(ledger, body string) string {
	return fmt.Sprintf(`L=%s
g=
while IFS=$'\t' read -r i u; do g=$g${g:+,}$u; done <"$HOME/.sshq/jobs/$SSHQ_JOB_UID/gpus"
me=$(id -un)
rec() { printf '%%s %%s %%s %%s %%s %%s %%s\n' "$1" "${EPOCHREALTIME/[.,]/}" "$HOME" "${CUDA_VISIBLE_DEVICES:--}" "${g:--}" "$SSHQ_JOB_NAME" "$me" >>"$L"; }
trap 'rec end; exit 143' TERM
rec start
%s
rec end
`, sshpool.Quote(ledger), body)
}

func soakSize() (perCtl int, full bool) {
	if os.Getenv("SSHQ_SOAK") == "full" {
		return 200, true
	}
	return 15, false
}

func TestSoak(t *testing.T) {
	t.Parallel()
	perCtl, full := soakSize()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SSHQ_SOAK_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("SSHQ_SOAK_SEED=%s: %v; give the seed a run logged", s, err)
		}
	}
	t.Logf("soak: %d jobs per controller, seed %d (SSHQ_SOAK_SEED=%d repeats its choices)", perCtl, seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0x50a4))

	c := sshtest.Start(t, sshtest.Options{Names: []string{"node1", "node2"}, Env: nodeEnv})
	sims := map[string][]gpusim.GPU{}
	for _, n := range c.Nodes {
		sims[n.Name] = gpusim.A100x2(t.Name() + "/" + n.Name)
		if err := gpusim.Install(n.Dir, sims[n.Name]); err != nil {
			t.Fatal(err)
		}
	}
	// Two node accounts on each node; the config logs account k in as
	// node1-uk and node2-uk. (Each node has Unix users of its own, as two
	// machines would.)
	users := map[string][]sshtest.User{}
	aliasNode := map[string]string{}
	for _, n := range c.Nodes {
		users[n.Name] = c.AddUsers(t, n, 2, "/bin/bash")
		for _, u := range users[n.Name] {
			aliasNode[u.Alias] = n.Name
		}
	}
	ledger := soakLedger(t, c)

	var ctls []*soakCtl
	for k := 1; k <= 2; k++ {
		for _, x := range []string{"a", "b"} {
			ctl := &soakCtl{label: fmt.Sprintf("u%d%s", k, x), acct: k - 1, home: t.TempDir(),
				env: []string{fmt.Sprintf("SSHQ_NODES=node1-u%d,node2-u%d", k, k)}}
			for i := range perCtl {
				j := &soakJob{name: fmt.Sprintf("%s-%03d", ctl.label, i), gpus: 1, sleepMS: rng.IntN(301)}
				switch r := rng.IntN(100); {
				case r < 15:
					j.gpus = 0
				case r < 30:
					j.gpus = 2
				}
				j.cancel, j.late = rng.IntN(10) == 0, rng.IntN(2) == 0
				ctl.jobs = append(ctl.jobs, j)
			}
			for left := perCtl; left > 0; {
				b := min(left, 2+rng.IntN(5))
				ctl.burst = append(ctl.burst, b)
				left -= b
			}
			ctls = append(ctls, ctl)
		}
	}

	// node2's sshd stops once half the launches have returned, and starts
	// again once a few more have: launches and cancels meanwhile find it
	// refusing connections, as during a restart. Just before, a job that
	// runs until cancelled joins node2: it is there across the restart,
	// and is cancelled while its node is down (refused, exit 3), then
	// again once it is back.
	hold := &soakJob{name: "u1a-hold", gpus: 1, cancel: true}
	total := len(ctls) * perCtl
	var launches soakCounter
	var downMu sync.Mutex
	down, restarted := false, false
	allLaunched := make(chan struct{})
	restartDone := make(chan struct{})
	go func() {
		defer close(restartDone)
		select {
		case <-launches.reach(total / 2):
		case <-allLaunched:
		}
		r := sshq(t, c, ctls[0].home, ctls[0].env, "launch", "-d", "--name", hold.name, "--gpus", "1", "--node", "node2-u1", "--", soakScript(ledger, "sleep 1000"))
		if r.code != 0 {
			t.Errorf("launch %s: exit %d\n%s%s", hold.name, r.code, r.stdout, r.stderr)
		}
		hold.id, _ = strconv.Atoi(strings.TrimSpace(r.stdout))
		hold.launched = r.code == 0
		id := strconv.Itoa(hold.id)
		downMu.Lock()
		c.Node("node2").Stop()
		down = true
		downMu.Unlock()
		stopped := launches.get()
		t.Logf("node2's sshd stopped after %d launches", stopped)
		if hold.launched {
			if r := sshq(t, c, ctls[0].home, ctls[0].env, "cancel", id); r.code != 3 || !strings.Contains(r.stderr, "node2-u1") {
				t.Errorf("cancel %s while node2's sshd is down: exit %d, want 3 naming node2-u1\n%s%s", hold.name, r.code, r.stdout, r.stderr)
			}
		}
		select {
		case <-launches.reach(stopped + max(4, total/10)):
		case <-allLaunched:
		}
		downMu.Lock()
		err := c.Node("node2").Start()
		down, restarted = err != nil, err == nil
		downMu.Unlock()
		if err != nil {
			t.Errorf("restarting node2's sshd: %v", err)
			return
		}
		t.Logf("node2's sshd started again after %d launches", launches.get())
		if hold.launched {
			if r := sshq(t, c, ctls[0].home, ctls[0].env, "cancel", id); r.code != 0 {
				t.Errorf("cancel %s once node2 is back: exit %d\n%s%s", hold.name, r.code, r.stdout, r.stderr)
			}
		}
	}()
	// outage says whether node2 is down and whether it has come back;
	// outageSince, whether it was down at any time since outage said before.
	outage := func() [2]bool { downMu.Lock(); defer downMu.Unlock(); return [2]bool{down, restarted} }
	outageSince := func(before [2]bool) bool {
		now := outage()
		return before[0] || now[0] || now[1] != before[1]
	}

	began := time.Now()
	var wg sync.WaitGroup
	var retryMu sync.Mutex
	var retry []func() // cancels that met node2 down, asked again after
	var cancels, duringOutage atomic.Int32
	cancel := func(ctl *soakCtl, j *soakJob) {
		if !j.launched {
			return
		}
		cancels.Add(1)
		ask := func() int {
			return sshq(t, c, ctl.home, ctl.env, "cancel", strconv.Itoa(j.id)).code
		}
		before := outage()
		if code := ask(); code == 3 && outageSince(before) {
			retryMu.Lock()
			retry = append(retry, func() {
				if code := ask(); code != 0 {
					t.Errorf("cancel %s after node2 came back: exit %d", j.name, code)
				}
			})
			retryMu.Unlock()
		} else if code != 0 {
			t.Errorf("cancel %s: exit %d", j.name, code)
		}
	}
	for _, ctl := range ctls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := 0
			var prev []*soakJob
			for _, size := range ctl.burst {
				burst := ctl.jobs[next : next+size]
				next += size
				var bw sync.WaitGroup
				for _, j := range burst {
					bw.Add(1)
					go func() {
						defer bw.Done()
						defer launches.add()
						before := outage()
						r := sshq(t, c, ctl.home, ctl.env, "launch", "-d", "--name", j.name, "--gpus", strconv.Itoa(j.gpus), "--", soakScript(ledger, fmt.Sprintf("sleep 0.%03d", j.sleepMS)))
						id, err := strconv.Atoi(strings.TrimSpace(r.stdout))
						if r.code != 0 || err != nil {
							t.Errorf("launch %s (node2 down meanwhile: %v): exit %d\n%s%s", j.name, outageSince(before), r.code, r.stdout, r.stderr)
							return
						}
						j.id, j.launched = id, true
						if outageSince(before) {
							duringOutage.Add(1)
						}
					}()
				}
				bw.Wait()
				for _, j := range prev {
					if j.cancel && j.late {
						cancel(ctl, j)
					}
				}
				for _, j := range burst {
					if j.cancel && !j.late {
						cancel(ctl, j)
					}
				}
				prev = burst
			}
			for _, j := range prev {
				if j.cancel && j.late {
					cancel(ctl, j)
				}
			}
		}()
	}
	wg.Wait()
	close(allLaunched)
	<-restartDone
	if hold.launched {
		ctls[0].jobs = append(ctls[0].jobs, hold)
	}
	for _, f := range retry {
		f()
	}
	launched := time.Since(began)
	t.Logf("soak: %d launches returned after %s, %d of them while node2 was down; %d cancels, %d asked again after it came back",
		total, launched.Round(time.Second), duringOutage.Load(), cancels.Load(), len(retry))

	// Every job ends, as each controller's queue says.
	queues := make([][]queueEntry, len(ctls))
	deadline := patience
	if full {
		deadline = 30 * time.Minute
	}
	for i, ctl := range ctls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			queues[i] = soakWait(t, c, ctl, deadline)
		}()
	}
	wg.Wait()
	states, unended := map[string]int{}, 0
	for _, q := range queues {
		for _, e := range q {
			states[e.State]++
			if !job.State(e.State).Terminal() {
				unended++
			}
		}
	}
	t.Logf("soak: jobs waited for %s: %v", time.Since(began).Round(time.Second), states)

	runs := soakReadLedger(t, ledger)
	nodeOf := func(home string) string {
		for _, n := range c.Nodes {
			if strings.HasPrefix(home, n.Dir+"/") {
				return n.Name
			}
		}
		return ""
	}
	byGPU := map[string][]*soakRun{}
	for i, ctl := range ctls {
		seen := map[string]queueEntry{}
		for _, e := range queues[i] {
			seen[e.Name] = e
		}
		if len(queues[i]) != len(ctl.jobs) {
			t.Errorf("controller %s lists %d jobs, want %d", ctl.label, len(queues[i]), len(ctl.jobs))
		}
		for _, j := range ctl.jobs {
			e, ok := seen[j.name]
			if !ok {
				t.Errorf("controller %s lost job %s", ctl.label, j.name)
				continue
			}
			ran := runs[j.name]
			switch {
			case e.State == "CANCELLED" && j.cancel:
			case e.State == "SUCCEEDED":
				if ran == nil || ran.start == 0 || ran.end == 0 {
					t.Errorf("job %s SUCCEEDED, but its ledger holds %+v", j.name, ran)
				}
			default:
				t.Errorf("job %s (%d GPUs, cancelled: %v) on %s ended %s (exit %v)", j.name, j.gpus, j.cancel, e.Node, e.State, e.ExitCode)
			}
			if ran == nil || ran.start == 0 {
				continue
			}
			if ran.end == 0 {
				t.Errorf("job %s started but never recorded its end (%s)", j.name, e.State)
				continue
			}
			node := nodeOf(ran.home)
			if node == "" || node != aliasNode[e.Node] {
				t.Errorf("job %s ran with HOME %s; its controller says it ran on %s", j.name, ran.home, e.Node)
			} else if want := users[node][ctl.acct].Name; ran.login != want {
				t.Errorf("job %s ran on %s as %s, want its controller's account %s", j.name, node, ran.login, want)
			}
			if len(ran.uuids) != j.gpus || len(ran.cvd) != j.gpus {
				t.Errorf("job %s asked %d GPUs and held uuids %v, CUDA_VISIBLE_DEVICES %v", j.name, j.gpus, ran.uuids, ran.cvd)
			}
			for k, u := range ran.uuids {
				idx := slices.IndexFunc(sims[node], func(g gpusim.GPU) bool { return g.UUID == u })
				if idx < 0 || k >= len(ran.cvd) || ran.cvd[k] != strconv.Itoa(idx) {
					t.Errorf("job %s on %s: GPU %s is not index %v there", j.name, node, u, ran.cvd)
				}
				byGPU[node+" "+u] = append(byGPU[node+" "+u], ran)
			}
		}
	}
	if len(runs) > total+1 {
		t.Errorf("the ledger names %d jobs, %d were launched", len(runs), total+1)
	}
	overlaps, held := 0, 0
	for gpu, hs := range byGPU {
		sort.Slice(hs, func(a, b int) bool { return hs[a].start < hs[b].start })
		held += len(hs)
		for k := 1; k < len(hs); k++ {
			// Sorted by start: b overlaps an earlier a that has not
			// ended when b starts.
			for p := k - 1; p >= 0; p-- {
				a, b := hs[p], hs[k]
				if b.start < a.end {
					overlaps++
					t.Errorf("GPU %s: %s [%d, %d] and %s [%d, %d] overlap", gpu, a.name, a.start, a.end, b.name, b.start, b.end)
				}
			}
		}
	}
	t.Logf("soak: %d GPU holdings over %d GPUs, %d overlaps", held, len(byGPU), overlaps)

	// A job still running keeps its records and session by right.
	if unended > 0 {
		t.Errorf("%d jobs did not end, so what the nodes keep was not checked", unended)
		return
	}
	soakNoLeftovers(t, c, users)
}

// soakLedger is the file on the machine's disk that every node account's
// jobs append to.
func soakLedger(t *testing.T, c *sshtest.Cluster) string {
	t.Helper()
	dir := filepath.Join(c.Dir, "ledger")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o777)
	p := filepath.Join(dir, "log")
	if err := os.WriteFile(p, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, 0o666)
	return p
}

func soakReadLedger(t *testing.T, path string) map[string]*soakRun {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	runs := map[string]*soakRun{}
	list := func(s string) []string {
		if s == "-" {
			return nil
		}
		return strings.Split(s, ",")
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		us, err := strconv.ParseInt(f[1], 10, 64)
		if len(f) != 7 || err != nil || (f[0] != "start" && f[0] != "end") {
			t.Errorf("malformed ledger line %q", l)
			continue
		}
		r := runs[f[5]]
		if r == nil {
			r = &soakRun{name: f[5]}
			runs[f[5]] = r
		}
		if f[0] == "start" {
			if r.start != 0 {
				t.Errorf("job %s started twice", r.name)
			}
			r.start, r.home, r.login, r.cvd, r.uuids = us, f[2], f[6], list(f[3]), list(f[4])
		} else {
			if r.end != 0 {
				t.Errorf("job %s ended twice", r.name)
			}
			r.end = us
		}
	}
	return runs
}

// soakWait waits with `sshq wait` until every job of ctl has ended, and
// returns its queue. Each wait is on the oldest few unfinished jobs, near
// the head of the nodes' queues, and is stopped after a while (the jobs
// keep running) to read the queue again, so a job that never ends shows
// as such at the bound rather than as a killed command.
func soakWait(t *testing.T, c *sshtest.Cluster, ctl *soakCtl, bound time.Duration) []queueEntry {
	deadline := time.Now().Add(bound)
	for {
		q := queue(t, c, ctl.home, ctl.env)
		var open, desc []string
		for _, j := range q {
			if !job.State(j.State).Terminal() {
				open = append(open, strconv.Itoa(j.ID))
				desc = append(desc, fmt.Sprintf("#%d %s %s on %s", j.ID, j.Name, j.State, j.Node))
			}
		}
		if len(open) == 0 {
			return q
		}
		if time.Now().After(deadline) {
			t.Errorf("controller %s: %d jobs not ended after %s:\n%s", ctl.label, len(open), bound, strings.Join(desc, "\n"))
			return q
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, sshqBin, append([]string{"wait", "--interval", "200ms"}, open[:min(len(open), 8)]...)...)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + ctl.home, "SSHQ_HOME=" + filepath.Join(ctl.home, ".sshq"), "SSHQ_SSH_CONFIG=" + c.ConfigPath}, ctl.env...)
		_ = cmd.Run() // the queue read next says how they ended
		cancel()
	}
}

// soakNoLeftovers checks that the nodes keep nothing of the ended jobs: no
// record or job lock in any account's lease records directory, no waiter's
// mark, and no tmux session on any account's sshq server. A keeper removes
// its record just after its job's end is recorded, so they are given the
// time a hang would take to show.
func soakNoLeftovers(t *testing.T, c *sshtest.Cluster, users map[string][]sshtest.User) {
	t.Helper()
	var left []string
	deadline := time.Now().Add(patience)
	for {
		left = nil
		for _, n := range c.Nodes {
			// Where doc.go puts each account's records: <D>/u<uid> when
			// root made D, else <parent of D>/<base of D>.u<uid>[.suffix].
			d := n.Env["SSHQ_LEASE_DIR"]
			dirs, _ := filepath.Glob(d + ".u*")
			more, _ := filepath.Glob(filepath.Join(d, "u*"))
			for _, dir := range append(dirs, more...) {
				ents, _ := os.ReadDir(dir)
				for _, e := range ents {
					if e.Name() == ".cache" {
						cache, _ := os.ReadDir(filepath.Join(dir, ".cache"))
						for _, ce := range cache {
							if !strings.HasPrefix(ce.Name(), "smi-") {
								left = append(left, filepath.Join(dir, ".cache", ce.Name()))
							}
						}
						continue
					}
					left = append(left, filepath.Join(dir, e.Name()))
				}
			}
			for _, u := range users[n.Name] {
				out, _ := c.SSH(u.Alias, "tmux -L sshq list-sessions -F '#{session_name}' 2>/dev/null; echo soak-end").Output()
				s := strings.TrimSpace(string(out))
				if s != "soak-end" {
					left = append(left, fmt.Sprintf("%s: tmux sessions %q", u.Alias, strings.TrimSuffix(s, "soak-end")))
				}
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("left behind on the nodes after every job ended (%d):\n%s", len(left), strings.Join(left[:min(len(left), 40)], "\n"))
	}
}

// soakCounter counts returned launches; reach(n) is closed once n have.
type soakCounter struct {
	mu    sync.Mutex
	n     int
	waits map[int][]chan struct{}
}

func (s *soakCounter) add() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	for n, chs := range s.waits {
		if s.n >= n {
			for _, ch := range chs {
				close(ch)
			}
			delete(s.waits, n)
		}
	}
}

func (s *soakCounter) get() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *soakCounter) reach(n int) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{})
	if s.n >= n {
		close(ch)
		return ch
	}
	if s.waits == nil {
		s.waits = map[int][]chan struct{}{}
	}
	s.waits[n] = append(s.waits[n], ch)
	return ch
}
