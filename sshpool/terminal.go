package sshpool

import (
	"context"
	"fmt"
	"io"

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
	return c.session(ctx, cmd, t.In, t.Out, t.Out, &t)
}

// requestPty asks for a pseudo-terminal of t's type and size.
func (c *Client) requestPty(ctx context.Context, sess *ssh.Session, t Terminal) error {
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
			return err
		}
		return notStarted{fmt.Errorf("%s refused a terminal: %w (is PermitTTY off in its sshd_config?)", c.Node.Name, err)}
	}
	return nil
}

// Interactive is Client.Interactive on the node's pooled connection,
// dialing it again once if it turns out broken before the command started.
func (n NodeRunner) Interactive(ctx context.Context, cmd string, t Terminal) (int, error) {
	return n.session(ctx, func(c *Client) (int, error) { return c.Interactive(ctx, cmd, t) })
}
