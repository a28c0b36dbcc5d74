package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/orchestrator/wsync"
	"github.com/sshq/sshq/sshpool"
)

// jobWorkdir is where a job runs on its node: the snapshot of its workdir
// in its job directory (see orchestrator/remote/doc.go), or the node
// account's home for a job without one.
func jobWorkdir(j *store.Job) string {
	if j.Workdir == "" {
		return "~"
	}
	if j.Backend == store.BackendSlurm {
		// The cluster's compute nodes share the login node's home.
		return j.SlurmDir + "/workdir"
	}
	return "~/.sshq/jobs/" + j.UID + "/workdir"
}

// jobPath is a path of the job's as the user gave it: absolute or ~/...
// as it is, else relative to where the job runs.
func jobPath(j *store.Job, p string) (string, error) {
	switch {
	case p == "":
		return "", usageErrorf("give a path to download: relative to job #%d's workdir on its node, or absolute", j.ID)
	case strings.HasPrefix(p, "/"), p == "~", strings.HasPrefix(p, "~/"):
		return p, nil
	}
	out := path.Join(jobWorkdir(j), p)
	if out != "~" && !strings.HasPrefix(out, "~/") {
		return "", usageErrorf("%s climbs above the node account's home: give an absolute path instead", p)
	}
	return out, nil
}

// placedJob finds a job that has a node.
func (c *Controller) placedJob(ref string) (*store.Store, *store.Job, error) {
	st, jobs, err := c.find([]string{ref})
	if err != nil {
		return nil, nil, err
	}
	j := jobs[0]
	if j.Node == "" {
		return nil, nil, usageErrorf("job #%d has no node (it is %s): it never reached one; see `sshq queue -a`", j.ID, j.State)
	}
	return st, j, nil
}

// DownloadRequest asks for a file or directory of a job's.
type DownloadRequest struct {
	Ref string
	// Remote is relative to the job's workdir snapshot on its node (its
	// home for a job without a workdir), or absolute, or ~/...
	Remote string
	// Local is where to put it, as `cp -r` reads its destination; "" is
	// the current directory.
	Local    string
	Progress func(wsync.Progress)
}

// DownloadView is what a download did.
type DownloadView struct {
	Job   *store.Job
	Stats wsync.PullStats
}

// Download copies a file or directory from a job's node (wsync.Pull):
// only what differs from the local copy travels. The job may have ended:
// its directory stays on the node.
func (c *Controller) Download(ctx context.Context, r DownloadRequest) (*DownloadView, error) {
	_, j, err := c.placedJob(r.Ref)
	if err != nil {
		return nil, err
	}
	remote, err := jobPath(j, r.Remote)
	if err != nil {
		return nil, err
	}
	client, err := c.pool.Get(ctx, j.Node)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("nothing was downloaded (%w)", ctx.Err())
		}
		return nil, &UnreachableError{fmt.Errorf("job #%d's node %s: %w", j.ID, j.Node, err)}
	}
	st, err := wsync.Pull(ctx, wsync.SSH(client), remote, r.Local, wsync.Options{Progress: r.Progress})
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("download from job #%d stopped (%w): what arrived is complete file by file; run it again to finish", j.ID, ctx.Err())
		}
		if errors.Is(err, sshpool.ErrConnectionLost) || errors.Is(err, sshpool.ErrUnreachable) {
			return nil, &UnreachableError{fmt.Errorf("downloading %s from job #%d on %s: %w", r.Remote, j.ID, j.Node, err)}
		}
		return nil, fmt.Errorf("downloading %s from job #%d on %s: %w", r.Remote, j.ID, j.Node, err)
	}
	return &DownloadView{Job: j, Stats: st}, nil
}

// PortForward is one port of a job's node to reach from this machine.
type PortForward struct {
	// Local is the port on this machine's 127.0.0.1; 0 takes a free one.
	Local int
	// Remote is the port on the node's own 127.0.0.1.
	Remote int
	// AnyIfTaken takes a free local port when Local is in use, instead
	// of failing (an attached launch's ports).
	AnyIfTaken bool
}

// ForwardedPort is one open forward.
type ForwardedPort struct {
	Local  string `json:"local"` // host:port on this machine
	Remote int    `json:"remote"`
	URL    string `json:"url"`
	// Moved says the requested local port was taken and another was used.
	Moved bool `json:"moved"`
	// Problem, when Check was asked for, says why the node's port did not
	// accept a connection when the forward opened ("" when it did).
	Problem string `json:"problem,omitempty"`
}

// ForwardView is a job's open forwards.
type ForwardView struct {
	Job   *store.Job
	Ports []ForwardedPort
}

// ForwardRequest asks to reach ports of a job's node.
type ForwardRequest struct {
	Ref   string
	Ports []PortForward
	// Check tries each port once before Ready, to tell whether something
	// listens there now; a node that refuses forwarding fails Forward.
	Check bool
	// Ready is called once every local port listens.
	Ready func(*ForwardView)
	// Notef receives the problems of single connections (nothing listens
	// on the node's port yet); each distinct problem once a while.
	Notef func(format string, a ...any)
}

// noteEvery is how often the same connection problem is repeated.
const noteEvery = 30 * time.Second

// Forward tunnels local ports to the job's node, over its pooled
// connection, until ctx ends (then it returns nil).
func (c *Controller) Forward(ctx context.Context, r ForwardRequest) error {
	if len(r.Ports) == 0 {
		return usageErrorf("forward needs ports: `sshq forward JOB 8888` or LOCAL:REMOTE, as in 18888:8888")
	}
	st, j, err := c.placedJob(r.Ref)
	if err != nil {
		return err
	}
	if v, _, _ := c.reconcileIDs(ctx, st, map[int]bool{j.ID: true}); v[j.ID].Job != nil {
		j = v[j.ID].Job
	}
	if j.State.Terminal() {
		return usageErrorf("job #%d has ended (%s): nothing of it serves on %s any more; see its output with `sshq logs %d`", j.ID, j.State, j.Node, j.ID)
	}
	if j.Backend == store.BackendSlurm {
		return usageErrorf("job #%d runs on a compute node of %s's Slurm, not on %s itself: sshq does not forward its ports yet; find its node with `squeue -j %s` there and use `ssh -L PORT:NODE:PORT %s`", j.ID, j.Node, j.Node, j.SlurmID, j.Node)
	}
	var fwds []*sshpool.Forward
	defer func() {
		for _, f := range fwds {
			f.Close()
		}
	}()
	view := &ForwardView{Job: j}
	for _, p := range r.Ports {
		remote := net.JoinHostPort("127.0.0.1", fmt.Sprint(p.Remote))
		f, err := c.pool.ListenForward(j.Node, net.JoinHostPort("127.0.0.1", fmt.Sprint(p.Local)), remote)
		moved := false
		if errors.Is(err, sshpool.ErrLocalPortInUse) && p.AnyIfTaken {
			f, err = c.pool.ListenForward(j.Node, "127.0.0.1:0", remote)
			moved = true
		}
		if errors.Is(err, sshpool.ErrLocalPortInUse) {
			return &UsageError{err}
		}
		if err != nil {
			return err
		}
		fwds = append(fwds, f)
		fp := ForwardedPort{Local: f.Addr().String(), Remote: p.Remote, URL: "http://" + f.Addr().String(), Moved: moved}
		view.Ports = append(view.Ports, fp)
	}
	if r.Check {
		for i, f := range fwds {
			err := f.Check(ctx)
			switch {
			case err == nil:
			case ctx.Err() != nil:
				return fmt.Errorf("stopped before forwarding (%w)", ctx.Err())
			case errors.Is(err, sshpool.ErrNothingListening):
				view.Ports[i].Problem = fmt.Sprintf("nothing listens on %s's 127.0.0.1:%d yet", j.Node, view.Ports[i].Remote)
			case errors.Is(err, sshpool.ErrForwardProhibited):
				return err
			default:
				return &UnreachableError{fmt.Errorf("job #%d's node %s: %w", j.ID, j.Node, err)}
			}
		}
	}
	if r.Ready != nil {
		r.Ready(view)
	}
	var mu sync.Mutex
	last := map[string]time.Time{}
	note := func(err error) {
		if r.Notef == nil {
			return
		}
		msg := err.Error()
		mu.Lock()
		again := time.Since(last[msg]) >= noteEvery
		if again {
			last[msg] = time.Now()
		}
		mu.Unlock()
		if again {
			r.Notef("%s", msg)
		}
	}
	// A listener that fails ends them all: a half-working set of
	// forwards would be read as a server that is down.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	errs := make([]error, len(fwds))
	var wg sync.WaitGroup
	for i, f := range fwds {
		wg.Go(func() {
			if errs[i] = f.Serve(ctx, note); errs[i] != nil {
				stop()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
