package wsync

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sshq/sshq/inventory"
	"github.com/sshq/sshq/sshpool"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// sshRemoteFor dials alias through a fresh pool, as one CLI invocation does.
func sshRemoteFor(tb testing.TB, ctx context.Context, cfgPath, alias string) (Remote, func()) {
	tb.Helper()
	cfg, err := inventory.Load(cfgPath)
	if err != nil {
		tb.Fatal(err)
	}
	p := sshpool.New(inventory.NewResolver(cfg))
	c, err := p.Get(ctx, alias)
	if err != nil {
		p.Close()
		tb.Fatal(err)
	}
	return SSH(c), func() { p.Close() }
}

func TestPushThroughRealSSHD(t *testing.T) {
	t.Parallel()
	cl := sshtest.Start(t, sshtest.Options{Nodes: 1})
	node := cl.Nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, done := sshRemoteFor(t, ctx, cl.ConfigPath, node.Alias())
	defer done()

	src := t.TempDir()
	richTree(t, src, "/etc/passwd")
	key := WorkdirKey("test-controller", src)
	st, err := Push(ctx, r, src, "~/.sshq/workdirs/"+key, Options{})
	must(t, err)
	dst := filepath.Join(node.Home, ".sshq/workdirs", key)
	if st.RemoteDir != dst {
		t.Errorf("RemoteDir %q, want %q", st.RemoteDir, dst)
	}
	assertSame(t, treeOf(t, src), treeOf(t, dst))

	must(t, os.Remove(filepath.Join(src, "train.py")))
	write(t, filepath.Join(src, "run.sh"), "changed\n", 0o755, t0)
	must(t, os.Chtimes(filepath.Join(src, "empty.txt"), t0.Add(time.Hour), t0.Add(time.Hour)))
	st, err = Push(ctx, r, src, "~/.sshq/workdirs/"+key, Options{})
	must(t, err)
	if st.Uploaded != 1 || st.Deleted != 1 || st.MetadataOnly != 1 {
		t.Errorf("re-sync: want 1 upload, 1 deletion, 1 metadata fix, got %+v", st)
	}
	assertSame(t, treeOf(t, src), treeOf(t, dst))

	st, err = PushFile(ctx, r, filepath.Join(src, "run.sh"), "/"+filepath.Join(node.Home[1:], "mounts/run.sh"), Options{})
	must(t, err)
	if b, err := os.ReadFile(filepath.Join(node.Home, "mounts/run.sh")); err != nil || string(b) != "changed\n" {
		t.Errorf("file mount: %q %v (%+v)", b, err, st)
	}
}

// A node account whose ~/.bashrc greets every shell, non-interactive ones
// included, on stdout and stderr: sshd runs the sftp subsystem and every
// command through that shell, so the greeting comes before the SFTP
// protocol and before the listing. The workdir must still arrive intact,
// and a download come back intact.
func TestPushAndPullThroughShellBanner(t *testing.T) {
	t.Parallel()
	cl := sshtest.Start(t, sshtest.Options{Nodes: 1})
	node := cl.Nodes[0]
	write(t, filepath.Join(node.Home, ".bashrc"),
		"echo 'Welcome to node1! Quota: 3.2T of 5T used'\nprintf 'no newline at the end'\necho 'motd on stderr' >&2\n", 0o644, t0)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, done := sshRemoteFor(t, ctx, cl.ConfigPath, node.Alias())
	defer done()

	src := t.TempDir()
	richTree(t, src, "/etc/passwd")
	key := WorkdirKey("test-controller", src)
	st, err := Push(ctx, r, src, "~/.sshq/workdirs/"+key, Options{})
	must(t, err)
	dst := filepath.Join(node.Home, ".sshq/workdirs", key)
	if st.RemoteDir != dst {
		t.Errorf("RemoteDir %q, want %q", st.RemoteDir, dst)
	}
	assertSame(t, treeOf(t, src), treeOf(t, dst))

	// A second sync reads the listing and the stamp through the banner
	// too: nothing changed, so nothing travels.
	st, err = Push(ctx, r, src, "~/.sshq/workdirs/"+key, Options{})
	must(t, err)
	if st.Uploaded != 0 || st.Deleted != 0 {
		t.Errorf("re-sync of an unchanged tree moved files: %+v", st)
	}

	back := t.TempDir()
	_, err = Pull(ctx, r, "~/.sshq/workdirs/"+key, back, Options{})
	must(t, err)
	assertSame(t, without(treeOf(t, src), "passwd-link"), without(treeOf(t, filepath.Join(back, key)), "passwd-link"))
}
