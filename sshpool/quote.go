package sshpool

import (
	"fmt"
	"strings"
)

// Quote returns s as one POSIX shell word. Every remote command sshq sends is
// assembled from words passed through here (or through Command), so a job
// name or an env value such as `$(rm -rf ~)` or `'; reboot` reaches the node
// as data: single quotes make the shell interpret nothing, and the only byte
// they cannot hold, the single quote itself, is closed, escaped and reopened.
func Quote(s string) string {
	if s == "" {
		return "''"
	}
	if isSafeWord(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Command joins argv into a shell command line in which every element is one
// word, whatever bytes it holds.
func Command(argv ...string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = Quote(a)
	}
	return strings.Join(q, " ")
}

// isSafeWord reports whether s can stand unquoted: it keeps logs and
// `--dry-run` plans readable without widening what the shell could act on.
func isSafeWord(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-' || c == '_' || c == '.' || c == '/' || c == ',' || c == ':' || c == '@' || c == '+' || c == '%' || c == '=':
			// '=' is only special to the shell in the first word of a
			// command (an assignment); argv words never stand there alone
			// unless the caller wants that, so keep it readable.
		default:
			return false
		}
	}
	// A leading '-' is fine to the shell; '~' and globs never pass the loop.
	return true
}

// ExportLine is the line of a file bash sources that exports name with
// value, newline included. The value is one Quote word, so it arrives
// byte-exact and nothing in it runs. It refuses a name that is not an
// environment variable's (IsEnvName) and a value that holds a NUL byte,
// which no environment variable can carry.
func ExportLine(name, value string) (string, error) {
	if !IsEnvName(name) {
		return "", fmt.Errorf("%q is not a valid environment variable name (letters, digits and '_', not starting with a digit)", name)
	}
	if strings.Contains(value, "\x00") {
		return "", fmt.Errorf("the value of %s holds a NUL byte, which no environment variable can carry", name)
	}
	return "export " + name + "=" + Quote(value) + "\n", nil
}

// IsEnvName reports whether s can name an environment variable that a
// shell exports: letters, digits and '_', not starting with a digit.
func IsEnvName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
