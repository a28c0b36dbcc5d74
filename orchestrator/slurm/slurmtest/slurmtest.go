// Package slurmtest starts a real single-node Slurm cluster for tests, the
// way net/http/httptest starts HTTP servers: munged with a key of its own,
// slurmctld and one slurmd per compute node in the foreground on free
// loopback ports (several nodes share this machine, as Slurm's developers
// run them), a generated
// slurm.conf with fake GPUs as gres (File=/dev/tty1..N, which Slurm hands
// out and exports as CUDA_VISIBLE_DEVICES like real ones), no accounting
// and no cgroups, all under one directory. Slurm's client commands reach it
// through SLURM_CONF; a login node reached over real sshd
// (sshpool/sshtest) gets that variable in its login environment, so a test
// drives the cluster exactly as a user's ssh config would.
//
// When the Slurm or munge binaries are missing, Start skips the test with
// the install command, unless the CI environment variable is set, where it
// fails instead.
package slurmtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sshq/sshq/sshpool/sshtest"
)

// InstallHint is the command that installs what this package needs.
const InstallHint = "sudo apt-get install -y slurm-wlm munge"

// Options shape a cluster; the zero value is one node with two A100s.
type Options struct {
	// Nodes is how many compute nodes to run; default 1. One node is
	// named after this machine (`hostname -s`), several are cn1..cnN.
	Nodes int
	// CPUs and MemoryMB are what each node declares (config_overrides makes
	// slurmd believe them whatever the machine has); default 8 and 4000.
	CPUs     int
	MemoryMB int
	// GPUs is how many fake GPUs of GPUType each node offers; default 2
	// of "a100". A negative GPUs gives the nodes no gres at all.
	GPUs    int
	GPUType string
	// Partition names the node's one (default) partition; default "gpu".
	Partition string
	// KillWait is Slurm's grace between SIGTERM and SIGKILL on cancel and
	// time limit, in seconds; default 2 to keep tests short.
	KillWait int
	// ConfExtra is appended to slurm.conf.
	ConfExtra string
}

func (o *Options) defaults() {
	if o.Nodes == 0 {
		o.Nodes = 1
	}
	if o.CPUs == 0 {
		o.CPUs = 8
	}
	if o.MemoryMB == 0 {
		o.MemoryMB = 4000
	}
	if o.GPUs == 0 {
		o.GPUs = 2
	}
	if o.GPUType == "" {
		o.GPUType = "a100"
	}
	if o.Partition == "" {
		o.Partition = "gpu"
	}
	if o.KillWait == 0 {
		o.KillWait = 2
	}
}

// Cluster is a running Slurm: one controller and its compute nodes, all on
// this machine.
type Cluster struct {
	Dir       string   // everything the cluster writes: conf, state, spool, logs
	ConfPath  string   // slurm.conf; clients find it through SLURM_CONF
	Host      string   // this machine's short host name, where every node runs
	Nodes     []string // the compute nodes' Slurm names
	Partition string   // the one partition, holding every node
	GPUType   string
	GPUs      int // per node

	opts    Options
	sockDir string
	procs   []*daemon
}

type daemon struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
}

// Binaries are the programs the cluster needs, daemons then clients.
var Binaries = []string{"munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun"}

// Missing lists the Binaries not found on this machine.
func Missing() []string {
	var out []string
	for _, b := range Binaries {
		if lookPath(b) == "" {
			out = append(out, b)
		}
	}
	return out
}

// lookPath also looks in the sbin directories, which a test's PATH often
// lacks.
func lookPath(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	return ""
}

// Require skips (or, in CI, fails) tb when Slurm or munge is not installed.
func Require(tb testing.TB) {
	tb.Helper()
	m := Missing()
	if len(m) == 0 {
		return
	}
	sshtest.SkipUnlessCI(tb, fmt.Sprintf("Slurm not installed (missing %s); install it with `%s` (Debian/Ubuntu)", strings.Join(m, ", "), InstallHint))
}

// Start starts a cluster for one test and stops it when the test ends; on
// failure the test log gets the tail of the daemons' logs.
func Start(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	Require(tb)
	c, err := NewCluster(tb.TempDir(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Log(c.LogTail(40))
		}
		c.Close()
	})
	return c
}

// NewCluster starts a cluster under dir and returns once its node is idle
// (ready to run jobs); the caller must Close it. Use it (or Shared) to
// share one cluster between the tests of a package.
func NewCluster(dir string, opts Options) (*Cluster, error) {
	opts.defaults()
	if m := Missing(); len(m) > 0 {
		return nil, fmt.Errorf("slurmtest: missing %s: `%s`", strings.Join(m, ", "), InstallHint)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	host, err := os.Hostname()
	if err != nil {
		return nil, err
	}
	host, _, _ = strings.Cut(host, ".")
	c := &Cluster{Dir: dir, ConfPath: filepath.Join(dir, "slurm.conf"), Host: host,
		Partition: opts.Partition, GPUType: opts.GPUType, GPUs: max(opts.GPUs, 0), opts: opts}
	if opts.Nodes == 1 {
		c.Nodes = []string{host}
	} else {
		for i := 1; i <= opts.Nodes; i++ {
			c.Nodes = append(c.Nodes, fmt.Sprintf("cn%d", i))
		}
	}
	dirs := []string{"state", "log"}
	for _, n := range c.Nodes {
		dirs = append(dirs, filepath.Join("spool", n))
	}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	// munged insists that every directory above its socket be searchable
	// by all, which a test's 0700 temp dir is not: the socket gets a short
	// directory of its own.
	if c.sockDir, err = os.MkdirTemp("", "slurmtest-munge-"); err != nil {
		return nil, err
	}
	if err := os.Chmod(c.sockDir, 0o755); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A port found free can be taken by another process before the daemon
	// binds it; a daemon that exits at start gets fresh ports and another
	// try.
	for attempt := 1; ; attempt++ {
		if err := c.writeFiles(); err != nil {
			c.Close()
			return nil, err
		}
		err := c.start(ctx)
		if err == nil {
			return c, nil
		}
		err = fmt.Errorf("%w\n%s", err, c.LogTail(30))
		if !errors.Is(err, errExited) || attempt == 3 {
			c.Close()
			return nil, err
		}
		c.stopDaemons()
		_ = os.Remove(c.mungeSocket())
	}
}

func (c *Cluster) mungeSocket() string { return filepath.Join(c.sockDir, "munge.sock") }

func (c *Cluster) writeFiles() error {
	key := make([]byte, 1024)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "munge.key"), key, 0o600); err != nil {
		return err
	}
	// Each slurmd listens on a port of its own: they share one address.
	ports, err := freePorts(1 + len(c.Nodes))
	if err != nil {
		return err
	}
	gres, err := c.gresConf()
	if err != nil {
		return err
	}
	// No cgroup.conf: Slurm 22.05 knows no CgroupPlugin=disabled, and
	// with proctrack/linuxproc and task/none nothing loads a cgroup
	// plugin but slurmd's autodetection, which works without systemd.
	files := map[string]string{"slurm.conf": c.slurmConf(ports[0], ports[1:]), "gres.conf": gres}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(c.Dir, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) env() []string {
	return append(os.Environ(), "SLURM_CONF="+c.ConfPath, "SLURMTEST_DIR="+c.Dir)
}

func (c *Cluster) start(ctx context.Context) error {
	if err := c.spawn("munged", "-F", "--key-file="+filepath.Join(c.Dir, "munge.key"),
		"--socket="+c.mungeSocket(), "--pid-file="+filepath.Join(c.Dir, "munged.pid"),
		"--log-file="+filepath.Join(c.Dir, "log", "munged.log"),
		"--seed-file="+filepath.Join(c.Dir, "munged.seed")); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "munged to listen", func() bool {
		_, err := os.Stat(c.mungeSocket())
		return err == nil
	}); err != nil {
		return err
	}
	// -i: a fresh state directory has no state to recover.
	if err := c.spawn("slurmctld", "-D", "-i", "-f", c.ConfPath); err != nil {
		return err
	}
	for _, n := range c.Nodes {
		if err := c.spawn("slurmd-"+n, "-D", "-f", c.ConfPath, "-N", n); err != nil {
			return err
		}
	}
	return c.waitFor(ctx, "every node to be idle in sinfo", func() bool {
		out, err := c.Command(ctx, "sinfo", "-h", "-N", "-o", "%T").Output()
		return err == nil && strings.Repeat("idle\n", len(c.Nodes)) == string(out)
	})
}

// spawn starts a daemon in the foreground in its own process group, its
// output in log/<name>.out.
func (c *Cluster) spawn(name string, args ...string) error {
	prog, _, _ := strings.Cut(name, "-")
	out, err := os.Create(filepath.Join(c.Dir, "log", name+".out"))
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(lookPath(prog), args...)
	cmd.Env = c.env()
	cmd.Dir = c.Dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("slurmtest: starting %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(d.exited) }()
	c.procs = append(c.procs, d)
	return nil
}

// waitFor polls cond until it holds, a daemon exits or ctx ends.
func (c *Cluster) waitFor(ctx context.Context, what string, cond func() bool) error {
	for {
		if cond() {
			return nil
		}
		for _, d := range c.procs {
			select {
			case <-d.exited:
				return fmt.Errorf("slurmtest: %s %w (%v) while waiting for %s", d.name, errExited, d.cmd.ProcessState, what)
			default:
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("slurmtest: gave up waiting for %s: %w", what, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freePorts picks n distinct ports that nothing listens on, on any
// address (slurmctld binds them all), below the ephemeral range that
// outgoing connections draw from, so a passing connection cannot take one
// before the daemon binds it.
func freePorts(n int) ([]int, error) {
	var ports []int
	seen := map[int]bool{}
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			return nil, fmt.Errorf("slurmtest: no free port found between 10000 and 30000")
		}
		var b [2]byte
		_, _ = rand.Read(b[:])
		p := 10000 + (int(b[0])<<8|int(b[1]))%20000
		if seen[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
		if err != nil {
			continue
		}
		defer l.Close()
		seen[p] = true
		ports = append(ports, p)
	}
	return ports, nil
}

var errExited = errors.New("exited")

// Env is what a login environment needs to use the cluster: give it to
// sshtest.Options.Env (StartLogin does).
func (c *Cluster) Env() map[string]string {
	return map[string]string{"SLURM_CONF": c.ConfPath}
}

// Command prepares a Slurm client command (sinfo, squeue, scontrol...)
// against the cluster, run on this machine, for tests that look behind the
// code under test.
func (c *Cluster) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	p := lookPath(name)
	if p == "" {
		p = name
	}
	cmd := exec.CommandContext(ctx, p, args...)
	cmd.Env = c.env()
	return cmd
}

// Output runs a Slurm client command and returns its stdout, or an error
// holding its stderr.
func (c *Cluster) Output(ctx context.Context, name string, args ...string) (string, error) {
	var stderr bytes.Buffer
	cmd := c.Command(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// StartLogin starts a login node for the cluster for one test: a real sshd
// (sshtest) on this machine whose login environment has the cluster's
// SLURM_CONF, so sbatch and squeue over ssh reach this cluster.
func (c *Cluster) StartLogin(tb testing.TB, opts sshtest.Options) *sshtest.Cluster {
	tb.Helper()
	return sshtest.Start(tb, c.loginOptions(opts))
}

// NewLogin is StartLogin for sharing between tests; the caller must Close
// the result.
func (c *Cluster) NewLogin(dir string, opts sshtest.Options) (*sshtest.Cluster, error) {
	return sshtest.NewCluster(dir, c.loginOptions(opts))
}

func (c *Cluster) loginOptions(opts sshtest.Options) sshtest.Options {
	env := map[string]string{}
	for k, v := range opts.Env {
		env[k] = v
	}
	for k, v := range c.Env() {
		env[k] = v
	}
	opts.Env = env
	if opts.Nodes == 0 && len(opts.Names) == 0 {
		opts.Names = []string{"login"}
	}
	return opts
}

// LogTail returns the last n lines of each daemon's log, for a failing
// test's output.
func (c *Cluster) LogTail(n int) string {
	var b strings.Builder
	names := []string{"slurmctld.log", "slurmctld.out", "munged.out"}
	for _, n := range c.Nodes {
		names = append(names, "slurmd-"+n+".log", "slurmd-"+n+".out")
	}
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(c.Dir, "log", name))
		if err != nil || len(data) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", name, strings.Join(lines, "\n"))
	}
	return b.String()
}

// Close cancels every job, stops the daemons and kills whatever the jobs
// left behind (slurmstepd outlives slurmd by design).
func (c *Cluster) Close() {
	if c.alive() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = c.Command(ctx, "scancel", "--full", "--partition="+c.Partition).Run()
		_ = c.waitFor(ctx, "the queue to empty", func() bool {
			out, err := c.Command(ctx, "squeue", "-h", "-o", "%i").Output()
			return err != nil || strings.TrimSpace(string(out)) == ""
		})
		cancel()
	}
	c.stopDaemons()
	if c.sockDir != "" {
		_ = os.RemoveAll(c.sockDir)
	}
}

// stopDaemons stops the daemons, newest first, and what they started.
func (c *Cluster) stopDaemons() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		d := c.procs[i]
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
			<-d.exited
		}
	}
	c.procs = nil
	killMarked(c.Dir)
}

func (c *Cluster) alive() bool {
	if len(c.procs) == 0 {
		return false
	}
	for _, d := range c.procs {
		select {
		case <-d.exited:
			return false
		default:
		}
	}
	return true
}

// killMarked kills every process whose environment names dir as
// SLURMTEST_DIR (the daemons and the slurmstepds they forked) or whose
// SLURM_CONF lies under dir (the jobs).
func killMarked(dir string) {
	sshtest.KillByEnv(func(k, v string) bool {
		return (k == "SLURMTEST_DIR" && v == dir) || (k == "SLURM_CONF" && strings.HasPrefix(v, dir+"/"))
	})
}
