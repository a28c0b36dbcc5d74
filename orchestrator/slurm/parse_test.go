package slurm

import (
	"bytes"
	"context"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/job"
)

func TestParseGres(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]map[string]int{
		"gpu:a100:2":                              {"a100": 2},
		"gpu:a100:2(S:0-1)":                       {"a100": 2},
		"gpu:a100:2(S:0-1),gpu:v100:1,mps:4":      {"a100": 2, "v100": 1},
		"gpu:a100:1(IDX:0,2),gpu:v100:0(IDX:N/A)": {"a100": 1, "v100": 0},
		"gpu:4":                              {"": 4},
		"gpu:(null):0":                       {"": 0},
		"(null)":                             {},
		"":                                   {},
		"gpu:nvidia_a100-sxm4-80gb:8(S:0-1)": {"nvidia_a100-sxm4-80gb": 8},
	} {
		if got := parseGres(in); !reflect.DeepEqual(got, want) {
			t.Errorf("parseGres(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestParseInfoMergesPartitionsAndCountsGPUs(t *testing.T) {
	t.Parallel()
	c := New("login", nil)
	info, rest, err := c.parseInfo([]string{
		"has|sacct",
		"version|slurm-wlm 22.05.8",
		"partition|gpu*|up|infinite|2|n[1-2]|",
		"partition|debug|down|30:00|1|n1|",
		"node|n1|gpu*|mixed|gpu:a100:2(S:0),gpu:v100:1|gpu:a100:1(IDX:1),gpu:v100:0(IDX:N/A)|3/5/0/8|4000|300|none|",
		"node|n1|debug|mixed|gpu:a100:2(S:0),gpu:v100:1|gpu:a100:1(IDX:1),gpu:v100:0(IDX:N/A)|3/5/0/8|4000|300|none|",
		"node|n2|gpu*|drained|gpu:h100:4|gpu:h100:0(IDX:N/A)|0/0/16/16|8000|0|disk | failing|",
		"job|12|gpu|RUNNING|alice|1:02|1|gres:gpu:a100:1|n1|None|my|job|",
	})
	if err != nil {
		t.Fatal(err)
	}
	if !info.HasSacct || info.Version != "slurm-wlm 22.05.8" {
		t.Errorf("info: %+v", info)
	}
	wantParts := []Partition{
		{Name: "gpu", Default: true, Up: true, TimeLimit: "infinite", Nodes: 2, NodeList: "n[1-2]"},
		{Name: "debug", TimeLimit: "30:00", Nodes: 1, NodeList: "n1"},
	}
	if !reflect.DeepEqual(info.Partitions, wantParts) {
		t.Errorf("partitions: %+v", info.Partitions)
	}
	wantNodes := []Node{
		{Name: "n1", Partitions: []string{"gpu", "debug"}, State: "mixed",
			GPUs: []GPU{{"a100", 2, 1}, {"v100", 1, 0}}, CPUsAlloc: 3, CPUsTotal: 8, MemoryMB: 4000, AllocMemMB: 300},
		{Name: "n2", Partitions: []string{"gpu"}, State: "drained", GPUs: []GPU{{"h100", 4, 0}},
			CPUsTotal: 16, MemoryMB: 8000, Reason: "disk | failing"},
	}
	if !reflect.DeepEqual(info.Nodes, wantNodes) {
		t.Errorf("nodes:\n got %+v\nwant %+v", info.Nodes, wantNodes)
	}
	if got := info.GPUTypes(); !reflect.DeepEqual(got, []string{"a100", "h100", "v100"}) {
		t.Errorf("GPUTypes: %v", got)
	}
	if len(rest) != 1 {
		t.Fatalf("rest: %q", rest)
	}
	q, ok := parseQueueLine(strings.TrimPrefix(rest[0], "job|"))
	want := QueueEntry{ID: "12", Partition: "gpu", State: job.Running, SlurmState: "RUNNING", User: "alice",
		Name: "my|job", TimeUsed: "1:02", NumNodes: 1, GRES: "gres:gpu:a100:1", NodeList: "n1"}
	if !ok || q != want {
		t.Errorf("queue line: %+v, want %+v", q, want)
	}
}

func TestResolveGPUType(t *testing.T) {
	t.Parallel()
	info := &Info{Nodes: []Node{
		{GPUs: []GPU{{Type: "a100"}, {Type: "nvidia_h100_80gb_hbm3"}}},
		{GPUs: []GPU{{Type: "l40s"}, {Type: "L4"}, {Type: "rtx_a6000_48g"}, {Type: "rtx_a6000_24g"}}},
	}}
	for want, got := range map[string]string{"A100": "a100", "a100": "a100", "H100": "nvidia_h100_80gb_hbm3",
		"L4": "L4", "l4": "L4", "L40S": "l40s", "": "", "rtx_a6000_48g": "rtx_a6000_48g"} {
		r, err := info.ResolveGPUType(want)
		if err != nil || r != got {
			t.Errorf("ResolveGPUType(%q) = %q, %v; want %q", want, r, err, got)
		}
	}
	for want, msg := range map[string]string{
		"V100":  "not on this cluster; its GPU gres types are L4, a100, l40s, nvidia_h100_80gb_hbm3, rtx_a6000_24g, rtx_a6000_48g",
		"A6000": "matches several",
	} {
		if _, err := info.ResolveGPUType(want); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ResolveGPUType(%q): %v, want %q", want, err, msg)
		}
	}
	if _, err := (&Info{}).ResolveGPUType("A100"); err == nil || !strings.Contains(err.Error(), "no typed GPU gres") {
		t.Errorf("on a cluster without typed gres: %v", err)
	}
}

func TestMapState(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]job.State{
		"PENDING": job.Pending, "CONFIGURING": job.Pending, "REQUEUED": job.Pending,
		"RUNNING": job.Running, "COMPLETING": job.Running, "SUSPENDED": job.Running,
		"COMPLETED": job.Succeeded, "FAILED": job.Failed, "CANCELLED": job.Cancelled,
		"CANCELLED by 1000": job.Cancelled, "TIMEOUT": job.Timeout, "OUT_OF_MEMORY": job.OutOfMemory,
		"NODE_FAIL": job.Lost, "BOOT_FAIL": job.Lost, "PREEMPTED": job.Lost,
		"SOMETHING_NEW": job.Pending,
	} {
		if got := MapState(in); got != want {
			t.Errorf("MapState(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestParseScontrolJob(t *testing.T) {
	t.Parallel()
	line := "JobId=1 JobName=a b c UserId=root(0) JobState=FAILED Reason=NonZeroExitCode Dependency=(null) ExitCode=3:0 RunTime=00:00:00 Command=/x y/batch.sh"
	js := parseScontrolJob(line)
	if js.State != job.Failed || js.Reason != "NonZeroExitCode" || js.ExitCode == nil || *js.ExitCode != 3 {
		t.Errorf("failed job: %+v", js)
	}
	js = parseScontrolJob("JobId=2 JobState=CANCELLED Reason=None ExitCode=0:15")
	if js.State != job.Cancelled || js.Reason != "" || js.ExitCode == nil || *js.ExitCode != 143 {
		t.Errorf("cancelled job: %+v", js)
	}
	js = parseScontrolJob("JobId=3 JobState=RUNNING Reason=None ExitCode=0:0")
	if js.State != job.Running || js.ExitCode != nil {
		t.Errorf("running job has an exit code: %+v", js)
	}
}

func TestFormatTime(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		90 * time.Second: "0-00:01:30", 36 * time.Hour: "1-12:00:00", 1500 * time.Millisecond: "0-00:00:02",
	} {
		if got := FormatTime(d); got != want {
			t.Errorf("FormatTime(%s) = %s, want %s", d, got, want)
		}
	}
}

func TestSubmissionKeepsSecretsOffTheCommandLine(t *testing.T) {
	t.Parallel()
	spec := JobSpec{UID: "u-1", ID: 3, Name: "two\nlines", NumGPUs: 2, CPUs: 4, MemoryMB: 8192,
		Time: 2 * time.Hour, NumNodes: 2, Partition: "big", Workdir: "wd dir",
		Env: []EnvVar{{"A", "1"}}, Secrets: []EnvVar{{"TOKEN", "hunter2"}}, Run: "true"}
	args, stdin, err := submission(spec, "a100")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{".sshq/slurm/u-1", "wd dir", "--", "--job-name=two lines", "--nodes=2", "--ntasks-per-node=1",
		"--no-requeue", "--partition=big", "--gres=gpu:a100:2", "--cpus-per-task=4", "--mem=8192M", "--time=0-02:00:00"}
	if !reflect.DeepEqual(args, want) {
		t.Errorf("args:\n got %q\nwant %q", args, want)
	}
	if strings.Contains(command("submit", args...), "hunter2") {
		t.Error("the secret is on the command line")
	}
	if !bytes.Contains(stdin, []byte("secrets.sh\x00# the task's secrets: deleted once the batch script sourced them\nexport TOKEN=hunter2\n\x00")) {
		t.Errorf("stdin lacks the secrets file: %q", stdin)
	}
	if args, _, _ := submission(JobSpec{UID: "u-2", NumGPUs: 1, Run: "true"}, ""); !reflect.DeepEqual(args[3:], []string{"--job-name=sshq-u-2", "--nodes=1", "--ntasks-per-node=1", "--no-requeue", "--gres=gpu:1"}) {
		t.Errorf("untyped GPU request: %q", args)
	}
	for _, bad := range []JobSpec{
		{UID: "a/b", Run: "true"},
		{UID: "u", Env: []EnvVar{{"1X", "v"}}},
		{UID: "u", Secrets: []EnvVar{{"X", "a\x00b"}}},
		{UID: "u", NumGPUs: -1},
	} {
		if _, _, err := submission(bad, ""); err == nil {
			t.Errorf("submission(%+v) accepted", bad)
		}
	}
}

// fake answers every command with canned output.
type fake struct {
	out  string
	code int
}

func (f fake) Run(_ context.Context, _ string, _ io.Reader, stdout, _ io.Writer) (int, error) {
	io.WriteString(stdout, f.out)
	return f.code, nil
}

func TestProbeNamesMissingCommands(t *testing.T) {
	t.Parallel()
	c := New("box", fake{out: "Welcome!\nSSHQ-BEGIN 1\nmissing|sbatch\nmissing|squeue\nerror|sinfo: command not found\nSSHQ-END\n"})
	_, err := c.Probe(context.Background())
	if err == nil || !strings.Contains(err.Error(), "box is not a Slurm login node: sbatch, squeue not found") {
		t.Errorf("Probe: %v", err)
	}
	c = New("box", fake{out: "SSHQ-BEGIN 1\nversion|slurm 23.02.1\nerror|sinfo: Unable to contact slurm controller\nSSHQ-END\n"})
	if _, err := c.Probe(context.Background()); err == nil || !strings.Contains(err.Error(), "Unable to contact slurm controller") || !strings.Contains(err.Error(), "scontrol ping") {
		t.Errorf("Probe with the controller down: %v", err)
	}
	c = New("box", fake{out: "SSHQ-BEGIN 1\nversion|x\n"})
	if _, err := c.Probe(context.Background()); err == nil || !strings.Contains(err.Error(), "cut short") {
		t.Errorf("Probe with a cut report: %v", err)
	}
	if _, err := New("box", fake{}).Jobs(context.Background(), []string{"1; reboot"}); err == nil {
		t.Error("Jobs accepted a job id that is not a number")
	}
}
