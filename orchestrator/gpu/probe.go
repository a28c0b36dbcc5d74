package gpu

import (
	"fmt"
	"strconv"
	"strings"
)

// Host is what the probe learned about the node besides its GPUs. A value
// the node did not report is -1.
type Host struct {
	CPUs            int     `json:"cpus"`
	Load1           float64 `json:"load1"`
	Load5           float64 `json:"load5"`
	Load15          float64 `json:"load15"`
	MemTotalMiB     int64   `json:"mem_total_mib"`
	MemAvailableMiB int64   `json:"mem_available_mib"`
	DiskFreeMiB     int64   `json:"disk_free_mib"` // available to the user on $HOME's filesystem
}

type section struct {
	args map[string]string
	body strings.Builder
}

// ParseProbe reads the driver's part of a node's status report: sections
// after "@@sshq NAME [k=v...]" marker lines, each holding a command's own
// output:
//
//	@@sshq probe v1
//	@@sshq gpus rc=N fields=F   the GPU query (F: QueryGPUFields or
//	                            QueryGPUFieldsNoMIG), its stdout and stderr
//	@@sshq gpus missing         instead, when nvidia-smi is not on PATH
//	@@sshq apps rc=N            the compute-process query
//	@@sshq users                "pid user" of those processes
//	@@sshq host                 "nproc N", "loadavg ...", /proc/meminfo's
//	                            MemTotal: and MemAvailable: lines
//	@@sshq df                   df -Pk "$HOME"
//	@@sshq end
//
// Lines before the first marker (a chatty .bashrc) and after the end are
// not its business. It never fails: whatever the node printed, the
// Report's State and Message say what is known.
func ParseProbe(out []byte) (Host, Report) {
	h := Host{CPUs: -1, Load1: -1, Load5: -1, Load15: -1, MemTotalMiB: -1, MemAvailableMiB: -1, DiskFreeMiB: -1}
	secs := map[string]*section{}
	var cur *section
	var preamble []string
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimRight(line, "\r")
		if rest, ok := strings.CutPrefix(line, "@@sshq "); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				continue
			}
			cur = &section{args: map[string]string{}}
			for _, kv := range f[1:] {
				k, v, _ := strings.Cut(kv, "=")
				cur.args[k] = v
			}
			if _, dup := secs[f[0]]; !dup {
				secs[f[0]] = cur
			}
			continue
		}
		if cur == nil {
			if strings.TrimSpace(line) != "" {
				preamble = append(preamble, strings.TrimSpace(line))
			}
			continue
		}
		cur.body.WriteString(line + "\n")
	}

	parseHost(&h, secs)
	empty := Report{GPUs: []GPU{}, Processes: []Process{}, Warnings: []string{}}
	g := secs["gpus"]
	switch {
	case len(secs) == 0 && len(preamble) == 0:
		r := empty
		r.State, r.Message = StateError, "the node printed nothing for the GPU probe; check that `bash` runs there"
		return h, r
	case len(secs) == 0:
		r := empty
		r.State, r.Message = StateError, fmt.Sprintf("the node did not run the GPU probe; it printed: %q", clip(strings.Join(preamble, " ")))
		return h, r
	case g == nil:
		r := empty
		r.State, r.Message = StateError, "the GPU probe's output ended before its GPU list (connection cut?); probe again"
		return h, r
	}
	if _, ok := g.args["missing"]; ok {
		r := empty
		r.State = StateMissing
		r.Message = "nvidia-smi is not on the PATH of a non-interactive ssh login: install the NVIDIA driver, or add its directory to PATH where non-interactive shells read it (e.g. the top of ~/.bashrc)"
		return h, r
	}
	r := ParseQueryGPU([]byte(g.body.String()), atoi(g.args["rc"]), g.args["fields"])
	if r.State != StateOK && r.State != StatePartial {
		return h, r
	}

	a, u := secs["apps"], secs["users"]
	if a == nil {
		r.Warnings = append(r.Warnings, "the GPU probe's output ended before the GPU process list, which may also have cut the GPU list: processes unknown; probe again")
	} else {
		procs, problems := ParseComputeApps([]byte(a.body.String()), atoi(a.args["rc"]))
		r.Processes = procs
		r.Warnings = append(r.Warnings, problems...)
		if u == nil {
			r.Warnings = append(r.Warnings, "the GPU probe's output ended inside the GPU process list: it may be incomplete; probe again")
		} else {
			users := map[int]string{}
			for _, l := range lines([]byte(u.body.String())) {
				if f := strings.Fields(l); len(f) == 2 {
					if pid, err := strconv.Atoi(f[0]); err == nil {
						users[pid] = f[1]
					}
				}
			}
			for i := range r.Processes {
				r.Processes[i].User = users[r.Processes[i].PID]
			}
		}
	}
	if r.State == StateOK && len(r.Warnings) > 0 {
		r.State, r.Message = StatePartial, summary(r.Warnings)
	}
	return h, r
}

func parseHost(h *Host, secs map[string]*section) {
	if s := secs["host"]; s != nil {
		for _, l := range lines([]byte(s.body.String())) {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			switch f[0] {
			case "nproc":
				if n := atoi(f[1]); n > 0 {
					h.CPUs = n
				}
			case "loadavg":
				if len(f) >= 4 {
					h.Load1, h.Load5, h.Load15 = load(f[1]), load(f[2]), load(f[3])
				}
			case "MemTotal:", "MemAvailable:":
				kb, err := strconv.ParseInt(f[1], 10, 64)
				if err != nil || kb < 0 {
					continue
				}
				if f[0] == "MemTotal:" {
					h.MemTotalMiB = kb / 1024
				} else {
					h.MemAvailableMiB = kb / 1024
				}
			}
		}
	}
	// df -P: "Filesystem 1024-blocks Used Available Capacity Mounted on".
	// Either end may hold spaces (a device name, a mount point), so find the
	// "NN%" capacity after three numbers rather than counting columns.
	if s := secs["df"]; s != nil {
		for _, l := range lines([]byte(s.body.String())) {
			f := strings.Fields(l)
			for i := 3; i < len(f); i++ {
				pct, ok := strings.CutSuffix(f[i], "%")
				if !ok || atoi(pct) < 0 || atoi(f[i-3]) < 0 || atoi(f[i-2]) < 0 {
					continue
				}
				if kb, err := strconv.ParseInt(f[i-1], 10, 64); err == nil && kb >= 0 {
					h.DiskFreeMiB = kb / 1024
				}
				break
			}
		}
	}
}

// atoi returns a non-negative integer, or -1 for anything else.
func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

func load(s string) float64 {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || v != v || v > 1e9 {
		return -1
	}
	return v
}
