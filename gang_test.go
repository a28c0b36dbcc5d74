package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
)

// gangJob is a multi-node job as `sshq queue --json` shows it.
type gangJob struct {
	ID       int    `json:"id"`
	UID      string `json:"uid"`
	Node     string `json:"node"`
	State    string `json:"state"`
	ExitCode *int   `json:"exit_code"`
	Gang     *struct {
		Ranks []struct {
			Rank  int    `json:"rank"`
			Node  string `json:"node"`
			UID   string `json:"uid"`
			State string `json:"state"`
			Mode  string `json:"mode"`
		} `json:"ranks"`
		FailedRank *int   `json:"failed_rank"`
		Cause      string `json:"cause"`
	} `json:"gang"`
}

func gangQueue(t *testing.T, r result) []gangJob {
	t.Helper()
	var q []gangJob
	if err := json.Unmarshal([]byte(r.stdout), &q); err != nil {
		t.Fatalf("queue --json: %v\n%s\n%s", err, r.stdout, r.stderr)
	}
	return q
}

// rendezvousTask meets over TCP with nothing but the variables sshq sets:
// rank 0 listens on MASTER_PORT, the others reach MASTER_ADDR; each checks
// SKYPILOT_NODE_IPS against what it sees.
const rendezvousTask = `name: rendezvous
num_nodes: 2
resources:
  accelerators: T4:1
run: |
  python3 - <<'EOF'
  import os, socket, time
  rank = int(os.environ["SKYPILOT_NODE_RANK"])
  n = int(os.environ["SKYPILOT_NUM_NODES"])
  ips = os.environ["SKYPILOT_NODE_IPS"].split("\n")
  addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
  assert len(ips) == n and ips[0] == addr, (ips, addr)
  if rank == 0:
      s = socket.create_server((addr, port))
      c, peer = s.accept()
      msg = c.recv(100).decode()
      c.sendall(b"hello rank %d" % int(msg.split()[1]))
      print("rank 0 of %d met %s from %s (ips %s)" % (n, msg, peer[0], ",".join(ips)))
  else:
      for _ in range(200):
          try:
              c = socket.create_connection((addr, port), timeout=5)
              break
          except OSError:
              time.sleep(0.05)
      c.sendall(b"rank %d" % rank)
      print("rank %d of %d got %r from %s:%d (gpus/node %s)" % (rank, n, c.recv(100).decode(), addr, port, os.environ["SKYPILOT_NUM_GPUS_PER_NODE"]))
  EOF
`

// A 2-node task waits, all or nothing, while one node's GPU is busy (the
// other's shows reserved), then rendezvouses over TCP with the variables
// alone; its logs interleave both ranks, each line naming its rank and
// node, and --rank shows one.
func TestGangRendezvousAllOrNothing(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"node1": gpusim.T4x1(t.Name() + "1"), "node2": gpusim.T4x1(t.Name() + "2")})
	flag := filepath.Join(home, "go-on")
	r := sshq(t, c, home, env, "launch", "-d", "--node", "node2", "--gpus", "1", "--name", "blocker", "--", "while [ ! -e "+flag+" ]; do sleep 0.1; done")
	if r.code != 0 {
		t.Fatalf("blocker: %d %s", r.code, r.stderr)
	}
	waitFor(t, "the blocker to run", func() bool { return gangQueue(t, sshq(t, c, home, env, "queue", "--json"))[0].State == "RUNNING" })

	task := writeTask(t, home, "rv.yaml", rendezvousTask)
	r = sshq(t, c, home, env, "launch", "-d", task)
	if r.code != 0 {
		t.Fatalf("launch -d: exit %d\n%s", r.code, r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	if !strings.Contains(r.stderr, "node1+node2") {
		t.Errorf("launch did not name both nodes: %s", r.stderr)
	}
	// node1's GPU is held for the job (reserved), node2's rank waits, and
	// nothing of the job runs.
	waitFor(t, "node1's GPU to be reserved", func() bool {
		return strings.Contains(sshq(t, c, home, env, "status").stdout, "reserved: #2 rendezvous")
	})
	q := sshq(t, c, home, env, "queue")
	if !strings.Contains(q.stdout, "node1+node2") || !strings.Contains(q.stdout, "PENDING (1/2 ranks hold their GPUs") {
		t.Errorf("queue while rank 0 holds:\n%s", q.stdout)
	}
	if l := sshq(t, c, home, env, "logs", id); strings.Contains(l.stdout, "met") {
		t.Fatalf("rank 0 ran before rank 1 held its GPU:\n%s", l.stdout)
	}

	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r = sshq(t, c, home, env, "logs", "-f", id)
	if r.code != 0 {
		t.Fatalf("logs -f: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"(rank 0, node1) rank 0 of 2 met rank 1", "(rank 1, node2) rank 1 of 2 got 'hello rank 1'", "(gpus/node 1)"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("logs -f lack %q:\n%s", want, r.stdout)
		}
	}
	r = sshq(t, c, home, env, "logs", "--rank", "1", id)
	if r.code != 0 || strings.Contains(r.stdout, "(rank") || !strings.Contains(r.stdout, "rank 1 of 2 got") || strings.Contains(r.stdout, "rank 0 of 2") {
		t.Errorf("logs --rank 1: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	j := gangQueue(t, sshq(t, c, home, env, "queue", "-a", "--json"))[1]
	if j.State != "SUCCEEDED" || j.Gang == nil || len(j.Gang.Ranks) != 2 || j.Gang.Ranks[1].Node != "node2" {
		t.Errorf("job: %+v", j)
	}
}

// Two controllers each launch a 2-node job on the same two nodes at once,
// each seeing the nodes in the other order, so that each gang's rank 0
// takes a different node's only GPU first. Both finish; no GPU is ever
// used by two jobs at once (a ledger the jobs write says so).
func TestGangsOfTwoControllersDoNotDeadlock(t *testing.T) {
	t.Parallel()
	c, homeA, _ := gpuCluster(t, map[string][]gpusim.GPU{"node1": gpusim.T4x1(t.Name() + "1"), "node2": gpusim.T4x1(t.Name() + "2")})
	homeB := t.TempDir()
	ledger := filepath.Join(homeA, "ledger")
	task := writeTask(t, homeA, "ledger.yaml", `name: ledger
num_nodes: 2
resources:
  accelerators: 1
run: |
  echo "start $SKYPILOT_TASK_ID $HOME $(date +%s%N)" >> `+ledger+`
  sleep 1
  echo "end $SKYPILOT_TASK_ID $HOME $(date +%s%N)" >> `+ledger+`
`)
	envA, envB := []string{"SSHQ_NODES=node1,node2"}, []string{"SSHQ_NODES=node2,node1"}
	type launched struct {
		r   result
		env []string
		hm  string
	}
	done := make(chan launched, 4)
	for _, l := range []launched{{env: envA, hm: homeA}, {env: envB, hm: homeB}} {
		go func() {
			l.r = sshq(t, c, l.hm, l.env, "launch", "-d", task)
			done <- l
		}()
	}
	for range 2 {
		l := <-done
		if l.r.code != 0 {
			t.Fatalf("launch: exit %d\n%s", l.r.code, l.r.stderr)
		}
		go func() {
			l.r = sshq(t, c, l.hm, l.env, "wait", strings.TrimSpace(l.r.stdout))
			done <- l
		}()
	}
	for range 2 {
		if l := <-done; l.r.code != 0 {
			t.Errorf("wait: exit %d\n%s%s\n%s", l.r.code, l.r.stdout, l.r.stderr, sshq(t, c, l.hm, l.env, "queue", "-a").stdout)
		}
	}
	b, err := os.ReadFile(ledger)
	if err != nil {
		t.Fatal(err)
	}
	type span struct {
		job        string
		start, end int64
	}
	open := map[string]span{}
	var spans []span
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) != 4 {
			t.Fatalf("ledger line %q", l)
		}
		ns, _ := strconv.ParseInt(f[3], 10, 64)
		key := f[1] + " " + f[2]
		if f[0] == "start" {
			open[key] = span{job: key, start: ns}
			continue
		}
		s := open[key]
		s.end = ns
		spans = append(spans, s)
	}
	if len(spans) != 4 {
		t.Fatalf("ledger holds %d runs, want 4 (2 jobs × 2 ranks):\n%s", len(spans), b)
	}
	for i := range spans {
		for k := i + 1; k < len(spans); k++ {
			a, o := spans[i], spans[k]
			sameNode := strings.Fields(a.job)[1] == strings.Fields(o.job)[1]
			if sameNode && a.start < o.end && o.start < a.end {
				t.Errorf("%s and %s used one node's GPU at once", a.job, o.job)
			}
		}
	}
}

// A rank that exits 3 ends the job: `sshq wait` exits 3, the job is FAILED
// naming rank 1, and nothing of rank 0 runs on.
func TestGangRankFailureEndsTheJob(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"node1": gpusim.T4x1(t.Name() + "1"), "node2": gpusim.T4x1(t.Name() + "2")})
	r := sshq(t, c, home, env, "launch", "-d", "--num-nodes", "2", "--gpus", "1", "--name", "crash", "--",
		`if [ "$SKYPILOT_NODE_RANK" = 1 ]; then sleep 1; echo failing; exit 3; fi; sleep 600 & wait`)
	if r.code != 0 {
		t.Fatalf("launch: exit %d\n%s", r.code, r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	r = sshq(t, c, home, env, "wait", id)
	if r.code != 3 {
		t.Errorf("wait: exit %d, want 3\n%s%s", r.code, r.stdout, r.stderr)
	}
	j := gangQueue(t, sshq(t, c, home, env, "queue", "-a", "--json"))[0]
	if j.State != "FAILED" || j.ExitCode == nil || *j.ExitCode != 3 || j.Gang == nil || j.Gang.FailedRank == nil || *j.Gang.FailedRank != 1 {
		t.Fatalf("job: %+v %+v", j, j.Gang)
	}
	// Placement picks each rank's node: rank r runs on the r-th of NODE.
	var nodes []string
	for _, rk := range j.Gang.Ranks {
		nodes = append(nodes, rk.Node)
	}
	if len(nodes) != 2 {
		t.Fatalf("job's ranks %+v, want two", j.Gang.Ranks)
	}
	if q := sshq(t, c, home, env, "queue", "-a").stdout; !strings.Contains(q, "FAILED (rank 1 ("+nodes[1]+") failed with exit code 3)") {
		t.Errorf("queue does not name the rank:\n%s", q)
	}
	// Every process of rank 0 carries its uid in SSHQ_JOB_UID; its wrapper
	// and display go right after the end is recorded.
	waitFor(t, "rank 0's processes to end", func() bool { return len(marked(j.UID)) == 0 })
	r = sshq(t, c, home, env, "logs", id)
	if !strings.Contains(r.stdout, "(rank 1, "+nodes[1]+") failing") || !strings.Contains(r.stdout, "(rank 0, "+nodes[0]+") sshq: stopped: rank 1 ended with exit code 3") {
		t.Errorf("logs:\n%s", r.stdout)
	}
}

// SkyPilot's multi-node task files, unchanged, pass launch --dry-run with
// each rank's node shown.
func TestSkyPilotMultiNodeDryRun(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"node1": gpusim.A100x2(t.Name() + "1"), "node2": gpusim.A100x2(t.Name() + "2"), "node3": gpusim.A100x2(t.Name() + "3")})
	dir, err := filepath.Abs("testdata/skypilot/multinode")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if len(files) < 3 {
		t.Fatalf("%d multi-node files", len(files))
	}
	for _, f := range files {
		r := sshqIn(t, dir, c, home, env, "launch", "--dry-run", "--secret", "HF_TOKEN=x", filepath.Base(f))
		if r.code != 0 {
			t.Errorf("%s: exit %d\n%s%s", filepath.Base(f), r.code, r.stdout, r.stderr)
			continue
		}
		for _, want := range []string{"nothing was changed", "rank 0:   node", "rank 1:   node", "starts now", "× A100 on each node"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("%s: the plan lacks %q:\n%s", filepath.Base(f), want, r.stdout)
			}
		}
	}
	r := sshqIn(t, dir, c, home, env, "launch", "--dry-run", "ray.yaml", "--num-nodes", "4")
	if r.code == 0 || !strings.Contains(r.stderr, "runs on 4 nodes") {
		t.Errorf("4 nodes of 3: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if len(queue(t, c, home, env)) != 0 {
		t.Error("a dry run submitted a job")
	}
}

// Cancel ends every rank; a rank whose node goes away mid-run (its
// processes killed, its sshd down) ends the job FAILED naming that rank,
// and the other rank stops.
func TestGangCancelAndLostRank(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"node1": gpusim.A100x2(t.Name() + "1"), "node2": gpusim.A100x2(t.Name() + "2")})
	env = append(env, "SSHQ_GANG_LOST=2s")
	run := func(name string) string {
		r := sshq(t, c, home, env, "launch", "-d", "--num-nodes", "2", "--gpus", "1", "--name", name, "--", "echo up; sleep 600 & wait")
		if r.code != 0 {
			t.Fatalf("launch: exit %d\n%s", r.code, r.stderr)
		}
		return strings.TrimSpace(r.stdout)
	}
	a, b := run("a"), run("b")
	running := func() bool {
		for _, j := range gangQueue(t, sshq(t, c, home, env, "queue", "--json")) {
			if j.State != "RUNNING" {
				return false
			}
		}
		return true
	}
	waitFor(t, "both jobs to run", running)
	q := gangQueue(t, sshq(t, c, home, env, "queue", "--json"))

	r := sshq(t, c, home, env, "cancel", a)
	if r.code != 0 {
		t.Errorf("cancel: exit %d %s", r.code, r.stderr)
	}
	ja := gangQueue(t, sshq(t, c, home, env, "queue", "-a", "--json"))[0]
	if ja.State != "CANCELLED" || ja.Gang.Ranks[0].State != "CANCELLED" || ja.Gang.Ranks[1].State != "CANCELLED" {
		t.Errorf("cancelled job: %+v", ja.Gang)
	}
	for _, rk := range q[0].Gang.Ranks {
		waitFor(t, fmt.Sprintf("rank %d of the cancelled job to end", rk.Rank), func() bool { return len(marked(rk.UID)) == 0 })
	}

	// node2 goes away with b's rank 1: its processes die at once, as in a
	// power cut, and nobody can reach it.
	c.Node("node2").Stop()
	for _, p := range marked(q[1].Gang.Ranks[1].UID) {
		syscall.Kill(p, syscall.SIGKILL)
	}
	r = sshq(t, c, home, env, "wait", b)
	jb := gangQueue(t, sshq(t, c, home, env, "queue", "-a", "--json"))[1]
	if r.code != 1 || jb.State != "FAILED" || jb.Gang.FailedRank == nil || *jb.Gang.FailedRank != 1 || !strings.Contains(jb.Gang.Cause, "lost") {
		t.Errorf("wait: exit %d, job %s %+v\n%s", r.code, jb.State, jb.Gang, r.stderr)
	}
	waitFor(t, "rank 0 of the job that lost its rank 1 to end", func() bool { return len(marked(q[1].Gang.Ranks[0].UID)) == 0 })
}

// marked are the live processes whose environment holds SSHQ_JOB_UID=uid.
func marked(uid string) []int {
	var pids []int
	mark := []byte("\x00SSHQ_JOB_UID=" + uid + "\x00")
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !bytes.Contains(append([]byte{0}, env...), mark) {
			continue
		}
		if st, _ := os.ReadFile("/proc/" + e.Name() + "/stat"); !strings.Contains(string(st), ") Z") {
			pids = append(pids, pid)
		}
	}
	return pids
}
