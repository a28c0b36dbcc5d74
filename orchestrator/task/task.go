// Package task reads a task file — SkyPilot's YAML task format — into a Task:
// what to run (setup, run, envs, secrets, workdir, file mounts) and what it
// needs (GPUs, CPUs, memory), and merges the command line's overrides into it.
//
// sshq runs a task unchanged on an ssh node it already knows, so the package
// sorts SkyPilot's fields three ways:
//
//   - fields that say what runs are honoured, or refused with an error naming
//     the field, its line:column and what to do instead, when sshq cannot do
//     them faithfully (containers and machine images, bucket and volume
//     mounts, git workdirs, SkyServe services, multi-node tasks);
//   - fields that only choose where a cloud VM comes from (cloud, region,
//     use_spot, instance_type, ...) are ignored with one Warning each, because
//     sshq places jobs on the ssh nodes and a SkyPilot file should still run;
//   - anything else is an error, with a "did you mean" when the name is close
//     to a known one, since a typo silently dropped (env: for envs:) would
//     launch a job that is wrong in ways found only hours later.
//
// Choices where SkyPilot leaves room: resources.accelerators takes every
// SkyPilot spelling ("A100:2", A100, {A100: 2}, {A100:1, V100:1} as a set,
// a list as a preference order) and also a bare count (any GPU type);
// any_of and ordered are read as accelerator candidates, their placement
// fields warned about like any other; fractional GPU counts are refused
// because a lease is a whole GPU. Relative local paths (workdir, file_mounts
// sources) are relative to the current directory, as SkyPilot defines them
// ("evaluated relative to the location from which sky is called"), so a
// SkyPilot file runs unchanged from where its users run it. A task may have
// setup and no run (SkyPilot's dev box): it ends after its setup. Env
// values keep the text as written (true stays "true").
//
// The flow is Load (or Parse), then Apply with the command line, then
// Validate, which reports what only the command line could still supply.
// The YAML is walked as goccy/go-yaml's syntax tree rather than unmarshalled,
// so every error and warning carries the line:column a person must edit.
package task

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/sshq/sshq/sshpool"
)

// Task is one task file after parsing, with local paths made absolute.
type Task struct {
	// File is the task file's name as given to Load or Parse.
	File string
	// Dir is the absolute directory that relative paths in the file are
	// resolved against: the current directory when the file was read (see
	// LoadIn for another).
	Dir string

	Name string
	// Workdir is the absolute local directory synced to the node and used as
	// the job's working directory; "" when the task has none.
	Workdir string
	// NumNodes is how many nodes run the task (SkyPilot's num_nodes), each
	// with Resources; 1 unless the file or --num-nodes says more. Plain
	// nodes run it as a gang of ranks, a Slurm cluster under sbatch --nodes.
	NumNodes  int
	Resources Resources
	// Envs are the job's environment variables. A variable the file
	// declares with a null value is absent here until Apply supplies it;
	// Validate reports it missing.
	Envs map[string]string
	// Secrets are environment variables whose values are never printed or
	// marshalled (see Secrets); the same null-means-required rule applies.
	Secrets Secrets
	// FileMounts maps a remote path (absolute, or ~/...) to the absolute
	// local file or directory copied there.
	FileMounts map[string]string
	Setup      string
	Run        string

	required []requirement
	runAt    pos  // where run: was written, for Validate's message
	hasRun   bool // run: appeared in the file (even empty)
	wdAt     pos
	mountAt  map[string]pos
	fileDir  string // the task file's own directory, for hints
}

// Resources is what the task needs from a node.
type Resources struct {
	// Accelerators are the acceptable GPU requests; empty means the task
	// needs no GPU. Any one of them satisfies the task.
	Accelerators []Accel
	// AccelOrdered says Accelerators is a preference order (the list form,
	// or resources.ordered) rather than a set where any fit is as good.
	AccelOrdered bool
	// CPUs is the number of CPU cores the node must have; zero: no request.
	CPUs Quantity
	// Memory is the node memory in GB (GiB as SkyPilot counts it); zero: no
	// request.
	Memory Quantity
	// Ports are ports the job serves on its node (SkyPilot's
	// resources.ports), ascending: an attached launch forwards each to
	// this machine.
	Ports []int
}

// Accel is a GPU request: Count GPUs of Type on one node.
type Accel struct {
	// Type is the GPU model as the user wrote it ("A100-80GB", "H100");
	// "" means any GPU. Match it against nvidia-smi names with MatchGPU.
	Type  string
	Count int
}

// String gives the request in the form ParseGPUFlag reads back: "A100:2",
// or "2" for any GPU.
func (a Accel) String() string {
	if a.Type == "" {
		return strconv.Itoa(a.Count)
	}
	return a.Type + ":" + strconv.Itoa(a.Count)
}

// Quantity is a cpus: or memory: request. SkyPilot's "4" means exactly 4 on
// a new VM and "4+" at least 4; an existing node can only be checked for at
// least, so placement may treat both as minimums, but the distinction is
// kept for display.
type Quantity struct {
	Value  float64
	OrMore bool
}

// IsZero reports whether nothing was requested.
func (q Quantity) IsZero() bool { return q.Value == 0 }

func (q Quantity) String() string {
	if q.IsZero() {
		return ""
	}
	s := strconv.FormatFloat(q.Value, 'f', -1, 64)
	if q.OrMore {
		s += "+"
	}
	return s
}

// Warning is a field that was accepted but ignored.
type Warning struct {
	File      string
	Line, Col int
	Field     string // the field's path, e.g. "resources.region"
	Reason    string // why it is ignored
}

// String puts the place first, as compilers do, so editors can jump there.
func (w Warning) String() string {
	if w.File == "" {
		return fmt.Sprintf("line %d: %s is ignored: %s", w.Line, w.Field, w.Reason)
	}
	return fmt.Sprintf("%s:%d:%d: %s is ignored: %s", w.File, w.Line, w.Col, w.Field, w.Reason)
}

// Error is a problem with a task file or an override. Line and Col are
// 1-based; both are 0 when the problem has no place in the file (an
// override, an unreadable file).
type Error struct {
	File      string
	Line, Col int
	Field     string // the field's path, e.g. "resources.accelerators"; may be ""
	Msg       string
	err       error // the cause, for errors.Is (a missing file)
}

// Error formats as a compiler does, so editors can jump to the place:
// "task.yaml:12:3: resources.accelerators: "A100:x": count must be a
// positive integer, as in A100:2".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Col > 0 {
			fmt.Fprintf(&b, ":%d", e.Col)
		}
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

func (e *Error) Unwrap() error { return e.err }

// Secrets holds secret environment variables. It is an ordinary map to the
// code that launches the job, but every way of printing or marshalling it
// (fmt with any verb, encoding/json, goccy/go-yaml, log/slog) shows only
// the names, so a secret cannot reach a terminal, a log or the job store by
// accident. Code that must persist a task should not expect secrets to
// survive the round trip: they come back as "<redacted>".
type Secrets map[string]string

const redacted = "<redacted>"

func (s Secrets) redact() map[string]string {
	if s == nil {
		return nil
	}
	m := make(map[string]string, len(s))
	for k := range s {
		m[k] = redacted
	}
	return m
}

func (s Secrets) String() string {
	names := make([]string, 0, len(s))
	for k := range s {
		names = append(names, k+":"+redacted)
	}
	sort.Strings(names)
	return "map[" + strings.Join(names, " ") + "]"
}

// Format covers every fmt verb (%d or %x would otherwise print the values).
func (s Secrets) Format(f fmt.State, _ rune) { io.WriteString(f, s.String()) }

func (s Secrets) GoString() string { return "task.Secrets" + s.String() }

func (s Secrets) MarshalJSON() ([]byte, error) { return json.Marshal(s.redact()) }

// MarshalYAML is goccy/go-yaml's marshaller hook.
func (s Secrets) MarshalYAML() (any, error) { return s.redact(), nil }

func (s Secrets) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Overrides are the command line's changes to a task. Zero fields change
// nothing.
type Overrides struct {
	Name string
	// GPUs replaces the task's accelerators; Count 0 makes it a CPU job.
	GPUs *Accel
	// EnvFile are the variables of an --env-file, below Env and Secrets: a
	// name the task declares a secret stays a secret.
	EnvFile map[string]string
	Env     map[string]string
	Secrets Secrets
	// Workdir replaces the task's workdir; relative to the current directory.
	Workdir string
	// Run replaces the task's run: (from `sshq launch task.yaml CMD...`).
	Run string
	// NumNodes replaces the task's num_nodes when it is not 0.
	NumNodes int
}

// ParseEnvFlag reads one --env or --secret value: NAME=VALUE, or NAME
// alone to pass on the variable of that name from lookup (os.LookupEnv),
// as SkyPilot does, so a secret need not appear in the shell history. The
// value is everything after the first '=', verbatim. It is checked with
// CheckEnvValue, and no error quotes it.
func ParseEnvFlag(flag, s string, lookup func(string) (string, bool)) (name, value string, err error) {
	name, value, hasValue := strings.Cut(s, "=")
	if why := checkEnvName(name); why != "" {
		return "", "", &Error{Field: flag, Msg: fmt.Sprintf("%s: %s", quoteShort(name), why)}
	}
	if !hasValue {
		v, ok := lookup(name)
		if !ok {
			return "", "", &Error{Field: flag, Msg: fmt.Sprintf("%s is not set in your environment: export it, or pass %s %s=VALUE", name, flag, name)}
		}
		value = v
	}
	if why := envValueProblem(value); why != "" {
		return "", "", &Error{Field: flag, Msg: name + ": " + why}
	}
	return name, value, nil
}

// Load reads and parses the task file at path. Relative paths inside it are
// resolved against the current directory, as SkyPilot resolves them. The
// caller then applies the command line with Apply and checks the result
// with Validate.
func Load(path string) (*Task, []Warning, error) { return LoadIn("", path) }

// LoadIn is Load with relative paths resolved against base ("" is the
// current directory).
func LoadIn(base, path string) (*Task, []Warning, error) {
	if fi, err := os.Stat(path); err == nil && fi.Size() > MaxFileSize {
		return nil, nil, tooLarge(path, fi.Size())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, &Error{File: path, Msg: "cannot read the task file: " + err.Error(), err: err}
	}
	return ParseIn(base, path, data)
}

func tooLarge(name string, size int64) error {
	return &Error{File: name, Msg: fmt.Sprintf("the file is %d bytes and a task file may have at most %d (sshq's limit; a task file is a few KB): is this the right file?", size, MaxFileSize)}
}

// Parse parses a task file's contents; name is used in messages, and
// relative paths are resolved against the current directory. It never
// panics: a failure inside the YAML parser comes back as an *Error too.
func Parse(name string, data []byte) (t *Task, warns []Warning, err error) {
	return ParseIn("", name, data)
}

// ParseIn is Parse with relative paths resolved against base ("" is the
// current directory).
func ParseIn(base, name string, data []byte) (t *Task, warns []Warning, err error) {
	defer func() {
		if r := recover(); r != nil {
			t, warns = nil, nil
			err = &Error{File: name, Msg: fmt.Sprintf("the YAML parser failed on this file (%v): check its syntax, and please report the file to the sshq developers", r)}
		}
	}()
	return parse(base, name, data)
}

// Apply merges the command line's overrides into t.
func (t *Task) Apply(o Overrides) error {
	if o.NumNodes != 0 {
		if o.NumNodes < 1 || o.NumNodes > MaxNumNodes {
			return &Error{Field: "--num-nodes", Msg: fmt.Sprintf("%d: a job runs on 1 to %d nodes", o.NumNodes, MaxNumNodes)}
		}
		t.NumNodes = o.NumNodes
	}
	if o.Name != "" {
		if why := nameProblem(o.Name); why != "" {
			return &Error{Field: "--name", Msg: why}
		}
		t.Name = o.Name
	}
	if o.GPUs != nil {
		g := *o.GPUs
		if g.Count < 0 || (g.Count == 0 && g.Type != "") {
			return &Error{Field: "--gpus", Msg: fmt.Sprintf("%q: count must be a positive integer, as in A100:2 (or 0 for no GPU)", g.String())}
		}
		if g.Count == 0 {
			t.Resources.Accelerators = nil
		} else {
			t.Resources.Accelerators = []Accel{g}
		}
		t.Resources.AccelOrdered = false
	}
	if len(o.EnvFile) > 0 {
		// Copied: the caller's map is not Apply's to change.
		sec := make(Secrets, len(o.Secrets))
		for k, v := range o.Secrets {
			sec[k] = v
		}
		o.Secrets = sec
	}
	for _, k := range sortedKeys(o.EnvFile) {
		v := o.EnvFile[k]
		if _, ok := t.Secrets[k]; ok || t.requires(k, true) {
			// An .env file commonly holds the API keys a task declares
			// under secrets: they stay secrets.
			if _, given := o.Secrets[k]; !given {
				o.Secrets[k] = v
			}
			continue
		}
		if _, given := o.Env[k]; given {
			continue
		}
		if t.Envs == nil {
			t.Envs = map[string]string{}
		}
		t.Envs[k] = v
	}
	for _, k := range sortedKeys(o.Env) {
		if err := checkEnvName(k); err != "" {
			return &Error{Field: "--env", Msg: fmt.Sprintf("%s: %s", quoteShort(k), err)}
		}
		if why := envValueProblem(o.Env[k]); why != "" {
			return &Error{Field: "--env", Msg: k + ": " + why}
		}
		if _, ok := t.Secrets[k]; ok || t.requires(k, true) {
			return &Error{Field: "--env", Msg: fmt.Sprintf("%s is a secret of the task: pass it with --secret %s=... so its value is never shown or stored", k, k)}
		}
		if t.Envs == nil {
			t.Envs = map[string]string{}
		}
		t.Envs[k] = o.Env[k]
	}
	for _, k := range sortedKeys(o.Secrets) {
		if err := checkEnvName(k); err != "" {
			return &Error{Field: "--secret", Msg: fmt.Sprintf("%s: %s", quoteShort(k), err)}
		}
		if why := envValueProblem(o.Secrets[k]); why != "" {
			return &Error{Field: "--secret", Msg: k + ": " + why}
		}
		// An env promoted to a secret is only safer, so it is allowed.
		delete(t.Envs, k)
		for i, r := range t.required {
			if r.name == k {
				t.required[i].secret = true
			}
		}
		if t.Secrets == nil {
			t.Secrets = Secrets{}
		}
		t.Secrets[k] = o.Secrets[k]
	}
	if o.Workdir != "" {
		wd, err := filepath.Abs(expandHome(o.Workdir))
		if err != nil {
			return &Error{Field: "--workdir", Msg: err.Error()}
		}
		t.Workdir = wd
		t.wdAt = pos{}
	}
	if o.Run != "" {
		t.Run = o.Run
	}
	return nil
}

func (t *Task) requires(name string, secret bool) bool {
	for _, r := range t.required {
		if r.name == name && r.secret == secret {
			return true
		}
	}
	return false
}

// Validate reports what still stops the task from running after Apply:
// required envs and secrets nobody supplied, nothing to run, a workdir or
// mounted file that does not exist, a name or environment the node could
// not start the job with (see MaxNameLen, MaxEnvValueLen, MaxEnvTotal).
// Several problems come back joined; errors.As finds the first *Error.
func (t *Task) Validate() error {
	var errs []error
	if err := CheckName(t.Name); err != nil {
		errs = append(errs, err)
	}
	for _, k := range sortedKeys(t.Envs) {
		if why := envValueProblem(t.Envs[k]); why != "" {
			errs = append(errs, &Error{Field: "envs." + k, Msg: why})
		}
	}
	for _, k := range sortedKeys(t.Secrets) {
		if why := envValueProblem(t.Secrets[k]); why != "" {
			errs = append(errs, &Error{Field: "secrets." + k, Msg: why})
		}
	}
	if n := envTotal(t.Envs, t.Secrets); n > MaxEnvTotal {
		errs = append(errs, &Error{Field: "envs", Msg: fmt.Sprintf("the envs and secrets take %d bytes together; a task may pass at most %d (1 MiB), because Linux limits a program's arguments and environment to about 2 MiB and the node needs the rest: %s", n, MaxEnvTotal, bigValueFix)})
	}
	for _, r := range t.required {
		have := false
		if r.secret {
			_, have = t.Secrets[r.name]
		} else {
			_, have = t.Envs[r.name]
		}
		if have {
			continue
		}
		kind, flag := "env", "--env"
		if r.secret {
			kind, flag = "secret", "--secret"
		}
		errs = append(errs, &Error{File: t.File, Line: r.at.line, Col: r.at.col,
			Msg: fmt.Sprintf("%s %q is required by the task: pass %s %s=...", kind, r.name, flag, r.name)})
	}
	// Setup alone is a task (SkyPilot's dev box: it prepares the node and
	// ends); with neither there is nothing to do.
	if strings.TrimSpace(t.Run) == "" && strings.TrimSpace(t.Setup) == "" {
		e := &Error{File: t.File, Field: "run", Msg: "nothing to run: add a run: script to the task, or pass the command on the sshq launch command line"}
		if t.hasRun {
			e.Line, e.Col = t.runAt.line, t.runAt.col
			e.Msg = "is empty: write the script to run, or pass the command on the sshq launch command line"
		}
		errs = append(errs, e)
	}
	if t.Workdir != "" {
		if fi, err := os.Stat(t.Workdir); err != nil || !fi.IsDir() {
			e := &Error{File: t.File, Line: t.wdAt.line, Col: t.wdAt.col, Field: "workdir",
				Msg: fmt.Sprintf("%s is not a directory: point workdir at the local directory to sync (relative paths are relative to the current directory, as in SkyPilot)%s", t.Workdir, t.fromFileDir(t.Workdir, true))}
			if t.wdAt.line == 0 {
				e.File, e.Field = "", "--workdir"
				e.Msg = fmt.Sprintf("%s is not a directory: give the local directory to sync", t.Workdir)
			}
			errs = append(errs, e)
		}
	}
	for _, remote := range sortedKeys(t.FileMounts) {
		local := t.FileMounts[remote]
		if _, err := os.Stat(local); err != nil {
			at := t.mountAt[remote]
			errs = append(errs, &Error{File: t.File, Line: at.line, Col: at.col, Field: "file_mounts." + remote,
				Msg: fmt.Sprintf("local path %s does not exist: fix the path (relative paths are relative to the current directory, as in SkyPilot)%s", local, t.fromFileDir(local, false))})
		}
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// fromFileDir is a hint for a relative path that is missing here but
// exists beside the task file, where the old rule (and a habit from other
// tools) looked: run sshq from that directory, as SkyPilot expects.
func (t *Task) fromFileDir(abs string, dir bool) string {
	if t.fileDir == "" || t.fileDir == t.Dir {
		return ""
	}
	rel, err := filepath.Rel(t.Dir, abs)
	if err != nil {
		return ""
	}
	fi, err := os.Stat(filepath.Join(t.fileDir, rel))
	if err != nil || (dir && !fi.IsDir()) {
		return ""
	}
	return fmt.Sprintf("; it exists relative to the task file's directory: run sshq from there, `cd %s && sshq launch %s`",
		sshpool.Quote(t.fileDir), sshpool.Quote(filepath.Base(t.File)))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func expandHome(p string) string {
	if p != "~" && !strings.HasPrefix(p, "~/") {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return p
	}
	return filepath.Join(home, p[1:])
}
