package remote

import (
	"context"
	"strings"
	"testing"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/orchestrator/job"
)

func isA100(name string) bool { return strings.Contains(name, "A100") }

// Placement asks the node, and the node answers by the rule its queue
// decides by. The case here is one a count of free GPUs gets wrong (sshq's
// controller once decided so): the head of the queue waits for A100s, so the
// four free RTX 4090s are no GPUs it would take, and a newcomer asking for
// three GPUs of any type starts at once rather than queueing behind it.
func TestPlaceAnswersByTheQueuesRule(t *testing.T) {
	t.Parallel()
	a100, rtx := gpusim.A100x2("mix"), gpusim.RTX4090x4("mix")
	n := newNode(t, append(append([]gpusim.GPU{}, a100...), rtx...))
	uuids := func(gs []gpusim.GPU) []string {
		var u []string
		for _, g := range gs {
			u = append(u, g.UUID)
		}
		return u
	}
	hold := spec("pl-hold", 2, blockUntil("hold"))
	hold.AllowedGPUs = uuids(a100)
	n.submit(hold)
	n.waitState("pl-hold", job.Running)
	head := spec("pl-head", 2, "true")
	head.AllowedGPUs = uuids(a100)
	n.submit(head)
	n.waitState("pl-head", job.Pending)

	o, err := n.cl().Place(context.Background(), []Request{
		{NumGPUs: 3},
		{NumGPUs: 1, Accepts: isA100},
		{NumGPUs: 3, Accepts: isA100},
		{NumGPUs: 0},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.GPUs) != 6 || o.GPUs[0].Name != a100[0].Name || o.GPUs[5].Name != rtx[3].Name {
		t.Errorf("GPUs %+v", o.GPUs)
	}
	want := []Fit{
		{Verdict: FitsNow, Eligible: 6, Free: 4, Ahead: 1, Demand: 2},
		{Verdict: Waits, Eligible: 2, Free: 0, Ahead: 1, Demand: 2, AllowedGPUs: uuids(a100)},
		{Verdict: Never, Eligible: 2, Ahead: 1, Demand: 2, AllowedGPUs: uuids(a100)},
		{Verdict: FitsNow, Ahead: 1, Demand: 2},
	}
	for i, w := range want {
		f := o.Fits[i]
		if f.Verdict != w.Verdict || f.Eligible != w.Eligible || f.Free != w.Free || f.Ahead != w.Ahead || f.Demand != w.Demand ||
			strings.Join(f.AllowedGPUs, ",") != strings.Join(w.AllowedGPUs, ",") {
			t.Errorf("request %d: %+v, want %+v", i, f, w)
		}
	}
	// What the node said is what its queue does.
	n.submit(spec("pl-new", 3, blockUntil("new")))
	if st := n.waitState("pl-new", job.Running); len(st.GPUs) != 3 || st.GPUs[0].Index < 2 {
		t.Errorf("pl-new holds %+v, want three of the RTX 4090s", st.GPUs)
	}
	if st := n.job("pl-head"); st.State != job.Pending {
		t.Errorf("the head is %s", st.State)
	}
	n.release("new")
	n.release("hold")
	n.waitState("pl-head", job.Succeeded)
}

// A head of the queue that does not fit keeps every free GPU it could use:
// the node says a newcomer waits, and it does.
func TestPlaceKeepsFreeGPUsForTheHead(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.RTX4090x4("keep"))
	n.submit(spec("kp-hold", 3, blockUntil("hold")))
	n.waitState("kp-hold", job.Running)
	n.submit(spec("kp-head", 2, "true"))
	n.waitState("kp-head", job.Pending)
	o, err := n.cl().Place(context.Background(), []Request{{NumGPUs: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if f := o.Fits[0]; f.Verdict != Waits || f.Ahead != 1 || f.Demand != 2 || f.Free != 0 || f.Eligible != 4 {
		t.Errorf("newcomer behind a head that cannot start: %+v", f)
	}
	n.submit(spec("kp-new", 1, "true"))
	if st := n.waitState("kp-new", job.Pending); st.QueuePosition != 2 {
		t.Errorf("kp-new at position %d, want 2", st.QueuePosition)
	}
	n.release("hold")
	n.waitState("kp-head", job.Succeeded)
	n.waitState("kp-new", job.Succeeded)
}
