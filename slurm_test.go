package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/orchestrator/slurm/slurmtest"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// The same commands drive a real Slurm cluster through its login node as
// drive sshq's own nodes: one task file launched on a plain node and on
// Slurm, `wait` with its exit code, `logs`, `status` with the gres,
// `nodes`, and `cancel` of a running Slurm job.
func TestSlurmThroughTheBinary(t *testing.T) {
	t.Parallel()
	sl := slurmtest.Start(t, slurmtest.Options{})
	hosts := sl.StartLogin(t, sshtest.Options{Names: []string{"login", "box"}, Env: map[string]string{"SSHQ_POLL_INTERVAL": "0.2"}})
	if err := gpusim.Install(hosts.Node("box").Dir, gpusim.A100x2(t.Name())[:1]); err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	env := []string{"SSHQ_NODES=box", "SSHQ_SLURM=login"}
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "code"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "code", "data.txt"), []byte("from the workdir\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "task.yaml"), []byte(`name: same
workdir: code
resources:
  accelerators: A100:1
run: |
  echo "cvd=$CUDA_VISIBLE_DEVICES"
  cat data.txt
  exit 3
`), 0o644)
	os.WriteFile(filepath.Join(dir, "sleep.yaml"), []byte("resources:\n  accelerators: A100:1\nrun: sleep 300\n"), 0o644)

	for _, target := range []string{"box", "login"} {
		r := sshqIn(t, dir, hosts, home, env, "launch", "-d", "--node", target, "task.yaml")
		id := strings.TrimSpace(r.stdout)
		if r.code != 0 || id == "" {
			t.Fatalf("launch on %s: exit %d\n%s", target, r.code, r.stderr)
		}
		if r := sshq(t, hosts, home, env, "wait", id); r.code != 3 {
			t.Errorf("wait on %s: exit %d, want the job's 3\n%s", target, r.code, r.stderr)
		}
		r = sshq(t, hosts, home, env, "logs", id)
		if !regexp.MustCompile(`(?m)^cvd=\d$`).MatchString(r.stdout) || !strings.Contains(r.stdout, "from the workdir") {
			t.Errorf("logs on %s:\n%s%s", target, r.stdout, r.stderr)
		}
	}

	r := sshqIn(t, dir, hosts, home, env, "launch", "-d", "--node", "login", "sleep.yaml")
	id := strings.TrimSpace(r.stdout)
	if r.code != 0 {
		t.Fatalf("launch sleep: exit %d\n%s", r.code, r.stderr)
	}
	slurmID := ""
	deadline := time.Now().Add(time.Minute)
	for {
		var jobs []struct {
			ID      int    `json:"id"`
			State   string `json:"state"`
			SlurmID string `json:"slurm_id"`
			Backend string `json:"backend"`
		}
		q := sshq(t, hosts, home, env, "queue", "--json")
		if err := json.Unmarshal([]byte(q.stdout), &jobs); err != nil {
			t.Fatalf("queue --json: %v\n%s", err, q.stdout)
		}
		if len(jobs) == 1 && jobs[0].State == "RUNNING" {
			slurmID = jobs[0].SlurmID
			if jobs[0].Backend != "slurm" || slurmID == "" {
				t.Errorf("queue --json: %+v", jobs[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job never ran: %s", q.stdout)
		}
		time.Sleep(200 * time.Millisecond)
	}

	st := sshq(t, hosts, home, env, "status")
	for _, want := range []string{"login  Slurm  up", "a100 1/2", "#" + id, "box  up"} {
		if !strings.Contains(st.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, st.stdout)
		}
	}
	nodes := sshq(t, hosts, home, env, "nodes")
	if !strings.Contains(nodes.stdout, "ready (Slurm)") || !strings.Contains(nodes.stdout, "gpu:a100 ×2") {
		t.Errorf("nodes:\n%s%s", nodes.stdout, nodes.stderr)
	}

	c := sshq(t, hosts, home, env, "cancel", id)
	if c.code != 0 || !strings.Contains(c.stdout, "cancelled") {
		t.Errorf("cancel: exit %d\n%s%s", c.code, c.stdout, c.stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := sl.Output(ctx, "squeue", "-h", "-j", slurmID, "-o", "%T"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("squeue still lists Slurm job %s: %q %v", slurmID, out, err)
	}
	q := sshq(t, hosts, home, env, "queue", "-a")
	if !regexp.MustCompile(`(?m)^` + id + `\s.*CANCELLED`).MatchString(q.stdout) {
		t.Errorf("queue -a does not show #%s CANCELLED:\n%s", id, q.stdout)
	}
}
