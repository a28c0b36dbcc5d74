package sshpool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/crypto/ssh"
)

// Terminal is the local terminal Interactive gives a remote command.
type Terminal struct {
	// Term is the terminal type (the local $TERM); "xterm-256color" when
	// empty.
	Term string
	// Width and Height are its size in characters; 80×24 when zero.
	Width, Height int
	// In is the keyboard, Out the screen: a pseudo-terminal merges the
	// command's stderr into its stdout.
	In  io.Reader
	Out io.Writer
	// Resize carries the terminal's new sizes, [width, height], while the
	// command runs; may be nil.
	Resize <-chan [2]int
}

// Interactive runs cmd (built with Command/Quote) on a pseudo-terminal of
// the node, as `ssh -t` does, over the pooled connection, and returns its
// exit status. The local terminal is the caller's to put in raw mode. When
// ctx ends the session is closed, which the remote side sees as a hangup.
func (c *Client) Interactive(ctx context.Context, cmd string, t Terminal) (int, error) {
	if err := c.acquire(ctx); err != nil {
		return -1, err
	}
	defer c.release()
	sess, err := c.newSession(ctx)
	if err != nil {
		return -1, notStarted{err}
	}
	defer sess.Close()
	term, w, h := t.Term, t.Width, t.Height
	if term == "" {
		term = "xterm-256color"
	}
	if w <= 0 || h <= 0 {
		w, h = 80, 24
	}
	modes := ssh.TerminalModes{ssh.ECHO: 1, ssh.TTY_OP_ISPEED: 38400, ssh.TTY_OP_OSPEED: 38400}
	if err := c.await(ctx, func() error { return sess.RequestPty(term, h, w, modes) }, func() { sess.Close() }); err != nil {
		if ctx.Err() != nil || !c.Alive() {
			return -1, err
		}
		return -1, notStarted{fmt.Errorf("%s refused a terminal: %w (is PermitTTY off in its sshd_config?)", c.Node.Name, err)}
	}
	sess.Stdin, sess.Stdout, sess.Stderr = t.In, t.Out, t.Out
	if err := c.await(ctx, func() error { return sess.Start(cmd) }, func() { sess.Close() }); err != nil {
		if ctx.Err() != nil || !c.Alive() {
			return -1, err
		}
		return -1, notStarted{c.channelErr(err)}
	}
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	for {
		select {
		case sz, ok := <-t.Resize:
			if !ok {
				t.Resize = nil
				continue
			}
			// Best effort, as ssh does: a lost resize only misdraws.
			go sess.WindowChange(sz[1], sz[0])
			continue
		case err = <-done:
		case <-ctx.Done():
			sess.Close()
			select {
			case <-done:
			case <-time.After(time.Second):
			}
			return -1, fmt.Errorf("%s on %s: %w", shortCmd(cmd), c.Node.Name, ctx.Err())
		case <-c.done:
			return -1, fmt.Errorf("%w: %s dropped while running %s", ErrConnectionLost, c.Node.Name, shortCmd(cmd))
		}
		break
	}
	if err == nil {
		return 0, nil
	}
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		if ee.Signal() != "" {
			return 128 + signalNumber(ee.Signal()), nil
		}
		return ee.ExitStatus(), nil
	}
	var em *ssh.ExitMissingError
	if errors.As(err, &em) && !c.Alive() {
		return -1, fmt.Errorf("%w: %s dropped while running %s", ErrConnectionLost, c.Node.Name, shortCmd(cmd))
	}
	if errors.As(err, &em) {
		return -1, fmt.Errorf("%s on %s ended without an exit status", shortCmd(cmd), c.Node.Name)
	}
	return -1, c.channelErr(err)
}

// Interactive is Client.Interactive on the node's pooled connection,
// dialing it again once if it turns out broken before the command started.
func (n NodeRunner) Interactive(ctx context.Context, cmd string, t Terminal) (int, error) {
	for attempt := 0; ; attempt++ {
		c, err := n.pool.Get(ctx, n.alias)
		if err != nil {
			return -1, err
		}
		code, err := c.Interactive(ctx, cmd, t)
		var ns notStarted
		if err != nil && errors.As(err, &ns) && errors.Is(err, ErrConnectionLost) && attempt == 0 && ctx.Err() == nil {
			c.Close()
			continue
		}
		return code, err
	}
}
