# sshq node protocol, v1: place SPEC... is a launch's question to a node:
# would a job of this shape start here now, wait in the queue, or never fit?
# The node answers by the queue's own rule (plan, as try_start decides), so
# the controller never re-implements it. Needs lib.sh and sched.sh.
#
# SPEC is NEED:ALLOWED, one per shape the job may take (a task may accept
# several GPU types). ALLOWED is '*' (any GPU) or '?': the node lists its
# GPUs ("gpu" records), prints "ask" and reads one line per '?' spec from
# stdin, the uuids of the GPUs that shape may use, comma-separated ('-' for
# none): whether a GPU is of a type the user named is the controller's
# call. A job that asks for no GPU starts at once: then the driver is not
# asked at all.

cmd_place() {
	local spec need al i any_gpu= ask= line r u eligible free ahead demand verdict
	probe_timeout=$report_probe_timeout
	local -a needs=() alloweds=()
	for spec in "$@"; do
		need=${spec%%:*} al=${spec#*:}
		case $need in '' | *[!0-9]*) die 2 "bad place spec '$spec' (controller and node script disagree?)" ;; esac
		case $al in '*') ;; '?') ask=1 ;; *) die 2 "bad place spec '$spec'" ;; esac
		[ "$need" -gt 0 ] && any_gpu=1
		needs+=("$need") alloweds+=("$al")
	done
	host_info
	printf 'SSHQ-BEGIN %s\n' "$SSHQ_PROTO"
	printf 'host\t%s\t%s\t%s\n' "${h_nproc:-~}" "${h_mem_total:-~}" "${h_load%% *}"
	if [ -z "$any_gpu" ]; then
		for i in "${!needs[@]}"; do printf 'fit\t%s\tnow\t0\t0\t0\t0\n' "$i"; done
		printf 'SSHQ-END\n'
		return 0
	fi
	if ! lease_dir_prepare; then
		report_error "$lease_err"
		printf 'SSHQ-END\n'
		return 0
	fi
	gpu_list
	r=$?
	[ $r = 0 ] || report_error "$gpu_err"
	for u in ${gpu_uuids[@]+"${gpu_uuids[@]}"}; do
		printf 'gpu\t%s\t%s\t%s\n' "${gpu_idx[$u]}" "$u" "${gpu_name[$u]//$tab/ }"
	done
	if [ -n "$ask" ]; then
		printf 'ask\n'
		for i in "${!needs[@]}"; do
			[ "${alloweds[$i]}" = '?' ] || continue
			line=-
			IFS= read -r -t 30 line || line=-
			case $line in '' | *[!A-Za-z0-9_,-]*) line=- ;; esac
			[ "$line" = - ] && line=
			alloweds[i]=$line
		done
	fi
	if [ $r = 0 ]; then
		if ! queue_lock 30; then
			report_error "queue lock $lease_dir/queue.lock is held for over 30s"
			printf 'SSHQ-END\n'
			return 0
		fi
		gpu_use
		r=$?
		[ $r = 0 ] || report_error "$gpu_err"
		read_tickets
		queue_unlock
	fi
	ahead=${#t_name[@]} demand=0
	for i in "${!t_n[@]}"; do demand=$((demand + t_n[i])); done
	for i in "${!needs[@]}"; do
		need=${needs[$i]} al=${alloweds[$i]}
		eligible=0 free=0
		if [ "$need" -eq 0 ]; then
			printf 'fit\t%s\tnow\t0\t0\t%s\t%s\n' "$i" "$ahead" "$demand"
			continue
		fi
		for u in ${gpu_uuids[@]+"${gpu_uuids[@]}"}; do
			allowed_has "$al" "$u" && eligible=$((eligible + 1))
		done
		if [ $eligible -lt "$need" ]; then
			verdict=never
		elif [ $r != 0 ]; then
			# Not knowing who uses the GPUs, the queue takes none as free.
			verdict=wait
		else
			free_gpus
			verdict=wait
			plan "$ahead" "$need" "$al" && verdict=now
			for u in ${avail[@]+"${avail[@]}"}; do
				allowed_has "$al" "$u" && free=$((free + 1))
			done
		fi
		printf 'fit\t%s\t%s\t%s\t%s\t%s\t%s\n' "$i" "$verdict" "$eligible" "$free" "$ahead" "$demand"
	done
	printf 'SSHQ-END\n'
}
