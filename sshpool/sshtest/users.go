package sshtest

import (
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// killUnder kills every process whose environment names a directory under
// dir as HOME or TMUX_TMPDIR: the tmux servers and jobs a node's sessions
// started, which outlive sshd by design.
func killUnder(dir string) {
	KillByEnv(func(k, v string) bool {
		// dir+"/": /tmp/TestA12/001 must not take /tmp/TestA123's jobs.
		return (k == "HOME" || k == "TMUX_TMPDIR") && (v == dir || strings.HasPrefix(v, dir+"/"))
	})
}

// KillByEnv SIGKILLs every process but this one that has an environment
// variable k=v for which match is true. A test's daemons leave processes
// behind that no parent will reap (tmux servers, jobs); their environment
// is what marks them as that test's.
func KillByEnv(match func(k, v string) bool) {
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, kv := range strings.Split(string(data), "\x00") {
			k, v, _ := strings.Cut(kv, "=")
			if match(k, v) {
				var pid int
				fmt.Sscanf(filepath.Base(filepath.Dir(p)), "%d", &pid)
				if pid > 0 && pid != os.Getpid() {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
				break
			}
		}
	}
}

// User is a Unix user AddUsers made on a node.
type User struct {
	Name  string // the login
	UID   int
	Alias string // the ssh config's Host for this user on the node
	Home  string
}

// AddUsers makes count new Unix users able to ssh into n, each with its own
// HOME and tmux directory on the node. They share one lease directory that
// none of them owns in advance, $SSHQ_LEASE_DIR = <node>/tmp/sshq-leases,
// in a root-owned sticky directory as /tmp is. n's sshd restarts to let
// them in. It needs root (tb is skipped otherwise); the users are removed
// when the test ends, after the cluster's processes.
func (c *Cluster) AddUsers(tb testing.TB, n *Node, count int, shell string) []User {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("making Unix users needs root (CI runs as root)")
	}
	// The node lives under tb.TempDir(), whose directories are 0700: open
	// the path for the new users, and let them read the one
	// authorized_keys file sshd consults for everyone.
	for d := n.Dir; d != filepath.Dir(d) && d != filepath.Clean(os.TempDir()); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	for _, p := range []string{filepath.Join(n.Dir, "authorized_keys"), n.BinDir, n.SimDir} {
		fi, err := os.Stat(p)
		if err != nil {
			tb.Fatal(err)
		}
		os.Chmod(p, fi.Mode().Perm()|0o055)
	}
	shared := filepath.Join(n.Dir, "tmp")
	if err := os.MkdirAll(shared, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(shared, os.ModeSticky|0o777); err != nil {
		tb.Fatal(err)
	}
	n.Env["SSHQ_LEASE_DIR"] = filepath.Join(shared, "sshq-leases")

	var conf strings.Builder
	var users []User
	tb.Cleanup(func() {
		c.Close() // their processes first: userdel refuses a user still running
		for _, u := range users {
			if out, err := exec.Command("userdel", "-f", u.Name).CombinedOutput(); err != nil {
				tb.Errorf("userdel %s: %v %s", u.Name, err, out)
			}
		}
	})
	for i := range count {
		b := make([]byte, 4)
		rand.Read(b)
		name := "sq" + fmt.Sprintf("%x", b)
		dir := filepath.Join(n.Dir, "users", name)
		home, tmux := filepath.Join(dir, "home"), filepath.Join(dir, "tmux")
		// -p '*': no password, but not locked ("!"), which sshd without PAM refuses.
		if out, err := exec.Command("useradd", "-M", "-d", home, "-s", shell, "-p", "*", name).CombinedOutput(); err != nil {
			tb.Fatalf("useradd: %v %s", err, out)
		}
		u, err := user.Lookup(name)
		if err != nil {
			tb.Fatal(err)
		}
		var uid, gid int
		fmt.Sscan(u.Uid, &uid)
		fmt.Sscan(u.Gid, &gid)
		alias := fmt.Sprintf("%s-u%d", n.Name, i+1)
		users = append(users, User{Name: name, UID: uid, Alias: alias, Home: home})
		for _, d := range []string{home, tmux} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				tb.Fatal(err)
			}
			if err := os.Chown(d, uid, gid); err != nil {
				tb.Fatal(err)
			}
		}
		os.Chmod(dir, 0o755)
		os.Chmod(filepath.Dir(dir), 0o755)
		// The first SetEnv that applies wins, whole: the user's block lists
		// the node's environment with its own HOME and TMUX_TMPDIR.
		env := map[string]string{}
		for k, v := range n.Env {
			env[k] = v
		}
		env["HOME"], env["TMUX_TMPDIR"] = home, tmux
		var kv []string
		for k, v := range env {
			kv = append(kv, quoteSSHD(k+"="+v))
		}
		sort.Strings(kv)
		fmt.Fprintf(&conf, "Match User %s\n  SetEnv %s\n", name, strings.Join(kv, " "))
		if err := c.AddHost(fmt.Sprintf("Host %s\n  HostName %s\n  Port %d\n  User %s\n", alias, n.Addr, n.Port, name)); err != nil {
			tb.Fatal(err)
		}
	}
	// writeSSHDConfig puts SSHDExtra first, before the global keywords that
	// a Match block may not hold; a Match inside an Include ends with its
	// file.
	inc := filepath.Join(n.Dir, "users.conf")
	if err := os.WriteFile(inc, []byte(conf.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
	n.SSHDExtra = "Include " + inc
	if err := n.Restart(); err != nil {
		tb.Fatal(err)
	}
	return users
}
