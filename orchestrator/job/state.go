// Package job is the one vocabulary of a job's life that the store, the
// node client and the CLI share: its states, as nodes write them and as
// `sshq queue --json` prints them.
package job

// State is where a job is in its life. Its text (and JSON) form is the
// upper-case name; nodes write the same names in a job's state file.
type State string

// The states, in the order a job passes through them. Submitting exists
// only on the controller (the job is recorded before anything touches a
// node); Lost is never written on a node: it is derived for a job whose
// wrapper is gone without an exit record. Timeout and OutOfMemory are a
// job ended at its limits: its time limit (--time), or its memory limit
// (--mem) or the node's memory running low; on a Slurm cluster, Slurm
// ends a job at its limits itself and reports the same two states.
const (
	Submitting  State = "SUBMITTING"
	Pending     State = "PENDING"
	SettingUp   State = "SETTING_UP"
	Running     State = "RUNNING"
	Succeeded   State = "SUCCEEDED"
	Failed      State = "FAILED"
	FailedSetup State = "FAILED_SETUP"
	Cancelled   State = "CANCELLED"
	Lost        State = "LOST"
	Timeout     State = "TIMEOUT"
	OutOfMemory State = "OUT_OF_MEMORY"
)

// Terminal reports whether a job in state s has ended and will never change
// state again.
func (s State) Terminal() bool {
	switch s {
	case Succeeded, Failed, FailedSetup, Cancelled, Lost, Timeout, OutOfMemory:
		return true
	}
	return false
}

// Valid reports whether s is one of the known states.
func (s State) Valid() bool {
	switch s {
	case Submitting, Pending, SettingUp, Running:
		return true
	}
	return s.Terminal()
}
