package wsync

import (
	"regexp"
	"strings"
	"testing"
)

func TestWorkdirKey(t *testing.T) {
	t.Parallel()
	k := WorkdirKey("laptop", "/home/ana/my project")
	if k != WorkdirKey("laptop", "/home/ana/my project/") || k != WorkdirKey("laptop", "/home/ana/./my project") {
		t.Errorf("the same directory spelled differently got different keys")
	}
	if !strings.HasPrefix(k, "my_project-") {
		t.Errorf("key %q does not start with the readable base name", k)
	}
	others := []string{
		WorkdirKey("desktop", "/home/ana/my project"),
		WorkdirKey("laptop", "/home/bob/my project"),
		WorkdirKey("laptop", "/"),
		WorkdirKey("laptop", "/home/ana/"+strings.Repeat("x", 300)),
		WorkdirKey("laptop", "/home/ana/..hidden$(rm -rf ~)"),
	}
	safe := regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,60}-[0-9a-f]{16}$`)
	for _, o := range append(others, k) {
		if !safe.MatchString(o) {
			t.Errorf("key %q is not a short, shell- and path-safe name", o)
		}
	}
	for _, o := range others {
		if o == k {
			t.Errorf("a different origin or path got the same key %q", k)
		}
	}
}
