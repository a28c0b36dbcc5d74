//go:build unix

package store

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
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

// report prints wall and CPU time per op and, where there is one, whether
// the wall time met its target. Only a quiet machine's verdict means much.
func report(b *testing.B, cpu0 time.Duration, targetMS float64) {
	wall := float64(b.Elapsed().Microseconds()) / 1000 / float64(b.N)
	cpu := float64((cpuTime() - cpu0).Microseconds()) / 1000 / float64(b.N)
	b.ReportMetric(wall, "ms/op")
	b.ReportMetric(cpu, "cpu-ms/op")
	if targetMS > 0 {
		verdict := "ok"
		if wall > targetMS {
			verdict = "MISSED"
		}
		b.Logf("%.1f ms/op wall, %.1f ms CPU summed over cores: target ≤ %.0f ms %s", wall, cpu, targetMS, verdict)
	}
}

// fillTypical makes j as big as a typical job: two GPUs, a few env names, a
// one-line command. With ended it ended in 2025, long enough ago to leave
// state.json.
func fillTypical(j *Job, i int, ended bool) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC)
	j.User, j.Node, j.Accelerator, j.NumGPUs = "alice", fmt.Sprintf("gpu-node-%02d", i%20), "H100", 2
	j.GPUs = []int{i % 8, (i + 1) % 8}
	j.GPUUUIDs = []string{"GPU-6d5c1f2a-9b1e-4c35-8a7d-3e0f2b1c4d5e", "GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"}
	j.Workdir, j.TaskFile = "/home/alice/src/llm-finetune", "/home/alice/src/llm-finetune/task.yaml"
	j.Command = fmt.Sprintf("torchrun --nproc_per_node=2 train.py --config configs/run%d.yaml --lr 3e-4", i)
	j.EnvNames = []string{"WANDB_API_KEY", "HF_TOKEN", "DATA_DIR"}
	j.Submitted = t0
	if !ended {
		j.State = job.Pending
		return
	}
	start, end := t0.Add(time.Duration(i)*time.Minute), t0.Add(time.Duration(i)*time.Minute+time.Hour)
	code := i % 3
	j.Started, j.Ended, j.LastSeen, j.ExitCode = &start, &end, &end, &code
	j.State = job.Succeeded
}

// seed10k writes 10,000 jobs; ended ones end up in history.jsonl but for
// the KeepEnded newest, unfinished ones all stay in state.json.
func seed10k(b *testing.B, ended bool) *Store {
	b.Helper()
	s := openTemp(b)
	err := s.Update(func(st *State) error {
		for i := range 10_000 {
			fillTypical(st.NewJob(fmt.Sprintf("train-%d", i%50)), i, ended)
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkLoad10k is what `sshq queue` pays to read the store of a
// controller that ran 10,000 jobs: state.json only.
func BenchmarkLoad10k(b *testing.B) {
	s := seed10k(b, true)
	cpu0 := cpuTime()
	for b.Loop() {
		if _, err := s.Load(); err != nil {
			b.Fatal(err)
		}
	}
	report(b, cpu0, 0)
}

// BenchmarkQueueAllJSON10k is the store's part of `sshq queue -a --json`
// over 10,000 ended jobs: read state.json and history.jsonl, and encode every
// job as the command does; target ≤ 150 ms.
func BenchmarkQueueAllJSON10k(b *testing.B) {
	s := seed10k(b, true)
	cpu0 := cpuTime()
	for b.Loop() {
		all, err := s.All()
		if err != nil || len(all) != 10_000 {
			b.Fatal(len(all), err)
		}
		w := bufio.NewWriterSize(io.Discard, 64<<10)
		for _, j := range all {
			data, err := json.Marshal(j)
			if err != nil {
				b.Fatal(err)
			}
			w.Write(data)
		}
		w.Flush()
	}
	report(b, cpu0, 150)
}

// BenchmarkUpdate10k is a launch's bookkeeping, one Update adding a job, for
// a controller that ran 10,000 jobs; target ≤ 50 ms.
func BenchmarkUpdate10k(b *testing.B) {
	s := seed10k(b, true)
	cpu0 := cpuTime()
	for b.Loop() {
		if err := s.Update(func(st *State) error { st.NewJob("x"); return nil }); err != nil {
			b.Fatal(err)
		}
	}
	report(b, cpu0, 50)
}

// BenchmarkUpdate10kUnfinished is the same with all 10,000 jobs unfinished,
// so all in state.json: the worst case of a launch's bookkeeping.
func BenchmarkUpdate10kUnfinished(b *testing.B) {
	s := seed10k(b, false)
	cpu0 := cpuTime()
	for b.Loop() {
		if err := s.Update(func(st *State) error { st.NewJob("x"); return nil }); err != nil {
			b.Fatal(err)
		}
	}
	report(b, cpu0, 0)
}

// BenchmarkMigrate10k is the one-off first Update after upgrading from a
// version 1 state.json of 10,000 ended jobs: 9,800 of them move to the
// history.
func BenchmarkMigrate10k(b *testing.B) {
	s := openTemp(b)
	st, err := s.Load()
	if err != nil {
		b.Fatal(err)
	}
	jobs := make([]*Job, 10_000)
	for i := range jobs {
		jobs[i] = &Job{ID: i + 1, UID: fmt.Sprintf("%s-%d", st.ControllerID, i+1), Name: fmt.Sprintf("train-%d", i%50)}
		fillTypical(jobs[i], i, true)
	}
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		writeVersion1(b, s, st.ControllerID, 10_001, jobs)
		os.Remove(s.HistoryPath())
		b.StartTimer()
		cpu0 := cpuTime()
		if err := s.Update(func(st *State) error { st.NewJob("x"); return nil }); err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime() - cpu0
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
}
