package orchestrator

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/sshq/sshq/orchestrator/store"
)

// target is one job on one node: a job on one node (rank -1), or one rank
// of a multi-node job.
type target struct {
	job  *store.Job
	rank int
	node string
	uid  string
}

// targets are the node jobs that make up j.
func targets(j *store.Job) []target {
	if j.Gang == nil {
		return []target{{job: j, rank: -1, node: j.Node, uid: j.UID}}
	}
	out := make([]target, len(j.Gang.Ranks))
	for i, r := range j.Gang.Ranks {
		out[i] = target{job: j, rank: i, node: r.Node, uid: r.UID}
	}
	return out
}

// gangOutcome folds one rank's cancel outcome into the job's so far: an
// error wins, then "cancelled" (some rank was ended), then "done", then
// "missing".
func gangOutcome(prev, o string, err error) string {
	rank := func(s string) int {
		switch {
		case strings.HasPrefix(s, "error"):
			return 4
		case s == CancelCancelled:
			return 3
		case s == CancelDone:
			return 2
		case s == CancelMissing:
			return 1
		}
		return 0
	}
	cur := o
	if err != nil {
		cur = "error: " + err.Error()
	}
	if rank(cur) > rank(prev) {
		return cur
	}
	return prev
}

// RankLogs is Logs for one rank of a multi-node job (rank 0 is the whole
// of a job on one node), its lines as the rank wrote them.
func (c *Cluster) RankLogs(ctx context.Context, j *store.Job, rank, tail int, follow bool, w, errw io.Writer) (int, error) {
	n := 1
	if j.Gang != nil {
		n = len(j.Gang.Ranks)
	}
	if rank < 0 || rank >= n {
		return 0, usageErrorf("--rank %d: job #%d has rank 0 to %d", rank, j.ID, n-1)
	}
	if j.Gang == nil {
		return c.Logs(ctx, j, tail, follow, w, errw)
	}
	return c.gangLogs(ctx, j, rank, tail, follow, w, errw)
}

// gangLogs prints the logs of a multi-node job's ranks (of one, when rank
// >= 0), each line after "(rank N, NODE) " when there are several. Read
// once, the ranks come one after the other; followed, their lines
// interleave as they come, until every rank ended. The code is the first
// rank's that is not 0.
func (c *Cluster) gangLogs(ctx context.Context, j *store.Job, rank, tail int, follow bool, w, errw io.Writer) (int, error) {
	sel := targets(j)
	if rank >= 0 {
		sel = sel[rank : rank+1]
	}
	var mu sync.Mutex
	one := func(ctx context.Context, t target) (int, error) {
		ow, ew := io.Writer(w), io.Writer(errw)
		if len(sel) > 1 {
			p := fmt.Sprintf("(rank %d, %s) ", t.rank, t.node)
			pw, pe := &prefixWriter{w: w, mu: &mu, prefix: p}, &prefixWriter{w: errw, mu: &mu, prefix: p}
			defer pw.Flush()
			defer pe.Flush()
			ow, ew = pw, pe
		}
		if !follow {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, c.opTimeout(ctx, t.node))
			defer cancel()
		}
		return c.Node(t.node).Logs(ctx, t.uid, tail, follow, ow, ew)
	}
	codes := make([]int, len(sel))
	errs := make([]error, len(sel))
	if follow {
		var wg sync.WaitGroup
		for i, t := range sel {
			wg.Add(1)
			go func() {
				defer wg.Done()
				codes[i], errs[i] = one(ctx, t)
			}()
		}
		wg.Wait()
	} else {
		for i, t := range sel {
			codes[i], errs[i] = one(ctx, t)
		}
	}
	for i := range sel {
		if errs[i] != nil {
			return -1, fmt.Errorf("rank %d on %s: %w", sel[i].rank, sel[i].node, errs[i])
		}
	}
	for _, code := range codes {
		if code != 0 {
			return code, nil
		}
	}
	return 0, nil
}

// prefixWriter writes whole lines to w, each after prefix, holding mu
// while it writes one, so that lines of several writers never mix.
type prefixWriter struct {
	w      io.Writer
	mu     *sync.Mutex
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		p.emit(p.buf[:i+1])
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}

// Flush writes what is left of a last line that had no newline.
func (p *prefixWriter) Flush() {
	if len(p.buf) > 0 {
		p.emit(append(p.buf, '\n'))
		p.buf = nil
	}
}

func (p *prefixWriter) emit(line []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	io.WriteString(p.w, p.prefix)
	p.w.Write(line)
}
