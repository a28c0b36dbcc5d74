package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
)

// SkyPilot task files run as their users run them: from the directory
// that holds the paths they name. A relative workdir and file_mounts
// sources resolve there, a setup-only task (a dev box) ends SUCCEEDED, and
// what a job wrote comes back with sshq download.
func TestSkyPilotFilesRunFromTheirDirectory(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.T4x1(t.Name())})
	dir, err := filepath.Abs("testdata/skypilot")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"render.yaml", "devbox.yaml"} {
		r := sshqIn(t, dir, c, home, env, "launch", "--dry-run", f)
		if r.code != 0 || !strings.Contains(r.stdout, "nothing was changed") {
			t.Errorf("%s --dry-run from its directory: exit %d\n%s%s", f, r.code, r.stdout, r.stderr)
		}
	}
	r := sshqIn(t, dir, c, home, env, "launch", "--dry-run", "render.yaml")
	for _, want := range []string{"workdir:  " + filepath.Join(dir, "render"), filepath.Join(dir, "assets", "vocab.txt") + " → box:~/render-assets/vocab.txt"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("render plan lacks %q:\n%s", want, r.stdout)
		}
	}
	// From elsewhere, the paths are not there, and sshq says where to run.
	r = sshq(t, c, home, env, "launch", "--dry-run", "testdata/skypilot/render.yaml")
	if r.code != 2 || !strings.Contains(r.stderr, "run sshq from there, `cd "+dir+" && sshq launch render.yaml`") {
		t.Errorf("from the repository root: exit %d, want 2 with the directory to run from:\n%s", r.code, r.stderr)
	}

	r = sshqIn(t, dir, c, home, env, "launch", "render.yaml")
	if r.code != 0 {
		t.Fatalf("render: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"frame: a teapot\n", "vocab: hello world\n", "scenes: box.txt\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("render output lacks %q:\n%s", want, r.stdout)
		}
	}
	render := jobAt(t, c, home, env, 0)
	if render.State != "SUCCEEDED" {
		t.Errorf("render: %+v", render)
	}

	r = sshqIn(t, dir, c, home, env, "launch", "devbox.yaml")
	devbox := jobAt(t, c, home, env, 1)
	if r.code != 0 || devbox.State != "SUCCEEDED" || !strings.Contains(r.stdout, "devbox ready on GPU 0\n") {
		t.Errorf("setup-only task: exit %d, %s:\n%s%s", r.code, devbox.State, r.stdout, r.stderr)
	}

	// What the render job wrote in its workdir comes back.
	dest := t.TempDir()
	r = sshq(t, c, home, env, "download", strconv.Itoa(render.ID), "out", dest)
	if r.code != 0 || r.stdout != filepath.Join(dest, "out")+"\n" {
		t.Fatalf("download: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if b, err := os.ReadFile(filepath.Join(dest, "out", "frame-1.txt")); err != nil || string(b) != "rendered a teapot\n" {
		t.Errorf("downloaded frame: %q %v", b, err)
	}
	r = sshq(t, c, home, env, "download", strconv.Itoa(render.ID), "out", dest)
	if r.code != 0 || !strings.Contains(r.stderr, "all already up to date") {
		t.Errorf("second download: exit %d\n%s", r.code, r.stderr)
	}
}
