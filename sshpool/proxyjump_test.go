package sshpool_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sshq/sshq/sshpool"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// silentListener accepts TCP connections and never says a word, like a
// host whose kernel still answers while its sshd is wedged.
func silentListener(t *testing.T) (string, int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	t.Cleanup(func() { l.Close() })
	a := l.Addr().(*net.TCPAddr)
	return a.IP.String(), a.Port
}

// A stream through a jump host is an SSH channel, which has no deadlines:
// the handshake deadline must hold anyway.
func TestHungTargetBehindProxyJumpFailsWithinTimeout(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1})
	ip, port := silentListener(t)
	c.AddHost(fmt.Sprintf("Host hung\n  HostName %s\n  Port %d\n  ProxyJump node1\n  ConnectTimeout 2\n", ip, port))
	p := newPool(t, c.ConfigPath)
	// A minute is far beyond ConnectTimeout 2: reaching it means the dial
	// waited for the caller's deadline instead of its own.
	ctx := ctxT(t, time.Minute)
	_, err := p.Get(ctx, "hung")
	if ctx.Err() != nil {
		t.Fatalf("the dial ran into the test's one-minute deadline: ConnectTimeout was not honoured: %v", err)
	}
	if !errors.Is(err, sshpool.ErrUnreachable) || !strings.Contains(err.Error(), "handshake") {
		t.Fatalf("got %v, want an unreachable error blaming the handshake", err)
	}
	// The jump host itself is fine and stays usable.
	if _, err := p.Run(ctxT(t, time.Minute), "node1", "true", nil); err != nil {
		t.Errorf("jump host after the failed dial: %v", err)
	}
}

func TestProxyJumpLoopIsRefused(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1})
	n := c.Nodes[0]
	c.AddHost(fmt.Sprintf("Host loopa\n  HostName %s\n  Port %d\n  ProxyJump loopb\nHost loopb\n  HostName %s\n  Port %d\n  ProxyJump loopa\nHost self\n  HostName %s\n  Port %d\n  ProxyJump self\n",
		n.Addr, n.Port, n.Addr, n.Port, n.Addr, n.Port))
	p := newPool(t, c.ConfigPath)
	_, err := p.Get(ctxT(t, time.Minute), "loopa")
	if err == nil || !strings.Contains(err.Error(), "ProxyJump loop") || !strings.Contains(err.Error(), "loopa") {
		t.Fatalf("loop: %v", err)
	}
	// A host that jumps through itself is what `Host *` + ProxyJump without
	// an exclusion does to the jump host; OpenSSH connects directly.
	if _, err := p.Run(ctxT(t, time.Minute), "self", "true", nil); err != nil {
		t.Errorf("self-jump: %v", err)
	}
}

func TestProxyCommandIsRefusedClearly(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1})
	c.AddHost("Host viacmd\n  HostName 10.1.2.3\n  ProxyCommand ssh -W %h:%p bastion\n")
	_, err := newPool(t, c.ConfigPath).Get(ctxT(t, time.Minute), "viacmd")
	if err == nil || !strings.Contains(err.Error(), "ProxyCommand") || !strings.Contains(err.Error(), "ProxyJump") {
		t.Fatalf("got %v", err)
	}
}

// Cancelling a command mid-output must not race with the output copies
// (run with -race): the output is read as soon as Stream returns.
func TestCancelledRunReturnsCleanly(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1})
	p := newPool(t, c.ConfigPath)
	for i := 0; i < 3; i++ {
		// Connected first: the cancel must hit a running command, not the
		// handshake.
		cl, err := p.Get(ctxT(t, time.Minute), "node1")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		out := &cancelOnWrite{cancel: cancel}
		_, err = cl.Stream(ctx, "yes", nil, out, io.Discard)
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("run %d: %v", i, err)
		}
		if out.b.Len() == 0 {
			t.Fatalf("run %d: cancelled before any output", i)
		}
	}
	if _, err := p.Run(ctxT(t, time.Minute), "node1", "true", nil); err != nil {
		t.Errorf("pool after cancelled runs: %v", err)
	}
}

// cancelOnWrite cancels its context once output has arrived. It has no
// lock on purpose: a write after Stream returned races with the test's
// read, which -race reports.
type cancelOnWrite struct {
	b      bytes.Buffer
	cancel context.CancelFunc
}

func (w *cancelOnWrite) Write(p []byte) (int, error) {
	w.b.Write(p)
	w.cancel()
	return len(p), nil
}
