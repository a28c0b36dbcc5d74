package task

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestParseEnvFile(t *testing.T) {
	t.Parallel()
	src := `# a comment
LR=3e-4
export MODEL = gpt2   # trailing comment
URL=http://host/#anchor
EMPTY=
SINGLE='literal $HOME ${LR} \n # kept'
DOUBLE="line1\nline2 \"q\" ${LR}"
MULTI="first
second"
REF=${MODEL}-${UNSET:-dflt}-${FROM_SHELL}
	TABBED=x
CRLF=y` + "\r\n" + `LR=1e-3
`
	lookup := func(k string) (string, bool) {
		if k == "FROM_SHELL" {
			return "shell", true
		}
		return "", false
	}
	got, err := ParseEnvFile("my.env", []byte(src), lookup)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"LR": "1e-3", "MODEL": "gpt2", "URL": "http://host/#anchor", "EMPTY": "",
		"SINGLE": `literal $HOME ${LR} \n # kept`, "DOUBLE": "line1\nline2 \"q\" 3e-4",
		"MULTI": "first\nsecond", "REF": "gpt2-dflt-shell", "TABBED": "x", "CRLF": "y",
	}
	if !maps.Equal(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

// Errors name file:line and never show a value: the file may hold secrets.
func TestEnvFileErrorsNameTheLineNotTheValue(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		src  string
		line int
		want string
	}{
		{"A=1\nghp_S3CR3T\n", 2, "not KEY=VALUE"},
		{"A=1\n1X=S3CR3T\n", 2, "not a variable name"},
		{"A=1\nB='S3CR3T\nmore\n", 2, "never closed"},
		{"B=\"S3CR3T\" junk\n", 1, "text after the closing quote"},
		{"\n\nCUDA_VISIBLE_DEVICES=S3CR3T\n", 3, "sshq sets this variable"},
	} {
		_, err := ParseEnvFile("x.env", []byte(tc.src), nil)
		var te *Error
		if !errors.As(err, &te) || te.Line != tc.line || !strings.HasPrefix(err.Error(), "x.env:"+strconv.Itoa(tc.line)+": --env-file: ") ||
			!strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "S3CR3T") {
			t.Errorf("%q: %v; want x.env:%d saying %q, no value", tc.src, err, tc.line, tc.want)
		}
	}
}

// --env-file is below --env; a name the task declares secret stays secret.
func TestEnvFilePrecedence(t *testing.T) {
	t.Parallel()
	tk, _, err := Parse("t.yaml", []byte("envs:\n  A: task\n  B: task\n  C: task\nsecrets:\n  TOKEN: null\nrun: x\n"))
	if err != nil {
		t.Fatal(err)
	}
	file := map[string]string{"B": "file", "C": "file", "D": "file", "TOKEN": "tok"}
	if err := tk.Apply(Overrides{EnvFile: file, Env: map[string]string{"C": "flag"}}); err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"A": "task", "B": "file", "C": "flag", "D": "file"}; !maps.Equal(tk.Envs, want) {
		t.Errorf("envs %q, want %q", tk.Envs, want)
	}
	if tk.Secrets["TOKEN"] != "tok" || tk.Envs["TOKEN"] != "" {
		t.Errorf("TOKEN from the env file must be a secret")
	}
	if err := tk.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestLoadEnvFileMissing(t *testing.T) {
	t.Parallel()
	_, err := LoadEnvFile(filepath.Join(t.TempDir(), "nope.env"), nil)
	if err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "--env-file") {
		t.Errorf("missing file: %v", err)
	}
}
