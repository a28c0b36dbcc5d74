package inventory

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kevinburke/ssh_config"
)

// Resolver resolves aliases of one Config into Nodes.
type Resolver struct {
	Config *Config
	// SSHPath is the OpenSSH client used for `ssh -G`; "" means the
	// fallback parser. NewResolver looks it up on PATH.
	SSHPath string

	once     sync.Once
	fallback *ssh_config.Config
	fbErr    error

	// memo keeps each alias's result for the life of the resolver (one sshq
	// command): `ssh -G` is a process per call, and a command asks about the
	// same node several times (dial, deadlines, ProxyJump hops).
	mu   sync.Mutex
	memo map[string]Node
}

// NewResolver prefers `ssh -G` when an OpenSSH client is on PATH.
func NewResolver(c *Config) *Resolver {
	r := &Resolver{Config: c}
	if p, err := exec.LookPath("ssh"); err == nil {
		r.SSHPath = p
	}
	return r
}

// Resolve returns alias's settings without connecting anywhere.
func (r *Resolver) Resolve(ctx context.Context, alias string) (Node, error) {
	if alias == "" || strings.HasPrefix(alias, "-") || strings.ContainsAny(alias, " \t\r\n") {
		return Node{}, fmt.Errorf("%q is not a valid ssh host alias", alias)
	}
	r.mu.Lock()
	if n, ok := r.memo[alias]; ok {
		r.mu.Unlock()
		return n.clone(), nil
	}
	r.mu.Unlock()
	var n Node
	var err error
	if r.SSHPath != "" {
		n, err = r.resolveSSHG(ctx, alias)
	} else {
		n, err = r.resolveFallback(alias)
	}
	if err != nil {
		return Node{}, err
	}
	n = finish(n)
	if !r.Config.Default {
		n.ConfigFile = r.Config.Path
	}
	r.mu.Lock()
	if r.memo == nil {
		r.memo = map[string]Node{}
	}
	r.memo[alias] = n
	r.mu.Unlock()
	return n.clone(), nil
}

// clone copies the slices, so a caller that edits its Node (a ProxyJump hop
// with an explicit user or port) cannot change the memo.
func (n Node) clone() Node {
	n.IdentityFiles = append([]string(nil), n.IdentityFiles...)
	n.CertificateFiles = append([]string(nil), n.CertificateFiles...)
	n.UserKnownHostsFiles = append([]string(nil), n.UserKnownHostsFiles...)
	n.GlobalKnownHostsFiles = append([]string(nil), n.GlobalKnownHostsFiles...)
	return n
}

// ResolveAll resolves every alias in parallel, keeping order.
func (r *Resolver) ResolveAll(ctx context.Context, aliases []string) ([]Node, error) {
	nodes := make([]Node, len(aliases))
	errs := make([]error, len(aliases))
	var wg sync.WaitGroup
	for i, a := range aliases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodes[i], errs[i] = r.Resolve(ctx, a)
		}()
	}
	wg.Wait()
	for _, e := range errs {
		if e != nil {
			return nil, e
		}
	}
	return nodes, nil
}

func (r *Resolver) resolveSSHG(ctx context.Context, alias string) (Node, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	args := []string{"-G"}
	// Without -F, ssh also applies /etc/ssh/ssh_config, as the user's own
	// `ssh` would; but it finds ~/.ssh/config through the passwd entry, not
	// $HOME, so a changed HOME (tests, sudo -E) needs the path spelled out.
	if !r.Config.Default || !passwdHomeIs(homeDir()) {
		args = append([]string{"-F", r.Config.Path}, args...)
	}
	args = append(args, "--", alias)
	cmd := exec.CommandContext(ctx, r.SSHPath, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return Node{}, fmt.Errorf("resolving %s with `ssh -G`: %s (fix the ssh config, or check it with `ssh -G %s`)", alias, msg, alias)
	}
	n := Node{Name: alias, Source: "ssh -G"}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		key, val, _ := strings.Cut(sc.Text(), " ")
		switch strings.ToLower(key) {
		case "hostname":
			n.HostName = val
		case "port":
			n.Port, _ = strconv.Atoi(val)
		case "user":
			n.User = val
		case "identityfile":
			n.IdentityFiles = append(n.IdentityFiles, val)
		case "certificatefile":
			n.CertificateFiles = append(n.CertificateFiles, val)
		case "identitiesonly":
			n.IdentitiesOnly = yes(val)
		case "identityagent":
			n.IdentityAgent = val
		case "proxyjump":
			n.ProxyJump = val
		case "proxycommand":
			n.ProxyCommand = val
		case "userknownhostsfile":
			n.UserKnownHostsFiles = strings.Fields(val)
		case "globalknownhostsfile":
			n.GlobalKnownHostsFiles = strings.Fields(val)
		case "stricthostkeychecking":
			n.StrictHostKeyChecking = val
		case "hashknownhosts":
			n.HashKnownHosts = yes(val)
		case "hostkeyalias":
			n.HostKeyAlias = val
		case "connecttimeout":
			n.ConnectTimeout = seconds(val)
		case "serveraliveinterval":
			n.ServerAliveInterval = seconds(val)
		case "serveralivecountmax":
			n.ServerAliveCountMax, _ = strconv.Atoi(val)
		}
	}
	// `ssh -G` prints OpenSSH's default identity list when the config names
	// none; only an IdentityFile line in the config makes them explicit.
	n.ExplicitIdentities = r.configSets(alias, "IdentityFile")
	return n, nil
}

// configSets reports whether the fallback parse of the config sets key for
// alias; used only to tell user-chosen values from OpenSSH defaults.
func (r *Resolver) configSets(alias, key string) bool {
	cfg, err := r.fallbackConfig()
	if err != nil {
		return true
	}
	v, err := cfg.Get(alias, key)
	return err == nil && v != ""
}

func (r *Resolver) fallbackConfig() (*ssh_config.Config, error) {
	r.once.Do(func() {
		text := r.Config.Text
		if r.Config.Default {
			// OpenSSH reads the system file after the user's; first value wins.
			if sys, err := Load("/etc/ssh/ssh_config"); err == nil {
				text = append(append(append([]byte{}, text...), '\n'), sys.Text...)
			}
		}
		r.fallback, r.fbErr = ssh_config.DecodeBytes(text)
		if r.fbErr != nil {
			r.fbErr = fmt.Errorf("parsing %s: %w", r.Config.Path, r.fbErr)
		}
	})
	return r.fallback, r.fbErr
}

func (r *Resolver) resolveFallback(alias string) (Node, error) {
	cfg, err := r.fallbackConfig()
	if err != nil {
		return Node{}, err
	}
	// Config.Get, unlike the package-level Get, returns parse errors.
	get := func(key string) string {
		v, _ := cfg.Get(alias, key)
		return v
	}
	all := func(key string) []string {
		v, _ := cfg.GetAll(alias, key)
		return v
	}
	n := Node{Name: alias, Source: "ssh_config"}
	n.HostName = get("HostName")
	n.Port, _ = strconv.Atoi(get("Port"))
	n.User = get("User")
	for _, f := range all("IdentityFile") {
		n.IdentityFiles = append(n.IdentityFiles, strings.Fields(f)...)
	}
	n.ExplicitIdentities = len(n.IdentityFiles) > 0
	n.CertificateFiles = all("CertificateFile")
	n.IdentitiesOnly = yes(get("IdentitiesOnly"))
	n.IdentityAgent = get("IdentityAgent")
	n.ProxyJump = get("ProxyJump")
	n.ProxyCommand = get("ProxyCommand")
	n.UserKnownHostsFiles = strings.Fields(get("UserKnownHostsFile"))
	n.GlobalKnownHostsFiles = strings.Fields(get("GlobalKnownHostsFile"))
	n.StrictHostKeyChecking = get("StrictHostKeyChecking")
	n.HashKnownHosts = yes(get("HashKnownHosts"))
	n.HostKeyAlias = get("HostKeyAlias")
	n.ConnectTimeout = seconds(get("ConnectTimeout"))
	n.ServerAliveInterval = seconds(get("ServerAliveInterval"))
	n.ServerAliveCountMax, _ = strconv.Atoi(get("ServerAliveCountMax"))
	if n.HostName != "" {
		n.HostName = strings.ReplaceAll(n.HostName, "%h", alias)
	}
	return n, nil
}

// finish applies OpenSSH's defaults and expands paths, so both resolvers
// hand out the same shape.
func finish(n Node) Node {
	if n.HostName == "" {
		n.HostName = n.Name
	}
	if n.Port == 0 {
		n.Port = 22
	}
	if strings.EqualFold(n.ProxyCommand, "none") {
		n.ProxyCommand = ""
	}
	if n.User == "" {
		n.User = localUser()
	}
	if len(n.IdentityFiles) == 0 {
		for _, f := range []string{"id_rsa", "id_ecdsa", "id_ecdsa_sk", "id_ed25519", "id_ed25519_sk"} {
			n.IdentityFiles = append(n.IdentityFiles, "~/.ssh/"+f)
		}
	}
	if len(n.UserKnownHostsFiles) == 0 {
		n.UserKnownHostsFiles = []string{"~/.ssh/known_hosts", "~/.ssh/known_hosts2"}
	}
	if n.GlobalKnownHostsFiles == nil {
		n.GlobalKnownHostsFiles = []string{"/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"}
	}
	switch strings.ToLower(n.StrictHostKeyChecking) {
	case "", "ask":
		n.StrictHostKeyChecking = "ask"
	case "yes", "true":
		n.StrictHostKeyChecking = "yes"
	case "no", "false", "off":
		n.StrictHostKeyChecking = "no"
	case "accept-new":
		n.StrictHostKeyChecking = "accept-new"
	}
	if n.ServerAliveCountMax == 0 {
		n.ServerAliveCountMax = 3
	}
	for i, f := range n.IdentityFiles {
		n.IdentityFiles[i] = expandPath(f, &n)
	}
	for i, f := range n.CertificateFiles {
		n.CertificateFiles[i] = expandPath(f, &n)
	}
	for i, f := range n.UserKnownHostsFiles {
		n.UserKnownHostsFiles[i] = expandPath(f, &n)
	}
	for i, f := range n.GlobalKnownHostsFiles {
		n.GlobalKnownHostsFiles[i] = expandPath(f, &n)
	}
	if n.IdentityAgent != "" && !strings.EqualFold(n.IdentityAgent, "none") && n.IdentityAgent != "SSH_AUTH_SOCK" {
		if v, ok := strings.CutPrefix(n.IdentityAgent, "$"); ok && !strings.HasPrefix(v, "{") {
			n.IdentityAgent = os.Getenv(v) // `IdentityAgent $SOME_SOCK`
		} else {
			n.IdentityAgent = expandPath(n.IdentityAgent, &n)
		}
	}
	if n.IdentityAgent == "SSH_AUTH_SOCK" {
		n.IdentityAgent = ""
	}
	return n
}

func passwdHomeIs(home string) bool {
	u, err := user.Current()
	return err == nil && filepath.Clean(u.HomeDir) == filepath.Clean(home)
}

func yes(v string) bool {
	switch strings.ToLower(v) {
	case "yes", "true", "ask", "confirm":
		return true
	}
	return false
}

func seconds(v string) time.Duration {
	if v == "" || strings.EqualFold(v, "none") {
		return 0
	}
	if d, err := time.ParseDuration(v); err == nil {
		return d
	}
	s, err := strconv.Atoi(v)
	if err != nil || s < 0 {
		return 0
	}
	return time.Duration(s) * time.Second
}

// IdentityExists reports whether an identity file is present; missing
// OpenSSH default identities are skipped silently, as ssh does.
func IdentityExists(path string) bool {
	_, err := os.Stat(filepath.Clean(path))
	return err == nil
}
