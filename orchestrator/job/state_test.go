package job

import "testing"

func TestTerminal(t *testing.T) {
	t.Parallel()
	for s, want := range map[State]bool{
		Submitting: false, Pending: false, SettingUp: false, Running: false,
		Succeeded: true, Failed: true, FailedSetup: true, Cancelled: true, Lost: true,
		Timeout: true, OutOfMemory: true,
	} {
		if s.Terminal() != want {
			t.Errorf("%s.Terminal() = %v, want %v", s, !want, want)
		}
	}
}
