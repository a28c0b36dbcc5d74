package remote

import (
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/sshpool"
)

// The node-side shell, one file per action (see the files' heads). A
// command sends lib.sh, the files its action needs and the line that runs
// it, as the script of `bash -c SCRIPT sshq ACTION ARGS...`.
var (
	//go:embed lib.sh
	libSh string
	//go:embed lease.sh
	leaseSh string
	//go:embed sched.sh
	schedSh string
	//go:embed submit.sh
	submitSh string
	//go:embed wrapper.sh
	wrapperSh string
	//go:embed shell.sh
	shellSh string
	//go:embed jobs.sh
	jobsSh string
	//go:embed status.sh
	statusSh string
	//go:embed place.sh
	placeSh string
	//go:embed cancel.sh
	cancelSh string
	//go:embed logs.sh
	logsSh string
	//go:embed check.sh
	checkSh string
	//go:embed limits.sh
	limitsSh string
	//go:embed watch.sh
	watchSh string
)

// scripts maps each action to its script. Submit's is also the job's
// wrapper (the node keeps a copy), hence wrapper.sh in it.
var scripts = map[string]string{
	"submit": script(leaseSh, schedSh, gangRecSh, limitsSh, watchSh, submitSh, wrapperSh, shellSh),
	"jobs":   script(leaseSh, schedSh, gangRecSh, jobsSh),
	"status": script(leaseSh, schedSh, gangRecSh, statusSh),
	"place":  script(leaseSh, schedSh, placeSh),
	"cancel": script(leaseSh, schedSh, gangRecSh, jobsSh, cancelSh),
	"logs":   script(logsSh),
	"check":  script(leaseSh, schedSh, limitsSh, checkSh),
}

func script(parts ...string) string {
	return uncomment(libSh + "\n" + strings.Join(parts, "\n") + "\nsshq_main \"$@\"\n")
}

// uncomment drops the comment lines of a script: a command's script travels
// as one argument, which Linux caps at 128 KiB (MAX_ARG_STRLEN), and the
// comments are for the reader of the source. A line whose first non-blank
// character is '#' is a comment in every script here (none holds such a
// line inside a quoted string or a here-document: TestUncommentKeepsCode).
func uncomment(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for line := range strings.Lines(s) {
		if t := strings.TrimLeft(line, " \t"); strings.HasPrefix(t, "#") {
			continue
		}
		b.WriteString(line)
	}
	return b.String()
}

// DefaultCancelGrace is how long Cancel lets a job handle SIGTERM (save a
// checkpoint, flush logs) before it sends SIGKILL.
const DefaultCancelGrace = 10 * time.Second

// EnvVar is one environment variable given to a job.
type EnvVar struct {
	Name, Value string
}

// JobSpec is what the controller decided about one job on one node.
type JobSpec struct {
	// UID names the job on every node: its directory, its tmux session and
	// its lease records. Letters, digits, '-' and '_' (the controller uses
	// <controller-id>-<n>).
	UID string
	// ID is the small number people see (SSHQ_JOB_ID).
	ID int
	// Name is the job's name (SSHQ_JOB_NAME); any bytes but NUL.
	Name string
	// User is the controller's local user, shown in lease and queue listings.
	User string
	// NumGPUs is the number of GPUs to lease on this node; 0 starts at once.
	NumGPUs int
	// AllowedGPUs are the UUIDs of the node's GPUs the job may use (the
	// caller resolves a GPU type to these); empty means any.
	AllowedGPUs []string
	// Env are the task's environment variables, in order.
	Env []EnvVar
	// Secrets are environment variables that are written only to a 0600
	// file in the job directory, removed when the job ends, and never
	// appear on a command line or in a log.
	Secrets []EnvVar
	// Setup and Run are bash scripts; Setup may be empty.
	Setup, Run string
	// WorkdirKey names the node's workdir cache ~/.sshq/workdirs/<key>/,
	// which Submit snapshots; "" runs the job in the remote $HOME.
	WorkdirKey string
	// NodeRank, NumNodes and NodeIPs describe a multi-node job; NumNodes 0
	// means 1.
	NodeRank, NumNodes int
	NodeIPs            []string
	// MemLimitMiB bounds the memory of the job's whole process tree (0:
	// none): past it the job ends OUT_OF_MEMORY. TimeLimit bounds its
	// time from the start of setup (0: none; whole seconds, rounded up):
	// past it the job ends TIMEOUT. CPUs pins it to that many cores (0:
	// not pinned).
	MemLimitMiB int64
	TimeLimit   time.Duration
	CPUs        int
	// Gang makes the job one rank of a multi-node job (NumNodes >= 2);
	// nil for a job on one node.
	Gang *GangSpec
	// Shell makes the job `sshq shell`'s: after setup, its tmux pane runs
	// the account's login shell instead of Run (see shell.sh), within the
	// same limits; nil for a batch job.
	Shell *ShellSpec
}

// ShellSpec is an interactive job's.
type ShellSpec struct {
	// Idle ends the shell after that long with no tmux client attached
	// (whole seconds, at least one); 0 never does.
	Idle time.Duration
}

// submitCommand returns the command that creates the job on a node (see
// Client.Submit) and the bytes to send as its stdin.
func submitCommand(spec JobSpec) (cmd string, stdin []byte, err error) {
	if err := spec.validate(); err != nil {
		return "", nil, err
	}
	numNodes := spec.NumNodes
	if numNodes == 0 {
		numNodes = 1
	}

	allowed := strings.Join(spec.AllowedGPUs, ",")
	meta := strings.Join([]string{
		"# sshq job identity (written by the controller)",
		"SSHQ_M_UID=" + sshpool.Quote(spec.UID),
		"SSHQ_M_ID=" + strconv.Itoa(spec.ID),
		"SSHQ_M_USER=" + sshpool.Quote(EncodeField(spec.User)),
		"SSHQ_M_NAME=" + sshpool.Quote(EncodeField(spec.Name)),
		"SSHQ_M_NGPUS=" + strconv.Itoa(spec.NumGPUs),
		"SSHQ_M_ALLOWED=" + sshpool.Quote(allowed),
		"SSHQ_M_WORKDIR=" + sshpool.Quote(spec.WorkdirKey),
		"SSHQ_M_MEM_KIB=" + strconv.FormatInt(spec.MemLimitMiB*1024, 10),
		"SSHQ_M_TIME_S=" + strconv.FormatInt(int64((spec.TimeLimit+time.Second-1)/time.Second), 10),
		"SSHQ_M_CPUS=" + strconv.Itoa(spec.CPUs),
		"",
	}, "\n")
	if spec.Shell != nil {
		meta += "SSHQ_M_SHELL=" + strconv.FormatInt(int64(spec.Shell.idleSeconds()), 10) + "\n"
	}
	if spec.Gang != nil {
		meta += spec.Gang.metaLines(spec)
	}

	ips := strings.Join(spec.NodeIPs, "\n")
	static := []EnvVar{
		{"SSHQ_JOB_ID", strconv.Itoa(spec.ID)},
		{"SSHQ_JOB_NAME", spec.Name},
		{"SSHQ_NODE_RANK", strconv.Itoa(spec.NodeRank)},
		{"SSHQ_NUM_NODES", strconv.Itoa(numNodes)},
		{"SSHQ_NODE_IPS", ips},
		{"SSHQ_NUM_GPUS_PER_NODE", strconv.Itoa(spec.NumGPUs)},
		{"SKYPILOT_NODE_RANK", strconv.Itoa(spec.NodeRank)},
		{"SKYPILOT_NUM_NODES", strconv.Itoa(numNodes)},
		{"SKYPILOT_NODE_IPS", ips},
		{"SKYPILOT_NUM_GPUS_PER_NODE", strconv.Itoa(spec.NumGPUs)},
		{"SKYPILOT_TASK_ID", spec.UID},
	}
	env, err := exportLines(spec.Env, "# sshq job environment: the task's envs, then sshq's own values (which win)")
	if err != nil {
		return "", nil, fmt.Errorf("job %s: env: %w", spec.UID, err)
	}
	if spec.Gang != nil {
		// A gang's addresses are known when it starts: gpu.env has them.
		static = slices.DeleteFunc(static, func(v EnvVar) bool { return strings.HasSuffix(v.Name, "_NODE_IPS") })
	}
	own, _ := exportLines(static, "")
	secrets, err := exportLines(spec.Secrets, "# sshq job secrets: removed when the job ends")
	if err != nil {
		return "", nil, fmt.Errorf("job %s: secret: %w", spec.UID, err)
	}

	var b []byte
	add := func(name, content string) {
		b = append(b, name...)
		b = append(b, 0)
		b = append(b, content...)
		b = append(b, 0)
	}
	add("meta.sh", meta)
	add("env.sh", env+own)
	if len(spec.Secrets) > 0 {
		add("secrets.sh", secrets)
	}
	add("setup.sh", spec.Setup)
	add("run.sh", spec.Run)
	if spec.Gang != nil {
		return commandWith(gangSubmit, "submit", spec.UID), b, nil
	}
	return command("submit", spec.UID), b, nil
}

// idleSeconds rounds Idle up to whole seconds: a limit of 0.5s must not
// become "never".
func (s *ShellSpec) idleSeconds() int64 {
	if s.Idle <= 0 {
		return 0
	}
	return int64((s.Idle + time.Second - 1) / time.Second)
}

// validate refuses a spec the node could not take as it is meant.
func (spec JobSpec) validate() error {
	if err := checkUID(spec.UID); err != nil {
		return err
	}
	if spec.NumGPUs < 0 {
		return fmt.Errorf("job %s: NumGPUs %d is negative", spec.UID, spec.NumGPUs)
	}
	for _, u := range spec.AllowedGPUs {
		if !isToken(u) {
			return fmt.Errorf("job %s: GPU uuid %q holds characters nvidia-smi never prints in a uuid", spec.UID, u)
		}
	}
	if spec.WorkdirKey != "" && (!isToken(spec.WorkdirKey) || strings.Trim(spec.WorkdirKey, ".") == "") {
		return fmt.Errorf("job %s: workdir key %q must be letters, digits, '.', '-', '_' (it names a directory on the node)", spec.UID, spec.WorkdirKey)
	}
	for _, ip := range spec.NodeIPs {
		if ip == "" || strings.ContainsAny(ip, "\n\x00") {
			return fmt.Errorf("job %s: node IP %q is empty or holds a newline", spec.UID, ip)
		}
	}
	if strings.Contains(spec.Name, "\x00") || strings.Contains(spec.User, "\x00") {
		return fmt.Errorf("job %s: name or user holds a NUL byte", spec.UID)
	}
	if strings.Contains(spec.Setup, "\x00") || strings.Contains(spec.Run, "\x00") {
		return fmt.Errorf("job %s: setup or run script holds a NUL byte, which bash cannot run", spec.UID)
	}
	if spec.MemLimitMiB < 0 || spec.TimeLimit < 0 || spec.CPUs < 0 {
		return fmt.Errorf("job %s: a negative limit (memory %d MiB, time %v, %d CPUs)", spec.UID, spec.MemLimitMiB, spec.TimeLimit, spec.CPUs)
	}
	if spec.MemLimitMiB > 1<<40 {
		return fmt.Errorf("job %s: memory limit %d MiB is past any machine", spec.UID, spec.MemLimitMiB)
	}
	numNodes := spec.NumNodes
	if numNodes == 0 {
		numNodes = 1
	}
	if spec.NodeRank < 0 || spec.NodeRank >= numNodes {
		return fmt.Errorf("job %s: node rank %d is outside 0..%d", spec.UID, spec.NodeRank, numNodes-1)
	}
	if spec.Gang != nil {
		return spec.Gang.validate(spec)
	}
	return nil
}

// exportLines renders vars as a file bash sources; each value is one
// POSIX-quoted word, so it arrives byte-exact and nothing in it runs.
func exportLines(vars []EnvVar, header string) (string, error) {
	var sb strings.Builder
	if header != "" {
		sb.WriteString(header + "\n")
	}
	for _, v := range vars {
		line, err := sshpool.ExportLine(v.Name, v.Value)
		if err != nil {
			return "", err
		}
		sb.WriteString(line)
	}
	return sb.String(), nil
}

func command(action string, args ...string) string {
	return sshpool.Command(append([]string{"bash", "-c", scripts[action], "sshq", action}, args...)...)
}

// checkUID also vets the uids read back from a node's records, which other
// users can write.
func checkUID(uid string) error { return job.CheckUID(uid) }

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !safeByte(s[i]) {
			return false
		}
	}
	return true
}

func safeByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
}

// EncodeField makes s one field of the node's tab-separated records (owner
// files, tickets, reports): bytes outside [A-Za-z0-9._-] become %XX and the
// empty string becomes "~", so a name with tabs, newlines or quotes can
// neither split a record nor be read as anything but data.
func EncodeField(s string) string {
	if s == "" {
		return "~"
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if safeByte(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// DecodeField reverses EncodeField.
func DecodeField(s string) (string, error) {
	if s == "~" {
		return "", nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(s) {
			return "", errors.New("truncated %-escape in field " + strconv.Quote(s))
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("bad %%-escape in field %q", s)
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String(), nil
}
