# sshq node protocol, v1: jobs UID... reports the given jobs (liveness,
# state history, exit code, GPUs, place in the queue, the reason it waits
# or a limit ended it, its cores). Needs lib.sh, lease.sh, sched.sh and
# gangrec.sh. Cancel ends its answer with the same report.

cmd_jobs() {
	printf 'SSHQ-BEGIN %s\n' "$SSHQ_PROTO"
	report_jobs "$@"
	printf 'SSHQ-END\n'
}

# report_jobs UID...: the records of the given jobs.
report_jobs() {
	local uid jd alive tm st ts rc idx u tn i rs
	local -A pos_of=()
	# The queue is read only when a job of these waits in it.
	for uid in "$@"; do
		valid_uid "$uid" && [ -f "$jobs_dir/$uid/ticket" ] || continue
		lease_where
		lease_scan all clean
		for i in "${!t_name[@]}"; do pos_of[${t_name[$i]}]=$((i + 1)); done
		break
	done
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
		# The job may start (and its ticket go) while we look.
		tn=
		[ -f "$jd/ticket" ] && read -r tn <"$jd/ticket" 2>/dev/null
		[ -n "$tn" ] && [ -n "${pos_of[$tn]:-}" ] && printf 'queue\t%s\t%s\n' "$uid" "${pos_of[$tn]}"
		# Why it waits or how a limit ended it, and the cores it is
		# pinned to (limits.sh, watch.sh).
		if [ -s "$jd/reason" ] && IFS= read -r rs <"$jd/reason"; then
			enc "$rs"
			printf 'reason\t%s\t%s\n' "$uid" "$enc_out"
		fi
		if [ -s "$jd/cores" ] && read -r rs <"$jd/cores"; then
			case $rs in '' | *[!0-9,-]*) ;; *) printf 'cores\t%s\t%s\n' "$uid" "$rs" ;; esac
		fi
		gang_report_job "$uid" "$jd" # a rank of a multi-node job: gangrec.sh
	done
}
