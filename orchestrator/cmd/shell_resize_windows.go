package cmd

import "context"

// watchResize: Windows consoles send no SIGWINCH; the node's terminal
// keeps the size it started with.
func (t *ttyFiles) watchResize(context.Context) func() { return func() {} }
