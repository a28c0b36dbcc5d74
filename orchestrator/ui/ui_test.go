package ui

import (
	"bytes"
	"strings"
	"testing"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestPipedOutputIsPlainAlignedColumns(t *testing.T) {
	t.Parallel()
	st := For(&bytes.Buffer{}, env())
	if st.TTY || st.Color {
		t.Fatalf("a buffer is not a terminal: %+v", st)
	}
	got := st.Table([]string{"NODE", "GPUS"}, [][]string{{"a-long-name", "8"}, {"b", st.Paint(Red, "0")}})
	want := "NODE         GPUS\na-long-name  8\nb            0\n"
	if got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
}

func TestNoColorKeepsTablesButDropsEscapes(t *testing.T) {
	t.Parallel()
	st := For(&bytes.Buffer{}, env("SSHQ_FORCE_TTY", "1", "NO_COLOR", "1"))
	if !st.TTY || st.Color {
		t.Fatalf("want a terminal without colour: %+v", st)
	}
	out := st.Table([]string{"GPU"}, [][]string{{st.Paint(Green, "free")}}) + st.Bold("x")
	if strings.Contains(out, "\x1b[") {
		t.Errorf("escape sequences with NO_COLOR: %q", out)
	}
	if !strings.Contains(out, "╭") || !strings.Contains(out, "free") {
		t.Errorf("terminal table lost its border or content: %q", out)
	}
}

func TestMiB(t *testing.T) {
	t.Parallel()
	for in, want := range map[int]string{-1: "?", 0: "0M", 412: "412M", 1536: "1.5G", 81559: "80G"} {
		if got := MiB(in); got != want {
			t.Errorf("MiB(%d) = %q, want %q", in, got, want)
		}
	}
}
