package task

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

func mustParse(t *testing.T, src string) (*Task, []Warning) {
	t.Helper()
	tk, warns, err := Parse("task.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse(%q): %v", src, err)
	}
	return tk, warns
}

func parseErr(t *testing.T, src string) *Error {
	t.Helper()
	_, _, err := Parse("task.yaml", []byte(src))
	var te *Error
	if !errors.As(err, &te) {
		t.Fatalf("Parse(%q) = %v, want a *task.Error", src, err)
	}
	return te
}

func TestErrorFormat(t *testing.T) {
	t.Parallel()
	src := "name: x\nresources:\n  accelerators: A100:x\nrun: echo\n"
	te := parseErr(t, src)
	want := `task.yaml:3:17: resources.accelerators: "A100:x": count must be a positive integer, as in A100:2`
	if te.Error() != want {
		t.Errorf("Error() = %q\nwant      %q", te.Error(), want)
	}
	if te.Field != "resources.accelerators" || te.Line != 3 || te.Col != 17 {
		t.Errorf("fields %+v", te)
	}
	if got := (&Error{Field: "--gpus", Msg: "bad"}).Error(); got != "--gpus: bad" {
		t.Errorf("placeless error = %q, want %q", got, "--gpus: bad")
	}
}

func TestLoadMissingFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, _, err := Load(path)
	var te *Error
	if !errors.As(err, &te) || te.File != path || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load(missing) = %v, want a *task.Error for the path wrapping fs.ErrNotExist", err)
	}
}

func TestAcceleratorForms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		yaml    string
		want    []Accel
		ordered bool
	}{
		{`A100:2`, []Accel{{"A100", 2}}, false},
		{`"A100:2"`, []Accel{{"A100", 2}}, false},
		{`A100`, []Accel{{"A100", 1}}, false},
		{`A100-80GB:8`, []Accel{{"A100-80GB", 8}}, false},
		{`{A100: 2}`, []Accel{{"A100", 2}}, false},
		{`{A100:1, V100:1}`, []Accel{{"A100", 1}, {"V100", 1}}, false},
		{`{"A100:1": null, "V100:2": null}`, []Accel{{"A100", 1}, {"V100", 2}}, false},
		{`{H100: 8, A100-80GB: 8}`, []Accel{{"H100", 8}, {"A100-80GB", 8}}, false},
		{`[A100:1, H100:1]`, []Accel{{"A100", 1}, {"H100", 1}}, true},
		{"\n    - L4:1\n    - {A10G: 2}\n    - T4", []Accel{{"L4", 1}, {"A10G", 2}, {"T4", 1}}, true},
		{`4`, []Accel{{"", 4}}, false},
		{``, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.yaml, func(t *testing.T) {
			t.Parallel()
			tk, _ := mustParse(t, "resources:\n  accelerators: "+tt.yaml+"\nrun: x\n")
			if !reflect.DeepEqual(tk.Resources.Accelerators, tt.want) || tk.Resources.AccelOrdered != tt.ordered {
				t.Errorf("got %v ordered=%v, want %v ordered=%v", tk.Resources.Accelerators, tk.Resources.AccelOrdered, tt.want, tt.ordered)
			}
		})
	}
}

func TestAnyOfAndOrdered(t *testing.T) {
	t.Parallel()
	tk, warns := mustParse(t, `
resources:
  ordered:
    - accelerators: H100:8
      cloud: aws
    - accelerators: A100-80GB:8
      region: us-east-1
run: x
`)
	want := []Accel{{"H100", 8}, {"A100-80GB", 8}}
	if !reflect.DeepEqual(tk.Resources.Accelerators, want) || !tk.Resources.AccelOrdered {
		t.Errorf("got %v ordered=%v, want %v in order", tk.Resources.Accelerators, tk.Resources.AccelOrdered, want)
	}
	if len(warns) != 2 || warns[0].Field != "resources.ordered[0].cloud" || warns[1].Line != 7 {
		t.Errorf("warnings %v", warns)
	}
}

func TestQuantities(t *testing.T) {
	t.Parallel()
	tests := []struct {
		cpus, memory string
		wantCPU      Quantity
		wantMem      Quantity
	}{
		{"4", "32", Quantity{4, false}, Quantity{32, false}},
		{`"4+"`, `"32+"`, Quantity{4, true}, Quantity{32, true}},
		{"4+", "32GB+", Quantity{4, true}, Quantity{32, true}},
		{"0.5", "1TB", Quantity{0.5, false}, Quantity{1024, false}},
		{"16", "512MB", Quantity{16, false}, Quantity{0.5, false}},
	}
	for _, tt := range tests {
		t.Run(tt.cpus+" "+tt.memory, func(t *testing.T) {
			t.Parallel()
			tk, _ := mustParse(t, fmt.Sprintf("resources:\n  cpus: %s\n  memory: %s\nrun: x\n", tt.cpus, tt.memory))
			if tk.Resources.CPUs != tt.wantCPU || tk.Resources.Memory != tt.wantMem {
				t.Errorf("cpus %v memory %v, want %v %v", tk.Resources.CPUs, tk.Resources.Memory, tt.wantCPU, tt.wantMem)
			}
		})
	}
	for _, bad := range []string{"0", "-2", `"+"`, "4GB", "true", "[4]"} {
		te := parseErr(t, "resources:\n  cpus: "+bad+"\nrun: x\n")
		if te.Field != "resources.cpus" || te.Line != 2 {
			t.Errorf("cpus: %s: error %v, want one at resources.cpus line 2", bad, te)
		}
	}
}

// Every placement-only field gets exactly one warning, in the words the
// CLI prints, even when it holds a mapping of its own.
func TestPlacementWarnings(t *testing.T) {
	t.Parallel()
	tk, warns := mustParse(t, `name: w
resources:
  region: us-east-1
  labels: {a: b, c: d}
  accelerators: A100
run: x
`)
	if len(tk.Resources.Accelerators) != 1 {
		t.Errorf("accelerators lost next to ignored fields: %v", tk.Resources.Accelerators)
	}
	want := []string{
		"task.yaml:3:3: resources.region is ignored: sshq places jobs on your ssh nodes",
		"task.yaml:4:3: resources.labels is ignored: sshq places jobs on your ssh nodes, which have no cloud labels",
	}
	var got []string
	for _, w := range warns {
		got = append(got, w.String())
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("warnings\n%q\nwant\n%q", got, want)
	}
}

// Relative paths are SkyPilot's: relative to where sshq runs, not to the
// task file, so `cd proj && sshq launch ../tasks/t.yaml` syncs proj/src.
func TestRelativePathsAreRelativeToTheCurrentDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, d := range []string{"proj/src", "tasks/src"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "tasks", "task.yaml")
	src := "workdir: ./src\nfile_mounts:\n  /data/x: ../x.bin\n  ~/cfg: /etc/hosts\nrun: x\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	tk, _, err := LoadIn(filepath.Join(dir, "proj"), path)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "proj", "src"); tk.Workdir != want {
		t.Errorf("workdir %q, want %q (relative to the current directory)", tk.Workdir, want)
	}
	if want := filepath.Join(dir, "x.bin"); tk.FileMounts["/data/x"] != want || tk.FileMounts["~/cfg"] != "/etc/hosts" {
		t.Errorf("file mounts %v, want /data/x -> %s", tk.FileMounts, want)
	}
	// x.bin does not exist: Validate says which and where.
	err = tk.Validate()
	var te *Error
	if !errors.As(err, &te) || te.Line != 3 || te.Field != "file_mounts./data/x" {
		t.Errorf("Validate = %v, want the missing ../x.bin at line 3", err)
	}

	// Load without a base uses the process's current directory.
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tk, _, err = Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(wd, "src"); tk.Workdir != want {
		t.Errorf("Load: workdir %q, want %q", tk.Workdir, want)
	}
}

// A path that exists only beside the task file is the old rule, or another
// tool's habit: the error says where to run sshq from.
func TestMissingRelativePathPointsToTheTaskFilesDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "tasks", "render"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tasks", "vocab.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "tasks", "t.yaml")
	if err := os.WriteFile(path, []byte("workdir: ./render\nfile_mounts:\n  ~/v.txt: vocab.txt\nrun: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tk, _, err := LoadIn(dir, path)
	if err != nil {
		t.Fatal(err)
	}
	err = tk.Validate()
	hint := "run sshq from there, `cd " + filepath.Join(dir, "tasks") + " && sshq launch t.yaml`"
	if err == nil || strings.Count(err.Error(), hint) != 2 || !strings.Contains(err.Error(), filepath.Join(dir, "render")+" is not a directory") {
		t.Errorf("Validate = %v\nwant both paths named, each with %q", err, hint)
	}
	// From the task file's directory, it is valid.
	tk, _, err = LoadIn(filepath.Join(dir, "tasks"), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Validate(); err != nil {
		t.Errorf("from the task's directory: %v", err)
	}
}

// SkyPilot's ports: a number, a numeric string, a range, or a list of them.
func TestPorts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		yaml string
		want []int
		err  string
	}{
		{"8080", []int{8080}, ""},
		{`"8080"`, []int{8080}, ""},
		{"8000-8002", []int{8000, 8001, 8002}, ""},
		{`[8888, "6006-6007", 8888]`, []int{6006, 6007, 8888}, ""},
		{"", nil, ""},
		{"0", nil, "a port is a whole number from 1 to 65535"},
		{"70000", nil, "a port is a whole number"},
		{"8010-8000", nil, "LOW-HIGH"},
		{"http", nil, "a port is a whole number"},
		{"{a: 1}", nil, "must be a port"},
		{"1000-2000", nil, "more than 100 ports"},
	} {
		tk, _, err := Parse("t.yaml", []byte("resources:\n  ports: "+tc.yaml+"\nrun: x\n"))
		if tc.err != "" {
			var te *Error
			if !errors.As(err, &te) || te.Line != 2 || !strings.Contains(err.Error(), tc.err) || te.Field != "resources.ports" {
				t.Errorf("ports: %s: error %v, want resources.ports at line 2 saying %q", tc.yaml, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(tk.Resources.Ports, tc.want) {
			t.Errorf("ports: %s: %v, %v; want %v", tc.yaml, tk, err, tc.want)
		}
	}
	if got := PortsString([]int{6006, 6007, 6008, 8080}); got != "6006-6008, 8080" {
		t.Errorf("PortsString = %q", got)
	}
}

// A task with setup and no run is SkyPilot's dev box; with neither, there
// is nothing to do.
func TestSetupOnlyIsATask(t *testing.T) {
	t.Parallel()
	tk, _, err := Parse("t.yaml", []byte("setup: echo ready\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Validate(); err != nil {
		t.Errorf("setup-only task: %v", err)
	}
	tk, _, err = Parse("t.yaml", []byte("name: x\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Validate(); err == nil || !strings.Contains(err.Error(), "nothing to run") {
		t.Errorf("neither setup nor run: %v", err)
	}
}

// num_nodes is kept as written: whether a task may span nodes depends on
// where it is placed (a Slurm cluster), not on the file.
func TestNumNodes(t *testing.T) {
	t.Parallel()
	for text, want := range map[string]int{"run: x\n": 1, "num_nodes: 1\nrun: x\n": 1, "num_nodes: 2\nrun: x\n": 2, "num_nodes:\nrun: x\n": 1} {
		tk, _, err := Parse("t.yaml", []byte(text))
		if err != nil || tk.NumNodes != want {
			t.Errorf("%q: NumNodes %v, %v; want %d", text, tk, err, want)
		}
	}
	if _, _, err := Parse("t.yaml", []byte("num_nodes: 100000\nrun: x\n")); err == nil || !strings.Contains(err.Error(), "at most 4096") {
		t.Errorf("num_nodes 100000: %v", err)
	}
}

func TestApply(t *testing.T) {
	t.Parallel()
	const src = `name: train
resources:
  accelerators: A100:8
envs:
  LR: "0.1"
  WANDB_KEY:
secrets:
  HF_TOKEN:
run: python train.py
`
	t.Run("required supplied", func(t *testing.T) {
		t.Parallel()
		tk, _ := mustParse(t, src)
		err := tk.Validate()
		if err == nil || !strings.Contains(err.Error(), `env "WANDB_KEY" is required by the task: pass --env WANDB_KEY=...`) ||
			!strings.Contains(err.Error(), `secret "HF_TOKEN" is required by the task: pass --secret HF_TOKEN=...`) {
			t.Fatalf("Validate before Apply = %v, want both required vars named", err)
		}
		g := Accel{"", 2}
		err = tk.Apply(Overrides{Name: "t2", GPUs: &g, Env: map[string]string{"WANDB_KEY": "w", "EXTRA": "1"},
			Secrets: Secrets{"HF_TOKEN": "hf"}, Run: "python other.py"})
		if err != nil {
			t.Fatal(err)
		}
		if err := tk.Validate(); err != nil {
			t.Fatalf("Validate after Apply: %v", err)
		}
		want := map[string]string{"LR": "0.1", "WANDB_KEY": "w", "EXTRA": "1"}
		if tk.Name != "t2" || tk.Run != "python other.py" || !reflect.DeepEqual(tk.Envs, want) ||
			!reflect.DeepEqual(tk.Resources.Accelerators, []Accel{g}) || tk.Secrets["HF_TOKEN"] != "hf" {
			t.Errorf("after Apply: %+v", tk)
		}
	})
	t.Run("zero gpus makes a CPU job", func(t *testing.T) {
		t.Parallel()
		tk, _ := mustParse(t, src)
		if err := tk.Apply(Overrides{GPUs: &Accel{}}); err != nil {
			t.Fatal(err)
		}
		if len(tk.Resources.Accelerators) != 0 {
			t.Errorf("accelerators %v, want none", tk.Resources.Accelerators)
		}
	})
	t.Run("secret passed as env is refused", func(t *testing.T) {
		t.Parallel()
		tk, _ := mustParse(t, src)
		err := tk.Apply(Overrides{Env: map[string]string{"HF_TOKEN": "leaked"}})
		if err == nil || !strings.Contains(err.Error(), "--secret HF_TOKEN=") || strings.Contains(err.Error(), "leaked") {
			t.Errorf("Apply = %v, want a refusal pointing at --secret that does not echo the value", err)
		}
	})
	t.Run("env promoted to secret", func(t *testing.T) {
		t.Parallel()
		tk, _ := mustParse(t, src)
		if err := tk.Apply(Overrides{Secrets: Secrets{"WANDB_KEY": "w", "HF_TOKEN": "h"}}); err != nil {
			t.Fatal(err)
		}
		if err := tk.Validate(); err != nil {
			t.Fatalf("Validate: %v", err)
		}
		if _, ok := tk.Envs["WANDB_KEY"]; ok {
			t.Error("WANDB_KEY is still in Envs, where it would be shown")
		}
	})
	t.Run("bad names", func(t *testing.T) {
		t.Parallel()
		tk, _ := mustParse(t, src)
		for _, o := range []Overrides{
			{Env: map[string]string{"1X": "a"}},
			{Env: map[string]string{"CUDA_VISIBLE_DEVICES": "0"}},
			{Secrets: Secrets{"SSHQ_JOB_ID": "a"}},
			{GPUs: &Accel{"A100", 0}},
		} {
			if err := tk.Apply(o); err == nil {
				t.Errorf("Apply(%v) accepted", o)
			}
		}
	})
	t.Run("workdir override is relative to cwd", func(t *testing.T) {
		t.Parallel()
		tk, _ := mustParse(t, src)
		o := Overrides{Workdir: "some/dir", Env: map[string]string{"WANDB_KEY": "w"}, Secrets: Secrets{"HF_TOKEN": "h"}}
		if err := tk.Apply(o); err != nil {
			t.Fatal(err)
		}
		want, _ := filepath.Abs("some/dir")
		if tk.Workdir != want {
			t.Errorf("workdir %q, want %q", tk.Workdir, want)
		}
		var te *Error
		if err := tk.Validate(); !errors.As(err, &te) || te.Field != "--workdir" {
			t.Errorf("Validate = %v, want the missing --workdir named", err)
		}
	})
}

// A secret's value must never come out of anything that prints or
// marshals a task: terminals, logs and state.json all see only its name.
func TestSecretsNeverPrinted(t *testing.T) {
	t.Parallel()
	const value = "hf_SUPERSECRET123"
	tk, _ := mustParse(t, "secrets:\n  HF_TOKEN: "+value+"\n  OTHER:\nrun: x\n")
	if err := tk.Apply(Overrides{Secrets: Secrets{"OTHER": value + "2"}}); err != nil {
		t.Fatal(err)
	}
	if tk.Secrets["HF_TOKEN"] != value {
		t.Fatalf("the job cannot read the secret: %q", tk.Secrets["HF_TOKEN"])
	}
	var outs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		outs = append(outs, fmt.Sprintf(verb, tk), fmt.Sprintf(verb, *tk), fmt.Sprintf(verb, tk.Secrets))
	}
	outs = append(outs, fmt.Sprint(tk.Secrets), fmt.Sprintln(*tk), tk.Secrets.String())
	js, err := json.Marshal(tk)
	if err != nil {
		t.Fatal(err)
	}
	ys, err := yaml.Marshal(tk)
	if err != nil {
		t.Fatal(err)
	}
	var logBuf bytes.Buffer
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("launch", "task", tk, "secrets", tk.Secrets)
	slog.New(slog.NewTextHandler(&logBuf, nil)).Info("launch", "secrets", tk.Secrets)
	outs = append(outs, string(js), string(ys), logBuf.String())
	hexValue := fmt.Sprintf("%x", value)
	for _, o := range outs {
		if strings.Contains(o, value) || strings.Contains(strings.ToLower(o), hexValue) {
			t.Errorf("secret value printed: %s", o)
		}
	}
	if !strings.Contains(string(js), "HF_TOKEN") || !strings.Contains(fmt.Sprint(tk.Secrets), "HF_TOKEN:<redacted>") {
		t.Errorf("secret names should stay visible: %s / %v", js, tk.Secrets)
	}
	// Errors about secrets name them without their value.
	for _, src := range []string{
		"secrets:\n  BAD-NAME: " + value + "\nrun: x\n",
		"secrets:\n  T: [" + value + "]\nrun: x\n",
	} {
		if _, _, err := Parse("task.yaml", []byte(src)); err == nil || strings.Contains(err.Error(), value) {
			t.Errorf("Parse(%q) = %v, want an error without the value", src, err)
		}
	}
}

func TestUnknownFieldSuggestions(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"env: {A: b}":                   "did you mean envs?",
		"secret: {A: b}":                "did you mean secrets?",
		"file_mount: {}":                "did you mean file_mounts?",
		"Run: x":                        "did you mean run?",
		"numnodes: 1":                   "did you mean num_nodes?",
		"command: python x":             "did you mean run?",
		"docker: img":                   "does not run containers",
		"resources: {acc: A10}":         "unknown field",
		"resources: {cpu: 4}":           "did you mean resources.cpus?",
		"resources: {accelerator: A10}": "did you mean resources.accelerators?",
		"memory: 32":                    "belongs under resources:",
	}
	for src, want := range tests {
		te := parseErr(t, src+"\n")
		if !strings.Contains(te.Error(), want) || te.Line != 1 {
			t.Errorf("%s: error %q, want %q at line 1", src, te.Error(), want)
		}
	}
}

func TestParseOddDocuments(t *testing.T) {
	t.Parallel()
	for _, src := range []string{"", "# just a comment\n", "---\n", "~\n"} {
		tk, warns, err := Parse("task.yaml", []byte(src))
		if err != nil || tk == nil || len(warns) != 0 {
			t.Errorf("Parse(%q) = %v, %v, %v; want an empty task", src, tk, warns, err)
			continue
		}
		if err := tk.Validate(); err == nil || !strings.Contains(err.Error(), "nothing to run") {
			t.Errorf("Validate of empty task = %v, want nothing to run", err)
		}
	}
	// Deep nesting is refused, not recursed into.
	deep := "run: x\nenvs: " + strings.Repeat("[", 200) + strings.Repeat("]", 200) + "\n"
	if te := parseErr(t, deep); !strings.Contains(te.Msg, "nested more than") {
		t.Errorf("deep nesting: %v", te)
	}
	if te := parseErr(t, "run: "+strings.Repeat("x", MaxFileSize)); !strings.Contains(te.Msg, "is this the right file?") {
		t.Errorf("huge file: %v", te)
	}
	// Self-referencing and undefined aliases are errors or nulls, never a hang.
	if te := parseErr(t, "run: *nope\n"); !strings.Contains(te.Msg, "refers to no anchor") || te.Line != 1 {
		t.Errorf("undefined alias: %v", te)
	}
	tk, _ := mustParse(t, "envs: &x {A: *x}\nrun: y\n")
	if len(tk.Envs) != 0 {
		t.Errorf("self-referencing alias gave envs %v", tk.Envs)
	}
}

func TestParseEnvFlag(t *testing.T) {
	t.Parallel()
	lookup := func(k string) (string, bool) {
		v, ok := map[string]string{"HF_TOKEN": "from-shell"}[k]
		return v, ok
	}
	tests := []struct{ in, name, value, errSub string }{
		{"A=b", "A", "b", ""},
		{"A=b=c", "A", "b=c", ""},
		{"A=", "A", "", ""},
		{"HF_TOKEN", "HF_TOKEN", "from-shell", ""},
		{"MISSING", "", "", "MISSING is not set in your environment: export it, or pass --env MISSING=VALUE"},
		{"=x", "", "", "not a valid environment variable name"},
		{"CUDA_VISIBLE_DEVICES=0", "", "", "sshq sets this variable"},
	}
	for _, tt := range tests {
		name, value, err := ParseEnvFlag("--env", tt.in, lookup)
		if tt.errSub != "" {
			if err == nil || !strings.Contains(err.Error(), tt.errSub) {
				t.Errorf("ParseEnvFlag(%q) = %v, want an error with %q", tt.in, err, tt.errSub)
			}
			continue
		}
		if err != nil || name != tt.name || value != tt.value {
			t.Errorf("ParseEnvFlag(%q) = %q, %q, %v; want %q, %q", tt.in, name, value, err, tt.name, tt.value)
		}
	}
}

func TestConfigSections(t *testing.T) {
	t.Parallel()
	te := parseErr(t, "experimental:\n  config_overrides:\n    docker:\n      run_options: []\nrun: x\n")
	if te.Field != "experimental.config_overrides.docker" || te.Line != 3 || !strings.Contains(te.Msg, "does not run containers") {
		t.Errorf("experimental docker: %v", te)
	}
	_, warns := mustParse(t, "config:\n  aws:\n    vpc_name: x\n  gcp:\n    labels: {a: b}\nrun: x\n")
	if len(warns) != 1 || warns[0].Field != "config" || warns[0].Line != 1 {
		t.Errorf("config warnings %v, want one, for config at line 1", warns)
	}
}
