# sshq on a Slurm login node. Run as: bash -c "$script" sshq-slurm ACTION ARGS...
# Every argument arrives as one quoted word; nothing here evaluates one.
# Reports are "SSHQ-BEGIN 1", records, "SSHQ-END" (see doc.go).

set -u
umask 077

say() { printf '%s\n' "$*"; }

# oneline: a command's combined output as one record field (no newline,
# no '|').
oneline() { tr '\n|' '  ' | sed 's/ *$//'; }

# abs PATH: PATH made absolute against $HOME (a leading "~/" means the same).
abs() {
	local p=$1
	case $p in
	/*) ;;
	"~") p=$HOME ;;
	"~/"*) p=$HOME/${p#"~/"} ;;
	*) p=$HOME/$p ;;
	esac
	printf '%s' "$p"
}

probe() {
	local c out
	for c in sbatch squeue sinfo scontrol scancel srun; do
		command -v "$c" >/dev/null 2>&1 || say "missing|$c"
	done
	command -v sacct >/dev/null 2>&1 && say "has|sacct"
	if out=$(sbatch --version 2>&1); then
		say "version|$(printf '%s' "$out" | oneline)"
	fi
	if out=$(sinfo -h -O 'Partition:|,Available:|,Time:|,Nodes:|,NodeList:|' 2>&1); then
		[ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/partition|/'
	else
		say "error|sinfo: $(printf '%s' "$out" | oneline)"
		return
	fi
	if out=$(sinfo -N -h -O 'NodeList:|,Partition:|,StateLong:|,Gres:|,GresUsed:|,CPUsState:|,Memory:|,AllocMem:|,Reason:|' 2>&1); then
		[ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/node|/'
	else
		say "error|sinfo -N: $(printf '%s' "$out" | oneline)"
	fi
}

# queue: every job Slurm holds, any user's. Name is last: it is free text.
queue() {
	local out
	if out=$(squeue -h -O 'JobID:|,Partition:|,State:|,UserName:|,TimeUsed:|,NumNodes:|,tres-per-node:|,NodeList:|,Reason:|,Name:|' 2>&1); then
		[ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/job|/'
	else
		say "error|squeue: $(printf '%s' "$out" | oneline)"
	fi
}

# report_jobs ID...: squeue knows pending, running and recently ended jobs;
# scontrol gives the exit code of ended ones while MinJobAge keeps them;
# sacct (where accounting runs) knows the rest.
report_jobs() {
	local ids out id st
	ids=$(IFS=,; printf '%s' "$*")
	local -A seen=() ended=()
	if out=$(squeue -h -t all -j "$ids" -O 'JobID:|,State:|,Reason:|' 2>&1); then
		while IFS='|' read -r id st _; do
			[ -n "$id" ] || continue
			seen[$id]=1
			case $st in
			PENDING | CONFIGURING | RUNNING | COMPLETING | SUSPENDED | REQUEUED | REQUEUE_HOLD | REQUEUE_FED | RESIZING | SIGNALING | STAGE_OUT | STOPPED) ;;
			*) ended[$id]=1 ;;
			esac
		done <<<"$out"
		[ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/squeue|/'
	elif ! printf '%s' "$out" | grep -q 'Invalid job id'; then
		say "error|squeue: $(printf '%s' "$out" | oneline)"
		return
	fi
	local rest=()
	for id in "$@"; do
		if [ -z "${seen[$id]:-}" ] || [ -n "${ended[$id]:-}" ]; then
			if out=$(scontrol show job -o "$id" 2>/dev/null) && [ -n "$out" ]; then
				say "scontrol|$id|$(printf '%s' "$out" | head -n 1 | tr '|' ' ')"
			elif [ -z "${seen[$id]:-}" ]; then
				rest+=("$id")
			fi
		fi
	done
	if [ ${#rest[@]} -gt 0 ] && command -v sacct >/dev/null 2>&1; then
		ids=$(IFS=,; printf '%s' "${rest[*]}")
		# -X: the job itself, not its steps. Reason is last: free text.
		if out=$(sacct -n -P -X -j "$ids" -o JobIDRaw,State,ExitCode,Reason 2>/dev/null); then
			[ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/sacct|/'
		fi
	fi
}

# submit JOBDIR WORKDIR -- SBATCH_ARGS...: stdin holds NUL-separated
# name/content pairs, the job's files. Prints "submitted|<slurm id>".
submit() {
	local jobdir wd src name content id out
	jobdir=$(abs "$1")
	src=$2
	shift 3
	if [ -e "$jobdir" ]; then
		say "sshq: job directory $jobdir already exists on the login node; remove it or give the job another uid" >&2
		return 3
	fi
	if ! mkdir -p "$jobdir" || ! chmod 700 "$jobdir"; then
		say "sshq: cannot create the job directory $jobdir on the login node" >&2
		return 3
	fi
	while IFS= read -r -d '' name && IFS= read -r -d '' content; do
		case $name in
		*/* | .* | "") say "sshq: bad file name in the submission" >&2; rm -rf "$jobdir"; return 3 ;;
		esac
		if ! printf '%s' "$content" >"$jobdir/$name"; then
			say "sshq: cannot write $jobdir/$name on the login node" >&2
			rm -rf "$jobdir"
			return 3
		fi
	done
	wd=$HOME
	if [ -n "$src" ]; then
		src=$(abs "$src")
		if [ ! -d "$src" ]; then
			say "sshq: workdir $src is not a directory on the login node; sync it first" >&2
			rm -rf "$jobdir"
			return 3
		fi
		# A snapshot, so a later sync cannot change a queued job's files;
		# hard links cost nothing where the filesystem allows them.
		mkdir "$jobdir/workdir" &&
			{ cp -al "$src/." "$jobdir/workdir/" 2>/dev/null || cp -a "$src/." "$jobdir/workdir/"; } || {
			say "sshq: could not snapshot $src into $jobdir/workdir (disk full?)" >&2
			rm -rf "$jobdir"
			return 3
		}
		wd=$jobdir/workdir
	fi
	if ! out=$(sbatch --parsable --output="$jobdir/log" --open-mode=append --chdir="$wd" "$@" "$jobdir/batch.sh" "$jobdir" 2>&1); then
		# The secrets must not outlive a job that never ran.
		rm -rf "$jobdir"
		printf '%s\n' "$out" >&2
		return 4
	fi
	id=${out##*$'\n'}
	id=${id%%;*}
	printf '%s\n' "$id" >"$jobdir/slurm_id"
	say "submitted|$id"
}

# cancel WAIT_S ID...: scancel, then wait until Slurm has ended them.
cancel() {
	local wait=$1 deadline out
	shift
	scancel "$@" 2>/dev/null
	deadline=$((SECONDS + wait))
	while [ $SECONDS -lt $deadline ]; do
		out=$(squeue -h -j "$(IFS=,; printf '%s' "$*")" -o '%T' 2>/dev/null) || break
		[ -z "$out" ] && break
		sleep 0.2
	done
	report_jobs "$@"
}

# exitcode ID: the job's exit status as a shell would give it (128+signal
# for a job killed by one), or 125 when Slurm no longer knows the job.
exitcode() {
	local out code
	out=$(scontrol show job -o "$1" 2>/dev/null) || out=""
	code=$(printf '%s' "$out" | grep -o ' ExitCode=[0-9]*:[0-9]*' | head -n 1)
	code=${code#*=}
	if [ -z "$code" ] && command -v sacct >/dev/null 2>&1; then
		code=$(sacct -n -P -X -j "$1" -o ExitCode 2>/dev/null | head -n 1)
	fi
	case $code in
	*:*) ;;
	*) return 125 ;;
	esac
	if [ "${code#*:}" != 0 ]; then
		return $((128 + ${code#*:}))
	fi
	return "${code%%:*}"
}

active() {
	local st
	st=$(squeue -h -j "$1" -o '%T' 2>/dev/null) || return 1
	case $st in
	PENDING | CONFIGURING | RUNNING | COMPLETING | SUSPENDED | REQUEUED | REQUEUE_HOLD | REQUEUE_FED | RESIZING | SIGNALING | STAGE_OUT | STOPPED) return 0 ;;
	esac
	return 1
}

# logs JOBDIR ID LINES FOLLOW: the job's output; following, until the job
# ends, then exit with its exit code.
logs() {
	local log n watcher
	log=$(abs "$1")/log
	n=$3
	[ "$n" -lt 0 ] && n=+1
	if [ "$4" != 1 ]; then
		[ -f "$log" ] && tail -n "$n" -- "$log"
		return 0
	fi
	(while active "$2"; do sleep "${SSHQ_LOG_POLL:-1}"; done) &
	watcher=$!
	# tail exits once the watcher has, after a last read.
	tail -n "$n" -F --pid="$watcher" -- "$log" 2>/dev/null
	wait "$watcher"
	exitcode "$2"
}

action=$1
shift
case $action in
probe) say "SSHQ-BEGIN 1"; probe; say "SSHQ-END" ;;
status) say "SSHQ-BEGIN 1"; probe; queue; say "SSHQ-END" ;;
jobs) say "SSHQ-BEGIN 1"; report_jobs "$@"; say "SSHQ-END" ;;
cancel) say "SSHQ-BEGIN 1"; cancel "$@"; say "SSHQ-END" ;;
submit)
	out=$(submit "$@") || exit $?
	say "SSHQ-BEGIN 1"; printf '%s\n' "$out"; say "SSHQ-END" ;;
logs) logs "$@" ;;
*) say "sshq-slurm: unknown action $action" >&2; exit 2 ;;
esac
