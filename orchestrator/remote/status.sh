# sshq node protocol, v1: status reports the node as `sshq status` shows it,
# in one pass: host facts, the driver's answers (one GPU query, one process
# query: the same ones the queue decides by), the queue's view of every GPU,
# its leases and waiters, and every sshq job running on the node, of any
# user, with or without GPUs. Needs lib.sh, sched.sh and gangrec.sh.
#
# The driver's answers come first, as sections after "@@sshq NAME" marker
# lines (gpu.ParseProbe reads them: nvidia-smi's own lines are not records),
# then the records between SSHQ-BEGIN and SSHQ-END.

cmd_status() {
	local lease_ok=1 locked= r=1 u i o_uid o_id o_user o_name o_since o_pid o_sid o_idx o_login o_rest
	probe_timeout=$report_probe_timeout
	local -a errors=()
	smi_fresh=1
	if ! lease_dir_prepare; then
		lease_ok=
		errors+=("$lease_err")
	elif queue_lock 30; then
		locked=1
	else
		errors+=("queue lock $lease_dir/queue.lock is held for over 30s; GPU leases are not shown")
	fi
	gpu_list
	r=$?
	# A partial answer (a GPU off the bus) still lists the others.
	if [ ${#gpu_uuids[@]} -gt 0 ]; then
		if [ -n "$locked" ]; then
			gpu_use
		else
			gpu_use nolocks
		fi
		[ $? = 2 ] && errors+=("$gpu_err")
	fi
	if [ -n "$lease_ok" ]; then
		if [ -n "$locked" ]; then read_tickets; else read_tickets ro; fi
		read_running
	fi
	queue_unlock

	# The driver's answers.
	printf '@@sshq probe v1\n'
	if [ -n "$gpu_missing" ]; then
		printf '@@sshq gpus missing\n'
	else
		printf '@@sshq gpus rc=%s fields=%s\n' "$gpu_rc" "$gpu_fields"
		[ -n "$gpu_raw" ] && printf '%s\n' "$gpu_raw"
		if [ ${#gpu_uuids[@]} -gt 0 ]; then
			printf '@@sshq apps rc=%s\n' "$apps_rc"
			[ -n "$apps_raw" ] && printf '%s\n' "$apps_raw"
			printf '@@sshq users\n'
			local uuid pid rest
			while IFS=', ' read -r uuid pid rest; do
				case $pid in '' | *[!0-9]*) continue ;; esac
				[ -n "${user_of[$pid]:-}" ] && printf '%s %s\n' "$pid" "${user_of[$pid]}"
			done <<<"$apps_raw"
		fi
	fi
	host_info
	printf '@@sshq host\nnproc %s\nloadavg %s\n' "$h_nproc" "$h_load"
	[ -n "$h_mem_total" ] && printf 'MemTotal: %s\n' "$h_mem_total"
	[ -n "$h_mem_avail" ] && printf 'MemAvailable: %s\n' "$h_mem_avail"
	printf '@@sshq df\n'
	df -Pk "$HOME" 2>/dev/null
	printf '@@sshq end\n'

	# The queue's view.
	printf 'SSHQ-BEGIN %s\n' "$SSHQ_PROTO"
	if [ -n "$locked" ]; then
		for u in ${gpu_uuids[@]+"${gpu_uuids[@]}"}; do
			printf 'gpu\t%s\t%s\t%s\n' "${gpu_idx[$u]}" "$u" "${gpu_state[$u]:-free}"
			if [ "${gpu_state[$u]:-}" = leased ]; then
				o_uid= o_id= o_user= o_name= o_since= o_login=
				IFS=$tab read -r o_uid o_id o_user o_name o_since o_pid o_sid o_idx o_login o_rest <<<"${owner[$u]}"
				# Owner records are anyone's to write: a uid sshq never
				# makes is shown as unknown, not passed on.
				valid_uid "$o_uid" || o_uid=
				# The login comes last, so controllers that read only
				# the first fields are not confused by it.
				printf 'lease\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$u" "${gpu_idx[$u]}" "${o_uid:-~}" \
					"${o_id:-~}" "${o_user:-~}" "${o_name:-~}" "${o_since:-~}" "${o_login:-~}"
			fi
			if [ -n "${foreign_pids[$u]:-}" ]; then
				printf 'foreign\t%s\t%s\n' "$u" "${foreign_pids[$u]}"
			fi
			if [ -n "${bad_lock[$u]:-}" ]; then
				report_error "${bad_lock[$u]}"
			fi
		done
	fi
	for i in "${!t_name[@]}"; do
		printf 'ticket\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$((i + 1))" "${t_uid[$i]}" "${t_user[$i]}" \
			"${t_jname[$i]}" "${t_n[$i]}" "${t_since[$i]}" "${t_allowed[$i]}" "${t_login[$i]}"
	done
	for i in "${!r_uid[@]}"; do
		printf 'running\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${r_uid[$i]}" "${r_id[$i]}" "${r_user[$i]}" \
			"${r_name[$i]}" "${r_n[$i]}" "${r_since[$i]}" "${r_login[$i]}"
	done
	[ -n "$lease_ok" ] && gang_status_report # multi-node jobs' ranks: gangrec.sh
	for i in "${!errors[@]}"; do
		report_error "${errors[$i]}"
	done
	printf 'SSHQ-END\n'
}
