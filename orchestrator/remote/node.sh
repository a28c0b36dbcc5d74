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

# probe_gpus fills, for every GPU nvidia-smi lists:
#   gpu_uuids (index order), gpu_idx[uuid], gpu_state[uuid] = free | leased |
#   foreign | unusable, owner[uuid] (the raw owner record of a held lease),
#   foreign_pids[uuid].
# A GPU is free when no lease holds it and no process computes on it. A
# process on a GPU is foreign unless it belongs to that GPU's own lease
# holder: one of a job that strays off its lease (NVML, a container given
# every GPU, a reset CUDA_VISIBLE_DEVICES) occupies the GPU it uses like any
# other, or two jobs would share it. Returns 1 with gpu_err set when
# nvidia-smi fails. Must run under queue.lock.
gpu_err=
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
	if ! command -v nvidia-smi >/dev/null 2>&1; then
		gpu_err="nvidia-smi not found on PATH ($PATH)"
		return 1
	fi
	if ! out=$(nvidia-smi --query-gpu=index,uuid --format=csv,noheader,nounits 2>&1); then
		gpu_err="nvidia-smi failed: ${out//$'\n'/ }"
		return 1
	fi
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

	apps=$(nvidia-smi --query-compute-apps=gpu_uuid,pid --format=csv,noheader,nounits 2>/dev/null) || apps=
	[ -n "$apps" ] || return 0
	# One ps for the whole table: ancestry and session of every process.
	local -A ppid_of sid_of
	local p pp s
	while read -r p pp s; do
		ppid_of[$p]=$pp
		sid_of[$p]=$s
	done < <(ps -e -o pid= -o ppid= -o sid= 2>/dev/null)
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
# sticky bit lets us. Must run under queue.lock.
declare -a t_name t_uid t_user t_jname t_n t_since t_allowed t_login
read_tickets() {
	local f u us jn n si al lg rest
	t_name=() t_uid=() t_user=() t_jname=() t_n=() t_since=() t_allowed=() t_login=()
	for f in "$lease_dir"/queue/*; do
		[ -f "$f" ] && [ ! -L "$f" ] || continue
		if lock_free "$f"; then
			rm -f -- "$f" 2>/dev/null
			continue
		fi
		u= us= jn= n= si= al= lg=
		# lg (the login) is absent from tickets of older node scripts.
		IFS=$tab read -r u us jn n si al lg rest <"$f" 2>/dev/null
		case $n in '' | *[!0-9]*) continue ;; esac
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
		for f in PATH LD_LIBRARY_PATH LANG LC_CTYPE SSHQ_SIM_DIR SSHQ_POLL_INTERVAL XDG_RUNTIME_DIR DBUS_SESSION_BUS_ADDRESS; do
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
	if ! tmx new-session -d -s "$uid" -c "$jd" "$tcmd"; then
		rm -rf -- "$jd"
		die 6 "tmux could not start the job's session"
	fi
	# Wait until the wrapper has its ticket (so the order of submissions is
	# the queue order) or has failed: its first state line says which.
	waited=0
	while [ ! -s "$jd/state" ]; do
		if [ $waited -ge 200 ]; then
			die 6 "job $uid: the wrapper did not start within 10s (tmux -L sshq attach -t $uid may show why)"
		fi
		sleep 0.05
		waited=$((waited + 1))
	done
	IFS=' ' read -r first _ <"$jd/state"
	printf 'SSHQ-BEGIN %s\nsubmitted\t%s\t%s\nSSHQ-END\n' "$SSHQ_PROTO" "$uid" "$first"
}

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
jd= uid= got_signal= ticket= tfd= wfd= my_login=
declare -a lease_fds

jlog() { printf 'sshq: %s\n' "$*" >>"$jd/log"; }
set_state() { printf '%s %s\n' "$1" "$(now)" >>"$jd/state"; }

# finish STATE CODE: the job's last word. The exit file is written last and
# atomically: whoever sees it sees the terminal state too.
finish() {
	rm -f -- "$jd/secrets.sh"
	if [ -n "$ticket" ]; then
		rm -f -- "$lease_dir/queue/$ticket"
		rm -f -- "$jd/ticket"
	fi
	set_state "$1"
	printf '%s\n' "$2" >"$jd/exit.tmp" && mv -f -- "$jd/exit.tmp" "$jd/exit"
	exit 0
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
	exec {wfd}<"$jd/wrapper.lock"
	flock -w 10 "$wfd" || exit 1
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
		if ! probe_gpus; then
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
		ticket="$(date +%s%N)-$uid"
		local tmp="$lease_dir/queue/.new-$uid"
		# Readable by all: other users' waiters probe its lock and read it.
		(
			umask 022
			printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$uid" "$SSHQ_M_USER" "$SSHQ_M_NAME" "$ngpus" "$since" "$allowed" "$my_login" >"$tmp"
		)
		exec {tfd}<"$tmp"
		flock -n "$tfd"
		mv -f -- "$tmp" "$lease_dir/queue/$ticket"
		printf '%s\n' "$ticket" >"$jd/ticket"
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

wrapper_alive() { # true while the job's wrapper holds its lock
	[ -f "$1/wrapper.lock" ] && ! lock_free "$1/wrapper.lock"
}

cmd_jobs() {
	local uid jd alive tm st ts rc idx u tn i
	local -A pos_of=()
	printf 'SSHQ-BEGIN %s\n' "$SSHQ_PROTO"
	if lease_dir_prepare && queue_lock 30; then
		read_tickets
		queue_unlock
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
	if probe_gpus; then
		for u in "${gpu_uuids[@]}"; do
			printf 'gpu\t%s\t%s\t%s\n' "${gpu_idx[$u]}" "$u" "${gpu_state[$u]}"
			if [ "${gpu_state[$u]}" = leased ]; then
				o_uid= o_id= o_user= o_name= o_since= o_login=
				IFS=$tab read -r o_uid o_id o_user o_name o_since o_pid o_sid o_idx o_login o_rest <<<"${owner[$u]}"
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
	else
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

# job_pids UID: every process of ours whose environment carries the job's
# mark. The mark survives setsid, ignored SIGHUP and double forks; only a
# process that execs with a cleared environment escapes (the systemd scope,
# where available, catches that one too).
job_pids() {
	local f p
	for f in $(grep -lzxF -- "SSHQ_JOB_UID=$1" /proc/[0-9]*/environ 2>/dev/null); do
		p=${f#/proc/}
		p=${p%/environ}
		[ "$p" != $$ ] && [ "$p" != "$BASHPID" ] && printf '%s\n' "$p"
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
	local grace=$1 uid jd rc st tn deadline any round
	local -a targets=()
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
			printf 'cancel\t%s\tdone\n' "$uid"
			continue
		fi
		: >"$jd/cancel"
		targets+=("$uid")
	done
	for uid in ${targets[@]+"${targets[@]}"}; do signal_job TERM "$uid"; done
	# Grace: the job may save a checkpoint; poll until the trees are gone.
	deadline=$(($(date +%s%N) + grace * 1000000))
	while [ ${#targets[@]} -gt 0 ]; do
		any=
		for uid in "${targets[@]}"; do
			[ -n "$(job_pids "$uid")" ] && any=1 && break
		done
		[ -z "$any" ] && break
		[ "$(date +%s%N)" -ge $deadline ] && break
		sleep 0.1
	done
	for uid in ${targets[@]+"${targets[@]}"}; do
		for round in 1 2 3 4 5 6 7 8 9 10; do
			signal_job KILL "$uid" || break
			sleep 0.05
		done
	done
	for uid in ${targets[@]+"${targets[@]}"}; do
		jd=$jobs_dir/$uid
		# A wrapper that was killed before recording the end leaves it to us.
		for round in 1 2 3 4 5 6 7 8 9 10; do
			wrapper_alive "$jd" || break
			sleep 0.1
		done
		if [ ! -f "$jd/exit" ]; then
			rm -f -- "$jd/secrets.sh"
			if [ -f "$jd/ticket" ]; then
				read -r tn <"$jd/ticket"
				[ -n "$tn" ] && rm -f -- "$lease_dir/queue/$tn"
				rm -f -- "$jd/ticket"
			fi
			printf 'CANCELLED %s\n' "$(now)" >>"$jd/state"
			printf '137\n' >"$jd/exit.tmp" && mv -f -- "$jd/exit.tmp" "$jd/exit"
		fi
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
