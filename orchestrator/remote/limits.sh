# sshq node protocol, v1: the node's limit settings, the disk floor and the
# choice of cores for --cpus; watch.sh holds the job to its limits while it
# runs (see doc.go, "Job limits"). Needs lib.sh and sched.sh; check.sh reports
# the node's side (limits_report).
#
# Node settings come from the submitting session's environment (nodeenv); a
# SIZE is a number and K, M, G or T (binary: 1G = 1024M; "GiB" and "GB"
# read the same), a bare number is MiB:
#   SSHQ_RESERVE_MEM  memory the node keeps available; default max(2 GiB, 5% of RAM)
#   SSHQ_DISK_FLOOR   free space in $HOME a job needs to start; default 2 GiB
#   SSHQ_LOG_CAP      the most of a job's log kept; default 1 GiB
# (0 turns the floor or the cap off.)

# size_kib SIZE: SIZE in KiB, into size_out; 1 when it is not a size.
size_out=0
size_kib() {
	local s=${1//[[:space:]]/} m=1024 i f
	s=${s%[Bb]}
	s=${s%[Ii]}
	case $s in
	*[Kk]) m=1 s=${s%?} ;;
	*[Mm]) m=1024 s=${s%?} ;;
	*[Gg]) m=1048576 s=${s%?} ;;
	*[Tt]) m=1073741824 s=${s%?} ;;
	esac
	i=${s%%.*} f=
	[ "$s" != "$i" ] && f=${s#*.}
	case $i in '' | *[!0-9]*) return 1 ;; esac
	case $f in *[!0-9]*) return 1 ;; esac
	[ ${#i} -le 9 ] || return 1
	f=${f}000
	size_out=$((10#$i * m + 10#${f:0:3} * m / 1000))
}

# hsize KIB: a size for people, into hsize_out ("412 MiB", "3.1 GiB").
hsize_out=
hsize() {
	local k=$1 t
	if [ "$k" -ge 104857600 ]; then
		hsize_out="$(((k + 524288) / 1048576)) GiB"
	elif [ "$k" -ge 1048576 ]; then
		t=$(((k * 10 + 524288) / 1048576))
		hsize_out="$((t / 10)).$((t % 10)) GiB"
	elif [ "$k" -ge 1024 ]; then
		hsize_out="$(((k + 512) / 1024)) MiB"
	else
		hsize_out="$k KiB"
	fi
}

# hsecs SECONDS: a duration as --time takes it ("90s", "30m", "3d").
hsecs() {
	local s=$1
	if [ $((s % 86400)) -eq 0 ]; then
		hsecs_out="$((s / 86400))d"
	elif [ $((s % 3600)) -eq 0 ]; then
		hsecs_out="$((s / 3600))h"
	elif [ $((s % 60)) -eq 0 ]; then
		hsecs_out="$((s / 60))m"
	else
		hsecs_out="${s}s"
	fi
}
hsecs_out=

# limits_settings reads the node's settings into lim_reserve_kib,
# lim_floor_kib, lim_cap_kib and lim_mem_total (KiB); lim_warn holds what
# could not be read (the default is used then).
lim_reserve_kib=0 lim_floor_kib=0 lim_cap_kib=0 lim_mem_total=0 lim_settings=
declare -a lim_warn=()
limits_settings() {
	local name def v
	lim_warn=()
	host_info
	lim_mem_total=${h_mem_total:-0}
	case $lim_mem_total in '' | *[!0-9]*) lim_mem_total=0 ;; esac
	for name in SSHQ_RESERVE_MEM SSHQ_DISK_FLOOR SSHQ_LOG_CAP; do
		case $name in
		SSHQ_RESERVE_MEM)
			def=$((lim_mem_total / 20))
			[ $def -ge 2097152 ] || def=2097152
			;;
		SSHQ_DISK_FLOOR) def=2097152 ;;
		SSHQ_LOG_CAP) def=1048576 ;;
		esac
		v=$def
		if [ -n "${!name:-}" ]; then
			if size_kib "${!name}"; then
				v=$size_out
			else
				hsize "$def"
				lim_warn+=("$name=${!name} is not a size (say 4G); using $hsize_out")
			fi
		fi
		case $name in
		SSHQ_RESERVE_MEM) lim_reserve_kib=$v ;;
		SSHQ_DISK_FLOOR) lim_floor_kib=$v ;;
		SSHQ_LOG_CAP) lim_cap_kib=$v ;;
		esac
	done
	lim_settings=1
}

# mem_mechanism sets mem_mech to how this node holds --mem: "cgroup" where
# the user's systemd runs, the user lingers (without linger the user
# manager ends every scope at logout) and the memory controller is
# delegated to it, else "watchdog". The delegation file is read first: on
# nodes without systemd this costs no fork.
mem_mech=watchdog
mem_mechanism() {
	local u c
	mem_mech=watchdog
	[ "${SSHQ_NO_SYSTEMD:-}" = 1 ] && return 0
	u=$(id -u 2>/dev/null) || return 0
	c=/sys/fs/cgroup/user.slice/user-$u.slice/user@$u.service/cgroup.controllers
	[ -r "$c" ] || return 0
	read -r c 2>/dev/null <"$c" || return 0
	case " $c " in *" memory "*) ;; *) return 0 ;; esac
	command -v systemd-run >/dev/null 2>&1 || return 0
	case $(systemctl --user is-system-running 2>/dev/null) in running | degraded) ;; *) return 0 ;; esac
	[ "$(loginctl show-user "$(id -un)" --property=Linger --value 2>/dev/null)" = yes ] || return 0
	mem_mech=cgroup
}

# limits_report: check's records, "limits MECH RESERVE_KIB FLOOR_KIB CAP_KIB"
# and a "limits_warn TEXT" per setting it could not read.
limits_report() {
	local w
	limits_settings
	mem_mechanism
	printf 'limits\t%s\t%s\t%s\t%s\n' "$mem_mech" "$lim_reserve_kib" "$lim_floor_kib" "$lim_cap_kib"
	for w in ${lim_warn[@]+"${lim_warn[@]}"}; do
		w=${w//$tab/ }
		printf 'limits_warn\t%s\n' "${w//$'\n'/ }"
	done
}

# ---------------------------------------------------------------- disk floor

# disk_ok: true when $HOME has the floor free (or df cannot tell: the floor
# never blocks on a guess). Else the reason goes to $jd/reason, the log
# says so once, and it returns 1.
disk_waiting=
disk_ok() {
	local free a
	[ -n "$lim_settings" ] || limits_settings
	[ "$lim_floor_kib" -gt 0 ] || return 0
	free=$(df -Pk -- "$HOME" 2>/dev/null | {
		read -r _
		read -r _ _ _ a _
		printf '%s' "${a:-}"
	})
	case $free in '' | *[!0-9]*) return 0 ;; esac
	if [ "$free" -ge "$lim_floor_kib" ]; then
		if [ -n "$disk_waiting" ]; then
			rm -f -- "$jd/reason"
			hsize "$free"
			jlog "$hsize_out free in $HOME again: the job may start"
			disk_waiting=
		fi
		return 0
	fi
	hsize "$free"
	a=$hsize_out
	hsize "$lim_floor_kib"
	printf 'disk low: %s free in %s, under the %s floor (SSHQ_DISK_FLOOR)\n' "$a" "$HOME" "$hsize_out" >"$jd/reason"
	if [ -z "$disk_waiting" ]; then
		jlog "waiting: $a free in $HOME, under the node's $hsize_out floor (SSHQ_DISK_FLOOR); the job starts once space is freed"
		disk_waiting=1
	fi
	return 1
}

# wait_disk: a job without GPUs waits here, still cancellable, until the
# floor is free.
wait_disk() {
	while ! disk_ok; do
		if cancelled || [ -n "$got_signal" ]; then finish CANCELLED 143; fi
		sleep "$poll"
	done
}

# ---------------------------------------------------------------- cores

# cpulist_expand LIST: "0-3,8" into the array cl_out.
declare -a cl_out=()
cpulist_expand() {
	local IFS=, r a b
	cl_out=()
	for r in $1; do
		r=${r//[[:space:]]/}
		a=${r%-*} b=${r#*-}
		case $a$b in '' | *[!0-9]*) continue ;; esac
		[ $((b - a)) -le 65536 ] || continue
		for ((; a <= b; a++)); do cl_out+=("$a"); done
	done
}

# cpulist_join CORE...: the cores as taskset lists them ("0-3,8"), into
# cl_str.
cl_str=
cpulist_join() {
	local c first= last=
	cl_str=
	for c in $(printf '%s\n' "$@" | sort -n -u) -; do
		if [ "$c" != - ] && [ -n "$last" ] && [ "$c" -eq $((last + 1)) ]; then
			last=$c
			continue
		fi
		if [ -n "$first" ]; then
			cl_str+=${cl_str:+,}$first
			[ "$first" != "$last" ] && cl_str+=-$last
		fi
		first=$c last=$c
	done
}

# gpu_local_cores INDEX,...: the cores nvidia-smi's topology puts next to
# those GPUs, into the associative array near; nothing when the driver has
# no topology to give.
declare -A near=()
gpu_local_cores() {
	local line col=-1 i name f
	local -a cells
	near=()
	[ -n "$1" ] || return 0
	command -v nvidia-smi >/dev/null 2>&1 || return 0
	probe_begin
	smi topo topo -m || return 0
	while IFS= read -r line; do
		while [[ $line =~ $'\e'\[[0-9\;]*m ]]; do line=${line/"${BASH_REMATCH[0]}"/}; done
		# Tabs are whitespace to read, which would merge empty cells.
		line=${line//$tab/$'\x1f'}
		IFS=$'\x1f' read -r -a cells <<<"$line"
		if [ $col -lt 0 ]; then
			for i in "${!cells[@]}"; do
				f=${cells[$i]}
				f=${f#"${f%%[! ]*}"}
				f=${f%"${f##*[! ]}"}
				[ "$f" = "CPU Affinity" ] && col=$i
			done
			continue
		fi
		name=${cells[0]:-}
		name=${name//[[:space:]]/}
		case $name in GPU[0-9]*) ;; *) continue ;; esac
		case ",$1," in *",${name#GPU},"*) ;; *) continue ;; esac
		cpulist_expand "${cells[$col]:-}"
		for i in ${cl_out[@]+"${cl_out[@]}"}; do near[$i]=1; done
	done <<<"$smi_out"
}

# pick_cores N: N cores for this job, into lim_cores ("0-3"): among the
# cores this account may use, first those no live sshq job is pinned to
# and near the job's GPUs, then those free of jobs, then near ones, then
# any. The job then publishes its record and checks (pick_recheck), so
# two jobs starting together do not keep alike cores.
lim_cores=
pick_cores() {
	local want=$1 k v f u lim rss cores st pass c
	local -a allowed=() chosen=()
	local -A taken=() have=()
	while read -r k v; do
		[ "$k" = Cpus_allowed_list: ] && cpulist_expand "$v" && allowed=(${cl_out[@]+"${cl_out[@]}"}) && break
	done </proc/$$/status
	[ ${#allowed[@]} -gt 0 ] || return 1
	side_files l
	for f in ${side_out[@]+"${side_out[@]}"}; do
		IFS=$tab read -r u lim rss cores st _ 2>/dev/null <"$f" || continue
		[ "$u" != "$uid" ] && valid_uid "$u" && [ "$cores" != - ] || continue
		cpulist_expand "$cores"
		for c in ${cl_out[@]+"${cl_out[@]}"}; do taken[$c]=1; done
	done
	gpu_local_cores "${cvd:-}"
	for pass in 1 2 3 4; do
		for c in "${allowed[@]}"; do
			[ ${#chosen[@]} -ge "$want" ] && break 2
			[ -n "${have[$c]:-}" ] && continue
			case $pass in
			1) [ -z "${taken[$c]:-}" ] && [ -n "${near[$c]:-}" ] || continue ;;
			2) [ -z "${taken[$c]:-}" ] || continue ;;
			3) [ -n "${near[$c]:-}" ] || continue ;;
			esac
			chosen+=("$c")
			have[$c]=1
		done
	done
	[ ${#chosen[@]} -ge "$want" ] || jlog "--cpus $want: this account may use only ${#allowed[@]} core(s) here; the job gets them all"
	cpulist_join "${chosen[@]}"
	lim_cores=$cl_str
}

# pick_recheck: after publishing lim_cores, whether another live job took
# one of them too; if so, this one picks again (its own record is skipped,
# the other's counted) and returns 0 so the caller rewrites its record.
pick_recheck() {
	local f u lim rss cores st c
	local -A mine=()
	cpulist_expand "$lim_cores"
	for c in ${cl_out[@]+"${cl_out[@]}"}; do mine[$c]=1; done
	side_files l
	for f in ${side_out[@]+"${side_out[@]}"}; do
		IFS=$tab read -r u lim rss cores st _ 2>/dev/null <"$f" || continue
		[ "$u" != "$uid" ] && [ "$cores" != - ] || continue
		cpulist_expand "$cores"
		for c in ${cl_out[@]+"${cl_out[@]}"}; do
			if [ -n "${mine[$c]:-}" ] && [[ $u < $uid ]]; then
				pick_cores "$lim_cpus"
				return 0
			fi
		done
	done
	return 1
}
