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
	// sftpShell: the sftp subsystem failed here once (a chatty ~/.bashrc,
	// no Subsystem line) and sftp-server run as a command worked, so
	// later SFTP sessions go straight to the latter.
	sftpShell atomic.Bool

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
	return n.session(ctx, func(c *Client) (int, error) { return c.Stream(ctx, cmd, stdin, stdout, stderr) })
}

// session runs one session on the pooled connection, dialing again once
// if the connection turned out broken before the command started.
func (n NodeRunner) session(ctx context.Context, run func(*Client) (int, error)) (int, error) {
	for attempt := 0; ; attempt++ {
		c, err := n.pool.Get(ctx, n.alias)
		if err != nil {
			return -1, err
		}
		code, err := run(c)
		var ns notStarted
		if err != nil && errors.As(err, &ns) && errors.Is(err, ErrConnectionLost) && attempt == 0 && ctx.Err() == nil {
			c.Close() // marks it dead: the next Get dials again
			continue
		}
		return code, err
	}
}
