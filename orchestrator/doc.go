// Package orchestrator is sshq's brain on the controller: it probes nodes,
// places tasks on GPUs, syncs workdirs, launches and cancels jobs, and keeps
// the local job store in step with what the nodes say. It reaches nodes only
// through sshpool, one pooled connection each, and sends node-side work as
// the scripts of orchestrator/remote.
//
// Controller is the entry point of every command: it opens settings, ssh
// config, resolver, pool and store once, and has one method per verb.
//
// Subpackages: cmd (the command line), gpu (nvidia-smi parsing and the GPU
// simulator), remote (the node-side protocol), store (state.json), wsync
// (workdir sync), task (task files), ui (tables and colour).
package orchestrator
