package remote

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
)

func TestCheckSaysWhatTheNodeOffers(t *testing.T) {
	t.Parallel()
	n := newNode(t, gpusim.A100x2("check"))
	nc, err := n.cl().Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"bash", "tmux", "flock", "nvidia-smi", "ps"} {
		if !nc.Has(tool) {
			t.Errorf("%s not found: %+v", tool, nc.Tools)
		}
	}
	if nc.GPUs != 2 || nc.LeaseDirState != "ok" || nc.LeaseMode != "shared" || nc.Provisioned() || !strings.HasPrefix(nc.BashVersion, "5") && !strings.HasPrefix(nc.BashVersion, "4") ||
		!nc.Ready() || len(nc.Problems()) != 0 || nc.Kernel == "" {
		t.Errorf("a ready node: %+v, problems %q", nc, nc.Problems())
	}
	if m, _ := filepath.Glob(filepath.Join(n.dir, "leases*")); len(m) > 0 {
		t.Errorf("check created %v; it must change nothing", m)
	}
	// The admin step: root made the lease directory.
	if os.Geteuid() == 0 {
		os.Mkdir(filepath.Join(n.dir, "leases"), 0o755)
		os.Chmod(filepath.Join(n.dir, "leases"), os.ModeSticky|0o777)
		if nc, err := n.cl().Check(context.Background()); err != nil || !nc.Provisioned() || !nc.Ready() {
			t.Errorf("a node with a provisioned lease directory: %+v %v", nc, err)
		}
		os.Remove(filepath.Join(n.dir, "leases"))
	}

	// A CPU-only node is ready, and says why it has no GPUs; a lease
	// directory with no safe place for records makes it not ready.
	n.setEnv("PATH", "/usr/local/bin:/usr/bin:/bin")
	open := filepath.Join(n.dir, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	n.setEnv("SSHQ_LEASE_DIR", filepath.Join(open, "leases"))
	nc, err = n.cl().Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	p := strings.Join(nc.Problems(), "\n")
	if nc.Has("nvidia-smi") || nc.GPUs != -1 || !strings.Contains(p, "CPU-only") || nc.LeaseDirState != "unsafe" ||
		!strings.Contains(p, "no safe place") || nc.Ready() {
		t.Errorf("a CPU-only node with no safe place for lease records: %+v, problems %q", nc, p)
	}

	// Without bash, or with one too old, the node says only that.
	n.setEnv("PATH", filepath.Join(n.dir, "nobash"))
	os.Mkdir(filepath.Join(n.dir, "nobash"), 0o755)
	if nc, err = n.cl().Check(context.Background()); err != nil || nc.Has("bash") || !strings.Contains(nc.Problems()[0], "bash missing") {
		t.Errorf("a node without bash: %+v, %v", nc, err)
	}
	old := "#!/bin/sh\necho 'sshq: this node runs bash 4.2.46(2)-release; sshq needs bash 4.4 or newer. Install a newer bash' >&2\nexit 3\n"
	if err := os.WriteFile(filepath.Join(n.dir, "nobash", "bash"), []byte(old), 0o755); err != nil {
		t.Fatal(err)
	}
	nc, err = n.cl().Check(context.Background())
	if err != nil || nc.BashVersion != "4.2.46(2)-release" || nc.Ready() || !strings.Contains(strings.Join(nc.Problems(), " "), "too old") {
		t.Errorf("a node with bash 4.2: %+v, %v", nc, err)
	}
}
