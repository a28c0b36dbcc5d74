package cmd

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// InitOptions are `sshq init`'s.
type InitOptions struct {
	IO         *IOStreams
	Controller func() (Controller, error)

	Patterns []string
}

// NewCmdInit builds `sshq init`; runF replaces initRun in tests.
func NewCmdInit(f *Factory, runF func(*InitOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "init",
		Usage:     "choose which ssh hosts are sshq nodes (writes $SSHQ_HOME/config.yaml)",
		ArgsUsage: "PATTERN...",
		Description: `Patterns are Host aliases of your ssh config or globs over them; !glob excludes.

Examples:
   sshq init gpu-1 gpu-2 dgx
   sshq init 'gpu-*' '!gpu-old'`,
		Action: func(c *cli.Context) error {
			opts := &InitOptions{IO: f.IO, Controller: opener(c, f), Patterns: c.Args().Slice()}
			if runF != nil {
				return runF(opts)
			}
			return initRun(opts)
		},
	}
}

func initRun(opts *InitOptions) error {
	ctrl, err := opts.Controller()
	if err != nil {
		return err
	}
	defer ctrl.Close()
	v, err := ctrl.Init(opts.Patterns)
	if err != nil {
		return err
	}
	if !v.Saved {
		fmt.Fprintf(opts.IO.Out, "nodes: %s (from %s)\n", strings.Join(v.Patterns, ", "), v.Path)
		return nil
	}
	fmt.Fprintf(opts.IO.Out, "wrote %s: %d node(s): %s\nnext: `sshq nodes` checks that each is ready\n",
		v.Path, len(v.Nodes), strings.Join(v.Nodes, ", "))
	return nil
}
