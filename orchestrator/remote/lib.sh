# sshq node protocol, v1: shared helpers. Every command the controller sends
# is `bash -c SCRIPT sshq ACTION ARGS...`, where SCRIPT is this file, the
# files the action needs (sched.sh for anything that reads the queue or the
# GPUs, then the action's own file) and the line `sshq_main "$@"` (package
# remote builds it): nothing is installed on a node. Submit copies its SCRIPT
# into the job directory as the job's wrapper, so a running job never
# depends on the controller again.
#
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
# A report (status, place, check) gives the driver report_probe_timeout
# instead, so that a hung driver reads as such within the controller's
# connect timeout and a few seconds, and the node as up.
report_probe_timeout=${SSHQ_REPORT_PROBE_TIMEOUT:-5}
tab=$'\t'

die() { # die CODE MESSAGE
	printf 'sshq: %s\n' "$2" >&2
	exit "$1"
}

# now prints the time as unix seconds with milliseconds ("STATE ts" lines,
# tickets, owner records); without a fork where bash has EPOCHREALTIME.
now() {
	ms_now
	printf '%s.%s\n' "${now_ms:0:${#now_ms}-3}" "${now_ms: -3}"
}

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

# enc STRING: the controller's EncodeField, into enc_out, for the few values
# the node itself puts in shared records (login names: "DOMAIN\user" and
# "user@realm" exist). Runs under LC_ALL=C, so it walks bytes.
enc_out=
enc() {
	local s=$1 c i n
	enc_out=
	if [ -z "$s" ]; then
		enc_out='~'
		return
	fi
	for ((i = 0; i < ${#s}; i++)); do
		c=${s:i:1}
		case $c in
		[A-Za-z0-9._-]) enc_out+=$c ;;
		*)
			printf -v n '%d' "'$c"
			printf -v c '%%%02X' $((n & 255))
			enc_out+=$c
			;;
		esac
	done
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
	# Only the sticky bit is visible to test: a directory that has it was
	# made 1777 by sshq (or on purpose), and needs no chmod (a fork).
	if [ -O "$d" ] && [ ! -k "$d" ]; then
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

# ---------------------------------------------------------------- nvidia-smi

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

# smi NAME ARGS...: the one way sshq runs nvidia-smi. Its output (stdout and
# stderr) lands in smi_out, its exit status in smi_rc (124: it hung), and
# smi returns 1 with smi_err set when it failed. The call is bounded by
# probe_deadline (see probe_begin). Every waiter probes once a poll, all
# under queue.lock: so that 40 waiters do not run nvidia-smi 80 times a poll,
# each call taking up to a second on a busy driver, an answer is reused by
# the same user for one poll interval. The cache is the user's own file in
# the lease directory (.smi-NAME-EUID), trusted only when this user owns it
# (another user could write anything in a file of theirs), replaced by
# rename. A call that hung is remembered as such for probe_timeout, so the
# next callers report it at once instead of each holding queue.lock for the
# whole timeout and leaving a stuck process. With smi_fresh set (status) the
# driver itself is asked, so what a user sees is the present, and the cache
# is refreshed for the waiters; only a remembered hang spares it the wait.
smi_out= smi_rc=0 smi_err= smi_fresh=
smi() {
	local name=$1 f ts kind rc rest tmp ttl
	shift
	smi_out= smi_rc=0 smi_err=
	f=$lease_dir/.smi-$name-$EUID
	ms_now
	if [ -f "$f" ] && [ ! -L "$f" ] && [ -O "$f" ] && IFS=' ' read -r ts kind rc rest <"$f" 2>/dev/null; then
		case $ts in '' | *[!0-9]*) ts=0 ;; esac
		case $rc in '' | *[!0-9]*) rc=1 ;; esac
		to_ms "$poll"
		ttl=$ms_val
		[ "$kind" = hung ] && ttl=$((probe_timeout * 1000))
		if [ $((now_ms - ts)) -ge 0 ] && [ $((now_ms - ts)) -lt "$ttl" ]; then
			if [ "$kind" = hung ]; then
				smi_rc=124
				smi_err="nvidia-smi $1 hung for over ${probe_timeout}s (at $ts ms); the driver may be stuck"
				return 1
			fi
			if [ -z "$smi_fresh" ] && { [ "$kind" = ok ] || [ "$kind" = fail ]; }; then
				IFS= read -r -d '' smi_out <"$f"
				smi_out=${smi_out#*$'\n'}
				smi_rc=$rc
				[ "$kind" = ok ] && return 0
				smi_err="nvidia-smi $1 failed (exit $rc): ${smi_out//$'\n'/ }"
				return 1
			fi
		fi
	fi
	bounded $((probe_deadline - SECONDS)) nvidia-smi "$@"
	case $? in
	0)
		smi_out=$bounded_out
		kind=ok
		;;
	124)
		smi_rc=124
		smi_err="nvidia-smi $1 did not answer within ${probe_timeout}s; the driver may be stuck"
		kind=hung
		;;
	*)
		smi_out=$bounded_out
		smi_rc=$bounded_rc
		smi_err="nvidia-smi $1 failed (exit $bounded_rc): ${bounded_out//$'\n'/ }"
		kind=fail
		;;
	esac
	tmp=$f.$$
	{ [ -e "$tmp" ] || [ -L "$tmp" ]; } && rm -f -- "$tmp" 2>/dev/null
	if (
		set -C
		umask 077
		printf '%s %s %s\n%s\n' "$now_ms" "$kind" "$smi_rc" "$smi_out" >"$tmp"
	) 2>/dev/null; then
		mv -f -- "$tmp" "$f" 2>/dev/null || rm -f -- "$tmp"
	fi
	[ "$kind" = ok ]
}

# probe_begin starts one probe of the GPUs: its nvidia-smi and ps calls
# together get probe_timeout seconds (SSHQ_PROBE_TIMEOUT, default 20), so a
# driver that hangs fails the probe instead of holding queue.lock, and so
# the node.
probe_deadline=0
probe_begin() {
	case $probe_timeout in '' | *[!0-9]* | 0) probe_timeout=20 ;; esac
	probe_deadline=$((SECONDS + probe_timeout))
}

# gpu_query and apps_query are the node's two questions to the driver, with
# the fields `sshq status` shows (gpu.QueryGPUFields and
# gpu.ComputeAppsFields in the controller): the queue's decisions and the
# status report share their answers. gpu_fields says which fields the GPU
# answer has: drivers older than R450 know no MIG field, and get asked again
# without it.
gpu_fields_all=index,uuid,name,memory.total,memory.used,utilization.gpu,pci.bus_id,mig.mode.current
gpu_fields=$gpu_fields_all
apps_fields=gpu_uuid,pid,used_memory,process_name
gpu_query() {
	gpu_fields=$gpu_fields_all
	smi gpu --query-gpu=$gpu_fields --format=csv,noheader,nounits && return 0
	case $smi_out in *'is not a valid field'*) ;; *) return 1 ;; esac
	gpu_fields=${gpu_fields_all%,mig.mode.current}
	smi gpu-nomig --query-gpu=$gpu_fields --format=csv,noheader,nounits
}
apps_query() {
	smi apps --query-compute-apps=$apps_fields --format=csv,noheader,nounits
}

# ---------------------------------------------------------------- jobs

# wrapper_alive JOBDIR: true while the job's wrapper holds its lock. Opened
# read-write: on NFS (a home directory) flock(2) is emulated with a POSIX
# lock, and an exclusive one needs the file open for writing; read-only,
# the probe would fail and every job would look alive forever.
wrapper_alive() {
	[ -f "$1/wrapper.lock" ] && ! flock -n 9 9<>"$1/wrapper.lock" 2>/dev/null
}

# valid_ticket NAME: a ticket name as the wrapper makes it, never a path.
valid_ticket() { valid_uid "$1"; }

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

# host_info fills h_nproc, h_load (the three load averages), h_mem_total and
# h_mem_avail (kB): what placement weighs besides GPUs. One fork (nproc: it
# knows the CPUs this account may use).
h_nproc= h_load= h_mem_total= h_mem_avail=
host_info() {
	local k v rest
	h_nproc=$(nproc 2>/dev/null) || h_nproc=
	h_load=
	[ -r /proc/loadavg ] && read -r h_load rest </proc/loadavg && h_load="$h_load ${rest% * *}"
	h_mem_total= h_mem_avail=
	if [ -r /proc/meminfo ]; then
		while read -r k v rest; do
			case $k in
			MemTotal:) h_mem_total=$v ;;
			MemAvailable:) h_mem_avail=$v ;;
			esac
		done </proc/meminfo
	fi
}

# nap SECONDS: sleep without a fork, for the short polls of submit and
# cancel: a read that times out on a pipe nobody writes to.
nap_fd=
nap() {
	if [ -z "$nap_fd" ] && ! exec {nap_fd}<> <(:); then
		nap_fd=
		sleep "$1"
		return 0
	fi
	read -r -t "$1" -u "$nap_fd" _
	return 0
}

# report_error TEXT: one error record, flattened to one field.
report_error() {
	local s=${1//$'\t'/ }
	printf 'error\t%s\n' "${s//$'\n'/ }"
}

# sshq_main ACTION ARGS...: what the command's last line runs.
sshq_main() {
	[ $# -ge 1 ] || die 2 "usage: sshq ACTION ARGS..."
	local action=$1
	shift
	declare -F "cmd_$action" >/dev/null || die 2 "unknown action '$action' (controller and node script disagree?)"
	"cmd_$action" "$@"
}
