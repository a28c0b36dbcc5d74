package orchestrator

import (
	"errors"
	"strings"
	"testing"

	"github.com/sshq/sshq/orchestrator/task"
)

func node(name string, model string, states ...string) NodeStatus {
	ns := NodeStatus{Name: name, Reachable: true, CPUs: 32, MemTotalMiB: 256 * 1024}
	for i, s := range states {
		ns.GPUs = append(ns.GPUs, GPUStatus{Index: i, UUID: name + "-" + string(rune('a'+i)), Name: model, State: s})
	}
	return ns
}

func withQueue(ns NodeStatus, needs ...int) NodeStatus {
	for i, n := range needs {
		ns.Queue = append(ns.Queue, QueueEntry{Position: i + 1, NumGPUs: n})
	}
	return ns
}

func taskWith(accels ...task.Accel) *task.Task {
	return &task.Task{Name: "t", Resources: task.Resources{Accelerators: accels}}
}

func TestPlacement(t *testing.T) {
	t.Parallel()
	a100 := "NVIDIA A100-SXM4-80GB"
	h100 := "NVIDIA H100 80GB HBM3"
	for _, tc := range []struct {
		name    string
		task    *task.Task
		nodes   []NodeStatus
		want    string
		fitsNow bool
		err     error
		errHas  []string
	}{
		{"best fit leaves big holes for big jobs", taskWith(task.Accel{Count: 1}),
			[]NodeStatus{node("big", a100, "free", "free", "free", "free"), node("small", a100, "leased", "free")}, "small", true, nil, nil},
		{"type filter", taskWith(task.Accel{Type: "H100", Count: 2}),
			[]NodeStatus{node("a", a100, "free", "free"), node("h", h100, "free", "free")}, "h", true, nil, nil},
		{"foreign GPUs are not free", taskWith(task.Accel{Count: 2}),
			[]NodeStatus{node("a", a100, "foreign", "free"), node("b", a100, "free", "free", "leased")}, "b", true, nil, nil},
		{"no fit now: least queued demand", taskWith(task.Accel{Count: 2}),
			[]NodeStatus{withQueue(node("a", a100, "leased", "leased"), 2, 2), withQueue(node("b", a100, "leased", "leased"), 1)}, "b", false, nil, nil},
		{"a waiting head is not jumped", taskWith(task.Accel{Count: 1}),
			[]NodeStatus{withQueue(node("a", a100, "free", "leased", "leased"), 2)}, "a", false, nil, nil},
		{"backfill when free GPUs cover head and newcomer", taskWith(task.Accel{Count: 1}),
			[]NodeStatus{withQueue(node("a", a100, "free", "free", "free", "leased"), 2)}, "a", true, nil, nil},
		{"ordered list: first choice that fits now", &task.Task{Resources: task.Resources{AccelOrdered: true,
			Accelerators: []task.Accel{{Type: "H100", Count: 1}, {Type: "A100", Count: 1}}}},
			[]NodeStatus{node("a", a100, "free"), node("h", h100, "free", "free")}, "h", true, nil, nil},
		{"CPU job goes anywhere reachable", taskWith(),
			[]NodeStatus{{Name: "down", Error: "refused"}, node("cpu", a100)}, "cpu", true, nil, nil},
		{"more GPUs than any node has", taskWith(task.Accel{Count: 8}),
			[]NodeStatus{node("a", a100, "free", "free"), node("b", h100, "free")}, "", false, ErrNoFit,
			[]string{"8 GPU(s)", "a: 2× NVIDIA A100-SXM4-80GB", "b: 1× NVIDIA H100 80GB HBM3"}},
		{"a GPU type no node has", taskWith(task.Accel{Type: "V100", Count: 1}),
			[]NodeStatus{node("a", a100, "free")}, "", false, ErrNoFit, []string{"V100:1", "A100"}},
		{"not enough memory", &task.Task{Resources: task.Resources{Memory: task.Quantity{Value: 1024}, Accelerators: []task.Accel{{Count: 1}}}},
			[]NodeStatus{node("a", a100, "free")}, "", false, ErrNoFit, []string{"RAM"}},
		{"everything down", taskWith(task.Accel{Count: 1}),
			[]NodeStatus{{Name: "a", Error: "connection refused"}}, "", false, ErrNoNode, []string{"connection refused"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := place(tc.task, tc.nodes, "")
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err %v, want %v", err, tc.err)
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
