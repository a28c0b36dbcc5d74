package wsync

import (
	"github.com/sshq/sshq/sshpool/sshtest"

	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pkg/sftp"
)

// localNode is a Remote on this machine: commands run in bash with HOME set
// to a test directory, files travel through the real OpenSSH sftp-server
// over a pipe (the same program sshd starts for the sftp subsystem).
type localNode struct {
	home string
	runs atomic.Int32
}

func newNode(t testing.TB) *localNode {
	t.Helper()
	if _, err := os.Stat(sftpServer); err != nil {
		sshtest.Require(t) // skips with the install command, or fails in CI
	}
	return &localNode{home: t.TempDir()}
}

const sftpServer = "/usr/lib/openssh/sftp-server"

func (n *localNode) env() []string {
	return append(os.Environ(), "HOME="+n.home)
}

// nodeUmask is the usual one of an SSH session, whatever the test's own:
// tests of what other users of the node could read depend on it.
const nodeUmask = "umask 022\n"

func (n *localNode) Run(ctx context.Context, cmd string, stdin io.Reader) ([]byte, []byte, int, error) {
	n.runs.Add(1)
	c := exec.CommandContext(ctx, "bash", "-c", nodeUmask+cmd)
	c.Dir, c.Env, c.Stdin = n.home, n.env(), stdin
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	if ctx.Err() != nil {
		return nil, nil, -1, ctx.Err()
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.Bytes(), errb.Bytes(), ee.ExitCode(), nil
	}
	return out.Bytes(), errb.Bytes(), 0, err
}

func (n *localNode) SFTP(ctx context.Context) (*sftp.Client, func(), error) {
	c := exec.Command("sh", "-c", nodeUmask+"exec "+sftpServer)
	c.Dir, c.Env = n.home, n.env()
	w, err := c.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	r, err := c.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := c.Start(); err != nil {
		return nil, nil, err
	}
	cl, err := sftp.NewClientPipe(r, w, sftp.UseConcurrentWrites(true))
	if err != nil {
		c.Process.Kill()
		c.Wait()
		return nil, nil, err
	}
	return cl, func() { cl.Close(); c.Wait() }, nil
}

// node describes one path as a user would check it.
type node struct {
	kind    string // "file", "dir", "link", "other"
	mode    fs.FileMode
	mtime   int64
	content string // file content or link target
}

// treeOf lists root without following symlinks, keyed by slash path ("." is the root).
func treeOf(t testing.TB, root string) map[string]node {
	t.Helper()
	m := map[string]node{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		n := node{mode: fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky), mtime: fi.ModTime().Unix()}
		switch {
		case fi.IsDir():
			n.kind = "dir"
		case fi.Mode()&fs.ModeSymlink != 0:
			n.kind, n.mode, n.mtime = "link", 0, 0 // link modes are meaningless, link mtimes are not kept
			tgt, err := os.Readlink(p)
			if err != nil {
				return err
			}
			n.content = tgt
		case fi.Mode().IsRegular():
			n.kind = "file"
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			n.content = string(b)
		default:
			n.kind = "other"
		}
		m[filepath.ToSlash(rel)] = n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// without drops the given paths and everything under them.
func without(m map[string]node, drop ...string) map[string]node {
	out := map[string]node{}
next:
	for k, v := range m {
		for _, d := range drop {
			if k == d || strings.HasPrefix(k, d+"/") {
				continue next
			}
		}
		out[k] = v
	}
	return out
}

// assertSame reports every path that differs between want and got.
func assertSame(t testing.TB, want, got map[string]node) {
	t.Helper()
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	bad := 0
	for _, k := range keys {
		w, wok := want[k]
		g, gok := got[k]
		switch {
		case !gok:
			t.Errorf("%s: missing on the node", k)
		case !wok:
			t.Errorf("%s: on the node but should not be (%s)", k, g.kind)
		case w.kind != g.kind:
			t.Errorf("%s: is a %s on the node, want a %s", k, g.kind, w.kind)
		case w.content != g.content:
			t.Errorf("%s: content differs (node %d bytes %.40q, want %d bytes %.40q)", k, len(g.content), g.content, len(w.content), w.content)
		case w.mode != g.mode:
			t.Errorf("%s: mode %v on the node, want %v", k, g.mode, w.mode)
		case w.mtime != g.mtime:
			t.Errorf("%s: mtime %v on the node, want %v", k, time.Unix(g.mtime, 0), time.Unix(w.mtime, 0))
		default:
			continue
		}
		if bad++; bad > 20 {
			t.Fatal("too many differences")
		}
	}
}

func write(t testing.TB, p, content string, mode fs.FileMode, mtime time.Time) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	if !mtime.IsZero() {
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// tempFiles lists leftovers of interrupted syncs under root. A sync may be
// running meanwhile: a file renamed or removed between listing and look is
// simply not counted.
func tempFiles(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), tempPrefix) {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
