package wsync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/pkg/sftp"

	"github.com/sshq/sshq/sshpool"
)

// PullStats reports what a Pull did.
type PullStats struct {
	RemotePath string // the remote file or directory, absolute
	LocalPath  string // the local file or directory it was copied to
	Files      int    // regular files in the remote tree
	Downloaded int    // files and symlinks written
	// BytesDownloaded counts the bytes of the files written.
	BytesDownloaded int64
	Hashed          int // files whose content was compared because their mtime differed (or Checksum)
	MetadataOnly    int // files with equal content whose mode or mtime was fixed without copying them
	DirsCreated     int
	StaleTemps      int // temp files of an interrupted pull, removed
	// UnsafeLinks are symlinks (paths below the remote root) whose target
	// is absolute or leaves the tree: not created, as rsync --safe-links
	// does, so a download never plants a link to elsewhere on this machine.
	UnsafeLinks []string
	// Special are FIFOs, sockets and devices, which are not copied.
	Special  []string
	Duration time.Duration
}

// Pull copies remotePath ("/abs", "~" or "~/rel"; a file or a directory,
// a symlink to either is followed) from the node to localPath the way
// `cp -r` would: into localPath/<name> when localPath is an existing
// directory, else to localPath itself, whose parent must exist. It is the
// sync in reverse, incremental: a local file whose size and mtime match
// the node's is left alone, one whose size matches but mtime does not is
// compared by SHA-256 first, and only what differs travels. Files and
// symlinks are written under a temp name in their final directory and
// renamed into place; modes (permission bits) and mtimes are kept.
// Nothing local is deleted. Below the root, local symlinks are never
// followed: one in the way of a remote directory or file is replaced.
func Pull(ctx context.Context, r Remote, remotePath, localPath string, opts Options) (PullStats, error) {
	start := time.Now()
	opts = opts.withDefaults()
	p := &puller{r: r, opts: opts, reporter: reporter{progress: opts.Progress}}
	st, err := p.run(ctx, remotePath, localPath)
	st.Duration = time.Since(start)
	return st, err
}

type puller struct {
	r    Remote
	opts Options

	root    string // remote directory the listing is relative to
	dest    string // local path of the remote root (file or directory)
	single  bool   // the remote path is a file: root is its directory
	entries []entry

	// the plan
	mkdirs      []*entry
	replace     []string // local non-directories in the way of a directory, removed first
	download    []*entry
	links       []*entry
	hash        []*entry
	metaFix     []*entry
	dirFixes    []*entry
	writeDirs   map[string]bool // local directories written into
	localOf     map[string]string
	st          PullStats
	createdDirs map[string]bool
	reporter
}

// pullListScript lists the remote path: a directory from inside, a file
// (or a symlink to one) from its parent, following the link.
func pullListScript(expr, parentExpr, name string) string {
	var b strings.Builder
	b.WriteString("export LC_ALL=C\np=" + expr + "\n")
	b.WriteString(`if [ -d "$p" ]; then cd -- "$p" || exit 1; printf 'd\0%s\0' "$PWD"; exec find . -ignore_readdir_race -printf ` + findFormat + "; fi\n")
	b.WriteString(`if [ -L "$p" ] && [ ! -e "$p" ]; then printf 'sshq: %s is a symlink to nothing (%s)\n' "$p" "$(readlink -- "$p")" >&2; exit 4; fi` + "\n")
	b.WriteString(`if [ ! -e "$p" ]; then printf 'sshq: %s does not exist on the node\n' "$p" >&2; exit 4; fi` + "\n")
	b.WriteString("cd -- " + parentExpr + " || exit 1\n")
	b.WriteString(`printf 'f\0%s\0' "$PWD"` + "\n")
	b.WriteString("exec find -L . -mindepth 1 -maxdepth 1 -name " + sshpool.Quote(globEscape(name)) + " -printf " + findFormat + "\n")
	return b.String()
}

func (p *puller) run(ctx context.Context, remotePath, localPath string) (PullStats, error) {
	clean := remotePath
	if !strings.HasPrefix(clean, "~") || strings.HasPrefix(clean, "~/") {
		clean = path.Clean(clean)
	}
	expr, err := remotePathExpr(clean)
	if err != nil {
		return p.st, err
	}
	parent, name := path.Split(clean)
	if parent == "" {
		parent = "~" // clean is "~"
	}
	parentExpr, err := remotePathExpr(parent)
	if err != nil {
		return p.st, err
	}
	out, err := runChecked(ctx, p.r, "listing "+remotePath, pullListScript(expr, parentExpr, name), nil)
	if err != nil {
		return p.st, err
	}
	kind, rest, ok := bytes.Cut(out, []byte{0})
	if !ok || len(kind) != 1 || (kind[0] != 'd' && kind[0] != 'f') {
		return p.st, fmt.Errorf("unexpected remote listing (does the node have GNU find?): %.200q", out)
	}
	root, rest, _ := bytes.Cut(rest, []byte{0})
	listing := append(append(append([]byte{}, root...), 0, '0', 0), rest...)
	rootDir, _, es, err := parseListing(listing)
	if err != nil {
		return p.st, err
	}
	p.root = rootDir
	p.single = kind[0] == 'f'
	if p.single {
		if len(es) != 1 || es[0].rel != name {
			return p.st, fmt.Errorf("%s vanished from the node while it was listed", remotePath)
		}
		if es[0].kind != 'f' {
			return p.st, fmt.Errorf("%s is not a regular file, directory or symlink to one on the node: nothing to download", remotePath)
		}
		p.st.RemotePath = path.Join(rootDir, name)
	} else {
		p.st.RemotePath = rootDir
		if name == "" || name == "~" || name == "." {
			name = path.Base(rootDir)
		}
	}
	if name == "/" || name == "" {
		return p.st, fmt.Errorf("remote path %q names no file or directory to download", remotePath)
	}
	if err := p.destination(localPath, name); err != nil {
		return p.st, err
	}
	p.st.LocalPath = p.dest
	for _, e := range es {
		if err := checkRel(e.rel); err != nil {
			return p.st, err
		}
		if strings.HasPrefix(path.Base(e.rel), tempPrefix) && e.rel != "" {
			continue // a push's leftover on the node, never a file of the job
		}
		p.entries = append(p.entries, e)
	}
	if err := p.plan(); err != nil {
		return p.st, err
	}
	if len(p.hash) > 0 {
		if err := p.compare(ctx); err != nil {
			return p.st, err
		}
	}
	if err := p.prepareLocal(); err != nil {
		return p.st, err
	}
	if len(p.download) > 0 {
		c, release, err := p.r.SFTP(ctx)
		if err != nil {
			return p.st, fmt.Errorf("cannot open SFTP on the node: %w", err)
		}
		// sftp calls take no context: closing the client unblocks them.
		stop := context.AfterFunc(ctx, release)
		err = p.transfer(ctx, c)
		stop()
		release()
		if err == nil {
			err = ctx.Err()
		}
		if err != nil {
			return p.st, err
		}
	}
	for _, e := range p.links {
		if err := p.writeLink(e); err != nil {
			return p.st, err
		}
	}
	for _, e := range p.metaFix {
		if err := setLocalAttrs(p.local(e.rel), e.mode, e.mtime); err != nil {
			return p.st, err
		}
	}
	if err := p.fixDirs(); err != nil {
		return p.st, err
	}
	return p.st, ctx.Err()
}

// destination applies cp's rule for where the copy goes.
func (p *puller) destination(localPath, name string) error {
	if localPath == "" {
		localPath = "."
	}
	fi, err := os.Stat(localPath)
	switch {
	case err == nil && fi.IsDir():
		p.dest = filepath.Join(localPath, filepath.FromSlash(name))
	case err == nil && p.single:
		p.dest = localPath
	case err == nil:
		return fmt.Errorf("%s exists and is not a directory, and %s is a directory on the node: give a directory to download into, or a new name", localPath, name)
	case errors.Is(err, fs.ErrNotExist):
		parent := filepath.Dir(localPath)
		if pfi, perr := os.Stat(parent); perr != nil || !pfi.IsDir() {
			return fmt.Errorf("cannot download to %s: its directory %s does not exist; create it first (mkdir -p %s)", localPath, parent, sshpool.Quote(parent))
		}
		p.dest = localPath
	default:
		return fmt.Errorf("cannot download to %s: %w", localPath, err)
	}
	if !p.single {
		// The root may be the user's symlink to a directory, as with cp;
		// below it, no symlink is ever followed.
		if fi, err := os.Stat(p.dest); err == nil && !fi.IsDir() {
			return fmt.Errorf("%s exists and is not a directory, and %s is a directory on the node: move it away, or download elsewhere", p.dest, name)
		}
	} else if fi, err := os.Lstat(p.dest); err == nil && fi.IsDir() {
		return fmt.Errorf("%s is a directory here and a file on the node: download into it instead (sshq download JOB REMOTE %s)", p.dest, sshpool.Quote(p.dest))
	}
	return nil
}

// checkRel refuses listing paths that would leave the destination: find
// never prints them, but the listing comes from the node.
func checkRel(rel string) error {
	if rel == "" {
		return nil
	}
	if strings.HasPrefix(rel, "/") || path.Clean(rel) != rel || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("the node listed %q, a path that would leave the download's directory: refusing it", rel)
	}
	return nil
}

// local is the local path of a listed entry.
func (p *puller) local(rel string) string {
	if p.single || rel == "" {
		return p.dest
	}
	return filepath.Join(p.dest, filepath.FromSlash(rel))
}

// safeLink reports whether a symlink at rel, pointing to target, stays
// inside the downloaded tree.
func safeLink(rel, target string) bool {
	if target == "" || path.IsAbs(target) {
		return false
	}
	t := path.Join(path.Dir(rel), target)
	return t != ".." && !strings.HasPrefix(t, "../")
}

func (p *puller) plan() error {
	p.writeDirs = map[string]bool{}
	p.createdDirs = map[string]bool{}
	for i := range p.entries {
		e := &p.entries[i]
		dst := p.local(e.rel)
		var fi fs.FileInfo
		exists := false
		// In a directory this pull creates there is nothing yet (and where
		// it replaces a file, looking would fail with ENOTDIR).
		if e.rel == "" || !p.createdDirs[filepath.Dir(dst)] {
			var err error
			if e.rel == "" && !p.single {
				fi, err = os.Stat(dst) // the root, which may be the user's symlink
			} else {
				fi, err = os.Lstat(dst)
			}
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("cannot download to %s: %w", dst, err)
			}
			exists = err == nil
		}
		switch e.kind {
		case 'd':
			switch {
			case !exists:
				p.mkdirs = append(p.mkdirs, e)
				p.createdDirs[dst] = true
			case !fi.IsDir():
				p.replace = append(p.replace, dst)
				p.mkdirs = append(p.mkdirs, e)
				p.createdDirs[dst] = true
			}
			p.dirFixes = append(p.dirFixes, e)
		case 'f':
			p.st.Files++
			switch {
			case !exists:
				p.addDownload(e)
			case fi.IsDir():
				return fmt.Errorf("%s is a directory here and a file on the node: move it away, then download again", dst)
			case !fi.Mode().IsRegular():
				p.addDownload(e) // a symlink or other: replaced by rename, never followed
			case fi.Size() != e.size:
				p.addDownload(e)
			case fi.ModTime().Unix() != e.mtime || p.opts.Checksum:
				p.hash = append(p.hash, e)
			case posixMode(fi.Mode())&0o777 != e.mode&0o777:
				p.metaFix = append(p.metaFix, e)
				p.st.MetadataOnly++
			}
		case 'l':
			if !safeLink(e.rel, e.target) {
				p.st.UnsafeLinks = append(p.st.UnsafeLinks, e.rel)
				continue
			}
			switch {
			case exists && fi.IsDir():
				return fmt.Errorf("%s is a directory here and a symlink on the node: move it away, then download again", dst)
			case exists && fi.Mode()&fs.ModeSymlink != 0:
				if t, err := os.Readlink(dst); err == nil && t == e.target {
					continue
				}
			}
			p.links = append(p.links, e)
			p.writeDirs[filepath.Dir(dst)] = true
		default:
			p.st.Special = append(p.st.Special, e.rel)
		}
	}
	return nil
}

func (p *puller) addDownload(e *entry) {
	p.download = append(p.download, e)
	p.writeDirs[filepath.Dir(p.local(e.rel))] = true
}

// compare hashes the files whose size matches but mtime does not, on both
// sides at once: equal content only gets its mode and mtime fixed.
func (p *puller) compare(ctx context.Context) error {
	p.st.Hashed = len(p.hash)
	// A local file that cannot be read is copied, not compared.
	local, errs, remote, err := hashBoth(ctx, p.r, p.root, p.hash, 4, p.opts.open, func(e *entry) string { return p.local(e.rel) })
	if err != nil {
		return err
	}
	for i, e := range p.hash {
		if h, ok := remote[shellRel(e.rel)]; ok && errs[i] == nil && h == local[i] {
			p.metaFix = append(p.metaFix, e)
			p.st.MetadataOnly++
		} else {
			p.addDownload(e)
		}
	}
	return nil
}

// prepareLocal replaces what is in the way of directories, creates the
// new ones (owner-writable until fixDirs gives them their mode) and
// removes temp files of an earlier, interrupted pull where this one writes.
func (p *puller) prepareLocal() error {
	for _, d := range p.replace {
		if err := os.Remove(d); err != nil {
			return fmt.Errorf("cannot replace %s by the node's directory: %w", d, err)
		}
	}
	for _, e := range p.mkdirs {
		d := p.local(e.rel)
		if err := os.Mkdir(d, 0o700); err != nil && !(e.rel == "" && errors.Is(err, fs.ErrExist)) {
			return fmt.Errorf("cannot create %s: %w", d, err)
		}
		p.st.DirsCreated++
	}
	for d := range p.writeDirs {
		if p.createdDirs[d] {
			continue
		}
		if p.single {
			// The user's directory: only this file's own temps are ours.
			stale, _ := filepath.Glob(filepath.Join(globEscape(d), tempPrefix+"*-"+globEscape(truncName(filepath.Base(p.dest)))))
			for _, s := range stale {
				if os.Remove(s) == nil {
					p.st.StaleTemps++
				}
			}
			continue
		}
		// A directory of the tree; fixDirs gives it its mode back.
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o300 != 0o300 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o700); err != nil {
				return fmt.Errorf("cannot write into %s: %w", d, err)
			}
		}
		stale, _ := filepath.Glob(filepath.Join(globEscape(d), tempPrefix+"*"))
		for _, s := range stale {
			if os.Remove(s) == nil {
				p.st.StaleTemps++
			}
		}
	}
	return nil
}

func (p *puller) transfer(ctx context.Context, c *sftp.Client) error {
	files, total := bigFirst(p.download)
	p.report(func(pr *Progress) { pr.FilesTotal, pr.BytesTotal = len(p.download)+len(p.links), total })
	return pool(ctx, p.opts.Concurrency, files, func(e *entry) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return p.fetch(c, e)
	})
}

// fetch copies one file to a temp name beside its destination, gives it
// its mode and mtime and renames it into place.
func (p *puller) fetch(c *sftp.Client, e *entry) (err error) {
	src := path.Join(p.root, e.rel)
	rf, err := c.Open(src)
	if err != nil {
		return fmt.Errorf("cannot read %s on the node: %w", src, err)
	}
	defer rf.Close()
	// The mtime of what is read: a file the job rewrites meanwhile is seen
	// as changed by the next download.
	rfi, err := rf.Stat()
	if err != nil {
		return fmt.Errorf("cannot read %s on the node: %w", src, err)
	}
	dst := p.local(e.rel)
	tmp := filepath.Join(filepath.Dir(dst), tempName(filepath.Base(dst)))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", tmp, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	n, err := rf.WriteTo(io.MultiWriter(f, &p.reporter))
	if err != nil {
		return fmt.Errorf("downloading %s: %w", src, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err = setLocalAttrs(tmp, e.mode, rfi.ModTime().Unix()); err != nil {
		return err
	}
	if err = os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("renaming %s into place: %w", dst, err)
	}
	p.fileDone(func() { p.st.Downloaded++; p.st.BytesDownloaded += n })
	return nil
}

func (p *puller) writeLink(e *entry) error {
	dst := p.local(e.rel)
	tmp := filepath.Join(filepath.Dir(dst), tempName(filepath.Base(dst)))
	if err := os.Symlink(e.target, tmp); err != nil {
		return fmt.Errorf("cannot create symlink %s: %w", dst, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("renaming %s into place: %w", dst, err)
	}
	p.fileDone(func() { p.st.Downloaded++ })
	return nil
}

// setLocalAttrs gives a file its permission bits and mtime; setuid,
// setgid and sticky bits are not kept.
func setLocalAttrs(p string, mode uint32, mtime int64) error {
	if err := os.Chmod(p, fs.FileMode(mode&0o777)); err != nil {
		return fmt.Errorf("setting the mode of %s: %w", p, err)
	}
	t := time.Unix(mtime, 0)
	if err := os.Chtimes(p, t, t); err != nil {
		return fmt.Errorf("setting the mtime of %s: %w", p, err)
	}
	return nil
}

// fixDirs gives directories their mode and mtime, deepest first.
func (p *puller) fixDirs() error {
	for _, e := range deepestFirst(p.dirFixes) {
		d := p.local(e.rel)
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("cannot set the mode of %s: %w", d, err)
		}
		if posixMode(fi.Mode())&0o777 == e.mode&0o777 && fi.ModTime().Unix() == e.mtime {
			continue
		}
		if err := setLocalAttrs(d, e.mode, e.mtime); err != nil {
			return err
		}
	}
	return nil
}
