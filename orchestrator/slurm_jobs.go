package orchestrator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/remote"
	"github.com/sshq/sshq/orchestrator/slurm"
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/orchestrator/task"
	"github.com/sshq/sshq/sshpool"
)

// slurmCancelWait is how long, beyond the grace, a cancel waits for Slurm
// to end the jobs: Slurm sends SIGTERM, then SIGKILL after the cluster's
// own KillWait, and only then does the job leave squeue.
const slurmCancelWait = 10 * time.Second

// slurmClient is the client of a Slurm login node.
func (c *Cluster) slurmClient(login string) *slurm.Client {
	switch {
	case c.Slurm != nil:
		return c.Slurm(login)
	case c.Runner != nil:
		return slurm.New(login, c.Runner(login))
	}
	return slurm.New(login, c.Pool.Node(login))
}

// jobReport is what one host said about some of this controller's jobs:
// its own queue about the jobs there, and, when it is a Slurm login node,
// Slurm about the jobs submitted through it. Both are by job uid.
type jobReport struct {
	node  map[string]remote.JobStatus
	slurm map[string]slurm.JobStatus
	// launcherGone are the SUBMITTING jobs (by uid) whose launching
	// process is gone and whose node's word is final: see applyStatus.
	launcherGone map[string]bool
	// slurmIDs are the Slurm ids of such jobs that sbatch took before
	// their launcher died, found in their job directories.
	slurmIDs map[string]string
}

// apply records what the report says about j, if anything.
func (r jobReport) apply(j *store.Job, now time.Time) {
	if js, ok := r.slurm[j.UID]; ok {
		if id := r.slurmIDs[j.UID]; id != "" && j.SlurmID == "" {
			j.SlurmID = id
		}
		applySlurmStatus(j, js, now, r.launcherGone[j.UID])
		return
	}
	if js, ok := r.node[j.UID]; ok {
		applyStatus(j, js, now, r.launcherGone[j.UID])
	}
}

// askJobs asks host about jobs (single-node jobs and the ranks of gangs
// there): one command to its own queue for the jobs there, one to Slurm
// for those submitted through it.
//
// gone are the SUBMITTING jobs whose launching process is gone (by uid);
// the report's launcherGone holds those whose fate the answer settles.
func (c *Cluster) askJobs(ctx context.Context, host string, jobs []target, gone map[string]bool) (jobReport, error) {
	var uids []string
	var sl []*store.Job
	for _, t := range jobs {
		if t.job.Backend == store.BackendSlurm {
			sl = append(sl, t.job)
		} else {
			uids = append(uids, t.uid)
		}
	}
	r := jobReport{launcherGone: map[string]bool{}}
	for _, t := range jobs {
		if gone[t.job.UID] && t.job.Backend != store.BackendSlurm {
			r.launcherGone[t.job.UID] = true
		}
	}
	var errs []error
	if len(uids) > 0 {
		m, err := c.Node(host).Jobs(ctx, uids)
		r.node = m
		errs = append(errs, err)
	}
	if len(sl) > 0 {
		m, err := c.slurmJobs(ctx, host, sl, gone, &r)
		r.slurm = m
		errs = append(errs, err)
	}
	return r, errors.Join(errs...)
}

// slurmJobs asks Slurm about jobs, by uid. A job not yet given a Slurm id
// (its launch is still syncing) is reported not found. One whose launcher
// is gone (gone) may have been taken by sbatch just before: its job
// directory on the login node tells, and r records what it told.
func (c *Cluster) slurmJobs(ctx context.Context, login string, jobs []*store.Job, gone map[string]bool, r *jobReport) (map[string]slurm.JobStatus, error) {
	out := map[string]slurm.JobStatus{}
	uidOf := map[string]string{}
	var ids []string
	for _, j := range jobs {
		id := j.SlurmID
		if id == "" && gone[j.UID] {
			found, state, err := c.slurmSubmitted(ctx, login, j.UID)
			switch {
			case err != nil:
				return nil, err
			case state == slurmSubmitNone:
				r.launcherGone[j.UID] = true
			case state == slurmSubmitTaken:
				id = found
				if r.slurmIDs == nil {
					r.slurmIDs = map[string]string{}
				}
				r.slurmIDs[j.UID] = id
			}
		}
		if id == "" {
			out[j.UID] = slurm.JobStatus{}
			continue
		}
		uidOf[id] = j.UID
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return out, nil
	}
	m, err := c.slurmClient(login).Jobs(ctx, ids)
	if err != nil {
		return nil, err
	}
	for id, js := range m {
		if uid, ok := uidOf[id]; ok {
			out[uid] = js
		}
	}
	return out, nil
}

// What a job's directory on a Slurm login node says of its submit.
const (
	slurmSubmitUnknown = iota // being written, or left half-way: sbatch may or may not have run
	slurmSubmitNone           // no directory: sbatch never ran, or refused the job
	slurmSubmitTaken          // slurm_id: sbatch took it
)

// slurmSubmitted reads the job directory of uid on the login node: the
// submit script writes it before sbatch, writes slurm_id once sbatch took
// the job, and removes it when sbatch refused the job.
func (c *Cluster) slurmSubmitted(ctx context.Context, login, uid string) (string, int, error) {
	var out bytes.Buffer
	code, err := c.slurmRunner(login).Run(ctx, sshpool.Command("sh", "-c", `cd && if [ -f "$1/slurm_id" ]; then cat "$1/slurm_id"; elif [ -d "$1" ]; then exit 3; else exit 4; fi`, "sh", slurm.DefaultJobDir(uid)), nil, &out, io.Discard)
	id := strings.TrimSpace(out.String())
	switch {
	case err != nil:
		return "", slurmSubmitUnknown, err
	case code == 0 && id != "" && strings.Trim(id, "0123456789") == "":
		return id, slurmSubmitTaken, nil
	case code == 4:
		return "", slurmSubmitNone, nil
	}
	return "", slurmSubmitUnknown, nil
}

// applySlurmStatus records what Slurm said about j. Slurm gives no start
// time here: a job seen RUNNING starts then; one that ran and ended
// between two looks has no start.
//
// launcherGone: j's launching process is gone and sbatch never took it, so
// a SUBMITTING j will never reach Slurm.
func applySlurmStatus(j *store.Job, js slurm.JobStatus, now time.Time, launcherGone bool) {
	if !js.Found && j.State == job.Submitting && j.SlurmID == "" && launcherGone {
		settleUnsubmitted(j, now)
		return
	}
	if !js.Found {
		// A job still being synced has no Slurm id yet.
		if j.State == job.Submitting && now.Sub(j.Submitted) < submitGrace() {
			return
		}
		j.State = job.Lost
		if j.SlurmID != "" {
			j.Reason = "Slurm no longer knows the job: it ended over MinJobAge ago on a cluster without accounting"
		}
		if j.Ended == nil {
			j.Ended = &now
		}
		j.LastSeen = &now
		return
	}
	j.State, j.Reason, j.LastSeen = js.State, js.Reason, &now
	j.QueuePosition = nil
	if js.State == job.Running && j.Started == nil {
		j.Started = &now
	}
	if js.State.Terminal() && j.Ended == nil {
		j.Ended = &now
	}
	if js.ExitCode != nil {
		code := *js.ExitCode
		j.ExitCode = &code
	}
}

// cancelOn cancels jobs on host: those in its own queue with one command,
// those submitted to its Slurm with scancel, waiting until Slurm has ended
// them. It returns each job's outcome (a Cancel outcome) by uid, and what
// the host said of the jobs afterwards.
func (c *Cluster) cancelOn(ctx context.Context, host string, jobs []target, grace time.Duration) (map[string]string, jobReport, error) {
	out := map[string]string{}
	var r jobReport
	var uids, ids []string
	uidOf := map[string]string{}
	for _, t := range jobs {
		switch j := t.job; {
		case j.Backend != store.BackendSlurm:
			uids = append(uids, t.uid)
		case j.SlurmID == "":
			// Not submitted yet: its launch sees the cancel in the store.
			out[j.UID] = CancelMissing
		default:
			uidOf[j.SlurmID] = j.UID
			ids = append(ids, j.SlurmID)
		}
	}
	var errs []error
	if len(uids) > 0 {
		m, statuses, err := c.Node(host).Cancel(ctx, uids, grace)
		for uid, o := range m {
			out[uid] = string(o)
		}
		r.node = statuses
		errs = append(errs, err)
	}
	if len(ids) > 0 {
		m, err := c.slurmClient(host).Cancel(ctx, ids, grace+slurmCancelWait)
		r.slurm = map[string]slurm.JobStatus{}
		for id, js := range m {
			uid := uidOf[id]
			r.slurm[uid] = js
			switch {
			case !js.Found:
				out[uid] = CancelMissing
			case js.State == job.Cancelled, !js.State.Terminal():
				// Still ending: Slurm has it, and sshq asked.
				out[uid] = CancelCancelled
			default:
				out[uid] = CancelDone
			}
		}
		errs = append(errs, err)
	}
	return out, r, errors.Join(errs...)
}

// slurmLogs writes a Slurm job's output; following, it returns the job's
// exit status once Slurm has ended it.
func (c *Cluster) slurmLogs(ctx context.Context, j *store.Job, tail int, follow bool, w io.Writer) (int, error) {
	if j.SlurmID == "" {
		if !follow {
			return 0, nil
		}
		return 0, fmt.Errorf("job #%d has not reached %s's Slurm yet (it is %s); try again once `sshq queue` shows it PENDING", j.ID, j.Node, j.State)
	}
	return c.slurmClient(j.Node).Logs(ctx, j.SlurmDir, j.SlurmID, tail, follow, w)
}

// slurmSpec is the sbatch request for t: the placement's GPUs, the task's
// resources per node (cpus and memory as Slurm requests), num_nodes, the
// synced workdir (key, "" for none) and the envs.
func slurmSpec(rec store.Job, t *task.Task, p Placement, key string, opts LaunchOptions) slurm.JobSpec {
	spec := slurm.JobSpec{UID: rec.UID, ID: rec.ID, Name: t.Name, Setup: t.Setup, Run: t.Run,
		NumGPUs: p.NumGPUs, GPUType: p.Accelerator, NumNodes: max(t.NumNodes, 1), JobDir: rec.SlurmDir}
	if key != "" {
		spec.Workdir = "~/.sshq/workdirs/" + key
	}
	// SkyPilot's cpus and memory say what a node must have; on Slurm that
	// is what the job asks for, or it gets the partition's default share.
	if v := t.Resources.CPUs.Value; v > 0 {
		spec.CPUs = int(math.Ceil(v))
	}
	if v := t.Resources.Memory.Value; v > 0 {
		spec.MemoryMB = int(math.Ceil(v * 1024))
	}
	slurmLimits(&spec, opts)
	for _, k := range sortedKeys(t.Envs) {
		spec.Env = append(spec.Env, slurm.EnvVar{Name: k, Value: t.Envs[k]})
	}
	for _, k := range sortedKeys(t.Secrets) {
		spec.Secrets = append(spec.Secrets, slurm.EnvVar{Name: k, Value: t.Secrets[k]})
	}
	return spec
}

// slurmLimits puts the launch's --mem, --time and --cpus into the sbatch
// request: sbatch's --mem (per node, winning over resources.memory),
// --time and --cpus-per-task (winning over resources.cpus). Slurm holds
// the job to them itself, and ends it TIMEOUT or OUT_OF_MEMORY.
func slurmLimits(spec *slurm.JobSpec, opts LaunchOptions) {
	lim := opts.Limits.slurm()
	if lim.MemMiB > 0 {
		spec.MemoryMB = int(lim.MemMiB)
	}
	if lim.Time > 0 {
		spec.Time = lim.Time
	}
	if lim.CPUs > 0 {
		spec.CPUs = lim.CPUs
	}
}

// launchSlurm records, syncs and submits t to the Slurm cluster behind the
// login node p.Node, like Launch does for a node's own queue: the job is in
// the store (SUBMITTING) before anything is sent, and gets its Slurm id
// once sbatch took it.
func (c *Cluster) launchSlurm(ctx context.Context, st *store.Store, t *task.Task, p Placement, opts LaunchOptions) (*store.Job, Placement, error) {
	rec, lk, err := st.AddJob(t.Name, func(j *store.Job) error {
		j.User = LocalUser()
		j.Node = p.Node
		j.Backend = store.BackendSlurm
		j.SlurmDir = "~/" + slurm.DefaultJobDir(j.UID)
		j.Accelerator = p.Accelerator
		j.NumGPUs = p.NumGPUs
		j.Workdir = t.Workdir
		j.Command = t.Run
		j.TaskFile = t.File
		j.EnvNames = sortedKeys(t.Envs)
		recordLimits(j, opts.Limits.slurm())
		return nil
	})
	if err != nil {
		return nil, p, fmt.Errorf("nothing was submitted: %w", err)
	}
	// Held until the job has left SUBMITTING: see Launch.
	defer lk.Release()
	fail := func(err error) (*store.Job, Placement, error) {
		_ = st.Update(func(s *store.State) error { s.Delete(rec.ID); return nil })
		return nil, p, err
	}
	key, unlock, err := c.syncTask(ctx, st, t, p.Node, opts)
	if err != nil {
		return fail(err)
	}
	defer unlock()
	if s, err := st.Load(); err != nil {
		return fail(err)
	} else if j := s.Job(rec.ID); j != nil && j.State == job.Cancelled {
		return nil, p, ErrCancelledDuringLaunch
	}
	client := c.slurmClient(p.Node)
	subCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	id, err := client.Submit(subCtx, slurmSpec(rec, t, p, key, opts))
	if err != nil {
		if lostConnection(err) || ctx.Err() != nil {
			return c.settleSlurmSubmit(st, rec, p, ctx.Err() != nil)
		}
		return fail(fmt.Errorf("%s's Slurm did not take job #%d: %w", p.Node, rec.ID, err))
	}
	return c.recordSlurmID(st, rec, p, id, client)
}

// recordSlurmID marks the job submitted with its Slurm id, and honours a
// cancel that came while it was being submitted.
func (c *Cluster) recordSlurmID(st *store.Store, rec store.Job, p Placement, id string, client *slurm.Client) (*store.Job, Placement, error) {
	cancelled := false
	err := st.Update(func(s *store.State) error {
		j := s.Job(rec.ID)
		if j == nil {
			return fmt.Errorf("job #%d vanished from the store (it is Slurm job %s on %s)", rec.ID, id, p.Node)
		}
		j.SlurmID = id
		switch {
		case j.State == job.Submitting:
			j.State = job.Pending
		case j.State == job.Lost && j.ExitCode == nil && j.Started == nil:
			j.State, j.Ended, j.Reason = job.Pending, nil, ""
		case j.State == job.Cancelled:
			cancelled = true
		}
		now := time.Now().UTC()
		j.LastSeen = &now
		rec = *j
		return nil
	})
	if cancelled {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = client.Cancel(ctx, []string{id}, 0)
		return &rec, p, ErrCancelledDuringLaunch
	}
	return &rec, p, err
}

// settleSlurmSubmit finds out, with a fresh deadline, whether a submit
// whose answer was lost reached Slurm: the job directory holds slurm_id
// once sbatch took the job, and is removed when sbatch refused it.
func (c *Cluster) settleSlurmSubmit(st *store.Store, rec store.Job, p Placement, interrupted bool) (*store.Job, Placement, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	dir := slurm.DefaultJobDir(rec.UID)
	id, state, err := c.slurmSubmitted(ctx, p.Node, rec.UID)
	switch {
	case err == nil && state == slurmSubmitTaken:
		j, pl, err := c.recordSlurmID(st, rec, p, id, c.slurmClient(p.Node))
		if err == nil && interrupted {
			err = fmt.Errorf("%w: job #%d is Slurm job %s on %s; follow it with `sshq logs -f %d`, stop it with `sshq cancel %d`",
				ErrSubmittedBeforeInterrupt, rec.ID, id, p.Node, rec.ID, rec.ID)
		}
		return j, pl, err
	case err == nil && state == slurmSubmitNone:
		_ = st.Update(func(s *store.State) error { s.Delete(rec.ID); return nil })
		return nil, p, errors.New("nothing was submitted")
	}
	return nil, p, fmt.Errorf("lost the answer of %s while submitting job #%d to Slurm; it may be queued there: ~/%s/slurm_id on %s names its Slurm job if so (`scancel` it there)", p.Node, rec.ID, dir, p.Node)
}

// slurmRunner runs a command on a login node the way its Slurm client does.
func (c *Cluster) slurmRunner(login string) remote.Runner {
	if c.Runner != nil {
		return c.Runner(login)
	}
	return c.Pool.Node(login)
}

// lostConnection says err is the SSH connection failing, not the login
// node answering: a command sent may or may not have run.
func lostConnection(err error) bool {
	for _, e := range []error{sshpool.ErrUnreachable, sshpool.ErrConnectionLost, sshpool.ErrChannelRefused,
		sshpool.ErrAuth, sshpool.ErrHostKeyUnknown, sshpool.ErrHostKeyChanged, context.DeadlineExceeded, context.Canceled} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
