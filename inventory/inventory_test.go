package inventory

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// writeTree creates files under a fresh HOME and returns it.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	home := t.TempDir()
	for name, body := range files {
		p := filepath.Join(home, name)
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return home
}

const mainConfig = `# team config
Include config.d/*.conf
Host gpu-1 gpu-2
  HostName=10.0.0.%h
  User "alice"
Host gpu-3
  HostName 10.0.0.3
  Port 2222
  IdentityFile ~/.ssh/id_gpu3
  IdentityFile %d/.ssh/id_%r_%h
  ProxyJump bastion,inner
  UserKnownHostsFile ~/.ssh/kh_a ~/.ssh/kh_b
Match final all
  ServerAliveInterval 7
Match exec "true"
  Port 9999
Host !gpu-3 gpu-*
  Port 2200
Host *
  ConnectTimeout 4
  StrictHostKeyChecking accept-new
  HashKnownHosts yes
  User defaultuser
`

func TestResolveIncludeWildcardMatch(t *testing.T) {
	home := writeTree(t, map[string]string{
		".ssh/config":             mainConfig,
		".ssh/config.d/10-a.conf": "Host cpu-box\n  HostName 10.1.0.1\n  IdentitiesOnly yes\n",
		".ssh/config.d/20-b.conf": "Host bastion inner\n  User jump\n",
	})
	t.Setenv("HOME", home)
	cfg, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	wantAliases := []string{"cpu-box", "bastion", "inner", "gpu-1", "gpu-2", "gpu-3"}
	if !reflect.DeepEqual(cfg.Aliases, wantAliases) {
		t.Errorf("aliases %v, want %v", cfg.Aliases, wantAliases)
	}
	resolvers := map[string]*Resolver{"fallback": {Config: cfg}}
	if r := NewResolver(cfg); r.SSHPath != "" {
		resolvers["ssh -G"] = r
	}
	for name, r := range resolvers {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			g3, err := r.Resolve(ctx, "gpu-3")
			if err != nil {
				t.Fatal(err)
			}
			if g3.HostName != "10.0.0.3" || g3.Port != 2222 || g3.User != "defaultuser" {
				t.Errorf("gpu-3 = %s@%s:%d", g3.User, g3.HostName, g3.Port)
			}
			wantIDs := []string{home + "/.ssh/id_gpu3", home + "/.ssh/id_defaultuser_10.0.0.3"}
			if !reflect.DeepEqual(g3.IdentityFiles, wantIDs) {
				t.Errorf("identity files %v, want %v", g3.IdentityFiles, wantIDs)
			}
			if g3.ProxyJump != "bastion,inner" || len(g3.ProxyJumps()) != 2 {
				t.Errorf("proxyjump %q", g3.ProxyJump)
			}
			// ssh expands ~ from the passwd entry, not $HOME.
			if len(g3.UserKnownHostsFiles) != 2 || !strings.HasSuffix(g3.UserKnownHostsFiles[0], "/.ssh/kh_a") || !strings.HasSuffix(g3.UserKnownHostsFiles[1], "/.ssh/kh_b") {
				t.Errorf("known hosts %v", g3.UserKnownHostsFiles)
			}
			if g3.ConnectTimeout != 4*time.Second || g3.StrictHostKeyChecking != "accept-new" || !g3.HashKnownHosts {
				t.Errorf("gpu-3 settings %+v", g3)
			}
			if g3.ServerAliveInterval != 7*time.Second {
				t.Errorf("Match final all not honoured: ServerAliveInterval %s", g3.ServerAliveInterval)
			}
			g1, _ := r.Resolve(ctx, "gpu-1")
			// `Match exec "true"` matches in OpenSSH and sets Port first;
			// the fallback cannot run it and skips the block.
			wantPort := 2200
			if name == "ssh -G" {
				wantPort = 9999
			}
			if g1.HostName != "10.0.0.gpu-1" || g1.User != "alice" || g1.Port != wantPort {
				t.Errorf("gpu-1 = %s@%s:%d", g1.User, g1.HostName, g1.Port)
			}
			cb, _ := r.Resolve(ctx, "cpu-box")
			if !cb.IdentitiesOnly || cb.HostName != "10.1.0.1" {
				t.Errorf("included host lost its settings: %+v", cb)
			}
			b, _ := r.Resolve(ctx, "bastion")
			if b.User != "jump" {
				t.Errorf("bastion user %q", b.User)
			}
		})
	}
	// The fallback cannot evaluate `Match exec` and must say so once.
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0], "Match") {
		t.Errorf("warnings %q", cfg.Warnings)
	}
}

func TestExplicitConfigMustExist(t *testing.T) {
	t.Parallel()
	_, err := Load(filepath.Join(t.TempDir(), "nope"))
	if err == nil || !strings.Contains(err.Error(), "SSHQ_SSH_CONFIG") {
		t.Fatalf("want an error naming the fix, got %v", err)
	}
}

func TestSelect(t *testing.T) {
	t.Parallel()
	aliases := []string{"gpu-1", "gpu-2", "gpu-10", "cpu", "login"}
	for _, tc := range []struct {
		pats []string
		want []string
		err  string
	}{
		{[]string{"gpu-*"}, []string{"gpu-1", "gpu-2", "gpu-10"}, ""},
		{[]string{"gpu-?"}, []string{"gpu-1", "gpu-2"}, ""},
		{[]string{"gpu-*", "!gpu-10", "cpu"}, []string{"gpu-1", "gpu-2", "cpu"}, ""},
		{[]string{"elsewhere.example.org"}, []string{"elsewhere.example.org"}, ""},
		{[]string{"tpu-*"}, nil, "matches no Host"},
		{[]string{"gpu-*", "!gpu-*"}, nil, "select no node"},
	} {
		got, err := Select(aliases, tc.pats)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: err %v, want %q", tc.pats, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%v: got %v %v, want %v", tc.pats, got, err, tc.want)
		}
	}
}

func TestPatternsPrecedence(t *testing.T) {
	t.Parallel()
	s := Settings{Nodes: []string{"from-file"}}
	if p, src, _ := Patterns("a,b", "c", s); src != "--nodes" || !reflect.DeepEqual(p, []string{"a", "b"}) {
		t.Errorf("flag: %v %s", p, src)
	}
	if p, src, _ := Patterns("", "c d", s); src != "SSHQ_NODES" || !reflect.DeepEqual(p, []string{"c", "d"}) {
		t.Errorf("env: %v %s", p, src)
	}
	if _, src, _ := Patterns("", "", s); src != "config.yaml" {
		t.Errorf("file: %s", src)
	}
	if _, _, err := Patterns("", "", Settings{}); err != ErrNoNodes {
		t.Errorf("none: %v", err)
	}
}

func TestSettingsRoundTrip(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	if err := SaveSettings(home, Settings{Nodes: []string{"gpu-*", "box"}, Slurm: []string{"login"}}); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSettings(home)
	if err != nil || !reflect.DeepEqual(s.Nodes, []string{"gpu-*", "box"}) || !reflect.DeepEqual(s.Slurm, []string{"login"}) {
		t.Fatalf("%v %v", s, err)
	}
	d := Defaults{MemPerGPU: "60G", Mem: "16G", Time: "3d"}
	if err := SaveSettings(home, Settings{Nodes: []string{"a"}, Defaults: d}); err != nil {
		t.Fatal(err)
	}
	if s, err = LoadSettings(home); err != nil || s.Defaults != d {
		t.Errorf("defaults: %+v %v", s.Defaults, err)
	}
	// The files a person writes by hand.
	os.WriteFile(SettingsPath(home), []byte("nodes: [a]\ndefaults: {mem_per_gpu: 60G, time: 3d, mem: 16}\n"), 0o600)
	if s, err = LoadSettings(home); err != nil || s.Defaults != (Defaults{MemPerGPU: "60G", Time: "3d", Mem: "16"}) {
		t.Errorf("defaults as a person writes them: %+v %v", s.Defaults, err)
	}
	os.WriteFile(SettingsPath(home), []byte("nodes: [box]\nslurm: [login-1, login-2]\n"), 0o600)
	if s, err := LoadSettings(home); err != nil || !reflect.DeepEqual(s.Slurm, []string{"login-1", "login-2"}) {
		t.Errorf("slurm: %v %v", s.Slurm, err)
	}
	os.WriteFile(SettingsPath(home), []byte("nodes: [a\n"), 0o600)
	if _, err := LoadSettings(home); err == nil || !strings.Contains(err.Error(), "sshq init") {
		t.Errorf("bad yaml: %v", err)
	}
}

func TestExpandPathTokensAndEnv(t *testing.T) {
	t.Setenv("SSHQ_TEST_SOCK_DIR", "/run/agent")
	n := &Node{Name: "gpu", HostName: "10.0.0.1", User: "bob", Port: 2222}
	home := homeDir()
	for in, want := range map[string]string{
		"~/.ssh/id_%h_%r":              home + "/.ssh/id_10.0.0.1_bob",
		"%d/x-%n-%p":                   home + "/x-gpu-2222",
		"${SSHQ_TEST_SOCK_DIR}/s.sock": "/run/agent/s.sock",
		"/abs/100%%":                   "/abs/100%",
	} {
		if got := expandPath(in, n); got != want {
			t.Errorf("expandPath(%q) = %q, want %q", in, got, want)
		}
	}
}
