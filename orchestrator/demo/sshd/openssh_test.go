package sshd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshq/sshq/inventory"
	"github.com/sshq/sshq/sshpool"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// clientConfig writes what a user's machine has (a key, known_hosts and an
// ssh config naming the server as host "node") and returns the config.
func clientConfig(t *testing.T, f *fixture) string {
	t.Helper()
	dir := t.TempDir()
	block, err := ssh.MarshalPrivateKey(f.clientKey, "")
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(key, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	known := filepath.Join(dir, "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(f.srv.Addr())}, f.hostKey)
	if err := os.WriteFile(known, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "config")
	err = os.WriteFile(config, []byte(fmt.Sprintf(`Host node
  HostName 127.0.0.1
  Port %d
  IdentityFile %s
  IdentitiesOnly yes
  UserKnownHostsFile %s
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  SendEnv LC_SSHQ_*
  LogLevel ERROR
`, f.srv.Port(), key, known)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	return config
}

// openSSHClient returns a function running the system ssh (or sftp) with
// clientConfig's config.
func openSSHClient(t *testing.T, f *fixture) func(prog string, args ...string) *exec.Cmd {
	config := clientConfig(t, f)
	return func(prog string, args ...string) *exec.Cmd {
		cmd := exec.Command(prog, append([]string{"-F", config}, args...)...)
		cmd.Env = append(os.Environ(), "LC_SSHQ_SENT=yes", "TERM=vt100")
		return cmd
	}
}

func TestOpenSSHClientCompatibility(t *testing.T) {
	t.Parallel()
	sshBin, err := exec.LookPath("ssh")
	if err != nil {
		skipUnlessCI(t, "no OpenSSH client (ssh) on PATH; install openssh-client to run this test")
	}
	f := startServer(t, nil)
	client := openSSHClient(t, f)

	t.Run("exec", func(t *testing.T) {
		t.Parallel()
		cmd := client(sshBin, "node", `echo "out $LC_SSHQ_SENT"; echo err >&2; exit 5`)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 5 || out.String() != "out yes\n" || errb.String() != "err\n" {
			t.Errorf("ssh node cmd: exit %v, stdout %q, stderr %q; want 5, %q, %q", err, out.String(), errb.String(), "out yes\n", "err\n")
		}
	})
	t.Run("stdin", func(t *testing.T) {
		t.Parallel()
		data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
		cmd := client(sshBin, "node", "sha256sum")
		cmd.Stdin = bytes.NewReader(data)
		out, err := cmd.Output()
		want := fmt.Sprintf("%x  -\n", sha256.Sum256(data))
		if err != nil || string(out) != want {
			t.Errorf("ssh node sha256sum with 1 MiB stdin: %q, %v; want %q", out, err, want)
		}
	})
	t.Run("tty", func(t *testing.T) {
		t.Parallel()
		// -tt: a pty even though this test's stdin is not a terminal.
		cmd := client(sshBin, "-tt", "node", `test -t 0 && test -t 1 && echo "tty $TERM"; exit 4`)
		out, err := cmd.Output()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 4 || strings.TrimSpace(string(out)) != "tty vt100" {
			t.Errorf("ssh -tt node: exit %v, output %q; want 4 and a terminal of type vt100", err, out)
		}
	})
	t.Run("tmux attach", func(t *testing.T) {
		t.Parallel()
		tmux, err := exec.LookPath("tmux")
		if err != nil {
			skipUnlessCI(t, "no tmux on PATH; install tmux to run this test")
		}
		// What `sshq attach` does: a job runs in a detached tmux session
		// on the node, and ssh -t attaches to it.
		c := f.dial(t)
		sock := "attach-test"
		if _, errs, code, _ := run(t, c, tmux+" -L "+sock+" new-session -d -s job 'echo hello-from-the-job; exec sleep 1000'", nil); code != 0 {
			t.Fatalf("starting tmux on the node: %s", errs)
		}
		t.Cleanup(func() { run(t, c, tmux+" -L "+sock+" kill-server", nil) })
		cmd := client(sshBin, "-tt", "node", tmux+" -L "+sock+" attach -t job")
		var out syncBuffer
		cmd.Stdout = &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the attached client shows the job's output", func() bool {
			return strings.Contains(out.String(), "hello-from-the-job")
		})
		if _, errs, code, _ := run(t, c, tmux+" -L "+sock+" kill-session -t job", nil); code != 0 {
			t.Fatalf("killing the tmux session: %s", errs)
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("ssh -tt node tmux attach ended with %v after the session was killed", err)
		}
	})
	t.Run("sftp", func(t *testing.T) {
		t.Parallel()
		sftpBin, err := exec.LookPath("sftp")
		if err != nil {
			skipUnlessCI(t, "no OpenSSH sftp client on PATH; install openssh-client to run this test")
		}
		local := filepath.Join(t.TempDir(), "local.txt")
		if err := os.WriteFile(local, []byte("payload\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		// OpenSSH's own sftp client: its symlink argument order is the
		// one every server must follow.
		batch := fmt.Sprintf("mkdir up\nput %s up/.tmp\nrename up/.tmp up/file\nln -s file up/link\ndf .\n", local)
		cmd := client(sftpBin, "-b", "-", "node")
		cmd.Stdin = strings.NewReader(batch)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sftp batch failed: %v\n%s", err, out)
		}
		home := f.cfg.Home
		if b, err := os.ReadFile(filepath.Join(home, "up/file")); err != nil || string(b) != "payload\n" {
			t.Errorf("uploaded file: %q, %v", b, err)
		}
		if target, err := os.Readlink(filepath.Join(home, "up/link")); err != nil || target != "file" {
			t.Errorf("ln -s made a link to %q (%v), want the relative target %q", target, err, "file")
		}
	})
}

// sshq's own client, as the demo uses it: a pool resolved from ssh config.
func TestSSHPoolAgainstServer(t *testing.T) {
	t.Parallel()
	f := startServer(t, nil)
	cfg, err := inventory.Load(clientConfig(t, f))
	if err != nil {
		t.Fatal(err)
	}
	p := sshpool.New(inventory.NewResolver(cfg))
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	res, err := p.Run(ctx, "node", "echo out; echo err >&2; exit 3", nil)
	if err != nil || res.ExitCode != 3 || string(res.Stdout) != "out\n" || string(res.Stderr) != "err\n" {
		t.Fatalf("Run: %+v, %v", res, err)
	}
	// More operations than MaxSessions at once: the pool's channel cap
	// and the server's limit must agree.
	const n = 30
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := p.Run(ctx, "node", fmt.Sprintf("echo %d", i), nil)
			if err != nil {
				errs <- err
			} else if strings.TrimSpace(string(res.Stdout)) != fmt.Sprint(i) {
				errs <- fmt.Errorf("op %d printed %q", i, res.Stdout)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	c, err := p.Get(ctx, "node")
	if err != nil {
		t.Fatal(err)
	}
	sc, release, err := c.SFTP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	w, err := sc.Create("pooled")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("via sshpool")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(f.cfg.Home, "pooled")); err != nil || string(b) != "via sshpool" {
		t.Errorf("file written through the pool's SFTP: %q, %v", b, err)
	}
}

// skipUnlessCI skips a test whose tool is missing, except in CI, where
// nothing may be skipped.
func skipUnlessCI(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (CI is set: nothing may be skipped)")
	}
	t.Skip(msg)
}
