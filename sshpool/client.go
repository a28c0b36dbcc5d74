package sshpool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Alive reports whether the connection is still usable.
func (c *Client) Alive() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.closed
}

func (c *Client) markClosed(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.err = err
	close(c.done)
	owned := c.owned
	c.mu.Unlock()
	if c.closer != nil {
		c.closer()
	}
	for _, o := range owned {
		o.Close()
	}
}

// Close closes the connection and the hops it owns (not the first hop,
// which the pool holds and may share).
func (c *Client) Close() error {
	err := c.ssh.Close()
	c.markClosed(err)
	return err
}

// keepalive sends keepalive@openssh.com like ServerAliveInterval and closes
// the connection after ServerAliveCountMax unanswered probes, so operations
// on a dead peer fail instead of hanging.
func (c *Client) keepalive() {
	interval := c.Node.ServerAliveInterval
	if interval <= 0 {
		interval = DefaultKeepalive
	}
	max := c.Node.ServerAliveCountMax
	if max <= 0 {
		max = 3
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	// One request is out at a time, and a miss is an interval that ends
	// with it still unanswered, as OpenSSH counts them. A reply that is
	// late but arrives is not a miss: a controller starved of CPU for an
	// interval must not hang up on a healthy node mid-stream.
	var pending chan error
	missed := 0
	answered := func(err error) bool {
		pending = nil
		if err != nil {
			c.Close()
			return false
		}
		missed = 0
		return true
	}
	for {
		select {
		case <-c.done:
			return
		case err := <-pending:
			if !answered(err) {
				return
			}
			continue
		case <-t.C:
		}
		if pending != nil {
			select {
			case err := <-pending:
				if !answered(err) {
					return
				}
			default:
				missed++
				if missed >= max {
					c.Close()
					return
				}
				continue
			}
		}
		reply := make(chan error, 1)
		pending = reply
		go func() {
			_, _, err := c.ssh.SendRequest("keepalive@openssh.com", true, nil)
			reply <- err
		}()
	}
}

// acquire takes one channel slot, waiting while MaxChannels are in use.
func (c *Client) acquire(ctx context.Context) error {
	select {
	case c.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return fmt.Errorf("%w: %s", ErrConnectionLost, c.Node.Name)
	}
}

func (c *Client) release() { <-c.slots }

// Result is a finished remote command. A non-zero ExitCode is not an error.
type Result struct {
	Stdout   []byte
	Stderr   []byte
	ExitCode int
}

// Run runs cmd (a shell command line built with Command/Quote) with stdin
// (may be nil), waiting at most until ctx ends; then the remote command is
// signalled and the error wraps ctx.Err().
func (c *Client) Run(ctx context.Context, cmd string, stdin io.Reader) (Result, error) {
	var out, errb bytes.Buffer
	code, err := c.Stream(ctx, cmd, stdin, &out, &errb)
	if err != nil {
		// The session's copy goroutines may still be writing into the
		// buffers after a cancel; leave them to it.
		return Result{ExitCode: -1}, err
	}
	return Result{Stdout: out.Bytes(), Stderr: errb.Bytes(), ExitCode: code}, nil
}

// await runs a call that waits for the server (channel open, exec or
// subsystem request, SFTP init) and takes no context. If ctx ends first,
// abandon gives up this one call (closing its channel makes x/crypto give
// it back) and the connection stays: other sessions on it, an attached
// launch's log stream say, belong to callers whose deadlines have not
// passed. A server that stops answering altogether is the keepalive's to
// find.
func (c *Client) await(ctx context.Context, f func() error, abandon func()) error {
	res := make(chan error, 1)
	go func() { res <- f() }()
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		abandon()
		return fmt.Errorf("%s: no answer from the node: %w", c.Node.Name, ctx.Err())
	case <-c.done:
		<-res
		return fmt.Errorf("%w: %s", ErrConnectionLost, c.Node.Name)
	}
}

// Stream is Run with caller-provided writers, for output that must be shown
// as it arrives (logs -f, attached launch).
func (c *Client) Stream(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	return c.session(ctx, cmd, stdin, stdout, stderr, nil)
}

// session runs cmd as a session of its own, on a pseudo-terminal when t is
// set, and returns its exit status. An error that wraps notStarted means
// the command never began.
func (c *Client) session(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer, t *Terminal) (int, error) {
	if err := c.acquire(ctx); err != nil {
		return -1, err
	}
	defer c.release()
	sess, err := c.newSession(ctx)
	if err != nil {
		return -1, notStarted{err}
	}
	defer sess.Close()
	var resize <-chan [2]int
	if t != nil {
		if err := c.requestPty(ctx, sess, *t); err != nil {
			return -1, err
		}
		resize = t.Resize
	}
	sess.Stdin, sess.Stdout, sess.Stderr = stdin, stdout, stderr
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
		case sz, ok := <-resize:
			if !ok {
				resize = nil
				continue
			}
			// Best effort, as ssh does: a lost resize only misdraws.
			go sess.WindowChange(sz[1], sz[0])
		case err := <-done:
			return c.exitStatus(cmd, err)
		case <-ctx.Done():
			// Closing a terminal's session hangs its command up; a command
			// without one would only see its pipes close.
			if t == nil {
				_ = sess.Signal(ssh.SIGTERM)
			}
			sess.Close()
			// Let the session's output copies finish before the caller's
			// writers are handed back (bounded: the peer may be gone).
			select {
			case <-done:
			case <-time.After(time.Second):
			}
			return -1, fmt.Errorf("%s on %s: %w", shortCmd(cmd), c.Node.Name, ctx.Err())
		case <-c.done:
			return -1, fmt.Errorf("%w: %s dropped while running %s", ErrConnectionLost, c.Node.Name, shortCmd(cmd))
		}
	}
}

// exitStatus reads what a session's Wait returned: the command's exit
// status, 128+n for one killed by signal n as a shell reports it.
func (c *Client) exitStatus(cmd string, err error) (int, error) {
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
	if errors.As(err, &em) {
		if !c.Alive() {
			return -1, fmt.Errorf("%w: %s dropped while running %s", ErrConnectionLost, c.Node.Name, shortCmd(cmd))
		}
		return -1, fmt.Errorf("%s on %s ended without an exit status", shortCmd(cmd), c.Node.Name)
	}
	return -1, c.channelErr(err)
}

// newSession opens a session channel. sshd frees a closed session's slot
// only after the close handshake, so a refusal right after other sessions
// ended is retried briefly on the same connection; reconnecting would not
// help, since the limit is per connection and the server is healthy.
func (c *Client) newSession(ctx context.Context) (*ssh.Session, error) {
	wait := 10 * time.Millisecond
	deadline := time.Now().Add(5 * time.Second)
	for {
		var sess *ssh.Session
		var mu sync.Mutex
		abandoned := false
		err := c.await(ctx, func() error {
			s, err := c.ssh.NewSession()
			mu.Lock()
			defer mu.Unlock()
			if abandoned {
				// Opened after its caller gave up: nobody will use it.
				if err == nil {
					s.Close()
				}
				return err
			}
			sess = s
			return err
		}, func() {
			mu.Lock()
			abandoned = true
			mu.Unlock()
		})
		if err == nil {
			return sess, nil
		}
		if ctx.Err() != nil || !c.Alive() {
			return nil, err
		}
		var oce *ssh.OpenChannelError
		if !errors.As(err, &oce) || time.Now().After(deadline) {
			return nil, c.channelErr(err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s: %w", c.Node.Name, ctx.Err())
		case <-c.done:
			return nil, fmt.Errorf("%w: %s", ErrConnectionLost, c.Node.Name)
		case <-time.After(wait):
		}
		if wait < 200*time.Millisecond {
			wait *= 2
		}
	}
}

func (c *Client) channelErr(err error) error {
	var oce *ssh.OpenChannelError
	if errors.As(err, &oce) {
		// Not a reason to reconnect: the server is alive and enforcing
		// MaxSessions; a new connection would be refused the same way.
		return fmt.Errorf("%w: %s: %v (lower the number of parallel operations, or raise MaxSessions in the node's sshd_config)",
			ErrChannelRefused, c.Node.Name, oce)
	}
	if isBroken(err) || !c.Alive() {
		c.Close()
		return fmt.Errorf("%w: %s: %v", ErrConnectionLost, c.Node.Name, err)
	}
	return fmt.Errorf("%s: %w", c.Node.Name, err)
}

func shortCmd(cmd string) string {
	if len(cmd) > 40 {
		cmd = cmd[:40] + "…"
	}
	return strconv.Quote(cmd)
}

func signalNumber(sig string) int {
	switch sig {
	case "HUP":
		return 1
	case "INT":
		return 2
	case "QUIT":
		return 3
	case "KILL":
		return 9
	case "USR1":
		return 10
	case "SEGV":
		return 11
	case "USR2":
		return 12
	case "PIPE":
		return 13
	case "ALRM":
		return 14
	case "TERM":
		return 15
	}
	return 0
}

// notStarted marks a failure before the remote command began, the only
// case in which running it again cannot run it twice.
type notStarted struct{ error }

func (e notStarted) Unwrap() error { return e.error }
