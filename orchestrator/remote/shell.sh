# sshq node protocol, v1: the interactive run phase of the wrapper, for a
# job submitted by `sshq shell` (meta.sh sets SSHQ_M_SHELL to its idle
# limit in seconds, 0 for none). Instead of run.sh, the job's pane gets the
# account's login shell, with the job's environment, in its workdir; the
# shell's exit status is the job's, and the job's limits hold it as they
# hold run.sh. Needs lib.sh, wrapper.sh and watch.sh.

# run_shell: the shell in the pane, with the pane's tty, within the job's
# limits like any phase (wrapper.sh: limited). Returns its exit status.
shell_watch_pid=
run_shell() {
	local wd=$HOME sh rc
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
	# The watcher is not the job: it must not keep the job's lease alive
	# (the keeper's pipe) when a limit ends the job before it is stopped.
	(
		[ -n "$kfd" ] && exec {kfd}>&-
		shell_watch
	) {wfd}<&- </dev/null >/dev/null 2>&1 &
	shell_watch_pid=$!
	local ttyfd
	exec {ttyfd}<&0
	limited shell start_shell "$wd" "$sh"
	rc=$?
	exec {ttyfd}<&-
	kill -USR1 "$shell_watch_pid" 2>/dev/null
	wait "$shell_watch_pid" 2>/dev/null
	shell_watch_pid=
	rm -f -- "$jd/shell.pid"
	return $rc
}

# start_shell WD SHELL: the shell, by a fresh bash, like run_phase's
# scripts, so the job's variables never touch the wrapper's; `exec -l`
# makes it a login shell whatever it is (bash, zsh, fish), as ssh would
# start it. Started in the background so the wrapper can watch its limits,
# yet with the pane's tty (saved in ttyfd: a background job's own stdin is
# /dev/null) and in the wrapper's process group, the terminal's
# foreground one (the wrapper has no job control), so it owns the
# terminal as a foreground shell would. Its pid is the shell's, through
# the limits' prefix (systemd-run --scope and taskset exec): the idle
# watch and a time limit signal it.
start_shell() {
	(
		cd "$jd" || exit 1
		printf '%s\n' "$BASHPID" >"$jd/shell.pid"
		[ -n "$nap_fd" ] && exec {nap_fd}<&-
		exec {errfd}>&- {ttyfd}<&-
		restore_locale
		exec ${phase_pre[@]+"${phase_pre[@]}"} "$BASH" -c ': >./.phase && . ./env.sh &&
			{ [ ! -f ./secrets.sh ] || . ./secrets.sh; } && . ./gpu.env &&
			cd -- "$1" && export SHELL=$2 && exec -l "$2"' sshq-shell "$1" "$2"
	) <&"$ttyfd" 2>&"$errfd" {wfd}<&- &
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

# shell_watch: in the background while the shell runs, once a second.
# An interactive shell ignores SIGTERM, so `sshq cancel` (whose mark this
# sees) would wait its whole grace period: the watcher hangs the shell up
# instead, as a closed terminal would (an interactive shell passes SIGHUP
# on to its jobs and exits). And a shell nobody is attached to for
# SSHQ_M_SHELL seconds holds GPUs for no one: it is hung up too, leaving
# "idle" for the wrapper to say why. tmux's own count of the session's
# clients decides, every 5s (every 1s for limits under 20s); when tmux
# does not answer the clock starts again, so a shell is never ended on a
# guess. The wrapper stops the watcher with SIGUSR1; cancel's SIGTERM is
# for the shell, not for it.
shell_watch() {
	local limit=${SSHQ_M_SHELL:-0} every=5 tick=0 since=$SECONDS n
	trap 'exit 0' USR1
	trap '' TERM
	case $limit in '' | *[!0-9]*) limit=0 ;; esac
	[ "$limit" -lt 20 ] && every=1
	while nap 1; do
		kill -0 $$ 2>/dev/null || return 0
		if cancelled && hang_up_shell; then
			return 0
		fi
		[ "$limit" -gt 0 ] || continue
		tick=$((tick + 1))
		[ $((tick % every)) -eq 0 ] || continue
		n=$(tmx display-message -p -t "${TMUX_PANE:-=$uid:}" '#{session_attached}' 2>/dev/null)
		case $n in '' | *[!0-9]*) n=1 ;; esac
		if [ "$n" -gt 0 ]; then
			since=$SECONDS
			continue
		fi
		[ $((SECONDS - since)) -ge "$limit" ] || continue
		[ -s "$jd/shell.pid" ] || continue
		jlog "no client attached to the shell for ${limit}s (sshq shell --idle): ending it to free its GPUs"
		: >"$jd/idle"
		hang_up_shell
		return 0
	done
}

# hang_up_shell: SIGHUP to the shell, SIGKILL if it is still there 5s
# later; false when the shell has not written its pid yet.
hang_up_shell() {
	local pid i
	read -r pid <"$jd/shell.pid" 2>/dev/null || return 1
	kill -HUP "$pid" 2>/dev/null
	for i in 1 2 3 4 5 6 7 8 9 10; do
		kill -0 "$pid" 2>/dev/null || return 0
		nap 0.5
	done
	kill -KILL "$pid" 2>/dev/null
}
