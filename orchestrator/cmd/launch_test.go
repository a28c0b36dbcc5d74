package cmd

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/orchestrator/task"
)

// launched runs `sshq launch -d ARGS... -- true` against the fake and
// returns the task it would have submitted.
func launched(t *testing.T, h *harness, args ...string) (*task.Task, int) {
	t.Helper()
	var got *task.Task
	h.fake.launch = func(_ context.Context, r orchestrator.LaunchRequest) (*orchestrator.LaunchView, error) {
		got = r.Task
		return &orchestrator.LaunchView{Job: &store.Job{ID: 1, Name: r.Task.Name, Node: "box", State: job.Pending}}, nil
	}
	code := h.run(append(append([]string{"launch", "-d"}, args...), "--", "true")...)
	return got, code
}

// A value is everything after the first '=', as typed: never split at
// commas, never trimmed.
func TestEnvAndSecretValuesAreVerbatim(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.env["HOME"] = "/home/controller"
	tk, code := launched(t, h, "--env", "OPTS=a,HOME", "--env", "X=1,Y=2", "--env", "EQ=k=v", "--env", "SP= padded ",
		"--secret", "TOKEN=s3cr3t-part1,part2-S3CR3T")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, h.err.String())
	}
	want := map[string]string{"OPTS": "a,HOME", "X": "1,Y=2", "EQ": "k=v", "SP": " padded "}
	if !maps.Equal(tk.Envs, want) {
		t.Errorf("envs %q, want %q", tk.Envs, want)
	}
	if len(tk.Secrets) != 1 || tk.Secrets["TOKEN"] != "s3cr3t-part1,part2-S3CR3T" {
		t.Errorf("secrets: %d of them, TOKEN intact: %v", len(tk.Secrets), tk.Secrets["TOKEN"] == "s3cr3t-part1,part2-S3CR3T")
	}
}

// A word without '=' is taken from this shell only when it is a variable
// name; a secret's text is never printed, whatever is wrong with it.
func TestBareEnvWordsAndSecretsNeverPrinted(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.env["LOCAL"], h.env["LOCAL_KEY"] = "from-shell", "key-from-shell"
	tk, code := launched(t, h, "--env", "LOCAL", "--secret", "LOCAL_KEY")
	if code != 0 || tk.Envs["LOCAL"] != "from-shell" || tk.Secrets["LOCAL_KEY"] != "key-from-shell" {
		t.Fatalf("--env LOCAL: exit %d, envs %q: %s", code, tk.Envs, h.err.String())
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--env", "a,b"}, `--env "a,b": not NAME=VALUE`},
		{[]string{"--env", "UNSET_HERE"}, "UNSET_HERE is not set in this shell"},
		{[]string{"--env", "1X=y"}, "not a variable name"},
		{[]string{"--secret", "s3cr3t-part1,part2-S3CR3T"}, "--secret #1 (its text is not shown): not NAME=VALUE"},
		{[]string{"--secret", "A=ok", "--secret", "ghp_S3CR3Ttoken"}, "--secret #2 (its text is not shown): no variable of that name is set"},
		{[]string{"--secret", "abc+/S3CR3T==x"}, "not a variable name"},
		{[]string{"--secret", "=S3CR3T"}, "the name before = is empty"},
	} {
		h := newHarness(t)
		_, code := launched(t, h, tc.args...)
		msg := h.err.String() + h.out.String()
		if code != ExitUsage || !strings.Contains(msg, tc.want) {
			t.Errorf("launch %q: exit %d, %q; want exit 2 and %q", tc.args, code, msg, tc.want)
		}
		if strings.Contains(msg, "S3CR3T") {
			t.Errorf("launch %q printed the secret's text: %q", tc.args, msg)
		}
	}
}

// --env-file is sky launch's: dotenv, below --env; its errors name the
// file and line, and exit 2.
func TestEnvFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "my.env")
	if err := os.WriteFile(good, []byte("# settings\nexport LR=3e-4\nMODEL='gpt2 small'\nBATCH=8\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t)
	tk, code := launched(t, h, "--env-file", good, "--env", "BATCH=16")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, h.err.String())
	}
	if want := map[string]string{"LR": "3e-4", "MODEL": "gpt2 small", "BATCH": "16"}; !maps.Equal(tk.Envs, want) {
		t.Errorf("envs %q, want %q (--env over the file)", tk.Envs, want)
	}
	bad := filepath.Join(dir, "bad.env")
	if err := os.WriteFile(bad, []byte("A=1\n\nthis line is wrong\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h = newHarness(t)
	if _, code := launched(t, h, "--env-file", bad); code != ExitUsage || !strings.Contains(h.err.String(), bad+":3: --env-file: not KEY=VALUE") {
		t.Errorf("bad file: exit %d, %s", code, h.err.String())
	}
	h = newHarness(t)
	if _, code := launched(t, h, "--env-file", filepath.Join(dir, "none.env")); code != ExitUsage || !strings.Contains(h.err.String(), "cannot read the env file") {
		t.Errorf("missing file: exit %d, %s", code, h.err.String())
	}
}
