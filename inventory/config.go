package inventory

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Config is a user's ssh client config, read once with its Includes inlined.
type Config struct {
	// Path is the top-level file; Default is true when it is ~/.ssh/config
	// chosen implicitly, in which case /etc/ssh/ssh_config also applies.
	Path    string
	Default bool
	// Text is the config with Includes expanded and Match blocks rewritten
	// or dropped: what the fallback resolver decodes.
	Text []byte
	// Aliases are the concrete Host names (no wildcards, no negation), in
	// file order, each once.
	Aliases []string
	// Warnings are one line each about what sshq could not honour.
	Warnings []string
}

// DefaultConfigPath is ~/.ssh/config.
func DefaultConfigPath() string { return filepath.Join(homeDir(), ".ssh", "config") }

// maxIncludeDepth matches OpenSSH's READCONF_MAX_DEPTH.
const maxIncludeDepth = 16

// Load reads path (or the default config when path is "") and everything it
// Includes. A missing default config is an empty config; a missing explicit
// one is an error, because the user named it.
func Load(path string) (*Config, error) {
	c := &Config{Path: path}
	if path == "" {
		c.Path, c.Default = DefaultConfigPath(), true
	}
	var buf bytes.Buffer
	st := &loadState{cfg: c, out: &buf}
	if err := st.file(c.Path, 0, !c.Default); err != nil {
		return nil, err
	}
	c.Text = buf.Bytes()
	if st.skippedMatch > 0 {
		c.Warnings = append(c.Warnings, fmt.Sprintf(
			"%s: %d Match block(s) use criteria sshq's built-in parser cannot evaluate; they are ignored (install the OpenSSH client so sshq can use `ssh -G`)",
			c.Path, st.skippedMatch))
	}
	return c, nil
}

type loadState struct {
	cfg          *Config
	out          *bytes.Buffer
	seen         map[string]bool
	skippedMatch int
	inSkip       bool
}

func (st *loadState) file(path string, depth int, mustExist bool) error {
	if depth > maxIncludeDepth {
		return fmt.Errorf("%s: Include nested more than %d deep (an Include loop?)", path, maxIncludeDepth)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && !mustExist {
			return nil
		}
		return fmt.Errorf("reading ssh config: %w (set --ssh-config or SSHQ_SSH_CONFIG to the file that lists your nodes)", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := strings.TrimRight(sc.Text(), "\r")
		key, args := splitDirective(line)
		switch strings.ToLower(key) {
		case "include":
			if st.inSkip {
				continue
			}
			for _, pat := range args {
				if err := st.include(pat, depth); err != nil {
					return fmt.Errorf("%s:%d: %w", path, lineNo, err)
				}
			}
			continue
		case "host":
			st.inSkip = false
			for _, a := range args {
				if !strings.ContainsAny(a, "*?!") {
					st.addAlias(a)
				}
			}
		case "match":
			if hosts, ok := matchAsHost(args); ok {
				st.inSkip = false
				fmt.Fprintf(st.out, "Host %s\n", strings.Join(hosts, " "))
			} else {
				st.inSkip = true
				st.skippedMatch++
			}
			continue
		}
		if st.inSkip {
			continue
		}
		st.out.WriteString(line)
		st.out.WriteByte('\n')
	}
	return sc.Err()
}

func (st *loadState) addAlias(a string) {
	if st.seen == nil {
		st.seen = map[string]bool{}
	}
	if !st.seen[a] {
		st.seen[a] = true
		st.cfg.Aliases = append(st.cfg.Aliases, a)
	}
}

// include expands one Include argument as OpenSSH does: `~` is the home
// directory and a relative path is relative to ~/.ssh; globs match files,
// sorted; a pattern matching nothing is not an error.
func (st *loadState) include(pat string, depth int) error {
	if strings.HasPrefix(pat, "~/") {
		pat = filepath.Join(homeDir(), pat[2:])
	} else if !filepath.IsAbs(pat) {
		pat = filepath.Join(homeDir(), ".ssh", pat)
	}
	matches, err := filepath.Glob(pat)
	if err != nil {
		return fmt.Errorf("bad Include pattern %q: %w", pat, err)
	}
	sort.Strings(matches)
	for _, m := range matches {
		if fi, err := os.Stat(m); err == nil && fi.IsDir() {
			continue
		}
		if err := st.file(m, depth+1, false); err != nil {
			return err
		}
	}
	return nil
}

// matchAsHost rewrites the Match forms that mean the same as a Host line
// (`Match all`, `Match final all`, `Match host a,b`) so the fallback parser
// honours them; anything else cannot be evaluated without OpenSSH.
func matchAsHost(args []string) ([]string, bool) {
	var rest []string
	for _, a := range args {
		switch strings.ToLower(a) {
		case "final", "canonical":
			continue
		}
		rest = append(rest, a)
	}
	switch {
	case len(rest) == 1 && strings.EqualFold(rest[0], "all"):
		return []string{"*"}, true
	case len(rest) == 2 && strings.EqualFold(rest[0], "host"):
		return strings.Split(rest[1], ","), true
	}
	return nil, false
}

// splitDirective splits a config line into its keyword and arguments,
// accepting `Key Value`, `Key=Value`, `Key = Value` and double-quoted
// arguments, and ignoring comments and blank lines.
func splitDirective(line string) (string, []string) {
	s := strings.TrimSpace(line)
	if s == "" || s[0] == '#' {
		return "", nil
	}
	i := strings.IndexAny(s, " \t=")
	if i < 0 {
		return s, nil
	}
	key := s[:i]
	rest := strings.TrimLeft(s[i:], " \t")
	if strings.HasPrefix(rest, "=") {
		rest = strings.TrimLeft(rest[1:], " \t")
	}
	return key, splitArgs(rest)
}

func splitArgs(s string) []string {
	var args []string
	var cur strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			inQuote = !inQuote
			have = true
		case (c == ' ' || c == '\t') && !inQuote:
			if have {
				args = append(args, cur.String())
				cur.Reset()
				have = false
			}
		case c == '#' && !inQuote && !have:
			return args
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	if have {
		args = append(args, cur.String())
	}
	return args
}
