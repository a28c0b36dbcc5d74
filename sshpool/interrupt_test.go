package sshpool_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/sshq/sshq/inventory"
	"github.com/sshq/sshq/sshpool"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// Ctrl-C while a node accepts TCP but has not answered the SSH handshake
// is the user's doing, not the node's: the error must wrap
// context.Canceled (sshq exits 130) and must not call the node
// unreachable.
func TestInterruptedHandshakeIsNotUnreachable(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		// The client speaks first: once its version line arrives, it is
		// in the handshake, waiting for the server's.
		buf := make([]byte, 4)
		if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "SSH-" {
			t.Errorf("client sent %q (%v), want its version line", buf, err)
		}
		cancel()
		<-t.Context().Done()
	}()
	if err := c.AddHost(fmt.Sprintf("Host silent\n  HostName 127.0.0.1\n  Port %d\n", l.Addr().(*net.TCPAddr).Port)); err != nil {
		t.Fatal(err)
	}
	_, err = newPool(t, c.ConfigPath).Get(ctx, "silent")
	if !errors.Is(err, context.Canceled) || errors.Is(err, sshpool.ErrUnreachable) || strings.Contains(err.Error(), "within") {
		t.Errorf("interrupted handshake: %v; want an error wrapping context.Canceled, not ErrUnreachable", err)
	}
}

// The same before the TCP connection is up.
func TestInterruptedConnectIsNotUnreachable(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1})
	cfg, err := inventory.Load(c.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	n, err := inventory.NewResolver(cfg).Resolve(t.Context(), "node1")
	if err != nil {
		t.Fatal(err)
	}
	p := sshpool.New(fixed{n})
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = p.Get(ctx, "node1")
	if !errors.Is(err, context.Canceled) || errors.Is(err, sshpool.ErrUnreachable) {
		t.Errorf("interrupted connect: %v; want an error wrapping context.Canceled, not ErrUnreachable", err)
	}
}

// fixed resolves every alias to one node, without `ssh -G`.
type fixed struct{ n inventory.Node }

func (f fixed) Resolve(context.Context, string) (inventory.Node, error) { return f.n, nil }
