package wsync

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// tempPrefix starts the name of every file this package writes before
// renaming it into place. Local files with this prefix are skipped, remote
// ones are stale leftovers of an interrupted sync and are removed.
const tempPrefix = ".sshq-tmp-"

// entry is one path of the tree, local or remote.
type entry struct {
	rel    string // slash-separated, relative to the root; "" is the root
	kind   byte   // 'f' regular file, 'd' directory, 'l' symlink; remote listings may hold others
	mode   uint32 // permission bits with setuid/setgid/sticky (07777)
	size   int64
	mtime  int64 // Unix seconds: SFTP v3 carries whole seconds only
	target string
	nlink  int    // remote only: hard links, to avoid in-place metadata fixes on snapshots
	abs    string // local only
}

// posixMode converts a Go file mode to the 07777 bits the node shows.
func posixMode(m fs.FileMode) uint32 {
	p := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		p |= 04000
	}
	if m&fs.ModeSetgid != 0 {
		p |= 02000
	}
	if m&fs.ModeSticky != 0 {
		p |= 01000
	}
	return p
}

// goMode is the inverse of posixMode, for sftp's Chmod.
func goMode(p uint32) fs.FileMode {
	m := fs.FileMode(p & 0777)
	if p&04000 != 0 {
		m |= fs.ModeSetuid
	}
	if p&02000 != 0 {
		m |= fs.ModeSetgid
	}
	if p&01000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

func kindName(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "not a regular file, directory or symlink"
}

// scanner walks the local tree. Everything that could make the sync fail
// locally (an unreadable directory or file, a FIFO) is found here, before
// the node is touched.
type scanner struct {
	root    string
	open    func(string) (*os.File, error)
	entries []entry
}

// scanTree lists root (following root itself if it is a symlink, never
// anything below it) minus ignored paths, parents before children.
func scanTree(root string, open func(string) (*os.File, error)) ([]entry, error) {
	fi, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("cannot sync %s: %w", root, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("cannot sync %s: not a directory", root)
	}
	s := &scanner{root: root, open: open}
	s.entries = append(s.entries, entry{kind: 'd', mode: posixMode(fi.Mode()), mtime: fi.ModTime().Unix(), abs: root})

	// .sshqignore replaces the .gitignore files rather than adding to them:
	// it is how a user syncs something git ignores (data, build outputs).
	var rules ignoreRules
	useGit := true
	sq := filepath.Join(root, ".sshqignore")
	if sfi, err := os.Lstat(sq); err == nil {
		// readIgnoreFile skips what is not a regular file, as git does for
		// a .gitignore; a .sshqignore skipped that way would sync everything
		// it was written to keep off the node, .gitignore rules included.
		if !sfi.Mode().IsRegular() {
			return nil, fmt.Errorf("cannot sync %s: %s is %s; .sshqignore must be a regular file: replace it with a file holding the rules", root, sq, ignoreKind(sfi.Mode()))
		}
		if rules, err = readIgnoreFile(sq, ""); err != nil {
			return nil, err
		}
		useGit = false
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("cannot read ignore file %s: %w", sq, err)
	}
	if err := s.walk("", root, rules, useGit); err != nil {
		return nil, err
	}
	return s.entries, nil
}

func (s *scanner) walk(rel, abs string, rules ignoreRules, useGit bool) error {
	if useGit {
		more, err := readIgnoreFile(filepath.Join(abs, ".gitignore"), rel)
		if err != nil {
			return err
		}
		if len(more) > 0 {
			// A fresh slice: siblings must not see each other's rules.
			rules = append(rules[:len(rules):len(rules)], more...)
		}
	}
	des, err := os.ReadDir(abs)
	if err != nil {
		return fmt.Errorf("cannot read directory %s: %w (fix its permissions or add it to .sshqignore)", abs, err)
	}
	for _, de := range des {
		name := de.Name()
		if name == ".git" || strings.HasPrefix(name, tempPrefix) {
			continue
		}
		crel := path.Join(rel, name)
		cabs := filepath.Join(abs, name)
		fi, err := de.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted while we walk: it is simply not part of this sync
		}
		if err != nil {
			return fmt.Errorf("cannot stat %s: %w", cabs, err)
		}
		m := fi.Mode()
		if rules.ignored(crel, m.IsDir()) {
			continue
		}
		e := entry{rel: crel, mode: posixMode(m), mtime: fi.ModTime().Unix(), abs: cabs}
		switch {
		case m.IsDir():
			e.kind = 'd'
			s.entries = append(s.entries, e)
			if err := s.walk(crel, cabs, rules, useGit); err != nil {
				return err
			}
		case m&fs.ModeSymlink != 0:
			// The link's text travels, never what it points at.
			t, err := os.Readlink(cabs)
			if err != nil {
				return fmt.Errorf("cannot read symlink %s: %w", cabs, err)
			}
			e.kind, e.target = 'l', t
			s.entries = append(s.entries, e)
		case m.IsRegular():
			f, err := s.open(cabs)
			if err != nil {
				return fmt.Errorf("cannot read %s: %w (fix its permissions or add it to .sshqignore)", cabs, err)
			}
			f.Close()
			e.kind, e.size = 'f', fi.Size()
			s.entries = append(s.entries, e)
		default:
			return fmt.Errorf("cannot sync %s: it is %s; only regular files, directories and symlinks can be synced (remove it or add it to .sshqignore)", cabs, kindName(m))
		}
	}
	return nil
}

func ignoreKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	}
	return kindName(m)
}
