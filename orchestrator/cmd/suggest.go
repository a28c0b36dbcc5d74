package cmd

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// didYouMean is ": did you mean X?" for the candidate closest to a
// mistyped word, or "" when none is close: a wrong guess is worse than
// none.
func didYouMean(word string, candidates []string) string {
	best, bestD := "", 1<<30
	var prefixed []string
	for _, c := range candidates {
		if strings.HasPrefix(c, word) {
			prefixed = append(prefixed, c)
		}
		if d := editDistance(word, c); d < bestD {
			best, bestD = c, d
		}
	}
	limit := 2
	if len([]rune(word)) <= 4 {
		limit = 1
	}
	switch {
	case bestD <= limit:
		return fmt.Sprintf(": did you mean %s?", best)
	case len(prefixed) == 1 && word != "":
		return fmt.Sprintf(": did you mean %s?", prefixed[0])
	}
	return ""
}

// editDistance counts the insertions, deletions, substitutions and swaps of
// neighbours that turn a into b (optimal string alignment), so `stauts` is
// one step from `status`.
func editDistance(a, b string) int {
	s, t := []rune(a), []rune(b)
	d := make([][]int, len(s)+1)
	for i := range d {
		d[i] = make([]int, len(t)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(s); i++ {
		for j := 1; j <= len(t); j++ {
			cost := 1
			if s[i-1] == t[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && s[i-1] == t[j-2] && s[i-2] == t[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(s)][len(t)]
}

// commandNames are the names a user may type as a command.
func commandNames(app *cli.App) []string {
	names := []string{"help"}
	for _, c := range app.Commands {
		if !c.Hidden {
			names = append(names, c.Names()...)
		}
	}
	return names
}

// flagWords are a flag set's names as typed: --name, or -n for one letter.
func flagWords(flags []cli.Flag) []string {
	words := []string{"--help", "-h"}
	for _, f := range flags {
		for _, n := range f.Names() {
			if len(n) == 1 {
				words = append(words, "-"+n)
			} else {
				words = append(words, "--"+n)
			}
		}
	}
	return words
}

// usageError turns urfave/cli's flag errors into sshq's: what was wrong,
// the flag meant when it is close, and where the help is.
func usageError(err error, flags []cli.Flag, help string) error {
	if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: "); ok {
		typed := "-" + strings.TrimLeft(name, "-")
		if len(strings.TrimLeft(name, "-")) > 1 {
			typed = "-" + typed
		}
		var names []string
		for _, w := range flagWords(flags) {
			if strings.HasPrefix(w, "--") {
				names = append(names, w)
			}
		}
		return usageErr("unknown flag %s%s (see `%s`)", typed, didYouMean(typed, names), help)
	}
	return usageErr("%v (see `%s`)", err, help)
}

// rootAction handles what is not a command: no words (the help), `help
// [COMMAND]`, and mistyped commands.
func rootAction(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) == 0 {
		return cli.ShowAppHelp(c)
	}
	if args[0] == "help" {
		if len(args) == 1 {
			return cli.ShowAppHelp(c)
		}
		if c.App.Command(args[1]) == nil {
			return usageErr("no command %q%s (run `sshq help` for the list)", args[1], didYouMean(args[1], commandNames(c.App)))
		}
		return cli.ShowCommandHelp(c, args[1])
	}
	return usageErr("unknown command %q%s (run `sshq help` for the list)", args[0], didYouMean(args[0], commandNames(c.App)))
}
