package wsync

import "sync"

// reporter is the progress of a Push or a Pull, whose files travel
// concurrently: it hands Options.Progress one snapshot at a time, and its
// mutex also guards the stats the transfer workers update.
type reporter struct {
	mu       sync.Mutex
	prog     Progress
	progress func(Progress) // Options.Progress, may be nil
}

func (r *reporter) report(f func(*Progress)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.prog)
	if r.progress != nil {
		r.progress(r.prog)
	}
}

// fileDone reports one more file (or symlink) in place and, under the same
// lock, lets the caller count it in its stats.
func (r *reporter) fileDone(count func()) {
	r.report(func(p *Progress) { p.FilesDone++ })
	r.mu.Lock()
	count()
	r.mu.Unlock()
}

// Write counts bytes as they travel: a file's content goes through it with
// io.TeeReader or io.MultiWriter.
func (r *reporter) Write(b []byte) (int, error) {
	if len(b) > 0 {
		r.report(func(p *Progress) { p.BytesDone += int64(len(b)) })
	}
	return len(b), nil
}
