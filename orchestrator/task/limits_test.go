package task

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

// allocated runs f and returns the bytes it allocated. Tests using it are
// not parallel, so nothing else allocates meanwhile.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A file nested 20,000 deep made the YAML parser allocate 640 MB (and
// 100,000 deep, 15 GB over 229 s) before the tree's depth check refused
// it. The depth is now checked on the token stream, so the work is linear
// in the file's size and the answer names the limit and the place.
func TestDeepNestingIsRefusedBeforeParsing(t *testing.T) {
	const n = 20000
	for name, src := range map[string]string{
		"flow lists":    "run: x\nenvs: " + strings.Repeat("[", n) + strings.Repeat("]", n) + "\n",
		"flow mappings": "run: x\nenvs: " + strings.Repeat("{a: ", n) + "1" + strings.Repeat("}", n) + "\n",
		"unclosed":      "run: x\nenvs: " + strings.Repeat("[", n) + "\n",
		"block lists":   "run: x\nenvs:\n" + strings.Repeat("- ", n) + "x\n",
		"explicit keys": "run: x\nenvs:\n" + strings.Repeat("? ", n) + "x\n",
	} {
		var err error
		bytes := allocated(func() { _, _, err = Parse("deep.yaml", []byte(src)) })
		var te *Error
		if !errors.As(err, &te) {
			t.Fatalf("%s: Parse = %v, want a *task.Error", name, err)
		}
		if !strings.Contains(te.Msg, "nested more than 64 levels deep") || !strings.Contains(te.Msg, "check the brackets and indentation") {
			t.Errorf("%s: error %q does not name the limit and the fix", name, te.Msg)
		}
		// The 65th level is on line 2 (or 3, for block forms), not at the end.
		if te.Line < 2 || te.Line > 3 || te.Col < 1 || te.Col > 6+4*65 {
			t.Errorf("%s: error at %d:%d, want the place of the 65th level", name, te.Line, te.Col)
		}
		if bytes > 32<<20 {
			t.Errorf("%s: refusing a %d-byte file allocated %d MB; the parser must not see it", name, len(src), bytes>>20)
		}
	}
}

// The parser's cost grows with the square of one block mapping's keys: a
// 512 KB file of "kN: 1" lines took 46 s and 10 GB.
func TestManyKeysAreRefusedBeforeParsing(t *testing.T) {
	var b strings.Builder
	b.WriteString("run: x\nenvs:\n")
	for i := range 10000 {
		fmt.Fprintf(&b, "  K%d: v\n", i)
	}
	var err error
	bytes := allocated(func() { _, _, err = Parse("keys.yaml", []byte(b.String())) })
	var te *Error
	if !errors.As(err, &te) || !strings.Contains(te.Msg, "more than 4096 keys") || te.Line != 4097 {
		t.Errorf("Parse of 10000 keys = %v, want a refusal naming the 4096-key limit at the 4097th key", err)
	}
	if bytes > 32<<20 {
		t.Errorf("refusing 10000 keys allocated %d MB; the parser must not see them", bytes>>20)
	}
}

// The depth count must not grow with ordinary layouts: siblings after a
// list written at its key's column, anchored and tagged keys, comments,
// several documents.
func TestDepthScanFollowsIndentation(t *testing.T) {
	t.Parallel()
	var ok strings.Builder
	for i := range 200 {
		fmt.Fprintf(&ok, "k%d:\n- a\n- b: 1\n  c:\n  - d\n# a comment\n&x%d m%d: !!str 1\n", i, i, i)
	}
	ok.WriteString("---\n" + strings.Repeat("- ", MaxDepth-1) + "x\n")
	if _, err := scanTokens("ok.yaml", []byte(ok.String())); err != nil {
		t.Errorf("an ordinary layout was refused: %v", err)
	}
	block := ""
	for i := range MaxDepth + 1 {
		block += strings.Repeat(" ", i) + "k:\n"
	}
	for name, src := range map[string]string{
		"block mappings": block + strings.Repeat(" ", MaxDepth+1) + "x\n",
		"list in key":    strings.Repeat("- k:\n", 1) + strings.Repeat("  ", 1) + strings.Repeat("- ", MaxDepth) + "x\n",
		"mixed":          "a:\n  b:\n    - " + strings.Repeat("[", MaxDepth-2) + "\n",
	} {
		_, err := scanTokens("deep.yaml", []byte(src))
		if err == nil || !strings.Contains(err.Error(), "nested more than") {
			t.Errorf("%s: scanTokens = %v, want nesting refused", name, err)
		}
	}
}

func TestLongNameIsRefusedAtLoad(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("n", 300<<10)
	te := parseErr(t, "name: "+long+"\nrun: x\n")
	if te.Line != 1 || te.Col != 7 || te.Field != "name" || !strings.Contains(te.Msg, "at most 256") {
		t.Errorf("300 KB name: %v, want refused at 1:7 naming the 256-byte limit", te)
	}
	if len(te.Error()) > 300 {
		t.Errorf("the error quotes the name whole: %d bytes", len(te.Error()))
	}
	// A name shows in everyone's tables: no escapes or line breaks.
	for _, bad := range []string{`"evil\e]0;pwned\a"`, `"two\nlines"`, `"tab\tname"`, `"c1\u009bname"`} {
		te := parseErr(t, "name: "+bad+"\nrun: x\n")
		if te.Field != "name" || !strings.Contains(te.Msg, "control character") {
			t.Errorf("name %s: %v, want refused as a control character", bad, te)
		}
	}
	tk, _ := mustParse(t, "name: \"héllo wörld 训练 🚀\"\nrun: x\n")
	if err := tk.Validate(); err != nil {
		t.Errorf("a printable Unicode name was refused: %v", err)
	}
}

func TestLongNameFromCommandLineIsRefused(t *testing.T) {
	t.Parallel()
	tk, _ := mustParse(t, "run: x\n")
	err := tk.Apply(Overrides{Name: strings.Repeat("n", 300<<10)})
	var te *Error
	if !errors.As(err, &te) || te.Field != "--name" || !strings.Contains(te.Msg, "at most 256") {
		t.Errorf("Apply(--name 300 KB) = %v, want refused naming the limit", err)
	}
	// Code that sets the name itself still meets Validate.
	tk.Name = "x\x1b[2Jy"
	if err := tk.Validate(); err == nil || !strings.Contains(err.Error(), "control character") {
		t.Errorf("Validate with an escape in the name = %v", err)
	}
}

// A 150 KB value was accepted and the job then failed with E2BIG on the
// node. It is refused at load with the place, and the value is never
// printed: it may be a secret.
func TestLargeEnvValueIsRefusedAtLoad(t *testing.T) {
	t.Parallel()
	val := strings.Repeat("S3CR3T", (150<<10)/6)
	for _, field := range []string{"envs", "secrets"} {
		te := parseErr(t, "run: x\n"+field+":\n  BIG: "+val+"\n")
		if te.Line != 3 || te.Col != 8 || te.Field != field+".BIG" || !strings.Contains(te.Msg, "at most 130048") || !strings.Contains(te.Msg, "128 KiB") {
			t.Errorf("%s: 150 KB value: %v, want refused at 3:8 naming the limit", field, te)
		}
		if strings.Contains(te.Error(), "S3CR3T") {
			t.Errorf("%s: the error prints the value", field)
		}
	}
	te := parseErr(t, "run: x\nsecrets:\n  T: \"a\\0b\"\n")
	if te.Field != "secrets.T" || !strings.Contains(te.Msg, "NUL") {
		t.Errorf("NUL in a value: %v", te)
	}
}

func TestLargeEnvValueFromCommandLineIsRefused(t *testing.T) {
	t.Parallel()
	val := strings.Repeat("S3CR3T", (150<<10)/6)
	for _, flag := range []string{"--env", "--secret"} {
		_, _, err := ParseEnvFlag(flag, "TOKEN="+val, nil)
		var te *Error
		if !errors.As(err, &te) || te.Field != flag || !strings.Contains(te.Msg, "TOKEN: the value is") || strings.Contains(err.Error(), "S3CR3T") {
			t.Errorf("ParseEnvFlag(%s TOKEN=<150 KB>) = %v, want refused, naming TOKEN and not the value", flag, err)
		}
		lookup := func(string) (string, bool) { return val, true }
		if _, _, err := ParseEnvFlag(flag, "TOKEN", lookup); err == nil || strings.Contains(err.Error(), "S3CR3T") {
			t.Errorf("ParseEnvFlag(%s TOKEN) from a 150 KB shell variable = %v", flag, err)
		}
	}
	tk, _ := mustParse(t, "run: x\n")
	err := tk.Apply(Overrides{Secrets: Secrets{"TOKEN": val}})
	if err == nil || !strings.Contains(err.Error(), "--secret: TOKEN: the value is") || strings.Contains(err.Error(), "S3CR3T") {
		t.Errorf("Apply(--secret TOKEN=<150 KB>) = %v", err)
	}
	err = tk.Apply(Overrides{Env: map[string]string{"E": val}})
	if err == nil || !strings.Contains(err.Error(), "--env: E: the value is") {
		t.Errorf("Apply(--env E=<150 KB>) = %v", err)
	}
	// Many values that each fit can still overflow the node's ARG_MAX.
	env := map[string]string{}
	for i := range 10 {
		env[fmt.Sprintf("V%d", i)] = strings.Repeat("v", 120<<10)
	}
	if err := tk.Apply(Overrides{Env: env}); err != nil {
		t.Fatalf("Apply of 10 values of 120 KB: %v", err)
	}
	if err := tk.Validate(); err == nil || !strings.Contains(err.Error(), "at most 1048576 (1 MiB)") {
		t.Errorf("Validate of 1.2 MB of envs = %v, want the total refused", err)
	}
}

func TestCheckEnvValue(t *testing.T) {
	t.Parallel()
	if err := CheckEnvValue("A", strings.Repeat("x", MaxEnvValueLen)); err != nil {
		t.Errorf("a value at the limit was refused: %v", err)
	}
	err := CheckEnvValue("TOKEN", "hunter2"+strings.Repeat("x", MaxEnvValueLen))
	var te *Error
	if !errors.As(err, &te) || te.Field != "TOKEN" || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("CheckEnvValue over the limit = %v, want a *task.Error for TOKEN without the value", err)
	}
	if err := CheckName(strings.Repeat("n", MaxNameLen)); err != nil {
		t.Errorf("a name at the limit was refused: %v", err)
	}
	if err := CheckName(strings.Repeat("n", MaxNameLen+1)); err == nil {
		t.Error("a name over the limit was accepted")
	}
	if err := CheckName("bad\xffutf8"); err == nil || !strings.Contains(err.Error(), "not valid UTF-8") {
		t.Errorf("CheckName(invalid UTF-8) = %v", err)
	}
}

// The limits are what Linux enforces: the longest variable sshq accepts
// starts a program, and a value of 128 KiB does not (E2BIG).
func TestEnvLimitMatchesTheKernel(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("MAX_ARG_STRLEN is Linux's")
	}
	run := func(name, value string) error {
		cmd := exec.Command("/bin/true")
		cmd.Env = []string{name + "=" + value}
		return cmd.Run()
	}
	name := strings.Repeat("N", MaxEnvNameLen)
	if err := run(name, strings.Repeat("v", MaxEnvValueLen)); err != nil {
		t.Errorf("the largest accepted variable cannot start a program: %v", err)
	}
	if err := run("N", strings.Repeat("v", 128<<10)); !errors.Is(err, syscall.E2BIG) {
		t.Errorf("a 128 KiB value started a program (%v): the limit's premise is wrong", err)
	}
}

func TestLoadRefusesHugeFileWithoutReadingIt(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "big.yaml")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	// Sparse: a 4 GB file must be refused by its size, not read.
	if err := f.Truncate(4 << 30); err != nil {
		t.Skipf("cannot make a sparse file: %v", err)
	}
	f.Close()
	_, _, err = Load(path)
	if err == nil || !strings.Contains(err.Error(), "may have at most 524288") {
		t.Errorf("Load(4 GB) = %v, want refused by size", err)
	}
}
