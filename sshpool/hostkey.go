package sshpool

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/sshq/sshq/inventory"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// knownHostsMu serialises appends to known_hosts files across the pool's
// parallel dials; O_APPEND alone does not stop two dials from both adding
// the same host.
var knownHostsMu sync.Mutex

// hostKeyChecker verifies host keys against the node's known_hosts files the
// way OpenSSH does, honouring StrictHostKeyChecking and HashKnownHosts.
type hostKeyChecker struct {
	node  inventory.Node
	files []string // existing known_hosts files, user files first
}

func newHostKeyChecker(n inventory.Node) *hostKeyChecker {
	c := &hostKeyChecker{node: n}
	for _, f := range append(append([]string{}, n.UserKnownHostsFiles...), n.GlobalKnownHostsFiles...) {
		if fi, err := os.Stat(f); err == nil && fi.Mode().IsRegular() {
			c.files = append(c.files, f)
		}
	}
	return c
}

// lookupName is the host:port form the knownhosts package normalises to
// OpenSSH's `host` / `[host]:port` spelling.
func (c *hostKeyChecker) lookupName() string {
	// OpenSSH looks a HostKeyAlias up bare, without the port.
	if c.node.HostKeyAlias != "" {
		return net.JoinHostPort(c.node.HostKeyAlias, "22")
	}
	return net.JoinHostPort(c.node.HostName, fmt.Sprint(c.node.Port))
}

// knownKeys returns what known_hosts holds for the host: its plain keys and
// the @cert-authority keys whose pattern covers it. knownhosts has no lookup
// call, so it is asked to verify a throwaway key and its KeyError lists the
// lines it would have accepted; it does not say which of them are CA lines,
// so the marker is read back from the named file and line.
func (c *hostKeyChecker) knownKeys() (plain, cas []knownhosts.KnownKey, err error) {
	if len(c.files) == 0 {
		return nil, nil, nil
	}
	cb, err := knownhosts.New(c.files...)
	if err != nil {
		return nil, nil, fmt.Errorf("reading known_hosts: %w", err)
	}
	var ke *knownhosts.KeyError
	if !errors.As(cb(c.lookupName(), &net.TCPAddr{IP: net.IPv4zero}, probeKey), &ke) {
		return nil, nil, nil
	}
	plain, cas = splitAuthorities(ke.Want)
	return plain, cas, nil
}

// splitAuthorities separates @cert-authority lines from plain host keys:
// knownhosts reports both as accepted keys, but a CA key is not the host's
// key, and a host whose plain key is unknown is new, not changed.
func splitAuthorities(keys []knownhosts.KnownKey) (plain, cas []knownhosts.KnownKey) {
	lines := map[string][]string{}
	for _, k := range keys {
		ls, ok := lines[k.Filename]
		if !ok {
			data, _ := os.ReadFile(k.Filename)
			ls = strings.Split(string(data), "\n")
			lines[k.Filename] = ls
		}
		if k.Line >= 1 && k.Line <= len(ls) && strings.HasPrefix(strings.TrimSpace(ls[k.Line-1]), "@cert-authority") {
			cas = append(cas, k)
		} else {
			plain = append(plain, k)
		}
	}
	return plain, cas
}

var probeKey = func() ssh.PublicKey {
	// A fixed, valid ed25519 public key that no host will ever hold.
	raw := make([]byte, 32)
	k, _ := ssh.ParsePublicKey(append([]byte("\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"), raw...))
	return k
}()

// Host-key algorithms in x/crypto's default preference, split into
// certificates and plain keys.
var (
	certHostKeyAlgos = []string{
		ssh.CertAlgoRSASHA256v01, ssh.CertAlgoRSASHA512v01, ssh.CertAlgoRSAv01,
		ssh.CertAlgoECDSA256v01, ssh.CertAlgoECDSA384v01, ssh.CertAlgoECDSA521v01,
		ssh.CertAlgoED25519v01,
	}
	plainHostKeyAlgos = []string{
		ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
		ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSA,
		ssh.KeyAlgoED25519,
	}
)

// algorithms orders host-key algorithms so the server offers a key that
// known_hosts can verify. x/crypto's default order would negotiate ecdsa
// with a server that has both, then fail against a known_hosts with only
// ed25519; and it puts certificates first, which a host with no
// @cert-authority line cannot verify (and must never be recorded), so
// certificates are asked for only when a CA line covers the host.
func (c *hostKeyChecker) algorithms() []string {
	plain, cas, err := c.knownKeys()
	if err != nil {
		return plainHostKeyAlgos
	}
	var algos []string
	seen := map[string]bool{}
	add := func(a ...string) {
		for _, x := range a {
			if !seen[x] {
				seen[x] = true
				algos = append(algos, x)
			}
		}
	}
	if len(cas) > 0 {
		add(certHostKeyAlgos...)
	}
	for _, k := range plain {
		switch t := k.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			add(ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		default:
			add(t)
		}
	}
	if len(plain) == 0 {
		// Nothing to match: any plain key will do, to be checked as new.
		add(plainHostKeyAlgos...)
	}
	return algos
}

func (c *hostKeyChecker) callback(hostname string, remote net.Addr, key ssh.PublicKey) error {
	name := c.lookupName()
	var cb ssh.HostKeyCallback
	if len(c.files) > 0 {
		var err error
		if cb, err = knownhosts.New(c.files...); err != nil {
			return fmt.Errorf("%w: reading known_hosts: %v", ErrHostKeyUnknown, err)
		}
	}
	var certNote string
	if cert, ok := key.(*ssh.Certificate); ok {
		// knownhosts checks the certificate against the @cert-authority
		// lines (signature, validity, principal, revocation).
		certNote = " (its host certificate is not vouched for by any @cert-authority line in known_hosts)"
		if cb != nil {
			err := cb(name, remote, cert)
			if err == nil {
				return nil
			}
			if _, cas, _ := c.knownKeys(); len(cas) > 0 {
				certNote = fmt.Sprintf(" (its host certificate was refused: %v)", err)
			}
			var re *knownhosts.RevokedError
			if errors.As(cb(name, remote, cert.SignatureKey), &re) {
				return fmt.Errorf("%w: the certificate authority that signed the host key of %s (%s) is marked @revoked in %s:%d; refusing to connect",
					ErrHostKeyChanged, c.node.Name, ssh.FingerprintSHA256(cert.SignatureKey), re.Revoked.Filename, re.Revoked.Line)
			}
		}
		// As OpenSSH does when no CA vouches for the certificate: verify
		// (and, under accept-new, record) the plain key it certifies. A
		// certificate line in known_hosts would match nothing later.
		key = cert.Key
	}
	fp := ssh.FingerprintSHA256(key)
	if cb != nil {
		err := cb(name, remote, key)
		if err == nil {
			return nil
		}
		var re *knownhosts.RevokedError
		if errors.As(err, &re) {
			return fmt.Errorf("%w: the %s host key of %s (%s) is marked @revoked in %s:%d; refusing to connect",
				ErrHostKeyChanged, key.Type(), c.node.Name, fp, re.Revoked.Filename, re.Revoked.Line)
		}
		var ke *knownhosts.KeyError
		if !errors.As(err, &ke) {
			return fmt.Errorf("%w: %v", ErrHostKeyUnknown, err)
		}
		if plain, _ := splitAuthorities(ke.Want); len(plain) > 0 {
			w := plain[0]
			return fmt.Errorf("%w: WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED for %s (%s)! It now presents %s key %s, "+
				"but %s:%d holds a different key. Someone could be intercepting the connection, or the host was reinstalled. "+
				"If you know it was reinstalled, remove the old key with `ssh-keygen -R %s -f %s` and connect again",
				ErrHostKeyChanged, c.node.Name, knownHostsDisplay(name), key.Type(), fp, w.Filename, w.Line,
				knownHostsDisplay(name), w.Filename)
		}
	}
	// The host is unknown.
	switch c.node.StrictHostKeyChecking {
	case "accept-new", "no":
		return c.record(key)
	default:
		target := c.userFile()
		return fmt.Errorf("%w: no host key for %s (%s) in %s, and StrictHostKeyChecking is %q. "+
			"The host offered %s key %s%s. Check that fingerprint, then run `%s` once and accept it, "+
			"or add it with `ssh-keyscan -p %d -t %s %s >> %s`; or set `StrictHostKeyChecking accept-new` for this host in your ssh config",
			ErrHostKeyUnknown, c.node.Name, knownHostsDisplay(name), strings.Join(c.candidateFiles(), ", "), c.node.StrictHostKeyChecking,
			key.Type(), fp, certNote, c.node.SSHCommand(), c.node.Port, key.Type(), c.node.HostName, target)
	}
}

func knownHostsDisplay(hostport string) string {
	h, p, _ := net.SplitHostPort(hostport)
	if p == "22" {
		return h
	}
	return "[" + h + "]:" + p
}

func (c *hostKeyChecker) candidateFiles() []string {
	if len(c.node.UserKnownHostsFiles) > 0 {
		return c.node.UserKnownHostsFiles
	}
	return []string{"~/.ssh/known_hosts"}
}

func (c *hostKeyChecker) userFile() string {
	if len(c.node.UserKnownHostsFiles) > 0 {
		return c.node.UserKnownHostsFiles[0]
	}
	return filepath.Join(os.Getenv("HOME"), ".ssh", "known_hosts")
}

// record appends the new key to the first UserKnownHostsFile, hashed when
// HashKnownHosts is set, as accept-new does in OpenSSH.
func (c *hostKeyChecker) record(key ssh.PublicKey) error {
	if cert, ok := key.(*ssh.Certificate); ok {
		key = cert.Key // a certificate line would never match again
	}
	knownHostsMu.Lock()
	defer knownHostsMu.Unlock()
	f := c.userFile()
	if f == "/dev/null" {
		return nil
	}
	name := knownHostsDisplay(c.lookupName())
	// Another dial may have recorded it since our check.
	if _, err := os.Stat(f); err == nil {
		if cb, err := knownhosts.New(f); err == nil && cb(c.lookupName(), &net.TCPAddr{IP: net.IPv4zero}, key) == nil {
			return nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
		return fmt.Errorf("%w: cannot record host key of %s: %v", ErrHostKeyUnknown, c.node.Name, err)
	}
	entry := name
	if c.node.HashKnownHosts {
		entry = hashHost(name)
	}
	line := knownhosts.Line([]string{entry}, key)
	fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("%w: cannot record host key of %s in %s: %v", ErrHostKeyUnknown, c.node.Name, f, err)
	}
	defer fh.Close()
	// Keep the file line-oriented even if its last line lacks a newline.
	if needsNewline(f) {
		line = "\n" + line
	}
	if _, err := fh.WriteString(line + "\n"); err != nil {
		return fmt.Errorf("%w: cannot record host key of %s in %s: %v", ErrHostKeyUnknown, c.node.Name, f, err)
	}
	c.files = append([]string{f}, c.files...)
	return fh.Sync()
}

func needsNewline(path string) bool {
	fh, err := os.Open(path)
	if err != nil {
		return false
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil || fi.Size() == 0 {
		return false
	}
	b := make([]byte, 1)
	if _, err := fh.ReadAt(b, fi.Size()-1); err != nil {
		return false
	}
	return b[0] != '\n'
}

func hashHost(name string) string { return knownhosts.HashHostname(name) }
