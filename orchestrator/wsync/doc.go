// Package wsync mirrors a local directory into a node's per-workdir cache
// (~/.sshq/workdirs/<key>/) the way `rsync -a --delete` would, over one SSH
// connection and with nothing installed on the node.
//
// One remote command lists what the node has (GNU find with NUL-separated
// fields), the quick check (size + mtime, to the second) decides what
// travels, files whose size matches but whose mtime does not are compared by
// SHA-256 on both sides in one batch (equal content only gets its metadata
// fixed), one remote command deletes and creates directories, and the files
// themselves travel over SFTP, many at once on one *sftp.Client.
//
// Every file and symlink is written to a temp name in its final directory
// (.sshq-tmp-<random>-<name>), given its mode and mtime there, and renamed
// into place with posix-rename@openssh.com. A file that grants nothing to
// group and others locally has that mode before its first byte is written,
// and the directories a mirror creates above itself are 0700, so no other
// user of the node can read it at any point. Existing files are never written
// in place, because jobs run in hard-link snapshots (`cp -al`) of the cache
// that must keep the content they were submitted with; for the same reason a
// metadata-only fix of a file that has other hard links is done on a copy
// that is renamed over it. An interrupted sync leaves each path old or new,
// plus temp files that the next sync removes.
//
// Ignore rules: .sshqignore at the root if present, else every .gitignore in
// the tree (gitignore(5) semantics, see ignore.go); .git is always skipped.
// Limits: mtimes are kept to the second (SFTP v3 carries whole seconds) and
// the quick check compares them at that resolution, so an edit that keeps a
// file's size and its mtime second is only seen with Options.Checksum (as
// with rsync without -c). A mirror keeps a stamp of when its last complete
// sync started (beside the directory) and compares the content of files
// whose mtime is not older, which catches an edit made in the same second
// as the sync that read the file; file mounts (NoDelete, PushFile) keep no
// stamp, so there such an edit is seen only with Options.Checksum. Symlink mtimes, owners, ACLs, xattrs and hard links
// inside the tree are not kept (linked files arrive as separate copies); a
// changed file travels whole (no delta encoding); the node needs GNU find,
// xargs and coreutils (sha256sum -z, mkdir, rm, cp, mv, touch, chmod). Two
// pushes into the same directory at once each stay untorn, but may remove
// each other's temp files and fail; callers serialize pushes per directory.
//
// Pull is the same engine in reverse, for `sshq download`: one listing of
// the remote path, size + mtime decide, SHA-256 on both sides where only
// the mtime differs, files read over SFTP into a temp name beside their
// local destination and renamed. It never deletes locally, never follows a
// local symlink below its destination (one in the way is replaced) and
// does not create remote symlinks whose target is absolute or leaves the
// tree (rsync --safe-links); setuid, setgid and sticky bits are dropped.
//
// The package is named wsync so that it does not shadow the standard
// library's sync in the files that import it.
package wsync
