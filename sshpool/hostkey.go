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

// knownKeys returns what known_hosts holds for the host. knownhosts has no
// lookup call, so it is asked to verify a throwaway key and its KeyError
// lists the keys it would have accepted.
func (c *hostKeyChecker) knownKeys() ([]knownhosts.KnownKey, error) {
	if len(c.files) == 0 {
		return nil, nil
	}
	cb, err := knownhosts.New(c.files...)
	if err != nil {
		return nil, fmt.Errorf("reading known_hosts: %w", err)
	}
	err = cb(c.lookupName(), &net.TCPAddr{IP: net.IPv4zero}, probeKey)
	var ke *knownhosts.KeyError
	if errors.As(err, &ke) {
		return ke.Want, nil
	}
	return nil, nil
}

var probeKey = func() ssh.PublicKey {
	// A fixed, valid ed25519 public key that no host will ever hold.
	raw := make([]byte, 32)
	k, _ := ssh.ParsePublicKey(append([]byte("\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20"), raw...))
	return k
}()

// algorithms orders host-key algorithms so the server offers a key type that
// known_hosts holds. x/crypto's default order would negotiate ecdsa with a
// server that has both, then fail against a known_hosts with only ed25519.
func (c *hostKeyChecker) algorithms() []string {
	keys, err := c.knownKeys()
	if err != nil || len(keys) == 0 {
		return nil
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
	for _, k := range keys {
		switch t := k.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			add(ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		default:
			add(t)
		}
	}
	return algos
}

func (c *hostKeyChecker) callback(hostname string, remote net.Addr, key ssh.PublicKey) error {
	name := c.lookupName()
	fp := ssh.FingerprintSHA256(key)
	if len(c.files) > 0 {
		cb, err := knownhosts.New(c.files...)
		if err != nil {
			return fmt.Errorf("%w: reading known_hosts: %v", ErrHostKeyUnknown, err)
		}
		err = cb(name, remote, key)
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
		if len(ke.Want) > 0 {
			w := ke.Want[0]
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
			"The host offered %s key %s. Check that fingerprint, then run `ssh %s` once and accept it, "+
			"or add it with `ssh-keyscan -p %d -t %s %s >> %s`; or set `StrictHostKeyChecking accept-new` for this host in your ssh config",
			ErrHostKeyUnknown, c.node.Name, knownHostsDisplay(name), strings.Join(c.candidateFiles(), ", "), c.node.StrictHostKeyChecking,
			key.Type(), fp, c.node.Name, c.node.Port, key.Type(), c.node.HostName, target)
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
