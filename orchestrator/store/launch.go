package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/gofrs/flock"

	"github.com/sshq/sshq/orchestrator/job"
)

// LaunchDir holds the launch locks, one per SUBMITTING job: launching/<uid>.lock.
const LaunchDir = "launching"

// LaunchLock is the flock that the process launching a job holds from
// before the job is first written (SUBMITTING) until the job has left
// SUBMITTING. The kernel drops it when that process dies, however it dies,
// so a SUBMITTING job whose lock is free has no launcher left: nothing will
// ever submit it, and whoever reads the store next can settle it at once
// (see [Store.LauncherGone]).
type LaunchLock struct {
	fl   *flock.Flock
	st   *Store
	uid  string
	once sync.Once
}

// Release gives the lock up when the launch is over, and removes its file
// if the job has left SUBMITTING (submitted, forgotten, cancelled). A job
// still SUBMITTING (its submit's answer lost, its record not written)
// keeps the file, free now: the next reconcile asks its node and settles
// it. It may be called again.
func (l *LaunchLock) Release() {
	if l == nil {
		return
	}
	l.once.Do(func() {
		// Closed first: Windows cannot remove an open file. A reader that
		// takes the freed lock meanwhile finds the job no longer
		// SUBMITTING, and does nothing.
		_ = l.fl.Close()
		s, err := l.st.Load()
		if err != nil {
			return // kept: a later launch sweeps it once the job has moved on
		}
		for _, j := range s.Jobs {
			if j.UID == l.uid && j.State == job.Submitting {
				return
			}
		}
		_ = os.Remove(l.fl.Path())
	})
}

func (s *Store) launchPath(uid string) string {
	return filepath.Join(s.dir, LaunchDir, uid+".lock")
}

// AddJob records a new SUBMITTING job (see [State.NewJob]), which fill
// completes, and returns a copy of it with its launch lock, held by this
// process. The lock is taken before the job is written, so no reader ever
// sees the job without it; the caller releases it once the job has left
// SUBMITTING. If fill fails, or the job cannot be written, nothing is
// recorded, the lock is given up and the error returned.
func (s *Store) AddJob(name string, fill func(*Job) error) (Job, *LaunchLock, error) {
	var rec Job
	var lk *LaunchLock
	err := s.Update(func(st *State) error {
		j := st.NewJob(name)
		if fill != nil {
			if err := fill(j); err != nil {
				return err
			}
		}
		s.sweepLaunchLocks(st)
		var err error
		if lk, err = s.lockLaunch(j.UID); err != nil {
			return err
		}
		rec = *j
		return nil
	})
	if err != nil {
		lk.Release()
		return Job{}, nil, err
	}
	return rec, lk, nil
}

// lockLaunch creates and locks the launch lock of a job not written yet.
// It runs under the state lock.
func (s *Store) lockLaunch(uid string) (*LaunchLock, error) {
	dir := filepath.Join(s.dir, LaunchDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, &WriteError{Path: dir, Dir: s.dir, Err: err}
	}
	fl := flock.New(s.launchPath(uid), flock.SetPermissions(0o600))
	ok, err := fl.TryLock()
	if err != nil {
		return nil, &WriteError{Path: fl.Path(), Dir: s.dir, Err: err}
	}
	if !ok {
		// Uids are never reused, so only a hand-made file can be held.
		return nil, fmt.Errorf("%s is locked by another process, yet no job has its uid; remove it (`fuser %s` names the holder)", fl.Path(), fl.Path())
	}
	return &LaunchLock{fl: fl, st: s, uid: uid}, nil
}

// LauncherGone reports whether nobody holds the launch lock of the job
// with this uid: a SUBMITTING job whose launcher has died (or gave up
// without recording how its launch ended). It is false while the launcher
// lives, and for a job without a lock file (one an sshq older than launch
// locks started, or one whose lock its settler already removed): those
// are only settled once their launch could no longer be running.
//
// The answer is only meaningful for a job read as SUBMITTING: its launcher
// takes the lock before the job is written and never takes it again.
func (s *Store) LauncherGone(uid string) bool {
	// Never created here: a missing file is no proof of anything.
	fl := flock.New(s.launchPath(uid), flock.SetFlag(os.O_RDONLY))
	ok, err := fl.TryLock()
	if err != nil || !ok {
		return false
	}
	_ = fl.Close()
	return true
}

// ForgetLaunch removes the launch lock file of a job that has left
// SUBMITTING after its launcher was gone.
func (s *Store) ForgetLaunch(uid string) {
	_ = os.Remove(s.launchPath(uid))
}

// sweepLaunchLocks removes the lock files that no SUBMITTING job of st
// names and nobody holds: a launcher killed between taking its lock and
// writing its job leaves one. It runs under the state lock, when a launch
// adds a job.
func (s *Store) sweepLaunchLocks(st *State) {
	entries, err := os.ReadDir(filepath.Join(s.dir, LaunchDir))
	if err != nil {
		return
	}
	submitting := map[string]bool{}
	for _, j := range st.Jobs {
		if j.State == job.Submitting {
			submitting[j.UID] = true
		}
	}
	for _, e := range entries {
		uid, ok := strings.CutSuffix(e.Name(), ".lock")
		if !ok || submitting[uid] || !s.LauncherGone(uid) {
			continue
		}
		_ = os.Remove(s.launchPath(uid))
	}
}

// WriteError is a write to the store's directory that failed (a full
// disk, a quota, a read-only filesystem): nothing was changed, and
// state.json is as it was. Its message says what to do.
type WriteError struct {
	Path string // what could not be written
	Dir  string // the store's directory
	Err  error
}

func (e *WriteError) Unwrap() error { return e.Err }

func (e *WriteError) Error() string {
	var fix string
	switch {
	case errors.Is(e.Err, errNoSpace):
		fix = fmt.Sprintf("the disk holding %s is full: free space there (`df -h %s` shows how much is left)", e.Dir, e.Dir)
	case errors.Is(e.Err, errQuota):
		fix = fmt.Sprintf("you are over your disk quota where %s lies: free space there (`quota -s`)", e.Dir)
	case errors.Is(e.Err, errFileSize):
		fix = "a limit on file size stops sshq (`ulimit -f` shows it): raise it, or run sshq where it does not apply"
	case errors.Is(e.Err, errReadOnly):
		fix = fmt.Sprintf("%s is on a read-only filesystem: point SSHQ_HOME at a writable directory", e.Dir)
	case errors.Is(e.Err, fs.ErrPermission):
		fix = fmt.Sprintf("check that you own %s and may write there (`ls -ld %s`)", e.Dir, e.Dir)
	default:
		fix = fmt.Sprintf("check that %s is writable and its disk not full (`df -h %s`)", e.Dir, e.Dir)
	}
	cause := e.Err
	var pe *fs.PathError
	if errors.As(cause, &pe) {
		cause = pe.Err // the path is said already
	}
	return fmt.Sprintf("cannot write %s: %v; nothing was changed there: %s", e.Path, cause, fix)
}
