package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/sshq/sshq/orchestrator/gpu/gpusim"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// The examples/ a team copies are launched here exactly as the files are
// written, through the sshq binary against OpenSSH nodes with simulated
// GPUs, and judged by what their user would look at: the job's state, its
// output, the files it leaves on the node.

func TestExampleHelloShowsItsOwnGPUs(t *testing.T) {
	t.Parallel()
	rtx := gpusim.RTX4090x4(t.Name())
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"rtx": rtx})
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	// Someone uses GPU 0 outside sshq, so the job's GPUs are not simply the
	// first ones, which every listing starts with.
	foreign := exec.Command("sleep", "300")
	if err := foreign.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { foreign.Process.Kill(); foreign.Wait() })
	if err := gpusim.AddProcess(c.Node("rtx").SimDir, rtx[0].UUID, foreign.Process.Pid, 2048, "python"); err != nil {
		t.Fatal(err)
	}
	// As written (one GPU of any type), then for two GPUs from the command line.
	for i, extra := range [][]string{nil, {"--gpus", "2"}} {
		r := sshq(t, c, home, env, append([]string{"launch", "examples/hello.yaml"}, extra...)...)
		if r.code != 0 {
			t.Fatalf("launch %v: exit %d\n%s\n%s", extra, r.code, r.stdout, r.stderr)
		}
		j := jobAt(t, c, home, env, i)
		if j.State != "SUCCEEDED" || len(j.GPUs) != i+1 || j.GPUs[0] == 0 {
			t.Fatalf("launch %v: job %+v, want SUCCEEDED with %d GPU(s) other than the busy GPU 0", extra, j, i+1)
		}
		for _, want := range []string{
			fmt.Sprintf("hello from job %d (hello) on %s\n", j.ID, host),
			"CUDA_VISIBLE_DEVICES=" + joinInts(j.GPUs) + "\n",
			"index, name, memory.total [MiB]\n",
		} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("launch %v: output lacks %q:\n%s", extra, want, r.stdout)
			}
		}
		// nvidia-smi lists the job's GPUs and no other.
		var want []string
		for _, g := range j.GPUs {
			want = append(want, fmt.Sprintf("%d, %s, %d MiB", g, rtx[g].Name, rtx[g].MemoryTotalMiB))
		}
		if got := linesContaining(r.stdout, rtx[0].Name); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("launch %v: nvidia-smi lines %q, want %q", extra, got, want)
		}
	}
}

func TestExampleTrainLossFallsAndResumesFromCheckpoint(t *testing.T) {
	t.Parallel()
	requireVenv(t)
	torch := nodeHasTorch()
	if !torch {
		t.Log("torch is not importable by the node's python3: testing train.py's pure-Python path; the torch path is untested here")
	}
	c, home, env := examplesCluster(t)
	ckpt := filepath.Join(c.Nodes[0].Home, "checkpoints", "train")
	os.RemoveAll(ckpt) // left by an earlier -count run on the shared node
	// This machine has no package index; an offline cluster is launched so.
	offline := []string{"--env", "PIP_NO_INDEX=1"}

	// As SkyPilot runs it: from the directory its workdir (.) names.
	r := sshqIn(t, "examples/train", c, home, env, append([]string{"launch", "task.yaml"}, offline...)...)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	j := jobAt(t, c, home, env, 0)
	if j.State != "SUCCEEDED" || len(j.GPUs) != 1 {
		t.Fatalf("job %+v, want SUCCEEDED on 1 GPU", j)
	}
	for _, want := range []string{
		fmt.Sprintf("job %d (train): lr=0.1 epochs=20\n", j.ID),
		fmt.Sprintf("GPUs: CUDA_VISIBLE_DEVICES=%d (1 per node)\n", j.GPUs[0]),
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	if !torch {
		for _, want := range []string{"setup: pip could not install requirements.txt", "backend: pure Python"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("without torch the output should say %q:\n%s", want, r.stdout)
			}
		}
	}
	epochs, losses := trainLosses(t, r.stdout)
	checkTraining(t, r.stdout, epochs, losses, 1, 20, "0.1")

	if !torch {
		var saved struct{ Epoch int }
		b, err := os.ReadFile(filepath.Join(ckpt, "last.json"))
		if err != nil || json.Unmarshal(b, &saved) != nil || saved.Epoch != 20 {
			t.Fatalf("checkpoint after 20 epochs: %s, %v", b, err)
		}
	} else if _, err := os.Stat(filepath.Join(ckpt, "last.pt")); err != nil {
		t.Fatalf("no torch checkpoint: %v", err)
	}

	// Launched again under the same name with more epochs, it resumes.
	r = sshqIn(t, "examples/train", c, home, env, append([]string{"launch", "task.yaml", "--env", "EPOCHS=25"}, offline...)...)
	if r.code != 0 {
		t.Fatalf("second run: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "resuming from "+ckpt+"/last.") {
		t.Errorf("second run does not resume from %s:\n%s", ckpt, r.stdout)
	}
	epochs2, losses2 := trainLosses(t, r.stdout)
	checkTraining(t, r.stdout, epochs2, losses2, 21, 25, "0.1")
	if len(losses2) > 0 && losses2[0] >= losses[len(losses)-1] {
		t.Errorf("resumed at loss %g, after the first run ended at %g: it started over", losses2[0], losses[len(losses)-1])
	}

	// For real runs REQUIRE_TORCH=1 turns a failed install into a failed setup.
	if !torch {
		r = sshqIn(t, "examples/train", c, home, env, append([]string{"launch", "task.yaml", "--name", "strict", "--env", "REQUIRE_TORCH=1"}, offline...)...)
		j := jobAt(t, c, home, env, 2)
		if r.code == 0 || j.State != "FAILED_SETUP" || strings.Contains(r.stdout, "epoch ") ||
			!strings.Contains(r.stdout, "setup: pip could not install requirements.txt (see above)") {
			t.Errorf("REQUIRE_TORCH=1 without torch: exit %d, job %s, want FAILED_SETUP before training:\n%s", r.code, j.State, r.stdout)
		}
	}
}

func TestExampleSweepRunsOneJobPerLR(t *testing.T) {
	t.Parallel()
	requireVenv(t)
	c, home, env := examplesCluster(t)
	lrs := []string{"0.01", "0.1", "0.3"}
	for _, lr := range lrs { // left by an earlier -count run on the shared node
		os.RemoveAll(filepath.Join(c.Nodes[0].Home, "checkpoints", "sweep-lr-"+lr))
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	cmd := exec.CommandContext(ctx, "examples/sweep.sh", "--env", "EPOCHS=10", "--env", "PIP_NO_INDEX=1")
	cmd.Env = append([]string{
		"PATH=" + filepath.Dir(sshqBin) + string(os.PathListSeparator) + os.Getenv("PATH"),
		"HOME=" + home, "SSHQ_HOME=" + filepath.Join(home, ".sshq"), "SSHQ_SSH_CONFIG=" + c.ConfigPath,
		"LRS=" + strings.Join(lrs, " "),
	}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("sweep.sh: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}

	q := queue(t, c, home, env)
	if len(q) != len(lrs) {
		t.Fatalf("%d jobs, want one per LR (%d): %+v", len(q), len(lrs), q)
	}
	final := map[string]float64{}
	for i, j := range q {
		lr := lrs[i]
		if j.Name != "sweep-lr-"+lr || j.State != "SUCCEEDED" {
			t.Errorf("job %d: %s %s, want sweep-lr-%s SUCCEEDED", j.ID, j.Name, j.State, lr)
			continue
		}
		log := sshq(t, c, home, env, "logs", strconv.Itoa(j.ID)).stdout
		epochs, losses := trainLosses(t, log)
		checkTraining(t, log, epochs, losses, 1, 10, lr)
		if len(losses) > 0 {
			final[lr] = losses[len(losses)-1]
		}
		// The script's summary names each job's result.
		if want := fmt.Sprintf("#%d final loss %.6f (lr=%s)\n", j.ID, final[lr], lr); !strings.Contains(stdout.String(), want) {
			t.Errorf("sweep.sh summary lacks %q:\n%s", want, stdout.String())
		}
	}
	// The point of the sweep: on this convex problem a larger (stable) LR
	// gets further in the same number of epochs.
	if !(final["0.01"] > final["0.1"] && final["0.1"] > final["0.3"]) {
		t.Errorf("final losses by LR: %v", final)
	}
	// Where the jobs ran depends on how fast each one finished; placement
	// is tested in fairshare_test.go and orchestrator/place_test.go.
}

// examples is one node shared by the tests of examples/train and
// examples/sweep.sh, each with its own controller home: their jobs share
// the virtualenv that setup builds once per node, as a team's jobs do.
// Building it costs seconds of CPU, once here instead of once per test.
var examples struct {
	once sync.Once
	c    *sshtest.Cluster
	dir  string
	err  error
}

func examplesCluster(t *testing.T) (*sshtest.Cluster, string, []string) {
	t.Helper()
	sshtest.Require(t)
	examples.once.Do(func() {
		examples.dir, examples.err = os.MkdirTemp("", "sshq-examples")
		if examples.err != nil {
			return
		}
		// Four GPUs: the sweep's three jobs and the training run all fit.
		examples.c, examples.err = sshtest.NewCluster(examples.dir, sshtest.Options{Names: []string{"gpus"}, Env: nodeEnv})
		if examples.err == nil {
			examples.err = gpusim.Install(examples.c.Nodes[0].Dir, gpusim.RTX4090x4("examples"))
		}
	})
	if examples.err != nil {
		t.Fatal(examples.err)
	}
	return examples.c, t.TempDir(), []string{"SSHQ_NODES=gpus"}
}

// closeExamples stops the shared node once every test is done.
func closeExamples() {
	if examples.c != nil {
		examples.c.Close()
	}
	if examples.dir != "" {
		os.RemoveAll(examples.dir)
	}
}

func TestExampleAllGPUsWaitsForTheWholeNode(t *testing.T) {
	t.Parallel()
	a100 := gpusim.A100x2(t.Name())
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"a100": a100})
	flag := filepath.Join(c.Node("a100").Home, "release")
	r := sshq(t, c, home, env, "launch", "-d", "--name", "blocker", "--gpus", "A100:1", "--",
		fmt.Sprintf("while [ ! -e %s ]; do sleep 0.1; done", flag))
	if r.code != 0 {
		t.Fatalf("blocker: %d %s", r.code, r.stderr)
	}
	waitFor(t, "the blocker holds a GPU", func() bool { return jobAt(t, c, home, env, 0).State == "RUNNING" })

	r = sshq(t, c, home, env, "launch", "-d", "examples/all-gpus.yaml")
	if r.code != 0 || !strings.Contains(r.stderr, "until 2 GPU(s) free up") {
		t.Fatalf("all-gpus: exit %d, want it queued:\n%s", r.code, r.stderr)
	}
	// A younger 1-GPU job does not pass it, though one GPU is idle.
	r = sshq(t, c, home, env, "launch", "-d", "--name", "small", "--gpus", "1", "--", "echo small")
	if r.code != 0 {
		t.Fatalf("small: %d %s", r.code, r.stderr)
	}
	var q []queueEntry
	waitFor(t, "all-gpus first and small second in the node's queue", func() bool {
		q = queue(t, c, home, env)
		return len(q) == 3 && q[1].State == "PENDING" && q[1].QueuePos != nil && *q[1].QueuePos == 1 &&
			q[2].State == "PENDING" && q[2].QueuePos != nil && *q[2].QueuePos == 2
	})
	var st statusJSON
	if err := json.Unmarshal([]byte(sshq(t, c, home, env, "status", "--json").stdout), &st); err != nil {
		t.Fatal(err)
	}
	states := map[string]int{}
	for _, g := range st.Nodes[0].GPUs {
		states[g.State]++
	}
	if states["leased"] != 1 || states["free"] != 1 {
		t.Errorf("GPU states while both wait: %v, want one leased and one free", states)
	}

	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	q = waitJobs(t, c, home, env)
	if len(q) != 3 {
		t.Fatalf("jobs: %+v", q)
	}
	for _, j := range q {
		if j.State != "SUCCEEDED" {
			t.Errorf("job %d %s: %s", j.ID, j.Name, j.State)
		}
	}
	all := q[1]
	if all.Name != "all-gpus" || joinInts(all.GPUs) != "0,1" {
		t.Fatalf("all-gpus job: %+v, want both GPUs", all)
	}
	log := sshq(t, c, home, env, "logs", strconv.Itoa(all.ID)).stdout
	want := fmt.Sprintf("job %d has 2 GPUs: CUDA_VISIBLE_DEVICES=0,1\n0, %s\n1, %s\n", all.ID, a100[0].Name, a100[1].Name)
	if !strings.Contains(log, want) {
		t.Errorf("all-gpus log lacks %q:\n%s", want, log)
	}
}

func TestExampleSkyPilotFileRunsWithWarnings(t *testing.T) {
	t.Parallel()
	a100 := gpusim.A100x2(t.Name())
	c, home, env := gpuCluster(t, map[string][]gpusim.GPU{"a100": a100})
	r := sshq(t, c, home, env, "launch", "examples/skypilot.yaml")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	// One warning per cloud-only field, at the line to edit.
	src, err := os.ReadFile("examples/skypilot.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"cloud", "region", "use_spot", "disk_size"} {
		line := 0
		for i, l := range strings.Split(string(src), "\n") {
			if strings.HasPrefix(l, "  "+field+":") {
				line = i + 1
			}
		}
		if want := fmt.Sprintf("skypilot.yaml:%d:3: resources.%s is ignored", line, field); line == 0 || strings.Count(r.stderr, want) != 1 {
			t.Errorf("stderr should say %q once:\n%s", want, r.stderr)
		}
	}
	if n := strings.Count(r.stderr, "warning:"); n != 4 {
		t.Errorf("%d warnings, want 4 (accelerators, num_nodes, envs, setup and run are honoured):\n%s", n, r.stderr)
	}

	j := jobAt(t, c, home, env, 0)
	if j.State != "SUCCEEDED" || len(j.GPUs) != 1 {
		t.Fatalf("job %+v, want SUCCEEDED on 1 GPU", j)
	}
	ip := c.Node("a100").Addr
	g := j.GPUs[0]
	for _, want := range []string{
		"setup: pip install -r requirements.txt would go here\n",
		fmt.Sprintf("node 0 of 1, head node %s, 1 GPU(s) here\n", ip),
		fmt.Sprintf("task %s: model gpt2, batch size 16\n", j.UID),
		fmt.Sprintf("torchrun --nnodes=1 --node_rank=0 --nproc_per_node=1 --master_addr=%s --master_port=29500 finetune.py --model gpt2 --batch-size 16\n", ip),
		fmt.Sprintf("%d, %s\n", g, a100[g].Name),
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
}

// requireVenv fails the test where the node's python3 cannot make the
// virtualenv that examples/train's setup builds: that is a machine to fix
// (apt-get install python3-venv), not a reason to skip the example.
func requireVenv(t *testing.T) {
	t.Helper()
	if out, err := nodePython("import venv, ensurepip").CombinedOutput(); err != nil {
		t.Fatalf("the node's python3 cannot create a venv (apt-get install python3-venv): %v\n%s", err, out)
	}
}

func nodeHasTorch() bool { return nodePython("import torch").Run() == nil }

// nodePython runs code with the python3 that test nodes find: their PATH
// is their bin directory, then the system's.
func nodePython(code string) *exec.Cmd {
	cmd := exec.Command("bash", "-c", `exec python3 -c "$1"`, "python", code)
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	return cmd
}

var epochLine = regexp.MustCompile(`(?m)^epoch +(\d+)  loss ([0-9.e+-]+)$`)

// trainLosses reads train.py's "epoch N  loss X" lines.
func trainLosses(t *testing.T, out string) (epochs []int, losses []float64) {
	t.Helper()
	for _, m := range epochLine.FindAllStringSubmatch(out, -1) {
		e, _ := strconv.Atoi(m[1])
		l, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatalf("loss %q: %v", m[2], err)
		}
		epochs, losses = append(epochs, e), append(losses, l)
	}
	return epochs, losses
}

// checkTraining asserts that a run trained epochs first..last in order at
// the given LR, its loss falling at every epoch, and reported the last one.
func checkTraining(t *testing.T, out string, epochs []int, losses []float64, first, last int, lr string) {
	t.Helper()
	if len(epochs) != last-first+1 {
		t.Fatalf("trained %d epochs (%v), want %d..%d:\n%s", len(epochs), epochs, first, last, out)
	}
	for i, e := range epochs {
		if e != first+i {
			t.Errorf("epochs %v, want %d..%d", epochs, first, last)
			break
		}
		if i > 0 && losses[i] >= losses[i-1] {
			t.Errorf("loss rose at epoch %d: %v", e, losses)
			break
		}
	}
	if want := fmt.Sprintf("final loss %.6f (lr=%s)\n", losses[len(losses)-1], lr); !strings.Contains(out, want) {
		t.Errorf("output lacks %q:\n%s", want, out)
	}
}

// jobAt is the i-th job (0-based) of `sshq queue -a`.
func jobAt(t *testing.T, c *sshtest.Cluster, home string, env []string, i int) queueEntry {
	t.Helper()
	q := queue(t, c, home, env)
	if i >= len(q) {
		t.Fatalf("sshq queue lists %d jobs, want at least %d: %+v", len(q), i+1, q)
	}
	return q[i]
}

func linesContaining(s, sub string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return out
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}
