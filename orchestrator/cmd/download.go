package cmd

import (
	"context"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/ui"
)

// DownloadOptions are `sshq download`'s.
type DownloadOptions struct {
	IO         *IOStreams
	Ctx        context.Context
	Controller func() (Controller, error)

	Job    string
	Remote string
	Local  string
	JSON   bool
}

// NewCmdDownload builds `sshq download`; runF replaces downloadRun in tests.
func NewCmdDownload(f *Factory, runF func(*DownloadOptions) error) *cli.Command {
	return &cli.Command{
		Name:      "download",
		Usage:     "copy a file or directory from a job's node to this machine (cp -r)",
		ArgsUsage: "JOB REMOTE [LOCAL]",
		Description: `REMOTE is relative to the job's workdir on its node (the snapshot the job ran in; the node
account's home for a job without a workdir), or absolute, or ~/... LOCAL (default: the current
directory) is read as cp -r reads it: an existing directory receives REMOTE under its own name,
anything else is the new name. Only what differs from the local copy travels (size and mtime,
then content), each file written to a temp name and renamed, modes and mtimes kept; nothing
local is deleted. Symlinks that point out of the downloaded tree are not created. The job may
have ended: its files stay on the node.

Examples:
   sshq download 12 outputs              # → ./outputs
   sshq download train ckpt/last.pt .    # → ./last.pt
   sshq download 12 /scratch/run12 runs/ # an absolute path on the node`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "machine-readable summary"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() < 2 || c.NArg() > 3 {
				return usageErr("download takes a job, a path on its node and optionally where to put it: `sshq download 12 outputs [LOCAL]`")
			}
			opts := &DownloadOptions{IO: f.IO, Ctx: c.Context, Controller: opener(c, f),
				Job: c.Args().Get(0), Remote: c.Args().Get(1), Local: c.Args().Get(2), JSON: c.Bool("json")}
			if runF != nil {
				return runF(opts)
			}
			return downloadRun(opts)
		},
	}
}

func downloadRun(opts *DownloadOptions) error {
	ctrl, err := opts.Controller()
	if err != nil {
		return err
	}
	defer ctrl.Close()
	errOut := opts.IO.ErrOut
	style := ui.For(errOut, opts.IO.Getenv)
	bar := newProgress(errOut, style.TTY && !opts.JSON)
	bar.label = "download"
	v, err := ctrl.Download(opts.Ctx, orchestrator.DownloadRequest{Ref: opts.Job, Remote: opts.Remote, Local: opts.Local, Progress: bar.update})
	bar.clear()
	if err != nil {
		return err
	}
	s := v.Stats
	if opts.JSON {
		return writeJSON(opts.IO.Out, map[string]any{"job": v.Job.ID, "node": v.Job.Node, "remote": s.RemotePath, "local": s.LocalPath,
			"files": s.Files, "downloaded": s.Downloaded, "bytes": s.BytesDownloaded, "unchanged": s.Files - s.Downloaded,
			"unsafe_links": orEmpty(s.UnsafeLinks), "special": orEmpty(s.Special)})
	}
	fmt.Fprintln(opts.IO.Out, s.LocalPath)
	what := fmt.Sprintf("%d of %d file(s) copied (%s)", s.Downloaded, s.Files, fmtBytes(s.BytesDownloaded))
	if s.Downloaded == 0 {
		what = fmt.Sprintf("%d file(s), all already up to date", s.Files)
	}
	fmt.Fprintf(errOut, "sshq: %s:%s → %s: %s\n", v.Job.Node, ui.Safe(s.RemotePath), s.LocalPath, what)
	if n := len(s.UnsafeLinks); n > 0 {
		fmt.Fprintf(errOut, "sshq: %d symlink(s) pointing out of the downloaded tree were not created: %s\n", n, listSome(s.UnsafeLinks))
	}
	if n := len(s.Special); n > 0 {
		fmt.Fprintf(errOut, "sshq: %d FIFO(s), socket(s) or device(s) were not copied: %s\n", n, listSome(s.Special))
	}
	return nil
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// listSome names the first few of a list of the node's paths.
func listSome(s []string) string {
	const max = 5
	safe := make([]string, 0, max)
	for i := 0; i < len(s) && i < max; i++ {
		safe = append(safe, ui.Safe(s[i]))
	}
	out := strings.Join(safe, ", ")
	if len(s) > max {
		out += fmt.Sprintf(", and %d more", len(s)-max)
	}
	return out
}

func fmtBytes(n int64) string {
	switch {
	case n < 1024:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/1024)
	}
	return ui.MiB(int(n >> 20))
}
