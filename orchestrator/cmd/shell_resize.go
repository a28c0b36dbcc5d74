//go:build !windows

package cmd

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// watchResize passes the terminal's new sizes (SIGWINCH) to the node's
// terminal until stop is called.
func (t *ttyFiles) watchResize(ctx context.Context) (stop func()) {
	if t.out == nil {
		return func() {}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGWINCH)
	t.resize = make(chan [2]int, 1)
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-sig:
			}
			if sz, ok := t.size(); ok {
				select {
				case <-t.resize: // only the latest size matters
				default:
				}
				t.resize <- sz
			}
		}
	}()
	return func() {
		signal.Stop(sig)
		cancel()
	}
}
