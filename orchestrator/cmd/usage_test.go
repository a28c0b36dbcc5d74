package cmd

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/sshq/sshq/orchestrator"
)

func TestMistypedCommandsAndFlagsGetSuggestions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"stauts"}, `unknown command "stauts": did you mean status?`},
		{[]string{"lgos", "4"}, `unknown command "lgos": did you mean logs?`},
		{[]string{"status", "--wath"}, "unknown flag --wath: did you mean --watch?"},
		{[]string{"logs", "4", "--folow"}, "unknown flag --folow: did you mean --follow?"},
		{[]string{"--node", "a", "status"}, "unknown flag --node: did you mean --nodes?"},
		{[]string{"help", "stauts"}, `no command "stauts": did you mean status?`},
		{[]string{"xyzzy"}, `unknown command "xyzzy" (run ` + "`sshq help`"},
	} {
		h := newHarness(t)
		code := h.run(tc.args...)
		if code != ExitUsage || !strings.Contains(h.err.String(), tc.want) {
			t.Errorf("sshq %s: exit %d, stderr %q; want exit 2 and %q", strings.Join(tc.args, " "), code, h.err.String(), tc.want)
		}
		if h.opened != 0 {
			t.Errorf("sshq %s opened the controller", strings.Join(tc.args, " "))
		}
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	if code := h.run("help"); code != 0 || !strings.Contains(h.out.String(), "status") || !strings.Contains(h.out.String(), "launch") {
		t.Errorf("sshq help: exit %d\n%s%s", code, h.out.String(), h.err.String())
	}
	if code := h.run("help", "status"); code != 0 || !strings.Contains(h.out.String(), "--watch") {
		t.Errorf("sshq help status: exit %d\n%s%s", code, h.out.String(), h.err.String())
	}
}

// Ctrl-C ends a watch as it ends every command: exit 130.
func TestStatusWatchExits130WhenInterrupted(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	frames := 0
	h.fake.status = func(context.Context) (*orchestrator.StatusView, error) {
		frames++
		if frames == 3 {
			cancel()
		}
		return &orchestrator.StatusView{Nodes: []orchestrator.NodeView{{NodeStatus: orchestrator.NodeStatus{Name: "box", Reachable: true}}}}, nil
	}
	code := h.runCtx(ctx, "status", "--watch", "0.01")
	if code != ExitInterrupted || strings.Count(h.out.String(), "box  up") < 2 {
		t.Errorf("exit %d after Ctrl-C, want 130\n%s", code, h.out.String())
	}
}

func TestCompletionCompletesFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string // lines, in order; "" for nothing
	}{
		{[]string{"logs", "--f"}, "--follow"},
		{[]string{"logs", "--"}, ""}, // after --, words are a job's: nothing
		{[]string{"status", "--w"}, "--watch"},
		{[]string{"cancel", "--g"}, "--grace"},
		{[]string{"--no"}, "--nodes"},
		{[]string{"logs", "--tail"}, ""}, // its value
		{[]string{"logs"}, "4\n7"},
		{[]string{"logs", "-f"}, "4\n7"},
		{[]string{"cancel"}, "7"},
		{[]string{"completion"}, "bash\nzsh\nfish"},
		{[]string{"launch", "--gpus", "1", "--", "sleep", "5"}, ""},
	} {
		h := newHarness(t)
		h.fake.refs = func(unfinished bool) ([]string, error) {
			if unfinished {
				return []string{"7"}, nil
			}
			return []string{"4", "7"}, nil
		}
		args := append(tc.args, completionFlag)
		if code := h.run(args...); code != 0 || strings.TrimSpace(h.out.String()) != tc.want {
			t.Errorf("sshq %s: exit %d, offered %q, want %q", strings.Join(args, " "), code, h.out.String(), tc.want)
		}
	}
	h := newHarness(t)
	h.run(completionFlag)
	for _, want := range []string{"status\n", "launch\n", "help\n"} {
		if !strings.Contains(h.out.String(), want) {
			t.Errorf("sshq <TAB> lacks %q: %q", want, h.out.String())
		}
	}
}

// Ctrl-C while nodes are being reached is the user's doing: exit 130,
// never 3 as if the nodes were down.
func TestInterruptedConnectExits130(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.fake.status = func(context.Context) (*orchestrator.StatusView, error) {
		cancel()
		return &orchestrator.StatusView{Nodes: []orchestrator.NodeView{{NodeStatus: orchestrator.NodeStatus{
			Name: "box", Error: "connecting to box was interrupted: context canceled"}}}}, nil
	}
	if code := h.runCtx(ctx, "status"); code != ExitInterrupted {
		t.Errorf("status interrupted while connecting: exit %d, want 130\n%s", code, h.err.String())
	}
	h.fake.nodes = func(context.Context) (*orchestrator.NodesView, error) {
		return nil, fmt.Errorf("node check: %w", fmt.Errorf("connecting to box was interrupted: %w", context.Canceled))
	}
	if code := h.run("nodes"); code != ExitInterrupted {
		t.Errorf("nodes interrupted while connecting: exit %d, want 130\n%s", code, h.err.String())
	}
}
