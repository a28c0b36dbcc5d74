package remote

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/orchestrator/job"
)

// testNode is a fake node: its own HOME, tmux socket directory, lease
// directory and simulated GPUs, used by running the package's command
// strings with bash exactly as sshd would.
type testNode struct {
	t    *testing.T
	dir  string
	gpus []gpusim.GPU
	env  []string

	mu   sync.Mutex
	uids []string
}

func newNode(t *testing.T, gpus []gpusim.GPU) *testNode {
	t.Helper()
	// A short path: tmux sockets must fit in sun_path (108 bytes).
	dir, err := os.MkdirTemp("", "sq")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"home", "tmux"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := gpusim.Install(dir, gpus); err != nil {
		t.Fatal(err)
	}
	n := &testNode{t: t, dir: dir, gpus: gpus}
	n.env = []string{
		"HOME=" + filepath.Join(dir, "home"),
		"TMUX_TMPDIR=" + filepath.Join(dir, "tmux"),
		"SSHQ_LEASE_DIR=" + filepath.Join(dir, "leases"),
		"SSHQ_SIM_DIR=" + gpusim.SimDir(dir),
		"PATH=" + filepath.Join(dir, "bin") + ":/usr/local/bin:/usr/bin:/bin",
		"SSHQ_POLL_INTERVAL=0.1",
		"SSHQ_LOG_POLL=0.05",
		"SSHQ_NO_SYSTEMD=1",
		"SHELL=/bin/bash",
		"USER=" + os.Getenv("USER"),
	}
	t.Cleanup(func() {
		n.mu.Lock()
		uids := append([]string(nil), n.uids...)
		n.mu.Unlock()
		if len(uids) > 0 {
			n.run(Cancel(uids, 50*time.Millisecond), nil)
		}
		n.run("tmux -L sshq kill-server", nil)
		os.RemoveAll(dir)
	})
	return n
}

func (n *testNode) home() string { return filepath.Join(n.dir, "home") }

// run runs cmd as the node's login shell would: bash -c with the node env.
func (n *testNode) run(cmd string, stdin []byte) (stdout, stderr string, rc int) {
	c := exec.Command("bash", "-c", cmd)
	c.Env = n.env
	c.Dir = "/"
	if stdin != nil {
		c.Stdin = bytes.NewReader(stdin)
	}
	var o, e bytes.Buffer
	c.Stdout, c.Stderr = &o, &e
	err := c.Run()
	rc = 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		rc = ee.ExitCode()
	} else if err != nil {
		rc = -1
	}
	return o.String(), e.String(), rc
}

// spec returns a job spec with sensible test defaults.
func spec(uid string, gpus int, run string) JobSpec {
	return JobSpec{UID: uid, ID: 1, Name: uid, User: "tester", NumGPUs: gpus, Run: run}
}

func (n *testNode) submit(s JobSpec) {
	n.t.Helper()
	cmd, stdin, err := Submit(s)
	if err != nil {
		n.t.Fatalf("Submit(%s): %v", s.UID, err)
	}
	n.mu.Lock()
	n.uids = append(n.uids, s.UID)
	n.mu.Unlock()
	out, errOut, rc := n.run(cmd, stdin)
	if rc != 0 {
		n.t.Fatalf("submit %s: rc=%d stdout=%q stderr=%q", s.UID, rc, out, errOut)
	}
}

func (n *testNode) jobs(uids ...string) map[string]JobStatus {
	n.t.Helper()
	out, errOut, rc := n.run(Jobs(uids), nil)
	if rc != 0 {
		n.t.Fatalf("jobs: rc=%d stderr=%q", rc, errOut)
	}
	m, err := ParseJobs([]byte(out))
	if err != nil {
		n.t.Fatalf("ParseJobs: %v\n%s", err, out)
	}
	return m
}

func (n *testNode) job(uid string) JobStatus { n.t.Helper(); return n.jobs(uid)[uid] }

func (n *testNode) node() *NodeStatus {
	n.t.Helper()
	out, errOut, rc := n.run(Node(), nil)
	if rc != 0 {
		n.t.Fatalf("node: rc=%d stderr=%q", rc, errOut)
	}
	ns, err := ParseNode([]byte(out))
	if err != nil {
		n.t.Fatalf("ParseNode: %v\n%s", err, out)
	}
	return ns
}

func (n *testNode) log(uid string) string {
	out, _, _ := n.run(Logs(uid, -1, false), nil)
	return out
}

// waitState waits until the job reaches state (or any terminal state when
// want is terminal and it passed it), failing with the job's log otherwise.
func (n *testNode) waitState(uid string, want job.State) JobStatus {
	n.t.Helper()
	var last JobStatus
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		last = n.job(uid)
		if last.State == want {
			return last
		}
		if last.State.Terminal() {
			break
		}
		time.Sleep(30 * time.Millisecond)
	}
	n.t.Fatalf("job %s: state %s, want %s\nstatus: %+v\nlog:\n%s", uid, last.State, want, last, n.log(uid))
	return last
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// release creates the file a blocking test job waits for.
func (n *testNode) release(name string) {
	n.t.Helper()
	if err := os.WriteFile(filepath.Join(n.home(), "release-"+name), nil, 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// blockUntil is a run script that records its start, then waits for
// release(name).
func blockUntil(name string) string {
	return fmt.Sprintf(`echo "$(date +%%s%%N) $CUDA_VISIBLE_DEVICES" > "$HOME/start-%[1]s"
while [ ! -e "$HOME/release-%[1]s" ]; do sleep 0.05; done
`, name)
}

// startedAt reads the start record written by blockUntil/recording scripts.
func (n *testNode) startedAt(name string) (int64, string, bool) {
	b, err := os.ReadFile(filepath.Join(n.home(), "start-"+name))
	if err != nil {
		return 0, "", false
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, "", false
	}
	ns, _ := strconv.ParseInt(f[0], 10, 64)
	cvd := ""
	if len(f) > 1 {
		cvd = f[1]
	}
	return ns, cvd, true
}

// processGone reports whether pid has exited (a zombie counts: it runs
// nothing and holds no file).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}

// markedPIDs lists live processes carrying the job's SSHQ_JOB_UID mark.
func markedPIDs(uid string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	want := []byte("SSHQ_JOB_UID=" + uid + "\x00")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		if bytes.HasPrefix(b, want) || bytes.Contains(b, append([]byte{0}, want...)) {
			if !processGone(pid) {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

func syscallKill(pid int) {
	if p, err := os.FindProcess(pid); err == nil {
		p.Signal(os.Kill)
	}
}
