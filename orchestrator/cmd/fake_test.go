package cmd

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sshq/sshq/inventory"
	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/task"
)

// fake is a Controller whose verbs the test sets; an unset verb fails the
// test, so a command that asks for more than it should is caught.
type fake struct {
	t       *testing.T
	opts    orchestrator.ControllerOptions
	status  func(context.Context) (*orchestrator.StatusView, error)
	nodes   func(context.Context) (*orchestrator.NodesView, error)
	plan    func(context.Context, *task.Task, string) (orchestrator.Placement, error)
	launch  func(context.Context, orchestrator.LaunchRequest) (*orchestrator.LaunchView, error)
	queue   func(context.Context, bool) (*orchestrator.QueueView, error)
	logs    func(context.Context, orchestrator.LogsRequest) (*orchestrator.LogsView, error)
	cancel  func(context.Context, orchestrator.CancelRequest) (*orchestrator.CancelView, error)
	wait    func(context.Context, orchestrator.WaitRequest) (*orchestrator.WaitView, error)
	attach  func(string) (*orchestrator.AttachTarget, error)
	shell   func(context.Context, orchestrator.ShellRequest) (*orchestrator.ShellView, error)
	forward func(context.Context, orchestrator.ForwardRequest) error
	dl      func(context.Context, orchestrator.DownloadRequest) (*orchestrator.DownloadView, error)
	init    func([]string) (*orchestrator.InitView, error)
	refs    func(bool) ([]string, error)
	resolve func(context.Context) ([]inventory.Node, error)
}

var errNotFaked = errors.New("verb not faked")

func (f *fake) missing(verb string) error {
	f.t.Helper()
	f.t.Errorf("the command called %s, which the test did not expect", verb)
	return errNotFaked
}

func (f *fake) Status(ctx context.Context) (*orchestrator.StatusView, error) {
	if f.status == nil {
		return nil, f.missing("Status")
	}
	return f.status(ctx)
}

func (f *fake) Nodes(ctx context.Context) (*orchestrator.NodesView, error) {
	if f.nodes == nil {
		return nil, f.missing("Nodes")
	}
	return f.nodes(ctx)
}

func (f *fake) Resolve(ctx context.Context) ([]inventory.Node, error) {
	if f.resolve == nil {
		return nil, f.missing("Resolve")
	}
	return f.resolve(ctx)
}

func (f *fake) Plan(ctx context.Context, t *task.Task, node string) (orchestrator.Placement, error) {
	if f.plan == nil {
		return orchestrator.Placement{}, f.missing("Plan")
	}
	return f.plan(ctx, t, node)
}

func (f *fake) Launch(ctx context.Context, r orchestrator.LaunchRequest) (*orchestrator.LaunchView, error) {
	if f.launch == nil {
		return nil, f.missing("Launch")
	}
	return f.launch(ctx, r)
}

func (f *fake) Queue(ctx context.Context, all bool) (*orchestrator.QueueView, error) {
	if f.queue == nil {
		return nil, f.missing("Queue")
	}
	return f.queue(ctx, all)
}

func (f *fake) Logs(ctx context.Context, r orchestrator.LogsRequest) (*orchestrator.LogsView, error) {
	if f.logs == nil {
		return nil, f.missing("Logs")
	}
	return f.logs(ctx, r)
}

func (f *fake) Cancel(ctx context.Context, r orchestrator.CancelRequest) (*orchestrator.CancelView, error) {
	if f.cancel == nil {
		return nil, f.missing("Cancel")
	}
	return f.cancel(ctx, r)
}

func (f *fake) Wait(ctx context.Context, r orchestrator.WaitRequest) (*orchestrator.WaitView, error) {
	if f.wait == nil {
		return nil, f.missing("Wait")
	}
	return f.wait(ctx, r)
}

func (f *fake) Attach(ref string) (*orchestrator.AttachTarget, error) {
	if f.attach == nil {
		return nil, f.missing("Attach")
	}
	return f.attach(ref)
}

func (f *fake) Shell(ctx context.Context, r orchestrator.ShellRequest) (*orchestrator.ShellView, error) {
	if f.shell == nil {
		return nil, f.missing("Shell")
	}
	return f.shell(ctx, r)
}

func (f *fake) Forward(ctx context.Context, r orchestrator.ForwardRequest) error {
	if f.forward == nil {
		return f.missing("Forward")
	}
	return f.forward(ctx, r)
}

func (f *fake) Download(ctx context.Context, r orchestrator.DownloadRequest) (*orchestrator.DownloadView, error) {
	if f.dl == nil {
		return nil, f.missing("Download")
	}
	return f.dl(ctx, r)
}

func (f *fake) Init(p []string) (*orchestrator.InitView, error) {
	if f.init == nil {
		return nil, f.missing("Init")
	}
	return f.init(p)
}

func (f *fake) JobRefs(unfinished bool) ([]string, error) {
	if f.refs == nil {
		return nil, f.missing("JobRefs")
	}
	return f.refs(unfinished)
}

func (f *fake) Close() error { return nil }

// harness runs sshq in-process against a fake controller.
type harness struct {
	t        *testing.T
	fake     *fake
	env      map[string]string
	out, err bytes.Buffer
	inTTY    bool
	outTTY   bool
	execed   []string
	opened   int
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t, fake: &fake{t: t}, env: map[string]string{}}
	return h
}

func (h *harness) factory() *Factory {
	return &Factory{
		IO: &IOStreams{
			In: strings.NewReader(""), Out: &h.out, ErrOut: &h.err, InTTY: h.inTTY, OutTTY: h.outTTY,
			Getenv:    func(k string) string { return h.env[k] },
			LookupEnv: func(k string) (string, bool) { v, ok := h.env[k]; return v, ok },
		},
		Version: "test",
		Controller: func(o orchestrator.ControllerOptions) (Controller, error) {
			h.opened++
			h.fake.opts = o
			return h.fake, nil
		},
		Exec: func(path string, argv, env []string) error {
			h.execed = argv
			return nil
		},
		Executable: func() (string, error) { return "/bin/false", nil },
		Hostname:   func() (string, error) { return "laptop", nil },
	}
}

// run runs `sshq args...` and returns its exit code.
func (h *harness) run(args ...string) int {
	h.t.Helper()
	return h.runCtx(context.Background(), args...)
}

func (h *harness) runCtx(ctx context.Context, args ...string) int {
	h.t.Helper()
	h.out.Reset()
	h.err.Reset()
	return Main(ctx, append([]string{"sshq"}, args...), h.factory())
}
