package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/remote"
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/orchestrator/task"
	"github.com/sshq/sshq/sshpool"
)

// DefaultShellIdle is how long `sshq shell` keeps a shell that no client
// is attached to before it ends it and frees its GPUs.
const DefaultShellIdle = time.Hour

// ShellRun is the run text of a shell job: the node runs the login shell
// instead (shell.sh), so this is only what `sshq queue` and the job's
// run.sh say.
const ShellRun = "# sshq shell: an interactive login shell, not this script"

// ShellRequest is one `sshq shell`.
type ShellRequest struct {
	// Task gives the setup, envs, secrets, workdir, file mounts and
	// resources; its run is replaced by the shell.
	Task *task.Task
	Node string // pin to this node; "" lets placement choose
	// Idle ends a shell no client is attached to after that long; 0
	// never does.
	Idle    time.Duration
	Options LaunchOptions
	// Submitted is told the job once its node has queued it.
	Submitted func(*store.Job, Placement)
	// Waiting is told the job as its node reports it, every Poll while it
	// waits for its GPUs.
	Waiting func(JobView)
	// Attaching is told the job just before the terminal is handed to its
	// shell (or to its setup's output, while setup runs).
	Attaching func(JobView)
	// Terminal is the local terminal; Raw switches it to raw mode for the
	// session and returns how to switch it back. Raw may be nil.
	Terminal sshpool.Terminal
	Raw      func() (restore func(), err error)
	// Poll is how often a waiting job's node is asked; 0 means 1s.
	Poll time.Duration
}

// ShellView is how `sshq shell` ended.
type ShellView struct {
	Job JobView
	// Ended is true when the shell, and so the job, ended: ExitCode is its
	// exit status (1 for an end without one). Otherwise the client
	// detached and the shell goes on.
	Ended    bool
	ExitCode int
}

// ErrShellNotStarted wraps an interrupt (Ctrl-C) while a shell waited for
// its GPUs: its job was cancelled.
var ErrShellNotStarted = errors.New("interrupted before the shell started")

// Shell submits an interactive job, waits for it to start, then attaches
// the terminal to its tmux session over the node's pooled connection until
// the shell exits or the client detaches. An interrupt while the job waits
// cancels it; once attached, a dropped connection only detaches (the error
// is an UnreachableError), and `sshq attach` returns to the shell.
func (c *Controller) Shell(ctx context.Context, r ShellRequest) (*ShellView, error) {
	names, err := c.pinned(r.Node)
	if err != nil {
		return nil, err
	}
	st, err := c.store()
	if err != nil {
		return nil, err
	}
	t := *r.Task
	t.Run = ShellRun
	opts := r.Options
	opts.Node = r.Node
	opts.Defaults = c.settings.Defaults
	opts.Shell = &remote.ShellSpec{Idle: r.Idle}
	j, p, err := c.cluster(names).Launch(ctx, st, &t, opts)
	if err != nil {
		return nil, err
	}
	if r.Submitted != nil {
		r.Submitted(j, p)
	}
	v, err := c.awaitShell(ctx, st, j, r)
	if err != nil {
		return nil, err
	}
	if v.State.Terminal() {
		return shellEnd(v), nil
	}
	return c.attachShell(ctx, st, v, r)
}

// awaitShell polls the job's node until the job has started (setup
// included) or ended. Interrupted, it cancels the job: a shell that starts
// when nobody is there would hold GPUs for no one.
func (c *Controller) awaitShell(ctx context.Context, st *store.Store, j *store.Job, r ShellRequest) (JobView, error) {
	poll := r.Poll
	if poll <= 0 {
		poll = time.Second
	}
	// A shell that fits starts at once: ask again soon, then every poll.
	wait := min(200*time.Millisecond, poll)
	ids := map[int]bool{j.ID: true}
	for {
		views, _, err := c.reconcileIDs(ctx, st, ids)
		if ctx.Err() != nil {
			return JobView{}, c.cancelShell(st, j, ctx.Err())
		}
		if err != nil {
			return JobView{}, err
		}
		v, ok := views[j.ID]
		if !ok || v.Job == nil {
			return JobView{}, fmt.Errorf("job #%d vanished from this controller's records", j.ID)
		}
		switch v.State {
		case job.SettingUp, job.Running:
			return v, nil
		}
		if v.State.Terminal() {
			return v, nil
		}
		if r.Waiting != nil {
			r.Waiting(v)
		}
		select {
		case <-ctx.Done():
			return JobView{}, c.cancelShell(st, j, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, poll)
	}
}

// cancelShell cancels a shell job that has not started, with a context of
// its own: the caller's has ended.
func (c *Controller) cancelShell(st *store.Store, j *store.Job, why error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.cluster(nil).Cancel(ctx, st, []*store.Job{j}, time.Second); err != nil {
		return fmt.Errorf("%w (%w), and job #%d could not be cancelled: %v; it may still start on %s: `sshq cancel %d`",
			ErrShellNotStarted, why, j.ID, err, j.Node, j.ID)
	}
	return fmt.Errorf("%w (%w): job #%d was cancelled, nothing holds GPUs for it", ErrShellNotStarted, why, j.ID)
}

// attachCommand is what attaches a terminal to a job's tmux session on its
// node ("=" matches the session's name exactly).
func attachCommand(uid string) string {
	return sshpool.Command("tmux", "-L", "sshq", "attach-session", "-t", "="+uid)
}

// attachShell hands the terminal to the job's session until its client
// ends, then asks the node how the job is.
func (c *Controller) attachShell(ctx context.Context, st *store.Store, v JobView, r ShellRequest) (*ShellView, error) {
	if r.Attaching != nil {
		r.Attaching(v)
	}
	restore := func() {}
	if r.Raw != nil {
		var err error
		if restore, err = r.Raw(); err != nil {
			return nil, fmt.Errorf("cannot put this terminal in raw mode (%w); job #%d's shell runs on %s: try `sshq attach %d`", err, v.ID, v.Node, v.ID)
		}
	}
	code, aerr := c.pool.Node(v.Node).Interactive(ctx, attachCommand(v.UID), r.Terminal)
	restore()
	// The session ends after the job wrote its exit record, so what the
	// node says now is how the shell ended. ctx may have ended: ask with a
	// context of its own.
	qctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	views, _, qerr := c.reconcileIDs(qctx, st, map[int]bool{v.ID: true})
	now, ok := views[v.ID]
	if ok && now.Job != nil && now.State.Terminal() {
		return shellEnd(now), nil
	}
	if !ok || now.Job == nil {
		now = v
	}
	back := fmt.Sprintf("the shell keeps running on %s as job #%d: `sshq attach %d` returns to it, `sshq cancel %d` ends it", v.Node, v.ID, v.ID, v.ID)
	switch {
	case aerr != nil && ctx.Err() != nil:
		return &ShellView{Job: now}, nil
	case aerr != nil:
		return nil, &UnreachableError{fmt.Errorf("lost the connection to %s (%v); %s", v.Node, aerr, back)}
	case qerr != nil || !now.NodeReachable:
		return nil, &UnreachableError{fmt.Errorf("the terminal was detached, and %s does not answer about job #%d now; if %s", v.Node, v.ID, back)}
	case code != 0:
		return nil, fmt.Errorf("tmux on %s could not attach to job #%d's session (exit status %d; if it found the terminal type %q unsuitable, set TERM=xterm-256color); %s",
			v.Node, v.ID, code, r.Terminal.Term, back)
	}
	return &ShellView{Job: now}, nil
}

func shellEnd(v JobView) *ShellView {
	code := 1
	if v.ExitCode != nil {
		code = *v.ExitCode
	}
	return &ShellView{Job: v, Ended: true, ExitCode: code}
}
