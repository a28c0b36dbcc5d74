package orchestrator

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/task"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// bannerRC is a ~/.bashrc that greets every shell, non-interactive ones
// included, on stdout and stderr: sshd runs sshq's commands and the sftp
// subsystem through it.
const bannerRC = "echo '*** Welcome to box: scratch is purged on Fridays ***'\necho 'motd on stderr' >&2\n"

// A node whose ~/.bashrc prints a banner is ready in `sshq nodes` because
// sshq works there: a launch with a workdir syncs it intact, and the job,
// its status and the queue read as on any node.
func TestLaunchWithWorkdirThroughShellBanner(t *testing.T) {
	t.Parallel()
	ctrl, c := testController(t)
	box := c.Node("box")
	if err := os.WriteFile(filepath.Join(box.Home, ".bashrc"), []byte(bannerRC), 0o644); err != nil {
		t.Fatal(err)
	}

	nv, err := ctrl.Nodes(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if n := nv.Nodes[0]; !n.Reachable || !n.Ready || !n.SFTP || n.GPUs != 1 {
		t.Fatalf("sshq nodes: %+v, want box reachable and ready, SFTP working, with its GPU", n)
	}

	base := t.TempDir()
	proj := filepath.Join(base, "proj")
	data := make([]byte, 1<<20+7)
	rand.Read(data)
	files := map[string][]byte{"train.py": []byte("print('hi')\n"), "data/blob.bin": data, "empty.txt": nil}
	for rel, b := range files {
		p := filepath.Join(proj, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tk, _, err := task.ParseIn(base, "t.yaml", []byte("name: banner\nworkdir: ./proj\nresources:\n  accelerators: T4:1\nrun: |\n  sha256sum data/blob.bin train.py empty.txt\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Validate(); err != nil {
		t.Fatal(err)
	}
	v, err := ctrl.Launch(ctxT(t), LaunchRequest{Task: tk})
	if err != nil {
		t.Fatalf("launch with a workdir on a node whose .bashrc prints a banner: %v", err)
	}
	untilState(t, ctrl, v.Job.ID, job.Succeeded)

	snap := filepath.Join(box.Home, ".sshq", "jobs", v.Job.UID, "workdir")
	for rel, want := range files {
		got, err := os.ReadFile(filepath.Join(snap, rel))
		if err != nil || string(got) != string(want) {
			t.Errorf("%s in the job's workdir: %d bytes (%v), want the %d bytes synced", rel, len(got), err, len(want))
		}
	}
	// `sshq logs` shows the job's log, not the banner of the shell that read it.
	log := output(t, ctrl, v.Job.ID)
	onNode, err := os.ReadFile(filepath.Join(box.Home, ".sshq", "jobs", v.Job.UID, "log"))
	if err != nil || log != string(onNode) {
		t.Errorf("sshq logs printed %q, the job's log is %q (%v)", log, onNode, err)
	}
	for _, rel := range []string{"data/blob.bin", "train.py", "empty.txt"} {
		if want := fmt.Sprintf("%x  %s", sha256.Sum256(files[rel]), rel); !strings.Contains(log, want) {
			t.Errorf("the job did not see %s as synced: log %q", rel, log)
		}
	}

	jv := view(t, ctrl, v.Job.ID)
	if jv.Node != "box" || jv.State != job.Succeeded {
		t.Errorf("queue through the banner: %+v", jv)
	}
	st, err := ctrl.Status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if n := st.Nodes[0]; !n.Reachable || len(n.GPUs) != 1 {
		t.Errorf("status through the banner: %+v", n)
	}

	long := launch(t, ctrl, "long", "", "sleep 600")
	untilState(t, ctrl, long, job.Running)
	cv, err := ctrl.Cancel(ctxT(t), CancelRequest{Refs: []string{strconv.Itoa(long)}})
	if err != nil {
		t.Fatalf("cancel through the banner: %v (%+v)", err, cv)
	}
	untilState(t, ctrl, long, job.Cancelled)
}

// A node where a workdir sync cannot work is not ready, however well it
// answers commands, and `sshq nodes` says why and what to do. Here the
// .bashrc greets every shell, sshd has no sftp subsystem, and no shell can
// start sftp-server past the greeting (sh is broken on the node's PATH).
func TestNodesNotReadyWhereSyncCannotWork(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Names: []string{"box"}, SFTPSubsystem: "none"})
	box := c.Node("box")
	if err := os.WriteFile(filepath.Join(box.Home, ".bashrc"), []byte(bannerRC), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(box.BinDir, "sh"), []byte("#!/bin/bash\nexit 127\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctrl, err := OpenController(ControllerOptions{Home: t.TempDir(), SSHConfig: c.ConfigPath, Nodes: "box"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ctrl.Close() })
	nv, err := ctrl.Nodes(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	n := nv.Nodes[0]
	if !n.Reachable || n.Ready || n.SFTP {
		t.Fatalf("sshq nodes: reachable %v ready %v sftp %v, want reachable, not ready, SFTP failing: %+v", n.Reachable, n.Ready, n.SFTP, n)
	}
	problems := strings.Join(n.Problems, "; ")
	for _, want := range []string{"workdir sync (SFTP) fails", "Welcome to box", "~/.bashrc", "[[ $- == *i* ]] || return"} {
		if !strings.Contains(problems, want) {
			t.Errorf("problems lack %q: %s", want, problems)
		}
	}
}
