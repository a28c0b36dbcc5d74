package slurmtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var shared = &Shared{}

func TestMain(m *testing.M) {
	code := m.Run()
	shared.Close()
	os.Exit(code)
}

// A batch job submitted over ssh from the login node runs on the node with
// the GPU Slurm gave it.
func TestBatchJobOverSSH(t *testing.T) {
	cl, login := shared.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out := filepath.Join(login.Nodes[0].Home, "out.txt")
	sb := login.SSH("login", "sbatch", "--parsable", "--gres=gpu:"+cl.GPUType+":1", "--output="+out,
		"--wrap", "'echo cvd=$CUDA_VISIBLE_DEVICES host=$(hostname -s)'")
	id, err := sb.CombinedOutput()
	if err != nil {
		t.Fatalf("sbatch over ssh: %v: %s", err, id)
	}
	jobID := strings.TrimSpace(string(id))
	err = waitUntil(ctx, func() bool {
		st, _ := cl.Output(ctx, "squeue", "-h", "-t", "all", "-j", jobID, "-o", "%T")
		return strings.TrimSpace(st) == "COMPLETED"
	})
	if err != nil {
		st, _ := cl.Output(ctx, "scontrol", "show", "job", jobID)
		t.Fatalf("job %s did not complete: %v\n%s", jobID, err, st)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(data)), "cvd=0 host="+cl.Host; got != want {
		t.Errorf("job printed %q, want %q", got, want)
	}
}

func TestSinfoShowsGres(t *testing.T) {
	cl, _ := shared.Get(t)
	out, err := cl.Output(context.Background(), "sinfo", "-h", "-N", "-o", "%N %P %G")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(out), cl.Nodes[0]+" gpu* gpu:a100:2"; got != want {
		t.Errorf("sinfo: %q, want %q", got, want)
	}
}

func waitUntil(ctx context.Context, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// Without Slurm's commands and outside CI the tests skip, naming the
// install command, instead of failing.
func TestRequireSkipsWithoutSlurm(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv("CI", "")
	if m := Missing(); len(m) == 0 || !strings.Contains(strings.Join(m, " "), "sbatch") {
		t.Fatalf("Missing() = %v with an empty PATH, want sbatch among them", m)
	}
	ran := false
	t.Run("sub", func(t *testing.T) {
		Require(t)
		ran = true
	})
	if ran {
		t.Error("Require let a test run without Slurm's commands")
	}
}
