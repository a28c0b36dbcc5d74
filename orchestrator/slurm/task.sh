#!/bin/bash
# sshq task, one per node of the job, started by batch.sh through srun as
# task.sh JOBDIR: the node's rank, then the task's setup and run.
jobdir=$1
export SSHQ_NODE_RANK=${SLURM_NODEID:-0} SKYPILOT_NODE_RANK=${SLURM_NODEID:-0}

# Setup and run each get a process group of their own (job control), which
# this script ends as a whole: when Slurm cancels the step, and when the
# script returns, so nothing the task started outlives it. Slurm's own
# tracking cannot promise that everywhere: proctrack/linuxproc follows
# parentage and loses a process whose parent died first, which then holds
# the step's output open until it ends.
set -m
child=
stop() {
	[ -n "$child" ] || return 0
	kill -TERM -- "-$child" 2>/dev/null || return 0
	for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
		kill -0 -- "-$child" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL -- "-$child" 2>/dev/null
	return 0
}
trap 'stop; exit 143' TERM
trap 'stop; exit 130' INT

# step SCRIPT: run it in its group and wait; a trapped signal interrupts
# the wait and its trap exits.
step() {
	bash "$jobdir/$1" </dev/null &
	child=$!
	wait "$child"
	rc=$?
	stop
	child=
	return $rc
}

# Each rank records its exit code and when it ended (ns), so batch.sh can
# tell the rank that failed first from those srun killed after it.
ended() { printf '%s %s\n' "$1" "$(date +%s%N)" >"$jobdir/exit.$SSHQ_NODE_RANK"; }

if [ -s "$jobdir/setup.sh" ]; then
	step setup.sh
	rc=$?
	if [ $rc -ne 0 ]; then
		echo "sshq: setup failed with exit code $rc on node rank $SSHQ_NODE_RANK ($(hostname))" >&2
		ended $rc
		exit $rc
	fi
fi
step run.sh
rc=$?
ended $rc
exit $rc
