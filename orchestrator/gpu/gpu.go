// Package gpu turns what a node's NVIDIA driver prints into a Report that
// says plainly which GPUs the node has, which processes use them, and, when
// the answer is incomplete or absent, why.
//
// The node's status action (orchestrator/remote) asks the driver once for
// the GPUs (QueryGPUFields) and once for their compute processes
// (ComputeAppsFields), answers shared with the node's queue, and prints them
// with the host facts in the sections ParseProbe reads.
//
// Decisions, where the driver leaves room:
//
//   - A GPU is kept only when its line parses completely with a usable index
//     and UUID: sshq leases GPUs by UUID and names them to CUDA by index. A
//     line that does not parse is reported in Warnings and makes the Report
//     partial, so the GPU count is never silently wrong.
//   - [N/A] and [Not Supported] are ordinary answers (memory becomes -1,
//     utilization nil). Any other bracketed value ([Unknown Error],
//     [GPU requires reset], ...) means the driver could not read the GPU: the
//     GPU is kept, and a warning makes the Report partial.
//   - MIG: a GPU whose mig.mode.current is Enabled has MIG set. Such a GPU
//     reports utilization [N/A] and its processes' memory as [N/A]; the
//     Report keeps it, and whether a whole-GPU job may use it is the
//     placement's call, not this package's.
//   - nvidia-smi does not quote CSV. No NVIDIA product name holds a comma, so
//     a GPU line with more fields than asked for is malformed, not guessed
//     at. A process name is the last field, so commas in it are kept.
//   - A display server (Xorg) is not a compute process: the driver does not
//     list it in --query-compute-apps, and its memory only shows in
//     memory.used. When a process is listed, it is reported whatever its
//     name; judging it is the caller's job.
package gpu

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// The nvidia-smi fields the node asks for (orchestrator/remote's lib.sh
// says the same). It falls back to QueryGPUFieldsNoMIG on drivers that
// reject mig.mode.current.
const (
	QueryGPUFields      = "index,uuid,name,memory.total,memory.used,utilization.gpu,pci.bus_id,mig.mode.current"
	QueryGPUFieldsNoMIG = "index,uuid,name,memory.total,memory.used,utilization.gpu,pci.bus_id"
	ComputeAppsFields   = "gpu_uuid,pid,used_memory,process_name"
)

// State is how far a Report can be trusted.
type State string

const (
	// StateOK: every GPU and process the driver knows is in the Report.
	StateOK State = "ok"
	// StatePartial: the GPUs listed are real, but some GPU or the process
	// list could not be read; Warnings say which.
	StatePartial State = "partial"
	// StateNoDevices: the driver works and sees no GPU (a CPU-only node).
	StateNoDevices State = "no-devices"
	// StateDriverFailed: nvidia-smi exists but cannot talk to the driver.
	StateDriverFailed State = "driver-failed"
	// StateMissing: nvidia-smi is not on the PATH of a non-interactive login.
	StateMissing State = "missing"
	// StateError: anything else; Message has the driver's or probe's words.
	StateError State = "error"
)

// GPU is one device as nvidia-smi reports it.
type GPU struct {
	Index          int    `json:"index"`
	UUID           string `json:"uuid"`
	Name           string `json:"name"`
	MemoryTotalMiB int    `json:"memory_total_mib"` // -1: not reported
	MemoryUsedMiB  int    `json:"memory_used_mib"`  // -1: not reported
	UtilizationPct *int   `json:"utilization_pct"`  // nil: not reported (MIG mode, [N/A])
	PCIBusID       string `json:"pci_bus_id"`       // "": not reported
	MIG            bool   `json:"mig"`
}

// Process is a compute process holding a context on a GPU.
type Process struct {
	GPUUUID       string `json:"gpu_uuid"`
	PID           int    `json:"pid"`
	UsedMemoryMiB int    `json:"used_memory_mib"` // -1: not reported (MIG, containers)
	Name          string `json:"name"`
	User          string `json:"user"` // "": unknown (pid in another namespace, or gone)
}

// Report is what the node's driver said about its GPUs.
type Report struct {
	State     State     `json:"state"`
	Message   string    `json:"message"` // empty only when State is ok
	GPUs      []GPU     `json:"gpus"`
	Processes []Process `json:"processes"`
	Warnings  []string  `json:"warnings"`
}

// ProcessesOn returns the processes on the GPU with the given UUID.
func (r Report) ProcessesOn(uuid string) []Process {
	var ps []Process
	for _, p := range r.Processes {
		if p.GPUUUID == uuid {
			ps = append(ps, p)
		}
	}
	return ps
}

var (
	// "Unable to determine the device handle for GPU0000:3B:00.0: Unknown Error"
	// (drivers differ on the space before the bus id and on the reason).
	handleRE = regexp.MustCompile(`(?i)unable to determine the device handle for (?:gpu)?\s*([0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f])\s*:?\s*(.*)$`)
	// Lines by which nvidia-smi says the driver, not one GPU, is unusable.
	driverRE = regexp.MustCompile(`(?i)NVIDIA-SMI has failed|couldn't communicate with the NVIDIA driver|Failed to initialize NVML|Driver/library version mismatch|NVML library version|couldn't find libnvidia-ml|NVIDIA driver is not loaded`)
)

// ParseQueryGPU reads the output (stdout and stderr together) and exit
// status of `nvidia-smi --query-gpu=<fields> --format=csv,noheader,nounits`.
// fields is the comma-separated list that was asked for (QueryGPUFields if
// empty); it must hold index and uuid.
func ParseQueryGPU(out []byte, exitCode int, fields string) Report {
	if fields == "" {
		fields = QueryGPUFields
	}
	cols := strings.Split(fields, ",")
	r := Report{GPUs: []GPU{}, Processes: []Process{}, Warnings: []string{}}
	var driverMsg, noDevices, other []string
	var lost []string
	seenUUID, seenIndex := map[string]bool{}, map[int]bool{}
	for _, line := range lines(out) {
		if g, bad, ok := parseGPULine(line, cols); ok {
			switch {
			case seenUUID[g.UUID]:
				r.Warnings = append(r.Warnings, fmt.Sprintf("nvidia-smi listed GPU %s twice; the second line is ignored", g.UUID))
			case seenIndex[g.Index]:
				r.Warnings = append(r.Warnings, fmt.Sprintf("nvidia-smi listed GPU index %d twice (%s); the second line is ignored", g.Index, g.UUID))
			default:
				seenUUID[g.UUID], seenIndex[g.Index] = true, true
				r.GPUs = append(r.GPUs, g)
				if len(bad) > 0 {
					r.Warnings = append(r.Warnings, fmt.Sprintf("GPU %d (%s) is not fully readable (%s); check the node's dmesg for Xid errors", g.Index, g.UUID, strings.Join(bad, ", ")))
				}
			}
			continue
		}
		if m := handleRE.FindStringSubmatch(line); m != nil {
			lost = append(lost, strings.ToUpper(m[1]))
			reason := strings.TrimSpace(m[2])
			if reason == "" {
				reason = "no reason given"
			}
			r.Warnings = append(r.Warnings, fmt.Sprintf("GPU %s does not answer the driver (%s); it is left out until it is reset or the node rebooted", lost[len(lost)-1], reason))
			continue
		}
		switch {
		case strings.EqualFold(line, "No devices were found"):
			noDevices = append(noDevices, line)
		case driverRE.MatchString(line):
			driverMsg = append(driverMsg, line)
		default:
			other = append(other, line)
		}
	}

	if len(r.GPUs) > 0 {
		for _, l := range other {
			r.Warnings = append(r.Warnings, fmt.Sprintf("unreadable line from nvidia-smi --query-gpu: %q", clip(l)))
		}
		for _, l := range driverMsg {
			r.Warnings = append(r.Warnings, "nvidia-smi: "+clip(l))
		}
		if exitCode != 0 && len(r.Warnings) == 0 {
			r.Warnings = append(r.Warnings, fmt.Sprintf("nvidia-smi --query-gpu exited with status %d%s", exitCode, exitMeaning(exitCode)))
		}
		r.State = StateOK
		if len(r.Warnings) > 0 {
			r.State, r.Message = StatePartial, summary(r.Warnings)
		}
		return r
	}

	all := append(append(append([]string{}, driverMsg...), noDevices...), other...)
	switch {
	case len(driverMsg) > 0:
		r.State, r.Message = StateDriverFailed, "nvidia-smi cannot use the NVIDIA driver: "+clip(strings.Join(driverMsg, " "))+" (reinstall or reload the driver, or reboot the node)"
	case exitCode == 127 || exitCode == 126:
		r.State, r.Message = StateMissing, fmt.Sprintf("nvidia-smi is on PATH but cannot be run (exit %d) %s; reinstall the NVIDIA driver utilities", exitCode, clip(strings.Join(all, " ")))
	case len(lost) > 0:
		r.State, r.Message = StateError, fmt.Sprintf("no GPU answers the driver (lost: %s); reset the GPUs or reboot the node", strings.Join(lost, ", "))
	case exitCode == 124 || exitCode == 137:
		r.State, r.Message = StateError, "nvidia-smi hung: it did not answer in time (the node gives it SSHQ_REPORT_PROBE_TIMEOUT, 5s by default, for a report): the node is up, but a GPU or the driver is stuck; check dmesg for Xid errors"
	case len(noDevices) > 0:
		r.State, r.Message = StateNoDevices, "No devices were found: the NVIDIA driver sees no GPU on this node"
	case exitCode != 0 || len(other) > 0:
		r.State, r.Message = StateError, fmt.Sprintf("nvidia-smi --query-gpu failed (exit %d%s): %s", exitCode, exitMeaning(exitCode), clip(strings.Join(all, " ")))
	default:
		r.State, r.Message = StateNoDevices, "nvidia-smi listed no GPUs"
	}
	return r
}

// parseGPULine parses one CSV line for cols. bad lists fields the driver
// could not read (a bracketed value other than [N/A]/[Not Supported]).
func parseGPULine(line string, cols []string) (g GPU, bad []string, ok bool) {
	vals := strings.Split(line, ",")
	if len(vals) != len(cols) {
		return g, nil, false
	}
	g = GPU{Index: -1, MemoryTotalMiB: -1, MemoryUsedMiB: -1}
	for i, c := range cols {
		v := strings.TrimSpace(vals[i])
		if isBracketed(v) {
			if !isNA(v) {
				bad = append(bad, c+" "+v)
			}
			if c == "index" || c == "uuid" {
				return g, nil, false
			}
			continue
		}
		switch c {
		case "index":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return g, nil, false
			}
			g.Index = n
		case "uuid":
			if !strings.HasPrefix(v, "GPU-") || strings.ContainsAny(v, " \t") {
				return g, nil, false
			}
			g.UUID = v
		case "name":
			g.Name = v
		case "memory.total", "memory.used":
			n, err := strconv.Atoi(strings.TrimSuffix(v, " MiB"))
			if err != nil || n < 0 {
				return g, nil, false
			}
			if c == "memory.total" {
				g.MemoryTotalMiB = n
			} else {
				g.MemoryUsedMiB = n
			}
		case "utilization.gpu":
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(v, "%")))
			if err != nil || n < 0 || n > 100 {
				return g, nil, false
			}
			g.UtilizationPct = &n
		case "pci.bus_id":
			g.PCIBusID = v
		case "mig.mode.current":
			g.MIG = strings.EqualFold(v, "Enabled")
		}
	}
	if g.Index < 0 || g.UUID == "" {
		return g, nil, false
	}
	return g, bad, true
}

// ParseComputeApps reads the output and exit status of `nvidia-smi
// --query-compute-apps=gpu_uuid,pid,used_memory,process_name
// --format=csv,noheader,nounits`. problems is empty only when the list is
// complete: a caller deciding whether a GPU is free must not trust a list
// that came with problems.
func ParseComputeApps(out []byte, exitCode int) (procs []Process, problems []string) {
	procs = []Process{}
	var other []string
	for _, line := range lines(out) {
		if strings.EqualFold(line, "No running processes found") {
			continue
		}
		if m := handleRE.FindStringSubmatch(line); m != nil {
			problems = append(problems, fmt.Sprintf("processes on GPU %s are unknown: it does not answer the driver", strings.ToUpper(m[1])))
			continue
		}
		p, ok := parseAppLine(line)
		if !ok {
			other = append(other, line)
			continue
		}
		procs = append(procs, p)
	}
	if exitCode != 0 && len(other) > 0 {
		problems = append(problems, fmt.Sprintf("nvidia-smi could not list GPU processes (exit %d%s): %s", exitCode, exitMeaning(exitCode), clip(strings.Join(other, " "))))
	} else {
		for _, l := range other {
			problems = append(problems, fmt.Sprintf("unreadable line from nvidia-smi --query-compute-apps: %q", clip(l)))
		}
		if exitCode != 0 && len(problems) == 0 {
			problems = append(problems, fmt.Sprintf("nvidia-smi --query-compute-apps exited with status %d%s; its process list may be incomplete", exitCode, exitMeaning(exitCode)))
		}
	}
	return procs, problems
}

func parseAppLine(line string) (Process, bool) {
	vals := strings.SplitN(line, ",", 4)
	if len(vals) != 4 {
		return Process{}, false
	}
	p := Process{GPUUUID: strings.TrimSpace(vals[0]), UsedMemoryMiB: -1}
	if !strings.HasPrefix(p.GPUUUID, "GPU-") && !strings.HasPrefix(p.GPUUUID, "MIG-") || strings.ContainsAny(p.GPUUUID, " \t") {
		return Process{}, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(vals[1]))
	if err != nil || pid <= 0 {
		return Process{}, false
	}
	p.PID = pid
	if v := strings.TrimSpace(vals[2]); !isBracketed(v) {
		n, err := strconv.Atoi(strings.TrimSuffix(v, " MiB"))
		if err != nil || n < 0 {
			return Process{}, false
		}
		p.UsedMemoryMiB = n
	}
	if v := strings.TrimSpace(vals[3]); !isBracketed(v) {
		p.Name = v
	}
	return p, true
}

// lines splits output into trimmed, non-blank lines, whatever the line ends.
func lines(out []byte) []string {
	var ls []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			ls = append(ls, l)
		}
	}
	return ls
}

func isBracketed(v string) bool { return len(v) >= 2 && v[0] == '[' && v[len(v)-1] == ']' }

func isNA(v string) bool {
	return strings.EqualFold(v, "[N/A]") || strings.EqualFold(v, "[Not Supported]")
}

// clip keeps a quoted driver message readable in one line of `sshq status`.
func clip(s string) string {
	const max = 300
	if len(s) > max {
		return strings.ToValidUTF8(s[:max], "") + "..."
	}
	return s
}

// summary is the Message of a partial Report: the first problem, and how
// many more there are in Warnings.
func summary(warnings []string) string {
	if len(warnings) == 1 {
		return warnings[0]
	}
	if len(warnings) == 2 {
		return warnings[0] + " (and 1 more problem)"
	}
	return fmt.Sprintf("%s (and %d more problems)", warnings[0], len(warnings)-1)
}

// exitMeaning names nvidia-smi's documented exit statuses.
func exitMeaning(code int) string {
	switch code {
	case -1:
		return " (not recorded)"
	case 2:
		return ": invalid argument"
	case 3:
		return ": operation not available on this GPU"
	case 4:
		return ": permission denied"
	case 6:
		return ": query unsuccessful"
	case 9:
		return ": NVIDIA driver not loaded"
	case 12:
		return ": NVML library not found"
	case 14:
		return ": infoROM corrupted"
	case 15:
		return ": a GPU fell off the bus"
	case 124:
		return ": timed out"
	}
	return ""
}
