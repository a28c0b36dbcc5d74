package slurm

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/sshpool"
)

// EnvVar is one environment variable given to a job.
type EnvVar struct {
	Name, Value string
}

// JobSpec is one job for the cluster.
type JobSpec struct {
	// UID names the job: its default job directory and SSHQ_JOB_UID.
	// Letters, digits, '-' and '_'.
	UID string
	// ID is the small number people see (SSHQ_JOB_ID).
	ID int
	// Name is the job's name (--job-name, SSHQ_JOB_NAME).
	Name string
	// Setup and Run are bash scripts run on every node of the job, setup
	// first; Setup may be empty.
	Setup, Run string
	// Env are the task's environment variables, in order.
	Env []EnvVar
	// Secrets reach the job only through a 0600 file in the job directory
	// that the batch script sources and deletes; never a command line.
	Secrets []EnvVar
	// NumGPUs per node, of GPUType ("" for any); GPUType is matched
	// against the cluster's gres types (Info.ResolveGPUType).
	NumGPUs int
	GPUType string
	// CPUs per node (--cpus-per-task with one task per node), MemoryMB per
	// node (--mem) and Time (--time); zero asks for nothing and takes the
	// partition's defaults.
	CPUs     int
	MemoryMB int
	Time     time.Duration
	// NumNodes is the number of nodes (--nodes); 0 means 1.
	NumNodes int
	// Partition, when set, is --partition; else the cluster's default.
	Partition string
	// Workdir is the synced workdir on the login node (absolute, or
	// relative to the login home): Submit snapshots it into the job
	// directory and runs the job there. "" runs the job in the login home.
	Workdir string
	// JobDir is the job's directory on the login node (absolute, or
	// relative to the login home; it must be on the filesystem the compute
	// nodes share); "" means DefaultJobDir(UID). It must not exist yet.
	JobDir string
}

// DefaultJobDir is where a job lives on the login node, relative to the
// login home, unless its spec says otherwise.
func DefaultJobDir(uid string) string { return ".sshq/slurm/" + uid }

// Submit writes the job's directory on the login node and hands the job to
// sbatch, in one session, and returns Slurm's job id. The directory holds
// env.sh, secrets.sh (0600, deleted by the batch script once sourced),
// sshq.sh, setup.sh, run.sh, batch.sh, task.sh, the workdir snapshot, log
// (Slurm's output file), slurm_id and, once the nodes ran, exit.<rank>. If sbatch refuses the job, the
// directory is removed and the error carries sbatch's reason.
//
// The job's environment is, in order (later wins): Env, Secrets, then
// sshq's values: SSHQ_JOB_ID, SSHQ_JOB_NAME, SSHQ_JOB_UID,
// SSHQ_NUM_GPUS_PER_NODE, SKYPILOT_TASK_ID, SKYPILOT_NUM_GPUS_PER_NODE,
// PYTHONUNBUFFERED=1; per job SSHQ_NUM_NODES, SSHQ_NODE_IPS (newline-
// separated, the nodes' NodeAddr in rank order), MASTER_ADDR (rank 0's)
// and MASTER_PORT (kept when Env sets it), each SSHQ_ one also as
// SKYPILOT_; per node SSHQ_NODE_RANK and SKYPILOT_NODE_RANK. Slurm sets
// CUDA_VISIBLE_DEVICES to the GPUs it gave the job.
func (c *Client) Submit(ctx context.Context, spec JobSpec) (string, error) {
	gres := ""
	if spec.NumGPUs > 0 {
		typ, err := c.gpuType(ctx, spec.GPUType)
		if err != nil {
			return "", fmt.Errorf("job %s on %s: %w", spec.UID, c.Name, err)
		}
		gres = typ
	}
	args, stdin, err := submission(spec, gres)
	if err != nil {
		return "", err
	}
	if err := c.checkFits(spec); err != nil {
		return "", fmt.Errorf("job %s on %s: %w", spec.UID, c.Name, err)
	}
	recs, err := c.call(ctx, "submit", stdin, args...)
	if err != nil {
		return "", err
	}
	for _, r := range recs {
		if id, ok := strings.CutPrefix(r, "submitted|"); ok && checkIDs([]string{id}) == nil {
			return id, nil
		}
	}
	return "", fmt.Errorf("%s: sbatch gave no job id for job %s (%q)", c.Name, spec.UID, strings.Join(recs, "; "))
}

// gpuType resolves a GPU type against the cluster's gres, probing the
// cluster once if no Probe or Status ran yet.
func (c *Client) gpuType(ctx context.Context, want string) (string, error) {
	if strings.TrimSpace(want) == "" {
		return "", nil
	}
	info, err := c.cachedInfo(ctx)
	if err != nil {
		return "", err
	}
	return info.ResolveGPUType(want)
}

func (c *Client) cachedInfo(ctx context.Context) (*Info, error) {
	c.mu.Lock()
	info := c.info
	c.mu.Unlock()
	if info != nil {
		return info, nil
	}
	return c.Probe(ctx)
}

// checkFits refuses, with what the cluster has, a job that could never
// start and would otherwise pend forever: more nodes than the partition
// has. It only judges from an Info already read.
func (c *Client) checkFits(spec JobSpec) error {
	c.mu.Lock()
	info := c.info
	c.mu.Unlock()
	if info == nil || spec.NumNodes <= 1 {
		return nil
	}
	for _, p := range info.Partitions {
		if (spec.Partition == "" && p.Default) || p.Name == spec.Partition {
			if p.Nodes < spec.NumNodes {
				return fmt.Errorf("num_nodes %d: partition %s has only %d node(s)", spec.NumNodes, p.Name, p.Nodes)
			}
		}
	}
	return nil
}

// submission builds the arguments of the submit action and its stdin (the
// job's files as NUL-separated name/content pairs). gres is the resolved
// GPU type ("" for any).
func submission(spec JobSpec, gresType string) ([]string, []byte, error) {
	if err := job.CheckUID(spec.UID); err != nil {
		return nil, nil, err
	}
	for _, n := range []struct {
		what string
		v    int
	}{{"NumGPUs", spec.NumGPUs}, {"CPUs", spec.CPUs}, {"MemoryMB", spec.MemoryMB}, {"NumNodes", spec.NumNodes}} {
		if n.v < 0 {
			return nil, nil, fmt.Errorf("job %s: %s %d is negative", spec.UID, n.what, n.v)
		}
	}
	if spec.Time < 0 {
		return nil, nil, fmt.Errorf("job %s: time limit %s is negative", spec.UID, spec.Time)
	}
	for _, s := range []string{spec.Setup, spec.Run, spec.Workdir, spec.JobDir, spec.Partition} {
		if strings.Contains(s, "\x00") {
			return nil, nil, fmt.Errorf("job %s: a script or path holds a NUL byte, which bash cannot carry", spec.UID)
		}
	}
	nodes := max(spec.NumNodes, 1)
	jobDir := spec.JobDir
	if jobDir == "" {
		jobDir = DefaultJobDir(spec.UID)
	}

	sb := []string{"--job-name=" + jobName(spec), "--nodes=" + strconv.Itoa(nodes), "--ntasks-per-node=1",
		// A requeued job would run without its secrets (deleted once
		// sourced); sshq reports NODE_FAIL as LOST instead.
		"--no-requeue"}
	if spec.Partition != "" {
		sb = append(sb, "--partition="+spec.Partition)
	}
	if spec.NumGPUs > 0 {
		g := "gpu:"
		if gresType != "" {
			g += gresType + ":"
		}
		sb = append(sb, "--gres="+g+strconv.Itoa(spec.NumGPUs))
	}
	if spec.CPUs > 0 {
		sb = append(sb, "--cpus-per-task="+strconv.Itoa(spec.CPUs))
	}
	if spec.MemoryMB > 0 {
		sb = append(sb, "--mem="+strconv.Itoa(spec.MemoryMB)+"M")
	}
	if spec.Time > 0 {
		sb = append(sb, "--time="+FormatTime(spec.Time))
	}
	args := append([]string{jobDir, spec.Workdir, "--"}, sb...)

	env, err := exportLines(spec.Env, "# the task's environment")
	if err != nil {
		return nil, nil, fmt.Errorf("job %s: env: %w", spec.UID, err)
	}
	secrets, err := exportLines(spec.Secrets, "# the task's secrets: deleted once the batch script sourced them")
	if err != nil {
		return nil, nil, fmt.Errorf("job %s: secret: %w", spec.UID, err)
	}
	gpus := strconv.Itoa(spec.NumGPUs)
	own, _ := exportLines([]EnvVar{
		{"SSHQ_JOB_ID", strconv.Itoa(spec.ID)},
		{"SSHQ_JOB_NAME", spec.Name},
		{"SSHQ_JOB_UID", spec.UID},
		{"SSHQ_NUM_GPUS_PER_NODE", gpus},
		{"SKYPILOT_TASK_ID", spec.UID},
		{"SKYPILOT_NUM_GPUS_PER_NODE", gpus},
		{"PYTHONUNBUFFERED", "1"},
	}, "# sshq's values, which win over the task's")

	var b []byte
	add := func(name, content string) {
		b = append(b, name...)
		b = append(b, 0)
		b = append(b, content...)
		b = append(b, 0)
	}
	add("env.sh", env)
	if len(spec.Secrets) > 0 {
		add("secrets.sh", secrets)
	}
	add("sshq.sh", own)
	add("setup.sh", spec.Setup)
	add("run.sh", spec.Run)
	add("batch.sh", batchScript)
	add("task.sh", taskScript)
	return args, b, nil
}

// jobName is the name Slurm shows; it cannot hold a newline, and one
// printable line is all squeue can show anyway.
func jobName(spec JobSpec) string {
	name := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, spec.Name)
	if strings.TrimSpace(name) == "" {
		return "sshq-" + spec.UID
	}
	return name
}

// FormatTime writes a duration as Slurm's --time reads it,
// days-hours:minutes:seconds, rounded up to a whole second.
func FormatTime(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	return fmt.Sprintf("%d-%02d:%02d:%02d", s/86400, s%86400/3600, s%3600/60, s%60)
}

// exportLines renders vars as a file bash sources; each value is one
// POSIX-quoted word, so it arrives byte-exact and nothing in it runs.
func exportLines(vars []EnvVar, header string) (string, error) {
	var sb strings.Builder
	sb.WriteString(header + "\n")
	for _, v := range vars {
		line, err := sshpool.ExportLine(v.Name, v.Value)
		if err != nil {
			return "", err
		}
		sb.WriteString(line)
	}
	return sb.String(), nil
}
