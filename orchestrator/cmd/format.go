package cmd

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/orchestrator/ui"
)

// writeJSONLines writes a JSON array with one compact element per line:
// still readable and greppable, and several times faster than indenting a
// history of thousands of jobs.
func writeJSONLines[T any](w io.Writer, items []T) error {
	bw := bufio.NewWriterSize(w, 64*1024)
	bw.WriteString("[")
	for i, it := range items {
		b, err := json.Marshal(it)
		if err != nil {
			return err
		}
		if i > 0 {
			bw.WriteString(",")
		}
		bw.WriteString("\n")
		bw.Write(b)
	}
	bw.WriteString("\n]\n")
	return bw.Flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func indent(s, pre string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = pre + lines[i]
	}
	return strings.Join(lines, "\n") + "\n"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fmtInt(n int) string {
	if n < 0 {
		return "?"
	}
	return fmt.Sprint(n)
}

func fmtLoad(f float64) string {
	if f < 0 {
		return "?"
	}
	return fmt.Sprintf("%.1f", f)
}

func humanSince(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return humanDuration(time.Since(t))
}

func humanDuration(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

func stateColor(s job.State) string {
	switch s {
	case job.Succeeded:
		return ui.Green
	case job.Failed, job.FailedSetup, job.Lost, job.Timeout, job.OutOfMemory:
		return ui.Red
	case job.Running, job.SettingUp:
		return ui.Blue
	case job.Cancelled:
		return ui.Gray
	}
	return ui.Yellow
}

// limitsCell is a job's limits for people: "mem 300M, time 4h, 8 cpus",
// or "-" for none.
func limitsCell(j *store.Job) string {
	var p []string
	if j.MemLimitMiB != nil {
		p = append(p, "mem "+ui.MiB(int(*j.MemLimitMiB)))
	}
	if j.TimeLimitS != nil {
		p = append(p, "time "+limitDuration(*j.TimeLimitS))
	}
	if j.CPUs > 0 {
		c := fmt.Sprintf("%d cpus", j.CPUs)
		if j.Cores != "" {
			c += " (" + j.Cores + ")"
		}
		p = append(p, c)
	}
	if len(p) == 0 {
		return "-"
	}
	return strings.Join(p, ", ")
}

// limitDuration is a time limit as --time takes it: 90s, 30m, 4h, 3d,
// else Slurm's D-HH:MM:SS.
func limitDuration(s int64) string {
	switch {
	case s%86400 == 0:
		return fmt.Sprintf("%dd", s/86400)
	case s%3600 == 0:
		return fmt.Sprintf("%dh", s/3600)
	case s%60 == 0:
		return fmt.Sprintf("%dm", s/60)
	case s < 3600:
		return fmt.Sprintf("%ds", s)
	case s < 86400:
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d-%02d:%02d:%02d", s/86400, s/3600%24, s/60%60, s%60)
}
