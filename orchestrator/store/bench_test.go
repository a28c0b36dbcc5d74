//go:build unix

package store

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/job"
)

// cpuTime is this process's user+system CPU time. The box the benchmarks run
// on is shared, so wall-clock ms/op swings with other people's load;
// cpu-ms/op (summed over cores) does not.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func report(b *testing.B, cpu0 time.Duration) {
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
}

// seed10k writes a state of 10,000 ended jobs, each as big as a typical one:
// two GPUs, a few env names, a one-line command.
func seed10k(b *testing.B) *Store {
	b.Helper()
	s := openTemp(b)
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC)
	err := s.Update(func(st *State) error {
		for i := range 10_000 {
			j := st.NewJob(fmt.Sprintf("train-%d", i%50))
			j.User, j.Node, j.Accelerator, j.NumGPUs = "alice", fmt.Sprintf("gpu-node-%02d", i%20), "H100", 2
			j.GPUs = []int{i % 8, (i + 1) % 8}
			j.GPUUUIDs = []string{"GPU-6d5c1f2a-9b1e-4c35-8a7d-3e0f2b1c4d5e", "GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"}
			j.Workdir, j.TaskFile = "/home/alice/src/llm-finetune", "/home/alice/src/llm-finetune/task.yaml"
			j.Command = fmt.Sprintf("torchrun --nproc_per_node=2 train.py --config configs/run%d.yaml --lr 3e-4", i)
			j.EnvNames = []string{"WANDB_API_KEY", "HF_TOKEN", "DATA_DIR"}
			start, end := t0.Add(time.Duration(i)*time.Minute), t0.Add(time.Duration(i)*time.Minute+time.Hour)
			code := i % 3
			j.Submitted, j.Started, j.Ended, j.LastSeen, j.ExitCode = t0, &start, &end, &end, &code
			j.State = job.Succeeded
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkLoad10k is what `sshq queue` pays to read a long history; target
// ≤ 150 ms.
func BenchmarkLoad10k(b *testing.B) {
	s := seed10k(b)
	cpu0 := cpuTime()
	for b.Loop() {
		st, err := s.Load()
		if err != nil || len(st.Jobs) != 10_000 {
			b.Fatal(err)
		}
	}
	report(b, cpu0)
}

// BenchmarkUpdate10k is a launch's bookkeeping, one Update adding a job, on a
// long history; target ≤ 50 ms.
func BenchmarkUpdate10k(b *testing.B) {
	s := seed10k(b)
	cpu0 := cpuTime()
	for b.Loop() {
		if err := s.Update(func(st *State) error { st.NewJob("x"); return nil }); err != nil {
			b.Fatal(err)
		}
	}
	report(b, cpu0)
}
