# sshq node protocol, v1: submit UID, the job's files NUL-separated on
# stdin. Creates the job, starts its wrapper (wrapper.sh) in a detached tmux
# session and returns once the job holds its place in the queue. Needs
# lib.sh, lease.sh, sched.sh and wrapper.sh (the job's wrapper is this very
# script).

# Payload on stdin: NUL-separated pairs NAME\0CONTENT\0 for the files below,
# written as they are (no field is ever interpreted here).
submit_files='meta.sh env.sh secrets.sh setup.sh run.sh'

cmd_submit() {
	local uid=$1 jd name content f key src first tcmd waited user_umask meta
	valid_uid "$uid" || die 2 "invalid job uid '$uid' (letters, digits, '-' and '_' only)"
	command -v tmux >/dev/null 2>&1 || die 3 "tmux is not installed on this node (or not on PATH=$PATH); sshq runs every job in a tmux session"
	command -v flock >/dev/null 2>&1 || die 3 "flock (util-linux) is not installed on this node; sshq needs it for GPU leases"
	user_umask=$(umask)
	umask 077 # the job directory holds secrets
	mkdir -p "$jobs_dir" || die 3 "cannot create $jobs_dir"
	jd=$jobs_dir/$uid
	mkdir "$jd" 2>/dev/null || die 4 "job $uid already exists on this node ($jd); job uids must be unique"
	while IFS= read -r -d '' name; do
		IFS= read -r -d '' content || {
			rm -rf -- "$jd"
			die 2 "truncated submit payload (file $name)"
		}
		case " $submit_files " in
		*" $name "*) printf '%s' "$content" >"$jd/$name" ;;
		*)
			rm -rf -- "$jd"
			die 2 "unexpected file '$name' in submit payload"
			;;
		esac
	done
	for f in meta.sh env.sh run.sh; do
		[ -f "$jd/$f" ] || {
			rm -rf -- "$jd"
			die 2 "submit payload lacks $f"
		}
	done
	meta=$(
		. "$jd/meta.sh"
		printf '%s %s' "${SSHQ_M_NGPUS:-0}" "${SSHQ_M_WORKDIR:-}"
	)
	key=${meta#* }
	# Only a job that asks for GPUs needs the lease records: one without
	# runs even where they cannot be kept.
	if [ "${meta%% *}" != 0 ] && { ! lease_where || ! my_dir_ensure; }; then
		rm -rf -- "$jd"
		die 3 "$lease_err"
	fi
	if [ -n "$key" ]; then
		src=$sshq_home/workdirs/$key
		if [ ! -d "$src" ]; then
			rm -rf -- "$jd"
			die 5 "workdir cache $src does not exist; sync the workdir before submitting"
		fi
		# Hard links: a later sync writes new files and renames them into the
		# cache, so this job keeps the tree exactly as it was now.
		if ! cp -al -- "$src" "$jd/workdir"; then
			rm -rf -- "$jd"
			die 5 "cannot snapshot $src into $jd/workdir (cp -al failed)"
		fi
	fi
	printf '%s\n' "$BASH_EXECUTION_STRING" >"$jd/wrapper.sh"
	# The tmux server keeps the environment of whichever ssh session started
	# it, so this session's settings travel in a file.
	{
		printf 'umask %s\n' "$user_umask"
		printf 'export SSHQ_LEASE_DIR=%q\n' "$lease_dir"
		for f in PATH LD_LIBRARY_PATH LANG LC_CTYPE SSHQ_SIM_DIR SSHQ_POLL_INTERVAL SSHQ_PROBE_TIMEOUT SSHQ_END_GRACE SSHQ_RESERVE_MEM SSHQ_DISK_FLOOR SSHQ_LOG_CAP SSHQ_NO_SYSTEMD XDG_RUNTIME_DIR DBUS_SESSION_BUS_ADDRESS; do
			[ -n "${!f+x}" ] && printf 'export %s=%q\n' "$f" "${!f}"
		done
		if [ -n "$orig_lc_set" ]; then
			printf 'export LC_ALL=%q\n' "$orig_lc_all"
		else
			printf 'unset LC_ALL\n'
		fi
	} >"$jd/nodeenv"
	: >"$jd/log"
	: >"$jd/wrapper.lock"

	if systemd_ok; then
		# A user scope puts the whole tree in one cgroup, which cancel can
		# kill even when a process cleared its environment.
		printf 'sshq-%s.scope\n' "$uid" >"$jd/scope"
	fi
	umask "$user_umask" # a tmux server started now passes it to every job
	restore_locale
	tcmd="exec env SSHQ_JOB_UID=$uid $(sq "$BASH") $(sq "$jd/wrapper.sh") wrapper $(sq "$jd")"
	# Two submits that both start the node's tmux server at once race, and
	# the loser's client says "server exited unexpectedly" (a sweep does
	# this): by the next try the winner's server is up.
	started= terr=
	for try in 1 2 3 4 5; do
		if terr=$(tmx new-session -d -s "$uid" -c "$jd" "$tcmd" 2>&1); then
			started=1
			break
		fi
		if tmx has-session -t "=$uid" 2>/dev/null; then
			started=1
			break
		fi
		sleep "0.$try"
	done
	if [ -z "$started" ]; then
		rm -rf -- "$jd"
		die 6 "tmux could not start the job's session: $terr"
	fi
	# Wait until the wrapper has its ticket (so the order of submissions is
	# the queue order) or has failed: its first state line says which. Once
	# it holds wrapper.lock it is on its way, and may wait probe_timeout for
	# nvidia-smi: it is given that, within the controller's 2 minutes. Past that, or if it dies without a word,
	# the job is ended here before Submit says it failed, so it never runs
	# behind the back of a controller that has forgotten it.
	local t0=$SECONDS seen= limit
	limit=${SSHQ_SUBMIT_WAIT:-100}
	case $limit in '' | *[!0-9]*) limit=100 ;; esac
	while [ ! -s "$jd/state" ]; do
		if wrapper_alive "$jd"; then
			seen=1
		elif [ -s "$jd/state" ]; then
			break
		elif [ -n "$seen" ]; then
			abort_submit "the wrapper ended without recording a state"
		elif [ $((SECONDS - t0)) -ge 20 ]; then
			abort_submit "the wrapper did not start within 20s"
		fi
		if [ $((SECONDS - t0)) -ge "$limit" ]; then
			abort_submit "the wrapper did not get a place in the node's queue within ${limit}s (nvidia-smi hanging?)"
		fi
		nap 0.01
	done
	IFS=' ' read -r first _ <"$jd/state"
	printf 'SSHQ-BEGIN %s\nsubmitted\t%s\t%s\nSSHQ-END\n' "$SSHQ_PROTO" "$uid" "$first"
}

# abort_submit REASON: make a failed submit true: the job is marked
# cancelled, every process of it killed (its keeper then removes its
# record) and, once its wrapper is gone, its directory removed; then Submit
# fails.
abort_submit() {
	local round
	: >"$jd/cancel"
	for round in 1 2 3 4 5 6 7 8 9 10; do
		signal_job KILL "$uid" || break
		sleep 0.05
	done
	tmx kill-session -t "=$uid" 2>/dev/null
	for round in 1 2 3 4 5 6 7 8 9 10; do
		wrapper_alive "$jd" || break
		sleep 0.1
	done
	if wrapper_alive "$jd"; then
		rm -f -- "$jd/secrets.sh"
		printf 'CANCELLED %s\n' "$(now)" >>"$jd/state"
		printf '137\n' >"$jd/exit.tmp" && mv -f -- "$jd/exit.tmp" "$jd/exit"
		die 6 "job $uid: $1; its wrapper could not be killed, so it was marked cancelled (see $jd/log)"
	fi
	local why=
	[ -s "$jd/log" ] && why=$(tail -n 5 -- "$jd/log" | tr '\n' ' ')
	rm -rf -- "$jd"
	die 6 "job $uid: $1; the job was removed from the node${why:+. Its log ended: $why}"
}

# systemd_ok: use a user scope only where the user's systemd works AND the
# user lingers: without linger the user manager stops at the last logout and
# takes every scope, i.e. every job, with it.
systemd_ok() {
	[ "${SSHQ_NO_SYSTEMD:-}" = 1 ] && return 1
	command -v systemd-run >/dev/null 2>&1 && command -v systemctl >/dev/null 2>&1 || return 1
	case $(systemctl --user is-system-running 2>/dev/null) in
	running | degraded) ;;
	*) return 1 ;;
	esac
	[ "$(loginctl show-user "$(id -un)" --property=Linger --value 2>/dev/null)" = yes ] || return 1
	systemd-run --user --scope --quiet --collect true >/dev/null 2>&1
}
