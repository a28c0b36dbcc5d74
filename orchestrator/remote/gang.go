package remote

import (
	"context"
	_ "embed"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/sshq/sshq/sshpool"
)

// A multi-node job (a gang) is one job per node under the same uid, each
// submitted with a GangSpec. See gang.sh for how its ranks start together
// and gang.py for the agent that carries the start barrier and the stops.
var (
	//go:embed gang.sh
	gangSh string
	//go:embed gangrec.sh
	gangRecSh string
	//go:embed gang.py
	gangPy string
)

// gangSubmit is submit's script for a rank of a gang: the wrapper with the
// gang's part and its agent.
var gangSubmit = script(leaseSh, schedSh, gangRecSh, limitsSh, watchSh, submitSh, wrapperSh, shellSh, gangSh, "gang_py="+sshpool.Quote(gangPy))

// GangSpec makes a JobSpec one rank of a multi-node job. The job's
// NodeRank and NumNodes say which rank of how many.
type GangSpec struct {
	// Key orders gangs alike on every node: "<ns>-<uid>", ns being 19
	// digits of the controller's clock when it submitted. It names the
	// rank's ticket in each node's queue.
	Key string
	// Token is the gang's secret: a rank's agent must show it to rank 0's
	// coordinator.
	Token string
	// Coordinator is where rank 0's coordinator listens, "host:port";
	// empty for rank 0 itself.
	Coordinator string
	// IPs are the ranks' addresses as the controller knows them (a node's
	// `ip:` in config.yaml, or its HostName when that is an address); ""
	// where unknown: the coordinator fills in the address each rank
	// reached it from (rank 0: the address they reached).
	IPs []string
	// Hold is how long a rank holds its GPUs waiting for the others before
	// it lets them go and keeps its place (0: 10 minutes).
	Hold time.Duration
	// Lost is how long a rank may go unheard before the others stop (0:
	// 30 seconds).
	Lost time.Duration
	// Grace is how long a stopped rank may take SIGTERM before SIGKILL (0:
	// 10 seconds).
	Grace time.Duration
}

// DefaultGangHold is GangSpec.Hold's default.
const DefaultGangHold = 10 * time.Minute

// NewGangKey returns the key of a gang submitted now.
func NewGangKey(uid string, now time.Time) string {
	return fmt.Sprintf("%019d-%s", now.UnixNano(), uid)
}

// RankUID is the uid of a gang's rank on its node: the job's uid for rank
// 0 (so everything that reaches a job on its node reaches rank 0), with
// "-r<rank>" for the others. Each rank's processes carry their own mark,
// so two ranks never touch each other's processes, even on one machine.
func RankUID(uid string, rank int) string {
	if rank == 0 {
		return uid
	}
	return uid + "-r" + strconv.Itoa(rank)
}

func (g *GangSpec) validate(spec JobSpec) error {
	if err := checkUID(g.Key); err != nil || len(g.Key) < 21 || strings.Trim(g.Key[:19], "0123456789") != "" || g.Key[19] != '-' {
		return fmt.Errorf("job %s: gang key %q must be 19 digits, '-' and the gang's uid", spec.UID, g.Key)
	}
	if !isToken(g.Token) || len(g.Token) < 16 {
		return fmt.Errorf("job %s: the gang token must be 16 or more letters and digits", spec.UID)
	}
	if spec.NumNodes < 2 {
		return fmt.Errorf("job %s: a gang has 2 or more nodes, not %d", spec.UID, spec.NumNodes)
	}
	if spec.NodeRank > 0 {
		host, port, err := net.SplitHostPort(g.Coordinator)
		if err != nil || !isAddr(host) {
			return fmt.Errorf("job %s: coordinator %q is not ADDRESS:PORT", spec.UID, g.Coordinator)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("job %s: coordinator port %q", spec.UID, port)
		}
	}
	if len(g.IPs) > spec.NumNodes {
		return fmt.Errorf("job %s: %d IPs for %d nodes", spec.UID, len(g.IPs), spec.NumNodes)
	}
	for _, ip := range g.IPs {
		if ip != "" && !isAddr(ip) {
			return fmt.Errorf("job %s: node IP %q is not an IP address", spec.UID, ip)
		}
	}
	if spec.Shell != nil {
		return fmt.Errorf("job %s: an interactive shell runs on one node", spec.UID)
	}
	return nil
}

// isAddr: an IPv4 or IPv6 address, as the node writes it into scripts.
func isAddr(s string) bool { return net.ParseIP(s) != nil }

// metaLines are the gang's lines of meta.sh.
func (g *GangSpec) metaLines(spec JobSpec) string {
	ips := make([]string, spec.NumNodes)
	for i := range ips {
		ips[i] = "-"
		if i < len(g.IPs) && g.IPs[i] != "" {
			ips[i] = g.IPs[i]
		}
	}
	secs := func(d, def time.Duration) string {
		if d <= 0 {
			d = def
		}
		return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
	}
	return strings.Join([]string{
		"SSHQ_M_GANG=" + sshpool.Quote(g.Key),
		"SSHQ_M_RANK=" + strconv.Itoa(spec.NodeRank),
		"SSHQ_M_NRANKS=" + strconv.Itoa(spec.NumNodes),
		"SSHQ_M_GANG_TOKEN=" + sshpool.Quote(g.Token),
		"SSHQ_M_GANG_COORD=" + sshpool.Quote(g.Coordinator),
		"SSHQ_M_GANG_IPS=" + sshpool.Quote(strings.Join(ips, ",")),
		"SSHQ_M_GANG_HOLD=" + secs(g.Hold, DefaultGangHold),
		"SSHQ_M_GANG_LOST=" + secs(g.Lost, 30*time.Second),
		"SSHQ_M_GANG_GRACE=" + secs(g.Grace, DefaultCancelGrace),
		"",
	}, "\n")
}

// GangMode is where a rank is in its gang's start.
type GangMode string

const (
	// GangWaiting: in its node's queue.
	GangWaiting GangMode = "wait"
	// GangHolding: holding its GPUs until every rank holds theirs; `sshq
	// status` shows them reserved.
	GangHolding GangMode = "hold"
	// GangParked: it let its GPUs go after holding them too long; it keeps
	// its place in the queue and asks for nothing until the others hold.
	GangParked GangMode = "park"
	// GangStarted: every rank held its GPUs, and the gang started.
	GangStarted GangMode = "run"
)

// GangStatus is a rank's part in its gang, from Jobs.
type GangStatus struct {
	Mode  GangMode
	Since time.Time
	// StoppedBy is the rank whose end stopped this one (-1: none);
	// StopCode is how that rank ended: its exit code, or "lost" when it
	// was not heard from.
	StoppedBy int
	StopCode  string
}

// GangMember is a rank of any user's gang that waits or holds GPUs on a
// node, from Status.
type GangMember struct {
	JobUID         string
	Mode           GangMode
	Rank, NumNodes int
	Since          time.Time
}

// parseGangJobs adds the gang records of a jobs answer to m.
func parseGangJobs(out []byte, m map[string]JobStatus) {
	recs, err := records(out)
	if err != nil {
		return
	}
	for _, r := range recs {
		if r[0] != "gang" || len(r) < 6 {
			continue
		}
		js, ok := m[r[1]]
		if !ok {
			continue
		}
		g := &GangStatus{Mode: GangMode(r[2]), StoppedBy: -1}
		g.Since, _ = parseTime(r[3])
		if n, err := strconv.Atoi(r[4]); err == nil && r[5] != "-" {
			g.StoppedBy, g.StopCode = n, r[5]
		}
		js.Gang = g
		m[r[1]] = js
	}
}

// parseGangStatus reads the gang records of a status report.
func parseGangStatus(out []byte) []GangMember {
	recs, err := records(out)
	if err != nil {
		return nil
	}
	var gs []GangMember
	for _, r := range recs {
		if r[0] != "gang" || len(r) < 6 || checkUID(r[1]) != nil {
			continue
		}
		g := GangMember{JobUID: r[1], Mode: GangMode(r[2])}
		g.Rank, _ = strconv.Atoi(r[3])
		g.NumNodes, _ = strconv.Atoi(r[4])
		g.Since, _ = parseTime(r[5])
		gs = append(gs, g)
	}
	return gs
}

// GangInfo is where rank 0's coordinator listens.
type GangInfo struct {
	Port int
	// Addr is the address the command reached the node at ("" when the
	// node could not tell).
	Addr string
}

// Gang asks rank 0's node where the coordinator of the gang uid listens.
// It waits (up to 30s) until the rank's agent listens; a NodeError says the
// rank ended first, with its log's last lines.
func (c *Client) Gang(ctx context.Context, uid string) (*GangInfo, error) {
	out, err := c.callWith(ctx, "gang", commandWith(gangInfoScript, "gang", uid), nil, nil)
	if err != nil {
		return nil, err
	}
	recs, err := records(out)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if r[0] == "gang" && len(r) >= 4 && r[1] == uid {
			p, err := strconv.Atoi(r[2])
			if err != nil || p < 1 || p > 65535 {
				return nil, fmt.Errorf("%s: bad coordinator port %q", c.name, r[2])
			}
			gi := &GangInfo{Port: p}
			if r[3] != "~" && isAddr(r[3]) {
				gi.Addr = r[3]
			}
			return gi, nil
		}
	}
	return nil, fmt.Errorf("%s: no coordinator record for job %s", c.name, uid)
}

var gangInfoScript = script(gangRecSh)

func commandWith(script, action string, args ...string) string {
	return sshpool.Command(append([]string{"bash", "-c", script, "sshq", action}, args...)...)
}
