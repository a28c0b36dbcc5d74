package cmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestArgumentNormalizationNeverTouchesTheJobCommand(t *testing.T) {
	t.Parallel()
	app := NewApp(newHarness(t).factory())
	task := filepath.Join(t.TempDir(), "t.yaml")
	os.WriteFile(task, []byte("run: echo hi\n"), 0o644)
	for _, tc := range []struct{ in, want []string }{
		{[]string{"sshq", "status", "--watch"}, []string{"sshq", "status", "--watch", "2"}},
		{[]string{"sshq", "status", "--watch", "0.5"}, []string{"sshq", "status", "--watch", "0.5"}},
		{[]string{"sshq", "launch", "--", "grep", "-w", "foo"}, []string{"sshq", "launch", "--", "grep", "-w", "foo"}},
		{[]string{"sshq", "launch", "--", "python", "x.py", "--watch"}, []string{"sshq", "launch", "--", "python", "x.py", "--watch"}},
		{[]string{"sshq", "launch", task, "-d", "--env", "A=1"}, []string{"sshq", "launch", "-d", "--env", "A=1", "--", task}},
		{[]string{"sshq", "launch", task, "python", "train.py", "--lr", "3"}, []string{"sshq", "launch", "--", task, "python", "train.py", "--lr", "3"}},
		{[]string{"sshq", "launch", task, "-d", "--", "python", "train.py", "--lr", "3"}, []string{"sshq", "launch", "-d", "--", task, "python", "train.py", "--lr", "3"}},
		{[]string{"sshq", "--nodes", "a", "launch", task, "-d"}, []string{"sshq", "--nodes", "a", "launch", "-d", "--", task}},
		{[]string{"sshq", "launch", "python", "train.py", "-d"}, []string{"sshq", "launch", "python", "train.py", "-d"}},
	} {
		if got := normalizeArgs(app, tc.in); strings.Join(got, "\x00") != strings.Join(tc.want, "\x00") {
			t.Errorf("normalizeArgs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
