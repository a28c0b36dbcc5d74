package sshpool

import (
	"bytes"
	"os/exec"
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
