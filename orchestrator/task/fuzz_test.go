package task

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse calls parse, not Parse, so a panic in the decoder or in the
// YAML parser fails the fuzzer instead of being turned into an error.
func FuzzParse(f *testing.F) {
	for _, dir := range []string{"bad", "good"} {
		files, _ := filepath.Glob(filepath.Join(corpus, dir, "*.yaml"))
		for _, p := range files {
			if b, err := os.ReadFile(p); err == nil {
				f.Add(b)
			}
		}
	}
	f.Add([]byte("resources:\n  any_of:\n    - &a {accelerators: {A100:1}}\n    - <<: *a\nenvs: {A: ~}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tk, warns, err := parse("/fuzz", "task.yaml", data)
		if err != nil {
			var te *Error
			if !errors.As(err, &te) {
				t.Fatalf("error %T is not a *task.Error: %v", err, err)
			}
			if te.Line < 0 || te.Col < 0 || te.Error() == "" {
				t.Fatalf("bad error %+v", te)
			}
			return
		}
		if tk.NumNodes < 1 || tk.NumNodes > MaxNumNodes {
			t.Fatalf("NumNodes %d accepted", tk.NumNodes)
		}
		for _, a := range tk.Resources.Accelerators {
			if a.Count < 1 {
				t.Fatalf("accelerator %v accepted", a)
			}
			if _, err := ParseGPUFlag(a.String()); err != nil {
				t.Fatalf("accepted accelerator %v does not round-trip: %v", a, err)
			}
		}
		for _, w := range warns {
			_ = w.String()
		}
		_ = tk.Validate()
	})
}
