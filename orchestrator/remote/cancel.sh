# sshq node protocol, v1: cancel GRACE_MS UID... ends the given jobs: a
# pending job leaves the queue, a running one's processes get SIGTERM, then
# SIGKILL after the grace period; its wrapper records the end. The answer
# ends with the jobs' report (as jobs gives it), so the controller learns
# how they ended in the same command. Needs lib.sh, lease.sh, sched.sh,
# gangrec.sh and jobs.sh.

cmd_cancel() {
	local grace=$1 uid jd st deadline any round p spare
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
		# it is killed (its records go with its keeper).
		if [ ! -f "$jd/exit" ]; then
			rm -f -- "$jd/secrets.sh" "$jd/ticket"
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
	report_jobs "$@"
	printf 'SSHQ-END\n'
}
