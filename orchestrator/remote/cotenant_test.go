package remote

// Co-tenants: two Unix users of one node, each reaching it over real sshd.
// User a runs jobs; user b does on the node what any unprivileged user can,
// by mistake or on purpose. Whatever b does, a's jobs never share a GPU,
// a job that fits is never held for long, a job without GPUs is never
// blocked, and status names whose a record really is.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshq/sshq/inventory"
	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/sshpool"
	"github.com/sshq/sshq/sshpool/sshtest"
)

type tenants struct {
	t      *testing.T
	c      *sshtest.Cluster
	n      *sshtest.Node
	pool   *sshpool.Pool
	users  []sshtest.User
	gpus   []gpusim.GPU
	tmp    string // <node>/tmp: root's and sticky, as /tmp is
	events string // every job appends its start and end here

	mu   sync.Mutex
	uids map[int][]string
}

// newTenants starts one node, "box", with gpus and two users (a = 0,
// b = 1) sharing it.
func newTenants(t *testing.T, gpus []gpusim.GPU) *tenants {
	t.Helper()
	c := sshtest.Start(t, sshtest.Options{Names: []string{"box"}, Env: map[string]string{"SSHQ_POLL_INTERVAL": "0.2"}})
	n := c.Node("box")
	if err := gpusim.Install(n.Dir, gpus); err != nil {
		t.Fatal(err)
	}
	users := c.AddUsers(t, n, 2, "/bin/bash")
	ev := filepath.Join(n.Dir, "events")
	if err := os.Mkdir(ev, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(ev, 0o777)
	h := &tenants{t: t, c: c, n: n, users: users, gpus: gpus, tmp: filepath.Join(n.Dir, "tmp"),
		events: filepath.Join(ev, "log"), uids: map[int][]string{}}
	if err := os.WriteFile(h.events, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(h.events, 0o666)
	cfg, err := inventory.Load(c.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	h.pool = sshpool.New(inventory.NewResolver(cfg))
	t.Cleanup(func() {
		for i := range h.users {
			h.mu.Lock()
			uids := taggedAll(h.uids[i])
			h.mu.Unlock()
			if len(uids) > 0 {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				h.cl(i).Cancel(ctx, uids, 50*time.Millisecond)
				cancel()
			}
		}
		h.pool.Close()
	})
	return h
}

func (h *tenants) cl(i int) *Client { return New(h.users[i].Alias, h.pool.Node(h.users[i].Alias)) }

func ctx15(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// sh runs a shell script as user i on the node and returns its output.
func (h *tenants) sh(i int, script string) string {
	h.t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := h.pool.Node(h.users[i].Alias).Run(ctx, sshpool.Command("bash", "-c", script), nil, &out, &errb); err != nil {
		h.t.Fatalf("as %s: %v", h.users[i].Name, err)
	}
	return out.String() + errb.String()
}

// submit submits, as user i, a job that records its run in the ledger and
// runs until released (release) when hold is set.
func (h *tenants) submit(i int, name string, gpus int, hold bool) {
	h.t.Helper()
	h.mu.Lock()
	h.uids[i] = append(h.uids[i], name)
	h.mu.Unlock()
	body := "true"
	if hold {
		body = fmt.Sprintf("while [ ! -e %s ]; do sleep 0.05; done", shellQuote(h.events+"-release-"+name))
	}
	line := `"$(date +%s%N) ${CUDA_VISIBLE_DEVICES:--} $SSHQ_JOB_NAME"`
	run := fmt.Sprintf("echo start %[2]s >> %[1]s\n%[3]s\necho end %[2]s >> %[1]s\n", shellQuote(h.events), line, body)
	s := spec(tagged(name), gpus, run)
	s.Name = name
	if _, err := h.cl(i).Submit(ctx15(h.t), s); err != nil {
		h.t.Fatalf("%s submits %s: %v", h.users[i].Name, name, err)
	}
}

func (h *tenants) release(name string) {
	if err := os.WriteFile(h.events+"-release-"+name, nil, 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func (h *tenants) job(i int, name string) JobStatus {
	h.t.Helper()
	m, err := h.cl(i).Jobs(ctx15(h.t), []string{tagged(name)})
	if err != nil {
		h.t.Fatalf("jobs: %v", err)
	}
	return m[tagged(name)]
}

func (h *tenants) waitState(i int, name string, want job.State) {
	h.t.Helper()
	var last JobStatus
	deadline := time.Now().Add(20 * time.Second)
	for {
		last = h.job(i, name)
		if last.State == want {
			return
		}
		if time.Now().After(deadline) || last.State.Terminal() {
			var o bytes.Buffer
			h.cl(i).Logs(ctx15(h.t), tagged(name), -1, false, &o, &o)
			h.t.Fatalf("%s is %s, want %s: %+v\nlog:\n%s\nnode: %+v", name, last.State, want, last, o.String(), h.status(i))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (h *tenants) status(i int) *NodeStatus {
	h.t.Helper()
	ns, err := h.cl(i).Status(ctx15(h.t))
	if err != nil {
		h.t.Fatalf("status as %s: %v", h.users[i].Name, err)
	}
	return untag(ns)
}

// checkLedger fails the test if two jobs ever ran on one GPU at once.
func (h *tenants) checkLedger() {
	h.t.Helper()
	b, err := os.ReadFile(h.events)
	if err != nil {
		h.t.Fatal(err)
	}
	type run struct {
		name       string
		gpus       []string
		start, end int64
	}
	runs := map[string]*run{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) != 4 {
			continue
		}
		ns, _ := strconv.ParseInt(f[1], 10, 64)
		r := runs[f[3]]
		if r == nil {
			r = &run{name: f[3]}
			runs[f[3]] = r
		}
		if f[0] == "start" {
			r.start = ns
			if f[2] != "-" {
				r.gpus = strings.Split(f[2], ",")
			}
		} else {
			r.end = ns
		}
	}
	var all []*run
	for _, r := range runs {
		if r.end == 0 {
			r.end = time.Now().UnixNano()
		}
		all = append(all, r)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].start < all[j].start })
	for i, a := range all {
		for _, c := range all[i+1:] {
			if a.start >= c.end || c.start >= a.end {
				continue
			}
			for _, g := range a.gpus {
				for _, k := range c.gpus {
					if g == k {
						h.t.Errorf("jobs %s and %s ran on GPU %s at once:\n%s", a.name, c.name, g, b)
					}
				}
			}
		}
	}
}

// stillPending fails the test unless a's job stays PENDING for a while
// (several poll intervals).
func (h *tenants) stillPending(name string) {
	h.t.Helper()
	for deadline := time.Now().Add(1500 * time.Millisecond); time.Now().Before(deadline); {
		if st := h.job(0, name); st.State != job.Pending {
			h.t.Fatalf("%s is %s (GPUs %+v) while the GPU is a's other job's", name, st.State, st.GPUs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// liveLock has user i hold a flock on a 0600 file of theirs and returns
// its /proc/locks name, for records that look live.
func (h *tenants) liveLock(i int, file string) string {
	h.t.Helper()
	out := h.sh(i, fmt.Sprintf(`f=%s; : > "$f"; chmod 600 "$f"
setsid flock -n "$f" sleep 600 </dev/null >/dev/null 2>&1 &
for i in $(seq 100); do
	ino=$(stat -c %%i "$f")
	l=$(grep -o "[0-9a-f]*:[0-9a-f]*:$ino " /proc/locks | head -1)
	[ -n "$l" ] && { echo $l; exit 0; }
	sleep 0.05
done
exit 1`, shellQuote(file)))
	id := strings.TrimSpace(out)
	if id == "" || strings.ContainsAny(id, " \n") {
		h.t.Fatalf("no lock of %s in /proc/locks: %s", file, out)
	}
	return id
}

func TestCoTenantCannotShareOrStallTheQueue(t *testing.T) {
	t.Parallel()
	g := gpusim.T4x1("cotenant")
	h := newTenants(t, g)
	a, b := h.users[0], h.users[1]
	d := filepath.Join(h.tmp, "sshq-leases")
	// Before a's first job, b makes the lease directory and its files the
	// way sshq once shared them, with a FIFO for the queue lock, and takes
	// the name a's records would go under.
	h.sh(1, fmt.Sprintf(`set -e; D=%[1]s
mkdir -m 1777 "$D" "$D/queue"; chmod 1777 "$D" "$D/queue"
: > "$D/%[2]s.lock"; chmod 666 "$D/%[2]s.lock"
mkfifo -m 666 "$D/queue.lock"
mkdir -m 755 "$D.u%[3]d"
mkfifo -m 666 "$D.u%[3]d.x"`, d, g[0].UUID, a.UID))

	// A job without GPUs never waits on anything of b's.
	h.submit(0, "a-cpu", 0, false)
	h.waitState(0, "a-cpu", job.Succeeded)
	h.submit(0, "a1", 1, true)
	h.waitState(0, "a1", job.Running)
	h.submit(0, "a2", 1, false)

	// b removes whatever it can, everywhere.
	h.sh(1, fmt.Sprintf(`cd %s && rm -rf ./* ./.[!.]* 2>/dev/null; find . -user $(id -u) 2>/dev/null; true`, shellQuote(h.tmp)))
	h.stillPending("a2")
	if st := h.job(0, "a2"); st.QueuePosition != 1 {
		t.Errorf("a2 at queue position %d after b's deletions, want 1", st.QueuePosition)
	}

	// b plants records of its own that look live: a head of the queue
	// that fits but never starts, one asking 99 GPUs, and a running
	// record on the GPU, all claiming a's job uids and name.
	lk := h.liveLock(1, filepath.Join(h.tmp, "b.lock"))
	rec := func(kind, uid, n, gpus string) string {
		return strings.Join([]string{kind, tagged(uid), "7", a.Name, "a2", n, "1700000000.000", "*", gpus, "1", "1", lk}, "\t")
	}
	bdir := filepath.Join(h.tmp, "sshq-leases.u"+strconv.Itoa(b.UID))
	h.sh(1, fmt.Sprintf(`set -e; mkdir -p -m 755 %[1]s; cd %[1]s
printf '%%s\n' %[2]s > w.0000000000000000001.%[5]s
printf '%%s\n' %[3]s > w.0000000000000000002.%[6]s
printf '%%s\n' %[4]s > r.%[7]s`, shellQuote(bdir),
		shellQuote(rec("w", "a2", "1", "-")), shellQuote(rec("w", "a3", "99", "-")), shellQuote(rec("r", "a1", "0", "-")),
		tagged("a2"), tagged("a3"), tagged("a1")))
	ns := h.status(0)
	mine := 0
	for _, q := range ns.Queue {
		switch q.NodeUser {
		case a.Name:
			mine++
		case b.Name:
		default:
			t.Errorf("ticket %+v: shown as %q's, neither a's nor b's", q, q.NodeUser)
		}
	}
	if len(ns.Queue) != 3 || mine != 1 {
		t.Errorf("queue %+v: want a2 as %s and b's two tickets as %s", ns.Queue, a.Name, b.Name)
	}
	for _, r := range ns.Running {
		if r.NumGPUs == 0 && r.NodeUser != b.Name || r.NodeUser == a.Name && r.NumGPUs != 1 {
			t.Errorf("running %+v: b's record is shown as a's", r)
		}
	}
	if len(ns.Leases) != 1 || ns.Leases[0].JobUID != "a1" || ns.Leases[0].NodeUser != a.Name {
		t.Errorf("leases %+v, want a1 holding the GPU as %s", ns.Leases, a.Name)
	}

	// When a1 ends, a2 fits: b's head, which never takes the GPU, holds
	// it no longer than a poll interval and a second, and the ticket
	// asking 99 GPUs holds nothing.
	h.release("a1")
	h.waitState(0, "a1", job.Succeeded)
	h.waitState(0, "a2", job.Succeeded)
	h.checkLedger()
}

// b fills every place it can write with thousands of files, FIFOs among
// them, with names sshq makes and names it never makes, and the way
// sshq's queue directory once held tickets: status and submit go on as
// if they were not there.
func TestCoTenantJunkDoesNotSlowTheNode(t *testing.T) {
	t.Parallel()
	h := newTenants(t, gpusim.A100x2("junk"))
	b := h.users[1]
	d := filepath.Join(h.tmp, "sshq-leases")
	// b is first on the node: it made the lease directory sshq once
	// shared, and so could keep junk there that nobody else may remove.
	h.sh(1, fmt.Sprintf(`mkdir -m 1777 %[1]s %[1]s/queue; chmod 1777 %[1]s %[1]s/queue`, d))
	h.submit(0, "j0", 2, true)
	h.waitState(0, "j0", job.Running)
	h.submit(0, "j1", 1, false)
	begin := time.Now()
	h.sh(1, fmt.Sprintf(`D=%[1]s; B=$D.u%[2]d
mkdir -m 755 "$B"
cd "$D/queue" && for i in $(seq 3000); do echo junk > "1700000000$i-x$i"; done
cd "$B" && for i in $(seq 3000); do printf 'w\tx%%s\t1\tu\tn\t1\t1\t*\t-\t1\t1\t00:00:%%s\n' $i $i > "w.17000000000000$(printf %%05d $i).x$i"; done
for i in $(seq 200); do mkfifo "r.f$i" "w.17000000000000$(printf %%05d $i).f$i"; done
cd "$D" && for i in $(seq 300); do mkfifo "f$i"; done; true`, d, b.UID))
	t.Logf("b made its junk in %v", time.Since(begin))
	for i := 0; i < 3; i++ {
		begin = time.Now()
		ns := h.status(0)
		t.Logf("status took %v", time.Since(begin))
		if len(ns.Errors) > 0 || len(ns.Queue) != 1 || len(ns.Leases) != 2 {
			t.Errorf("status with b's junk: errors %v, queue %+v, leases %+v", ns.Errors, ns.Queue, ns.Leases)
		}
	}
	begin = time.Now()
	h.submit(0, "j2", 0, false)
	t.Logf("submit took %v", time.Since(begin))
	h.release("j0")
	h.waitState(0, "j1", job.Succeeded)
	h.waitState(0, "j2", job.Succeeded)
}

// `rm -rf /tmp/*` (or a tmp cleaner) takes every record and lock file while
// a job holds the only GPU: the job's keeper writes its record back, and
// its lock, an inode the keeper still holds, goes on counting. The next job
// waits for the GPU.
func TestLeaseOutlivesATmpWipe(t *testing.T) {
	t.Parallel()
	h := newTenants(t, gpusim.T4x1("wipe"))
	h.submit(0, "wp-1", 1, true)
	h.waitState(0, "wp-1", job.Running)
	h.submit(0, "wp-w", 1, true)
	h.waitState(0, "wp-w", job.Pending)
	wipe := func() {
		ents, _ := os.ReadDir(h.tmp)
		for _, e := range ents {
			if err := os.RemoveAll(filepath.Join(h.tmp, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	wipe()
	h.submit(0, "wp-2", 1, true)
	wipe()
	for deadline := time.Now().Add(1500 * time.Millisecond); time.Now().Before(deadline); {
		for _, name := range []string{"wp-w", "wp-2"} {
			if st := h.job(0, name); st.State != job.Pending {
				t.Fatalf("%s is %s while wp-1 holds the only GPU", name, st.State)
			}
		}
	}
	ns := h.status(0)
	if len(ns.Leases) != 1 || ns.Leases[0].JobUID != "wp-1" {
		t.Errorf("leases after the wipe: %+v, want wp-1's", ns.Leases)
	}
	if len(ns.Queue) != 2 || ns.Queue[0].JobUID != "wp-w" || ns.Queue[1].JobUID != "wp-2" {
		t.Errorf("queue after the wipe: %+v, want wp-w then wp-2", ns.Queue)
	}
	h.release("wp-1")
	h.waitState(0, "wp-w", job.Running)
	h.release("wp-w")
	h.release("wp-2")
	h.waitState(0, "wp-2", job.Succeeded)
	h.checkLedger()
}

// Waiting costs nothing while nothing changes: with twenty jobs waiting
// for the GPU another holds, a poll takes no lock and starts no process per
// ticket (flock, grep, stat), where each waiter once forked one
// flock per ticket per poll under a lock every other waiter queued for.
func TestQuietWaitersForkNothing(t *testing.T) {
	t.Parallel()
	h := newTenants(t, gpusim.T4x1("quiet"))
	counter := filepath.Join(filepath.Dir(h.events), "forks")
	os.WriteFile(counter, nil, 0o666)
	os.Chmod(counter, 0o666)
	for _, tool := range []string{"flock", "grep", "stat"} {
		real := "/usr/bin/" + tool
		if _, err := os.Stat(real); err != nil {
			real = "/bin/" + tool
		}
		w := fmt.Sprintf("#!/bin/bash\necho %s >> %s\nexec %s \"$@\"\n", tool, shellQuote(counter), real)
		if err := os.WriteFile(filepath.Join(h.n.BinDir, tool), []byte(w), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	h.submit(0, "q-hold", 1, true)
	h.waitState(0, "q-hold", job.Running)
	const waiters = 20
	for i := 0; i < waiters; i++ {
		h.submit(0, fmt.Sprintf("q%02d", i), 1, false)
	}
	for i := 0; i < waiters; i++ {
		h.waitState(0, fmt.Sprintf("q%02d", i), job.Pending)
	}
	time.Sleep(time.Second) // every waiter has read the queue since the last change
	count := func() (int, string) {
		b, _ := os.ReadFile(counter)
		return strings.Count(string(b), "\n"), string(b)
	}
	c0, b0 := count()
	time.Sleep(2 * time.Second) // ten poll intervals
	c1, b1 := count()
	t.Logf("%d processes started in ten poll intervals of %d waiters", c1-c0, waiters)
	if c1-c0 >= waiters {
		t.Errorf("%d waiters started %d processes in ten quiet polls:\n%s", waiters, c1-c0, b1[len(b0):])
	}
	var uids []string
	for i := 0; i < waiters; i++ {
		uids = append(uids, tagged(fmt.Sprintf("q%02d", i)))
	}
	if _, _, err := h.cl(0).Cancel(ctx15(t), uids, time.Second); err != nil {
		t.Error(err)
	}
	h.release("q-hold")
	h.waitState(0, "q-hold", job.Succeeded)
}
