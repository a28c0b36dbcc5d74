package sshpool_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshq/sshq/sshpool"
	"github.com/sshq/sshq/sshpool/sshtest"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// nodeConfig writes a config for node1 of c: lines first (ssh_config keeps
// the first value), then defaults that keep the test off the user's agent
// and keys.
func nodeConfig(t *testing.T, c *sshtest.Cluster, lines ...string) string {
	t.Helper()
	n := c.Nodes[0]
	var b strings.Builder
	fmt.Fprintf(&b, "Host node1\n  HostName %s\n  Port %d\n", n.Addr, n.Port)
	for _, l := range lines {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	fmt.Fprintf(&b, "  User %s\n  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n  IdentityAgent none\n  ConnectTimeout 15\n  BatchMode yes\n",
		c.User, c.KnownHosts)
	p := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func signerOf(t *testing.T, k any) ssh.Signer {
	t.Helper()
	s, err := ssh.NewSignerFromKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func writePrivate(t *testing.T, path string, k any) {
	t.Helper()
	blk, err := ssh.MarshalPrivateKey(k, "")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, pem.EncodeToMemory(blk))
}

// certify signs key with ca as ssh-keygen -s does.
func certify(t *testing.T, ca ssh.Signer, key ssh.PublicKey, typ uint32, principals ...string) *ssh.Certificate {
	t.Helper()
	cert := &ssh.Certificate{Key: key, Serial: 1, CertType: typ, KeyId: "sshq-test",
		ValidPrincipals: principals, ValidBefore: ssh.CertTimeInfinity}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return cert
}

// serveAgent serves a on a fresh unix socket until the test ends.
func serveAgent(t *testing.T, a agent.Agent) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sshq-agent")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); os.RemoveAll(dir) })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = agent.ServeAgent(a, conn)
			}()
		}
	}()
	return sock
}

func keyring(t *testing.T, keys ...any) agent.Agent {
	t.Helper()
	kr := agent.NewKeyring()
	for _, k := range keys {
		if err := kr.Add(agent.AddedKey{PrivateKey: k}); err != nil {
			t.Fatal(err)
		}
	}
	return kr
}

func clientKey(t *testing.T, c *sshtest.Cluster) any {
	t.Helper()
	raw, err := os.ReadFile(c.KeyPath)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.ParseRawPrivateKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// certifyHost gives node1 a host certificate for its (only) host key,
// signed by ca with its address as principal, and restarts its sshd.
func certifyHost(t *testing.T, n *sshtest.Node, ca ssh.Signer) {
	t.Helper()
	cert := certify(t, ca, n.HostKeys[0].PublicKey(), ssh.HostCert, n.Addr)
	p := filepath.Join(n.Dir, "host-cert.pub")
	writeFile(t, p, ssh.MarshalAuthorizedKey(cert))
	n.SSHDExtra = "HostCertificate " + p
	if err := n.Restart(); err != nil {
		t.Fatal(err)
	}
}

// A host certificate that no @cert-authority line vouches for is checked
// (and, under accept-new, recorded) as the plain key it certifies, as
// OpenSSH does; a certificate in known_hosts would match nothing later.
func TestHostCertificateWithoutCAIsTreatedAsPlainKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		existing string // known_hosts before the first dial; "-" for no file
	}{
		{"no known_hosts", "-"},
		{"known_hosts without CA line", "[127.0.0.1]:1 " + string(ssh.MarshalAuthorizedKey(signerOf(t, newKey(t)).PublicKey()))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := sshtest.Start(t, sshtest.Options{Nodes: 1, HostKeyTypes: []string{"ed25519"}, UnknownHosts: true})
			n := c.Nodes[0]
			certifyHost(t, n, signerOf(t, newKey(t)))
			if tc.existing == "-" {
				os.Remove(c.KnownHosts)
			} else {
				writeFile(t, c.KnownHosts, []byte(tc.existing))
			}
			id := "IdentityFile " + c.KeyPath
			if _, err := newPool(t, nodeConfig(t, c, id, "StrictHostKeyChecking accept-new")).Run(ctxT(t, time.Minute), "node1", "true", nil); err != nil {
				t.Fatalf("accept-new with a certified host key: %v", err)
			}
			kh, _ := os.ReadFile(c.KnownHosts)
			if strings.Contains(string(kh), "cert-v01") {
				t.Fatalf("a certificate was written to known_hosts:\n%s", kh)
			}
			cb, err := knownhosts.New(c.KnownHosts)
			if err != nil {
				t.Fatal(err)
			}
			if err := cb(net.JoinHostPort(n.Addr, fmt.Sprint(n.Port)), &net.TCPAddr{IP: net.IPv4zero}, n.HostKeys[0].PublicKey()); err != nil {
				t.Fatalf("the host's plain key was not recorded (%v):\n%s", err, kh)
			}
			strict := nodeConfig(t, c, id)
			if _, err := newPool(t, strict).Run(ctxT(t, time.Minute), "node1", "true", nil); err != nil {
				t.Fatalf("second dial against the recorded key: %v", err)
			}
			if out, err := runCmd(t, "ssh", "-F", strict, "node1", "echo ok"); err != nil || strings.TrimSpace(out) != "ok" {
				t.Errorf("OpenSSH rejects the recorded key: %v %s", err, out)
			}
		})
	}
}

func TestHostCertificateVerifiedThroughCertAuthority(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1, HostKeyTypes: []string{"ed25519"}, UnknownHosts: true})
	n := c.Nodes[0]
	ca := signerOf(t, newKey(t))
	certifyHost(t, n, ca)
	caLine := func(k ssh.PublicKey) []byte {
		return []byte(fmt.Sprintf("@cert-authority [127.0.*.*]:%d %s", n.Port, ssh.MarshalAuthorizedKey(k)))
	}
	cfg := nodeConfig(t, c, "IdentityFile "+c.KeyPath)

	writeFile(t, c.KnownHosts, caLine(ca.PublicKey()))
	if _, err := newPool(t, cfg).Run(ctxT(t, time.Minute), "node1", "true", nil); err != nil {
		t.Fatalf("host certified by a trusted CA: %v", err)
	}
	if kh, _ := os.ReadFile(c.KnownHosts); string(kh) != string(caLine(ca.PublicKey())) {
		t.Errorf("known_hosts changed under StrictHostKeyChecking yes:\n%s", kh)
	}
	if out, err := runCmd(t, "ssh", "-F", cfg, "node1", "echo ok"); err != nil || strings.TrimSpace(out) != "ok" {
		t.Errorf("OpenSSH does not accept this CA either, the test setup is wrong: %v %s", err, out)
	}

	// Another CA for the same hosts: the host is unknown, not changed.
	writeFile(t, c.KnownHosts, caLine(signerOf(t, newKey(t)).PublicKey()))
	_, err := newPool(t, cfg).Run(ctxT(t, time.Minute), "node1", "true", nil)
	if !errors.Is(err, sshpool.ErrHostKeyUnknown) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("certificate from an untrusted CA: got %v, want ErrHostKeyUnknown naming the certificate", err)
	}
}

// The 1Password / Secretive setup: IdentityFile names only a public key;
// the private key lives in the agent.
func TestPublicKeyIdentityFileSignsThroughAgent(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1})
	sock := serveAgent(t, keyring(t, newKey(t), newKey(t), clientKey(t, c)))
	pub, err := os.ReadFile(c.KeyPath + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "node.pub"), pub)
	writeFile(t, filepath.Join(dir, "bare.pub"), pub) // IdentityFile bare: OpenSSH reads bare.pub

	// Without the agent the error must say what is wrong, not that the
	// file is missing. (First: a dial that fails before its handshake
	// leaves a just-forked sshd behind, racing the cluster's cleanup.)
	cfg := nodeConfig(t, c, "IdentityFile "+filepath.Join(dir, "node.pub"), "IdentitiesOnly yes")
	_, err = newPool(t, cfg).Run(ctxT(t, time.Minute), "node1", "true", nil)
	if !errors.Is(err, sshpool.ErrAuth) {
		t.Fatalf("got %v, want ErrAuth", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "node.pub is a public key") || strings.Contains(msg, "exist") {
		t.Errorf("error does not say the identity is only a public key (or claims it is missing): %v", err)
	}

	for _, id := range []string{"node.pub", "bare"} {
		cfg := nodeConfig(t, c, "IdentityFile "+filepath.Join(dir, id), "IdentitiesOnly yes", "IdentityAgent "+sock)
		res, err := newPool(t, cfg).Run(ctxT(t, time.Minute), "node1", "echo ok", nil)
		if err != nil || string(res.Stdout) != "ok\n" {
			t.Fatalf("IdentityFile %s with the private key in the agent: %v", id, err)
		}
	}

}

// User certificates, from CertificateFile, `<key>-cert.pub`, or an
// IdentityFile that is a certificate, paired with a file or agent key.
func TestUserCertificates(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1})
	n := c.Nodes[0]
	userCA := signerOf(t, newKey(t))
	writeFile(t, filepath.Join(n.Dir, "user_ca.pub"), ssh.MarshalAuthorizedKey(userCA.PublicKey()))
	n.SSHDExtra = "TrustedUserCAKeys " + filepath.Join(n.Dir, "user_ca.pub")
	if err := n.Restart(); err != nil {
		t.Fatal(err)
	}

	// k is not in authorized_keys: only its certificate gets in.
	k := newKey(t)
	certText := ssh.MarshalAuthorizedKey(certify(t, userCA, signerOf(t, k).PublicKey(), ssh.UserCert, c.User))
	dir := t.TempDir()
	writePrivate(t, filepath.Join(dir, "k"), k)
	writeFile(t, filepath.Join(dir, "k.cert"), certText)
	writeFile(t, filepath.Join(dir, "k2-cert.pub"), certText)
	writePrivate(t, filepath.Join(dir, "k2"), k)
	writeFile(t, filepath.Join(dir, "k3.pub"), certText) // a certificate named as IdentityFile
	sock := serveAgent(t, keyring(t, k))

	for _, tc := range []struct {
		name  string
		lines []string
		ok    bool
	}{
		{"plain key alone is refused", []string{"IdentityFile " + filepath.Join(dir, "k")}, false},
		{"CertificateFile with file key", []string{"IdentityFile " + filepath.Join(dir, "k"), "CertificateFile " + filepath.Join(dir, "k.cert")}, true},
		{"CertificateFile with agent key", []string{"IdentityFile " + filepath.Join(dir, "absent"), "IdentitiesOnly yes", "IdentityAgent " + sock, "CertificateFile " + filepath.Join(dir, "k.cert")}, true},
		{"key-cert.pub beside the key", []string{"IdentityFile " + filepath.Join(dir, "k2")}, true},
		{"certificate as IdentityFile with agent key", []string{"IdentityFile " + filepath.Join(dir, "k3.pub"), "IdentitiesOnly yes", "IdentityAgent " + sock}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := newPool(t, nodeConfig(t, c, tc.lines...)).Run(ctxT(t, time.Minute), "node1", "true", nil)
			if tc.ok && err != nil {
				t.Fatal(err)
			}
			if !tc.ok && !errors.Is(err, sshpool.ErrAuth) {
				t.Fatalf("got %v, want ErrAuth", err)
			}
		})
	}
}

// sshd drops the connection after MaxAuthTries refused keys, so the key
// that IdentityFile names must come first, and no key may be tried twice.
func TestIdentityFileKeyOfferedBeforeOtherAgentKeys(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1, SSHDExtra: "MaxAuthTries 3"})
	right := clientKey(t, c)
	crowded := serveAgent(t, keyring(t, newKey(t), newKey(t), newKey(t), newKey(t), newKey(t), newKey(t), right))
	run := func(lines ...string) error {
		_, err := newPool(t, nodeConfig(t, c, lines...)).Run(ctxT(t, time.Minute), "node1", "true", nil)
		return err
	}

	// The setup bites: in the agent's order the right key is seventh.
	if err := run("IdentityFile /nonexistent/id", "IdentityAgent "+crowded); err == nil {
		t.Fatal("seven agent keys got past MaxAuthTries 3; the test proves nothing")
	}
	if err := run("IdentityFile "+c.KeyPath, "IdentityAgent "+crowded); err != nil {
		t.Fatalf("agent key named by IdentityFile: %v", err)
	}
	if err := run("IdentityFile "+c.KeyPath+".pub", "IdentityAgent "+crowded); err != nil {
		t.Fatalf("agent key named by its public key: %v", err)
	}

	// Two wrong keys, both in the agent and on disk, then the right file
	// key: offering the wrong ones twice would use up the tries.
	dir := t.TempDir()
	w1, w2 := newKey(t), newKey(t)
	writePrivate(t, filepath.Join(dir, "w1"), w1)
	writePrivate(t, filepath.Join(dir, "w2"), w2)
	sock := serveAgent(t, keyring(t, w1, w2))
	if err := run("IdentityFile "+filepath.Join(dir, "w1"), "IdentityFile "+filepath.Join(dir, "w2"), "IdentityFile "+c.KeyPath,
		"IdentitiesOnly yes", "IdentityAgent "+sock); err != nil {
		t.Fatalf("keys held by both the agent and files were offered twice: %v", err)
	}
}

// stuckAgent lists its keys but never signs.
type stuckAgent struct {
	agent.Agent
	release chan struct{}
}

func (a stuckAgent) Sign(key ssh.PublicKey, data []byte) (*ssh.Signature, error) {
	<-a.release
	return nil, errors.New("released")
}

func TestWedgedAgentCannotHangDial(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1})

	// runWithin fails the test if the dial outlives limit, many times the
	// ConnectTimeout that bounds it: only a hang gets there.
	runWithin := func(t *testing.T, cfg string, limit time.Duration) error {
		t.Helper()
		p := newPool(t, cfg)
		done := make(chan error, 1)
		go func() {
			_, err := p.Run(ctxT(t, 2*limit), "node1", "true", nil)
			done <- err
		}()
		select {
		case err := <-done:
			return err
		case <-time.After(limit):
			t.Fatalf("dial still hanging after %s on a wedged agent", limit)
			return nil
		}
	}

	t.Run("agent never answers", func(t *testing.T) {
		t.Parallel()
		dir, _ := os.MkdirTemp("", "sshq-agent")
		sock := filepath.Join(dir, "agent.sock")
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var held []net.Conn
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				held = append(held, conn)
				mu.Unlock()
			}
		}()
		// The agent gets min(5s, half the ConnectTimeout) to list its keys;
		// the other 15s leave the file key's handshake time on a loaded
		// machine.
		cfg := nodeConfig(t, c, "IdentityFile "+c.KeyPath, "IdentityAgent "+sock, "ConnectTimeout 20")
		err = runWithin(t, cfg, 45*time.Second)
		l.Close()
		mu.Lock()
		for _, h := range held {
			h.Close()
		}
		mu.Unlock()
		os.RemoveAll(dir)
		if err != nil {
			t.Fatalf("the file key must still be tried when the agent does not answer: %v", err)
		}
	})

	t.Run("agent never signs", func(t *testing.T) {
		t.Parallel()
		a := stuckAgent{Agent: keyring(t, clientKey(t, c)), release: make(chan struct{})}
		sock := serveAgent(t, a)
		t.Cleanup(func() { close(a.release) })
		// Long enough for the key exchange to reach the agent's signature
		// on a loaded machine: the error must then name the agent.
		cfg := nodeConfig(t, c, "IdentityFile "+c.KeyPath, "IdentitiesOnly yes", "IdentityAgent "+sock, "ConnectTimeout 8")
		err := runWithin(t, cfg, 45*time.Second)
		if err == nil {
			t.Fatal("dial succeeded although the agent never signed")
		}
		if !strings.Contains(err.Error(), sock) {
			t.Errorf("error does not name the agent: %v", err)
		}
	})
}
