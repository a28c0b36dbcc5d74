package cmd

import (
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// normalizeArgs lets `--watch` stand without a value (`sshq status --watch`
// refreshes every 2 s), and lets flags follow arguments (`sshq logs 4 -f`,
// `sshq launch task.yaml -d`), which urfave/cli cannot express by itself:
// it stops reading flags at the first argument. Words of a job's command
// and words after `--` are never touched.
func normalizeArgs(app *cli.App, args []string) []string {
	args = launchFlagsFirst(app, args)
	args = watchValue(app, args)
	return flagsFirst(app, args)
}

// watchValue gives a bare `status --watch` its default period.
func watchValue(app *cli.App, args []string) []string {
	ci := commandAt(app, args)
	if ci < 0 || args[ci] != "status" {
		return args
	}
	out := make([]string, 0, len(args)+1)
	for i, a := range args {
		out = append(out, a)
		if a == "--" {
			return append(out, args[i+1:]...)
		}
		if i > ci && (a == "--watch" || a == "-w") {
			next := ""
			if i+1 < len(args) {
				next = args[i+1]
			}
			if _, err := strconv.ParseFloat(next, 64); err != nil {
				out = append(out, "2")
			}
		}
	}
	return out
}

// valueFlags are the names (without dashes) of flags that take a value.
func valueFlags(flags []cli.Flag) map[string]bool {
	m := map[string]bool{}
	for _, f := range flags {
		tv, ok := f.(interface{ TakesValue() bool })
		if !ok || !tv.TakesValue() {
			continue
		}
		for _, n := range f.Names() {
			m[n] = true
		}
	}
	return m
}

// takesValue reports whether the word is a flag of the set that takes
// its value from the next word.
func takesValue(word string, vals map[string]bool) bool {
	return strings.HasPrefix(word, "-") && !strings.Contains(word, "=") && vals[strings.TrimLeft(word, "-")]
}

// commandAt finds the command word after the global flags: its index, or
// -1.
func commandAt(app *cli.App, args []string) int {
	gvals := valueFlags(app.Flags)
	for i := 1; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return -1
		}
		if strings.HasPrefix(a, "-") {
			if takesValue(a, gvals) {
				i++
			}
			continue
		}
		return i
	}
	return -1
}

// flagsFirst moves the flags of a command other than launch in front of
// its arguments: `sshq cancel 12 --grace 1s` reads as `sshq cancel --grace
// 1s 12`. Which words are flags, and which of them take a value, comes
// from the command's own flag set. Words after `--` are arguments, even if
// they start with a dash.
func flagsFirst(app *cli.App, args []string) []string {
	ci := commandAt(app, args)
	if ci < 0 || args[ci] == "launch" {
		return args
	}
	cmd := app.Command(args[ci])
	if cmd == nil {
		return args
	}
	vals := valueFlags(cmd.Flags)
	var flags, words, after []string
	dashdash := false
	rest := args[ci+1:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			dashdash, after = true, rest[i+1:]
			break
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			flags = append(flags, a)
			if takesValue(a, vals) && i+1 < len(rest) {
				i++
				flags = append(flags, rest[i])
			}
			continue
		}
		words = append(words, a)
	}
	out := append(append([]string{}, args[:ci+1]...), flags...)
	if dashdash {
		out = append(out, "--")
	}
	out = append(out, words...)
	return append(out, after...)
}

// launchFlagsFirst moves flags written after a task file in front of it:
// `sshq launch task.yaml -d --env A=1` works like `sshq launch -d --env A=1
// task.yaml`. Only the flags right after the task file move; from the first
// other word (or `--`) on, everything is the job's command, in order: in
// `sshq launch task.yaml python train.py --lr 3`, --lr is the program's.
func launchFlagsFirst(app *cli.App, args []string) []string {
	li := commandAt(app, args)
	if li < 0 || args[li] != "launch" {
		return args
	}
	vals := valueFlags(app.Command("launch").Flags)
	rest := args[li+1:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			return args
		}
		if strings.HasPrefix(a, "-") {
			if takesValue(a, vals) {
				i++
			}
			continue
		}
		if !isTaskFile(a) {
			return args
		}
		tail := rest[i+1:]
		var flags []string
		j := 0
		for ; j < len(tail); j++ {
			if tail[j] == "--" {
				j++
				break
			}
			if !strings.HasPrefix(tail[j], "-") {
				break
			}
			flags = append(flags, tail[j])
			if takesValue(tail[j], vals) && j+1 < len(tail) {
				j++
				flags = append(flags, tail[j])
			}
		}
		out := append([]string{}, args[:li+1]...)
		out = append(out, rest[:i]...)
		out = append(out, flags...)
		out = append(out, "--", a)
		return append(out, tail[j:]...)
	}
	return args
}

// isTaskFile is the rule of `sshq launch ARG`: an existing .yaml/.yml file
// is a task; any other word starts a command.
func isTaskFile(a string) bool {
	if !strings.HasSuffix(a, ".yaml") && !strings.HasSuffix(a, ".yml") {
		return false
	}
	fi, err := os.Stat(a)
	return err == nil && !fi.IsDir()
}
