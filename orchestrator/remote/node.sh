# sshq node protocol, v1. The controller sends this whole file as the script
# of `bash -c SCRIPT sshq ACTION ARGS...` (package remote builds that line):
# nothing is installed on a node. Submit copies it into the job directory as
# the job's wrapper, so a running job never depends on the controller again.
#
# Actions: submit UID (payload on stdin) | wrapper JOBDIR | jobs UID... |
# node | cancel GRACE_MS UID... | logs UID TAIL FOLLOW.
# Report actions print "SSHQ-BEGIN 1" ... "SSHQ-END": lines between are
# tab-separated records whose free-text fields were percent-encoded by the
# controller (they never hold a tab or newline); "~" is an empty field.
#
# Bash 4.4+, coreutils, util-linux flock, tmux, ps, nvidia-smi. Nothing here
# ever evaluates data: values arrive as files written by the controller with
# POSIX quoting (sourced only from the user's own job directory) or as
# records read with `read -r`; files in the shared lease directory are data
# written by other users and are only ever parsed, never sourced.

set -u
# Refuse an old bash before anything below is parsed: it needs {fd}
# redirections, associative arrays and `wait`/`read -t` as 4.4 has them, and
# an old one would fail half-way through with a confusing error.
if [ "${BASH_VERSINFO[0]:-0}" -lt 4 ] || { [ "${BASH_VERSINFO[0]}" -eq 4 ] && [ "${BASH_VERSINFO[1]:-0}" -lt 4 ]; }; then
	printf 'sshq: this node runs bash %s; sshq needs bash 4.4 or newer. Install a newer bash on the node (first on PATH for non-interactive ssh sessions)\n' "${BASH_VERSION:-unknown}" >&2
	exit 3
fi
# Byte-wise globs and tr here (ticket order must not depend on the locale),
# but the job gets the user's locale back: see restore_locale.
orig_lc_all=${LC_ALL-}
orig_lc_set=${LC_ALL+1}
LC_ALL=C
restore_locale() {
	if [ -n "$orig_lc_set" ]; then
		LC_ALL=$orig_lc_all
	else
		unset LC_ALL
	fi
}

SSHQ_PROTO=1
sshq_home=$HOME/.sshq
jobs_dir=$sshq_home/jobs
lease_dir=${SSHQ_LEASE_DIR:-/tmp/sshq-leases}
poll=${SSHQ_POLL_INTERVAL:-2}
# probe_timeout bounds one GPU probe (nvidia-smi twice, ps once), in whole
# seconds: a driver that hangs must not hold queue.lock, and so the node.
probe_timeout=${SSHQ_PROBE_TIMEOUT:-20}
tab=$'\t'

die() { # die CODE MESSAGE
	printf 'sshq: %s\n' "$2" >&2
	exit "$1"
}

now() { date +%s.%3N; }

# valid_uid: job uids name directories and tmux sessions (which rewrite '.'
# and ':'), so only this alphabet is accepted; it also blocks "../".
valid_uid() {
	case $1 in
	'' | *[!A-Za-z0-9_-]*) return 1 ;;
	esac
	[ ${#1} -le 128 ]
}

# tmx: sshq's own tmux server. -f /dev/null keeps the user's tmux.conf
# (default-shell, remain-on-exit, hooks) out of how jobs are started.
tmx() { TMUX= tmux -L sshq -f /dev/null "$@"; }

# sq: one POSIX single-quoted word, for the command tmux hands to the user's
# login shell (which may not be bash, so printf %q is not an option).
sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# enc STRING: the controller's EncodeField, for the few values the node itself
# puts in shared records (the login name: "DOMAIN\user" and "user@realm"
# exist). Runs under LC_ALL=C, so it walks bytes.
enc() {
	local s=$1 out= c i n
	if [ -z "$s" ]; then
		printf '~'
		return
	fi
	for ((i = 0; i < ${#s}; i++)); do
		c=${s:i:1}
		case $c in
		[A-Za-z0-9._-]) out+=$c ;;
		*)
			printf -v n '%d' "'$c"
			printf -v c '%%%02X' $((n & 255))
			out+=$c
			;;
		esac
	done
	printf '%s' "$out"
}

# ---------------------------------------------------------------- lease dir

# The lease directory is shared by every user of the node, so it is mode 1777
# (sticky: nobody removes another's files). A symlink there would let its
# owner redirect every lock, so it is refused, as is any lock file that is
# not a plain file. Shared files are created with O_EXCL (noclobber), which
# never follows a symlink, and mode 0666 so the next user can use them.
lease_err=

ensure_shared_dir() {
	local d=$1
	if [ -L "$d" ]; then
		lease_err="lease directory $d is a symlink; sshq refuses it because the link's owner would control every GPU lease. Remove it, or set SSHQ_LEASE_DIR to a real directory"
		return 1
	fi
	if [ ! -e "$d" ]; then
		mkdir -m 1777 "$d" 2>/dev/null
	fi
	if [ -L "$d" ] || [ ! -d "$d" ]; then
		lease_err="lease directory $d is not a directory (or could not be created); remove it or set SSHQ_LEASE_DIR"
		return 1
	fi
	if [ -O "$d" ]; then
		chmod 1777 "$d" 2>/dev/null
	fi
	if [ ! -w "$d" ] || [ ! -x "$d" ]; then
		lease_err="lease directory $d is not writable by $(id -un); its owner must run: chmod 1777 $d"
		return 1
	fi
}

ensure_shared_file() {
	local f=$1
	if [ ! -e "$f" ] && [ ! -L "$f" ]; then
		(
			umask 000
			set -C
			: >"$f"
		) 2>/dev/null
	fi
	if [ -L "$f" ] || [ ! -f "$f" ]; then
		lease_err="$f is not a regular file (a symlink or something else); sshq will not lock through it. Remove it"
		return 1
	fi
}

lease_dir_prepare() {
	ensure_shared_dir "$lease_dir" &&
		ensure_shared_dir "$lease_dir/queue" &&
		ensure_shared_file "$lease_dir/queue.lock"
}

# lock_free FILE: true when nobody holds FILE's flock. The probe opens the
# file read-only (no O_CREAT: fs.protected_regular forbids that on another
# user's file in a sticky directory) and, if it gets the lock, drops it at
# once. Callers hold queue.lock, so a probe never makes a waiter's try-lock
# fail. A file that cannot be opened counts as held.
lock_free() {
	flock -n 9 9<"$1" 2>/dev/null
}

# queue_lock / queue_unlock serialize every decision about GPUs on the node.
qfd=
queue_lock() {
	exec {qfd}<"$lease_dir/queue.lock" || return 1
	if ! flock -w "${1:-60}" "$qfd"; then
		exec {qfd}<&-
		return 1
	fi
}
queue_unlock() {
	[ -n "$qfd" ] && exec {qfd}<&-
	qfd=
}

# ---------------------------------------------------------------- GPUs

# bounded SECONDS CMD...: run CMD (stdout and stderr) into bounded_out, its
# exit status into bounded_rc; returns 1 when CMD fails, 124 when it has
# not ended within SECONDS. CMD runs with every fd above 2 closed: bash
# never sets close-on-exec on `exec {fd}<`, and a hung nvidia-smi (or ps)
# that inherited queue.lock, a ticket or wrapper.lock would hold them after
# its caller gave up or died, stalling every job on the node. A command
# still running at the deadline is abandoned, not waited for (one stuck in
# the kernel cannot be killed and timeout(1) would wait for it): its
# subshell is told to SIGKILL it, and it holds nothing of ours any more.
bounded_out= bounded_rc=
bounded() {
	local limit=$1 pfd sub= st out
	shift
	bounded_out= bounded_rc=
	[ "$limit" -ge 1 ] 2>/dev/null || limit=1
	# The subshell names itself first: whether $! is set for a process
	# substitution depends on the bash version.
	exec {pfd}< <(
		c=
		trap 'kill -KILL "$c" 2>/dev/null; exit 1' TERM
		printf '%s\n' "$BASHPID"
		for f in /proc/$BASHPID/fd/*; do
			n=${f##*/}
			case $n in '' | *[!0-9]*) continue ;; esac
			[ "$n" -gt 2 ] && exec {n}<&-
		done
		"$@" 2>&1 </dev/null &
		c=$!
		wait "$c"
		printf '\n%s\n' "$?"
	)
	IFS= read -r -t "$limit" sub <&"$pfd"
	IFS= read -r -d '' -t "$limit" out <&"$pfd"
	st=$?
	exec {pfd}<&-
	if [ $st -gt 128 ]; then
		case $sub in '' | *[!0-9]*) ;; *) kill -TERM "$sub" 2>/dev/null ;; esac
		return 124
	fi
	out=${out%$'\n'}
	bounded_rc=${out##*$'\n'}
	bounded_out=${out%$'\n'*}
	[ "$bounded_out" != "$out" ] || bounded_out=
	case $bounded_rc in '' | *[!0-9]*) bounded_rc=1 ;; esac
	[ "$bounded_rc" = 0 ]
}

# ms_now sets now_ms (milliseconds since the epoch), without a fork where
# bash has EPOCHREALTIME (5.0+).
now_ms=0
ms_now() {
	local t=${EPOCHREALTIME:-}
	if [ -n "$t" ]; then
		t=${t//[!0-9]/}
		now_ms=${t:0:${#t}-3}
	else
		now_ms=$(date +%s%3N)
	fi
}

# to_ms SECONDS: "2", "0.1" as milliseconds, in ms_val.
ms_val=0
to_ms() {
	local i=${1%%.*} f=
	[ "$1" != "$i" ] && f=${1#*.}
	f=${f}000
	f=${f:0:3}
	case $i in '' | *[!0-9]*) i=0 ;; esac
	case $f in *[!0-9]*) f=000 ;; esac
	ms_val=$((10#$i * 1000 + 10#$f))
}

# smi NAME ARGS...: nvidia-smi ARGS into smi_out, reusing what this user's
# last probe on the node got when it is under a poll interval old. Every
# waiter probes once a poll, all under queue.lock: without the cache, 40
# waiters run nvidia-smi 80 times a poll, each call taking up to a second
# on a busy driver. The cache is the user's own file in the lease directory,
# trusted only when this user owns it (another user could write anything in
# a file of theirs), replaced by rename. A probe that hung is remembered as
# such for probe_timeout, so the next waiters report it at once instead of
# each holding queue.lock for the whole timeout and leaving a stuck process.
# A report (smi_fresh=1) asks the driver itself, so what a user sees is
# the present, and refreshes the cache for the waiters; only a remembered
# hang spares it the wait. Returns 1 with
# smi_err set on failure.
smi_out= smi_err= smi_fresh=
smi() {
	local name=$1 f ts kind rest left tmp ttl
	shift
	f=$lease_dir/.cache-$name-$EUID
	ms_now
	if [ -f "$f" ] && [ ! -L "$f" ] && [ -O "$f" ] && IFS=' ' read -r ts kind rest <"$f" 2>/dev/null; then
		case $ts in '' | *[!0-9]*) ts=0 ;; esac
		to_ms "$poll"
		ttl=$ms_val
		[ "$kind" = hung ] && ttl=$((probe_timeout * 1000))
		if [ $((now_ms - ts)) -ge 0 ] && [ $((now_ms - ts)) -lt "$ttl" ]; then
			if [ "$kind" = ok ] && [ -z "$smi_fresh" ]; then
				IFS= read -r -d '' smi_out <"$f"
				smi_out=${smi_out#*$'\n'}
				return 0
			fi
			if [ "$kind" = hung ]; then
				smi_err="nvidia-smi $1 hung for over ${probe_timeout}s (at $ts ms); the driver may be stuck"
				return 1
			fi
		fi
	fi
	left=$((probe_deadline - SECONDS))
	bounded "$left" nvidia-smi "$@"
	case $? in
	0)
		smi_out=$bounded_out
		kind=ok
		;;
	124)
		smi_err="nvidia-smi $1 did not answer within ${probe_timeout}s; the driver may be stuck"
		kind=hung
		;;
	*)
		smi_err="nvidia-smi $1 failed (exit $bounded_rc): ${bounded_out//$'\n'/ }"
		kind=
		;;
	esac
	if [ -n "$kind" ]; then
		tmp=$lease_dir/.cache-$name-$EUID.$$
		rm -f -- "$tmp" 2>/dev/null
		if (
			set -C
			umask 077
			rest=
			[ "$kind" = ok ] && rest=$smi_out
			printf '%s %s\n%s\n' "$now_ms" "$kind" "$rest" >"$tmp"
		) 2>/dev/null; then
			mv -f -- "$tmp" "$f" 2>/dev/null || rm -f -- "$tmp"
		fi
	fi
	[ "$kind" = ok ]
}

# probe_gpus fills, for every GPU nvidia-smi lists:
#   gpu_uuids (index order), gpu_idx[uuid], gpu_state[uuid] = free | leased |
#   foreign | unusable, owner[uuid] (the raw owner record of a held lease),
#   foreign_pids[uuid].
# A GPU is free when no lease holds it and no process computes on it. A
# process on a GPU is foreign unless it belongs to that GPU's own lease
# holder: one of a job that strays off its lease (NVML, a container given
# every GPU, a reset CUDA_VISIBLE_DEVICES) occupies the GPU it uses like any
# other, or two jobs would share it. Returns 1 with gpu_err set when
# nvidia-smi cannot list the GPUs, 2 when the GPUs are known (gpu_state
# filled from the leases alone) but which processes use them is not: no GPU
# may then be taken as free. Must run under queue.lock.
gpu_err=
probe_deadline=0
declare -a gpu_uuids
declare -A gpu_idx gpu_state owner foreign_pids bad_lock
probe_gpus() {
	local out line idx uuid rest f rec apps pid
	gpu_uuids=()
	gpu_idx=()
	gpu_state=()
	owner=()
	foreign_pids=()
	bad_lock=()
	case $probe_timeout in '' | *[!0-9]* | 0) probe_timeout=20 ;; esac
	probe_deadline=$((SECONDS + probe_timeout))
	if ! command -v nvidia-smi >/dev/null 2>&1; then
		gpu_err="nvidia-smi not found on PATH ($PATH)"
		return 1
	fi
	if ! smi gpus --query-gpu=index,uuid --format=csv,noheader,nounits; then
		gpu_err=$smi_err
		return 1
	fi
	out=$smi_out
	while IFS=', ' read -r idx uuid rest; do
		case $idx in '' | *[!0-9]*) continue ;; esac
		# MIG or odd ids are skipped: a uuid names a lock file.
		case $uuid in '' | *[!A-Za-z0-9_-]*) continue ;; esac
		gpu_uuids+=("$uuid")
		gpu_idx[$uuid]=$idx
		f=$lease_dir/$uuid.lock
		if [ -e "$f" ] || [ -L "$f" ]; then
			if [ -L "$f" ] || [ ! -f "$f" ]; then
				gpu_state[$uuid]=unusable
				bad_lock[$uuid]="$f is not a regular file; sshq will not lease GPU $idx through it. Remove it"
				continue
			fi
			if ! lock_free "$f"; then
				gpu_state[$uuid]=leased
				rec=
				[ -f "$lease_dir/$uuid.owner" ] && IFS= read -r rec <"$lease_dir/$uuid.owner"
				owner[$uuid]=$rec
				continue
			fi
		fi
		gpu_state[$uuid]=free
	done <<<"$out"

	# Not knowing which processes compute where is not "none": a GPU a
	# foreign process uses would be handed out.
	if ! smi apps --query-compute-apps=gpu_uuid,pid --format=csv,noheader,nounits; then
		gpu_err="$smi_err; sshq cannot tell which GPUs other processes use"
		return 2
	fi
	apps=$smi_out
	[ -n "${apps//[[:space:]]/}" ] || return 0
	# One ps for the whole table: ancestry and session of every process.
	if ! bounded $((probe_deadline - SECONDS)) ps -e -o pid= -o ppid= -o sid=; then
		gpu_err="ps -e failed or did not answer in time: ${bounded_out//$'\n'/ }"
		return 2
	fi
	local -A ppid_of sid_of
	local p pp s
	while read -r p pp s; do
		case $p in '' | *[!0-9]*) continue ;; esac
		ppid_of[$p]=$pp
		sid_of[$p]=$s
	done <<<"$bounded_out"
	while IFS=', ' read -r uuid pid rest; do
		case $pid in '' | *[!0-9]*) continue ;; esac
		[ -n "${gpu_idx[$uuid]+x}" ] || continue
		if [ "${gpu_state[$uuid]}" = leased ] && in_holder_tree "$pid" "${owner[$uuid]}"; then
			continue
		fi
		foreign_pids[$uuid]="${foreign_pids[$uuid]:-}${foreign_pids[$uuid]:+,}$pid"
		[ "${gpu_state[$uuid]}" = free ] && gpu_state[$uuid]=foreign
	done <<<"$apps"
	return 0
}

# in_holder_tree PID OWNER_RECORD: PID is one of the lease holder's own
# processes. It is when it shares the wrapper's session (tmux made the
# wrapper a session leader), descends from the wrapper, or (for our own
# processes, whose environ we may read) carries the holder's SSHQ_JOB_UID
# mark. Uses ppid_of/sid_of of probe_gpus.
in_holder_tree() {
	local p=$1 n=0 mark o_uid o_id o_user o_name o_since o_pid o_sid o_rest
	IFS=$tab read -r o_uid o_id o_user o_name o_since o_pid o_sid o_rest <<<"$2"
	[ -n "${o_sid:-}" ] && [ "${sid_of[$p]:-}" = "$o_sid" ] && return 0
	while [ -n "${o_pid:-}" ] && [ -n "$p" ] && [ "$p" != 0 ] && [ $n -lt 64 ]; do
		[ "$p" = "$o_pid" ] && return 0
		p=${ppid_of[$p]:-}
		n=$((n + 1))
	done
	[ -n "${o_uid:-}" ] || return 1
	mark=$(grep -az '^SSHQ_JOB_UID=' "/proc/$1/environ" 2>/dev/null | tr -d '\0')
	[ "$mark" = "SSHQ_JOB_UID=$o_uid" ]
}

# ---------------------------------------------------------------- queue

# read_tickets lists live tickets in FIFO order into t_name/t_uid/t_user/
# t_jname/t_n/t_since/t_allowed/t_login. A ticket is live while its wrapper
# holds a flock on it: a wrapper that died (even by SIGKILL, even another
# user's) leaves a ticket nobody holds, which is skipped, and removed when the
# sticky bit lets us. A ticket whose uid is not a valid job uid was not
# written by sshq (tickets are other users' files) and is skipped: its text
# must not reach anyone's terminal. Run under queue.lock to decide; with
# "ro" (a report) it only reads, and needs no lock: a live ticket is locked
# from before it is named until after it is removed, so the probe never
# sees one unlocked.
declare -a t_name t_uid t_user t_jname t_n t_since t_allowed t_login
read_tickets() {
	local ro=${1:-} f u us jn n si al lg rest
	t_name=() t_uid=() t_user=() t_jname=() t_n=() t_since=() t_allowed=() t_login=()
	for f in "$lease_dir"/queue/*; do
		[ -f "$f" ] && [ ! -L "$f" ] || continue
		if lock_free "$f"; then
			[ -z "$ro" ] && rm -f -- "$f" 2>/dev/null
			continue
		fi
		u= us= jn= n= si= al= lg=
		# lg (the login) is absent from tickets of older node scripts.
		IFS=$tab read -r u us jn n si al lg rest <"$f" 2>/dev/null
		case $n in '' | *[!0-9]*) continue ;; esac
		valid_uid "$u" || continue
		t_name+=("${f##*/}")
		t_uid+=("$u")
		t_user+=("${us:-~}")
		t_jname+=("${jn:-~}")
		t_n+=("$n")
		t_since+=("${si:-~}")
		t_allowed+=("${al:-*}")
		t_login+=("${lg:-~}")
	done
}

allowed_has() { # allowed_has LIST UUID; LIST is "*" or comma-separated uuids
	[ "$1" = '*' ] && return 0
	case ",$1," in *",$2,"*) return 0 ;; esac
	return 1
}

# pick NEED ALLOWED AVOID: choose NEED GPUs from avail (index order) that
# ALLOWED accepts, using GPUs that AVOID accepts only when nothing else is
# left, so a reservation made for another job takes what we cannot use.
declare -a avail picked
pick() {
	local need=$1 allowed=$2 avoid=$3 pass u x dup
	picked=()
	[ "$need" -le 0 ] && return 0
	for pass in 1 2; do
		for u in ${avail[@]+"${avail[@]}"}; do
			allowed_has "$allowed" "$u" || continue
			if [ $pass = 1 ] && [ -n "$avoid" ] && allowed_has "$avoid" "$u"; then
				continue
			fi
			dup=
			for x in ${picked[@]+"${picked[@]}"}; do [ "$x" = "$u" ] && dup=1; done
			[ -n "$dup" ] && continue
			picked+=("$u")
			[ ${#picked[@]} -ge "$need" ] && return 0
		done
	done
	return 1
}

take_from_avail() {
	local u x keep
	local -a rest=()
	for u in ${avail[@]+"${avail[@]}"}; do
		keep=1
		for x in ${picked[@]+"${picked[@]}"}; do [ "$x" = "$u" ] && keep=; done
		[ -n "$keep" ] && rest+=("$u")
	done
	avail=(${rest[@]+"${rest[@]}"})
}

# ---------------------------------------------------------------- submit

# Payload on stdin: NUL-separated pairs NAME\0CONTENT\0 for the files below,
# written as they are (no field is ever interpreted here).
submit_files='meta.sh env.sh secrets.sh setup.sh run.sh'

cmd_submit() {
	local uid=$1 jd name content f key src first tcmd waited user_umask
	valid_uid "$uid" || die 2 "invalid job uid '$uid' (letters, digits, '-' and '_' only)"
	command -v tmux >/dev/null 2>&1 || die 3 "tmux is not installed on this node (or not on PATH=$PATH); sshq runs every job in a tmux session"
	command -v flock >/dev/null 2>&1 || die 3 "flock (util-linux) is not installed on this node; sshq needs it for GPU leases"
	lease_dir_prepare || die 3 "$lease_err"
	user_umask=$(umask)
	umask 077 # the job directory holds secrets
	mkdir -p "$jobs_dir" || die 3 "cannot create $jobs_dir"
	jd=$jobs_dir/$uid
	mkdir "$jd" 2>/dev/null || die 4 "job $uid already exists on this node ($jd); job uids must be unique"
	while IFS= read -r -d '' name; do
		IFS= read -r -d '' content || {
			rm -rf -- "$jd"
			die 2 "truncated submit payload (file $name)"
		}
		case " $submit_files " in
		*" $name "*) printf '%s' "$content" >"$jd/$name" ;;
		*)
			rm -rf -- "$jd"
			die 2 "unexpected file '$name' in submit payload"
			;;
		esac
	done
	for f in meta.sh env.sh run.sh; do
		[ -f "$jd/$f" ] || {
			rm -rf -- "$jd"
			die 2 "submit payload lacks $f"
		}
	done
	key=$(
		. "$jd/meta.sh"
		printf '%s' "${SSHQ_M_WORKDIR:-}"
	)
	if [ -n "$key" ]; then
		src=$sshq_home/workdirs/$key
		if [ ! -d "$src" ]; then
			rm -rf -- "$jd"
			die 5 "workdir cache $src does not exist; sync the workdir before submitting"
		fi
		# Hard links: a later sync writes new files and renames them into the
		# cache, so this job keeps the tree exactly as it was now.
		if ! cp -al -- "$src" "$jd/workdir"; then
			rm -rf -- "$jd"
			die 5 "cannot snapshot $src into $jd/workdir (cp -al failed)"
		fi
	fi
	printf '%s\n' "$BASH_EXECUTION_STRING" >"$jd/wrapper.sh"
	# The tmux server keeps the environment of whichever ssh session started
	# it, so this session's settings travel in a file.
	{
		printf 'umask %s\n' "$user_umask"
		printf 'export SSHQ_LEASE_DIR=%q\n' "$lease_dir"
		for f in PATH LD_LIBRARY_PATH LANG LC_CTYPE SSHQ_SIM_DIR SSHQ_POLL_INTERVAL SSHQ_PROBE_TIMEOUT SSHQ_END_GRACE XDG_RUNTIME_DIR DBUS_SESSION_BUS_ADDRESS; do
			[ -n "${!f+x}" ] && printf 'export %s=%q\n' "$f" "${!f}"
		done
		if [ -n "$orig_lc_set" ]; then
			printf 'export LC_ALL=%q\n' "$orig_lc_all"
		else
			printf 'unset LC_ALL\n'
		fi
	} >"$jd/nodeenv"
	: >"$jd/log"
	: >"$jd/wrapper.lock"

	if systemd_ok; then
		# A user scope puts the whole tree in one cgroup, which cancel can
		# kill even when a process cleared its environment.
		printf 'sshq-%s.scope\n' "$uid" >"$jd/scope"
	fi
	umask "$user_umask" # a tmux server started now passes it to every job
	restore_locale
	tcmd="exec env SSHQ_JOB_UID=$uid $(sq "$BASH") $(sq "$jd/wrapper.sh") wrapper $(sq "$jd")"
	# Two submits that both start the node's tmux server at once race, and
	# the loser's client says "server exited unexpectedly" (a sweep does
	# this): by the next try the winner's server is up.
	started= terr=
	for try in 1 2 3 4 5; do
		if terr=$(tmx new-session -d -s "$uid" -c "$jd" "$tcmd" 2>&1); then
			started=1
			break
		fi
		if tmx has-session -t "=$uid" 2>/dev/null; then
			started=1
			break
		fi
		sleep "0.$try"
	done
	if [ -z "$started" ]; then
		rm -rf -- "$jd"
		die 6 "tmux could not start the job's session: $terr"
	fi
	# Wait until the wrapper has its ticket (so the order of submissions is
	# the queue order) or has failed: its first state line says which. Once
	# it holds wrapper.lock it is on its way, and may wait up to 60s for
	# queue.lock and probe_timeout for nvidia-smi: it is given that, within
	# the controller's 2 minutes. Past that, or if it dies without a word,
	# the job is ended here before Submit says it failed, so it never runs
	# behind the back of a controller that has forgotten it.
	local t0=$SECONDS seen= limit
	limit=${SSHQ_SUBMIT_WAIT:-100}
	case $limit in '' | *[!0-9]*) limit=100 ;; esac
	while [ ! -s "$jd/state" ]; do
		if wrapper_alive "$jd"; then
			seen=1
		elif [ -s "$jd/state" ]; then
			break
		elif [ -n "$seen" ]; then
			abort_submit "the wrapper ended without recording a state"
		elif [ $((SECONDS - t0)) -ge 20 ]; then
			abort_submit "the wrapper did not start within 20s"
		fi
		if [ $((SECONDS - t0)) -ge "$limit" ]; then
			abort_submit "the wrapper did not get a place in the node's queue within ${limit}s (queue.lock held that long, or nvidia-smi hanging?)"
		fi
		sleep 0.05
	done
	IFS=' ' read -r first _ <"$jd/state"
	printf 'SSHQ-BEGIN %s\nsubmitted\t%s\t%s\nSSHQ-END\n' "$SSHQ_PROTO" "$uid" "$first"
}

# abort_submit REASON: make a failed submit true: the job is marked
# cancelled, every process of it killed, its ticket and (once its wrapper is
# gone) its directory removed, then Submit fails.
abort_submit() {
	local round tn
	: >"$jd/cancel"
	for round in 1 2 3 4 5 6 7 8 9 10; do
		signal_job KILL "$uid" || break
		sleep 0.05
	done
	tmx kill-session -t "=$uid" 2>/dev/null
	for round in 1 2 3 4 5 6 7 8 9 10; do
		wrapper_alive "$jd" || break
		sleep 0.1
	done
	if [ -f "$jd/ticket" ]; then
		read -r tn <"$jd/ticket"
		[ -n "$tn" ] && valid_ticket "$tn" && rm -f -- "$lease_dir/queue/$tn"
	fi
	rm -f -- "$lease_dir/queue/.new-$uid" 2>/dev/null
	if wrapper_alive "$jd"; then
		rm -f -- "$jd/secrets.sh"
		printf 'CANCELLED %s\n' "$(now)" >>"$jd/state"
		printf '137\n' >"$jd/exit.tmp" && mv -f -- "$jd/exit.tmp" "$jd/exit"
		die 6 "job $uid: $1; its wrapper could not be killed, so it was marked cancelled (see $jd/log)"
	fi
	local why=
	[ -s "$jd/log" ] && why=$(tail -n 5 -- "$jd/log" | tr '\n' ' ')
	rm -rf -- "$jd"
	die 6 "job $uid: $1; the job was removed from the node${why:+. Its log ended: $why}"
}

# valid_ticket NAME: a ticket name as the wrapper makes it, never a path.
valid_ticket() { valid_uid "$1"; }

# systemd_ok: use a user scope only where the user's systemd works AND the
# user lingers: without linger the user manager stops at the last logout and
# takes every scope, i.e. every job, with it.
systemd_ok() {
	[ "${SSHQ_NO_SYSTEMD:-}" = 1 ] && return 1
	command -v systemd-run >/dev/null 2>&1 && command -v systemctl >/dev/null 2>&1 || return 1
	case $(systemctl --user is-system-running 2>/dev/null) in
	running | degraded) ;;
	*) return 1 ;;
	esac
	[ "$(loginctl show-user "$(id -un)" --property=Linger --value 2>/dev/null)" = yes ] || return 1
	systemd-run --user --scope --quiet --collect true >/dev/null 2>&1
}

# ---------------------------------------------------------------- wrapper

# The wrapper runs in the job's tmux session with no controller anywhere.
# Files in its job directory: meta.sh (identity, from the controller),
# state (lines "STATE unix_ts"), log, exit, gpus, ticket, cancel.
jd= uid= got_signal= ticket= tfd= wfd= my_login= disp_pid=
declare -a lease_fds

jlog() { printf 'sshq: %s\n' "$*" >>"$jd/log"; }
set_state() { printf '%s %s\n' "$1" "$(now)" >>"$jd/state"; }

# finish STATE CODE: the job's last word. The exit file is written last and
# atomically: whoever sees it sees the terminal state too. Processes the job
# left behind end first (see sweep_leftovers), so an ended job holds no GPU.
finish() {
	sweep_leftovers
	rm -f -- "$jd/secrets.sh"
	if [ -n "$ticket" ]; then
		rm -f -- "$lease_dir/queue/$ticket"
		rm -f -- "$jd/ticket"
	fi
	set_state "$1"
	printf '%s\n' "$2" >"$jd/exit.tmp" && mv -f -- "$jd/exit.tmp" "$jd/exit"
	exit 0
}

# own_pids: the wrapper's own processes, which carry the job's mark but are
# not the job's: itself, the scope's outer wrapper waiting on it, the display.
own_pids() {
	printf '%s\n' $$ ${disp_pid:+"$disp_pid"}
	[ -n "${SSHQ_IN_SCOPE:-}" ] && printf '%s\n' "$PPID"
}

# leftover_pids: marked processes of the job that are not the wrapper's
# own. Called as $(leftover_pids): job_pids, called directly, skips the
# subshell that runs it.
leftover_pids() { job_pids "$uid" $(own_pids); }

# sweep_leftovers: like Slurm's end-of-job cleanup, what the job leaves
# running when its main process ends (a nohup'd server, `ray start`,
# tensorboard) would keep its inherited lease fds, and so its GPUs, for as
# long as it lives, with nobody's job running. Everything still carrying
# the job's mark gets SIGTERM, SIGTERM again if it appeared since, and
# SIGKILL after SSHQ_END_GRACE seconds (default 3).
sweep_leftovers() {
	local pids p n=0 grace
	declare -A termed=()
	pids=$(leftover_pids)
	[ -n "$pids" ] || return 0
	jlog "the job left $(printf '%s\n' $pids | wc -l) process(es) running ($(echo $pids)); ending them so its GPUs are free"
	to_ms "${SSHQ_END_GRACE:-3}"
	grace=$((ms_val / 100))
	while [ -n "$pids" ] && [ $n -lt $grace ]; do
		for p in $pids; do
			[ -n "${termed[$p]:-}" ] && continue
			kill -TERM "$p" 2>/dev/null
			termed[$p]=1
		done
		sleep 0.1
		n=$((n + 1))
		pids=$(leftover_pids)
	done
	for n in 1 2 3 4 5 6 7 8 9 10; do
		[ -n "$pids" ] || break
		kill -KILL $pids 2>/dev/null
		sleep 0.05
		pids=$(leftover_pids)
	done
}

# cancelled: `sshq cancel` leaves a mark before it signals. While the job
# runs only the mark counts (a stray signal to the wrapper alone changes
# nothing); while it waits, any SIGTERM/SIGHUP also ends the wait.
cancelled() { [ -e "$jd/cancel" ]; }

# try_start: one decision, under queue.lock. FIFO by ticket with safe
# backfill: walking the queue from the head, each older waiter that fits in
# what is free now reserves its GPUs first (the head reserves, when it does
# not fit, every free GPU it could use), and this job starts only if it fits
# in what remains. So a younger job passes an older one only with GPUs left
# over after the head's request, and the head is never delayed. Leases the
# chosen GPUs on success.
try_start() {
	local i me=-1 u f fd
	probe_gpus || {
		[ "$gpu_err" != "${last_err:-}" ] && jlog "$gpu_err; still waiting"
		last_err=$gpu_err
		return 1
	}
	for u in "${!bad_lock[@]}"; do
		[ -z "${warned[$u]:-}" ] && jlog "${bad_lock[$u]}"
		warned[$u]=1
	done
	read_tickets
	avail=()
	for u in "${gpu_uuids[@]}"; do
		[ "${gpu_state[$u]}" = free ] && avail+=("$u")
	done
	for i in "${!t_name[@]}"; do
		[ "${t_name[$i]}" = "$ticket" ] && me=$i && break
	done
	[ $me -ge 0 ] || me=${#t_name[@]} # our ticket vanished: behave as the last
	for ((i = 0; i < me; i++)); do
		if pick "${t_n[$i]}" "${t_allowed[$i]}" "$allowed"; then
			take_from_avail
		elif [ $i = 0 ]; then
			# The head cannot start yet: every free GPU it could use is
			# kept for it, so a younger job may pass it only on GPUs the
			# head would never take. The head is never delayed.
			picked=()
			for u in ${avail[@]+"${avail[@]}"}; do
				allowed_has "${t_allowed[0]}" "$u" && picked+=("$u")
			done
			take_from_avail
		fi
	done
	pick "$ngpus" "$allowed" '' || return 1
	lease_fds=()
	for u in "${picked[@]}"; do
		f=$lease_dir/$u.lock
		if ! ensure_shared_file "$f"; then
			jlog "$lease_err"
			release_leases
			return 1
		fi
		exec {fd}<"$f" || {
			release_leases
			return 1
		}
		if ! flock -n "$fd"; then
			exec {fd}<&-
			release_leases
			return 1
		fi
		lease_fds+=("$fd")
	done
	leased=(${picked[@]+"${picked[@]}"})
	return 0
}

release_leases() {
	local fd
	for fd in ${lease_fds[@]+"${lease_fds[@]}"}; do exec {fd}<&-; done
	lease_fds=()
}

# write_owner UUID: the record `sshq status` shows for a held lease. Written
# through dd with nocreat+nofollow, so a symlink planted as the owner file
# cannot redirect the write into someone's file. The login is last: older
# readers stop before it. No field may be empty (tab is IFS whitespace, so
# an empty field would shift the rest), hence "~" for an unknown session.
write_owner() {
	local f=$lease_dir/$1.owner
	ensure_shared_file "$f" || return 1
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$uid" "$SSHQ_M_ID" "$SSHQ_M_USER" "$SSHQ_M_NAME" \
		"$(now)" "$$" "${my_sid:-~}" "${gpu_idx[$1]}" "$my_login" |
		dd of="$f" conv=nocreat oflag=nofollow status=none 2>/dev/null
}

# run_phase SCRIPT: run a user script with the job's environment in a fresh
# bash. The task's variables are sourced there, not here, so no name a user
# picks can clobber the wrapper's own variables; the wrapper's lock is closed
# for the child so only the wrapper itself marks the job as alive.
run_phase() {
	local wd=$HOME
	[ -d "$jd/workdir" ] && wd=$jd/workdir
	(
		cd "$jd" || exit 1
		restore_locale
		exec "$BASH" -c '. ./env.sh && { [ ! -f ./secrets.sh ] || . ./secrets.sh; } && . ./gpu.env &&
			cd -- "$1" && exec "$2" "$3"' sshq-phase "$wd" "$BASH" "$jd/$1"
	) </dev/null >>"$jd/log" 2>&1 {wfd}<&-
}

# show_log: the pane `sshq attach` shows is the job's log, live and from
# its first byte (so tmux scrollback holds it too). The job never writes to
# the pane: its output goes to the log alone, so a killed or wedged tmux
# session can never SIGPIPE it or block its writes. Called before the
# wrapper opens any lock, and every fd but the pane is closed besides, so the
# display holds no lease, ticket or wrapper lock: those still end with the
# job's own processes. --pid=$$ names the wrapper that runs the job (inside
# a scope, the re-run one; it never execs), so the display ends with it
# however it ends, even where no hangup reaches the display, and the session
# still closes with the job. It carries the job's mark: cancel kills it too.
# Keys in the pane raise no signals (-isig): Ctrl-C from a user who attached
# to watch must not interrupt the job, which shares the pane's process group.
show_log() {
	[ -t 1 ] || return 0
	stty -isig -echo 2>/dev/null
	printf 'sshq: job %s, %s (live; Ctrl-b d detaches, the job goes on)\n' "$uid" "$jd/log"
	(
		local f n
		for f in /proc/$BASHPID/fd/*; do
			n=${f##*/}
			case $n in '' | *[!0-9]*) continue ;; esac
			[ "$n" -gt 2 ] && exec {n}<&-
		done
		exec tail --pid=$$ -s 0.5 -n +1 -F -- "$jd/log" </dev/null 2>/dev/null
	) &
	disp_pid=$!
}

cmd_wrapper() {
	jd=$1
	cd "$jd" || exit 1
	. ./meta.sh
	. ./nodeenv
	# nodeenv holds the submitting session's locale: that is the job's.
	orig_lc_all=${LC_ALL-}
	orig_lc_set=${LC_ALL+1}
	LC_ALL=C
	lease_dir=${SSHQ_LEASE_DIR:-$lease_dir}
	poll=${SSHQ_POLL_INTERVAL:-$poll}
	probe_timeout=${SSHQ_PROBE_TIMEOUT:-$probe_timeout}
	uid=$SSHQ_M_UID
	ngpus=$SSHQ_M_NGPUS
	if [ -f "$jd/scope" ] && [ -z "${SSHQ_IN_SCOPE:-}" ]; then
		# Run again inside a user scope. systemd-run execs the wrapper, so a
		# failure with no state written means the scope never started: then
		# go on without it rather than lose the job.
		SSHQ_IN_SCOPE=1 systemd-run --user --scope --quiet --collect --unit="sshq-$uid" -- \
			"$BASH" "$jd/wrapper.sh" wrapper "$jd" && exit 0
		[ -s "$jd/state" ] && exit 0
		rm -f -- "$jd/scope"
	fi
	show_log
	allowed=${SSHQ_M_ALLOWED:-*}
	[ -n "$allowed" ] || allowed='*'
	# Read-write: flock(2) on NFS needs the file open for writing. Without
	# the lock nothing could tell this job alive, so it fails, saying why.
	local lock_err
	if ! exec {wfd}<>"$jd/wrapper.lock"; then
		jlog "cannot open $jd/wrapper.lock for writing"
		finish FAILED_SETUP 3
	fi
	if ! lock_err=$(flock -w 10 "$wfd" 2>&1); then
		jlog "cannot lock $jd/wrapper.lock (${lock_err:-timed out}); sshq needs flock to work in \$HOME (on NFS: the mount must not use nolock, and lockd must run)"
		exec {wfd}<&-
		finish FAILED_SETUP 3
	fi
	# Cancel spares these until the wrapper has had its chance to record
	# how the job ended.
	own_pids >"$jd/wrapper.pid"
	# A signal must not kill the wrapper before it has recorded how the job
	# ended; the flag also ends a wait in the queue.
	trap 'got_signal=1' TERM INT HUP
	export PYTHONUNBUFFERED=1
	my_sid=$(ps -o sid= -p $$ 2>/dev/null) || my_sid=
	my_sid=${my_sid// /}
	# The account the job runs as on this node: what status shows as its
	# holder (the controller's own user name may be "root" on every laptop).
	my_login=$(id -un 2>/dev/null) || my_login=
	my_login=$(enc "$my_login")
	declare -A warned=()
	declare -a leased=()
	local i u since line cvd noted=

	if ! lease_dir_prepare; then
		jlog "$lease_err"
		finish FAILED_SETUP 3
	fi
	if [ "$ngpus" -gt 0 ]; then
		queue_lock 60 || {
			jlog "cannot lock $lease_dir/queue.lock"
			finish FAILED_SETUP 3
		}
		probe_gpus
		if [ $? = 1 ]; then
			queue_unlock
			jlog "$gpu_err"
			finish FAILED_SETUP 3
		fi
		local fit=0
		for u in "${gpu_uuids[@]}"; do allowed_has "$allowed" "$u" && fit=$((fit + 1)); done
		if [ $fit -lt "$ngpus" ]; then
			queue_unlock
			jlog "the job needs $ngpus GPU(s) but this node has only $fit it may use; it can never start here"
			finish FAILED_SETUP 3
		fi
		# The ticket is created under a temporary name, locked, then renamed:
		# no reader ever sees it unlocked and takes it for a dead one.
		since=$(now)
		local tmp="$lease_dir/queue/.new-$uid" name
		name="$(date +%s%N)-$uid"
		# Readable by all: other users' waiters probe its lock and read it.
		# Every step is checked: a ticket that is empty (full /tmp) or
		# unlocked would put the job out of the queue's order.
		rm -f -- "$tmp" 2>/dev/null
		if ! (
			umask 022
			set -C
			printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$uid" "$SSHQ_M_USER" "$SSHQ_M_NAME" "$ngpus" "$since" "$allowed" "$my_login" >"$tmp"
		) 2>/dev/null || ! exec {tfd}<"$tmp" || ! flock -n "$tfd" || ! mv -f -- "$tmp" "$lease_dir/queue/$name"; then
			[ -n "$tfd" ] && exec {tfd}<&-
			rm -f -- "$tmp" 2>/dev/null
			queue_unlock
			jlog "cannot create this job's ticket in $lease_dir/queue (is the file system full?)"
			finish FAILED_SETUP 3
		fi
		ticket=$name
		if ! printf '%s\n' "$ticket" >"$jd/ticket"; then
			queue_unlock
			jlog "cannot write $jd/ticket (is the file system full?)"
			finish FAILED_SETUP 3
		fi
		set_state PENDING
		queue_unlock

		while :; do
			if cancelled || [ -n "$got_signal" ]; then
				exec {tfd}<&-
				finish CANCELLED 143
			fi
			if queue_lock 60; then
				if try_start; then
					for u in "${leased[@]}"; do write_owner "$u"; done
					rm -f -- "$lease_dir/queue/$ticket" "$jd/ticket"
					ticket=
					exec {tfd}<&-
					queue_unlock
					break
				fi
				queue_unlock
			fi
			if [ -z "$noted" ]; then
				jlog "waiting for $ngpus GPU(s) in the node's queue"
				noted=1
			fi
			sleep "$poll"
		done
	else
		set_state PENDING
	fi

	cvd=
	: >"$jd/gpus"
	for u in ${leased[@]+"${leased[@]}"}; do
		cvd=$cvd${cvd:+,}${gpu_idx[$u]}
		printf '%s\t%s\n' "${gpu_idx[$u]}" "$u" >>"$jd/gpus"
	done
	{
		printf 'export CUDA_VISIBLE_DEVICES=%s\n' "$cvd"
		printf 'export CUDA_DEVICE_ORDER=PCI_BUS_ID\n'
		printf 'export PYTHONUNBUFFERED=1\n'
		printf 'export SSHQ_JOB_UID=%s\n' "$uid"
	} >"$jd/gpu.env"
	[ -n "$cvd" ] && jlog "leased GPU(s) $cvd"

	if cancelled; then finish CANCELLED 143; fi
	set_state SETTING_UP
	if [ -s "$jd/setup.sh" ]; then
		run_phase setup.sh
		rc=$?
		if cancelled; then finish CANCELLED "$rc"; fi
		if [ $rc -ne 0 ]; then
			jlog "setup failed with exit code $rc"
			finish FAILED_SETUP "$rc"
		fi
	fi
	if cancelled; then finish CANCELLED 143; fi
	set_state RUNNING
	run_phase run.sh
	rc=$?
	if cancelled; then finish CANCELLED "$rc"; fi
	if [ $rc -eq 0 ]; then finish SUCCEEDED 0; fi
	finish FAILED "$rc"
}

# ---------------------------------------------------------------- reports

# wrapper_alive JOBDIR: true while the job's wrapper holds its lock. Opened
# read-write: on NFS (a home directory) flock(2) is emulated with a POSIX
# lock, and an exclusive one needs the file open for writing; read-only,
# the probe would fail and every job would look alive forever.
wrapper_alive() {
	[ -f "$1/wrapper.lock" ] && ! flock -n 9 9<>"$1/wrapper.lock" 2>/dev/null
}

cmd_jobs() {
	local uid jd alive tm st ts rc idx u tn i
	local -A pos_of=()
	printf 'SSHQ-BEGIN %s\n' "$SSHQ_PROTO"
	# No queue.lock: a report must answer while the queue is busy (or a
	# probe is stuck), and reading tickets needs none.
	if lease_dir_prepare; then
		read_tickets ro
		for i in "${!t_name[@]}"; do pos_of[${t_name[$i]}]=$((i + 1)); done
	fi
	for uid in "$@"; do
		if ! valid_uid "$uid"; then
			printf 'job\t%s\tinvalid\n' "$(printf %s "$uid" | tr -c 'A-Za-z0-9_-' '?')"
			continue
		fi
		jd=$jobs_dir/$uid
		if [ ! -d "$jd" ]; then
			printf 'job\t%s\tmissing\n' "$uid"
			continue
		fi
		# Liveness first: a wrapper seen dead here wrote its last state
		# before it died, so the state read below is final.
		alive=0
		wrapper_alive "$jd" && alive=1
		tm=0
		tmx has-session -t "=$uid" 2>/dev/null && tm=1
		printf 'job\t%s\tfound\t%s\t%s\n' "$uid" "$alive" "$tm"
		if [ -f "$jd/state" ]; then
			while read -r st ts _; do
				[ -n "$st" ] && printf 'state\t%s\t%s\t%s\n' "$uid" "$st" "${ts:-~}"
			done <"$jd/state"
		fi
		if [ -f "$jd/exit" ]; then
			read -r rc <"$jd/exit" && printf 'exit\t%s\t%s\n' "$uid" "$rc"
		fi
		if [ -f "$jd/gpus" ]; then
			while IFS=$tab read -r idx u; do
				[ -n "$u" ] && printf 'gpu\t%s\t%s\t%s\n' "$uid" "$idx" "$u"
			done <"$jd/gpus"
		fi
		if [ -f "$jd/ticket" ]; then
			read -r tn <"$jd/ticket"
			[ -n "${pos_of[$tn]:-}" ] && printf 'queue\t%s\t%s\n' "$uid" "${pos_of[$tn]}"
		fi
	done
	printf 'SSHQ-END\n'
}

cmd_node() {
	local u i r o_uid o_id o_user o_name o_since o_pid o_sid o_idx o_login o_rest
	printf 'SSHQ-BEGIN %s\n' "$SSHQ_PROTO"
	if ! lease_dir_prepare; then
		printf 'error\t%s\n' "$(printf %s "$lease_err" | tr '\t\n' '  ')"
		printf 'SSHQ-END\n'
		return 0
	fi
	if ! queue_lock 30; then
		printf 'error\tqueue lock %s/queue.lock is held for over 30s\n' "$lease_dir"
		printf 'SSHQ-END\n'
		return 0
	fi
	smi_fresh=1
	probe_gpus
	r=$?
	if [ $r -ne 1 ]; then
		for u in ${gpu_uuids[@]+"${gpu_uuids[@]}"}; do
			printf 'gpu\t%s\t%s\t%s\n' "${gpu_idx[$u]}" "$u" "${gpu_state[$u]}"
			if [ "${gpu_state[$u]}" = leased ]; then
				o_uid= o_id= o_user= o_name= o_since= o_login=
				IFS=$tab read -r o_uid o_id o_user o_name o_since o_pid o_sid o_idx o_login o_rest <<<"${owner[$u]}"
				# Owner records are anyone's to write: a uid sshq never
				# makes is shown as unknown, not passed on.
				valid_uid "$o_uid" || o_uid=
				# The login comes last, so controllers that read only
				# the first fields are not confused by it.
				printf 'lease\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$u" "${gpu_idx[$u]}" "${o_uid:-~}" \
					"${o_id:-~}" "${o_user:-~}" "${o_name:-~}" "${o_since:-~}" "${o_login:-~}"
			fi
			if [ -n "${foreign_pids[$u]:-}" ]; then
				printf 'foreign\t%s\t%s\n' "$u" "${foreign_pids[$u]}"
			fi
			if [ -n "${bad_lock[$u]:-}" ]; then
				printf 'error\t%s\n' "${bad_lock[$u]}"
			fi
		done
	fi
	if [ $r -ne 0 ]; then
		printf 'error\t%s\n' "$(printf %s "$gpu_err" | tr '\t\n' '  ')"
	fi
	read_tickets
	queue_unlock
	for i in "${!t_name[@]}"; do
		printf 'ticket\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$((i + 1))" "${t_uid[$i]}" "${t_user[$i]}" \
			"${t_jname[$i]}" "${t_n[$i]}" "${t_since[$i]}" "${t_allowed[$i]}" "${t_login[$i]}"
	done
	printf 'SSHQ-END\n'
}

# ---------------------------------------------------------------- cancel

# job_pids UID [PID...]: every process of ours whose environment carries
# the job's mark, but the PIDs and the caller. The mark survives setsid,
# ignored SIGHUP and double forks; only a process that execs with a cleared
# environment escapes (the systemd scope, where available, catches that one
# too).
job_pids() {
	local f p skip=" $$ $BASHPID ${*:2} "
	for f in $(grep -lzxF -- "SSHQ_JOB_UID=$1" /proc/[0-9]*/environ 2>/dev/null); do
		p=${f#/proc/}
		p=${p%/environ}
		case $skip in *" $p "*) continue ;; esac
		# The grep itself carried the mark, and is gone now.
		[ -e "/proc/$p" ] && printf '%s\n' "$p"
	done
}

signal_job() { # signal_job SIG UID
	local jd=$jobs_dir/$2 pids
	if [ -f "$jd/scope" ]; then
		systemctl --user kill --signal="$1" "$(cat "$jd/scope")" >/dev/null 2>&1
	fi
	pids=$(job_pids "$2")
	[ -n "$pids" ] && kill "-$1" $pids 2>/dev/null
	[ -n "$pids" ]
}

cmd_cancel() {
	local grace=$1 uid jd st tn deadline any round p spare
	local -a targets=() sweep=()
	local -A termed=()
	shift
	case $grace in '' | *[!0-9]*) grace=10000 ;; esac
	printf 'SSHQ-BEGIN %s\n' "$SSHQ_PROTO"
	for uid in "$@"; do
		if ! valid_uid "$uid"; then
			printf 'cancel\t%s\tinvalid\n' "$(printf %s "$uid" | tr -c 'A-Za-z0-9_-' '?')"
			continue
		fi
		jd=$jobs_dir/$uid
		if [ ! -d "$jd" ]; then
			printf 'cancel\t%s\tmissing\n' "$uid"
			continue
		fi
		if [ -f "$jd/exit" ]; then
			# Ended, but what it left running (a wrapper killed before
			# its cleanup, a process started late) may still hold its
			# GPUs: that goes too.
			printf 'cancel\t%s\tdone\n' "$uid"
			sweep+=("$uid")
			continue
		fi
		: >"$jd/cancel"
		targets+=("$uid")
		sweep+=("$uid")
	done
	# term_new: SIGTERM to every marked process not yet sent one, so a
	# process started after the first round (by a trap, a supervisor)
	# still gets its chance to clean up before the SIGKILL.
	term_new() {
		local u p
		for u in ${sweep[@]+"${sweep[@]}"}; do
			for p in $(job_pids "$u"); do
				[ -n "${termed[$p]:-}" ] && continue
				kill -TERM "$p" 2>/dev/null
				termed[$p]=1
			done
		done
	}
	for uid in ${targets[@]+"${targets[@]}"}; do
		jd=$jobs_dir/$uid
		[ -f "$jd/scope" ] && systemctl --user kill --signal=TERM "$(cat "$jd/scope")" >/dev/null 2>&1
	done
	term_new
	# Grace: the job may save a checkpoint; poll until the trees are gone.
	deadline=$(($(date +%s%N) + grace * 1000000))
	while [ ${#sweep[@]} -gt 0 ]; do
		any=
		for uid in "${sweep[@]}"; do
			[ -n "$(job_pids "$uid")" ] && any=1 && break
		done
		[ -z "$any" ] && break
		[ "$(date +%s%N)" -ge $deadline ] && break
		term_new
		sleep 0.1
	done
	# SIGKILL the job's processes but not yet its wrapper: it records how
	# the job ended once they are gone. Killed before, it would leave a
	# moment with no wrapper and no exit record, which reads as LOST.
	for uid in ${sweep[@]+"${sweep[@]}"}; do
		jd=$jobs_dir/$uid
		spare=
		[ -f "$jd/wrapper.pid" ] && [ ! -f "$jd/exit" ] && spare=" $(tr '\n' ' ' <"$jd/wrapper.pid") "
		for round in 1 2 3 4 5 6 7 8 9 10; do
			any=
			for p in $(job_pids "$uid"); do
				case $spare in *" $p "*) continue ;; esac
				kill -KILL "$p" 2>/dev/null
				any=1
			done
			[ -n "$any" ] || break
			sleep 0.05
		done
	done
	for uid in ${targets[@]+"${targets[@]}"}; do
		jd=$jobs_dir/$uid
		for round in $(seq 50); do
			[ -f "$jd/exit" ] || ! wrapper_alive "$jd" && break
			sleep 0.1
		done
		# A wrapper that could not record the end leaves it to us, before
		# it is killed.
		if [ ! -f "$jd/exit" ]; then
			rm -f -- "$jd/secrets.sh"
			if [ -f "$jd/ticket" ]; then
				read -r tn <"$jd/ticket"
				[ -n "$tn" ] && valid_ticket "$tn" && rm -f -- "$lease_dir/queue/$tn"
				rm -f -- "$jd/ticket"
			fi
			printf 'CANCELLED %s\n' "$(now)" >>"$jd/state"
			printf '137\n' >"$jd/exit.tmp" && mv -f -- "$jd/exit.tmp" "$jd/exit"
		fi
	done
	for uid in ${sweep[@]+"${sweep[@]}"}; do
		for round in 1 2 3 4 5 6 7 8 9 10; do
			signal_job KILL "$uid" || break
			sleep 0.05
		done
	done
	for uid in ${targets[@]+"${targets[@]}"}; do
		jd=$jobs_dir/$uid
		tmx kill-session -t "=$uid" 2>/dev/null
		st=
		[ -f "$jd/state" ] && st=$(tail -n 1 "$jd/state")
		printf 'cancel\t%s\tcancelled\t%s\n' "$uid" "${st%% *}"
	done
	printf 'SSHQ-END\n'
}

# ---------------------------------------------------------------- logs

# cmd_logs UID TAIL FOLLOW: the last TAIL lines (all when negative); with
# FOLLOW=1 keep printing what the job appends until its exit record appears,
# then exit with the job's exit code. Exit 125 when the job is unknown or
# ended without an exit record (LOST).
cmd_logs() {
	local uid=$1 n=$2 follow=$3 jd log size new start rc
	valid_uid "$uid" || die 125 "invalid job uid"
	jd=$jobs_dir/$uid
	[ -d "$jd" ] || die 125 "no job $uid on this node"
	log=$jd/log
	[ -f "$log" ] || : >>"$log"
	case $n in '' | *[!0-9-]*) n=-1 ;; esac
	# Print up to a fixed size, so following from that size neither loses
	# nor repeats a byte appended meanwhile.
	size=$(stat -c %s -- "$log")
	if [ "$n" -lt 0 ] || [ "$size" -le 8388608 ]; then
		start=0
	else
		start=$((size - 8388608)) # the last lines of a huge log live at its end
	fi
	if [ "$n" -lt 0 ]; then
		head -c "$size" -- "$log"
	elif [ "$n" -gt 0 ]; then
		tail -c +$((start + 1)) -- "$log" | head -c $((size - start)) | tail -n "$n"
	fi
	[ "$follow" = 1 ] || exit 0
	local last=
	while :; do
		last=
		[ -f "$jd/exit" ] && last=1
		[ -z "$last" ] && ! wrapper_alive "$jd" && [ ! -f "$jd/exit" ] && last=lost
		new=$(stat -c %s -- "$log")
		if [ "$new" -gt "$size" ]; then
			tail -c +$((size + 1)) -- "$log" | head -c $((new - size))
			size=$new
		fi
		if [ -n "$last" ]; then
			if [ "$last" = lost ]; then
				die 125 "job $uid ended without an exit record (LOST)"
			fi
			read -r rc <"$jd/exit"
			case $rc in '' | *[!0-9]*) rc=125 ;; esac
			exit "$rc"
		fi
		sleep "${SSHQ_LOG_POLL:-0.25}"
	done
}

# ---------------------------------------------------------------- dispatch

[ $# -ge 1 ] || die 2 "usage: sshq ACTION ARGS..."
action=$1
shift
case $action in
submit) cmd_submit "$@" ;;
wrapper) cmd_wrapper "$@" ;;
jobs) cmd_jobs "$@" ;;
node) cmd_node ;;
cancel) cmd_cancel "$@" ;;
logs) cmd_logs "$@" ;;
*) die 2 "unknown action '$action' (controller and node script disagree?)" ;;
esac
