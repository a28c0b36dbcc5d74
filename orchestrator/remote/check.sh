# sshq node protocol, v1: check reports what the node offers sshq, for
# `sshq nodes`: the tools it needs, bash's version, the lease directory,
# the GPUs the driver lists, and whether logind ends a user's processes at
# logout, and how it holds jobs to their limits. It changes nothing on the
# node. Needs lib.sh, lease.sh, sched.sh and limits.sh.
#
# Records: tool NAME PATH|-, bash VERSION, kernel TEXT,
# lease_dir PATH ok|unsafe MODE WHERE WHY, gpus N | gpus - ERROR,
# logind KILL_USER_PROCESSES(yes|no) LINGER(yes|no|unknown),
# limits cgroup|watchdog RESERVE_KIB DISK_FLOOR_KIB LOG_CAP_KIB, limits_warn TEXT.
# MODE is provisioned (root made the lease directory: the admin step) or
# shared (records go beside it, in its parent), none when neither is safe
# (WHY says what to do); WHERE is the directory the records go in.

cmd_check() {
	local t p d st kup=no linger=unknown
	probe_timeout=$report_probe_timeout
	printf 'SSHQ-BEGIN %s\n' "$SSHQ_PROTO"
	for t in bash tmux flock nvidia-smi systemd-run ps taskset fallocate python3; do
		p=$(command -v "$t" 2>/dev/null) || p=-
		printf 'tool\t%s\t%s\n' "$t" "${p//$tab/ }"
	done
	printf 'bash\t%s\n' "$BASH_VERSION"
	printf 'kernel\t%s\n' "$(uname -sr 2>/dev/null | tr '\t' ' ')"
	d=$lease_dir
	st=ok
	lease_where || st=unsafe
	p=${lease_err//$tab/ }
	printf 'lease_dir\t%s\t%s\t%s\t%s\t%s\n' "${d//$tab/ }" "$st" "$lease_mode" "${w_dir:--}" "${p:--}"
	smi_fresh=1
	probe_timeout=$report_probe_timeout
	if gpu_list; then
		printf 'gpus\t%s\n' "${#gpu_uuids[@]}"
	else
		p=${gpu_err//$tab/ }
		printf 'gpus\t-\t%s\n' "${p//$'\n'/ }"
	fi
	if grep -qsE '^[[:space:]]*KillUserProcesses[[:space:]]*=[[:space:]]*(yes|true|1)' /etc/systemd/logind.conf /etc/systemd/logind.conf.d/*.conf 2>/dev/null; then
		kup=yes
		linger=$(loginctl show-user "$(id -un)" --property=Linger --value 2>/dev/null) || linger=
		[ -n "$linger" ] || linger=unknown
	fi
	printf 'logind\t%s\t%s\n' "$kup" "$linger"
	limits_report
	printf 'SSHQ-END\n'
}
