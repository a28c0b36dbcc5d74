package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
)

// config.yaml's defaults limit a job launched without flags, a flag
// overrides them, and `sshq wait` exits 124 for the TIMEOUT; queue, nodes
// and their --json say what holds the job.
func TestLimitsThroughTheCLI(t *testing.T) {
	t.Parallel()
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"box": gpusim.T4x1(t.Name())})
	cfg := filepath.Join(home, ".sshq", "config.yaml")
	os.MkdirAll(filepath.Dir(cfg), 0o700)
	if err := os.WriteFile(cfg, []byte("nodes: [box]\ndefaults: {mem_per_gpu: 1G, time: 2s}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := sshq(t, c, home, env, "launch", "-d", "--gpus", "1", "--", "sleep", "300")
	if r.code != 0 {
		t.Fatalf("launch: exit %d\n%s", r.code, r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	if !strings.Contains(r.stderr, "limits: mem 1.0G, time 2s") {
		t.Errorf("launch does not say the job's limits: %s", r.stderr)
	}
	if w := sshq(t, c, home, env, "wait", id); w.code != 124 || !strings.Contains(w.stdout, "TIMEOUT") {
		t.Errorf("wait: exit %d (want 124)\n%s%s", w.code, w.stdout, w.stderr)
	}
	r = sshq(t, c, home, env, "launch", "-d", "--time", "none", "--mem", "200M", "--", "echo", "unlimited in time")
	if r.code != 0 {
		t.Fatalf("launch: exit %d\n%s", r.code, r.stderr)
	}
	if w := sshq(t, c, home, env, "wait", strings.TrimSpace(r.stdout)); w.code != 0 {
		t.Errorf("wait: exit %d\n%s%s", w.code, w.stdout, w.stderr)
	}
	var q []struct {
		State  string `json:"state"`
		Mem    *int64 `json:"mem_limit_mib"`
		Time   *int64 `json:"time_limit_s"`
		Reason string `json:"reason"`
	}
	qr := sshq(t, c, home, env, "queue", "-a", "--json")
	if err := json.Unmarshal([]byte(qr.stdout), &q); err != nil || len(q) != 2 {
		t.Fatalf("queue --json: %v\n%s", err, qr.stdout)
	}
	if q[0].State != "TIMEOUT" || q[0].Mem == nil || *q[0].Mem != 1024 || q[0].Time == nil || *q[0].Time != 2 || !strings.Contains(q[0].Reason, "time limit 2s") {
		t.Errorf("the defaulted job: %+v", q[0])
	}
	if q[1].State != "SUCCEEDED" || q[1].Mem == nil || *q[1].Mem != 200 || q[1].Time != nil {
		t.Errorf("the flagged job: %+v", q[1])
	}
	if out := sshq(t, c, home, env, "queue", "-a").stdout; !strings.Contains(out, "TIMEOUT") || !strings.Contains(out, "time limit 2s reached") {
		t.Errorf("queue:\n%s", out)
	}
	var nodes struct {
		Nodes []struct {
			MemLimit string `json:"mem_limit"`
			Reserve  int64  `json:"reserve_mem_mib"`
		} `json:"nodes"`
	}
	nr := sshq(t, c, home, env, "nodes", "--json")
	if err := json.Unmarshal([]byte(nr.stdout), &nodes); err != nil || len(nodes.Nodes) != 1 || nodes.Nodes[0].MemLimit != "watchdog" || nodes.Nodes[0].Reserve < 2048 {
		t.Errorf("nodes --json: %v\n%s", err, nr.stdout)
	}
	// `sshq init` rewrites the node list and keeps the defaults.
	if r := sshq(t, c, home, env, "init", "box"); r.code != 0 {
		t.Fatalf("init: %s", r.stderr)
	}
	if b, _ := os.ReadFile(cfg); !strings.Contains(string(b), "mem_per_gpu: 1G") {
		t.Errorf("init dropped the defaults:\n%s", b)
	}
}
