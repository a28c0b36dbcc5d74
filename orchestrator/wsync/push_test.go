package wsync

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
)

var t0 = time.Unix(1_600_000_000, 0)

// richTree writes a tree with every kind of thing a workdir holds.
func richTree(t *testing.T, src, outside string) {
	t.Helper()
	write(t, filepath.Join(src, "train.py"), "print('hi')\n", 0o644, t0)
	write(t, filepath.Join(src, "run.sh"), "#!/bin/sh\necho run\n", 0o755, t0.Add(time.Second))
	write(t, filepath.Join(src, "secret.key"), "k", 0o600, t0.Add(2*time.Second))
	write(t, filepath.Join(src, "readonly.cfg"), "ro", 0o444, t0.Add(3*time.Second))
	write(t, filepath.Join(src, "empty.txt"), "", 0o644, t0.Add(4*time.Second))
	write(t, filepath.Join(src, "pkg/sub/deep/mod.py"), "x = 1\n", 0o644, t0.Add(5*time.Second))
	write(t, filepath.Join(src, "weird names/it's a \"file\"\nwith newline"), "w", 0o644, t0)
	write(t, filepath.Join(src, "weird names/-leading-dash"), "d", 0o644, t0)
	write(t, filepath.Join(src, "weird names/ünïcödé $(reboot) *"), "u", 0o644, t0)
	big := make([]byte, 3<<20+123) // several pipelined writes
	rand.Read(big)
	write(t, filepath.Join(src, "data/big.bin"), string(big), 0o640, t0.Add(6*time.Second))
	write(t, filepath.Join(src, "locked/inside.txt"), "in a read-only dir", 0o644, t0)
	must(t, os.Chmod(filepath.Join(src, "locked"), 0o555))
	must(t, os.MkdirAll(filepath.Join(src, "empty/dir"), 0o750))
	must(t, os.Symlink("../train.py", filepath.Join(src, "pkg/link-rel")))
	must(t, os.Symlink("pkg/sub", filepath.Join(src, "link-to-dir")))
	must(t, os.Symlink("does/not/exist", filepath.Join(src, "dangling")))
	must(t, os.Symlink(outside, filepath.Join(src, "passwd-link")))
	for _, d := range []string{"empty/dir", "empty", "weird names", "pkg/sub/deep", "pkg/sub", "pkg", "data"} {
		must(t, os.Chtimes(filepath.Join(src, d), t0.Add(-time.Hour), t0.Add(-time.Hour)))
	}
}

func TestPushMirrorsTree(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	src := t.TempDir()
	outside := filepath.Join(t.TempDir(), "passwd")
	const secret = "root:x:0:0:NEVER-UPLOAD-THIS:/root:/bin/bash\n"
	write(t, outside, secret, 0o644, time.Time{})
	richTree(t, src, outside)
	ctx := context.Background()

	st, err := Push(ctx, n, src, "~/.sshq/workdirs/k1", Options{})
	must(t, err)
	dst := filepath.Join(n.home, ".sshq/workdirs/k1")
	if st.RemoteDir != dst {
		t.Errorf("RemoteDir = %q, want %q", st.RemoteDir, dst)
	}
	got := treeOf(t, dst)
	assertSame(t, treeOf(t, src), got)
	if l := got["passwd-link"]; l.kind != "link" || l.content != outside {
		t.Errorf("outside symlink arrived as %+v, want a link to %s", l, outside)
	}
	for k, v := range got {
		if strings.Contains(v.content, "NEVER-UPLOAD-THIS") && v.kind == "file" {
			t.Errorf("%s: the target of an outside symlink was uploaded", k)
		}
	}

	// Nothing changed: nothing travels, one remote command.
	runs := n.runs.Load()
	st, err = Push(ctx, n, src, "~/.sshq/workdirs/k1", Options{})
	must(t, err)
	if st.Uploaded != 0 || st.Deleted != 0 || st.MetadataOnly != 0 || st.Hashed != 0 {
		t.Errorf("re-sync of an unchanged tree did work: %+v", st)
	}
	if r := n.runs.Load() - runs; r != 1 {
		t.Errorf("re-sync of an unchanged tree ran %d remote commands, want 1", r)
	}
	assertSame(t, treeOf(t, src), treeOf(t, dst))
}

func TestPushPropagatesChanges(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	src := t.TempDir()
	richTree(t, src, "/etc/passwd")
	ctx := context.Background()
	dst := filepath.Join(n.home, "w")
	_, err := Push(ctx, n, src, dst, Options{})
	must(t, err)

	must(t, os.Remove(filepath.Join(src, "secret.key")))
	must(t, os.RemoveAll(filepath.Join(src, "pkg/sub")))                                       // a directory with contents
	write(t, filepath.Join(src, "new/file.txt"), "new", 0o644, t0)                             // new file in a new dir
	write(t, filepath.Join(src, "train.py"), "print('changed size')\n", 0o644, t0)             // same mtime, other size
	must(t, os.Chmod(filepath.Join(src, "run.sh"), 0o700))                                     // mode only
	must(t, os.Chtimes(filepath.Join(src, "empty.txt"), t0.Add(time.Hour), t0.Add(time.Hour))) // mtime only, same content
	must(t, os.RemoveAll(filepath.Join(src, "data")))                                          // dir -> file
	write(t, filepath.Join(src, "data"), "now a file", 0o644, t0)
	must(t, os.Remove(filepath.Join(src, "readonly.cfg"))) // file -> dir
	write(t, filepath.Join(src, "readonly.cfg/x"), "now a dir", 0o644, t0)
	must(t, os.Remove(filepath.Join(src, "link-to-dir"))) // symlink -> file
	write(t, filepath.Join(src, "link-to-dir"), "now a file", 0o644, t0)
	must(t, os.Remove(filepath.Join(src, "dangling"))) // symlink retargeted
	must(t, os.Symlink("train.py", filepath.Join(src, "dangling")))
	write(t, filepath.Join(src, "locked/added.txt"), "into a read-only dir", 0o644, t0) // (root ignores modes; a user would not)

	st, err := Push(ctx, n, src, dst, Options{})
	must(t, err)
	assertSame(t, treeOf(t, src), treeOf(t, dst))
	if st.MetadataOnly != 2 || st.Hashed != 1 {
		t.Errorf("want 2 metadata-only fixes (mode of run.sh, mtime of empty.txt) after hashing 1 file, got %+v", st)
	}
	if st.Deleted < 4 {
		t.Errorf("want at least 4 remote deletions (secret.key, pkg/sub, data, readonly.cfg), got %+v", st)
	}
}

// The quick check sees size and mtime (to the second, the SFTP v3 unit):
// an edit that keeps both is invisible to it, as to rsync without -c, and
// Options.Checksum is the way to catch it.
func TestSameSizeSameMtimeNeedsChecksum(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	src := t.TempDir()
	p := filepath.Join(src, "model.cfg")
	write(t, p, "lr=0.1", 0o644, t0)
	dst := filepath.Join(n.home, "w")
	ctx := context.Background()
	_, err := Push(ctx, n, src, dst, Options{})
	must(t, err)

	write(t, p, "lr=0.2", 0o644, t0)
	st, err := Push(ctx, n, src, dst, Options{})
	must(t, err)
	if b, _ := os.ReadFile(filepath.Join(dst, "model.cfg")); string(b) != "lr=0.1" || st.Uploaded != 0 {
		t.Fatalf("quick check was expected to skip a same-size same-mtime edit; node has %q (%+v)", b, st)
	}
	st, err = Push(ctx, n, src, dst, Options{Checksum: true})
	must(t, err)
	if st.Uploaded != 1 || st.Hashed != 1 {
		t.Errorf("Checksum sync: want 1 file hashed and sent, got %+v", st)
	}
	assertSame(t, treeOf(t, src), treeOf(t, dst))

	// A touched file with the same content is fixed in place, not re-sent.
	must(t, os.Chtimes(p, t0.Add(time.Minute), t0.Add(time.Minute)))
	st, err = Push(ctx, n, src, dst, Options{})
	must(t, err)
	if st.Uploaded != 0 || st.MetadataOnly != 1 {
		t.Errorf("touched file: want metadata-only fix, got %+v", st)
	}
	assertSame(t, treeOf(t, src), treeOf(t, dst))
}

// Jobs run in `cp -al` snapshots of the cache: a re-sync must not change a
// byte, a mode or an mtime of them.
func TestHardLinkSnapshotKeepsOldContent(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	src := t.TempDir()
	richTree(t, src, "/etc/passwd")
	ctx := context.Background()
	dst := filepath.Join(n.home, "cache")
	_, err := Push(ctx, n, src, dst, Options{})
	must(t, err)
	snap := filepath.Join(n.home, "job1")
	if out, err := exec.Command("cp", "-al", dst, snap).CombinedOutput(); err != nil {
		t.Fatalf("cp -al: %v %s", err, out)
	}
	before := treeOf(t, snap)

	write(t, filepath.Join(src, "train.py"), "print('HI')\n", 0o644, t0.Add(time.Hour)) // same size, new mtime, new content
	write(t, filepath.Join(src, "data/big.bin"), "shrunk", 0o640, t0)                   // new size
	must(t, os.Chmod(filepath.Join(src, "run.sh"), 0o700))                              // mode only
	must(t, os.Chtimes(filepath.Join(src, "secret.key"), t0, t0))                       // mtime only
	must(t, os.Remove(filepath.Join(src, "empty.txt")))
	must(t, os.Remove(filepath.Join(src, "pkg/link-rel")))
	must(t, os.Symlink("elsewhere", filepath.Join(src, "pkg/link-rel")))

	st, err := Push(ctx, n, src, dst, Options{})
	must(t, err)
	if st.MetadataOnly != 2 {
		t.Errorf("want 2 metadata-only fixes, got %+v", st)
	}
	assertSame(t, treeOf(t, src), treeOf(t, dst))
	// Directories of a snapshot are its own (cp -al copies them), so only
	// what is hard-linked must be untouched: files and links.
	after := treeOf(t, snap)
	for k, v := range before {
		if v.kind == "dir" {
			delete(before, k)
			delete(after, k)
		}
	}
	assertSame(t, before, after)
}

func TestIgnoreRulesNestedGitignore(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	src := t.TempDir()
	files := []string{
		".gitignore", "keep.py", "debug.log", "important.log", "build/out.o", "docs/build/page.html",
		"sub/.gitignore", "sub/a.tmp", "sub/keep.tmp", "sub/deep/b.tmp", "sub/notes.txt", "sub/x/notes.txt",
		"cache/blob", "cache/keep.me", "node_modules/m/index.js", ".git/HEAD", ".git/objects/ab/cd",
		"data/", "logs/readme",
	}
	for _, f := range files {
		if strings.HasSuffix(f, "/") {
			must(t, os.MkdirAll(filepath.Join(src, f), 0o755))
			continue
		}
		write(t, filepath.Join(src, f), f, 0o644, t0)
	}
	write(t, filepath.Join(src, ".gitignore"), "# comment\n*.log\n!important.log\n/build/\ncache/*\n!cache/keep.me\nnode_modules/\nlogs\n", 0o644, t0)
	write(t, filepath.Join(src, "sub/.gitignore"), "*.tmp\n!keep.tmp\n/notes.txt\n", 0o644, t0)
	dst := filepath.Join(n.home, "w")
	ctx := context.Background()
	// A stale copy of an ignored file on the node is removed too: the cache
	// is the local tree minus ignored paths, nothing else.
	write(t, filepath.Join(dst, "debug.log"), "stale", 0o644, t0)

	_, err := Push(ctx, n, src, dst, Options{})
	must(t, err)
	want := without(treeOf(t, src), "debug.log", "build", "sub/a.tmp", "sub/deep/b.tmp", "sub/notes.txt",
		"cache/blob", "node_modules", ".git", "logs")
	assertSame(t, want, treeOf(t, dst))

	// .sshqignore replaces the .gitignore files entirely.
	write(t, filepath.Join(src, ".sshqignore"), "sub/\n*.py\n", 0o644, t0)
	_, err = Push(ctx, n, src, dst, Options{})
	must(t, err)
	want = without(treeOf(t, src), "sub", "keep.py", ".git")
	assertSame(t, want, treeOf(t, dst))
}

// Anything the sync could not read is reported, naming it, before the node
// changes at all.
func TestUnreadableLocalFileChangesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cases := map[string]func(t *testing.T, src string) (Options, string){
		"fifo": func(t *testing.T, src string) (Options, string) {
			p := filepath.Join(src, "pkg/queue")
			must(t, syscall.Mkfifo(p, 0o644))
			return Options{}, p
		},
		"socket": func(t *testing.T, src string) (Options, string) {
			p := filepath.Join(src, "s.sock")
			l, err := net.Listen("unix", p)
			must(t, err)
			t.Cleanup(func() { l.Close() })
			return Options{}, p
		},
		"permission denied": func(t *testing.T, src string) (Options, string) {
			// Root reads everything, so the failure comes from the open hook.
			p := filepath.Join(src, "pkg/sub/deep/mod.py")
			return Options{open: func(name string) (*os.File, error) {
				if name == p {
					return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrPermission}
				}
				return os.Open(name)
			}}, p
		},
	}
	for name, setup := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			n := newNode(t)
			src := t.TempDir()
			richTree(t, src, "/etc/passwd")
			dst := filepath.Join(n.home, "w")
			_, err := Push(ctx, n, src, dst, Options{})
			must(t, err)
			before := treeOf(t, dst)

			must(t, os.Remove(filepath.Join(src, "train.py")))
			write(t, filepath.Join(src, "run.sh"), "changed", 0o755, time.Time{})
			opts, bad := setup(t, src)
			_, err = Push(ctx, n, src, dst, opts)
			if err == nil || !strings.Contains(err.Error(), bad) {
				t.Fatalf("want an error naming %s, got %v", bad, err)
			}
			assertSame(t, before, treeOf(t, dst))
		})
	}
}

// versions writes the same paths with different content (and sizes) for
// interruption tests, returning what each path held.
func versionTree(t *testing.T, src string, v int) map[string]string {
	t.Helper()
	m := map[string]string{}
	for i := range 40 {
		p := filepath.Join(fmt.Sprintf("d%d", i%4), fmt.Sprintf("f%02d.bin", i))
		content := bytes.Repeat([]byte{byte('A' + v), byte(i)}, 40_000+v*1000+i)
		write(t, filepath.Join(src, p), string(content), 0o644, t0.Add(time.Duration(v)*time.Hour))
		m[filepath.ToSlash(p)] = string(content)
	}
	return m
}

// assertOldOrNew checks that every file on the node is entirely one of the
// two versions: never torn, never a mix.
func assertOldOrNew(t *testing.T, dst string, v1, v2 map[string]string) {
	t.Helper()
	newCount := 0
	for k, n := range treeOf(t, dst) {
		if n.kind != "file" || strings.HasPrefix(filepath.Base(k), tempPrefix) {
			continue
		}
		switch n.content {
		case v1[k]:
		case v2[k]:
			newCount++
		default:
			t.Errorf("%s: torn file on the node (%d bytes)", k, len(n.content))
		}
	}
	t.Logf("%d of %d files were new when the sync was interrupted", newCount, len(v2))
}

func TestInterruptedByCancelThenResync(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	src := t.TempDir()
	v1 := versionTree(t, src, 1)
	dst := filepath.Join(n.home, "w")
	_, err := Push(context.Background(), n, src, dst, Options{})
	must(t, err)
	v2 := versionTree(t, src, 2)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err = Push(ctx, n, src, dst, Options{Concurrency: 4, Progress: func(p Progress) {
		// Mid-file (files are ~80 kB, read in 32 kB chunks), after some
		// files are complete: the worst moment for a writer in place.
		if p.FilesDone >= 2 && p.BytesDone > 250_000 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled from the interrupted sync, got %v", err)
	}
	assertOldOrNew(t, dst, v1, v2)

	st, err := Push(context.Background(), n, src, dst, Options{})
	must(t, err)
	assertSame(t, treeOf(t, src), treeOf(t, dst))
	if left := tempFiles(t, dst); len(left) > 0 {
		t.Errorf("temp files left after the resync: %v", left)
	}
	t.Logf("resync: %+v", st)
}

// TestMain doubles as the child process that TestInterruptedByKill kills.
func TestMain(m *testing.M) {
	if os.Getenv("WSYNC_CHILD_SRC") != "" {
		n := &localNode{home: os.Getenv("WSYNC_CHILD_HOME")}
		var sent int64
		_, err := Push(context.Background(), n, os.Getenv("WSYNC_CHILD_SRC"), os.Getenv("WSYNC_CHILD_DST"), Options{
			Concurrency: 4,
			Progress: func(p Progress) {
				// Bytes are counted while their file is still a temp file:
				// stop there, mid-sync, until killed, however fast the
				// machine is.
				if p.FilesDone >= 2 && p.BytesDone > 250_000 && p.BytesDone > sent {
					select {}
				}
				sent = p.BytesDone
			},
		})
		if err != nil {
			os.Stderr.WriteString(err.Error())
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestInterruptedByKillThenResync(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	src := t.TempDir()
	v1 := versionTree(t, src, 1)
	dst := filepath.Join(n.home, "w")
	_, err := Push(context.Background(), n, src, dst, Options{})
	must(t, err)
	v2 := versionTree(t, src, 2)

	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), "WSYNC_CHILD_SRC="+src, "WSYNC_CHILD_HOME="+n.home, "WSYNC_CHILD_DST="+dst)
	must(t, child.Start())
	done := make(chan error, 1)
	go func() { done <- child.Wait() }()
	// The child stops mid-sync with a temp file on the node (see TestMain);
	// the deadline only catches a hang.
	deadline := time.Now().Add(2 * time.Minute)
	for len(tempFiles(t, dst)) == 0 {
		select {
		case err := <-done:
			t.Fatalf("the child ended (%v) before it stopped mid-sync", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no temp file appeared on the node within 2 minutes")
		}
		time.Sleep(10 * time.Millisecond)
	}
	must(t, child.Process.Kill())
	<-done
	assertOldOrNew(t, dst, v1, v2)

	_, err = Push(context.Background(), n, src, dst, Options{})
	must(t, err)
	assertSame(t, treeOf(t, src), treeOf(t, dst))
	if left := tempFiles(t, dst); len(left) > 0 {
		t.Errorf("temp files left after the resync: %v", left)
	}
}

func TestPushFile(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "creds.json")
	write(t, p, `{"k": 1}`, 0o600, t0)
	ctx := context.Background()
	// A neighbour of the target must survive: file mounts share directories.
	write(t, filepath.Join(n.home, ".config/app/other"), "keep me", 0o644, t0)
	// A temp file from an interrupted PushFile is cleaned up.
	write(t, filepath.Join(n.home, ".config/app", tempPrefix+"0123456789ab-creds.json"), "stale", 0o600, t0)

	st, err := PushFile(ctx, n, p, "~/.config/app/creds.json", Options{})
	must(t, err)
	remote := filepath.Join(n.home, ".config/app/creds.json")
	if st.RemoteDir != remote || st.Uploaded != 1 || st.StaleTemps != 1 {
		t.Errorf("stats %+v, want RemoteDir %s, 1 upload, 1 stale temp", st, remote)
	}
	want := treeOf(t, dir)["creds.json"]
	if got := treeOf(t, filepath.Dir(remote)); got["creds.json"] != want || got["other"].content != "keep me" || len(got) != 3 {
		t.Errorf("node has %+v, want creds.json = %+v beside other", got, want)
	}

	write(t, p, `{"k": 22}`, 0o640, t0.Add(time.Hour))
	_, err = PushFile(ctx, n, p, "~/.config/app/creds.json", Options{})
	must(t, err)
	if got := treeOf(t, filepath.Dir(remote))["creds.json"]; got != treeOf(t, dir)["creds.json"] {
		t.Errorf("after update node has %+v", got)
	}

	must(t, os.MkdirAll(filepath.Join(n.home, "adir"), 0o755))
	if _, err := PushFile(ctx, n, p, "~/adir", Options{}); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("file onto a remote directory: want an error saying so, got %v", err)
	}

	// A directory mount goes through Push.
	write(t, filepath.Join(dir, "sub/x"), "x", 0o644, t0)
	_, err = PushFile(ctx, n, dir, "/"+filepath.Join(strings.TrimPrefix(n.home, "/"), "mnt"), Options{})
	must(t, err)
	assertSame(t, treeOf(t, dir), treeOf(t, filepath.Join(n.home, "mnt")))
}

func TestPushRefusesToMirrorHome(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	src := t.TempDir()
	write(t, filepath.Join(src, "a"), "a", 0o644, t0)
	write(t, filepath.Join(n.home, ".bashrc"), "precious", 0o644, t0)
	for _, dst := range []string{"~", "~/", n.home, "~/x/.."} {
		if _, err := Push(context.Background(), n, src, dst, Options{}); err == nil || !strings.Contains(err.Error(), "refusing") {
			t.Errorf("Push to %q: want a refusal, got %v", dst, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(n.home, ".bashrc")); err != nil || string(b) != "precious" {
		t.Errorf("home was changed: %q %v", b, err)
	}
	if _, err := Push(context.Background(), n, src, "relative/dir", Options{}); err == nil {
		t.Error("a relative remote path was accepted")
	}
}

func TestProgressCountsWhatTravels(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	src := t.TempDir()
	richTree(t, src, "/etc/passwd")
	var last Progress
	calls := 0
	st, err := Push(context.Background(), n, src, "~/w", Options{Progress: func(p Progress) {
		if p.BytesDone < last.BytesDone || p.FilesDone < last.FilesDone {
			t.Errorf("progress went backwards: %+v after %+v", p, last)
		}
		last = p
		calls++
	}})
	must(t, err)
	if last.FilesDone != last.FilesTotal || last.BytesDone != last.BytesTotal || last.FilesTotal != st.Uploaded || last.BytesTotal != st.BytesUploaded {
		t.Errorf("final progress %+v does not match stats %+v", last, st)
	}
	if calls < st.Uploaded {
		t.Errorf("%d progress calls for %d files", calls, st.Uploaded)
	}
}

// Remote commands get paths as data: a deleted directory named like a
// command-line option or a find(1) action deletes that directory only.
func TestDeletingOptionLikeNames(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"-delete", "-rf", "--help", "-exec"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			n := newNode(t)
			src := t.TempDir()
			richTree(t, src, "/etc/passwd")
			write(t, filepath.Join(src, name, "x"), "x", 0o644, t0)
			dst := filepath.Join(n.home, "w")
			_, err := Push(context.Background(), n, src, dst, Options{})
			must(t, err)
			must(t, os.RemoveAll(filepath.Join(src, name)))
			st, err := Push(context.Background(), n, src, dst, Options{})
			must(t, err)
			if st.Deleted != 1 {
				t.Errorf("want exactly one deletion, got %+v", st)
			}
			assertSame(t, treeOf(t, src), treeOf(t, dst))
		})
	}
}

// An edit in the same second as the sync that read the file keeps size and
// mtime: only the stamp of that sync's start shows the file may be stale.
func TestSameSecondEditIsSeen(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	src := t.TempDir()
	p := filepath.Join(src, "v.txt")
	now := time.Now().Truncate(time.Second)
	write(t, p, "old code", 0o644, now)
	dst := filepath.Join(n.home, "w")
	ctx := context.Background()
	_, err := Push(ctx, n, src, dst, Options{})
	must(t, err)
	write(t, p, "new code", 0o644, now)
	st, err := Push(ctx, n, src, dst, Options{})
	must(t, err)
	if b, _ := os.ReadFile(filepath.Join(dst, "v.txt")); string(b) != "new code" || st.Uploaded != 1 {
		t.Fatalf("same-second edit missed: node has %q (%+v)", b, st)
	}
	if _, err := os.Stat(dst + ".sshq-stamp"); err != nil {
		t.Errorf("no stamp beside the cache: %v", err)
	}
	assertSame(t, treeOf(t, src), treeOf(t, dst))
}

// noSFTP is a node whose commands work and whose SFTP never opens.
type noSFTP struct{ *localNode }

func (noSFTP) SFTP(context.Context) (*sftp.Client, func(), error) {
	return nil, nil, errors.New("no sftp here")
}

// A node that lists fine but cannot open SFTP fails the sync with SFTP's
// reason; it must not hang the launch waiting for a second answer.
func TestPushReturnsWhenSFTPCannotOpen(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	src := t.TempDir()
	write(t, filepath.Join(src, "a.txt"), "a", 0o644, t0)
	res := make(chan error, 1)
	go func() {
		_, err := Push(context.Background(), noSFTP{n}, src, filepath.Join(n.home, "w"), Options{})
		res <- err
	}()
	select {
	case err := <-res:
		if err == nil || !strings.Contains(err.Error(), "no sftp here") {
			t.Errorf("Push: %v, want SFTP's error", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Push still running a minute after SFTP failed: it waits for an answer that never comes")
	}
}
