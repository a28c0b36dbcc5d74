package sshpool

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/sshq/sshq/inventory"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// authMethods builds OpenSSH's order of public-key auth: agent keys first
// (only those matching an IdentityFile when IdentitiesOnly is set), then the
// IdentityFile keys, each with its -cert.pub certificate when one exists.
// The returned closer releases the agent connection.
func authMethods(n inventory.Node) ([]ssh.AuthMethod, func(), []string, error) {
	var notes []string
	var signers []ssh.Signer
	closer := func() {}

	var agentSigners []ssh.Signer
	sock := n.IdentityAgent
	if sock == "" {
		sock = os.Getenv("SSH_AUTH_SOCK")
	}
	if sock != "" && !strings.EqualFold(sock, "none") {
		conn, err := net.DialTimeout("unix", sock, 2*time.Second)
		if err == nil {
			closer = func() { conn.Close() }
			ag := agent.NewClient(conn)
			if s, err := ag.Signers(); err == nil {
				agentSigners = s
			}
		} else {
			notes = append(notes, fmt.Sprintf("ssh-agent at %s did not answer: %v", sock, err))
		}
	}

	var fileSigners []ssh.Signer
	var encrypted []string
	var idPubs [][]byte
	for _, f := range n.IdentityFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			if n.ExplicitIdentities && !errors.Is(err, os.ErrNotExist) {
				notes = append(notes, fmt.Sprintf("cannot read identity %s: %v", f, err))
			}
			continue
		}
		if pub := publicKeyFor(f); pub != nil {
			idPubs = append(idPubs, pub.Marshal())
		}
		s, err := ssh.ParsePrivateKey(data)
		if err != nil {
			var pm *ssh.PassphraseMissingError
			if errors.As(err, &pm) {
				if pm.PublicKey != nil {
					idPubs = append(idPubs, pm.PublicKey.Marshal())
					if hasKey(agentSigners, pm.PublicKey) {
						continue // the agent signs with it; no passphrase needed
					}
				}
				encrypted = append(encrypted, f)
				continue
			}
			notes = append(notes, fmt.Sprintf("cannot parse identity %s: %v", f, err))
			continue
		}
		idPubs = append(idPubs, s.PublicKey().Marshal())
		fileSigners = append(fileSigners, withCert(f, s)...)
	}

	for _, s := range agentSigners {
		if n.IdentitiesOnly && !containsKey(idPubs, s.PublicKey()) {
			continue
		}
		signers = append(signers, s)
	}
	signers = append(signers, fileSigners...)
	if len(signers) == 0 {
		closer()
		switch {
		case len(encrypted) > 0:
			return nil, nil, notes, fmt.Errorf("%w: identity %s is encrypted and no ssh-agent holds it: run `ssh-add %s` (and make sure SSH_AUTH_SOCK is set in this shell)",
				ErrAuth, encrypted[0], encrypted[0])
		case sock == "" || strings.EqualFold(sock, "none"):
			return nil, nil, notes, fmt.Errorf("%w: no usable key for %s: none of %s exists and no ssh-agent is running (SSH_AUTH_SOCK is unset); create a key with `ssh-keygen -t ed25519` and install it with `ssh-copy-id %s`, or start an agent and `ssh-add` your key",
				ErrAuth, n.Name, strings.Join(n.IdentityFiles, ", "), n.Name)
		default:
			return nil, nil, notes, fmt.Errorf("%w: no usable key for %s: the ssh-agent holds none and none of %s exists; `ssh-add` your key or set IdentityFile for this host",
				ErrAuth, n.Name, strings.Join(n.IdentityFiles, ", "))
		}
	}
	return []ssh.AuthMethod{ssh.PublicKeys(signers...)}, closer, notes, nil
}

func publicKeyFor(privPath string) ssh.PublicKey {
	data, err := os.ReadFile(privPath + ".pub")
	if err != nil {
		return nil
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return nil
	}
	return k
}

// withCert returns the certificate signer first when `<key>-cert.pub`
// exists and matches, then the plain key, as OpenSSH offers both.
func withCert(keyPath string, s ssh.Signer) []ssh.Signer {
	data, err := os.ReadFile(keyPath + "-cert.pub")
	if err != nil {
		return []ssh.Signer{s}
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return []ssh.Signer{s}
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok || !bytes.Equal(cert.Key.Marshal(), s.PublicKey().Marshal()) {
		return []ssh.Signer{s}
	}
	cs, err := ssh.NewCertSigner(cert, s)
	if err != nil {
		return []ssh.Signer{s}
	}
	return []ssh.Signer{cs, s}
}

func hasKey(signers []ssh.Signer, k ssh.PublicKey) bool {
	for _, s := range signers {
		if bytes.Equal(s.PublicKey().Marshal(), k.Marshal()) {
			return true
		}
	}
	return false
}

func containsKey(pubs [][]byte, k ssh.PublicKey) bool {
	for _, p := range pubs {
		if bytes.Equal(p, k.Marshal()) {
			return true
		}
	}
	return false
}
