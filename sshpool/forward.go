package sshpool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

var (
	// ErrForwardProhibited: the node's sshd refuses port forwarding.
	ErrForwardProhibited = errors.New("port forwarding refused")
	// ErrNothingListening: the node could not connect to the forwarded
	// address: nothing listens there (yet).
	ErrNothingListening = errors.New("nothing listens on the node's port")
	// ErrLocalPortInUse: the local port of a forward is taken.
	ErrLocalPortInUse = errors.New("local port in use")
)

// ForwardDialTimeout bounds the opening of one tunnelled connection: a
// node that does not answer must not pile up waiting clients.
const ForwardDialTimeout = 15 * time.Second

// MaxForwardConns bounds the tunnelled connections of one Forward open at
// once; more wait to be accepted. Forwarded channels are not sessions, so
// they do not count against sshd's MaxSessions (or MaxChannels), but each
// costs the node a socket.
const MaxForwardConns = 256

// Forward is `ssh -L`: a local listener whose connections are tunnelled
// over a node's pooled connection (direct-tcpip channels) to an address as
// the node sees it. A connection that breaks is redialed for the next
// client, as every other use of the pool.
type Forward struct {
	pool   *Pool
	alias  string
	remote string
	ln     net.Listener

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// ListenForward opens the local side of a forward now, so that a taken
// port is reported (ErrLocalPortInUse) before anything is asked of the
// node. localAddr is host:port (port 0: any free one); remoteAddr is
// host:port as the node sees it (127.0.0.1:8080 is the node's own
// loopback). Serve then tunnels; Close undoes a forward never served.
func (p *Pool) ListenForward(alias, localAddr, remoteAddr string) (*Forward, error) {
	if _, _, err := net.SplitHostPort(remoteAddr); err != nil {
		return nil, fmt.Errorf("forward to %q: %w", remoteAddr, err)
	}
	ln, err := net.Listen("tcp", localAddr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			_, port, _ := net.SplitHostPort(localAddr)
			return nil, fmt.Errorf("%w: %s is already in use on this machine (by another program, or another forward): choose another local port, as in %s:%s",
				ErrLocalPortInUse, localAddr, suggestPort(port), portOf(remoteAddr))
		}
		return nil, fmt.Errorf("cannot listen on %s: %w", localAddr, err)
	}
	return &Forward{pool: p, alias: alias, remote: remoteAddr, ln: ln, conns: map[net.Conn]struct{}{}}, nil
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// suggestPort is a local port to try instead of a taken one.
func suggestPort(port string) string {
	n, err := strconv.Atoi(port)
	if err != nil || n+10000 > 65535 {
		return "0"
	}
	return strconv.Itoa(n + 10000)
}

// Addr is the local address clients connect to.
func (f *Forward) Addr() *net.TCPAddr { return f.ln.Addr().(*net.TCPAddr) }

// Remote is the forwarded address, as the node sees it.
func (f *Forward) Remote() string { return f.remote }

// Close stops accepting and closes every tunnelled connection.
func (f *Forward) Close() error {
	f.mu.Lock()
	f.closed = true
	conns := f.conns
	f.conns = map[net.Conn]struct{}{}
	f.mu.Unlock()
	err := f.ln.Close()
	for c := range conns {
		c.Close()
	}
	return err
}

// dial opens one tunnelled connection, bounded by ForwardDialTimeout.
func (f *Forward) dial(ctx context.Context) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, ForwardDialTimeout)
	defer cancel()
	c, err := f.pool.Get(ctx, f.alias)
	if err != nil {
		return nil, err
	}
	conn, err := c.ssh.DialContext(ctx, "tcp", f.remote)
	if err == nil {
		return conn, nil
	}
	var oce *ssh.OpenChannelError
	switch {
	case errors.As(err, &oce) && oce.Reason == ssh.Prohibited:
		return nil, fmt.Errorf("%w: the sshd of %s does not allow it (AllowTcpForwarding no, or DisableForwarding yes, in its sshd_config): ask its administrator to allow it",
			ErrForwardProhibited, f.alias)
	case errors.As(err, &oce) && oce.Reason == ssh.ConnectionFailed:
		return nil, fmt.Errorf("%w: %s: nothing accepts connections on %s there (yet?): is the server running, and listening on that port of 127.0.0.1 or 0.0.0.0?",
			ErrNothingListening, f.alias, f.remote)
	case errors.As(err, &oce):
		return nil, fmt.Errorf("%s refused to connect to %s: %v", f.alias, f.remote, oce)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("%w: %s did not open a connection to %s within %s", ErrUnreachable, f.alias, f.remote, ForwardDialTimeout)
	}
	return nil, c.channelErr(err)
}

// Check opens one tunnelled connection and closes it at once: whether
// the node allows forwarding, and whether something listens there now.
func (f *Forward) Check(ctx context.Context) error {
	c, err := f.dial(ctx)
	if err != nil {
		return err
	}
	return c.Close()
}

// Serve accepts connections until ctx ends, then closes the listener and
// every tunnelled connection and returns once they are done. A connection
// that cannot be tunnelled is closed and its reason given to onErr (may be
// nil); it does not stop Serve. Serve returns nil when ctx ends, or the
// listener's error.
func (f *Forward) Serve(ctx context.Context, onErr func(error)) error {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer func() {
		stop()
		f.Close()
		wg.Wait()
	}()
	slots := make(chan struct{}, MaxForwardConns)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		local, err := f.ln.Accept()
		if err != nil {
			<-slots
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			f.mu.Lock()
			closed := f.closed
			f.mu.Unlock()
			if closed {
				return nil
			}
			return fmt.Errorf("forward %s → %s:%s: %w", f.Addr(), f.alias, f.remote, err)
		}
		if !f.track(local) {
			local.Close()
			<-slots
			return nil
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			defer f.untrack(local)
			remote, err := f.dial(ctx)
			if err != nil {
				local.Close()
				if onErr != nil && ctx.Err() == nil {
					onErr(err)
				}
				return
			}
			if !f.track(remote) {
				remote.Close()
				local.Close()
				return
			}
			defer f.untrack(remote)
			pipe(local, remote)
		}()
	}
}

func (f *Forward) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *Forward) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

// pipe copies both ways, passing each side's end of input on as a
// half-close (an HTTP client may close its sending side and still read),
// until both directions are done.
func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	half := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	go half(a, b)
	go half(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}
