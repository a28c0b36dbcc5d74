// Package orchestrator is sshq's brain on the controller: it probes nodes,
// places tasks on GPUs, syncs workdirs, launches and cancels jobs, and keeps
// the local job store in step with what the nodes say. It reaches nodes only
// through sshpool, one pooled connection each, and sends node-side work as
// the scripts of orchestrator/remote.
//
// Controller is the entry point of every command: it opens settings, ssh
// config, resolver, pool and store once, and has one method per verb.
//
// A host named as a Slurm login node (--slurm) is a placement target like
// a node, but a job placed there goes through sbatch (package slurm) and is
// asked about, followed and cancelled through Slurm: store.Job.Backend
// tells the two kinds of job apart, and the verbs dispatch on it.
//
// Subpackages: cmd (the command line), gpu (nvidia-smi parsing and the GPU
// simulator), remote (the node-side protocol), slurm (a Slurm cluster
// through its login node), store (state.json), wsync (workdir sync), task
// (task files), ui (tables and colour).
package orchestrator
