package slurm

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/sshq/sshq/orchestrator/job"
)

// JobStatus is what Slurm says of one job.
type JobStatus struct {
	ID    string
	Found bool // false: Slurm no longer knows the job (nor sacct, if any)
	State job.State
	// SlurmState is Slurm's own word: "PENDING", "NODE_FAIL"...
	SlurmState string
	// Reason is why the job waits or ended as Slurm puts it ("Resources",
	// "NonZeroExitCode", "TimeLimit"); "" when none.
	Reason string
	// ExitCode is the job's exit status as a shell reports it (128+N for
	// a job killed by signal N); nil while it runs or when unknown.
	ExitCode *int
}

// MapState turns a Slurm job state into sshq's. States Slurm may add later
// read as PENDING: a job must never be taken for ended while it may run.
func MapState(s string) job.State {
	// sacct writes "CANCELLED by 1000".
	s, _, _ = strings.Cut(strings.TrimSpace(s), " ")
	switch strings.TrimSuffix(s, "+") {
	case "PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD":
		return job.Pending
	case "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING":
		return job.Running
	case "COMPLETED":
		return job.Succeeded
	case "FAILED", "SPECIAL_EXIT":
		return job.Failed
	case "CANCELLED", "REVOKED":
		return job.Cancelled
	case "TIMEOUT", "DEADLINE":
		return job.Timeout
	case "OUT_OF_MEMORY":
		return job.OutOfMemory
	case "NODE_FAIL", "BOOT_FAIL", "PREEMPTED":
		return job.Lost
	}
	return job.Pending
}

// checkIDs refuses anything but Slurm job ids: they go on a command line.
func checkIDs(ids []string) error {
	for _, id := range ids {
		if id == "" || strings.Trim(id, "0123456789") != "" || len(id) > 20 {
			return fmt.Errorf("%q is not a Slurm job id (digits only)", id)
		}
	}
	return nil
}

// Jobs reports the given Slurm jobs, in one session: from squeue while
// Slurm holds them, from `scontrol show job` for the exit code of ended
// ones (kept for MinJobAge, accounting or not), then from sacct where the
// cluster keeps accounting. A job none of them knows has Found false.
func (c *Client) Jobs(ctx context.Context, ids []string) (map[string]JobStatus, error) {
	if len(ids) == 0 {
		return map[string]JobStatus{}, nil
	}
	if err := checkIDs(ids); err != nil {
		return nil, err
	}
	recs, err := c.call(ctx, "jobs", nil, ids...)
	if err != nil {
		return nil, err
	}
	return c.parseJobs(ids, recs)
}

// Cancel cancels the given Slurm jobs with scancel and waits, up to wait,
// until Slurm has ended them (they leave squeue), then reports them as
// Jobs does. Jobs that already ended are left as they are.
func (c *Client) Cancel(ctx context.Context, ids []string, wait time.Duration) (map[string]JobStatus, error) {
	if len(ids) == 0 {
		return map[string]JobStatus{}, nil
	}
	if err := checkIDs(ids); err != nil {
		return nil, err
	}
	secs := int((wait + time.Second - 1) / time.Second)
	recs, err := c.call(ctx, "cancel", nil, append([]string{strconv.Itoa(secs)}, ids...)...)
	if err != nil {
		return nil, err
	}
	return c.parseJobs(ids, recs)
}

func (c *Client) parseJobs(ids []string, recs []string) (map[string]JobStatus, error) {
	out := make(map[string]JobStatus, len(ids))
	for _, id := range ids {
		out[id] = JobStatus{ID: id}
	}
	for _, r := range recs {
		kind, body, _ := strings.Cut(r, "|")
		switch kind {
		case "squeue": // JobID|State|Reason|
			f := fields(body, 3)
			if f == nil {
				continue
			}
			if _, asked := out[f[0]]; !asked {
				continue
			}
			out[f[0]] = JobStatus{ID: f[0], Found: true, SlurmState: f[1], State: MapState(f[1]), Reason: reason(f[2])}
		case "scontrol": // ID|JobId=... JobState=... (one line)
			id, line, _ := strings.Cut(body, "|")
			prev, asked := out[id]
			if !asked {
				continue
			}
			js := parseScontrolJob(line)
			if js.SlurmState == "" {
				continue
			}
			js.ID = id
			if js.Reason == "" && prev.Found {
				js.Reason = prev.Reason
			}
			out[id] = js
		case "sacct": // JobIDRaw|State|ExitCode|Reason
			f := strings.SplitN(body, "|", 4)
			if len(f) < 3 {
				continue
			}
			prev, asked := out[f[0]]
			if !asked || prev.Found {
				continue
			}
			js := JobStatus{ID: f[0], Found: true, SlurmState: f[1], State: MapState(f[1]), ExitCode: exitCode(f[2])}
			if len(f) == 4 {
				js.Reason = reason(f[3])
			}
			out[f[0]] = js
		case "error":
			return nil, fmt.Errorf("%s: %s; is slurmctld up? (`scontrol ping` on the login node tells)", c.Name, body)
		}
	}
	return out, nil
}

// parseScontrolJob reads the fields it needs from `scontrol show job -o`:
// "Key=value" words, where only values sshq does not read hold spaces.
func parseScontrolJob(line string) JobStatus {
	kv := map[string]string{}
	for _, w := range strings.Fields(line) {
		k, v, ok := strings.Cut(w, "=")
		if !ok {
			continue
		}
		if _, dup := kv[k]; !dup {
			kv[k] = v
		}
	}
	st := kv["JobState"]
	js := JobStatus{Found: st != "", SlurmState: st, State: MapState(st), Reason: reason(kv["Reason"])}
	if js.State.Terminal() {
		js.ExitCode = exitCode(kv["ExitCode"])
	}
	return js
}

// exitCode turns Slurm's "code:signal" into a shell's exit status.
func exitCode(s string) *int {
	code, sig, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return nil
	}
	c, err1 := strconv.Atoi(code)
	g, err2 := strconv.Atoi(sig)
	if err1 != nil || err2 != nil {
		return nil
	}
	if g != 0 {
		c = 128 + g
	}
	return &c
}

// Logs writes the job's output (its Slurm output file in jobDir): the
// last tail lines, or all of it when tail < 0. With follow it goes on
// writing what the job prints until Slurm has ended the job, then returns
// the job's exit status (128+N for signal N; 125 when Slurm no longer
// knows the job). Without follow the exit is 0.
func (c *Client) Logs(ctx context.Context, jobDir, id string, tail int, follow bool, w io.Writer) (int, error) {
	if err := checkIDs([]string{id}); err != nil {
		return 0, err
	}
	f := "0"
	if follow {
		f = "1"
	}
	var errb strings.Builder
	code, err := c.r.Run(ctx, command("logs", jobDir, id, strconv.Itoa(tail), f), nil, w, &errb)
	if err != nil {
		return code, fmt.Errorf("%s: logs of Slurm job %s: %w", c.Name, id, err)
	}
	if !follow && code != 0 {
		return code, &CommandError{Login: c.Name, Action: "logs", Exit: code, Stderr: strings.TrimSpace(errb.String())}
	}
	return code, nil
}
