package wsync

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
)

// Options tune a sync. The zero value mirrors with the default concurrency.
type Options struct {
	// Concurrency is how many files are in flight at once on the one SFTP
	// client (default 32). Large files also pipeline their own writes.
	Concurrency int
	// Checksum compares the content of every file whose size matches, not
	// only those whose mtime differs (rsync -c). Without it a file changed
	// without changing its size or its mtime (to the second) is not seen.
	Checksum bool
	// NoDelete keeps remote paths that do not exist locally (and does not
	// touch the mode or mtime of the target directory itself): for file
	// mounts into directories that also hold other data. A remote directory
	// with contents where the local tree has a file or symlink is an error,
	// never removed. Without a mirror's stamp, an edit that keeps a file's
	// size and its mtime second is seen only with Checksum (see doc.go).
	NoDelete bool
	// Progress, if set, is called (never concurrently) as files and bytes
	// are sent; Total fields are fixed once the plan is known.
	Progress func(Progress)

	open func(string) (*os.File, error) // tests inject read failures here
}

// Progress counts the files (and symlinks) and bytes that must travel.
type Progress struct {
	FilesDone, FilesTotal int
	BytesDone, BytesTotal int64
}

// Stats reports what a sync did.
type Stats struct {
	RemoteDir     string // the absolute remote path that was synced (the file, for PushFile)
	Files         int    // regular files in the synced set
	Uploaded      int    // files and symlinks written
	BytesUploaded int64
	Hashed        int // files whose content was compared because their mtime differed (or Checksum)
	MetadataOnly  int // files with equal content whose mode or mtime was fixed without sending them
	Deleted       int // remote paths removed (a removed directory counts once)
	StaleTemps    int // temp files of an interrupted sync, removed
	Vanished      int // local files removed while the sync ran: the node's copy was left as it was
	DirsCreated   int
	Duration      time.Duration
}

// Push mirrors localDir into remoteDir ("/abs", or "~/rel" below the remote
// user's home), creating it if needed: new and changed files, symlinks (as
// links) and empty directories are sent with their modes and mtimes, and
// remote paths that are gone or ignored locally are removed (unless
// opts.NoDelete). Every problem the local tree has is reported before the
// node is changed; a file removed locally while the sync runs is skipped
// (Stats.Vanished), its remote copy left as it was.
func Push(ctx context.Context, r Remote, localDir, remoteDir string, opts Options) (Stats, error) {
	start := time.Now()
	opts = opts.withDefaults()
	expr, err := remotePathExpr(remoteDir)
	if err != nil {
		return Stats{}, err
	}
	local, err := scanTree(localDir, opts.open)
	if err != nil {
		return Stats{}, err
	}
	j := &job{r: r, opts: opts, local: local, mirror: !opts.NoDelete, start: start.Unix(), reporter: reporter{progress: opts.Progress}}
	st, err := j.run(ctx, listDirScript(expr, !opts.NoDelete))
	st.Duration = time.Since(start)
	return st, err
}

// PushFile syncs one file mount: a local directory goes through Push, a
// local file (a symlink to one is followed) becomes the remote file
// remotePath, written through a temp file and a rename like every other.
// Like NoDelete, it keeps no stamp (see doc.go).
func PushFile(ctx context.Context, r Remote, localPath, remotePath string, opts Options) (Stats, error) {
	start := time.Now()
	fi, err := os.Stat(localPath)
	if err != nil {
		return Stats{}, fmt.Errorf("cannot sync %s: %w", localPath, err)
	}
	if fi.IsDir() {
		return Push(ctx, r, localPath, remotePath, opts)
	}
	opts = opts.withDefaults()
	if !fi.Mode().IsRegular() {
		return Stats{}, fmt.Errorf("cannot sync %s: it is %s; only regular files and directories can be mounted", localPath, kindName(fi.Mode()))
	}
	f, err := opts.open(localPath)
	if err != nil {
		return Stats{}, fmt.Errorf("cannot read %s: %w", localPath, err)
	}
	f.Close()
	dir, name := path.Split(strings.TrimRight(remotePath, "/"))
	if name == "" || name == "~" || name == "." || name == ".." {
		return Stats{}, fmt.Errorf("remote path %q for file %s must name a file", remotePath, localPath)
	}
	if dir == "" {
		return Stats{}, fmt.Errorf("remote path %q must be absolute or start with ~/", remotePath)
	}
	expr, err := remotePathExpr(dir)
	if err != nil {
		return Stats{}, err
	}
	abs, _ := filepath.Abs(localPath)
	j := &job{r: r, opts: opts, single: name, local: []entry{{
		rel: name, kind: 'f', mode: posixMode(fi.Mode()), size: fi.Size(), mtime: fi.ModTime().Unix(), abs: abs,
	}}, reporter: reporter{progress: opts.Progress}}
	st, err := j.run(ctx, listFileScript(expr, name))
	st.RemoteDir = path.Join(st.RemoteDir, name)
	st.Duration = time.Since(start)
	return st, err
}

func (o Options) withDefaults() Options {
	if o.Concurrency <= 0 {
		o.Concurrency = 32
	}
	if o.open == nil {
		o.open = os.Open
	}
	return o
}

// job is one sync: the local set, the remote listing and the plan between.
type job struct {
	r      Remote
	opts   Options
	local  []entry
	mirror bool   // delete extraneous remote paths and fix the root's attributes
	single string // PushFile: the only name in play
	root   string // absolute remote directory
	// stamp is when the previous sync of this directory started, less a
	// second (Unix seconds, 0 if unknown or not a mirror), and start when
	// this one did. A file whose mtime second is not older than the stamp
	// may have changed after the previous sync read it, within the same
	// second: size and mtime cannot clear it, so its content is compared
	// (git's "racy" rule).
	stamp, start int64

	remote   map[string]*entry
	localSet map[string]*entry
	deleted  map[string]bool // remote paths removed (children of these are gone too)
	st       Stats

	// the plan
	unlock, del, mkdir []string
	hash, upload       []*entry
	fixInPlace         []*entry
	fixByCopy          []*entry
	touched            map[string]bool // directories whose entries change

	reporter
}

func (j *job) run(ctx context.Context, listCmd string) (Stats, error) {
	// The SFTP session opens while the listing runs: one round trip saved.
	type sftpResult struct {
		c       *sftp.Client
		release func()
		err     error
	}
	sftpCh := make(chan sftpResult, 1)
	sftpCtx, cancelSFTP := context.WithCancel(ctx)
	defer cancelSFTP()
	go func() {
		c, rel, err := j.r.SFTP(sftpCtx)
		sftpCh <- sftpResult{c, rel, err}
	}()
	var client *sftp.Client
	closeClient := func() {}
	taken := false // sftpCh was read: it holds nothing more
	getClient := func() (*sftp.Client, error) {
		res := <-sftpCh
		taken = true
		if res.err != nil {
			return nil, fmt.Errorf("cannot open SFTP on the node: %w", res.err)
		}
		var once sync.Once
		release := func() { once.Do(res.release) }
		// sftp calls take no context: closing the client is what unblocks
		// them when ctx ends.
		stop := context.AfterFunc(ctx, release)
		closeClient = func() { stop(); release() }
		client = res.c
		return client, nil
	}
	defer func() {
		if client != nil {
			closeClient()
			return
		}
		cancelSFTP()
		if taken {
			return
		}
		if res := <-sftpCh; res.err == nil {
			res.release()
		}
	}()

	for _, e := range j.local {
		if e.kind == 'f' {
			j.st.Files++
		}
	}
	out, err := runChecked(ctx, j.r, "listing the remote directory", listCmd, nil)
	if err != nil {
		return j.st, err
	}
	root, stamp, rents, err := parseListing(out)
	if err != nil {
		return j.st, err
	}
	j.stamp = stamp
	j.root, j.st.RemoteDir = root, root
	j.remote = make(map[string]*entry, len(rents))
	for i := range rents {
		j.remote[rents[i].rel] = &rents[i]
	}
	if err := j.plan(rents); err != nil {
		return j.st, err
	}
	if len(j.hash) > 0 {
		if err := j.compareContent(ctx); err != nil {
			return j.st, err
		}
	}
	if err := j.prepare(ctx); err != nil {
		return j.st, err
	}
	dirs := j.dirFixes()
	// Only a mirrored cache keeps a stamp: it lives beside the directory,
	// never in it, so the tree stays an exact copy of the local one.
	needStamp := j.mirror && (j.stamp == 0 || len(j.hash) > 0 || len(j.upload) > 0)
	if len(j.upload)+len(j.fixInPlace)+len(dirs) == 0 && !needStamp {
		return j.st, ctx.Err()
	}
	c, err := getClient()
	if err != nil {
		return j.st, err
	}
	if err := j.transfer(ctx, c); err != nil {
		return j.st, err
	}
	if err := j.fixDirs(ctx, c, dirs); err != nil {
		return j.st, err
	}
	if err := ctx.Err(); err != nil {
		return j.st, err
	}
	// A file that vanished mid-sync was not compared: the old stamp stays,
	// so the next sync does not trust what this one did not look at.
	if needStamp && j.st.Vanished == 0 {
		if err := j.writeStamp(c); err != nil {
			return j.st, err
		}
	}
	return j.st, nil
}

// stampPath is the stamp file of a mirrored directory.
func stampPath(root string) string { return strings.TrimRight(root, "/") + ".sshq-stamp" }

// writeStamp records that a complete sync started at j.start, less one
// second: the kernel stamps files with a clock that lags the one time.Now
// reads by up to a tick, so a file edited just after the start may carry an
// mtime in the second before it. Written last, so an interrupted sync
// leaves the older, more cautious stamp, and through a temp name, so that
// an interruption between creating it and setting its mtime never leaves a
// stamp with the node's current time (which would vouch for files this
// sync never read); listDirScript removes leftover temps.
func (j *job) writeStamp(c *sftp.Client) error {
	p := stampPath(j.root)
	var b [6]byte
	rand.Read(b[:])
	tmp := p + stampTempInfix + hex.EncodeToString(b[:])
	f, err := c.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err == nil {
		f.Close()
		t := time.Unix(j.start-1, 0)
		if err = c.Chtimes(tmp, t, t); err == nil {
			err = c.PosixRename(tmp, p)
		}
		if err != nil {
			c.Remove(tmp)
		}
	}
	if err != nil {
		return fmt.Errorf("writing sync stamp %s on the node: %w", p, err)
	}
	return nil
}

// stampTempInfix follows the stamp's name in its temp names.
const stampTempInfix = ".tmp-"
