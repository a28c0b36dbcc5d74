# sshq node protocol, v1: the queue's view of the GPUs and its one rule,
# shared by the wrapper (queue_wait), the launch probe (cmd_place) and the
# status report, and the wrapper's side of the queue. Needs lib.sh and
# lease.sh.

# ---------------------------------------------------------------- GPUs

# gpu_list asks the driver which GPUs there are (gpu_query) and fills
# gpu_uuids (index order), gpu_idx[uuid] and gpu_name[uuid]; gpu_raw,
# gpu_rc and gpu_fields keep nvidia-smi's own answer for the status report.
# Returns 1 with gpu_err set when nvidia-smi cannot list the GPUs (no GPU is
# then known, whatever the lines it printed: the queue never guesses), with
# gpu_missing set when there is no nvidia-smi at all. Starts the probe's
# deadline (probe_begin).
gpu_err= gpu_missing= gpu_raw= gpu_rc=0
declare -a gpu_uuids
declare -A gpu_idx gpu_name gpu_state owner foreign_pids user_of
gpu_list() {
	local idx uuid name rest ok=0
	gpu_uuids=() gpu_idx=() gpu_name=()
	gpu_err= gpu_missing= gpu_raw= gpu_rc=0
	probe_begin
	if ! command -v nvidia-smi >/dev/null 2>&1; then
		gpu_missing=1
		gpu_err="nvidia-smi not found on PATH ($PATH)"
		return 1
	fi
	gpu_query || ok=1
	gpu_raw=$smi_out gpu_rc=$smi_rc
	while IFS=, read -r idx uuid name rest; do
		idx=${idx//[[:space:]]/}
		uuid=${uuid//[[:space:]]/}
		case $idx in '' | *[!0-9]*) continue ;; esac
		# MIG or odd ids are skipped: a uuid names a lock file.
		case $uuid in '' | *[!A-Za-z0-9_-]*) continue ;; esac
		name=${name#"${name%%[! ]*}"}
		gpu_uuids+=("$uuid")
		gpu_idx[$uuid]=$idx
		gpu_name[$uuid]=${name%"${name##*[! ]}"}
	done <<<"$gpu_raw"
	if [ $ok = 1 ]; then
		gpu_err=$smi_err
		return 1
	fi
}

# gpu_leases sets, for the GPUs of gpu_list, gpu_state[uuid] = free or
# leased and owner[uuid] (the holder as in_holder_tree and status read it:
# uid id user name since pid sid index login) from the live records
# lease_scan read, and from the leases of the previous version's wrappers
# (a flock on <lease dir>/<uuid>.lock, its holder in <uuid>.owner), so that
# jobs started before an upgrade keep their GPUs.
gpu_leases() {
	local uuid i f u id us jn si pid sid rest dev maj min
	local -a old=()
	local -A held_old=()
	gpu_state=() owner=() foreign_pids=() user_of=()
	for uuid in ${gpu_uuids[@]+"${gpu_uuids[@]}"}; do
		i=${leased_by[$uuid]:-}
		if [ -z "$i" ]; then
			gpu_state[$uuid]=free
			f=$lease_dir/$uuid.lock
			[ -f "$f" ] && [ ! -L "$f" ] && [ ! -L "$lease_dir" ] && old+=("$f")
			continue
		fi
		gpu_state[$uuid]=leased
		owner[$uuid]="${r_uid[$i]}$tab${r_id[$i]}$tab${r_user[$i]}$tab${r_name[$i]}$tab${r_since[$i]}$tab${r_pid[$i]:-~}$tab${r_sid[$i]:-~}$tab${gpu_idx[$uuid]}$tab${r_login[$i]}"
	done
	[ ${#old[@]} -gt 0 ] || return 0
	[ -n "$scan_locks" ] || locks_read
	while read -r dev i f; do
		maj=$(((dev >> 8) & 0xfff | (dev >> 32) & ~0xfff))
		min=$((dev & 0xff | (dev >> 12) & ~0xff))
		printf -v i '%02x:%02x:%s' "$maj" "$min" "$i"
		lock_live "$i" && held_old[$f]=1
	done < <(stat -c '%d %i %n' -- "${old[@]}" 2>/dev/null)
	for f in "${!held_old[@]}"; do
		uuid=${f##*/}
		uuid=${uuid%.lock}
		gpu_state[$uuid]=leased
		u= id= us= jn= si= pid= sid= rest= lg=
		f=${f%.lock}.owner
		[ -f "$f" ] && [ ! -L "$f" ] &&
			IFS=$tab read -r u id us jn si pid sid rest < <(grep -D skip -a -s -m1 -e '' -- "$f")
		valid_uid "$u" || u='~'
		case $id in '' | *[!0-9]*) id='~' ;; esac
		field_ok "$us" || us='~'
		field_ok "$jn" || jn='~'
		case $si in '' | *[!0-9.]*) si='~' ;; esac
		# Who wrote a shared owner file is not known: no login.
		owner[$uuid]="$u$tab$id$tab$us$tab$jn$tab$si$tab${pid:-~}$tab${sid:-~}$tab${gpu_idx[$uuid]}$tab~"
	done
}

# gpu_procs asks the driver which processes compute on which GPU: a free
# GPU that one uses becomes foreign (foreign_pids[uuid]), and user_of[pid]
# names the owners of those processes (apps_raw and apps_rc keep its
# answer). A process on a GPU is foreign unless it belongs to that GPU's
# own lease holder: one of a job that strays off its lease (NVML, a
# container given every GPU, a reset CUDA_VISIBLE_DEVICES) occupies the GPU
# it uses like any other, or two jobs would share it. Returns 2 with gpu_err
# set when which processes use the GPUs is not known: no GPU may then be
# taken as free.
apps_raw= apps_rc=0
gpu_procs() {
	local uuid pid rest apps
	apps_raw= apps_rc=0
	# Not knowing which processes compute where is not "none": a GPU a
	# foreign process uses would be handed out.
	if ! apps_query; then
		apps_raw=$smi_out apps_rc=$smi_rc
		gpu_err="$smi_err; sshq cannot tell which GPUs other processes use"
		return 2
	fi
	apps_raw=$smi_out apps_rc=$smi_rc
	apps=$smi_out
	[ -n "${apps//[[:space:]]/}" ] || return 0
	# One ps for the whole table: ancestry, session and owner of every
	# process (procps before 3.3 knows no user:64).
	if ! bounded $((probe_deadline - SECONDS)) ps -e -o pid= -o ppid= -o sid= -o user:64= &&
		! bounded $((probe_deadline - SECONDS)) ps -e -o pid= -o ppid= -o sid= -o user=; then
		gpu_err="ps -e failed or did not answer in time: ${bounded_out//$'\n'/ }"
		return 2
	fi
	local -A ppid_of sid_of
	local p pp s us
	while read -r p pp s us; do
		case $p in '' | *[!0-9]*) continue ;; esac
		ppid_of[$p]=$pp
		sid_of[$p]=$s
		user_of[$p]=$us
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

# probe_gpus is lease_scan (done by the caller), gpu_list, gpu_leases and
# gpu_procs: 0 when every GPU's state is known, 1 when the GPUs are not
# (gpu_err), 2 when their processes are not.
probe_gpus() {
	gpu_list || return 1
	gpu_leases
	gpu_procs
}

# in_holder_tree PID OWNER_RECORD: PID is one of the lease holder's own
# processes. It is when it shares the wrapper's session (tmux made the
# wrapper a session leader), descends from the wrapper, or (for our own
# processes, whose environ we may read) carries the holder's SSHQ_JOB_UID
# mark. Uses ppid_of/sid_of of gpu_procs.
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

# plan ME NEED ALLOWED: the queue's rule, for a job asking NEED GPUs that
# ALLOWED accepts whose ticket is the ME-th (0-based) of the waiting records
# (t_*), or the number of them for a job that has none yet. avail holds the
# GPUs free now, in index order. FIFO by ticket with safe backfill: walking
# the queue from the head, each older waiter that fits in what is free
# reserves its GPUs first (taking, where it can, GPUs this job cannot use);
# a head that does not fit reserves every free GPU it could use. The job
# fits only in what remains. So a younger job passes an older one only with
# GPUs left over after the head's request, and the head is never delayed.
# Waiters are other users' records, so two kinds are passed over: one that
# can never fit (more GPUs than the node has of those it may use: it holds
# nothing), and, with plan_watch set (a waiter deciding), one this waiter
# has seen fit, poll after poll, for longer than a poll interval and a
# second without taking its GPUs (its wrapper is not deciding: it must not
# hold the queue; see fit_stale).
# Returns 0 with picked set when the job fits; avail is left holding what
# the older waiters did not reserve.
declare -A fit_first=() fit_seq=() fit_n=()
plan_watch= poll_seq=0

# fit_stale TICKET GRACE: this waiter has seen TICKET fit in every one of
# its own polls for over GRACE ms, and in at least three of them. A
# sighting counts only if the poll before saw it too: a ticket that fitted
# for a moment (a GPU seen free while a wiped record was being written
# back) and then waited behind a running job starts afresh. Counting our
# own polls, not only the clock, keeps a loaded node (where every waiter is
# slow, the head's too) from passing a head that is deciding.
fit_stale() {
	local t=$1
	case ${fit_seq[$t]:-} in
	"$poll_seq") ;;
	"$((poll_seq - 1))")
		fit_seq[$t]=$poll_seq
		fit_n[$t]=$((fit_n[$t] + 1))
		;;
	*)
		fit_seq[$t]=$poll_seq fit_first[$t]=$now_ms fit_n[$t]=1
		;;
	esac
	[ $((now_ms - fit_first[$t])) -gt "$2" ] && [ "${fit_n[$t]}" -ge 3 ]
}
plan() {
	local me=$1 need=$2 allowed=$3 i
	plan_begin
	for ((i = 0; i < me; i++)); do
		plan_step "$i" "$allowed"
	done
	pick "$need" "$allowed" ''
}

# plan_begin and plan_step I ALLOWED are plan's walk, one waiter at a time:
# ticket I of t_* takes its turn, for a job that ALLOWED accepts.
plan_head= plan_grace=0
plan_begin() {
	plan_head=1
	to_ms "$poll"
	plan_grace=$((ms_val + 1000))
	ms_now
}
plan_step() {
	local i=$1 u e=0
	for u in ${gpu_uuids[@]+"${gpu_uuids[@]}"}; do
		allowed_has "${t_allowed[$i]}" "$u" && e=$((e + 1))
	done
	[ "${t_n[$i]}" -le $e ] || return 0
	if pick "${t_n[$i]}" "${t_allowed[$i]}" "$2"; then
		if [ "$plan_watch" = watch ] && fit_stale "${t_name[$i]}" "$plan_grace"; then
			return 0
		fi
		take_from_avail
	else
		[ "$plan_watch" = watch ] && unset "fit_seq[${t_name[$i]}]"
		if [ -n "$plan_head" ]; then
			picked=()
			for u in ${avail[@]+"${avail[@]}"}; do
				allowed_has "${t_allowed[$i]}" "$u" && picked+=("$u")
			done
			take_from_avail
		fi
	fi
	plan_head=
}

# avail_short NEED ALLOWED: fewer than NEED GPUs that ALLOWED accepts are
# left in avail. plan only ever takes GPUs out of avail, so a job for which
# it is short cannot fit, whatever the waiters after.
avail_short() {
	local u n=0
	for u in ${avail[@]+"${avail[@]}"}; do
		allowed_has "$2" "$u" && n=$((n + 1))
	done
	[ $n -lt "$1" ]
}

# free_gpus puts the GPUs found free into avail, in index order.
free_gpus() {
	local u
	avail=()
	for u in ${gpu_uuids[@]+"${gpu_uuids[@]}"}; do
		[ "${gpu_state[$u]}" = free ] && avail+=("$u")
	done
}

# ---------------------------------------------------------------- waiting

# The wrapper's side of the queue (action wrapper; uses its uid, jd,
# ngpus, allowed, jlog and finish). A job asking for GPUs joins (queue_join:
# its lock and keeper, its waiting record w.<ns>.<job>) and waits
# (queue_wait), deciding every poll interval with no lock of any kind: it
# reads the running records, and only when a GPU it may use is free of
# them the queue and the driver too. To start it claims: it writes its
# running record naming the GPUs (r.<job>), waits `settle` (long enough
# for any keeper to have written back a record someone deleted), and reads
# the running records again. Two claims of one GPU cannot both see nothing,
# since each reads after it wrote: the younger withdraws at once, the older
# after a second settle unless the younger has gone, so one wins. A job
# asking for no GPU writes only a running record, for status.
ticket= since= my_sid= never= last_err=
declare -a leased=()

# rec_write KIND NAME [GPUS]: this job's record, also kept in the job
# directory for the keeper to write back.
rec_write() {
	local line
	printf -v line '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$1" "$uid" "$SSHQ_M_ID" "$SSHQ_M_USER" \
		"$SSHQ_M_NAME" "$ngpus" "$since" "$allowed" "${3:--}" "$$" "${my_sid:-~}" "$my_lock"
	if ! printf '%s\n' "$line" >"$jd/rec.$1"; then
		lease_err="cannot write $jd/rec.$1 (is the file system full?)"
		return 1
	fi
	rec_put "$2" "$line" || return 1
	keeper_tell "rec $2"
}

note_err() {
	[ "$1" != "$last_err" ] && jlog "$1"
	last_err=$1
}

queue_join() {
	local fit=0 u ns
	my_sid=$(ps -o sid= -p $$ 2>/dev/null) || my_sid=
	my_sid=${my_sid// /}
	if ! lease_where || ! keeper_start; then
		jlog "$lease_err"
		return 1
	fi
	probe_begin
	if ! gpu_list; then
		jlog "$gpu_err"
		return 1
	fi
	for u in ${gpu_uuids[@]+"${gpu_uuids[@]}"}; do allowed_has "$allowed" "$u" && fit=$((fit + 1)); done
	if [ $fit -lt "$ngpus" ]; then
		jlog "the job needs $ngpus GPU(s) but this node has only $fit it may use; it can never start here"
		return 1
	fi
	since=$(now)
	# Nanoseconds, 19 digits: the queue's order is the names' byte order.
	ns=${EPOCHREALTIME:-}
	ns=${ns//[!0-9]/}
	if [ ${#ns} -eq 16 ]; then ns=${ns}000; else ns=$(date +%s%N); fi
	ticket=w.$ns.$uid
	# A multi-node job's ticket is ordered by its gang's key ("<ns>-<uid>",
	# the controller's clock) on every node (gang.sh).
	case ${SSHQ_M_GANG:-} in [0-9]*-*) ns=${SSHQ_M_GANG%%-*} && [ ${#ns} = 19 ] && ticket=w.$ns.$uid ;; esac
	if ! rec_write w "$ticket"; then
		jlog "$lease_err"
		return 1
	fi
	if ! printf '%s\n' "$ticket" >"$jd/ticket"; then
		jlog "cannot write $jd/ticket (is the file system full?)"
		return 1
	fi
}

queue_wait() {
	local noted= fast
	# The first few in line look every guard tick, so that a GPU freed is
	# taken at once; the others every poll interval, which costs them
	# nothing while nothing changes (lease_view_run).
	to_ms "$poll"
	fast=$ms_val
	to_ms "$guard_tick"
	[ "$ms_val" -lt "$fast" ] && fast=$guard_tick || fast=$poll
	while :; do
		if cancelled || [ -n "$got_signal" ]; then finish CANCELLED 143; fi
		try_start && return 0
		if [ -n "$never" ]; then
			jlog "$never"
			printf '%s\n' "$never" >"$jd/reason"
			finish FAILED_SETUP 3
		fi
		if [ -z "$noted" ]; then
			jlog "waiting for $ngpus GPU(s) in the node's queue"
			noted=1
		fi
		if [ "$q_pos" -lt "$q_fit" ]; then nap "$fast"; else nap "$poll"; fi
	done
}

# try_start: one decision, by the queue's rule (plan); claims the GPUs it
# picks. Sets never when the node no longer has the GPUs the job asks for.
# While no GPU it may use is free of running records (lease_view_run) it
# reads no record and asks the driver only every 30s, for the list of GPUs;
# then it reads the tickets ahead of its own, in queue order, only as far
# as the GPUs free now are spoken for (plan_ahead), and asks the driver
# which GPUs are in use. Its place in the queue (q_pos: the waiting records
# whose names sort before its ticket, live or not) is counted by name when
# it decides, and after a records directory changed, if it is near the
# head (or at most every 10s): it says how often to look.
gpu_asked=-999 q_fit=0
try_start() {
	local u fit=0 free=
	poll_seq=$((poll_seq + 1))
	lease_view_run
	if [ -n "$scan_unknown" ]; then
		note_err "${scan_errs[0]}; still waiting"
		return 1
	fi
	probe_begin
	if [ $((SECONDS - gpu_asked)) -ge 30 ]; then
		if ! gpu_list; then
			note_err "$gpu_err; still waiting"
			return 1
		fi
		gpu_asked=$SECONDS
	fi
	for u in ${gpu_uuids[@]+"${gpu_uuids[@]}"}; do
		allowed_has "$allowed" "$u" || continue
		fit=$((fit + 1))
		[ -n "${leased_by[$u]+x}" ] || free=1
	done
	q_fit=$fit
	if [ -n "$view_changed" ] && [ "$q_gen" != "$view_gen" ] &&
		{ [ "$q_pos" -le $((4 * fit + 4)) ] || [ $((SECONDS - q_pos_at)) -ge 10 ]; }; then
		queue_ahead
	fi
	[ -n "$free" ] || [ $fit -lt "$ngpus" ] || return 1
	# A GPU it may use looks free: the driver's present answer, every
	# record's lock, and the tickets ahead.
	if ! gpu_list; then
		note_err "$gpu_err; still waiting"
		return 1
	fi
	gpu_asked=$SECONDS
	fit=0 free=
	view_build check
	for u in ${gpu_uuids[@]+"${gpu_uuids[@]}"}; do
		allowed_has "$allowed" "$u" || continue
		fit=$((fit + 1))
		[ -n "${leased_by[$u]+x}" ] || free=1
	done
	q_fit=$fit
	if [ $fit -lt "$ngpus" ]; then
		never="never fits: the job needs $ngpus GPU(s) but this node now has only $fit it may use (nvidia-smi lists ${#gpu_uuids[@]}); launch it again to place it elsewhere"
		return 1
	fi
	[ -n "$free" ] || return 1
	[ "$q_gen" = "$view_gen" ] || queue_ahead
	queue_parked
	gpu_leases
	free_gpus
	plan_watch=watch
	plan_ahead || return 1
	if ! gpu_procs; then
		note_err "$gpu_err; still waiting"
		return 1
	fi
	free_gpus
	plan_ahead || return 1
	# A node short of disk keeps the job waiting, in its place (limits.sh):
	# asked (df) only when the job would start.
	disk_ok || return 1
	claim
}

# queue_ahead: the waiting records whose names sort before this job's
# ticket, in queue order (q_ahead, their paths; q_pos, their number), from
# the names alone: a glob of each records directory the view reads (no
# fork, no record read).
declare -a q_ahead=()
q_pos=999999 q_pos_at=-999 q_gen=-1
queue_ahead() {
	local d lo hi mid dirs=0
	local -a names
	q_ahead=()
	for d in ${vr_dirs[@]+"${vr_dirs[@]}"}; do
		names=("$d"/w.*)
		[ -e "${names[0]}" ] || [ -L "${names[0]}" ] || continue
		# Globs sort as the queue does (LC_ALL=C): halve to the ticket.
		lo=0 hi=${#names[@]}
		while [ $lo -lt $hi ]; do
			mid=$(((lo + hi) / 2))
			if [[ ${names[mid]##*/} < $ticket ]]; then lo=$((mid + 1)); else hi=$mid; fi
		done
		[ $lo -gt 0 ] || continue
		q_ahead+=("${names[@]:0:lo}")
		dirs=$((dirs + 1))
	done
	if [ $dirs -gt 1 ]; then
		# Several users' waiters: merge by name. Names sshq makes hold no
		# tab or newline; others are no waiters.
		local f
		local -a keyed=()
		for f in "${q_ahead[@]}"; do
			case ${f##*/} in *[$'\t\n']*) ;; *) keyed+=("${f##*/}"$'\t'"$f") ;; esac
		done
		mapfile -t q_ahead < <(printf '%s\n' "${keyed[@]}" | sort -t $'\t' -k1,1 | cut -f2-)
	fi
	q_pos=${#q_ahead[@]} q_pos_at=$SECONDS q_gen=$view_gen
}

# q_load FILE...: the waiting records not read yet into q_rec
# ("uid|n|allowed|lock", empty for one sshq would not count), with one
# grep. A waiting record is never rewritten but with the same line (its
# name holds its job), so what was read stays true while the file exists.
declare -A q_rec=()
q_load() {
	local f line
	local -a want=()
	for f in "$@"; do
		[ -n "${q_rec[$f]+x}" ] && continue
		want+=("$f")
		q_rec[$f]=
	done
	[ ${#want[@]} -gt 0 ] || return 0
	while IFS= read -r -d '' f && IFS= read -r line; do
		rec_check "$f" "$line" && [ "$rc_k" = w ] && q_rec[$f]="$rc_u|$rc_n|$rc_al|$rc_lk"
	done < <(grep -D skip -a -s -m1 -H -Z -e '' -- "${want[@]}")
}

# queue_parked: the uids whose multi-node ranks are parked (q_parked): they
# keep their place but ask for nothing (gangrec.sh). Only a node with such
# records pays for reading them.
declare -A q_parked=()
queue_parked() {
	local d f i any=
	q_parked=()
	declare -F read_gangs >/dev/null || return 0
	for d in ${vr_dirs[@]+"${vr_dirs[@]}"}; do
		for f in "$d"/g.*; do
			[ -f "$f" ] && any=1 && break 2
		done
	done
	[ -n "$any" ] || return 0
	read_gangs
	for i in "${!g_uid[@]}"; do
		[ "${g_mode[$i]}" = park ] && q_parked[${g_uid[$i]}]=1
	done
}

# plan_ahead: plan for this job over the tickets ahead of it (q_ahead), in
# order, skipping those that are dead, starting (their running record is
# live) or parked, and read a few at a time (q_load): it stops as soon as
# what is left free cannot hold the job (avail_short), so a decision reads
# the records of the waiters that take the free GPUs, not the whole queue.
plan_ahead() {
	local i=0 n=${#q_ahead[@]} chunk=8 f rec u r
	local -a ch
	t_name=() t_uid=() t_user=() t_jname=() t_n=() t_since=() t_allowed=() t_login=()
	[ ${#q_rec[@]} -le $((4 * n + 256)) ] || q_rec=()
	plan_begin
	while [ $i -lt $n ]; do
		ch=("${q_ahead[@]:i:chunk}")
		q_load "${ch[@]}"
		for f in "${ch[@]}"; do
			rec=${q_rec[$f]}
			[ -n "$rec" ] || continue
			if ! lock_live "${rec##*|}"; then
				q_rec[$f]=
				[ "${f%/*}" = "$my_dir" ] && rm -f -- "$f" 2>/dev/null
				continue
			fi
			u=${rec%%|*} r=${rec#*|}
			[ -z "${vr_live_uid[$u]:-}" ] && [ -z "${q_parked[$u]:-}" ] || continue
			t_name+=("${f##*/}") t_uid+=("$u") t_n+=("${r%%|*}")
			r=${r#*|}
			t_allowed+=("${r%%|*}")
			t_user+=('~') t_jname+=('~') t_since+=('~') t_login+=('~')
			plan_step $((${#t_name[@]} - 1)) "$allowed"
			avail_short "$ngpus" "$allowed" && return 1
		done
		i=$((i + chunk)) chunk=$((chunk * 4))
	done
	pick "$ngpus" "$allowed" ''
}

# claim: make picked this job's, or withdraw (see above).
claim() {
	local i g round conflict older gl=${picked[*]}
	gl=${gl// /,}
	if ! rec_write r "r.$uid" "$gl"; then
		note_err "$lease_err; still waiting"
		return 1
	fi
	for round in 1 2; do
		nap "$settle"
		lease_scan run
		conflict= older=
		# Records that cannot be read may claim these GPUs.
		[ -n "$scan_unknown" ] && break
		for i in "${!r_uid[@]}"; do
			[ "${r_uid[$i]}" = "$uid" ] && continue
			for g in ${r_gpus[$i]//,/ }; do
				case ",$gl," in *",$g,"*) ;; *) continue ;; esac
				conflict=1
				if [[ ${r_since[$i]} < $since ]] || { [ "${r_since[$i]}" = "$since" ] && [[ ${r_uid[$i]} < $uid ]]; }; then
					older=1
				fi
			done
		done
		if [ -z "$conflict" ]; then
			rec_drop "$ticket"
			rm -f -- "$jd/ticket"
			ticket=
			leased=("${picked[@]}")
			return 0
		fi
		[ -n "$older" ] && break
	done
	rec_drop "r.$uid"
	keeper_tell "rec $ticket"
	return 1
}

# record_running: a job without GPUs has no record yet: it gets one, for
# status, and runs without one when that fails (the log says why).
record_running() {
	[ "$ngpus" -gt 0 ] && return 0
	since=$(now)
	if ! lease_where || ! keeper_start || ! rec_write r "r.$uid" -; then
		jlog "$lease_err; \`sshq status\` will not show this job"
	fi
	return 0
}

# lease_end: the job's records go; its GPUs with its last process.
lease_end() {
	[ -n "$my_dir" ] && rm -f -- "$my_dir/.cache/ref-$uid" "$my_dir/.cache/ref-$uid.b" 2>/dev/null
	if [ -n "$ticket" ]; then
		rec_drop "$ticket"
		rm -f -- "$jd/ticket"
		ticket=
	fi
	keeper_stop
}
