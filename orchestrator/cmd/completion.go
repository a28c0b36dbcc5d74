package cmd

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/sshq/sshq/orchestrator"
)

// CompletionOptions are `sshq completion`'s.
type CompletionOptions struct {
	IO    *IOStreams
	Shell string
	// Fish renders the fish script from the app's commands and flags.
	Fish func() (string, error)
}

// NewCmdCompletion builds `sshq completion`; runF replaces completionRun in
// tests.
func NewCmdCompletion(f *Factory, runF func(*CompletionOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash, zsh or fish)",
		ArgsUsage: "bash|zsh|fish",
		Description: `Prints a script that completes sshq's commands, flags, job ids and files.

Examples:
   source <(sshq completion bash)                       # bash, in ~/.bashrc
   sshq completion zsh > "${fpath[1]}/_sshq"            # zsh
   sshq completion fish > ~/.config/fish/completions/sshq.fish`,
		Action: func(c *cli.Context) error {
			opts := &CompletionOptions{IO: f.IO, Shell: c.Args().First(), Fish: c.App.ToFishCompletion}
			if runF != nil {
				return runF(opts)
			}
			return completionRun(opts)
		},
	}
}

func completionRun(opts *CompletionOptions) error {
	switch opts.Shell {
	case "bash":
		fmt.Fprint(opts.IO.Out, bashCompletion)
	case "zsh":
		fmt.Fprint(opts.IO.Out, zshCompletion)
	case "fish":
		s, err := opts.Fish()
		if err != nil {
			return err
		}
		fmt.Fprintln(opts.IO.Out, s)
	default:
		return usageErr("completion needs a shell: `sshq completion bash`, `zsh` or `fish`")
	}
	return nil
}

const completionFlag = "--generate-bash-completion"

// completing reports whether sshq is asked for completions rather than to
// run a command.
func completing(args []string) bool {
	n := len(args)
	return n > 0 && args[n-1] == completionFlag
}

// complete answers a completion request: the words typed so far, then,
// when the word being typed starts with a dash, that word. It offers
// commands, then a command's flags (`sshq logs --<TAB>`), its job ids or
// shells. Words after `--` are the job's own command: it answers nothing
// (the shell completes files) and never runs the command, which would
// launch the job.
func complete(args []string, f *Factory) {
	n := len(args) - 1 // args[n] is the completion flag
	if slices.Contains(args[:n], "--") {
		return
	}
	app := NewApp(f)
	out := f.IO.Out
	last := ""
	if n > 1 {
		last = args[n-1]
	}
	partial := strings.HasPrefix(last, "-") && last != "-"
	ci := commandAt(app, args[:n])
	if ci < 0 {
		if partial && !isFlag(last, app.Flags) {
			printMatching(out, flagWords(app.Flags), last)
			return
		}
		for _, name := range commandNames(app) {
			fmt.Fprintln(out, name)
		}
		return
	}
	cmd := app.Command(args[ci])
	if cmd == nil {
		return
	}
	if partial && n-1 > ci {
		if !isFlag(last, cmd.Flags) {
			printMatching(out, flagWords(cmd.Flags), last)
			return
		}
		if valueFlags(cmd.Flags)[strings.TrimLeft(last, "-")] {
			return // the flag's value: the shell completes files
		}
	}
	switch cmd.Name {
	case "logs", "cancel", "wait", "attach", "forward", "download":
		ctrl, err := f.Controller(completionOptions(args[:n], f))
		if err != nil {
			return
		}
		defer ctrl.Close()
		// Ended jobs have output and files, not processes.
		refs, _ := ctrl.JobRefs(cmd.Name != "logs" && cmd.Name != "download")
		for _, r := range refs {
			fmt.Fprintln(out, r)
		}
	case "completion":
		fmt.Fprintln(out, "bash\nzsh\nfish")
	}
}

// completionOptions reads the global flags typed so far (`sshq --home H
// logs <TAB>` completes H's jobs) without running anything.
func completionOptions(args []string, f *Factory) orchestrator.ControllerOptions {
	vals := map[string]string{}
	for i := 1; i < len(args); i++ {
		name, v, inline := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if !strings.HasPrefix(args[i], "-") || (name != "home" && name != "ssh-config" && name != "nodes" && name != "slurm") {
			continue
		}
		if !inline && i+1 < len(args) {
			i++
			v = args[i]
		}
		vals[name] = v
	}
	return optionsFrom(vals, f)
}

// isFlag reports whether word is exactly one of the flags: then it is a
// word already typed, not the one being completed.
func isFlag(word string, flags []cli.Flag) bool {
	return slices.Contains(flagWords(flags), word)
}

func printMatching(w io.Writer, words []string, prefix string) {
	for _, x := range words {
		if strings.HasPrefix(x, prefix) {
			fmt.Fprintln(w, x)
		}
	}
}

// The scripts ask sshq itself (--generate-bash-completion), so they never
// go stale when commands or flags change.
const bashCompletion = `# bash completion for sshq
_sshq_complete() {
  local cur words
  cur="${COMP_WORDS[COMP_CWORD]}"
  words=("${COMP_WORDS[@]:0:COMP_CWORD}")
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "$("${words[@]}" "$cur" --generate-bash-completion 2>/dev/null)" -- "$cur"))
  else
    COMPREPLY=($(compgen -W "$("${words[@]}" --generate-bash-completion 2>/dev/null)" -- "$cur"))
    [[ ${#COMPREPLY[@]} -eq 0 ]] && COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -o default -F _sshq_complete sshq
`

const zshCompletion = `#compdef sshq
_sshq() {
  local -a opts
  local cur=${words[-1]}
  if [[ "$cur" == -* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} ${cur} --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ -n "${opts[1]}" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
compdef _sshq sshq
`
