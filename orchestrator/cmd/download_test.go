package cmd

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/sshq/sshq/orchestrator"
	"github.com/sshq/sshq/orchestrator/store"
	"github.com/sshq/sshq/orchestrator/wsync"
)

func TestDownload(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var got orchestrator.DownloadRequest
	stats := wsync.PullStats{RemotePath: "/home/u/.sshq/jobs/c-4/workdir/out", LocalPath: "runs/out", Files: 7, Downloaded: 2,
		BytesDownloaded: 3 << 20, UnsafeLinks: []string{"out/etc-link\x1b[2J"}}
	h.fake.dl = func(_ context.Context, r orchestrator.DownloadRequest) (*orchestrator.DownloadView, error) {
		got = r
		return &orchestrator.DownloadView{Job: &store.Job{ID: 4, Node: "box"}, Stats: stats}, nil
	}
	if code := h.run("download", "4", "out", "runs"); code != 0 {
		t.Fatalf("exit %d: %s", code, h.err.String())
	}
	if got.Ref != "4" || got.Remote != "out" || got.Local != "runs" {
		t.Errorf("asked %+v", got)
	}
	if h.out.String() != "runs/out\n" {
		t.Errorf("stdout %q, want the local path", h.out.String())
	}
	for _, w := range []string{"box:/home/u/.sshq/jobs/c-4/workdir/out → runs/out: 2 of 7 file(s) copied (3M)", "1 symlink(s) pointing out", `etc-link\x1b[2J`} {
		if !strings.Contains(h.err.String(), w) {
			t.Errorf("stderr lacks %q:\n%s", w, h.err.String())
		}
	}
	if strings.Contains(h.err.String(), "\x1b[2J") {
		t.Error("a name from the node reached the terminal unescaped")
	}

	h = newHarness(t)
	h.fake.dl = func(_ context.Context, r orchestrator.DownloadRequest) (*orchestrator.DownloadView, error) {
		s := stats
		s.Downloaded, s.UnsafeLinks = 0, nil
		return &orchestrator.DownloadView{Job: &store.Job{ID: 4, Node: "box"}, Stats: s}, nil
	}
	if code := h.run("download", "4", "out", "--json"); code != 0 {
		t.Fatalf("exit %d: %s", code, h.err.String())
	}
	var j map[string]any
	if err := json.Unmarshal(h.out.Bytes(), &j); err != nil || j["unchanged"] != float64(7) || j["local"] != "runs/out" {
		t.Errorf("--json: %s (%v)", h.out.String(), err)
	}

	for _, bad := range [][]string{{"4"}, {"4", "a", "b", "c"}} {
		h := newHarness(t)
		if code := h.run(append([]string{"download"}, bad...)...); code != ExitUsage || h.opened != 0 {
			t.Errorf("download %q: exit %d", bad, code)
		}
	}
}
