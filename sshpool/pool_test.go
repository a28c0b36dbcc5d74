package sshpool_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sshq/sshq/inventory"
	"github.com/sshq/sshq/sshpool"
	"github.com/sshq/sshq/sshpool/sshtest"
)

// TestMain runs more tests at once than there are CPUs, unless -parallel
// says otherwise: most of them wait on a timeout (a hung host, a wedged
// agent) and use no CPU meanwhile.
func TestMain(m *testing.M) {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		flag.Set("test.parallel", strconv.Itoa(max(8, runtime.GOMAXPROCS(0))))
	}
	os.Exit(m.Run())
}

func newPool(t *testing.T, cfgPath string, opts ...sshpool.Option) *sshpool.Pool {
	t.Helper()
	cfg, err := inventory.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	p := sshpool.New(inventory.NewResolver(cfg), opts...)
	t.Cleanup(func() { p.Close() })
	return p
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestRunKeepsStreamsAndExitCodeApart(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1})
	p := newPool(t, c.ConfigPath)
	res, err := p.Run(ctxT(t, time.Minute), "node1", "echo out; echo err >&2; echo $HOME; exit 3", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 3 {
		t.Errorf("exit code %d, want 3", res.ExitCode)
	}
	if got := string(res.Stdout); got != "out\n"+c.Nodes[0].Home+"\n" {
		t.Errorf("stdout %q", got)
	}
	if string(res.Stderr) != "err\n" {
		t.Errorf("stderr %q", res.Stderr)
	}
	res, err = p.Run(ctxT(t, time.Minute), "node1", "cat", strings.NewReader("piped"))
	if err != nil || string(res.Stdout) != "piped" {
		t.Fatalf("stdin round trip: %q %v", res.Stdout, err)
	}
}

func TestMoreOperationsThanChannelsAllComplete(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1})
	p := newPool(t, c.ConfigPath)
	ctx := ctxT(t, time.Minute)
	const n = 40 // four times OpenSSH's MaxSessions
	var wg sync.WaitGroup
	errs := make(chan error, n+4)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := p.Run(ctx, "node1", fmt.Sprintf("sleep 0.1; echo %d", i), nil)
			if err != nil {
				errs <- err
				return
			}
			if strings.TrimSpace(string(res.Stdout)) != fmt.Sprint(i) {
				errs <- fmt.Errorf("op %d got %q", i, res.Stdout)
			}
		}()
	}
	// SFTP sessions share the same cap.
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := p.Get(ctx, "node1")
			if err != nil {
				errs <- err
				return
			}
			sc, release, err := cl.SFTP(ctx)
			if err != nil {
				errs <- err
				return
			}
			defer release()
			if _, err := sc.Getwd(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestDeadAndHungNodesDoNotStallHealthyOnes(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 2})
	hung, _ := c.AddHungNode("hung")
	dead, _ := c.AddDeadNode("dead")
	c.Nodes[1].Stop()
	p := newPool(t, c.ConfigPath)
	// A minute is far beyond the hung node's ConnectTimeout: reaching it
	// means a dial waited for the caller's deadline instead of its own.
	ctx := ctxT(t, time.Minute)
	errs := p.DialAll(ctx, []string{"node1", "node2", hung, dead})
	if ctx.Err() != nil {
		t.Fatalf("DialAll ran into the test's one-minute deadline: ConnectTimeout was not honoured: %v", errs)
	}
	if errs["node1"] != nil {
		t.Errorf("healthy node failed: %v", errs["node1"])
	}
	for _, name := range []string{"node2", hung, dead} {
		if !errors.Is(errs[name], sshpool.ErrUnreachable) {
			t.Errorf("%s: got %v, want ErrUnreachable", name, errs[name])
		}
	}
	if !strings.Contains(fmt.Sprint(errs[hung]), "handshake") {
		t.Errorf("hung node error should blame the handshake: %v", errs[hung])
	}
}

func TestReconnectAfterNodeRestart(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1})
	p := newPool(t, c.ConfigPath)
	ctx := ctxT(t, 2*time.Minute)
	if _, err := p.Run(ctx, "node1", "true", nil); err != nil {
		t.Fatal(err)
	}
	c.Nodes[0].Kill()
	if err := c.Nodes[0].Start(); err != nil {
		t.Fatal(err)
	}
	// The old connection died with the node; the pool must notice and redial.
	deadline := time.Now().Add(time.Minute)
	for {
		res, err := p.Run(ctx, "node1", "echo back", nil)
		if err == nil && string(res.Stdout) == "back\n" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reconnect: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestSFTPReachesNodeHome(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 1})
	os.WriteFile(filepath.Join(c.Nodes[0].Home, "hello.txt"), []byte("hi"), 0o644)
	p := newPool(t, c.ConfigPath)
	ctx := ctxT(t, time.Minute)
	cl, err := p.Get(ctx, "node1")
	if err != nil {
		t.Fatal(err)
	}
	sc, release, err := cl.SFTP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	f, err := sc.Open("hello.txt") // relative paths start in the node's home
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 10)
	nr, _ := f.Read(buf)
	if string(buf[:nr]) != "hi" {
		t.Errorf("read %q", buf[:nr])
	}
}

// A user's real config: the node blocks come from an Include, a wildcard
// block and Match blocks (as Fedora ships them) sit around them.
func TestConnectThroughIncludeWildcardAndMatchConfig(t *testing.T) {
	t.Parallel()
	c := sshtest.Start(t, sshtest.Options{Nodes: 2})
	dir := t.TempDir()
	cfg := fmt.Sprintf(`Match all
  ServerAliveInterval 5
Match final all
  ServerAliveInterval 9
Host node*
  ConnectTimeout 14
Include %s
Match exec "false"
  Port 1
Host *
  Compression no
`, c.ConfigPath)
	p := filepath.Join(dir, "config")
	os.WriteFile(p, []byte(cfg), 0o600)
	pool := newPool(t, p)
	for _, n := range []string{"node1", "node2"} {
		res, err := pool.Run(ctxT(t, time.Minute), n, "echo $HOME", nil)
		if err != nil || strings.TrimSpace(string(res.Stdout)) != c.Node(n).Home {
			t.Fatalf("%s: %q %v", n, res.Stdout, err)
		}
		cl, _ := pool.Get(ctxT(t, time.Minute), n)
		if cl.Node.ServerAliveInterval != 5*time.Second || cl.Node.ConnectTimeout != 14*time.Second {
			t.Errorf("%s: Match/wildcard settings not applied: %+v", n, cl.Node)
		}
	}
}
