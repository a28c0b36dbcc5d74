# sshq node protocol, v1: logs UID TAIL FOLLOW prints a job's log. Needs
# lib.sh.

# cmd_logs UID TAIL FOLLOW: the last TAIL lines (all when negative); with
# FOLLOW=1 keep printing what the job appends until its exit record appears,
# then exit with the job's exit code. Exit 125 when the job is unknown or
# ended without an exit record (LOST).
cmd_logs() {
	local uid=$1 n=$2 follow=$3 jd log size new start rc dropped=0
	# What a chatty .bashrc printed before this line is not the log.
	printf '\nSSHQ-LOG\n'
	valid_uid "$uid" || die 125 "invalid job uid"
	jd=$jobs_dir/$uid
	[ -d "$jd" ] || die 125 "no job $uid on this node"
	log=$jd/log
	[ -f "$log" ] || : >>"$log"
	case $n in '' | *[!0-9-]*) n=-1 ;; esac
	# Print up to a fixed size, so following from that size neither loses
	# nor repeats a byte appended meanwhile.
	size=$(stat -c %s -- "$log")
	log_dropped
	if [ "$n" -lt 0 ] || [ "$size" -le 8388608 ]; then
		start=0
	else
		start=$((size - 8388608)) # the last lines of a huge log live at its end
	fi
	# The log's cap punched its first bytes out (watch.sh): they read as
	# zeros, and are not printed.
	if [ "$start" -lt "$dropped" ]; then
		start=$dropped
		[ "$n" -lt 0 ] && printf 'sshq: the first %s bytes of this log were dropped: it passed its cap (SSHQ_LOG_CAP)\n' "$dropped"
	fi
	if [ "$n" -lt 0 ] && [ "$start" = 0 ]; then
		head -c "$size" -- "$log"
	elif [ "$n" -lt 0 ]; then
		tail -c +$((start + 1)) -- "$log" | head -c $((size - start))
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
		log_dropped
		if [ "$new" -lt "$size" ]; then
			# Rewritten by the cap where it cannot punch: go on from its start.
			size=0
		fi
		if [ "$size" -lt "$dropped" ]; then
			printf 'sshq: %s bytes of output were dropped here: the log passed its cap (SSHQ_LOG_CAP)\n' $((dropped - size))
			size=$dropped
		fi
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

# log_dropped: how many of the log's first bytes its cap dropped.
log_dropped() {
	dropped=0
	[ -f "$jd/log.dropped" ] && read -r dropped <"$jd/log.dropped"
	case $dropped in '' | *[!0-9]*) dropped=0 ;; esac
}
