package wsync

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"

	"github.com/pkg/sftp"

	"github.com/sshq/sshq/sshpool"
)

// Remote is what a sync needs from a node: run one shell command (err is a
// transport or context failure only; a command that fails reports it in
// exitCode and stderr) and open an SFTP client on the same connection
// (release closes it). sshpool's connection satisfies it; tests use a local
// bash and the OpenSSH sftp-server over a pipe.
type Remote interface {
	Run(ctx context.Context, cmd string, stdin io.Reader) (stdout, stderr []byte, exitCode int, err error)
	SFTP(ctx context.Context) (client *sftp.Client, release func(), err error)
}

// remotePathExpr turns a remote path ("/abs", "~" or "~/rel") into a shell
// expression for it; everything but $HOME is quoted.
func remotePathExpr(p string) (string, error) {
	switch {
	case p == "~" || p == "~/":
		return `"$HOME"`, nil
	case strings.HasPrefix(p, "~/"):
		return `"$HOME"/` + sshpool.Quote(path.Clean(p[2:])), nil
	case strings.HasPrefix(p, "/"):
		return sshpool.Quote(path.Clean(p)), nil
	}
	return "", fmt.Errorf("remote path %q must be absolute or start with ~/", p)
}

// findFormat prints one NUL-terminated field per item: type, mode, links,
// size, mtime, path below the start, link target.
const findFormat = `'%y\0%m\0%n\0%s\0%T@\0%P\0%l\0'`

// listDirScript creates the target directory if needed and lists it.
//
// A mirror (the workdir cache) creates the directories above it private
// (~/.sshq, ~/.sshq/workdirs), as the tree below may hold secrets; the
// tree's own directories get their local modes afterwards (dirFixes).
// It refuses $HOME, / and any directory above $HOME, whose deletions would
// reach the user's files; it reads the stamp of the previous sync and
// removes temp files of interrupted stamp writes.
func listDirScript(rootExpr string, mirror bool) string {
	var b strings.Builder
	b.WriteString("export LC_ALL=C\nd=" + rootExpr + "\n")
	b.WriteString(`if [ -e "$d" ] && [ ! -d "$d" ]; then printf 'sshq: remote path %s exists and is not a directory; remove it or sync elsewhere\n' "$d" >&2; exit 3; fi` + "\n")
	if mirror {
		b.WriteString(`(umask 077 && mkdir -p -- "$d") && cd -- "$d" || exit 1` + "\n")
		b.WriteString(`p=$(pwd -P) h=$(cd -- "${HOME:?}" 2>/dev/null && pwd -P) || h=$HOME` + "\n")
		b.WriteString(`refuse=; [ "$PWD" -ef "$HOME" ] || [ "$PWD" -ef / ] && refuse=1; case "$h/" in "$p"/*) refuse=1;; esac` + "\n")
		b.WriteString(`if [ "$refuse" ]; then printf 'sshq: refusing to mirror into %s: it would delete everything else there, your home directory included; sync into a subdirectory of your home\n' "$PWD" >&2; exit 3; fi` + "\n")
		b.WriteString(`rm -f -- "$PWD.sshq-stamp` + stampTempInfix + `"* 2>/dev/null` + "\n")
		b.WriteString(`s=$(stat -c %Y -- "$PWD.sshq-stamp" 2>/dev/null) || s=0` + "\n")
	} else {
		b.WriteString(`mkdir -p -- "$d" && cd -- "$d" || exit 1` + "\n")
		b.WriteString("s=0\n")
	}
	b.WriteString(`printf '%s\0%s\0' "$PWD" "$s"` + "\n")
	// Temp files renamed or removed while find reads a directory (by a job,
	// or another sync) are no error: they are simply not listed.
	b.WriteString("exec find . -ignore_readdir_race -printf " + findFormat + "\n")
	return b.String()
}

// listFileScript creates the parent of a single-file target and lists the
// target and its stale temp files only (the parent may be a home directory).
func listFileScript(parentExpr, name string) string {
	var b strings.Builder
	b.WriteString("export LC_ALL=C\nd=" + parentExpr + "\n")
	b.WriteString(`mkdir -p -- "$d" && cd -- "$d" || exit 1` + "\n")
	b.WriteString(`printf '%s\0%s\0' "$PWD" 0` + "\n")
	b.WriteString("exec find . -ignore_readdir_race -mindepth 1 -maxdepth 1 '(' -name " + sshpool.Quote(globEscape(name)) +
		" -o -name " + sshpool.Quote(tempPrefix+"*-"+globEscape(truncName(name))) + " ')' -printf " + findFormat + "\n")
	return b.String()
}

// globEscape escapes the metacharacters of find's -name patterns and of
// filepath.Match, which share them.
func globEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(`*?[]\`, s[i]) >= 0 {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// parseListing reads listDirScript/listFileScript output: the absolute
// directory, the sync stamp (0: none), then the entries.
func parseListing(out []byte) (string, int64, []entry, error) {
	f := bytes.Split(out, []byte{0})
	if len(f) < 2 || len(f[0]) == 0 || f[0][0] != '/' {
		return "", 0, nil, fmt.Errorf("unexpected remote listing (does the node have GNU find?): %.200q", out)
	}
	root := string(f[0])
	stamp, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		return "", 0, nil, fmt.Errorf("unexpected remote listing: bad stamp %q", f[1])
	}
	f = f[2:]
	if n := len(f); n > 0 && len(f[n-1]) == 0 {
		f = f[:n-1]
	}
	if len(f)%7 != 0 {
		return "", 0, nil, fmt.Errorf("unexpected remote listing: %d fields (does the node have GNU find?)", len(f))
	}
	es := make([]entry, 0, len(f)/7)
	for i := 0; i < len(f); i += 7 {
		mode, err1 := strconv.ParseUint(string(f[i+1]), 8, 32)
		nlink, err2 := strconv.Atoi(string(f[i+2]))
		size, err3 := strconv.ParseInt(string(f[i+3]), 10, 64)
		secs, _, _ := strings.Cut(string(f[i+4]), ".")
		mtime, err4 := strconv.ParseInt(secs, 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil || len(f[i]) != 1 {
			return "", 0, nil, fmt.Errorf("unexpected remote listing entry %q", f[i+5])
		}
		es = append(es, entry{
			kind: f[i][0], mode: uint32(mode), nlink: nlink, size: size, mtime: mtime,
			rel: string(f[i+5]), target: string(f[i+6]),
		})
	}
	return root, stamp, es, nil
}

// hashScript prints "<sha256>  <path>\0" for each NUL-separated path on
// stdin; a path that vanished is simply missing from the output.
func hashScript(root string) string {
	return "cd -- " + sshpool.Quote(root) + " || exit 1\nexec xargs -0r sha256sum -z --\n"
}

func parseHashes(out []byte) map[string][32]byte {
	m := make(map[string][32]byte)
	for _, rec := range bytes.Split(out, []byte{0}) {
		if len(rec) < 67 {
			continue
		}
		var h [32]byte
		if _, err := hex.Decode(h[:], rec[:64]); err != nil {
			continue
		}
		m[string(rec[66:])] = h
	}
	return m
}

// prepareScript runs, in order: make existing directories writable by
// their owner, delete, create directories, and replace hard-linked files
// whose content is right but whose metadata is not by a fixed-up copy (a
// chmod in place would change every job snapshot sharing the inode). The
// lists arrive NUL-separated on stdin; xargs keeps argv within limits.
func prepareScript(root string, nUnlock, nDel, nMkdir int) string {
	return "cd -- " + sshpool.Quote(root) + " || exit 1\nset -o pipefail\nmapfile -d '' -t r\n" +
		fmt.Sprintf("a=%d b=%d c=%d\n", nUnlock, nDel, nMkdir) +
		`if ((a)); then printf '%s\0' "${r[@]:0:a}" | xargs -0r chmod u+wx -- || exit 1; fi
if ((b)); then
	# rm needs to write into every directory it empties; find never follows
	# a symlink, so no chmod reaches outside the tree.
	printf '%s\0' "${r[@]:a:b}" | xargs -0r sh -c 'find "$@" -type d ! -perm -u=wx -exec chmod u+wx {} +' sh 2>/dev/null
	printf '%s\0' "${r[@]:a:b}" | xargs -0r rm -rf -- || exit 1
fi
if ((c)); then printf '%s\0' "${r[@]:a+b:c}" | xargs -0r mkdir -p -- || exit 1; fi
for ((i = a + b + c; i + 3 < ${#r[@]}; i += 4)); do
	p=${r[i]} m=${r[i+1]} t=${r[i+2]} tmp=${r[i+3]}
	cp -p -- "$p" "$tmp" && chmod "$m" -- "$tmp" && touch -m -d "@$t" -- "$tmp" && mv -fT -- "$tmp" "$p" || exit 1
done
`
}

// runChecked runs a command and turns a non-zero exit into an error.
func runChecked(ctx context.Context, r Remote, what, cmd string, stdin io.Reader) ([]byte, error) {
	out, errOut, code, err := r.Run(ctx, cmd, stdin)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if code != 0 {
		msg := strings.TrimSpace(string(errOut))
		if msg == "" {
			msg = "no message"
		}
		return out, fmt.Errorf("%s failed on the node (exit %d): %s", what, code, msg)
	}
	return out, nil
}

// SSH adapts a pooled connection to Remote.
func SSH(c *sshpool.Client) Remote { return sshRemote{c} }

type sshRemote struct{ c *sshpool.Client }

// Run runs the script under bash whatever the user's login shell is (zsh,
// fish and dash users exist): the sync scripts use bash features. What a
// chatty ~/.bashrc prints before the script would corrupt the listing, so
// only the script's own output comes back.
func (s sshRemote) Run(ctx context.Context, cmd string, stdin io.Reader) ([]byte, []byte, int, error) {
	res, err := s.c.RunBash(ctx, cmd, stdin)
	return res.Stdout, res.Stderr, res.ExitCode, err
}

func (s sshRemote) SFTP(ctx context.Context) (*sftp.Client, func(), error) { return s.c.SFTP(ctx) }
