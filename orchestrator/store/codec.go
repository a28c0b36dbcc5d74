package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"runtime"
	"strconv"
	"time"
	"unsafe"
)

// A hand-written codec for the file this package writes. encoding/json needs
// about 140 ms to decode and 55 ms to encode 10,000 jobs on a small machine,
// which alone breaks the 50 ms budget of one Update; this codec does both in
// a fraction of that. It is only a fast path: whenever the input is not in
// the exact shape it expects (a hand edit with unknown keys, escapes it does
// not handle, anything invalid) decodeFast gives up and encoding/json decodes
// the file instead, so behaviour and error messages are encoding/json's.
// FuzzDecodeFast holds it to that: whatever it accepts, encoding/json accepts
// with the same result.

// span is where a job's record lies in the file.
type span struct{ start, end int }

// decodeFast returns ok=false when it cannot decode data itself. spans[i]
// is where st.Jobs[i] lies in data.
func decodeFast(data []byte) (st *State, spans []span, ok bool) {
	// Decoded strings point into data instead of each being copied: data is
	// never written after os.ReadFile returns it.
	d := &decoder{b: data, src: unsafe.String(unsafe.SliceData(data), len(data))}
	st = &State{}
	seen := map[string]bool{}
	if !d.object(func(key []byte) bool {
		// encoding/json merges a repeated "jobs" into the first one's
		// records; rather than copy that, leave repeats to it.
		if seen[string(key)] {
			return false
		}
		seen[string(key)] = true
		switch string(key) {
		case "version":
			return d.int(&st.Version)
		case "controller_id":
			return d.str(&st.ControllerID)
		case "next_id":
			return d.int(&st.NextID)
		case "jobs":
			if d.null() {
				st.Jobs = nil
				return true
			}
			jobs, ok := d.jobArray()
			st.Jobs = jobs
			return ok
		}
		return false
	}) {
		return nil, nil, false
	}
	d.ws()
	return st, d.spans, d.i == len(d.b)
}

// jobArray decodes the jobs array. A big one is split in two at a line
// boundary and decoded on two cores: a raw newline is never inside a JSON
// string, so "\n{" in the file we write always starts a job.
func (d *decoder) jobArray() ([]*Job, bool) {
	if !d.lit('[') {
		return nil, false
	}
	if d.lit(']') {
		return []*Job{}, true
	}
	split := -1
	if rest := len(d.b) - d.i; rest > 1<<20 && runtime.GOMAXPROCS(0) > 1 {
		if k := bytes.Index(d.b[d.i+rest/2:], []byte("\n{")); k >= 0 {
			split = d.i + rest/2 + k + 1
		}
	}
	if split < 0 {
		var jobs []*Job
		ok := d.jobList(&jobs, len(d.b), bytes.Count(d.b[d.i:], []byte{'\n'}))
		return jobs, ok
	}
	second := &decoder{b: d.b, i: split, src: d.src}
	var jobs2 []*Job
	var ok2 bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		ok2 = second.jobList(&jobs2, len(d.b), bytes.Count(d.b[split:], []byte{'\n'}))
	}()
	var jobs []*Job
	ok := d.jobList(&jobs, split, bytes.Count(d.b[d.i:split], []byte{'\n'}))
	<-done
	if !ok || !ok2 {
		return nil, false
	}
	d.i = second.i
	d.spans = append(d.spans, second.spans...)
	return append(jobs, jobs2...), true
}

// jobs decodes "job, job, ..." up to the closing ']', or, when stop is
// before the end, up to and including the ',' that ends right before stop.
func (d *decoder) jobList(dst *[]*Job, stop, n int) bool {
	*dst = make([]*Job, 0, n+1)
	d.spans = make([]span, 0, n+1)
	d.jobSlab.buf = make([]Job, 0, n+1)
	d.times.buf = make([]time.Time, 0, 4*(n+1))
	for {
		j := d.jobSlab.one()
		*dst = append(*dst, j)
		d.ws()
		start := d.i
		if !d.job(j) {
			return false
		}
		d.spans = append(d.spans, span{start, d.i})
		if !d.lit(',') {
			return stop == len(d.b) && d.lit(']')
		}
		if stop < len(d.b) {
			d.ws()
			if d.i == stop {
				return true
			}
			if d.i > stop {
				return false
			}
		}
	}
}

type decoder struct {
	b []byte
	i int
	// src is b as a string: decoded strings are substrings of it, so they
	// cost no allocation each.
	src string
	// Values are carved out of a few large arrays instead of allocated one
	// by one; for 10,000 jobs that is the difference between 200,000
	// allocations and a handful.
	jobSlab slab[Job]
	times   slab[time.Time]
	intSlab slab[int]
	strSlab slab[string]
	tmpI    []int
	tmpS    []string
	spans   []span
}

// slab hands out elements of large arrays. Slices it returns have their
// capacity capped, so a caller's append copies rather than overwriting a
// neighbour.
type slab[T any] struct{ buf []T }

func (s *slab[T]) one() *T {
	if len(s.buf) == cap(s.buf) {
		s.buf = make([]T, 0, 1024)
	}
	s.buf = s.buf[:len(s.buf)+1]
	return &s.buf[len(s.buf)-1]
}

func (s *slab[T]) clone(v []T) []T {
	if len(v) == 0 {
		if v == nil {
			return nil
		}
		return []T{} // allocates nothing
	}
	if cap(s.buf)-len(s.buf) < len(v) {
		s.buf = make([]T, 0, max(4096, len(v)))
	}
	start := len(s.buf)
	s.buf = append(s.buf, v...)
	return s.buf[start:len(s.buf):len(s.buf)]
}

func (d *decoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *decoder) lit(c byte) bool {
	d.ws()
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

func (d *decoder) null() bool {
	d.ws()
	if len(d.b)-d.i >= 4 && string(d.b[d.i:d.i+4]) == "null" {
		d.i += 4
		return true
	}
	return false
}

// object calls field for each key, positioned at its value.
func (d *decoder) object(field func(key []byte) bool) bool {
	if !d.lit('{') {
		return false
	}
	if d.lit('}') {
		return true
	}
	for {
		a, b, ok := d.rawStr()
		if !ok || !d.lit(':') || !field(d.b[a:b]) {
			return false
		}
		if d.lit(',') {
			continue
		}
		return d.lit('}')
	}
}

func (d *decoder) array(elem func() bool) bool {
	if !d.lit('[') {
		return false
	}
	if d.lit(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if d.lit(',') {
			continue
		}
		return d.lit(']')
	}
}

// rawStr returns the bounds of the contents of a string made only of
// printable ASCII without escapes; anything else is left to the slow path of
// str.
func (d *decoder) rawStr() (start, end int, ok bool) {
	if !d.lit('"') {
		return 0, 0, false
	}
	start = d.i
	// Eight bytes at a time while none of them is special: most of the
	// file is plain strings, and this is the decoder's innermost loop.
	for d.i+8 <= len(d.b) && !special8(binary.LittleEndian.Uint64(d.b[d.i:])) {
		d.i += 8
	}
	for d.i < len(d.b) {
		c := d.b[d.i]
		if c == '"' {
			d.i++
			return start, d.i - 1, true
		}
		if c < 0x20 || c >= 0x80 || c == '\\' {
			return 0, 0, false
		}
		d.i++
	}
	return 0, 0, false
}

// special8 reports whether any byte of w is a control character, non-ASCII,
// '"' or '\\' (the bit tricks of "Bit Twiddling Hacks": a byte is zero in
// x exactly where (x-0x01..) & ^x has its high bit set).
func special8(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	zero := func(x uint64) uint64 { return (x - ones) & ^x & highs }
	return (w&highs)|
		((w-0x20*ones) & ^w & highs)| // < 0x20, given no high bits
		zero(w^('"'*ones))|
		zero(w^('\\'*ones)) != 0
}

func (d *decoder) str(dst *string) bool {
	d.ws()
	start := d.i
	if a, b, ok := d.rawStr(); ok {
		*dst = d.src[a:b]
		return true
	}
	// Escapes or non-ASCII: find the string's end and let encoding/json
	// decode it, so its rules (invalid UTF-8, surrogates) apply.
	d.i = start
	if !d.lit('"') {
		return false
	}
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case '\\':
			d.i += 2
			continue
		case '"':
			d.i++
			return json.Unmarshal(d.b[start:d.i], dst) == nil
		}
		d.i++
	}
	return false
}

func (d *decoder) int(dst *int) bool {
	d.ws()
	start, neg := d.i, false
	if d.i < len(d.b) && d.b[d.i] == '-' {
		neg = true
		d.i++
	}
	digits := d.i
	n := 0
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		n = n*10 + int(d.b[d.i]-'0')
		d.i++
	}
	l := d.i - digits
	// Leave leading zeros, fractions, exponents and anything near overflow to
	// encoding/json, which rejects or reports them.
	if l == 0 || l > 15 || (l > 1 && d.b[digits] == '0') ||
		(d.i < len(d.b) && (d.b[d.i] == '.' || d.b[d.i] == 'e' || d.b[d.i] == 'E')) {
		d.i = start
		return false
	}
	if neg {
		n = -n
	}
	*dst = n
	return true
}

func (d *decoder) intPtr(dst **int) bool {
	if d.null() {
		*dst = nil
		return true
	}
	n := d.intSlab.one()
	*dst = n
	return d.int(n)
}

func (d *decoder) time(dst *time.Time) bool {
	d.ws()
	start := d.i
	a, b, ok := d.rawStr()
	if !ok {
		return false
	}
	if t, ok := parseUTC(d.b[a:b]); ok {
		*dst = t
		return true
	}
	// The very parser encoding/json would call, so both agree on what a
	// valid time is.
	return dst.UnmarshalJSON(d.b[start:d.i]) == nil
}

// parseUTC parses the one form appendTime writes, 2006-01-02T15:04:05.999999999Z,
// several times faster than time.Parse. It declines (ok=false) anything else.
func parseUTC(b []byte) (t time.Time, ok bool) {
	if len(b) < 20 || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' || b[len(b)-1] != 'Z' {
		return t, false
	}
	num := func(p, n int) int {
		v := 0
		for _, c := range b[p : p+n] {
			if c < '0' || c > '9' {
				return -1
			}
			v = v*10 + int(c-'0')
		}
		return v
	}
	y, mo, dd, h, mi, sec := num(0, 4), num(5, 2), num(8, 2), num(11, 2), num(14, 2), num(17, 2)
	ns := 0
	if frac := b[19 : len(b)-1]; len(frac) > 0 {
		if frac[0] != '.' || len(frac) < 2 || len(frac) > 10 {
			return t, false
		}
		ns = num(20, len(frac)-1)
		for range 10 - len(frac) {
			ns *= 10
		}
	}
	if y < 0 || mo < 1 || mo > 12 || dd < 1 || h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 59 || ns < 0 {
		return t, false
	}
	t = time.Date(y, time.Month(mo), dd, h, mi, sec, ns, time.UTC)
	if t.Day() != dd { // February 30th and friends
		return t, false
	}
	return t, true
}

func (d *decoder) timePtr(dst **time.Time) bool {
	if d.null() {
		*dst = nil
		return true
	}
	t := d.times.one()
	*dst = t
	return d.time(t)
}

func (d *decoder) ints(dst *[]int) bool {
	if d.null() {
		*dst = nil
		return true
	}
	d.tmpI = d.tmpI[:0]
	ok := d.array(func() bool {
		var n int
		ok := d.int(&n)
		d.tmpI = append(d.tmpI, n)
		return ok
	})
	*dst = d.intSlab.clone(d.tmpI)
	if *dst == nil {
		*dst = []int{} // [] is not null
	}
	return ok
}

func (d *decoder) strs(dst *[]string) bool {
	if d.null() {
		*dst = nil
		return true
	}
	d.tmpS = d.tmpS[:0]
	ok := d.array(func() bool {
		var s string
		ok := d.str(&s)
		d.tmpS = append(d.tmpS, s)
		return ok
	})
	*dst = d.strSlab.clone(d.tmpS)
	if *dst == nil {
		*dst = []string{} // [] is not null
	}
	return ok
}

func (d *decoder) job(j *Job) bool {
	return d.object(func(key []byte) bool {
		switch string(key) {
		case "id":
			return d.int(&j.ID)
		case "uid":
			return d.str(&j.UID)
		case "name":
			return d.str(&j.Name)
		case "user":
			return d.str(&j.User)
		case "node":
			return d.str(&j.Node)
		case "gpus":
			return d.ints(&j.GPUs)
		case "gpu_uuids":
			return d.strs(&j.GPUUUIDs)
		case "accelerator":
			return d.str(&j.Accelerator)
		case "num_gpus":
			return d.int(&j.NumGPUs)
		case "state":
			return d.str((*string)(&j.State))
		case "submitted":
			return d.time(&j.Submitted)
		case "started":
			return d.timePtr(&j.Started)
		case "ended":
			return d.timePtr(&j.Ended)
		case "exit_code":
			return d.intPtr(&j.ExitCode)
		case "workdir":
			return d.str(&j.Workdir)
		case "command":
			return d.str(&j.Command)
		case "task_file":
			return d.str(&j.TaskFile)
		case "queue_position":
			return d.intPtr(&j.QueuePosition)
		case "env_names":
			return d.strs(&j.EnvNames)
		case "last_seen":
			return d.timePtr(&j.LastSeen)
		}
		return false
	})
}

// appendJob appends j as encoding/json would (field order, null for nil
// pointers and slices), minus HTML escaping.
func appendJob(b []byte, j *Job) []byte {
	b = append(b, `{"id":`...)
	b = strconv.AppendInt(b, int64(j.ID), 10)
	b = appendKey(b, "uid")
	b = appendStr(b, j.UID)
	b = appendKey(b, "name")
	b = appendStr(b, j.Name)
	b = appendKey(b, "user")
	b = appendStr(b, j.User)
	b = appendKey(b, "node")
	b = appendStr(b, j.Node)
	b = appendKey(b, "gpus")
	if j.GPUs == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, g := range j.GPUs {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, int64(g), 10)
		}
		b = append(b, ']')
	}
	b = appendKey(b, "gpu_uuids")
	b = appendStrs(b, j.GPUUUIDs)
	b = appendKey(b, "accelerator")
	b = appendStr(b, j.Accelerator)
	b = appendKey(b, "num_gpus")
	b = strconv.AppendInt(b, int64(j.NumGPUs), 10)
	b = appendKey(b, "state")
	b = appendStr(b, string(j.State))
	b = appendKey(b, "submitted")
	b = appendTime(b, &j.Submitted)
	b = appendKey(b, "started")
	b = appendTime(b, j.Started)
	b = appendKey(b, "ended")
	b = appendTime(b, j.Ended)
	b = appendKey(b, "exit_code")
	b = appendIntPtr(b, j.ExitCode)
	b = appendKey(b, "workdir")
	b = appendStr(b, j.Workdir)
	b = appendKey(b, "command")
	b = appendStr(b, j.Command)
	b = appendKey(b, "task_file")
	b = appendStr(b, j.TaskFile)
	b = appendKey(b, "queue_position")
	b = appendIntPtr(b, j.QueuePosition)
	b = appendKey(b, "env_names")
	b = appendStrs(b, j.EnvNames)
	b = appendKey(b, "last_seen")
	b = appendTime(b, j.LastSeen)
	return append(b, '}')
}

func appendKey(b []byte, k string) []byte {
	b = append(b, ',', '"')
	b = append(b, k...)
	return append(b, '"', ':')
}

func appendStr(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' {
			// Rare: let encoding/json do escaping and UTF-8 repair.
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendStrs(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendStr(b, s)
	}
	return append(b, ']')
}

func appendIntPtr(b []byte, n *int) []byte {
	if n == nil {
		return append(b, "null"...)
	}
	return strconv.AppendInt(b, int64(*n), 10)
}

func appendTime(b []byte, t *time.Time) []byte {
	if t == nil {
		return append(b, "null"...)
	}
	if t.Location() == time.UTC {
		if y, mo, d := t.Date(); y >= 0 && y <= 9999 {
			// RFC3339Nano by hand: AppendFormat interprets its layout
			// each call, which is a third of the cost of an encode.
			h, mi, s := t.Clock()
			b = append(b, '"')
			b = append4(b, y)
			b = append(b, '-')
			b = append2(b, int(mo))
			b = append(b, '-')
			b = append2(b, d)
			b = append(b, 'T')
			b = append2(b, h)
			b = append(b, ':')
			b = append2(b, mi)
			b = append(b, ':')
			b = append2(b, s)
			if ns := t.Nanosecond(); ns != 0 {
				var f [10]byte
				f[0] = '.'
				for i := 9; i >= 1; i-- {
					f[i] = byte('0' + ns%10)
					ns /= 10
				}
				n := 10
				for f[n-1] == '0' {
					n--
				}
				b = append(b, f[:n]...)
			}
			return append(b, 'Z', '"')
		}
	}
	q, err := t.MarshalJSON()
	if err != nil {
		// encoding/json would fail the whole write; a time beyond year
		// 9999 is a bug elsewhere, and losing it beats losing every update.
		return append(b, "null"...)
	}
	return append(b, q...)
}

func append2(b []byte, v int) []byte { return append(b, byte('0'+v/10), byte('0'+v%10)) }

func append4(b []byte, v int) []byte {
	return append(b, byte('0'+v/1000), byte('0'+v/100%10), byte('0'+v/10%10), byte('0'+v%10))
}
