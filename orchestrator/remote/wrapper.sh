# sshq node protocol, v1: the wrapper (action wrapper JOBDIR), which runs a
# job in its tmux session with no controller anywhere: takes its place in
# the queue, waits for its GPUs, runs setup and run (or, for `sshq shell`,
# an interactive shell: shell.sh) within the job's limits, records how it
# ended. Needs lib.sh, sched.sh, gangrec.sh, limits.sh, watch.sh and
# shell.sh; a multi-node job's rank, gang.sh too.

# Files in its job directory: meta.sh (identity, from the controller),
# state (lines "STATE unix_ts"), log, exit, gpus, ticket, cancel; and
# reason, cores, log.dropped (limits.sh, watch.sh).
jd= uid= got_signal= ticket= tfd= wfd= rfd= running= my_login= disp_pid=
declare -a lease_fds

jlog() { printf 'sshq: %s\n' "$*" >>"$jd/log"; }
set_state() {
	ms_now
	printf '%s %s.%s\n' "$1" "${now_ms:0:${#now_ms}-3}" "${now_ms: -3}" >>"$jd/state"
}

# finish STATE CODE: the job's last word. The exit file is written last and
# atomically: whoever sees it sees the terminal state too. Processes the job
# left behind end first (see sweep_leftovers), so an ended job holds no GPU.
finish() {
	# A rank of a multi-node job may end otherwise (gang.sh).
	[ -n "${SSHQ_M_GANG:-}" ] && gang_finish "$1" "$2" && set -- "$gang_fstate" "$gang_fcode"
	sweep_leftovers
	limits_end
	rm -f -- "$jd/secrets.sh"
	if [ -n "$ticket" ]; then
		rm -f -- "$lease_dir/queue/$ticket"
		rm -f -- "$jd/ticket"
	fi
	[ -n "$running" ] && rm -f -- "$running"
	set_state "$1"
	printf '%s\n' "$2" >"$jd/exit.tmp" && mv -f -- "$jd/exit.tmp" "$jd/exit"
	exit 0
}

# own_pids: the wrapper's own processes, which carry the job's mark but are
# not the job's: itself, the scope's outer wrapper waiting on it, the
# display, a shell's watcher (shell.sh).
own_pids() {
	printf '%s\n' $$ ${disp_pid:+"$disp_pid"} ${gang_pid:+"$gang_pid"} ${shell_watch_pid:+"$shell_watch_pid"}
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
# A rank of a multi-node job that another rank stopped (gang.sh) ends the same
# way, its agent having left gang.cause.
cancelled() { [ -e "$jd/cancel" ] || [ -e "$jd/gang.cause" ]; }

# try_start: one decision, under queue.lock, by the queue's rule (plan);
# leases the chosen GPUs on success.
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
	# Parked ranks of multi-node jobs keep their place but ask for nothing.
	[ -d "$lease_dir/gang" ] && gang_skip_parked
	free_gpus
	for i in "${!t_name[@]}"; do
		[ "${t_name[$i]}" = "$ticket" ] && me=$i && break
	done
	[ $me -ge 0 ] || me=${#t_name[@]} # our ticket vanished: behave as the last
	plan "$me" "$ngpus" "$allowed" || return 1
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

# record_running: the job's record in $lease_dir/running (see read_running),
# made under a temporary name, locked, then renamed, so no reader ever sees
# it unlocked and takes it for a stale one. Its lock fd stays open, and the
# job's processes inherit it. Without a record the job still runs; status
# just cannot count it, and the log says why.
record_running() {
	local d=$lease_dir/running tmp
	if ! ensure_shared_dir "$d"; then
		jlog "$lease_err; \`sshq status\` will not show this job"
		return 0
	fi
	tmp=$d/.new-$uid
	rm -f -- "$tmp" 2>/dev/null
	if ! (
		umask 022
		set -C
		printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$uid" "$SSHQ_M_ID" "$SSHQ_M_USER" "$SSHQ_M_NAME" "$ngpus" "$(now)" >"$tmp"
	) 2>/dev/null || ! exec {rfd}<"$tmp" || ! flock -n "$rfd" || ! mv -f -- "$tmp" "$d/$uid" 2>/dev/null; then
		[ -n "$rfd" ] && exec {rfd}<&-
		rfd=
		rm -f -- "$tmp" 2>/dev/null
		jlog "cannot record this job in $d; \`sshq status\` will not show it"
		return 0
	fi
	running=$d/$uid
}

# run_phase SCRIPT: run a user script with the job's environment in a fresh
# bash. The task's variables are sourced there, not here, so no name a user
# picks can clobber the wrapper's own variables; the wrapper's lock is closed
# for the child so only the wrapper itself marks the job as alive.
run_phase() {
	local wd=$HOME
	[ -d "$jd/workdir" ] && wd=$jd/workdir
	limited "$1" start_script "$1" "$wd"
}

# start_script SCRIPT WD: run_phase's phase, in the background, under the
# limits' prefix; its output goes to the log alone.
start_script() {
	(
		cd "$jd" || exit 1
		[ -n "$nap_fd" ] && exec {nap_fd}<&-
		exec {errfd}>&-
		restore_locale
		exec ${phase_pre[@]+"${phase_pre[@]}"} "$BASH" -c ': >./.phase && . ./env.sh &&
			{ [ ! -f ./secrets.sh ] || . ./secrets.sh; } && . ./gpu.env && cd -- "$1" && exec "$2" "$3"' \
			sshq-phase "$2" "$BASH" "$jd/$1"
	) </dev/null >>"$jd/log" 2>&1 {wfd}<&- &
}

# limited PHASE START ARGS...: a phase (setup.sh, run.sh, or the shell)
# within the job's limits: START ARGS... starts it in the background under
# the prefix its limits ask for (phase_pre: a memory scope, taskset), and
# the wrapper watches it meanwhile (watch.sh). A phase whose prefix could
# not start it (its first act is to touch .phase) runs again without.
# Returns the phase's exit status; a phase a limit ended finishes the job.
limited() {
	local phase=$1
	shift
	limits_begin
	phase_prefix "$phase"
	# bash reports a background job a signal ended ("Killed ...") on its
	# stderr, the pane: not while a phase runs. START finds the pane's
	# stderr in errfd.
	local errfd
	exec {errfd}>&2 2>/dev/null
	while :; do
		rm -f -- "$jd/.phase"
		"$@"
		watch_phase $!
		{ [ ${#phase_pre[@]} -eq 0 ] || [ -e "$jd/.phase" ] || cancelled || [ -n "$got_signal" ]; } && break
		jlog "could not start $phase under: ${phase_pre[*]} (exit $phase_rc); trying without $([ "$lim_mem_mode" = cgroup ] && echo the memory scope || echo taskset)"
		if [ "$lim_mem_mode" = cgroup ]; then
			lim_mem_mode=watchdog
		else
			lim_cores=
			rm -f -- "$jd/cores"
		fi
		phase_prefix "$phase"
	done
	exec 2>&"$errfd" {errfd}>&-
	rm -f -- "$jd/.phase"
	return "$phase_rc"
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
	declare -A warned=()
	declare -a leased=()
	local i u since line cvd noted=

	if ! lease_dir_prepare; then
		jlog "$lease_err"
		finish FAILED_SETUP 3
	fi
	[ -n "${SSHQ_M_GANG:-}" ] && gang_start
	if [ "$ngpus" -gt 0 ]; then
		my_sid=$(ps -o sid= -p $$ 2>/dev/null) || my_sid=
		my_sid=${my_sid// /}
		# The account the job runs as on this node: what status shows as
		# its holder (the controller's own user name may be "root" on every
		# laptop).
		my_login=$(id -un 2>/dev/null) || my_login=
		enc "$my_login"
		my_login=$enc_out
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
		# Nanoseconds, 19 digits, as every version names tickets: the
		# queue's order is their names' byte order.
		name=${EPOCHREALTIME:-}
		name=${name//[!0-9]/}
		if [ ${#name} -eq 16 ]; then name=${name}000; else name=$(date +%s%N); fi
		name=$name-$uid
		# A multi-node job's ticket is named by its gang's key on every node.
		[ -n "${SSHQ_M_GANG:-}" ] && name=$SSHQ_M_GANG
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
			if [ -n "${SSHQ_M_GANG:-}" ]; then
				# A node short of disk keeps the rank waiting, in its place.
				wait_disk
				gang_wait
				break
			fi
			if cancelled || [ -n "$got_signal" ]; then
				exec {tfd}<&-
				finish CANCELLED 143
			fi
			# A node short of disk keeps the job waiting, in its place.
			if disk_ok && queue_lock 60; then
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
		wait_disk
		[ -n "${SSHQ_M_GANG:-}" ] && gang_wait
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
	[ -n "${SSHQ_M_GANG:-}" ] && gang_env >>"$jd/gpu.env"
	[ -n "$cvd" ] && jlog "leased GPU(s) $cvd"
	record_running

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
	if [ -n "${SSHQ_M_SHELL:-}" ]; then
		run_shell # sshq shell: see shell.sh
	else
		run_phase run.sh
	fi
	rc=$?
	if cancelled || [ -e "$jd/idle" ]; then finish CANCELLED "$rc"; fi
	if [ $rc -eq 0 ]; then finish SUCCEEDED 0; fi
	finish FAILED "$rc"
}
