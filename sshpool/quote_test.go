package sshpool

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// roundTrip has a real sh print its arguments NUL-separated, so the test
// checks what a remote shell would actually receive.
func roundTrip(t testing.TB, args ...string) []string {
	t.Helper()
	script := "printf '%s\\0' " + Command(args...)
	out, err := exec.Command("sh", "-c", script).Output()
	if err != nil {
		t.Fatalf("sh -c %q: %v", script, err)
	}
	parts := bytes.Split(out, []byte{0})
	parts = parts[:len(parts)-1]
	got := make([]string, len(parts))
	for i, p := range parts {
		got[i] = string(p)
	}
	return got
}

func TestQuoteHostileWords(t *testing.T) {
	t.Parallel()
	cases := []string{
		"", "plain", "$(rm -rf ~)", "'; reboot", "`id`", "a b\tc", "line1\nline2",
		"\"dq\"", "back\\slash", "*", "~", "~root", "$HOME", "a=b", "-n", "!event", "#comment",
		"{a,b}", "x;y&z|w>v<u", "'", "''", "\x01\x7f\xff", "ünïcødé", "=", "%s",
	}
	got := roundTrip(t, cases...)
	if len(got) != len(cases) {
		t.Fatalf("got %d words, want %d: %q", len(got), len(cases), got)
	}
	for i := range cases {
		if got[i] != cases[i] {
			t.Errorf("word %d: got %q, want %q", i, got[i], cases[i])
		}
	}
}

func TestQuoteSafeWordsStayReadable(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"tmux", "-L", "sshq", "/tmp/x.lock", "GPU-1234,GPU-5678", "K=V"} {
		if Quote(s) != s {
			t.Errorf("Quote(%q) = %q, want it unquoted", s, Quote(s))
		}
	}
}

func FuzzQuote(f *testing.F) {
	for _, s := range []string{"", "$(rm -rf ~)", "'; reboot", "a'b\"c`d", "\n", "~"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if bytes.IndexByte([]byte(s), 0) >= 0 {
			t.Skip("a NUL byte cannot be part of any argv word")
		}
		got := roundTrip(t, s, "sentinel")
		if len(got) != 2 || got[0] != s || got[1] != "sentinel" {
			t.Fatalf("Quote(%q) reached the shell as %q", s, got)
		}
	})
}

func TestExportLineArrivesByteExact(t *testing.T) {
	t.Parallel()
	vals := []string{"", "$(touch pwned)", "'; exit 9", "a b\nc", "`id`", "\x01\xff", "x=y"}
	var script strings.Builder
	for i, v := range vals {
		line, err := ExportLine(fmt.Sprintf("V_%d", i), v)
		if err != nil {
			t.Fatal(err)
		}
		script.WriteString(line)
	}
	for i := range vals {
		fmt.Fprintf(&script, "printf '%%s\\0' \"$V_%d\"\n", i)
	}
	dir := t.TempDir()
	cmd := exec.Command("bash", "-c", script.String())
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bash: %v", err)
	}
	got := strings.Split(string(out), "\x00")
	if len(got) != len(vals)+1 {
		t.Fatalf("got %q, want %q", got, vals)
	}
	for i, v := range vals {
		if got[i] != v {
			t.Errorf("V_%d arrived as %q, want %q", i, got[i], v)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "pwned")); err == nil {
		t.Error("a value ran as a command")
	}
	for _, bad := range [][2]string{{"", "x"}, {"1X", "x"}, {"A-B", "x"}, {"A B", "x"}, {"PATH=", "x"}, {"OK", "a\x00b"}} {
		if line, err := ExportLine(bad[0], bad[1]); err == nil {
			t.Errorf("ExportLine(%q, %q) = %q, want it refused", bad[0], bad[1], line)
		}
	}
}
