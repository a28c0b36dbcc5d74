package gpu

import (
	"strings"
	"testing"
)

func TestParseQueryGPU(t *testing.T) {
	t.Parallel()
	const (
		u0 = "GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77"
		u1 = "GPU-0b2f8c1e-77a4-41f5-9c38-d1e2a3b4c5d6"
	)
	good0 := "0, " + u0 + ", NVIDIA H100 80GB HBM3, 81559, 1, 0, 00000000:18:00.0, Disabled"
	good1 := "1, " + u1 + ", NVIDIA H100 80GB HBM3, 81559, 1, 0, 00000000:2A:00.0, Disabled"
	cases := []struct {
		name     string
		out      string
		rc       int
		fields   string
		state    State
		gpus     int
		msg      string // substring of Message
		warnings []string
	}{
		{name: "two GPUs", out: good0 + "\n" + good1 + "\n", state: StateOK, gpus: 2},
		{name: "CRLF and blank lines", out: "\r\n" + good0 + "\r\n" + good1 + "\r\n\r\n\r\n", state: StateOK, gpus: 2},
		{name: "units left on", out: "0, " + u0 + ", Tesla T4, 15360 MiB, 0 MiB, 0 %, 00000000:00:1E.0, [N/A]", state: StateOK, gpus: 1},
		{name: "N/A and Not Supported are answers", out: "0, " + u0 + ", Tesla K80, [N/A], [Not Supported], [Not Supported], 00000000:04:00.0, [N/A]", state: StateOK, gpus: 1},
		{name: "one GPU fell off the bus, space before the bus id", rc: 15,
			out:   good0 + "\nUnable to determine the device handle for GPU 0000:3b:00.0: Unknown Error\n" + good1,
			state: StatePartial, gpus: 2, warnings: []string{"0000:3B:00.0", "Unknown Error"}},
		{name: "GPU lost, reboot", rc: 15,
			out:   "Unable to determine the device handle for gpu 0000:DB:00.0: GPU is lost.  Reboot the system to recover this GPU\n" + good0,
			state: StatePartial, gpus: 1, warnings: []string{"0000:DB:00.0", "GPU is lost"}},
		{name: "every GPU lost", rc: 15,
			out:   "Unable to determine the device handle for GPU0000:18:00.0: Unknown Error\nUnable to determine the device handle for GPU0000:2A:00.0: Unknown Error",
			state: StateError, msg: "no GPU answers the driver (lost: 0000:18:00.0, 0000:2A:00.0)", warnings: []string{"0000:18:00.0", "0000:2A:00.0"}},
		{name: "Unknown Error value", out: "0, " + u0 + ", Tesla T4, 15360, [Unknown Error], [Unknown Error], 00000000:00:1E.0, [N/A]",
			state: StatePartial, gpus: 1, warnings: []string{"memory.used [Unknown Error]", "utilization.gpu [Unknown Error]"}},
		{name: "a name with a comma is not guessed at", out: good0 + "\n1, " + u1 + ", NVIDIA H100, 80GB, 81559, 1, 0, 00000000:2A:00.0, Disabled",
			state: StatePartial, gpus: 1, warnings: []string{"unreadable line"}},
		{name: "duplicate UUID", out: good0 + "\n" + strings.Replace(good0, "0, ", "1, ", 1), state: StatePartial, gpus: 1, warnings: []string{"twice"}},
		{name: "lines fine but a failing exit status", rc: 255, out: good0, state: StatePartial, gpus: 1, warnings: []string{"status 255"}},
		{name: "old driver's seven fields", fields: QueryGPUFieldsNoMIG, out: "0, " + u0 + ", Tesla V100-SXM2-16GB, 16160, 0, 0, 00000000:1A:00.0", state: StateOK, gpus: 1},
		{name: "seven fields when eight were asked", out: "0, " + u0 + ", Tesla V100-SXM2-16GB, 16160, 0, 0, 00000000:1A:00.0",
			state: StateError, msg: "exit 0"},
		{name: "no devices", rc: 6, out: "No devices were found\n", state: StateNoDevices, msg: "No devices were found"},
		{name: "no output at all", out: "", state: StateNoDevices, msg: "listed no GPUs"},
		{name: "driver failed", rc: 9, out: "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\n\n",
			state: StateDriverFailed, msg: "couldn't communicate with the NVIDIA driver"},
		{name: "library mismatch", rc: 18, out: "Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 535.183",
			state: StateDriverFailed, msg: "version mismatch NVML library version: 535.183"},
		{name: "not found", rc: 127, out: "sh: 1: nvidia-smi: not found", state: StateMissing, msg: "not found"},
		{name: "timed out", rc: 124, state: StateError, msg: "did not answer in time"},
		{name: "field rejected", rc: 2, out: `Field "mig.mode.current" is not a valid field to query.`, state: StateError, msg: `Field "mig.mode.current"`},
		{name: "garbage", out: "Segmentation fault (core dumped)", rc: 139, state: StateError, msg: "exit 139"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := ParseQueryGPU([]byte(c.out), c.rc, c.fields)
			if r.State != c.state || len(r.GPUs) != c.gpus {
				t.Fatalf("state %s with %d GPUs (%q, warnings %q); want %s with %d", r.State, len(r.GPUs), r.Message, r.Warnings, c.state, c.gpus)
			}
			if !strings.Contains(r.Message, c.msg) {
				t.Errorf("message %q lacks %q", r.Message, c.msg)
			}
			all := strings.Join(r.Warnings, "\n")
			for _, w := range c.warnings {
				if !strings.Contains(all, w) {
					t.Errorf("warnings %q lack %q", r.Warnings, w)
				}
			}
			if c.warnings == nil && len(r.Warnings) > 0 {
				t.Errorf("unexpected warnings %q", r.Warnings)
			}
		})
	}
}

func TestParseQueryGPUValues(t *testing.T) {
	t.Parallel()
	r := ParseQueryGPU([]byte("3, GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77, NVIDIA A100-SXM4-40GB, 40960, 13, [N/A], 00000000:07:00.0, Enabled\n"+
		"4, GPU-0b2f8c1e-77a4-41f5-9c38-d1e2a3b4c5d6, NVIDIA A100-SXM4-40GB, [N/A], 120, 87, [N/A], Disabled\n"), 0, "")
	if len(r.GPUs) != 2 {
		t.Fatalf("%+v", r)
	}
	g := r.GPUs[0]
	if g.Index != 3 || g.Name != "NVIDIA A100-SXM4-40GB" || g.MemoryTotalMiB != 40960 || g.MemoryUsedMiB != 13 ||
		g.UtilizationPct != nil || g.PCIBusID != "00000000:07:00.0" || !g.MIG {
		t.Errorf("MIG GPU parsed as %+v", g)
	}
	g = r.GPUs[1]
	if g.MemoryTotalMiB != -1 || g.UtilizationPct == nil || *g.UtilizationPct != 87 || g.PCIBusID != "" || g.MIG {
		t.Errorf("GPU with N/A values parsed as %+v", g)
	}
}

func TestParseComputeApps(t *testing.T) {
	t.Parallel()
	const u = "GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77"
	procs, problems := ParseComputeApps([]byte(u+", 4121, 30312, /usr/bin/python3\r\n"+
		u+", 4388, [N/A], python train.py --tags a,b\n\nNo running processes found\n"), 0)
	if len(problems) > 0 || len(procs) != 2 {
		t.Fatalf("procs %+v, problems %q", procs, problems)
	}
	if p := procs[0]; p.GPUUUID != u || p.PID != 4121 || p.UsedMemoryMiB != 30312 || p.Name != "/usr/bin/python3" {
		t.Errorf("first process %+v", p)
	}
	if p := procs[1]; p.UsedMemoryMiB != -1 || p.Name != "python train.py --tags a,b" {
		t.Errorf("a name with commas and N/A memory gave %+v", p)
	}

	for _, c := range []struct {
		name, out string
		rc        int
		want      string
	}{
		{"failed query", "Failed to initialize NVML: Unknown Error", 255, "could not list GPU processes (exit 255)"},
		{"unreadable line", u + ", notapid, 3, x", 0, "unreadable line"},
		{"silent failure", "", 3, "may be incomplete"},
		{"lost GPU", "Unable to determine the device handle for GPU0000:9A:00.0: Unknown Error", 15, "processes on GPU 0000:9A:00.0 are unknown"},
	} {
		procs, problems := ParseComputeApps([]byte(c.out), c.rc)
		if len(procs) != 0 || !strings.Contains(strings.Join(problems, "\n"), c.want) {
			t.Errorf("%s: procs %+v, problems %q; want a problem saying %q", c.name, procs, problems, c.want)
		}
	}
}

func TestParseProbeHost(t *testing.T) {
	t.Parallel()
	out := "@@sshq probe v1\n@@sshq gpus missing\n@@sshq host\nnproc 96\nloadavg 7.50 6.25 5.00 3/1200 999\n" +
		"MemTotal: 1056323968\nMemAvailable: 901234112\n@@sshq df\n" +
		"Filesystem     1024-blocks      Used Available Capacity Mounted on\n" +
		"My NAS:/export  2097152000 1048576000 1048576000      50% /mnt/team home\n@@sshq end\n"
	h, r := ParseProbe([]byte(out))
	want := Host{CPUs: 96, Load1: 7.5, Load5: 6.25, Load15: 5, MemTotalMiB: 1031566, MemAvailableMiB: 880111, DiskFreeMiB: 1024000}
	if h != want {
		t.Errorf("host %+v, want %+v", h, want)
	}
	if r.State != StateMissing || !strings.Contains(r.Message, "PATH") {
		t.Errorf("report %+v, want missing with advice about PATH", r)
	}

	h, _ = ParseProbe([]byte("@@sshq probe v1\n@@sshq gpus missing\n@@sshq host\nnproc \nloadavg \n@@sshq df\ndf: /home/x: No such file or directory\n"))
	if h != (Host{-1, -1, -1, -1, -1, -1, -1}) {
		t.Errorf("host facts the node did not give: %+v, want all -1", h)
	}
}

func TestParseProbeNeedsTheWholeProcessList(t *testing.T) {
	t.Parallel()
	const u = "GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77"
	head := "@@sshq probe v1\n@@sshq gpus rc=0 fields=" + QueryGPUFields + "\n0, " + u + ", Tesla T4, 15360, 0, 0, 00000000:00:1E.0, [N/A]\n"
	// Cut inside the process list: the users marker never came.
	_, r := ParseProbe([]byte(head + "@@sshq apps rc=0\n" + u + ", 4121, 300, python\n"))
	if r.State != StatePartial || len(r.GPUs) != 1 || !strings.Contains(r.Message, "may be incomplete") {
		t.Errorf("cut process list: %+v", r)
	}
	// Process list failed: GPUs are known, their use is not.
	_, r = ParseProbe([]byte(head + "@@sshq apps rc=255\nFailed to initialize NVML: Unknown Error\n@@sshq users\n@@sshq end\n"))
	if r.State != StatePartial || !strings.Contains(r.Message, "could not list GPU processes") {
		t.Errorf("failed process list: %+v", r)
	}
	// Owners join processes by pid.
	_, r = ParseProbe([]byte(head + "@@sshq apps rc=0\n" + u + ", 4121, 300, python\n" + u + ", 77, 300, python\n@@sshq users\n 4121 alice\n@@sshq end\n"))
	if r.State != StateOK || len(r.Processes) != 2 || r.Processes[0].User != "alice" || r.Processes[1].User != "" {
		t.Errorf("owners: %+v", r)
	}
	if got := len(r.ProcessesOn(u)); got != 2 {
		t.Errorf("ProcessesOn = %d processes, want 2", got)
	}
}
