package sshpool_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshq/sshq/sshpool"
	"github.com/sshq/sshq/sshpool/sshtest"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// withHostOption writes a config for node1 with one extra option.
func withHostOption(t *testing.T, c *sshtest.Cluster, opt string) string {
	t.Helper()
	n := c.Nodes[0]
	cfg := fmt.Sprintf("Host node1\n  HostName %s\n  Port %d\n  %s\nHost *\n  User %s\n  IdentityFile %s\n  IdentitiesOnly yes\n  UserKnownHostsFile %s\n  ConnectTimeout 15\n",
		n.Addr, n.Port, opt, c.User, c.KeyPath, c.KnownHosts)
	p := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUnknownHostUnderEachStrictHostKeyChecking(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		value    string
		connects bool
		hashed   bool
	}{
		{"StrictHostKeyChecking yes", false, false},
		{"StrictHostKeyChecking ask", false, false},
		{"StrictHostKeyChecking accept-new", true, false},
		{"StrictHostKeyChecking accept-new\n  HashKnownHosts yes", true, true},
		{"StrictHostKeyChecking no", true, false},
	} {
		t.Run(strings.Fields(tc.value)[1]+map[bool]string{true: "-hashed"}[tc.hashed], func(t *testing.T) {
			t.Parallel()
			c := sshtest.Start(t, sshtest.Options{Nodes: 1, UnknownHosts: true})
			p := newPool(t, withHostOption(t, c, tc.value))
			_, err := p.Run(ctxT(t, time.Minute), "node1", "true", nil)
			kh, _ := os.ReadFile(c.KnownHosts)
			if !tc.connects {
				if !errors.Is(err, sshpool.ErrHostKeyUnknown) {
					t.Fatalf("got %v, want ErrHostKeyUnknown", err)
				}
				for _, want := range []string{"ssh-keyscan -p", "SHA256:", c.KnownHosts} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error does not tell the fix (%q missing): %v", want, err)
					}
				}
				if len(kh) != 0 {
					t.Errorf("known_hosts changed although the host was refused: %q", kh)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			line := strings.TrimSpace(string(kh))
			if strings.Count(line, "\n") != 0 || line == "" {
				t.Fatalf("want exactly one recorded key, got %q", kh)
			}
			if tc.hashed != strings.HasPrefix(line, "|1|") {
				t.Errorf("hashed=%v but line is %q", tc.hashed, line)
			}
			if !tc.hashed && !strings.HasPrefix(line, fmt.Sprintf("[%s]:%d ", c.Nodes[0].Addr, c.Nodes[0].Port)) {
				t.Errorf("recorded under the wrong name: %q", line)
			}
			// OpenSSH must accept what we wrote.
			out, err := runCmd(t, "ssh", "-F", withHostOption(t, c, "StrictHostKeyChecking yes"), "node1", "echo ok")
			if err != nil || strings.TrimSpace(out) != "ok" {
				t.Errorf("OpenSSH rejects the recorded key: %v %s", err, out)
			}
		})
	}
}

func TestChangedHostKeyIsRefusedLoudly(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1, UnknownHosts: true})
	n := c.Nodes[0]
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	s, _ := ssh.NewSignerFromKey(other)
	line := fmt.Sprintf("# a comment\n[%s]:%d %s", n.Addr, n.Port, ssh.MarshalAuthorizedKey(s.PublicKey()))
	os.WriteFile(c.KnownHosts, []byte(line), 0o600)
	for _, opt := range []string{"StrictHostKeyChecking no", "StrictHostKeyChecking accept-new"} {
		p := newPool(t, withHostOption(t, c, opt))
		_, err := p.Run(ctxT(t, time.Minute), "node1", "true", nil)
		if !errors.Is(err, sshpool.ErrHostKeyChanged) {
			t.Fatalf("%s: got %v, want ErrHostKeyChanged", opt, err)
		}
		if !strings.Contains(err.Error(), c.KnownHosts+":2") || !strings.Contains(err.Error(), "ssh-keygen -R") {
			t.Errorf("error must name the known_hosts line and the fix: %v", err)
		}
	}
}

// x/crypto prefers ecdsa over ed25519; a server with both keys and a
// known_hosts with only the ed25519 one must still verify.
func TestKnownHostsWithOnlyEd25519(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1, HostKeyTypes: []string{"ecdsa", "ed25519"}, UnknownHosts: true})
	n := c.Nodes[0]
	var ed ssh.PublicKey
	for _, k := range n.HostKeys {
		if k.PublicKey().Type() == ssh.KeyAlgoED25519 {
			ed = k.PublicKey()
		}
	}
	os.WriteFile(c.KnownHosts, []byte(fmt.Sprintf("[%s]:%d %s", n.Addr, n.Port, ssh.MarshalAuthorizedKey(ed))), 0o600)
	p := newPool(t, withHostOption(t, c, "StrictHostKeyChecking yes"))
	if _, err := p.Run(ctxT(t, time.Minute), "node1", "true", nil); err != nil {
		t.Fatal(err)
	}
}

func TestAgentAuthAndEncryptedKeyAdvice(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1})
	n := c.Nodes[0]
	// Re-encrypt the client key with a passphrase.
	raw, _ := os.ReadFile(c.KeyPath)
	priv, err := ssh.ParseRawPrivateKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	enc := filepath.Join(dir, "id_enc")
	blk, _ := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("secret"))
	os.WriteFile(enc, pem.EncodeToMemory(blk), 0o600)
	cfg := fmt.Sprintf("Host node1\n  HostName %s\n  Port %d\n  User %s\n  IdentityFile %s\n  UserKnownHostsFile %s\n  IdentityAgent %s\n",
		n.Addr, n.Port, c.User, enc, c.KnownHosts, filepath.Join(dir, "agent.sock"))
	cfgPath := filepath.Join(dir, "config")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)

	// No agent listening: the error must say ssh-add.
	_, err = newPool(t, cfgPath).Run(ctxT(t, time.Minute), "node1", "true", nil)
	if !errors.Is(err, sshpool.ErrAuth) || !strings.Contains(err.Error(), "ssh-add "+enc) {
		t.Fatalf("want ErrAuth advising ssh-add, got %v", err)
	}

	// An agent holding the key: auth succeeds without the passphrase.
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: priv}); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(dir, "agent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go agent.ServeAgent(keyring, conn)
		}
	}()
	res, err := newPool(t, cfgPath).Run(ctxT(t, time.Minute), "node1", "echo agent", nil)
	if err != nil || string(res.Stdout) != "agent\n" {
		t.Fatalf("agent auth: %q %v", res.Stdout, err)
	}
}

func TestWrongKeyIsAuthError(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1})
	n := c.Nodes[0]
	dir := t.TempDir()
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	blk, _ := ssh.MarshalPrivateKey(other, "")
	os.WriteFile(filepath.Join(dir, "id"), pem.EncodeToMemory(blk), 0o600)
	cfg := fmt.Sprintf("Host node1\n  HostName %s\n  Port %d\n  User %s\n  IdentityFile %s\n  IdentitiesOnly yes\n  IdentityAgent none\n  UserKnownHostsFile %s\n",
		n.Addr, n.Port, c.User, filepath.Join(dir, "id"), c.KnownHosts)
	os.WriteFile(filepath.Join(dir, "config"), []byte(cfg), 0o600)
	_, err := newPool(t, filepath.Join(dir, "config")).Run(ctxT(t, time.Minute), "node1", "true", nil)
	if !errors.Is(err, sshpool.ErrAuth) || sshpool.Retryable(err) {
		t.Fatalf("want a fatal ErrAuth, got %v", err)
	}
}

func TestProxyJumpChainOfTwoHops(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Names: []string{"jump1", "jump2", "target"}})
	tg := c.Nodes[2]
	if err := c.AddHost(fmt.Sprintf("Host behind\n  HostName %s\n  Port %d\n  ProxyJump jump1,jump2\n", tg.Addr, tg.Port)); err != nil {
		t.Fatal(err)
	}
	p := newPool(t, c.ConfigPath)
	res, err := p.Run(ctxT(t, time.Minute), "behind", "echo $HOME", nil)
	if err != nil || strings.TrimSpace(string(res.Stdout)) != tg.Home {
		t.Fatalf("through two hops: %q %v", res.Stdout, err)
	}
	// Proof that the traffic really crosses jump2: forbid forwarding there
	// and the chain must fail.
	c.Nodes[1].SSHDExtra = "AllowTcpForwarding no"
	if err := c.Nodes[1].Restart(); err != nil {
		t.Fatal(err)
	}
	c.Trust(c.Nodes[1]) // the port may have changed
	c.WriteConfig()
	c.AddHost("") // rewrite with the extra block kept
	_, err = newPool(t, c.ConfigPath).Run(ctxT(t, time.Minute), "behind", "true", nil)
	if err == nil {
		t.Fatal("chain still works with forwarding disabled on jump2: the hop is bypassed")
	}
}

func runCmd(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
