package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// withoutTmux gives n's sessions a PATH on which every program of the
// machine is found but tmux, as on a host where it was never installed.
func withoutTmux(t *testing.T, n *sshtest.Node) {
	t.Helper()
	dir := filepath.Join(n.Dir, "sysbin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{"/usr/bin", "/bin"} {
		es, err := os.ReadDir(src)
		if err != nil {
			continue
		}
		for _, e := range es {
			if e.Name() != "tmux" {
				// A name already linked (from /usr/bin, or /bin being a
				// link to it) keeps its first target, as PATH would.
				os.Symlink(filepath.Join(src, e.Name()), filepath.Join(dir, e.Name()))
			}
		}
	}
	n.Env["PATH"] = n.BinDir + ":" + dir
	n.Stop()
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
}

// breakTmux makes tmux on n refuse to start any session, as it does where
// its socket directory has lost its private mode (a careless chmod, a
// shared TMUX_TMPDIR): it is installed, and fails at the submit.
func breakTmux(t *testing.T, n *sshtest.Node) {
	t.Helper()
	d := filepath.Join(n.TmuxDir, fmt.Sprintf("tmux-%d", os.Getuid()))
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o777); err != nil {
		t.Fatal(err)
	}
}

// A node that refuses a job as one it cannot run makes the launch try the
// next node that fits, instead of failing it; only when every node
// refuses does the launch fail, naming each node and why. Placement
// prefers broken here (best fit: its one GPU), whose tmux cannot start
// sessions; notmux, without tmux, says so when placement asks.
func TestRefusingNodeMakesLaunchTryTheNext(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{
		"broken": gpusim.T4x1(t.Name() + "b"), "good": gpusim.A100x2(t.Name() + "g"), "notmux": gpusim.T4x1(t.Name() + "n")})
	withoutTmux(t, c.Node("notmux"))
	breakTmux(t, c.Node("broken"))

	r := sshq(t, c, home, env, "launch", "-d", "--gpus", "1", "--", "echo ran")
	if r.code != 0 || !strings.Contains(r.stderr, "broken cannot run the job") {
		t.Fatalf("launch with broken preferred: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	q := waitJobs(t, c, home, env)
	if len(q) != 1 || q[0].Node != "good" || q[0].State != "SUCCEEDED" {
		t.Fatalf("the job: %+v", q)
	}
	nodeHasNoJobsBut(t, c.Node("broken"))

	// Pinned there, it goes nowhere else.
	r = sshq(t, c, home, env, "launch", "-d", "--node", "broken", "--gpus", "1", "--", "true")
	if r.code != 1 || !strings.Contains(r.stderr, "broken refused the job") || !strings.Contains(r.stderr, "unsafe permissions") || !strings.Contains(r.stderr, "drop --node") {
		t.Errorf("launch pinned to broken: exit %d\n%s", r.code, r.stderr)
	}

	breakTmux(t, c.Node("good"))
	r = sshq(t, c, home, env, "launch", "-d", "--gpus", "1", "--", "true")
	for _, want := range []string{"broken (", "good (", "notmux (", "unsafe permissions", "tmux is not installed", "nothing was submitted"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("every node refusing: the error lacks %q: exit %d\n%s", want, r.code, r.stderr)
		}
	}
	if r.code == 0 {
		t.Errorf("every node refused, yet exit 0")
	}
	if q := queue(t, c, home, env); len(q) != 1 {
		t.Errorf("refused launches left jobs: %+v", q)
	}
	for _, n := range c.Nodes {
		if n.Name != "good" {
			nodeHasNoJobsBut(t, n)
		}
	}
}
