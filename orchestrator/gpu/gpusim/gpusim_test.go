package gpusim_test

import (
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
)

// node installs gpus into a fresh node directory and returns it.
func node(t *testing.T, gpus []gpusim.GPU) string {
	t.Helper()
	dir := t.TempDir()
	if err := gpusim.Install(dir, gpus); err != nil {
		t.Fatal(err)
	}
	return dir
}

// smi runs the node's nvidia-smi with a node's environment (the path a
// shell finds on PATH, SSHQ_SIM_DIR set) and returns its output and exit
// status.
func smi(t *testing.T, nodeDir string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(nodeDir, "bin", "nvidia-smi"), args...)
	cmd.Env = []string{
		"PATH=" + filepath.Join(nodeDir, "bin") + ":/usr/local/bin:/usr/bin:/bin",
		"SSHQ_SIM_DIR=" + gpusim.SimDir(nodeDir),
	}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("running the simulator: %v", err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

func TestQueryGPUFormats(t *testing.T) {
	t.Parallel()
	gpus := gpusim.H100x8("fmt")
	dir := node(t, gpus)
	q := "--query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu,pci.bus_id"

	out, rc := smi(t, dir, q, "--format=csv")
	if rc != 0 {
		t.Fatalf("exit %d: %s", rc, out)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if want := "index, uuid, name, memory.total [MiB], memory.used [MiB], utilization.gpu [%], pci.bus_id"; lines[0] != want {
		t.Errorf("header = %q, want %q", lines[0], want)
	}
	if len(lines) != 1+len(gpus) {
		t.Fatalf("got %d lines, want header + %d GPUs:\n%s", len(lines), len(gpus), out)
	}
	for i, g := range gpus {
		want := fmt.Sprintf("%d, %s, %s, %d MiB, %d MiB, 0 %%, %s", i, g.UUID, g.Name, g.MemoryTotalMiB, g.MemoryUsedMiB, g.PCIBusID)
		if lines[1+i] != want {
			t.Errorf("line %d = %q, want %q", i, lines[1+i], want)
		}
	}

	out, _ = smi(t, dir, q, "--format=csv,noheader,nounits")
	first := strings.SplitN(out, "\n", 2)[0]
	if want := fmt.Sprintf("0, %s, NVIDIA H100 80GB HBM3, 81559, 1, 0, 00000000:18:00.0", gpus[0].UUID); first != want {
		t.Errorf("noheader,nounits line = %q, want %q", first, want)
	}

	out, _ = smi(t, dir, "--query-gpu=gpu_name,memory.free,power.draw", "--format=csv,nounits", "-i", "1")
	if want := "name, memory.free [MiB], power.draw [W]\nNVIDIA H100 80GB HBM3, 81558, 70.50\n"; out != want {
		t.Errorf("aliases with nounits header:\n%s\nwant:\n%s", out, want)
	}
}

func TestUnknownFieldIsRejectedLikeTheRealTool(t *testing.T) {
	t.Parallel()
	dir := node(t, gpusim.T4x1("bad-field"))
	for _, q := range []string{"--query-gpu=index,memory.bogus", "--query-compute-apps=pid,memory.bogus"} {
		out, rc := smi(t, dir, q, "--format=csv")
		if rc != 2 || !strings.HasPrefix(out, `Field "memory.bogus" is not a valid field to query.`) {
			t.Errorf("%s: exit %d, output %q; want exit 2 and the real error text", q, rc, out)
		}
	}
	if out, rc := smi(t, dir, "--query-gpu=index"); rc != 2 {
		t.Errorf("a query without --format: exit %d (%q), want 2", rc, out)
	}
}

func TestComputeAppsFollowProcessLifetime(t *testing.T) {
	t.Parallel()
	gpus := gpusim.A100x2("apps")
	dir := node(t, gpus)
	sim := gpusim.SimDir(dir)

	live := exec.Command("sleep", "300")
	if err := live.Start(); err != nil {
		t.Fatal(err)
	}
	defer live.Process.Kill()
	zombie := exec.Command("sleep", "300")
	if err := zombie.Start(); err != nil {
		t.Fatal(err)
	}
	defer zombie.Wait()
	if err := gpusim.AddProcess(sim, gpus[1].UUID, live.Process.Pid, 4096, "/usr/bin/python3"); err != nil {
		t.Fatal(err)
	}
	if err := gpusim.AddProcess(sim, gpus[0].UUID, zombie.Process.Pid, 512, "zombie"); err != nil {
		t.Fatal(err)
	}
	// A dead process's pid that no process holds now.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	if err := gpusim.AddProcess(sim, gpus[0].UUID, gone.Process.Pid, 100, "gone"); err != nil {
		t.Fatal(err)
	}

	// Kill without reaping: the zombie keeps its /proc entry but, as with the
	// driver, has released the GPU.
	zombie.Process.Kill()
	waitFor(t, func() bool { return procState(zombie.Process.Pid) == "Z" })

	q := []string{"--query-compute-apps=gpu_uuid,pid,used_memory,name,gpu_bus_id", "--format=csv,noheader"}
	out, rc := smi(t, dir, q...)
	want := fmt.Sprintf("%s, %d, 4096 MiB, /usr/bin/python3, %s\n", gpus[1].UUID, live.Process.Pid, gpus[1].PCIBusID)
	if rc != 0 || out != want {
		t.Errorf("compute apps: exit %d\n%s\nwant only the live process:\n%s", rc, out, want)
	}
	out, _ = smi(t, dir, "--query-gpu=memory.used", "--format=csv,noheader,nounits")
	if want := "0\n4096\n"; out != want {
		t.Errorf("memory.used = %q, want the live process counted on GPU 1 only: %q", out, want)
	}
	out, _ = smi(t, dir, "--query-compute-apps=pid", "--format=csv", "-i", "0")
	if want := "pid\n"; out != want {
		t.Errorf("-i 0 apps = %q, want header only", out)
	}

	live.Process.Kill()
	live.Wait()
	out, _ = smi(t, dir, q...)
	if out != "" {
		t.Errorf("after the process exited, compute apps = %q, want nothing", out)
	}
}

func procState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndex(s, ") ")
	if i < 0 || i+3 > len(s) {
		return ""
	}
	return s[i+2 : i+3]
}

// waitFor polls cond; its minute only catches a hang.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestListAndIDFilter(t *testing.T) {
	t.Parallel()
	gpus := gpusim.RTX4090x4("list")
	dir := node(t, gpus)
	out, rc := smi(t, dir, "-L")
	var want strings.Builder
	for i, g := range gpus {
		fmt.Fprintf(&want, "GPU %d: NVIDIA GeForce RTX 4090 (UUID: %s)\n", i, g.UUID)
	}
	if rc != 0 || out != want.String() {
		t.Errorf("-L:\n%s\nwant:\n%s", out, want.String())
	}
	for _, id := range []string{"2", gpus[2].UUID, "00000000:41:00.0", "0000:41:00.0", "41:00.0"} {
		out, _ := smi(t, dir, "--query-gpu=index", "--format=csv,noheader", "--id="+id)
		if out != "2\n" {
			t.Errorf("--id=%s selected %q, want GPU 2", id, out)
		}
	}
	if out, rc := smi(t, dir, "-L", "-i", "0,3"); rc != 0 || strings.Count(out, "\n") != 2 {
		t.Errorf("-i 0,3: exit %d, %q; want two GPUs", rc, out)
	}
	if out, rc := smi(t, dir, "-L", "-i", "7"); rc != 6 || out != "No devices were found\n" {
		t.Errorf("-i 7 on a 4-GPU node: exit %d, %q; want exit 6, No devices were found", rc, out)
	}
}

func TestModes(t *testing.T) {
	t.Parallel()
	dir := node(t, gpusim.T4x1("modes"))
	sim := gpusim.SimDir(dir)
	q := []string{"--query-gpu=index", "--format=csv,noheader"}

	if err := gpusim.SetMode(sim, gpusim.ModeDriverFailed); err != nil {
		t.Fatal(err)
	}
	out, rc := smi(t, dir, q...)
	if rc != 9 || !strings.HasPrefix(out, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\n") {
		t.Errorf("driver-failed: exit %d, %q", rc, out)
	}
	if err := gpusim.SetMode(sim, gpusim.ModeNoDevices); err != nil {
		t.Fatal(err)
	}
	if out, rc := smi(t, dir, "-L"); rc != 6 || out != "No devices were found\n" {
		t.Errorf("no-devices: exit %d, %q", rc, out)
	}
	if err := gpusim.SetMode(sim, ""); err != nil {
		t.Fatal(err)
	}
	if out, rc := smi(t, dir, q...); rc != 0 || out != "0\n" {
		t.Errorf("after clearing the mode: exit %d, %q", rc, out)
	}
	if err := gpusim.SetMode(sim, "on-fire"); err == nil {
		t.Error("SetMode accepted an unknown mode")
	}
}

func TestMIGAndNotSupportedValues(t *testing.T) {
	t.Parallel()
	gpus := gpusim.A100x2("mig")
	gpus[0].MIG = true
	dir := node(t, gpus)
	out, _ := smi(t, dir, "--query-gpu=utilization.gpu,mig.mode.current,power.draw", "--format=csv")
	want := "utilization.gpu [%], mig.mode.current, power.draw [W]\n[N/A], Enabled, 44.10 W\n0 %, Disabled, 45.10 W\n"
	if out != want {
		t.Errorf("got:\n%s\nwant:\n%s", out, want)
	}

	// A description written by hand, as a node script or test may: values
	// the driver cannot give stay bracketed and never get units.
	sim := gpusim.SimDir(dir)
	csv := "index,uuid,name,memory.total,memory.used,utilization.gpu\n0," + gpus[0].UUID + ",Tesla T4,15360,[Unknown Error],[Not Supported]\n"
	if err := os.WriteFile(filepath.Join(sim, "gpus.csv"), []byte(csv), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ = smi(t, dir, "--query-gpu=memory.used,memory.free,utilization.gpu,serial", "--format=csv,noheader")
	if want := "[Unknown Error], [N/A], [Not Supported], [N/A]\n"; out != want {
		t.Errorf("got %q, want %q", out, want)
	}
}

func TestHumanTable(t *testing.T) {
	t.Parallel()
	gpus := gpusim.WorkstationWithDisplay("table")
	dir := node(t, gpus)
	out, rc := smi(t, dir)
	if rc != 0 {
		t.Fatalf("exit %d: %s", rc, out)
	}
	for _, want := range []string{"NVIDIA RTX A4000", "NVIDIA RTX A6000", "00000000:61:00.0", "412MiB /  16376MiB", "No running processes found", "Driver Version: 550.120"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	width := 0
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, "|") && !strings.HasPrefix(l, "+") {
			continue
		}
		if width == 0 {
			width = len(l)
		}
		if len(l) != width {
			t.Errorf("ragged table line (%d wide, others %d):\n%s", len(l), width, l)
		}
	}
}

func TestDefaultSimDirIsBesideBin(t *testing.T) {
	t.Parallel()
	dir := node(t, gpusim.T4x1("default-dir"))
	// No SSHQ_SIM_DIR: the script finds <node>/gpusim from its own path.
	cmd := exec.Command(filepath.Join(dir, "bin", "nvidia-smi"), "-L")
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "GPU 0: Tesla T4 (UUID: GPU-") {
		t.Errorf("without SSHQ_SIM_DIR: %v, %q", err, out)
	}
	// An SSHQ_SIM_DIR with no description fails loudly, not with zero GPUs.
	cmd = exec.Command(filepath.Join(dir, "bin", "nvidia-smi"), "-L")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "SSHQ_SIM_DIR=" + t.TempDir()}
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "gpus.csv") {
		t.Errorf("with an empty SSHQ_SIM_DIR: %v, %q; want a failure naming gpus.csv", err, out)
	}
}

func TestUUIDs(t *testing.T) {
	t.Parallel()
	seen := map[string]string{}
	for _, seed := range []string{"node-a", "node-b"} {
		for _, preset := range [][]gpusim.GPU{gpusim.H100x8(seed), gpusim.A100x2(seed), gpusim.RTX4090x4(seed), gpusim.T4x1(seed), gpusim.WorkstationWithDisplay(seed)} {
			for i, g := range preset {
				key := fmt.Sprintf("%s/%s/%d", seed, g.Name, i)
				if prev, dup := seen[g.UUID]; dup {
					t.Errorf("UUID %s shared by %s and %s", g.UUID, prev, key)
				}
				seen[g.UUID] = key
			}
			if err := gpusim.Install(t.TempDir(), preset); err != nil {
				t.Errorf("preset %s/%s: %v", seed, preset[0].Name, err)
			}
		}
	}
	if a, b := gpusim.H100x8("same"), gpusim.H100x8("same"); a[3].UUID != b[3].UUID {
		t.Error("the same seed gave different UUIDs")
	}
	dup := append(gpusim.T4x1("x"), gpusim.T4x1("x")...)
	if err := gpusim.Install(t.TempDir(), dup); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("Install of two GPUs with one UUID: %v, want an error", err)
	}
	bad := gpusim.T4x1("y")
	bad[0].Name = "Tesla T4, 16GB"
	if err := gpusim.Install(t.TempDir(), bad); err == nil {
		t.Error("Install accepted a name with a comma")
	}
}

func TestConcurrentAddProcessKeepsLinesWhole(t *testing.T) {
	t.Parallel()
	gpus := gpusim.H100x8("concurrent")
	dir := node(t, gpus)
	sim := gpusim.SimDir(dir)
	pid := os.Getpid() // alive for the whole test
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := gpusim.AddProcess(sim, gpus[i%8].UUID, pid, i+1, fmt.Sprintf("worker-%02d", i)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	out, _ := smi(t, dir, "--query-compute-apps=process_name", "--format=csv,noheader")
	names := strings.Fields(out)
	if len(names) != 64 {
		t.Fatalf("got %d processes, want 64:\n%s", len(names), out)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if !strings.HasPrefix(n, "worker-") || len(n) != len("worker-00") || seen[n] {
			t.Errorf("torn or repeated line: %q", n)
		}
		seen[n] = true
	}
}

// A delayed simulator costs at least its delay a call (a lower bound: a
// sleep never ends early) and answers as before; 0 takes the delay away.
func TestDelayMakesCallsCostWhatARealOneDoes(t *testing.T) {
	t.Parallel()
	dir := node(t, gpusim.T4x1("delay"))
	sim := gpusim.SimDir(dir)
	q := []string{"--query-gpu=index", "--format=csv,noheader"}
	if err := gpusim.SetDelay(sim, 150*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	out, rc := smi(t, dir, q...)
	if d := time.Since(t0); d < 150*time.Millisecond || rc != 0 || out != "0\n" {
		t.Errorf("delayed call: %v, exit %d, %q", d, rc, out)
	}
	if err := gpusim.SetDelay(sim, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(sim, "delay")); !os.IsNotExist(err) {
		t.Errorf("SetDelay(0) left the delay: %v", err)
	}
}
