// Package demo runs a local sshq cluster inside one process: three nodes,
// each an embedded SSH server (package sshd) on a 127.0.0.x address with
// its own home, tmux socket directory, GPU lease directory and a simulated
// nvidia-smi, plus the ssh config, keys and known_hosts a user's own setup
// would have. sshq then reaches the nodes through exactly the code it uses
// for real machines: the demo proves the product rather than faking it.
package demo

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/sshq/sshq/orchestrator/demo/sshd"
	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"golang.org/x/crypto/ssh"
)

// NodeSpec is one demo machine.
type NodeSpec struct {
	Name string
	IP   string
	GPUs func(seed string) []gpusim.GPU
}

// DefaultNodes is the demo cluster: a training box, a workstation full of
// consumer cards, and a small inference node.
var DefaultNodes = []NodeSpec{
	{"demo-a100", "127.0.0.21", gpusim.A100x2},
	{"demo-4090", "127.0.0.22", gpusim.RTX4090x4},
	{"demo-t4", "127.0.0.23", gpusim.T4x1},
}

// Cluster is a running demo.
type Cluster struct {
	Dir        string // everything the demo wrote
	ConfigPath string // ssh config naming the nodes
	Home       string // SSHQ_HOME for the demo's controller state
	Nodes      []Node
	servers    []*sshd.Server
	lock       *os.File
}

// Node is one running demo node.
type Node struct {
	NodeSpec
	Port int
	Dir  string
	GPUs []gpusim.GPU
}

// Names lists the node aliases.
func (c *Cluster) Names() []string {
	var n []string
	for _, x := range c.Nodes {
		n = append(n, x.Name)
	}
	return n
}

// Env is what a user exports to point sshq at the demo.
func (c *Cluster) Env() []string {
	return []string{
		"SSHQ_SSH_CONFIG=" + c.ConfigPath,
		"SSHQ_NODES=" + strings.Join(c.Names(), ","),
		"SSHQ_HOME=" + c.Home,
	}
}

// StopSignals end a running demo, which then stops its nodes and jobs:
// Ctrl-C, a kill, and SIGHUP, which a closed terminal sends; by default
// SIGHUP would end the process without that cleanup and leave the jobs'
// tmux servers running.
var StopSignals = []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP}

// UntilStopped returns a context that ends with ctx or at the first of
// StopSignals. Call it before Start, so a signal during start-up is a
// stop too, and call stop when done.
func UntilStopped(ctx context.Context) (_ context.Context, stop context.CancelFunc) {
	return signal.NotifyContext(ctx, StopSignals...)
}

// ErrNoTmux is returned when tmux, which runs every job, is missing.
var ErrNoTmux = errors.New("sshq demo needs tmux, which runs every job on a node: install it with `sudo apt-get install -y tmux` (Debian/Ubuntu), `sudo dnf install -y tmux` (Fedora) or `brew install tmux` (macOS)")

// Start starts the nodes under dir, replacing any earlier demo there.
func Start(dir string, specs []NodeSpec) (*Cluster, error) {
	for _, tool := range []string{"tmux", "flock", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			if tool == "tmux" {
				return nil, ErrNoTmux
			}
			return nil, fmt.Errorf("sshq demo needs %s on this machine (util-linux provides flock): %w", tool, err)
		}
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	// One demo per directory: a second one would replace the first's
	// nodes, keys and state under its feet.
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sshq demo: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("another sshq demo is running in %s: use that one (its exports are in its output), stop it with Ctrl-C, or start this one elsewhere with --dir", dir)
	}
	killUnder(dir) // jobs of an earlier demo that was killed hard
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("cleaning the old demo in %s: %w", dir, err)
	}
	c := &Cluster{Dir: dir, ConfigPath: filepath.Join(dir, "ssh_config"), Home: filepath.Join(dir, "sshq-home"), lock: lock}
	if err := os.MkdirAll(c.Home, 0o700); err != nil {
		c.Close()
		return nil, err
	}
	_, clientKey, _ := ed25519.GenerateKey(rand.Reader)
	keyPath := filepath.Join(dir, "id_ed25519")
	if err := writeKey(keyPath, clientKey); err != nil {
		return nil, err
	}
	clientSigner, _ := ssh.NewSignerFromKey(clientKey)
	u, err := user.Current()
	if err != nil {
		return nil, err
	}
	var known, cfg strings.Builder
	for _, spec := range specs {
		n := Node{NodeSpec: spec, Dir: filepath.Join(dir, "nodes", spec.Name)}
		home := filepath.Join(n.Dir, "home")
		for _, d := range []string{home, filepath.Join(n.Dir, "tmux")} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				c.Close()
				return nil, err
			}
		}
		n.GPUs = spec.GPUs(dir + "/" + spec.Name)
		if err := gpusim.Install(n.Dir, n.GPUs); err != nil {
			c.Close()
			return nil, err
		}
		_, hostKey, _ := ed25519.GenerateKey(rand.Reader)
		hostSigner, _ := ssh.NewSignerFromKey(hostKey)
		srv, err := listen(spec.IP, sshd.Config{
			HostKey:        hostSigner,
			AuthorizedKeys: []ssh.PublicKey{clientSigner.PublicKey()},
			Home:           home,
			Env: map[string]string{
				"HOME":               home,
				"TMUX_TMPDIR":        filepath.Join(n.Dir, "tmux"),
				"SSHQ_LEASE_DIR":     filepath.Join(n.Dir, "leases"),
				"SSHQ_SIM_DIR":       gpusim.SimDir(n.Dir),
				"SSHQ_POLL_INTERVAL": "0.5",
				"PATH":               filepath.Join(n.Dir, "bin") + ":/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
				"LANG":               "C.UTF-8",
			},
		})
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("starting demo node %s: %w", spec.Name, err)
		}
		c.servers = append(c.servers, srv)
		n.IP, n.Port = hostOf(srv.Addr()), srv.Port()
		c.Nodes = append(c.Nodes, n)
		fmt.Fprintf(&known, "[%s]:%d %s", n.IP, n.Port, ssh.MarshalAuthorizedKey(hostSigner.PublicKey()))
		fmt.Fprintf(&cfg, "Host %s\n  HostName %s\n  Port %d\n", n.Name, n.IP, n.Port)
	}
	khPath := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(khPath, []byte(known.String()), 0o600); err != nil {
		c.Close()
		return nil, err
	}
	// The same checks as a real cluster: a pinned host key, StrictHostKeyChecking yes.
	fmt.Fprintf(&cfg, "Host demo-*\n  User %s\n  IdentityFile %s\n  IdentitiesOnly yes\n  IdentityAgent none\n  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n  ConnectTimeout 5\n",
		u.Username, keyPath, khPath)
	if err := os.WriteFile(c.ConfigPath, []byte(cfg.String()), 0o600); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// listen binds the preferred address, falling back to 127.0.0.1 where only
// that loopback address exists (macOS).
func listen(ip string, cfg sshd.Config) (*sshd.Server, error) {
	cfg.Addr = ip + ":0"
	srv, err := sshd.Start(cfg)
	if err == nil {
		return srv, nil
	}
	cfg.Addr = "127.0.0.1:0"
	return sshd.Start(cfg)
}

func hostOf(addr string) string {
	h, _, _ := strings.Cut(addr, ":")
	return h
}

func writeKey(path string, key ed25519.PrivateKey) error {
	blk, err := ssh.MarshalPrivateKey(key, "sshq demo")
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(blk), 0o600)
}

// Close stops the nodes and every job they started: the tmux servers and
// whatever a job left running (tmux would only SIGHUP them).
func (c *Cluster) Close() {
	for _, s := range c.servers {
		s.Close()
	}
	for _, n := range c.Nodes {
		cmd := exec.Command("tmux", "-L", "sshq", "kill-server")
		cmd.Env = append(os.Environ(), "TMUX_TMPDIR="+filepath.Join(n.Dir, "tmux"))
		_ = cmd.Run()
	}
	killUnder(c.Dir)
	if c.lock != nil {
		c.lock.Close() // releases the flock
	}
}

// killUnder SIGKILLs every process whose HOME or TMUX_TMPDIR lies in dir:
// what the demo's sessions started, which outlives the SSH servers by design.
func killUnder(dir string) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		for _, kv := range strings.Split(string(env), "\x00") {
			k, v, _ := strings.Cut(kv, "=")
			if (k == "HOME" || k == "TMUX_TMPDIR") && strings.HasPrefix(v, dir+"/") {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				break
			}
		}
	}
}
