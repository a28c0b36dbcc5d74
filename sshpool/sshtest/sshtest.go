// Package sshtest starts real OpenSSH sshd processes on loopback addresses
// (127.0.0.x) for tests, the way net/http/httptest starts HTTP servers: each
// node gets its own home, tmux socket directory, GPU lease directory and
// bin directory on PATH, and the cluster gets an ssh config, a client key and
// a known_hosts file, so tests exercise exactly what a user's setup does.
//
// When sshd is missing, Start skips the test with the install command,
// unless the CI environment variable is set, where it fails instead.
package sshtest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// Options shape a cluster.
type Options struct {
	// Nodes is how many nodes to start, named node1..nodeN unless Names is set.
	Nodes int
	Names []string
	// HostKeyTypes are the host key types every node has ("ed25519",
	// "ecdsa"); default both.
	HostKeyTypes []string
	// UnknownHosts leaves known_hosts empty, for host-key policy tests.
	UnknownHosts bool
	// ConfigExtra is appended to every Host block of the generated config
	// (e.g. "StrictHostKeyChecking accept-new").
	ConfigExtra string
	// SSHDExtra is appended to every node's sshd_config.
	SSHDExtra string
	// Env adds variables to every node's login environment.
	Env map[string]string
	// SFTPSubsystem is the command of every node's `Subsystem sftp` line
	// (default: OpenSSH's sftp-server, starting in the node's home);
	// "none" leaves the line out.
	SFTPSubsystem string
	// ConnectTimeout is the config's ConnectTimeout for the nodes
	// (default 15s): generous, because on a loaded machine a healthy
	// node's handshake can take seconds, and a node that is down is
	// refused at once anyway.
	ConnectTimeout time.Duration
	// HungTimeout is the ConnectTimeout of the hosts AddHungNode adds
	// (default 2s): a test that dials one waits this long for the failure
	// it expects.
	HungTimeout time.Duration
}

// Cluster is a set of running nodes and the client-side files to reach them.
type Cluster struct {
	Dir        string // root of everything the cluster wrote
	ConfigPath string // ssh config naming every node
	KeyPath    string // client private key (unencrypted ed25519)
	KnownHosts string // known_hosts the config points at
	User       string
	Nodes      []*Node

	opts    Options
	mu      sync.Mutex
	extra   []string // extra config blocks (hung/dead nodes, custom hosts)
	closers []func()
	dials   map[string]*atomic.Int32 // connections each hung node accepted
}

// Node is one sshd with its own simulated machine.
type Node struct {
	Name     string
	Addr     string // 127.0.0.x
	Port     int
	Dir      string // node root: home/, tmux/, leases/, gpusim/, bin/
	Home     string
	BinDir   string
	SimDir   string
	LeaseDir string
	TmuxDir  string
	Env      map[string]string
	HostKeys []ssh.Signer
	// SSHDExtra is appended to this node's sshd_config at its next Start.
	SSHDExtra string

	cluster *Cluster
	cmd     *exec.Cmd
	mu      sync.Mutex
}

var nextIP atomic.Int32

func init() {
	// Spread test packages running in parallel over different addresses.
	nextIP.Store(int32(2 + os.Getpid()%200))
}

func allocIP() string {
	n := nextIP.Add(1)
	return fmt.Sprintf("127.0.%d.%d", 1+(n/250)%250, 1+n%250)
}

// SSHDPath finds sshd, or returns "" when it is not installed.
func SSHDPath() string {
	for _, p := range []string{"/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	if p, err := exec.LookPath("sshd"); err == nil {
		return p
	}
	return ""
}

// SFTPServerPath finds OpenSSH's sftp-server.
func SFTPServerPath() string {
	for _, p := range []string{"/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/libexec/sftp-server", "/usr/lib/ssh/sftp-server"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// Require skips (or, in CI, fails) tb when sshd is not installed.
func Require(tb testing.TB) {
	tb.Helper()
	if SSHDPath() != "" && SFTPServerPath() != "" {
		return
	}
	SkipUnlessCI(tb, "OpenSSH sshd/sftp-server not installed; install it with `sudo apt-get install -y openssh-server tmux` (Debian/Ubuntu) or `sudo dnf install openssh-server tmux`")
}

// SkipUnlessCI skips tb for lack of what msg names (say how to install it),
// or fails it when the CI environment variable is set: a CI run that
// skipped the tests against real daemons would pass without testing them.
func SkipUnlessCI(tb testing.TB, msg string) {
	tb.Helper()
	if os.Getenv("CI") != "" {
		tb.Fatal(msg + " (CI is set: tests against real daemons must not be skipped)")
	}
	tb.Skip(msg)
}

// Start starts a cluster for one test and stops it when the test ends.
func Start(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	Require(tb)
	c, err := NewCluster(tb.TempDir(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

// NewCluster starts a cluster under dir; the caller must Close it. Use it
// from TestMain to share nodes between the tests of a package.
func NewCluster(dir string, opts Options) (*Cluster, error) {
	if SSHDPath() == "" {
		return nil, fmt.Errorf("sshd not installed: `apt-get install -y openssh-server`")
	}
	if os.Geteuid() == 0 {
		// sshd refuses to start without its privilege separation directory,
		// which only a packaged service start would create.
		_ = os.MkdirAll("/run/sshd", 0o755)
	}
	u, err := user.Current()
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, User: u.Username, opts: opts,
		ConfigPath: filepath.Join(dir, "ssh_config"),
		KeyPath:    filepath.Join(dir, "id_ed25519"),
		KnownHosts: filepath.Join(dir, "known_hosts")}
	if err := writeClientKey(c.KeyPath); err != nil {
		return nil, err
	}
	names := opts.Names
	if len(names) == 0 {
		for i := 1; i <= opts.Nodes; i++ {
			names = append(names, fmt.Sprintf("node%d", i))
		}
	}
	if err := os.WriteFile(c.KnownHosts, nil, 0o600); err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	c.Nodes = make([]*Node, len(names))
	for i, name := range names {
		n, err := c.newNode(name)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.Nodes[i] = n
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.Start()
		}()
	}
	wg.Wait()
	for _, e := range errs {
		if e != nil {
			c.Close()
			return nil, e
		}
	}
	if !opts.UnknownHosts {
		for _, n := range c.Nodes {
			if err := c.Trust(n); err != nil {
				return nil, err
			}
		}
	}
	return c, c.WriteConfig()
}

func writeClientKey(path string) error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	return writePrivateKey(path, priv, true)
}

func writePrivateKey(path string, priv any, withPub bool) error {
	blk, err := ssh.MarshalPrivateKey(priv, "sshtest")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(blk), 0o600); err != nil {
		return err
	}
	if withPub {
		s, err := ssh.NewSignerFromKey(priv)
		if err != nil {
			return err
		}
		return os.WriteFile(path+".pub", ssh.MarshalAuthorizedKey(s.PublicKey()), 0o644)
	}
	return nil
}

func (c *Cluster) newNode(name string) (*Node, error) {
	dir := filepath.Join(c.Dir, "nodes", name)
	n := &Node{Name: name, Addr: allocIP(), Dir: dir, cluster: c,
		Home: filepath.Join(dir, "home"), BinDir: filepath.Join(dir, "bin"),
		SimDir: filepath.Join(dir, "gpusim"), LeaseDir: filepath.Join(dir, "leases"),
		TmuxDir: filepath.Join(dir, "tmux")}
	for _, d := range []string{n.Home, n.BinDir, n.SimDir, n.TmuxDir, filepath.Join(n.Home, ".ssh")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	_ = os.Chmod(n.TmuxDir, 0o700)
	types := c.opts.HostKeyTypes
	if len(types) == 0 {
		types = []string{"ed25519", "ecdsa"}
	}
	for _, t := range types {
		var priv any
		switch t {
		case "ed25519":
			_, priv, _ = ed25519.GenerateKey(rand.Reader)
		case "ecdsa":
			priv, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		default:
			return nil, fmt.Errorf("sshtest: unsupported host key type %q", t)
		}
		p := filepath.Join(dir, "ssh_host_"+t+"_key")
		if err := writePrivateKey(p, priv, false); err != nil {
			return nil, err
		}
		s, _ := ssh.NewSignerFromKey(priv)
		n.HostKeys = append(n.HostKeys, s)
	}
	pub, err := os.ReadFile(c.KeyPath + ".pub")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		return nil, err
	}
	n.Env = map[string]string{
		"HOME":           n.Home,
		"TMUX_TMPDIR":    n.TmuxDir,
		"SSHQ_LEASE_DIR": n.LeaseDir,
		"SSHQ_SIM_DIR":   n.SimDir,
		"PATH":           n.BinDir + ":/usr/local/bin:/usr/bin:/bin",
	}
	for k, v := range c.opts.Env {
		n.Env[k] = v
	}
	return n, nil
}

func (n *Node) writeSSHDConfig() error {
	var b strings.Builder
	// sshd keeps the first value of a keyword: extras go first to override.
	for _, x := range []string{n.SSHDExtra, n.cluster.opts.SSHDExtra} {
		if x != "" {
			b.WriteString(x + "\n")
		}
	}
	fmt.Fprintf(&b, "ListenAddress %s:%d\n", n.Addr, n.Port)
	for _, s := range n.HostKeys {
		t := "ed25519"
		if strings.HasPrefix(s.PublicKey().Type(), "ecdsa") {
			t = "ecdsa"
		}
		fmt.Fprintf(&b, "HostKey %s\n", filepath.Join(n.Dir, "ssh_host_"+t+"_key"))
	}
	fmt.Fprintf(&b, "PidFile %s\n", filepath.Join(n.Dir, "sshd.pid"))
	fmt.Fprintf(&b, "AuthorizedKeysFile %s\n", filepath.Join(n.Dir, "authorized_keys"))
	b.WriteString("PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n")
	b.WriteString("PermitRootLogin prohibit-password\nMaxStartups 200\nLogLevel VERBOSE\nAllowTcpForwarding yes\n")
	// sftp-server starts in the passwd home; point it at the node's home so
	// relative SFTP paths mean the same as `~` in the node's shell.
	switch sub := n.cluster.opts.SFTPSubsystem; sub {
	case "":
		fmt.Fprintf(&b, "Subsystem sftp %s -d %s\n", SFTPServerPath(), n.Home)
	case "none":
	default:
		fmt.Fprintf(&b, "Subsystem sftp %s\n", sub)
	}
	keys := make([]string, 0, len(n.Env))
	for k := range n.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b.WriteString("SetEnv")
	for _, k := range keys {
		fmt.Fprintf(&b, " %s", quoteSSHD(k+"="+n.Env[k]))
	}
	b.WriteString("\n")
	return os.WriteFile(filepath.Join(n.Dir, "sshd_config"), []byte(b.String()), 0o600)
}

func quoteSSHD(s string) string {
	if !strings.ContainsAny(s, " \t\"") {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"`
}

// Start starts (or restarts after Stop) the node's sshd on its address and
// waits until it answers with an SSH banner.
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return nil
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		if n.Port == 0 || attempt > 0 {
			p, err := freePort(n.Addr)
			if err != nil {
				return err
			}
			n.Port = p
		}
		if err := n.writeSSHDConfig(); err != nil {
			return err
		}
		cmd := exec.Command(SSHDPath(), "-D", "-f", filepath.Join(n.Dir, "sshd_config"), "-E", filepath.Join(n.Dir, "sshd.log"))
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("sshtest: starting sshd for %s: %w", n.Name, err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		if err := waitBanner(n.Addr, n.Port, exited); err != nil {
			lastErr = err
			_ = cmd.Process.Kill()
			<-exited
			continue
		}
		n.cmd = cmd
		return nil
	}
	log, _ := os.ReadFile(filepath.Join(n.Dir, "sshd.log"))
	return fmt.Errorf("sshtest: sshd for %s did not start: %v\n%s", n.Name, lastErr, log)
}

func freePort(ip string) (int, error) {
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		return 0, fmt.Errorf("sshtest: no free port on %s: %w", ip, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitBanner(ip string, port int, exited <-chan struct{}) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("sshd exited")
		default:
		}
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", ip, port), time.Second)
		if err == nil {
			_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			line, _ := bufio.NewReader(conn).ReadString('\n')
			conn.Close()
			if strings.HasPrefix(line, "SSH-") {
				return nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("no SSH banner within 10s")
}

// Stop kills the node's sshd listener (sessions already open keep running,
// as on a real host whose sshd was stopped).
func (n *Node) Stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	// The whole group: a session child sshd just forked would otherwise
	// outlive it and write its log into a directory being removed.
	_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
	_, _ = n.cmd.Process.Wait()
	n.cmd = nil
}

// Kill stops sshd and every process of the node's sessions, as if the
// machine lost power: connections drop without a goodbye.
func (n *Node) Kill() {
	n.Stop()
	killUnder(n.Dir)
}

// Restart stops and starts sshd on the same address and port.
func (n *Node) Restart() error {
	n.Stop()
	return n.Start()
}

// Alias is the host name under which the config lists the node.
func (n *Node) Alias() string { return n.Name }

// Trust writes n's host keys into the cluster's known_hosts.
func (c *Cluster) Trust(n *Node) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, err := os.OpenFile(c.KnownHosts, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, s := range n.HostKeys {
		fmt.Fprintf(f, "[%s]:%d %s", n.Addr, n.Port, ssh.MarshalAuthorizedKey(s.PublicKey()))
	}
	return nil
}

// AddHost adds a raw Host block to the generated config (for hung or dead
// nodes, ProxyJump chains, custom options) and rewrites the config.
func (c *Cluster) AddHost(block string) error {
	c.mu.Lock()
	c.extra = append(c.extra, block)
	c.mu.Unlock()
	return c.WriteConfig()
}

// WriteConfig (re)writes the ssh config: one Host block per node, then the
// extra blocks, then a `Host *` block with the client key and known_hosts.
//
// Its timeouts only catch what is really dead: ServerAlive 5s × 3 keeps a
// connection whose client or server is starved of CPU for a few seconds
// (two CPU burners beside the tests) instead of dropping it mid-job.
func (c *Cluster) WriteConfig() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	connect := c.opts.ConnectTimeout
	if connect <= 0 {
		connect = 15 * time.Second
	}
	var b strings.Builder
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "Host %s\n  HostName %s\n  Port %d\n", n.Name, n.Addr, n.Port)
		if c.opts.ConfigExtra != "" {
			fmt.Fprintf(&b, "  %s\n", c.opts.ConfigExtra)
		}
	}
	for _, x := range c.extra {
		b.WriteString(x)
		if !strings.HasSuffix(x, "\n") {
			b.WriteString("\n")
		}
	}
	fmt.Fprintf(&b, "Host *\n  User %s\n  IdentityFile %s\n  IdentitiesOnly yes\n  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n  ConnectTimeout %d\n  ServerAliveInterval 5\n  ServerAliveCountMax 3\n  LogLevel ERROR\n  ControlMaster no\n",
		c.User, c.KeyPath, c.KnownHosts, int(connect.Round(time.Second).Seconds()))
	return os.WriteFile(c.ConfigPath, []byte(b.String()), 0o600)
}

// Node returns the node with the given name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Names lists the node names in order.
func (c *Cluster) Names() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Name)
	}
	return out
}

// SSH runs the system ssh client against a node with the cluster config,
// for tests that compare with OpenSSH or inspect a node.
func (c *Cluster) SSH(args ...string) *exec.Cmd {
	return exec.Command("ssh", append([]string{"-F", c.ConfigPath}, args...)...)
}

// Close stops every node, kills what their sessions left running (tmux
// servers, jobs) and releases listeners.
func (c *Cluster) Close() {
	for _, n := range c.Nodes {
		if n != nil {
			n.Kill()
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.closers {
		f()
	}
	c.closers = nil
}
