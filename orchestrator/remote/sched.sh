# sshq node protocol, v1: the queue's view of the GPUs and its one rule,
# shared by the wrapper (try_start), the launch probe (cmd_place) and the
# status report. Needs lib.sh.

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
declare -A gpu_idx gpu_name gpu_state owner foreign_pids bad_lock user_of
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

# gpu_use finds out, for the GPUs of gpu_list, which are in use:
# gpu_state[uuid] = free | leased | foreign | unusable, owner[uuid] (the raw
# owner record of a held lease), foreign_pids[uuid], bad_lock[uuid] (why a
# GPU is unusable) and user_of[pid] for the processes nvidia-smi lists
# (apps_raw and apps_rc keep its answer). A GPU is free when no lease holds
# it and no process computes on it. A process on a GPU is foreign unless it
# belongs to that GPU's own lease holder: one of a job that strays off its
# lease (NVML, a container given every GPU, a reset CUDA_VISIBLE_DEVICES)
# occupies the GPU it uses like any other, or two jobs would share it.
# Returns 2 with gpu_err set when which processes use the GPUs is not known
# (gpu_state then comes from the leases alone): no GPU may then be taken as
# free. Must run under queue.lock: probing a lease's lock must never make a
# waiter's try-lock fail; with "nolocks" (a report that could not take
# queue.lock) the leases are not looked at.
apps_raw= apps_rc=0
gpu_use() {
	local nolocks=${1:-} uuid idx f rec apps pid rest
	gpu_state=() owner=() foreign_pids=() bad_lock=() user_of=()
	apps_raw= apps_rc=0
	for uuid in ${gpu_uuids[@]+"${gpu_uuids[@]}"}; do
		idx=${gpu_idx[$uuid]}
		f=$lease_dir/$uuid.lock
		if [ -z "$nolocks" ] && { [ -e "$f" ] || [ -L "$f" ]; }; then
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
	done

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

# probe_gpus is gpu_list then gpu_use: 0 when every GPU's state is known, 1
# when the GPUs are not (gpu_err), 2 when their processes are not.
probe_gpus() {
	gpu_list || return 1
	gpu_use
}

# in_holder_tree PID OWNER_RECORD: PID is one of the lease holder's own
# processes. It is when it shares the wrapper's session (tmux made the
# wrapper a session leader), descends from the wrapper, or (for our own
# processes, whose environ we may read) carries the holder's SSHQ_JOB_UID
# mark. Uses ppid_of/sid_of of gpu_use.
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

# plan ME NEED ALLOWED: the queue's rule, for a job asking NEED GPUs that
# ALLOWED accepts whose ticket is the ME-th (0-based) of read_tickets, or
# the number of tickets for a job that has none yet. avail holds the GPUs
# free now, in index order. FIFO by ticket with safe backfill: walking the
# queue from the head, each older waiter that fits in what is free reserves
# its GPUs first (taking, where it can, GPUs this job cannot use); a head
# that does not fit reserves every free GPU it could use. The job fits only
# in what remains. So a younger job passes an older one only with GPUs left
# over after the head's request, and the head is never delayed. Returns 0
# with picked set when the job fits; avail is left holding what the older
# waiters did not reserve.
plan() {
	local me=$1 need=$2 allowed=$3 i u
	for ((i = 0; i < me; i++)); do
		if pick "${t_n[$i]}" "${t_allowed[$i]}" "$allowed"; then
			take_from_avail
		elif [ $i = 0 ]; then
			picked=()
			for u in ${avail[@]+"${avail[@]}"}; do
				allowed_has "${t_allowed[0]}" "$u" && picked+=("$u")
			done
			take_from_avail
		fi
	done
	pick "$need" "$allowed" ''
}

# free_gpus puts the GPUs gpu_use found free into avail, in index order.
free_gpus() {
	local u
	avail=()
	for u in ${gpu_uuids[@]+"${gpu_uuids[@]}"}; do
		[ "${gpu_state[$u]}" = free ] && avail+=("$u")
	done
}

# ---------------------------------------------------------------- running jobs

# Every job that runs (from the moment it starts until it ends, with or
# without GPUs) has a record in $lease_dir/running/<uid>, "uid id user name
# num_gpus since", which its wrapper flocks while it lives (its processes
# inherit the lock, as they do the leases). A record nobody holds is stale
# and skipped. The record is another user's file: its fields are checked,
# and whose job it is comes from the file's owner, never from its text.

# read_running lists the live records into r_uid/r_id/r_user/r_name/r_n/
# r_since/r_login; stale ones of this user are removed.
declare -a r_uid r_id r_user r_name r_n r_since r_login
read_running() {
	local f u id us jn n si rest
	local -a files=()
	r_uid=() r_id=() r_user=() r_name=() r_n=() r_since=() r_login=()
	for f in "$lease_dir"/running/*; do
		[ -f "$f" ] && [ ! -L "$f" ] || continue
		if lock_free "$f"; then
			[ -O "$f" ] && rm -f -- "$f" 2>/dev/null
			continue
		fi
		u= id= us= jn= n= si=
		IFS=$tab read -r u id us jn n si rest <"$f" 2>/dev/null
		valid_uid "$u" || continue
		case $id in '' | *[!0-9]*) id='~' ;; esac
		case $n in '' | *[!0-9]*) n=0 ;; esac
		case $si in '' | *[!0-9.]*) si='~' ;; esac
		field_ok "$us" || us='~'
		field_ok "$jn" || jn='~'
		files+=("$f")
		r_uid+=("$u") r_id+=("$id") r_user+=("$us") r_name+=("$jn") r_n+=("$n") r_since+=("$si")
	done
	[ ${#files[@]} -gt 0 ] || return 0
	# One stat for all; per file only when one vanished meanwhile.
	local -a owners=()
	mapfile -t owners < <(stat -c %U -- "${files[@]}" 2>/dev/null)
	if [ ${#owners[@]} -ne ${#files[@]} ]; then
		owners=()
		for f in "${files[@]}"; do
			owners+=("$(stat -c %U -- "$f" 2>/dev/null)")
		done
	fi
	for f in "${owners[@]}"; do
		enc "$f"
		r_login+=("$enc_out")
	done
}

# field_ok FIELD: FIELD is as EncodeField writes them, so it can reach
# nobody's terminal as anything but text.
field_ok() {
	case $1 in '' | *[!A-Za-z0-9._%~-]*) return 1 ;; esac
}
