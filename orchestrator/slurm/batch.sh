#!/bin/bash
# sshq batch script, run by Slurm on the job's first node as
# batch.sh JOBDIR. It sets the job's environment once and starts one task
# per node (task.sh), which runs the task's setup and run there.
jobdir=$1
. "$jobdir/env.sh"
if [ -f "$jobdir/secrets.sh" ]; then
	. "$jobdir/secrets.sh"
	# Sourced into this shell, inherited by every task through srun: the
	# file has done its work and must not outlive it.
	rm -f "$jobdir/secrets.sh"
fi
. "$jobdir/sshq.sh"

# The nodes in rank order, reached at the addresses Slurm itself uses.
ips=()
while IFS= read -r node; do
	addr=$(scontrol show node -o "$node" 2>/dev/null | grep -o 'NodeAddr=[^ ]*' | head -n 1)
	addr=${addr#NodeAddr=}
	ips+=("${addr:-$node}")
done < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
[ ${#ips[@]} -gt 0 ] || ips=("$(hostname)")
SSHQ_NODE_IPS=$(printf '%s\n' "${ips[@]}")
export SSHQ_NODE_IPS SKYPILOT_NODE_IPS=$SSHQ_NODE_IPS
export SSHQ_NUM_NODES=${SLURM_JOB_NUM_NODES:-1} SKYPILOT_NUM_NODES=${SLURM_JOB_NUM_NODES:-1}
export MASTER_ADDR=${ips[0]}
# Jobs sharing a first node must not share a rendezvous port.
export MASTER_PORT=${MASTER_PORT:-$((29500 + ${SLURM_JOB_ID:-0} % 1000))}

# --quiet: the job's exit status says how a task ended; srun's notes about
# it would only add noise to the job's log.
args=(--quiet --nodes="$SSHQ_NUM_NODES" --ntasks="$SSHQ_NUM_NODES" --ntasks-per-node=1 --export=ALL)
# One node failing fails the job: the others would wait for it forever.
[ "$SSHQ_NUM_NODES" -gt 1 ] && args+=(--kill-on-bad-exit=1)
# srun no longer inherits --cpus-per-task from the allocation (Slurm 22.05).
[ -n "${SLURM_CPUS_PER_TASK:-}" ] && args+=(--cpus-per-task="$SLURM_CPUS_PER_TASK")
srun "${args[@]}" bash "$jobdir/task.sh" "$jobdir"
rc=$?
# srun reports the highest code, which after --kill-on-bad-exit may be the
# SIGTERM of the ranks it killed; the job's code is that of the rank that
# failed first.
if [ $rc -ne 0 ]; then
	first=
	for ((r = 0; r < SSHQ_NUM_NODES; r++)); do
		read -r c t <"$jobdir/exit.$r" 2>/dev/null || continue
		if [ -n "$c" ] && [ "$c" != 0 ] && { [ -z "$first" ] || [ "$t" -lt "$first" ]; }; then
			rc=$c first=$t
		fi
	done
fi
exit $rc
