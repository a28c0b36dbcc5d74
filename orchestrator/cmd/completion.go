package cmd

import (
	"context"
	"fmt"
	"slices"

	"github.com/urfave/cli/v2"
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

// complete answers a completion request. Words after `--` are the job's own
// command: it answers nothing (the shell completes files) and never lets
// the request reach the command's action, which would launch the job.
func complete(ctx context.Context, args []string, f *Factory) {
	if slices.Contains(args[:len(args)-1], "--") {
		return
	}
	app := NewApp(f)
	for _, c := range app.Commands {
		switch c.Name {
		case "logs", "cancel", "wait", "attach":
			c.BashComplete = completeJobs(f)
		}
	}
	_ = app.RunContext(ctx, args)
}

// completeJobs offers this controller's job ids: every job for logs, the
// unfinished ones for the other commands.
func completeJobs(f *Factory) cli.BashCompleteFunc {
	return func(c *cli.Context) {
		ctrl, err := opener(c, f)()
		if err != nil {
			return
		}
		defer ctrl.Close()
		refs, _ := ctrl.JobRefs(c.Command.Name != "logs")
		for _, r := range refs {
			fmt.Fprintln(f.IO.Out, r)
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
