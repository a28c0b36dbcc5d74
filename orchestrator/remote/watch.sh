# sshq node protocol, v1: the watch, by which a job's wrapper holds it to
# its limits while setup, run or a shell runs: --mem, --time, the node's memory
# reserve and the log cap, once a second (see doc.go, "Job limits"). Needs
# lib.sh, sched.sh, limits.sh; the wrapper calls limits_begin (through
# limited, for every phase), watch_phase and limits_end (from finish).
#
# The job's side record l.<uid> in its user's own records directory
# (lease.sh), "uid limit_kib rss_kib cores run|end", flocked by its wrapper
# while it lives; rss is padded to a fixed
# width so each tick rewrites it in place, without a fork.

lim_begun= lim_mem_kib=0 lim_time_s=0 lim_cpus=0 lim_mem_mode=watchdog lim_page_kib=4
lim_t0=0 lim_rss=0 lim_peak=0 lim_dropped=0 lim_rec= lim_fd= lim_end=run
lim_state= lim_code=0 lim_reason= lim_note= lim_kill_at=0 lim_killed= lim_cg= lim_scope=
declare -a phase_pre=()
declare -A lim_termed=()

# limits_begin, before the first phase: the job's limits (meta.sh), the
# node's settings, its shared record and, with --cpus, its cores; the log
# says what holds the job.
limits_begin() {
	local d tmp p what=
	[ -n "$lim_begun" ] && return 0
	lim_begun=1
	[ -n "$lim_settings" ] || limits_settings
	for p in ${lim_warn[@]+"${lim_warn[@]}"}; do jlog "$p"; done
	lim_mem_kib=${SSHQ_M_MEM_KIB:-0} lim_time_s=${SSHQ_M_TIME_S:-0} lim_cpus=${SSHQ_M_CPUS:-0}
	case $lim_mem_kib in '' | *[!0-9]*) lim_mem_kib=0 ;; esac
	case $lim_time_s in '' | *[!0-9]*) lim_time_s=0 ;; esac
	case $lim_cpus in '' | *[!0-9]*) lim_cpus=0 ;; esac
	p=$(getconf PAGESIZE 2>/dev/null) || p=4096
	case $p in '' | *[!0-9]*) p=4096 ;; esac
	lim_page_kib=$((p / 1024))
	if [ "$lim_mem_kib" -gt 0 ]; then
		mem_mechanism
		lim_mem_mode=$mem_mech
	fi
	ms_now
	lim_t0=$now_ms
	if [ "$lim_cpus" -gt 0 ]; then
		if ! command -v taskset >/dev/null 2>&1; then
			jlog "--cpus $lim_cpus: taskset (util-linux) is not installed here; the job runs on every core"
		else
			pick_cores "$lim_cpus" || jlog "--cpus $lim_cpus: cannot read which cores this account may use; the job runs on every core"
		fi
	fi
	d=${my_dir:-$lease_dir}
	if side_put l "$(printf '%s\t%s\t%12s\t%s\t%s' "$uid" "$lim_mem_kib" 0 "${lim_cores:--}" run)"; then
		lim_rec=$side_rec lim_fd=$side_fd d=$my_dir
		# Published, then checked: of two jobs that picked a core
		# together the younger picks again (pick_cores skips older ones).
		if [ -n "$lim_cores" ] && nap "$settle" && pick_recheck; then
			printf '%s\t%s\t%12s\t%s\t%s\n' "$uid" "$lim_mem_kib" 0 "${lim_cores:--}" run >"$lim_rec"
		fi
	fi
	[ -n "$lim_rec" ] || jlog "cannot record this job in $d; the node's memory reserve will not weigh it"
	if [ -n "$lim_cores" ]; then
		printf '%s\n' "$lim_cores" >"$jd/cores"
		what="cores $lim_cores"
	fi
	if [ "$lim_mem_kib" -gt 0 ]; then
		hsize "$lim_mem_kib"
		what+="${what:+, }memory $hsize_out ($lim_mem_mode)"
	fi
	if [ "$lim_time_s" -gt 0 ]; then
		hsecs "$lim_time_s"
		what+="${what:+, }time $hsecs_out"
	fi
	[ -n "$what" ] && jlog "limits: $what"
	return 0
}

# phase_prefix PHASE: what limited puts before the phase's bash: the
# memory scope, taskset.
phase_prefix() {
	phase_pre=()
	lim_scope= lim_cg=
	if [ "$lim_mem_mode" = cgroup ]; then
		lim_scope=sshq-$uid-${1%.sh}
		phase_pre+=(systemd-run --user --scope --quiet --collect "--unit=$lim_scope" -p "MemoryMax=${lim_mem_kib}K" -p MemorySwapMax=0 --)
	fi
	[ -n "$lim_cores" ] && phase_pre+=(taskset -c "$lim_cores")
	return 0
}

# phase_gone PID: the phase's process has ended (gone, or a zombie left for
# wait). No fork: its stat's state follows the last ") ".
phase_gone() {
	local s
	read -r s 2>/dev/null <"/proc/$1/stat" || return 0
	s=${s##*) }
	case ${s:0:1} in Z | X) return 0 ;; esac
	return 1
}

# watch_phase PID: tick (at most 0.9s apart, so at least once a second)
# until the phase ends, into phase_rc; the end itself is seen within 0.1s,
# so a short job is not held up. A phase a limit ended finishes the job
# here: finish never returns.
phase_rc=0
watch_phase() {
	local ph=$1 last=0
	while ! phase_gone "$ph"; do
		ms_now
		if [ $((now_ms - last)) -ge 900 ]; then
			last=$now_ms
			limits_tick "$ph"
		fi
		nap 0.1
	done
	wait "$ph"
	phase_rc=$?
	[ -n "$lim_state" ] && finish "$lim_state" "$lim_code"
	return 0
}

# lim_publish: this job's memory, in place in its record.
lim_publish() {
	[ -n "$lim_rec" ] || return 0
	printf '%s\t%s\t%12s\t%s\t%s\n' "$uid" "$lim_mem_kib" "$lim_rss" "${lim_cores:--}" "$lim_end" 2>/dev/null 1<>"$lim_rec"
}

# lim_oom REASON NOTE PIDS...: end the job for memory: SIGKILL now, as the
# kernel's OOM killer would, before it takes more.
lim_oom() {
	lim_state=OUT_OF_MEMORY lim_code=137 lim_reason=$1 lim_note=$2
	shift 2
	[ $# -gt 0 ] && kill -KILL "$@" 2>/dev/null
	[ -n "$lim_scope" ] && systemctl --user kill --signal=KILL "$lim_scope.scope" >/dev/null 2>&1
	lim_end=end
	lim_publish
}

# limits_tick PID: one look at the job.
limits_tick() {
	local pids p a b sum=0 now limit
	ms_now
	now=$now_ms
	pids=$(leftover_pids)
	for p in $pids; do
		read -r a b _ 2>/dev/null <"/proc/$p/statm" && sum=$((sum + b))
	done
	lim_rss=$((sum * lim_page_kib))
	[ $lim_rss -gt $lim_peak ] && lim_peak=$lim_rss
	if [ -z "$lim_state" ] && [ "$lim_time_s" -gt 0 ] && [ $((now - lim_t0)) -ge $((lim_time_s * 1000)) ]; then
		hsecs "$lim_time_s"
		lim_state=TIMEOUT lim_code=124 lim_kill_at=$((now + 10000))
		lim_reason="time limit $hsecs_out reached (--time)"
		lim_note="TIMEOUT: the job reached its time limit of $hsecs_out (--time): its processes got SIGTERM"
		[ -n "$lim_scope" ] && systemctl --user kill --signal=TERM "$lim_scope.scope" >/dev/null 2>&1
		# An interactive shell (sshq shell) ignores SIGTERM: hang it up, as
		# a closed terminal would, and it passes the hangup to its jobs.
		[ -s "$jd/shell.pid" ] && read -r p <"$jd/shell.pid" 2>/dev/null && kill -HUP "$p" 2>/dev/null
	fi
	case $lim_state in
	OUT_OF_MEMORY)
		[ -n "$pids" ] && kill -KILL $pids 2>/dev/null
		return 0
		;;
	TIMEOUT)
		if [ "$now" -lt "$lim_kill_at" ]; then
			for p in $pids; do
				[ -n "${lim_termed[$p]:-}" ] && continue
				kill -TERM "$p" 2>/dev/null
				lim_termed[$p]=1
			done
		elif [ -n "$pids" ]; then
			kill -KILL $pids 2>/dev/null
			[ -n "$lim_scope" ] && systemctl --user kill --signal=KILL "$lim_scope.scope" >/dev/null 2>&1
			[ -z "$lim_killed" ] && lim_note+=", and SIGKILL 10s later"
			lim_killed=1
		fi
		return 0
		;;
	esac
	if [ "$lim_mem_kib" -gt 0 ]; then
		hsize "$lim_mem_kib"
		limit=$hsize_out
		if [ "$lim_mem_mode" = cgroup ] && cg_oom "$1"; then
			hsize "$lim_peak"
			lim_oom "memory: peak $hsize_out, at the $limit limit (--mem)" \
				"OUT_OF_MEMORY: the job reached its memory limit of $limit (--mem; peak $hsize_out) and the kernel killed it; its other processes were killed" $pids
			return 0
		fi
		# The watchdog, also where the phase's scope cannot be found.
		if [ -z "$lim_cg" ] && [ $lim_rss -gt "$lim_mem_kib" ]; then
			hsize "$lim_peak"
			lim_oom "memory: peak $hsize_out, over the $limit limit (--mem)" \
				"OUT_OF_MEMORY: the job used $hsize_out (peak), over its memory limit of $limit (--mem): its processes were killed" $pids
			return 0
		fi
	fi
	lim_publish
	reserve_check $pids
	log_cap
}

# cg_oom: the phase's scope counted an OOM kill; lim_peak becomes the
# scope's own peak where the kernel keeps one.
cg_oom() {
	local k v line
	if [ -z "$lim_cg" ]; then
		while read -r line; do
			case $line in 0::*"/$lim_scope.scope") lim_cg=/sys/fs/cgroup${line#0::} ;; esac
		done 2>/dev/null <"/proc/$1/cgroup"
	fi
	[ -n "$lim_cg" ] || return 1
	while read -r k v; do
		[ "$k" = oom_kill ] && [ "${v:-0}" -gt 0 ] 2>/dev/null || continue
		read -r v 2>/dev/null <"$lim_cg/memory.peak" && [ $((v / 1024)) -gt $lim_peak ] && lim_peak=$((v / 1024))
		return 0
	done 2>/dev/null <"$lim_cg/memory.events"
	return 1
}

# reserve_check PIDS...: when the node's available memory is under its
# reserve, the job furthest above its share is stopped; if that is this
# one, it is stopped here. A job below its share is never chosen: what
# eats the node is then not an sshq job.
reserve_check() {
	local k v avail= f u lim rss cores st n=0 usable share over best= bover=0 brss=0
	local -a ru=() rl=() rr=()
	while read -r k v _; do
		[ "$k" = MemAvailable: ] && avail=$v && break
	done </proc/meminfo
	case $avail in '' | *[!0-9]*) return 0 ;; esac
	[ "$avail" -lt "$lim_reserve_kib" ] || return 0
	[ -n "$lim_rec" ] || return 0
	side_files l
	for f in ${side_out[@]+"${side_out[@]}"}; do
		IFS=$tab read -r u lim rss cores st _ 2>/dev/null <"$f" || continue
		rss=${rss// /}
		valid_uid "$u" || continue
		case $lim$rss in '' | *[!0-9]*) continue ;; esac
		# A job already stopped for memory frees it now: wait for that.
		[ "$st" = end ] && return 0
		ru+=("$u") rl+=("$lim") rr+=("$rss")
		n=$((n + 1))
	done
	[ $n -gt 0 ] || return 0
	usable=$(((lim_mem_total - lim_reserve_kib) / n))
	[ $usable -ge 0 ] || usable=0
	for k in "${!ru[@]}"; do
		share=$usable
		[ "${rl[$k]}" -gt 0 ] && share=${rl[$k]}
		over=$((rr[k] - share))
		[ $over -gt 0 ] || continue
		if [ -z "$best" ] || [ $over -gt $bover ] || { [ $over -eq $bover ] && [[ ${ru[$k]} < $best ]]; }; then
			best=${ru[$k]} bover=$over brss=${rr[$k]}
		fi
	done
	[ "$best" = "$uid" ] || return 0
	hsize "$avail"
	v=$hsize_out
	hsize "$lim_reserve_kib"
	k=$hsize_out
	hsize $((brss - bover))
	share=$hsize_out
	hsize "$lim_peak"
	lim_oom "node memory low: $v available, under the $k reserve (SSHQ_RESERVE_MEM); peak $hsize_out, share $share" \
		"OUT_OF_MEMORY: node memory low: $v available, under the node's $k reserve (SSHQ_RESERVE_MEM), and this job was the furthest above its share ($share; peak $hsize_out): its processes were killed" "$@"
}

# log_cap: a log past its cap loses its oldest part, down to half the cap.
log_cap() {
	local size cap drop t
	[ "$lim_cap_kib" -gt 0 ] || return 0
	cap=$((lim_cap_kib * 1024))
	size=$(stat -c %s -- "$jd/log" 2>/dev/null) || return 0
	[ $((size - lim_dropped)) -gt $cap ] || return 0
	hsize "$lim_cap_kib"
	drop=$(((size - cap / 2) / 4096 * 4096))
	if [ $drop -gt "$lim_dropped" ] &&
		fallocate --punch-hole --offset "$lim_dropped" --length $((drop - lim_dropped)) -- "$jd/log" 2>/dev/null; then
		lim_dropped=$drop
		printf '%s\n' "$drop" >"$jd/log.dropped"
		jlog "the log passed its $hsize_out cap (SSHQ_LOG_CAP): its first $drop bytes were dropped"
		return 0
	fi
	# No hole punching here (NFS, an old file system): keep the newest half
	# in place. Lines written during the copy may be lost.
	t=$jd/log.keep
	if tail -c $((cap / 2)) -- "$jd/log" >"$t" 2>/dev/null; then
		{
			printf 'sshq: older output was dropped here: the log passed its %s cap (SSHQ_LOG_CAP)\n' "$hsize_out"
			cat -- "$t"
		} >"$jd/log"
	fi
	rm -f -- "$t"
}

# limits_end, from finish: the log's last word on a limit that ended the
# job, the reason for queue, the shared record gone.
limits_end() {
	# A job cancelled while it waited for disk does not end for that.
	[ -n "$disk_waiting" ] && rm -f -- "$jd/reason"
	[ -n "$lim_begun" ] || return 0
	log_cap
	if [ -n "$lim_rec" ]; then
		rm -f -- "$lim_rec"
		exec {lim_fd}<&-
		lim_rec=
	fi
	if [ -n "$lim_state" ]; then
		printf '%s\n' "$lim_reason" >"$jd/reason"
		jlog "$lim_note"
	fi
}
