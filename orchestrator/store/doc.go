// Package store is the controller's durable record of the jobs it submitted:
// $SSHQ_HOME/state.json, changed only by read–modify–write under an exclusive
// lock so that concurrent sshq processes never lose an update and a crash
// never leaves a torn file.
//
// # Writes
//
// [Store.Update] is the only write path. It takes an exclusive flock on
// state.json.lock (via github.com/gofrs/flock, which is flock(2) on Unix and
// LockFileEx on Windows, so a controller on any laptop works; the kernel drops
// the lock when the holder dies, so a lock can never go stale), reads
// state.json, runs the caller's function, and writes the result to a temp
// file in the same directory, fsyncs it, hard-links the old state.json to
// state.json.bak, renames the temp file over state.json and fsyncs the
// directory. A writer killed at any point leaves either the old or the new
// file, never a mix; its temp file (state.json.tmp-*) is removed by the next
// Update, since a temp file that exists while the lock is held has no live
// writer. Callers must not do network I/O inside Update: every other sshq
// process waits for the lock meanwhile.
//
// # Reads
//
// [Store.Load] takes no lock: rename is atomic, so a reader sees the whole
// old or the whole new file, and `sshq queue` never waits behind a writer.
// A State from Load is a snapshot; changing it changes nothing on disk.
//
// # Backup and corruption
//
// Each write keeps the previous version as state.json.bak. Because it is a
// hard link to the old inode it costs no copy. A state.json that does not
// parse (say, after a hand edit) is never overwritten: Load and Update fail
// with an error naming the file, the line and column, and how to restore the
// backup.
//
// # Ids
//
// A controller gets a random id (8 hex digits) the first time its state is
// written. Jobs get small integer ids from State.NextID, which only grows, so
// an id is never reused even after its job is deleted; on nodes a job is
// known by its uid, "<controller id>-<job id>", so two controllers never
// collide on one node.
//
// # Job states
//
// SUBMITTING is a job whose id and uid are reserved but whose launch on a node
// is not yet confirmed. The launcher writes the record first (so a crash
// mid-launch never leaves a job on a node that the controller does not know
// about), then places and starts it outside the lock, then records PENDING and
// the node in a second Update. A SUBMITTING job left by a crashed launcher is
// resolved by reconcile: if its node has jobs/<uid>/ it adopts that state,
// otherwise it is FAILED_SETUP. After SUBMITTING the states follow the node:
// PENDING → SETTING_UP → RUNNING → SUCCEEDED | FAILED | FAILED_SETUP |
// CANCELLED, and LOST for a job whose process vanished without an exit record.
//
// # File format
//
// state.json is one JSON object, with one job per line so that it greps and
// diffs well and a parse error's line number points at a job:
//
//	{"version":1,"controller_id":"3f9a0c1e","next_id":3,"jobs":[
//	{"id":1,"uid":"3f9a0c1e-1","name":"train",...},
//	{"id":2,"uid":"3f9a0c1e-2","name":"eval",...}
//	]}
//
// The job field names are also the schema of `sshq queue --json`; see [Job].
//
// # Speed
//
// A controller keeps every job it ever ran, so the file grows (about 700
// bytes a job). Budgets, with 10,000 ended jobs: Load ≤ 150 ms, an Update that
// adds a job ≤ 50 ms, on a small 2-core machine (BenchmarkLoad10k,
// BenchmarkUpdate10k). encoding/json alone needs about 200 ms for such an
// Update, so the file is read and written by a hand-written codec (codec.go)
// that splits a large file in two and decodes the halves on two cores, and
// Update copies the bytes of every record that the callback left unchanged
// instead of encoding it again (baseline.go). The codec declines anything it
// does not expect and encoding/json decodes that instead, so a hand-edited
// file still loads, only slower.
package store
