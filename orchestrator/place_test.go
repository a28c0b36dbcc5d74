package orchestrator

import (
	"errors"
	"strings"
	"testing"

	"github.com/sshq/sshq/orchestrator/remote"
	"github.com/sshq/sshq/orchestrator/task"
)

// offer is a node's answer: n GPUs of model, and one Fit per request.
func offer(name, model string, n int, fits ...remote.Fit) nodeOffer {
	o := &remote.Offer{CPUs: 32, MemTotalMiB: 256 * 1024, Load1: 0, Fits: fits}
	for i := 0; i < n; i++ {
		o.GPUs = append(o.GPUs, remote.GPUInfo{Index: i, UUID: name + "-" + string(rune('a'+i)), Name: model})
	}
	return nodeOffer{Name: name, Offer: o}
}

func now(free, eligible int) remote.Fit {
	return remote.Fit{Verdict: remote.FitsNow, Free: free, Eligible: eligible}
}

func waits(ahead, demand int) remote.Fit {
	return remote.Fit{Verdict: remote.Waits, Ahead: ahead, Demand: demand, Eligible: 4}
}

func never(eligible int) remote.Fit { return remote.Fit{Verdict: remote.Never, Eligible: eligible} }

func taskWith(accels ...task.Accel) *task.Task {
	return &task.Task{Name: "t", Resources: task.Resources{Accelerators: accels}}
}

// The rule that decides whether a job starts now lives on the node
// (orchestrator/remote's place action, tested there); rank only orders the
// nodes' answers.
func TestRankingOfTheNodesAnswers(t *testing.T) {
	t.Parallel()
	a100 := "NVIDIA A100-SXM4-80GB"
	h100 := "NVIDIA H100 80GB HBM3"
	loaded := offer("busy", "", 0, now(0, 0))
	loaded.Offer.Load1 = 30
	for _, tc := range []struct {
		name    string
		task    *task.Task
		nodes   []nodeOffer
		want    string
		fitsNow bool
		err     error
		errHas  []string
	}{
		{"best fit leaves big holes for big jobs", taskWith(task.Accel{Count: 1}),
			[]nodeOffer{offer("big", a100, 4, now(4, 4)), offer("small", a100, 2, now(1, 2))}, "small", true, nil, nil},
		{"the node's verdict wins over free counts", taskWith(task.Accel{Count: 1}),
			[]nodeOffer{offer("a", a100, 4, waits(1, 2)), offer("b", a100, 2, now(1, 2))}, "b", true, nil, nil},
		{"never is not a candidate", taskWith(task.Accel{Type: "H100", Count: 2}),
			[]nodeOffer{offer("a", a100, 2, never(0)), offer("h", h100, 2, now(2, 2))}, "h", true, nil, nil},
		{"no fit now: least queued demand", taskWith(task.Accel{Count: 2}),
			[]nodeOffer{offer("a", a100, 2, waits(2, 4)), offer("b", a100, 2, waits(1, 1))}, "b", false, nil, nil},
		{"ordered list: first choice that fits now", &task.Task{Resources: task.Resources{AccelOrdered: true,
			Accelerators: []task.Accel{{Type: "H100", Count: 1}, {Type: "A100", Count: 1}}}},
			[]nodeOffer{offer("a", a100, 1, never(0), now(1, 1)), offer("h", h100, 2, now(2, 2), never(0))}, "h", true, nil, nil},
		{"CPU job goes to the least loaded reachable node", taskWith(),
			[]nodeOffer{{Name: "down", Err: errors.New("refused")}, loaded, offer("idle", "", 0, now(0, 0))}, "idle", true, nil, nil},
		{"more GPUs than any node has", taskWith(task.Accel{Count: 8}),
			[]nodeOffer{offer("a", a100, 2, never(2)), offer("b", h100, 1, never(1))}, "", false, ErrNoFit,
			[]string{"8 GPU(s)", "a: 2× NVIDIA A100-SXM4-80GB", "b: 1× NVIDIA H100 80GB HBM3"}},
		{"a GPU type no node has", taskWith(task.Accel{Type: "V100", Count: 1}),
			[]nodeOffer{offer("a", a100, 1, never(0))}, "", false, ErrNoFit, []string{"V100:1", "A100"}},
		{"not enough memory", &task.Task{Resources: task.Resources{Memory: task.Quantity{Value: 1024}, Accelerators: []task.Accel{{Count: 1}}}},
			[]nodeOffer{offer("a", a100, 1, now(1, 1))}, "", false, ErrNoFit, []string{"RAM"}},
		{"everything down", taskWith(task.Accel{Count: 1}),
			[]nodeOffer{{Name: "a", Err: errors.New("connection refused")}}, "", false, ErrNoNode, []string{"connection refused"}},
		{"a node that could not decide cannot take the job", taskWith(task.Accel{Count: 1}),
			[]nodeOffer{{Name: "a", Offer: &remote.Offer{CPUs: 8, MemTotalMiB: 1 << 20, Errors: []string{"lease directory /tmp/sshq-leases is a symlink"}}}},
			"", false, &RefusedError{}, []string{"a (lease directory /tmp/sshq-leases is a symlink)", "nothing was submitted"}},
		{"a node that cannot run jobs is not called unreachable", taskWith(task.Accel{Count: 1}),
			[]nodeOffer{{Name: "a", Offer: &remote.Offer{CPUs: 8, MemTotalMiB: 1 << 20, Errors: []string{"tmux is not installed"}}},
				{Name: "b", Err: errors.New("connection refused")}},
			"", false, &RefusedError{}, []string{"no node can run the job: a (tmux is not installed); unreachable: b (connection refused)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := rank(tc.task, tc.nodes, "")
			if tc.err != nil {
				var re *RefusedError
				if _, refused := tc.err.(*RefusedError); refused && !errors.As(err, &re) || !refused && !errors.Is(err, tc.err) {
					t.Fatalf("err %v, want %T %v", err, tc.err, tc.err)
				}
				for _, s := range tc.errHas {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error lacks %q: %v", s, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Node != tc.want || p.FitsNow != tc.fitsNow {
				t.Errorf("placed on %s (fits now %v), want %s (%v): %s", p.Node, p.FitsNow, tc.want, tc.fitsNow, p.Reason)
			}
		})
	}
}
