# sshq node protocol, v1: the wrapper (action wrapper JOBDIR), which runs a
# job in its tmux session with no controller anywhere: takes its place in
# the queue, waits for its GPUs, runs setup and run (or, for `sshq shell`,
# an interactive shell: shell.sh) within the job's limits, records how it
# ended. Needs lib.sh, lease.sh, sched.sh (the queue: queue_join,
# queue_wait), gangrec.sh, limits.sh, watch.sh and shell.sh; a multi-node
# job's rank, gang.sh too.

# Files in its job directory: meta.sh (identity, from the controller),
# state (lines "STATE unix_ts"), log, exit, gpus, ticket, cancel; and
# reason, cores, log.dropped (limits.sh, watch.sh).
jd= uid= got_signal= wfd= disp_pid=

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
	# A limit can end a shell before run_shell stops its watcher.
	[ -n "${shell_watch_pid:-}" ] && kill -USR1 "$shell_watch_pid" 2>/dev/null
	sweep_leftovers
	limits_end
	rm -f -- "$jd/secrets.sh"
	lease_end
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
	local u cvd

	[ -n "${SSHQ_M_GANG:-}" ] && gang_start
	# A job asking for GPUs waits for them in the node's queue (sched.sh).
	if [ "$ngpus" -gt 0 ]; then
		queue_join || finish FAILED_SETUP 3
		set_state PENDING
		if [ -n "${SSHQ_M_GANG:-}" ]; then
			# A node short of disk keeps the rank waiting, in its place.
			wait_disk
			gang_wait
		else
			queue_wait
		fi
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
