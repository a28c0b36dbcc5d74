package remote

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

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

// NodeGPU is a GPU as the node's queue sees it.
type NodeGPU struct {
	Index int
	UUID  string
	// State is "free", "leased", "foreign" (no lease holds it and a process
	// computes on it: someone's outside sshq, or an sshq job's straying off
	// its own lease) or "unusable" (its lock file is not a regular file).
	// ForeignPIDs are the processes on it that are not its lease holder's.
	State       string
	ForeignPIDs []int
}

// NodeStatus is the node-wide picture from Node.
type NodeStatus struct {
	GPUs   []NodeGPU
	Leases []Lease
	Queue  []Ticket
	// Errors are problems the node reported (nvidia-smi failing, a lease
	// directory that is a symlink, a bad lock file).
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

// ParseJobs parses the output of Jobs.
func ParseJobs(out []byte) (map[string]JobStatus, error) {
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
		}
		res[uid] = *j
	}
	return res, nil
}

// ParseNode parses the output of Node.
func ParseNode(out []byte) (*NodeStatus, error) {
	recs, err := records(out)
	if err != nil {
		return nil, err
	}
	ns := &NodeStatus{}
	for _, r := range recs {
		bad := func(why string) error {
			return fmt.Errorf("node report: %s in %q", why, strings.Join(r, "\t"))
		}
		switch r[0] {
		case "error":
			ns.Errors = append(ns.Errors, strings.Join(r[1:], " "))
		case "gpu":
			if len(r) < 4 {
				return nil, bad("short gpu record")
			}
			idx, err := strconv.Atoi(r[1])
			if err != nil {
				return nil, bad("bad index")
			}
			ns.GPUs = append(ns.GPUs, NodeGPU{Index: idx, UUID: r[2], State: r[3]})
		case "foreign":
			if len(r) < 3 {
				return nil, bad("short foreign record")
			}
			for i := range ns.GPUs {
				if ns.GPUs[i].UUID != r[1] {
					continue
				}
				for _, p := range strings.Split(r[2], ",") {
					pid, err := strconv.Atoi(p)
					if err != nil {
						return nil, bad("bad pid")
					}
					ns.GPUs[i].ForeignPIDs = append(ns.GPUs[i].ForeignPIDs, pid)
				}
			}
		case "lease":
			if len(r) < 8 {
				return nil, bad("short lease record")
			}
			l := Lease{UUID: r[1], Recorded: r[3] != "~"}
			if l.Index, err = strconv.Atoi(r[2]); err != nil {
				return nil, bad("bad index")
			}
			if l.JobUID, err = DecodeField(r[3]); err != nil {
				return nil, bad(err.Error())
			}
			// Owner records are any user's to write: a uid sshq never
			// makes (escape sequences for the terminal of whoever runs
			// `sshq status`) says only that the GPU is held.
			if l.JobUID != "" && checkUID(l.JobUID) != nil {
				l.JobUID, l.Recorded = "", false
			}
			if r[4] != "~" {
				if l.JobID, err = strconv.Atoi(r[4]); err != nil {
					return nil, bad("bad job id")
				}
			}
			if l.User, err = DecodeField(r[5]); err != nil {
				return nil, bad(err.Error())
			}
			if l.Name, err = DecodeField(r[6]); err != nil {
				return nil, bad(err.Error())
			}
			if l.Since, err = parseTime(r[7]); err != nil {
				return nil, bad(err.Error())
			}
			// Trailing fields are newer than the record: absent means unknown.
			if len(r) > 8 {
				if l.NodeUser, err = DecodeField(r[8]); err != nil {
					return nil, bad(err.Error())
				}
			}
			ns.Leases = append(ns.Leases, l)
		case "ticket":
			if len(r) < 8 {
				return nil, bad("short ticket record")
			}
			var t Ticket
			if t.Position, err = strconv.Atoi(r[1]); err != nil {
				return nil, bad("bad position")
			}
			// Tickets are other users' files too; one sshq did not write
			// is not passed on.
			if checkUID(r[2]) != nil {
				continue
			}
			t.JobUID = r[2]
			if t.User, err = DecodeField(r[3]); err != nil {
				return nil, bad(err.Error())
			}
			if t.Name, err = DecodeField(r[4]); err != nil {
				return nil, bad(err.Error())
			}
			if t.NumGPUs, err = strconv.Atoi(r[5]); err != nil {
				return nil, bad("bad GPU count")
			}
			if t.Since, err = parseTime(r[6]); err != nil {
				return nil, bad(err.Error())
			}
			if r[7] != "*" && r[7] != "" {
				t.AllowedGPUs = strings.Split(r[7], ",")
			}
			if len(r) > 8 {
				if t.NodeUser, err = DecodeField(r[8]); err != nil {
					return nil, bad(err.Error())
				}
			}
			ns.Queue = append(ns.Queue, t)
		}
	}
	return ns, nil
}

// ParseCancel parses the output of Cancel.
func ParseCancel(out []byte) (map[string]CancelOutcome, error) {
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
