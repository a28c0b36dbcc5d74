package remote

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/sshpool"
)

// gangUID is rank r's uid (untagged) of the gang called name.
func gangUID(name string, r int) string {
	if r == 0 {
		return name
	}
	return fmt.Sprintf("%s-r%d", name, r)
}

// submitGang submits a gang as the controller does: rank 0 first, then,
// once its coordinator listens, the others pointed at it. runs[r] is rank
// r's run script.
func submitGang(t *testing.T, nodes []*testNode, name string, gpus int, runs []string, tweak func(*GangSpec)) {
	t.Helper()
	g := GangSpec{Key: NewGangKey(tagged(name), time.Now()), Token: "tok" + strconv.FormatInt(time.Now().UnixNano(), 36) + "0123456789"}
	if tweak != nil {
		tweak(&g)
	}
	for r, n := range nodes {
		s := spec(gangUID(name, r), gpus, runs[r])
		s.NodeRank, s.NumNodes = r, len(nodes)
		gr := g
		s.Gang = &gr
		if r > 0 {
			gi, err := nodes[0].cl().Gang(context.Background(), tagged(name))
			if err != nil {
				t.Fatalf("gang info: %v", err)
			}
			gr.Coordinator = net.JoinHostPort("127.0.0.1", strconv.Itoa(gi.Port))
		}
		if st, err := n.trySubmit(s); err != nil || st != job.Pending {
			t.Fatalf("submit rank %d: %s %v", r, st, err)
		}
	}
}

// rendezvous is a run script that meets the other ranks over TCP using
// only the variables sshq sets: rank 0 listens on MASTER_PORT, the others
// connect to MASTER_ADDR, and each prints what it saw.
const rendezvous = `python3 - <<'EOF'
import os, socket, time
rank = int(os.environ["SKYPILOT_NODE_RANK"])
n = int(os.environ["SKYPILOT_NUM_NODES"])
ips = os.environ["SKYPILOT_NODE_IPS"].split("\n")
addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
assert len(ips) == n and ips[0] == addr, (ips, addr)
if rank == 0:
    s = socket.create_server(("", port))
    got = []
    for _ in range(n - 1):
        c, _ = s.accept()
        got.append(c.recv(100).decode())
        c.sendall(b"welcome")
    print("rank 0 of %d met: %s" % (n, ", ".join(sorted(got))))
else:
    for _ in range(200):
        try:
            c = socket.create_connection((addr, port))
            break
        except OSError:
            time.sleep(0.05)
    c.sendall(b"rank %d" % rank)
    print("rank %d of %d heard: %s (gpus/node %s)" % (rank, n, c.recv(100).decode(), os.environ["SKYPILOT_NUM_GPUS_PER_NODE"]))
EOF
`

// All or nothing: rank 0 holds its GPU (reserved, its run not started)
// while rank 1's node is busy; once rank 1 gets its GPU both run and
// rendezvous over TCP with the variables alone.
func TestGangStartsTogetherAndRendezvous(t *testing.T) {
	t.Parallel()
	n0 := newNode(t, gpusim.T4x1("g0"))
	n1 := newNode(t, gpusim.T4x1("g1"))
	n1.submit(spec("busy-rv", 1, blockUntil("busy-rv")))
	n1.waitState("busy-rv", job.Running)

	run := `echo "$(date +%s%N)" > "$HOME/start-gang"; echo "ips: $(echo $SKYPILOT_NODE_IPS)"` + "\n" + rendezvous
	// Rank 1's address is known (config.yaml's ip:), rank 0's is not: it
	// is the address rank 1 reached it at.
	submitGang(t, []*testNode{n0, n1}, "rv", 1, []string{run, run}, func(g *GangSpec) { g.IPs = []string{"", "192.0.2.7"} })
	waitFor(t, "rank 0 to hold its GPU", func() bool {
		g := n0.job("rv").Gang
		return g != nil && g.Mode == GangHolding
	})
	if g := n1.job(gangUID("rv", 1)).Gang; g == nil || g.Mode != GangWaiting {
		t.Fatalf("rank 1 behind a busy GPU: %+v, want waiting", g)
	}
	ns := n0.node()
	if len(ns.Gangs) != 1 || ns.Gangs[0].Mode != GangHolding || ns.Gangs[0].NumNodes != 2 || len(ns.Leases) != 1 {
		t.Fatalf("rank 0's node: gangs %+v leases %+v, want its GPU held for the gang", ns.Gangs, ns.Leases)
	}
	// Holding long enough for several polls, rank 0's run has not begun.
	time.Sleep(500 * time.Millisecond)
	if _, _, ok := n0.startedAt("gang"); ok || n0.job("rv").State != job.Pending {
		t.Fatalf("rank 0 started before rank 1 held its GPU: %+v\n%s\n---\n%s", n0.job("rv"), n0.log("rv"), n1.log(gangUID("rv", 1)))
	}

	n1.release("busy-rv")
	r0 := n0.waitState("rv", job.Succeeded)
	r1 := n1.waitState(gangUID("rv", 1), job.Succeeded)
	if r0.ExitCode != 0 || r1.ExitCode != 0 {
		t.Fatalf("exit codes %d %d", r0.ExitCode, r1.ExitCode)
	}
	l0, l1 := n0.log("rv"), n1.log(gangUID("rv", 1))
	if !strings.Contains(l0, "rank 0 of 2 met: rank 1") || !strings.Contains(l1, "rank 1 of 2 heard: welcome (gpus/node 1)") ||
		!strings.Contains(l0, "ips: 127.0.0.1 192.0.2.7") || !strings.Contains(l1, "ips: 127.0.0.1 192.0.2.7") {
		t.Fatalf("logs:\n--- rank 0\n%s\n--- rank 1\n%s", l0, l1)
	}
	if len(n0.node().Gangs) != 0 {
		t.Errorf("an ended gang still has records: %+v", n0.node().Gangs)
	}
}

// A rank that exits 3 stops the others: rank 0 ends FAILED with 3,
// naming rank 1, and nothing of it runs on.
func TestGangRankFailureStopsTheOthers(t *testing.T) {
	t.Parallel()
	n0 := newNode(t, gpusim.T4x1("f0"))
	n1 := newNode(t, gpusim.T4x1("f1"))
	// Rank 1 fails only once rank 0 is up with its trap set (the nodes
	// share this machine's disk), so on a loaded machine too the TERM it
	// gets is the gang's stop and not an early kill.
	up := filepath.Join(t.TempDir(), "rank0-up")
	// A loop of short sleeps, not `sleep 300 & wait`: the stop TERMs every
	// process of the rank one by one, and a sleep that dies first would
	// end the wait, and the script, before bash's own TERM arrived.
	long := `trap 'echo got TERM; exit 143' TERM; echo "rank $SKYPILOT_NODE_RANK up"; : >` + sshpool.Quote(up) + `; while :; do sleep 0.05; done`
	fail := `while [ ! -e ` + sshpool.Quote(up) + ` ]; do sleep 0.05; done; echo bad; exit 3`
	submitGang(t, []*testNode{n0, n1}, "fail", 1, []string{long, fail}, func(g *GangSpec) { g.Grace = 20 * time.Second })
	r1 := n1.waitState(gangUID("fail", 1), job.Failed)
	r0 := n0.waitState("fail", job.Failed)
	if r1.ExitCode != 3 || r0.ExitCode != 3 {
		t.Errorf("exit codes: rank 0 %d, rank 1 %d; want 3 for both", r0.ExitCode, r1.ExitCode)
	}
	if g := r0.Gang; g == nil || g.StoppedBy != 1 || g.StopCode != "3" {
		t.Errorf("rank 0's gang status %+v, want stopped by rank 1 (3)", g)
	}
	if g := r1.Gang; g == nil || g.StoppedBy != -1 {
		t.Errorf("rank 1's gang status %+v, want not stopped", g)
	}
	// The wrapper and its display go right after the end is recorded.
	waitFor(t, "rank 0's processes to end", func() bool { return len(markedPIDs("fail")) == 0 })
	if l := n0.log("fail"); !strings.Contains(l, "got TERM") || !strings.Contains(l, "rank 1 ended with exit code 3") {
		t.Errorf("rank 0's log:\n%s", l)
	}
}

// A gang's rank that holds its GPU past the hold limit lets it go and
// keeps its place: a job behind it takes the GPU meanwhile, and the rank
// goes back to waiting once its peer holds.
func TestGangHoldLimitParks(t *testing.T) {
	t.Parallel()
	n0 := newNode(t, gpusim.T4x1("p0"))
	n1 := newNode(t, gpusim.T4x1("p1"))
	n1.submit(spec("busy-park", 1, blockUntil("busy-park")))
	n1.waitState("busy-park", job.Running)
	// The hold must outlast a claim on a loaded machine (two settles and
	// a poll): with less, the ranks could take turns holding forever.
	submitGang(t, []*testNode{n0, n1}, "park", 1, []string{"echo r0", "echo r1"}, func(g *GangSpec) { g.Hold = 4 * time.Second })
	waitFor(t, "rank 0 to park", func() bool {
		g := n0.job("park").Gang
		return g != nil && g.Mode == GangParked
	})
	// Parked, it asks for nothing: a later job takes the GPU at once.
	n0.submit(spec("later-park", 1, "echo later"))
	n0.waitState("later-park", job.Succeeded)
	if q := n0.job("park").QueuePosition; q != 1 {
		t.Errorf("parked rank's place in the queue: %d, want 1", q)
	}
	n1.release("busy-park")
	n0.waitState("park", job.Succeeded)
	n1.waitState(gangUID("park", 1), job.Succeeded)
}

// The agent never starts a rank whose peer could not hold: a rank whose
// wrapper dies before the start makes the other one fail, saying why.
func TestGangPeerGoneBeforeStart(t *testing.T) {
	t.Parallel()
	n0 := newNode(t, gpusim.T4x1("d0"))
	n1 := newNode(t, gpusim.T4x1("d1"))
	n1.submit(spec("busy-gone", 1, blockUntil("busy-gone")))
	n1.waitState("busy-gone", job.Running)
	submitGang(t, []*testNode{n0, n1}, "gone", 1, []string{"echo r0", "echo r1"}, nil)
	n1.waitState(gangUID("gone", 1), job.Pending)
	n1.cancel(time.Second, gangUID("gone", 1))
	r0 := n0.waitState("gone", job.FailedSetup)
	if g := r0.Gang; g == nil || g.StoppedBy != 1 {
		t.Errorf("rank 0: %+v", g)
	}
	if b, _ := os.ReadFile(filepath.Join(n0.jobDir("gone"), "log")); !strings.Contains(string(b), "rank 1 ended with exit code 143") {
		t.Errorf("rank 0's log:\n%s\nrank 1's:\n%s", b, n1.log(gangUID("gone", 1)))
	}
}

// Two gangs that each got one of two nodes first (each holding one GPU and
// waiting for the other's) do not deadlock: the younger lets its GPU go
// to the older, and both finish, never two on one GPU.
func TestGangsCrossedDoNotDeadlock(t *testing.T) {
	t.Parallel()
	n0 := newNode(t, gpusim.T4x1("c0"))
	n1 := newNode(t, gpusim.T4x1("c1"))
	ledger := filepath.Join(t.TempDir(), "ledger")
	run := func(name string) string {
		return fmt.Sprintf(`echo "start %s $HOME $(date +%%s%%N)" >> %s; sleep 0.5; echo "end %s $HOME $(date +%%s%%N)" >> %s`, name, ledger, name, ledger)
	}
	older := GangSpec{Key: NewGangKey(tagged("old"), time.Now()), Token: "0123456789abcdefold"}
	younger := GangSpec{Key: NewGangKey(tagged("young"), time.Now().Add(time.Millisecond)), Token: "0123456789abcdefyoung"}
	rank := func(n *testNode, name string, g GangSpec, r int, coord *testNode) {
		t.Helper()
		s := spec(gangUID(name, r), 1, run(name))
		s.NodeRank, s.NumNodes, s.Gang = r, 2, &g
		if coord != nil {
			gi, err := coord.cl().Gang(context.Background(), tagged(name))
			if err != nil {
				t.Fatal(err)
			}
			g.Coordinator = net.JoinHostPort("127.0.0.1", strconv.Itoa(gi.Port))
		}
		n.submit(s)
	}
	// The younger gang's rank 0 takes n1's GPU, the older's rank 0 n0's;
	// then each one's rank 1 waits for the GPU the other holds.
	rank(n1, "young", younger, 0, nil)
	waitFor(t, "the younger gang to hold n1", func() bool { g := n1.job("young").Gang; return g != nil && g.Mode == GangHolding })
	rank(n0, "old", older, 0, nil)
	waitFor(t, "the older gang to hold n0", func() bool { g := n0.job("old").Gang; return g != nil && g.Mode == GangHolding })
	rank(n1, "old", older, 1, n0)
	rank(n0, "young", younger, 1, n1)
	for _, c := range []struct {
		n   *testNode
		uid string
	}{{n0, "old"}, {n1, gangUID("old", 1)}, {n1, "young"}, {n0, gangUID("young", 1)}} {
		c.n.waitState(c.uid, job.Succeeded)
	}
	b, _ := os.ReadFile(ledger)
	checkLedger(t, string(b))
	if !strings.Contains(n1.log("young"), "an older multi-node job waits here") {
		t.Errorf("the younger gang's rank 0 did not give way:\n%s", n1.log("young"))
	}
}

// checkLedger fails when two jobs used one node's GPU at once; a ledger
// line is "start|end JOB NODEHOME NS".
func checkLedger(t *testing.T, ledger string) {
	t.Helper()
	type span struct {
		job        string
		start, end int64
	}
	open := map[string]span{}
	spans := map[string][]span{}
	for _, l := range strings.Split(strings.TrimSpace(ledger), "\n") {
		f := strings.Fields(l)
		if len(f) != 4 {
			t.Fatalf("ledger line %q", l)
		}
		ns, _ := strconv.ParseInt(f[3], 10, 64)
		k := f[1] + " " + f[2]
		if f[0] == "start" {
			open[k] = span{job: f[1], start: ns}
		} else {
			s := open[k]
			s.end = ns
			spans[f[2]] = append(spans[f[2]], s)
		}
	}
	for node, ss := range spans {
		for i := range ss {
			for j := i + 1; j < len(ss); j++ {
				if ss[i].start < ss[j].end && ss[j].start < ss[i].end {
					t.Errorf("on %s, %s and %s ran at once", node, ss[i].job, ss[j].job)
				}
			}
		}
	}
	if len(open) != 4 {
		t.Errorf("ledger has %d runs, want 4:\n%s", len(open), ledger)
	}
}
