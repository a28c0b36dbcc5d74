// Command sshq is an agentless GPU job queue over SSH: the nodes are the
// hosts of your ~/.ssh/config, nothing is installed on them, and jobs run
// under tmux, leasing GPUs with flock.
//
// main.go only wires the process to the command line of orchestrator/cmd:
// signals, the real IO, the exit code.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sshq/sshq/orchestrator/cmd"
)

// version is set at release time with -ldflags "-X main.version=…".
var version = "0.1.0-dev"

func main() {
	os.Exit(run(os.Args))
}

// run executes one sshq invocation. The first Ctrl-C cancels the context
// (commands wind down and say what is left running); a second one exits
// 130 at once.
func run(args []string) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
			return
		}
		select {
		case <-sigs:
			fmt.Fprintln(os.Stderr, "\nsshq: interrupted")
			os.Exit(cmd.ExitInterrupted)
		case <-ctx.Done():
		}
	}()
	return cmd.Main(ctx, args, cmd.NewFactory(version))
}
