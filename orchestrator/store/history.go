package store

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// An ended job stays in state.json for KeepEndedFor after it ended, but the
// KeepEnded most recently ended jobs stay however old they are, and no more
// than MaxKeptEnded stay however young; the next Update moves the others to
// history.jsonl. Unfinished jobs always stay. The floor keeps `sshq logs`
// and `sshq wait` of the last jobs off the history file after a quiet week;
// the age keeps a day's jobs at hand; the ceiling bounds what every Update
// decodes and encodes when thousands of short jobs end in a day.
const (
	KeepEnded    = 200
	KeepEndedFor = 24 * time.Hour
	MaxKeptEnded = 2000
)

// endedAt is when j ended, for the retention rule. A hand-edited job may lack
// the time; the last sign of life stands in for it.
func endedAt(j *Job) time.Time {
	switch {
	case j.Ended != nil:
		return *j.Ended
	case j.LastSeen != nil:
		return *j.LastSeen
	}
	return j.Submitted
}

// takeOld removes from st the ended jobs that the retention rule no longer
// keeps and returns them in id order.
func takeOld(st *State, now time.Time) []*Job {
	var ended []*Job
	for _, j := range st.Jobs {
		if j.State.Terminal() {
			ended = append(ended, j)
		}
	}
	if len(ended) <= KeepEnded {
		return nil
	}
	slices.SortFunc(ended, func(a, b *Job) int { // newest first
		if c := endedAt(b).Compare(endedAt(a)); c != 0 {
			return c
		}
		return cmp.Compare(b.ID, a.ID)
	})
	old := map[int]bool{}
	for i, j := range ended[KeepEnded:] {
		if KeepEnded+i >= MaxKeptEnded || now.Sub(endedAt(j)) >= KeepEndedFor {
			old[j.ID] = true
		}
	}
	if len(old) == 0 {
		return nil
	}
	moved := make([]*Job, 0, len(old))
	st.Jobs = slices.DeleteFunc(st.Jobs, func(j *Job) bool {
		if old[j.ID] {
			moved = append(moved, j)
			return true
		}
		return false
	})
	return moved
}

// retire moves the jobs that the retention rule no longer keeps from st to
// history.jsonl. Moving is housekeeping: if the history cannot be written
// (a full disk, a file made read-only) the jobs stay in state.json, the
// update that a launch or a cancel needs still happens, and a later update
// moves them.
func (s *Store) retire(st *State, now time.Time) {
	old := takeOld(st, now)
	if len(old) == 0 {
		return
	}
	if err := s.appendHistory(st, old); err != nil {
		st.Jobs = append(st.Jobs, old...)
		slices.SortFunc(st.Jobs, byID)
	}
}

// testHookHistoryAppended, when set by a test, runs after jobs are durable
// in history.jsonl and before the state.json without them is written.
var testHookHistoryAppended func()

// appendHistory appends jobs to history.jsonl, one JSON object a line, and
// makes them durable before state.json, the commit point, stops holding
// them. It runs under the state lock.
func (s *Store) appendHistory(st *State, jobs []*Job) error {
	_, statErr := os.Stat(s.HistoryPath())
	created := errors.Is(statErr, fs.ErrNotExist)
	f, err := os.OpenFile(s.HistoryPath(), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	moving := make(map[int]bool, len(jobs))
	for _, j := range jobs {
		moving[j.ID] = true
	}
	size, err := repairHistory(f, st, func(id int) bool { return moving[id] || st.Job(id) != nil })
	if err != nil {
		return err
	}
	st.historySize = size
	var b bytes.Buffer
	for _, j := range jobs {
		line, err := json.Marshal(j)
		if err != nil {
			return err
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	if _, err := f.WriteAt(b.Bytes(), size); err != nil {
		_ = f.Truncate(size)
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Truncate(size)
		return err
	}
	if created {
		// The new file's directory entry must be durable before the
		// state.json that no longer holds these jobs.
		if err := syncDir(s.dir); err != nil {
			return err
		}
	}
	if testHookHistoryAppended != nil {
		testHookHistoryAppended()
	}
	st.historySize = size + int64(b.Len())
	return nil
}

// mendHistory runs before an Update's callback: if history.jsonl is not as
// the last commit left it, it is repaired now, so that a job the callback
// adds gets an id past any that the history holds.
func (s *Store) mendHistory(st *State) {
	fi, err := os.Stat(s.HistoryPath())
	if err != nil || fi.Size() == st.historySize {
		return
	}
	f, err := os.OpenFile(s.HistoryPath(), os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer f.Close()
	if size, err := repairHistory(f, st, func(id int) bool { return st.Job(id) != nil }); err == nil {
		st.historySize = size
	}
}

// repairHistory returns the length of history.jsonl's committed content,
// having cut what a crashed writer left and moved st.NextID past any id it
// did not expect. known tells the jobs of the state as read. It runs under
// the state lock, so nobody else appends.
//
// state.json records the history's length at its last commit. Bytes past it
// that hold only known jobs (or a torn part of one) come from
// a writer that died between appending and committing: they are cut, and the
// jobs move again. Anything else past it (a history kept after state.json was
// moved aside or restored from an old copy) is kept, only a torn last line
// is mended, and readers drop any job that is also in state.json.
func repairHistory(f *os.File, st *State, known func(id int) bool) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size, mark := fi.Size(), st.historySize
	if size == mark {
		return size, nil // the common case: nothing happened since the last commit
	}
	from := int64(0)
	if size > mark && mark > 0 {
		from = mark - 1 // one byte early, to see that the mark ends a line
	}
	buf := make([]byte, size-from)
	if _, err := f.ReadAt(buf, from); err != nil && err != io.EOF {
		return 0, err
	}
	crashed := size > mark
	if from > 0 {
		crashed = crashed && buf[0] == '\n'
		buf = buf[1:]
	}
	lines, tail := splitLines(buf)
	maxID := 0
	for _, l := range lines {
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		var h struct {
			ID int `json:"id"`
		}
		if json.Unmarshal(l, &h) != nil || h.ID < 1 {
			crashed = false
			continue
		}
		maxID = max(maxID, h.ID)
		if !known(h.ID) {
			crashed = false
		}
	}
	if crashed {
		return mark, f.Truncate(mark)
	}
	if len(tail) > 0 {
		if j, err := parseJob(tail); err == nil {
			maxID = max(maxID, j.ID)
			if _, err := f.WriteAt([]byte{'\n'}, size); err != nil {
				return 0, err
			}
			size++
		} else {
			size -= int64(len(tail))
			if err := f.Truncate(size); err != nil {
				return 0, err
			}
		}
	}
	if maxID >= st.NextID {
		st.NextID = maxID + 1
	}
	return size, nil
}

// splitLines returns the newline-terminated lines of data (without their
// newlines) and what follows the last newline.
func splitLines(data []byte) (lines [][]byte, tail []byte) {
	lines = make([][]byte, 0, bytes.Count(data, []byte{'\n'}))
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return lines, data
		}
		lines = append(lines, data[:i])
		data = data[i+1:]
	}
}

func parseJob(line []byte) (*Job, error) {
	j := new(Job)
	if err := json.Unmarshal(line, j); err != nil {
		return nil, err
	}
	if j.ID < 1 {
		return nil, errors.New("no job id")
	}
	normalizeJob(j)
	return j, nil
}

// History returns the ended jobs that have left state.json for
// history.jsonl, in id order. It reads the whole file, so it is for commands
// that ask for old jobs; [Store.All] gives them together with state.json's.
func (s *Store) History() ([]*Job, error) {
	_, hist, err := s.readAll()
	return hist, err
}

// All returns every job of this controller, from state.json and from
// history.jsonl, in id order, each once.
func (s *Store) All() ([]*Job, error) {
	st, hist, err := s.readAll()
	if err != nil {
		return nil, err
	}
	all := make([]*Job, 0, len(st.Jobs)+len(hist))
	all = append(all, hist...)
	all = append(all, st.Jobs...)
	slices.SortFunc(all, byID)
	return all, nil
}

// Find resolves a job reference as [State.Find] does, over every job: an id
// or uid not in state.json, or a name, is looked up in the history too, so
// `sshq logs 4` still finds job 4 a month after it ended. A name is ambiguous
// if any two jobs, ended long ago or not, share it.
func (s *Store) Find(ref string) (*Job, error) {
	st, err := s.Load()
	if err != nil {
		return nil, err
	}
	if j, err := st.Find(ref); err == nil {
		r := strings.TrimSpace(ref)
		if strings.TrimPrefix(r, "#") == strconv.Itoa(j.ID) || r == j.UID {
			return j, nil // ids and uids are unique: the history cannot change the answer
		}
	}
	all, err := s.All()
	if err != nil {
		return nil, err
	}
	return (&State{Jobs: all}).Find(ref)
}

// readAll reads state.json, then history.jsonl. In that order a job that a
// writer moves meanwhile is in the state read, or in the history read, or in
// both, never in neither; a job in both is taken from state.json.
func (s *Store) readAll() (*State, []*Job, error) {
	st, err := s.Load()
	if err != nil {
		return nil, nil, err
	}
	hist, err := s.readHistory()
	if err != nil {
		return nil, nil, err
	}
	hist = slices.DeleteFunc(hist, func(j *Job) bool { return st.Job(j.ID) != nil })
	return st, hist, nil
}

// readHistory parses history.jsonl, on every core: it is the one file that
// grows without bound. A torn last line (a writer that died, or one still
// writing) is skipped; any other line that does not parse is an error naming
// it, since skipping it would hide a job. A job listed twice (a writer that
// died between appending and committing, then an Update that moved it again)
// is taken from its last line.
func (s *Store) readHistory() ([]*Job, error) {
	data, err := os.ReadFile(s.HistoryPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the job history: %w", err)
	}
	lines, tail := splitLines(data)
	jobs := make([]*Job, len(lines), len(lines)+1)
	errs := make([]error, len(lines))
	parts := min(runtime.GOMAXPROCS(0), len(lines)/256+1)
	var wg sync.WaitGroup
	for p := range parts {
		wg.Go(func() {
			for i := p * len(lines) / parts; i < (p+1)*len(lines)/parts; i++ {
				if len(bytes.TrimSpace(lines[i])) > 0 {
					jobs[i], errs[i] = parseJob(lines[i])
				}
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, s.corruptHistory(i+1, lines[i], err)
		}
	}
	if j, err := parseJob(tail); err == nil {
		jobs = append(jobs, j) // whole but for its newline: a hand edit, not a tear
	}
	jobs = slices.DeleteFunc(jobs, func(j *Job) bool { return j == nil })
	slices.SortStableFunc(jobs, byID)
	out := jobs[:0]
	for i, j := range jobs {
		if i+1 < len(jobs) && jobs[i+1].ID == j.ID {
			continue // a later line of the same job supersedes this one
		}
		out = append(out, j)
	}
	return out, nil
}

func (s *Store) corruptHistory(line int, text []byte, err error) error {
	where := fmt.Sprintf("line %d", line)
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var off int64 = -1
	switch {
	case errors.As(err, &syn):
		off = syn.Offset
	case errors.As(err, &typ):
		off = typ.Offset
	}
	if off >= 0 {
		_, col := lineCol(text, off)
		where += fmt.Sprintf(", column %d", col)
	}
	return fmt.Errorf("job history %s is corrupt at %s: %v; each line is one ended job: fix or delete line %d by hand (`sed -n %dp %s` shows it); sshq only appends to this file and will not rewrite it",
		s.HistoryPath(), where, err, line, line, s.HistoryPath())
}
