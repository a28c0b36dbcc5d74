package main

// Fair sharing, end to end: the sshq binary against real sshd nodes whose
// GPUs are simulated. Every job records what it did ("start"/"end" lines with
// a nanosecond clock and its CUDA_VISIBLE_DEVICES) in a file on the node, and
// the tests check those records: no two jobs on one GPU, ever, whichever
// controller or Unix user submitted them; FIFO with safe backfill; a queue
// that drains with no controller alive; leases that never go stale.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/sshpool"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// span is one job's run as the job itself recorded it.
type span struct {
	name, user string
	gpus       []string
	start, end int64 // unix ns; end 0 while running
}

// eventsFile creates a file on node n that every job of every user may append
// to (its directory is 0777, not sticky, so no protected_regular rule applies).
func eventsFile(t *testing.T, n *sshtest.Node) string {
	t.Helper()
	dir := filepath.Join(n.Dir, "events")
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

// recorded is a job script that appends its start and end to events around
// body. Each line is one small O_APPEND write, so concurrent jobs never
// interleave within a line.
func recorded(events, body string) string {
	ev := sshpool.Quote(events)
	line := `"$(date +%%s%%N) ${CUDA_VISIBLE_DEVICES:--} $SSHQ_JOB_NAME $(id -un)"`
	return fmt.Sprintf("echo start "+line+" >> %[1]s\n%[2]s\necho end "+line+" >> %[1]s\n", ev, body)
}

// gated is a body that waits until the file flag exists.
func gated(flag string) string {
	return fmt.Sprintf("echo started; while [ ! -e %s ]; do sleep 0.05; done", sshpool.Quote(flag))
}

func readSpans(t *testing.T, events string) map[string]*span {
	t.Helper()
	b, err := os.ReadFile(events)
	if err != nil {
		t.Fatal(err)
	}
	spans := map[string]*span{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if len(f) != 5 {
			t.Fatalf("malformed event line %q in:\n%s", l, b)
		}
		ns, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			t.Fatalf("event line %q: %v", l, err)
		}
		s := spans[f[3]]
		if s == nil {
			s = &span{name: f[3], user: f[4]}
			spans[f[3]] = s
		}
		var gpus []string
		if f[2] != "-" {
			gpus = strings.Split(f[2], ",")
		}
		switch f[0] {
		case "start":
			if s.start != 0 {
				t.Errorf("job %s started twice:\n%s", s.name, b)
			}
			s.start, s.gpus = ns, gpus
		case "end":
			s.end = ns
		}
	}
	return spans
}

// endedCount is how many recorded jobs have ended.
func endedCount(t *testing.T, events string) int {
	n := 0
	for _, s := range readSpans(t, events) {
		if s.end != 0 {
			n++
		}
	}
	return n
}

// checkExclusive fails the test if two jobs ever held the same GPU at the
// same time, and returns the most jobs that ran at once.
func checkExclusive(t *testing.T, spans map[string]*span) int {
	t.Helper()
	var all []*span
	for _, s := range spans {
		if s.start == 0 || s.end == 0 || s.end < s.start {
			t.Errorf("job %s has no complete run: %+v", s.name, *s)
			continue
		}
		all = append(all, s)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].start < all[j].start })
	for i, a := range all {
		for _, b := range all[i+1:] {
			if a.start < b.end && b.start < a.end {
				for _, g := range a.gpus {
					for _, h := range b.gpus {
						if g == h {
							t.Errorf("jobs %s [%d,%d] and %s [%d,%d] overlap on GPU %s", a.name, a.start, a.end, b.name, b.start, b.end, g)
						}
					}
				}
			}
		}
	}
	most := 0
	for _, a := range all {
		n := 0
		for _, b := range all {
			if b.start <= a.start && a.start < b.end {
				n++
			}
		}
		most = max(most, n)
	}
	return most
}

func statusOf(t *testing.T, c *sshtest.Cluster, home string, env []string) statusJSON {
	t.Helper()
	r := sshq(t, c, home, env, "status", "--json")
	var st statusJSON
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json: %v\n%s\n%s", err, r.stdout, r.stderr)
	}
	return st
}

func byName(q []queueEntry) map[string]queueEntry {
	m := map[string]queueEntry{}
	for _, j := range q {
		m[j.Name] = j
	}
	return m
}

// launchD submits a job with `sshq launch -d` and fails the test if it was
// refused.
func launchD(t *testing.T, c *sshtest.Cluster, home string, env []string, name, gpus, script string) {
	t.Helper()
	r := sshq(t, c, home, env, "launch", "-d", "--name", name, "--gpus", gpus, "--", script)
	if r.code != 0 {
		t.Fatalf("launch %s: exit %d\n%s%s", name, r.code, r.stdout, r.stderr)
	}
}

// waitStates polls `sshq queue` until every named job is in the given state.
func waitStates(t *testing.T, c *sshtest.Cluster, home string, env []string, state string, names ...string) map[string]queueEntry {
	t.Helper()
	var m map[string]queueEntry
	waitFor(t, strings.Join(names, ", ")+" "+state, func() bool {
		m = byName(queue(t, c, home, env))
		for _, n := range names {
			if m[n].State != state {
				return false
			}
		}
		return true
	})
	return m
}

// stillPending checks over several queue polls (about a second, five node
// poll intervals) that the named jobs keep waiting.
func stillPending(t *testing.T, c *sshtest.Cluster, home string, env []string, names ...string) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for first := true; first || time.Now().Before(deadline); first = false {
		m := byName(queue(t, c, home, env))
		for _, n := range names {
			if m[n].State != "PENDING" {
				t.Fatalf("job %s is %s, want PENDING: %+v", n, m[n].State, m)
			}
		}
	}
}

func allSucceeded(t *testing.T, q []queueEntry) {
	t.Helper()
	for _, j := range q {
		if j.State != "SUCCEEDED" {
			t.Errorf("job #%d %s: %s (exit %v)", j.ID, j.Name, j.State, j.ExitCode)
		}
	}
}

func TestFairTwoGPUsSixJobsNeverShare(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.A100x2(t.Name())})
	events := eventsFile(t, c.Node("box"))
	// Every job holds its GPU until the flag exists: two run at once, four
	// wait, whatever the machine's speed.
	flag := filepath.Join(c.Node("box").Home, "release")
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			launchD(t, c, home, env, fmt.Sprintf("j%d", i), "1", recorded(events, gated(flag)))
		}()
	}
	wg.Wait()
	waitFor(t, "two jobs running and four waiting", func() bool {
		n := map[string]int{}
		for _, j := range queue(t, c, home, env) {
			n[j.State]++
		}
		return n["RUNNING"] == 2 && n["PENDING"] == 4
	})
	os.WriteFile(flag, nil, 0o644)
	q := waitJobs(t, c, home, env)
	if len(q) != 6 {
		t.Fatalf("%d jobs, want 6: %+v", len(q), q)
	}
	allSucceeded(t, q)
	spans := readSpans(t, events)
	if len(spans) != 6 {
		t.Fatalf("%d jobs ran, want 6", len(spans))
	}
	for _, s := range spans {
		if len(s.gpus) != 1 || (s.gpus[0] != "0" && s.gpus[0] != "1") {
			t.Errorf("job %s got CUDA_VISIBLE_DEVICES %v, want one of 0, 1", s.name, s.gpus)
		}
	}
	if most := checkExclusive(t, spans); most != 2 {
		t.Errorf("at most %d jobs ran at once on 2 GPUs, want exactly 2 (no GPU shared, none left idle)", most)
	}
	// The controller's record agrees with what the jobs saw.
	for _, j := range q {
		if s := spans[j.Name]; s != nil && (len(j.GPUs) != 1 || strconv.Itoa(j.GPUs[0]) != s.gpus[0]) {
			t.Errorf("job %s: queue says GPUs %v, the job saw %v", j.Name, j.GPUs, s.gpus)
		}
	}
}

// nodeUsers makes count new Unix users able to ssh into n (see
// sshtest.Cluster.AddUsers) and returns an ssh alias per user.
func nodeUsers(t *testing.T, c *sshtest.Cluster, n *sshtest.Node, count int) []string {
	t.Helper()
	return nodeUsersWithShell(t, c, n, count, "/bin/bash")
}

// nodeUsersWithShell is nodeUsers with the users' login shell chosen.
func nodeUsersWithShell(t *testing.T, c *sshtest.Cluster, n *sshtest.Node, count int, shell string) []string {
	t.Helper()
	var aliases []string
	for _, u := range c.AddUsers(t, n, count, shell) {
		aliases = append(aliases, u.Alias)
	}
	return aliases
}

// whoJSON is the part of `sshq status --json` that says who holds and who
// waits.
type whoJSON struct {
	Nodes []struct {
		GPUs []struct {
			State  string    `json:"state"`
			Holder *whoEntry `json:"holder"`
		} `json:"gpus"`
		Queue []whoEntry `json:"queue"`
	} `json:"nodes"`
}

type whoEntry struct {
	JobID          int    `json:"job_id"`
	Position       int    `json:"position"`
	Name           string `json:"name"`
	User           string `json:"user"`
	NodeUser       string `json:"node_user"`
	ControllerUser string `json:"controller_user"`
}

func whoOf(t *testing.T, c *sshtest.Cluster, home string, env []string) whoJSON {
	t.Helper()
	r := sshq(t, c, home, env, "status", "--json")
	var st whoJSON
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || len(st.Nodes) == 0 {
		t.Fatalf("status --json: %v\n%s\n%s", err, r.stdout, r.stderr)
	}
	return st
}

// containsRow reports whether some line of a table holds cells as its first
// whitespace-separated fields.
func containsRow(table string, cells ...string) bool {
	for _, l := range strings.Split(table, "\n") {
		f := strings.Fields(l)
		if len(f) >= len(cells) && slices.Equal(f[:len(cells)], cells) {
			return true
		}
	}
	return false
}

func TestFairTwoControllersTwoUsers(t *testing.T) {
	t.Parallel()
	c, homeA, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.A100x2(t.Name())})
	homeB := t.TempDir()
	envA, envB := env, env
	asRoot := os.Geteuid() == 0
	if asRoot {
		aliases := nodeUsers(t, c, c.Node("box"), 2)
		envA, envB = []string{"SSHQ_NODES=" + aliases[0]}, []string{"SSHQ_NODES=" + aliases[1]}
	} else {
		t.Log("not root: both controllers use one Unix user on the node")
	}
	events := eventsFile(t, c.Node("box"))
	// Three jobs each on two GPUs: some always wait, whoever submits first.
	const perController = 3
	var wg sync.WaitGroup
	for _, ctl := range []struct {
		home, prefix string
		env          []string
	}{{homeA, "a", envA}, {homeB, "b", envB}} {
		for i := range perController {
			wg.Add(1)
			go func() {
				defer wg.Done()
				launchD(t, c, ctl.home, ctl.env, fmt.Sprintf("%s%d", ctl.prefix, i), "1", recorded(events, "sleep 0.3"))
			}()
		}
	}
	wg.Wait()
	qa := waitJobs(t, c, homeA, envA)
	qb := waitJobs(t, c, homeB, envB)
	if len(qa) != perController || len(qb) != perController {
		t.Fatalf("controller A has %d jobs, B %d; want %d each", len(qa), len(qb), perController)
	}
	allSucceeded(t, qa)
	allSucceeded(t, qb)
	spans := readSpans(t, events)
	if len(spans) != 2*perController {
		t.Fatalf("%d jobs ran, want %d", len(spans), 2*perController)
	}
	if most := checkExclusive(t, spans); most > 2 {
		t.Errorf("%d jobs ran at once on 2 GPUs", most)
	}
	// The node account each controller's jobs ran as, by the jobs' own word.
	users := map[string]string{}
	for _, s := range spans {
		users[s.name[:1]] = s.user
	}
	// Each controller sees the other's jobs on the node, B's lease and A's
	// ticket, each under the node account that runs it, even though both
	// controllers run as the same local user.
	flag := filepath.Join(filepath.Dir(events), "release")
	launchD(t, c, homeB, envB, "b-hold", "1", recorded(events, gated(flag)))
	waitStates(t, c, homeB, envB, "RUNNING", "b-hold")
	launchD(t, c, homeA, envA, "a-all", "2", recorded(events, "true"))
	me := localUserName(t)
	stA, stB := whoOf(t, c, homeA, envA), whoOf(t, c, homeB, envB)
	held := 0
	for _, g := range stA.Nodes[0].GPUs {
		if h := g.Holder; g.State == "leased" && h != nil && h.Name == "b-hold" && h.JobID == perController+1 {
			held++
			if h.User != users["b"] || h.NodeUser != users["b"] || h.ControllerUser != me {
				t.Errorf("controller A's status: b-hold held by %+v, want node user %s (controller user %s)", *h, users["b"], me)
			}
		}
	}
	if held != 1 {
		t.Errorf("controller A's status shows B's job on %d GPUs, want 1: %+v", held, stA.Nodes[0].GPUs)
	}
	for ctl, st := range map[string]whoJSON{"A": stA, "B": stB} {
		if q := st.Nodes[0].Queue; len(q) != 1 || q[0].Name != "a-all" || q[0].Position != 1 ||
			q[0].User != users["a"] || q[0].NodeUser != users["a"] || q[0].ControllerUser != me {
			t.Errorf("controller %s's status queue %+v, want A's a-all at 1 as node user %s", ctl, q, users["a"])
		}
	}
	human := sshq(t, c, homeA, envA, "status").stdout
	if !strings.Contains(human, fmt.Sprintf("#%d b-hold (%s)", perController+1, users["b"])) {
		t.Errorf("sshq status does not show b-hold held by %s:\n%s", users["b"], human)
	}
	if !containsRow(human, "1", "a-all", users["a"], "2") {
		t.Errorf("sshq status does not show a-all waiting as %s:\n%s", users["a"], human)
	}
	os.WriteFile(flag, nil, 0o644)
	waitStates(t, c, homeA, envA, "SUCCEEDED", "a-all")
	checkExclusive(t, readSpans(t, events))

	if asRoot {
		if users["a"] == users["b"] || users["a"] == "root" || users["b"] == "root" {
			t.Errorf("jobs ran as %v, want one distinct non-root user per controller", users)
		}
		// No directory is shared: each user's records are in a
		// directory of their own beside the lease directory, in the
		// root-owned sticky tmp.
		if _, err := os.Lstat(filepath.Join(c.Node("box").Dir, "tmp", "sshq-leases")); err == nil {
			t.Error("a shared lease directory was created; its creator would control everyone's records")
		}
		for _, name := range []string{users["a"], users["b"]} {
			u, err := user.Lookup(name)
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(filepath.Join(c.Node("box").Dir, "tmp", "sshq-leases.u"+u.Uid))
			if err != nil || fi.Mode().Perm() != 0o755 || fmt.Sprint(fi.Sys().(*syscall.Stat_t).Uid) != u.Uid {
				t.Errorf("%s's lease records directory: %v, want drwxr-xr-x owned by %s", name, err, name)
			}
		}
	}
}

func TestFairFIFOHeadIsNeverPassed(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.RTX4090x4(t.Name())})
	events := eventsFile(t, c.Node("box"))
	flag := filepath.Join(c.Node("box").Home, "release")
	launchD(t, c, home, env, "r1", "1", recorded(events, gated(flag)))
	launchD(t, c, home, env, "r2", "1", recorded(events, gated(flag)))
	waitStates(t, c, home, env, "RUNNING", "r1", "r2")
	launchD(t, c, home, env, "big", "4", recorded(events, "sleep 0.3"))
	launchD(t, c, home, env, "s1", "1", recorded(events, "sleep 0.2"))
	launchD(t, c, home, env, "s2", "1", recorded(events, "sleep 0.2"))
	// Two GPUs are free, but a 1-GPU job would delay the 4-GPU head.
	stillPending(t, c, home, env, "big", "s1", "s2")
	m := byName(queue(t, c, home, env))
	for name, pos := range map[string]int{"big": 1, "s1": 2, "s2": 3} {
		if m[name].QueuePos == nil || *m[name].QueuePos != pos {
			t.Errorf("%s queue position %v, want %d", name, m[name].QueuePos, pos)
		}
	}
	os.WriteFile(flag, nil, 0o644)
	allSucceeded(t, waitJobs(t, c, home, env))
	spans := readSpans(t, events)
	checkExclusive(t, spans)
	big := spans["big"]
	if big == nil || len(big.gpus) != 4 {
		t.Fatalf("big ran with %+v", big)
	}
	for _, s := range []string{"s1", "s2"} {
		if spans[s] == nil || spans[s].start < big.end {
			t.Errorf("%s started before the 4-GPU job it queued behind had finished: %+v vs %+v", s, spans[s], *big)
		}
	}
}

func TestFairBackfillOnlyOnGPUsTheHeadCannotUse(t *testing.T) {
	t.Parallel()
	// GPU 0 is an RTX A4000, GPUs 1-3 are RTX A6000s.
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"ws": gpusim.WorkstationWithDisplay(t.Name())})
	events := eventsFile(t, c.Node("ws"))
	flag := filepath.Join(c.Node("ws").Home, "release")
	launchD(t, c, home, env, "hold", "A6000:1", recorded(events, gated(flag)))
	waitStates(t, c, home, env, "RUNNING", "hold")
	launchD(t, c, home, env, "head", "A6000:3", recorded(events, "sleep 0.2"))
	launchD(t, c, home, env, "late6000", "A6000:1", recorded(events, "sleep 0.2"))
	launchD(t, c, home, env, "late4000", "A4000:1", recorded(events, "sleep 0.2"))
	// The A4000 is no use to the head: the younger job may take it now.
	waitStates(t, c, home, env, "SUCCEEDED", "late4000")
	m := byName(queue(t, c, home, env))
	if m["head"].State != "PENDING" || m["late6000"].State != "PENDING" {
		t.Fatalf("head %s, late6000 %s; want both PENDING (two A6000s are kept for the head)", m["head"].State, m["late6000"].State)
	}
	os.WriteFile(flag, nil, 0o644)
	allSucceeded(t, waitJobs(t, c, home, env))
	spans := readSpans(t, events)
	checkExclusive(t, spans)
	if g := spans["late4000"].gpus; len(g) != 1 || g[0] != "0" {
		t.Errorf("late4000 ran on %v, want GPU 0", g)
	}
	if g := strings.Join(spans["head"].gpus, ","); g != "1,2,3" {
		t.Errorf("head ran on %s, want 1,2,3", g)
	}
	if spans["late6000"].start < spans["head"].end {
		t.Errorf("late6000 passed the head on a GPU the head needed")
	}
}

// sshqProc starts the binary as a background process, as a user's terminal
// would, and returns it with its live output.
func sshqProc(t *testing.T, c *sshtest.Cluster, home string, env []string, args ...string) (*exec.Cmd, *syncBuffer, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(sshqBin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "SSHQ_HOME=" + filepath.Join(home, ".sshq"), "SSHQ_SSH_CONFIG=" + c.ConfigPath}, env...)
	var out, errb syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, &out, &errb
}

func TestFairQueueDrainsWithNoControllerAlive(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.T4x1(t.Name())})
	events := eventsFile(t, c.Node("box"))
	flag := filepath.Join(c.Node("box").Home, "release")
	// An attached launch, killed while its job runs.
	cmd, out, _ := sshqProc(t, c, home, env, "launch", "--name", "blocker", "--gpus", "1", "--", recorded(events, gated(flag)))
	waitFor(t, "blocker output streamed", func() bool { return strings.Contains(out.String(), "started") })
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	launchD(t, c, home, env, "q1", "1", recorded(events, "sleep 0.1"))
	launchD(t, c, home, env, "q2", "1", recorded(events, "sleep 0.1"))
	// An attached launch, killed while its job waits in the queue.
	cmd, _, errb := sshqProc(t, c, home, env, "launch", "--name", "q3", "--gpus", "1", "--", recorded(events, "sleep 0.1"))
	waitFor(t, "q3 submitted", func() bool { return strings.Contains(errb.String(), "submitted to box") })
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	launchD(t, c, home, env, "q4", "1", recorded(events, "sleep 0.1"))
	m := byName(queue(t, c, home, env))
	for i, n := range []string{"q1", "q2", "q3", "q4"} {
		if m[n].State != "PENDING" || m[n].QueuePos == nil || *m[n].QueuePos != i+1 {
			t.Fatalf("%s: %s at %v, want PENDING at %d", n, m[n].State, m[n].QueuePos, i+1)
		}
	}
	// No sshq process exists from here on: the node alone runs the queue.
	os.WriteFile(flag, nil, 0o644)
	waitFor(t, "five jobs ended on the node", func() bool { return endedCount(t, events) == 5 })
	spans := readSpans(t, events)
	checkExclusive(t, spans)
	order := []string{"blocker", "q1", "q2", "q3", "q4"}
	for i := 1; i < len(order); i++ {
		if a, b := spans[order[i-1]], spans[order[i]]; b.start < a.end {
			t.Errorf("%s started before %s ended: FIFO broken", order[i], order[i-1])
		}
	}
	allSucceeded(t, waitJobs(t, c, home, env))
}

func TestFairForeignProcessIsNeverTrampled(t *testing.T) {
	t.Parallel()
	gpus := gpusim.A100x2(t.Name())
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpus})
	events := eventsFile(t, c.Node("box"))
	foreign := exec.Command("sleep", "300")
	if err := foreign.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { foreign.Process.Kill(); foreign.Wait() })
	if err := gpusim.AddProcess(c.Node("box").SimDir, gpus[0].UUID, foreign.Process.Pid, 2048, "python"); err != nil {
		t.Fatal(err)
	}
	launchD(t, c, home, env, "dodger", "1", recorded(events, "sleep 0.1"))
	waitStates(t, c, home, env, "SUCCEEDED", "dodger")
	if g := readSpans(t, events)["dodger"].gpus; len(g) != 1 || g[0] != "1" {
		t.Errorf("dodger ran on GPU %v beside a foreign process, want GPU 1", g)
	}
	launchD(t, c, home, env, "whole", "2", recorded(events, "sleep 0.1"))
	stillPending(t, c, home, env, "whole")
	st := statusOf(t, c, home, env)
	n := st.Nodes[0]
	if n.GPUs[0].State != "foreign" || n.GPUs[1].State != "free" || len(n.Queue) != 1 || n.Queue[0].Name != "whole" || n.Queue[0].Position != 1 {
		t.Errorf("status while whole waits: gpus %+v queue %+v", n.GPUs, n.Queue)
	}
	foreign.Process.Kill()
	foreign.Wait()
	q := waitJobs(t, c, home, env)
	allSucceeded(t, q)
	if w := byName(q)["whole"]; fmt.Sprint(w.GPUs) != "[0 1]" {
		t.Errorf("whole ran on %v, want [0 1]", w.GPUs)
	}
}

// killSession SIGKILLs every process in the session of pid: a job's wrapper
// (tmux made it the session leader) and everything it started.
func killSession(t *testing.T, pid int) {
	t.Helper()
	sid := sessionOf(pid)
	if sid <= 1 {
		t.Fatalf("no session for pid %d", pid)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		q, _ := strconv.Atoi(filepath.Base(p))
		if q != os.Getpid() && sessionOf(q) == sid {
			syscall.Kill(q, syscall.SIGKILL)
		}
	}
}

// killJob SIGKILLs every process marked with the job's uid (the wrapper and
// all it started) and returns how many it found.
func killJob(t *testing.T, uid string) int {
	t.Helper()
	mark := []byte("\x00SSHQ_JOB_UID=" + uid + "\x00")
	n := 0
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(append([]byte{0}, b...), mark) {
			continue
		}
		if pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p))); pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
			n++
		}
	}
	return n
}

// sessionOf reads a process's session id from /proc (field 6 of stat).
func sessionOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 4 {
		return -1
	}
	sid, _ := strconv.Atoi(f[3])
	return sid
}

func TestFairLeasesNeverGoStale(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.A100x2(t.Name())})
	box := c.Node("box")
	events := eventsFile(t, box)
	pidFile := filepath.Join(box.Home, "pid")
	launchD(t, c, home, env, "victim", "2", fmt.Sprintf("echo $$ > %s; exec sleep 300", sshpool.Quote(pidFile)))
	var pid int
	waitFor(t, "victim wrote its pid", func() bool {
		b, _ := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return pid > 0
	})
	killSession(t, pid)
	m := waitStates(t, c, home, env, "LOST", "victim")
	if m["victim"].ExitCode != nil {
		t.Errorf("a SIGKILLed wrapper left exit code %d", *m["victim"].ExitCode)
	}
	for _, g := range statusOf(t, c, home, env).Nodes[0].GPUs {
		if g.State != "free" || g.Holder != nil {
			t.Errorf("GPU %d is %s (holder %+v) after its job was killed", g.Index, g.State, g.Holder)
		}
	}
	launchD(t, c, home, env, "after-kill", "2", recorded(events, "sleep 0.1"))
	waitStates(t, c, home, env, "SUCCEEDED", "after-kill")

	// A waiting job SIGKILLed leaves a ticket nobody holds: the jobs behind
	// it move up as if it had never been there.
	flag := filepath.Join(box.Home, "release")
	launchD(t, c, home, env, "holder", "1", recorded(events, gated(flag)))
	waitStates(t, c, home, env, "RUNNING", "holder")
	launchD(t, c, home, env, "doomed", "2", recorded(events, "true"))
	launchD(t, c, home, env, "next", "1", recorded(events, "sleep 0.1"))
	m = byName(queue(t, c, home, env))
	if m["doomed"].State != "PENDING" || m["next"].State != "PENDING" || m["next"].QueuePos == nil || *m["next"].QueuePos != 2 {
		t.Fatalf("doomed %s, next %s at %v; want both PENDING, next at 2", m["doomed"].State, m["next"].State, m["next"].QueuePos)
	}
	if killJob(t, m["doomed"].UID) == 0 {
		t.Fatal("no process of the waiting job found")
	}
	m = waitStates(t, c, home, env, "SUCCEEDED", "next")
	if m["doomed"].State != "LOST" || m["holder"].State != "RUNNING" {
		t.Errorf("doomed %s (want LOST), holder %s (want RUNNING)", m["doomed"].State, m["holder"].State)
	}
	if q := statusOf(t, c, home, env).Nodes[0].Queue; len(q) != 0 {
		t.Errorf("the node still lists waiters: %+v", q)
	}

	// sshd restarts: the running job keeps its lease and goes on.
	os.WriteFile(flag, nil, 0o644)
	waitStates(t, c, home, env, "SUCCEEDED", "holder")
	flag = filepath.Join(box.Home, "release2")
	launchD(t, c, home, env, "survivor", "1", recorded(events, gated(flag)))
	waitStates(t, c, home, env, "RUNNING", "survivor")
	if err := box.Restart(); err != nil {
		t.Fatal(err)
	}
	held := 0
	for _, g := range statusOf(t, c, home, env).Nodes[0].GPUs {
		if g.State == "leased" && g.Holder != nil && g.Holder.Name == "survivor" {
			held++
		}
	}
	if held != 1 {
		t.Errorf("after the sshd restart %d GPUs show survivor's lease, want 1", held)
	}
	os.WriteFile(flag, nil, 0o644)
	waitStates(t, c, home, env, "SUCCEEDED", "survivor")
	for _, g := range statusOf(t, c, home, env).Nodes[0].GPUs {
		if g.State != "free" {
			t.Errorf("GPU %d is %s after every job ended", g.Index, g.State)
		}
	}
	launchD(t, c, home, env, "after-restart", "2", recorded(events, "sleep 0.1"))
	waitStates(t, c, home, env, "SUCCEEDED", "after-restart")

	// Power loss: every process of the node dies at once, sshd included.
	launchD(t, c, home, env, "unplugged", "2", recorded(events, gated(flag+"-never")))
	waitStates(t, c, home, env, "RUNNING", "unplugged")
	box.Kill()
	if err := box.Start(); err != nil {
		t.Fatal(err)
	}
	waitStates(t, c, home, env, "LOST", "unplugged")
	launchD(t, c, home, env, "after-reboot", "2", recorded(events, "sleep 0.1"))
	waitStates(t, c, home, env, "SUCCEEDED", "after-reboot")
	spans := readSpans(t, events)
	delete(spans, "unplugged") // it never got to record its end
	checkExclusive(t, spans)
}

func TestFairCancelPendingAndStatusShowsEveryone(t *testing.T) {
	t.Parallel()
	c, homeA, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.T4x1(t.Name())})
	homeB := t.TempDir()
	events := eventsFile(t, c.Node("box"))
	flag := filepath.Join(c.Node("box").Home, "release")
	// Another controller's job holds the only GPU.
	launchD(t, c, homeB, env, "blocker", "1", recorded(events, gated(flag)))
	waitStates(t, c, homeB, env, "RUNNING", "blocker")
	for _, n := range []string{"p1", "p2", "p3"} {
		launchD(t, c, homeA, env, n, "1", recorded(events, "sleep 0.1"))
	}
	m := byName(queue(t, c, homeA, env))
	for i, n := range []string{"p1", "p2", "p3"} {
		if m[n].State != "PENDING" || m[n].QueuePos == nil || *m[n].QueuePos != i+1 {
			t.Fatalf("%s: %s at %v, want PENDING at %d", n, m[n].State, m[n].QueuePos, i+1)
		}
	}
	if out := sshq(t, c, homeA, env, "queue").stdout; !strings.Contains(out, "PENDING (#2 in queue)") {
		t.Errorf("sshq queue does not show p2's position:\n%s", out)
	}
	me := localUserName(t)
	st := statusOf(t, c, homeA, env)
	g := st.Nodes[0].GPUs[0]
	if g.State != "leased" || g.Holder == nil || g.Holder.JobID != 1 || g.Holder.Name != "blocker" || g.Holder.User != me {
		t.Errorf("status GPU 0: %s holder %+v, want leased by #1 blocker (%s)", g.State, g.Holder, me)
	}
	if got := fmt.Sprint(st.Nodes[0].Queue); got != "[{1 p1} {2 p2} {3 p3}]" {
		t.Errorf("status queue %s", got)
	}
	human := sshq(t, c, homeA, env, "status").stdout
	for _, want := range []string{fmt.Sprintf("#1 blocker (%s)", me), "waiting:", "POS"} {
		if !strings.Contains(human, want) {
			t.Errorf("sshq status lacks %q:\n%s", want, human)
		}
	}

	r := sshq(t, c, homeA, env, "cancel", "2")
	if r.code != 0 || !strings.Contains(r.stdout, "#2 p2: cancelled") {
		t.Fatalf("cancel: %d %s %s", r.code, r.stdout, r.stderr)
	}
	m = byName(queue(t, c, homeA, env))
	if m["p2"].State != "CANCELLED" {
		t.Errorf("p2 is %s after cancel", m["p2"].State)
	}
	for n, pos := range map[string]int{"p1": 1, "p3": 2} {
		if m[n].State != "PENDING" || m[n].QueuePos == nil || *m[n].QueuePos != pos {
			t.Errorf("%s: %s at %v, want PENDING at %d after p2 left", n, m[n].State, m[n].QueuePos, pos)
		}
	}
	if got := fmt.Sprint(statusOf(t, c, homeA, env).Nodes[0].Queue); got != "[{1 p1} {2 p3}]" {
		t.Errorf("status queue after cancel %s", got)
	}
	os.WriteFile(flag, nil, 0o644)
	waitStates(t, c, homeA, env, "SUCCEEDED", "p1", "p3")
	waitStates(t, c, homeB, env, "SUCCEEDED", "blocker")
	spans := readSpans(t, events)
	checkExclusive(t, spans)
	if spans["p2"] != nil {
		t.Errorf("the cancelled job ran")
	}
	if spans["p3"].start < spans["p1"].end {
		t.Errorf("p3 passed p1")
	}
}

// localUserName is the controller's user as sshq records it.
func localUserName(t *testing.T) string {
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

func TestFairImpossibleRequestsRefusedAndNodePins(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"a": gpusim.A100x2(t.Name() + "a"), "b": gpusim.T4x1(t.Name() + "b")})
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--gpus", "3"}, []string{"3 GPU(s)", "2× NVIDIA A100 80GB PCIe", "1× Tesla T4"}},
		{[]string{"--gpus", "H100:1"}, []string{"H100", "2× NVIDIA A100 80GB PCIe", "1× Tesla T4"}},
		{[]string{"--node", "b", "--gpus", "2"}, []string{"1× Tesla T4", "--node"}},
		{[]string{"--node", "b", "--gpus", "A100:1"}, []string{"A100", "1× Tesla T4", "--node"}},
	} {
		args := append(append([]string{"launch", "-d", "--name", "never"}, tc.args...), "--", "true")
		r := sshq(t, c, home, env, args...)
		if r.code != 2 {
			t.Errorf("%v: exit %d, want 2\n%s", tc.args, r.code, r.stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("%v: refusal lacks %q:\n%s", tc.args, w, r.stderr)
			}
		}
	}
	// Best fit would choose b for one GPU; the pin wins.
	launchD(t, c, home, env, "pinned", "1", "true")
	q := sshq(t, c, home, env, "launch", "-d", "--node", "a", "--name", "pinned-a", "--gpus", "1", "--", "true")
	if q.code != 0 {
		t.Fatalf("pinned launch: %d %s", q.code, q.stderr)
	}
	jobs := waitJobs(t, c, home, env)
	if len(jobs) != 2 {
		t.Fatalf("refused launches left jobs behind: %+v", jobs)
	}
	allSucceeded(t, jobs)
	m := byName(jobs)
	if m["pinned"].Node != "b" || m["pinned-a"].Node != "a" {
		t.Errorf("unpinned job on %s (best fit is b), pinned job on %s (want a)", m["pinned"].Node, m["pinned-a"].Node)
	}
}

func TestFairJobOffItsLeaseBlocksThatGPU(t *testing.T) {
	t.Parallel()
	gpus := gpusim.A100x2(t.Name())
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpus})
	box := c.Node("box")
	events := eventsFile(t, box)
	flag := filepath.Join(box.Home, "release")
	// A job that ignores CUDA_VISIBLE_DEVICES (NVML, a container with all
	// GPUs, a reset environment) computes on the GPU it did not lease.
	stray := fmt.Sprintf(`if [ "$CUDA_VISIBLE_DEVICES" = 0 ]; then other=%s; else other=%s; fi
echo "$other,$$,1000,python" >> "$SSHQ_SIM_DIR/procs.csv"
echo "$other" > %s
%s`, gpus[1].UUID, gpus[0].UUID, sshpool.Quote(filepath.Join(box.Home, "other")), gated(flag))
	launchD(t, c, home, env, "stray", "1", recorded(events, stray))
	waitFor(t, "stray registered on the other GPU", func() bool {
		b, _ := os.ReadFile(filepath.Join(box.Home, "other"))
		return len(b) > 0
	})
	launchD(t, c, home, env, "second", "1", recorded(events, "sleep 0.1"))
	stillPending(t, c, home, env, "second")
	os.WriteFile(flag, nil, 0o644)
	allSucceeded(t, waitJobs(t, c, home, env))
	spans := readSpans(t, events)
	if spans["second"].start < spans["stray"].end {
		t.Errorf("second started on GPU %v while stray's process computed there", spans["second"].gpus)
	}
}
