package wsync

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path"
	"regexp"
	"strings"
)

// The matcher is our own rather than github.com/sabhiram/go-gitignore: that
// library reads one file only (no nested .gitignore with per-directory
// bases), cannot tell a directory from a file for "dir/" patterns, escapes
// "?" instead of matching one character, and guesses anchoring from
// "foo/*.ext" shapes. Syncing a file that git would ignore (or the reverse)
// is a silent data problem, so the rules below follow gitignore(5) exactly
// where it matters: last match wins across files from the root down, "!"
// re-includes, a slash anywhere but the end anchors the pattern to the
// directory of its file, a trailing slash matches directories only, "**"
// spans directories, and nothing inside an excluded directory can be
// re-included (we never descend into it).

// ignoreRule is one compiled pattern line.
type ignoreRule struct {
	base     string // directory of the ignore file, relative to the root ("" for the root)
	re       *regexp.Regexp
	negate   bool
	dirOnly  bool
	anchored bool // matched against the path below base, else against the base name
}

// ignoreRules is the ordered list of rules in force in one directory: the
// root's first, the deepest last.
type ignoreRules []ignoreRule

// ignored reports whether rel (slash-separated, relative to the sync root)
// is excluded. Every rule's base is an ancestor of rel by construction.
func (rs ignoreRules) ignored(rel string, isDir bool) bool {
	for i := len(rs) - 1; i >= 0; i-- {
		r := rs[i]
		if r.dirOnly && !isDir {
			continue
		}
		subject := rel
		if r.base != "" {
			subject = strings.TrimPrefix(rel, r.base+"/")
		}
		if !r.anchored {
			subject = path.Base(subject)
		}
		if r.re.MatchString(subject) {
			return !r.negate
		}
	}
	return false
}

// readIgnoreFile parses the ignore file at abs (if it exists and is a regular
// file) with patterns relative to base.
func readIgnoreFile(abs, base string) (ignoreRules, error) {
	fi, err := os.Lstat(abs)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read ignore file %s: %w", abs, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, nil
	}
	data, err := os.ReadFile(abs)
	if err != nil {
		return nil, fmt.Errorf("cannot read ignore file %s: %w", abs, err)
	}
	return parseIgnore(data, base), nil
}

// parseIgnore compiles the lines of one ignore file. Lines that cannot be
// compiled are skipped, as git skips them.
func parseIgnore(data []byte, base string) ignoreRules {
	var rs ignoreRules
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if r, ok := parseIgnoreLine(sc.Text(), base); ok {
			rs = append(rs, r)
		}
	}
	return rs
}

func parseIgnoreLine(line, base string) (ignoreRule, bool) {
	line = strings.TrimSuffix(line, "\r")
	// Trailing spaces go unless escaped with a backslash.
	for strings.HasSuffix(line, " ") && !strings.HasSuffix(line, `\ `) {
		line = line[:len(line)-1]
	}
	if line == "" || line[0] == '#' {
		return ignoreRule{}, false
	}
	r := ignoreRule{base: base}
	if line[0] == '!' {
		r.negate = true
		line = line[1:]
	}
	if strings.HasSuffix(line, "/") {
		r.dirOnly = true
		line = strings.TrimRight(line, "/")
	}
	if line == "" {
		return ignoreRule{}, false
	}
	if strings.Contains(line, "/") {
		r.anchored = true
		line = strings.TrimPrefix(line, "/")
	}
	re, err := regexp.Compile("^" + globToRegexp(line) + "$")
	if err != nil {
		return ignoreRule{}, false
	}
	r.re = re
	return r, true
}

// globToRegexp translates one wildmatch pattern (FNM_PATHNAME: wildcards
// never match "/") into a regular expression body.
func globToRegexp(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); {
		c := p[i]
		switch c {
		case '*':
			j := i
			for j < len(p) && p[j] == '*' {
				j++
			}
			atStart := i == 0 || p[i-1] == '/'
			switch {
			case j-i == 2 && atStart && j < len(p) && p[j] == '/': // "**/": zero or more directories
				b.WriteString(`(?:.*/)?`)
				j++ // the slash
			case j-i == 2 && atStart && j == len(p): // trailing "/**": everything inside
				b.WriteString(`.*`)
			default: // any other run of stars is one "*"
				b.WriteString(`[^/]*`)
			}
			i = j
		case '?':
			b.WriteString(`[^/]`)
			i++
		case '[':
			if cls, n := globClass(p[i:]); n > 0 {
				b.WriteString(cls)
				i += n
			} else {
				b.WriteString(`\[`)
				i++
			}
		case '\\':
			if i+1 < len(p) {
				b.WriteString(regexp.QuoteMeta(p[i+1 : i+2]))
				i += 2
			} else {
				i++ // a trailing backslash matches nothing more
			}
		default:
			b.WriteString(regexp.QuoteMeta(p[i : i+1]))
			i++
		}
	}
	return b.String()
}

// globClass translates the bracket expression at the start of p and returns
// it with the number of bytes consumed, or 0 when p has no closing bracket
// (then "[" is a literal, as in git).
func globClass(p string) (string, int) {
	var b strings.Builder
	i := 1
	b.WriteString("[")
	if i < len(p) && (p[i] == '!' || p[i] == '^') {
		b.WriteString("^/") // a negated class still never matches "/"
		i++
	}
	first := true
	for i < len(p) {
		c := p[i]
		switch {
		case c == ']' && !first:
			b.WriteString("]")
			return b.String(), i + 1
		case c == '[' && strings.HasPrefix(p[i:], "[:"):
			end := strings.Index(p[i+2:], ":]")
			if end < 0 {
				return "", 0
			}
			b.WriteString(p[i : i+2+end+2])
			i += 2 + end + 2
		case c == '\\' && i+1 < len(p):
			// An escaped letter is the letter (in Go "\d" would be a class).
			if isAlnum(p[i+1]) {
				b.WriteByte(p[i+1])
			} else {
				b.WriteString(`\` + p[i+1:i+2])
			}
			i += 2
		case c == '-':
			b.WriteString("-")
			i++
		default:
			if isAlnum(c) || c >= 0x80 {
				b.WriteByte(c)
			} else {
				b.WriteString(`\` + string(c))
			}
			i++
		}
		first = false
	}
	return "", 0
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
