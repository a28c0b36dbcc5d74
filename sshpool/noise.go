package sshpool

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// A login shell may print before it runs the command it was given: sshd
// runs every command through it, and bash reads ~/.bashrc for commands run
// by sshd, so a .bashrc that greets every shell greets sshq too. What sshq
// must parse therefore starts after a marker line the command prints
// itself, a random one, so that no greeting can contain it.

// RunBash runs script under bash, whatever the user's login shell is (zsh,
// fish and dash users exist), and returns only what the script printed:
// what the shells' startup files print before it is cut from its stdout
// and stderr.
func (c *Client) RunBash(ctx context.Context, script string, stdin io.Reader) (Result, error) {
	m, err := newMarker()
	if err != nil {
		return Result{ExitCode: -1}, err
	}
	mark := "printf '\\n%s\\n' " + m
	res, err := c.Run(ctx, Command("bash", "-c", mark+"\n"+mark+" >&2\n"+script), stdin)
	if err != nil {
		return res, err
	}
	res.Stdout, res.Stderr = afterMarker(res.Stdout, m), afterMarker(res.Stderr, m)
	return res, nil
}

// afterMarker is what follows the marker line in out; all of out when the
// marker is missing (the shell ended before the script began: what it
// printed says why).
func afterMarker(out []byte, marker string) []byte {
	want := []byte("\n" + marker + "\n")
	if i := bytes.Index(out, want); i >= 0 {
		return out[i+len(want):]
	}
	return out
}

// skipToMarker reads r up to the line marker (printed after a newline of
// its own, so it starts a line whatever came before). It returns what came
// before it and a reader of what follows it.
func skipToMarker(r io.Reader, marker string) ([]byte, io.Reader, error) {
	want := []byte("\n" + marker + "\n")
	var buf []byte
	chunk := make([]byte, 4096)
	for {
		n, err := r.Read(chunk)
		from := max(0, len(buf)-len(want))
		buf = append(buf, chunk[:n]...)
		if i := bytes.Index(buf[from:], want); i >= 0 {
			i += from
			return buf[:i], io.MultiReader(bytes.NewReader(buf[i+len(want):]), r), nil
		}
		if len(buf) > maxShellNoise {
			return buf, nil, fmt.Errorf("the login shell printed more than %d KiB before sftp-server started", maxShellNoise>>10)
		}
		if err != nil {
			return buf, nil, err
		}
	}
}

func newMarker() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "SSHQ-SFTP-" + hex.EncodeToString(b), nil
}

// excerpt quotes the start of what a shell printed, for an error.
func excerpt(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 60 {
		return strconv.Quote(s[:60]) + "…"
	}
	return strconv.Quote(s)
}
