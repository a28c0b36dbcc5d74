#!/bin/bash
# sshq task, one per node of the job, started by batch.sh through srun as
# task.sh JOBDIR: the node's rank, then the task's setup and run.
jobdir=$1
export SSHQ_NODE_RANK=${SLURM_NODEID:-0} SKYPILOT_NODE_RANK=${SLURM_NODEID:-0}
if [ -s "$jobdir/setup.sh" ]; then
	bash "$jobdir/setup.sh" </dev/null
	rc=$?
	if [ $rc -ne 0 ]; then
		echo "sshq: setup failed with exit code $rc on node rank $SSHQ_NODE_RANK ($(hostname))" >&2
		exit $rc
	fi
fi
exec bash "$jobdir/run.sh" </dev/null
