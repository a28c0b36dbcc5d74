package store

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/gofrs/flock"
)

// File names inside the home directory.
const (
	StateFile   = "state.json"
	BackupFile  = "state.json.bak"
	LockFile    = "state.json.lock"
	HistoryFile = "history.jsonl"
	tempPrefix  = "state.json.tmp-"
)

// LockTimeout bounds how long Update waits for another sshq process to finish
// its update. Updates take milliseconds, so reaching it means a process is
// stuck while holding the lock.
var LockTimeout = 30 * time.Second

// Store is the job store in one sshq home directory. It holds no open files
// between calls, so any number of Stores, in any number of processes, may
// share a directory.
type Store struct {
	dir string
}

// Open returns the store in home, creating home (mode 0700: it holds the
// record of what ran where) and a state.json with a fresh controller id if
// they do not exist yet.
func Open(home string) (*Store, error) {
	if home == "" {
		return nil, errors.New("sshq home directory is empty; set SSHQ_HOME or HOME")
	}
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, fmt.Errorf("creating sshq home: %w", err)
	}
	s := &Store{dir: home}
	if _, err := os.Stat(s.Path()); errors.Is(err, fs.ErrNotExist) {
		// Update creates the state (and so the controller id) under the lock,
		// so two first runs racing agree on one id.
		if err := s.Update(func(*State) error { return nil }); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("reading the job store: %w", err)
	}
	return s, nil
}

// Path is the state file's path.
func (s *Store) Path() string { return filepath.Join(s.dir, StateFile) }

// HistoryPath is the history file's path.
func (s *Store) HistoryPath() string { return filepath.Join(s.dir, HistoryFile) }

// Load returns a snapshot of state.json: the unfinished jobs and the
// recently ended ones, not the history (see [Store.All]). It takes no lock:
// writers replace state.json by rename, so it always reads one whole
// version. A missing state.json (removed after Open) reads as an empty state
// with no controller id.
func (s *Store) Load() (*State, error) {
	st, _, err := s.read()
	return st, err
}

// Update is the only way to change the state: under an exclusive lock it
// reads state.json, calls fn, and if fn returns nil writes the result back
// atomically, first moving the ended jobs that are no longer recent (see
// [KeepEnded]) to history.jsonl. If fn returns an error nothing is written
// and Update returns that error unchanged. fn must not do network I/O: every
// other sshq process waits for the lock while it runs.
func (s *Store) Update(fn func(*State) error) error {
	lk := flock.New(filepath.Join(s.dir, LockFile), flock.SetPermissions(0o600))
	ctx, cancel := context.WithTimeout(context.Background(), LockTimeout)
	defer cancel()
	// Polling (every 2 ms) rather than a blocking flock, so that a stuck
	// holder yields an error that says what to do instead of a hang.
	ok, err := lk.TryLockContext(ctx, 2*time.Millisecond)
	if !ok || err != nil {
		if err == nil || errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("another sshq process has held %s for %v; it is stuck: find it (`lsof %s`), stop it and retry",
				lk.Path(), LockTimeout, lk.Path())
		}
		return fmt.Errorf("locking the job store: %w", err)
	}
	defer lk.Close() // unlocks

	s.removeStrayTemps()
	st, size, err := s.read()
	if err != nil {
		return err
	}
	exists := size >= 0
	if !exists {
		if st, err = newState(); err != nil {
			return err
		}
	}
	// A history that outlived its state.json (moved aside after a
	// corruption, or restored from an old copy) still holds ids: new jobs
	// must not reuse them.
	s.mendHistory(st)
	if err := fn(st); err != nil {
		return err
	}
	if err := normalize(st); err != nil {
		return err
	}
	s.retire(st, time.Now())
	return s.write(st, exists)
}

// read returns the current state and the size of state.json, -1 if it does
// not exist.
func (s *Store) read() (*State, int, error) {
	data, err := os.ReadFile(s.Path())
	if errors.Is(err, fs.ErrNotExist) {
		return &State{Version: FormatVersion, NextID: 1, Jobs: []*Job{}}, -1, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("reading the job store: %w", err)
	}
	st, err := decode(data)
	if err != nil {
		return nil, 0, s.corrupt(data, err)
	}
	return st, len(data), nil
}

func (s *Store) corrupt(data []byte, err error) error {
	where := ""
	var off int64 = -1
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case len(bytes.TrimSpace(data)) == 0:
		// A crash cannot leave this (writes are atomic); a full disk under
		// another tool, or a truncating editor, can.
		err = errors.New("the file is empty")
	case errors.As(err, &syn):
		off = syn.Offset
	case errors.As(err, &typ):
		off = typ.Offset
	}
	if off >= 0 {
		line, col := lineCol(data, off)
		where = fmt.Sprintf(" at line %d, column %d (byte %d)", line, col, off)
	}
	bak := filepath.Join(s.dir, BackupFile)
	fix := fmt.Sprintf("fix it by hand, or move it aside (`mv %s %s.broken`) to start an empty job list; jobs on nodes keep running but this controller forgets them",
		s.Path(), s.Path())
	if _, serr := os.Stat(bak); serr == nil {
		fix = fmt.Sprintf("the previous version is %s: check it and restore it with `cp %s %s`, or fix the file by hand",
			bak, bak, s.Path())
	}
	return fmt.Errorf("job store %s is corrupt%s: %v; sshq will not overwrite it; %s", s.Path(), where, err, fix)
}

// lineCol turns a byte offset into a 1-based line and column. encoding/json
// reports the offset just past the offending byte, and len(data) for an
// unexpected end, which may be 0.
func lineCol(data []byte, off int64) (line, col int) {
	off = min(max(off, 1), int64(len(data))+1)
	before := data[:off-1]
	line = bytes.Count(before, []byte{'\n'}) + 1
	col = len(before) - bytes.LastIndexByte(before, '\n')
	return line, col
}

// stateFile is state.json as stored; State keeps historySize unexported so
// that an Update callback cannot move the crash-repair mark.
type stateFile struct {
	Version      int    `json:"version"`
	ControllerID string `json:"controller_id"`
	NextID       int    `json:"next_id"`
	HistorySize  int64  `json:"history_size"`
	Jobs         []*Job `json:"jobs"`
}

// decode parses a state file.
func decode(data []byte) (*State, error) {
	var f stateFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	st := &State{Version: f.Version, ControllerID: f.ControllerID, NextID: f.NextID, Jobs: f.Jobs, historySize: f.HistorySize}
	if st.Version > FormatVersion {
		return nil, fmt.Errorf("format version %d is newer than this sshq understands (%d); upgrade sshq", st.Version, FormatVersion)
	}
	if st.Version < 1 {
		return nil, fmt.Errorf("no format version; this is not an sshq state file")
	}
	if len(st.ControllerID) == 0 {
		return nil, fmt.Errorf("no controller_id")
	}
	if st.historySize < 0 {
		return nil, fmt.Errorf("history_size is negative")
	}
	for i, j := range st.Jobs {
		if j == nil {
			return nil, fmt.Errorf("job %d of the list is null", i+1)
		}
		if i > 0 && j.ID <= st.Jobs[i-1].ID {
			return nil, fmt.Errorf("job #%d is listed after #%d; jobs must be in ascending, unique id order", j.ID, st.Jobs[i-1].ID)
		}
	}
	if err := normalize(st); err != nil {
		return nil, err
	}
	return st, nil
}

// normalize keeps the file's promises (jobs sorted by id, [] not null, next_id
// past every id) whatever an Update callback did.
func normalize(st *State) error {
	if st.Jobs == nil {
		st.Jobs = []*Job{}
	}
	st.Jobs = slices.DeleteFunc(st.Jobs, func(j *Job) bool { return j == nil })
	if !slices.IsSortedFunc(st.Jobs, byID) {
		slices.SortStableFunc(st.Jobs, byID)
	}
	for _, j := range st.Jobs {
		normalizeJob(j)
	}
	for i := 1; i < len(st.Jobs); i++ {
		if st.Jobs[i].ID == st.Jobs[i-1].ID {
			return fmt.Errorf("two jobs have id #%d; every job needs its own id (add jobs with State.NewJob)", st.Jobs[i].ID)
		}
	}
	if n := len(st.Jobs); n > 0 && st.NextID <= st.Jobs[n-1].ID {
		st.NextID = st.Jobs[n-1].ID + 1
	}
	if st.NextID < 1 {
		st.NextID = 1
	}
	return nil
}

// normalizeJob makes lists [] rather than null, as the JSON contract says.
func normalizeJob(j *Job) {
	if j.GPUs == nil {
		j.GPUs = []int{}
	}
	if j.GPUUUIDs == nil {
		j.GPUUUIDs = []string{}
	}
	if j.EnvNames == nil {
		j.EnvNames = []string{}
	}
}

func byID(a, b *Job) int { return a.ID - b.ID }

// encodeTo writes one job per line: grep- and diff-friendly, and a parse
// error's line number then points at one job.
func encodeTo(w *bufio.Writer, st *State) error {
	id, err := json.Marshal(st.ControllerID)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, `{"version":%d,"controller_id":%s,"next_id":%d,"history_size":%d,"jobs":[`,
		st.Version, id, st.NextID, st.historySize)
	for i, j := range st.Jobs {
		if i > 0 {
			w.WriteByte(',')
		}
		w.WriteByte('\n')
		b, err := json.Marshal(j)
		if err != nil {
			return err
		}
		w.Write(b)
	}
	if len(st.Jobs) > 0 {
		w.WriteByte('\n')
	}
	w.WriteString("]}\n")
	return w.Flush()
}

// testHookTempWritten, when set by a test, runs after the temp file is
// durable and before it replaces state.json.
var testHookTempWritten func()

func (s *Store) write(st *State, exists bool) error {
	st.Version = FormatVersion
	failed := func(err error) error { return &WriteError{Path: s.Path(), Dir: s.dir, Err: err} }
	tmp, err := os.CreateTemp(s.dir, tempPrefix+"*") // mode 0600
	if err != nil {
		return failed(err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := encodeTo(bufio.NewWriterSize(tmp, 256<<10), st); err != nil {
		return failed(err)
	}
	if err := tmp.Sync(); err != nil {
		return failed(err)
	}
	if err := tmp.Close(); err != nil {
		return failed(err)
	}
	if testHookTempWritten != nil {
		testHookTempWritten()
	}
	if exists {
		// A hard link keeps the previous version for free. Failing to keep
		// it (a filesystem without hard links) must not block the update.
		bak := filepath.Join(s.dir, BackupFile)
		if err := os.Remove(bak); err == nil || errors.Is(err, fs.ErrNotExist) {
			_ = os.Link(s.Path(), bak)
		}
	}
	if err := os.Rename(tmp.Name(), s.Path()); err != nil {
		return failed(err)
	}
	committed = true
	// The update is in place now; some filesystems (FUSE, SMB) cannot fsync
	// a directory, which must not turn a done update into a reported failure.
	_ = syncDir(s.dir)
	return nil
}

// syncDir makes the rename durable: without it a power cut can bring back the
// old directory entry.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be opened for sync there; NTFS journals renames
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// removeStrayTemps deletes temp files of writers that died mid-update. It
// runs under the lock, and only the lock holder creates temp files, so every
// temp file seen here is an orphan. Names are unique per writer, so an orphan
// never blocks an update; this only keeps the directory tidy.
func (s *Store) removeStrayTemps() {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			_ = os.Remove(filepath.Join(s.dir, e.Name()))
		}
	}
}
