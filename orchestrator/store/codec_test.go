package store

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sshq/sshq/orchestrator/job"
)

func ptr[T any](v T) *T { return &v }

// randomJob fills every field, with the strings and times that stress a
// codec: quotes, backslashes, control characters, invalid UTF-8, non-UTC
// zones, nanoseconds, nils and empties.
func randomJob(r *rand.Rand, id int) *Job {
	strs := []string{"", "train", `a "quoted" \ name`, "tab\there\nnewline", "héllo wörld ✓", "bad\xffutf8",
		"<html>&amp;", "\u2028sep", "ctl\x01\x1f", strings.Repeat("x", 300)}
	str := func() string { return strs[r.IntN(len(strs))] }
	zones := []*time.Location{time.UTC, time.FixedZone("X", 5*3600+1800), time.FixedZone("", -7*3600)}
	tm := func() time.Time {
		t := time.Unix(r.Int64N(4e9), 0).In(zones[r.IntN(len(zones))])
		switch r.IntN(3) {
		case 1:
			t = t.Add(time.Duration(r.IntN(1e9)))
		case 2:
			t = t.Add(time.Duration(r.IntN(1000)) * time.Millisecond)
		}
		return t
	}
	maybeTime := func() *time.Time {
		if r.IntN(3) == 0 {
			return nil
		}
		return ptr(tm())
	}
	maybeInt := func() *int {
		if r.IntN(3) == 0 {
			return nil
		}
		return ptr(r.IntN(300) - 100)
	}
	ints := func() []int {
		if r.IntN(4) == 0 {
			return nil
		}
		v := make([]int, r.IntN(4))
		for i := range v {
			v[i] = r.IntN(16)
		}
		return v
	}
	strl := func() []string {
		if r.IntN(4) == 0 {
			return nil
		}
		v := make([]string, r.IntN(4))
		for i := range v {
			v[i] = str()
		}
		return v
	}
	return &Job{
		ID: id, UID: fmt.Sprintf("abcd0123-%d", id), Name: str(), User: str(), Node: str(), GPUs: ints(),
		GPUUUIDs: strl(), Accelerator: str(), NumGPUs: r.IntN(9), State: job.State(str()), Submitted: tm(),
		Started: maybeTime(), Ended: maybeTime(), ExitCode: maybeInt(), Workdir: str(), Command: str(),
		TaskFile: str(), QueuePosition: maybeInt(), EnvNames: strl(), LastSeen: maybeTime(),
	}
}

func randomState(seed uint64, n int) *State {
	r := rand.New(rand.NewPCG(seed, 1))
	st := &State{Version: 1, ControllerID: "abcd0123", NextID: n + 1}
	for i := 1; i <= n; i++ {
		st.Jobs = append(st.Jobs, randomJob(r, i))
	}
	return st
}

// The fast encoder must write what encoding/json reads back as the same
// jobs, and the fast decoder must read it exactly as encoding/json does.
func TestCodecAgreesWithEncodingJSON(t *testing.T) {
	t.Parallel()
	for seed := range uint64(21) {
		n := 200
		if seed == 20 {
			n = 4000 // over 1 MiB: decoded in two halves, on two goroutines
		}
		st := randomState(seed, n)
		data, err := encode(st)
		if err != nil {
			t.Fatal(err)
		}
		if n == 4000 && len(data) < 1<<20 {
			t.Fatalf("%d bytes are too few to exercise the two-goroutine decode", len(data))
		}
		var std State
		if err := json.Unmarshal(data, &std); err != nil {
			t.Fatalf("seed %d: encoding/json cannot read our file: %v", seed, err)
		}
		fast, _, ok := decodeFast(data)
		if !ok {
			t.Fatalf("seed %d: the fast decoder declined a file it wrote", seed)
		}
		if !reflect.DeepEqual(fast, &std) {
			t.Fatalf("seed %d: fast and encoding/json decode differently", seed)
		}
		// Compared with encoding/json's own round trip, which also turns
		// invalid UTF-8 into U+FFFD.
		for i, j := range st.Jobs {
			var viaStd Job
			b, _ := json.Marshal(j)
			json.Unmarshal(b, &viaStd)
			if !reflect.DeepEqual(&viaStd, std.Jobs[i]) {
				t.Fatalf("seed %d job %d: our round trip differs from encoding/json's:\n%+v\n%+v", seed, j.ID, &viaStd, std.Jobs[i])
			}
		}
	}
}

// Whatever the fast decoder accepts, encoding/json must accept and read the
// same way; everything else falls back to encoding/json.
func FuzzDecodeFast(f *testing.F) {
	data, _ := encode(randomState(1, 3))
	f.Add(data)
	f.Add([]byte(`{"version":1,"controller_id":"x","next_id":2,"jobs":[{"id":1,"started":"2025-02-29T00:00:00Z"}]}`))
	f.Add([]byte(`{"version":1,"jobs":[{"id":1,"gpus":[01]}],"jobs":[{"name":"b"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, _, ok := decodeFast(data)
		if !ok {
			return
		}
		var std State
		if err := json.Unmarshal(data, &std); err != nil {
			t.Fatalf("fast decoder accepted what encoding/json rejects (%v): %q", err, data)
		}
		if !reflect.DeepEqual(fast, &std) {
			t.Fatalf("fast and encoding/json disagree on %q:\n%+v\n%+v", data, fast, &std)
		}
	})
}

// Passing unchanged records through must never hide a change: every field
// of Job, changed in any way a caller might (reassigned, nil'ed, or changed
// in place behind a pointer or inside a slice), must be noticed.
func TestUnchangedCoversEveryField(t *testing.T) {
	t.Parallel()
	fresh := func() *Job {
		return &Job{ID: 1, UID: "u", Name: "n", User: "us", Node: "no", GPUs: []int{1, 2}, GPUUUIDs: []string{"a"},
			Accelerator: "H100", NumGPUs: 2, State: job.Succeeded, Submitted: time.Unix(1, 0).UTC(),
			Started: ptr(time.Unix(2, 0).UTC()), Ended: ptr(time.Unix(3, 0).UTC()), ExitCode: ptr(0),
			Workdir: "w", Command: "c", TaskFile: "t", QueuePosition: ptr(4), EnvNames: []string{"E"},
			LastSeen: ptr(time.Unix(5, 0).UTC())}
	}
	type change struct {
		what string
		do   func(f reflect.Value)
	}
	changesFor := func(f reflect.Value) []change {
		switch v := f.Interface().(type) {
		case string, job.State:
			return []change{{"reassigned", func(f reflect.Value) { f.SetString(f.String() + "x") }}}
		case int:
			return []change{{"reassigned", func(f reflect.Value) { f.SetInt(f.Int() + 1) }}}
		case time.Time:
			return []change{
				{"reassigned", func(f reflect.Value) { f.Set(reflect.ValueOf(v.Add(time.Second))) }},
				{"moved to another zone", func(f reflect.Value) { f.Set(reflect.ValueOf(v.In(time.FixedZone("Z", 3600)))) }},
			}
		case *time.Time:
			return []change{
				{"set to nil", func(f reflect.Value) { f.Set(reflect.Zero(f.Type())) }},
				{"changed in place", func(f reflect.Value) { t := f.Interface().(*time.Time); *t = t.Add(time.Second) }},
			}
		case *int:
			return []change{
				{"set to nil", func(f reflect.Value) { f.Set(reflect.Zero(f.Type())) }},
				{"changed in place", func(f reflect.Value) { *f.Interface().(*int)++ }},
			}
		case []int:
			return []change{
				{"set to nil", func(f reflect.Value) { f.Set(reflect.Zero(f.Type())) }},
				{"changed in place", func(f reflect.Value) { f.Index(0).SetInt(9) }},
				{"appended to", func(f reflect.Value) { f.Set(reflect.Append(f, reflect.ValueOf(7))) }},
			}
		case []string:
			return []change{
				{"set to nil", func(f reflect.Value) { f.Set(reflect.Zero(f.Type())) }},
				{"changed in place", func(f reflect.Value) { f.Index(0).SetString("z") }},
				{"appended to", func(f reflect.Value) { f.Set(reflect.Append(f, reflect.ValueOf("y"))) }},
			}
		}
		t.Fatalf("TestUnchangedCoversEveryField does not know how to change a %s", f.Type())
		return nil
	}
	typ := reflect.TypeFor[Job]()
	for i := range typ.NumField() {
		if !typ.Field(i).IsExported() {
			continue
		}
		for _, c := range changesFor(reflect.ValueOf(fresh()).Elem().Field(i)) {
			j := fresh()
			b := newBaseline([]byte("{}"), []span{{0, 2}}, []*Job{j})
			if b.unchanged(j) == nil {
				t.Fatal("an untouched job counts as changed")
			}
			c.do(reflect.ValueOf(j).Elem().Field(i))
			if b.unchanged(j) != nil {
				t.Errorf("Job.%s %s went unnoticed: its old record would be written", typ.Field(i).Name, c.what)
			}
		}
	}
}

// The user-visible side of the above: changes to old jobs inside an Update
// reach the disk even though untouched records are copied.
func TestUpdateKeepsChangesToOldJobs(t *testing.T) {
	t.Parallel()
	s := openTemp(t)
	addJobs(t, s, "a", "b", "c")
	err := s.Update(func(st *State) error {
		j := st.Job(2)
		j.State, j.ExitCode, j.GPUs = job.Lost, ptr(3), append(j.GPUs, 5)
		st.Job(3).EnvNames = append(st.Job(3).EnvNames, "HF_TOKEN")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	addJobs(t, s, "d") // a second pass over the changed records
	st, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	j2, j3 := st.Job(2), st.Job(3)
	if j2.State != job.Lost || j2.ExitCode == nil || *j2.ExitCode != 3 || fmt.Sprint(j2.GPUs) != "[5]" {
		t.Errorf("job #2 = %s exit %v gpus %v, want LOST exit 3 gpus [5]", j2.State, j2.ExitCode, j2.GPUs)
	}
	if fmt.Sprint(j3.EnvNames) != "[HF_TOKEN]" || len(st.Jobs) != 4 {
		t.Errorf("job #3 env names %v, %d jobs; want [HF_TOKEN], 4", j3.EnvNames, len(st.Jobs))
	}
}
