package job

import (
	"strings"
	"testing"
)

func TestCheckUID(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"c1-7", "A_b-9", strings.Repeat("x", 128)} {
		if err := CheckUID(ok); err != nil {
			t.Errorf("CheckUID(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", strings.Repeat("x", 129), "../x", "a b", "a.b", "a;b", "a\nb", "ü"} {
		if CheckUID(bad) == nil {
			t.Errorf("CheckUID(%q) accepted it", bad)
		}
	}
}
