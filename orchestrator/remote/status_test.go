package remote

import (
	"context"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sshq/sshq/orchestrator/gpu"
	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/orchestrator/job"
)

// smiCalls counts the nvidia-smi runs on a node whose nvidia-smi wrapSmi
// wrapped; with outside, only those of no job's wrapper (a report's).
func (n *testNode) smiCalls(outside bool) int {
	b, _ := os.ReadFile(filepath.Join(n.dir, "smi-calls"))
	c := 0
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" && (!outside || strings.HasPrefix(l, "- ")) {
			c++
		}
	}
	return c
}

func TestStatusOnSimulatedNodes(t *testing.T) {
	t.Parallel()
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	presets := map[string][]gpusim.GPU{
		"h100":        gpusim.H100x8("probe-h100"),
		"a100-mig":    gpusim.A100x2("probe-a100"),
		"rtx4090":     gpusim.RTX4090x4("probe-4090"),
		"t4":          gpusim.T4x1("probe-t4"),
		"workstation": gpusim.WorkstationWithDisplay("probe-ws"),
	}
	presets["a100-mig"][0].MIG = true
	for name, gpus := range presets {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			n := newNode(t, gpus)
			// Our own pid stands in for a foreign job: it lives as long as
			// the test. On the display GPU it is an Xorg that does use CUDA.
			procName := "/usr/bin/python3"
			last := gpus[len(gpus)-1]
			if name == "workstation" {
				procName, last = "/usr/lib/xorg/Xorg", gpus[0]
			}
			if err := gpusim.AddProcess(gpusim.SimDir(n.dir), last.UUID, os.Getpid(), 2048, procName); err != nil {
				t.Fatal(err)
			}
			ns := n.node()
			r, h := ns.Driver, ns.Host
			if r.State != gpu.StateOK || r.Message != "" || len(r.Warnings) > 0 || len(ns.Errors) > 0 {
				t.Fatalf("state %s, %q, warnings %q, errors %q", r.State, r.Message, r.Warnings, ns.Errors)
			}
			if len(r.GPUs) != len(gpus) || len(ns.GPUs) != len(gpus) {
				t.Fatalf("%d GPUs from the driver, %d from the queue, want %d", len(r.GPUs), len(ns.GPUs), len(gpus))
			}
			for i, want := range gpus {
				g := r.GPUs[i]
				used := want.MemoryUsedMiB
				if want.UUID == last.UUID {
					used += 2048
				}
				if g.Index != i || g.UUID != want.UUID || g.Name != want.Name || g.PCIBusID != want.PCIBusID ||
					g.MemoryTotalMiB != want.MemoryTotalMiB || g.MemoryUsedMiB != used || g.MIG != want.MIG ||
					(g.UtilizationPct == nil) != want.MIG {
					t.Errorf("GPU %d = %+v, want %+v with %d MiB used", i, g, want, used)
				}
				wantState := GPUFree
				if want.UUID == last.UUID {
					wantState = GPUForeign
				}
				if ns.GPUs[i].UUID != want.UUID || ns.GPUs[i].State != wantState {
					t.Errorf("queue's GPU %d = %+v, want %s", i, ns.GPUs[i], wantState)
				}
			}
			if len(r.Processes) != 1 {
				t.Fatalf("processes %+v, want the one registered", r.Processes)
			}
			p := r.Processes[0]
			if p.GPUUUID != last.UUID || p.PID != os.Getpid() || p.UsedMemoryMiB != 2048 || p.Name != procName || p.User != me.Username {
				t.Errorf("process %+v, want pid %d of %s on %s", p, os.Getpid(), me.Username, last.UUID)
			}
			if h.CPUs < 1 || h.Load1 < 0 || h.MemTotalMiB < 1 || h.MemAvailableMiB < 0 || h.MemAvailableMiB > h.MemTotalMiB || h.DiskFreeMiB < 0 {
				t.Errorf("host facts %+v", h)
			}
		})
	}
}

func TestStatusOnFailingNodes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		mode    string
		withSim bool
		state   gpu.State
		msg     string
	}{
		{gpusim.ModeDriverFailed, true, gpu.StateDriverFailed, "couldn't communicate with the NVIDIA driver"},
		{gpusim.ModeNoDevices, true, gpu.StateNoDevices, "No devices were found"},
		{"", false, gpu.StateMissing, "not on the PATH"},
	} {
		t.Run(string(c.state), func(t *testing.T) {
			t.Parallel()
			n := newNode(t, gpusim.T4x1("fail"))
			if err := gpusim.SetMode(gpusim.SimDir(n.dir), c.mode); err != nil {
				t.Fatal(err)
			}
			if !c.withSim {
				n.setEnv("PATH", "/usr/local/bin:/usr/bin:/bin")
			}
			ns := n.node()
			if r := ns.Driver; r.State != c.state || !strings.Contains(r.Message, c.msg) || len(r.GPUs) != 0 {
				t.Errorf("state %s, %q, %d GPUs; want %s saying %q", r.State, r.Message, len(r.GPUs), c.state, c.msg)
			}
			if h := ns.Host; h.CPUs < 1 || h.MemTotalMiB < 1 {
				t.Errorf("host facts lost with the GPUs: %+v", h)
			}
		})
	}
}

// `sshq status` costs each node one command, in which nvidia-smi runs at
// most twice (GPUs, compute processes), however busy the node: the queue's
// view and the driver's report share the answers.
func TestStatusAsksTheDriverAtMostTwice(t *testing.T) {
	t.Parallel()
	g := gpusim.A100x2("twice")
	n := newNode(t, g)
	wrapSmi(t, n)
	foreign := startSleeper(t)
	if err := gpusim.AddProcess(gpusim.SimDir(n.dir), g[1].UUID, foreign.Process.Pid, 1000, "python"); err != nil {
		t.Fatal(err)
	}
	n.submit(spec("tw-a", 1, blockUntil("a")))
	n.waitState("tw-a", job.Running)
	n.submit(spec("tw-b", 1, "true"))
	n.waitState("tw-b", job.Pending)
	// The waiter polls meanwhile; its calls carry its job's mark.
	before := n.smiCalls(true)
	ns := n.node()
	if d := n.smiCalls(true) - before; d > 2 {
		b, _ := os.ReadFile(filepath.Join(n.dir, "smi-calls"))
		t.Errorf("status ran nvidia-smi %d times, want at most 2:\n%s", d, b)
	}
	if ns.Driver.State != gpu.StateOK || len(ns.Driver.Processes) != 1 || len(ns.Leases) != 1 || len(ns.Queue) != 1 ||
		ns.GPUs[1].State != GPUForeign {
		t.Errorf("status from two nvidia-smi calls is incomplete: %+v", ns)
	}
	n.release("a")
}

// A job asking for no GPU runs no nvidia-smi: not to be placed, not to be
// submitted, not in its wrapper.
func TestJobWithoutGPUsAsksTheDriverNothing(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.A100x2("nogpu"))
	wrapSmi(t, n)
	o, err := n.cl().Place(context.Background(), []Request{{NumGPUs: 0}})
	if err != nil || len(o.Fits) != 1 || o.Fits[0].Verdict != FitsNow || o.CPUs < 1 {
		t.Fatalf("place of a CPU job: %+v, %v", o, err)
	}
	n.submit(spec("cpu-1", 0, `echo ran`))
	n.waitState("cpu-1", job.Succeeded)
	if c := n.smiCalls(false); c != 0 {
		b, _ := os.ReadFile(filepath.Join(n.dir, "smi-calls"))
		t.Errorf("placing and running a job without GPUs ran nvidia-smi %d times:\n%s", c, b)
	}
	if log := n.log("cpu-1"); log != "ran\n" {
		t.Errorf("log %q", log)
	}
}

// Status shows every sshq job running on the node, of any user, those
// without GPUs too: they hold no lease, so nothing else would show them.
// Whose job it is comes from the record file's owner, not from its text.
func TestStatusCountsJobsThatHoldNoGPU(t *testing.T) {
	t.Parallel()
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	n := newNode(t, gpusim.T4x1("cpujobs"))
	cpu := spec("cj-cpu", 0, blockUntil("cpu"))
	cpu.Name = "pre process\tdata"
	n.submit(cpu)
	n.submit(spec("cj-gpu", 1, blockUntil("gpu")))
	n.waitState("cj-cpu", job.Running)
	n.waitState("cj-gpu", job.Running)

	// A record that claims another owner and carries an escape, held
	// live, and one whose lock nobody holds.
	lk := filepath.Join(n.dir, "forged.lock")
	os.WriteFile(lk, nil, 0o600)
	holdLock(t, lk, 60e9)
	forged := "r\tcj-forged\t9\tmallory\tevil\x1b[2J\t0\t1700000000.000\t*\t-\t1\t1\t" + lockID(t, lk) + "\troot\n"
	if err := os.WriteFile(filepath.Join(n.recordDir(), "r.cj-forged"), []byte(forged), 0o644); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(n.dir, "stale.lock")
	os.WriteFile(stale, nil, 0o600)
	rec := "r\tcj-stale\t8\tu\tn\t0\t1700000000.000\t*\t-\t1\t1\t" + lockID(t, stale) + "\n"
	if err := os.WriteFile(filepath.Join(n.recordDir(), "r.cj-stale"), []byte(rec), 0o644); err != nil {
		t.Fatal(err)
	}

	ns := n.node()
	got := map[string]RunningJob{}
	for _, j := range ns.Running {
		got[j.JobUID] = j
	}
	if len(got) != 3 {
		t.Fatalf("running jobs %+v, want cj-cpu, cj-gpu and the forged live record", ns.Running)
	}
	if j := got["cj-cpu"]; j.NumGPUs != 0 || j.Name != cpu.Name || j.User != "tester" || j.NodeUser != me.Username || j.Since.IsZero() {
		t.Errorf("the CPU job: %+v", j)
	}
	if j := got["cj-gpu"]; j.NumGPUs != 1 || j.NodeUser != me.Username {
		t.Errorf("the GPU job: %+v", j)
	}
	if j := got["cj-forged"]; j.NodeUser != me.Username || strings.ContainsRune(j.Name, 0x1b) {
		t.Errorf("a forged record: %+v, want its real owner %s and no escape sequence", j, me.Username)
	}
	n.release("cpu")
	n.waitState("cj-cpu", job.Succeeded)
	for _, j := range n.node().Running {
		if j.JobUID == "cj-cpu" {
			t.Errorf("an ended job is still reported running: %+v", j)
		}
	}
	n.release("gpu")
	n.waitState("cj-gpu", job.Succeeded)
}
