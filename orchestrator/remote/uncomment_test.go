package remote

import (
	"os/exec"
	"testing"
)

// Commands carry their scripts without comment lines; no code goes with
// them: every script defines the same functions and variables, with the
// same bodies, as it does with its comments.
func TestUncommentKeepsCode(t *testing.T) {
	t.Parallel()
	// What a script defines, as bash prints it (declare prints no comments).
	const dump = `
for v in $(compgen -v); do
	case $seen in *" $v "*) continue ;; esac
	declare -p "$v"
done
declare -f`
	defs := func(s string) string {
		t.Helper()
		out, err := exec.Command("bash", "-c", "seen=$(compgen -v); seen=\" ${seen//$'\\n'/ } seen \"\n"+s+"\n"+dump).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return string(out)
	}
	for name, s := range map[string]string{
		"lib.sh": libSh, "lease.sh": leaseSh, "sched.sh": schedSh, "gangrec.sh": gangRecSh,
		"limits.sh": limitsSh, "watch.sh": watchSh, "submit.sh": submitSh, "wrapper.sh": wrapperSh,
		"shell.sh": shellSh, "jobs.sh": jobsSh, "status.sh": statusSh, "place.sh": placeSh,
		"cancel.sh": cancelSh, "logs.sh": logsSh, "check.sh": checkSh, "gang.sh": gangSh,
	} {
		if got, want := defs(uncomment(s)), defs(s); got != want || len(uncomment(s)) >= len(s) {
			t.Errorf("%s without its comments defines something else (or had none):\n%s\nwant:\n%s", name, got, want)
		}
	}
}
