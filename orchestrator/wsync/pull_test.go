package wsync

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// inodes records each regular file's inode and ctime: a file that was
// rewritten (new inode) or touched at all (chmod, utimes: new ctime)
// shows.
func inodes(t *testing.T, root string) map[string][2]int64 {
	t.Helper()
	m := map[string][2]int64{}
	for rel, n := range treeOf(t, root) {
		if n.kind != "file" {
			continue
		}
		fi, err := os.Lstat(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		m[rel] = [2]int64{int64(st.Ino), st.Ctim.Nano()}
	}
	return m
}

func TestPullCopiesATreeLikeCpAndOnlyWhatChanged(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	remote := filepath.Join(n.home, "job", "out")
	outside := filepath.Join(t.TempDir(), "passwd")
	write(t, outside, "root:x:0:0\n", 0o644, time.Time{})
	richTree(t, remote, outside)
	ctx := context.Background()
	dest := t.TempDir()

	st, err := Pull(ctx, n, "~/job/out", dest, Options{})
	must(t, err)
	local := filepath.Join(dest, "out") // into an existing directory: its own name there
	if st.RemotePath != remote || st.LocalPath != local {
		t.Errorf("paths %q → %q, want %q → %q", st.RemotePath, st.LocalPath, remote, local)
	}
	// Byte for byte, modes and mtimes, links as links; the link that
	// points out of the tree is not planted here.
	assertSame(t, without(treeOf(t, remote), "passwd-link"), treeOf(t, local))
	if !slices.Equal(st.UnsafeLinks, []string{"passwd-link"}) {
		t.Errorf("unsafe links %q, want passwd-link", st.UnsafeLinks)
	}
	if st.Downloaded == 0 || st.Files != 11 {
		t.Errorf("stats %+v", st)
	}
	if tmp := tempFiles(t, local); len(tmp) > 0 {
		t.Errorf("temp files left: %q", tmp)
	}

	// Again: nothing is rewritten, nor even touched.
	before := inodes(t, local)
	st, err = Pull(ctx, n, "~/job/out", dest, Options{})
	must(t, err)
	if st.Downloaded != 0 || st.Hashed != 0 || st.MetadataOnly != 0 || st.DirsCreated != 0 {
		t.Errorf("second pull did work: %+v", st)
	}
	if after := inodes(t, local); !mapsEqual(before, after) {
		t.Errorf("second pull touched files:\nbefore %v\nafter  %v", before, after)
	}

	// One file changed, one only touched on the node: one travels, the
	// other gets its mtime without being rewritten.
	write(t, filepath.Join(remote, "train.py"), "print('changed')\n", 0o644, t0.Add(time.Hour))
	must(t, os.Chtimes(filepath.Join(remote, "empty.txt"), t0.Add(2*time.Hour), t0.Add(2*time.Hour)))
	before = inodes(t, local)
	st, err = Pull(ctx, n, "~/job/out", dest, Options{})
	must(t, err)
	if st.Downloaded != 1 || st.Hashed != 1 || st.MetadataOnly != 1 {
		t.Errorf("after a change: %+v, want 1 download and 1 metadata fix", st)
	}
	assertSame(t, without(treeOf(t, remote), "passwd-link"), treeOf(t, local))
	after := inodes(t, local)
	if after["empty.txt"][0] != before["empty.txt"][0] || after["train.py"][0] == before["train.py"][0] {
		t.Errorf("empty.txt must keep its inode (%v → %v), train.py must be replaced (%v → %v)",
			before["empty.txt"], after["empty.txt"], before["train.py"], after["train.py"])
	}
	if after["run.sh"] != before["run.sh"] {
		t.Errorf("an unchanged file was touched")
	}
}

func mapsEqual(a, b map[string][2]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// cp's rules for where things go, and a file alone.
func TestPullDestinations(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	write(t, filepath.Join(n.home, "w/run.sh"), "#!/bin/sh\n", 0o751, t0)
	write(t, filepath.Join(n.home, "w/d/x"), "x", 0o600, t0)
	must(t, os.Symlink("run.sh", filepath.Join(n.home, "w/link.sh")))
	ctx := context.Background()
	dest := t.TempDir()

	// A file into a directory, to a new name, through a symlink to it.
	for _, tc := range []struct{ remote, local, want string }{
		{"~/w/run.sh", dest, filepath.Join(dest, "run.sh")},
		{"~/w/run.sh", filepath.Join(dest, "renamed.sh"), filepath.Join(dest, "renamed.sh")},
		{n.home + "/w/link.sh", filepath.Join(dest, "followed.sh"), filepath.Join(dest, "followed.sh")},
		{"~/w/d", filepath.Join(dest, "newdir"), filepath.Join(dest, "newdir", "x")},
	} {
		st, err := Pull(ctx, n, tc.remote, tc.local, Options{})
		if err != nil {
			t.Errorf("%s → %s: %v", tc.remote, tc.local, err)
			continue
		}
		fi, err := os.Lstat(tc.want)
		if err != nil || !fi.Mode().IsRegular() || fi.ModTime().Unix() != t0.Unix() {
			t.Errorf("%s → %s: %s is %v (%v), want a regular file of the node's mtime (%+v)", tc.remote, tc.local, tc.want, fi, err, st)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dest, "run.sh")); fi == nil || fi.Mode().Perm() != 0o751 {
		t.Errorf("mode of run.sh: %v, want 0751", fi)
	}

	for _, tc := range []struct{ remote, local, want string }{
		{"~/w/none", dest, "does not exist on the node"},
		{"~/w/d", filepath.Join(dest, "no/such/dir"), "does not exist; create it first"},
		{"~/w/d", filepath.Join(dest, "run.sh"), "is not a directory"},
		{"~/w/run.sh", filepath.Join(dest, "newdir"), "x"}, // into newdir: fine, as cp
		{"relative/path", dest, "must be absolute or start with ~/"},
	} {
		_, err := Pull(ctx, n, tc.remote, tc.local, Options{})
		if tc.want == "x" {
			if err != nil {
				t.Errorf("%s → %s: %v", tc.remote, tc.local, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s → %s: %v, want %q", tc.remote, tc.local, err, tc.want)
		}
	}
}

// A local symlink below the destination is never followed: one where the
// node has a directory is replaced, so nothing lands where it points.
func TestPullNeverWritesThroughALocalSymlink(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	write(t, filepath.Join(n.home, "out/sub/f.txt"), "node", 0o644, t0)
	write(t, filepath.Join(n.home, "out/g.txt"), "node", 0o644, t0)
	dest := t.TempDir()
	elsewhere := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dest, "out"), 0o755))
	must(t, os.Symlink(elsewhere, filepath.Join(dest, "out/sub")))
	must(t, os.Symlink(filepath.Join(elsewhere, "g.txt"), filepath.Join(dest, "out/g.txt")))
	_, err := Pull(context.Background(), n, "~/out", dest, Options{})
	must(t, err)
	if left, _ := os.ReadDir(elsewhere); len(left) != 0 {
		t.Errorf("the download wrote through a symlink into %s: %v", elsewhere, left)
	}
	assertSame(t, treeOf(t, filepath.Join(n.home, "out")), treeOf(t, filepath.Join(dest, "out")))
}

func TestPullProgressCountsWhatTravels(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	richTree(t, filepath.Join(n.home, "out"), "/etc/passwd")
	var last Progress
	st, err := Pull(context.Background(), n, "~/out", t.TempDir(), Options{Progress: func(p Progress) {
		if p.BytesDone < last.BytesDone || p.FilesDone < last.FilesDone {
			t.Errorf("progress went backwards: %+v after %+v", p, last)
		}
		last = p
	}})
	must(t, err)
	if st.Downloaded == 0 || last.FilesDone != last.FilesTotal || last.FilesTotal != st.Downloaded ||
		last.BytesDone != last.BytesTotal || last.BytesTotal != st.BytesDownloaded {
		t.Errorf("final progress %+v does not match stats %+v", last, st)
	}
}
