package remote

import "fmt"

// NodeCheck is what a node offers sshq, from Check.
type NodeCheck struct {
	// Tools maps each tool sshq uses on a node (bash, tmux, flock,
	// nvidia-smi, systemd-run, ps; python3 for multi-node jobs) to its
	// path, "" when it is missing.
	// Only bash is known when bash is missing or too old.
	Tools       map[string]string `json:"tools"`
	BashVersion string            `json:"bash_version"`
	Kernel      string            `json:"kernel"`
	// LeaseDir is the node's lease directory ($SSHQ_LEASE_DIR, default
	// /tmp/sshq-leases). LeaseDirState is ok, or unsafe when there is no
	// place for lease records that another user could not tamper with
	// (LeaseDirError says what to do); older nodes said absent, symlink,
	// not-dir or not-writable. LeaseMode is "provisioned" when root made
	// the lease directory (the optional admin step), "shared" when each
	// user's records go beside it in its root-owned parent (/tmp);
	// LeaseRecords is where this user's records go.
	LeaseDir      string `json:"lease_dir"`
	LeaseDirState string `json:"lease_dir_state"`
	LeaseMode     string `json:"lease_mode,omitempty"`
	LeaseRecords  string `json:"lease_records,omitempty"`
	LeaseDirError string `json:"lease_dir_error,omitempty"`
	// GPUs is how many GPUs the driver lists, -1 when it could not say
	// (GPUError says why: no nvidia-smi, a failing driver).
	GPUs     int    `json:"gpus"`
	GPUError string `json:"gpu_error,omitempty"`
	// KillUserProcesses: logind ends a user's processes at logout, which
	// Linger ("yes", "no", "unknown") spares.
	KillUserProcesses bool   `json:"kill_user_processes"`
	Linger            string `json:"linger,omitempty"`
	// MemLimit is how the node holds a job to --mem: "cgroup" (a systemd
	// user scope with MemoryMax, where the user's systemd delegates the
	// memory controller and the user lingers) or "watchdog" (the job's
	// wrapper sums its processes' resident memory every second); "" from
	// a node script that does not say.
	MemLimit string `json:"mem_limit"`
	// ReserveMemMiB is the memory the node keeps available
	// (SSHQ_RESERVE_MEM), DiskFloorMiB the free space in $HOME a job needs
	// to start (SSHQ_DISK_FLOOR), LogCapMiB the most of a job's log kept
	// (SSHQ_LOG_CAP); 0 is off. LimitWarnings name settings the node could
	// not read (it uses the default).
	ReserveMemMiB int64    `json:"reserve_mem_mib"`
	DiskFloorMiB  int64    `json:"disk_floor_mib"`
	LogCapMiB     int64    `json:"log_cap_mib"`
	LimitWarnings []string `json:"limit_warnings,omitempty"`
}

// Provisioned reports whether the node's admin made its lease directory
// (README: shared nodes): without it each user's records sit in the lease
// directory's parent, which is as safe but visible to tmp cleaners.
func (c *NodeCheck) Provisioned() bool { return c.LeaseMode == "provisioned" }

// Has reports whether the node has the tool.
func (c *NodeCheck) Has(tool string) bool { return c.Tools[tool] != "" }

// bashOK: bash 4.4 or newer.
func (c *NodeCheck) bashOK() bool {
	var maj, min int
	if _, err := fmt.Sscanf(c.BashVersion, "%d.%d", &maj, &min); err != nil {
		return false
	}
	return maj > 4 || maj == 4 && min >= 4
}

// KillsJobs: the node would end sshq's jobs when the user's last ssh
// session ends.
func (c *NodeCheck) KillsJobs() bool { return c.KillUserProcesses && c.Linger != "yes" }

// Ready reports whether jobs can run on the node: bash 4.4+, tmux and
// flock, a usable lease directory, and no logind that kills jobs at logout.
// A node without GPUs is ready for CPU jobs.
func (c *NodeCheck) Ready() bool {
	return c.Has("bash") && c.bashOK() && c.Has("tmux") && c.Has("flock") && !c.KillsJobs() &&
		c.LeaseDirState != "symlink" && c.LeaseDirState != "not-writable" && c.LeaseDirState != "not-dir" &&
		c.LeaseDirState != "unsafe"
}

// Problems says what is wrong or missing, each with what to do.
func (c *NodeCheck) Problems() []string {
	p := []string{}
	switch {
	case !c.Has("bash"):
		return append(p, "bash missing: install bash 4.4 or newer (`sudo apt-get install -y bash`)")
	case !c.bashOK():
		return append(p, fmt.Sprintf("bash %s is too old: sshq needs bash 4.4 or newer first on PATH for non-interactive ssh sessions", c.BashVersion))
	}
	if !c.Has("tmux") {
		p = append(p, "tmux missing: `sudo apt-get install -y tmux`")
	}
	if !c.Has("flock") {
		p = append(p, "flock missing: `sudo apt-get install -y util-linux`")
	}
	if path, asked := c.Tools["python3"]; asked && path == "" {
		p = append(p, "python3 missing: multi-node jobs (num_nodes > 1) cannot run here (`sudo apt-get install -y python3`)")
	}
	switch {
	case !c.Has("nvidia-smi"):
		p = append(p, "nvidia-smi not on PATH: CPU-only node (install the NVIDIA driver for GPU jobs)")
	case c.GPUs == 0:
		p = append(p, "nvidia-smi finds no GPU: run `nvidia-smi` on the node to see why")
	case c.GPUs < 0 && c.GPUError != "":
		p = append(p, "nvidia-smi fails: "+c.GPUError)
	}
	switch c.LeaseDirState {
	case "symlink":
		p = append(p, fmt.Sprintf("lease dir %s is a symlink: sshq refuses it; remove it or set SSHQ_LEASE_DIR", c.LeaseDir))
	case "not-writable":
		p = append(p, fmt.Sprintf("lease dir %s is not writable: `chmod 1777 %s`", c.LeaseDir, c.LeaseDir))
	case "not-dir":
		p = append(p, fmt.Sprintf("lease dir %s is not a directory: remove it or set SSHQ_LEASE_DIR", c.LeaseDir))
	case "unsafe":
		p = append(p, "no safe place for GPU lease records: "+c.LeaseDirError)
	}
	for _, w := range c.LimitWarnings {
		p = append(p, w+" (fix it in the node's login environment)")
	}
	if c.MemLimit != "" && !c.Has("taskset") {
		p = append(p, "taskset missing: --cpus cannot pin jobs here (`sudo apt-get install -y util-linux`)")
	}
	if c.KillsJobs() {
		p = append(p, "logind kills a user's processes at logout (KillUserProcesses=yes) and you have no linger: jobs would die with your ssh sessions; run `loginctl enable-linger` on the node")
	}
	return p
}
