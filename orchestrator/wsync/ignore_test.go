package wsync

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// The matcher is checked against git itself: for the same tree and ignore
// files, the paths we would sync are exactly the files `git ls-files
// --others --exclude-standard` calls untracked and not ignored.
func gitUntracked(t *testing.T, root string) []string {
	t.Helper()
	home := t.TempDir()
	git := func(args ...string) []byte {
		c := exec.Command("git", args...)
		c.Dir = root
		c.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "GIT_CONFIG_NOSYSTEM=1")
		out, err := c.Output()
		if err != nil {
			t.Fatalf("git %v: %v", args, err)
		}
		return out
	}
	git("init", "-q")
	out := git("ls-files", "-z", "--others", "--exclude-standard")
	var files []string
	for _, f := range bytes.Split(out, []byte{0}) {
		if len(f) > 0 {
			files = append(files, string(f))
		}
	}
	sort.Strings(files)
	return files
}

func ourFiles(t *testing.T, root string) []string {
	t.Helper()
	es, err := scanTree(root, os.Open)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range es {
		if e.kind != 'd' {
			files = append(files, e.rel)
		}
	}
	sort.Strings(files)
	return files
}

func compareWithGit(t *testing.T, root string) {
	t.Helper()
	want := gitUntracked(t, root)
	got := ourFiles(t, root)
	if strings.Join(want, "\n") != strings.Join(got, "\n") {
		t.Errorf("synced set differs from git's:\n  git: %q\n  ours: %q", want, got)
	}
}

func TestIgnoreMatchesGit(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	t.Parallel()
	root := t.TempDir()
	files := []string{
		"keep.py", "debug.log", "important.log", "sub/important.log", "build/out.o", "docs/build/page.html",
		"cache/blob", "cache/keep.me", "cache/deeper/x", "gen/a", "x/gen/b", "x/y/gen/z/c",
		"a/b.txt", "a/q/r/b.txt", "b.txt", "doc/x.html", "doc/sub/y.html", "ax.c", "bx.c", "dx.c", "ay.c", "by.c",
		"zz.c", "1z.c", "#hash", "!bang", "trailing-space ", "dironly/f", "sub/dironly", "logs/keep", "logs/drop",
		"foo/bar", "foo/baz", "foo/sub/bar", "sub/.gitignore", "sub/a.tmp", "sub/keep.tmp", "sub/deep/b.tmp",
		"sub/notes.txt", "sub/x/notes.txt", "sub/deep/inner/f", "sub/sub2/.gitignore", "sub/sub2/a.tmp", "sub/sub2/c.md",
		"Makefile", "star*name", "q?mark", "brack[et]", "sp ace/f", "CamelCase.TXT",
	}
	for _, f := range files {
		write(t, filepath.Join(root, f), "x", 0o644, t0)
	}
	must(t, os.Symlink("sub", filepath.Join(root, "dironly-link")))
	write(t, filepath.Join(root, ".gitignore"), strings.Join([]string{
		"# comment", "*.log", "!important.log", "/build/", "cache/*", "!cache/keep.me", "**/gen/**",
		"a/**/b.txt", "doc/*.html", "[ab]x.c", "[!a]y.c", "?z.c", `\#hash`, `\!bang`, `trailing-space\ `,
		"dironly/", "dironly-link/", "logs/", "!logs/keep", "foo/**", "!foo/bar", `star\*name`, `q\?mark`,
		`brack\[et]`, "*.[Tt][Xx][Tt]", "   ", "",
	}, "\n"), 0o644, t0)
	write(t, filepath.Join(root, "sub/.gitignore"), "*.tmp\n!keep.tmp\n/notes.txt\ndeep/\n!important.log\n", 0o644, t0)
	write(t, filepath.Join(root, "sub/sub2/.gitignore"), "!a.tmp\n*.md\n", 0o644, t0)
	compareWithGit(t, root)
}

// Random pattern sets over a fixed tree, each compared with git.
func TestIgnoreMatchesGitRandom(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	t.Parallel()
	files := []string{"a.go", "b.txt", "x/a.go", "x/b.txt", "x/y/a.go", "x/y/z/c.md", "y/x/a.go", "lib/x/d",
		"lib/e.txt", "ab/ba/a.go", "x/.hidden", ".hidden", "y/b.txt"}
	pool := []string{"*.go", "!*.go", "x/", "!x/", "/x", "x/*", "!x/a.go", "**/a.go", "x/**", "!x/y/**",
		"y", "*.txt", "!b.txt", "/b.txt", "lib/", "lib/*", "!lib/x", "a*", "?.*", ".*", "!.hidden", "**/y/",
		"z", "!y/x/", "x/**/c.md", "[ab]*", "ab/**/a.go", "/*/a.go", "*/x/*"}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 25 {
		// Drawn here, not in the parallel subtest: r is not safe for concurrent use.
		var pats, sub []string
		for range 1 + r.IntN(5) {
			pats = append(pats, pool[r.IntN(len(pool))])
		}
		for range r.IntN(3) {
			sub = append(sub, pool[r.IntN(len(pool))])
		}
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			for _, f := range files {
				write(t, filepath.Join(root, f), "x", 0o644, t0)
			}
			write(t, filepath.Join(root, ".gitignore"), strings.Join(pats, "\n")+"\n", 0o644, t0)
			write(t, filepath.Join(root, "x/.gitignore"), strings.Join(sub, "\n")+"\n", 0o644, t0)
			t.Logf("root: %q x/: %q", pats, sub)
			compareWithGit(t, root)
		})
	}
}

func TestSshqignoreReplacesGitignore(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	for _, f := range []string{"data/big.bin", "src/a.py", "src/b.pyc", "notes.md", "sub/.gitignore", "sub/x.py"} {
		write(t, filepath.Join(root, f), "x", 0o644, t0)
	}
	write(t, filepath.Join(root, ".gitignore"), "data/\n", 0o644, t0)
	write(t, filepath.Join(root, "sub/.gitignore"), "*.py\n", 0o644, t0)
	write(t, filepath.Join(root, ".sshqignore"), "*.pyc\n*.md\n", 0o644, t0)
	want := []string{".gitignore", ".sshqignore", "data/big.bin", "src/a.py", "sub/.gitignore", "sub/x.py"}
	if got := ourFiles(t, root); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("with .sshqignore: synced %q, want %q", got, want)
	}
}

// A .sshqignore that is not a regular file would be skipped, and with it
// every rule (the .gitignore files too): the sync must stop and say so.
func TestSshqignoreMustBeRegularFile(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"symlink", "directory"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			src := t.TempDir()
			write(t, filepath.Join(src, ".gitignore"), "data/\n.env\n", 0o644, t0)
			write(t, filepath.Join(src, "data/huge.bin"), "x", 0o644, t0)
			write(t, filepath.Join(src, ".env"), "TOKEN=secret", 0o600, t0)
			sq := filepath.Join(src, ".sshqignore")
			if kind == "symlink" {
				rules := filepath.Join(t.TempDir(), "sshqignore")
				write(t, rules, "data/\n.env\n", 0o644, t0)
				must(t, os.Symlink(rules, sq))
			} else {
				must(t, os.Mkdir(sq, 0o755))
			}
			es, err := scanTree(src, os.Open)
			if err == nil || !strings.Contains(err.Error(), sq) || !strings.Contains(err.Error(), "regular file") {
				var rels []string
				for _, e := range es {
					rels = append(rels, e.rel)
				}
				t.Fatalf("want an error naming %s and saying it must be a regular file, got %v (would sync %q)", sq, err, rels)
			}
		})
	}
}
