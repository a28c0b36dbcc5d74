package task

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

const corpus = "../../testdata/tasks"

// loadAndValidate is what `sshq launch task.yaml` does before submitting
// when the command line overrides nothing.
func loadAndValidate(path string) (*Task, []Warning, error) {
	tk, warns, err := Load(path)
	if err != nil {
		return nil, warns, err
	}
	return tk, warns, tk.Validate()
}

// Each bad/NAME.yaml has a NAME.want: its first line is the LINE:COL the
// error must point at (0:0 for none), each further line a substring the
// message must contain — the problem and the way to fix it.
func TestBadCorpus(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join(corpus, "bad", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 20 {
		t.Fatalf("bad corpus has %d files, want at least 20", len(files))
	}
	for _, path := range files {
		name := strings.TrimSuffix(filepath.Base(path), ".yaml")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			want, err := os.ReadFile(strings.TrimSuffix(path, ".yaml") + ".want")
			if err != nil {
				t.Fatalf("every bad file needs a .want: %v", err)
			}
			lines := strings.Split(strings.TrimSpace(string(want)), "\n")
			wl, wc, ok := strings.Cut(lines[0], ":")
			wantLine, err1 := strconv.Atoi(wl)
			wantCol, err2 := strconv.Atoi(wc)
			if !ok || err1 != nil || err2 != nil || len(lines) < 2 {
				t.Fatalf(".want must start with LINE:COL and name at least one substring, got %q", want)
			}
			_, _, err = loadAndValidate(path)
			if err == nil {
				t.Fatal("loaded and validated without an error")
			}
			var te *Error
			if !errors.As(err, &te) {
				t.Fatalf("error is %T (%v), want *task.Error", err, err)
			}
			if te.File != path {
				t.Errorf("File = %q, want %q", te.File, path)
			}
			if te.Line != wantLine || te.Col != wantCol {
				t.Errorf("position %d:%d, want %d:%d (%v)", te.Line, te.Col, wantLine, wantCol, err)
			}
			msg := te.Error()
			for _, sub := range lines[1:] {
				if !strings.Contains(msg, sub) {
					t.Errorf("error %q does not contain %q", msg, sub)
				}
			}
			if wantLine > 0 && !strings.HasPrefix(msg, path+":"+lines[0]+": ") {
				t.Errorf("error %q does not start with %s:%s: ", msg, path, lines[0])
			}
		})
	}
}

func TestGoodCorpus(t *testing.T) {
	t.Parallel()
	goodDir, err := filepath.Abs(filepath.Join(corpus, "good"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		file     string
		override Overrides
		check    func(t *testing.T, tk *Task)
		warned   []string // fields warned about, in file order
	}{
		{
			file: "skypilot_finetune.yaml",
			check: func(t *testing.T, tk *Task) {
				if tk.Name != "llama-finetune" || tk.NumNodes != 1 {
					t.Errorf("name %q num_nodes %d", tk.Name, tk.NumNodes)
				}
				if want := []Accel{{"A100", 1}}; !reflect.DeepEqual(tk.Resources.Accelerators, want) {
					t.Errorf("accelerators %v, want %v", tk.Resources.Accelerators, want)
				}
				if tk.Workdir != goodDir {
					t.Errorf("workdir %q, want the directory sshq runs in, %q", tk.Workdir, goodDir)
				}
				wantEnv := map[string]string{"MODEL_NAME": "meta-llama/Llama-3.1-8B", "BATCH_SIZE": "16", "LR": "1.0e-5", "USE_WANDB": "true"}
				if !reflect.DeepEqual(tk.Envs, wantEnv) {
					t.Errorf("envs %v, want %v (values as written)", tk.Envs, wantEnv)
				}
				if !strings.Contains(tk.Setup, "pip install torch==2.3.0") || !strings.HasSuffix(tk.Setup, "datasets\n") {
					t.Errorf("setup %q", tk.Setup)
				}
				if !strings.Contains(tk.Run, "--node_rank=$SKYPILOT_NODE_RANK \\\n") {
					t.Errorf("run lost its text: %q", tk.Run)
				}
			},
			warned: []string{"resources.cloud"},
		},
		{
			file:     "skypilot_spot_block.yaml",
			override: Overrides{Env: map[string]string{"WANDB_API_KEY": "k"}, Secrets: Secrets{"HF_TOKEN": "hf_x"}},
			check: func(t *testing.T, tk *Task) {
				r := tk.Resources
				if want := []Accel{{"L4", 1}, {"A10G", 1}, {"T4", 1}}; !reflect.DeepEqual(r.Accelerators, want) || !r.AccelOrdered {
					t.Errorf("accelerators %v ordered %v, want %v in order", r.Accelerators, r.AccelOrdered, want)
				}
				if r.CPUs != (Quantity{8, true}) || r.Memory != (Quantity{32, true}) {
					t.Errorf("cpus %v memory %v, want 8+ and 32+", r.CPUs, r.Memory)
				}
				if got, want := tk.FileMounts["~/vocab.txt"], filepath.Join(goodDir, "assets", "vocab.txt"); got != want {
					t.Errorf("file mount source %q, want %q", got, want)
				}
				if !reflect.DeepEqual(r.Ports, []int{8888}) {
					t.Errorf("ports %v, want [8888]", r.Ports)
				}
				if tk.Envs["WANDB_API_KEY"] != "k" || tk.Secrets["HF_TOKEN"] != "hf_x" {
					t.Errorf("overrides not applied: envs %v, HF_TOKEN set %v", tk.Envs, tk.Secrets["HF_TOKEN"] != "")
				}
			},
			warned: []string{"resources.infra", "resources.region", "resources.zone", "resources.use_spot", "resources.job_recovery",
				"resources.disk_size", "resources.disk_tier", "resources.labels", "config"},
		},
		{
			file:     "skypilot_distributed.yaml",
			override: Overrides{},
			check: func(t *testing.T, tk *Task) {
				if tk.NumNodes != 2 || !reflect.DeepEqual(tk.Resources.Accelerators, []Accel{{"V100", 4}}) {
					t.Errorf("num_nodes %d accelerators %v, want 2 nodes of V100:4", tk.NumNodes, tk.Resources.Accelerators)
				}
				over := *tk
				if err := over.Apply(Overrides{NumNodes: 3}); err != nil || over.NumNodes != 3 {
					t.Errorf("--num-nodes 3: %d %v", over.NumNodes, err)
				}
				if err := over.Apply(Overrides{NumNodes: MaxNumNodes + 1}); err == nil {
					t.Errorf("--num-nodes %d accepted", MaxNumNodes+1)
				}
			},
		},
		{
			file: "minimal.yaml",
			check: func(t *testing.T, tk *Task) {
				if tk.Run != "nvidia-smi" || tk.Workdir != "" || len(tk.Resources.Accelerators) != 0 || tk.NumNodes != 1 {
					t.Errorf("got %+v", tk)
				}
			},
		},
		{
			file: "setup_only.yaml",
			check: func(t *testing.T, tk *Task) {
				if tk.Run != "" || !strings.Contains(tk.Setup, "pip install jupyterlab") {
					t.Errorf("setup %q run %q, want setup alone", tk.Setup, tk.Run)
				}
				if want := []int{6006, 6007, 6008, 8888}; !reflect.DeepEqual(tk.Resources.Ports, want) {
					t.Errorf("ports %v, want %v", tk.Resources.Ports, want)
				}
			},
		},
		{
			file: "anchors_and_sets.yaml",
			check: func(t *testing.T, tk *Task) {
				want := []Accel{{"H100", 1}, {"H200", 1}, {"A100-80GB", 1}}
				if !reflect.DeepEqual(tk.Resources.Accelerators, want) || tk.Resources.AccelOrdered {
					t.Errorf("accelerators %v ordered %v, want the set %v", tk.Resources.Accelerators, tk.Resources.AccelOrdered, want)
				}
				if tk.Envs["OMP_NUM_THREADS"] != "8" || tk.Envs["PYTHONUNBUFFERED"] != "1" {
					t.Errorf("envs %v", tk.Envs)
				}
			},
			warned: []string{"resources.any_of[0].cloud"},
		},
	}
	files, _ := filepath.Glob(filepath.Join(corpus, "good", "*.yaml"))
	if len(files) != len(tests) {
		t.Errorf("good corpus has %d files and the table %d: add the new file to the table", len(files), len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(corpus, "good", tt.file)
			// As SkyPilot users run them: from the directory that holds
			// the paths the file names.
			tk, warns, err := LoadIn(goodDir, path)
			if err != nil {
				t.Fatal(err)
			}
			if err := tk.Apply(tt.override); err != nil {
				t.Fatal(err)
			}
			if err := tk.Validate(); err != nil {
				t.Fatal(err)
			}
			tt.check(t, tk)
			var got []string
			for _, w := range warns {
				got = append(got, w.Field)
				if w.File != path || w.Line < 1 || w.Col < 1 {
					t.Errorf("warning %+v lacks its place", w)
				}
				if want := path + ":" + strconv.Itoa(w.Line) + ":" + strconv.Itoa(w.Col) + ": " + w.Field + " is ignored: "; !strings.HasPrefix(w.String(), want) {
					t.Errorf("warning %q does not start with %q", w.String(), want)
				}
			}
			if !reflect.DeepEqual(got, tt.warned) {
				t.Errorf("warned about %q, want %q", got, tt.warned)
			}
		})
	}
}
