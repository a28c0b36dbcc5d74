// Package orchestrator is sshq's brain on the controller: it probes nodes,
// places tasks on GPUs, syncs workdirs, launches and cancels jobs, and keeps
// the local job store in step with what the nodes say. It reaches nodes only
// through sshpool, one pooled connection each, and sends node-side work as
// the scripts of orchestrator/remote.
//
// Subpackages: gpu (nvidia-smi parsing and the GPU simulator), remote (the
// node-side protocol), store (state.json), sync (workdir sync), task (task
// files), ui (tables and colour).
package orchestrator
