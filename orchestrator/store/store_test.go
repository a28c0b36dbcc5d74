package store

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// The test binary re-executes itself as a separate sshq-like process when
// helperEnv is set: flock only excludes across processes (open files), so
// only real processes prove that no update is lost.
const (
	helperEnv     = "SSHQ_STORE_TEST_HELPER"
	helperHomeEnv = "SSHQ_STORE_TEST_HOME"
	helperNameEnv = "SSHQ_STORE_TEST_NAME"
)

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "add", "hang", "hang-history":
		os.Exit(helperAdd(os.Getenv(helperEnv)))
	case "launch":
		os.Exit(helperLaunch())
	default:
		fmt.Fprintln(os.Stderr, "unknown helper", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// helperAdd opens the store and adds one job. In mode hang it stops for
// good once the new state.json is written to its temp file, in mode
// hang-history once it has appended to the history, says "ready", and waits
// to be killed.
func helperAdd(mode string) int {
	hang := func() {
		fmt.Println("ready")
		select {}
	}
	switch mode {
	case "hang":
		testHookTempWritten = hang
	case "hang-history":
		testHookHistoryAppended = hang
	}
	s, err := Open(os.Getenv(helperHomeEnv))
	if err == nil {
		err = s.Update(func(st *State) error {
			st.NewJob(os.Getenv(helperNameEnv))
			return nil
		})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func helperCmd(t *testing.T, mode, home, name string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperHomeEnv+"="+home, helperNameEnv+"="+name)
	return cmd
}

func addJobs(t testing.TB, s *Store, names ...string) {
	t.Helper()
	err := s.Update(func(st *State) error {
		for _, n := range names {
			st.NewJob(n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func openTemp(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "sshq"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConcurrentProcessesLoseNoUpdate(t *testing.T) {
	t.Parallel()
	// No Open beforehand: the 20 processes also race to create the state,
	// and must still agree on one controller id.
	home := filepath.Join(t.TempDir(), "sshq")
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			out, err := helperCmd(t, "add", home, fmt.Sprintf("job%d", i)).CombinedOutput()
			if err != nil {
				errs[i] = fmt.Errorf("helper %d: %v: %s", i, err, out)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}

	data, err := os.ReadFile(filepath.Join(home, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(data) {
		t.Fatalf("state.json is not valid JSON:\n%s", data)
	}
	st, err := (&Store{dir: home}).Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Jobs) != n {
		t.Fatalf("%d processes each added a job, state has %d jobs", n, len(st.Jobs))
	}
	ids := map[int]bool{}
	var names []string
	for _, j := range st.Jobs {
		ids[j.ID] = true
		names = append(names, j.Name)
		if want := fmt.Sprintf("%s-%d", st.ControllerID, j.ID); j.UID != want {
			t.Errorf("job #%d has uid %q, want %q (one controller id for all)", j.ID, j.UID, want)
		}
	}
	if len(ids) != n {
		t.Errorf("ids are not distinct: %v", ids)
	}
	sort.Strings(names)
	for i := range n {
		if _, found := slices.BinarySearch(names, fmt.Sprintf("job%d", i)); !found {
			t.Errorf("job%d was lost; have %v", i, names)
		}
	}
	if st.NextID != n+1 {
		t.Errorf("next_id = %d after %d jobs, want %d", st.NextID, n, n+1)
	}
}

func TestKilledWriterLeavesPreviousState(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	addJobs(t, s, "before")
	before, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}

	cmd := helperCmd(t, "hang", s.dir, "doomed")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line == "ready\n"
	}()
	select {
	case ok := <-ready:
		if !ok {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("helper did not reach the point after its temp file was written: %s", stderr.String())
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper never wrote its temp file: %s", stderr.String())
	}

	// The writer holds the lock now; reads must not wait for it.
	loaded := make(chan error, 1)
	go func() {
		st, err := s.Load()
		if err == nil && len(st.Jobs) != 1 {
			err = fmt.Errorf("load during a write saw %d jobs, want the 1 committed", len(st.Jobs))
		}
		loaded <- err
	}()
	select {
	case err := <-loaded:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(5 * time.Second):
		t.Error("Load blocked behind a writer holding the lock")
	}

	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no deferred cleanup runs
		t.Fatal(err)
	}
	cmd.Wait()

	temps, _ := filepath.Glob(filepath.Join(s.dir, tempPrefix+"*"))
	if len(temps) != 1 {
		t.Fatalf("expected the killed writer's temp file, found %v", temps)
	}
	after, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatalf("state.json changed although its writer was killed before the rename:\nbefore %s\nafter  %s", before, after)
	}

	addJobs(t, s, "after")
	st, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, j := range st.Jobs {
		names = append(names, j.Name)
	}
	if !slices.Equal(names, []string{"before", "after"}) {
		t.Errorf("jobs after the crash and one more update = %v, want [before after]", names)
	}
	if temps, _ := filepath.Glob(filepath.Join(s.dir, tempPrefix+"*")); len(temps) != 0 {
		t.Errorf("the stray temp file was not cleaned by the next update: %v", temps)
	}
}

func TestCorruptStateIsAClearErrorAndNotOverwritten(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	addJobs(t, s, "a")
	addJobs(t, s, "b")
	good, _ := os.ReadFile(s.Path())
	// A hand edit that drops a quote on job "b", on line 3 of the file.
	lines := strings.Split(string(good), "\n")
	if !strings.Contains(lines[2], `"name":"b"`) {
		t.Fatalf("expected job b on line 3 of state.json:\n%s", good)
	}
	lines[2] = strings.Replace(lines[2], `"name":"b"`, `"name":b"`, 1)
	bad := []byte(strings.Join(lines, "\n"))
	if err := os.WriteFile(s.Path(), bad, 0o600); err != nil {
		t.Fatal(err)
	}
	col := strings.Index(lines[2], `b"`) + 1

	_, loadErr := s.Load()
	updErr := s.Update(func(st *State) error { st.NewJob("c"); return nil })
	for _, err := range []error{loadErr, updErr} {
		if err == nil {
			t.Fatal("a corrupt state.json was accepted")
		}
		msg := err.Error()
		for _, want := range []string{s.Path(), fmt.Sprintf("line 3, column %d", col), "cp " + filepath.Join(s.dir, BackupFile)} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not mention %q", msg, want)
			}
		}
	}
	if now, _ := os.ReadFile(s.Path()); !bytes.Equal(now, bad) {
		t.Error("Update overwrote a corrupt state.json")
	}

	// The advice works: the backup is the version before the last write.
	bak, err := os.ReadFile(filepath.Join(s.dir, BackupFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.Path(), bak, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := s.Load()
	if err != nil {
		t.Fatalf("restored backup does not load: %v", err)
	}
	if len(st.Jobs) != 1 || st.Jobs[0].Name != "a" {
		t.Errorf("backup holds %d jobs, want the 1 before the last write", len(st.Jobs))
	}
}

func TestNewerFormatIsRefused(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	os.WriteFile(s.Path(), []byte(`{"version":99,"controller_id":"abcd0123","next_id":1,"jobs":[]}`), 0o600)
	_, err := s.Load()
	if err == nil || !strings.Contains(err.Error(), "upgrade sshq") {
		t.Errorf("state from a newer sshq: got %v, want an error saying to upgrade", err)
	}
}

func TestUpdateErrorWritesNothing(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	addJobs(t, s, "a")
	before, _ := os.ReadFile(s.Path())
	boom := errors.New("boom")
	err := s.Update(func(st *State) error {
		st.NewJob("half-done")
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update returned %v, want the callback's error", err)
	}
	if after, _ := os.ReadFile(s.Path()); !bytes.Equal(before, after) {
		t.Error("a failed Update changed state.json")
	}
}

func TestIDsAreNeverReused(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	addJobs(t, s, "a", "b", "c")
	if err := s.Update(func(st *State) error {
		if !st.Delete(3) || !st.Delete(2) {
			return errors.New("jobs #2 and #3 not found")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var got int
	s.Update(func(st *State) error { got = st.NewJob("d").ID; return nil })
	if got != 4 {
		t.Errorf("after deleting #2 and #3 the next job got #%d, want #4", got)
	}
}

func TestOpenCreatesPrivateHomeAndKeepsControllerID(t *testing.T) {
	t.Parallel()
	home := filepath.Join(t.TempDir(), "a", "sshq")
	s, err := Open(home)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(home)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("home mode %v, want 0700", fi.Mode().Perm())
	}
	st1, _ := s.Load()
	s2, err := Open(home)
	if err != nil {
		t.Fatal(err)
	}
	st2, _ := s2.Load()
	if len(st1.ControllerID) != 8 || st1.ControllerID != st2.ControllerID {
		t.Errorf("controller id %q then %q; want one stable 8-hex-digit id", st1.ControllerID, st2.ControllerID)
	}
	other, _ := Open(filepath.Join(t.TempDir(), "sshq"))
	st3, _ := other.Load()
	if st3.ControllerID == st1.ControllerID {
		t.Errorf("two controllers got the same id %q", st1.ControllerID)
	}
}

func TestFind(t *testing.T) {
	t.Parallel()
	st := &State{Version: 1, ControllerID: "0123abcd", NextID: 1}
	for _, n := range []string{"train", "eval", "train", "42", "solo"} {
		st.NewJob(n)
	}
	tests := []struct {
		ref     string
		wantID  int
		wantErr error
		errText string
	}{
		{ref: "2", wantID: 2},
		{ref: "#2", wantID: 2},
		{ref: " #5 ", wantID: 5},
		{ref: "0123abcd-3", wantID: 3},
		{ref: "eval", wantID: 2},
		{ref: "42", wantID: 4}, // no job #42, so the name applies
		{ref: "train", wantErr: ErrAmbiguous, errText: "2 jobs are named train: #1, #3; use the id"},
		{ref: "#42", wantErr: ErrNotFound, errText: "no job #42"},
		{ref: "9", wantErr: ErrNotFound, errText: "no job #9"},
		{ref: "nope", wantErr: ErrNotFound, errText: `"nope"`},
		{ref: "ffffffff-1", wantErr: ErrNotFound},
		{ref: "#x", wantErr: ErrNotFound, errText: "not a job id"},
		{ref: "", wantErr: ErrNotFound},
	}
	for _, tc := range tests {
		j, err := st.Find(tc.ref)
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) || !strings.Contains(fmt.Sprint(err), tc.errText) {
				t.Errorf("Find(%q) = %v, want %v containing %q", tc.ref, err, tc.wantErr, tc.errText)
			}
			continue
		}
		if err != nil || j.ID != tc.wantID {
			t.Errorf("Find(%q) = %v, %v; want #%d", tc.ref, j, err, tc.wantID)
		}
	}
}

func TestFindAmbiguousListsNewestFew(t *testing.T) {
	t.Parallel()
	st := &State{Version: 1, ControllerID: "0123abcd", NextID: 1}
	for range 12 {
		st.NewJob("train")
	}
	_, err := st.Find("train")
	want := "12 jobs are named train: #8, #9, #10, #11, #12 and 7 older; use the id"
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
}

// The job's JSON is what `sshq queue --json` prints, so its keys are a
// contract: all present, snake_case, unknowns null, lists [].
func TestJobJSONContract(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	addJobs(t, s, "train")
	st, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(st.Jobs[0])
	var m map[string]any
	json.Unmarshal(data, &m)
	want := []string{"accelerator", "backend", "command", "cores", "cpus", "ended", "env_names", "exit_code", "gpu_uuids", "gpus", "id",
		"last_seen", "mem_limit_mib", "name", "node", "num_gpus", "queue_position", "reason", "slurm_dir", "slurm_id", "started", "state",
		"submitted", "task_file", "time_limit_s", "uid", "user", "workdir"}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if !slices.Equal(keys, want) {
		t.Errorf("job JSON keys\n got %v\nwant %v", keys, want)
	}
	for _, k := range []string{"started", "ended", "exit_code", "queue_position", "last_seen", "mem_limit_mib", "time_limit_s"} {
		if m[k] != nil {
			t.Errorf("%s of a new job = %v, want null", k, m[k])
		}
	}
	for _, k := range []string{"gpus", "gpu_uuids", "env_names"} {
		if l, ok := m[k].([]any); !ok || len(l) != 0 {
			t.Errorf("%s of a new job = %v, want []", k, m[k])
		}
	}
	if m["state"] != "SUBMITTING" {
		t.Errorf("state of a new job = %v, want SUBMITTING", m["state"])
	}
	if _, err := time.Parse(time.RFC3339, m["submitted"].(string)); err != nil {
		t.Errorf("submitted is not RFC 3339: %v", err)
	}
}
