package orchestrator

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/task"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// limitsController starts one node, "box", with two simulated A100s and
// the node settings in env, and opens a controller on it.
func limitsController(t *testing.T, env map[string]string) (*Controller, *sshtest.Cluster) {
	t.Helper()
	env["SSHQ_POLL_INTERVAL"] = "0.2"
	c := sshtest.Start(t, sshtest.Options{Names: []string{"box"}, Env: env})
	if err := gpusim.Install(c.Node("box").Dir, gpusim.A100x2(t.Name())); err != nil {
		t.Fatal(err)
	}
	ctrl, err := OpenController(ControllerOptions{Home: t.TempDir(), SSHConfig: c.ConfigPath, Nodes: "box"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctrl.Close() })
	return ctrl, c
}

// launchLimited submits a command as a detached job with limits.
func launchLimited(t *testing.T, ctrl *Controller, name, gpus, command string, lim LimitFlags) int {
	t.Helper()
	tk, _, err := task.Parse("command line", []byte("run: \"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	ov := task.Overrides{Name: name, Run: command}
	if gpus != "" {
		a, err := task.ParseGPUFlag(gpus)
		if err != nil {
			t.Fatal(err)
		}
		ov.GPUs = &a
	}
	if err := tk.Apply(ov); err != nil {
		t.Fatal(err)
	}
	v, err := ctrl.Launch(ctxT(t), LaunchRequest{Task: tk, Options: LaunchOptions{Limits: lim}})
	if err != nil {
		t.Fatalf("launch %s: %v", name, err)
	}
	return v.Job.ID
}

// view is the job as `sshq queue -a` shows it now.
func view(t *testing.T, ctrl *Controller, id int) JobView {
	t.Helper()
	q, err := ctrl.Queue(ctxT(t), true)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range q.Jobs {
		if v.ID == id {
			return v
		}
	}
	t.Fatalf("job %d is not in the queue", id)
	return JobView{}
}

// output is the job's log as `sshq logs` prints it.
func output(t *testing.T, ctrl *Controller, id int) string {
	t.Helper()
	var out, errb bytes.Buffer
	if _, err := ctrl.Logs(ctxT(t), LogsRequest{Ref: strconv.Itoa(id), Tail: -1, Out: &out, ErrOut: &errb}); err != nil {
		t.Fatalf("logs %d: %v %s", id, err, errb.String())
	}
	return out.String()
}

// noneLeft fails the test unless every process carrying the job's mark
// ends soon: the wrapper itself ends a moment after its exit record, and
// the deadline only guards against a hang.
func noneLeft(t *testing.T, name, uid string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for p := alive(uid); len(p) > 0; p = alive(uid) {
		if time.Now().After(deadline) {
			t.Errorf("%s left processes running: %v", name, p)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alive lists the processes still carrying the job's mark.
func alive(uid string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	mark := []byte("SSHQ_JOB_UID=" + uid + "\x00")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !(bytes.HasPrefix(env, mark) || bytes.Contains(env, append([]byte{0}, mark...))) {
			continue
		}
		if st, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil {
			if i := bytes.LastIndexByte(st, ')'); i > 0 && i+2 < len(st) && st[i+2] != 'Z' {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// hogScript allocates up to mb MiB in 100 MiB steps, saying how far it
// got, then holds it a moment.
func hogScript(mb int) string {
	return fmt.Sprintf(`python3 -c '
import time
held = []
for i in range(1, %[1]d // 100 + 1):
    held.append(bytearray(100 << 20))
    print("allocated", i * 100, "MiB", flush=True)
    time.sleep(0.1)
print("all %[1]d MiB allocated", flush=True)
time.sleep(3)
'`, mb)
}

func lastLogLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// --mem and --time end their jobs OUT_OF_MEMORY and TIMEOUT while a
// neighbour on the node runs to its end; nothing of either is left, and
// their GPUs go to the next job.
func TestMemAndTimeLimitsEndJobsAndFreeTheirGPUs(t *testing.T) {
	t.Parallel()
	ctrl, _ := limitsController(t, map[string]string{})
	mem, secs := int64(300), 3*time.Second
	hog := launchLimited(t, ctrl, "hog", "1", hogScript(3000), LimitFlags{MemMiB: &mem})
	sleeper := launchLimited(t, ctrl, "sleeper", "1", "sleep 300", LimitFlags{Time: &secs})
	neighbour := launchLimited(t, ctrl, "neighbour", "", "sleep 4; echo neighbour done", LimitFlags{})

	untilState(t, ctrl, hog, job.OutOfMemory, job.Succeeded, job.Failed)
	untilState(t, ctrl, sleeper, job.Timeout, job.Succeeded, job.Failed)
	h, s := view(t, ctrl, hog), view(t, ctrl, sleeper)
	if h.State != job.OutOfMemory || h.ExitCode == nil || *h.ExitCode != 137 {
		t.Errorf("hog: %s, exit %v; want OUT_OF_MEMORY, 137", h.State, h.ExitCode)
	}
	if h.MemLimitMiB == nil || *h.MemLimitMiB != 300 || !strings.Contains(h.Reason, "300 MiB limit") || !strings.Contains(h.Reason, "peak") {
		t.Errorf("hog: limit %v, reason %q; want the 300 MiB limit and the peak", h.MemLimitMiB, h.Reason)
	}
	log := output(t, ctrl, hog)
	if strings.Contains(log, "all 3000 MiB allocated") || !strings.Contains(log, "allocated 300 MiB") {
		t.Errorf("the hog was not stopped between its limit and its 3000 MiB:\n%s", log)
	}
	if last := lastLogLine(log); !strings.Contains(last, "300 MiB") || !strings.Contains(last, "peak") {
		t.Errorf("the hog's log ends %q, which names neither its peak nor its limit", last)
	}
	if s.State != job.Timeout || s.ExitCode == nil || *s.ExitCode != 124 || s.TimeLimitS == nil || *s.TimeLimitS != 3 {
		t.Errorf("sleeper: %s, exit %v, limit %v; want TIMEOUT, 124, 3s", s.State, s.ExitCode, s.TimeLimitS)
	}
	if !strings.Contains(s.Reason, "time limit 3s") || !strings.Contains(lastLogLine(output(t, ctrl, sleeper)), "TIMEOUT") {
		t.Errorf("sleeper: reason %q, log %q", s.Reason, output(t, ctrl, sleeper))
	}
	for _, v := range []JobView{h, s} {
		noneLeft(t, v.Name, v.UID)
	}
	// Both GPUs are free again: a job asking for both starts.
	both := launchLimited(t, ctrl, "both", "2", "echo both", LimitFlags{})
	untilState(t, ctrl, both, job.Succeeded, job.Failed)
	untilState(t, ctrl, neighbour, job.Succeeded, job.Failed)
	if n := view(t, ctrl, neighbour); n.State != job.Succeeded || n.Reason != "" {
		t.Errorf("the neighbour: %s (%q), want SUCCEEDED", n.State, n.Reason)
	}
}

func memAvailableKiB(t *testing.T) int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no MemAvailable in /proc/meminfo")
	return 0
}

// With the node's reserve just under what is available, a job without
// --mem that takes 3 GB is stopped as "node memory low" and a small
// neighbour runs on.
func TestNodeReserveStopsTheJobFurthestAboveItsShare(t *testing.T) {
	t.Parallel()
	reserve := memAvailableKiB(t) - 1<<20
	ctrl, _ := limitsController(t, map[string]string{"SSHQ_RESERVE_MEM": fmt.Sprintf("%dK", reserve)})
	small := launchLimited(t, ctrl, "small", "", `python3 -c 'import time; b = bytearray(20 << 20); time.sleep(10); print("small done")'`, LimitFlags{})
	// The hog grows until it is stopped (8 GB at most): what is available
	// moves with everything else on the machine, so a fixed size could end
	// on the safe side of the line.
	hog := launchLimited(t, ctrl, "hog", "", hogScript(8000), LimitFlags{})
	untilState(t, ctrl, hog, job.OutOfMemory, job.Succeeded, job.Failed)
	untilState(t, ctrl, small, job.Succeeded, job.Failed, job.OutOfMemory)
	h := view(t, ctrl, hog)
	if h.State != job.OutOfMemory || !strings.Contains(h.Reason, "node memory low") {
		t.Errorf("hog: %s (%q), want OUT_OF_MEMORY for node memory low\n%s", h.State, h.Reason, output(t, ctrl, hog))
	}
	if last := lastLogLine(output(t, ctrl, hog)); !strings.Contains(last, "node memory low") || !strings.Contains(last, "SSHQ_RESERVE_MEM") {
		t.Errorf("the hog's log ends %q", last)
	}
	if s := view(t, ctrl, small); s.State != job.Succeeded {
		t.Errorf("the small neighbour: %s (%q)\n%s", s.State, s.Reason, output(t, ctrl, small))
	}
	noneLeft(t, "the hog", h.UID)
}

func freeKiB(t *testing.T, dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize / 1024
}

// A chatty job's log keeps only its newest part, and says so; a job does
// not start while the node's home is under the disk floor, with the reason
// in the queue, and starts once space is freed.
func TestLogCapAndDiskFloor(t *testing.T) {
	t.Parallel()
	floor := freeKiB(t, os.TempDir()) - 2<<20
	ctrl, c := limitsController(t, map[string]string{"SSHQ_LOG_CAP": "64K", "SSHQ_DISK_FLOOR": fmt.Sprintf("%dK", floor)})
	home := c.Node("box").Home

	chatty := launchLimited(t, ctrl, "chatty", "", `for i in $(seq -w 1 30000); do echo "line $i of a chatty job, which would fill the disk"; done; sleep 1.5; echo last line`, LimitFlags{})
	untilState(t, ctrl, chatty, job.Succeeded, job.Failed)
	log := output(t, ctrl, chatty)
	if len(log) > 64<<10+512 || !strings.Contains(log, "last line") || strings.Contains(log, "line 00001 ") {
		t.Errorf("the log is %d bytes (cap 64K) and holds the last line %v, the first %v", len(log), strings.Contains(log, "last line"), strings.Contains(log, "line 00001 "))
	}
	if !strings.HasPrefix(log, "sshq: the first ") || !strings.Contains(log, "dropped") {
		t.Errorf("the log does not say it was capped: %.200q", log)
	}
	uid := view(t, ctrl, chatty).UID
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(home, ".sshq", "jobs", uid, "log"), &st); err != nil {
		t.Fatal(err)
	}
	if used := st.Blocks * 512; used > 2*64<<10 {
		t.Errorf("the log takes %d bytes of disk; its cap is 64K", used)
	}

	// Fill the node's disk past its floor, without writing a byte.
	fill := filepath.Join(home, "fill")
	f, err := os.Create(fill)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, 4<<30); err != nil {
		f.Close()
		os.Remove(fill)
		t.Fatalf("cannot take 4 GiB of disk to test the floor: %v", err)
	}
	f.Close()
	t.Cleanup(func() { os.Remove(fill) })
	waiter := launchLimited(t, ctrl, "waiter", "", "echo started", LimitFlags{})
	deadline := time.Now().Add(time.Minute)
	for v := view(t, ctrl, waiter); !strings.Contains(v.Reason, "disk low"); v = view(t, ctrl, waiter) {
		if v.State != job.Pending || time.Now().After(deadline) {
			t.Fatalf("the waiter is %s (%q), want PENDING for disk low", v.State, v.Reason)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	untilState(t, ctrl, waiter, job.Succeeded, job.Failed)
	if v := view(t, ctrl, waiter); v.State != job.Succeeded || v.Reason != "" {
		t.Errorf("the waiter: %s (%q) once space was freed", v.State, v.Reason)
	}
	if log := output(t, ctrl, waiter); !strings.Contains(log, "SSHQ_DISK_FLOOR") || !strings.Contains(log, "started") {
		t.Errorf("the waiter's log does not say it waited for disk:\n%s", log)
	}
}
