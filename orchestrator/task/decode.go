package task

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

type requirement struct {
	secret bool
	name   string
	at     pos
}

type decoder struct {
	file  string
	t     *Task
	warns []Warning
}

func (d *decoder) errf(at pos, field, format string, args ...any) error {
	return &Error{File: d.file, Line: at.line, Col: at.col, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func (d *decoder) warn(at pos, field, reason string) {
	// A field reached twice through a YAML alias is one line to edit.
	for _, w := range d.warns {
		if w.Line == at.line && w.Col == at.col {
			return
		}
	}
	d.warns = append(d.warns, Warning{File: d.file, Line: at.line, Col: at.col, Field: field, Reason: reason})
}

const placedOnNodes = "sshq places jobs on your ssh nodes"

// ignoredResources are SkyPilot resources fields that only choose where a
// cloud VM comes from: the job runs the same on any ssh node, so a SkyPilot
// file keeps working and the user is told once per field.
var ignoredResources = map[string]string{
	"cloud":            placedOnNodes,
	"infra":            placedOnNodes,
	"region":           placedOnNodes,
	"zone":             placedOnNodes,
	"instance_type":    placedOnNodes,
	"use_spot":         placedOnNodes + ", which are not spot instances",
	"spot_recovery":    placedOnNodes + ", which are not preempted",
	"job_recovery":     placedOnNodes + ", which are not preempted",
	"disk_size":        placedOnNodes + " and uses their disks as they are",
	"disk_tier":        placedOnNodes + " and uses their disks as they are",
	"network_tier":     placedOnNodes + " and uses their network as it is",
	"labels":           placedOnNodes + ", which have no cloud labels",
	"accelerator_args": "it configures cloud TPU VMs, and sshq schedules the GPUs of your ssh nodes",
	"autostop":         "sshq never stops your nodes",
}

// refused fields change what runs or where its data comes from; running
// the task without them would run something else, so they are errors.
var refusedResources = map[string]string{
	"image_id": "sshq does not run containers or machine images: it runs the task directly on the node; remove image_id and install what the task needs in setup",
}

var refusedTop = map[string]string{
	"service": "sshq does not serve models (SkyServe): it runs batch jobs; remove service: or deploy it with sky serve",
	"volumes": "sshq does not attach volumes: it runs on the nodes' own disks; remove volumes: and use a path that exists on the nodes, or file_mounts with a local path",
}

var ignoredTop = map[string]string{
	"event_callback": "sshq runs no callbacks; check job state with sshq status",
	"inputs":         "it only estimates cloud data-transfer costs",
	"outputs":        "it only estimates cloud data-transfer costs",
}

var knownTop = []string{"name", "workdir", "num_nodes", "resources", "envs", "secrets", "file_mounts", "setup", "run", "config", "experimental", "service", "volumes", "event_callback", "inputs", "outputs"}

var knownResources = []string{"accelerators", "cpus", "memory", "any_of", "ordered", "image_id", "cloud", "infra", "region", "zone", "instance_type", "use_spot", "spot_recovery", "job_recovery", "disk_size", "disk_tier", "network_tier", "ports", "labels", "accelerator_args", "autostop"}

// hints answer the unknown names people write for a known field, which are
// too far from it for the edit-distance suggestion.
var topHints = map[string]string{
	"environment": "envs", "env_vars": "envs", "environ": "envs", "variables": "envs",
	"command": "run", "commands": "run", "cmd": "run", "script": "run", "entrypoint": "run",
	"mounts": "file_mounts", "files": "file_mounts",
	"nodes":  "num_nodes",
	"docker": "", "image": "", "container": "",
}

var resourceHints = map[string]string{
	"gpus": "accelerators", "gpu": "accelerators", "accel": "accelerators", "accelerator_type": "accelerators",
	"mem": "memory", "ram": "memory", "vcpus": "cpus", "cores": "cpus",
	"docker": "image_id", "image": "image_id",
}

func parse(base, name string, data []byte) (*Task, []Warning, error) {
	if len(data) > MaxFileSize {
		return nil, nil, tooLarge(name, int64(len(data)))
	}
	root, err := parseYAML(name, data)
	if err != nil {
		return nil, nil, err
	}
	if base == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, nil, &Error{File: name, Msg: "cannot tell the current directory, which relative paths are relative to: " + err.Error(), err: err}
		}
		base = wd
	}
	base, err = filepath.Abs(base)
	if err != nil {
		return nil, nil, &Error{File: name, Msg: "cannot resolve the directory relative paths are relative to: " + err.Error(), err: err}
	}
	fileDir, _ := filepath.Abs(filepath.Dir(name))
	t := &Task{File: name, Dir: base, NumNodes: 1, fileDir: fileDir}
	d := &decoder{file: name, t: t}
	if root == nil || root.kind == kNull {
		return t, nil, nil
	}
	if root.kind != kMap {
		return nil, nil, d.errf(root.at, "", "a task file is a mapping of fields (name:, resources:, setup:, run:, ...), not %s", root.describe())
	}
	if err := d.top(root); err != nil {
		return nil, nil, err
	}
	return t, d.warns, nil
}

func (d *decoder) top(root *node) error {
	t := d.t
	var secretsAt map[string]pos
	var envsAt map[string]pos
	for _, e := range root.entries {
		v := e.val
		var err error
		switch e.key {
		case "name":
			t.Name, err = d.text(v, "name", "a name")
			if why := nameProblem(t.Name); err == nil && why != "" {
				err = d.errf(v.at, "name", "%s", why)
			}
		case "workdir":
			err = d.workdir(v)
		case "num_nodes":
			t.NumNodes, err = d.numNodes(v)
		case "resources":
			err = d.resources(v, "resources", true)
		case "envs":
			t.Envs, envsAt, err = d.vars(v, "envs", false)
		case "secrets":
			var s map[string]string
			s, secretsAt, err = d.vars(v, "secrets", true)
			if s != nil {
				t.Secrets = Secrets(s)
			}
		case "file_mounts":
			err = d.fileMounts(v)
		case "setup":
			t.Setup, err = d.script(v, "setup")
		case "run":
			t.Run, err = d.script(v, "run")
			t.runAt, t.hasRun = e.at, true
			if v.kind != kNull {
				t.runAt = v.at
			}
		case "config":
			err = d.config(v, e.at, "config")
		case "experimental":
			err = d.experimental(v, e.at)
		default:
			if msg, ok := refusedTop[e.key]; ok {
				return d.errf(e.at, e.key, "%s", msg)
			}
			if why, ok := ignoredTop[e.key]; ok {
				d.warn(e.at, e.key, why)
				continue
			}
			return d.unknown(e, "", knownTop, topHints)
		}
		if err != nil {
			return err
		}
	}
	// A name in both would leave it unclear which value the job gets, and
	// a secret's value must not also sit in envs, which are shown.
	for name, at := range secretsAt {
		if eat, ok := envsAt[name]; ok {
			later := at
			if eat.line > at.line || (eat.line == at.line && eat.col > at.col) {
				later = eat
			}
			return d.errf(later, "", "%s is in both envs and secrets: keep it in one (secrets, if its value is sensitive)", name)
		}
	}
	return nil
}

// unknown reports a field sshq does not know, suggesting the field meant.
func (d *decoder) unknown(e entry, prefix string, known []string, hints map[string]string) error {
	field := prefix + e.key
	lower := strings.ToLower(e.key)
	if prefix == "" {
		for _, r := range knownResources {
			if lower == r {
				return d.errf(e.at, field, "unknown top-level field: %s belongs under resources: (indent it below a resources: line)", r)
			}
			if resourceHints[lower] == r && r != "image_id" {
				return d.errf(e.at, field, "unknown top-level field; did you mean resources.%s? (indent it below a resources: line)", r)
			}
		}
	}
	if h, ok := hints[lower]; ok {
		if h == "" || h == "image_id" {
			return d.errf(e.at, field, "unknown field: sshq does not run containers; it runs the task directly on the node, so install what the task needs in setup")
		}
		return d.errf(e.at, field, "unknown field; did you mean %s%s?", prefix, h)
	}
	if s := suggest(e.key, known); s != "" {
		return d.errf(e.at, field, "unknown field; did you mean %s%s?", prefix, s)
	}
	return d.errf(e.at, field, "unknown field: sshq reads %s; remove it or check its spelling and indentation", strings.Join(knownFirst(known), ", "))
}

// knownFirst lists the fields worth naming in a message: the ones that do
// something.
func knownFirst(known []string) []string {
	if len(known) > 0 && known[0] == "accelerators" {
		return []string{"accelerators", "cpus", "memory", "any_of", "ordered"}
	}
	return []string{"name", "workdir", "num_nodes", "resources", "envs", "secrets", "file_mounts", "setup", "run"}
}

func (d *decoder) text(v *node, field, what string) (string, error) {
	switch v.kind {
	case kNull:
		return "", nil
	case kScalar:
		return v.text, nil
	}
	return "", d.errf(v.at, field, "must be %s (a string), not %s", what, v.describe())
}

func (d *decoder) script(v *node, field string) (string, error) {
	switch {
	case v.kind == kNull:
		return "", nil
	case v.kind == kSeq:
		return "", d.errf(v.at, field, "must be one shell script (a string), not a list: write the commands as a block, e.g.\n  %s: |\n    first command\n    second command", field)
	case v.kind != kScalar || v.stype != sString:
		return "", d.errf(v.at, field, "must be a shell script (a string), not %s: quote it, or write it as a block (%s: |)", v.describe(), field)
	}
	return v.text, nil
}

// numNodes reads num_nodes. How many nodes can hold it is a placement
// question, not a file error: plain nodes run a gang of ranks, a Slurm
// cluster sbatch --nodes.
func (d *decoder) numNodes(v *node) (int, error) {
	if v.kind == kNull {
		return 1, nil
	}
	if v.kind != kScalar || v.stype != sInt || !v.intOK {
		return 0, d.errf(v.at, "num_nodes", "must be a whole number of nodes, not %s: write num_nodes: 1", v.describe())
	}
	switch n := v.intVal; {
	case n < 1:
		return 0, d.errf(v.at, "num_nodes", "must be at least 1, not %d", n)
	case n > MaxNumNodes:
		return 0, d.errf(v.at, "num_nodes", "%d is more nodes than sshq runs a task on (at most %d)", n, MaxNumNodes)
	default:
		return int(n), nil
	}
}

func looksLikeURL(s string) bool {
	if i := strings.Index(s, "://"); i > 0 && !strings.ContainsAny(s[:i], "/ ") {
		return true
	}
	return strings.HasPrefix(s, "git@")
}

func (d *decoder) workdir(v *node) error {
	const gitMsg = "git workdirs are not supported: sshq syncs a local directory; clone the repository and set workdir to the clone's path"
	switch {
	case v.kind == kNull:
		return nil
	case v.kind == kMap:
		for _, e := range v.entries {
			if e.key == "url" {
				return d.errf(v.at, "workdir", "%s", gitMsg)
			}
		}
		return d.errf(v.at, "workdir", "must be a local directory path, not a mapping")
	case v.kind != kScalar || v.stype != sString:
		return d.errf(v.at, "workdir", "must be a local directory path, not %s", v.describe())
	case strings.TrimSpace(v.text) == "":
		return d.errf(v.at, "workdir", "is empty: give a local directory (. for the directory sshq runs in) or remove workdir")
	case looksLikeURL(v.text):
		return d.errf(v.at, "workdir", "%q: %s", v.text, gitMsg)
	}
	d.t.Workdir = d.localPath(v.text)
	d.t.wdAt = v.at
	return nil
}

func (d *decoder) localPath(p string) string {
	p = expandHome(p)
	if !filepath.IsAbs(p) {
		p = filepath.Join(d.t.Dir, p)
	}
	return filepath.Clean(p)
}

const bucketMsg = "bucket and storage mounts are not supported: sshq copies local files only; download the data in setup (e.g. aws s3 sync, gsutil rsync)"

func (d *decoder) fileMounts(v *node) error {
	switch v.kind {
	case kNull:
		return nil
	case kMap:
	default:
		return d.errf(v.at, "file_mounts", "must be a mapping of remote path: local path, not %s", v.describe())
	}
	for _, e := range v.entries {
		field := "file_mounts." + e.key
		remote := e.key
		if remote != "~" && !strings.HasPrefix(remote, "~/") && !strings.HasPrefix(remote, "/") {
			return d.errf(e.at, field, "remote path %q must be absolute or start with ~/", remote)
		}
		src := e.val
		switch {
		case src.kind == kMap:
			return d.errf(src.at, field, "%s", bucketMsg)
		case src.kind == kNull:
			return d.errf(e.at, field, "needs a local path to copy to %s", remote)
		case src.kind != kScalar || src.stype != sString:
			return d.errf(src.at, field, "must be a local path, not %s", src.describe())
		case looksLikeURL(src.text):
			return d.errf(src.at, field, "%q: %s", src.text, bucketMsg)
		case strings.TrimSpace(src.text) == "":
			return d.errf(src.at, field, "is empty: give the local path to copy to %s", remote)
		}
		if d.t.FileMounts == nil {
			d.t.FileMounts = map[string]string{}
			d.t.mountAt = map[string]pos{}
		}
		d.t.FileMounts[remote] = d.localPath(src.text)
		d.t.mountAt[remote] = src.at
	}
	return nil
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// reservedEnv are set by sshq for every job; a task overriding them would
// break GPU isolation (CUDA_VISIBLE_DEVICES) or lie about the job.
var reservedEnv = map[string]bool{
	"CUDA_VISIBLE_DEVICES": true, "CUDA_DEVICE_ORDER": true,
	"SKYPILOT_NODE_RANK": true, "SKYPILOT_NUM_NODES": true, "SKYPILOT_NODE_IPS": true,
	"SKYPILOT_NUM_GPUS_PER_NODE": true, "SKYPILOT_TASK_ID": true,
}

// checkEnvName returns why name cannot be a job's variable, or "".
func checkEnvName(name string) string {
	switch {
	case len(name) > MaxEnvNameLen:
		return fmt.Sprintf("the name is %d bytes long; a variable name may have at most %d: shorten it", len(name), MaxEnvNameLen)
	case !envName.MatchString(name):
		return "not a valid environment variable name: use letters, digits and _, not starting with a digit"
	case reservedEnv[name] || strings.HasPrefix(name, "SSHQ_"):
		return "sshq sets this variable for every job (it names the job's GPUs and place): remove it"
	}
	return ""
}

// vars reads envs: or secrets:. A null value declares a variable the user
// must supply on the command line.
func (d *decoder) vars(v *node, field string, secret bool) (map[string]string, map[string]pos, error) {
	switch v.kind {
	case kNull:
		return nil, nil, nil
	case kMap:
	default:
		return nil, nil, d.errf(v.at, field, "must be a mapping of NAME: value, not %s", v.describe())
	}
	vals := map[string]string{}
	at := map[string]pos{}
	for _, e := range v.entries {
		f := field + "." + e.key
		if len(e.key) > MaxEnvNameLen {
			f = field + "." + e.key[:40] + "..."
		}
		if why := checkEnvName(e.key); why != "" {
			return nil, nil, d.errf(e.at, f, "%s", why)
		}
		at[e.key] = e.at
		switch e.val.kind {
		case kNull:
			d.t.required = append(d.t.required, requirement{secret: secret, name: e.key, at: e.at})
		case kScalar:
			if why := envValueProblem(e.val.text); why != "" {
				return nil, nil, d.errf(e.val.at, f, "%s", why)
			}
			// The text as written: "true" stays "true", 1.10 stays "1.10".
			vals[e.key] = e.val.text
		default:
			return nil, nil, d.errf(e.val.at, f, "must be a string, number or boolean, not %s (leave it empty to require it on the command line)", e.val.describe())
		}
	}
	return vals, at, nil
}

// config: holds SkyPilot's per-cloud settings; only its docker section
// changes what runs.
func (d *decoder) config(v *node, at pos, field string) error {
	if v.kind == kMap {
		for _, e := range v.entries {
			if e.key == "docker" {
				return d.errf(e.at, field+".docker", "sshq does not run containers: it runs the task directly on the node; remove it and install what the task needs in setup")
			}
		}
	}
	if v.kind != kNull {
		d.warn(at, field, "it configures SkyPilot's clouds, and "+placedOnNodes)
	}
	return nil
}

func (d *decoder) experimental(v *node, at pos) error {
	if v.kind == kMap {
		for _, e := range v.entries {
			if e.key == "config_overrides" {
				if e.val.kind == kMap {
					for _, c := range e.val.entries {
						if c.key == "docker" {
							return d.config(e.val, e.at, "experimental.config_overrides")
						}
					}
				}
			}
		}
	}
	if v.kind != kNull {
		d.warn(at, "experimental", "it configures SkyPilot's clouds, and "+placedOnNodes)
	}
	return nil
}

// suggest returns the known name closest to s, if it is close enough to be
// the one meant.
func suggest(s string, known []string) string {
	s = strings.ToLower(s)
	best, bestD := "", 1<<30
	for _, k := range known {
		dist := editDistance(s, k)
		if dist < bestD {
			best, bestD = k, dist
		}
	}
	limit := 1
	if len(s) >= 5 {
		limit = 2
	}
	if bestD <= limit {
		return best
	}
	return ""
}

// editDistance is the optimal string alignment distance: Levenshtein plus
// swapped neighbours, the commonest typo (setpu).
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 20
	}
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
