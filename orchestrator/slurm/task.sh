#!/bin/bash
# sshq task, one per node of the job, started by batch.sh through srun as
# task.sh JOBDIR: the node's rank, then the task's setup and run.
jobdir=$1
export SSHQ_NODE_RANK=${SLURM_NODEID:-0} SKYPILOT_NODE_RANK=${SLURM_NODEID:-0}
# Each rank records how it ended itself: a rank killed because another
# failed records nothing, so batch.sh can tell the cause from the casualty.
if [ -s "$jobdir/setup.sh" ]; then
	bash "$jobdir/setup.sh" </dev/null
	rc=$?
	if [ $rc -ne 0 ]; then
		echo "sshq: setup failed with exit code $rc on node rank $SSHQ_NODE_RANK ($(hostname))" >&2
		echo "$rc" >"$jobdir/exit.$SSHQ_NODE_RANK"
		exit $rc
	fi
fi
bash "$jobdir/run.sh" </dev/null
rc=$?
echo "$rc" >"$jobdir/exit.$SSHQ_NODE_RANK"
exit $rc
