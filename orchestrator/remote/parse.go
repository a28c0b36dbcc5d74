package remote

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/sshq/sshq/orchestrator/gpu"
	"github.com/sshq/sshq/orchestrator/job"
)

// Transition is one line of a job's state file.
type Transition struct {
	State job.State
	At    time.Time
}

// GPU is one GPU a job holds, by nvidia-smi index and UUID.
type GPU struct {
	Index int
	UUID  string
}

// JobStatus is what a node says about one job.
type JobStatus struct {
	UID string
	// Found is false when the node has no directory for the job (State is
	// then Lost).
	Found bool
	// job.State is the last recorded state, or Lost.
	State   job.State
	History []Transition
	// Exited is true once the exit record exists; ExitCode is then the
	// job's exit status (143/137 for a cancelled job).
	Exited   bool
	ExitCode int
	// GPUs are the GPUs the job leased (kept after it ends, for the record).
	GPUs []GPU
	// QueuePosition is the job's 1-based place among the node's waiting
	// jobs, 0 when it is not waiting.
	QueuePosition int
	// WrapperAlive: the job's wrapper still runs. SessionAlive: its tmux
	// session still exists.
	WrapperAlive, SessionAlive bool
	// Reason is why the job waits (the node's disk is under its floor) or
	// how a limit ended it (its memory peak and limit, its time limit, the
	// node's memory running low); "" for none.
	Reason string
	// Cores are the cores the job is pinned to ("0-3,8"); "" when it is not.
	Cores string
	// Gang is the job's part in its multi-node job; nil for a job on one
	// node.
	Gang *GangStatus
}

// Lease is a GPU lease held on a node by any user's job.
type Lease struct {
	UUID   string
	Index  int
	JobUID string
	JobID  int
	// User is the submitting controller's local user; NodeUser is the
	// node account the job runs as ("" when an older node script wrote the
	// record).
	User     string
	NodeUser string
	Name     string
	Since    time.Time
	Recorded bool // false when the holder left no owner record (fields empty)
}

// Ticket is one waiting job in a node's queue.
type Ticket struct {
	Position int // 1 = the head of the queue
	JobUID   string
	// User and NodeUser as in Lease.
	User        string
	NodeUser    string
	Name        string
	NumGPUs     int
	Since       time.Time
	AllowedGPUs []string // nil: any GPU
}

// GPUState is what the node's queue makes of a GPU.
type GPUState string

const (
	// GPUFree: no lease holds it and no process computes on it.
	GPUFree GPUState = "free"
	// GPULeased: an sshq job holds its lease.
	GPULeased GPUState = "leased"
	// GPUForeign: no lease holds it and a process computes on it:
	// someone's outside sshq, or an sshq job's straying off its own lease.
	GPUForeign GPUState = "foreign"
	// GPUUnusable: its lock file is not a regular file; no job is given it.
	GPUUnusable GPUState = "unusable"
)

// NodeGPU is a GPU as the node's queue sees it. ForeignPIDs are the
// processes on it that are not its lease holder's.
type NodeGPU struct {
	Index       int
	UUID        string
	State       GPUState
	ForeignPIDs []int
}

// RunningJob is an sshq job running on a node, of any user, with or
// without GPUs.
type RunningJob struct {
	JobUID string
	JobID  int
	// User is the submitting controller's local user (what the job's
	// record says); NodeUser is the node account that owns the record (the
	// file's owner, which no record can claim to be).
	User     string
	NodeUser string
	Name     string
	NumGPUs  int
	Since    time.Time
}

// NodeStatus is the node-wide picture from Status.
type NodeStatus struct {
	// Host and Driver are the host facts and what nvidia-smi said, as
	// gpu.ParseProbe reads them.
	Host   gpu.Host
	Driver gpu.Report
	// GPUs, Leases and Queue are the queue's view; GPUs is empty when the
	// queue could not look (Errors say why).
	GPUs   []NodeGPU
	Leases []Lease
	Queue  []Ticket
	// Running are the sshq jobs running on the node.
	Running []RunningJob
	// Gangs are the ranks of multi-node jobs that wait for, or hold GPUs
	// for, their peers on the node.
	Gangs []GangMember
	// Errors are problems the node reported besides the driver's (a lease
	// directory that is a symlink, a bad lock file, a queue lock held too
	// long, a process list nvidia-smi could not give).
	Errors []string
}

// CancelOutcome is what Cancel did to one job: "cancelled", "done" (it had
// already ended), "missing" (unknown on the node) or "invalid" (bad uid).
type CancelOutcome string

// records returns the tab-split lines between "SSHQ-BEGIN 1" and
// "SSHQ-END". Anything before the begin marker (a chatty .bashrc) is
// skipped; a missing end marker means the output was cut short.
func records(out []byte) ([][]string, error) {
	lines := strings.Split(string(out), "\n")
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "SSHQ-BEGIN ") {
			if v := strings.TrimSpace(strings.TrimPrefix(l, "SSHQ-BEGIN ")); v != "1" {
				return nil, fmt.Errorf("node speaks sshq protocol %q, this controller speaks 1; use matching sshq versions", v)
			}
			start = i + 1
			break
		}
	}
	if start < 0 {
		return nil, errors.New("node output has no SSHQ-BEGIN line: the node script did not run (is bash the remote shell's bash?)")
	}
	var recs [][]string
	for _, l := range lines[start:] {
		if l == "SSHQ-END" {
			return recs, nil
		}
		if l == "" {
			continue
		}
		recs = append(recs, strings.Split(l, "\t"))
	}
	return nil, errors.New("node output ends before SSHQ-END: the report was cut short")
}

func parseTime(s string) (time.Time, error) {
	if s == "~" || s == "" {
		return time.Time{}, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 {
		return time.Time{}, fmt.Errorf("bad timestamp %q", s)
	}
	return time.UnixMilli(int64(math.Round(f * 1000))), nil
}

// parseJobs parses the output of the jobs action.
func parseJobs(out []byte) (map[string]JobStatus, error) {
	recs, err := records(out)
	if err != nil {
		return nil, err
	}
	jobs := map[string]*JobStatus{}
	get := func(r []string) (*JobStatus, error) {
		j := jobs[r[1]]
		if j == nil {
			return nil, fmt.Errorf("record %q before the job's own line", strings.Join(r, " "))
		}
		return j, nil
	}
	for _, r := range recs {
		if len(r) < 3 {
			return nil, fmt.Errorf("short record %q", strings.Join(r, "\t"))
		}
		switch r[0] {
		case "job":
			j := &JobStatus{UID: r[1]}
			jobs[r[1]] = j
			switch r[2] {
			case "found":
				if len(r) < 5 {
					return nil, fmt.Errorf("short job record %q", strings.Join(r, "\t"))
				}
				j.Found = true
				j.WrapperAlive = r[3] == "1"
				j.SessionAlive = r[4] == "1"
			case "missing", "invalid":
				j.State = job.Lost
			default:
				return nil, fmt.Errorf("unknown job record %q", strings.Join(r, "\t"))
			}
		case "state":
			j, err := get(r)
			if err != nil {
				return nil, err
			}
			if len(r) < 4 {
				return nil, fmt.Errorf("short state record %q", strings.Join(r, "\t"))
			}
			at, err := parseTime(r[3])
			if err != nil {
				return nil, fmt.Errorf("job %s: %w", r[1], err)
			}
			j.History = append(j.History, Transition{job.State(r[2]), at})
		case "exit":
			j, err := get(r)
			if err != nil {
				return nil, err
			}
			code, err := strconv.Atoi(r[2])
			if err != nil {
				return nil, fmt.Errorf("job %s: bad exit code %q", r[1], r[2])
			}
			j.Exited, j.ExitCode = true, code
		case "gpu":
			j, err := get(r)
			if err != nil {
				return nil, err
			}
			if len(r) < 4 {
				return nil, fmt.Errorf("short gpu record %q", strings.Join(r, "\t"))
			}
			idx, err := strconv.Atoi(r[2])
			if err != nil {
				return nil, fmt.Errorf("job %s: bad GPU index %q", r[1], r[2])
			}
			j.GPUs = append(j.GPUs, GPU{idx, r[3]})
		case "queue":
			j, err := get(r)
			if err != nil {
				return nil, err
			}
			if j.QueuePosition, err = strconv.Atoi(r[2]); err != nil {
				return nil, fmt.Errorf("job %s: bad queue position %q", r[1], r[2])
			}
		case "reason":
			j, err := get(r)
			if err != nil {
				return nil, err
			}
			if j.Reason, err = DecodeField(r[2]); err != nil {
				return nil, fmt.Errorf("job %s: %w", r[1], err)
			}
		case "cores":
			j, err := get(r)
			if err != nil {
				return nil, err
			}
			j.Cores = r[2]
		default:
			// A newer node script may add records; older controllers skip them.
		}
	}
	res := make(map[string]JobStatus, len(jobs))
	for uid, j := range jobs {
		if j.Found {
			if n := len(j.History); n > 0 {
				j.State = j.History[n-1].State
			}
			// The wrapper writes the exit record before it lets go of its
			// lock, so a dead wrapper without one was killed or lost.
			if !j.Exited && !j.WrapperAlive {
				j.State = job.Lost
			}
			// The exit record, written right after the last state, is what
			// makes an end final: until it exists the job has not ended
			// (its exit code would be lost to whoever took it as ended).
			if !j.Exited && j.WrapperAlive && j.State.Terminal() {
				j.History = j.History[:len(j.History)-1]
				j.State = job.Running
				if n := len(j.History); n > 0 {
					j.State = j.History[n-1].State
				}
			}
		}
		res[uid] = *j
	}
	return res, nil
}

// parseStatus parses the output of the status action: the driver's
// sections, then the queue's records. It never fails: what could not be
// read is in the Report's State or in Errors.
func parseStatus(out []byte) *NodeStatus {
	ns := &NodeStatus{}
	ns.Host, ns.Driver = gpu.ParseProbe(out)
	if err := parseQueue(out, ns); err != nil {
		ns.GPUs, ns.Leases, ns.Queue, ns.Running = nil, nil, nil, nil
		ns.Errors = append(ns.Errors, "the node's queue report is unreadable: "+err.Error())
	}
	return ns
}

// parseQueue reads the queue's records of a status report into ns.
func parseQueue(out []byte, ns *NodeStatus) error {
	recs, err := records(out)
	if err != nil {
		return err
	}
	for _, r := range recs {
		bad := func(why string) error {
			return fmt.Errorf("node report: %s in %q", why, strings.Join(r, "\t"))
		}
		switch r[0] {
		case "error":
			ns.Errors = append(ns.Errors, strings.Join(r[1:], " "))
		case "gpu":
			if len(r) < 4 {
				return bad("short gpu record")
			}
			idx, err := strconv.Atoi(r[1])
			if err != nil {
				return bad("bad index")
			}
			ns.GPUs = append(ns.GPUs, NodeGPU{Index: idx, UUID: r[2], State: GPUState(r[3])})
		case "foreign":
			if len(r) < 3 {
				return bad("short foreign record")
			}
			for i := range ns.GPUs {
				if ns.GPUs[i].UUID != r[1] {
					continue
				}
				for _, p := range strings.Split(r[2], ",") {
					pid, err := strconv.Atoi(p)
					if err != nil {
						return bad("bad pid")
					}
					ns.GPUs[i].ForeignPIDs = append(ns.GPUs[i].ForeignPIDs, pid)
				}
			}
		case "lease":
			if len(r) < 8 {
				return bad("short lease record")
			}
			l := Lease{UUID: r[1], Recorded: r[3] != "~"}
			if l.Index, err = strconv.Atoi(r[2]); err != nil {
				return bad("bad index")
			}
			if l.JobUID, err = DecodeField(r[3]); err != nil {
				return bad(err.Error())
			}
			// Owner records are any user's to write: a uid sshq never
			// makes (escape sequences for the terminal of whoever runs
			// `sshq status`) says only that the GPU is held.
			if l.JobUID != "" && checkUID(l.JobUID) != nil {
				l.JobUID, l.Recorded = "", false
			}
			if r[4] != "~" {
				if l.JobID, err = strconv.Atoi(r[4]); err != nil {
					return bad("bad job id")
				}
			}
			if l.User, err = DecodeField(r[5]); err != nil {
				return bad(err.Error())
			}
			if l.Name, err = DecodeField(r[6]); err != nil {
				return bad(err.Error())
			}
			if l.Since, err = parseTime(r[7]); err != nil {
				return bad(err.Error())
			}
			// Trailing fields are newer than the record: absent means unknown.
			if len(r) > 8 {
				if l.NodeUser, err = DecodeField(r[8]); err != nil {
					return bad(err.Error())
				}
			}
			ns.Leases = append(ns.Leases, l)
		case "ticket":
			if len(r) < 8 {
				return bad("short ticket record")
			}
			var t Ticket
			if t.Position, err = strconv.Atoi(r[1]); err != nil {
				return bad("bad position")
			}
			// Tickets are other users' files too; one sshq did not write
			// is not passed on.
			if checkUID(r[2]) != nil {
				continue
			}
			t.JobUID = r[2]
			if t.User, err = DecodeField(r[3]); err != nil {
				return bad(err.Error())
			}
			if t.Name, err = DecodeField(r[4]); err != nil {
				return bad(err.Error())
			}
			if t.NumGPUs, err = strconv.Atoi(r[5]); err != nil {
				return bad("bad GPU count")
			}
			if t.Since, err = parseTime(r[6]); err != nil {
				return bad(err.Error())
			}
			if r[7] != "*" && r[7] != "" {
				t.AllowedGPUs = strings.Split(r[7], ",")
			}
			if len(r) > 8 {
				if t.NodeUser, err = DecodeField(r[8]); err != nil {
					return bad(err.Error())
				}
			}
			ns.Queue = append(ns.Queue, t)
		case "running":
			if len(r) < 8 {
				return bad("short running record")
			}
			// Other users' records, checked on the node; a field that
			// still does not decode is shown as unknown rather than
			// costing the whole report.
			j := RunningJob{JobUID: r[1]}
			if checkUID(j.JobUID) != nil {
				continue
			}
			j.JobID, _ = strconv.Atoi(r[2])
			j.User, _ = DecodeField(r[3])
			j.Name, _ = DecodeField(r[4])
			j.NumGPUs, _ = strconv.Atoi(r[5])
			j.Since, _ = parseTime(r[6])
			j.NodeUser, _ = DecodeField(r[7])
			ns.Running = append(ns.Running, j)
		}
	}
	return nil
}

// parseCancel parses the output of the cancel action.
func parseCancel(out []byte) (map[string]CancelOutcome, error) {
	recs, err := records(out)
	if err != nil {
		return nil, err
	}
	res := map[string]CancelOutcome{}
	for _, r := range recs {
		if r[0] != "cancel" || len(r) < 3 {
			continue
		}
		res[r[1]] = CancelOutcome(r[2])
	}
	return res, nil
}

// parseGPUInfo reads the gpu records of a place answer (so far).
func parseGPUInfo(out []byte) []GPUInfo {
	var gs []GPUInfo
	begun := false
	for _, l := range strings.Split(string(out), "\n") {
		if !begun {
			begun = strings.HasPrefix(l, "SSHQ-BEGIN ")
			continue
		}
		r := strings.Split(l, "\t")
		if r[0] != "gpu" || len(r) < 4 {
			continue
		}
		idx, err := strconv.Atoi(r[1])
		if err != nil || !isToken(r[2]) {
			continue
		}
		gs = append(gs, GPUInfo{Index: idx, UUID: r[2], Name: r[3]})
	}
	return gs
}

// parseOffer parses the output of the place action for n requests.
func parseOffer(out []byte, n int) (*Offer, error) {
	recs, err := records(out)
	if err != nil {
		return nil, err
	}
	o := &Offer{CPUs: -1, MemTotalMiB: -1, Load1: -1, GPUs: parseGPUInfo(out)}
	fits := make([]*Fit, n)
	for _, r := range recs {
		bad := func(why string) error {
			return fmt.Errorf("node answer: %s in %q", why, strings.Join(r, "\t"))
		}
		switch r[0] {
		case "error":
			o.Errors = append(o.Errors, strings.Join(r[1:], " "))
		case "host":
			if len(r) < 4 {
				return nil, bad("short host record")
			}
			if v, err := strconv.Atoi(r[1]); err == nil && v > 0 {
				o.CPUs = v
			}
			if v, err := strconv.ParseInt(r[2], 10, 64); err == nil && v >= 0 {
				o.MemTotalMiB = v / 1024
			}
			if v, err := strconv.ParseFloat(r[3], 64); err == nil && v >= 0 && v < 1e9 {
				o.Load1 = v
			}
		case "fit":
			if len(r) < 7 {
				return nil, bad("short fit record")
			}
			i, err := strconv.Atoi(r[1])
			if err != nil || i < 0 || i >= n {
				return nil, bad("fit for no request")
			}
			f := &Fit{Verdict: Verdict(r[2])}
			switch f.Verdict {
			case FitsNow, Waits, Never:
			default:
				return nil, bad("unknown verdict")
			}
			for k, p := range []*int{&f.Eligible, &f.Free, &f.Ahead, &f.Demand} {
				if *p, err = strconv.Atoi(r[3+k]); err != nil || *p < 0 {
					return nil, bad("bad count")
				}
			}
			fits[i] = f
		}
	}
	for i, f := range fits {
		if f == nil {
			if len(o.Errors) > 0 {
				// The node could not decide, and said why.
				o.Fits = nil
				return o, nil
			}
			return nil, fmt.Errorf("node answer: no verdict for request %d", i)
		}
		o.Fits = append(o.Fits, *f)
	}
	return o, nil
}

// dash is s, or "" for the "-" a node writes for nothing.
func dash(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

// parseCheck parses the output of the check action.
func parseCheck(out []byte) (*NodeCheck, error) {
	recs, err := records(out)
	if err != nil {
		return nil, err
	}
	nc := &NodeCheck{Tools: map[string]string{}, GPUs: -1}
	for _, r := range recs {
		switch {
		case r[0] == "tool" && len(r) >= 3:
			p := r[2]
			if p == "-" {
				p = ""
			}
			nc.Tools[r[1]] = p
		case r[0] == "bash" && len(r) >= 2:
			nc.BashVersion = r[1]
		case r[0] == "kernel" && len(r) >= 2:
			nc.Kernel = r[1]
		case r[0] == "lease_dir" && len(r) >= 3:
			nc.LeaseDir, nc.LeaseDirState = r[1], r[2]
			if len(r) >= 6 {
				nc.LeaseMode, nc.LeaseRecords, nc.LeaseDirError = r[3], dash(r[4]), dash(r[5])
			}
		case r[0] == "gpus" && len(r) >= 2:
			if n, err := strconv.Atoi(r[1]); err == nil {
				nc.GPUs = n
			} else if len(r) >= 3 {
				nc.GPUError = r[2]
			}
		case r[0] == "logind" && len(r) >= 3:
			nc.KillUserProcesses = r[1] == "yes"
			nc.Linger = r[2]
		case r[0] == "limits" && len(r) >= 5:
			nc.MemLimit = r[1]
			for i, p := range []*int64{&nc.ReserveMemMiB, &nc.DiskFloorMiB, &nc.LogCapMiB} {
				if v, err := strconv.ParseInt(r[2+i], 10, 64); err == nil && v >= 0 {
					*p = v / 1024
				}
			}
		case r[0] == "limits_warn" && len(r) >= 2:
			nc.LimitWarnings = append(nc.LimitWarnings, r[1])
		}
	}
	return nc, nil
}
