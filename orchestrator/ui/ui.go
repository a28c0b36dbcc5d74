// Package ui renders sshq's human output: lipgloss tables and colour on a
// terminal, plain aligned text when piped (so grep and awk see stable
// columns), and no colour when NO_COLOR is set, as https://no-color.org asks.
package ui

import (
	"fmt"
	"io"
	"os"
	"strings"
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
func (s Style) Table(headers []string, rows [][]string) string {
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

// MiB formats a MiB count the way nvidia-smi users read it.
func MiB(m int) string {
	switch {
	case m < 0:
		return "?"
	case m >= 10*1024:
		return fmt.Sprintf("%.0fG", float64(m)/1024)
	case m >= 1024:
		return fmt.Sprintf("%.1fG", float64(m)/1024)
	}
	return fmt.Sprintf("%dM", m)
}
