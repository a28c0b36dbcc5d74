package job

import "fmt"

// CheckUID refuses a job uid that could not name the job's directory (and,
// on a node, its tmux session) as it is: 1 to 128 letters, digits, '-'
// and '_'.
func CheckUID(uid string) error {
	if uid == "" || len(uid) > 128 {
		return fmt.Errorf("job uid %q must be 1 to 128 characters", uid)
	}
	for i := 0; i < len(uid); i++ {
		c := uid[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("job uid %q: only letters, digits, '-' and '_' may name a job's directory and session", uid)
		}
	}
	return nil
}
