package cmd

import (
	"fmt"
	"strings"

	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/orchestrator/ui"
)

// renderSlurm is the Slurm clusters' part of `sshq status`: per login
// node, its partitions, each compute node's GPUs in use / total from the
// gres, and the queue, any user's (this controller's jobs by their id).
func renderSlurm(st ui.Style, clusters []orchestrator.SlurmStatus) string {
	var b strings.Builder
	for _, c := range clusters {
		title := st.Bold(c.Login) + "  " + st.Paint(ui.Blue, "Slurm")
		if c.Error != "" {
			state := st.Paint(ui.Red, "down")
			if c.Reachable {
				state = st.Paint(ui.Yellow, "not ready")
			}
			fmt.Fprintf(&b, "%s  %s  %s\n\n", title, state, ui.Safe(c.Error))
			continue
		}
		used, total := c.GPUsInUse()
		fmt.Fprintf(&b, "%s  %s  %s  GPUs %d in use / %d\n", title, st.Paint(ui.Green, "up"), ui.Safe(c.Version), used, total)
		var rows [][]string
		for _, p := range c.Partitions {
			name := p.Name
			if p.Default {
				name += "*"
			}
			state := st.Paint(ui.Green, "up")
			if !p.Up {
				state = st.Paint(ui.Red, "down")
			}
			rows = append(rows, []string{ui.Safe(name), state, fmt.Sprint(p.Nodes), ui.Safe(p.TimeLimit)})
		}
		b.WriteString(indent(st.Table([]string{"PARTITION", "STATE", "NODES", "TIME LIMIT"}, rows), "  "))
		rows = rows[:0]
		for _, n := range c.Nodes {
			state := ui.Safe(n.State)
			if n.Reason != "" {
				state += " (" + ui.Safe(n.Reason) + ")"
			}
			rows = append(rows, []string{ui.Safe(n.Name), state, slurmGPUsCell(n.GPUs),
				fmt.Sprintf("%d / %d", n.CPUsAlloc, n.CPUsTotal), ui.MiB(n.AllocMemMiB) + " / " + ui.MiB(n.MemoryMiB)})
		}
		b.WriteString(indent(st.Table([]string{"NODE", "STATE", "GPUS IN USE", "CPUS", "MEMORY"}, rows), "  "))
		if len(c.Queue) > 0 {
			rows = rows[:0]
			shown := slurmQueueShown(c.Queue)
			for _, q := range shown {
				id := "-"
				if q.JobID != nil {
					id = fmt.Sprintf("#%d", *q.JobID)
				}
				where := q.NodeList
				if q.Reason != "" {
					where = "(" + q.Reason + ")"
				}
				rows = append(rows, []string{ui.Safe(q.SlurmID), id, ui.Safe(q.Name), ui.Safe(orDash(q.User)),
					st.Paint(stateColor(q.State), ui.Safe(q.SlurmState)), ui.Safe(orDash(strings.TrimPrefix(q.GRES, "gres:"))), ui.Safe(q.TimeUsed), ui.Safe(orDash(where))})
			}
			b.WriteString("  queue:\n")
			b.WriteString(indent(st.Table([]string{"SLURM ID", "JOB", "NAME", "USER", "STATE", "GRES", "TIME", "NODES (REASON)"}, rows), "  "))
			if more := len(c.Queue) - len(shown); more > 0 {
				fmt.Fprintf(&b, "  … and %d more job(s) of other users (`sshq status --json` lists them all)\n", more)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// slurmQueueMax is how many jobs of a Slurm queue status prints: a big
// cluster's queue holds thousands, of which this controller's matter here.
const slurmQueueMax = 20

// slurmQueueShown is the part of a Slurm queue status prints: this
// controller's jobs, then the others in Slurm's order, up to slurmQueueMax.
func slurmQueueShown(queue []orchestrator.SlurmQueueStatus) []orchestrator.SlurmQueueStatus {
	if len(queue) <= slurmQueueMax {
		return queue
	}
	var out []orchestrator.SlurmQueueStatus
	for _, q := range queue {
		if q.JobID != nil {
			out = append(out, q)
		}
	}
	for _, q := range queue {
		if q.JobID == nil && len(out) < slurmQueueMax {
			out = append(out, q)
		}
	}
	return out
}

// slurmTotals are the clusters' part of status's totals: GPUs free and in
// all, and the jobs running and waiting in their queues, any user's.
func slurmTotals(clusters []orchestrator.SlurmStatus) (free, total, running, waiting int) {
	for _, c := range clusters {
		used, all := c.GPUsInUse()
		free, total = free+all-used, total+all
		for _, q := range c.Queue {
			switch {
			case q.State == job.Pending:
				waiting++
			case q.State == job.Running:
				running++
			}
		}
	}
	return free, total, running, waiting
}

// slurmGPUsCell is a node's GPUs by gres type: "a100 1/2".
func slurmGPUsCell(gpus []orchestrator.SlurmGPU) string {
	if len(gpus) == 0 {
		return "-"
	}
	parts := make([]string, len(gpus))
	for i, g := range gpus {
		typ := g.Type
		if typ == "" {
			typ = "gpu"
		}
		parts[i] = fmt.Sprintf("%s %d/%d", ui.Safe(typ), g.Used, g.Total)
	}
	return strings.Join(parts, ", ")
}

// slurmNodeRows are the Slurm login nodes' rows of `sshq nodes`.
func slurmNodeRows(st ui.Style, checks []orchestrator.SlurmCheck) [][]string {
	var rows [][]string
	for _, r := range checks {
		state := st.Paint(ui.Green, "ready (Slurm)")
		var notes []string
		switch {
		case !r.Reachable:
			state = st.Paint(ui.Red, "down")
			notes = []string{r.Error}
		case !r.Ready:
			state = st.Paint(ui.Yellow, "not ready (Slurm)")
			notes = r.Problems
		default:
			notes = []string{r.Version, "partitions " + strings.Join(r.Partitions, ","), fmt.Sprintf("%d node(s)", r.Nodes), r.GRESString()}
		}
		lat := "-"
		if r.Reachable {
			lat = fmt.Sprintf("%dms", r.LatencyMS)
		}
		rows = append(rows, []string{r.Name, fmt.Sprintf("%s:%d", r.Host, r.Port), state, lat, fmt.Sprint(r.GPUs), "by Slurm", "-", ui.Safe(strings.Join(notes, "; "))})
	}
	return rows
}

// slurmNode is the NODE cell of a Slurm job: its login node and Slurm id.
func slurmNode(v orchestrator.JobView) string {
	if v.SlurmID == "" {
		return v.Node + " (Slurm)"
	}
	return fmt.Sprintf("%s (Slurm %s)", v.Node, v.SlurmID)
}

// isSlurm says the job went to a Slurm cluster.
func isSlurm(v orchestrator.JobView) bool { return v.Backend == store.BackendSlurm }
