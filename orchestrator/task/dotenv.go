package task

import (
	"fmt"
	"os"
	"regexp"
	"strings"
)

// MaxEnvFileSize bounds an --env-file: the variables a job may get total
// 1 MiB (MaxEnvTotal), so a larger file is the wrong file.
const MaxEnvFileSize = 2 << 20

// LoadEnvFile reads a dotenv file (`sky launch --env-file`): see
// ParseEnvFile. lookup supplies ${VAR} references the file does not set
// (os.LookupEnv).
func LoadEnvFile(path string, lookup func(string) (string, bool)) (map[string]string, error) {
	if fi, err := os.Stat(path); err == nil && fi.Size() > MaxEnvFileSize {
		return nil, &Error{File: path, Field: "--env-file", Msg: fmt.Sprintf("the file is %d bytes and an env file may have at most %d: is this the right file?", fi.Size(), MaxEnvFileSize)}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{Field: "--env-file", Msg: "cannot read the env file: " + err.Error(), err: err}
	}
	return ParseEnvFile(path, data, lookup)
}

var dotenvKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ParseEnvFile reads dotenv syntax as python-dotenv (SkyPilot's reader)
// does: KEY=VALUE lines, blank lines and # comments, an optional `export `,
// values unquoted (trimmed, a " #" starts a comment), 'single-quoted'
// (literal) or "double-quoted" (\n \t \" \\ escapes), quoted values may
// span lines, and ${VAR} or ${VAR:-default} in unquoted and double-quoted
// values takes an earlier line's value, else lookup's. A later line wins.
// Errors name the file and line and never quote a value: the file may
// hold secrets.
func ParseEnvFile(name string, data []byte, lookup func(string) (string, bool)) (map[string]string, error) {
	out := map[string]string{}
	lines := strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")
	errAt := func(line int, format string, a ...any) error {
		return &Error{File: name, Line: line, Field: "--env-file", Msg: fmt.Sprintf(format, a...)}
	}
	for i := 0; i < len(lines); i++ {
		lineNo := i + 1
		s := strings.TrimSpace(lines[i])
		if s == "" || s[0] == '#' {
			continue
		}
		if rest, ok := strings.CutPrefix(s, "export"); ok && rest != "" && (rest[0] == ' ' || rest[0] == '\t') {
			s = strings.TrimSpace(rest)
		}
		key, val, ok := strings.Cut(s, "=")
		key = strings.TrimSpace(key)
		if !ok {
			return nil, errAt(lineNo, "not KEY=VALUE: write one variable per line as NAME=value (the line is not shown, in case it holds a secret)")
		}
		if !dotenvKey.MatchString(key) {
			return nil, errAt(lineNo, "the text before = is not a variable name (letters, digits and _, not starting with a digit)")
		}
		if why := checkEnvName(key); why != "" {
			return nil, errAt(lineNo, "%s: %s", key, why)
		}
		val = strings.TrimLeft(val, " \t")
		var value string
		switch {
		case val != "" && (val[0] == '\'' || val[0] == '"'):
			q := val[0]
			body := val[1:]
			start := lineNo
			// A quoted value ends at its closing quote, lines later if need be.
			for {
				end := closingQuote(body, q)
				if end >= 0 {
					rest := strings.TrimSpace(body[end+1:])
					if rest != "" && rest[0] != '#' {
						return nil, errAt(lineNo, "%s: text after the closing quote: quote the whole value, or put a # before a comment", key)
					}
					body = body[:end]
					break
				}
				i++
				if i >= len(lines) {
					return nil, errAt(start, "%s: the %c quote that opens the value is never closed", key, q)
				}
				lineNo = i + 1
				body += "\n" + lines[i]
			}
			if q == '\'' {
				value = body
			} else {
				value = expandDotenv(unescapeDouble(body), out, lookup)
			}
		default:
			if j := strings.Index(val, " #"); j >= 0 {
				val = val[:j]
			} else if j := strings.Index(val, "\t#"); j >= 0 {
				val = val[:j]
			}
			value = expandDotenv(strings.TrimSpace(val), out, lookup)
		}
		if why := envValueProblem(value); why != "" {
			return nil, errAt(lineNo, "%s: %s", key, why)
		}
		out[key] = value
	}
	return out, nil
}

// closingQuote finds the quote q that ends body; in double quotes a
// backslash escapes the next character.
func closingQuote(body string, q byte) int {
	for i := 0; i < len(body); i++ {
		if q == '"' && body[i] == '\\' {
			i++
			continue
		}
		if body[i] == q {
			return i
		}
	}
	return -1
}

func unescapeDouble(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case '"', '\\', '\'':
			b.WriteByte(s[i])
		default:
			b.WriteByte('\\')
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

var dotenvRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// expandDotenv replaces ${VAR} and ${VAR:-default}, as python-dotenv does:
// the file's earlier value, else lookup's, else the default, else empty.
func expandDotenv(s string, file map[string]string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "${") {
		return s
	}
	return dotenvRef.ReplaceAllStringFunc(s, func(ref string) string {
		m := dotenvRef.FindStringSubmatch(ref)
		if v, ok := file[m[1]]; ok {
			return v
		}
		if lookup != nil {
			if v, ok := lookup(m[1]); ok {
				return v
			}
		}
		return m[3]
	})
}
