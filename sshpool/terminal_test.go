package sshpool_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/sshq/sshq/sshpool"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// syncWriter is a screen the test can read while the session writes.
type syncWriter struct {
	ch chan string
	b  strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.ch <- string(p)
	return len(p), nil
}

// until reads the screen until it shows want.
func (w *syncWriter) until(t *testing.T, want string) string {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for !strings.Contains(w.b.String(), want) {
		select {
		case s := <-w.ch:
			w.b.WriteString(s)
		case <-deadline:
			t.Fatalf("the terminal never showed %q; it shows:\n%s", want, w.b.String())
		}
	}
	return w.b.String()
}

// Interactive gives the command a terminal of the size asked, follows
// resizes, echoes keys, and returns the command's exit status.
func TestInteractiveGivesATerminal(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1})
	p := newPool(t, c.ConfigPath)
	keys, typed := io.Pipe()
	screen := &syncWriter{ch: make(chan string, 1024)}
	resize := make(chan [2]int, 1)
	type result struct {
		code int
		err  error
	}
	res := make(chan result, 1)
	go func() {
		code, err := p.Node("node1").Interactive(ctxT(t, time.Minute), `[ -t 0 ] && echo "on-a-$TERM"; stty size; while read x; do [ "$x" = q ] && exit 3; stty size; done`,
			sshpool.Terminal{Term: "vt100", Width: 100, Height: 30, In: keys, Out: screen, Resize: resize})
		res <- result{code, err}
	}()
	screen.until(t, "on-a-vt100")
	screen.until(t, "30 100")
	resize <- [2]int{120, 50}
	// A resize and a key travel separately: type until the new size shows.
	for i := 0; !strings.Contains(screen.b.String(), "50 120"); i++ {
		if i > 200 {
			t.Fatalf("the resize never arrived:\n%s", screen.b.String())
		}
		typed.Write([]byte("\n"))
		select {
		case s := <-screen.ch:
			screen.b.WriteString(s)
		case <-time.After(100 * time.Millisecond):
		}
	}
	typed.Write([]byte("q\n"))
	select {
	case r := <-res:
		if r.err != nil || r.code != 3 {
			t.Fatalf("Interactive returned %d, %v; want the command's 3", r.code, r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Interactive did not return when the command exited")
	}
}
