// Package remote is the node side of sshq: the bash that performs every
// action on a node, and Client, which runs those actions and parses what
// they print. Nothing is installed on nodes: each command is `bash -c
// SCRIPT sshq ACTION ARGS...` (built with sshpool.Command, every argument
// one quoted word), where SCRIPT is lib.sh (shared helpers, the one
// nvidia-smi wrapper), lease.sh (the lease records every user shares) where
// the action reads them, sched.sh where it reads the queue or the GPUs (the
// queue's rule, and the wrapper's side of it), limits.sh where it needs the
// node's limit settings, and the action's own file: submit.sh (with
// watch.sh and wrapper.sh, which the job keeps as its wrapper), jobs.sh,
// status.sh, place.sh, cancel.sh, logs.sh, check.sh; shell.sh, the
// interactive run phase, travels with wrapper.sh; gangrec.sh (multi-node
// jobs' records) with submit, jobs, status and cancel; gang.sh and the agent
// gang.py with the submit of a multi-node job's rank. Client does no SSH itself: it
// runs each action as one command through a Runner (for sshpool,
// Pool.Node(alias)), so every action is one SSH session on one node.
//
// # On the node
//
// Per remote user, under $HOME/.sshq:
//
//	workdirs/<key>/        the synced workdir cache (written by sync, never in place)
//	jobs/<uid>/            one job, mode 0700 (it may hold secrets):
//	  meta.sh              identity from the controller (uid, id, user, name, GPUs, workdir key;
//	                       the job's limits, see Job limits; SSHQ_M_SHELL, the idle
//	                       limit in seconds, for `sshq shell`)
//	  env.sh               the job's environment: task envs, then sshq's values (export NAME='value')
//	  secrets.sh           secret envs, 0600; removed when the job ends
//	  setup.sh, run.sh     the task's scripts
//	  workdir/             hard-link snapshot (cp -al) of the cache at submit time
//	  wrapper.sh           this script, run as `wrapper.sh wrapper <jobdir>` in tmux
//	  nodeenv              the submitting session's umask, PATH, SSHQ_* settings
//	                       (the node's limit settings among them: see Job limits)
//	  wrapper.lock         flock held by the wrapper alone while it lives (opened
//	                       read-write: flock on NFS needs that)
//	  wrapper.pid          the wrapper's own pids (itself, its display, a scope's
//	                       outer wrapper), which Cancel kills last
//	  state                "STATE unix_ts.mmm" lines, appended at each change
//	  log                  setup and run output (stdout+stderr), plus "sshq: ..." notes
//	  ticket               the name of its waiting record while it waits
//	  rec.w, rec.r         its waiting and running records, for its keeper to
//	                       write back
//	  keeper               "ok <pid> <lock>" once its keeper holds its lock
//	  gpus                 "index<TAB>uuid" lines of the GPUs it leased
//	  gpu.env              CUDA_VISIBLE_DEVICES & co., sourced last by setup and run
//	  cancel               left by Cancel before it signals
//	  exit                 the exit code, written once (temp + rename) after the terminal state
//	  scope                the systemd user scope's name, when one is used
//	  reason               one line: why the job waits (disk under the floor) or
//	                       how a limit ended it
//	  cores                the cores --cpus pinned it to ("0-3,8")
//	  log.dropped          how many of the log's first bytes its cap dropped
//	  .phase               touched by a phase's bash first: the prefix (scope,
//	                       taskset) started it
//	  shell.pid            an interactive job's shell, while it runs
//	  idle                 left when an interactive job's shell was ended for want of a client
//	  gang.py              a multi-node rank's agent (see Multi-node jobs)
//	  gang.port            rank 0: the TCP port its coordinator listens on
//	  gang.mode            "MODE unix_ts": wait, hold, park or run
//	  gang.cause           "RANK CODE|lost": the rank whose end stopped this one
//
// Shared by all users: nothing that one user could change for another.
// Each user keeps lease records in a directory of their own (mode 0755,
// files 0644 unless said), placed directly in a directory only root
// controls: the lease directory D ($SSHQ_LEASE_DIR of the submitting
// session, else /tmp/sshq-leases) when root owns it (the optional admin
// step), as D/u<uid>; else in D's parent (/tmp: root's and sticky) as
// <parent>/<basename of D>.u<uid>. A name another user took first gets a
// suffix (.u<uid>.<random>); a directory counts as uid's only when uid owns
// it. Readers look in both places. A D that root does not own (a symlink,
// another user's) is never used; where neither place is safe (a parent any
// user may write without the sticky bit), GPU jobs are refused with what to
// do, and jobs without GPUs run without a record.
//
//	<job>.lock             mode 0600: the job's lock, held (flock) by its keeper,
//	                       which removes it as it ends
//	w.<ns>.<job>           the job waits in the queue; ns (19 digits, when it
//	                       joined) orders the queue across users
//	r.<job>                the job runs (with or without GPUs), or claims the
//	                       GPUs it lists
//	g.<job>                a multi-node rank's side record, "uid key mode rank
//	                       nranks since num_gpus allowed" (gangrec.sh)
//	l.<job>                a running job's side record, "uid limit_kib rss_kib
//	                       cores run|end" (see Job limits)
//	.cache/smi-<query>     this user's last nvidia-smi answer to one query (gpu,
//	                       gpu-nomig, apps): "<ms> ok|fail|hung <exit status>",
//	                       then the output (mode 0600)
//	.cache/ref-<job>[.b]   a waiter's two marks, written in turn before it
//	                       looks at the records (the directory's time then
//	                       changes only with them)
//
// A record is one line, "kind job id user name num_gpus since allowed gpus
// pid sid lock", where lock names the job's lock as /proc/locks does
// (MAJ:MIN:INODE). It counts only while /proc/locks shows that lock held:
// liveness is one read of /proc/locks for every record, with no lock to
// take and no process per record. The lock file is 0600, so nobody but its
// owner can hold it or make a dead record look live; a record is read by one
// grep that skips FIFOs and devices (it opens with O_NONBLOCK); names sshq
// never makes, and fields that fail their checks, are ignored; whose record
// it is comes from the owner of its directory, never from its text. A
// user's directory that cannot be read makes every GPU count as taken
// (status says whose it is). A deleted lock file or record ends no lease:
// the lock stays on its inode, and the keeper writes the record back.
//
// A job's keeper is `flock -n <job>.lock bash wrapper.sh keeper JOBDIR`,
// in a session of its own and without the job's mark: the lock lives as
// long as flock(1), so its pid stays in /proc/locks (which may hide a lock
// whose taker has exited, in a container). It reads a pipe whose write end
// the wrapper holds and every process of the job inherits; when the last is
// gone it reads EOF, removes the job's record and lock file and exits, and
// the lock goes with it. Every guard tick (0.25s) it checks that the job's record is
// still there, and writes it back (from rec.w or rec.r in the job
// directory) when a tmp cleaner or `rm -rf /tmp/*` took it; once an hour
// it touches it, so that age-based tmp cleaners leave it. The leases of the
// previous version's wrappers (a flock on D/<uuid>.lock, its holder in
// D/<uuid>.owner) are honoured, so that an upgrade does not hand out their
// GPUs; their waiters are not seen.
//
// Side records (g.<job>, l.<job>) are made under a temporary name, flocked
// through a read-only fd by the job's wrapper, then renamed; one nobody
// holds is stale and skipped. Other users read them; only their owner can
// write or remove them.
//
// user is the submitting controller's local user, login the node account
// the job runs as (the owner of its records), which is who holds the GPU;
// login is the last field of reports because older node scripts neither
// write nor read it (absent means unknown). Free-text fields in records and
// reports (user, name, login) are percent-encoded as EncodeField does: no
// tab, newline or space, "~" for empty. Records are parsed, never sourced;
// only the user's own job files are sourced.
//
// # The wrapper
//
// Submit starts `tmux -L sshq new-session -d -s <uid>` running the wrapper
// with SSHQ_JOB_UID=<uid> in its environment (inherited by every process
// of the job: the mark Cancel kills by). A job asking for GPUs starts its
// keeper, checks that the node has enough GPUs it may use, writes its
// waiting record and PENDING (Submit returns then, so submission order is
// queue order), and waits on the node, deciding every SSHQ_POLL_INTERVAL
// seconds (default 2) by plan in sched.sh, with no lock of any kind (every
// guard tick, 0.25s, while fewer waiting records than the GPUs it may use
// are named before its own, so that the head takes a freed GPU at once).
// Submit waits for PENDING as long as the wrapper lives (it may wait
// SSHQ_PROBE_TIMEOUT for nvidia-smi), up to SSHQ_SUBMIT_WAIT seconds
// (default 100, under the controller's 2 minutes); when it gives up, or the
// wrapper dies without a state, it kills the job and removes it before it
// fails, so a job Submit reported failed never runs. Order is FIFO by
// waiting record with safe backfill: each older waiter that fits in the GPUs
// free now reserves them first, and a head of queue that does not fit
// reserves every free GPU it could use; a job starts only if it fits in
// what remains. So a younger job passes an older one only on GPUs left over,
// and never delays the head. Waiters are other users' records, so two kinds
// are passed over: one asking more GPUs than the node has of those it may
// use (it could never start), and one that this waiter has seen fit for
// longer than a poll interval and a second without claiming its GPUs (no
// wrapper is deciding for it: it must not hold the queue). This rule (plan)
// is the only one: a launch's placement asks the node (Place) how it would
// take a job joining the queue now, and the node answers with plan, so the
// controller never decides by a rule of its own.
//
// A poll costs little when nothing can start, however long the queue. The
// waiter keeps a view of the running records: it looks again only into
// directories changed since its mark (a glob of their running records, and
// a read of those new or rewritten since), reads /proc/locks every fifth
// poll and after a change (a keeper removes its record as its job ends, so
// an end shows at the next poll; the end of a killed keeper's job within
// five), and reads everything again once a minute. While no GPU it may use
// is free of them it reads no waiting record, forks nothing but for that
// minute's read, and asks the driver only every 30s (for the GPUs' list). Its place is counted from the
// waiting records' names alone (a glob). Only when a GPU it may use is free
// does it ask the driver and read the queue: the waiting records ahead of
// its own, in order, a few at a time, until the GPUs free now are spoken
// for (plan only takes GPUs away: once too few are left for this job, no
// waiter after can change that), each only once (a waiting record is never
// rewritten with another line). Status, Place and Jobs read every record,
// and index /proc/locks when they check many. A GPU is free when no live running record
// claims it and no process in nvidia-smi --query-compute-apps computes on
// it; when that query fails, no GPU counts as free (the waiters wait,
// Status reports the error). nvidia-smi runs only through smi (lib.sh),
// with the two queries Status shows (gpu.QueryGPUFields,
// gpu.ComputeAppsFields), so the queue and the report share answers.
// nvidia-smi and ps run with none of the job's fds (bash's `exec {fd}<` is
// not close-on-exec) and are abandoned after SSHQ_PROBE_TIMEOUT seconds
// (default 20) in a waiter, SSHQ_REPORT_PROBE_TIMEOUT (default 5) in
// Status, Place and Check, so a hung driver reads as such within the
// controller's connect timeout and a few seconds; the hang is remembered
// for that long so other callers do not each wait it out. Waiters and Place
// reuse their account's answers for one poll interval (.cache/smi-*), so N
// waiters cost the driver at most one probe a poll instead of N; Status and Check
// ask the driver itself unless it hung within the timeout. A job that asks
// for no GPU never makes the node run nvidia-smi: not in Place, not in
// Submit, not in its wrapper. A process is foreign on a GPU unless it
// belongs to that GPU's own holder (shares the holder's session, descends
// from its wrapper, or is marked with its job uid): a job's process on a
// GPU it did not lease (NVML, a container given every GPU) occupies that
// GPU as anyone else's would, so no other job is put there.
//
// To start, the wrapper claims the GPUs plan picked: it writes its running
// record naming them, waits the settle time (0.75s: three guard ticks, so
// any record a wipe took is back), and reads the running records again.
// Each claimant reads after it wrote, so two claims of one GPU cannot both
// see nothing: the younger withdraws at once, the older after a second
// settle unless the younger has gone, and one of them wins; a claimant that
// cannot read some user's records then withdraws too. Then the
// waiting record goes; the running record stays until the job's last
// process ends (its keeper removes it), so the kernel ends the lease however
// the job ends. A job asking for 0 GPUs takes no place in the queue and
// starts at once, with a running record for Status (without one when the
// records cannot be kept). One asking for more GPUs than the node has (of
// those it may use) fails at once (FAILED_SETUP, reason in the log), and so
// does a waiter when the node no longer has them (a GPU gone: "never fits"
// in its reason file too, so queue's REASON says it). Setup and run
// run with bash in the snapshot workdir, or $HOME without one, stdin from /dev/null, output
// appended to log, PYTHONUNBUFFERED=1. The log is the job's only output: the
// tmux pane (what `sshq attach` shows) runs `tail --pid=<wrapper> -F log`,
// started before any lock is taken and holding no lock fd, so attaching shows
// the output live with scrollback, the display ends with the wrapper, and a
// killed session never breaks the job's writes. The pane raises no signals
// on keys (stty -isig): Ctrl-C there must not interrupt the job; Ctrl-b d
// detaches. A job that has to wait notes "waiting for N GPU(s) in the node's
// queue" in its log once. When the job's main process ends, whatever still
// carries its mark (a nohup'd server, `ray start`, tensorboard: holders of
// its keeper's pipe) gets SIGTERM, then SIGKILL after SSHQ_END_GRACE seconds
// (default 3), and the wrapper waits (2s at most) for its keeper to end,
// before the end is recorded, so an ended job holds no GPU; the log names
// them. Status shows every job running on the node from the running
// records, those without GPUs too. States: PENDING, SETTING_UP, RUNNING,
// then SUCCEEDED (exit 0), FAILED (the run's code), FAILED_SETUP (setup's
// code, or 3 for a node problem: no safe place for lease records, a keeper
// that does not start, nvidia-smi, a record that cannot be written,
// wrapper.lock that cannot be locked), CANCELLED,
// TIMEOUT (124) or OUT_OF_MEMORY (137): see Job limits.
//
// The exit record is written last, after the terminal state: until it
// exists Jobs reports the state before it, so nobody takes an end whose
// exit code is not yet written for final.
//
// # Job limits
//
// The controller puts a job's limits in meta.sh (SSHQ_M_MEM_KIB,
// SSHQ_M_TIME_S, SSHQ_M_CPUS; 0 is none); the node's own settings come from
// the submitting session's login environment, through nodeenv:
// SSHQ_RESERVE_MEM (default the larger of 2 GiB and 5% of MemTotal),
// SSHQ_DISK_FLOOR (default 2 GiB) and SSHQ_LOG_CAP (default 1 GiB), each a
// size as 300M or 32G (binary; a bare number is MiB), 0 turning the floor
// or the cap off. A setting that is not a size is logged and its default
// used. limits.sh reads them; watch.sh holds the job to them.
//
// Before a job starts its wrapper checks the free space in $HOME (df)
// against the floor (a job with GPUs when it would take them, so that a long
// queue does not run df every poll): below it the job waits, in its place in
// the queue (a job with GPUs does not claim them), its reason in the job's
// reason file and once in its log, and starts once space is freed.
//
// The wrapper runs each phase (setup, run, or an interactive shell) in the
// background and watches it at least once a second (limited, watch_phase,
// limits_tick) until it ends, and sees it end within 0.1s:
//
//   - --mem: the job's memory is the resident memory (statm) summed over its
//     marked processes, as Cancel finds them (the wrapper's own excluded).
//     Over the limit every one gets SIGKILL at once, as from the kernel's
//     OOM killer, and the job ends OUT_OF_MEMORY (exit 137). Where the
//     user's systemd runs, the user lingers and the memory controller is
//     delegated to the user's manager (memory in user@UID.service's
//     cgroup.controllers), each phase runs in `systemd-run --user --scope
//     -p MemoryMax= -p MemorySwapMax=0` instead: the kernel holds the
//     limit, and the tick ends the rest of the job once the scope's
//     memory.events counts an OOM kill. Check reports which ("cgroup" or
//     "watchdog").
//   - --time: counted from the start of the first phase. Past it every
//     process gets SIGTERM (and processes that appear later), SIGKILL 10s
//     later, and the job ends TIMEOUT (exit 124).
//   - The reserve: each tick writes the job's memory into its
//     l.<job> side record, in place (fixed width: no fork). When
//     MemAvailable falls below the reserve, every wrapper reads the live
//     records and picks the same job: the one furthest above its share (its
//     --mem, else (MemTotal - reserve) / the number of jobs), never one
//     below it. That job's wrapper kills it (OUT_OF_MEMORY, reason "node
//     memory low") and marks its record "end"; while a record says "end",
//     no other job is chosen, so one stop is given the time to free what it
//     held.
//   - The log cap: past it, the log's oldest blocks up to half the cap are
//     punched out (fallocate --punch-hole): the file keeps its offsets, so a
//     follower neither repeats nor skips, and log.dropped says where the
//     kept part begins; Logs prints from there and says how much was
//     dropped. Where punching fails (NFS, an old file system) the log is
//     rewritten in place from its newest half, and lines written meanwhile
//     may be lost. finish applies the cap once more.
//
// When a limit ended the job, its wrapper writes the reason (the memory
// peak and limit, the time limit, the node's available memory and reserve)
// and, as the log's last line, what happened. With --cpus the wrapper picks
// the cores before the first phase: of those this account may use
// (Cpus_allowed_list), first those no live l.<job> record of any user holds and
// near the job's GPUs (`nvidia-smi topo -m`'s CPU Affinity), then those
// free, then near ones, then any; each phase runs under `taskset -c`. A
// prefix (scope, taskset) that fails to start a phase (no .phase) is
// logged, and the phase runs again without it. There is no lock: the job
// publishes its record, waits a settle, and when an older job's record
// names one of its cores picks again.
//
// # Interactive shells
//
// A job whose meta.sh sets SSHQ_M_SHELL (`sshq shell`) waits, leases and
// runs setup like any other, with the pane showing its log meanwhile.
// Then, instead of run.sh, the wrapper stops the display, gives the pane's
// keys their signals back (stty sane) and runs the account's login shell
// (getent passwd; bash when that is nologin or missing) on the pane's tty,
// in the wrapper's process group (the terminal's foreground one), as
// `exec -l`, in the workdir snapshot (else $HOME), with
// env.sh, secrets.sh and gpu.env exported: the shell is the job's main
// process, carries its mark and holds its leases, and its exit status is
// the job's (SUCCEEDED for 0, else FAILED). The controller reaches it by
// `tmux attach` to the job's session, so a dropped connection only
// detaches a client. While the shell runs, a watcher looks once a second:
// an interactive shell ignores SIGTERM, so when Cancel's mark appears it
// sends the shell SIGHUP, as a closed terminal would, and the job ends
// CANCELLED with the shell's 129 instead of waiting out the grace. Every
// 5s (every 1s for limits under 20s) it asks tmux for #{session_attached};
// after SSHQ_M_SHELL seconds (0: never) with no client it leaves "idle"
// and hangs the shell up too, and the job ends CANCELLED with the shell's
// status, the log saying why. A shell still there 5s after SIGHUP gets
// SIGKILL. An answer tmux does not give restarts the clock. The shell is
// a phase like run.sh for the job's limits (see Job limits): it runs under
// the same prefix and is watched the same way, and at --time it also gets
// SIGHUP, since it ignores the SIGTERM.
//
// # Multi-node jobs
//
// A job with NumNodes N > 1 is N jobs, one per node, with the same id and
// name: rank 0 has the job's uid, rank r the uid "<uid>-r<r>", so each
// rank's processes carry a mark of their own. meta.sh gives each rank
// SSHQ_M_GANG (the gang's key, "<19-digit ns>-<uid>": the controller's
// clock at submit), SSHQ_M_RANK, SSHQ_M_NRANKS, SSHQ_M_GANG_TOKEN (the
// gang's secret), SSHQ_M_GANG_COORD (rank 0's "addr:port"; empty on rank
// 0), SSHQ_M_GANG_IPS (the ranks' addresses the controller knows, "-"
// for the others), SSHQ_M_GANG_HOLD, SSHQ_M_GANG_LOST and
// SSHQ_M_GANG_GRACE (seconds). Before it takes a ticket, the wrapper starts
// the rank's agent (gang.py, under python3) as a coprocess; rank 0's
// listens on a free TCP port (gang.port, which the action `gang` reports,
// with the address the command reached the node at) and is the gang's
// coordinator, the others connect to it and prove the token. The rank's
// ticket is named by the gang's key, so every node orders gangs alike.
//
// The rank waits by the queue's rule (try_start), and takes its GPUs only
// when no older gang's rank (smaller key) waits on the node for GPUs it
// could use; then it holds them (mode hold: "reserved" in status), its
// ticket removed, and its agent tells the coordinator. While it holds, an
// older gang's rank waiting there for GPUs it could use, or
// SSHQ_M_GANG_HOLD seconds passing, make it ask the coordinator to let
// them go; granted, it closes its leases and takes its ticket again under
// its old name (its place): mode wait, or park after the hold limit. A
// parked rank asks for nothing (every waiter's try_start skips its ticket:
// queue_parked) until the coordinator unparks it, when every rank not
// parked holds. When every rank holds, the coordinator picks MASTER_PORT
// (free on its node) and sends each rank "go" with MASTER_ADDR and the
// ranks' addresses (known ones, else the address each rank reached it
// from; rank 0's: the one they reached); it grants no release after that,
// so no rank runs while another has let its GPUs go. gpu.env then also
// sets SSHQ_/SKYPILOT_NODE_IPS, MASTER_ADDR and MASTER_PORT (the task's
// own MASTER_PORT wins), and the rank runs setup and run like any job,
// within the job's limits (each rank has them all on its node: see Job
// limits). A node short of disk keeps its rank waiting, its ticket in
// place, before it takes any GPU.
//
// A rank that ends tells the coordinator its code. One that ends before
// the start, or non-zero after it, or is not heard from for
// SSHQ_M_GANG_LOST seconds (agents ping every few seconds), makes the
// coordinator tell every other rank to stop: their agents write
// gang.cause, send their rank's processes SIGTERM, then SIGKILL after
// SSHQ_M_GANG_GRACE seconds, sparing the wrapper, which ends as a cancel
// would (cancelled() sees gang.cause) but records FAILED (FAILED_SETUP
// before its run began) with the code of the rank that failed (3 for a
// lost one). A rank that cannot reach the coordinator for that long stops
// itself the same way, naming rank 0 lost. Rank 0's wrapper, its own run
// ended, lets its GPUs go and waits until every rank has ended before it
// records its end, so its coordinator outlives every rank it may have to
// stop. A cancelled rank's agent says so (end 143) on SIGTERM, so the
// others stop at once; one whose wrapper vanished without a word (killed)
// reports its rank lost.
//
// # Cancel
//
// Cancel marks the job, sends SIGTERM to every process of the user whose
// /proc/<pid>/environ holds SSHQ_JOB_UID=<uid> (so setsid and SIGHUP-ignoring
// children die too), and during the grace period to every such process that
// appears later; then it SIGKILLs what is left but the wrapper (wrapper.pid),
// which records the end itself; only if it has not within 5s does Cancel
// record CANCELLED with exit 137, and then kill the wrapper, so the job never
// reads as LOST meanwhile. The tmux session is killed last. Cancelling an
// ended job answers "done" and still ends what carries its mark. A pending
// job's wrapper removes its waiting record and records CANCELLED with 143. Where the user's systemd works and the
// user lingers (without linger the user manager takes every scope down at
// logout), the wrapper also runs in a `systemd-run --user --scope`, which
// Cancel signals as well.
//
// # Output formats
//
// Report actions print "SSHQ-BEGIN 1", tab-separated records and
// "SSHQ-END"; text before the begin line (a chatty .bashrc) is ignored, a
// missing end line is an error. Fields are only ever added at the end of a
// record, and parsers ignore fields past the ones they know, so controllers
// and node scripts of neighbouring versions still understand each other.
//
//	Submit: submitted <uid> <first state>
//	        (refused: the exit status says whose the problem is: 2 a request
//	        no node would take, a bad payload; 3 the node lacks what every
//	        job needs: tmux, flock, a usable ~/.sshq or lease directory,
//	        bash 4.4; 4 the uid is taken; 5 the workdir snapshot failed; 6
//	        the job could not be started: tmux refused the session, the
//	        wrapper never got a place. On 3, 5 and 6, NodeCannotRun, a
//	        launch tries the next node that fits.)
//	Gang:   gang <uid> <port> <addr|~>          (rank 0's coordinator)
//	Jobs:   job <uid> found <wrapper 0|1> <tmux 0|1>  |  job <uid> missing|invalid
//	        state <uid> <STATE> <unix_ts>  (one per transition, in order)
//	        exit <uid> <code>
//	        gpu <uid> <index> <uuid>
//	        queue <uid> <position>          (1 = head)
//	        reason <uid> <text>             (encoded: why it waits, how a limit ended it)
//	        cores <uid> <list>              (the cores --cpus pinned it to)
//	        gang <uid> <mode> <since> <rank|-> <code|lost|->  (a multi-node
//	        rank: where it is in the start; the rank that stopped it)
//	Status: gpu <index> <uuid> free|leased|foreign   (older nodes: unusable)
//	        lease <uuid> <index> <uid> <id> <user> <name> <since> <login>
//	        foreign <uuid> <pid,pid...>
//	        ticket <position> <uid> <user> <name> <num_gpus> <since> <allowed|*> <login>
//	        running <uid> <id> <user> <name> <num_gpus> <since> <login>
//	        gang <uid> <mode> <rank> <nranks> <since>  (a multi-node rank)
//	        (a record whose fields sshq would never write is skipped: it
//	        is another user's file; the login of a lease, ticket or
//	        running job is the owner of its record's directory, "~" for
//	        a lease of the previous version's wrappers)
//	        error <text>
//	Place:  host <cpus> <mem_total_kib> <load1>
//	        gpu <index> <uuid> <name>       (only when a request needs GPUs)
//	        ask                             (then reads stdin: see place.sh)
//	        fit <request> now|wait|never <eligible> <free> <ahead> <demand>
//	        error <text>
//	Cancel: cancel <uid> cancelled <final state> | done | missing | invalid,
//	        then the jobs' records as Jobs prints them
//	Check:  tool <name> <path|->, bash <version>, kernel <text>,
//	        lease_dir <path> ok|unsafe provisioned|shared|none <records dir|-> <why|->,
//	        gpus <n> | gpus - <error>, logind <kill_user_processes> <linger>,
//	        limits cgroup|watchdog <reserve_kib> <disk_floor_kib> <log_cap_kib>,
//	        limits_warn <text>              (a setting it could not read)
//
// Status prints, before its records, what the driver said: sections after
// "@@sshq NAME" marker lines holding nvidia-smi's own output, the owners of
// the GPUs' processes and the host facts, which gpu.ParseProbe reads
// (nvidia-smi's lines are not records). Logs prints an empty line and
// "SSHQ-LOG" (what came before is a chatty .bashrc's), then raw log bytes
// (after a line saying how many its cap dropped, when it did); with
// follow its exit status is the job's, or 125 when the job is unknown or
// LOST.
//
// # Limits
//
//   - A process that execs with a cleared environment (env -i) loses the
//     cancel mark; without a systemd scope Cancel cannot find it, and the
//     end-of-job cleanup never can, though it still holds its inherited
//     lease fds until it exits.
//   - The node needs bash 4.4 or newer; an older one fails every action
//     with exit 3 and its version on stderr.
//   - The same holds for telling a holder's GPU processes from foreign ones,
//     which also uses sessions and ancestry; other users' environments are
//     unreadable, so another user's daemonized, env-cleared process counts as
//     foreign (the safe side).
//   - Under hidepid /proc, other users' processes are invisible to these
//     checks; /proc/locks, and so the records' liveness, is not affected.
//   - A user can always make records of their own look live (hold a lock of
//     theirs), as they can run a job that holds every GPU: such records are
//     shown as theirs, a waiter of theirs that never claims what fits is
//     passed over, and one asking more GPUs than the node has is ignored.
//   - Safety against a wipe of the records rests on the keeper writing its
//     record back within the settle time (three guard ticks); a node so
//     loaded that a keeper misses that many ticks could let a claim through
//     in that window. A job's processes computing on a GPU still show in
//     nvidia-smi and keep it from anyone else.
//   - The keeper holds the job's lock alone: killing it (only its owner or
//     root can) ends the job's lease while the job runs.
//   - MIG devices are not leased separately (their uuids are skipped).
//   - The watchdog counts a page shared by several processes of a job once
//     per process (as Slurm's default accounting), and a job can allocate
//     fast enough to pass its limit by what it takes in one second. A
//     process that cleared its environment is not counted, as Cancel does
//     not find it; only the cgroup mechanism holds it.
//   - Another user's job shows its limits in no report: Status gives only
//     this controller's own jobs' limits (from its store).
//   - The tmux server is `tmux -L sshq -f /dev/null`; killing it sends
//     SIGHUP to running jobs.
//   - A multi-node job needs python3 on its nodes, and TCP from every node
//     to rank 0's; Place does not skip parked ranks' tickets, so its
//     count of jobs ahead may include them.
package remote
