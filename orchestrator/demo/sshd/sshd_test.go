package sshd

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"github.com/sshq/sshq/sshpool"
	"golang.org/x/crypto/ssh"
)

type fixture struct {
	srv       *Server
	cfg       Config
	clientKey ed25519.PrivateKey
	hostKey   ssh.PublicKey
}

func newSigner(t *testing.T) (ssh.Signer, ed25519.PrivateKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, priv
}

// startServer starts a node the way the demo does: its own home and
// login environment, one authorized client key.
func startServer(t *testing.T, modify func(*Config)) *fixture {
	t.Helper()
	root := t.TempDir()
	env := map[string]string{
		"HOME":           filepath.Join(root, "home"),
		"TMUX_TMPDIR":    filepath.Join(root, "tmux"),
		"SSHQ_LEASE_DIR": filepath.Join(root, "leases"),
		"SSHQ_SIM_DIR":   filepath.Join(root, "gpusim"),
		"PATH":           filepath.Join(root, "bin") + ":/usr/local/bin:/usr/bin:/bin",
	}
	for _, d := range []string{"home", "tmux", "leases", "gpusim", "bin"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	host, _ := newSigner(t)
	client, clientKey := newSigner(t)
	cfg := Config{
		Addr:           "127.0.0.1:0",
		HostKey:        host,
		AuthorizedKeys: []ssh.PublicKey{client.PublicKey()},
		Env:            env,
		Home:           env["HOME"],
		Logf:           t.Logf,
	}
	if modify != nil {
		modify(&cfg)
	}
	srv, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return &fixture{srv: srv, cfg: cfg, clientKey: clientKey, hostKey: host.PublicKey()}
}

func (f *fixture) dial(t *testing.T) *ssh.Client {
	t.Helper()
	signer, err := ssh.NewSignerFromKey(f.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ssh.Dial("tcp", f.srv.Addr(), &ssh.ClientConfig{
		User:            "demo",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(f.hostKey),
		Timeout:         10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// run runs cmd and returns its stdout, stderr and exit code (-1 with a
// signal name for a command killed by a signal).
func run(t *testing.T, c *ssh.Client, cmd string, stdin io.Reader) (stdout, stderr string, code int, sig string) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdin, s.Stdout, s.Stderr = stdin, &out, &errb
	err = s.Run(cmd)
	var ee *ssh.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Signal() != "":
		code, sig = -1, ee.Signal()
	case errors.As(err, &ee):
		code = ee.ExitStatus()
	default:
		t.Fatalf("%q: %v", cmd, err)
	}
	return out.String(), errb.String(), code, sig
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// procStat returns the fields of /proc/<pid>/stat after the command name:
// state, ppid, pgrp, session, ...; nil when there is no such process.
func procStat(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
}

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	st := procStat(pid)
	return st != nil && st[0] != "Z"
}

// ownSession reports whether pid leads its own session, as a tmux server does.
func ownSession(pid int) bool {
	st := procStat(pid)
	return st != nil && st[3] == strconv.Itoa(pid)
}

func TestExecExitCodesAndSeparateStreams(t *testing.T) {
	t.Parallel()
	f := startServer(t, nil)
	c := f.dial(t)

	out, errs, code, _ := run(t, c, "echo to-out; echo to-err >&2; exit 3", nil)
	if out != "to-out\n" || errs != "to-err\n" || code != 3 {
		t.Errorf("got stdout %q, stderr %q, exit %d; want %q, %q, 3", out, errs, code, "to-out\n", "to-err\n")
	}
	if _, _, code, _ := run(t, c, "true", nil); code != 0 {
		t.Errorf("true exited %d", code)
	}
	if _, _, code, _ := run(t, c, "exit 255", nil); code != 255 {
		t.Errorf("exit 255 exited %d", code)
	}
	if _, _, code, sig := run(t, c, "kill -KILL $$", nil); code != -1 || sig != "KILL" {
		t.Errorf("a command killed by SIGKILL reported exit %d signal %q, want exit-signal KILL", code, sig)
	}
	if out, _, _, _ := run(t, c, "pwd", nil); out != f.cfg.Home+"\n" {
		t.Errorf("sessions start in %q, want the home %q", out, f.cfg.Home)
	}
}

func TestShellKeepaliveAndNoForwarding(t *testing.T) {
	t.Parallel()
	f := startServer(t, nil)
	c := f.dial(t)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out bytes.Buffer
	s.Stdin, s.Stdout = strings.NewReader("echo $((6*7))\nexit 9\n"), &out
	if err := s.Shell(); err != nil {
		t.Fatal(err)
	}
	err = s.Wait()
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 9 || out.String() != "42\n" {
		t.Errorf("shell reading stdin: output %q, exit %v; want %q and 9", out.String(), err, "42\n")
	}
	if ok, _, err := c.SendRequest("keepalive@openssh.com", true, nil); err != nil || !ok {
		t.Errorf("keepalive@openssh.com answered %v, %v; sshpool's keepalives need true", ok, err)
	}
	if conn, err := c.Dial("tcp", f.srv.Addr()); err == nil {
		conn.Close()
		t.Error("port forwarding (direct-tcpip) was allowed")
	}
}

func TestSessionEnvironmentIsTheNodes(t *testing.T) {
	t.Parallel()
	f := startServer(t, nil)
	c := f.dial(t)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Setenv("LC_SSHQ_TEST", "from client"); err != nil {
		t.Fatalf("env request refused (sshd with AcceptEnv * takes it): %v", err)
	}
	// env -0: values may hold anything.
	out, err := s.Output("env -0")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00") {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = v
	}
	// bash itself adds these to whatever it was given.
	delete(got, "PWD")
	delete(got, "SHLVL")
	delete(got, "_")

	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"USER": u.Username, "LOGNAME": u.Username, "SHELL": "/bin/bash", "LC_SSHQ_TEST": "from client"}
	for k, v := range f.cfg.Env {
		want[k] = v
	}
	if d := diffEnv(got, want); d != "" {
		t.Errorf("session environment differs from the node's login environment:\n%s", d)
	}
}

func diffEnv(got, want map[string]string) string {
	var lines []string
	for k, v := range want {
		if g, ok := got[k]; !ok {
			lines = append(lines, fmt.Sprintf("missing %s=%q", k, v))
		} else if g != v {
			lines = append(lines, fmt.Sprintf("%s=%q, want %q", k, g, v))
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			lines = append(lines, fmt.Sprintf("unexpected %s=%q", k, v))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func TestLargeStdinRoundTrip(t *testing.T) {
	t.Parallel()
	f := startServer(t, nil)
	c := f.dial(t)
	data := make([]byte, 8<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	// Output flows back while input still arrives: a server that buffered
	// either side badly would deadlock here.
	out, errs, code, _ := run(t, c, "cat; echo done >&2", bytes.NewReader(data))
	if code != 0 || errs != "done\n" {
		t.Fatalf("cat exited %d, stderr %q", code, errs)
	}
	if !bytes.Equal([]byte(out), data) {
		t.Fatalf("8 MiB through cat came back as %d bytes, not identical", len(out))
	}
}

func TestManyConnectionsManyConcurrentSessions(t *testing.T) {
	t.Parallel()
	f := startServer(t, nil)
	var wg sync.WaitGroup
	errc := make(chan error, 64)
	for conn := 0; conn < 6; conn++ {
		c := f.dial(t)
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, err := c.NewSession()
				if err != nil {
					errc <- err
					return
				}
				defer s.Close()
				want := conn*8 + i
				out, err := s.Output(fmt.Sprintf("seq %d; exit %d", 1000*(want+1), want))
				var ee *ssh.ExitError
				switch {
				case want == 0 && err != nil, want != 0 && (!errors.As(err, &ee) || ee.ExitStatus() != want):
					errc <- fmt.Errorf("session %d: exit %v, want %d", want, err, want)
				case bytes.Count(out, []byte("\n")) != 1000*(want+1):
					errc <- fmt.Errorf("session %d: %d lines of output, want %d", want, bytes.Count(out, []byte("\n")), 1000*(want+1))
				}
			}()
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

func TestMaxSessionsRefusesTheEleventh(t *testing.T) {
	t.Parallel()
	f := startServer(t, nil)
	c := f.dial(t)
	var stdins []io.WriteCloser
	var sessions []*ssh.Session
	for i := 0; i < 10; i++ {
		s, err := c.NewSession()
		if err != nil {
			t.Fatalf("session %d of 10 refused: %v", i+1, err)
		}
		defer s.Close()
		w, err := s.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start("cat >/dev/null"); err != nil {
			t.Fatal(err)
		}
		stdins, sessions = append(stdins, w), append(sessions, s)
	}
	_, err := c.NewSession()
	var oce *ssh.OpenChannelError
	if !errors.As(err, &oce) || oce.Reason != ssh.Prohibited {
		t.Fatalf("11th concurrent session: got %v, want administratively prohibited", err)
	}
	// Once one ends, its slot is free by the time the client sees it end.
	stdins[0].Close()
	if err := sessions[0].Wait(); err != nil {
		t.Fatal(err)
	}
	s, err := c.NewSession()
	if err != nil {
		t.Fatalf("a session right after another ended was refused: %v", err)
	}
	s.Close()
	for i, w := range stdins[1:] {
		w.Close()
		if err := sessions[i+1].Wait(); err != nil {
			t.Error(err)
		}
	}
}

func TestSFTPResolvesAgainstHome(t *testing.T) {
	t.Parallel()
	f := startServer(t, nil)
	c := f.dial(t)
	sc, err := sftp.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	home := f.cfg.Home

	if wd, err := sc.Getwd(); err != nil || wd != home {
		t.Errorf("sftp starts in %q (%v), want the home %q", wd, err, home)
	}
	if err := sc.MkdirAll("sub/dir"); err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("sshq"), 100_000)
	w, err := sc.OpenFile("sub/dir/.up.tmp", os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.ReadFrom(bytes.NewReader(payload)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	mtime := time.Unix(1_700_000_000, 0)
	if err := sc.Chmod("sub/dir/.up.tmp", 0o751); err != nil {
		t.Fatal(err)
	}
	if err := sc.Chtimes("sub/dir/.up.tmp", mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, "sub/dir/final"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := sc.Rename("sub/dir/.up.tmp", "sub/dir/final"); err == nil {
		t.Error("plain SFTP rename replaced an existing file; OpenSSH's refuses")
	}
	if err := sc.PosixRename("sub/dir/.up.tmp", "sub/dir/final"); err != nil {
		t.Fatal(err)
	}
	final := filepath.Join(home, "sub/dir/final")
	got, err := os.ReadFile(final)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("uploaded file under home: %d bytes, %v; want the %d uploaded", len(got), err, len(payload))
	}
	fi, err := os.Stat(final)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o751 || !fi.ModTime().Equal(mtime) {
		t.Errorf("mode %v mtime %v, want -rwxr-x--x %v", fi.Mode(), fi.ModTime(), mtime)
	}

	// Relative link targets stay relative.
	if err := sc.Symlink("../dir/final", "sub/dir/link"); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(filepath.Join(home, "sub/dir/link")); err != nil || target != "../dir/final" {
		t.Errorf("symlink target on disk %q (%v), want %q", target, err, "../dir/final")
	}
	if target, err := sc.ReadLink("sub/dir/link"); err != nil || target != "../dir/final" {
		t.Errorf("readlink over sftp %q (%v)", target, err)
	}
	if lfi, err := sc.Lstat("sub/dir/link"); err != nil || lfi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("lstat of a symlink: %v, %v", lfi, err)
	}

	if err := sc.Link("sub/dir/final", "hard"); err != nil {
		t.Fatal(err)
	}
	if hfi, err := os.Stat(filepath.Join(home, "hard")); err != nil || !os.SameFile(hfi, fi) {
		t.Errorf("hardlink@openssh.com did not make a hard link: %v", err)
	}
	vfs, err := sc.StatVFS(".")
	if err != nil || vfs.Bsize == 0 || vfs.Blocks == 0 {
		t.Errorf("statvfs@openssh.com: %+v, %v", vfs, err)
	}
	entries, err := sc.ReadDir("sub/dir")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	if strings.Join(names, " ") != "final link" {
		t.Errorf("sub/dir lists %v, want [final link]", names)
	}
	if _, err := sc.Stat("missing"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat of a missing file: %v, want not-exist", err)
	}
	if err := sc.Remove("hard"); err != nil {
		t.Error(err)
	}
	if err := sc.RemoveDirectory("sub/dir"); err == nil {
		t.Error("removing a non-empty directory succeeded")
	}
}

func TestSignalReachesTheProcessGroup(t *testing.T) {
	t.Parallel()
	f := startServer(t, nil)
	c := f.dial(t)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(`trap 'echo got TERM; exit 7' TERM; echo ready; sleep 1000 & wait`); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(out)
	if line, err := r.ReadString('\n'); line != "ready\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	if err := s.Signal(ssh.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(r)
	err = s.Wait()
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 7 || string(rest) != "got TERM\n" {
		t.Fatalf("after SIGTERM: output %q, exit %v; want the trap's output and exit 7", rest, err)
	}
}

// startReporting starts cmd, which must print one line (a pid) first, and
// returns that line as a number.
func startReporting(t *testing.T, c *ssh.Client, cmd string) (*ssh.Session, int) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(cmd); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("%q printed %q: %v", cmd, line, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	return s, pid
}

func TestCloseKillsSessionsButNotDetachedProcesses(t *testing.T) {
	t.Parallel()
	f := startServer(t, nil)
	c := f.dial(t)
	// A background child in the command's group stands for the group.
	_, inGroup := startReporting(t, c, "sleep 1000 & echo $!; wait")
	// setsid is how tmux servers detach.
	_, detached := startReporting(t, c, "setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!; wait")
	t.Cleanup(func() { syscall.Kill(detached, syscall.SIGKILL) })
	if !alive(inGroup) {
		t.Fatal("the test process did not start")
	}
	waitFor(t, "the detached process has its own session", func() bool { return ownSession(detached) })
	closed := make(chan error, 1)
	go func() { closed <- f.srv.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close hung with sessions running")
	}
	f.srv.Wait()
	waitFor(t, "the session's process group is killed", func() bool { return !alive(inGroup) })
	if !alive(detached) {
		t.Error("Close killed a process that had left the session's process group (tmux would die with the demo)")
	}
	if _, err := c.NewSession(); err == nil {
		t.Error("the connection still works after Close")
	}
}

func TestDisconnectHangsUpTheCommand(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"connection", "channel"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			f := startServer(t, nil)
			c := f.dial(t)
			marker := filepath.Join(t.TempDir(), "hup")
			s, _ := startReporting(t, c, "trap 'echo hup > "+sshpool.Quote(marker)+"; exit 0' HUP; echo $$; sleep 1000 & wait")
			if how == "connection" {
				c.Close()
			} else {
				s.Close()
			}
			waitFor(t, "the command gets SIGHUP", func() bool {
				b, _ := os.ReadFile(marker)
				return string(b) == "hup\n"
			})
		})
	}
}

func TestPTYSizeTermAndWindowChange(t *testing.T) {
	t.Parallel()
	if !ptySupported {
		t.Skip("no pty support on this OS")
	}
	f := startServer(t, nil)
	c := f.dial(t)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.RequestPty("xterm-256color", 40, 100, ssh.TerminalModes{}); err != nil {
		t.Fatal(err)
	}
	stdin, err := s.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	s.Stdout = &out
	if err := s.Start(`stty size; tty; echo "term=$TERM tty=$SSH_TTY"; read -r _; stty size`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first output", func() bool { return strings.Contains(out.String(), "term=") })
	if err := s.WindowChange(50, 120); err != nil {
		t.Fatal(err)
	}
	// Requests are handled in order: once this one is answered, the
	// window-change before it has been applied.
	if _, err := s.SendRequest("sync@sshq", true, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(); err != nil {
		t.Fatal(err)
	}
	got := strings.ReplaceAll(out.String(), "\r\n", "\n")
	lines := strings.Split(got, "\n")
	if len(lines) < 5 || lines[0] != "40 100" || !strings.HasPrefix(lines[1], "/dev/pts/") ||
		lines[2] != "term=xterm-256color tty="+lines[1] || lines[4] != "50 120" {
		t.Errorf("pty session printed %q; want size 40 100, a /dev/pts tty, TERM, then 50 120 after window-change", got)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestAuthRefusesOtherKeys(t *testing.T) {
	t.Parallel()
	f := startServer(t, nil)
	other, _ := newSigner(t)
	_, err := ssh.Dial("tcp", f.srv.Addr(), &ssh.ClientConfig{
		User:            "demo",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(other), ssh.Password("x")},
		HostKeyCallback: ssh.FixedHostKey(f.hostKey),
		Timeout:         10 * time.Second,
	})
	if err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("an unknown key logged in, or failed oddly: %v", err)
	}
}
