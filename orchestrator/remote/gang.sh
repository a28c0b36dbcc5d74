# sshq node protocol, v1: the wrapper's part in a multi-node job (a gang:
# meta.sh sets SSHQ_M_GANG, the gang's key). Each rank is an ordinary job on
# its node, under the same uid on every node, whose wrapper calls these
# functions at a few hooks (gang_start, gang_wait, gang_env, gang_finish).
# Needs lib.sh, sched.sh, wrapper.sh and gangrec.sh; gang_py holds the
# agent (gang.py), which the wrapper writes into the job directory.
#
# The start is all or nothing and never deadlocks:
#   - a rank takes its GPUs by the queue's own rule (try_start), then holds
#     them, "reserved", while its agent tells rank 0's coordinator; the
#     coordinator says "go" once every rank holds, and only then does any
#     rank run setup and run;
#   - every node orders gangs alike: a gang's ticket is named by its key (the
#     controller's clock when it submitted, then its uid) on every node, and
#     a rank neither takes GPUs while an older gang's rank waits on its node
#     for GPUs it could use, nor keeps holding them then: it lets them go
#     and keeps its place (wound-wait), so the oldest gang always gets all
#     its nodes;
#   - a rank holds for SSHQ_M_GANG_HOLD seconds at most (default 600): then
#     it lets its GPUs go, keeps its ticket and is "parked" (the queue skips
#     it) until the other ranks hold theirs.
# A release needs the coordinator's consent, which it never gives after it
# said "go", so no rank lets its GPUs go while the others start.

gang_pid= gang_in= gang_out= gang_msg= gang_mode= gang_ticket= gang_gfd= gang_held_at=0 gang_rec=
gang_addr= gang_port= gang_ips= gang_fstate= gang_fcode=

# gang_start: the rank's agent, before the rank takes its place in the
# queue, so rank 0's coordinator listens by the time Submit returns.
gang_start() {
	if ! command -v python3 >/dev/null 2>&1; then
		jlog "multi-node jobs need python3 on every node (it carries the ranks' start barrier); there is none on PATH ($PATH) here"
		finish FAILED_SETUP 3
	fi
	if ! printf '%s' "$gang_py" >"$jd/gang.py"; then
		jlog "cannot write $jd/gang.py (is the file system full?)"
		finish FAILED_SETUP 3
	fi
	# Exported in the coprocess only: the token never shows in ps.
	coproc GANG {
		export SSHQ_GANG_RANK=$SSHQ_M_RANK SSHQ_GANG_N=$SSHQ_M_NRANKS SSHQ_GANG_TOKEN=$SSHQ_M_GANG_TOKEN \
			SSHQ_GANG_COORD=${SSHQ_M_GANG_COORD:-} SSHQ_GANG_IPS=${SSHQ_M_GANG_IPS:-} SSHQ_GANG_DIR=$jd \
			SSHQ_GANG_LOST=${SSHQ_M_GANG_LOST:-} SSHQ_GANG_GRACE=${SSHQ_M_GANG_GRACE:-}
		exec python3 -u "$jd/gang.py" 2>>"$jd/log"
	}
	gang_pid=$GANG_PID gang_out=${GANG[0]} gang_in=${GANG[1]}
	# Cancel and the end-of-job sweep spare it until the wrapper is done.
	own_pids >"$jd/wrapper.pid"
	if ! gang_read 30 || [ "${gang_msg%% *}" != ready ]; then
		jlog "the multi-node agent (python3 $jd/gang.py) did not start"
		finish FAILED_SETUP 3
	fi
}

# gang_read SECONDS: the agent's next line into gang_msg; 1 when none came
# in time, 2 when the agent is gone.
gang_read() {
	gang_msg=
	[ -n "$gang_out" ] || return 2
	IFS= read -r -t "$1" -u "$gang_out" gang_msg && return 0
	[ $? -gt 128 ] && return 1
	gang_out=
	return 2
}

# gang_send LINE: to the agent. SIGPIPE is ignored only around the write
# (an ignored signal would be inherited by the job).
gang_send() {
	local r=0
	[ -n "$gang_in" ] && kill -0 "$gang_pid" 2>/dev/null || return 1
	trap '' PIPE
	printf '%s\n' "$1" >&"$gang_in" 2>/dev/null || r=1
	trap - PIPE
	return $r
}

# gang_mark MODE: this member's side record (g.<uid>, lease.sh) and
# gang.mode in its job directory: readers decide by it.
gang_mark() {
	gang_mode=$1
	printf '%s %s\n' "$1" "$(now)" >"$jd/gang.mode"
	if [ -z "$gang_gfd" ]; then
		if ! side_put g "$(gang_line)"; then
			jlog "$lease_err"
			return 1
		fi
		gang_gfd=$side_fd gang_rec=$side_rec
		return 0
	fi
	gang_line >"$gang_rec"
}
gang_line() {
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$uid" "$SSHQ_M_GANG" "$gang_mode" "$SSHQ_M_RANK" \
		"$SSHQ_M_NRANKS" "$(now)" "$ngpus" "$allowed"
}
gang_unmark() {
	[ -n "$gang_gfd" ] || return 0
	rm -f -- "$gang_rec"
	exec {gang_gfd}<&-
	gang_gfd=
}

# gang_older_waits: an older gang's member waits on this node for GPUs this
# one could hold (their allowed sets meet).
gang_older_waits() {
	local i
	read_gangs
	for i in "${!g_uid[@]}"; do
		[ "${g_mode[$i]}" = wait ] && [[ ${g_key[$i]} < $SSHQ_M_GANG ]] || continue
		[ "${g_need[$i]}" -gt 0 ] || continue
		gang_overlap "${g_allowed[$i]}" "$allowed" && return 0
	done
	return 1
}
gang_overlap() {
	local u
	[ "$1" = '*' ] || [ "$2" = '*' ] && return 0
	for u in ${1//,/ }; do allowed_has "$2" "$u" && return 0; done
	return 1
}

# gang_wait: the gang member's wait, in place of the wrapper's loop: take
# GPUs by the queue's rule, hold them for the peers, let them go when an
# older gang needs them or after the hold limit, start on "go". Returns
# with the leases held (leased) and the gang's addresses known.
gang_wait() {
	local limit=${SSHQ_M_GANG_HOLD:-600} noted=
	case $limit in '' | *[!0-9]*) limit=600 ;; esac
	gang_ticket=$ticket
	gang_mark wait || finish FAILED_SETUP 3
	while :; do
		if cancelled || [ -n "$got_signal" ]; then finish CANCELLED 143; fi
		if [ "$gang_mode" = wait ] || [ "$gang_mode" = hold ]; then
			if [ "$gang_mode" = wait ]; then
				gang_take
			elif [ "$ngpus" -gt 0 ]; then
				gang_check_release "$limit"
			fi
		fi
		if [ "$gang_mode" = wait ] && [ -z "$noted" ]; then
			jlog "rank $SSHQ_M_RANK of $SSHQ_M_NRANKS: waiting for $ngpus GPU(s) in the node's queue"
			noted=1
		fi
		gang_read "$poll"
		case $? in
		0) gang_on_msg && return 0 ;;
		2)
			jlog "the multi-node agent ended unexpectedly (see above)"
			finish FAILED_SETUP 3
			;;
		esac
	done
}

# gang_take: one try at this rank's GPUs, by the queue's claim (sched.sh).
gang_take() {
	local u cvd=
	if [ "$ngpus" -gt 0 ]; then
		gang_older_waits && return 1
		try_start || return 1
		for u in "${leased[@]}"; do
			cvd=$cvd${cvd:+,}${gpu_idx[$u]}
		done
	fi
	gang_mark hold || finish FAILED_SETUP 3
	gang_held_at=$SECONDS
	gang_send hold
	jlog "rank $SSHQ_M_RANK of $SSHQ_M_NRANKS holds ${cvd:+GPU(s) }${cvd:-no GPU}; waiting for the other ranks to hold theirs"
}

# gang_check_release LIMIT: whether to let the held GPUs
# go; asks the coordinator, and keeps them until it agrees.
gang_check_release() {
	if gang_older_waits; then
		gang_send "release wait" && gang_mode=releasing
		jlog "an older multi-node job waits here for these GPUs: letting them go (keeping our place) so that it starts first"
	elif [ $((SECONDS - gang_held_at)) -ge "$1" ]; then
		gang_send "release park" && gang_mode=releasing
		jlog "held GPU(s) ${1}s waiting for the other ranks: letting them go, keeping our place in the queue until the other ranks hold theirs"
	fi
}

# gang_on_msg: act on the agent's line; 0 on "go".
gang_on_msg() {
	local -a w
	read -ra w <<<"$gang_msg"
	case ${w[0]:-} in
	go)
		case ${w[1]:-}${w[3]:-} in '' | *[!0-9A-Fa-f.:,]*) ;; *)
			case ${w[2]:-} in '' | *[!0-9]*) ;; *)
				gang_addr=${w[1]} gang_port=${w[2]} gang_ips=${w[3]}
				;;
			esac
			;;
		esac
		if [ -z "$gang_port" ]; then
			jlog "the coordinator's start message was garbled: $gang_msg"
			finish FAILED_SETUP 3
		fi
		# The record stays (mode run) while the rank lives: status names
		# each node's rank.
		gang_mark run
		return 0
		;;
	release-ok)
		[ "$gang_mode" = releasing ] || return 1
		gang_requeue || finish FAILED_SETUP 3
		gang_mark "${w[1]:-wait}"
		;;
	unpark)
		[ "$gang_mode" = park ] || return 1
		gang_mark wait
		jlog "the other ranks hold their GPUs: back in the queue at our place"
		;;
	stop)
		# The agent left gang.cause: cancelled() sees it.
		finish CANCELLED 143
		;;
	esac
	return 1
}

# gang_requeue: the GPUs go (the running record) and the waiting record
# comes back under its old name, so the rank is back at its place.
gang_requeue() {
	ticket=$gang_ticket
	if ! rec_write w "$ticket"; then
		ticket=
		jlog "$lease_err"
		return 1
	fi
	rec_drop "r.$uid"
	leased=()
	printf '%s\n' "$ticket" >"$jd/ticket"
}

# release_leases: the GPUs go (the running record), the job stays alive.
release_leases() {
	keeper_tell none
	rec_drop "r.$uid"
	leased=()
}

# gang_env: what gpu.env adds for every rank once the gang starts.
# MASTER_PORT set by the task wins (every rank has the same envs).
gang_env() {
	local ips=${gang_ips//,/$'\n'}
	printf 'export SSHQ_NODE_IPS=%s\n' "$(sq "$ips")"
	printf 'export SKYPILOT_NODE_IPS=%s\n' "$(sq "$ips")"
	printf 'export MASTER_ADDR=%s\n' "$(sq "$gang_addr")"
	printf '[ -n "${MASTER_PORT:-}" ] || MASTER_PORT=%s\nexport MASTER_PORT\n' "$gang_port"
}

# gang_finish STATE CODE: called first thing by finish. Tells the agent how
# this rank ended; rank 0 (the coordinator's) then waits for every other
# rank to end, its GPUs let go meanwhile. A rank another one stopped ends
# FAILED (FAILED_SETUP before its run began) with the code of the rank that
# failed, which it names in its log. Leaves the outcome in gang_fstate and
# gang_fcode.
gang_finish() {
	local r= c= st= i
	gang_fstate=$1 gang_fcode=$2
	[ -n "$gang_pid" ] || return 0
	gang_unmark
	gang_send "end $2"
	if [ "${SSHQ_M_RANK:-0}" = 0 ] && [ ! -e "$jd/cancel" ]; then
		if ! gang_read 0.5 || [ "$gang_msg" != done ]; then
			jlog "waiting for the other ranks to end"
			sweep_leftovers
			release_leases
			while [ "$gang_msg" != done ] && [ ! -e "$jd/cancel" ]; do
				gang_read 1
				[ $? = 2 ] && break
			done
		fi
	fi
	for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
		kill -0 "$gang_pid" 2>/dev/null || break
		[ -e "$jd/cancel" ] && [ $i -ge 5 ] && break
		sleep 0.1
	done
	kill -KILL "$gang_pid" 2>/dev/null
	gang_pid=
	[ -f "$jd/gang.cause" ] && [ ! -e "$jd/cancel" ] || return 0
	read -r r c <"$jd/gang.cause"
	[ -f "$jd/state" ] && st=$(tail -n 1 -- "$jd/state")
	case $gang_fstate in
	SUCCEEDED) return 0 ;;
	CANCELLED | FAILED | FAILED_SETUP)
		gang_fstate=FAILED_SETUP
		[ "${st%% *}" = RUNNING ] && gang_fstate=FAILED
		;;
	esac
	case $c in
	lost)
		[ "$r" = 0 ] && [ "${SSHQ_M_RANK:-0}" != 0 ] && jlog "stopped: lost contact with rank 0 (${SSHQ_M_GANG_COORD:-})" ||
			jlog "stopped: rank $r was lost"
		[ "$gang_fstate" = FAILED_SETUP ] && gang_fcode=3
		;;
	*[!0-9]* | '') ;;
	*)
		jlog "stopped: rank $r ended with exit code $c"
		gang_fcode=$c
		;;
	esac
	return 0
}
