package slurmtest

import (
	"errors"
	"os"
	"sync"
	"testing"

	"github.com/sshq/sshq/sshpool/sshtest"
)

// Shared is one cluster and its login node serving every test of a
// package: the first Get starts them, later ones reuse them, and TestMain
// calls Close after m.Run. Starting Slurm takes a few seconds; once per
// package keeps the package fast.
//
//	var slurm = &slurmtest.Shared{}
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		slurm.Close()
//		os.Exit(code)
//	}
//
//	func TestX(t *testing.T) {
//		cl, login := slurm.Get(t)
//		...
//	}
type Shared struct {
	Options Options
	// Login shapes the login node; by default one sshd named "login".
	Login sshtest.Options

	once  sync.Once
	dir   string
	c     *Cluster
	login *sshtest.Cluster
	err   error
}

// Get returns the running cluster and its login node, starting them on
// first use; it skips or fails tb as Require does when Slurm is missing,
// and fails tb if they could not start.
func (s *Shared) Get(tb testing.TB) (*Cluster, *sshtest.Cluster) {
	tb.Helper()
	Require(tb)
	sshtest.Require(tb)
	s.once.Do(s.start)
	if s.err != nil {
		tb.Fatal(s.err)
	}
	return s.c, s.login
}

func (s *Shared) start() {
	s.dir, s.err = os.MkdirTemp("", "slurmtest-")
	if s.err != nil {
		return
	}
	s.c, s.err = NewCluster(s.dir+"/slurm", s.Options)
	if s.err != nil {
		return
	}
	if s.err = os.MkdirAll(s.dir+"/login", 0o755); s.err != nil {
		return
	}
	s.login, s.err = s.c.NewLogin(s.dir+"/login", s.Login)
}

// Close stops what Get started and removes its files.
func (s *Shared) Close() {
	s.once.Do(func() { s.err = errors.New("slurmtest: Get after Close") })
	if s.login != nil {
		s.login.Close()
	}
	if s.c != nil {
		s.c.Close()
	}
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}
