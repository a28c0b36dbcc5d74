package orchestrator

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sshq/sshq/inventory"
	"github.com/sshq/sshq/orchestrator/task"
)

func sshConfig(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config")
	cfg := "Host gpu-1 gpu-2\n  HostName 127.0.0.1\nHost dgx\n  HostName 127.0.0.2\n"
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func usage(t *testing.T, err error, want ...string) {
	t.Helper()
	var ue *UsageError
	if !errors.As(err, &ue) {
		t.Fatalf("want a usage error, got %v", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
}

// A name that is not a Host of the ssh config is a typo: refused before
// anything is looked up or dialed, naming the hosts there are.
func TestUnknownNodeIsRefusedBeforeAnyDial(t *testing.T) {
	t.Parallel()
	ctrl, err := OpenController(ControllerOptions{Home: t.TempDir(), SSHConfig: sshConfig(t), Nodes: "gpu-1,nosuch", NodesFrom: "--nodes"})
	if err != nil {
		t.Fatal(err)
	}
	defer ctrl.Close()
	v, err := ctrl.Status(context.Background())
	if v != nil {
		t.Fatalf("status probed the nodes: %+v", v.Nodes)
	}
	usage(t, err, "--nodes: nosuch is not a Host", "gpu-1, gpu-2, dgx")
}

// init checks the list before it writes: a good config.yaml is never
// replaced by a bad one.
func TestInitRefusesHostsNotInTheSSHConfig(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	ctrl, err := OpenController(ControllerOptions{Home: home, SSHConfig: sshConfig(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer ctrl.Close()
	if _, err := ctrl.Init([]string{"gpu-*"}); err != nil {
		t.Fatal(err)
	}
	_, err = ctrl.Init([]string{"dgx", "gpu-3"})
	usage(t, err, "gpu-3 is not a Host", "gpu-1, gpu-2, dgx", "left as it was")
	if s, err := inventory.LoadSettings(home); err != nil || strings.Join(s.Nodes, ",") != "gpu-*" {
		t.Errorf("config.yaml now lists %q (%v), want the earlier gpu-*", s.Nodes, err)
	}
	if v, err := ctrl.Init([]string{"dgx", "gpu-2"}); err != nil || strings.Join(v.Nodes, ",") != "dgx,gpu-2" {
		t.Errorf("init dgx gpu-2: %+v %v", v, err)
	}
}

// A new user with no ssh config at all is told so, and pointed at the demo.
func TestNoSSHConfigSuggestsTheDemo(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	ctrl, err := OpenController(ControllerOptions{Home: filepath.Join(home, ".sshq")})
	if err != nil {
		t.Fatal(err)
	}
	defer ctrl.Close()
	_, err = ctrl.Status(context.Background())
	usage(t, err, "no ssh config at "+filepath.Join(home, ".ssh", "config"), "sshq demo")
	_, err = ctrl.Init([]string{"gpu-1"})
	usage(t, err, "gpu-1 is not a Host", "no ssh config at", "sshq demo")
}

// Slurm login nodes are Hosts of the ssh config too, checked the same way;
// they are placement targets, never among the nodes, even when a node glob
// matches them; a Slurm cluster alone is a cluster.
func TestSlurmHostSelection(t *testing.T) {
	t.Parallel()
	cfg := sshConfig(t)
	open := func(o ControllerOptions) *Controller {
		t.Helper()
		o.SSHConfig = cfg
		if o.Home == "" {
			o.Home = t.TempDir()
		}
		ctrl, err := OpenController(o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ctrl.Close() })
		return ctrl
	}
	_, err := open(ControllerOptions{Nodes: "gpu-1", Slurm: "nosuch", SlurmFrom: "SSHQ_SLURM"}).Status(context.Background())
	usage(t, err, "SSHQ_SLURM: nosuch is not a Host", "gpu-1, gpu-2, dgx")

	ctrl := open(ControllerOptions{Nodes: "gpu-*,dgx", Slurm: "dgx"})
	if names, err := ctrl.Names(); err != nil || strings.Join(names, ",") != "gpu-1,gpu-2" {
		t.Errorf("nodes gpu-*,dgx with Slurm dgx: %v %v, want gpu-1,gpu-2", names, err)
	}
	ctrl = open(ControllerOptions{Slurm: "dgx"})
	if names, err := ctrl.Names(); err != nil || len(names) != 0 {
		t.Errorf("Slurm only: nodes %v, %v; want none and no error", names, err)
	}
	if hosts, err := ctrl.SlurmHosts(); err != nil || strings.Join(hosts, ",") != "dgx" {
		t.Errorf("Slurm hosts %v %v", hosts, err)
	}

	// Without a Slurm host, a multi-node task on fewer nodes than it asks
	// for is refused before anything is dialed.
	multi, _, err := task.Parse("t.yaml", []byte("num_nodes: 2\nrun: hostname\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = open(ControllerOptions{Nodes: "gpu-1"}).Plan(context.Background(), multi, "")
	if !errors.Is(err, ErrNoFit) {
		t.Errorf("num_nodes 2 on one node: %v, want ErrNoFit", err)
	}
	for _, want := range []string{"num_nodes 2", "the selection has 1", "--nodes", "--slurm"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("num_nodes 2 on one node: %v, want it to say %q", err, want)
		}
	}

	// init saves --slurm with the nodes, and keeps the saved list when
	// run without it; config.yaml's list is used when no flag names one.
	home := t.TempDir()
	if _, err := open(ControllerOptions{Home: home, Slurm: "dgx", SlurmFrom: "--slurm"}).Init([]string{"gpu-*"}); err != nil {
		t.Fatal(err)
	}
	if _, err := open(ControllerOptions{Home: home}).Init([]string{"gpu-1"}); err != nil {
		t.Fatal(err)
	}
	if s, err := inventory.LoadSettings(home); err != nil || strings.Join(s.Slurm, ",") != "dgx" || strings.Join(s.Nodes, ",") != "gpu-1" {
		t.Errorf("config.yaml: nodes %v slurm %v (%v)", s.Nodes, s.Slurm, err)
	}
	if hosts, err := open(ControllerOptions{Home: home}).SlurmHosts(); err != nil || strings.Join(hosts, ",") != "dgx" {
		t.Errorf("Slurm hosts from config.yaml: %v %v", hosts, err)
	}
}
