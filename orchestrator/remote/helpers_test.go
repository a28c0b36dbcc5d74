package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/orchestrator/job"
)

// runTag ends every job uid the tests submit: jobs are found by their uid
// across the whole machine (cancel's mark, markedPIDs), and another run of
// these tests (another checkout) may be running beside this one. Tests name
// jobs without it; the helpers add and strip it.
var runTag = "t" + strconv.FormatInt(int64(os.Getpid()), 36)

func tagged(uid string) string { return uid + "-" + runTag }

func untagged(uid string) string { return strings.TrimSuffix(uid, "-"+runTag) }

func taggedAll(uids []string) []string {
	out := make([]string, len(uids))
	for i, u := range uids {
		out[i] = tagged(u)
	}
	return out
}

// jobDir is the job's directory on the node.
func (n *testNode) jobDir(uid string) string {
	return filepath.Join(n.home(), ".sshq", "jobs", tagged(uid))
}

// untag strips the run's tag from the uids a status report names.
func untag(ns *NodeStatus) *NodeStatus {
	for i := range ns.Leases {
		ns.Leases[i].JobUID = untagged(ns.Leases[i].JobUID)
	}
	for i := range ns.Queue {
		ns.Queue[i].JobUID = untagged(ns.Queue[i].JobUID)
	}
	for i := range ns.Running {
		ns.Running[i].JobUID = untagged(ns.Running[i].JobUID)
	}
	return ns
}

// testNode is a fake node: its own HOME, tmux socket directory, lease
// directory and simulated GPUs, used by running the package's command
// strings with bash exactly as sshd would.
type testNode struct {
	t    *testing.T
	dir  string
	gpus []gpusim.GPU
	env  []string

	// prefix goes before every command the client runs (a umask, say).
	prefix string

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
			n.cl().Cancel(context.Background(), taggedAll(uids), 50*time.Millisecond)
		}
		n.run("tmux -L sshq kill-server", nil)
		os.RemoveAll(dir)
	})
	return n
}

func (n *testNode) home() string { return filepath.Join(n.dir, "home") }

// Run runs cmd as sshd would run it for the node's login shell: bash -c
// with the node env. It makes the node a Runner.
func (n *testNode) Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	c := exec.CommandContext(ctx, "bash", "-c", n.prefix+cmd)
	c.Env = n.env
	c.Dir = "/"
	c.Stdout, c.Stderr = stdout, stderr
	if stdin != nil {
		// Copied by hand, as sshpool does: Wait must not wait for a
		// stdin that only ends when the caller has read the output.
		w, err := c.StdinPipe()
		if err != nil {
			return -1, err
		}
		go func() {
			io.Copy(w, stdin)
			w.Close()
		}()
	}
	err := c.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return -1, err
	}
	return 0, nil
}

// cl is the node's client.
func (n *testNode) cl() *Client { return New("testnode", n) }

// run runs a raw shell command on the node.
func (n *testNode) run(cmd string, stdin []byte) (stdout, stderr string, rc int) {
	var o, e bytes.Buffer
	var in io.Reader
	if stdin != nil {
		in = bytes.NewReader(stdin)
	}
	rc, err := n.Run(context.Background(), cmd, in, &o, &e)
	if err != nil {
		rc = -1
	}
	return o.String(), e.String(), rc
}

// spec returns a job spec with sensible test defaults.
func spec(uid string, gpus int, run string) JobSpec {
	return JobSpec{UID: uid, ID: 1, Name: uid, User: "tester", NumGPUs: gpus, Run: run}
}

// trySubmit submits s and returns what Submit said.
func (n *testNode) trySubmit(s JobSpec) (job.State, error) {
	n.t.Helper()
	n.mu.Lock()
	n.uids = append(n.uids, s.UID)
	n.mu.Unlock()
	s.UID = tagged(s.UID)
	return n.cl().Submit(context.Background(), s)
}

func (n *testNode) submit(s JobSpec) {
	n.t.Helper()
	if _, err := n.trySubmit(s); err != nil {
		n.t.Fatalf("submit %s: %v", s.UID, err)
	}
}

func (n *testNode) jobs(uids ...string) map[string]JobStatus {
	n.t.Helper()
	m, err := n.cl().Jobs(context.Background(), taggedAll(uids))
	if err != nil {
		n.t.Fatalf("jobs: %v", err)
	}
	res := make(map[string]JobStatus, len(m))
	for uid, js := range m {
		js.UID = untagged(js.UID)
		res[untagged(uid)] = js
	}
	return res
}

func (n *testNode) job(uid string) JobStatus { n.t.Helper(); return n.jobs(uid)[uid] }

// node is the node's status report.
func (n *testNode) node() *NodeStatus {
	n.t.Helper()
	ns, err := n.cl().Status(context.Background())
	if err != nil {
		n.t.Fatalf("status: %v", err)
	}
	return untag(ns)
}

func (n *testNode) cancel(grace time.Duration, uids ...string) map[string]CancelOutcome {
	n.t.Helper()
	m, _, err := n.cl().Cancel(context.Background(), taggedAll(uids), grace)
	if err != nil {
		n.t.Errorf("cancel %v: %v", uids, err)
	}
	res := make(map[string]CancelOutcome, len(m))
	for uid, o := range m {
		res[untagged(uid)] = o
	}
	return res
}

// logs returns the job's log (its last tail lines when tail >= 0) and, with
// follow, the exit code Logs returned.
func (n *testNode) logs(uid string, tail int, follow bool) (string, string, int) {
	var o, e bytes.Buffer
	code, err := n.cl().Logs(context.Background(), tagged(uid), tail, follow, &o, &e)
	if err != nil {
		n.t.Fatalf("logs %s: %v", uid, err)
	}
	return o.String(), e.String(), code
}

func (n *testNode) log(uid string) string {
	out, _, _ := n.logs(uid, -1, false)
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
	uid = tagged(uid)
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

// records lists the names of the node user's lease records of a kind ("w"
// waiting, "r" running) in the node's lease namespace (see lease.sh).
func (n *testNode) records(kind string) []string {
	m, _ := filepath.Glob(filepath.Join(n.dir, "leases.u*", kind+".*"))
	var out []string
	for _, p := range m {
		out = append(out, filepath.Base(p))
	}
	return out
}

// recordDir is the node user's lease records directory.
func (n *testNode) recordDir() string {
	return filepath.Join(n.dir, "leases.u"+strconv.Itoa(os.Geteuid()))
}

// lockID names path's inode as /proc/locks does (MAJ:MIN:INODE).
func lockID(t *testing.T, path string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	dev := uint64(st.Dev)
	maj := (dev>>8)&0xfff | (dev>>32)&^0xfff
	min := dev&0xff | (dev>>12)&^0xff
	return fmt.Sprintf("%02x:%02x:%d", maj, min, st.Ino)
}
