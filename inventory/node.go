package inventory

import (
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"
)

// Node is one host as OpenSSH would connect to it. Every field is already
// resolved: defaults applied, `~` and %-tokens expanded.
type Node struct {
	Name                  string        `json:"name"`
	HostName              string        `json:"hostname"`
	Port                  int           `json:"port"`
	User                  string        `json:"user"`
	IdentityFiles         []string      `json:"identity_files"`
	CertificateFiles      []string      `json:"certificate_files,omitempty"`
	IdentitiesOnly        bool          `json:"identities_only"`
	IdentityAgent         string        `json:"identity_agent,omitempty"`
	ProxyJump             string        `json:"proxy_jump"`
	ProxyCommand          string        `json:"proxy_command,omitempty"` // not run by sshq; reported as unsupported
	UserKnownHostsFiles   []string      `json:"user_known_hosts_files"`
	GlobalKnownHostsFiles []string      `json:"global_known_hosts_files,omitempty"`
	StrictHostKeyChecking string        `json:"strict_host_key_checking"`
	HashKnownHosts        bool          `json:"hash_known_hosts"`
	HostKeyAlias          string        `json:"host_key_alias,omitempty"`
	ConnectTimeout        time.Duration `json:"-"`
	ServerAliveInterval   time.Duration `json:"-"`
	ServerAliveCountMax   int           `json:"server_alive_count_max"`
	// Source says which resolver produced the node: "ssh -G" or "ssh_config".
	Source string `json:"source"`
	// ConfigFile is the ssh config it came from when that is not the
	// default one, so advice can say `ssh -F FILE`.
	ConfigFile string `json:"-"`
	// ExplicitIdentities is false when IdentityFiles are OpenSSH's defaults
	// rather than the user's choice; missing default files are not an error.
	ExplicitIdentities bool `json:"-"`
}

// MarshalJSON adds the durations in seconds, as `ssh -G` prints them.
func (n Node) MarshalJSON() ([]byte, error) {
	type plain Node
	return json.Marshal(struct {
		plain
		ConnectTimeout      float64 `json:"connect_timeout"`
		ServerAliveInterval float64 `json:"server_alive_interval"`
	}{plain(n), n.Timeout().Seconds(), n.ServerAliveInterval.Seconds()})
}

// SSHCommand is how to reach the node with the OpenSSH client, for advice
// in error messages.
func (n Node) SSHCommand() string {
	if n.ConfigFile != "" {
		return "ssh -F " + n.ConfigFile + " " + n.Name
	}
	return "ssh " + n.Name
}

// DefaultConnectTimeout bounds TCP connect and the SSH handshake when the
// config sets no ConnectTimeout. OpenSSH waits for the kernel's TCP timeout
// (minutes); a cluster status cannot.
const DefaultConnectTimeout = 10 * time.Second

// Addr is the host:port to dial.
func (n Node) Addr() string {
	host := n.HostName
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		host = "[" + host + "]"
	}
	return fmt.Sprintf("%s:%d", host, n.Port)
}

// Timeout is the effective connect+handshake deadline.
func (n Node) Timeout() time.Duration {
	if n.ConnectTimeout > 0 {
		return n.ConnectTimeout
	}
	return DefaultConnectTimeout
}

// KnownHostsName is the name a host key is recorded and looked up under in
// known_hosts: HostKeyAlias if set, else host or [host]:port as OpenSSH writes it.
func (n Node) KnownHostsName() string {
	if n.HostKeyAlias != "" {
		return n.HostKeyAlias // OpenSSH looks an alias up without the port
	}
	if n.Port == 22 {
		return n.HostName
	}
	return fmt.Sprintf("[%s]:%d", n.HostName, n.Port)
}

// ProxyJumps splits ProxyJump into its hops, first hop first.
func (n Node) ProxyJumps() []string {
	if n.ProxyJump == "" || strings.EqualFold(n.ProxyJump, "none") {
		return nil
	}
	var hops []string
	for _, h := range strings.Split(n.ProxyJump, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hops = append(hops, h)
		}
	}
	return hops
}

// localUser is the login name OpenSSH uses when the config names no User.
func localUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "root"
}

func homeDir() string {
	if h, err := os.UserHomeDir(); err == nil {
		return h
	}
	return "/"
}

func localHostname() string {
	h, _ := os.Hostname()
	return h
}

// expandPath applies OpenSSH's `~` and %-token expansion for IdentityFile,
// CertificateFile, UserKnownHostsFile and IdentityAgent: %d home, %u local
// user, %h host name, %r remote user, %l local host name, %n the alias,
// %p port, %% a percent sign.
func expandPath(p string, n *Node) string {
	// OpenSSH expands ${VAR} (braces only) in these paths.
	for {
		i := strings.Index(p, "${")
		if i < 0 {
			break
		}
		j := strings.IndexByte(p[i:], '}')
		if j < 0 {
			break
		}
		p = p[:i] + os.Getenv(p[i+2:i+j]) + p[i+j+1:]
	}
	if p == "~" {
		p = homeDir()
	} else if strings.HasPrefix(p, "~/") {
		p = filepath.Join(homeDir(), p[2:])
	}
	if !strings.Contains(p, "%") {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] != '%' || i+1 == len(p) {
			b.WriteByte(p[i])
			continue
		}
		i++
		switch p[i] {
		case 'd':
			b.WriteString(homeDir())
		case 'u':
			b.WriteString(localUser())
		case 'h':
			b.WriteString(n.HostName)
		case 'r':
			b.WriteString(n.User)
		case 'l':
			b.WriteString(localHostname())
		case 'n':
			b.WriteString(n.Name)
		case 'p':
			fmt.Fprintf(&b, "%d", n.Port)
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(p[i])
		}
	}
	return b.String()
}
