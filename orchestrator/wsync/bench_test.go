package wsync

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sshq/sshq/sshpool/sshtest"
)

// benchTree writes 2,000 files, about 150 MB: 1,990 small source-like files
// (1–24 kB) in nested directories and 10 large ones (~13 MB), returning a
// small and a large file to modify.
func benchTree(b *testing.B, root string) (touch, small, large string) {
	r := rand.New(rand.NewPCG(7, 7))
	buf := make([]byte, 14<<20)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	for i := range 2000 {
		var p string
		var size int
		if i < 10 {
			p = filepath.Join(root, "data", fmt.Sprintf("shard%02d.bin", i))
			size = 12<<20 + r.IntN(2<<20)
			large = p
		} else {
			p = filepath.Join(root, fmt.Sprintf("pkg%02d/mod%02d/file%04d.py", i%20, i%7, i))
			size = 1024 + r.IntN(23*1024)
			touch, small = small, p
		}
		off := r.IntN(len(buf) - size)
		write(b, p, string(buf[off:off+size]), 0o644, t0)
	}
	return touch, small, large
}

// BenchmarkSyncVsRsync compares a first sync and two re-syncs with
// `rsync -a --delete -e "ssh -F <cfg>"` to the same real sshd node. Both
// sides pay for their SSH connection on every sync (a fresh pool for us, a
// fresh ssh process for rsync), as one CLI invocation would.
//
//	go test ./orchestrator/wsync -run '^$' -bench SyncVsRsync -benchtime 1x
func BenchmarkSyncVsRsync(b *testing.B) {
	if _, err := exec.LookPath("rsync"); err != nil {
		b.Skip("rsync not installed")
	}
	cl := sshtest.Start(b, sshtest.Options{Nodes: 1})
	node := cl.Nodes[0]
	src := b.TempDir()
	touched, small, large := benchTree(b, src)
	ctx := context.Background()

	ours := func(dst string) (time.Duration, Stats) {
		start := time.Now()
		r, done := sshRemoteFor(b, ctx, cl.ConfigPath, node.Alias())
		st, err := Push(ctx, r, src, dst, Options{})
		done()
		if err != nil {
			b.Fatal(err)
		}
		return time.Since(start), st
	}
	rsync := func(dst string) time.Duration {
		start := time.Now()
		c := exec.Command("rsync", "-a", "--delete", "--mkpath", "-e", "ssh -F "+cl.ConfigPath, src+"/", node.Alias()+":"+dst+"/")
		if out, err := c.CombinedOutput(); err != nil {
			b.Fatalf("rsync: %v\n%s", err, out)
		}
		return time.Since(start)
	}
	type row struct {
		name        string
		ours, rsync time.Duration
	}
	var rows []row
	for i := 0; i < b.N; i++ {
		oursDst := filepath.Join(node.Home, fmt.Sprintf("bench/ours%d", i))
		rsyncDst := filepath.Join(node.Home, fmt.Sprintf("bench/rsync%d", i))
		o, st := ours(oursDst)
		rows = append(rows, row{"first sync", o, rsync(rsyncDst)})
		b.Logf("first sync: %+v", st)

		// Touch one file (content unchanged) and append to another.
		must(b, os.Chtimes(touched, time.Now(), time.Now()))
		appendTo(b, small)
		o, st = ours(oursDst)
		rows = append(rows, row{"re-sync (touch + append small)", o, rsync(rsyncDst)})
		b.Logf("re-sync small: %+v", st)

		appendTo(b, large)
		o, st = ours(oursDst)
		rows = append(rows, row{"re-sync (append to a 13 MB file)", o, rsync(rsyncDst)})
		b.Logf("re-sync large: %+v", st)

		o, _ = ours(oursDst)
		rows = append(rows, row{"re-sync (nothing changed)", o, rsync(rsyncDst)})

		assertSame(b, treeOf(b, src), treeOf(b, oursDst))
	}
	b.StopTimer()
	for _, r := range rows {
		b.Logf("%-34s sshq %8v  rsync %8v  ratio %.2f", r.name, r.ours.Round(time.Millisecond), r.rsync.Round(time.Millisecond), float64(r.ours)/float64(r.rsync))
	}
	for k, name := range []string{"first", "resync-small", "resync-large", "resync-none"} {
		var o, rs time.Duration
		for i := k; i < len(rows); i += 4 {
			o += rows[i].ours
			rs += rows[i].rsync
		}
		b.ReportMetric(float64(o)/float64(rs), name+"-ratio")
	}
}

func appendTo(b *testing.B, p string) {
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	must(b, err)
	_, err = f.WriteString("# appended\n")
	must(b, err)
	must(b, f.Close())
}
