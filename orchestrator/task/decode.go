package task

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
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
			err = d.numNodes(v)
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

func (d *decoder) numNodes(v *node) error {
	if v.kind == kNull {
		return nil
	}
	if v.kind != kScalar || v.stype != sInt || !v.intOK {
		return d.errf(v.at, "num_nodes", "must be a whole number of nodes, not %s: write num_nodes: 1", v.describe())
	}
	switch n := v.intVal; {
	case n < 1:
		return d.errf(v.at, "num_nodes", "must be at least 1, not %d", n)
	case n > 1:
		return d.errf(v.at, "num_nodes", "multi-node tasks are not supported yet: sshq runs a task on one node; set num_nodes: 1 (or remove it)")
	}
	return nil
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

// resources reads resources:, or (top false) one entry of any_of/ordered.
func (d *decoder) resources(v *node, field string, top bool) error {
	switch v.kind {
	case kNull:
		return nil
	case kMap:
	default:
		return d.errf(v.at, field, "must be a mapping (accelerators:, cpus:, memory:), not %s", v.describe())
	}
	r := &d.t.Resources
	var accelAt, candAt *pos
	for _, e := range v.entries {
		f := field + "." + e.key
		var err error
		switch e.key {
		case "accelerators":
			if candAt != nil && top {
				return d.errf(e.at, f, "set accelerators either here or in the entries of any_of/ordered, not both")
			}
			var list []Accel
			var ordered bool
			list, ordered, err = d.accelerators(e.val, f)
			if err == nil {
				r.Accelerators = append(r.Accelerators, list...)
				if top {
					r.AccelOrdered = ordered
				}
				accelAt = &e.at
			}
		case "cpus", "memory":
			if !top {
				return d.errf(e.at, f, "per-candidate %s is not supported: set %s once, directly under resources:", e.key, e.key)
			}
			q, qerr := d.quantity(e.val, f, e.key == "memory")
			if e.key == "cpus" {
				r.CPUs = q
			} else {
				r.Memory = q
			}
			err = qerr
		case "ports":
			err = d.ports(e.val, f)
		case "any_of", "ordered":
			if !top {
				return d.errf(e.at, f, "cannot be nested inside another any_of/ordered entry")
			}
			if candAt != nil {
				return d.errf(e.at, f, "give either any_of or ordered, not both")
			}
			if accelAt != nil {
				return d.errf(e.at, f, "set accelerators either directly under resources or in the entries of %s, not both", e.key)
			}
			candAt = &e.at
			if e.val.kind != kSeq {
				return d.errf(e.val.at, f, "must be a list of resources, e.g.\n  %s:\n    - accelerators: A100:1\n    - accelerators: H100:1", e.key)
			}
			for i, item := range e.val.items {
				if err := d.resources(item, fmt.Sprintf("%s[%d]", f, i), false); err != nil {
					return err
				}
			}
			r.AccelOrdered = e.key == "ordered"
		default:
			if msg, ok := refusedResources[e.key]; ok {
				return d.errf(e.at, f, "%s", msg)
			}
			if why, ok := ignoredResources[e.key]; ok {
				if e.val.kind != kNull {
					d.warn(e.at, f, why)
				}
				continue
			}
			return d.unknown(e, field+".", knownResources, resourceHints)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// accelerators reads every SkyPilot spelling: "A100:2", A100, {A100: 2},
// {A100:1, V100:1} (a set: any will do), or a list (a preference order).
// A bare number is sshq's own: that many GPUs of any type.
func (d *decoder) accelerators(v *node, field string) ([]Accel, bool, error) {
	switch v.kind {
	case kNull:
		return nil, false, nil
	case kScalar:
		if v.stype == sInt {
			if !v.intOK || v.intVal < 1 {
				return nil, false, d.errf(v.at, field, "%s: count must be a positive integer, as in A100:2", v.text)
			}
			return []Accel{{Count: int(v.intVal)}}, false, nil
		}
		a, err := d.accelString(v, field)
		if err != nil {
			return nil, false, err
		}
		return []Accel{a}, false, nil
	case kMap:
		var out []Accel
		for _, e := range v.entries {
			a, err := d.accelEntry(e, field)
			if err != nil {
				return nil, false, err
			}
			out = append(out, a)
		}
		if len(out) == 0 {
			return nil, false, d.errf(v.at, field, "is an empty mapping: give a GPU type, as in A100:1")
		}
		return out, false, nil
	}
	var out []Accel
	for _, item := range v.items {
		switch item.kind {
		case kScalar:
			if item.stype != sString {
				return nil, false, d.errf(item.at, field, "%s: give a GPU type and count, as in A100:2", item.describe())
			}
			a, err := d.accelString(item, field)
			if err != nil {
				return nil, false, err
			}
			out = append(out, a)
		case kMap:
			if len(item.entries) != 1 {
				return nil, false, d.errf(item.at, field, "each list entry names one GPU type, as in - A100: 2")
			}
			a, err := d.accelEntry(item.entries[0], field)
			if err != nil {
				return nil, false, err
			}
			out = append(out, a)
		default:
			return nil, false, d.errf(item.at, field, "each list entry names one GPU type, as in - A100:2, not %s", item.describe())
		}
	}
	if len(out) == 0 {
		return nil, false, d.errf(v.at, field, "is an empty list: give a GPU type, as in A100:1")
	}
	return out, true, nil
}

func (d *decoder) accelString(v *node, field string) (Accel, error) {
	a, msg := parseAccel(v.text)
	if msg != "" {
		return Accel{}, d.errf(v.at, field, "%q: %s", v.text, msg)
	}
	return a, nil
}

// accelEntry reads one mapping entry: A100: 2, A100: (count 1), or the
// "A100:1": null that {A100:1, V100:1} means to a YAML 1.1 parser.
func (d *decoder) accelEntry(e entry, field string) (Accel, error) {
	switch e.val.kind {
	case kNull:
		a, msg := parseAccel(e.key)
		if msg != "" {
			return Accel{}, d.errf(e.at, field, "%q: %s", e.key, msg)
		}
		return a, nil
	case kScalar:
		if strings.Contains(e.key, ":") {
			return Accel{}, d.errf(e.at, field, "%q: give the count once, as in %s: 2", e.key, strings.SplitN(e.key, ":", 2)[0])
		}
		a, msg := parseAccel(e.key + ":" + e.val.text)
		if msg != "" {
			return Accel{}, d.errf(e.val.at, field, "%s: %s: %s", e.key, e.val.text, msg)
		}
		return a, nil
	}
	return Accel{}, d.errf(e.val.at, field, "%s: the count must be a positive integer, not %s", e.key, e.val.describe())
}

var quantityRe = regexp.MustCompile(`^\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*(\+?)\s*$`)

var memUnits = map[string]float64{"": 1, "g": 1, "gb": 1, "gib": 1, "t": 1024, "tb": 1024, "tib": 1024, "m": 1.0 / 1024, "mb": 1.0 / 1024, "mib": 1.0 / 1024}

// quantity reads cpus: or memory: (4, 4.5, "4+", "32GB+").
func (d *decoder) quantity(v *node, field string, memory bool) (Quantity, error) {
	example := `4 or "4+" (at least 4)`
	if memory {
		example = `32 or "32+" (GB; at least 32)`
	}
	if v.kind == kNull {
		return Quantity{}, nil
	}
	if v.kind != kScalar || v.stype == sBool {
		return Quantity{}, d.errf(v.at, field, "must be a number, as in %s, not %s", example, v.describe())
	}
	m := quantityRe.FindStringSubmatch(v.text)
	if m == nil {
		return Quantity{}, d.errf(v.at, field, "%q: must be a number, as in %s", v.text, example)
	}
	f, err := strconv.ParseFloat(m[1], 64)
	unit, ok := memUnits[strings.ToLower(m[2])]
	if m[2] != "" && !memory || !ok {
		return Quantity{}, d.errf(v.at, field, "%q: unknown unit %q; write it as %s", v.text, m[2], example)
	}
	f *= unit
	if err != nil || f <= 0 || math.IsInf(f, 0) {
		return Quantity{}, d.errf(v.at, field, "%q: must be a positive number, as in %s", v.text, example)
	}
	return Quantity{Value: f, OrMore: m[3] == "+"}, nil
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
