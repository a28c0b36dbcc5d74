package sshpool

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshq/sshq/inventory"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// withSFTPServers points the shell fallback at sshd_config cfg and the
// candidate paths for the length of the test. Not parallel: the settings
// are the package's.
func withSFTPServers(t *testing.T, cfg string, paths ...string) {
	oldCfg, oldPaths := sshdConfigPath, sftpServerPaths
	sshdConfigPath, sftpServerPaths = cfg, paths
	t.Cleanup(func() { sshdConfigPath, sftpServerPaths = oldCfg, oldPaths })
}

func dialNode(t *testing.T, opts sshtest.Options) (*Client, *sshtest.Node, context.Context) {
	t.Helper()
	c := sshtest.Start(t, opts)
	cfg, err := inventory.Load(c.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	p := New(inventory.NewResolver(cfg))
	t.Cleanup(func() { p.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	cl, err := p.Get(ctx, "node1")
	if err != nil {
		t.Fatal(err)
	}
	return cl, c.Nodes[0], ctx
}

// The fallback runs the sftp-server the node's sshd_config names, with the
// arguments the admin gave it there, before any of the usual places.
func TestSFTPFallbackRunsTheConfiguredServer(t *testing.T) {
	real := sshtest.SFTPServerPath()
	if real == "" {
		sshtest.Require(t)
	}
	dir := t.TempDir()
	wrapper := filepath.Join(dir, "logging-sftp-server")
	os.WriteFile(wrapper, []byte("#!/bin/sh\necho \"$*\" > \""+dir+"/args\"\nexec "+real+" \"$@\"\n"), 0o755)
	cfg := filepath.Join(dir, "sshd_config")
	os.WriteFile(cfg, []byte("# Subsystem sftp /commented/out\nPort 22\n  subsystem\tsftp  "+wrapper+" -l INFO  -f AUTH\n"), 0o644)
	withSFTPServers(t, cfg, real)
	cl, node, ctx := dialNode(t, sshtest.Options{Nodes: 1, SFTPSubsystem: "none"})
	os.WriteFile(filepath.Join(node.Home, ".bashrc"), []byte("echo hello from bashrc\n"), 0o644)
	sc, release, err := cl.SFTP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if wd, err := sc.Getwd(); err != nil || wd != node.Home {
		t.Errorf("sftp-server started in %q (%v), want the node's home %s", wd, err, node.Home)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "args")); strings.TrimSpace(string(b)) != "-l INFO -f AUTH" {
		t.Errorf("configured sftp-server ran with %q, want the config's arguments", b)
	}
}

// When neither the subsystem nor a sftp-server of the node's works, the
// error says what is wrong and what to do.
func TestSFTPFailureSaysWhatToDo(t *testing.T) {
	withSFTPServers(t, "/nonexistent/sshd_config", "/nonexistent/sftp-server")
	t.Run("greeting", func(t *testing.T) {
		cl, node, ctx := dialNode(t, sshtest.Options{Nodes: 1})
		os.WriteFile(filepath.Join(node.Home, ".bashrc"), []byte("echo 'Welcome to node1'\n"), 0o644)
		_, _, err := cl.SFTP(ctx)
		if err == nil {
			t.Fatal("SFTP worked without any sftp-server to run past the greeting")
		}
		for _, want := range []string{"node1", `"Welcome to node1"`, "~/.bashrc", "[[ $- == *i* ]] || return", "/nonexistent/sftp-server", "openssh-sftp-server"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q: %v", want, err)
			}
		}
		if n := len(cl.slots); n != 0 {
			t.Errorf("%d channel slots still held after the failure", n)
		}
	})
	t.Run("no subsystem", func(t *testing.T) {
		cl, _, ctx := dialNode(t, sshtest.Options{Nodes: 1, SFTPSubsystem: "none"})
		_, _, err := cl.SFTP(ctx)
		if err == nil {
			t.Fatal("SFTP worked without a subsystem or a sftp-server")
		}
		for _, want := range []string{"node1", "Subsystem sftp", "sshd_config", "openssh-sftp-server"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q: %v", want, err)
			}
		}
		if strings.Contains(err.Error(), "bashrc") {
			t.Errorf("error blames a .bashrc that prints nothing: %v", err)
		}
	})
}
