package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
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
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// nodeEnv makes queued jobs start within a fifth of a second of their
// GPUs freeing up (the default is 2s): tests wait for that often.
var nodeEnv = map[string]string{"SSHQ_POLL_INTERVAL": "0.2"}

// gpuCluster starts nodes with simulated GPUs and returns the cluster, a
// controller home and the environment that points sshq at them.
func gpuCluster(t *testing.T, gpus map[string][]gpusim.GPU) (*sshtest.Cluster, string, []string) {
	t.Helper()
	return gpuClusterWith(t, gpus, sshtest.Options{})
}

// gpuClusterWith is gpuCluster with more options for sshtest.
func gpuClusterWith(t *testing.T, gpus map[string][]gpusim.GPU, opts sshtest.Options) (*sshtest.Cluster, string, []string) {
	t.Helper()
	var names []string
	for n := range gpus {
		names = append(names, n)
	}
	sort.Strings(names)
	opts.Names = names
	opts.Env = nodeEnv
	c := sshtest.Start(t, opts)
	for n, g := range gpus {
		if err := gpusim.Install(c.Node(n).Dir, g); err != nil {
			t.Fatal(err)
		}
	}
	return c, t.TempDir(), []string{"SSHQ_NODES=" + strings.Join(names, ",")}
}

type queueEntry struct {
	ID        int      `json:"id"`
	UID       string   `json:"uid"`
	Name      string   `json:"name"`
	Node      string   `json:"node"`
	GPUs      []int    `json:"gpus"`
	State     string   `json:"state"`
	ExitCode  *int     `json:"exit_code"`
	QueuePos  *int     `json:"queue_position"`
	EnvNames  []string `json:"env_names"`
	Reachable bool     `json:"node_reachable"`
	Reason    string   `json:"reason"`
}

func queue(t *testing.T, c *sshtest.Cluster, home string, env []string) []queueEntry {
	t.Helper()
	r := sshq(t, c, home, env, "queue", "-a", "--json")
	var q []queueEntry
	if err := json.Unmarshal([]byte(r.stdout), &q); err != nil {
		t.Fatalf("queue --json: %v\n%s\n%s", err, r.stdout, r.stderr)
	}
	return q
}

// patience bounds every wait for a job or a node in these tests. It only
// catches hangs: on a loaded 2-core machine a launch can take seconds, so
// nothing here asserts how long anything took.
const patience = 2 * time.Minute

// waitJobs waits as a user would, with `sshq wait`, until every job of the
// controller at home has ended, and returns the queue. sshq wait asks the
// nodes over one connection; a poll of `sshq queue` per interval would
// start a process and an SSH handshake each time.
func waitJobs(t *testing.T, c *sshtest.Cluster, home string, env []string) []queueEntry {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		q := queue(t, c, home, env)
		var running []string
		for _, j := range q {
			if !job.State(j.State).Terminal() {
				running = append(running, strconv.Itoa(j.ID))
			}
		}
		if len(running) == 0 {
			return q
		}
		if time.Now().After(deadline) {
			t.Fatalf("jobs still running after %s: %+v", patience, q)
		}
		// Its exit code is the jobs' (or 3 when a node did not answer):
		// the queue read next says which.
		sshq(t, c, home, env, append([]string{"wait", "--interval", "100ms"}, running...)...)
	}
}

func writeTask(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLaunchEnvironmentLogsAndExitCodes(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.A100x2(t.Name())})
	task := writeTask(t, home, "env.yaml", `name: envcheck
resources:
  accelerators: A100:1
envs:
  LR: "0.1"
  MODE: default
run: |
  echo "CVD=$CUDA_VISIBLE_DEVICES ORDER=$CUDA_DEVICE_ORDER"
  echo "ID=$SSHQ_JOB_ID NAME=$SSHQ_JOB_NAME RANK=$SSHQ_NODE_RANK NUM=$SSHQ_NUM_NODES GPN=$SSHQ_NUM_GPUS_PER_NODE IPS=$SSHQ_NODE_IPS"
  echo "SKY RANK=$SKYPILOT_NODE_RANK NUM=$SKYPILOT_NUM_NODES GPN=$SKYPILOT_NUM_GPUS_PER_NODE IPS=$SKYPILOT_NODE_IPS TASK=$SKYPILOT_TASK_ID"
  echo "LR=$LR MODE=$MODE"
`)
	r := sshq(t, c, home, env, "launch", task, "--env", "MODE=override")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	q := queue(t, c, home, env)
	if len(q) != 1 || q[0].State != "SUCCEEDED" || q[0].ExitCode == nil || *q[0].ExitCode != 0 || len(q[0].GPUs) != 1 {
		t.Fatalf("queue: %+v", q)
	}
	j := q[0]
	ip := c.Node("box").Addr
	for _, want := range []string{
		fmt.Sprintf("CVD=%d ORDER=PCI_BUS_ID", j.GPUs[0]),
		fmt.Sprintf("ID=%d NAME=envcheck RANK=0 NUM=1 GPN=1 IPS=%s", j.ID, ip),
		fmt.Sprintf("SKY RANK=0 NUM=1 GPN=1 IPS=%s TASK=%s", ip, j.UID),
		"LR=0.1 MODE=override",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("attached output lacks %q:\n%s", want, r.stdout)
		}
	}
	// The log holds the same output, from the first byte.
	logs := sshq(t, c, home, env, "logs", strconv.Itoa(j.ID))
	if !strings.Contains(logs.stdout, "LR=0.1 MODE=override") {
		t.Errorf("sshq logs:\n%s\n%s", logs.stdout, logs.stderr)
	}

	// Attached launch exits with the job's code; setup failure is FAILED_SETUP.
	r = sshq(t, c, home, env, "launch", "--name", "three", "--gpus", "1", "--", "bash", "-c", "echo bye; exit 3")
	if r.code != 3 || !strings.Contains(r.stdout, "bye") {
		t.Errorf("exit 3 job: code %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	bad := writeTask(t, home, "setup.yaml", "name: badsetup\nsetup: exit 7\nrun: echo never\n")
	r = sshq(t, c, home, env, "launch", bad)
	if r.code == 0 || strings.Contains(r.stdout, "never") {
		t.Errorf("setup failure: code %d\n%s", r.code, r.stdout)
	}
	states := map[string]string{}
	for _, j := range queue(t, c, home, env) {
		states[j.Name] = j.State
	}
	if states["three"] != "FAILED" || states["badsetup"] != "FAILED_SETUP" {
		t.Errorf("states: %v", states)
	}
}

func TestHostileEnvValuesArriveByteExact(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.T4x1(t.Name())})
	marker := filepath.Join(home, "pwned")
	values := []string{
		"$(touch " + marker + ")",
		"`touch " + marker + "`",
		"'; touch " + marker + "; echo '",
		"\"double\" and 'single'",
		"line1\nline2; touch " + marker,
		"a;b&c|d>e<f",
		"${HOME} $PATH \\n",
	}
	args := []string{"launch", "--name", "$(touch " + marker + ")"}
	for i, v := range values {
		args = append(args, "--env", fmt.Sprintf("V%d=%s", i, v))
	}
	// The job writes each value NUL-terminated to a file in its directory.
	args = append(args, "--", "bash", "-c", `for i in 0 1 2 3 4 5 6; do n=V$i; printf '%s\0' "${!n}"; done > "$HOME/values"; printf '%s' "$SSHQ_JOB_NAME" > "$HOME/name"`)
	r := sshq(t, c, home, env, args...)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	got, err := os.ReadFile(filepath.Join(c.Node("box").Home, "values"))
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(strings.TrimSuffix(string(got), "\x00"), "\x00")
	if len(parts) != len(values) {
		t.Fatalf("got %d values: %q", len(parts), parts)
	}
	for i := range values {
		if parts[i] != values[i] {
			t.Errorf("V%d: got %q, want %q", i, parts[i], values[i])
		}
	}
	name, _ := os.ReadFile(filepath.Join(c.Node("box").Home, "name"))
	if string(name) != "$(touch "+marker+")" {
		t.Errorf("job name arrived as %q", name)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a value was executed as code")
	}
}

func TestJobSurvivesControllerSIGKILL(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.A100x2(t.Name())})
	flag := filepath.Join(c.Node("box").Home, "go")
	cmd := exec.Command(sshqBin, "launch", "--gpus", "1", "--", "bash", "-c",
		fmt.Sprintf("echo started; while [ ! -e %s ]; do sleep 0.1; done; echo finished", flag))
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "SSHQ_HOME=" + filepath.Join(home, ".sshq"), "SSHQ_SSH_CONFIG=" + c.ConfigPath}, env...)
	var out syncBuffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "job output streamed", func() bool { return strings.Contains(out.String(), "started") })
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	os.WriteFile(flag, nil, 0o644)
	q := waitJobs(t, c, home, env)
	if len(q) != 1 || q[0].State != "SUCCEEDED" {
		t.Fatalf("after the controller died: %+v", q)
	}
	logs := sshq(t, c, home, env, "logs", "1")
	if !strings.Contains(logs.stdout, "finished") {
		t.Errorf("log: %s", logs.stdout)
	}
}

func TestConcurrentLaunchesGetDistinctIDs(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.T4x1(t.Name())})
	const n = 10
	var wg sync.WaitGroup
	ids := make([]string, n)
	codes := make([]int, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := sshq(t, c, home, env, "launch", "-d", "--gpus", "0", "--name", fmt.Sprintf("j%d", i), "--", "true")
			ids[i], codes[i] = strings.TrimSpace(r.stdout), r.code
			if r.code != 0 {
				t.Errorf("launch %d: %d %s", i, r.code, r.stderr)
			}
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Errorf("id %s given twice: %v", id, ids)
		}
		seen[id] = true
	}
	data, err := os.ReadFile(filepath.Join(home, ".sshq", "state.json"))
	if err != nil || !json.Valid(data) {
		t.Fatalf("state.json invalid: %v", err)
	}
	q := waitJobs(t, c, home, env)
	if len(q) != n {
		t.Fatalf("%d jobs in the queue, want %d", len(q), n)
	}
	for _, j := range q {
		if j.State != "SUCCEEDED" {
			t.Errorf("job %d %s", j.ID, j.State)
		}
	}
}

func TestCancelKillsWholeTreeAndFreesGPUs(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.A100x2(t.Name())})
	pids := filepath.Join(c.Node("box").Home, "pids")
	script := fmt.Sprintf(`setsid bash -c 'echo $$ >> %[1]s; exec sleep 1000' &
bash -c 'trap "" HUP TERM; echo $$ >> %[1]s; while true; do sleep 1; done' &
echo $$ >> %[1]s
wait`, pids)
	r := sshq(t, c, home, env, "launch", "-d", "--gpus", "2", "--", script)
	if r.code != 0 {
		t.Fatalf("%d %s", r.code, r.stderr)
	}
	waitFor(t, "three processes started", func() bool {
		b, _ := os.ReadFile(pids)
		return len(strings.Fields(string(b))) == 3
	})
	r = sshq(t, c, home, env, "cancel", "--grace", "1s", "1")
	if r.code != 0 || !strings.Contains(r.stdout, "cancelled") {
		t.Fatalf("cancel: %d %s %s", r.code, r.stdout, r.stderr)
	}
	b, _ := os.ReadFile(pids)
	for _, p := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(p)
		if syscall.Kill(pid, 0) == nil && !isZombie(pid) {
			t.Errorf("pid %d survived the cancel", pid)
		}
	}
	q := queue(t, c, home, env)
	if q[0].State != "CANCELLED" {
		t.Errorf("state %s", q[0].State)
	}
	var st statusJSON
	json.Unmarshal([]byte(sshq(t, c, home, env, "status", "--json").stdout), &st)
	for _, g := range st.Nodes[0].GPUs {
		if g.State != "free" {
			t.Errorf("GPU %d is %s after cancel", g.Index, g.State)
		}
	}
}

func TestBadTaskFilesExitTwoWithPosition(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob("testdata/tasks/bad/*.yaml")
	if len(files) < 20 {
		t.Fatalf("bad-task corpus has %d files", len(files))
	}
	home := t.TempDir()
	for _, f := range files {
		want, _ := os.ReadFile(strings.TrimSuffix(f, ".yaml") + ".want")
		lines := strings.Split(strings.TrimSpace(string(want)), "\n")
		r := sshq(t, nil, home, []string{"SSHQ_NODES=nowhere"}, "launch", "--dry-run", f)
		if r.code != 2 {
			t.Errorf("%s: exit %d, want 2\n%s", f, r.code, r.stderr)
			continue
		}
		if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine") {
			t.Errorf("%s: panic: %s", f, r.stderr)
		}
		if pos := lines[0]; pos != "0:0" && !strings.Contains(r.stderr, ":"+pos+":") {
			t.Errorf("%s: error lacks position %s: %s", f, pos, r.stderr)
		}
		for _, sub := range lines[1:] {
			if !strings.Contains(r.stderr, sub) {
				t.Errorf("%s: error lacks %q: %s", f, sub, r.stderr)
			}
		}
	}
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// waitFor polls cond until it holds, sooner at first (most conditions hold
// within a few hundred milliseconds), then every quarter second, so that a
// cond that runs sshq does not keep a CPU busy.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	pause := 20 * time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", patience, what)
		}
		time.Sleep(pause)
		pause = min(2*pause, 250*time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestQueuedJobKeepsItsSnapshotAndSecretsStayOffTheController(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.A100x2(t.Name())})
	flag := filepath.Join(c.Node("box").Home, "release")
	r := sshq(t, c, home, env, "launch", "-d", "--name", "blocker", "--gpus", "2", "--", fmt.Sprintf("while [ ! -e %s ]; do sleep 0.1; done", flag))
	if r.code != 0 {
		t.Fatal(r.stderr)
	}
	wd := filepath.Join(home, "proj")
	os.MkdirAll(wd, 0o755)
	os.WriteFile(filepath.Join(wd, "v.txt"), []byte("old code"), 0o644)
	task := writeTask(t, home, "snap.yaml", "name: snap\nworkdir: proj\nresources:\n  accelerators: A100:1\nsecrets:\n  TOKEN: null\nrun: 'cat v.txt; echo; printf %s \"$TOKEN\" > \"$HOME/token-$SSHQ_JOB_ID\"'\n")
	// workdir: proj is relative to where sshq runs, as in SkyPilot.
	r = sshqIn(t, home, c, home, env, "launch", "-d", task, "--secret", "TOKEN=s3cr3t-value")
	if r.code != 0 {
		t.Fatal(r.stderr)
	}
	os.WriteFile(filepath.Join(wd, "v.txt"), []byte("new code"), 0o644)
	r = sshqIn(t, home, c, home, env, "launch", "-d", task, "--name", "snap2", "--secret", "TOKEN=s3cr3t-value")
	if r.code != 0 {
		t.Fatal(r.stderr)
	}
	q := queue(t, c, home, env)
	if q[1].State != "PENDING" || q[2].State != "PENDING" {
		t.Fatalf("jobs should wait behind the blocker: %+v", q)
	}
	os.WriteFile(flag, nil, 0o644)
	waitJobs(t, c, home, env)
	for id, want := range map[string]string{"2": "old code", "3": "new code"} {
		out := sshq(t, c, home, env, "logs", id).stdout
		if !strings.Contains(out, want) {
			t.Errorf("job %s log: %q, want %q", id, out, want)
		}
		if tok, _ := os.ReadFile(filepath.Join(c.Node("box").Home, "token-"+id)); string(tok) != "s3cr3t-value" {
			t.Errorf("job %s got secret %q", id, tok)
		}
	}
	// The secret reached the job but no file of the controller.
	filepath.Walk(filepath.Join(home, ".sshq"), func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte("s3cr3t-value")) {
				t.Errorf("secret value stored on the controller in %s", p)
			}
		}
		return nil
	})
	// On the node it is gone with the job.
	filepath.Walk(filepath.Join(c.Node("box").Home, ".sshq"), func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte("s3cr3t-value")) {
				t.Errorf("secret value left on the node in %s", p)
			}
		}
		return nil
	})
}

func TestCtrlCDetachesAttachedLaunch(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.T4x1(t.Name())})
	cmd := exec.Command(sshqBin, "launch", "--gpus", "1", "--", "echo up; sleep 1000")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "SSHQ_HOME=" + filepath.Join(home, ".sshq"), "SSHQ_SSH_CONFIG=" + c.ConfigPath}, env...)
	var out, errb syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "job output", func() bool { return strings.Contains(out.String(), "up") })
	cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	if err != nil || !strings.Contains(errb.String(), "keeps running") || !strings.Contains(errb.String(), "sshq logs -f 1") {
		t.Fatalf("Ctrl-C: %v\n%s", err, errb.String())
	}
	if q := queue(t, c, home, env); q[0].State != "RUNNING" {
		t.Errorf("job after detach: %s", q[0].State)
	}
}

// A job still syncing is in the store but not on its node: cancel must
// stop it there, and reconcile must not call it LOST.
func TestCancelAndReconcileOfASubmittingJob(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.T4x1(t.Name())})
	st, err := store.Open(filepath.Join(home, ".sshq"))
	if err != nil {
		t.Fatal(err)
	}
	st.Update(func(s *store.State) error {
		for _, name := range []string{"syncing", "to-cancel"} {
			j := s.NewJob(name)
			j.Node = "box"
			j.Submitted = time.Now().Add(-10 * time.Minute) // a long sync
		}
		return nil
	})
	q := queue(t, c, home, env)
	if q[0].State != "SUBMITTING" || q[1].State != "SUBMITTING" {
		t.Fatalf("a job still syncing must stay SUBMITTING: %+v", q)
	}
	r := sshq(t, c, home, env, "cancel", "to-cancel")
	if r.code != 0 || !strings.Contains(r.stdout, "cancelled") {
		t.Fatalf("cancel: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if q := queue(t, c, home, env); q[1].State != "CANCELLED" || q[0].State != "SUBMITTING" {
		t.Errorf("after cancel: %+v", q)
	}
}

// Node users whose login shell is not bash (dash here; zsh and fish users
// exist too) must get every feature: sshq never hands its scripts to the
// login shell's own syntax.
func TestNodeUserWithPOSIXShLogin(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("creating a node user with another login shell needs root (CI runs as root)")
	}
	c, home, _ := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.A100x2(t.Name())})
	aliases := nodeUsersWithShell(t, c, c.Node("box"), 1, "/bin/sh")
	env := []string{"SSHQ_NODES=" + aliases[0]}
	wd := filepath.Join(home, "proj")
	os.MkdirAll(filepath.Join(wd, "pkg", "sub"), 0o755)
	os.WriteFile(filepath.Join(wd, "pkg", "sub", "m.py"), []byte("x = 1\n"), 0o644)
	task := writeTask(t, home, "t.yaml", "name: shjob\nworkdir: proj\nresources:\n  accelerators: A100:1\nrun: cat pkg/sub/m.py; echo shell-ok\n")
	if r := sshqIn(t, home, c, home, env, "launch", task); r.code != 0 || !strings.Contains(r.stdout, "shell-ok") || !strings.Contains(r.stdout, "x = 1") {
		t.Fatalf("launch as a /bin/sh user: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	// A second sync with a deletion and a new directory runs the sync's
	// prepare script, which needs bash.
	os.RemoveAll(filepath.Join(wd, "pkg", "sub"))
	os.MkdirAll(filepath.Join(wd, "other"), 0o755)
	if r := sshqIn(t, home, c, home, env, "launch", task); r.code != 0 {
		t.Fatalf("re-sync as a /bin/sh user: %d\n%s", r.code, r.stderr)
	}
	var st statusJSON
	if r := sshq(t, c, home, env, "status", "--json"); json.Unmarshal([]byte(r.stdout), &st) != nil || len(st.Nodes) != 1 || len(st.Nodes[0].GPUs) != 2 {
		t.Fatalf("status as a /bin/sh user: %s %s", r.stdout, r.stderr)
	}
}

// Ctrl-C while sshq is still probing the nodes (one of them hangs) stops
// the launch cleanly: exit 130, no job, and no node blamed.
func TestCtrlCBeforeSubmitLeavesNothing(t *testing.T) {
	t.Parallel()
	// The hung node stays silent for as long as the test may take to send
	// Ctrl-C once sshq dials it.
	c, home, _ := gpuClusterWith(t, map[string][]gpusim.GPU{"box": gpusim.T4x1(t.Name())}, sshtest.Options{HungTimeout: patience})
	hung, _ := c.AddHungNode("hung")
	env := []string{"SSHQ_NODES=box," + hung}
	cmd := exec.Command(sshqBin, "launch", "-d", "--", "true")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "SSHQ_HOME=" + filepath.Join(home, ".sshq"), "SSHQ_SSH_CONFIG=" + c.ConfigPath}, env...)
	var errb syncBuffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "sshq dials the hung node", func() bool { return c.HungDials(hung) > 0 })
	cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	ee, _ := err.(*exec.ExitError)
	if ee == nil || ee.ExitCode() != 130 || !strings.Contains(errb.String(), "nothing was submitted") || strings.Contains(errb.String(), "unreachable") {
		t.Fatalf("exit %v\n%s", err, errb.String())
	}
	if q := queue(t, c, home, []string{"SSHQ_NODES=box"}); len(q) != 0 {
		t.Errorf("a job was recorded: %+v", q)
	}
}

// A job that ended long ago leaves state.json for the history file; every
// command that names it still finds it, and `queue -a` shows it once.
func TestJobMovedToHistoryStaysReachable(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.T4x1(t.Name())})
	if r := sshq(t, c, home, env, "launch", "-d", "--name", "old", "--", "echo from-the-past; exit 3"); r.code != 0 {
		t.Fatalf("launch: %d %s", r.code, r.stderr)
	}
	waitJobs(t, c, home, env)
	st, err := store.Open(filepath.Join(home, ".sshq"))
	if err != nil {
		t.Fatal(err)
	}
	// Age it by two days and let KeepEnded jobs end after it.
	if err := st.Update(func(s *store.State) error {
		long := time.Now().UTC().Add(-48 * time.Hour)
		s.Job(1).Ended = &long
		for i := range store.KeepEnded {
			j := s.NewJob(fmt.Sprintf("later-%d", i))
			end := time.Now().UTC().Add(-time.Hour)
			j.Node, j.State, j.Ended = "box", job.Succeeded, &end
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	state, _ := os.ReadFile(st.Path())
	hist, _ := os.ReadFile(st.HistoryPath())
	if bytes.Contains(state, []byte(`"name":"old"`)) || !bytes.Contains(hist, []byte(`"name":"old"`)) {
		t.Fatalf("job #1 did not move from state.json to the history")
	}

	if r := sshq(t, c, home, env, "queue", "--json"); strings.Contains(r.stdout, `"old"`) {
		t.Errorf("queue without -a shows an ended job: %s", r.stdout)
	}
	q := queue(t, c, home, env) // queue -a --json
	if len(q) != store.KeepEnded+1 || q[0].ID != 1 || q[0].State != "FAILED" || q[0].ExitCode == nil || *q[0].ExitCode != 3 {
		t.Errorf("queue -a: %d jobs, first %+v; want %d jobs, #1 FAILED with exit code 3", len(q), q[0], store.KeepEnded+1)
	}
	for _, ref := range []string{"1", "old"} {
		if r := sshq(t, c, home, env, "logs", ref); r.code != 0 || !strings.Contains(r.stdout, "from-the-past") {
			t.Errorf("logs %s of a job in the history: %d %q %s", ref, r.code, r.stdout, r.stderr)
		}
	}
	if r := sshq(t, c, home, env, "wait", "1"); r.code != 3 || !strings.Contains(r.stdout, "#1 old: FAILED") {
		t.Errorf("wait 1 of a job in the history: %d %q %s; want exit 3", r.code, r.stdout, r.stderr)
	}
}
