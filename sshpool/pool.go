package sshpool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/sftp"
	"github.com/sshq/sshq/inventory"
	"golang.org/x/crypto/ssh"
)

// MaxChannels is the default cap on channels open at once on one connection.
// OpenSSH's sshd refuses an 11th session (MaxSessions 10); staying below it
// leaves room for the user's own ControlMaster sharing the same sshd limits.
const MaxChannels = 8

// DefaultKeepalive is used when the config sets no ServerAliveInterval:
// without it a silently dead peer would hang an operation until its deadline.
const DefaultKeepalive = 15 * time.Second

// Resolver turns an alias into connection settings (inventory.Resolver).
type Resolver interface {
	Resolve(ctx context.Context, alias string) (inventory.Node, error)
}

// Pool holds one connection per node, shared by every caller in the process.
type Pool struct {
	resolver    Resolver
	maxChannels int

	mu     sync.Mutex
	conns  map[string]*poolEntry
	closed bool
}

type poolEntry struct {
	mu     sync.Mutex // held while dialing, so concurrent Gets share one dial
	client *Client
}

// Option configures a Pool.
type Option func(*Pool)

// WithMaxChannels overrides MaxChannels (tests use it to force queueing).
func WithMaxChannels(n int) Option { return func(p *Pool) { p.maxChannels = n } }

// New returns an empty pool; connections are dialed on first use.
func New(r Resolver, opts ...Option) *Pool {
	p := &Pool{resolver: r, maxChannels: MaxChannels, conns: map[string]*poolEntry{}}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Client is one live connection to a node.
type Client struct {
	Node   inventory.Node
	ssh    *ssh.Client
	slots  chan struct{}
	done   chan struct{}
	closer func()
	// owned are the ProxyJump hops after the first, which no pool entry
	// holds: they live and die with this connection.
	owned []*Client

	mu     sync.Mutex
	closed bool
	err    error
}

// maxHops bounds a ProxyJump chain, including hops of hops.
const maxHops = 8

// Get returns the pooled connection to alias, dialing it if there is none or
// the previous one broke.
func (p *Pool) Get(ctx context.Context, alias string) (*Client, error) {
	return p.entry(ctx, alias, nil, func() (inventory.Node, error) { return p.resolver.Resolve(ctx, alias) })
}

// entry returns the live client of a pool entry, dialing it under the
// entry's lock. chain is the list of entries being dialed above this one:
// a ProxyJump loop (`Host *` with `ProxyJump bastion` and no `!bastion`) is
// refused instead of waiting on its own lock forever.
func (p *Pool) entry(ctx context.Context, key string, chain []string, resolve func() (inventory.Node, error)) (*Client, error) {
	for _, k := range chain {
		if k == key {
			return nil, fmt.Errorf("%w: ProxyJump loop: %s → %s (exclude the jump host from the Host pattern that sets ProxyJump, e.g. `Host * !bastion`)",
				ErrUnreachable, strings.Join(chain, " → "), key)
		}
	}
	if len(chain) > maxHops {
		return nil, fmt.Errorf("%w: ProxyJump chain %s is longer than %d hops", ErrUnreachable, strings.Join(chain, " → "), maxHops)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, fmt.Errorf("%w: connection pool closed", ErrConnectionLost)
	}
	e := p.conns[key]
	if e == nil {
		e = &poolEntry{}
		p.conns[key] = e
	}
	p.mu.Unlock()

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.client != nil && e.client.Alive() {
		return e.client, nil
	}
	n, err := resolve()
	if err != nil {
		return nil, interrupted(ctx, key, err)
	}
	c, err := p.dial(ctx, n, append(chain, key))
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		c.Close() // Close ran while we dialed; nobody would close this one
		return nil, fmt.Errorf("%w: connection pool closed", ErrConnectionLost)
	}
	e.client = c
	return c, nil
}

// DialAll connects to every alias in parallel and returns the error of each
// one that failed; one slow node never delays the report about the others
// beyond its own deadline.
func (p *Pool) DialAll(ctx context.Context, aliases []string) map[string]error {
	errs := map[string]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, a := range aliases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.Get(ctx, a); err != nil {
				mu.Lock()
				errs[a] = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errs
}

// Close closes every connection. A dial still in progress closes its own
// client when it finishes, so Close never waits for a slow node.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	entries := p.conns
	p.conns = map[string]*poolEntry{}
	p.mu.Unlock()
	for _, e := range entries {
		if e.mu.TryLock() {
			if e.client != nil {
				e.client.Close()
			}
			e.mu.Unlock()
		}
	}
	return nil
}

// interrupted is the error of a connection attempt the caller cancelled
// (Ctrl-C): it wraps ctx's error and not ErrUnreachable, because the node
// is not to blame; a dial cut short reads like a timeout otherwise. Other
// errors, and a caller's deadline, pass unchanged.
func interrupted(ctx context.Context, name string, err error) error {
	if err == nil || !errors.Is(ctx.Err(), context.Canceled) {
		return err
	}
	return fmt.Errorf("connecting to %s was interrupted: %w", name, ctx.Err())
}

// dial connects to n, through its ProxyJump chain if it has one, within
// n's ConnectTimeout for TCP and handshake together.
func (p *Pool) dial(ctx context.Context, n inventory.Node, chain []string) (_ *Client, err error) {
	defer func() { err = interrupted(ctx, n.Name, err) }()
	if n.ProxyCommand != "" {
		return nil, fmt.Errorf("%w: %s uses ProxyCommand (%s), which sshq does not run; reach it with ProxyJump instead (e.g. `ProxyJump bastion` in place of `ProxyCommand ssh -W %%h:%%p bastion`)",
			ErrUnreachable, n.Name, n.ProxyCommand)
	}
	timeout := n.Timeout()
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()

	var owned []*Client
	closeOwned := func() {
		for _, o := range owned {
			o.Close()
		}
	}
	var raw net.Conn
	if hops := n.ProxyJumps(); len(hops) > 0 && !(len(hops) == 1 && hops[0] == n.Name) {
		var last *Client
		last, owned, err = p.jumpChain(dctx, hops, chain)
		if err != nil {
			closeOwned()
			return nil, fmt.Errorf("%w: %s via ProxyJump %s: %v", ErrUnreachable, n.Name, n.ProxyJump, stripSentinel(err))
		}
		raw, err = dialThrough(dctx, last, n.Addr())
	} else {
		var d net.Dialer
		raw, err = d.DialContext(dctx, "tcp", n.Addr())
	}
	if err != nil {
		closeOwned()
		return nil, fmt.Errorf("%w: %s (%s): %v", ErrUnreachable, n.Name, n.Addr(), friendlyNetErr(err, timeout))
	}
	c, err := p.handshake(dctx, raw, n, deadline, timeout)
	if err != nil {
		closeOwned()
		return nil, err
	}
	c.owned = owned
	return c, nil
}

// jumpChain connects to the first hop through the pool (so it is shared
// and may itself sit behind a ProxyJump) and to each further hop through
// the one before it. It returns the last hop and the hops it opened that
// the pool does not hold, which the caller must close with its connection.
func (p *Pool) jumpChain(ctx context.Context, hops []string, chain []string) (*Client, []*Client, error) {
	prev, err := p.hop(ctx, hops[0], chain)
	if err != nil {
		return nil, nil, err
	}
	var owned []*Client
	for _, h := range hops[1:] {
		n, err := p.resolveHop(ctx, h)
		if err != nil {
			return nil, owned, err
		}
		raw, err := dialThrough(ctx, prev, n.Addr())
		if err != nil {
			return nil, owned, fmt.Errorf("hop %s: %v", h, err)
		}
		deadline, _ := ctx.Deadline()
		c, err := p.handshake(ctx, raw, n, deadline, n.Timeout())
		if err != nil {
			return nil, owned, fmt.Errorf("hop %s: %w", h, err)
		}
		owned = append(owned, c)
		prev = c
	}
	return prev, owned, nil
}

// hop returns the pooled connection to the first ProxyJump hop. A hop
// with an explicit user or port is its own pool entry.
func (p *Pool) hop(ctx context.Context, spec string, chain []string) (*Client, error) {
	user, host, port := parseHop(spec)
	if user == "" && port == 0 {
		return p.entry(ctx, host, chain, func() (inventory.Node, error) { return p.resolver.Resolve(ctx, host) })
	}
	return p.entry(ctx, "jump:"+spec, chain, func() (inventory.Node, error) { return p.resolveHop(ctx, spec) })
}

// resolveHop resolves a ProxyJump element `[user@]host[:port]`, where host
// may be an alias of the config. Only the first hop may have a ProxyJump of
// its own, as with `ssh -J`.
func (p *Pool) resolveHop(ctx context.Context, spec string) (inventory.Node, error) {
	user, host, port := parseHop(spec)
	n, err := p.resolver.Resolve(ctx, host)
	if err != nil {
		return n, err
	}
	if user != "" {
		n.User = user
	}
	if port != 0 {
		n.Port = port
	}
	return n, nil
}

func parseHop(spec string) (user, host string, port int) {
	spec = strings.TrimPrefix(spec, "ssh://")
	if i := strings.LastIndex(spec, "@"); i >= 0 {
		user, spec = spec[:i], spec[i+1:]
	}
	host = spec
	if h, ps, err := net.SplitHostPort(spec); err == nil {
		if pn, err := strconv.Atoi(ps); err == nil {
			host, port = h, pn
		}
	}
	return user, host, port
}

// handshake runs the SSH handshake on an open stream. The deadline is
// enforced by closing the stream, not by SetDeadline: a stream through a
// ProxyJump hop is an SSH channel, which supports no deadlines, and a host
// that accepts TCP but never speaks would otherwise hang the dial forever.
func (p *Pool) handshake(ctx context.Context, raw net.Conn, n inventory.Node, deadline time.Time, timeout time.Duration) (*Client, error) {
	auth, closer, notes, err := authMethodsUntil(n, deadline)
	if err != nil {
		raw.Close()
		return nil, err
	}
	hk := newHostKeyChecker(n)
	cfg := &ssh.ClientConfig{User: n.User, Auth: auth, HostKeyCallback: hk.callback, HostKeyAlgorithms: hk.algorithms(), Timeout: timeout}
	var timedOut atomic.Bool
	var timer *time.Timer
	if !deadline.IsZero() {
		timer = time.AfterFunc(time.Until(deadline), func() { timedOut.Store(true); raw.Close() })
	}
	stop := context.AfterFunc(ctx, func() { timedOut.Store(true); raw.Close() })
	sconn, chans, reqs, err := ssh.NewClientConn(raw, n.Addr(), cfg)
	stop()
	if timer != nil {
		timer.Stop()
	}
	if err != nil {
		raw.Close()
		closer()
		if timedOut.Load() && !errors.Is(err, ErrHostKeyChanged) && !errors.Is(err, ErrHostKeyUnknown) {
			return nil, fmt.Errorf("%w: %s (%s): SSH handshake did not finish within %s (the host accepts TCP but its sshd does not answer: overloaded or hung?)",
				ErrUnreachable, n.Name, n.Addr(), timeout)
		}
		return nil, classifyHandshake(n, err, timeout, notes)
	}
	c := &Client{Node: n, ssh: ssh.NewClient(sconn, chans, reqs), slots: make(chan struct{}, p.maxChannels),
		done: make(chan struct{}), closer: closer}
	go func() { c.markClosed(c.ssh.Wait()) }()
	go c.keepalive()
	return c, nil
}

// dialThrough opens a direct-tcpip channel on a hop. x/crypto's Dial has
// no context, so cancellation closes the hop's half-open attempt.
func dialThrough(ctx context.Context, via *Client, addr string) (net.Conn, error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := via.ssh.Dial("tcp", addr)
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				r.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

func classifyHandshake(n inventory.Node, err error, timeout time.Duration, notes []string) error {
	if errors.Is(err, ErrHostKeyChanged) || errors.Is(err, ErrHostKeyUnknown) {
		return err
	}
	s := err.Error()
	if strings.Contains(s, "unable to authenticate") || strings.Contains(s, "no supported methods remain") {
		extra := ""
		if len(notes) > 0 {
			extra = " (" + strings.Join(notes, "; ") + ")"
		}
		return fmt.Errorf("%w: %s@%s refused every key offered%s; check that `%s` works without a password, and that your public key is in the node's ~/.ssh/authorized_keys",
			ErrAuth, n.User, n.Name, extra, n.SSHCommand())
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w: %s (%s): SSH handshake did not finish within %s (the host accepts TCP but its sshd does not answer: overloaded or hung?)",
			ErrUnreachable, n.Name, n.Addr(), timeout)
	}
	return fmt.Errorf("%w: %s (%s): SSH handshake failed: %v", ErrUnreachable, n.Name, n.Addr(), err)
}

func friendlyNetErr(err error, timeout time.Duration) string {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Sprintf("no answer within %s (host down, or a firewall drops the packets?)", timeout)
	}
	s := err.Error()
	if strings.Contains(s, "connection refused") {
		return "connection refused (is sshd running on that port?)"
	}
	if strings.Contains(s, "no such host") {
		return "unknown host name (check HostName in your ssh config)"
	}
	return s
}

// stripSentinel avoids "node unreachable: node unreachable: ..." chains.
func stripSentinel(err error) string {
	return strings.TrimPrefix(err.Error(), ErrUnreachable.Error()+": ")
}

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
	missed := 0
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		reply := make(chan error, 1)
		go func() {
			_, _, err := c.ssh.SendRequest("keepalive@openssh.com", true, nil)
			reply <- err
		}()
		select {
		case err := <-reply:
			if err != nil {
				c.Close()
				return
			}
			missed = 0
		case <-time.After(interval):
			missed++
			if missed >= max {
				c.Close()
				return
			}
		case <-c.done:
			return
		}
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
// the connection is closed: a server that does not answer a channel request
// within the caller's deadline is not one to keep sending work to, and
// closing is the only way to make x/crypto give the call back.
func (c *Client) await(ctx context.Context, f func() error) error {
	res := make(chan error, 1)
	go func() { res <- f() }()
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		c.Close()
		<-res
		return fmt.Errorf("%s: no answer from the node: %w", c.Node.Name, ctx.Err())
	case <-c.done:
		<-res
		return fmt.Errorf("%w: %s", ErrConnectionLost, c.Node.Name)
	}
}

// Stream is Run with caller-provided writers, for output that must be shown
// as it arrives (logs -f, attached launch).
func (c *Client) Stream(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if err := c.acquire(ctx); err != nil {
		return -1, err
	}
	defer c.release()
	sess, err := c.newSession(ctx)
	if err != nil {
		return -1, notStarted{err}
	}
	defer sess.Close()
	sess.Stdin = stdin
	sess.Stdout = stdout
	sess.Stderr = stderr
	if err := c.await(ctx, func() error { return sess.Start(cmd) }); err != nil {
		if ctx.Err() != nil || !c.Alive() {
			return -1, err
		}
		return -1, notStarted{c.channelErr(err)}
	}
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = sess.Signal(ssh.SIGTERM)
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
		err := c.await(ctx, func() (err error) {
			sess, err = c.ssh.NewSession()
			return err
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

// SFTP opens an SFTP session on the connection. It holds one channel slot
// until release is called. Writes use concurrent requests, since pkg/sftp
// otherwise waits for each 32 KiB packet's reply before sending the next.
func (c *Client) SFTP(ctx context.Context) (*sftp.Client, func(), error) {
	if err := c.acquire(ctx); err != nil {
		return nil, nil, err
	}
	sess, err := c.newSession(ctx)
	if err != nil {
		c.release()
		return nil, nil, err
	}
	fail := func(err error) (*sftp.Client, func(), error) {
		sess.Close()
		c.release()
		return nil, nil, err
	}
	if err := c.await(ctx, func() error { return sess.RequestSubsystem("sftp") }); err != nil {
		if ctx.Err() != nil || !c.Alive() {
			return fail(err)
		}
		return fail(fmt.Errorf("%s: the sftp subsystem is not available (enable `Subsystem sftp` in the node's sshd_config): %w", c.Node.Name, err))
	}
	w, err := sess.StdinPipe()
	if err != nil {
		return fail(err)
	}
	r, err := sess.StdoutPipe()
	if err != nil {
		return fail(err)
	}
	var sc *sftp.Client
	err = c.await(ctx, func() (err error) {
		sc, err = sftp.NewClientPipe(r, w,
			sftp.UseConcurrentWrites(true),
			sftp.UseConcurrentReads(true),
			sftp.MaxConcurrentRequestsPerFile(64),
			// OpenSSH sftp-server takes messages up to 256 KiB; the default
			// 32 KiB data packets cost eight times the requests for the bytes.
			sftp.MaxPacketUnchecked(255*1024),
		)
		return err
	})
	if err != nil {
		return fail(fmt.Errorf("%s: starting sftp: %w", c.Node.Name, err))
	}
	var once sync.Once
	release := func() {
		once.Do(func() {
			sc.Close()
			sess.Close()
			c.release()
		})
	}
	return sc, release, nil
}

// notStarted marks a failure before the remote command began, the only
// case in which running it again cannot run it twice.
type notStarted struct{ error }

func (e notStarted) Unwrap() error { return e.error }

// Run is a convenience: Get then Run, redialing once if the pooled
// connection turned out to be broken before the command could start.
func (p *Pool) Run(ctx context.Context, alias, cmd string, stdin io.Reader) (Result, error) {
	var out, errb bytes.Buffer
	code, err := p.Node(alias).Run(ctx, cmd, stdin, &out, &errb)
	if err != nil {
		return Result{ExitCode: -1}, err
	}
	return Result{Stdout: out.Bytes(), Stderr: errb.Bytes(), ExitCode: code}, nil
}

// NodeRunner runs commands on one node of a pool (see Pool.Node).
type NodeRunner struct {
	pool  *Pool
	alias string
}

// Node returns the runner of the node alias: each Run takes the pooled
// connection (dialing it if needed) and runs one command as one session.
func (p *Pool) Node(alias string) NodeRunner { return NodeRunner{p, alias} }

// Run runs cmd (a shell command line built with Command/Quote) with stdin
// (may be nil), streaming its output to stdout and stderr, and returns its
// exit status. If the pooled connection turns out to be broken before the
// command could start, it dials again once: only then can running it again
// not run it twice.
func (n NodeRunner) Run(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	for attempt := 0; ; attempt++ {
		c, err := n.pool.Get(ctx, n.alias)
		if err != nil {
			return -1, err
		}
		code, err := c.Stream(ctx, cmd, stdin, stdout, stderr)
		var ns notStarted
		if err != nil && errors.As(err, &ns) && errors.Is(err, ErrConnectionLost) && attempt == 0 && ctx.Err() == nil {
			c.Close() // marks it dead: the next Get dials again
			continue
		}
		return code, err
	}
}
