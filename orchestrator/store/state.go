package store

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sshq/sshq/orchestrator/job"
)

// FormatVersion is the state.json format this package writes. Version 1
// (every job ever run, no history file) is still read; the first Update
// rewrites it as version 2, moving old ended jobs to history.jsonl. An older
// sshq refuses version 2 instead of silently seeing only recent jobs.
const FormatVersion = 2

// Job is one job of this controller. Its JSON field names are a public
// contract: they are also what `sshq queue --json` prints. Every field is
// always present; times, exit_code and queue_position are null when unknown,
// lists are [] when empty. There is deliberately no field for environment
// values: secrets must never reach state.json, only their names do.
type Job struct {
	ID            int        `json:"id"`             // small, unique per controller, never reused
	UID           string     `json:"uid"`            // "<controller id>-<id>", the job's name on its node
	Name          string     `json:"name"`           // the task's name; not unique
	User          string     `json:"user"`           // local user who submitted it
	Node          string     `json:"node"`           // ssh host it was placed on; "" while SUBMITTING
	GPUs          []int      `json:"gpus"`           // nvidia-smi indices it holds, once known
	GPUUUIDs      []string   `json:"gpu_uuids"`      // the same GPUs by UUID
	Accelerator   string     `json:"accelerator"`    // requested GPU type; "" for any
	NumGPUs       int        `json:"num_gpus"`       // requested count
	State         job.State  `json:"state"`          //
	Submitted     time.Time  `json:"submitted"`      //
	Started       *time.Time `json:"started"`        // when it began RUNNING
	Ended         *time.Time `json:"ended"`          // when it reached a terminal state
	ExitCode      *int       `json:"exit_code"`      // of the run command, once it ended
	Workdir       string     `json:"workdir"`        // local workdir that was synced; "" for none
	Command       string     `json:"command"`        // the run text
	TaskFile      string     `json:"task_file"`      // path of the task YAML; "" for an inline command
	QueuePosition *int       `json:"queue_position"` // place in its node's FIFO while PENDING
	EnvNames      []string   `json:"env_names"`      // names of the envs given to it, never values
	LastSeen      *time.Time `json:"last_seen"`      // when its node last confirmed State
	MemLimitMiB   *int64     `json:"mem_limit_mib"`  // memory limit of its whole process tree (--mem or the default); null for none
	TimeLimitS    *int64     `json:"time_limit_s"`   // time limit from the start of setup, in seconds (--time or the default); null for none
	CPUs          int        `json:"cpus"`           // cores it asked for (--cpus); 0 for none
	Cores         string     `json:"cores"`          // the cores its node pinned it to ("0-3,8"); "" for none
	// Why it waits (the node's disk low; Slurm's pending reason) or how it
	// ended at a limit (the peak and the limit; Slurm's words); "" for none.
	Reason string `json:"reason"`
	// A job on a Slurm cluster (Backend "slurm") runs under sbatch through
	// its Node, the cluster's login node, not in that node's own queue.
	Backend  string `json:"backend"`   // "" for a node's own queue, or BackendSlurm
	SlurmID  string `json:"slurm_id"`  // Slurm's job id once sbatch took it; "" otherwise
	SlurmDir string `json:"slurm_dir"` // its job directory on the login node (~/...); "" otherwise
	// Gang is a multi-node job's ranks (Node is rank 0's); absent for a job
	// on one node.
	Gang *Gang `json:"gang,omitempty"`
}

// BackendSlurm is Job.Backend for a job submitted to a Slurm cluster.
const BackendSlurm = "slurm"

// State is the whole of state.json: the unfinished jobs and the recently
// ended ones (see [KeepEnded]). Change it only inside [Store.Update].
type State struct {
	Version      int    `json:"version"`
	ControllerID string `json:"controller_id"`
	// NextID is the id the next job gets. It only grows, so ids are never
	// reused after a delete.
	NextID int `json:"next_id"`
	// Jobs are in ascending id order.
	Jobs []*Job `json:"jobs"`

	// historySize is the length of history.jsonl when this state was
	// written: bytes past it were appended by a writer that died before
	// committing this file, and the next writer removes them.
	historySize int64
}

func newState() (*State, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("creating a controller id: %w", err)
	}
	return &State{Version: FormatVersion, ControllerID: hex.EncodeToString(b[:]), NextID: 1, Jobs: []*Job{}}, nil
}

// NewJob reserves the next id, appends a SUBMITTING job with that id, its uid
// and the submit time, and returns it for the caller to fill in.
func (s *State) NewJob(name string) *Job {
	if s.NextID < 1 {
		s.NextID = 1
	}
	id := s.NextID
	s.NextID++
	j := &Job{
		ID:        id,
		UID:       s.ControllerID + "-" + strconv.Itoa(id),
		Name:      name,
		State:     job.Submitting,
		Submitted: time.Now().UTC(),
		GPUs:      []int{},
		GPUUUIDs:  []string{},
		EnvNames:  []string{},
	}
	s.Jobs = append(s.Jobs, j)
	return j
}

// Job returns the job with this id, or nil.
func (s *State) Job(id int) *Job {
	// Jobs are sorted by id, and NewJob appends, so binary search holds.
	lo, hi := 0, len(s.Jobs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s.Jobs[m].ID < id {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(s.Jobs) && s.Jobs[lo].ID == id {
		return s.Jobs[lo]
	}
	return nil
}

// Delete removes the job with this id and reports whether there was one. Its
// id is not given out again.
func (s *State) Delete(id int) bool {
	for i, j := range s.Jobs {
		if j.ID == id {
			s.Jobs = append(s.Jobs[:i], s.Jobs[i+1:]...)
			return true
		}
	}
	return false
}

// ErrNotFound matches (errors.Is) Find's error when no job matches.
var ErrNotFound = errors.New("no such job")

// ErrAmbiguous matches (errors.Is) Find's error when a name matches several
// jobs.
var ErrAmbiguous = errors.New("ambiguous job name")

// Find resolves what a person typed to name a job: an id ("12" or "#12"), a
// uid ("3f9a0c1e-12"), or a name that exactly one job has. An id wins over a
// job whose name is the same digits.
func (s *State) Find(ref string) (*Job, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return nil, findErr(ErrNotFound, "empty job reference; give an id (12 or #12), a uid or a name")
	}
	if digits, hash := strings.CutPrefix(ref, "#"); hash || isDigits(ref) {
		id, err := strconv.Atoi(digits)
		if err != nil || !isDigits(digits) {
			return nil, findErr(ErrNotFound, "%q is not a job id; ids look like 12 or #12", ref)
		}
		if j := s.Job(id); j != nil {
			return j, nil
		}
		if !hash {
			// Digits might still be a name; fall through to names below.
			if j := s.byName(ref); len(j) > 0 {
				return s.oneByName(ref, j)
			}
		}
		return nil, findErr(ErrNotFound, "no job #%d on this controller (`sshq queue -a` lists them all)", id)
	}
	for _, j := range s.Jobs {
		if j.UID == ref {
			return j, nil
		}
	}
	return s.oneByName(ref, s.byName(ref))
}

func (s *State) byName(name string) []*Job {
	var m []*Job
	for _, j := range s.Jobs {
		if j.Name == name {
			m = append(m, j)
		}
	}
	return m
}

func (s *State) oneByName(ref string, m []*Job) (*Job, error) {
	switch len(m) {
	case 0:
		return nil, findErr(ErrNotFound, "no job has the id, uid or name %q (`sshq queue -a` lists them all)", ref)
	case 1:
		return m[0], nil
	}
	// Show the newest few: with a long history, those are the ones meant.
	const show = 5
	ids := make([]string, 0, show)
	older := max(0, len(m)-show)
	for _, j := range m[older:] {
		ids = append(ids, "#"+strconv.Itoa(j.ID))
	}
	list := strings.Join(ids, ", ")
	if older > 0 {
		list += fmt.Sprintf(" and %d older", older)
	}
	return nil, findErr(ErrAmbiguous, "%d jobs are named %s: %s; use the id", len(m), ref, list)
}

// findError reads as its message alone but still matches its kind with
// errors.Is, so the CLI can choose an exit code without string matching.
type findError struct {
	kind error
	msg  string
}

func (e *findError) Error() string { return e.msg }
func (e *findError) Unwrap() error { return e.kind }

func findErr(kind error, format string, args ...any) error {
	return &findError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
