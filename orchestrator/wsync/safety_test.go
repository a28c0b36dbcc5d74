package wsync

import (
	"context"
	"crypto/rand"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// A file mount goes into a user's directory: a remote directory full of
// their data where the local tree has a file is refused, never removed
// (rsync without --delete does the same); an empty one is replaced.
func TestNoDeleteRefusesToRemoveUserDirectory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, kind := range []string{"file", "symlink"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			n := newNode(t)
			src := t.TempDir()
			if kind == "file" {
				write(t, filepath.Join(src, "results"), "a file now", 0o644, t0)
			} else {
				must(t, os.Symlink("elsewhere", filepath.Join(src, "results")))
			}
			write(t, filepath.Join(src, "train.py"), "new", 0o644, t0)
			dst := filepath.Join(n.home, "proj")
			write(t, filepath.Join(dst, "results/run1/metrics.csv"), "precious", 0o644, t0)
			before := treeOf(t, dst)

			_, err := Push(ctx, n, src, dst, Options{NoDelete: true})
			if err == nil || !strings.Contains(err.Error(), filepath.Join(dst, "results")) {
				t.Fatalf("want an error naming %s, got %v", filepath.Join(dst, "results"), err)
			}
			assertSame(t, before, treeOf(t, dst))
		})
	}
	t.Run("empty directory and file", func(t *testing.T) {
		t.Parallel()
		n := newNode(t)
		src := t.TempDir()
		write(t, filepath.Join(src, "was-empty-dir"), "file", 0o644, t0)
		write(t, filepath.Join(src, "was-file/x"), "x", 0o644, t0)
		dst := filepath.Join(n.home, "proj")
		must(t, os.MkdirAll(filepath.Join(dst, "was-empty-dir"), 0o755))
		write(t, filepath.Join(dst, "was-file"), "old", 0o644, t0)
		write(t, filepath.Join(dst, "user-data"), "keep", 0o644, t0)
		_, err := Push(ctx, n, src, dst, Options{NoDelete: true})
		must(t, err)
		got := treeOf(t, dst)
		if got["was-empty-dir"].content != "file" || got["was-file/x"].content != "x" || got["user-data"].content != "keep" {
			t.Errorf("node has %+v", got)
		}
	})
}

// File mounts keep no stamp: an unchanged file must not be hashed on both
// sides at every sync for want of one.
func TestMountsDoNotRehashUnchangedFiles(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	src := t.TempDir()
	for i := range 20 {
		write(t, filepath.Join(src, fmt.Sprintf("f%d", i)), strings.Repeat("x", 1000), 0o644, t0)
	}
	ctx := context.Background()
	dst := filepath.Join(n.home, "mnt")
	_, err := Push(ctx, n, src, dst, Options{NoDelete: true})
	must(t, err)
	st, err := Push(ctx, n, src, dst, Options{NoDelete: true})
	must(t, err)
	if st.Hashed != 0 || st.Uploaded != 0 {
		t.Errorf("re-sync of an unchanged mount did work: %+v", st)
	}
	f := filepath.Join(src, "f0")
	_, err = PushFile(ctx, n, f, "~/one", Options{})
	must(t, err)
	st, err = PushFile(ctx, n, f, "~/one", Options{})
	must(t, err)
	if st.Hashed != 0 || st.Uploaded != 0 {
		t.Errorf("re-sync of an unchanged file mount did work: %+v", st)
	}
	// The documented limit: a same-size edit keeping the mtime second needs Checksum.
	write(t, f, strings.Repeat("y", 1000), 0o644, t0)
	st, err = PushFile(ctx, n, f, "~/one", Options{Checksum: true})
	must(t, err)
	if b, _ := os.ReadFile(filepath.Join(n.home, "one")); st.Uploaded != 1 || string(b) != strings.Repeat("y", 1000) {
		t.Errorf("Checksum file mount missed the edit: %+v", st)
	}
}

// No other user of the node may read a private file at any moment: not
// while it is being written under its temp name, not through the cache
// directories above it.
func TestPrivateFilesAreNeverReadableByOthers(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	src := t.TempDir()
	big := make([]byte, 2<<20) // many pipelined writes
	rand.Read(big)
	write(t, filepath.Join(src, "secret.key"), string(big), 0o600, t0)
	write(t, filepath.Join(src, ".env"), "TOKEN=hunter2", 0o400, t0)
	write(t, filepath.Join(src, "sub/id_ed25519"), "key", 0o600, t0)
	write(t, filepath.Join(src, "public.txt"), "hello", 0o644, t0)
	ctx := context.Background()

	var mu sync.Mutex
	checks := 0
	reported := map[string]bool{}
	// watch looks at every temp file of a private file under dir whenever
	// progress is reported, i.e. after data was written.
	watch := func(dir string) func(Progress) {
		return func(Progress) {
			filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
				if err != nil || !strings.HasPrefix(d.Name(), tempPrefix) || strings.HasSuffix(d.Name(), "public.txt") {
					return nil
				}
				fi, err := d.Info()
				if err != nil || fi.Size() == 0 {
					return nil // renamed into place meanwhile, or nothing written yet
				}
				bad := fi.Mode().Perm()&0o077 != 0
				mu.Lock()
				checks++
				first := bad && !reported[p]
				if bad {
					reported[p] = true
				}
				mu.Unlock()
				if first {
					t.Errorf("%s (%d bytes written) is %v on the node while being written", p, fi.Size(), fi.Mode().Perm())
				}
				return nil
			})
		}
	}

	dst := filepath.Join(n.home, ".sshq/workdirs/k")
	_, err := Push(ctx, n, src, "~/.sshq/workdirs/k", Options{Concurrency: 2, Progress: watch(dst)})
	must(t, err)
	assertSame(t, treeOf(t, src), treeOf(t, dst))
	for _, d := range []string{".sshq", ".sshq/workdirs"} {
		if fi, err := os.Stat(filepath.Join(n.home, d)); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("~/%s: %v %v, want a directory only its owner can read (0700)", d, fi.Mode(), err)
		}
	}

	// A changed private file in an existing tree, and a file mount.
	write(t, filepath.Join(src, "secret.key"), string(big[:1<<20]), 0o600, t0)
	_, err = Push(ctx, n, src, "~/.sshq/workdirs/k", Options{Progress: watch(dst)})
	must(t, err)
	assertSame(t, treeOf(t, src), treeOf(t, dst))
	mnt := filepath.Join(n.home, "mnt")
	_, err = Push(ctx, n, src, "~/mnt", Options{NoDelete: true, Progress: watch(mnt)})
	must(t, err)
	// (a mount leaves the mode and mtime of its target directory alone)
	assertSame(t, without(treeOf(t, src), "."), without(treeOf(t, mnt), "."))
	_, err = PushFile(ctx, n, filepath.Join(src, ".env"), "~/cfg/.env", Options{Progress: watch(filepath.Join(n.home, "cfg"))})
	must(t, err)
	if got := treeOf(t, filepath.Join(n.home, "cfg"))[".env"]; got != treeOf(t, src)[".env"] {
		t.Errorf("file mount arrived as %+v", got)
	}
	if checks == 0 {
		t.Fatal("no temp file of a private file was ever seen: the test checked nothing")
	}
}

// A file deleted locally after the scan listed it does not fail the sync:
// the node's copy stays as it was, and the stamp does not advance, so the
// next sync looks at the file again.
func TestLocalFileVanishingMidSync(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	src := t.TempDir()
	write(t, filepath.Join(src, "hashed.txt"), "old1", 0o644, t0)
	write(t, filepath.Join(src, "sent.txt"), "old2", 0o644, t0)
	write(t, filepath.Join(src, "other.txt"), "old3", 0o644, t0)
	ctx := context.Background()
	dst := filepath.Join(n.home, "w")
	_, err := Push(ctx, n, src, dst, Options{})
	must(t, err)
	old := t0.Add(-time.Hour)
	must(t, os.Chtimes(dst+".sshq-stamp", old, old))

	write(t, filepath.Join(src, "hashed.txt"), "new1", 0o644, t0.Add(time.Hour)) // same size: compared by hash
	write(t, filepath.Join(src, "sent.txt"), "new 2", 0o644, t0)                 // new size: sent
	write(t, filepath.Join(src, "other.txt"), "new 3", 0o644, t0)
	var mu sync.Mutex
	opened := map[string]int{}
	// The scan opens each file once; the second open (hash or send) finds
	// it deleted, as if the user removed it meanwhile.
	open := func(name string) (*os.File, error) {
		mu.Lock()
		opened[name]++
		k := opened[name]
		mu.Unlock()
		if base := filepath.Base(name); k == 2 && (base == "hashed.txt" || base == "sent.txt") {
			must(t, os.Remove(name))
		}
		return os.Open(name)
	}
	st, err := Push(ctx, n, src, dst, Options{open: open})
	must(t, err)
	if st.Vanished != 2 {
		t.Errorf("want 2 vanished files, got %+v", st)
	}
	got := treeOf(t, dst)
	if got["hashed.txt"].content != "old1" || got["sent.txt"].content != "old2" || got["other.txt"].content != "new 3" {
		t.Errorf("node has hashed.txt=%q sent.txt=%q other.txt=%q, want old1, old2, new 3",
			got["hashed.txt"].content, got["sent.txt"].content, got["other.txt"].content)
	}
	if fi, err := os.Stat(dst + ".sshq-stamp"); err != nil || !fi.ModTime().Equal(old) {
		t.Errorf("stamp after a sync that skipped files: %v %v, want it left at %v", fi.ModTime(), err, old)
	}

	// The next sync removes them, as they are gone locally.
	st, err = Push(ctx, n, src, dst, Options{})
	must(t, err)
	assertSame(t, treeOf(t, src), treeOf(t, dst))
	if st.Deleted != 2 || st.Vanished != 0 {
		t.Errorf("resync: want 2 deletions, got %+v", st)
	}

	// A file mount has nothing else to sync: its file vanishing is an error.
	f := filepath.Join(src, "other.txt")
	write(t, f, "again", 0o644, t0)
	opened = map[string]int{}
	if _, err := PushFile(ctx, n, f, "~/m/other.txt", Options{open: func(name string) (*os.File, error) {
		mu.Lock()
		opened[name]++
		k := opened[name]
		mu.Unlock()
		if k == 2 {
			must(t, os.Remove(name))
		}
		return os.Open(name)
	}}); err == nil || !strings.Contains(err.Error(), f) {
		t.Errorf("file mount of a vanished file: want an error naming %s, got %v", f, err)
	}
}

// The kernel's file clock lags time.Now by up to a tick: a file edited just
// after a sync started can carry an mtime in the second before. The stamp
// must still flag it.
func TestStampCoversCoarseFileClock(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	ctx := context.Background()
	for attempt := 0; ; attempt++ {
		src := t.TempDir()
		p := filepath.Join(src, "v.txt")
		dst := filepath.Join(n.home, fmt.Sprintf("w%d", attempt))
		before := time.Now().Unix()
		edit := time.Unix(before-1, 0)
		write(t, p, "old code", 0o644, edit)
		_, err := Push(ctx, n, src, dst, Options{})
		must(t, err)
		if time.Now().Unix() != before {
			// The sync's start second is not known exactly: try again.
			if attempt == 5 {
				t.Skip("could not run a sync within one second")
			}
			continue
		}
		// Edited after the sync read it, stamped in the second before its start.
		write(t, p, "new code", 0o644, edit)
		st, err := Push(ctx, n, src, dst, Options{})
		must(t, err)
		if b, _ := os.ReadFile(filepath.Join(dst, "v.txt")); string(b) != "new code" || st.Uploaded != 1 {
			t.Fatalf("edit stamped in the second before the sync missed: node has %q (%+v)", b, st)
		}
		break
	}
}

// The stamp is written through a temp name; temp names an interrupted
// write left are removed by the next sync.
func TestStampTempsAreCleanedUp(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	src := t.TempDir()
	write(t, filepath.Join(src, "a"), "a", 0o644, t0)
	dst := filepath.Join(n.home, "cache/k")
	stale := dst + ".sshq-stamp" + stampTempInfix + "0123456789ab"
	write(t, stale, "", 0o644, time.Now())
	_, err := Push(context.Background(), n, src, dst, Options{})
	must(t, err)
	des, err := os.ReadDir(filepath.Dir(dst))
	must(t, err)
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	if strings.Join(names, " ") != "k k.sshq-stamp" {
		t.Errorf("beside the cache: %q, want only the cache and its stamp", names)
	}
}

// Mirroring deletes everything else in the target: a directory above the
// home directory would take the home directory with it.
func TestPushRefusesAncestorOfHome(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	n.home = filepath.Join(n.home, "users/alice")
	write(t, filepath.Join(n.home, ".bashrc"), "precious", 0o644, t0)
	src := t.TempDir()
	write(t, filepath.Join(src, "a"), "a", 0o644, t0)
	for _, dst := range []string{filepath.Dir(n.home), filepath.Dir(filepath.Dir(n.home)), "~/..", "~/../.."} {
		if _, err := Push(context.Background(), n, src, dst, Options{}); err == nil || !strings.Contains(err.Error(), "refusing") {
			t.Errorf("Push to %q: want a refusal, got %v", dst, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(n.home, ".bashrc")); err != nil || string(b) != "precious" {
		t.Errorf("home was changed: %q %v", b, err)
	}
	// A sibling of home, or a directory inside it, is fine.
	for _, dst := range []string{filepath.Join(filepath.Dir(n.home), "alice-cache"), "~/w"} {
		if _, err := Push(context.Background(), n, src, dst, Options{}); err != nil {
			t.Errorf("Push to %q: %v", dst, err)
		}
	}
}

// Jobs and other syncs create and rename temp files in a directory while it
// is listed: entries that vanish under find are not an error.
func TestListingToleratesConcurrentRenames(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	dir := filepath.Join(n.home, "w")
	must(t, os.MkdirAll(dir, 0o755))
	for i := range 2000 {
		must(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%04d", i)), nil, 0o644))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			a := filepath.Join(dir, fmt.Sprintf("%s%d-x", tempPrefix, i))
			os.WriteFile(a, nil, 0o644)
			os.Rename(a, a+"y")
			os.Remove(a + "y")
		}
	})
	defer func() { close(stop); wg.Wait() }()
	expr, err := remotePathExpr(dir)
	must(t, err)
	// Each listing reads 2,000 entries while files come and go: ten of
	// each kind meet many vanished entries.
	for _, mirror := range []bool{true, false} {
		for range 10 {
			if _, err := runChecked(context.Background(), n, "listing", listDirScript(expr, mirror), nil); err != nil {
				t.Fatalf("mirror=%v: %v", mirror, err)
			}
		}
	}
}
