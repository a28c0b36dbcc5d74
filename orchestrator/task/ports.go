package task

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// MaxPorts bounds resources.ports: an attached launch opens one local
// listener per port, and a SkyPilot range meant for a cloud firewall
// (10000-20000) would take thousands of this machine's ports.
const MaxPorts = 100

// ports reads SkyPilot's resources.ports: a port (8080 or "8080"), a range
// ("8000-8010"), or a list of those. They are the job's ports on its node,
// forwarded to this machine while a launch is attached.
func (d *decoder) ports(v *node, field string) error {
	var items []*node
	switch v.kind {
	case kNull:
		return nil
	case kScalar:
		items = []*node{v}
	case kSeq:
		items = v.items
	default:
		return d.errf(v.at, field, "must be a port (8080), a range (\"8000-8010\") or a list of them, not %s", v.describe())
	}
	seen := map[int]bool{}
	for _, p := range d.t.Resources.Ports {
		seen[p] = true
	}
	for _, it := range items {
		if it.kind != kScalar {
			return d.errf(it.at, field, "must be a port (8080), a range (\"8000-8010\") or a list of them, not %s", it.describe())
		}
		lo, hi, err := parsePortRange(it.text)
		if err != "" {
			return d.errf(it.at, field, "%q: %s", it.text, err)
		}
		for p := lo; p <= hi; p++ {
			if !seen[p] {
				seen[p] = true
				d.t.Resources.Ports = append(d.t.Resources.Ports, p)
			}
			if len(d.t.Resources.Ports) > MaxPorts {
				return d.errf(it.at, field, "more than %d ports: sshq forwards each one to this machine while a launch is attached; list the ports the job serves on", MaxPorts)
			}
		}
	}
	sort.Ints(d.t.Resources.Ports)
	return nil
}

// parsePortRange reads "8080" or "8000-8010"; the reason is "" when it is
// well formed.
func parsePortRange(s string) (lo, hi int, why string) {
	s = strings.TrimSpace(s)
	a, b, isRange := strings.Cut(s, "-")
	lo, ok := portNumber(a)
	if !ok {
		return 0, 0, "a port is a whole number from 1 to 65535, and a range is written 8000-8010"
	}
	hi = lo
	if isRange {
		if hi, ok = portNumber(b); !ok || hi < lo {
			return 0, 0, "a range is written LOW-HIGH with 1 <= LOW <= HIGH <= 65535, as in 8000-8010"
		}
	}
	return lo, hi, ""
}

func portNumber(s string) (int, bool) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	return n, err == nil && n >= 1 && n <= 65535
}

// PortsString is ports as a task file would list them, ranges folded:
// "8080, 8000-8010".
func PortsString(ports []int) string {
	var parts []string
	for i := 0; i < len(ports); {
		j := i
		for j+1 < len(ports) && ports[j+1] == ports[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", ports[i], ports[j]))
		} else {
			parts = append(parts, strconv.Itoa(ports[i]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}
