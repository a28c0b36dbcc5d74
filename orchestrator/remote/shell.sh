# sshq node protocol, v1: the interactive run phase of the wrapper, for a
# job submitted by `sshq shell` (meta.sh sets SSHQ_M_SHELL to its idle
# limit in seconds, 0 for none). Instead of run.sh, the job's pane gets the
# account's login shell, with the job's environment, in its workdir; the
# shell's exit status is the job's. Needs lib.sh and wrapper.sh.

# run_shell: the shell in the pane, in the foreground, with the pane's tty.
# Returns its exit status.
run_shell() {
	local wd=$HOME sh watch_pid rc
	[ -d "$jd/workdir" ] && wd=$jd/workdir
	# The pane showed the log (setup's output) until now. tail polls every
	# 0.5s: give it that long to show the last lines before it goes.
	if [ -n "$disp_pid" ]; then
		sleep 0.6
		kill "$disp_pid" 2>/dev/null
		wait "$disp_pid" 2>/dev/null
		disp_pid=
	fi
	# show_log made keys raise no signals; a shell needs them back.
	stty sane 2>/dev/null
	sh=$(login_shell)
	jlog "interactive shell ($sh) started in $wd"
	rm -f -- "$jd/idle"
	shell_watch {wfd}<&- </dev/null >/dev/null 2>&1 &
	watch_pid=$!
	# Run by a fresh bash, like run_phase, so the job's variables never
	# touch the wrapper's; `exec -l` makes it a login shell whatever it is
	# (bash, zsh, fish), as ssh would start it. Its pid is the shell's: the
	# idle watch signals it.
	(
		cd "$jd" || exit 1
		printf '%s\n' "$BASHPID" >"$jd/shell.pid"
		restore_locale
		exec "$BASH" -c '. ./env.sh && { [ ! -f ./secrets.sh ] || . ./secrets.sh; } && . ./gpu.env &&
			cd -- "$1" && export SHELL=$2 && exec -l "$2"' sshq-shell "$wd" "$sh"
	) {wfd}<&-
	rc=$?
	kill "$watch_pid" 2>/dev/null
	wait "$watch_pid" 2>/dev/null
	rm -f -- "$jd/shell.pid"
	return $rc
}

# login_shell: the account's login shell, as sshd would start it; bash when
# the account has none that can run (nologin, false).
login_shell() {
	local sh
	sh=$(getent passwd "$(id -un)" 2>/dev/null | cut -d: -f7)
	[ -n "$sh" ] || sh=${SHELL:-}
	case ${sh##*/} in '' | nologin | false) sh=$BASH ;; esac
	[ -x "$sh" ] || sh=$BASH
	printf '%s\n' "$sh"
}

# shell_watch: in the background while the shell runs. A shell nobody is
# attached to for SSHQ_M_SHELL seconds holds GPUs for no one: it gets
# SIGHUP, as from a closed terminal (an interactive shell passes it on to
# its jobs and exits), then SIGKILL if it is still there after 5s; the
# "idle" file tells the wrapper why it ended. tmux's own count of the
# session's clients decides; when tmux does not answer the clock starts
# again, so a shell is never ended on a guess.
shell_watch() {
	local limit=${SSHQ_M_SHELL:-0} iv=5 since=$SECONDS n pid i
	case $limit in '' | *[!0-9]*) limit=0 ;; esac
	[ "$limit" -gt 0 ] || return 0
	[ "$limit" -lt 20 ] && iv=1
	while nap "$iv"; do
		kill -0 $$ 2>/dev/null || return 0
		n=$(tmx display-message -p -t "${TMUX_PANE:-=$uid:}" '#{session_attached}' 2>/dev/null)
		case $n in '' | *[!0-9]*) n=1 ;; esac
		if [ "$n" -gt 0 ]; then
			since=$SECONDS
			continue
		fi
		[ $((SECONDS - since)) -ge "$limit" ] || continue
		read -r pid <"$jd/shell.pid" 2>/dev/null || continue
		jlog "no client attached to the shell for ${limit}s (sshq shell --idle): ending it to free its GPUs"
		: >"$jd/idle"
		kill -HUP "$pid" 2>/dev/null
		for i in 1 2 3 4 5 6 7 8 9 10; do
			kill -0 "$pid" 2>/dev/null || return 0
			nap 0.5
		done
		kill -KILL "$pid" 2>/dev/null
		return 0
	done
}
