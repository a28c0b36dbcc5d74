# sshq node protocol, v1: the records of multi-node jobs (gangs), shared by
# the wrapper (gang.sh), status and jobs, and the action `gang UID`, which
# tells the controller where rank 0's coordinator listens. Needs lib.sh.
#
# Every rank of a gang has a side record g.<uid> in its user's records
# directory (lease.sh), "uid key mode rank nranks since ngpus allowed",
# from its first wait until it ends, which its wrapper flocks while it
# lives (a record nobody holds is stale and skipped). key is the gang's global order ("<ns>-<uid>", its name in
# every node's queue); mode is wait (in the queue), hold (holding its GPUs
# for its peers: "reserved"), park (let them go after the hold limit,
# keeping its place; not counted by the queue until its peers hold theirs)
# or run (the gang started).

declare -a g_uid g_key g_mode g_rank g_n g_since g_need g_allowed
read_gangs() { # read_gangs [ro]
	local f u k m r n si nd al rest
	g_uid=() g_key=() g_mode=() g_rank=() g_n=() g_since=() g_need=() g_allowed=()
	side_files g
	for f in ${side_out[@]+"${side_out[@]}"}; do
		u= k= m= r= n= si= nd= al=
		IFS=$tab read -r u k m r n si nd al rest <"$f" 2>/dev/null
		valid_uid "$u" && valid_uid "$k" || continue
		case $m in wait | hold | park | run) ;; *) continue ;; esac
		case $r in '' | *[!0-9]*) continue ;; esac
		case $n in '' | *[!0-9]*) continue ;; esac
		case $nd in '' | *[!0-9]*) nd=0 ;; esac
		case $si in '' | *[!0-9.]*) si='~' ;; esac
		case $al in '*' | [A-Za-z0-9]*) ;; *) al='*' ;; esac
		case $al in *[!A-Za-z0-9_,*-]*) al='*' ;; esac
		g_uid+=("$u") g_key+=("$k") g_mode+=("$m") g_rank+=("$r") g_n+=("$n")
		g_since+=("$si") g_need+=("$nd") g_allowed+=("$al")
	done
}

# gang_status_report: one "gang" record per rank on this node, for `sshq
# status` (GPUs held for peers are "reserved").
gang_status_report() {
	local i
	read_gangs
	for i in "${!g_uid[@]}"; do
		printf 'gang\t%s\t%s\t%s\t%s\t%s\n' "${g_uid[$i]}" "${g_mode[$i]}" "${g_rank[$i]}" "${g_n[$i]}" "${g_since[$i]}"
	done
}

# gang_report_job UID JOBDIR: the member's part of the jobs report, "gang
# UID MODE SINCE CAUSE_RANK CAUSE_CODE" ("-" for no cause): where it is in
# the start (wait, hold, park, run) and, when another rank stopped it, which
# rank and how that one ended (a code, or "lost").
gang_report_job() {
	local m si r c
	[ -f "$2/gang.mode" ] || return 0
	read -r m si <"$2/gang.mode"
	case $m in wait | hold | park | run) ;; *) return 0 ;; esac
	r=- c=-
	[ -f "$2/gang.cause" ] && read -r r c <"$2/gang.cause"
	case $r in '' | *[!0-9]*) r=- c=- ;; esac
	case $c in lost | [0-9] | [0-9][0-9] | [0-9][0-9][0-9]) ;; *) c=- ;; esac
	printf 'gang\t%s\t%s\t%s\t%s\t%s\n' "$1" "$m" "${si:-~}" "$r" "$c"
}

# cmd_gang UID: where rank 0's coordinator listens: "gang UID PORT ADDR",
# ADDR being the address this command's connection reached the node at
# (what its peers are told when nothing better is known). Waits until the
# rank's agent has its port, or fails with the job's last log lines when
# the rank ended first (no python3, a node problem).
cmd_gang() {
	local uid=$1 jd port= addr= t0=$SECONDS
	valid_uid "$uid" || die 2 "invalid job uid '$uid'"
	jd=$jobs_dir/$uid
	[ -d "$jd" ] || die 4 "no job $uid on this node"
	while :; do
		[ -s "$jd/gang.port" ] && read -r port <"$jd/gang.port"
		case $port in '' | *[!0-9]*) port= ;; *) break ;; esac
		if [ -f "$jd/exit" ] || { [ $((SECONDS - t0)) -ge 2 ] && ! wrapper_alive "$jd"; }; then
			die 5 "rank 0 ended before its coordinator listened: $(tail -n 3 -- "$jd/log" 2>/dev/null | tr '\n' ' ')"
		fi
		[ $((SECONDS - t0)) -ge 30 ] && die 5 "rank 0's coordinator did not listen within 30s (see $jd/log)"
		nap 0.05
	done
	# SSH_CONNECTION is "client port server port".
	set -- ${SSH_CONNECTION:-}
	addr=${3:-}
	[ -n "$addr" ] || addr=$(hostname -I 2>/dev/null | cut -d' ' -f1)
	case $addr in '' | *[!0-9A-Fa-f.:]*) addr='~' ;; esac
	printf 'SSHQ-BEGIN %s\ngang\t%s\t%s\t%s\nSSHQ-END\n' "$SSHQ_PROTO" "$uid" "$port" "$addr"
}
