package orchestrator

import (
	"strings"
	"testing"
	"time"

	"github.com/sshq/sshq/inventory"
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/orchestrator/task"
)

func TestParseMem(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{
		"300M": 300, "32G": 32 << 10, "32g": 32 << 10, "2GiB": 2048, "2GB": 2048, "1.5G": 1536,
		"512": 512, "1T": 1 << 20, "4096K": 4, "1K": 1, "none": 0, "0": 0, " 8G ": 8192,
	} {
		if got, err := ParseMem(in); err != nil || got != want {
			t.Errorf("ParseMem(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "lots", "-1G", "1e3G", "G", "300MM", "0x10M", "9999999T"} {
		if got, err := ParseMem(in); err == nil {
			t.Errorf("ParseMem(%q) = %d, want an error", in, got)
		}
	}
}

func TestParseTime(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{
		"90s": 90 * time.Second, "30m": 30 * time.Minute, "4h": 4 * time.Hour, "3d": 72 * time.Hour,
		"1h30m": 90 * time.Minute, "01:02:03": time.Hour + 2*time.Minute + 3*time.Second,
		"2-03:04:05": 51*time.Hour + 4*time.Minute + 5*time.Second, "1-12": 36 * time.Hour,
		"1-00:30": 24*time.Hour + 30*time.Minute, "45": 45 * time.Minute, "10:30": 10*time.Minute + 30*time.Second,
		"none": 0, "0": 0,
	} {
		if got, err := ParseTime(in); err != nil || got != want {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "soon", "-5m", "1:2:3:4", "x-01:00", "1-", "3 d"} {
		if got, err := ParseTime(in); err == nil {
			t.Errorf("ParseTime(%q) = %v, want an error", in, got)
		}
	}
}

// A flag wins over config.yaml; memory per GPU counts the job's GPUs, and
// a job without GPUs takes the plain default.
func TestLimitDefaults(t *testing.T) {
	t.Parallel()
	ld, err := parseDefaults(inventory.Defaults{MemPerGPU: "60G", Mem: "16G", Time: "3d"})
	if err != nil {
		t.Fatal(err)
	}
	mib, none, hour := int64(300), int64(0), time.Hour
	for _, tc := range []struct {
		name  string
		flags LimitFlags
		gpus  int
		want  Limits
	}{
		{"defaults, 2 GPUs", LimitFlags{}, 2, Limits{MemMiB: 120 << 10, Time: 72 * time.Hour}},
		{"defaults, no GPU", LimitFlags{}, 0, Limits{MemMiB: 16 << 10, Time: 72 * time.Hour}},
		{"flags win", LimitFlags{MemMiB: &mib, Time: &hour, CPUs: 4}, 2, Limits{MemMiB: 300, Time: time.Hour, CPUs: 4}},
		{"none lifts the default", LimitFlags{MemMiB: &none}, 1, Limits{Time: 72 * time.Hour}},
	} {
		if got := ld.resolve(tc.flags, tc.gpus); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if _, err := parseDefaults(inventory.Defaults{Time: "forever"}); err == nil || !strings.Contains(err.Error(), "defaults.time") {
		t.Errorf("a bad default: %v", err)
	}
}

// On Slurm the launch's limits become sbatch's, over the task's
// resources; config.yaml's defaults stay on sshq's own nodes (a cluster
// has its own, and a default over a partition's MaxTime would have every
// job refused).
func TestSlurmSpecLimits(t *testing.T) {
	t.Parallel()
	tk := &task.Task{Run: "true"}
	tk.Resources.CPUs.Value, tk.Resources.Memory.Value = 4, 8
	rec := store.Job{UID: "c-1", ID: 1}
	defaults := inventory.Defaults{MemPerGPU: "60G", Mem: "16G", Time: "3d"}
	spec := slurmSpec(rec, tk, Placement{NumGPUs: 1}, "", LaunchOptions{Defaults: defaults})
	if spec.CPUs != 4 || spec.MemoryMB != 8192 || spec.Time != 0 {
		t.Errorf("no flags: cpus %d mem %d time %s; want the task's 4 and 8192, no time", spec.CPUs, spec.MemoryMB, spec.Time)
	}
	mem, d := int64(300), 90*time.Minute
	spec = slurmSpec(rec, tk, Placement{NumGPUs: 1}, "", LaunchOptions{Defaults: defaults, Limits: LimitFlags{MemMiB: &mem, Time: &d, CPUs: 2}})
	if spec.CPUs != 2 || spec.MemoryMB != 300 || spec.Time != d {
		t.Errorf("flags: cpus %d mem %d time %s; want 2, 300, 1h30m", spec.CPUs, spec.MemoryMB, spec.Time)
	}
	none := int64(0)
	spec = slurmSpec(rec, tk, Placement{}, "", LaunchOptions{Limits: LimitFlags{MemMiB: &none}})
	if spec.MemoryMB != 8192 {
		t.Errorf("--mem none: mem %d; want the task's 8192 (none asks for no limit of sshq's own)", spec.MemoryMB)
	}
}
