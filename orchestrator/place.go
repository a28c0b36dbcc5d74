package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/sshq/sshq/orchestrator/remote"
	"github.com/sshq/sshq/orchestrator/task"
)

// ErrNoFit means no node could ever hold the request: more GPUs, or a GPU
// type, than any node has. It is the user's request to change, not a wait.
var ErrNoFit = errors.New("no node can run this task")

// ErrNoNode means every candidate node is unreachable.
var ErrNoNode = errors.New("no reachable node")

// RefusedError means no node would take the job: each one that answered
// cannot run jobs as it is (no tmux, a lease directory it cannot use, a
// queue it could not read) or refused the job's submit as such; the others
// are unreachable. Nothing was submitted.
type RefusedError struct {
	Refused     []string // "node (why)", one per node that answered
	Unreachable []string // "node (why)"
}

func (e *RefusedError) Error() string {
	msg := "no node can run the job: " + strings.Join(e.Refused, "; ")
	if len(e.Unreachable) > 0 {
		msg += "; unreachable: " + strings.Join(e.Unreachable, "; ")
	}
	return msg + "; nothing was submitted (`sshq nodes` checks what each node lacks)"
}

// Placement is where a task goes and why.
type Placement struct {
	Node        string     `json:"node"`
	Accel       task.Accel `json:"-"`
	Accelerator string     `json:"accelerator"`
	NumGPUs     int        `json:"num_gpus"`
	AllowedGPUs []string   `json:"allowed_gpus"` // UUIDs of the node's GPUs of the requested type
	FitsNow     bool       `json:"fits_now"`
	FreeGPUs    int        `json:"free_gpus"`
	QueueAhead  int        `json:"queue_ahead"`
	Reason      string     `json:"reason"`
	// Ranks are a multi-node job's nodes, rank 0 (Node) first; for a
	// multi-node job FitsNow means every rank fits now.
	Ranks []RankPlacement `json:"ranks,omitempty"`
	// Backend is store.BackendSlurm when Node is a Slurm login node: the
	// job goes through sbatch, and Slurm picks its compute nodes.
	Backend string `json:"backend,omitempty"`
}

// nodeOffer is one node's answer to a placement question.
type nodeOffer struct {
	Name  string
	Offer *remote.Offer
	Err   error
}

// requests are the shapes a task may take on a node, one per acceptable
// accelerator, in the task's order.
func requests(t *task.Task) ([]task.Accel, []remote.Request) {
	accels := t.Resources.Accelerators
	if len(accels) == 0 {
		accels = []task.Accel{{Count: 0}}
	}
	reqs := make([]remote.Request, len(accels))
	for i, a := range accels {
		reqs[i].NumGPUs = a.Count
		if a.Type != "" {
			typ := a.Type
			reqs[i].Accepts = func(name string) bool { return task.MatchGPU(typ, name) }
		}
	}
	return accels, reqs
}

// Place asks the nodes (or only pin) whether the task would start there
// now, wait in their queue, or never fit, and chooses one. Each node
// answers by its own queue's rule (see orchestrator/remote), in one command
// per node; Place only ranks the answers: where the job fits now, the node
// with the fewest matching GPUs left free after it (best fit, keeping big
// holes for big jobs; for a job without GPUs, the least loaded); else the
// node with the least queued demand. A request no node could ever hold is
// refused with ErrNoFit, naming what the nodes have.
func (c *Cluster) Place(ctx context.Context, t *task.Task, pin string) (Placement, error) {
	if t.NumNodes > 1 {
		return c.placeGang(ctx, t, pin)
	}
	names := c.Names
	if pin != "" {
		names = []string{pin}
	}
	_, reqs := requests(t)
	offers := c.askPlace(ctx, names, reqs)
	if err := ctx.Err(); err != nil {
		// Not the nodes' fault: do not report them unreachable.
		return Placement{}, fmt.Errorf("nothing was submitted (%w)", err)
	}
	return rank(t, offers, pin)
}

// askPlace asks each node Place(reqs), in parallel, one command each.
func (c *Cluster) askPlace(ctx context.Context, names []string, reqs []remote.Request) []nodeOffer {
	offers := make([]nodeOffer, len(names))
	idx := map[string]int{}
	for i, n := range names {
		idx[n] = i
	}
	c.subset(names).Each(ctx, func(ctx context.Context, name string) {
		ctx, cancel := context.WithTimeout(ctx, c.opTimeout(ctx, name))
		defer cancel()
		o, err := c.Node(name).Place(ctx, reqs)
		offers[idx[name]] = nodeOffer{Name: name, Offer: o, Err: err}
	})
	return offers
}

// needsNoQuestion: a job without GPUs or resource bounds, with one node to
// go to, has nothing to ask that node before it is submitted.
func needsNoQuestion(t *task.Task, names []string, pin string) (Placement, bool) {
	if pin == "" && len(names) != 1 || t.NumNodes > 1 || t.Resources.CPUs.Value > 0 || t.Resources.Memory.Value > 0 {
		return Placement{}, false
	}
	for _, a := range t.Resources.Accelerators {
		if a.Count > 0 {
			return Placement{}, false
		}
	}
	node := pin
	if node == "" {
		node = names[0]
	}
	return Placement{Node: node, FitsNow: true, Reason: "no GPU needed"}, true
}

type candidate struct {
	Placement
	pref  int
	spare int     // matching GPUs left free after the job
	load  float64 // load per CPU, for jobs without GPUs
	order int
}

// rank chooses among the nodes' answers.
func rank(t *task.Task, offers []nodeOffer, pin string) (Placement, error) {
	accels, _ := requests(t)
	var down, unable, have []string
	var fits, queues []candidate
	for order, no := range offers {
		if no.Err != nil {
			down = append(down, fmt.Sprintf("%s (%s)", no.Name, firstLine(no.Err.Error())))
			continue
		}
		o := no.Offer
		if !offerMeets(t, o) {
			have = append(have, fmt.Sprintf("%s: %s CPUs, %s RAM", no.Name, fmtCount(o.CPUs), fmtGiB(o.MemTotalMiB)))
			continue
		}
		if len(o.Fits) != len(accels) {
			// The node answered but could not decide (no tmux, its lease
			// directory, its queue): it cannot take jobs as it is. It is
			// up all the same.
			unable = append(unable, fmt.Sprintf("%s (%s)", no.Name, firstLine(strings.Join(o.Errors, "; "))))
			continue
		}
		have = append(have, no.Name+": "+describeGPUs(o))
		load := math.Inf(1)
		if o.CPUs > 0 && o.Load1 >= 0 {
			load = o.Load1 / float64(o.CPUs)
		}
		for pref, a := range accels {
			f := o.Fits[pref]
			if f.Verdict == remote.Never {
				continue
			}
			p := Placement{Node: no.Name, Accel: a, Accelerator: a.Type, NumGPUs: a.Count, AllowedGPUs: f.AllowedGPUs,
				FitsNow: f.Verdict == remote.FitsNow, FreeGPUs: f.Free, QueueAhead: f.Ahead}
			if a.Count == 0 {
				p.AllowedGPUs = nil
			}
			cand := candidate{Placement: p, pref: pref, spare: f.Free - a.Count, load: load, order: order}
			switch {
			case p.FitsNow && a.Count == 0:
				cand.Reason = "no GPU needed"
				fits = append(fits, cand)
			case p.FitsNow:
				cand.Reason = fmt.Sprintf("%d of %d matching GPUs free", f.Free, f.Eligible)
				fits = append(fits, cand)
			default:
				cand.Reason = fmt.Sprintf("waits behind %d job(s) in the node's queue; %d of %d matching GPUs free for it", f.Ahead, f.Free, f.Eligible)
				cand.spare = f.Demand*100 + pref
				queues = append(queues, cand)
			}
		}
	}
	if len(fits) > 0 {
		sort.SliceStable(fits, func(i, j int) bool {
			a, b := fits[i], fits[j]
			if t.Resources.AccelOrdered && a.pref != b.pref {
				return a.pref < b.pref
			}
			if a.spare != b.spare {
				return a.spare < b.spare
			}
			return a.load < b.load
		})
		return fits[0].Placement, nil
	}
	if len(queues) > 0 {
		sort.SliceStable(queues, func(i, j int) bool { return queues[i].spare < queues[j].spare })
		return queues[0].Placement, nil
	}
	want := accelString(accels)
	if len(have) == 0 && len(unable) > 0 {
		return Placement{}, &RefusedError{Refused: unable, Unreachable: down}
	}
	if len(have) == 0 && len(down) > 0 {
		return Placement{}, fmt.Errorf("%w: %s", ErrNoNode, strings.Join(down, "; "))
	}
	msg := "it asks for " + want
	if t.Resources.CPUs.Value > 0 || t.Resources.Memory.Value > 0 {
		msg += fmt.Sprintf(" (cpus %s, memory %s GB)", t.Resources.CPUs, t.Resources.Memory)
	}
	msg += "; the nodes have: " + strings.Join(have, "; ")
	if len(unable) > 0 {
		msg += "; cannot run jobs: " + strings.Join(unable, "; ")
	}
	if len(down) > 0 {
		msg += "; unreachable: " + strings.Join(down, "; ")
	}
	if pin != "" {
		msg += "; drop --node to let sshq choose"
	} else {
		msg += "; ask for fewer GPUs or another type (`sshq status` shows every GPU)"
	}
	return Placement{}, fmt.Errorf("%w: %s", ErrNoFit, msg)
}

func offerMeets(t *task.Task, o *remote.Offer) bool {
	if cpus := t.Resources.CPUs; cpus.Value > 0 && o.CPUs >= 0 && float64(o.CPUs) < cpus.Value {
		return false
	}
	if mem := t.Resources.Memory; mem.Value > 0 && o.MemTotalMiB >= 0 && float64(o.MemTotalMiB)/1024 < mem.Value {
		return false
	}
	return true
}

func describeGPUs(o *remote.Offer) string {
	if len(o.GPUs) == 0 {
		if len(o.Errors) > 0 {
			return "no GPUs (" + firstLine(o.Errors[0]) + ")"
		}
		return "no GPUs"
	}
	count := map[string]int{}
	var order []string
	for _, g := range o.GPUs {
		if count[g.Name] == 0 {
			order = append(order, g.Name)
		}
		count[g.Name]++
	}
	var parts []string
	for _, n := range order {
		parts = append(parts, fmt.Sprintf("%d× %s", count[n], n))
	}
	return strings.Join(parts, ", ")
}

func accelString(as []task.Accel) string {
	var s []string
	for _, a := range as {
		if a.Type == "" {
			s = append(s, fmt.Sprintf("%d GPU(s)", a.Count))
		} else {
			s = append(s, a.String())
		}
	}
	return strings.Join(s, " or ")
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func fmtCount(n int) string {
	if n < 0 {
		return "?"
	}
	return fmt.Sprint(n)
}

func fmtGiB(mib int64) string {
	if mib < 0 {
		return "?"
	}
	return fmt.Sprintf("%.0f GiB", float64(mib)/1024)
}
