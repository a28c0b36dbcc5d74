package slurm

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/sshq/sshq/sshpool"
)

// Script is the login-node side (slurm.sh). Every command this package
// sends runs it as `bash -c Script sshq-slurm ACTION ARGS...`.
//
//go:embed slurm.sh
var Script string

//go:embed batch.sh
var batchScript string

//go:embed task.sh
var taskScript string

// Runner runs one shell command line on the login node, the way an SSH
// session does: stdin may be nil; stdout and stderr receive the output as
// it comes; exit is the command's exit status. err is for a command that
// could not run or finish (connection lost, ctx done), not for a non-zero
// exit. *sshpool.Client's Stream method is one: RunnerFunc(client.Stream).
type Runner interface {
	Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (exit int, err error)
}

// RunnerFunc adapts a function to Runner.
type RunnerFunc func(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error)

// Run calls f.
func (f RunnerFunc) Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	return f(ctx, cmd, stdin, stdout, stderr)
}

// Client drives one Slurm cluster through its login node. It remembers the
// cluster's GPU types from its first Probe (or Status), which Submit needs
// to name a GPU type as the cluster spells it. Safe for concurrent use.
type Client struct {
	// Name is the login node's alias, used in errors.
	Name string

	r    Runner
	mu   sync.Mutex
	info *Info
}

// New returns a client that reaches the cluster through r; name is the
// login node's alias as the user knows it.
func New(name string, r Runner) *Client {
	return &Client{Name: name, r: r}
}

func command(action string, args ...string) string {
	return sshpool.Command(append([]string{"bash", "-c", Script, "sshq-slurm", action}, args...)...)
}

// call runs an action and returns its report's records (the lines between
// SSHQ-BEGIN and SSHQ-END), or an error holding what the script said on
// stderr.
func (c *Client) call(ctx context.Context, action string, stdin []byte, args ...string) ([]string, error) {
	var in io.Reader
	if stdin != nil {
		in = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	code, err := c.r.Run(ctx, command(action, args...), in, &out, &errb)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", c.Name, action, err)
	}
	if code != 0 {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = "no message"
		}
		return nil, &CommandError{Login: c.Name, Action: action, Exit: code, Stderr: msg}
	}
	return report(out.String())
}

// CommandError is a login-node action that exited non-zero; Stderr says
// why, in Slurm's or the script's words.
type CommandError struct {
	Login, Action string
	Exit          int
	Stderr        string
}

func (e *CommandError) Error() string {
	return fmt.Sprintf("%s: slurm %s failed (exit %d): %s", e.Login, e.Action, e.Exit, e.Stderr)
}

// report extracts the records of a report, ignoring what a chatty login
// shell printed before it.
func report(out string) ([]string, error) {
	lines := strings.Split(out, "\n")
	start := -1
	for i, l := range lines {
		if strings.TrimRight(l, "\r") == "SSHQ-BEGIN 1" {
			start = i + 1
			break
		}
	}
	if start < 0 {
		return nil, fmt.Errorf("no report from the login node (its shell printed %q); is bash installed there?", clip(out, 200))
	}
	for i := start; i < len(lines); i++ {
		if strings.TrimRight(lines[i], "\r") == "SSHQ-END" {
			return lines[start:i], nil
		}
	}
	return nil, fmt.Errorf("the login node's report was cut short (no SSHQ-END): the connection dropped or the command was killed")
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
