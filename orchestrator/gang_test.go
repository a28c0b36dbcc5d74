package orchestrator

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshq/sshq/inventory"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/remote"
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/orchestrator/task"
)

// A multi-node job goes to distinct nodes under one accelerator: those
// where it starts now first, best fit, rank 0 the best.
func TestGangPlacement(t *testing.T) {
	t.Parallel()
	a100, h100 := "NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3"
	gang := func(n int, accels ...task.Accel) *task.Task {
		tk := taskWith(accels...)
		tk.NumNodes = n
		return tk
	}
	for _, tc := range []struct {
		name    string
		task    *task.Task
		nodes   []nodeOffer
		want    []string
		fitsNow bool
		errHas  string
	}{
		{"fits now first, then best fit", gang(2, task.Accel{Count: 1}),
			[]nodeOffer{offer("big", a100, 4, now(4, 4)), offer("busy", a100, 2, waits(1, 2)), offer("small", a100, 2, now(1, 2))},
			[]string{"small", "big"}, true, ""},
		{"a node that waits completes the gang", gang(2, task.Accel{Count: 2}),
			[]nodeOffer{offer("a", a100, 2, now(2, 2)), offer("b", a100, 2, waits(1, 2)), offer("c", a100, 2, never(0))},
			[]string{"a", "b"}, false, ""},
		{"one accelerator for every rank", gang(2, task.Accel{Type: "A100", Count: 2}, task.Accel{Type: "H100", Count: 2}),
			[]nodeOffer{offer("a", a100, 2, now(2, 2), never(0)), offer("h1", h100, 2, never(0), now(2, 2)), offer("h2", h100, 2, never(0), now(2, 2))},
			[]string{"h1", "h2"}, true, ""},
		{"too few nodes", gang(3, task.Accel{Count: 1}),
			[]nodeOffer{offer("a", a100, 2, now(2, 2)), offer("b", a100, 2, now(2, 2))},
			nil, false, "runs on 3 nodes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := rankGang(tc.task, tc.nodes)
			if tc.errHas != "" {
				if !errors.Is(err, ErrNoFit) || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("err %v, want ErrNoFit with %q", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range p.Ranks {
				got = append(got, r.Node)
			}
			if strings.Join(got, "+") != strings.Join(tc.want, "+") || p.Node != tc.want[0] || p.FitsNow != tc.fitsNow {
				t.Errorf("placed on %v (rank 0 %s, fits now %v), want %v (%v)", got, p.Node, p.FitsNow, tc.want, tc.fitsNow)
			}
		})
	}
}

// The job's state sums its ranks up: it ends when every rank has, as the
// rank that ended it did.
func TestGangSumsItsRanksUp(t *testing.T) {
	t.Parallel()
	code := func(c int) *int { return &c }
	by := func(r int) *int { return &r }
	at := func(s int) *time.Time { t := time.Unix(int64(s), 0); return &t }
	rank := func(r int, st job.State, exit *int, stoppedBy *int, ended *time.Time) store.Rank {
		return store.Rank{Rank: r, Node: "n" + string(rune('0'+r)), State: st, ExitCode: exit, StoppedBy: stoppedBy, Ended: ended}
	}
	for _, tc := range []struct {
		name   string
		ranks  []store.Rank
		state  job.State
		exit   *int
		failed *int
	}{
		{"one waits", []store.Rank{rank(0, job.Pending, nil, nil, nil), rank(1, job.Pending, nil, nil, nil)}, job.Pending, nil, nil},
		{"one runs, one ended", []store.Rank{rank(0, job.Running, nil, nil, nil), rank(1, job.Succeeded, code(0), nil, at(5))}, job.Running, nil, nil},
		{"all succeeded", []store.Rank{rank(0, job.Succeeded, code(0), nil, at(5)), rank(1, job.Succeeded, code(0), nil, at(6))}, job.Succeeded, code(0), nil},
		{"rank 1 failed, rank 0 stopped", []store.Rank{rank(0, job.Failed, code(3), by(1), at(6)), rank(1, job.Failed, code(3), nil, at(5))}, job.Failed, code(3), by(1)},
		{"the first to fail on its own", []store.Rank{rank(0, job.Failed, code(2), nil, at(7)), rank(1, job.Failed, code(4), nil, at(5)), rank(2, job.Failed, code(4), by(1), at(8))}, job.Failed, code(4), by(1)},
		{"a lost rank fails the job without a code", []store.Rank{rank(0, job.Failed, code(143), by(1), at(6)), rank(1, job.Lost, nil, nil, nil)}, job.Failed, nil, by(1)},
		{"setup failed", []store.Rank{rank(0, job.FailedSetup, code(7), nil, at(3)), rank(1, job.FailedSetup, code(7), by(0), at(4))}, job.FailedSetup, code(7), by(0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := &store.Job{ID: 1, State: job.Pending, GPUs: []int{}, Gang: &store.Gang{Ranks: tc.ranks}}
			sumGang(j, time.Unix(100, 0))
			if j.State != tc.state || (j.ExitCode == nil) != (tc.exit == nil) || j.ExitCode != nil && *j.ExitCode != *tc.exit {
				t.Errorf("state %s exit %v, want %s %v", j.State, deref(j.ExitCode), tc.state, deref(tc.exit))
			}
			if (j.Gang.FailedRank == nil) != (tc.failed == nil) || tc.failed != nil && *j.Gang.FailedRank != *tc.failed {
				t.Errorf("failed rank %v, want %v (%s)", deref(j.Gang.FailedRank), deref(tc.failed), j.Gang.Cause)
			}
		})
	}
}

// A rank whose node does not answer ended as the rank it stopped heard:
// lost, or with the code its agent gave; one that answers says itself.
func TestGangRankUnreachableEndsAsItsPeerHeard(t *testing.T) {
	t.Parallel()
	now := time.Unix(100, 0)
	for _, tc := range []struct {
		stopCode  string
		reachable bool
		state     job.State
		exit      any
		cause     string
	}{
		{"lost", false, job.Failed, nil, "rank 1 (b) lost"},
		{"9", false, job.Failed, 9, "rank 1 (b) failed with exit code 9"},
		{"lost", true, job.FailedSetup, 4, "rank 1 (b) setup failed with exit code 4"},
	} {
		j := &store.Job{ID: 1, State: job.Running, GPUs: []int{}, Gang: &store.Gang{Ranks: []store.Rank{
			{Rank: 0, Node: "a", UID: "u", State: job.Running}, {Rank: 1, Node: "b", UID: "u-r1", State: job.Running}}}}
		applyGang(j, func(r int) rankStatus {
			if r == 1 {
				if !tc.reachable {
					return rankStatus{} // its node is down
				}
				return rankStatus{answered: true, js: remote.JobStatus{Found: true, State: job.FailedSetup, Exited: true, ExitCode: 4}}
			}
			return rankStatus{answered: true, js: remote.JobStatus{Found: true, State: job.Failed, Exited: true, ExitCode: 143,
				History: []remote.Transition{{State: job.Running, At: now}, {State: job.Failed, At: now}},
				Gang:    &remote.GangStatus{Mode: remote.GangStarted, StoppedBy: 1, StopCode: tc.stopCode}}}
		}, now)
		if j.State != tc.state || deref(j.ExitCode) != tc.exit || j.Gang.Cause != tc.cause {
			t.Errorf("%s, reachable %v: job %s exit %v cause %q; want %s %v %q", tc.stopCode, tc.reachable, j.State, deref(j.ExitCode), j.Gang.Cause, tc.state, tc.exit, tc.cause)
		}
	}
}

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

// A node's address for its peers: config.yaml's ip:, else its HostName
// when that is an address, else none (the node finds it).
func TestGangRankIP(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(cfg, []byte("Host a\n  HostName 10.1.2.3\nHost b\n  HostName gpu-b.lan\nHost c\n  HostName 10.9.9.9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ssh, err := inventory.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{Resolver: inventory.NewResolver(ssh), PerNode: map[string]inventory.NodeSettings{"c": {IP: "192.168.7.3"}}}
	for node, want := range map[string]string{"a": "10.1.2.3", "b": "", "c": "192.168.7.3"} {
		if got := c.rankIP(context.Background(), node); got != want {
			t.Errorf("%s: %q, want %q", node, got, want)
		}
	}
}
