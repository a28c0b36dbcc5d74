package wsync

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"strings"
)

// hashBoth hashes the files es by SHA-256 on the node (below root) and
// here at once, the local side workers files at a time, so neither waits
// for the other. local[i] and localErrs[i] are es[i]'s; remote maps
// shellRel names to digests and lacks files that vanished on the node;
// err is the node's failure only.
func hashBoth(ctx context.Context, r Remote, root string, es []*entry, workers int,
	open func(string) (*os.File, error), localPath func(*entry) string,
) (local [][32]byte, localErrs []error, remote map[string][32]byte, err error) {
	var stdin bytes.Buffer
	for _, e := range es {
		stdin.WriteString(shellRel(e.rel))
		stdin.WriteByte(0)
	}
	type result struct {
		out, msg []byte
		code     int
		err      error
	}
	rch := make(chan result, 1)
	go func() {
		out, msg, code, err := r.Run(ctx, hashScript(root), &stdin)
		rch <- result{out, msg, code, err}
	}()
	local = make([][32]byte, len(es))
	localErrs = make([]error, len(es))
	pool(ctx, workers, indexes(len(es)), func(i int) error {
		local[i], localErrs[i] = hashFile(open, localPath(es[i]))
		return nil
	})
	rr := <-rch
	if rr.err != nil {
		return local, localErrs, nil, fmt.Errorf("hashing files on the node: %w", rr.err)
	}
	// 123 is xargs saying some sha256sum failed: a file vanished, it travels.
	if rr.code != 0 && rr.code != 123 {
		return local, localErrs, nil, fmt.Errorf("hashing files on the node failed (exit %d): %s", rr.code, strings.TrimSpace(string(rr.msg)))
	}
	return local, localErrs, parseHashes(rr.out), nil
}

func hashFile(open func(string) (*os.File, error), p string) ([32]byte, error) {
	var h [32]byte
	f, err := open(p)
	if err != nil {
		return h, fmt.Errorf("cannot read %s: %w", p, err)
	}
	defer f.Close()
	s := sha256.New()
	if _, err := io.Copy(s, f); err != nil {
		return h, fmt.Errorf("cannot read %s: %w", p, err)
	}
	copy(h[:], s.Sum(nil))
	return h, nil
}

func indexes(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}
