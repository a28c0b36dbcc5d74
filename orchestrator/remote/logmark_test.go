package remote

import (
	"bytes"
	"testing"
)

// What a login shell prints before logs.sh's mark never reaches the
// caller, however the stream is cut into writes; what follows it does,
// byte for byte.
func TestLogsDropWhatTheShellPrintedFirst(t *testing.T) {
	log := "epoch 1\nSSHQ-LOG\nepoch 2\n" // a job may print the mark itself
	for _, pre := range []string{"", "Welcome!\n", "Welcome!\nno newline at the end", "\n\n"} {
		stream := pre + "\nSSHQ-LOG\n" + log
		for size := 1; size <= len(stream); size++ {
			var out bytes.Buffer
			w := &afterLogMark{w: &out, tail: []byte{'\n'}}
			for i := 0; i < len(stream); i += size {
				p := []byte(stream[i:min(i+size, len(stream))])
				if n, err := w.Write(p); n != len(p) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", p, n, err)
				}
			}
			if out.String() != log {
				t.Fatalf("shell printed %q, writes of %d bytes: got %q, want %q", pre, size, out.String(), log)
			}
		}
	}
}
