package cmd

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sshq/sshq/orchestrator/job"
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
	case job.Failed, job.FailedSetup, job.Lost:
		return ui.Red
	case job.Running, job.SettingUp:
		return ui.Blue
	case job.Cancelled:
		return ui.Gray
	}
	return ui.Yellow
}
