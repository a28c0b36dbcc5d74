package remote

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/orchestrator/job"
)

// hog is a run script that allocates up to mb MiB in 50 MiB steps, saying
// how far it got, then sleeps.
func hog(mb int) string {
	return fmt.Sprintf(`python3 -c '
import sys, time
held = []
for i in range(1, %[1]d // 50 + 1):
    held.append(bytearray(50 << 20))
    print("allocated", i * 50, "MiB", flush=True)
    time.sleep(0.05)
print("all allocated", flush=True)
time.sleep(2)
'`, mb)
}

// lastLine is the log's last non-empty line.
func lastLine(log string) string {
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	return lines[len(lines)-1]
}

// A job over its --mem ends OUT_OF_MEMORY long before it holds what it
// asked for, says its peak and limit last, and leaves nothing running;
// its GPU is leased again.
func TestMemLimitEndsTheJobOutOfMemory(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.T4x1("mem"))
	s := spec("mem-1", 1, hog(3000))
	s.MemLimitMiB = 300
	n.submit(s)
	st := n.waitState("mem-1", job.OutOfMemory)
	log := n.log("mem-1")
	if !st.Exited || st.ExitCode != 137 {
		t.Errorf("exit %v %d, want 137", st.Exited, st.ExitCode)
	}
	if strings.Contains(log, "all allocated") || !strings.Contains(log, "allocated 300 MiB") {
		t.Errorf("the job was not stopped between its limit and its 3000 MiB:\n%s", log)
	}
	last := lastLine(log)
	if !strings.Contains(last, "300 MiB") || !strings.Contains(last, "peak") || !strings.Contains(last, "OUT_OF_MEMORY") {
		t.Errorf("last line %q names neither the limit nor the peak", last)
	}
	if !strings.Contains(st.Reason, "300 MiB limit") || !strings.Contains(st.Reason, "peak") {
		t.Errorf("reason %q", st.Reason)
	}
	// The wrapper itself ends a moment after its exit record.
	waitFor(t, "the job's processes to end", func() bool { return len(markedPIDs("mem-1")) == 0 })
	n.submit(spec("mem-2", 1, "true"))
	n.waitState("mem-2", job.Succeeded)
}

// --time ends the job TIMEOUT: SIGTERM to its tree, which a well-behaved
// job obeys at once.
func TestTimeLimitEndsTheJobTimeout(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.T4x1("time"))
	s := spec("time-1", 0, "sleep 300 & sleep 300")
	s.TimeLimit = 1500 * time.Millisecond // rounded up to 2s
	n.submit(s)
	st := n.waitState("time-1", job.Timeout)
	if st.ExitCode != 124 || !strings.Contains(st.Reason, "time limit 2s") {
		t.Errorf("exit %d, reason %q", st.ExitCode, st.Reason)
	}
	if last := lastLine(n.log("time-1")); !strings.Contains(last, "TIMEOUT") || !strings.Contains(last, "SIGTERM") {
		t.Errorf("last line %q", last)
	}
	waitFor(t, "the job's processes to end", func() bool { return len(markedPIDs("time-1")) == 0 })
}

// topoSMI wraps the simulator with `nvidia-smi topo -m` as a real driver
// prints it (tabs, the header underlined): GPU0 is near core 1, GPU1 near
// core 0.
const topoSMI = `#!/bin/bash
if [ "$1" = topo ]; then
	printf '\t\033[4mGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\033[0m\n'
	printf 'GPU0\t X \tNV4\t1\t0\t\tN/A\n'
	printf 'GPU1\tNV4\t X \t0\t0\t\tN/A\n'
	exit 0
fi
exec %s "$@"
`

// --cpus pins a job to cores near its GPUs, and a second job to cores
// the first does not hold.
func TestCPUsPinNearTheGPUAndApart(t *testing.T) {
	t.Parallel()
	allowed := cpusAllowed(t)
	if len(allowed) < 2 {
		t.Skipf("this machine lets the tests use %d core(s); pinning apart needs 2", len(allowed))
	}
	n := newNode(t, gpusim.A100x2("cpus"))
	wrap := filepath.Join(n.dir, "topo")
	os.MkdirAll(wrap, 0o755)
	if err := os.WriteFile(filepath.Join(wrap, "nvidia-smi"), []byte(fmt.Sprintf(topoSMI, filepath.Join(n.dir, "bin", "nvidia-smi"))), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, e := range n.env {
		if strings.HasPrefix(e, "PATH=") {
			n.env[i] = "PATH=" + wrap + ":" + strings.TrimPrefix(e, "PATH=")
		}
	}
	show := `grep Cpus_allowed_list /proc/self/status | cut -f2 > "$HOME/cores-$SSHQ_JOB_NAME"; ` + blockUntil("$SSHQ_JOB_NAME")
	a := spec("cpus-a", 1, show)
	a.CPUs = 1
	n.submit(a)
	n.waitState("cpus-a", job.Running)
	waitFor(t, "cpus-a's cores", func() bool { _, err := os.Stat(filepath.Join(n.home(), "cores-cpus-a")); return err == nil })
	b := spec("cpus-b", 0, show)
	b.CPUs = 1
	n.submit(b)
	waitFor(t, "cpus-b's cores", func() bool { _, err := os.Stat(filepath.Join(n.home(), "cores-cpus-b")); return err == nil })
	ca, _ := os.ReadFile(filepath.Join(n.home(), "cores-cpus-a"))
	cb, _ := os.ReadFile(filepath.Join(n.home(), "cores-cpus-b"))
	// GPU0 is near core 1: a job on GPU0 gets core 1 when it may use it.
	if want := "1"; strings.TrimSpace(string(ca)) != want || n.job("cpus-a").Cores != want {
		t.Errorf("cpus-a on GPU0 runs on cores %q (reported %q), want %s", ca, n.job("cpus-a").Cores, want)
	}
	if strings.TrimSpace(string(cb)) == strings.TrimSpace(string(ca)) {
		t.Errorf("both jobs pinned to %q", ca)
	}
	n.release("cpus-a")
	n.release("cpus-b")
	n.waitState("cpus-a", job.Succeeded)
	n.waitState("cpus-b", job.Succeeded)
}

func cpusAllowed(t *testing.T) []int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, l := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(l, "Cpus_allowed_list:")
		if !ok {
			continue
		}
		for _, r := range strings.Split(strings.TrimSpace(v), ",") {
			lo, hi, _ := strings.Cut(r, "-")
			a, _ := strconv.Atoi(lo)
			z := a
			if hi != "" {
				z, _ = strconv.Atoi(hi)
			}
			for c := a; c <= z; c++ {
				out = append(out, c)
			}
		}
	}
	return out
}

// The node's check says how it holds --mem and what it keeps back.
func TestCheckReportsTheLimits(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.T4x1("chk"))
	n.env = append(n.env, "SSHQ_RESERVE_MEM=3G", "SSHQ_DISK_FLOOR=lots")
	nc, err := n.cl().Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if nc.MemLimit != "watchdog" || nc.ReserveMemMiB != 3072 || nc.DiskFloorMiB != 2048 || nc.LogCapMiB != 1024 {
		t.Errorf("check: %+v", nc)
	}
	if p := strings.Join(nc.Problems(), "\n"); !strings.Contains(p, "SSHQ_DISK_FLOOR=lots is not a size") {
		t.Errorf("problems do not name the bad setting:\n%s", p)
	}
}
