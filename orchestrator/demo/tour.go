package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/sshpool"
)

// helloTask is the tour's first task file, the smallest useful one.
const helloTask = `# The smallest task: one GPU of any type, print what the job got.
name: hello
resources:
  accelerators: 1
run: |
  echo "hello from $(hostname) as $USER, job #$SSHQ_JOB_ID"
  echo "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"
  nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader -i "$CUDA_VISIBLE_DEVICES"
`

// step is one command of the tour and the exit code it must end with.
// running names a job the tour waits to see RUNNING before it goes on, so
// that what the next steps show (who holds a GPU, who waits) is the same
// on a loaded machine as on an idle one.
type step struct {
	say     string
	args    []string
	code    int
	running string
}

// Tour runs a scripted walk through sshq against c, printing each command
// before running it with the sshq binary exe. It fails when a command
// does not end as a user would expect, or the jobs end in the wrong states.
func Tour(ctx context.Context, c *Cluster, exe string, w io.Writer, bold func(string) string) error {
	taskDir := filepath.Join(c.Dir, "tour")
	if err := os.MkdirAll(taskDir, 0o755); err != nil {
		return err
	}
	hello := filepath.Join(taskDir, "hello.yaml")
	if err := os.WriteFile(hello, []byte(helloTask), 0o644); err != nil {
		return err
	}
	// The training run never ends by itself: the tour cancels it, and a
	// run with a fixed length could end first on a slow machine.
	train := `i=0; while :; do i=$((i + 1)); printf 'step %d loss 0.%02d\n' "$i" $((990 / (10 + i))); sleep 0.5; done`
	steps := []step{
		{"Every node, checked for what sshq needs (bash, tmux, flock, nvidia-smi):", []string{"nodes"}, 0, ""},
		{"The cluster at a glance: each GPU and who holds it.", []string{"status"}, 0, ""},
		{"A task file, attached: sshq picks a free GPU, runs it under tmux on the node, streams its output.", []string{"launch", hello}, 0, ""},
		{"A training run on both A100s of demo-a100, until it is stopped (-d: return once it is queued):", []string{"launch", "-d", "--name", "train-big", "--gpus", "A100:2", "--", train}, 0, "train-big"},
		{"Another A100 job: no A100 is free, so it waits in demo-a100's own queue.", []string{"launch", "-d", "--name", "waits-for-a100", "--gpus", "A100:1", "--", `echo "got GPU $CUDA_VISIBLE_DEVICES at last"`}, 0, ""},
		{"A small sweep on the RTX 4090s, one job per learning rate:", []string{"launch", "-d", "--name", "sweep-lr-0.1", "--gpus", "RTX4090:1", "--env", "LR=0.1", "--", `echo "lr=$LR on GPU $CUDA_VISIBLE_DEVICES"; sleep 2`}, 0, ""},
		{"", []string{"launch", "-d", "--name", "sweep-lr-0.01", "--gpus", "RTX4090:1", "--env", "LR=0.01", "--", `echo "lr=$LR on GPU $CUDA_VISIBLE_DEVICES"; sleep 2`}, 0, ""},
		{"This controller's jobs: the waiting one shows its place in the queue.", []string{"queue"}, 0, ""},
		{"Holders and the waiting queue, as every user of the nodes sees them:", []string{"status"}, 0, ""},
		{"The training run's latest output:", []string{"logs", "--tail", "3", "train-big"}, 0, ""},
		{"Cancel it: its whole process tree ends, its GPUs free up, and the waiting job starts by itself.", []string{"cancel", "--grace", "2s", "train-big"}, 0, ""},
		{"Wait for the rest (exit code: the last failing job's):", []string{"wait", "waits-for-a100", "sweep-lr-0.1", "sweep-lr-0.01"}, 0, ""},
		{"Everything, ended jobs included:", []string{"queue", "-a"}, 0, ""},
		{"And the GPUs are free again.", []string{"status"}, 0, ""},
	}
	env := append(os.Environ(), c.Env()...)
	env = append(env, "SSHQ_DEMO_TOUR=1")
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		if s.say != "" {
			fmt.Fprintf(w, "\n# %s\n", s.say)
		}
		fmt.Fprintf(w, "%s\n", bold("$ sshq "+sshpool.Command(s.args...)))
		cmd := exec.CommandContext(ctx, exe, s.args...)
		cmd.Env, cmd.Stdout, cmd.Stderr = env, w, w
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			return err
		}
		if code != s.code {
			return fmt.Errorf("tour step `sshq %s` exited %d, expected %d", sshpool.Command(s.args...), code, s.code)
		}
		if s.running != "" {
			if err := waitRunning(ctx, exe, env, s.running); err != nil {
				return err
			}
		}
	}
	return checkOutcome(ctx, exe, env)
}

// tourJob is a job as `sshq queue --json` lists it.
type tourJob struct {
	Name  string    `json:"name"`
	State job.State `json:"state"`
}

// allJobs lists every job of the tour, ended ones included.
func allJobs(ctx context.Context, exe string, env []string) ([]tourJob, error) {
	cmd := exec.CommandContext(ctx, exe, "queue", "-a", "--json")
	cmd.Env = env
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		return nil, fmt.Errorf("sshq queue -a --json: %w\n%s", err, ee.Stderr)
	} else if err != nil {
		return nil, fmt.Errorf("sshq queue -a --json: %w", err)
	}
	var jobs []tourJob
	if err := json.Unmarshal(out, &jobs); err != nil {
		return nil, fmt.Errorf("sshq queue -a --json: %w", err)
	}
	return jobs, nil
}

// waitRunning waits until the job called name runs. A job that ends
// instead fails the tour: only jobs that run until cancelled are waited on.
func waitRunning(ctx context.Context, exe string, env []string, name string) error {
	for {
		jobs, err := allJobs(ctx, exe, env)
		if err != nil {
			return err
		}
		for _, j := range jobs {
			if j.Name != name {
				continue
			}
			if j.State == job.Running {
				return nil
			}
			if j.State.Terminal() {
				return fmt.Errorf("tour: job %s ended %s, expected it to run until cancelled", name, j.State)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// checkOutcome verifies the jobs ended as the tour promised.
func checkOutcome(ctx context.Context, exe string, env []string) error {
	jobs, err := allJobs(ctx, exe, env)
	if err != nil {
		return err
	}
	want := map[string]job.State{"hello": job.Succeeded, "train-big": job.Cancelled, "waits-for-a100": job.Succeeded,
		"sweep-lr-0.1": job.Succeeded, "sweep-lr-0.01": job.Succeeded}
	for _, j := range jobs {
		if w, ok := want[j.Name]; ok && w != j.State {
			return fmt.Errorf("tour: job %s ended %s, expected %s", j.Name, j.State, w)
		}
		delete(want, j.Name)
	}
	if len(want) > 0 {
		return fmt.Errorf("tour: jobs missing from the queue: %v", want)
	}
	return nil
}
