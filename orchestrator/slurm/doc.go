// Package slurm drives a Slurm cluster through one of its login nodes, over
// the same SSH connection sshq keeps to any node: a host of the user's ssh
// config that is a Slurm login node is a placement target, and jobs placed
// there go through sbatch instead of the node queue of package remote.
// Slurm schedules, holds the GPUs and keeps the state; sshq only writes a
// job's files, submits, asks and cancels.
//
// Every action is one SSH session running slurm.sh (sent whole, like
// node.sh: nothing is installed on the login node) as
// `bash -c Script sshq-slurm ACTION ARGS...`, every argument one word
// quoted by sshpool.Command; the caller's Runner carries it.
//
// # On the login node
//
// A job's directory, by default ~/.sshq/slurm/<uid> (the home directory,
// which Slurm clusters share with their compute nodes), mode 0700:
//
//	env.sh        the task's envs (export NAME='value')
//	secrets.sh    the task's secret envs, 0600; sourced then deleted by batch.sh
//	sshq.sh       sshq's own values (SSHQ_JOB_ID, SKYPILOT_TASK_ID...), which win
//	setup.sh      the task's setup, run on every node before run
//	run.sh        the task's run
//	batch.sh      the batch script Slurm runs on the first node
//	task.sh       one per node, through srun: rank variables, setup, run
//	workdir/      hard-link snapshot of the synced workdir at submit time
//	log           Slurm's --output (stdout and stderr of every node)
//	exit.<rank>   each node's exit code and end time (ns)
//	slurm_id      the Slurm job id
//
// sbatch gets --job-name, --nodes with --ntasks-per-node=1, --gres=gpu[:TYPE]:N
// (TYPE as the cluster's gres spells it), --cpus-per-task, --mem, --time,
// --partition, --no-requeue (a requeued job would have lost its secrets),
// --output into the job directory (append) and --chdir the snapshot.
// batch.sh sources env.sh, secrets.sh (then deletes it) and sshq.sh, works
// out the nodes' addresses (NodeAddr, rank order) for SSHQ_NODE_IPS and
// MASTER_ADDR, and runs `srun --ntasks-per-node=1` of task.sh, which sets
// the rank and runs setup then run in the snapshot, each in a process group
// of its own that it ends as a whole (SIGTERM, SIGKILL 2s later) when the
// script returns or Slurm cancels the step, so nothing the task started
// outlives the job even under proctrack/linuxproc, which loses a process
// whose parent died first. It records its exit code and end time
// (exit.<rank>). When one node fails, srun kills the
// others; the job's exit status is the code of the rank that failed first,
// not the SIGTERM of those killed after it.
//
// # States
//
// Slurm's states map onto package job's: PENDING, CONFIGURING and the
// requeue states → PENDING; RUNNING, COMPLETING, SUSPENDED → RUNNING;
// COMPLETED → SUCCEEDED; FAILED → FAILED; CANCELLED → CANCELLED; TIMEOUT
// (and DEADLINE) → TIMEOUT; OUT_OF_MEMORY → OUT_OF_MEMORY; NODE_FAIL,
// BOOT_FAIL, PREEMPTED → LOST. Jobs asks squeue first; for ended jobs
// `scontrol show job` gives the exit code while the controller keeps them
// (MinJobAge, five minutes by default, accounting or not), and sacct where
// the cluster keeps accounting; a job none of them knows is not Found.
//
// # Output format
//
// Probe, Status, Jobs, Cancel and Submit print "SSHQ-BEGIN 1", records
// and "SSHQ-END"; each record is a kind, '|', and Slurm's own '|'-separated
// fields (free text last):
//
//	missing|<command>             a Slurm command not on PATH
//	has|sacct
//	version|<sbatch --version>
//	partition|Partition|Available|Time|Nodes|NodeList|
//	node|NodeList|Partition|StateLong|Gres|GresUsed|CPUsState|Memory|AllocMem|Reason|
//	job|JobID|Partition|State|UserName|TimeUsed|NumNodes|tres-per-node|NodeList|Reason|Name|
//	squeue|JobID|State|Reason|
//	scontrol|<id>|<scontrol show job -o line>
//	sacct|JobIDRaw|State|ExitCode|Reason
//	submitted|<slurm id>
//	error|<what failed>
//
// Logs prints the output file itself.
package slurm
