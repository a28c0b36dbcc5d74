package orchestrator

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/task"
)

// freePort is a port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// A web server a job runs on its node's loopback is reached from here
// through `sshq forward`, on another local port, until the forward stops.
func TestForwardReachesAServerOnTheNodesLoopback(t *testing.T) {
	t.Parallel()
	ctrl, c := testController(t)
	port := freePort(t)
	// The job serves its node's home, where it runs without a workdir.
	id := launch(t, ctrl, "web", "", fmt.Sprintf("echo hello from the job > served.txt; exec python3 -m http.server %d --bind 127.0.0.1", port))
	untilState(t, ctrl, id, job.Running)

	ctx, stop := context.WithCancel(ctxT(t))
	defer stop()
	ready := make(chan *ForwardView, 1)
	done := make(chan error, 1)
	go func() {
		done <- ctrl.Forward(ctx, ForwardRequest{Ref: fmt.Sprint(id), Ports: []PortForward{{Remote: port}}, Ready: func(v *ForwardView) { ready <- v }})
	}()
	var v *ForwardView
	select {
	case v = <-ready:
	case err := <-done:
		t.Fatalf("Forward: %v", err)
	}
	if len(v.Ports) != 1 || v.Ports[0].Remote != port || v.Ports[0].Local == fmt.Sprintf("127.0.0.1:%d", port) {
		t.Fatalf("forwards %+v, want one from another local port to %d", v.Ports, port)
	}
	// The server needs a moment to start: ask until it answers.
	var body string
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get(v.Ports[0].URL + "/served.txt")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job's server never answered through the forward: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if body != "hello from the job\n" {
		t.Errorf("through the forward: %q", body)
	}
	if _, err := os.Stat(filepath.Join(c.Node("box").Home, "served.txt")); err != nil {
		t.Errorf("the file did not come from the node's home: %v", err)
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Forward after Ctrl-C: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Forward did not return after its context ended")
	}
	if _, err := http.Get(v.Ports[0].URL + "/served.txt"); err == nil {
		t.Error("the local port still answers after the forward stopped")
	}

	// A taken local port is refused up front, unless another may be taken.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	tp := taken.Addr().(*net.TCPAddr).Port
	err = ctrl.Forward(ctxT(t), ForwardRequest{Ref: fmt.Sprint(id), Ports: []PortForward{{Local: tp, Remote: port}}})
	var ue *UsageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "already in use") {
		t.Errorf("taken port: %v", err)
	}
	ctx2, stop2 := context.WithCancel(ctxT(t))
	err = ctrl.Forward(ctx2, ForwardRequest{Ref: fmt.Sprint(id), Ports: []PortForward{{Local: tp, Remote: port, AnyIfTaken: true}}, Check: true,
		Ready: func(v *ForwardView) {
			if !v.Ports[0].Moved || v.Ports[0].Local == taken.Addr().String() || v.Ports[0].Problem != "" {
				t.Errorf("with AnyIfTaken: %+v, want another port, the server seen listening", v.Ports[0])
			}
			stop2()
		}})
	if err != nil {
		t.Errorf("with AnyIfTaken: %v", err)
	}

	// An ended job has nothing to forward to.
	if _, err := ctrl.Cancel(ctxT(t), CancelRequest{Refs: []string{fmt.Sprint(id)}, Grace: time.Second}); err != nil {
		t.Fatal(err)
	}
	err = ctrl.Forward(ctxT(t), ForwardRequest{Ref: fmt.Sprint(id), Ports: []PortForward{{Remote: port}}})
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "has ended") {
		t.Errorf("ended job: %v", err)
	}
}

// fileState is what a user compares after a download.
type fileState struct {
	kind    string
	mode    fs.FileMode
	mtime   int64
	content string
}

func treeState(t *testing.T, root string) map[string]fileState {
	t.Helper()
	m := map[string]fileState{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		s := fileState{kind: "dir", mode: fi.Mode().Perm(), mtime: fi.ModTime().Unix()}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			tgt, _ := os.Readlink(p)
			s = fileState{kind: "link", content: tgt}
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s.kind, s.content = "file", string(b)
		}
		m[rel] = s
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func inodesOf(t *testing.T, root string) map[string][2]int64 {
	t.Helper()
	m := map[string][2]int64{}
	for rel, s := range treeState(t, root) {
		if s.kind != "file" {
			continue
		}
		fi, _ := os.Lstat(filepath.Join(root, rel))
		st := fi.Sys().(*syscall.Stat_t)
		m[rel] = [2]int64{int64(st.Ino), st.Ctim.Nano()}
	}
	return m
}

// What a job wrote in its workdir comes back byte for byte, with modes
// and mtimes; a second download rewrites nothing.
func TestDownloadBringsBackWhatTheJobWrote(t *testing.T) {
	t.Parallel()
	ctrl, c := testController(t)
	base := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(base, "proj"), 0o755))
	must(os.WriteFile(filepath.Join(base, "proj", "seed.bin"), make([]byte, 5000), 0o644))
	big := make([]byte, 2<<20+17)
	rand.Read(big)
	must(os.WriteFile(filepath.Join(base, "big.src"), big, 0o644))
	run := fmt.Sprintf(`set -e
mkdir -p out/plots/empty out/ckpt
cp %q out/ckpt/model.bin
printf 'epoch 1\n' > out/log.txt
printf '#!/bin/sh\n' > out/run.sh && chmod 750 out/run.sh
printf secret > out/ckpt/key && chmod 600 out/ckpt/key
ln -s ckpt/model.bin out/latest
touch -d @1600000000 out/log.txt out/plots
chmod 700 out/plots`, filepath.Join(base, "big.src"))
	tk, _, err := task.ParseIn(base, "t.yaml", []byte("name: writer\nworkdir: ./proj\nrun: |\n"+indent(run)))
	must(err)
	must(tk.Validate())
	v, err := ctrl.Launch(ctxT(t), LaunchRequest{Task: tk})
	must(err)
	untilState(t, ctrl, v.Job.ID, job.Succeeded)

	onNode := filepath.Join(c.Node("box").Home, ".sshq", "jobs", v.Job.UID, "workdir", "out")
	dest := t.TempDir()
	d, err := ctrl.Download(ctxT(t), DownloadRequest{Ref: fmt.Sprint(v.Job.ID), Remote: "out", Local: dest})
	must(err)
	local := filepath.Join(dest, "out")
	if d.Stats.LocalPath != local || d.Stats.RemotePath != onNode {
		t.Errorf("downloaded %s to %s, want %s to %s", d.Stats.RemotePath, d.Stats.LocalPath, onNode, local)
	}
	want, got := treeState(t, onNode), treeState(t, local)
	if len(want) != 9 {
		t.Fatalf("the job wrote %d paths: %v", len(want), want)
	}
	for rel, w := range want {
		if g, ok := got[rel]; !ok || g != w {
			t.Errorf("%s: downloaded %+v, on the node %+v", rel, g, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("downloaded %d paths, the node has %d", len(got), len(want))
	}

	before := inodesOf(t, local)
	d, err = ctrl.Download(ctxT(t), DownloadRequest{Ref: "writer", Remote: "out", Local: dest})
	must(err)
	if d.Stats.Downloaded != 0 || d.Stats.MetadataOnly != 0 {
		t.Errorf("second download did work: %+v", d.Stats)
	}
	after := inodesOf(t, local)
	for rel, b := range before {
		if after[rel] != b {
			t.Errorf("%s was rewritten or touched by the second download", rel)
		}
	}

	// One file by an absolute path, to a new name.
	one := filepath.Join(dest, "log-copy.txt")
	if _, err := ctrl.Download(ctxT(t), DownloadRequest{Ref: "writer", Remote: onNode + "/log.txt", Local: one}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(one); string(b) != "epoch 1\n" {
		t.Errorf("single file: %q", b)
	}
	_, err = ctrl.Download(ctxT(t), DownloadRequest{Ref: "writer", Remote: "nope", Local: dest})
	if err == nil || !strings.Contains(err.Error(), "does not exist on the node") || !strings.Contains(err.Error(), "job #") {
		t.Errorf("missing path: %v", err)
	}
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ") + "\n"
}

// SkyPilot's dev box: setup and no run. It runs its setup and succeeds.
func TestSetupOnlyTaskSucceeds(t *testing.T) {
	t.Parallel()
	ctrl, _ := testController(t)
	tk, _, err := task.Parse("devbox.yaml", []byte("name: devbox\nsetup: echo setup ran on $(hostname)\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Validate(); err != nil {
		t.Fatal(err)
	}
	v, err := ctrl.Launch(ctxT(t), LaunchRequest{Task: tk})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	lv, err := ctrl.Logs(ctxT(t), LogsRequest{Ref: fmt.Sprint(v.Job.ID), Tail: -1, Follow: true, Out: &out, ErrOut: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if lv.ExitCode != 0 || lv.Job.State != job.Succeeded || !strings.Contains(out.String(), "setup ran on") {
		t.Errorf("setup-only job: exit %d, %s, output %q; want SUCCEEDED after its setup", lv.ExitCode, lv.Job.State, out.String())
	}
}
