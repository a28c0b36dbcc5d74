package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sshq/sshq/orchestrator/job"
)

// Runner runs one command line on one node. stdin may be nil; stdout and
// stderr get the command's output as it comes. It returns the command's
// exit status. An error means the command's outcome is unknown: the node
// did not answer, the connection dropped, or ctx ended. sshpool's
// Pool.Node(alias) is the Runner of one node of the pool.
type Runner interface {
	Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (exitCode int, err error)
}

// Client performs the node protocol's actions on one node. Each method is
// one command, run as one SSH session, and returns what the node said,
// parsed. Timeouts are the caller's, through ctx.
type Client struct {
	name string
	r    Runner
}

// New returns the client of the node called name (used in messages) that
// runs its commands through r.
func New(name string, r Runner) *Client { return &Client{name: name, r: r} }

// Name is the node's name, as given to New.
func (c *Client) Name() string { return c.name }

// ErrNoAnswer marks an error after which the action's outcome is unknown
// (see Runner): a Submit may have reached the node, a Cancel may have run.
// errors.Is(err, ErrNoAnswer) tells it from a NodeError, which is a refusal.
var ErrNoAnswer = errors.New("the node's answer was lost")

// noAnswer wraps a Runner's error without changing its text.
type noAnswer struct{ error }

func (e noAnswer) Unwrap() error        { return e.error }
func (e noAnswer) Is(target error) bool { return target == ErrNoAnswer }

// NodeError is an action the node ran and refused: the script's exit
// status and its reason (stderr).
type NodeError struct {
	Node   string
	Action string
	Code   int
	Msg    string
}

func (e *NodeError) Error() string {
	if e.Msg == "" {
		return fmt.Sprintf("%s: %s failed with exit status %d and no message", e.Node, e.Action, e.Code)
	}
	return e.Node + ": " + e.Msg
}

// NodeCannotRun reports whether a refused submit means that this node
// cannot run jobs as it is (no tmux or flock, a tmux that cannot start
// sessions, a home or lease directory it cannot use, a job that could not
// get started there), so another node may: submit's exit statuses 3, 5
// and 6. A request no node would take (a bad spec, exit 2) or a uid
// already there (exit 4) is not the node's doing.
func (e *NodeError) NodeCannotRun() bool {
	return e.Action == "submit" && (e.Code == 3 || e.Code == 5 || e.Code == 6)
}

// call runs one action and returns its stdout; a non-zero exit is a
// NodeError.
func (c *Client) call(ctx context.Context, action string, args ...string) ([]byte, error) {
	return c.callWith(ctx, action, command(action, args...), nil, nil)
}

// callWith runs cmd, the command of action, with stdin; the output goes to
// out as well when it is not nil.
func (c *Client) callWith(ctx context.Context, action, cmd string, stdin io.Reader, out io.Writer) ([]byte, error) {
	var buf, errb bytes.Buffer
	w := io.Writer(&buf)
	if out != nil {
		w = out
	}
	code, err := c.r.Run(ctx, cmd, stdin, w, &errb)
	if err != nil {
		return nil, noAnswer{err}
	}
	if code != 0 {
		msg := strings.TrimPrefix(strings.TrimSpace(errb.String()), "sshq: ")
		return nil, &NodeError{Node: c.name, Action: action, Code: code, Msg: msg}
	}
	return buf.Bytes(), nil
}

// Submit creates the job on the node and starts its wrapper in a detached
// tmux session. It returns once the job holds its place in the node's
// queue, with the job's first state (PENDING, or FAILED_SETUP for a node
// problem the wrapper met at once, reason in the log). It may take up to
// about 100s on a node whose queue is busy.
//
// A *NodeError means the node refused the job (uid already used, missing
// workdir cache, no tmux, a lease directory that is a symlink...) and
// nothing of it runs there: when it fails after the job's wrapper started,
// the node has ended and removed the job first. An error that is
// ErrNoAnswer leaves the job's fate unknown: ask Jobs. Any other error is
// a spec the node could not take; nothing was sent.
//
// The job's environment is, in order (later wins): spec.Env, spec.Secrets,
// then the values sshq computes itself: SSHQ_JOB_ID, SSHQ_JOB_NAME,
// SSHQ_NODE_RANK, SSHQ_NUM_NODES, SSHQ_NODE_IPS (newline-separated),
// SSHQ_NUM_GPUS_PER_NODE and the SKYPILOT_ names for the same values plus
// SKYPILOT_TASK_ID (= UID); on the node the wrapper adds
// CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER=PCI_BUS_ID, PYTHONUNBUFFERED=1 and
// SSHQ_JOB_UID.
func (c *Client) Submit(ctx context.Context, spec JobSpec) (job.State, error) {
	cmd, payload, err := submitCommand(spec)
	if err != nil {
		return "", err
	}
	out, err := c.callWith(ctx, "submit", cmd, bytes.NewReader(payload), nil)
	if err != nil {
		return "", err
	}
	recs, err := records(out)
	if err != nil {
		// The job is there (the node said so by its exit status); only
		// its first state is unknown.
		return job.Pending, nil
	}
	for _, r := range recs {
		if r[0] == "submitted" && len(r) >= 3 && r[1] == spec.UID {
			return job.State(r[2]), nil
		}
	}
	return job.Pending, nil
}

// Jobs reports the given jobs, by uid. A uid the node does not know comes
// back with Found false and State Lost.
func (c *Client) Jobs(ctx context.Context, uids []string) (map[string]JobStatus, error) {
	out, err := c.call(ctx, "jobs", uids...)
	if err != nil {
		return nil, err
	}
	m, err := parseJobs(out)
	if err == nil {
		parseGangJobs(out, m)
	}
	return m, err
}

// Status reports the node as `sshq status` shows it: host facts, what the
// driver says about the GPUs and their processes, the queue's view (which
// GPUs are free, leased by whom, who waits) and every sshq job running
// there, of any user, with or without GPUs. It runs nvidia-smi at most
// twice. A report the node could not complete says why in Errors.
func (c *Client) Status(ctx context.Context) (*NodeStatus, error) {
	out, err := c.call(ctx, "status")
	if err != nil {
		return nil, err
	}
	ns := parseStatus(out)
	ns.Gangs = parseGangStatus(out)
	return ns, nil
}

// Cancel ends the given jobs on the node: a pending job leaves the queue, a
// running job's whole process tree (setsid children and SIGHUP-ignoring
// ones included) gets SIGTERM, then SIGKILL after grace
// (DefaultCancelGrace when 0), its GPU leases fall free with it, its state
// becomes CANCELLED and its tmux session is closed last. For a job that
// already ended it answers "done" and still kills what the job left
// running. It returns when every tree is gone, with what it did to each job
// and, from the same command, each job's report as Jobs gives it.
func (c *Client) Cancel(ctx context.Context, uids []string, grace time.Duration) (map[string]CancelOutcome, map[string]JobStatus, error) {
	if grace <= 0 {
		grace = DefaultCancelGrace
	}
	out, err := c.call(ctx, "cancel", append([]string{strconv.FormatInt(grace.Milliseconds(), 10)}, uids...)...)
	if err != nil {
		return nil, nil, err
	}
	outcomes, err := parseCancel(out)
	if err != nil {
		return nil, nil, err
	}
	jobs, err := parseJobs(out)
	if err != nil {
		return nil, nil, err
	}
	parseGangJobs(out, jobs)
	return outcomes, jobs, nil
}

// Logs writes a job's log to stdout: its last tailLines lines (all of it
// when tailLines < 0). With follow it goes on writing what the job writes
// until the job ends, and returns the job's exit code. Exit code 125 means
// the job is unknown on the node or ended without an exit record (LOST);
// the reason went to stderr.
func (c *Client) Logs(ctx context.Context, uid string, tailLines int, follow bool, stdout, stderr io.Writer) (int, error) {
	f := "0"
	if follow {
		f = "1"
	}
	code, err := c.r.Run(ctx, command("logs", uid, strconv.Itoa(tailLines), f), nil, &afterLogMark{w: stdout, tail: []byte{'\n'}}, stderr)
	if err != nil {
		return -1, noAnswer{err}
	}
	return code, nil
}

// logMark is the line logs.sh prints before the log.
const logMark = "\nSSHQ-LOG\n"

// afterLogMark passes on what follows the first logMark line: a login
// shell's startup files (a .bashrc greeting every shell) print before it.
type afterLogMark struct {
	w     io.Writer
	found bool
	tail  []byte // the last bytes seen, in case the mark is split between writes
}

func (a *afterLogMark) Write(p []byte) (int, error) {
	if a.found {
		return a.w.Write(p)
	}
	buf := append(a.tail, p...)
	i := bytes.Index(buf, []byte(logMark))
	if i < 0 {
		a.tail = append([]byte(nil), buf[max(0, len(buf)-len(logMark)+1):]...)
		return len(p), nil
	}
	a.found, a.tail = true, nil
	if rest := buf[i+len(logMark):]; len(rest) > 0 {
		if _, err := a.w.Write(rest); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Request is one shape a job may take on a node: NumGPUs GPUs, of those
// Accepts takes (by the name nvidia-smi gives them; nil takes any).
type Request struct {
	NumGPUs int
	Accepts func(gpuName string) bool
}

// Verdict is a node's answer for one Request.
type Verdict string

const (
	// FitsNow: the queue's rule would start the job at once.
	FitsNow Verdict = "now"
	// Waits: the job would wait in the node's queue.
	Waits Verdict = "wait"
	// Never: the node has fewer GPUs the request may use than it asks for.
	Never Verdict = "never"
)

// Fit is the node's answer for one Request.
type Fit struct {
	Verdict Verdict
	// Eligible is how many of the node's GPUs the request may use, Free
	// how many of those are free once the jobs waiting ahead have reserved
	// theirs.
	Eligible, Free int
	// Ahead is how many jobs wait in the node's queue, Demand how many
	// GPUs they wait for.
	Ahead, Demand int
	// AllowedGPUs are the UUIDs of the GPUs Accepts took (nil when the
	// request takes any GPU): what Submit's JobSpec.AllowedGPUs must say.
	AllowedGPUs []string
}

// Offer is a node's answer to Place.
type Offer struct {
	// CPUs and MemTotalMiB are -1 when unknown; Load1 is -1 when unknown.
	CPUs        int
	MemTotalMiB int64
	Load1       float64
	// GPUs are the node's GPUs (none when no request asks for one).
	GPUs []GPUInfo
	// Fits holds one answer per Request, in order; it is empty when the
	// node could not decide (Errors say why: a broken lease directory, a
	// queue lock held too long).
	Fits   []Fit
	Errors []string
}

// GPUInfo is one GPU of a node, as the driver names it.
type GPUInfo struct {
	Index int
	UUID  string
	Name  string
}

// Place asks the node how it would take a job of each of the shapes in
// reqs: start now, wait in the queue behind others, or never. The node
// answers by the rule its queue decides by, for a job that would join the
// queue now. It is one command; a request that asks for no GPU makes the
// node ask its driver nothing. Requests with Accepts are decided in the
// same command: the node lists its GPUs, Accepts picks among them, and the
// node decides on the GPUs picked.
func (c *Client) Place(ctx context.Context, reqs []Request) (*Offer, error) {
	args := make([]string, len(reqs))
	ask := false
	for i, r := range reqs {
		if r.NumGPUs < 0 {
			return nil, fmt.Errorf("request %d asks for %d GPUs", i, r.NumGPUs)
		}
		spec := "*"
		if r.Accepts != nil && r.NumGPUs > 0 {
			spec, ask = "?", true
		}
		args[i] = strconv.Itoa(r.NumGPUs) + ":" + spec
	}
	allowed := make([][]string, len(reqs))
	var out bytes.Buffer
	var stdin io.Reader
	w := io.Writer(&out)
	if ask {
		pr, pw := io.Pipe()
		defer pw.Close()
		stdin = pr
		w = &askWatcher{out: &out, answer: func(gpus []GPUInfo) {
			var b strings.Builder
			for i, r := range reqs {
				if r.Accepts == nil || r.NumGPUs == 0 {
					continue
				}
				allowed[i] = []string{}
				for _, g := range gpus {
					if r.Accepts(g.Name) {
						allowed[i] = append(allowed[i], g.UUID)
					}
				}
				if len(allowed[i]) == 0 {
					b.WriteString("-\n")
				} else {
					b.WriteString(strings.Join(allowed[i], ",") + "\n")
				}
			}
			// The node reads while we write; after Run the deferred Close
			// ends a write to a node that went away.
			go func() {
				io.WriteString(pw, b.String())
				pw.Close()
			}()
		}}
	}
	if _, err := c.callWith(ctx, "place", command("place", args...), stdin, w); err != nil {
		return nil, err
	}
	o, err := parseOffer(out.Bytes(), len(reqs))
	if err != nil {
		return nil, err
	}
	for i := range o.Fits {
		o.Fits[i].AllowedGPUs = allowed[i]
	}
	return o, nil
}

// askWatcher passes the node's output to out and, when the node asks which
// of its GPUs the requests may use, answers once with the GPUs listed so
// far.
type askWatcher struct {
	out    *bytes.Buffer
	answer func([]GPUInfo)
	mu     sync.Mutex
	begun  bool // past SSHQ-BEGIN: what a .bashrc prints is not the node asking
	done   bool
	line   []byte
}

func (a *askWatcher) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.out.Write(p)
	if a.done {
		return len(p), nil
	}
	a.line = append(a.line, p...)
	for {
		i := bytes.IndexByte(a.line, '\n')
		if i < 0 {
			break
		}
		l := string(a.line[:i])
		a.line = a.line[i+1:]
		if strings.HasPrefix(l, "SSHQ-BEGIN ") {
			a.begun = true
		}
		if l == "ask" && a.begun {
			a.done = true
			a.answer(parseGPUInfo(a.out.Bytes()))
			break
		}
	}
	return len(p), nil
}

// Check reports what the node offers sshq (see NodeCheck). It changes
// nothing on the node. A node without bash, or with one too old, answers
// with what that says and nothing more.
func (c *Client) Check(ctx context.Context) (*NodeCheck, error) {
	out, err := c.call(ctx, "check")
	var ne *NodeError
	if errors.As(err, &ne) {
		nc := &NodeCheck{Tools: map[string]string{}, GPUs: -1}
		switch {
		case ne.Code == 127:
			nc.Tools["bash"] = ""
			return nc, nil
		case strings.Contains(ne.Msg, "this node runs bash"):
			nc.Tools["bash"] = "bash"
			v := strings.TrimPrefix(ne.Msg[strings.Index(ne.Msg, "this node runs bash"):], "this node runs bash ")
			nc.BashVersion, _, _ = strings.Cut(v, ";")
			return nc, nil
		}
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	return parseCheck(out)
}
