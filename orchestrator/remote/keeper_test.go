package remote

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A keeper told which record to guard in a line that one of its ticks cuts
// in two still guards that record: on a loaded node the wrapper's "rec
// r.<job>" after a claim could arrive so, and a keeper that dropped it went
// on guarding the job's ticket, so that a tmp wipe brought back the ticket
// and not the claim, and the job's GPU went to the next waiter too.
func TestKeeperReadsALineATickCutInTwo(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	jd := filepath.Join(dir, "job")
	if err := os.Mkdir(jd, 0o700); err != nil {
		t.Fatal(err)
	}
	ticket := "w.1700000000000000000.kp"
	for kind, line := range map[string]string{"w": "w\tkp\t1\tu\tkp\t1\t1.0\t*\t-\t1\t1\t00:00:1", "r": "r\tkp\t1\tu\tkp\t1\t1.0\t*\tGPU-0\t1\t1\t00:00:1"} {
		if err := os.WriteFile(filepath.Join(jd, "rec."+kind), []byte(line+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("flock", "-n", filepath.Join(dir, "kp.lock"), "bash", "-c", script(leaseSh), "sshq", "keeper", jd)
	cmd.Env = append(os.Environ(), "SSHQ_LEASE_DIR="+filepath.Join(dir, "leases"))
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		in.Close()
		cmd.Wait()
	}()
	waitFor(t, "the keeper to hold its lock", func() bool {
		b, _ := os.ReadFile(filepath.Join(jd, "keeper"))
		return strings.HasPrefix(string(b), "ok ")
	})
	records := filepath.Join(dir, "leases.u"+strconv.Itoa(os.Geteuid()))
	in.Write([]byte("rec " + ticket + "\n"))
	waitFor(t, "the keeper to write the ticket back", func() bool {
		_, err := os.Stat(filepath.Join(records, ticket))
		return err == nil
	})
	// The claim's line, cut by a tick (0.25s).
	in.Write([]byte("rec r."))
	time.Sleep(600 * time.Millisecond)
	in.Write([]byte("kp\n"))
	waitFor(t, "the keeper to write the claim back", func() bool {
		_, err := os.Stat(filepath.Join(records, "r.kp"))
		return err == nil
	})
	if b, _ := os.ReadFile(filepath.Join(records, "r.kp")); !strings.HasPrefix(string(b), "r\tkp\t") {
		t.Errorf("the claim written back is %q", b)
	}
}
