package ui

import (
	"bytes"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/muesli/termenv"
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
	for in, want := range map[int]string{-1: "-", 0: "0M", 412: "412M", 1536: "1.5G", 81559: "80G"} {
		if got := MiB(in); got != want {
			t.Errorf("MiB(%d) = %q, want %q", in, got, want)
		}
	}
}

func TestSafeEscapesControlsVisibly(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"train-7":                     "train-7",
		"héllo 训练 🚀 a\\nb":            "héllo 训练 🚀 a\\nb",
		"evil\x1b]0;pwned\x07":        `evil\x1b]0;pwned\x07`,
		"a\nb\rc\td":                  `a\nb\rc\td`,
		"\x1b[2J\x1b[H":               `\x1b[2J\x1b[H`,
		"del\x7f":                     `del\x7f`,
		"c1\u009b31m":                 `c1\u009b31m`,
		"bad\xff\xc3":                 `bad\xff\xc3`,
		"rtl\u202eexe.txt":            `rtl\u202eexe.txt`,
		"tag\U000e0041":               `tag\U000e0041`,
		"\x00nul":                     `\x00nul`,
		"replacement \ufffd is text":  "replacement \ufffd is text",
		"plain spaces stay  spaced  ": "plain spaces stay  spaced  ",
	} {
		if got := Safe(in); got != want {
			t.Errorf("Safe(%q) = %q, want %q", in, got, want)
		}
	}
	if got := SafeRow("a\nb", "ok"); len(got) != 2 || got[0] != `a\nb` || got[1] != "ok" {
		t.Errorf("SafeRow = %q", got)
	}
}

// Another user's job name forged a GPU row and retitled a third user's
// terminal through status: a newline in a cell started a new row.
func TestTableCellsCannotForgeRows(t *testing.T) {
	t.Parallel()
	evil := "mine\n0    H100    free\x1b]0;pwned\x07\x1b[2J"
	headers := []string{"GPU", "JOB"}
	rows := [][]string{{"0", evil}, {"1", "ok"}}

	plain := For(&bytes.Buffer{}, env()).Table(headers, rows)
	if n := strings.Count(plain, "\n"); n != 3 {
		t.Errorf("plain table has %d lines, want 3 (header and two rows):\n%s", n, plain)
	}
	if strings.ContainsAny(plain, "\x1b\x07\r") || !strings.Contains(plain, `mine\n0    H100    free\x1b]0;pwned\x07\x1b[2J`) {
		t.Errorf("plain table does not show the name escaped: %q", plain)
	}

	st := For(&bytes.Buffer{}, env("SSHQ_FORCE_TTY", "1"))
	st.r.SetColorProfile(termenv.ANSI)
	if !st.Color {
		t.Fatalf("want colour: %+v", st)
	}
	painted := [][]string{{st.Paint(Green, "0"), evil}, {"1", st.Bold("ok")}}
	tty := st.Table(headers, painted)
	clean := st.Table(headers, [][]string{{st.Paint(Green, "0"), "x"}, {"1", st.Bold("ok")}})
	if strings.Count(tty, "\n") != strings.Count(clean, "\n") {
		t.Errorf("terminal table grew rows from a name:\n%s", tty)
	}
	if strings.Contains(tty, "\x1b]") || strings.Contains(tty, "\x1b[2J") || strings.Contains(tty, "\x07") {
		t.Errorf("terminal table passes a foreign escape through: %q", tty)
	}
	// The package's own colour still reaches the terminal.
	if !strings.Contains(tty, "\x1b[") || !strings.Contains(tty, st.Paint(Green, "0")) {
		t.Errorf("colour was lost: %q", tty)
	}
}

// FuzzSafe: whatever a node sends, Safe's output holds no control byte or
// rune and is valid UTF-8; printable text comes back as it was.
func FuzzSafe(f *testing.F) {
	for _, s := range []string{"", "train", "a\nb", "\x1b]0;x\x07", "\xc2\x9b", "\xff", "训练", "\u202e", "\x1b[31mred\x1b[0m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := Safe(in)
		if !utf8.ValidString(out) {
			t.Fatalf("Safe(%q) = %q is not UTF-8", in, out)
		}
		for i := 0; i < len(out); i++ {
			if out[i] < 0x20 || out[i] == 0x7f {
				t.Fatalf("Safe(%q) = %q holds byte %#x", in, out, out[i])
			}
		}
		printable := utf8.ValidString(in)
		for _, r := range out {
			if r >= 0x80 && r <= 0x9f || !unicode.IsPrint(r) {
				t.Fatalf("Safe(%q) = %q holds rune %U", in, out, r)
			}
		}
		for _, r := range in {
			printable = printable && unicode.IsPrint(r)
		}
		if printable && out != in {
			t.Fatalf("printable %q came back as %q", in, out)
		}
		if Safe(out) != out {
			t.Fatalf("Safe is not idempotent on %q", in)
		}
		cell := escape(in, true)
		if strings.ContainsAny(cell, "\n\r") || strings.Count(cell, "\x1b") != strings.Count(cell, "\x1b[") {
			t.Fatalf("table cell %q from %q can break a row or carry a non-SGR escape", cell, in)
		}
	})
}
