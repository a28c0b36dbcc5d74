package orchestrator

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/store"
)

// orphan makes job id look as a launch killed on its way leaves it:
// SUBMITTING, not yet given a Slurm id, and its launch lock free.
func orphan(t *testing.T, st *store.Store, id int) {
	t.Helper()
	var uid string
	err := st.Update(func(s *store.State) error {
		j := s.Job(id)
		j.State, j.SlurmID, j.Ended, j.ExitCode, j.Started = job.Submitting, "", nil, nil, nil
		uid = j.UID
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(filepath.Dir(st.Path()), store.LaunchDir, uid+".lock")
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A Slurm job whose launcher died is settled by the next queue as well:
// by Slurm's word when sbatch took it just before (its job directory on
// the login node holds its Slurm id), else as never submitted.
func TestSlurmJobOfADeadLauncherIsSettled(t *testing.T) {
	ctrl, _, _ := slurmController(t, "")
	tk := taskFile(t, "run: echo took\n")
	v, err := ctrl.Launch(ctxT(t), LaunchRequest{Task: tk})
	if err != nil {
		t.Fatal(err)
	}
	taken, slurmID := v.Job.ID, v.Job.SlurmID
	if _, err := ctrl.Wait(ctxT(t), WaitRequest{Refs: []string{itoa(taken)}, Interval: 100 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	st, err := ctrl.store()
	if err != nil {
		t.Fatal(err)
	}
	orphan(t, st, taken)
	never, lk, err := st.AddJob("never", func(j *store.Job) error {
		j.Node, j.Backend = "login", store.BackendSlurm
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	lk.Release()
	orphan(t, st, never.ID)

	q, err := ctrl.Queue(ctxT(t), true)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int]JobView{}
	for _, v := range q.Jobs {
		got[v.ID] = v
	}
	if j := got[taken]; j.State != job.Succeeded || j.SlurmID != slurmID {
		t.Errorf("the job sbatch took: %s, Slurm id %q (want SUCCEEDED, %s)", j.State, j.SlurmID, slurmID)
	}
	if j := got[never.ID]; j.State != job.FailedSetup || !strings.Contains(j.Reason, "launching sshq process died") {
		t.Errorf("the job that never reached Slurm: %s %q", j.State, j.Reason)
	}
}
