package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/orchestrator/job"
)

// hostile values must reach the job byte-exact and run nothing.
var hostile = []string{
	`$(touch "$HOME/pwned-1")`,
	"`touch \"$HOME/pwned-2\"`",
	`'; touch "$HOME/pwned-3"; echo '`,
	"\"; touch $HOME/pwned-4; \"",
	"line1\nline2\n\ttabbed\n",
	`back\slash \\ \n %s %d %%`,
	"${HOME} $HOME ~ * ? [a] !! #",
	"ünïcødé — ✓",
	" leading and trailing spaces ",
	"",
}

func TestEnvAndNameArriveByteExact(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.A100x2("env"))
	s := spec("env-1", 1, `env -0 > "$HOME/env.out"; pwd > "$HOME/pwd.out"; umask > "$HOME/umask.out"`)
	s.Name = "name with $(touch \"$HOME/pwned-name\") and\nnewline\tand tab 'q'"
	s.User = "us\ter $(x)"
	s.ID = 42
	s.NodeIPs = []string{"10.0.0.1", "10.0.0.2"}
	s.NumNodes = 2
	s.NodeRank = 1
	for i, v := range hostile {
		s.Env = append(s.Env, EnvVar{fmt.Sprintf("HOSTILE_%d", i), v})
	}
	s.Secrets = []EnvVar{{"API_TOKEN", "s3cr3t'$(touch \"$HOME/pwned-secret\")"}}
	s.Setup = `echo "setup sees token length ${#API_TOKEN}"`
	// The job keeps the submitting session's umask, not the 077 sshq uses
	// for its own job directory.
	n.prefix = "umask 027; "
	n.submit(s)
	n.prefix = ""
	st := n.waitState("env-1", job.Succeeded)
	if um, _ := os.ReadFile(filepath.Join(n.home(), "umask.out")); strings.TrimSpace(string(um)) != "0027" {
		t.Errorf("job umask %q, want 0027", um)
	}

	raw, err := os.ReadFile(filepath.Join(n.home(), "env.out"))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range bytes.Split(raw, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok {
			env[k] = v
		}
	}
	for i, v := range hostile {
		if got := env[fmt.Sprintf("HOSTILE_%d", i)]; got != v {
			t.Errorf("HOSTILE_%d = %q, want %q", i, got, v)
		}
	}
	want := map[string]string{
		"SSHQ_JOB_ID":                "42",
		"SSHQ_JOB_NAME":              s.Name,
		"SSHQ_NODE_RANK":             "1",
		"SSHQ_NUM_NODES":             "2",
		"SSHQ_NODE_IPS":              "10.0.0.1\n10.0.0.2",
		"SSHQ_NUM_GPUS_PER_NODE":     "1",
		"SKYPILOT_NODE_RANK":         "1",
		"SKYPILOT_NUM_NODES":         "2",
		"SKYPILOT_NODE_IPS":          "10.0.0.1\n10.0.0.2",
		"SKYPILOT_NUM_GPUS_PER_NODE": "1",
		"SKYPILOT_TASK_ID":           tagged("env-1"),
		"CUDA_DEVICE_ORDER":          "PCI_BUS_ID",
		"CUDA_VISIBLE_DEVICES":       strconv.Itoa(st.GPUs[0].Index),
		"PYTHONUNBUFFERED":           "1",
		"API_TOKEN":                  s.Secrets[0].Value,
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
	if v, ok := env["LC_ALL"]; ok {
		t.Errorf("the job got LC_ALL=%q, which the submitting session did not set", v)
	}
	matches, _ := filepath.Glob(filepath.Join(n.home(), "pwned*"))
	if len(matches) > 0 {
		t.Errorf("a value ran as code: %v exist", matches)
	}
	pwd, _ := os.ReadFile(filepath.Join(n.home(), "pwd.out"))
	if strings.TrimSpace(string(pwd)) != n.home() {
		t.Errorf("job without workdir ran in %q, want $HOME %q", pwd, n.home())
	}
	jd := n.jobDir("env-1")
	if _, err := os.Stat(filepath.Join(jd, "secrets.sh")); !os.IsNotExist(err) {
		t.Errorf("secrets file still exists after the job ended (err=%v)", err)
	}
	filepath.Walk(jd, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			if bytes.Contains(b, []byte("s3cr3t")) {
				t.Errorf("the secret survives in %s", p)
			}
		}
		return nil
	})
	if log := n.log("env-1"); !strings.Contains(log, fmt.Sprintf("setup sees token length %d", len(s.Secrets[0].Value))) {
		t.Errorf("setup did not see the secret; log:\n%s", log)
	}
}

func TestSubmitRejectsBadSpecs(t *testing.T) {
	t.Parallel()
	bad := []JobSpec{
		{UID: "a/../b", Run: "true"},
		{UID: "x.y", Run: "true"},
		{UID: "ok", Run: "true", Env: []EnvVar{{"BAD-NAME", "v"}}},
		{UID: "ok", Run: "true", Env: []EnvVar{{"A", "nul\x00"}}},
		{UID: "ok", Run: "true", WorkdirKey: "../etc"},
		{UID: "ok", Run: "true", AllowedGPUs: []string{"GPU-1; rm"}},
		{UID: "ok", Run: "true", NumGPUs: -1},
	}
	for _, s := range bad {
		if _, _, err := submitCommand(s); err == nil {
			t.Errorf("Submit(%+v) accepted a bad spec", s)
		}
	}
}

func TestExitCodesAndStates(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.A100x2("exit"))
	ok := spec("ok-1", 1, "echo run-out; echo run-err >&2")
	ok.Setup = "echo setup-out"
	n.submit(ok)
	fail := spec("fail-1", 1, "exit 3")
	n.submit(fail)
	fs := spec("fs-1", 0, `touch "$HOME/run-ran"`)
	fs.Setup = "echo setting up; exit 7"
	n.submit(fs)

	st := n.waitState("ok-1", job.Succeeded)
	if !st.Exited || st.ExitCode != 0 {
		t.Errorf("ok-1: exit %v %d, want 0", st.Exited, st.ExitCode)
	}
	var seq []job.State
	for _, h := range st.History {
		seq = append(seq, h.State)
	}
	if fmt.Sprint(seq) != fmt.Sprint([]job.State{job.Pending, job.SettingUp, job.Running, job.Succeeded}) {
		t.Errorf("ok-1 history %v", seq)
	}
	for i := 1; i < len(st.History); i++ {
		if st.History[i].At.Before(st.History[i-1].At) || st.History[i].At.IsZero() {
			t.Errorf("ok-1 timestamps out of order: %+v", st.History)
		}
	}
	log := n.log("ok-1")
	if !strings.Contains(log, "setup-out\n") || !strings.Contains(log, "run-out\n") || !strings.Contains(log, "run-err\n") ||
		strings.Index(log, "setup-out") > strings.Index(log, "run-out") {
		t.Errorf("ok-1 log lacks setup/run output in order:\n%s", log)
	}
	st = n.waitState("fail-1", job.Failed)
	if st.ExitCode != 3 {
		t.Errorf("fail-1 exit code %d, want 3", st.ExitCode)
	}
	st = n.waitState("fs-1", job.FailedSetup)
	if st.ExitCode != 7 {
		t.Errorf("fs-1 exit code %d, want 7", st.ExitCode)
	}
	if _, err := os.Stat(filepath.Join(n.home(), "run-ran")); err == nil {
		t.Error("run script ran after setup failed")
	}
	if ns := n.node(); len(ns.Leases) != 0 {
		t.Errorf("leases left after every job ended: %+v", ns.Leases)
	}
	// A job the node can never hold fails at once with the reason.
	n.submit(spec("big-1", 3, "true"))
	n.waitState("big-1", job.FailedSetup)
	if log := n.log("big-1"); !strings.Contains(log, "needs 3 GPU") {
		t.Errorf("big-1 log does not say why:\n%s", log)
	}
	// A uid is never reused.
	var ne *NodeError
	if _, err := n.trySubmit(spec("ok-1", 0, "true")); !errors.As(err, &ne) || !strings.Contains(ne.Msg, "already exists") {
		t.Errorf("resubmitting ok-1: %v", err)
	}
}

type interval struct {
	uid        string
	start, end int64
	gpus       []string
}

func TestManyJobsNeverShareAGPU(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.A100x2("share"))
	rec := `echo "$(date +%s%N) $CUDA_VISIBLE_DEVICES" > "$HOME/iv-$SSHQ_JOB_ID"; sleep 0.3; echo "$(date +%s%N)" >> "$HOME/iv-$SSHQ_JOB_ID"`
	var uids []string
	var wg sync.WaitGroup
	for i := 1; i <= 6; i++ {
		s := spec(fmt.Sprintf("share-%d", i), 1, rec)
		s.ID = i
		uids = append(uids, s.UID)
		wg.Add(1)
		go func() { defer wg.Done(); n.submit(s) }() // concurrent submits race for tickets
	}
	wg.Wait()
	for _, u := range uids {
		n.waitState(u, job.Succeeded)
	}
	var ivs []interval
	used := map[string]bool{}
	for i := 1; i <= 6; i++ {
		b, err := os.ReadFile(filepath.Join(n.home(), fmt.Sprintf("iv-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(b))
		if len(f) != 3 {
			t.Fatalf("job %d record %q", i, b)
		}
		s, _ := strconv.ParseInt(f[0], 10, 64)
		e, _ := strconv.ParseInt(f[2], 10, 64)
		ivs = append(ivs, interval{strconv.Itoa(i), s, e, strings.Split(f[1], ",")})
		used[f[1]] = true
	}
	for i := range ivs {
		for j := i + 1; j < len(ivs); j++ {
			a, b := ivs[i], ivs[j]
			if a.gpus[0] == b.gpus[0] && a.start < b.end && b.start < a.end {
				t.Errorf("jobs %s and %s overlapped on GPU %s", a.uid, b.uid, a.gpus[0])
			}
		}
	}
	if len(used) != 2 {
		t.Errorf("jobs used GPUs %v, want both", used)
	}
}

func TestFIFOHeadIsNeverPassed(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.RTX4090x4("fifo"))
	for _, b := range []string{"a", "b", "c"} {
		n.submit(spec("fifo-"+b, 1, blockUntil(b)))
		n.waitState("fifo-"+b, job.Running)
	}
	n.submit(spec("fifo-d", 4, blockUntil("d")))
	n.submit(spec("fifo-e", 1, blockUntil("e")))
	n.submit(spec("fifo-f", 1, blockUntil("f")))
	js := n.jobs("fifo-d", "fifo-e", "fifo-f")
	for uid, want := range map[string]int{"fifo-d": 1, "fifo-e": 2, "fifo-f": 3} {
		if js[uid].State != job.Pending || js[uid].QueuePosition != want {
			t.Errorf("%s: %s at queue position %d, want PENDING at %d", uid, js[uid].State, js[uid].QueuePosition, want)
		}
	}
	ns := n.node()
	if len(ns.Queue) != 3 || ns.Queue[0].JobUID != "fifo-d" || ns.Queue[0].NumGPUs != 4 || ns.Queue[0].User != "tester" {
		t.Errorf("node queue %+v", ns.Queue)
	}
	if len(ns.Leases) != 3 {
		t.Errorf("node leases %+v, want 3", ns.Leases)
	}
	// One GPU is free, but the head needs all four: e and f must not take it.
	// Release the blockers one at a time; d starts only when all are done.
	for _, b := range []string{"a", "b", "c"} {
		n.release(b)
		n.waitState("fifo-"+b, job.Succeeded)
	}
	n.waitState("fifo-d", job.Running)
	dStart, _, _ := n.startedAt("d")
	for _, b := range []string{"e", "f"} {
		if at, _, ok := n.startedAt(b); ok && at < dStart {
			t.Errorf("fifo-%s started before the 4-GPU head fifo-d", b)
		}
	}
	if st := n.job("fifo-e"); st.State != job.Pending || st.QueuePosition != 1 {
		t.Errorf("fifo-e while d runs: %s at %d, want PENDING at 1", st.State, st.QueuePosition)
	}
	n.release("d")
	n.release("e")
	n.release("f")
	n.waitState("fifo-e", job.Succeeded)
	n.waitState("fifo-f", job.Succeeded)
}

func TestBackfillOnlyOnGPUsTheHeadCannotUse(t *testing.T) {
	t.Parallel()
	g := gpusim.RTX4090x4("bf")[:3]
	n := newNode(t, g)
	u := func(i int) string { return g[i].UUID }
	a := spec("bf-a", 1, blockUntil("a"))
	a.AllowedGPUs = []string{u(0)}
	n.submit(a)
	n.waitState("bf-a", job.Running)
	// The head wants two of GPUs 0-1; GPU 0 is busy, so it waits.
	x := spec("bf-x", 2, blockUntil("x"))
	x.AllowedGPUs = []string{u(0), u(1)}
	n.submit(x)
	// y may use any GPU: it may pass x, but only on GPU 2.
	n.submit(spec("bf-y", 1, blockUntil("y")))
	// z can use only GPU 1, which x is waiting for: it must not pass.
	z := spec("bf-z", 1, blockUntil("z"))
	z.AllowedGPUs = []string{u(1)}
	n.submit(z)
	st := n.waitState("bf-y", job.Running)
	if len(st.GPUs) != 1 || st.GPUs[0].UUID != u(2) {
		t.Errorf("bf-y backfilled onto %+v, want GPU 2", st.GPUs)
	}
	if st := n.job("bf-z"); st.State != job.Pending {
		t.Errorf("bf-z is %s; it would delay the head bf-x", st.State)
	}
	n.release("a")
	n.waitState("bf-x", job.Running)
	if st := n.job("bf-z"); st.State != job.Pending {
		t.Errorf("bf-z is %s while bf-x holds its GPU", st.State)
	}
	n.release("x")
	n.release("z")
	n.release("y")
	n.waitState("bf-z", job.Succeeded)
	xs, _, _ := n.startedAt("x")
	zs, _, _ := n.startedAt("z")
	if zs < xs {
		t.Error("bf-z started before the older bf-x")
	}
}

func startSleeper(t *testing.T) *exec.Cmd {
	t.Helper()
	c := exec.Command("sleep", "60")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	return c
}

func TestForeignProcessesAreRespected(t *testing.T) {
	t.Parallel()
	g := gpusim.A100x2("foreign")
	n := newNode(t, g)
	sim := gpusim.SimDir(n.dir)
	foreign := startSleeper(t)
	if err := gpusim.AddProcess(sim, g[0].UUID, foreign.Process.Pid, 1000, "python"); err != nil {
		t.Fatal(err)
	}
	n.submit(spec("fp-1", 1, blockUntil("1")))
	st := n.waitState("fp-1", job.Running)
	if len(st.GPUs) != 1 || st.GPUs[0].UUID != g[1].UUID {
		t.Fatalf("fp-1 got %+v, want GPU 1 (GPU 0 has a foreign process)", st.GPUs)
	}
	n.release("1")
	n.waitState("fp-1", job.Succeeded)
	n.submit(spec("fp-all", 2, blockUntil("all")))
	ns := n.node()
	if ns.GPUs[0].State != "foreign" || len(ns.GPUs[0].ForeignPIDs) != 1 || ns.GPUs[0].ForeignPIDs[0] != foreign.Process.Pid {
		t.Errorf("node GPU 0: %+v, want foreign with pid %d", ns.GPUs[0], foreign.Process.Pid)
	}
	if st := n.job("fp-all"); st.State != job.Pending {
		t.Fatalf("fp-all is %s while a foreign process uses GPU 0", st.State)
	}
	foreign.Process.Kill()
	foreign.Wait()
	st = n.waitState("fp-all", job.Running)
	if len(st.GPUs) != 2 {
		t.Errorf("fp-all holds %+v", st.GPUs)
	}
	// The job's own processes on the GPU it leased, a setsid one included,
	// are not foreign; one on a GPU it did not lease occupies that GPU, or
	// the next job would share it.
	ns = n.node()
	if len(ns.Leases) != 2 || ns.Leases[0].JobUID != "fp-all" || ns.Leases[0].User != "tester" || ns.Leases[0].Since.IsZero() {
		t.Errorf("leases %+v", ns.Leases)
	}
	n.release("all")
	n.waitState("fp-all", job.Succeeded)

	own := spec("fp-own", 1, `echo "$SSHQ_GPU0,$$,100,python" >> "$SSHQ_SIM_DIR/procs.csv"
setsid sleep 30 & echo "$SSHQ_GPU0,$!,100,python" >> "$SSHQ_SIM_DIR/procs.csv"
setsid sleep 31 & echo $! > "$HOME/stray"; echo "$SSHQ_GPU1,$!,100,python" >> "$SSHQ_SIM_DIR/procs.csv"
`+blockUntil("own"))
	own.AllowedGPUs = []string{g[0].UUID}
	own.Env = []EnvVar{{"SSHQ_GPU0", g[0].UUID}, {"SSHQ_GPU1", g[1].UUID}}
	n.submit(own)
	n.waitState("fp-own", job.Running)
	waitFor(t, "fp-own's processes on both GPUs", func() bool {
		b, _ := os.ReadFile(filepath.Join(sim, "procs.csv"))
		return strings.Count(string(b), "\n") >= 4
	})
	b, _ := os.ReadFile(filepath.Join(n.home(), "stray"))
	stray, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	ns = n.node()
	if g0 := ns.GPUs[0]; g0.State != "leased" || len(g0.ForeignPIDs) > 0 {
		t.Errorf("the job's own processes on its GPU counted as foreign: %+v", g0)
	}
	if g1 := ns.GPUs[1]; g1.State != "foreign" || len(g1.ForeignPIDs) != 1 || g1.ForeignPIDs[0] != stray {
		t.Errorf("GPU 1 with the job's stray process %d: %+v, want foreign", stray, g1)
	}
	n.submit(spec("fp-next", 1, "true"))
	for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline); { // five polls
		if st := n.job("fp-next"); st.State != job.Pending {
			t.Fatalf("fp-next is %s while fp-own's stray process computes on the only other GPU", st.State)
		}
	}
	n.release("own")
	n.waitState("fp-own", job.Succeeded)
	syscall.Kill(stray, syscall.SIGKILL)
	n.waitState("fp-next", job.Succeeded)
}

func TestCancelKillsTheWholeTree(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.T4x1("cancel"))
	run := `setsid sleep 300 & echo $! >> "$HOME/pids"
( trap '' HUP TERM; exec sleep 301 ) & echo $! >> "$HOME/pids"
bash -c 'trap "" HUP TERM; setsid bash -c "trap \"\" HUP TERM; sleep 302 & echo \$! >> \"$HOME/pids\"; wait"' &
echo $$ >> "$HOME/pids"
wait`
	n.submit(spec("cx-1", 1, run))
	n.waitState("cx-1", job.Running)
	var pids []int
	waitFor(t, "the job's 4 processes", func() bool {
		b, _ := os.ReadFile(filepath.Join(n.home(), "pids"))
		pids = nil
		for _, f := range strings.Fields(string(b)) {
			p, _ := strconv.Atoi(f)
			pids = append(pids, p)
		}
		return len(pids) == 4
	})
	begin := time.Now()
	if res := n.cancel(300*time.Millisecond, "cx-1"); res["cx-1"] != "cancelled" {
		t.Fatalf("cancel result %v", res)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("cancel took %v", d)
	}
	for _, p := range pids {
		if !processGone(p) {
			t.Errorf("process %d survived cancel", p)
		}
	}
	if left := markedPIDs("cx-1"); len(left) > 0 {
		t.Errorf("processes of the job survived: %v", left)
	}
	st := n.job("cx-1")
	if st.State != job.Cancelled || !st.Exited || st.SessionAlive || st.WrapperAlive {
		t.Errorf("after cancel: %+v", st)
	}
	if ns := n.node(); len(ns.Leases) != 0 || ns.GPUs[0].State != "free" {
		t.Errorf("GPU not freed: %+v", ns)
	}
	n.submit(spec("cx-2", 1, "true"))
	n.waitState("cx-2", job.Succeeded)
	// Cancelling an ended or unknown job says so.
	res := n.cancel(time.Second, "cx-2", "nope-1", "../x")
	if res["cx-2"] != "done" || res["nope-1"] != "missing" || len(res) != 3 {
		t.Errorf("cancel of ended/unknown jobs: %v", res)
	}
}

func TestCancelPendingLeavesTheQueue(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.T4x1("cpend"))
	n.submit(spec("cp-a", 1, blockUntil("a")))
	n.waitState("cp-a", job.Running)
	n.submit(spec("cp-b", 1, `touch "$HOME/b-ran"`))
	n.submit(spec("cp-c", 1, blockUntil("c")))
	if js := n.jobs("cp-b", "cp-c"); js["cp-b"].QueuePosition != 1 || js["cp-c"].QueuePosition != 2 {
		t.Fatalf("queue before cancel: %+v", js)
	}
	// Cancel's answer says how the job ended: no second command needed.
	res, js, err := n.cl().Cancel(context.Background(), []string{tagged("cp-b")}, time.Second)
	if b := js[tagged("cp-b")]; err != nil || res[tagged("cp-b")] != "cancelled" || b.State != job.Cancelled || !b.Exited || b.ExitCode != 143 {
		t.Fatalf("cancel: %v %+v %v", res, js, err)
	}
	st := n.job("cp-b")
	if st.State != job.Cancelled || st.QueuePosition != 0 || len(st.GPUs) != 0 {
		t.Errorf("cp-b after cancel: %+v", st)
	}
	if st := n.job("cp-c"); st.State != job.Pending || st.QueuePosition != 1 {
		t.Errorf("cp-c after cancel: %s at %d, want PENDING at 1", st.State, st.QueuePosition)
	}
	ns := n.node()
	if len(ns.Queue) != 1 || ns.Queue[0].JobUID != "cp-c" || ns.Queue[0].Position != 1 {
		t.Errorf("node queue %+v", ns.Queue)
	}
	if w := n.records("w"); len(w) != 1 {
		t.Errorf("waiting records %v, want cp-c's alone", w)
	}
	n.release("a")
	n.release("c")
	n.waitState("cp-c", job.Succeeded)
	if _, err := os.Stat(filepath.Join(n.home(), "b-ran")); err == nil {
		t.Error("the cancelled job ran")
	}
}

func TestKilledJobLeavesNoLease(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.T4x1("kill"))
	n.submit(spec("k-1", 1, `sleep 300 & sleep 301 & wait`))
	n.submit(spec("k-2", 1, `true`))
	n.submit(spec("k-3", 1, `true`))
	n.waitState("k-1", job.Running)
	if st := n.job("k-3"); st.State != job.Pending || st.QueuePosition != 2 {
		t.Fatalf("k-3 is %s at %d", st.State, st.QueuePosition)
	}
	// A waiter killed outright: its keeper sees it gone and takes its
	// record along; the others would skip it anyway, its lock being free.
	for _, p := range markedPIDs("k-2") {
		syscallKill(p)
	}
	n.waitState("k-2", job.Lost)
	if st := n.job("k-3"); st.State != job.Pending || st.QueuePosition != 1 {
		t.Errorf("k-3 after k-2 died: %s at %d, want PENDING at 1", st.State, st.QueuePosition)
	}
	waitFor(t, "the dead ticket to be removed", func() bool { return len(n.records("w")) == 1 })
	for _, p := range markedPIDs("k-1") {
		syscallKill(p)
	}
	waitFor(t, "k-1's processes to die", func() bool { return len(markedPIDs("k-1")) == 0 })
	st := n.waitState("k-1", job.Lost)
	if st.Exited {
		t.Errorf("k-1 has an exit record: %+v", st)
	}
	// The kernel dropped the lease: the next job runs and k-1's stale
	// owner record is not reported.
	n.waitState("k-3", job.Succeeded)
	if ns := n.node(); len(ns.Leases) != 0 {
		t.Errorf("leases after every holder ended: %+v", ns.Leases)
	}
}

// pane is what a user attaching to the job's tmux session sees, scrollback
// included; "" once the session is gone.
func (n *testNode) pane(uid string) (string, bool) {
	out, _, rc := n.run("tmux -L sshq capture-pane -p -S - -t "+shellQuote(tagged(uid)), nil)
	return out, rc == 0
}

// displayPID is the process showing uid's log in its pane (a marked tail).
func displayPID(uid string) int {
	for _, p := range markedPIDs(uid) {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p)); strings.TrimSpace(string(b)) == "tail" {
			return p
		}
	}
	return 0
}

// lockFilesOpen lists the files under dir that pid holds open.
func lockFilesOpen(pid int, dirs ...string) []string {
	var held []string
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if err != nil {
			continue
		}
		for _, d := range dirs {
			if strings.HasPrefix(l, d+"/") && !strings.HasSuffix(l, "/log") {
				held = append(held, l)
			}
		}
	}
	return held
}

func TestAttachedPaneShowsTheLogLive(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.T4x1("pane"))
	leases := filepath.Join(n.dir, "leases")
	jobs := filepath.Join(n.home(), ".sshq", "jobs")
	n.submit(spec("pn-a", 1, `for i in 1 2 3 4 5; do echo "tick $i"; sleep 0.2; done
`+blockUntil("a")))
	n.submit(spec("pn-b", 1, `echo b-ran`))
	n.waitState("pn-a", job.Running)
	// The waiter's pane says what it waits for; its display holds neither
	// the ticket nor the wrapper's lock.
	waitFor(t, "pn-b's pane to say it waits", func() bool {
		out, _ := n.pane("pn-b")
		return strings.Contains(out, "sshq: waiting for 1 GPU(s) in the node's queue")
	})
	if p := displayPID("pn-b"); p == 0 {
		t.Error("pn-b has no display process")
	} else if held := lockFilesOpen(p, leases, jobs); len(held) > 0 {
		t.Errorf("pn-b's display holds %v open", held)
	}
	// The runner's pane shows its output as it comes, from the first line.
	waitFor(t, "pn-a's pane to show all its ticks", func() bool {
		out, _ := n.pane("pn-a")
		return strings.Contains(out, "tick 5")
	})
	if st := n.job("pn-a"); st.State != job.Running {
		t.Fatalf("pn-a is %s, want its output shown while it runs", st.State)
	}
	out, _ := n.pane("pn-a")
	if !strings.Contains(out, "tick 1\ntick 2\ntick 3\ntick 4\ntick 5\n") {
		t.Errorf("pn-a's pane lacks its output in order:\n%s", out)
	}
	p := displayPID("pn-a")
	if p == 0 {
		t.Fatal("pn-a has no display process")
	}
	if held := lockFilesOpen(p, leases, jobs); len(held) > 0 {
		t.Errorf("pn-a's display holds %v open: a lease must end with the job", held)
	}
	// The job's output never went through the pane: its log has it all,
	// and nothing of the job but the display writes to the terminal.
	if log := n.log("pn-a"); !strings.Contains(log, "tick 5\n") {
		t.Errorf("pn-a's log lacks its output:\n%s", log)
	}
	n.release("a")
	n.waitState("pn-a", job.Succeeded)
	waitFor(t, "pn-a's session and display to end with it", func() bool {
		_, alive := n.pane("pn-a")
		return !alive && processGone(p) && !n.job("pn-a").SessionAlive
	})
	n.waitState("pn-b", job.Succeeded)
	waitFor(t, "pn-b's session to end with it", func() bool {
		_, alive := n.pane("pn-b")
		return !alive && len(markedPIDs("pn-b")) == 0
	})

	// A job killed outright (every process but the display) takes the
	// display, its session and its lease with it.
	n.submit(spec("pn-k", 1, `echo started; sleep 300 & sleep 301 & wait`))
	n.waitState("pn-k", job.Running)
	waitFor(t, "pn-k's pane to show it started", func() bool {
		out, _ := n.pane("pn-k")
		return strings.Contains(out, "started")
	})
	p = displayPID("pn-k")
	if p == 0 {
		t.Fatal("pn-k has no display process")
	}
	for _, q := range markedPIDs("pn-k") {
		if q != p {
			syscallKill(q)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for !processGone(p) || len(markedPIDs("pn-k")) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("5s after pn-k was killed, processes remain: %v (display %d)", markedPIDs("pn-k"), p)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitFor(t, "pn-k's session to close", func() bool { _, alive := n.pane("pn-k"); return !alive })
	n.waitState("pn-k", job.Lost)
	if ns := n.node(); len(ns.Leases) != 0 || ns.GPUs[0].State != "free" {
		t.Errorf("pn-k's lease outlived it: %+v", ns)
	}
}

func TestWorkdirSnapshotIgnoresLaterSyncs(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.T4x1("wd"))
	cache := filepath.Join(n.home(), ".sshq", "workdirs", "proj")
	if err := os.MkdirAll(filepath.Join(cache, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(cache, "train.py"), []byte("v1\n"), 0o644)
	os.WriteFile(filepath.Join(cache, "sub", "cfg"), []byte("c1\n"), 0o644)
	n.submit(spec("wd-a", 1, blockUntil("a")))
	n.waitState("wd-a", job.Running)
	s := spec("wd-b", 1, `pwd > "$HOME/wd-pwd"; cat train.py sub/cfg > "$HOME/wd-seen"; ls > "$HOME/wd-ls"`)
	s.WorkdirKey = "proj"
	n.submit(s)
	// A sync after submit: new files are written aside and renamed in.
	for name, data := range map[string]string{"train.py": "v2\n", "sub/cfg": "c2\n", "new.py": "n\n"} {
		tmp := filepath.Join(cache, ".tmp-sync")
		os.WriteFile(tmp, []byte(data), 0o644)
		if err := os.Rename(tmp, filepath.Join(cache, name)); err != nil {
			t.Fatal(err)
		}
	}
	n.release("a")
	n.waitState("wd-b", job.Succeeded)
	seen, _ := os.ReadFile(filepath.Join(n.home(), "wd-seen"))
	if string(seen) != "v1\nc1\n" {
		t.Errorf("job saw %q, want the tree as submitted", seen)
	}
	ls, _ := os.ReadFile(filepath.Join(n.home(), "wd-ls"))
	if strings.Contains(string(ls), "new.py") {
		t.Errorf("job saw a file synced after submit: %q", ls)
	}
	pwd, _ := os.ReadFile(filepath.Join(n.home(), "wd-pwd"))
	if want := filepath.Join(n.jobDir("wd-b"), "workdir"); strings.TrimSpace(string(pwd)) != want {
		t.Errorf("job ran in %q, want %q", pwd, want)
	}
	s = spec("wd-c", 0, "true")
	s.WorkdirKey = "missing"
	if _, err := n.trySubmit(s); err == nil || !strings.Contains(err.Error(), "sync the workdir") {
		t.Errorf("submit with a missing cache: %v", err)
	}
}

func TestLogsFollowEndsWithTheJobsExitCode(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.T4x1("logs"))
	n.submit(spec("lg-1", 1, `for i in 1 2 3 4 5; do echo "line $i"; sleep 0.1; done; printf 'no newline'; exit 3`))
	out, _, rc := n.logs("lg-1", 10, true)
	if rc != 3 {
		t.Errorf("follow exit status %d, want the job's 3", rc)
	}
	for i := 1; i <= 5; i++ {
		if !strings.Contains(out, fmt.Sprintf("line %d\n", i)) {
			t.Errorf("follow output lacks line %d:\n%s", i, out)
		}
	}
	if !strings.HasSuffix(out, "no newline") || strings.Count(out, "line 3\n") != 1 {
		t.Errorf("follow output repeats or loses bytes:\n%q", out)
	}
	out, _, rc = n.logs("lg-1", 2, false)
	if rc != 0 || out != "line 5\nno newline" {
		t.Errorf("tail 2: rc=%d %q", rc, out)
	}
	if _, errOut, rc := n.logs("nope", 5, true); rc != 125 || !strings.Contains(errOut, "no job") {
		t.Errorf("logs of an unknown job: rc=%d %q", rc, errOut)
	}
}

// A lease directory that is a symlink is never followed: whoever made it
// would control every record behind it. Records go beside it, in its
// parent, as they do when the directory is not root's.
func TestLeaseDirSymlinkIsNotFollowed(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.T4x1("sym"))
	real := filepath.Join(n.dir, "elsewhere")
	os.Mkdir(real, 0o777)
	if err := os.Symlink(real, filepath.Join(n.dir, "leases")); err != nil {
		t.Fatal(err)
	}
	n.submit(spec("sym-1", 1, "true"))
	n.waitState("sym-1", job.Succeeded)
	if e, _ := os.ReadDir(real); len(e) != 0 {
		t.Errorf("records were written through the symlink: %v", e)
	}
	if ns := n.node(); len(ns.Errors) != 0 {
		t.Errorf("node report errors %v", ns.Errors)
	}
}

// Where no place is safe for lease records (the lease directory's parent
// is writable by everyone and not sticky: anyone could remove anyone's
// records), a GPU job is refused with what to do, and a job without GPUs
// still runs.
func TestNoSafePlaceRefusesOnlyGPUJobs(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.T4x1("unsafe"))
	open := filepath.Join(n.dir, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	n.setEnv("SSHQ_LEASE_DIR", filepath.Join(open, "leases"))
	_, err := n.trySubmit(spec("us-1", 1, "true"))
	var ne *NodeError
	if !errors.As(err, &ne) || ne.Code != 3 || !strings.Contains(ne.Msg, "no safe place") || !strings.Contains(ne.Msg, "SSHQ_LEASE_DIR") {
		t.Errorf("a GPU job where records cannot be kept safe: %v", err)
	}
	n.submit(spec("us-0", 0, "true"))
	n.waitState("us-0", job.Succeeded)
	if ns := n.node(); len(ns.Errors) == 0 || !strings.Contains(ns.Errors[0], "no safe place") {
		t.Errorf("node report errors %v", ns.Errors)
	}
}

func TestRecordsFraming(t *testing.T) {
	t.Parallel()
	out := "Welcome to node7!\nSSHQ-BEGIN 1\njob\tx-1\tfound\t0\t0\nstate\tx-1\tRUNNING\t1700000000.5\nSSHQ-END\n"
	m, err := parseJobs([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if j := m["x-1"]; j.State != job.Lost || j.History[0].At.UnixMilli() != 1700000000500 {
		t.Errorf("a RUNNING job with a dead wrapper and no exit: %+v", j)
	}
	if _, err := parseJobs([]byte("SSHQ-BEGIN 1\njob\tx\tfound\t1\t1\n")); err == nil {
		t.Error("a report cut short parsed")
	}
	if _, err := parseJobs([]byte("SSHQ-BEGIN 2\nSSHQ-END\n")); err == nil || !strings.Contains(err.Error(), "protocol") {
		t.Errorf("another protocol version: %v", err)
	}
}

func TestFieldEncodingRoundTrips(t *testing.T) {
	t.Parallel()
	for _, s := range append(hostile, "~", "%", "%41", "-", "a\tb", "\xff\xfe") {
		e := EncodeField(s)
		if strings.ContainsAny(e, "\t\n\r ") || e == "" {
			t.Errorf("EncodeField(%q) = %q splits a record", s, e)
		}
		d, err := DecodeField(e)
		if err != nil || d != s {
			t.Errorf("round trip %q -> %q -> %q (%v)", s, e, d, err)
		}
	}
	for _, bad := range []string{"%", "%4", "%zz"} {
		if _, err := DecodeField(bad); err == nil {
			t.Errorf("DecodeField(%q) accepted", bad)
		}
	}
}

func TestCommandsQuoteTheirArguments(t *testing.T) {
	t.Parallel()
	// The script travels as one argument of bash -c; Linux caps one
	// argument at 128 KiB (MAX_ARG_STRLEN).
	for action := range scripts {
		if l := len(command(action)); l > 100<<10 {
			t.Errorf("the %s command is %d bytes; keep its script well under 128 KiB", action, l)
		}
	}
	// A uid is validated on the node too: a hostile one reaches the script
	// as one argument and is refused there.
	n := newNode(t, gpusim.T4x1("quote"))
	m, err := n.cl().Jobs(context.Background(), []string{"$(touch pwned)", "a b"})
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(m) != 2 {
		t.Errorf("jobs report %v", keys)
	}
	if _, err := os.Stat(filepath.Join(n.home(), "pwned")); err == nil {
		t.Error("a uid ran as code")
	}
}

// The node account a job runs as, not the controller's user, is who holds a
// GPU or waits: two laptops both running as root submit as two node users.
func TestNodeReportsTheLoginOfHolderAndWaiter(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.T4x1("login"))
	// The login is the owner of the records' directory, which no record's
	// text can claim: an `id` that lies changes nothing.
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	login := me.Username
	fake := "#!/bin/bash\nif [ \"$1\" = -un ]; then echo mallory; else exec /usr/bin/id \"$@\"; fi\n"
	if err := os.WriteFile(filepath.Join(n.dir, "bin", "id"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	n.submit(spec("login-a", 1, blockUntil("a")))
	n.waitState("login-a", job.Running)
	n.submit(spec("login-b", 1, "true"))
	n.waitState("login-b", job.Pending)

	out, _, rc := n.run(command("status"), nil)
	if rc != 0 {
		t.Fatalf("status: rc=%d", rc)
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Split(l, "\t")
		if (f[0] == "lease" || f[0] == "ticket") && (len(f) != 9 || f[8] != EncodeField(login)) {
			t.Errorf("%s record %q: want 9 fields ending in the encoded login %q", f[0], l, EncodeField(login))
		}
	}
	ns := untag(parseStatus([]byte(out)))
	if len(ns.Errors) > 0 {
		t.Fatal(ns.Errors)
	}
	if len(ns.Leases) != 1 || ns.Leases[0].JobUID != "login-a" || ns.Leases[0].NodeUser != login || ns.Leases[0].User != "tester" {
		t.Errorf("leases %+v, want login-a held by node user %q for controller user tester", ns.Leases, login)
	}
	if len(ns.Queue) != 1 || ns.Queue[0].JobUID != "login-b" || ns.Queue[0].NodeUser != login || ns.Queue[0].User != "tester" {
		t.Errorf("queue %+v, want login-b waiting as node user %q for controller user tester", ns.Queue, login)
	}
	n.release("a")
	n.waitState("login-b", job.Succeeded)
}

// shellQuote is one single-quoted shell word.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// A wrapper of the previous version may hold a lease (a flock on
// <lease dir>/<uuid>.lock, its holder in <uuid>.owner) when the node's
// controllers upgrade: the GPU stays its, and is reported with the login
// unknown. (Its waiters are not seen: they wait in a queue of their own.)
func TestRecordsOfOlderNodeScriptsStillRead(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.T4x1("old"))
	leases := filepath.Join(n.dir, "leases")
	uuid := n.gpus[0].UUID
	if err := os.MkdirAll(filepath.Join(leases, "queue"), 0o777); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		uuid + ".lock":   "",
		uuid + ".owner":  "old-run\t7\told%20ctl\told-job\t1700000000.500\t1\t1\t0\n",
		"queue.lock":     "",
		"queue/1-old-wt": "old-wt\told%20ctl\twaiter\t1\t1700000001.000\t*\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(leases, name), []byte(body), 0o666); err != nil {
			t.Fatal(err)
		}
	}
	// One process holds both flocks, as the older wrappers would.
	holder := exec.Command("bash", "-c", `exec 8<"$1" 9<"$2" && flock 8 && flock 9 && echo held && exec sleep 60`,
		"holder", filepath.Join(leases, uuid+".lock"), filepath.Join(leases, "queue", "1-old-wt"))
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	b := make([]byte, 5)
	if _, err := io.ReadFull(stdout, b); err != nil || string(b) != "held\n" {
		t.Fatalf("the holder did not take its flocks: %q %v", b, err)
	}

	ns := n.node()
	want := Lease{UUID: uuid, Index: 0, JobUID: "old-run", JobID: 7, User: "old ctl", Name: "old-job",
		Since: time.UnixMilli(1700000000500), Recorded: true}
	if len(ns.Leases) != 1 || !ns.Leases[0].Since.Equal(want.Since) {
		t.Fatalf("leases %+v, want %+v", ns.Leases, want)
	}
	ns.Leases[0].Since = want.Since
	if ns.Leases[0] != want {
		t.Errorf("lease %+v, want %+v (node user unknown)", ns.Leases[0], want)
	}
	// A new job waits for the old lease to end.
	n.submit(spec("after-old", 1, "true"))
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		if st := n.job("after-old"); st.State != job.Pending {
			t.Fatalf("after-old is %s while an old wrapper holds the only GPU", st.State)
		}
	}
	holder.Process.Kill()
	holder.Wait()
	n.waitState("after-old", job.Succeeded)
}

// Controllers read reports of either version: the login is a trailing field
// that older node scripts do not send.
// queueReport reads the queue's records of a status report.
func queueReport(out []byte) (*NodeStatus, error) {
	ns := &NodeStatus{}
	return ns, parseQueue(out, ns)
}

func TestParseNodeLoginFieldIsOptional(t *testing.T) {
	t.Parallel()
	const head = "SSHQ-BEGIN 1\ngpu\t0\tGPU-a\tleased\ngpu\t1\tGPU-b\tfree\n"
	lease := "lease\tGPU-a\t0\tj1\t3\troot\ttrain\t1700000000.000"
	ticket := "ticket\t1\tj2\troot\teval\t2\t1700000001.000\tGPU-a,GPU-b"
	for _, tc := range []struct {
		suffix, want string
	}{{"", ""}, {"\t~", ""}, {"\talice", "alice"}, {"\t" + EncodeField("DOM\\bob smith"), "DOM\\bob smith"}, {"\tcarol\tfuture-field", "carol"}} {
		ns, err := queueReport([]byte(head + lease + tc.suffix + "\n" + ticket + tc.suffix + "\nSSHQ-END\n"))
		if err != nil {
			t.Errorf("suffix %q: %v", tc.suffix, err)
			continue
		}
		if len(ns.Leases) != 1 || ns.Leases[0].NodeUser != tc.want || ns.Leases[0].User != "root" || ns.Leases[0].JobID != 3 || ns.Leases[0].Name != "train" {
			t.Errorf("suffix %q: leases %+v, want node user %q", tc.suffix, ns.Leases, tc.want)
		}
		if len(ns.Queue) != 1 || ns.Queue[0].NodeUser != tc.want || ns.Queue[0].User != "root" || len(ns.Queue[0].AllowedGPUs) != 2 {
			t.Errorf("suffix %q: queue %+v, want node user %q", tc.suffix, ns.Queue, tc.want)
		}
	}
	if _, err := queueReport([]byte(head + lease + "\t%zz\nSSHQ-END\n")); err == nil {
		t.Error("a lease with a badly encoded login parsed")
	}
}

// Submits that arrive together on a node with no tmux server yet race to
// start it (a sweep does this), and the loser's tmux client fails with
// "server exited unexpectedly". A tmux shim on the node's PATH makes the
// first new-session lose that race every time: submit must try again.
func TestSubmitSurvivesTmuxServerStartRace(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.A100x2("tmuxrace"))
	realTmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Fatal(err)
	}
	shim := fmt.Sprintf(`#!/bin/bash
for a in "$@"; do
	if [ "$a" = new-session ] && mkdir %q 2>/dev/null; then
		echo "server exited unexpectedly" >&2
		exit 1
	fi
done
exec %q "$@"
`, filepath.Join(n.dir, "lost-once"), realTmux)
	if err := os.WriteFile(filepath.Join(n.dir, "bin", "tmux"), []byte(shim), 0o755); err != nil {
		t.Fatal(err)
	}
	n.submit(spec("race-1", 0, "echo ran"))
	n.waitState("race-1", job.Succeeded)
	if _, err := os.Stat(filepath.Join(n.dir, "lost-once")); err != nil {
		t.Fatal("the shim never made new-session fail: the test proves nothing")
	}
}
