// Package store is the controller's durable record of the jobs it submitted,
// in two files of $SSHQ_HOME: state.json, the unfinished and recently ended
// jobs, changed only by read–modify–write under an exclusive lock so that
// concurrent sshq processes never lose an update and a crash never leaves a
// torn file; and history.jsonl, the jobs that ended long ago, append-only,
// read only by commands that ask for old jobs.
//
// # Why two files
//
// A controller keeps every job it ever ran, about 700 bytes each, and most
// of them ended long ago. Were they all in state.json, every launch would
// decode and re-encode the whole past under the lock. So an Update moves the
// ended jobs that are no longer recent to the history, and state.json stays
// small: the unfinished jobs plus at most [MaxKeptEnded] ended ones.
//
// An ended job stays in state.json for [KeepEndedFor] (24 h) after it ended;
// the [KeepEnded] (200) most recently ended stay however old, and no more
// than [MaxKeptEnded] (2,000) however young. Unfinished jobs always stay.
//
// # Writes
//
// [Store.Update] is the only write path. It takes an exclusive flock on
// state.json.lock (via github.com/gofrs/flock, which is flock(2) on Unix and
// LockFileEx on Windows, so a controller on any laptop works; the kernel drops
// the lock when the holder dies, so a lock can never go stale), reads
// state.json, runs the caller's function, then:
//
//  1. appends the jobs to move, one JSON object a line, to history.jsonl
//     and fsyncs it;
//  2. writes the new state.json, without them and with the history's new
//     length (history_size), to a temp file in the same directory, fsyncs
//     it, hard-links the old state.json to state.json.bak, renames the temp
//     file over state.json and fsyncs the directory.
//
// The rename is the commit. A writer killed before it leaves the old
// state.json, whole, and maybe lines in the history past the length that
// state.json records: the moved jobs, which are still in state.json, or a
// torn part of one. The next writer cuts those bytes before it appends (and
// so moves those jobs again); until then readers show each such job once,
// from state.json. A writer killed after the rename leaves the new version.
// Its temp file (state.json.tmp-*) is removed by the next Update, since a
// temp file that exists while the lock is held has no live writer.
// If the history cannot be written (a full disk), the jobs stay in
// state.json and the update itself still happens. If state.json cannot be
// written, Update fails with a [WriteError], which says what to do (free
// space there), and nothing changes: readers still read the last version.
// Callers must not do network I/O inside Update: every other sshq process
// waits for the lock meanwhile.
//
// # Reads
//
// [Store.Load] reads state.json only and takes no lock: rename is atomic, so
// a reader sees the whole old or the whole new file, and `sshq queue` never
// waits behind a writer. A State from Load is a snapshot; changing it changes
// nothing on disk.
//
// [Store.All], [Store.History] and [Store.Find] read the history too, without
// a lock: first state.json, then history.jsonl. In that order a job being
// moved meanwhile is seen in one file or both, never in neither; in both, the
// state.json record wins. A torn last history line (a writer that died, or
// one still writing) is skipped. `sshq queue -a`, `sshq wait` and the lookup
// of a job by id or name (`sshq logs 4`) read the history; `sshq queue`, a
// launch and a cancel do not.
//
// # Backup and corruption
//
// Each write keeps the previous state.json as state.json.bak. Because it is a
// hard link to the old inode it costs no copy. A state.json that does not
// parse (say, after a hand edit) or is empty is never overwritten: Load and
// Update fail with an error naming the file, the line and column, and how to
// restore the backup. A history line other than the last that does not parse
// is an error naming history.jsonl and the line, from the commands that read
// the history; launches go on appending meanwhile.
//
// # Ids
//
// A controller gets a random id (8 hex digits) the first time its state is
// written. Jobs get small integer ids from State.NextID, kept in state.json,
// which only grows, so an id is never reused even after its job is deleted or
// moved; a fresh state.json beside an existing history (the old one moved
// aside) starts past the history's ids. On nodes a job is known by its uid,
// "<controller id>-<job id>", so two controllers never collide on one node.
//
// # Job states
//
// SUBMITTING is a job whose id, uid and node are reserved but whose submit to
// that node is not yet confirmed. The launcher writes the record first (so a
// crash mid-launch never leaves a job on a node that the controller does not
// know about), then syncs and submits outside the lock, then records PENDING
// in a second Update. [Store.AddJob] writes the record, having first taken
// the job's launch lock (a flock on launching/<uid>.lock), which the
// launching process holds until the job has left SUBMITTING: the kernel
// drops it when that process dies, however it dies. A SUBMITTING job whose
// lock is free ([Store.LauncherGone]) will never be submitted by anyone, so
// the next reconcile settles it at once: if its node knows the uid (for a
// Slurm job, if its job directory holds the id sbatch gave it) it takes the
// node's state (the submit got there just before the launcher died),
// otherwise it is FAILED_SETUP, its reason saying that the launching sshq
// process died. A live launcher's job, seen by another sshq sharing the
// directory, is never settled. A job without a lock file (an older sshq
// launched it) is settled as before: by its node's word, or LOST once the
// launch could no longer be syncing. After
// SUBMITTING the states follow the node: PENDING → SETTING_UP → RUNNING →
// SUCCEEDED | FAILED | FAILED_SETUP | CANCELLED | TIMEOUT | OUT_OF_MEMORY
// (the last two: a limit ended it, the node's or Slurm's reason in
// Job.Reason), and
// LOST for a job whose process vanished without an exit record.
//
// # File format
//
// Both files are read and written with encoding/json. state.json (format
// version 2; version 1, from before the history, is read and rewritten on the
// first Update) is one JSON object with one job per line, so that it greps
// and diffs well and a parse error's line number points at a job:
//
//	{"version":2,"controller_id":"3f9a0c1e","next_id":3,"history_size":0,"jobs":[
//	{"id":1,"uid":"3f9a0c1e-1","name":"train",...},
//	{"id":2,"uid":"3f9a0c1e-2","name":"eval",...}
//	]}
//
// history.jsonl holds one job per line, the same object as in state.json,
// in the order the jobs moved. The job field names are also the schema of
// `sshq queue --json`; see [Job].
//
// # Speed
//
// Targets, for a controller that has run 10,000 jobs, on a small 2-core
// machine: a launch's bookkeeping (an Update that adds a job) ≤ 50 ms, and
// `sshq queue -a --json` ≤ 150 ms. The first holds because an Update reads
// and writes state.json only (BenchmarkUpdate10k: a few ms of CPU, the rest
// is fsync). The second is mostly decoding the history: its lines are
// independent, so they are decoded on every core (BenchmarkQueueAllJSON10k:
// all jobs read and encoded as the command prints them). What an Update costs
// grows with the unfinished jobs, which always stay in state.json: 10,000 of
// them waiting at once make it about 100 ms (BenchmarkUpdate10kUnfinished).
package store
