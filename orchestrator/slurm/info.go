package slurm

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/sshq/sshq/orchestrator/job"
	"github.com/sshq/sshq/orchestrator/task"
)

// Info is what a login node tells about its cluster.
type Info struct {
	// Version is `sbatch --version` ("slurm-wlm 22.05.8").
	Version string
	// HasSacct says the sacct command exists (it may still answer that
	// accounting is disabled).
	HasSacct   bool
	Partitions []Partition
	Nodes      []Node
}

// Partition is one Slurm partition.
type Partition struct {
	Name      string
	Default   bool
	Up        bool
	TimeLimit string // as Slurm prints it: "infinite", "1-00:00:00"
	Nodes     int
	NodeList  string // Slurm's hostlist, "gpu[01-04]"
}

// Node is one compute node.
type Node struct {
	Name       string
	Partitions []string
	State      string // Slurm's long state: idle, mixed, allocated, drained...
	GPUs       []GPU  // by type
	CPUsAlloc  int
	CPUsTotal  int
	MemoryMB   int
	AllocMemMB int
	Reason     string // why the node is down or drained; "" when none
}

// GPU is one type of GPU gres on a node: Type as the cluster spells it
// ("" for untyped gres), how many the node has and how many jobs hold.
type GPU struct {
	Type        string
	Total, Used int
}

// QueueEntry is one job in the cluster's queue, any user's.
type QueueEntry struct {
	ID         string
	Partition  string
	State      job.State
	SlurmState string
	User       string
	Name       string
	TimeUsed   string
	NumNodes   int
	GRES       string // what it asked per node, "gres:gpu:a100:1"
	NodeList   string
	Reason     string // why it waits ("Resources", "Priority"); "" when none
}

// Status is the cluster at one moment: its partitions, nodes and queue,
// read in one session.
type Status struct {
	Info
	Queue []QueueEntry
}

// Probe checks that the login node has Slurm's commands and reads the
// partitions and each node's GPU gres, in one session. A login node
// without sbatch, squeue or sinfo, or whose controller does not answer, is
// an error that says so.
func (c *Client) Probe(ctx context.Context) (*Info, error) {
	recs, err := c.call(ctx, "probe", nil)
	if err != nil {
		return nil, err
	}
	info, _, err := c.parseInfo(recs)
	return info, err
}

// Status reads the partitions, each node's GPUs in use and total, and the
// whole queue, in one session.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	recs, err := c.call(ctx, "status", nil)
	if err != nil {
		return nil, err
	}
	info, rest, err := c.parseInfo(recs)
	if err != nil {
		return nil, err
	}
	st := &Status{Info: *info}
	for _, r := range rest {
		kind, body, _ := strings.Cut(r, "|")
		switch kind {
		case "job":
			if q, ok := parseQueueLine(body); ok {
				st.Queue = append(st.Queue, q)
			}
		case "error":
			return nil, fmt.Errorf("%s: %s; is slurmctld up? (`scontrol ping` on the login node tells)", c.Name, body)
		}
	}
	return st, nil
}

// parseInfo reads the probe's records, remembers the result for Submit
// and returns the records it does not know.
func (c *Client) parseInfo(recs []string) (*Info, []string, error) {
	info := &Info{}
	var missing, rest []string
	byName := map[string]*Node{}
	var order []string
	for _, r := range recs {
		kind, body, _ := strings.Cut(r, "|")
		switch kind {
		case "missing":
			missing = append(missing, body)
		case "has":
			info.HasSacct = info.HasSacct || body == "sacct"
		case "version":
			info.Version = body
		case "partition":
			if p, ok := parsePartitionLine(body); ok {
				info.Partitions = append(info.Partitions, p)
			}
		case "node":
			n, part, ok := parseNodeLine(body)
			if !ok {
				continue
			}
			if prev := byName[n.Name]; prev != nil {
				if part != "" {
					prev.Partitions = append(prev.Partitions, part)
				}
				continue
			}
			if part != "" {
				n.Partitions = []string{part}
			}
			byName[n.Name] = &n
			order = append(order, n.Name)
		case "error":
			if len(missing) == 0 {
				return nil, nil, fmt.Errorf("%s: %s; is slurmctld up? (`scontrol ping` on the login node tells)", c.Name, body)
			}
		default:
			rest = append(rest, r)
		}
	}
	if len(missing) > 0 {
		return nil, nil, fmt.Errorf("%s is not a Slurm login node: %s not found on its PATH in a non-interactive ssh session; install Slurm's client commands there, or add their directory to PATH in ~/.bashrc (before any early return)", c.Name, strings.Join(missing, ", "))
	}
	for _, name := range order {
		info.Nodes = append(info.Nodes, *byName[name])
	}
	c.mu.Lock()
	c.info = info
	c.mu.Unlock()
	return info, rest, nil
}

// fields splits a line of `-O 'A:|,B:|'` output, which ends with the
// separator; the last field keeps any '|' of its own (free text).
func fields(line string, n int) []string {
	line = strings.TrimSuffix(strings.TrimRight(line, "\r"), "|")
	f := strings.SplitN(line, "|", n)
	if len(f) != n {
		return nil
	}
	for i := range f[:n-1] {
		f[i] = strings.TrimSpace(f[i])
	}
	return f
}

func parsePartitionLine(s string) (Partition, bool) {
	f := fields(s, 5)
	if f == nil {
		return Partition{}, false
	}
	p := Partition{Name: strings.TrimSuffix(f[0], "*"), Default: strings.HasSuffix(f[0], "*"),
		Up: f[1] == "up", TimeLimit: f[2], NodeList: strings.TrimSpace(f[4])}
	p.Nodes, _ = strconv.Atoi(f[3])
	return p, true
}

// parseNodeLine reads NodeList|Partition|StateLong|Gres|GresUsed|CPUsState|
// Memory|AllocMem|Reason.
func parseNodeLine(s string) (Node, string, bool) {
	f := fields(s, 9)
	if f == nil {
		return Node{}, "", false
	}
	n := Node{Name: f[0], State: f[2], Reason: strings.TrimSpace(f[8])}
	if n.Reason == "none" {
		n.Reason = ""
	}
	used := parseGres(f[4])
	for t, total := range parseGres(f[3]) {
		n.GPUs = append(n.GPUs, GPU{Type: t, Total: total, Used: used[t]})
		delete(used, t)
	}
	for t, u := range used {
		if u > 0 {
			n.GPUs = append(n.GPUs, GPU{Type: t, Used: u})
		}
	}
	sort.Slice(n.GPUs, func(i, j int) bool { return n.GPUs[i].Type < n.GPUs[j].Type })
	if cs := strings.Split(f[5], "/"); len(cs) == 4 {
		n.CPUsAlloc, _ = strconv.Atoi(cs[0])
		n.CPUsTotal, _ = strconv.Atoi(cs[3])
	}
	n.MemoryMB, _ = strconv.Atoi(f[6])
	n.AllocMemMB, _ = strconv.Atoi(f[7])
	return n, strings.TrimSuffix(f[1], "*"), true
}

// parseGres reads a gres list as sinfo prints it ("gpu:a100:2(S:0-1),
// gpu:v100:1,mps:100", "gpu:a100:1(IDX:0,2)", "gpu:4", "(null)") into GPU
// counts by type; gres other than gpu are skipped.
func parseGres(s string) map[string]int {
	out := map[string]int{}
	for _, item := range splitTop(s) {
		item = strings.TrimSpace(item)
		// The detail in parentheses ends the item; "(null)" may also
		// stand for a type.
		if i := strings.LastIndexByte(item, '('); i >= 0 && strings.HasSuffix(item, ")") && item[i:] != "(null)" {
			item = item[:i]
		}
		parts := strings.Split(strings.TrimSpace(item), ":")
		if len(parts) < 2 || parts[0] != "gpu" {
			continue
		}
		n, err := strconv.Atoi(parts[len(parts)-1])
		if err != nil {
			continue
		}
		typ := strings.Join(parts[1:len(parts)-1], ":")
		if typ == "(null)" {
			typ = ""
		}
		out[typ] += n
	}
	return out
}

// splitTop splits at the commas outside parentheses: "IDX:0,2" is one
// item's detail, not two items.
func splitTop(s string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			if depth > 0 {
				depth--
			}
		case ',':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// parseQueueLine reads JobID|Partition|State|UserName|TimeUsed|NumNodes|
// tres-per-node|NodeList|Reason|Name.
func parseQueueLine(s string) (QueueEntry, bool) {
	f := fields(s, 10)
	if f == nil || f[0] == "" {
		return QueueEntry{}, false
	}
	q := QueueEntry{ID: f[0], Partition: f[1], SlurmState: f[2], User: f[3], TimeUsed: f[4],
		GRES: nullable(f[6]), NodeList: f[7], Reason: reason(f[8]), Name: f[9]}
	q.State = MapState(q.SlurmState)
	q.NumNodes, _ = strconv.Atoi(f[5])
	return q, true
}

func nullable(s string) string {
	if s == "(null)" || s == "N/A" {
		return ""
	}
	return s
}

func reason(s string) string {
	s = strings.TrimSpace(s)
	if s == "None" || s == "none" || s == "(null)" {
		return ""
	}
	return s
}

// GPUTypes lists the GPU types the cluster's nodes offer, sorted, without
// duplicates; untyped gres are left out.
func (i *Info) GPUTypes() []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range i.Nodes {
		for _, g := range n.GPUs {
			if g.Type != "" && !seen[g.Type] {
				seen[g.Type] = true
				out = append(out, g.Type)
			}
		}
	}
	sort.Strings(out)
	return out
}

// ResolveGPUType names a requested GPU type (as a task file writes it,
// "A100") as the cluster's gres spells it ("a100"): the same name ignoring
// case, else the one type task.MatchGPU accepts ("A100-80GB" for a gres
// type nvidia_a100-sxm4-80gb). "" stays "" (any GPU). No match, or several
// equally good ones, is an error that lists the cluster's types.
func (i *Info) ResolveGPUType(want string) (string, error) {
	want = strings.TrimSpace(want)
	if want == "" {
		return "", nil
	}
	types := i.GPUTypes()
	for _, t := range types {
		if strings.EqualFold(t, want) {
			return t, nil
		}
	}
	var matches []string
	for _, t := range types {
		if task.MatchGPU(want, t) {
			matches = append(matches, t)
		}
	}
	switch {
	case len(matches) == 1:
		return matches[0], nil
	case len(matches) > 1:
		return "", fmt.Errorf("GPU type %s matches several of the cluster's gres types (%s); ask for one of them by name", want, strings.Join(matches, ", "))
	case len(types) == 0:
		return "", fmt.Errorf("GPU type %s: the cluster declares no typed GPU gres (sinfo shows none); ask for a count of any GPU instead, as in --gpus 1", want)
	}
	return "", fmt.Errorf("GPU type %s is not on this cluster; its GPU gres types are %s", want, strings.Join(types, ", "))
}
