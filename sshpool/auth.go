package sshpool

import (
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

// agentListTimeout bounds how long the agent may take to list its keys (a
// healthy one answers in milliseconds): a wedged agent must not eat the
// whole dial when file keys could still work. Listing also gets at most
// half of the time left before the dial deadline.
const agentListTimeout = 5 * time.Second

// authMethodsUntil builds public-key auth in OpenSSH's order: agent keys
// matching an IdentityFile (in IdentityFile order), then the agent's other
// keys unless IdentitiesOnly is set, then the file keys the agent does not
// hold. Each key comes with its certificates first (CertificateFile,
// `<key>-cert.pub`, or an IdentityFile that is itself a certificate), and
// no key is offered twice: every refused key counts against the server's
// MaxAuthTries. An IdentityFile may be just a public key whose private half
// lives in an agent (1Password, Secretive, a hardware token).
//
// The agent must answer by deadline (zero means one connect timeout from
// now): listing is cut short earlier (the file keys are still tried), and
// signing during the handshake fails just before deadline instead of
// hanging on a wedged agent. The returned closer releases the
// agent connection; notes explain keys that could not be used, for errors.
func authMethodsUntil(n inventory.Node, deadline time.Time) ([]ssh.AuthMethod, func(), []string, error) {
	if deadline.IsZero() {
		deadline = time.Now().Add(n.Timeout())
	}
	var notes []string
	closer := func() {}

	sock := n.IdentityAgent
	if sock == "" {
		sock = os.Getenv("SSH_AUTH_SOCK")
	}
	var agentSigners []ssh.Signer
	var agentState string // why the agent contributed nothing, for the no-key error
	switch {
	case strings.EqualFold(sock, "none"):
		agentState = "IdentityAgent is none"
	case sock == "":
		agentState = "no ssh-agent is running (SSH_AUTH_SOCK is unset)"
	default:
		s, cl, err := agentKeys(sock, deadline)
		if err != nil {
			agentState = err.Error()
			notes = append(notes, agentState)
		} else {
			agentSigners, closer = s, cl
			if len(s) == 0 {
				agentState = fmt.Sprintf("the ssh-agent at %s holds no keys", sock)
			}
		}
	}

	ids := make([]identity, 0, len(n.IdentityFiles))
	for _, f := range n.IdentityFiles {
		id := loadIdentity(f)
		if id.problem != "" && (id.state != stateMissing || n.ExplicitIdentities) {
			notes = append(notes, id.problem)
		}
		ids = append(ids, id)
	}
	var certFiles []*ssh.Certificate
	certPath := map[*ssh.Certificate]string{}
	for _, f := range n.CertificateFiles {
		cert, err := readCertificate(f)
		if err != nil {
			notes = append(notes, err.Error())
			continue
		}
		certFiles = append(certFiles, cert)
		certPath[cert] = f
	}

	// certsFor lists every certificate known for a plain key.
	certsFor := func(blob string) []*ssh.Certificate {
		var out []*ssh.Certificate
		for _, c := range certFiles {
			if plainBlob(c) == blob {
				out = append(out, c)
			}
		}
		for _, id := range ids {
			if id.pub != nil && string(id.pub.Marshal()) == blob {
				out = append(out, id.certs...)
			}
		}
		return out
	}

	var signers []ssh.Signer
	seen := map[string]bool{}
	usedCert := map[*ssh.Certificate]bool{}
	add := func(s ssh.Signer) {
		if k := string(s.PublicKey().Marshal()); !seen[k] {
			seen[k] = true
			signers = append(signers, s)
		}
	}
	addCert := func(cert *ssh.Certificate, s ssh.Signer) {
		if cs, err := ssh.NewCertSigner(cert, s); err == nil {
			usedCert[cert] = true
			add(cs)
		}
	}
	// offer adds a plain key after its certificates: a server that trusts
	// the CA accepts the certificate at the first try.
	offer := func(s ssh.Signer) {
		for _, c := range certsFor(plainBlob(s.PublicKey())) {
			addCert(c, s)
		}
		add(s)
	}
	// offerAgent adds the agent's signers for one plain key, the
	// certificates the agent holds for it first.
	offerAgent := func(blob string) bool {
		found := false
		for _, s := range agentSigners {
			if _, isCert := s.PublicKey().(*ssh.Certificate); isCert && plainBlob(s.PublicKey()) == blob {
				add(s)
				found = true
			}
		}
		for _, s := range agentSigners {
			if _, isCert := s.PublicKey().(*ssh.Certificate); !isCert && plainBlob(s.PublicKey()) == blob {
				offer(s)
				found = true
			}
		}
		return found
	}

	inAgent := make([]bool, len(ids))
	for i, id := range ids {
		if id.pub != nil {
			inAgent[i] = offerAgent(string(id.pub.Marshal()))
		}
	}
	// A CertificateFile names an identity too, even under IdentitiesOnly.
	for _, c := range certFiles {
		for _, s := range agentSigners {
			if _, isCert := s.PublicKey().(*ssh.Certificate); !isCert && plainBlob(s.PublicKey()) == plainBlob(c) {
				addCert(c, s)
			}
		}
	}
	if !n.IdentitiesOnly {
		for _, s := range agentSigners {
			offerAgent(plainBlob(s.PublicKey()))
		}
	}
	for _, id := range ids {
		if id.signer != nil {
			offer(id.signer)
		}
	}

	var encrypted []string
	var reasons []string
	var missing []string
	for i, id := range ids {
		if inAgent[i] || id.signer != nil {
			continue
		}
		switch id.state {
		case stateEncrypted:
			encrypted = append(encrypted, id.path)
			reasons = append(reasons, fmt.Sprintf("%s is encrypted and no ssh-agent holds it", id.path))
		case statePublic:
			reasons = append(reasons, fmt.Sprintf("%s is a public key and no ssh-agent holds its private key", id.path))
		case stateMissing:
			missing = append(missing, id.path)
		default:
			reasons = append(reasons, id.problem)
		}
		if id.state == stateEncrypted || id.state == statePublic {
			notes = append(notes, reasons[len(reasons)-1])
		}
	}
	for _, c := range certFiles {
		if !usedCert[c] {
			notes = append(notes, fmt.Sprintf("certificate %s matches none of the available keys", certPath[c]))
		}
	}

	if len(signers) == 0 {
		closer()
		if len(encrypted) > 0 {
			var others []string
			for _, note := range notes {
				if !strings.HasPrefix(note, encrypted[0]+" is encrypted") {
					others = append(others, note)
				}
			}
			return nil, nil, notes, fmt.Errorf("%w: identity %s is encrypted and no ssh-agent holds it: run `ssh-add %s` (and make sure SSH_AUTH_SOCK is set in this shell)%s",
				ErrAuth, encrypted[0], encrypted[0], inParens(others))
		}
		switch len(missing) {
		case 0:
		case 1:
			reasons = append(reasons, missing[0]+" does not exist")
		default:
			reasons = append(reasons, "none of "+strings.Join(missing, ", ")+" exists")
		}
		switch {
		case agentState != "":
			reasons = append(reasons, agentState)
		case n.IdentitiesOnly:
			reasons = append(reasons, fmt.Sprintf("the ssh-agent at %s holds %d keys, none of them named by IdentityFile (IdentitiesOnly is set)", sock, len(agentSigners)))
		}
		for _, c := range certFiles {
			if !usedCert[c] {
				reasons = append(reasons, fmt.Sprintf("certificate %s matches none of the available keys", certPath[c]))
			}
		}
		return nil, nil, notes, fmt.Errorf("%w: no usable key for %s: %s. Create a key with `ssh-keygen -t ed25519` and install it with `ssh-copy-id %s`, or `ssh-add` your key to a running ssh-agent, or set IdentityFile for this host",
			ErrAuth, n.Name, strings.Join(reasons, "; "), n.Name)
	}
	return []ssh.AuthMethod{ssh.PublicKeys(signers...)}, closer, notes, nil
}

func inParens(notes []string) string {
	if len(notes) == 0 {
		return ""
	}
	return " (" + strings.Join(notes, "; ") + ")"
}

// agentKeys lists the agent's keys. The connection stays open for signing
// during the handshake, and must answer a little before deadline: a
// signing error then ends the handshake with the agent named, instead of
// the dial's own timeout blaming the server.
func agentKeys(sock string, deadline time.Time) ([]ssh.Signer, func(), error) {
	conn, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return nil, nil, fmt.Errorf("ssh-agent at %s did not answer: %v", sock, err)
	}
	left := time.Until(deadline)
	wait := min(agentListTimeout, left/2)
	_ = conn.SetDeadline(time.Now().Add(wait))
	ac := &agentConn{Conn: conn, sock: sock}
	signers, err := agent.NewClient(ac).Signers()
	if err != nil {
		conn.Close()
		if ac.timedOut {
			return nil, nil, fmt.Errorf("ssh-agent at %s did not list its keys within %s (wedged?), so its keys were not tried", sock, wait.Round(time.Millisecond))
		}
		return nil, nil, fmt.Errorf("ssh-agent at %s did not list its keys: %v", sock, err)
	}
	_ = conn.SetDeadline(deadline.Add(-min(time.Second, left/4)))
	return signers, func() { conn.Close() }, nil
}

// agentConn names the agent when its deadline passes, so a handshake that
// fails there blames the agent rather than the server.
type agentConn struct {
	net.Conn
	sock     string
	timedOut bool
}

func (c *agentConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	return n, c.explain(err)
}

func (c *agentConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	return n, c.explain(err)
}

func (c *agentConn) explain(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.timedOut = true
		return fmt.Errorf("ssh-agent at %s did not answer in time (wedged, or waiting for a confirmation nobody gave)", c.sock)
	}
	return err
}

const (
	stateMissing   = "missing"
	stateEncrypted = "encrypted"
	statePublic    = "public" // only the public half is on disk
	stateBroken    = "broken"
)

// identity is what an IdentityFile yields.
type identity struct {
	path    string
	pub     ssh.PublicKey // plain public key; nil when unknown
	signer  ssh.Signer    // the unencrypted private key
	certs   []*ssh.Certificate
	state   string
	problem string // why it cannot be used on its own, for notes
}

// loadIdentity reads an IdentityFile the way OpenSSH does: a private key,
// or (for a key held by an agent) a public key or certificate, either the
// file itself or `<file>.pub`; plus `<file>-cert.pub` when it exists.
func loadIdentity(path string) identity {
	id := identity{path: path}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		pub, cert, perr := readPublic(path + ".pub")
		if perr != nil {
			id.state, id.problem = stateMissing, fmt.Sprintf("identity %s does not exist", path)
			return id
		}
		id.state, id.pub = statePublic, pub
		if cert != nil {
			id.certs = append(id.certs, cert)
		}
	case err != nil:
		id.state, id.problem = stateBroken, fmt.Sprintf("cannot read identity %s: %v", path, err)
		return id
	default:
		s, err := ssh.ParsePrivateKey(data)
		var pm *ssh.PassphraseMissingError
		switch {
		case err == nil:
			id.signer, id.pub = s, s.PublicKey()
		case errors.As(err, &pm):
			id.state, id.pub = stateEncrypted, pm.PublicKey
			if id.pub == nil { // legacy PEM keys do not carry it
				id.pub, _, _ = readPublic(path + ".pub")
			}
		default:
			pub, cert, perr := parsePublic(data)
			if perr != nil {
				id.state, id.problem = stateBroken, fmt.Sprintf("cannot parse identity %s: %v", path, err)
				return id
			}
			id.state, id.pub = statePublic, pub
			if cert != nil {
				id.certs = append(id.certs, cert)
			}
		}
	}
	if cert, err := readCertificate(path + "-cert.pub"); err == nil && id.pub != nil && plainBlob(cert) == string(id.pub.Marshal()) {
		id.certs = append(id.certs, cert)
	}
	return id
}

// readPublic reads an authorized_keys-format public key; for a user
// certificate it returns the certified key and the certificate.
func readPublic(path string) (ssh.PublicKey, *ssh.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	return parsePublic(data)
}

func parsePublic(data []byte) (ssh.PublicKey, *ssh.Certificate, error) {
	k, _, _, _, err := ssh.ParseAuthorizedKey(data)
	if err != nil {
		return nil, nil, err
	}
	if cert, ok := k.(*ssh.Certificate); ok {
		if cert.CertType != ssh.UserCert {
			return nil, nil, errors.New("a host certificate, not a user certificate")
		}
		return cert.Key, cert, nil
	}
	return k, nil, nil
}

func readCertificate(path string) (*ssh.Certificate, error) {
	_, cert, err := readPublic(path)
	if err != nil {
		return nil, fmt.Errorf("cannot use certificate %s: %v", path, err)
	}
	if cert == nil {
		return nil, fmt.Errorf("cannot use certificate %s: it is a plain public key, not a certificate", path)
	}
	return cert, nil
}

// plainBlob is the wire form of a key, or of the key a certificate
// certifies, so a certificate matches the signer that can use it.
func plainBlob(k ssh.PublicKey) string {
	if c, ok := k.(*ssh.Certificate); ok {
		return string(c.Key.Marshal())
	}
	return string(k.Marshal())
}
