package store

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/job"
)

// endedJob is job id of controller cid, ended at end.
func endedJob(cid string, id int, end time.Time) *Job {
	code := id % 3
	return &Job{
		ID: id, UID: fmt.Sprintf("%s-%d", cid, id), Name: fmt.Sprintf("train-%d", id%7), User: "alice",
		Node: "box", GPUs: []int{0}, GPUUUIDs: []string{"GPU-x"}, NumGPUs: 1, State: job.Succeeded,
		Submitted: end.Add(-time.Hour), Started: &end, Ended: &end, ExitCode: &code,
		Command: fmt.Sprintf("python train.py --seed %d", id), EnvNames: []string{"HF_TOKEN"},
	}
}

// writeVersion1 writes state.json as sshq wrote it before the history
// existed: format version 1, every job in it, no history_size.
func writeVersion1(t testing.TB, s *Store, cid string, nextID int, jobs []*Job) {
	t.Helper()
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"version":1,"controller_id":%q,"next_id":%d,"jobs":[`, cid, nextID)
	for i, j := range jobs {
		if i > 0 {
			b.WriteByte(',')
		}
		line, err := json.Marshal(j)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteByte('\n')
		b.Write(line)
	}
	b.WriteString("\n]}\n")
	if err := os.WriteFile(s.Path(), b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

func historyLines(t testing.TB, s *Store) []string {
	t.Helper()
	data, err := os.ReadFile(s.HistoryPath())
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

func ids(jobs []*Job) []int {
	var out []int
	for _, j := range jobs {
		out = append(out, j.ID)
	}
	return out
}

func seq(from, to int) []int {
	var out []int
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// A controller that has run thousands of jobs, in the format of the sshq
// before the history: it loads as it is, and its first update keeps only
// the unfinished and the recent jobs in state.json, the rest in the history,
// each job in exactly one place.
func TestVersion1StateMigratesToHistory(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	st0, _ := s.Load()
	cid := st0.ControllerID
	now := time.Now().UTC()
	var jobs []*Job
	for id := 1; id <= 5000; id++ {
		end := now.Add(-30*24*time.Hour + time.Duration(id)*time.Minute)
		if id > 4700 { // the last 300 ended within the last 10 hours
			end = now.Add(-time.Duration(5000-id) * 2 * time.Minute)
		}
		jobs = append(jobs, endedJob(cid, id, end))
	}
	// Still running, and among the oldest: it must stay.
	jobs[9].State, jobs[9].Ended, jobs[9].ExitCode = job.Running, nil, nil
	// Ended 20 hours ago: within a day, it stays although 300 jobs ended
	// after it.
	recent := now.Add(-20 * time.Hour)
	jobs[99].Ended = &recent
	writeVersion1(t, s, cid, 5001, jobs)

	st, err := s.Load()
	if err != nil {
		t.Fatalf("a version 1 state does not load: %v", err)
	}
	if len(st.Jobs) != 5000 || st.NextID != 5001 {
		t.Fatalf("version 1 state: %d jobs, next id %d; want 5000, 5001", len(st.Jobs), st.NextID)
	}

	var newID int
	if err := s.Update(func(st *State) error { newID = st.NewJob("new").ID; return nil }); err != nil {
		t.Fatal(err)
	}
	if newID != 5001 {
		t.Errorf("first job after the migration got #%d, want #5001", newID)
	}
	st, err = s.Load()
	if err != nil {
		t.Fatal(err)
	}
	want := append([]int{10, 100}, seq(4701, 5001)...)
	if got := ids(st.Jobs); !slices.Equal(got, want) {
		t.Errorf("state.json after the migration holds %d jobs %v...; want the running #10, #100 and #4701..#5000 that ended within a day, and the new one",
			len(got), got[:min(5, len(got))])
	}
	if st.Version != FormatVersion {
		t.Errorf("state.json version %d after an update, want %d", st.Version, FormatVersion)
	}
	hist, err := s.History()
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 5000-302 || len(historyLines(t, s)) != len(hist) {
		t.Errorf("history: %d jobs in %d lines, want %d jobs, one a line", len(hist), len(historyLines(t, s)), 5000-302)
	}
	all, err := s.All()
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(all); !slices.Equal(got, seq(1, 5001)) {
		t.Errorf("All returns %d jobs, want #1..#5001 each once", len(got))
	}
	// A moved job is unchanged, field for field, as the --json contract says.
	want1, _ := json.Marshal(jobs[0])
	got1, _ := json.Marshal(all[0])
	if !bytes.Equal(want1, got1) {
		t.Errorf("job #1 after its move:\n got %s\nwant %s", got1, want1)
	}

	// Lookups of an ended job by id, uid or name still work.
	for _, ref := range []string{"1", "#2", cid + "-3"} {
		if _, err := s.Find(ref); err != nil {
			t.Errorf("Find(%q) after the move: %v", ref, err)
		}
	}
	if _, err := s.Find("train-0"); !errors.Is(err, ErrAmbiguous) || !strings.Contains(err.Error(), "714 jobs are named train-0") {
		t.Errorf("a name shared by jobs in state.json and in the history: %v, want ambiguous over all 714", err)
	}
	if j, err := s.Find("1"); err != nil || j.ID != 1 || j.Command != jobs[0].Command {
		t.Errorf("Find(1) = %+v, %v", j, err)
	}
	if _, err := s.Find("9999"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Find(9999) = %v, want not found", err)
	}
}

// Only jobs the rule no longer keeps move: under the floor of KeepEnded
// nothing moves, and no more than MaxKeptEnded ended jobs stay, however
// recent.
func TestRetentionFloorAndCeiling(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	st := &State{Version: 1, ControllerID: "0123abcd", NextID: 1}
	for id := 1; id <= KeepEnded; id++ {
		st.Jobs = append(st.Jobs, endedJob("0123abcd", id, now.Add(-365*24*time.Hour)))
	}
	if moved := takeOld(st, now); len(moved) != 0 {
		t.Errorf("%d year-old jobs moved although only %d ended jobs exist", len(moved), KeepEnded)
	}
	st.Jobs = nil
	for id := 1; id <= MaxKeptEnded+50; id++ {
		st.Jobs = append(st.Jobs, endedJob("0123abcd", id, now.Add(-time.Duration(MaxKeptEnded+50-id)*time.Second)))
	}
	moved := takeOld(st, now)
	if !slices.Equal(ids(moved), seq(1, 50)) || len(st.Jobs) != MaxKeptEnded {
		t.Errorf("with %d jobs ended in the last hour, moved %v, kept %d; want the 50 oldest moved", MaxKeptEnded+50, ids(moved), len(st.Jobs))
	}
}

// oldState writes, in the current format, a state of n jobs that ended a
// month ago, none moved yet.
func oldState(t testing.TB, s *Store, n int) string {
	t.Helper()
	st0, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	cid := st0.ControllerID
	var jobs []*Job
	for id := 1; id <= n; id++ {
		jobs = append(jobs, endedJob(cid, id, time.Now().Add(-30*24*time.Hour+time.Duration(id)*time.Second)))
	}
	writeVersion1(t, s, cid, n+1, jobs)
	return cid
}

// A writer killed after appending to the history but before committing
// state.json leaves the moved jobs in both files: readers show each once,
// and the next writer cuts what the dead one appended before moving them
// again, so no job is listed twice in the history.
func TestKilledWriterBetweenHistoryAndState(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	oldState(t, s, KeepEnded+30)

	cmd := helperCmd(t, "hang-history", s.dir, "doomed")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	cmd.Process.Kill()
	cmd.Wait()
	if line != "ready\n" {
		t.Fatalf("helper did not reach the point after its history append: %s", stderr.String())
	}
	if n := len(historyLines(t, s)); n != 30 {
		t.Fatalf("the killed writer appended %d lines, want 30", n)
	}
	// And a torn line, as if a second writer died mid-append.
	f, _ := os.OpenFile(s.HistoryPath(), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"id":7,"uid":"tor`)
	f.Close()

	all, err := s.All()
	if err != nil {
		t.Fatalf("a torn last history line must be skipped: %v", err)
	}
	if got := ids(all); !slices.Equal(got, seq(1, KeepEnded+30)) {
		t.Errorf("after the crash All shows %v, want each of #1..#%d once", got, KeepEnded+30)
	}
	if hist, err := s.History(); err != nil || len(hist) != 0 {
		t.Errorf("History after the crash: %v %v; the jobs are still in state.json, so none", ids(hist), err)
	}

	addJobs(t, s, "after")
	if n := len(historyLines(t, s)); n != 30 {
		t.Errorf("history has %d lines after the next update, want the 30 moved jobs once each", n)
	}
	hist, err := s.History()
	if err != nil || !slices.Equal(ids(hist), seq(1, 30)) {
		t.Errorf("History = %v, %v; want #1..#30", ids(hist), err)
	}
	st, _ := s.Load()
	if len(st.Jobs) != KeepEnded+1 {
		t.Errorf("state.json holds %d jobs, want the %d newest ended and the new one", len(st.Jobs), KeepEnded)
	}
}

// A torn last line left by a crash is never fatal: readers skip it and the
// next writer cuts it before appending, so what follows reads.
func TestTornHistoryLineIsMendedByTheNextWriter(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	oldState(t, s, KeepEnded+1)
	addJobs(t, s, "a") // moves #1
	f, _ := os.OpenFile(s.HistoryPath(), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"id":99,"na`)
	f.Close()
	if got, err := s.History(); err != nil || !slices.Equal(ids(got), []int{1}) {
		t.Fatalf("History with a torn last line = %v, %v; want #1", ids(got), err)
	}
	// Make #2 old enough to move: the floor is full once #203 ends.
	if err := s.Update(func(st *State) error {
		j := st.Job(KeepEnded + 2)
		end := time.Now().UTC()
		j.State, j.Ended = job.Succeeded, &end
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got, err := s.History()
	if err != nil || !slices.Equal(ids(got), []int{1, 2}) {
		t.Errorf("History after the next move = %v, %v; want #1, #2", ids(got), err)
	}
	for i, l := range historyLines(t, s) {
		if !json.Valid([]byte(l)) {
			t.Errorf("history line %d is not whole JSON after the repair: %s", i+1, l)
		}
	}
}

// A bad line in the middle of the history hides a job: reading says which
// line, and launches (updates) still work.
func TestCorruptHistoryLineIsNamed(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	oldState(t, s, KeepEnded+3)
	addJobs(t, s, "a")
	lines := historyLines(t, s)
	if len(lines) != 3 {
		t.Fatalf("history has %d lines, want 3", len(lines))
	}
	lines[1] = strings.Replace(lines[1], `"name":"`, `"name":`, 1)
	if err := os.WriteFile(s.HistoryPath(), []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, read := range map[string]func() error{
		"All":     func() error { _, err := s.All(); return err },
		"History": func() error { _, err := s.History(); return err },
		"Find":    func() error { _, err := s.Find("#2"); return err },
	} {
		err := read()
		if err == nil {
			t.Errorf("%s accepted a history with a corrupt line", name)
			continue
		}
		for _, want := range []string{s.HistoryPath(), "line 2, column", "fix or delete line 2"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s error %q does not mention %q", name, err, want)
			}
		}
	}
	if _, err := s.Find("#5"); err != nil {
		t.Errorf("a job in state.json is found without reading the history: %v", err)
	}
	addJobs(t, s, "b")
	if st, err := s.Load(); err != nil || len(st.Jobs) != KeepEnded+2 {
		t.Errorf("updates must work beside a corrupt history: %v", err)
	}
}

// With state.json moved aside (the advice for a corrupt one), the history
// stays: new jobs must not reuse its ids, or `sshq logs 3` would be two jobs.
func TestFreshStateBesideHistoryKeepsIDsUnique(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	oldState(t, s, KeepEnded+5)
	addJobs(t, s, "a") // moves #1..#5
	if err := os.Rename(s.Path(), s.Path()+".broken"); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	var id int
	if err := s2.Update(func(st *State) error { id = st.NewJob("b").ID; return nil }); err != nil {
		t.Fatal(err)
	}
	if id != 6 {
		t.Errorf("first job of a fresh state beside a history of #1..#5 got #%d, want #6", id)
	}
	all, err := s2.All()
	if err != nil || !slices.Equal(ids(all), seq(1, 6)) {
		t.Errorf("All = %v, %v; want #1..#6", ids(all), err)
	}
}

// An empty state.json (a truncating editor, a full disk under another tool)
// gets the same answer as any corruption; it used to panic.
func TestEmptyStateIsCorruptNotAPanic(t *testing.T) {
	t.Parallel()
	for _, content := range []string{"", " \n\t\n"} {
		s := openTemp(t)
		addJobs(t, s, "a")
		if err := os.WriteFile(s.Path(), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, loadErr := s.Load()
		updErr := s.Update(func(st *State) error { st.NewJob("b"); return nil })
		_, findErr := s.Find("1")
		for _, err := range []error{loadErr, updErr, findErr} {
			if err == nil {
				t.Fatalf("state.json of %q was accepted", content)
			}
			for _, want := range []string{s.Path() + " is corrupt", "empty", "cp " + filepath.Join(s.dir, BackupFile)} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		}
		if now, _ := os.ReadFile(s.Path()); string(now) != content {
			t.Errorf("an empty state.json was overwritten with %q", now)
		}
	}
}
