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
