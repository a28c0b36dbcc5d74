package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/sshpool"
)

// LogsRequest asks for one job's output.
type LogsRequest struct {
	Ref    string
	Tail   int  // only the last Tail lines; all when negative
	Follow bool // until the job ends
	// Rank, when set, shows one rank of a multi-node job; else all of its
	// ranks' lines interleave, each after its rank and node.
	Rank        *int
	Out, ErrOut io.Writer
	// Notef receives notes for people (a job still waiting for GPUs);
	// nil asks for none, and saves asking the node about the job first.
	Notef func(format string, a ...any)
}

// LogsView is how a job's output ended.
type LogsView struct {
	Job JobView
	// ExitCode is the job's exit code when followed to its end; else the
	// status of the read (0). 125: the node does not know the job.
	ExitCode int
}

// Logs streams a job's output. When interrupted it returns an error that
// wraps ctx's; a stream that breaks is an UnreachableError.
func (c *Controller) Logs(ctx context.Context, r LogsRequest) (*LogsView, error) {
	st, jobs, err := c.find([]string{r.Ref})
	if err != nil {
		return nil, err
	}
	j := jobs[0]
	ids := map[int]bool{j.ID: true}
	if r.Notef == nil {
		// Nothing to say before the output: spare the node a question.
	} else if v, _, _ := c.reconcileIDs(ctx, st, ids); v[j.ID].Job != nil {
		if now := v[j.ID]; now.State == job.Pending {
			pos := ""
			if now.QueuePosition != nil {
				pos = fmt.Sprintf(", #%d in %s's queue", *now.QueuePosition, now.Node)
			}
			why := "its output starts when it gets its GPUs"
			if now.Backend == store.BackendSlurm {
				pos = fmt.Sprintf(" in %s's Slurm queue", now.Node)
				if now.Reason != "" {
					pos += " (" + now.Reason + ")"
				}
			} else if now.Reason != "" {
				why = "it waits: " + now.Reason
			}
			r.Notef("job #%d is PENDING%s: %s", now.ID, pos, why)
		}
	}
	var code int
	if r.Rank != nil {
		code, err = c.cluster(nil).RankLogs(ctx, j, *r.Rank, r.Tail, r.Follow, r.Out, r.ErrOut)
		var ue *UsageError
		if errors.As(err, &ue) {
			return nil, err
		}
	} else {
		code, err = c.cluster(nil).Logs(ctx, j, r.Tail, r.Follow, r.Out, r.ErrOut)
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("stopped reading job #%d's output (%w); the job keeps running", j.ID, ctx.Err())
	}
	if err != nil {
		return nil, &UnreachableError{err}
	}
	view := &LogsView{Job: JobView{Job: j, NodeReachable: true}, ExitCode: code}
	if r.Follow {
		if v, _, _ := c.reconcileIDs(ctx, st, ids); v[j.ID].Job != nil {
			view.Job = v[j.ID]
		}
		// Every rank's stream ended: the job's code is the sum of theirs.
		if view.Job.Gang != nil && r.Rank == nil && view.Job.State.Terminal() {
			view.ExitCode = 0
			if wv, _ := waitOutcome([]JobView{view.Job}); wv != nil {
				view.ExitCode = wv.ExitCode
			}
		}
	}
	return view, nil
}

// CancelRequest names the jobs to cancel: Refs, or All unfinished ones.
type CancelRequest struct {
	Refs  []string
	All   bool
	Grace time.Duration // between SIGTERM and SIGKILL
}

// Cancel outcomes.
const (
	CancelCancelled = "cancelled" // sshq ended it
	CancelDone      = "done"      // it had already ended; State says how
	CancelMissing   = "missing"   // its node does not know it
	CancelError     = "error"     // its node could not be asked; Error says why
)

// CancelResult is one job's outcome, with its state as its node reports it
// after the cancel.
type CancelResult struct {
	ID       int       `json:"id"`
	Name     string    `json:"name"`
	Node     string    `json:"node"`
	Outcome  string    `json:"outcome"`
	State    job.State `json:"state"`
	ExitCode *int      `json:"exit_code"`
	Error    string    `json:"error,omitempty"`
}

// CancelView is what Cancel did, in the order the jobs were asked for.
type CancelView struct {
	Jobs []CancelResult
	// Err is set when some nodes could not be asked (an
	// UnreachableError).
	Err error
}

// Cancel asks the jobs' nodes about them first, then cancels those that
// have not ended, so each outcome is the truth: a job that had already
// ended (however it ended) is reported as such, never as cancelled.
func (c *Controller) Cancel(ctx context.Context, r CancelRequest) (*CancelView, error) {
	var st *store.Store
	var jobs []*store.Job
	var err error
	if r.All {
		if !c.hasStore() {
			return &CancelView{}, nil
		}
		if st, err = c.store(); err != nil {
			return nil, err
		}
		s, err := st.Load()
		if err != nil {
			return nil, err
		}
		for _, j := range s.Jobs {
			if !j.State.Terminal() && j.Node != "" {
				jobs = append(jobs, j)
			}
		}
	} else {
		if len(r.Refs) == 0 {
			return nil, usageErrorf("cancel needs job ids (`sshq cancel 12`) or --all")
		}
		if st, jobs, err = c.find(r.Refs); err != nil {
			return nil, err
		}
	}
	if len(jobs) == 0 {
		return &CancelView{}, nil
	}
	ids := map[int]bool{}
	for _, j := range jobs {
		ids[j.ID] = true
	}
	before, _, err := c.reconcileIDs(ctx, st, ids)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("nothing was cancelled (%w)", err)
	}
	var open []*store.Job
	for _, j := range jobs {
		if v, ok := before[j.ID]; ok && v.State.Terminal() {
			continue
		}
		open = append(open, j)
	}
	outcomes := map[int]string{}
	var cerr error
	if len(open) > 0 {
		outcomes, cerr = c.cluster(nil).Cancel(ctx, st, open, r.Grace)
	}
	after := map[int]*store.Job{}
	if s, err := st.Load(); err == nil {
		for _, j := range s.Jobs {
			if ids[j.ID] {
				after[j.ID] = j
			}
		}
	}
	view := &CancelView{}
	for _, j := range jobs {
		now := j
		if a := after[j.ID]; a != nil {
			now = a
		}
		res := CancelResult{ID: j.ID, Name: j.Name, Node: j.Node, State: now.State, ExitCode: now.ExitCode}
		o := outcomes[j.ID]
		switch {
		case !slices.Contains(open, j):
			res.Outcome = CancelDone
		case strings.HasPrefix(o, "error"):
			res.Outcome, res.Error = CancelError, strings.TrimPrefix(strings.TrimPrefix(o, "error"), ": ")
		case now.State == job.Cancelled:
			res.Outcome = CancelCancelled
		case o == CancelMissing:
			res.Outcome = CancelMissing
		case now.State.Terminal():
			// It ended by itself before the cancel reached it.
			res.Outcome = CancelDone
		case o == "":
			res.Outcome, res.Error = CancelError, "its node did not answer about it"
		default:
			res.Outcome = o
		}
		view.Jobs = append(view.Jobs, res)
	}
	if cerr != nil {
		view.Err = &UnreachableError{cerr}
	}
	return view, nil
}

// WaitRequest names the jobs to wait for.
type WaitRequest struct {
	Refs     []string
	Interval time.Duration // between questions to the nodes
}

// WaitView is how the jobs ended.
type WaitView struct {
	Jobs []JobView
	// ExitCode is 0 when every job SUCCEEDED, else the exit code of the
	// last failing job: 124 for TIMEOUT (as timeout(1)), 137 for
	// OUT_OF_MEMORY (128+SIGKILL, as a shell reports a job the kernel's
	// OOM killer ended), or 1 for one that ended without a code (LOST, a
	// job cancelled before it ran).
	ExitCode int
}

// Wait asks the jobs' nodes every Interval until every job has ended. When
// interrupted it returns an error wrapping ctx's; the jobs keep running.
func (c *Controller) Wait(ctx context.Context, r WaitRequest) (*WaitView, error) {
	if len(r.Refs) == 0 {
		return nil, usageErrorf("wait needs job ids: `sshq wait 12 13`")
	}
	st, jobs, err := c.find(r.Refs)
	if err != nil {
		return nil, err
	}
	ids := map[int]bool{}
	for _, j := range jobs {
		ids[j.ID] = true
	}
	interval := r.Interval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	for {
		views, _, err := c.reconcileJobs(ctx, st, ids)
		if err != nil {
			return nil, err
		}
		if v, done := waitOutcome(views); done {
			return v, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("stopped waiting (%w); the jobs keep running", ctx.Err())
		case <-time.After(interval):
		}
	}
}

// waitOutcome is wait's exit-code rule.
func waitOutcome(views []JobView) (*WaitView, bool) {
	v := &WaitView{Jobs: views}
	for _, j := range views {
		if !j.State.Terminal() {
			return nil, false
		}
		switch {
		case j.State == job.Succeeded:
		case j.State == job.Timeout:
			v.ExitCode = 124
		case j.State == job.OutOfMemory:
			v.ExitCode = 137
		case j.ExitCode != nil && *j.ExitCode != 0:
			v.ExitCode = *j.ExitCode
		default:
			v.ExitCode = 1
		}
	}
	return v, true
}

// AttachTarget is how to reach a job's tmux session.
type AttachTarget struct {
	Job *store.Job
	// Argv is the OpenSSH client's command line; Argv[0] is "ssh".
	Argv []string
}

// Attach finds a running job's tmux session. An ended job has none.
func (c *Controller) Attach(ref string) (*AttachTarget, error) {
	_, jobs, err := c.find([]string{ref})
	if err != nil {
		return nil, err
	}
	j := jobs[0]
	if j.State.Terminal() {
		return nil, usageErrorf("job #%d has ended (%s); read its output with `sshq logs %d`", j.ID, j.State, j.ID)
	}
	if j.Backend == store.BackendSlurm {
		return nil, usageErrorf("job #%d runs under Slurm (job %s via %s), which gives it no tmux session: follow its output with `sshq logs -f %d`", j.ID, j.SlurmID, j.Node, j.ID)
	}
	argv := []string{"ssh"}
	if !c.ssh.Default {
		argv = append(argv, "-F", c.ssh.Path)
	}
	argv = append(argv, "-t", j.Node, sshpool.Command("tmux", "-L", "sshq", "attach-session", "-t", j.UID))
	return &AttachTarget{Job: j, Argv: argv}, nil
}
