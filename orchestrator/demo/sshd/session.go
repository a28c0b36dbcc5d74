package sshd

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// ptyDrain is how long output is still read from a pty after its command
// exited: a background process may hold the terminal open forever, and the
// kernel gives no EOF until every holder is gone.
const ptyDrain = time.Second

// session is one "session" channel: at most one command or subsystem.
type session struct {
	srv     *Server
	ch      ssh.Channel
	remote  string
	release func() // frees the MaxSessions slot; called through releaseOnce

	releaseOnce sync.Once
	finished    chan struct{} // closed when the command/subsystem ended; nil until started

	mu       sync.Mutex
	env      map[string]string // from "env" requests
	pty      *ptyRequest       // from "pty-req"
	term     *os.File          // pty master while the command runs
	outputs  []*os.File        // read ends of stdout/stderr (or the pty master)
	pid      int               // process group id; 0 before start
	exited   bool              // the process was reaped: pid may be reused
	closing  bool              // we are closing the channel ourselves
	started  bool
	winsize  [2]uint32 // cols, rows from the latest window-change
	hasWinsz bool
}

type ptyRequest struct {
	Term    string
	Columns uint32
	Rows    uint32
	Width   uint32
	Height  uint32
	Modes   string
}

type windowChange struct {
	Columns uint32
	Rows    uint32
	Width   uint32
	Height  uint32
}

func (ss *session) freeSlot() { ss.releaseOnce.Do(ss.release) }

func (ss *session) serve(reqs <-chan *ssh.Request) {
	for req := range reqs {
		ok := ss.handle(req)
		if req.WantReply {
			req.Reply(ok, nil)
		}
	}
	// The client closed the channel, or the connection dropped.
	ss.mu.Lock()
	hangup := ss.pid != 0 && !ss.exited && !ss.closing
	finished := ss.finished
	ss.mu.Unlock()
	if hangup {
		// What a process sees when its terminal goes away; sshd's
		// pty sessions get the same from the kernel.
		ss.killGroup(syscall.SIGHUP)
	}
	if finished != nil {
		<-finished
	}
	ss.freeSlot()
}

func (ss *session) handle(req *ssh.Request) bool {
	switch req.Type {
	case "env":
		var p struct{ Name, Value string }
		if ssh.Unmarshal(req.Payload, &p) != nil || p.Name == "" || strings.Contains(p.Name, "=") {
			return false
		}
		ss.mu.Lock()
		defer ss.mu.Unlock()
		if ss.started {
			return false
		}
		if ss.env == nil {
			ss.env = map[string]string{}
		}
		ss.env[p.Name] = p.Value
		return true
	case "pty-req":
		if !ptySupported {
			return false
		}
		var p ptyRequest
		if ssh.Unmarshal(req.Payload, &p) != nil {
			return false
		}
		ss.mu.Lock()
		defer ss.mu.Unlock()
		if ss.started || ss.pty != nil {
			return false
		}
		ss.pty = &p
		return true
	case "window-change":
		var p windowChange
		if ssh.Unmarshal(req.Payload, &p) != nil {
			return false
		}
		ss.mu.Lock()
		defer ss.mu.Unlock()
		if ss.pty == nil {
			return false
		}
		ss.winsize, ss.hasWinsz = [2]uint32{p.Columns, p.Rows}, true
		if ss.term != nil {
			return setWinsize(ss.term, p.Columns, p.Rows) == nil
		}
		return true
	case "exec":
		var p struct{ Command string }
		if ssh.Unmarshal(req.Payload, &p) != nil {
			return false
		}
		return ss.start([]string{"bash", "-c", p.Command})
	case "shell":
		return ss.start([]string{"bash"})
	case "subsystem":
		var p struct{ Name string }
		if ssh.Unmarshal(req.Payload, &p) != nil || p.Name != "sftp" {
			return false
		}
		return ss.startSFTP()
	case "signal":
		var p struct{ Signal string }
		if ssh.Unmarshal(req.Payload, &p) != nil {
			return false
		}
		sig, ok := signals[p.Signal]
		if !ok {
			return false
		}
		return ss.killGroup(sig)
	}
	// auth-agent-req@openssh.com, x11-req, eow@openssh.com, ...
	return false
}

// environ is the command's environment: the node's, the client's "env"
// requests on top (AcceptEnv *), and the terminal's.
func (ss *session) environ() []string {
	env := make([]string, 0, len(ss.srv.env)+len(ss.env)+2)
	overridden := func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		_, ok := ss.env[k]
		if ss.pty != nil && (k == "TERM" || k == "SSH_TTY") {
			return true
		}
		return ok
	}
	for _, kv := range ss.srv.env {
		if !overridden(kv) {
			env = append(env, kv)
		}
	}
	for k, v := range ss.env {
		if ss.pty != nil && (k == "TERM" || k == "SSH_TTY") {
			continue
		}
		env = append(env, k+"="+v)
	}
	if ss.pty != nil && ss.pty.Term != "" {
		env = append(env, "TERM="+ss.pty.Term)
	}
	sort.Strings(env)
	return env
}

// start runs argv with /bin/bash in its own process group (or, with a pty,
// its own session) and reports whether it started.
func (ss *session) start(argv []string) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.started {
		return false
	}
	ss.started = true
	cmd := &exec.Cmd{Path: "/bin/bash", Args: argv, Env: ss.environ(), Dir: ss.srv.cfg.Home}
	var beforeWait, afterWait func()
	var err error
	if ss.pty != nil {
		beforeWait, afterWait, err = ss.startPTY(cmd)
	} else {
		beforeWait, afterWait, err = ss.startPipes(cmd)
	}
	if err != nil {
		ss.srv.cfg.Logf("sshd %s: starting %q for %s: %v", ss.srv.Addr(), argv, ss.remote, err)
		ss.started = false
		return false
	}
	ss.pid = cmd.Process.Pid
	ss.finished = make(chan struct{})
	go func() {
		defer close(ss.finished)
		beforeWait()
		err := cmd.Wait()
		ss.mu.Lock()
		ss.exited = true
		ss.mu.Unlock()
		ss.srv.untrack(ss)
		afterWait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			ss.finish(nil, &exitSignal{Signal: signalName(ws.Signal()), CoreDumped: ws.CoreDump()})
			return
		}
		if err != nil && cmd.ProcessState == nil {
			ss.finish(nil, &exitSignal{Signal: "KILL", Error: err.Error()})
			return
		}
		code := uint32(cmd.ProcessState.ExitCode())
		ss.finish(&code, nil)
	}()
	return true
}

// startPipes wires the command to three pipes. Not exec's own copying:
// Close must be able to cut the output short, and a client that never
// closes stdin must not keep the session waiting.
func (ss *session) startPipes(cmd *exec.Cmd) (beforeWait, afterWait func(), err error) {
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	inR, inW, err := pipe()
	if err != nil {
		return nil, nil, err
	}
	outR, outW, err := pipe()
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	errR, errW, err := pipe()
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := ss.srv.startTracked(ss, cmd.Start); err != nil {
		closeAll()
		return nil, nil, err
	}
	inR.Close()
	outW.Close()
	errW.Close()
	ss.outputs = []*os.File{outR, errR}

	go func() {
		// Ends at the client's EOF, or when the channel closes.
		io.Copy(inW, ss.ch)
		inW.Close()
	}()
	var out sync.WaitGroup
	out.Add(2)
	go ss.copyOut(&out, ss.ch, outR)
	go ss.copyOut(&out, ss.ch.Stderr(), errR)
	// Like sshd, all output is delivered before the exit status: the
	// outputs must reach EOF, whoever holds the pipes.
	return out.Wait, func() {}, nil
}

func (ss *session) copyOut(wg *sync.WaitGroup, w io.Writer, r *os.File) {
	defer wg.Done()
	io.Copy(w, r)
	// The reader goes away when the client does: the command then gets
	// EPIPE instead of blocking on a full pipe.
	r.Close()
}

func (ss *session) startPTY(cmd *exec.Cmd) (beforeWait, afterWait func(), err error) {
	master, slave, err := openPTY()
	if err != nil {
		return nil, nil, err
	}
	cols, rows := ss.pty.Columns, ss.pty.Rows
	if ss.hasWinsz {
		cols, rows = ss.winsize[0], ss.winsize[1]
	}
	if err := setWinsize(master, cols, rows); err != nil {
		master.Close()
		slave.Close()
		return nil, nil, err
	}
	cmd.Env = append(cmd.Env, "SSH_TTY="+slave.Name())
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	// Its own session with the pty as controlling terminal: job control,
	// SIGWINCH and tmux attach work as under sshd.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := ss.srv.startTracked(ss, cmd.Start); err != nil {
		master.Close()
		slave.Close()
		return nil, nil, err
	}
	slave.Close()
	ss.term = master
	ss.outputs = []*os.File{master}
	go io.Copy(master, ss.ch)
	copied := make(chan struct{})
	go func() {
		// Ends with EIO once no process holds the pty any more.
		io.Copy(ss.ch, master)
		close(copied)
	}()
	after := func() {
		// A background process may hold the pty forever: what the
		// command wrote is delivered, then the terminal is closed.
		select {
		case <-copied:
		case <-time.After(ptyDrain):
		}
		ss.mu.Lock()
		ss.term = nil
		ss.mu.Unlock()
		master.Close()
	}
	return func() {}, after, nil
}

type exitSignal struct {
	Signal     string
	CoreDumped bool
	Error      string
	Lang       string
}

// finish reports how the command ended, then EOF and close, as sshd does.
func (ss *session) finish(code *uint32, sig *exitSignal) {
	ss.mu.Lock()
	ss.closing = true
	ss.mu.Unlock()
	if sig != nil {
		ss.ch.SendRequest("exit-signal", false, ssh.Marshal(sig))
	} else {
		ss.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{*code}))
	}
	ss.ch.CloseWrite()
	// The slot is free before the client can see the close, so a client
	// opening its next session right after this one never hits the limit.
	ss.freeSlot()
	ss.ch.Close()
}

// killGroup signals the command's whole process group; false when there
// is none (not started, or already reaped).
func (ss *session) killGroup(sig syscall.Signal) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.pid == 0 || ss.exited {
		return false
	}
	err := syscall.Kill(-ss.pid, sig)
	return err == nil || errors.Is(err, syscall.ESRCH)
}

// abort is Close's: kill the group and stop waiting for its output.
func (ss *session) abort() {
	ss.killGroup(syscall.SIGKILL)
	ss.mu.Lock()
	for _, f := range ss.outputs {
		f.Close()
	}
	ss.mu.Unlock()
}

func (ss *session) startSFTP() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.started {
		return false
	}
	ss.started = true
	ss.finished = make(chan struct{})
	home := ss.srv.cfg.Home
	srv := sftp.NewRequestServer(ss.ch, fsHandlers(home), sftp.WithStartDirectory(home))
	go func() {
		defer close(ss.finished)
		err := srv.Serve()
		if err != nil && !errors.Is(err, io.EOF) {
			ss.srv.cfg.Logf("sshd %s: sftp for %s: %v", ss.srv.Addr(), ss.remote, err)
		}
		code := uint32(0)
		ss.finish(&code, nil)
		srv.Close()
	}()
	return true
}
