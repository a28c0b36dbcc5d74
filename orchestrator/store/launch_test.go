package store

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/sshq/sshq/orchestrator/job"
)

// helperLaunch is a launcher: it records a job, prints its uid and stays,
// holding the job's launch lock, until it is killed.
func helperLaunch() int {
	s, err := Open(os.Getenv(helperHomeEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	j, _, err := s.AddJob(os.Getenv(helperNameEnv), func(j *Job) error { j.Node = "box"; return nil })
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(j.UID)
	select {}
}

// A SUBMITTING job's launch lock tells a launcher that lives (in another
// process) from one that was killed; a job without one (an older sshq's)
// is never taken for orphaned.
func TestLaunchLockTellsALiveLauncherFromADeadOne(t *testing.T) {
	t.Parallel()
	home := filepath.Join(t.TempDir(), "sshq")
	s, err := Open(home)
	if err != nil {
		t.Fatal(err)
	}
	cmd := helperCmd(t, "launch", home, "train")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	uid, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	uid = strings.TrimSpace(uid)
	st, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Jobs) != 1 || st.Jobs[0].UID != uid || st.Jobs[0].State != job.Submitting || st.Jobs[0].Node != "box" {
		t.Fatalf("state while the launcher lives: %+v", st.Jobs)
	}
	if s.LauncherGone(uid) {
		t.Fatal("a live launcher's job is taken for orphaned")
	}
	cmd.Process.Kill()
	cmd.Wait()
	if !s.LauncherGone(uid) {
		t.Fatal("the job of a killed launcher is not seen as orphaned")
	}
	s.ForgetLaunch(uid)
	if s.LauncherGone(uid) {
		t.Error("a forgotten launch lock still reads as orphaned")
	}

	// An older sshq recorded jobs without a lock.
	addJobs(t, s, "old")
	st, _ = s.Load()
	if old := st.Jobs[len(st.Jobs)-1]; s.LauncherGone(old.UID) {
		t.Error("a job without a launch lock is taken for orphaned")
	}
}

// The lock is held as soon as the job can be read. Released once the job
// has left SUBMITTING, its file goes; released with the job still
// SUBMITTING (the launch gave up on it), the file stays, free, for the
// next reconcile. A lock file its job never got (its launcher killed
// before the write) is swept by the next launch.
func TestLaunchLockLifecycle(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	rec, lk, err := s.AddJob("a", nil)
	if err != nil {
		t.Fatal(err)
	}
	path := s.launchPath(rec.UID)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no lock file: %v", err)
	}
	if s.LauncherGone(rec.UID) {
		t.Error("the lock is not held after AddJob")
	}
	if err := s.Update(func(st *State) error { st.Job(rec.ID).State = job.Pending; return nil }); err != nil {
		t.Fatal(err)
	}
	lk.Release()
	lk.Release()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("the lock file of a submitted job is still there: %v", err)
	}
	rec, lk, err = s.AddJob("gave-up", nil)
	if err != nil {
		t.Fatal(err)
	}
	lk.Release()
	if !s.LauncherGone(rec.UID) {
		t.Error("a job its launch gave up on, still SUBMITTING, does not read as orphaned")
	}
	s.ForgetLaunch(rec.UID)

	stray := s.launchPath("0000abcd-99")
	if err := os.WriteFile(stray, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, lk, err = s.AddJob("b", func(*Job) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Release()
	if _, err := os.Stat(stray); !os.IsNotExist(err) {
		t.Errorf("a stray lock file was not swept: %v", err)
	}

	// A fill that fails records nothing and leaves no lock.
	if _, _, err := s.AddJob("c", func(*Job) error { return fmt.Errorf("no") }); err == nil || err.Error() != "no" {
		t.Fatalf("AddJob with a failing fill: %v", err)
	}
	es, _ := os.ReadDir(filepath.Join(s.dir, LaunchDir))
	st, _ := s.Load()
	if len(es) != 1 || len(st.Jobs) != 3 {
		t.Errorf("after a failed AddJob: %d lock files, %d jobs", len(es), len(st.Jobs))
	}
}

// A failed write names the file, the cause and what to do about it.
func TestWriteErrorSaysWhatToDo(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		errno syscall.Errno
		want  []string
	}{
		{syscall.ENOSPC, []string{"no space left on device", "is full: free space there", "df -h /h/.sshq"}},
		{syscall.EDQUOT, []string{"quota"}},
		{syscall.EFBIG, []string{"ulimit -f"}},
		{syscall.EROFS, []string{"read-only", "SSHQ_HOME"}},
		{syscall.EACCES, []string{"ls -ld /h/.sshq"}},
		{syscall.EIO, []string{"df -h /h/.sshq"}},
	} {
		err := &WriteError{Path: "/h/.sshq/state.json", Dir: "/h/.sshq", Err: &fs.PathError{Op: "write", Path: "/h/.sshq/state.json.tmp-1", Err: tc.errno}}
		msg := err.Error()
		if !strings.HasPrefix(msg, "cannot write /h/.sshq/state.json: "+tc.errno.Error()+"; nothing was changed there: ") {
			t.Errorf("%v: %s", tc.errno, msg)
		}
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%v: the message lacks %q: %s", tc.errno, w, msg)
			}
		}
	}
}
