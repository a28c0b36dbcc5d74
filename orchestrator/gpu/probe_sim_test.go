package gpu_test

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sshq/sshq/orchestrator/gpu"
	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
)

// probe runs gpu.ProbeScript on a simulated node the way the controller
// does over ssh, `<shell> -c <script>`, with only the node's HOME and PATH.
func probe(t *testing.T, shell, nodeDir string, withSim bool) (gpu.Host, gpu.Report) {
	t.Helper()
	home := filepath.Join(nodeDir, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	path := "/usr/local/bin:/usr/bin:/bin"
	if withSim {
		path = filepath.Join(nodeDir, "bin") + ":" + path
	}
	cmd := exec.Command(shell, "-c", gpu.ProbeScript)
	cmd.Env = []string{"HOME=" + home, "PATH=" + path}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s -c ProbeScript: %v\n%s", shell, err, out)
	}
	return gpu.ParseProbe(out)
}

// shells are the /bin/sh flavours a node may have.
func shells(t *testing.T) []string {
	var ss []string
	for _, s := range []string{"dash", "bash"} {
		if p, err := exec.LookPath(s); err == nil {
			ss = append(ss, p)
		}
	}
	if len(ss) == 0 {
		t.Skip("neither dash nor bash here")
	}
	return ss
}

func TestProbeOnSimulatedNodes(t *testing.T) {
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
		for _, shell := range shells(t) {
			t.Run(name+"/"+filepath.Base(shell), func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				if err := gpusim.Install(dir, gpus); err != nil {
					t.Fatal(err)
				}
				// Our own pid stands in for a foreign job: it lives as long
				// as the test. On the display GPU it is an Xorg that does
				// use CUDA.
				procName := "/usr/bin/python3"
				if name == "workstation" {
					procName = "/usr/lib/xorg/Xorg"
				}
				last := gpus[len(gpus)-1]
				if name == "workstation" {
					last = gpus[0]
				}
				if err := gpusim.AddProcess(gpusim.SimDir(dir), last.UUID, os.Getpid(), 2048, procName); err != nil {
					t.Fatal(err)
				}

				h, r := probe(t, shell, dir, true)
				if r.State != gpu.StateOK || r.Message != "" || len(r.Warnings) > 0 {
					t.Fatalf("state %s, %q, warnings %q", r.State, r.Message, r.Warnings)
				}
				if len(r.GPUs) != len(gpus) {
					t.Fatalf("%d GPUs, want %d", len(r.GPUs), len(gpus))
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
}

func TestProbeOnFailingNodes(t *testing.T) {
	t.Parallel()
	for _, shell := range shells(t) {
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
			t.Run(filepath.Base(shell)+"/"+string(c.state), func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				if err := gpusim.Install(dir, gpusim.T4x1("fail")); err != nil {
					t.Fatal(err)
				}
				if err := gpusim.SetMode(gpusim.SimDir(dir), c.mode); err != nil {
					t.Fatal(err)
				}
				h, r := probe(t, shell, dir, c.withSim)
				if r.State != c.state || !strings.Contains(r.Message, c.msg) || len(r.GPUs) != 0 {
					t.Errorf("state %s, %q, %d GPUs; want %s saying %q", r.State, r.Message, len(r.GPUs), c.state, c.msg)
				}
				if h.CPUs < 1 || h.MemTotalMiB < 1 {
					t.Errorf("host facts lost with the GPUs: %+v", h)
				}
			})
		}
	}
}
