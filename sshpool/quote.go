package sshpool

import "strings"

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
