package gpu

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/nvidia-smi/*/expected.json from the parser's output (review the diff!)")

const fixtureDir = "../../testdata/nvidia-smi"

// fixture is expected.json: what ParseProbe must make of probe.out.
type fixture struct {
	Host   Host   `json:"host"`
	Report Report `json:"report"`
}

// TestFixtures parses every testdata/nvidia-smi/<case>/probe.out (the raw
// output of ProbeScript on a node) and compares it with expected.json beside
// it. Adding a case needs no code: capture a node's probe output, run with
// -update, and check the new expected.json by eye.
func TestFixtures(t *testing.T) {
	t.Parallel()
	entries, err := os.ReadDir(fixtureDir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(fixtureDir, e.Name(), "probe.out"))
		if !e.IsDir() || os.IsNotExist(err) {
			continue
		}
		n++
		t.Run(e.Name(), func(t *testing.T) {
			t.Parallel()
			if err != nil {
				t.Fatal(err)
			}
			h, r := ParseProbe(raw)
			checkInvariants(t, raw, h, r)
			got, err := json.MarshalIndent(fixture{h, r}, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join(fixtureDir, e.Name(), "expected.json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (create it with: go test ./orchestrator/gpu -run TestFixtures -update)", err)
			}
			var w fixture
			if err := json.Unmarshal(want, &w); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			canon, _ := json.MarshalIndent(w, "", "  ")
			if !bytes.Equal(append(canon, '\n'), got) {
				t.Errorf("ParseProbe(%s/probe.out) differs from expected.json.\ngot:\n%s\nwant:\n%s", e.Name(), got, want)
			}
		})
	}
	if n == 0 {
		t.Fatalf("no fixtures under %s", fixtureDir)
	}
}

// checkInvariants holds for any input: what a caller may rely on without
// looking at the State first.
func checkInvariants(t *testing.T, raw []byte, h Host, r Report) {
	t.Helper()
	switch r.State {
	case StateOK, StatePartial, StateNoDevices, StateDriverFailed, StateMissing, StateError:
	default:
		t.Fatalf("unknown state %q", r.State)
	}
	if (r.Message == "") != (r.State == StateOK) {
		t.Errorf("state %s with message %q: a message is required exactly when the state is not ok", r.State, r.Message)
	}
	if r.State == StateOK && len(r.Warnings) > 0 {
		t.Errorf("state ok with warnings %q", r.Warnings)
	}
	if r.State == StatePartial && (len(r.Warnings) == 0 || len(r.GPUs) == 0) {
		t.Errorf("partial with %d GPUs and warnings %q: partial means some GPUs and some warnings", len(r.GPUs), r.Warnings)
	}
	if r.State != StateOK && r.State != StatePartial && (len(r.GPUs) > 0 || len(r.Processes) > 0) {
		t.Errorf("state %s yet %d GPUs and %d processes", r.State, len(r.GPUs), len(r.Processes))
	}
	if r.GPUs == nil || r.Processes == nil || r.Warnings == nil {
		t.Error("nil slice in Report: JSON would say null, not []")
	}

	// A GPU comes from one whole line: never more GPUs than lines with as
	// many fields as the probe asked for (or than the default's, if the
	// marker named none).
	wantCommas := map[int]bool{strings.Count(QueryGPUFields, ","): true}
	for _, l := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(l, "@@sshq gpus "); ok {
			for _, kv := range strings.Fields(rest) {
				if f, ok := strings.CutPrefix(kv, "fields="); ok {
					wantCommas[strings.Count(f, ",")] = true
				}
			}
		}
	}
	wellFormed := 0
	for _, l := range strings.Split(string(raw), "\n") {
		if wantCommas[strings.Count(l, ",")] {
			wellFormed++
		}
	}
	if len(r.GPUs) > wellFormed {
		t.Errorf("%d GPUs from %d well-formed lines", len(r.GPUs), wellFormed)
	}
	uuids, indices := map[string]bool{}, map[int]bool{}
	for _, g := range r.GPUs {
		if uuids[g.UUID] || indices[g.Index] {
			t.Errorf("GPU %d %s listed twice", g.Index, g.UUID)
		}
		uuids[g.UUID], indices[g.Index] = true, true
		if !strings.HasPrefix(g.UUID, "GPU-") || !bytes.Contains(raw, []byte(g.UUID)) || g.Index < 0 {
			t.Errorf("GPU %d has UUID %q, not one the driver printed", g.Index, g.UUID)
		}
		if g.MemoryTotalMiB < -1 || g.MemoryUsedMiB < -1 || g.UtilizationPct != nil && (*g.UtilizationPct < 0 || *g.UtilizationPct > 100) {
			t.Errorf("GPU %d has impossible readings %+v", g.Index, g)
		}
	}
	for _, p := range r.Processes {
		if p.PID <= 0 || p.UsedMemoryMiB < -1 {
			t.Errorf("impossible process %+v", p)
		}
	}
	if h.CPUs == 0 || h.CPUs < -1 || h.MemTotalMiB < -1 || h.MemAvailableMiB < -1 || h.DiskFreeMiB < -1 {
		t.Errorf("impossible host %+v", h)
	}
	if _, err := json.Marshal(fixture{h, r}); err != nil {
		t.Errorf("report does not marshal: %v", err)
	}
}

// FuzzParseProbe feeds ParseProbe arbitrary bytes, seeded with every fixture:
// it must never panic and never break the invariants.
func FuzzParseProbe(f *testing.F) {
	entries, _ := os.ReadDir(fixtureDir)
	for _, e := range entries {
		if raw, err := os.ReadFile(filepath.Join(fixtureDir, e.Name(), "probe.out")); err == nil {
			f.Add(raw)
		}
	}
	f.Add([]byte("@@sshq gpus rc=0 fields=index,uuid\n0, GPU-1\n0, GPU-1\n1, GPU-1\n@@sshq apps rc=0\n@@sshq users\n"))
	f.Add([]byte("@@sshq gpus rc=x fields=\n@@sshq\n@@sshq host\nloadavg NaN Inf -1\nnproc 0\n@@sshq df\n1 2 3 4%\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		h, r := ParseProbe(raw)
		checkInvariants(t, raw, h, r)
	})
}
