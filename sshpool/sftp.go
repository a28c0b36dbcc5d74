package sshpool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// sftpServerPaths are where OpenSSH's sftp-server lives on the systems
// sshq meets, tried after the one the node's sshd_config names.
var sftpServerPaths = []string{
	"/usr/lib/openssh/sftp-server",
	"/usr/libexec/openssh/sftp-server",
	"/usr/lib/ssh/sftp-server",
	"/usr/libexec/sftp-server",
}

// sshdConfigPath is the node's sshd_config, whose `Subsystem sftp` line
// names the sftp-server sshd itself would run.
var sshdConfigPath = "/etc/ssh/sshd_config"

// sftpServerScript runs under sh: $1 is the marker, $2 the sshd_config,
// the rest candidate paths. It starts in $HOME, where the subsystem's
// relative paths start too, and keeps the arguments the admin gave
// sftp-server in the Subsystem line (split as sshd splits them).
const sftpServerScript = `m=$1 cfg=$2
shift 2
p=
for c in "$@"; do
	if [ -f "$c" ] && [ -x "$c" ]; then p=$c; break; fi
done
line=$(grep -iE '^[[:space:]]*subsystem[[:space:]]+sftp[[:space:]]+/' "$cfg" 2>/dev/null | head -n 1)
set -f
set -- $line
if [ $# -ge 3 ] && [ -f "$3" ] && [ -x "$3" ]; then p=$3; shift 3; else set --; fi
[ -n "$p" ] || exit 127
cd || exit 126
printf '\n%s\n' "$m"
exec "$p" "$@"
`

// maxShellNoise bounds what a login shell may print before sftp-server
// starts: past it sshq stops reading and says what the shell printed.
const maxShellNoise = 64 << 10

// SFTP opens an SFTP session on the connection. It holds one channel slot
// until release is called. Writes use concurrent requests, since pkg/sftp
// otherwise waits for each 32 KiB packet's reply before sending the next.
//
// sshd starts the sftp subsystem through the user's login shell, and bash
// reads ~/.bashrc for it: a .bashrc that greets non-interactive shells on
// stdout puts its greeting before the SFTP protocol. So when the
// subsystem fails (a greeting, no Subsystem line, a broken sftp-server),
// SFTP runs the node's sftp-server as a command that first prints a marker
// line, and reads the protocol from past the marker. A connection that
// needed this once goes there directly afterwards.
func (c *Client) SFTP(ctx context.Context) (*sftp.Client, func(), error) {
	if err := c.acquire(ctx); err != nil {
		return nil, nil, err
	}
	var subsysErr error
	var noise []byte
	if !c.sftpShell.Load() {
		sc, sess, head, err := c.sftpSubsystem(ctx)
		if err == nil {
			return sc, c.sftpRelease(sc, sess), nil
		}
		var nc noChannel
		if errors.As(err, &nc) || ctx.Err() != nil || !c.Alive() {
			c.release()
			return nil, nil, err
		}
		subsysErr = err
		if len(head) > 0 && head[0] != 0 {
			// An SFTP packet starts with its length, whose first byte
			// is 0 for any packet sftp-server sends: this is text.
			noise, _, _ = bytes.Cut(head, []byte{0})
		}
	}
	sc, sess, shellNoise, err := c.sftpViaShell(ctx)
	if err != nil {
		c.release()
		if ctx.Err() != nil || !c.Alive() {
			return nil, nil, err
		}
		if len(bytes.TrimSpace(shellNoise)) > 0 {
			noise = shellNoise
		}
		return nil, nil, c.sftpError(subsysErr, noise, err)
	}
	c.sftpShell.Store(true)
	return sc, c.sftpRelease(sc, sess), nil
}

// noChannel is a failure to open the session at all (MaxSessions, a lost
// connection): another way to start sftp-server would meet it too.
type noChannel struct{ error }

func (e noChannel) Unwrap() error { return e.error }

func (c *Client) sftpRelease(sc *sftp.Client, sess *ssh.Session) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			sc.Close()
			sess.Close()
			c.release()
		})
	}
}

// sftpSubsystem starts SFTP as sshd's sftp subsystem. On failure it
// returns the first bytes the node sent, which tell a greeting apart.
func (c *Client) sftpSubsystem(ctx context.Context) (*sftp.Client, *ssh.Session, []byte, error) {
	sess, err := c.newSession(ctx)
	if err != nil {
		return nil, nil, nil, noChannel{err}
	}
	w, err := sess.StdinPipe()
	if err != nil {
		sess.Close()
		return nil, nil, nil, err
	}
	r, err := sess.StdoutPipe()
	if err != nil {
		sess.Close()
		return nil, nil, nil, err
	}
	if err := c.await(ctx, func() error { return sess.RequestSubsystem("sftp") }, func() { sess.Close() }); err != nil {
		sess.Close()
		return nil, nil, nil, fmt.Errorf("no sftp subsystem: %w", err)
	}
	head := &sniffer{r: r}
	sc, err := c.sftpHandshake(ctx, sess, head, w)
	if err != nil {
		sess.Close()
		return nil, nil, head.bytes(), fmt.Errorf("the sftp subsystem failed: %w", err)
	}
	return sc, sess, nil, nil
}

// sftpViaShell starts the node's sftp-server as a command and hands the
// SFTP client what follows the marker line. noise is what came before it.
func (c *Client) sftpViaShell(ctx context.Context) (_ *sftp.Client, _ *ssh.Session, noise []byte, _ error) {
	marker, err := newMarker()
	if err != nil {
		return nil, nil, nil, err
	}
	sess, err := c.newSession(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	fail := func(err error) (*sftp.Client, *ssh.Session, []byte, error) {
		sess.Close()
		return nil, nil, nil, err
	}
	w, err := sess.StdinPipe()
	if err != nil {
		return fail(err)
	}
	r, err := sess.StdoutPipe()
	if err != nil {
		return fail(err)
	}
	errOut := &headBuffer{max: 4096}
	sess.Stderr = errOut
	argv := append([]string{"sh", "-c", sftpServerScript, "sh", marker, sshdConfigPath}, sftpServerPaths...)
	if err := c.await(ctx, func() error { return sess.Start(Command(argv...)) }, func() { sess.Close() }); err != nil {
		return fail(err)
	}
	var rest io.Reader
	err = c.await(ctx, func() (err error) {
		noise, rest, err = skipToMarker(r, marker)
		return err
	}, func() { sess.Close() })
	if err != nil {
		if ctx.Err() != nil || !c.Alive() {
			// Given up on: the read may still be writing noise.
			return fail(err)
		}
		if !errors.Is(err, io.EOF) {
			sess.Close()
			return nil, nil, noise, err
		}
		// The command ended before starting sftp-server: its exit
		// status says why.
		code := -1
		werr := c.await(ctx, sess.Wait, func() { sess.Close() })
		var ee *ssh.ExitError
		if errors.As(werr, &ee) {
			code = ee.ExitStatus()
		}
		sess.Close()
		switch code {
		case 127:
			return nil, nil, noise, fmt.Errorf("no sftp-server program on the node (none named by a `Subsystem sftp` line in %s, none at %s): install OpenSSH's sftp-server there (`sudo apt-get install -y openssh-sftp-server`, or `sudo dnf install openssh-server`)",
				sshdConfigPath, strings.Join(sftpServerPaths, ", "))
		case 126:
			return nil, nil, noise, errors.New("cannot change to the home directory on the node")
		}
		why := lastLine(errOut.String())
		if why == "" {
			why = "no message"
		}
		return nil, nil, noise, fmt.Errorf("the shell ended (exit status %d) before sftp-server started: %s", code, why)
	}
	sc, err := c.sftpHandshake(ctx, sess, rest, w)
	if err != nil {
		if ctx.Err() != nil || !c.Alive() {
			return fail(err)
		}
		why := ""
		if l := lastLine(errOut.String()); l != "" {
			why = " (" + l + ")"
		}
		sess.Close()
		return nil, nil, noise, fmt.Errorf("sftp-server run as a command failed: %w%s", err, why)
	}
	return sc, sess, noise, nil
}

// sftpHandshake starts pkg/sftp on the session's streams, within ctx.
func (c *Client) sftpHandshake(ctx context.Context, sess *ssh.Session, r io.Reader, w io.WriteCloser) (*sftp.Client, error) {
	var sc *sftp.Client
	err := c.await(ctx, func() (err error) {
		sc, err = sftp.NewClientPipe(r, w,
			sftp.UseConcurrentWrites(true),
			sftp.UseConcurrentReads(true),
			sftp.MaxConcurrentRequestsPerFile(64),
			// OpenSSH sftp-server takes messages up to 256 KiB; the default
			// 32 KiB data packets cost eight times the requests for the bytes.
			sftp.MaxPacketUnchecked(255*1024),
		)
		return err
	}, func() { sess.Close() })
	return sc, err
}

// sftpError says why neither way to start SFTP worked, and what to do.
func (c *Client) sftpError(subsysErr error, noise []byte, shellErr error) error {
	if len(bytes.TrimSpace(noise)) > 0 {
		return fmt.Errorf("%s: the login shell prints %s before every command (a startup file such as ~/.bashrc writes to stdout even when not interactive), which breaks SFTP, and running sftp-server past that output failed too: %w. Make non-interactive shells quiet: put `[[ $- == *i* ]] || return` at the top of ~/.bashrc on %s, above the output",
			c.Node.Name, excerpt(noise), shellErr, c.Node.Name)
	}
	if subsysErr == nil {
		return fmt.Errorf("%s: starting SFTP: %w", c.Node.Name, shellErr)
	}
	return fmt.Errorf("%s: SFTP does not start (%v), and running sftp-server as a command failed: %w (sshd needs a `Subsystem sftp` line in the node's sshd_config)",
		c.Node.Name, subsysErr, shellErr)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// sniffer keeps the first bytes read through it.
type sniffer struct {
	r    io.Reader
	mu   sync.Mutex
	head []byte
}

func (s *sniffer) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.mu.Lock()
	if room := 512 - len(s.head); room > 0 {
		s.head = append(s.head, p[:min(n, room)]...)
	}
	s.mu.Unlock()
	return n, err
}

func (s *sniffer) bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.head
}

// headBuffer keeps the first max bytes written to it; the rest is dropped,
// so a chatty stderr costs nothing for as long as the session lives.
type headBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (h *headBuffer) Write(p []byte) (int, error) {
	h.mu.Lock()
	if room := h.max - len(h.b); room > 0 {
		h.b = append(h.b, p[:min(len(p), room)]...)
	}
	h.mu.Unlock()
	return len(p), nil
}

func (h *headBuffer) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return string(h.b)
}
