package store

import (
	"strings"
	"time"

	"github.com/sshq/sshq/orchestrator/job"
)

// Gang is what the controller knows of a multi-node job: one rank per
// node, each an ordinary job on its node (see orchestrator/remote's
// GangSpec). The job's own State, ExitCode, GPUs and QueuePosition sum up
// the ranks: see orchestrator's gang rules.
type Gang struct {
	// Ranks are in rank order; rank 0's node is the job's Node.
	Ranks []Rank `json:"ranks"`
	// FailedRank is the rank whose end ended the job (a non-zero exit, a
	// failed setup, a cancel, a node lost), once it ended so; Cause says
	// how ("exit 3", "lost", "cancelled").
	FailedRank *int   `json:"failed_rank"`
	Cause      string `json:"cause"`
}

// Rank is one node's part of a multi-node job.
type Rank struct {
	Rank int    `json:"rank"`
	Node string `json:"node"`
	UID  string `json:"uid"` // its uid on its node
	// IP is the address the other ranks were told, once known.
	IP       string    `json:"ip"`
	State    job.State `json:"state"`
	ExitCode *int      `json:"exit_code"`
	GPUs     []int     `json:"gpus"`
	// QueuePosition is its place in its node's queue while it waits.
	QueuePosition *int `json:"queue_position"`
	// Mode is where it is in the gang's start: wait, hold (its GPUs
	// reserved for the gang), park (let them go after the hold limit,
	// keeping its place) or run.
	Mode string `json:"mode"`
	// StoppedBy is the rank whose end stopped this one; StopCode is how
	// that rank ended, as this one heard it: its exit code, or "lost".
	StoppedBy *int   `json:"stopped_by"`
	StopCode  string `json:"stop_code"`
	// Ended is when it reached a terminal state.
	Ended *time.Time `json:"ended"`
	// Reachable is false when its node did not answer the last question.
	Reachable bool `json:"reachable"`
	// Reason is why it waits (its node's disk low) or how a limit ended
	// it, as Job.Reason; "" for none.
	Reason string `json:"reason"`
}

// Nodes are the job's nodes: rank 0's alone for a job on one node, else
// every rank's, in rank order.
func (j *Job) Nodes() []string {
	if j.Gang == nil {
		if j.Node == "" {
			return nil
		}
		return []string{j.Node}
	}
	out := make([]string, len(j.Gang.Ranks))
	for i, r := range j.Gang.Ranks {
		out[i] = r.Node
	}
	return out
}

// NodeList is how people see where the job runs: "node1+node2".
func (j *Job) NodeList() string { return strings.Join(j.Nodes(), "+") }
