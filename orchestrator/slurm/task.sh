#!/bin/bash
# sshq task, one per node of the job, started by batch.sh through srun as
# task.sh JOBDIR: the node's rank, then the task's setup and run.
jobdir=$1
export SSHQ_NODE_RANK=${SLURM_NODEID:-0} SKYPILOT_NODE_RANK=${SLURM_NODEID:-0}
# Each rank records its exit code and when it ended (ns), so batch.sh can
# tell the rank that failed first from those srun killed after it.
ended() { printf '%s %s\n' "$1" "$(date +%s%N)" >"$jobdir/exit.$SSHQ_NODE_RANK"; }
if [ -s "$jobdir/setup.sh" ]; then
	bash "$jobdir/setup.sh" </dev/null
	rc=$?
	if [ $rc -ne 0 ]; then
		echo "sshq: setup failed with exit code $rc on node rank $SSHQ_NODE_RANK ($(hostname))" >&2
		ended $rc
		exit $rc
	fi
fi
bash "$jobdir/run.sh" </dev/null
rc=$?
ended $rc
exit $rc
