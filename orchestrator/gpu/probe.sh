# sshq node probe: the GPUs, their compute processes and owners, and host
# facts, as sections after "@@sshq " marker lines (parsed by gpu.ParseProbe).
# POSIX sh; reads no environment but HOME and PATH; never stops on a failure,
# so one broken part (a hung GPU, no ps) still leaves the rest readable.
LC_ALL=C
export LC_ALL
smi() {
	# A GPU that fell off the bus can hang nvidia-smi for minutes.
	if command -v timeout >/dev/null 2>&1; then
		timeout -k 5 30 nvidia-smi "$@"
	else
		nvidia-smi "$@"
	fi
}
echo '@@sshq probe v1'
if command -v nvidia-smi >/dev/null 2>&1; then
	f=index,uuid,name,memory.total,memory.used,utilization.gpu,pci.bus_id,mig.mode.current
	out=$(smi --query-gpu=$f --format=csv,noheader,nounits 2>&1)
	rc=$?
	case $out in
	*'is not a valid field'*)
		# Drivers older than R450 know no MIG field.
		f=index,uuid,name,memory.total,memory.used,utilization.gpu,pci.bus_id
		out=$(smi --query-gpu=$f --format=csv,noheader,nounits 2>&1)
		rc=$?
		;;
	esac
	echo "@@sshq gpus rc=$rc fields=$f"
	[ -z "$out" ] || printf '%s\n' "$out"
	out=$(smi --query-compute-apps=gpu_uuid,pid,used_memory,process_name --format=csv,noheader,nounits 2>&1)
	rc=$?
	echo "@@sshq apps rc=$rc"
	[ -z "$out" ] || printf '%s\n' "$out"
	pids=
	while IFS=, read -r _ pid _; do
		pid=${pid#"${pid%%[! ]*}"}
		case $pid in
		'' | *[!0-9]*) ;;
		*) pids=$pids${pids:+,}$pid ;;
		esac
	done <<EOF
$out
EOF
	echo '@@sshq users'
	if [ -n "$pids" ]; then
		ps -o pid= -o user:64= -p "$pids" 2>/dev/null || ps -o pid= -o user= -p "$pids" 2>/dev/null
	fi
else
	echo '@@sshq gpus missing'
fi
echo '@@sshq host'
echo "nproc $(nproc 2>/dev/null)"
echo "loadavg $(cat /proc/loadavg 2>/dev/null)"
cat /proc/meminfo 2>/dev/null | while read -r k v _; do
	case $k in
	MemTotal: | MemAvailable:) echo "$k $v" ;;
	esac
done
echo '@@sshq df'
df -Pk "$HOME" 2>/dev/null
echo '@@sshq end'
