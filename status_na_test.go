package main

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
)

// A unified-memory GPU (GB10: nvidia-smi says [N/A] for its memory) is
// shown as not reported: null in JSON, "-" in the table, never -1; and it
// takes jobs like any other.
func TestUnreportedGPUMemoryIsNull(t *testing.T) {
	t.Parallel()
	gb := gpusim.GB10x1(t.Name())
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"spark": gb})
	if r := sshq(t, c, home, env, "launch", "-d", "--gpus", "1", "--", "true"); r.code != 0 {
		t.Fatalf("launch on a GB10: %s", r.stderr)
	}
	if q := waitJobs(t, c, home, env); len(q) != 1 || q[0].State != "SUCCEEDED" {
		t.Fatalf("the job on the GB10: %+v", q)
	}
	foreign := exec.Command("sleep", "300")
	if err := foreign.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { foreign.Process.Kill(); foreign.Wait() })
	if err := gpusim.AddProcess(c.Node("spark").SimDir, gb[0].UUID, foreign.Process.Pid, -1, "python"); err != nil {
		t.Fatal(err)
	}
	r := sshq(t, c, home, env, "status", "--json")
	var got struct {
		Nodes []struct {
			GPUs []map[string]json.RawMessage `json:"gpus"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got.Nodes) != 1 || len(got.Nodes[0].GPUs) != 1 {
		t.Fatalf("status --json: %v\n%s%s", err, r.stdout, r.stderr)
	}
	g := got.Nodes[0].GPUs[0]
	for _, k := range []string{"memory_total_mib", "memory_used_mib"} {
		if string(g[k]) != "null" {
			t.Errorf("%s = %s, want null for memory nvidia-smi reports as [N/A]", k, g[k])
		}
	}
	var procs []map[string]json.RawMessage
	json.Unmarshal(g["processes"], &procs)
	if len(procs) != 1 || string(procs[0]["used_memory_mib"]) != "null" {
		t.Errorf("processes: %s, want one with used_memory_mib null", g["processes"])
	}
	r = sshq(t, c, home, env, "status")
	if rows := linesContaining(r.stdout, "NVIDIA GB10"); len(rows) != 1 || !strings.Contains(rows[0], "- / -") || strings.Contains(rows[0], "-1") {
		t.Errorf("status shows the GB10 as %q, want its memory as \"- / -\":\n%s", rows, r.stdout)
	}
}
