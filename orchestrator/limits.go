package orchestrator

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/sshq/sshq/inventory"
	"github.com/sshq/sshq/orchestrator/store"
)

// Limits are what one job may use on its node. The node holds the job to
// them (see the remote package's doc, "Job limits"): past MemMiB it ends
// OUT_OF_MEMORY, past Time TIMEOUT; CPUs pins it to that many cores.
type Limits struct {
	MemMiB int64         // 0: no memory limit
	Time   time.Duration // 0: no time limit
	CPUs   int           // 0: not pinned
}

// LimitFlags are a launch's --mem, --time and --cpus: nil takes the
// default of config.yaml, 0 asks for no limit.
type LimitFlags struct {
	MemMiB *int64
	Time   *time.Duration
	CPUs   int
}

// ParseMem reads a memory size as --mem and config.yaml take it, in MiB:
// a number with K, M, G or T (binary, as Slurm's --mem: 1G = 1024M;
// "GiB" and "GB" read the same), a bare number being MiB; "0" or "none"
// is no limit.
func ParseMem(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if strings.EqualFold(t, "none") || t == "0" {
		return 0, nil
	}
	u := strings.ToUpper(t)
	u = strings.TrimSuffix(u, "B")
	u = strings.TrimSuffix(u, "I")
	mult := 1.0
	if n := len(u); n > 0 {
		switch u[n-1] {
		case 'K':
			mult, u = 1.0/1024, u[:n-1]
		case 'M':
			u = u[:n-1]
		case 'G':
			mult, u = 1024, u[:n-1]
		case 'T':
			mult, u = 1024*1024, u[:n-1]
		}
	}
	v, err := strconv.ParseFloat(u, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) || strings.ContainsAny(u, "eExXpP") {
		return 0, fmt.Errorf("%q is not a memory size: write it as 300M, 32G or 1.5G (binary units; a bare number is MiB), or none", s)
	}
	mib := int64(math.Ceil(v * mult))
	if mib > 1<<40 {
		return 0, fmt.Errorf("%q is more memory than any machine has", s)
	}
	if mib == 0 && v > 0 {
		mib = 1
	}
	return mib, nil
}

// ParseTime reads a time limit as --time and config.yaml take it: 90s,
// 30m, 4h, 3d (or Go's 1h30m), or Slurm's forms MM, MM:SS, HH:MM:SS,
// D-HH, D-HH:MM and D-HH:MM:SS (a bare number is minutes, as Slurm's);
// "0" or "none" is no limit.
func ParseTime(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	bad := fmt.Errorf("%q is not a time limit: write it as 90s, 30m, 4h, 3d, HH:MM:SS or D-HH:MM:SS, or none", s)
	switch {
	case strings.EqualFold(t, "none") || t == "0":
		return 0, nil
	case t == "":
		return 0, bad
	}
	if strings.ContainsAny(t, ":-") || isDigits(t) {
		return slurmTime(t, bad)
	}
	if d, ok := strings.CutSuffix(t, "d"); ok && isDigits(d) {
		n, err := strconv.Atoi(d)
		if err != nil || n > 100000 {
			return 0, bad
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(t)
	if err != nil || d < 0 {
		return 0, bad
	}
	return d, nil
}

// slurmTime reads Slurm's --time forms.
func slurmTime(t string, bad error) (time.Duration, error) {
	days := 0
	rest := t
	if d, r, ok := strings.Cut(t, "-"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || !isDigits(d) || n > 100000 {
			return 0, bad
		}
		days, rest = n, r
	}
	parts := strings.Split(rest, ":")
	nums := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || !isDigits(p) || n > 1000000 {
			return 0, bad
		}
		nums[i] = n
	}
	var h, m, sec int
	switch {
	case len(nums) > 3:
		return 0, bad
	case t != rest: // D-HH, D-HH:MM, D-HH:MM:SS
		h = nums[0]
		if len(nums) > 1 {
			m = nums[1]
		}
		if len(nums) > 2 {
			sec = nums[2]
		}
	case len(nums) == 1: // MM
		m = nums[0]
	case len(nums) == 2: // MM:SS
		m, sec = nums[0], nums[1]
	default: // HH:MM:SS
		h, m, sec = nums[0], nums[1], nums[2]
	}
	return time.Duration(days)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(sec)*time.Second, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// limitDefaults is config.yaml's defaults, read.
type limitDefaults struct {
	memPerGPU, mem int64
	time           time.Duration
}

// parseDefaults reads config.yaml's defaults; an error names the key.
func parseDefaults(d inventory.Defaults) (limitDefaults, error) {
	var ld limitDefaults
	var err error
	wrap := func(key string, err error) error {
		return &UsageError{fmt.Errorf("config.yaml: defaults.%s: %w", key, err)}
	}
	if d.MemPerGPU != "" {
		if ld.memPerGPU, err = ParseMem(d.MemPerGPU); err != nil {
			return ld, wrap("mem_per_gpu", err)
		}
	}
	if d.Mem != "" {
		if ld.mem, err = ParseMem(d.Mem); err != nil {
			return ld, wrap("mem", err)
		}
	}
	if d.Time != "" {
		if ld.time, err = ParseTime(d.Time); err != nil {
			return ld, wrap("time", err)
		}
	}
	return ld, nil
}

// resolve is a job's limits: the flags, else the defaults; memory per GPU
// for a job with GPUs, else the plain memory default.
func (ld limitDefaults) resolve(f LimitFlags, numGPUs int) Limits {
	l := Limits{CPUs: f.CPUs}
	switch {
	case f.MemMiB != nil:
		l.MemMiB = *f.MemMiB
	case ld.memPerGPU > 0 && numGPUs > 0:
		l.MemMiB = ld.memPerGPU * int64(numGPUs)
	default:
		l.MemMiB = ld.mem
	}
	l.Time = ld.time
	if f.Time != nil {
		l.Time = *f.Time
	}
	return l
}

// slurm is the limits of a job sent to a Slurm cluster: only what the
// launch asked for. config.yaml's defaults guard sshq's own nodes; a
// cluster has its own (the partition's default memory and time, and its
// MaxTime, which a default could exceed and have every job refused).
func (f LimitFlags) slurm() Limits {
	l := Limits{CPUs: f.CPUs}
	if f.MemMiB != nil {
		l.MemMiB = *f.MemMiB
	}
	if f.Time != nil {
		l.Time = *f.Time
	}
	return l
}

// recordLimits notes a job's limits in its record, for queue and status.
func recordLimits(j *store.Job, l Limits) {
	if l.MemMiB > 0 {
		mib := l.MemMiB
		j.MemLimitMiB = &mib
	}
	if l.Time > 0 {
		secs := int64((l.Time + time.Second - 1) / time.Second)
		j.TimeLimitS = &secs
	}
	j.CPUs = l.CPUs
}
