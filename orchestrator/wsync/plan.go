package wsync

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
)

// smallFile is the size up to which a file goes as one SFTP write (pkg/sftp's
// default packet); larger ones pipeline many writes.
const smallFile = 32 * 1024

func parentOf(rel string) string {
	if p := path.Dir(rel); p != "." {
		return p
	}
	return ""
}

// shellRel names rel for a command run in the root directory. The "./"
// keeps a name such as "-delete" or "-rf" from being read as an option or
// a find(1) expression by any command it is passed to.
func shellRel(rel string) string {
	if rel == "" {
		return "."
	}
	return "./" + rel
}

func (j *job) abs(rel string) string {
	if rel == "" {
		return j.root
	}
	return j.root + "/" + rel
}

// truncName keeps temp names within NAME_MAX (255) whatever the final name.
func truncName(name string) string {
	if len(name) > 200 {
		return name[:200]
	}
	return name
}

func tempName(name string) string {
	var b [6]byte
	rand.Read(b[:])
	return tempPrefix + hex.EncodeToString(b[:]) + "-" + truncName(name)
}

// plan compares the two trees and fills the job's lists.
func (j *job) plan(rents []entry) error {
	j.touched = make(map[string]bool)
	localSet := make(map[string]*entry, len(j.local))
	j.localSet = localSet
	for i := range j.local {
		localSet[j.local[i].rel] = &j.local[i]
	}
	// In a file mount (no mirror), a remote directory with contents in the
	// way of a local file holds data that is not ours: like rsync without
	// --delete, refuse rather than remove it.
	var nonEmpty map[string]bool
	if !j.mirror {
		nonEmpty = make(map[string]bool)
		for i := range rents {
			if rel := rents[i].rel; rel != "" && !strings.HasPrefix(path.Base(rel), tempPrefix) {
				nonEmpty[parentOf(rel)] = true
			}
		}
	}
	deleted := make(map[string]bool)
	underDeleted := func(rel string) bool {
		for p := parentOf(rel); p != ""; p = parentOf(p) {
			if deleted[p] {
				return true
			}
		}
		return false
	}
	// find lists parents before children, so a deleted directory is known
	// before its contents are looked at.
	for i := range rents {
		re := &rents[i]
		if re.rel == "" || underDeleted(re.rel) {
			continue
		}
		le := localSet[re.rel]
		switch {
		case strings.HasPrefix(path.Base(re.rel), tempPrefix):
			j.st.StaleTemps++
		case le == nil:
			if !j.mirror {
				continue
			}
			j.st.Deleted++
		case (le.kind == 'd') != (re.kind == 'd'):
			if j.single != "" {
				return fmt.Errorf("remote path %s is a directory; a file mount of a file needs a file path", j.abs(re.rel))
			}
			if re.kind == 'd' && nonEmpty[re.rel] {
				return fmt.Errorf("remote path %s is a directory with contents, but locally %s is %s; a mount never deletes data on the node: move or remove that directory there, or mount elsewhere",
					j.abs(re.rel), le.abs, localKind(le.kind))
			}
			// A rename cannot replace a directory by a file or the reverse:
			// the old one goes first.
			j.st.Deleted++
		default:
			continue
		}
		deleted[re.rel] = true
		j.del = append(j.del, re.rel)
		j.touched[parentOf(re.rel)] = true
	}
	j.deleted = deleted
	for i := range j.local {
		le := &j.local[i]
		re := j.remote[le.rel]
		if deleted[le.rel] || underDeleted(le.rel) {
			re = nil
		}
		switch le.kind {
		case 'd':
			if le.rel != "" && re == nil {
				j.mkdir = append(j.mkdir, le.rel)
				j.touched[parentOf(le.rel)] = true
				j.st.DirsCreated++
			}
		case 'l':
			if re == nil || re.kind != 'l' || re.target != le.target {
				j.addUpload(le)
			}
		case 'f':
			switch {
			case re == nil || re.kind != 'f' || re.size != le.size:
				j.addUpload(le)
			case j.opts.Checksum || re.mtime != le.mtime || j.racy(le):
				j.hash = append(j.hash, le)
			case re.mode != le.mode:
				j.addMetaFix(le, re)
			}
		}
	}
	return nil
}

func localKind(k byte) string {
	if k == 'l' {
		return "a symlink"
	}
	return "a file"
}

// racy reports whether a file that looks unchanged may have been edited
// after the previous sync read it, within the same second. Only a mirror
// keeps a stamp; mounts have none (see doc.go) and are not hashed every
// time for lack of one.
func (j *job) racy(le *entry) bool {
	return j.mirror && le.mtime >= j.stamp
}

func (j *job) addUpload(le *entry) {
	j.upload = append(j.upload, le)
	j.touched[parentOf(le.rel)] = true
}

// addMetaFix plans a mode/mtime fix for a file whose content is right. A
// file with other hard links belongs to job snapshots too: it gets a copy
// renamed over it instead of a change in place.
func (j *job) addMetaFix(le, re *entry) {
	if le.mode == re.mode && le.mtime == re.mtime {
		return
	}
	j.st.MetadataOnly++
	if re.nlink > 1 {
		j.fixByCopy = append(j.fixByCopy, le)
		j.touched[parentOf(le.rel)] = true
	} else {
		j.fixInPlace = append(j.fixInPlace, le)
	}
}

// compareContent hashes the candidates on both sides at once: equal
// content only needs its metadata fixed, the rest is sent.
func (j *job) compareContent(ctx context.Context) error {
	j.st.Hashed = len(j.hash)
	local, errs, remote, rerr := hashBoth(ctx, j.r, j.root, j.hash, runtime.NumCPU(), j.opts.open, func(e *entry) string { return e.abs })
	gone := make([]bool, len(j.hash))
	for i, err := range errs {
		if j.vanishedOK(err) {
			gone[i], errs[i] = true, nil
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if rerr != nil {
		return rerr
	}
	for i, le := range j.hash {
		if gone[i] {
			j.st.Vanished++
			continue
		}
		if h, ok := remote[shellRel(le.rel)]; ok && h == local[i] {
			j.addMetaFix(le, j.remote[le.rel])
		} else {
			j.addUpload(le)
		}
	}
	return nil
}

// vanishedOK reports whether err says a local file was removed after the
// scan listed it. A directory sync then leaves the node's copy as it is
// (the file was being deleted or replaced: the next sync sees which) rather
// than failing over it; a file mount has nothing else to sync, so it fails.
func (j *job) vanishedOK(err error) bool {
	return err != nil && j.single == "" && errors.Is(err, fs.ErrNotExist)
}

// prepare runs the one command that changes directories on the node.
func (j *job) prepare(ctx context.Context) error {
	// Directories we write into must be writable by their owner while we
	// do; their modes are restored by fixDirs (they are all touched).
	for rel := range j.touched {
		re := j.remote[rel]
		if re == nil || re.kind != 'd' || re.mode&0300 == 0300 || j.deleted[rel] {
			continue
		}
		if le := j.localSet[rel]; le == nil || le.kind != 'd' || (rel == "" && !j.mirror) {
			continue // not ours to chmod: single-file mounts into a user's directory
		}
		j.unlock = append(j.unlock, shellRel(rel))
	}
	sort.Strings(j.unlock)
	if len(j.unlock)+len(j.del)+len(j.mkdir)+len(j.fixByCopy) == 0 {
		return nil
	}
	var in bytes.Buffer
	put := func(s string) {
		in.WriteString(s)
		in.WriteByte(0)
	}
	for _, s := range j.unlock {
		put(s)
	}
	for _, s := range j.del {
		put(shellRel(s))
	}
	for _, s := range j.mkdir {
		put(shellRel(s))
	}
	for _, e := range j.fixByCopy {
		put(shellRel(e.rel))
		put(strconv.FormatUint(uint64(e.mode), 8))
		put(strconv.FormatInt(e.mtime, 10))
		put(shellRel(path.Join(parentOf(e.rel), tempName(path.Base(e.rel)))))
	}
	_, err := runChecked(ctx, j.r, "preparing the remote directory", prepareScript(j.root, len(j.unlock), len(j.del), len(j.mkdir)), &in)
	return err
}

// pool runs fn on every item with n workers and stops at the first error.
func pool[T any](ctx context.Context, n int, items []T, fn func(T) error) error {
	if len(items) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan T)
	var wg sync.WaitGroup
	for w := 0; w < min(n, len(items)); w++ {
		wg.Go(func() {
			for it := range next {
				if err := fn(it); err != nil {
					cancel(err)
				}
			}
		})
	}
feed:
	for _, it := range items {
		select {
		case next <- it:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}

// transfer sends the planned files and links and fixes metadata in place,
// Concurrency at a time on the one client.
func (j *job) transfer(ctx context.Context, c *sftp.Client) error {
	up, total := bigFirst(j.upload)
	j.report(func(p *Progress) { p.FilesTotal, p.BytesTotal = len(j.upload), total })
	type task struct {
		e   *entry
		fix bool
	}
	tasks := make([]task, 0, len(j.upload)+len(j.fixInPlace))
	for _, e := range up {
		tasks = append(tasks, task{e: e})
	}
	for _, e := range j.fixInPlace {
		tasks = append(tasks, task{e: e, fix: true})
	}
	return pool(ctx, j.opts.Concurrency, tasks, func(t task) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case t.fix:
			return j.setAttrs(c, j.abs(t.e.rel), t.e.mode, time.Unix(t.e.mtime, 0))
		case t.e.kind == 'l':
			return j.sendLink(c, t.e)
		default:
			return j.sendFile(c, t.e)
		}
	})
}

// setAttrs sets mode and mtime with two pipelined requests.
func (j *job) setAttrs(c *sftp.Client, p string, mode uint32, mtime time.Time) error {
	errc := make(chan error, 1)
	go func() { errc <- c.Chmod(p, goMode(mode)) }()
	err := c.Chtimes(p, mtime, mtime)
	if err2 := <-errc; err == nil {
		err = err2
	}
	if err != nil {
		return fmt.Errorf("setting mode and mtime of %s on the node: %w", p, err)
	}
	return nil
}

func (j *job) sendLink(c *sftp.Client, e *entry) error {
	dst := j.abs(e.rel)
	tmp := path.Join(path.Dir(dst), tempName(path.Base(dst)))
	if err := c.Symlink(e.target, tmp); err != nil {
		return fmt.Errorf("creating symlink %s on the node: %w", dst, err)
	}
	if err := c.PosixRename(tmp, dst); err != nil {
		c.Remove(tmp)
		return fmt.Errorf("renaming %s into place on the node: %w", dst, err)
	}
	j.fileDone(func() { j.st.Uploaded++ })
	return nil
}

// sendFile writes the file under a temp name, gives it its mode and mtime,
// and renames it over the old one: readers and snapshots see old or new.
func (j *job) sendFile(c *sftp.Client, e *entry) (err error) {
	dst := j.abs(e.rel)
	src, err := j.opts.open(e.abs)
	if j.vanishedOK(err) {
		j.report(func(p *Progress) { p.FilesTotal--; p.BytesTotal -= e.size })
		j.mu.Lock()
		j.st.Vanished++
		j.mu.Unlock()
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", e.abs, err)
	}
	defer src.Close()
	// Mode and mtime of what is actually read, should it have changed since
	// the scan: the next sync then sees the file as it was sent.
	fi, err := src.Stat()
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", e.abs, err)
	}
	tmp := path.Join(path.Dir(dst), tempName(path.Base(dst)))
	f, err := c.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return fmt.Errorf("creating %s on the node: %w", tmp, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			c.Remove(tmp)
		}
	}()
	// The server creates the temp file with its umask (0644 as a rule): a
	// file that is private locally gets its final mode before the first
	// byte is written, so no other user on the node can read it meanwhile.
	// Writes go through the open handle, so even 0400 does not stop them.
	// pkg/sftp cannot put the mode in the open request, nor order a request
	// before the next without awaiting it: this costs one round trip per
	// private file, overlapped with reading it locally.
	mode := posixMode(fi.Mode())
	var chmodDone chan error
	if mode&0o077 == 0 {
		chmodDone = make(chan error, 1) // buffered: an early return leaves no goroutine behind
		go func() { chmodDone <- f.Chmod(goMode(mode & 0o777)) }()
	}
	private := func() error {
		if chmodDone == nil {
			return nil
		}
		if err := <-chmodDone; err != nil {
			return fmt.Errorf("setting the mode of %s on the node: %w", tmp, err)
		}
		return nil
	}
	var n int64
	if fi.Size() <= smallFile {
		data, rerr := io.ReadAll(src)
		if rerr != nil {
			return fmt.Errorf("cannot read %s: %w", e.abs, rerr)
		}
		if err = private(); err != nil {
			return err
		}
		if len(data) > 0 {
			if _, err = f.Write(data); err != nil {
				return fmt.Errorf("writing %s on the node: %w", dst, err)
			}
		}
		n = int64(len(data))
		j.report(func(p *Progress) { p.BytesDone += n })
	} else {
		if err = private(); err != nil {
			return err
		}
		n, err = f.ReadFromWithConcurrency(io.TeeReader(src, &j.reporter), 0)
		if err != nil {
			return fmt.Errorf("writing %s on the node: %w", dst, err)
		}
	}
	closeErr := make(chan error, 1)
	go func() { closeErr <- f.Close() }()
	// A private file has its mode already, unless setuid/setgid bits were
	// stripped by the write.
	if chmodDone != nil && mode&0o7000 == 0 {
		if err = c.Chtimes(tmp, fi.ModTime(), fi.ModTime()); err != nil {
			err = fmt.Errorf("setting the mtime of %s on the node: %w", tmp, err)
		}
	} else {
		err = j.setAttrs(c, tmp, mode, fi.ModTime())
	}
	if cerr := <-closeErr; err == nil && cerr != nil {
		err = fmt.Errorf("writing %s on the node: %w", dst, cerr)
	}
	if err != nil {
		return err
	}
	if err = c.PosixRename(tmp, dst); err != nil {
		return fmt.Errorf("renaming %s into place on the node: %w", dst, err)
	}
	j.fileDone(func() { j.st.Uploaded++; j.st.BytesUploaded += n })
	return nil
}

// dirFixes lists the directories whose mode and mtime must be set, deepest
// first: entries created or removed in a directory change its mtime, and a
// parent without search permission would hide its children.
func (j *job) dirFixes() []*entry {
	var ds []*entry
	for i := range j.local {
		le := &j.local[i]
		if le.kind != 'd' || (le.rel == "" && !j.mirror) {
			continue
		}
		re := j.remote[le.rel]
		if re == nil || re.kind != 'd' || re.mode != le.mode || re.mtime != le.mtime || j.touched[le.rel] {
			ds = append(ds, le)
		}
	}
	return deepestFirst(ds)
}

// deepestFirst returns directories in the order their mode and mtime are
// set, children before parents: writing into a directory changes its mtime,
// and a parent's final mode may forbid the writes and lookups below it.
func deepestFirst(ds []*entry) []*entry {
	ds = append([]*entry(nil), ds...)
	sort.SliceStable(ds, func(a, b int) bool { return depth(ds[a].rel) > depth(ds[b].rel) })
	return ds
}

// bigFirst returns files largest first, and their total size. Big files
// start first: they pipeline on their own and the small ones fill the
// gaps, so the tail of a transfer is not one large file alone.
func bigFirst(es []*entry) ([]*entry, int64) {
	var total int64
	for _, e := range es {
		total += e.size
	}
	es = append([]*entry(nil), es...)
	sort.SliceStable(es, func(a, b int) bool { return es[a].size > es[b].size })
	return es, total
}

func depth(rel string) int {
	if rel == "" {
		return 0
	}
	return strings.Count(rel, "/") + 1
}

func (j *job) fixDirs(ctx context.Context, c *sftp.Client, ds []*entry) error {
	for len(ds) > 0 {
		n := 1
		for n < len(ds) && depth(ds[n].rel) == depth(ds[0].rel) {
			n++
		}
		level := ds[:n]
		ds = ds[n:]
		if err := pool(ctx, j.opts.Concurrency, level, func(e *entry) error {
			return j.setAttrs(c, j.abs(e.rel), e.mode, time.Unix(e.mtime, 0))
		}); err != nil {
			return err
		}
	}
	return nil
}
