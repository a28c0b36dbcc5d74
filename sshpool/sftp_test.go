package sshpool_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sshq/sshq/sshpool"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// greeting is a ~/.bashrc that greets every shell, interactive or not, on
// stdout and on stderr, the last line without its newline.
const greeting = "echo 'Welcome to the cluster! Quota: 3.2T of 5T used'\necho 'motd on stderr' >&2\nprintf 'no newline at the end'\n"

// sftpRoundTrip reads hello.txt by a relative path (which starts in the
// node's home, as `~` does in its shell) and writes name, checking what
// reached the disk.
func sftpRoundTrip(ctx context.Context, cl *sshpool.Client, home, name string) error {
	sc, release, err := cl.SFTP(ctx)
	if err != nil {
		return err
	}
	defer release()
	f, err := sc.Open("hello.txt")
	if err != nil {
		return err
	}
	b, err := io.ReadAll(f)
	f.Close()
	if err != nil || string(b) != "hi" {
		return fmt.Errorf("read hello.txt: %q %v", b, err)
	}
	w, err := sc.Create(name)
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte("payload of " + name)); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	if b, err := os.ReadFile(filepath.Join(home, name)); err != nil || string(b) != "payload of "+name {
		return fmt.Errorf("%s on the node: %q %v", name, b, err)
	}
	return nil
}

// A ~/.bashrc that greets non-interactive shells puts its greeting before
// the SFTP protocol (sshd starts the subsystem through the login shell):
// SFTP must work all the same, session after session, more of them than
// sshd allows channels on one connection, so none may be left open.
func TestSFTPThroughShellGreeting(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1})
	home := c.Nodes[0].Home
	os.WriteFile(filepath.Join(home, ".bashrc"), []byte(greeting), 0o644)
	os.WriteFile(filepath.Join(home, "hello.txt"), []byte("hi"), 0o644)
	p := newPool(t, c.ConfigPath)
	ctx := ctxT(t, 2*time.Minute)
	cl, err := p.Get(ctx, "node1")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		if err := sftpRoundTrip(ctx, cl, home, fmt.Sprintf("seq-%d.txt", i)); err != nil {
			t.Fatalf("SFTP session %d: %v", i+1, err)
		}
	}
	errs := make([]error, 12)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = sftpRoundTrip(ctx, cl, home, fmt.Sprintf("par-%d.txt", i))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("SFTP session %d of 12 at once: %v", i+1, err)
		}
	}

	// Commands whose output sshq parses get only what they printed.
	res, err := cl.RunBash(ctx, "echo out; echo err >&2; exit 3", nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Stdout) != "out\n" || string(res.Stderr) != "err\n" || res.ExitCode != 3 {
		t.Errorf("RunBash through the greeting: stdout %q stderr %q exit %d, want \"out\\n\" \"err\\n\" 3", res.Stdout, res.Stderr, res.ExitCode)
	}
}

// Without the sftp subsystem, or with a broken one, SFTP runs the node's
// sftp-server itself, starting in the node's home as the subsystem would.
func TestSFTPWithoutAWorkingSubsystem(t *testing.T) {
	t.Parallel()
	for _, sub := range []string{"none", "/bin/false"} {
		t.Run(sub, func(t *testing.T) {
			t.Parallel()
			c := sshtest.Start(t, sshtest.Options{Nodes: 1, SFTPSubsystem: sub})
			home := c.Nodes[0].Home
			os.WriteFile(filepath.Join(home, "hello.txt"), []byte("hi"), 0o644)
			p := newPool(t, c.ConfigPath)
			ctx := ctxT(t, time.Minute)
			cl, err := p.Get(ctx, "node1")
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"first.txt", "second.txt"} {
				if err := sftpRoundTrip(ctx, cl, home, name); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
