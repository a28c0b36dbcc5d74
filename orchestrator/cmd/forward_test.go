package cmd

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/orchestrator/task"
)

func TestForwardPortSpecs(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var got orchestrator.ForwardRequest
	h.fake.forward = func(ctx context.Context, r orchestrator.ForwardRequest) error {
		got = r
		r.Ready(&orchestrator.ForwardView{Job: &store.Job{ID: 4, Name: "nb", Node: "box"}, Ports: []orchestrator.ForwardedPort{
			{Local: "127.0.0.1:8888", Remote: 8888, URL: "http://127.0.0.1:8888"},
			{Local: "127.0.0.1:16006", Remote: 6006, URL: "http://127.0.0.1:16006", Problem: "nothing listens on box's 127.0.0.1:6006 yet"},
		}})
		return nil // Ctrl-C
	}
	if code := h.run("forward", "4", "8888", "16006:6006", "0:9000"); code != 0 {
		t.Fatalf("exit %d: %s", code, h.err.String())
	}
	want := []orchestrator.PortForward{{Local: 8888, Remote: 8888}, {Local: 16006, Remote: 6006}, {Local: 0, Remote: 9000}}
	if got.Ref != "4" || !slices.Equal(got.Ports, want) || !got.Check {
		t.Errorf("asked %+v, want job 4, ports %v, checked", got, want)
	}
	if h.out.String() != "http://127.0.0.1:8888\nhttp://127.0.0.1:16006\n" {
		t.Errorf("stdout %q, want the URLs", h.out.String())
	}
	for _, w := range []string{"forwarding to job #4 (nb) on box; Ctrl-C stops", "nothing listens on box's 127.0.0.1:6006 yet", "stopped forwarding"} {
		if !strings.Contains(h.err.String(), w) {
			t.Errorf("stderr lacks %q:\n%s", w, h.err.String())
		}
	}

	for _, bad := range [][]string{{"4"}, {"4", "http"}, {"4", "0"}, {"4", "70000"}, {"4", "8888:"}, {"4", "a:8888"}} {
		h := newHarness(t)
		if code := h.run(append([]string{"forward"}, bad...)...); code != ExitUsage || h.opened != 0 {
			t.Errorf("forward %q: exit %d, controller opened %d times: %s", bad, code, h.opened, h.err.String())
		}
	}
}

// An attached launch forwards --forward and resources.ports while the
// output streams, and stops when it ends.
func TestLaunchForwardsPortsWhileAttached(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "nb.yaml")
	if err := os.WriteFile(path, []byte("name: nb\nresources:\n  ports: [8888, 6006]\nrun: jupyter lab\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t)
	h.fake.launch = func(_ context.Context, r orchestrator.LaunchRequest) (*orchestrator.LaunchView, error) {
		return &orchestrator.LaunchView{Job: &store.Job{ID: 9, Name: "nb", Node: "box", State: job.Pending},
			Placement: orchestrator.Placement{Node: "box", FitsNow: true}}, nil
	}
	var got orchestrator.ForwardRequest
	started := make(chan struct{})
	stopped := make(chan struct{})
	h.fake.forward = func(ctx context.Context, r orchestrator.ForwardRequest) error {
		got = r
		r.Ready(&orchestrator.ForwardView{Job: &store.Job{ID: 9, Node: "box"}, Ports: []orchestrator.ForwardedPort{{Remote: 8888, URL: "http://127.0.0.1:8888"}}})
		close(started)
		<-ctx.Done()
		close(stopped)
		return nil
	}
	h.fake.logs = func(ctx context.Context, r orchestrator.LogsRequest) (*orchestrator.LogsView, error) {
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Error("the launch streamed its output without forwarding the ports")
		}
		r.Out.Write([]byte("serving\n"))
		return &orchestrator.LogsView{Job: orchestrator.JobView{Job: &store.Job{ID: 9, State: job.Succeeded}}}, nil
	}
	if code := h.run("launch", path, "--forward", "9000", "--forward", "0:7000"); code != 0 {
		t.Fatalf("exit %d: %s", code, h.err.String())
	}
	select {
	case <-stopped:
	default:
		t.Error("the forwards were still open when launch returned")
	}
	want := []orchestrator.PortForward{{Local: 9000, Remote: 9000, AnyIfTaken: true}, {Local: 0, Remote: 7000},
		{Local: 6006, Remote: 6006, AnyIfTaken: true}, {Local: 8888, Remote: 8888, AnyIfTaken: true}}
	if got.Ref != "9" || !slices.Equal(got.Ports, want) {
		t.Errorf("forwarded %+v, want %v", got.Ports, want)
	}
	if !strings.Contains(h.err.String(), "sshq: forwarding http://127.0.0.1:8888 → box:8888") || h.out.String() != "serving\n" {
		t.Errorf("stdout %q stderr %q", h.out.String(), h.err.String())
	}

	// --forward needs the launch attached; a taken explicit port is refused
	// before anything is submitted.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, port, _ := net.SplitHostPort(taken.Addr().String())
	for _, args := range [][]string{{"-d", "--forward", "8888"}, {"--forward", port + ":8888"}} {
		h := newHarness(t)
		if code := h.run(append(append([]string{"launch"}, args...), "--", "true")...); code != ExitUsage {
			t.Errorf("launch %q: exit %d, want 2: %s", args, code, h.err.String())
		}
	}

	// Detached, it says how to forward later; a dry run lists the ports.
	h = newHarness(t)
	h.fake.launch = func(_ context.Context, r orchestrator.LaunchRequest) (*orchestrator.LaunchView, error) {
		return &orchestrator.LaunchView{Job: &store.Job{ID: 9, Name: "nb", Node: "box", State: job.Pending}}, nil
	}
	if code := h.run("launch", "-d", path); code != 0 || !strings.Contains(h.err.String(), "`sshq forward 9 6006 8888`") {
		t.Errorf("detached: exit %d: %s", code, h.err.String())
	}
	h = newHarness(t)
	h.fake.plan = func(context.Context, *task.Task, string) (orchestrator.Placement, error) {
		return orchestrator.Placement{Node: "box", FitsNow: true}, nil
	}
	if code := h.run("launch", "--dry-run", path); code != 0 || !strings.Contains(h.out.String(), "ports:    6006, 8888") {
		t.Errorf("dry run: exit %d: %s%s", code, h.out.String(), h.err.String())
	}
}
