package orchestrator

import (
	"context"
	"fmt"
	"os"

	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/orchestrator/task"
	"github.com/sshq/sshq/orchestrator/wsync"
)

// syncTask copies t's workdir to node's cache, ~/.sshq/workdirs/<key>, and
// its file mounts to their paths there, for a job about to be submitted to
// node (its own queue, or the login node of a Slurm cluster, whose compute
// nodes share its home). It returns the workdir's key ("" for none) and a
// release of the workdir's lock, which the caller holds until the node has
// taken its snapshot of the cache (the submit): two launches of one workdir
// to one node (a sweep) must not sync into the same cache at once, or one's
// snapshot could capture the other's half-done sync.
func (c *Cluster) syncTask(ctx context.Context, st *store.Store, t *task.Task, node string, opts LaunchOptions) (string, func(), error) {
	none := func() {}
	if t.Workdir == "" && len(t.FileMounts) == 0 {
		return "", none, nil
	}
	note := opts.Notef
	if note == nil {
		note = func(string, ...any) {}
	}
	client, err := c.Pool.Get(ctx, node)
	if err != nil {
		return "", none, err
	}
	// Syncs may move gigabytes, but never forever: a node whose disk or
	// home hangs must not hold the launch (keepalives only catch a dead
	// connection, not a stuck command).
	sctx, cancelSync := context.WithTimeout(ctx, SyncTimeout)
	defer cancelSync()
	key, unlock := "", none
	if t.Workdir != "" {
		key = wsync.WorkdirKey(opts.Origin, t.Workdir)
		if unlock, err = lockWorkdir(ctx, st, node, key); err != nil {
			return "", none, err
		}
		note("syncing %s to %s:~/.sshq/workdirs/%s", t.Workdir, node, key)
		if _, err := wsync.Push(sctx, wsync.SSH(client), t.Workdir, "~/.sshq/workdirs/"+key, wsync.Options{Progress: opts.Progress}); err != nil {
			unlock()
			if ctx.Err() != nil {
				return "", none, fmt.Errorf("interrupted while syncing %s to %s: nothing was submitted (the next launch finishes the partial copy)", t.Workdir, node)
			}
			return "", none, fmt.Errorf("syncing workdir to %s: %w", node, err)
		}
	}
	for _, remotePath := range sortedKeys(t.FileMounts) {
		local := t.FileMounts[remotePath]
		note("copying %s to %s:%s", local, node, remotePath)
		fi, err := os.Stat(local)
		if err != nil {
			unlock()
			return "", none, fmt.Errorf("file_mounts: %w", err)
		}
		if fi.IsDir() {
			// A mount may land in a directory that holds other data: never delete there.
			_, err = wsync.Push(sctx, wsync.SSH(client), local, remotePath, wsync.Options{Progress: opts.Progress, NoDelete: true})
		} else {
			_, err = wsync.PushFile(sctx, wsync.SSH(client), local, remotePath, wsync.Options{Progress: opts.Progress})
		}
		if err != nil {
			unlock()
			return "", none, fmt.Errorf("file_mounts %s → %s:%s: %w", local, node, remotePath, err)
		}
	}
	return key, unlock, nil
}
