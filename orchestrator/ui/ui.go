// Package ui renders sshq's human output: lipgloss tables and colour on a
// terminal, plain aligned text when piped (so grep and awk see stable
// columns), and no colour when NO_COLOR is set, as https://no-color.org asks.
//
// Text that comes from a node is written by other users and by programs
// sshq does not control, so it is shown only through Safe, and Table
// escapes every control character in its cells but its own colours.
package ui

import (
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/lipgloss/table"
	"github.com/mattn/go-isatty"
	"github.com/muesli/termenv"
)

// Style decides how output looks for one writer.
type Style struct {
	TTY   bool // a terminal: tables with borders, progress bars, in-place refresh
	Color bool
	r     *lipgloss.Renderer
}

// For inspects w: a terminal gets tables, anything else plain text.
// getenv is injected so tests and `sshq` itself decide from the same source.
func For(w io.Writer, getenv func(string) string) Style {
	tty := false
	if f, ok := w.(*os.File); ok {
		tty = isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd())
	}
	if getenv("SSHQ_FORCE_TTY") != "" {
		tty = true
	}
	color := tty && getenv("NO_COLOR") == "" && getenv("TERM") != "dumb"
	r := lipgloss.NewRenderer(w)
	if !color {
		r.SetColorProfile(termenv.Ascii) // no escape sequences at all
	}
	return Style{TTY: tty, Color: color, r: r}
}

// Colour names used across commands, so a state looks the same everywhere.
const (
	Green  = "2"
	Red    = "1"
	Yellow = "3"
	Blue   = "4"
	Gray   = "8"
)

// Paint colours s when colour is on.
func (s Style) Paint(color, text string) string {
	if !s.Color {
		return text
	}
	return s.r.NewStyle().Foreground(lipgloss.Color(color)).Render(text)
}

// Bold emphasises s when colour is on.
func (s Style) Bold(text string) string {
	if !s.Color {
		return text
	}
	return s.r.NewStyle().Bold(true).Render(text)
}

// Table renders rows under headers: a rounded lipgloss table on a
// terminal, otherwise columns separated by two spaces with no decoration.
//
// Every cell goes through the same escaping as Safe, except that the
// colour sequences Paint and Bold make are kept: a newline, a cursor move
// or a title change in a cell is printed as text, so no cell can add a
// row or rewrite the screen. Callers should still pass node-sourced text
// through Safe (or SafeRow) before painting it, which also escapes colour
// sequences that text carries.
func (s Style) Table(headers []string, rows [][]string) string {
	headers = cellRow(headers)
	clean := make([][]string, len(rows))
	for i, r := range rows {
		clean[i] = cellRow(r)
	}
	rows = clean
	if !s.TTY {
		return plainTable(headers, rows)
	}
	t := table.New().
		Border(lipgloss.RoundedBorder()).
		BorderStyle(s.r.NewStyle().Foreground(lipgloss.Color(Gray))).
		Headers(headers...).
		Rows(rows...).
		StyleFunc(func(row, col int) lipgloss.Style {
			st := s.r.NewStyle().Padding(0, 1)
			if row == table.HeaderRow {
				return st.Bold(s.Color)
			}
			return st
		})
	return t.Render() + "\n"
}

func plainTable(headers []string, rows [][]string) string {
	width := make([]int, len(headers))
	all := append([][]string{headers}, rows...)
	for _, r := range all {
		for i, c := range r {
			if i < len(width) {
				if w := displayWidth(c); w > width[i] {
					width[i] = w
				}
			}
		}
	}
	var b strings.Builder
	for _, r := range all {
		var line strings.Builder
		for i, c := range r {
			if i >= len(width) {
				break
			}
			line.WriteString(c)
			if i < len(r)-1 {
				line.WriteString(strings.Repeat(" ", width[i]-displayWidth(c)+2))
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " "))
		b.WriteByte('\n')
	}
	return b.String()
}

func displayWidth(s string) int { return utf8.RuneCountInString(stripANSI(s)) }

func stripANSI(s string) string {
	if !strings.Contains(s, "\x1b") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b {
			for i < len(s) && !(s[i] >= 'a' && s[i] <= 'z' || s[i] >= 'A' && s[i] <= 'Z') {
				i++
			}
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// MiB formats a MiB count the way nvidia-smi users read it. A negative
// count is one the node could not tell (nvidia-smi prints [N/A] for the
// memory of unified-memory GPUs) and shows as "-", as nvidia-smi's own
// tables do.
func MiB(m int) string {
	switch {
	case m < 0:
		return "-"
	case m >= 10*1024:
		return fmt.Sprintf("%.0fG", float64(m)/1024)
	case m >= 1024:
		return fmt.Sprintf("%.1fG", float64(m)/1024)
	}
	return fmt.Sprintf("%dM", m)
}

// MiBOf is MiB for a figure the driver may not report (nil: "-").
func MiBOf(m *int) string {
	if m == nil {
		return "-"
	}
	return MiB(*m)
}

// Safe returns s ready to print on a terminal: every control character is
// replaced by a visible escape, so text that came from a node (a job name,
// a user name, nvidia-smi output, an error from the remote side) cannot
// move the cursor, retitle the window, hide text, or start a new line and
// forge a row. Escaped are C0 controls including ESC, \n, \r and \t (as
// \x1b, \n, \r, \t), DEL (\x7f), C1 controls (\u009b) and other
// non-printing runes such as bidi overrides (\u202e), and bytes that are
// not UTF-8 (\xff). Printable text, in any script, comes back unchanged,
// and Safe(Safe(s)) == Safe(s).
//
// Safe is for display only: apply it to data before painting it, since it
// escapes the ui package's own colour sequences too. --json output must
// carry the exact value, unescaped; encoding/json escapes control
// characters itself.
func Safe(s string) string { return escape(s, false) }

// SafeRow applies Safe to every cell of a table row.
func SafeRow(cells ...string) []string {
	out := make([]string, len(cells))
	for i, c := range cells {
		out[i] = Safe(c)
	}
	return out
}

func cellRow(cells []string) []string {
	out := make([]string, len(cells))
	for i, c := range cells {
		out[i] = escape(c, true)
	}
	return out
}

// escape is Safe; with keepSGR it leaves SGR sequences (ESC [ params m:
// colour and bold, all that Paint and Bold emit) as they are.
func escape(s string, keepSGR bool) string {
	i := 0
	for i < len(s) && s[i] >= 0x20 && s[i] < 0x7f {
		i++
	}
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for i < len(s) {
		c := s[i]
		if c >= 0x20 && c < 0x7f {
			b.WriteByte(c)
			i++
			continue
		}
		if keepSGR && c == 0x1b {
			if n := sgrLen(s[i:]); n > 0 {
				b.WriteString(s[i : i+n])
				i += n
				continue
			}
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, c)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		case unicode.IsPrint(r):
			b.WriteString(s[i : i+size])
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
		i += size
	}
	return b.String()
}

// sgrLen is the length of the SGR sequence s starts with, or 0.
func sgrLen(s string) int {
	if len(s) < 3 || s[0] != 0x1b || s[1] != '[' {
		return 0
	}
	for i := 2; i < len(s) && i < 64; i++ {
		switch c := s[i]; {
		case c == 'm':
			return i + 1
		case c >= '0' && c <= '9' || c == ';' || c == ':':
		default:
			return 0
		}
	}
	return 0
}
