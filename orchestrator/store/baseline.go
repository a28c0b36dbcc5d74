package store

import (
	"slices"
	"time"
)

// baseline remembers the jobs as an Update read them, so that writing back
// 10,000 ended jobs that nobody touched is a copy of their bytes rather than
// an encode: encoding is the largest cost of an Update after decoding.
//
// A job's record is reused only when the job is field-for-field identical to
// what was read, including values behind pointers and inside slices (held
// here as copies, since a caller may change them in place). TestUnchangedCoversEveryField
// keeps same in step with Job.
type baseline struct {
	data  []byte
	spans []span
	snaps []snapshot
}

type snapshot struct {
	job                      Job // strings, numbers; its pointers and slices are checked below
	started, ended, lastSeen time.Time
	exitCode, queuePosition  int
	gpus                     []int
	gpuUUIDs, envNames       []string
}

func newBaseline(data []byte, spans []span, jobs []*Job) *baseline {
	b := &baseline{data: data, spans: spans, snaps: make([]snapshot, len(jobs))}
	// Slice contents are copied into two shared arrays: no allocation per job.
	var ints slab[int]
	var strs slab[string]
	for i, j := range jobs {
		s := &b.snaps[i]
		s.job = *j
		if j.Started != nil {
			s.started = *j.Started
		}
		if j.Ended != nil {
			s.ended = *j.Ended
		}
		if j.LastSeen != nil {
			s.lastSeen = *j.LastSeen
		}
		if j.ExitCode != nil {
			s.exitCode = *j.ExitCode
		}
		if j.QueuePosition != nil {
			s.queuePosition = *j.QueuePosition
		}
		s.gpus = ints.clone(j.GPUs)
		s.gpuUUIDs = strs.clone(j.GPUUUIDs)
		s.envNames = strs.clone(j.EnvNames)
		j.rec = i + 1
	}
	return b
}

// unchanged returns j's record as read if j has not changed since, else nil.
func (b *baseline) unchanged(j *Job) []byte {
	if b == nil || j.rec < 1 || j.rec > len(b.snaps) {
		return nil
	}
	s := &b.snaps[j.rec-1]
	o := &s.job
	if j.ID != o.ID || j.UID != o.UID || j.Name != o.Name || j.User != o.User || j.Node != o.Node ||
		j.Accelerator != o.Accelerator || j.NumGPUs != o.NumGPUs || j.State != o.State ||
		j.Submitted != o.Submitted || j.Workdir != o.Workdir || j.Command != o.Command || j.TaskFile != o.TaskFile ||
		!sameTime(j.Started, o.Started, s.started) || !sameTime(j.Ended, o.Ended, s.ended) ||
		!sameTime(j.LastSeen, o.LastSeen, s.lastSeen) ||
		!sameInt(j.ExitCode, o.ExitCode, s.exitCode) || !sameInt(j.QueuePosition, o.QueuePosition, s.queuePosition) ||
		!sameSlice(j.GPUs, o.GPUs, s.gpus) || !sameSlice(j.GPUUUIDs, o.GPUUUIDs, s.gpuUUIDs) ||
		!sameSlice(j.EnvNames, o.EnvNames, s.envNames) {
		return nil
	}
	sp := b.spans[j.rec-1]
	return b.data[sp.start:sp.end]
}

// sameTime compares with ==, not Equal: the same instant in another zone
// encodes differently.
func sameTime(now, was *time.Time, wasVal time.Time) bool {
	if now == nil || was == nil {
		return now == nil && was == nil
	}
	return *now == wasVal
}

func sameInt(now, was *int, wasVal int) bool {
	if now == nil || was == nil {
		return now == nil && was == nil
	}
	return *now == wasVal
}

func sameSlice[T comparable](now, was, wasVal []T) bool {
	return (now == nil) == (was == nil) && slices.Equal(now, wasVal)
}
