package slurmtest

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
)

// slurmConf is the smallest configuration that schedules GPUs like a real
// cluster in a container: no systemd, no cgroups, no database.
func (c *Cluster) slurmConf(ctldPort int, slurmdPorts []int) string {
	u, err := user.Current()
	name := "root"
	if err == nil {
		name = u.Username
	}
	p := func(elem ...string) string { return filepath.Join(append([]string{c.Dir}, elem...)...) }
	var b strings.Builder
	line := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	line("ClusterName=sshqtest")
	line("SlurmctldHost=%s(127.0.0.1)", c.Host)
	// The daemons run as the test's user: root in CI, which slurmd needs
	// to start jobs as other users; tests submit as themselves anyway.
	line("SlurmUser=%s", name)
	line("SlurmdUser=%s", name)
	line("SlurmctldPort=%d", ctldPort)
	line("AuthType=auth/munge")
	line("CredType=cred/munge")
	line("AuthInfo=socket=%s", c.mungeSocket())
	line("StateSaveLocation=%s", p("state"))
	// %n: each node's slurmd keeps its own spool, pid file and log.
	line("SlurmdSpoolDir=%s", p("spool", "%n"))
	line("SlurmctldPidFile=%s", p("slurmctld.pid"))
	line("SlurmdPidFile=%s", p("slurmd-%n.pid"))
	line("SlurmctldLogFile=%s", p("log", "slurmctld.log"))
	line("SlurmdLogFile=%s", p("log", "slurmd-%n.log"))
	// linuxproc tracks a job's processes by parentage: nothing needs
	// cgroups or systemd, which containers lack.
	line("ProctrackType=proctrack/linuxproc")
	line("TaskPlugin=task/none")
	line("JobAcctGatherType=jobacct_gather/none")
	line("AccountingStorageType=accounting_storage/none")
	line("SelectType=select/cons_tres")
	line("SelectTypeParameters=CR_Core_Memory")
	// Without a default, a job would take the node's whole memory and run
	// alone.
	line("DefMemPerCPU=100")
	// Believe the declared CPUs and memory whatever the test machine has.
	line("SlurmdParameters=config_overrides")
	line("GresTypes=gpu")
	line("MpiDefault=none")
	line("MailProg=/bin/true")
	line("ReturnToService=2")
	line("SchedulerType=sched/backfill")
	// Ended jobs stay visible to squeue and scontrol this long: with no
	// accounting it is all the history there is.
	line("MinJobAge=600")
	line("KillWait=%d", c.opts.KillWait)
	line("SlurmctldTimeout=30")
	line("SlurmdTimeout=30")
	line("InactiveLimit=0")
	line("SlurmctldDebug=info")
	line("SlurmdDebug=info")
	gres := ""
	if c.GPUs > 0 {
		gres = fmt.Sprintf(" Gres=gpu:%s:%d", c.GPUType, c.GPUs)
	}
	for i, n := range c.Nodes {
		line("NodeName=%s NodeHostname=%s NodeAddr=127.0.0.1 Port=%d CPUs=%d RealMemory=%d%s State=UNKNOWN",
			n, c.Host, slurmdPorts[i], c.opts.CPUs, c.opts.MemoryMB, gres)
	}
	line("PartitionName=%s Nodes=%s Default=YES MaxTime=INFINITE State=UP", c.Partition, strings.Join(c.Nodes, ","))
	if c.opts.ConfExtra != "" {
		b.WriteString(c.opts.ConfExtra + "\n")
	}
	return b.String()
}

// gresConf maps the fake GPUs to the virtual consoles' character devices,
// each node its own: node i's are tty[i*GPUs+1 ..].
// Slurm numbers a GPU by its device's minor number and sets no
// CUDA_VISIBLE_DEVICES for a GPU whose File is a regular file, so the
// fake GPUs must be character devices that any Linux has.
func (c *Cluster) gresConf() (string, error) {
	if c.GPUs <= 0 {
		return "", nil
	}
	total := c.GPUs * len(c.Nodes)
	for i := 1; i <= total; i++ {
		p := fmt.Sprintf("/dev/tty%d", i)
		if fi, err := os.Stat(p); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
			return "", fmt.Errorf("slurmtest: %d fake GPUs need the character devices /dev/tty1..%d and %s is missing; create it with `mknod -m 600 %s c 4 %d` or ask for fewer GPUs", total, total, p, p, i)
		}
	}
	var b strings.Builder
	for i, n := range c.Nodes {
		first, last := i*c.GPUs+1, (i+1)*c.GPUs
		files := fmt.Sprintf("/dev/tty%d", first)
		if last > first {
			files = fmt.Sprintf("/dev/tty[%d-%d]", first, last)
		}
		fmt.Fprintf(&b, "NodeName=%s Name=gpu Type=%s File=%s\n", n, c.GPUType, files)
	}
	return b.String(), nil
}
