package wsync

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strings"
)

// WorkdirKey names the node-side cache directory (~/.sshq/workdirs/<key>)
// of one local workdir. origin identifies the controller (its hostname or
// controller id) so that the same path on two laptops does not share a
// cache; the readable prefix is the directory's base name so that a person
// listing ~/.sshq/workdirs can tell them apart. The same origin and path
// always give the same key, and any other pair a different one.
func WorkdirKey(origin, localAbsPath string) string {
	p := filepath.Clean(localAbsPath)
	sum := sha256.Sum256([]byte(origin + "\x00" + p))
	base := filepath.Base(p)
	var b strings.Builder
	for _, r := range base {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
		if b.Len() >= 40 {
			break
		}
	}
	name := strings.TrimLeft(b.String(), ".")
	if name == "" {
		name = "root"
	}
	return name + "-" + hex.EncodeToString(sum[:8])
}
