package sshpool_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshq/sshq/sshpool"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// upperServer answers each line with the line in upper case, and after
// the client half-closes, with "bye\n": a protocol that needs both
// directions and the half-close to travel through the tunnel.
func upperServer(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						io.WriteString(c, "bye\n")
						return
					}
					io.WriteString(c, strings.ToUpper(line))
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestForwardTunnelsToTheNodesLoopback(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1})
	p := newPool(t, c.ConfigPath)
	port := upperServer(t)
	f, err := p.ListenForward("node1", "127.0.0.1:0", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- f.Serve(ctx, func(err error) { t.Errorf("connection failed: %v", err) }) }()
	if err := f.Check(ctxT(t, 20*time.Second)); err != nil {
		t.Fatalf("Check: %v", err)
	}

	// Several clients at once, each with its own conversation.
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", f.Addr().String())
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			fmt.Fprintf(conn, "client %d\nsecond line\n", i)
			conn.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(conn)
			if want := fmt.Sprintf("CLIENT %d\nSECOND LINE\nbye\n", i); string(got) != want || err != nil {
				t.Errorf("client %d got %q (%v), want %q", i, got, err, want)
			}
		}()
	}
	wg.Wait()

	// A client still connected when the forward stops is disconnected, and
	// Serve returns; the port is free again.
	conn, err := net.Dial("tcp", f.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "hold\n")
	if line, err := bufio.NewReader(conn).ReadString('\n'); line != "HOLD\n" {
		t.Fatalf("held connection: %q %v", line, err)
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve = %v, want nil after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		t.Errorf("held connection after stop: %v, want EOF", err)
	}
	ln, err := net.Listen("tcp", f.Addr().String())
	if err != nil {
		t.Errorf("the local port stayed taken after Serve returned: %v", err)
	} else {
		ln.Close()
	}
}

func TestForwardErrorsSayWhatIsWrong(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 2})
	c.Nodes[1].SSHDExtra = "AllowTcpForwarding no"
	if err := c.Nodes[1].Restart(); err != nil {
		t.Fatal(err)
	}
	p := newPool(t, c.ConfigPath)
	port := upperServer(t)
	remote := "127.0.0.1:" + strconv.Itoa(port)

	// A local port already taken fails before the node is asked.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, err = p.ListenForward("node1", taken.Addr().String(), remote)
	if !errors.Is(err, sshpool.ErrLocalPortInUse) || !strings.Contains(err.Error(), "already in use") || !strings.Contains(err.Error(), ":"+strconv.Itoa(port)) {
		t.Errorf("taken port: %v", err)
	}

	// Nothing listens on the node's port.
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	f, err := p.ListenForward("node1", "127.0.0.1:0", deadAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Check(ctxT(t, 20*time.Second)); !errors.Is(err, sshpool.ErrNothingListening) || !strings.Contains(err.Error(), deadAddr) {
		t.Errorf("nothing listening: %v", err)
	}
	// While served, a client of that port is closed and the reason reported.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, 1)
	go f.Serve(ctx, func(err error) { errs <- err })
	conn, err := net.Dial("tcp", f.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if n, _ := conn.Read(make([]byte, 1)); n != 0 {
		t.Error("read data from a connection that could not be tunnelled")
	}
	conn.Close()
	select {
	case err := <-errs:
		if !errors.Is(err, sshpool.ErrNothingListening) {
			t.Errorf("reported %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Error("the failed connection was not reported")
	}

	// A node whose sshd forbids forwarding.
	g, err := p.ListenForward("node2", "127.0.0.1:0", remote)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	err = g.Check(ctxT(t, 20*time.Second))
	if !errors.Is(err, sshpool.ErrForwardProhibited) || !strings.Contains(err.Error(), "AllowTcpForwarding") {
		t.Errorf("prohibited: %v", err)
	}
}
