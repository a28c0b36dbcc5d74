// Package gpusim installs a simulated nvidia-smi on a test node, so that
// tests and `sshq demo` see GPUs, their processes and driver failures as a
// real node would show them, with no GPU and no driver.
//
// The simulator is a bash script (Script, installed as <node>/bin/nvidia-smi)
// that reads a directory of plain files, by default <node>/gpusim, or
// $SSHQ_SIM_DIR when set. Node-side scripts may rely on this format:
//
//	gpus.csv   first line: nvidia-smi query field names, comma-separated
//	           without spaces (Install writes index, uuid, name, pci.bus_id,
//	           memory.total, memory.used, utilization.gpu, temperature.gpu,
//	           power.draw, power.limit, persistence_mode, display_active,
//	           mig.mode.current, compute_mode, driver_version); then one line
//	           per GPU in index order. A value may be [N/A] or
//	           [Not Supported]. memory.used is the GPU's use with no process
//	           registered; the simulator adds each live process's use to it.
//	procs.csv  no header; lines gpu_uuid,pid,used_memory,process_name. A line
//	           is reported by --query-compute-apps only while its pid exists
//	           and is not a zombie, so a registered process drops out of
//	           nvidia-smi when it exits, as with the real driver.
//	mode       optional, one word: "driver-failed" (the driver's "NVIDIA-SMI
//	           has failed ..." message, exit 9) or "no-devices" ("No devices
//	           were found", exit 6).
//	delay      optional, seconds (e.g. 0.04): how long each call takes. A
//	           real nvidia-smi spends tens of milliseconds starting NVML;
//	           benchmarks set this so a call costs what it does on a node.
//
// A display GPU (GPU.Display) is shown as driving a display and its Xorg
// memory is part of its baseline memory.used, but Xorg is not listed by
// --query-compute-apps: a graphics-only client has no compute context, and
// the real driver lists it only in the human table. A test that wants a
// foreign process on the display GPU registers one with AddProcess.
package gpusim

import (
	"crypto/sha256"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Script is the simulated nvidia-smi.
//
//go:embed nvidia-smi.sh
var Script []byte

// Modes accepted by SetMode; "" restores a working driver.
const (
	ModeDriverFailed = "driver-failed"
	ModeNoDevices    = "no-devices"
)

// GPU describes one simulated device.
type GPU struct {
	UUID           string // GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx; unique on the node
	Name           string // the marketing name nvidia-smi prints, e.g. "NVIDIA H100 80GB HBM3"
	PCIBusID       string // e.g. "00000000:18:00.0"; sets the index order
	MemoryTotalMiB int
	MemoryUsedMiB  int // with no process registered (driver reserve, a display's Xorg)
	UtilizationPct int // ignored when MIG: the driver reports [N/A]
	TemperatureC   int
	PowerDrawW     float64
	PowerLimitW    int
	Persistence    bool
	Display        bool // drives a monitor (display_active Enabled)
	MIG            bool // MIG mode enabled
	// UnifiedMemory: the GPU shares the host's memory (GB10, DGX Spark),
	// so the driver reports memory.total and memory.used as [N/A], and a
	// process's used memory too.
	UnifiedMemory bool
	DriverVersion string
}

// SimDir is where Install puts the GPU description of the node at nodeDir,
// the directory to pass to SetMode and AddProcess.
func SimDir(nodeDir string) string { return filepath.Join(nodeDir, "gpusim") }

var (
	uuidRE = regexp.MustCompile(`^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	busRE  = regexp.MustCompile(`^[0-9A-F]{8}:[0-9A-F]{2}:[0-9A-F]{2}\.[0-7]$`)
)

const header = "index,uuid,name,pci.bus_id,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw,power.limit,persistence_mode,display_active,mig.mode.current,compute_mode,driver_version"

// Install makes nodeDir a node with the given GPUs: <nodeDir>/bin/nvidia-smi
// (the simulator) and <nodeDir>/gpusim/gpus.csv, with an empty procs.csv and
// no mode. Calling it again replaces the description and forgets processes.
func Install(nodeDir string, gpus []GPU) error {
	var b strings.Builder
	b.WriteString(header + "\n")
	seen := map[string]bool{}
	for i, g := range gpus {
		if !uuidRE.MatchString(g.UUID) {
			return fmt.Errorf("gpusim: GPU %d: UUID %q is not of the form GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (lower-case hex); use UUID()", i, g.UUID)
		}
		if seen[g.UUID] {
			return fmt.Errorf("gpusim: GPU %d: UUID %s is used twice; give each preset call its own seed", i, g.UUID)
		}
		seen[g.UUID] = true
		if g.Name == "" || strings.ContainsAny(g.Name, ",\n\r") {
			return fmt.Errorf("gpusim: GPU %d: name %q must be non-empty and hold no comma or newline (nvidia-smi does not quote)", i, g.Name)
		}
		if !busRE.MatchString(g.PCIBusID) {
			return fmt.Errorf("gpusim: GPU %d: PCI bus id %q is not of the form 00000000:18:00.0", i, g.PCIBusID)
		}
		if strings.ContainsAny(g.DriverVersion, ",\n\r") {
			return fmt.Errorf("gpusim: GPU %d: driver version %q holds a comma or newline", i, g.DriverVersion)
		}
		util := strconv.Itoa(g.UtilizationPct)
		if g.MIG {
			util = "[N/A]"
		}
		drv := g.DriverVersion
		if drv == "" {
			drv = "550.54.15"
		}
		fields := []string{
			strconv.Itoa(i), g.UUID, g.Name, g.PCIBusID,
			orNA(!g.UnifiedMemory, strconv.Itoa(g.MemoryTotalMiB)), orNA(!g.UnifiedMemory, strconv.Itoa(g.MemoryUsedMiB)), util,
			orNA(g.TemperatureC > 0, strconv.Itoa(g.TemperatureC)),
			orNA(g.PowerDrawW > 0, strconv.FormatFloat(g.PowerDrawW, 'f', 2, 64)),
			orNA(g.PowerLimitW > 0, strconv.Itoa(g.PowerLimitW)+".00"),
			enabled(g.Persistence), enabled(g.Display), migMode(g),
			"Default", drv,
		}
		b.WriteString(strings.Join(fields, ",") + "\n")
	}
	dir := SimDir(nodeDir)
	for _, d := range []string{filepath.Join(nodeDir, "bin"), dir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("gpusim: %w", err)
		}
	}
	if err := writeAtomic(filepath.Join(nodeDir, "bin", "nvidia-smi"), Script, 0o755); err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(dir, "gpus.csv"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(dir, "procs.csv"), nil, 0o666); err != nil {
		return err
	}
	return SetMode(dir, "")
}

// SetMode makes the driver at simDir fail the way real ones do:
// ModeDriverFailed, ModeNoDevices, or "" for a working driver.
func SetMode(simDir, mode string) error {
	p := filepath.Join(simDir, "mode")
	switch mode {
	case "":
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("gpusim: %w", err)
		}
		return nil
	case ModeDriverFailed, ModeNoDevices:
		return writeAtomic(p, []byte(mode+"\n"), 0o644)
	}
	return fmt.Errorf("gpusim: unknown mode %q; use %q, %q or \"\"", mode, ModeDriverFailed, ModeNoDevices)
}

// SetDelay makes every call of the simulator at simDir take d, as a real
// nvidia-smi's start does; 0 makes calls as fast as the script runs.
func SetDelay(simDir string, d time.Duration) error {
	p := filepath.Join(simDir, "delay")
	if d <= 0 {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("gpusim: %w", err)
		}
		return nil
	}
	return writeAtomic(p, []byte(strconv.FormatFloat(d.Seconds(), 'f', 3, 64)+"\n"), 0o644)
}

// AddProcess registers a process as using usedMiB of the GPU gpuUUID, as if it
// had opened a CUDA context (usedMiB -1: the driver reports [N/A], as on
// unified-memory parts). nvidia-smi lists it for as long as pid lives.
// The line goes out in one O_APPEND write, so concurrent registrations from
// several processes never interleave.
func AddProcess(simDir, gpuUUID string, pid, usedMiB int, name string) error {
	if strings.ContainsAny(gpuUUID+name, ",\n\r") {
		return fmt.Errorf("gpusim: GPU UUID %q and process name %q must hold no comma or newline", gpuUUID, name)
	}
	if pid <= 0 || usedMiB < -1 {
		return fmt.Errorf("gpusim: pid %d must be positive and used memory %d MiB at least 0 (-1 for [N/A])", pid, usedMiB)
	}
	used := strconv.Itoa(usedMiB)
	if usedMiB < 0 {
		used = "[N/A]"
	}
	f, err := os.OpenFile(filepath.Join(simDir, "procs.csv"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o666)
	if err != nil {
		return fmt.Errorf("gpusim: %w (is the node installed with gpusim.Install?)", err)
	}
	_, err = fmt.Fprintf(f, "%s,%d,%s,%s\n", gpuUUID, pid, used, name)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("gpusim: %w", err)
	}
	return nil
}

// UUID derives the UUID of GPU i of a node from seed: the same seed gives
// the same UUIDs (stable test output), different seeds give different ones.
func UUID(seed string, i int) string {
	h := sha256.Sum256([]byte("sshq-gpusim\x00" + seed + "\x00" + strconv.Itoa(i)))
	return fmt.Sprintf("GPU-%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

func writeAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("gpusim: %w", err)
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), perm)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("gpusim: writing %s: %w", path, err)
	}
	return nil
}

func orNA(ok bool, v string) string {
	if ok {
		return v
	}
	return "[N/A]"
}

func enabled(b bool) string {
	if b {
		return "Enabled"
	}
	return "Disabled"
}

func migMode(g GPU) string {
	if g.MIG {
		return "Enabled"
	}
	// Only data-center parts know MIG; the rest answer [N/A].
	if strings.Contains(g.Name, "A100") || strings.Contains(g.Name, "A30") || strings.Contains(g.Name, "H100") || strings.Contains(g.Name, "H200") {
		return "Disabled"
	}
	return "[N/A]"
}
