package sshd

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os/user"
	"sort"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/crypto/ssh"
)

// Config describes one node's SSH server.
type Config struct {
	// Addr is the address to listen on, e.g. "127.0.0.21:0".
	Addr string
	// HostKey is the server's host key.
	HostKey ssh.Signer
	// AuthorizedKeys are the only keys that may log in.
	AuthorizedKeys []ssh.PublicKey
	// Env is the node's login environment (HOME, TMUX_TMPDIR,
	// SSHQ_LEASE_DIR, SSHQ_SIM_DIR, PATH, ...). Sessions get exactly these
	// plus USER, LOGNAME and SHELL. HOME defaults to Home and PATH to
	// sshd's default when missing.
	Env map[string]string
	// Home is the working directory of every session and where SFTP
	// resolves relative paths. Defaults to Env["HOME"].
	Home string
	// MaxSessions caps open session channels per connection (default 10).
	MaxSessions int
	// Logf, when set, receives one line per connection and per failure.
	Logf func(format string, args ...any)
}

// Server is a running SSH server.
type Server struct {
	cfg    Config
	ln     net.Listener
	sshCfg *ssh.ServerConfig
	env    []string // the base environment of every session, sorted

	mu      sync.Mutex
	closed  bool
	conns   map[*ssh.ServerConn]struct{}
	running map[*session]struct{} // sessions with a live process group

	wg   sync.WaitGroup // accept loop, connections, sessions
	done chan struct{}  // closed when everything has stopped
}

// Start listens on cfg.Addr and serves until Close.
func Start(cfg Config) (*Server, error) {
	if cfg.HostKey == nil {
		return nil, errors.New("sshd: Config.HostKey is required (generate one with ssh.NewSignerFromKey)")
	}
	if len(cfg.AuthorizedKeys) == 0 {
		return nil, errors.New("sshd: Config.AuthorizedKeys is empty, so nobody could log in; pass the demo client's public key")
	}
	if cfg.Home == "" {
		cfg.Home = cfg.Env["HOME"]
	}
	if cfg.Home == "" {
		return nil, errors.New("sshd: Config.Home (or Env[\"HOME\"]) is required: sessions start there")
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 10
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	s := &Server{
		cfg:     cfg,
		env:     baseEnv(cfg),
		conns:   map[*ssh.ServerConn]struct{}{},
		running: map[*session]struct{}{},
		done:    make(chan struct{}),
	}
	authorized := make([][]byte, len(cfg.AuthorizedKeys))
	for i, k := range cfg.AuthorizedKeys {
		authorized[i] = k.Marshal()
	}
	s.sshCfg = &ssh.ServerConfig{
		// Not "OpenSSH_…": the OpenSSH client picks bug-compatibility
		// workarounds from the peer's version string.
		ServerVersion: "SSH-2.0-sshq_demo",
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			m := key.Marshal()
			for _, a := range authorized {
				if bytes.Equal(a, m) {
					return &ssh.Permissions{}, nil
				}
			}
			return nil, fmt.Errorf("key %s is not authorized for %s", ssh.FingerprintSHA256(key), meta.User())
		},
	}
	s.sshCfg.AddHostKey(cfg.HostKey)
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("sshd: listening on %s: %w", cfg.Addr, err)
	}
	s.ln = ln
	s.wg.Add(1)
	go s.accept()
	go func() {
		s.wg.Wait()
		close(s.done)
	}()
	return s, nil
}

// baseEnv is Config.Env plus what sshd adds for the logged-in account.
func baseEnv(cfg Config) []string {
	env := map[string]string{}
	for k, v := range cfg.Env {
		env[k] = v
	}
	name := "root"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	env["USER"] = name
	env["LOGNAME"] = name
	env["SHELL"] = "/bin/bash"
	if _, ok := env["HOME"]; !ok {
		env["HOME"] = cfg.Home
	}
	if _, ok := env["PATH"]; !ok {
		env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// Addr is the address the server listens on, host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Port is the TCP port the server listens on.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Close stops listening, kills the process group of every command still
// running in a session, drops every connection and waits for all of it to
// end. Processes that left their group (tmux servers) are not touched.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	running := make([]*session, 0, len(s.running))
	for sess := range s.running {
		running = append(running, sess)
	}
	conns := make([]*ssh.ServerConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	// Outside s.mu: a session takes its own lock, then s.mu, to start.
	for _, sess := range running {
		sess.abort()
	}
	for _, c := range conns {
		c.Close()
	}
	<-s.done
	return err
}

// Wait blocks until the server has stopped: Close was called, or the
// listener failed, and every connection and session has ended.
func (s *Server) Wait() { <-s.done }

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if !s.isClosed() {
				s.cfg.Logf("sshd %s: accept: %v; no longer serving", s.Addr(), err)
			}
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(nc)
	}
}

func (s *Server) serveConn(nc net.Conn) {
	defer s.wg.Done()
	conn, chans, reqs, err := ssh.NewServerConn(nc, s.sshCfg)
	if err != nil {
		s.cfg.Logf("sshd %s: handshake with %s: %v", s.Addr(), nc.RemoteAddr(), err)
		nc.Close()
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		go ssh.DiscardRequests(reqs)
		for nch := range chans {
			nch.Reject(ssh.ConnectionFailed, "server is shutting down")
		}
		return
	}
	s.conns[conn] = struct{}{}
	s.mu.Unlock()
	s.cfg.Logf("sshd %s: %s logged in from %s", s.Addr(), conn.User(), conn.RemoteAddr())
	defer func() {
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
		conn.Close()
	}()

	go func() {
		for r := range reqs {
			// Every other global request (forwarding, hostkeys-prove,
			// no-more-sessions) is refused; OpenSSH clients cope.
			r.Reply(r.Type == "keepalive@openssh.com", nil)
		}
	}()

	var open sync.Mutex
	sessions := 0
	release := func() {
		open.Lock()
		sessions--
		open.Unlock()
	}
	for nch := range chans {
		if nch.ChannelType() != "session" {
			nch.Reject(ssh.Prohibited, "only session channels are supported (no port forwarding)")
			continue
		}
		open.Lock()
		full := sessions >= s.cfg.MaxSessions
		if !full {
			sessions++
		}
		open.Unlock()
		if full {
			// sshd's answer when MaxSessions is reached.
			nch.Reject(ssh.Prohibited, "open failed")
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			release()
			continue
		}
		sess := &session{srv: s, ch: ch, remote: conn.RemoteAddr().String(), release: release}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			sess.serve(creqs)
		}()
	}
	// The connection is gone: chans is closed only then. Sessions end on
	// their own, since their channels are closed too.
}

// startTracked starts cmd and records its session, so Close can kill the
// process group; under the lock, so a Close racing with the start either
// refuses it or sees it.
func (s *Server) startTracked(sess *session, start func() error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("server is shutting down")
	}
	if err := start(); err != nil {
		return err
	}
	s.running[sess] = struct{}{}
	return nil
}

func (s *Server) untrack(sess *session) {
	s.mu.Lock()
	delete(s.running, sess)
	s.mu.Unlock()
}

func signalName(sig syscall.Signal) string {
	for name, s := range signals {
		if s == sig {
			return name
		}
	}
	return "SIG" + strconv.Itoa(int(sig)) + "@sshq"
}

// signals are the names RFC 4254 section 6.10 gives, without "SIG".
var signals = map[string]syscall.Signal{
	"ABRT": syscall.SIGABRT,
	"ALRM": syscall.SIGALRM,
	"FPE":  syscall.SIGFPE,
	"HUP":  syscall.SIGHUP,
	"ILL":  syscall.SIGILL,
	"INT":  syscall.SIGINT,
	"KILL": syscall.SIGKILL,
	"PIPE": syscall.SIGPIPE,
	"QUIT": syscall.SIGQUIT,
	"SEGV": syscall.SIGSEGV,
	"TERM": syscall.SIGTERM,
	"USR1": syscall.SIGUSR1,
	"USR2": syscall.SIGUSR2,
}
