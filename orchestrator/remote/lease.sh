# sshq node protocol, v1: the lease records, the only thing the users of a
# node share. Needs lib.sh.
#
# Each user keeps their records in a directory of their own (mode 0755),
# which no other unprivileged user can change, placed directly in a
# directory only root controls: the lease directory D ($SSHQ_LEASE_DIR,
# default /tmp/sshq-leases) when root owns it (the optional admin step, see
# README), as D/u<uid>; else in D's parent (/tmp: root's and sticky), as
# <parent>/<basename of D>.u<uid>. A name someone else took first gets a
# suffix (u<uid>.<random>): a directory counts as uid's only when uid owns
# it, so squatting a name gains nothing. Readers look in both places, so
# users who see D differently still see each other. A user's directory:
#
#	<job>.lock       mode 0600: the job's lock, held (flock) by its keeper
#	                 for as long as the job or any of its processes live,
#	                 and removed by the keeper as it ends.
#	                 Only its owner can open it: nobody else can hold it,
#	                 fake it or block on it
#	w.<ns>.<job>     the job waits in the queue; ns (19 digits, when it
#	                 joined) orders the queue
#	r.<job>          the job holds (or is claiming) the GPUs it lists, or
#	                 runs without GPUs
#	.new-*           the user's own temporaries
#	.cache/          the user's own nvidia-smi answers and waiters' marks (0700;
#	                 kept apart, so that the directory's time changes only
#	                 with its records)
#
# A record is one tab-separated line: kind job id user name n since allowed
# gpus pid sid lock, where lock is the job's lock as /proc/locks names it
# (MAJ:MIN:INODE). A record counts only while /proc/locks shows that lock
# held: a dead job's record is ignored wherever it lies and whoever wrote it,
# and a deleted lock file or record ends no lease (the inode stays locked,
# the keeper writes the record back within a guard tick). Records are read
# by one grep that skips FIFOs and devices (it opens with O_NONBLOCK); names
# sshq never makes are ignored; whose record it is comes from the owner of
# its directory, never from its text.

# Besides the queue's records a user's directory holds two kinds of side
# record, each flocked (through a read-only fd) by its wrapper while the job
# lives, so a record nobody holds is stale: g.<job> (a rank of a multi-node
# job: gangrec.sh) and l.<job> (a job's limits and memory: watch.sh). Other
# users read them; only their owner can write or remove them.

lease_err= lease_mode=none
declare -a ns_dirs=() ns_prefixes=()
w_dir= w_prefix= my_dir=
guard_tick=0.25 # how often a keeper checks its record is still there
settle=0.75     # a claim waits this long (3 ticks) before it is trusted

# lease_where finds where records are read (ns_dirs with ns_prefixes) and
# where this user writes them (w_dir, w_prefix; lease_mode provisioned or
# shared), or sets lease_err when no place is safe: a directory whose owner
# is another unprivileged user could hide or remove everyone's records.
lease_where() {
	local d=${lease_dir%/} p b du= da= pu= pa= m
	local -a st=()
	ns_dirs=() ns_prefixes=() w_dir= w_prefix= lease_mode=none lease_err=
	[ -n "$d" ] || d=/
	p=${d%/*}
	[ -n "$p" ] || p=/
	b=${d##*/}
	if [ -d "$d" ] && [ ! -L "$d" ]; then
		mapfile -t st < <(stat -c '%u %a' -- "$d" "$p/." 2>/dev/null)
		[ ${#st[@]} = 2 ] && du=${st[0]% *} da=${st[0]#* } pu=${st[1]% *} pa=${st[1]#* }
	elif [ -d "$p" ]; then
		mapfile -t st < <(stat -c '%u %a' -- "$p/." 2>/dev/null)
		[ ${#st[@]} = 1 ] && pu=${st[0]% *} pa=${st[0]#* }
	fi
	case $da in '' | *[!0-7]*) da= ;; esac
	case $pa in '' | *[!0-7]*) pa= ;; esac
	if [ "$du" = 0 ] && [ -n "$da" ]; then
		ns_dirs+=("$d") ns_prefixes+=(u)
		m=$((8#$da))
		if { [ $((m & 01000)) != 0 ] || [ $((m & 022)) = 0 ]; } && [ -w "$d" ] && [ -x "$d" ]; then
			w_dir=$d w_prefix=u lease_mode=provisioned
		fi
	fi
	if [ -n "$pa" ]; then
		ns_dirs+=("$p") ns_prefixes+=("$b.u")
		m=$((8#$pa))
		if [ -z "$w_dir" ] && { [ "$pu" = 0 ] || [ "$pu" = "$EUID" ]; } &&
			{ [ $((m & 01000)) != 0 ] || [ $((m & 022)) = 0 ]; } && [ -w "$p" ] && [ -x "$p" ]; then
			w_dir=$p w_prefix=$b.u lease_mode=shared
		fi
	fi
	[ -n "$w_dir" ] && return 0
	if [ -z "$pa" ]; then
		lease_err="no directory $p for sshq's lease records; create it, or set SSHQ_LEASE_DIR to a path in an existing directory"
	else
		lease_err="sshq has no safe place for its lease records: $d is not a directory root owns, and its parent $p (owner uid $pu, mode $pa) is not root's or yours with the sticky bit, or is not writable for $(id -un 2>/dev/null). Ask the node's admin to create $d (README: shared nodes), or set SSHQ_LEASE_DIR to a path in a directory only you can write"
	fi
	return 1
}

# my_dir_find / my_dir_ensure: this user's own records directory (my_dir),
# found, or made (mode 0755) under a name of its own when another user took
# the usual one.
my_dir_find() {
	local f
	my_dir=
	[ -n "$w_dir" ] || return 1
	for f in "$w_dir/$w_prefix$EUID" "$w_dir/$w_prefix$EUID".*; do
		if [ -d "$f" ] && [ ! -L "$f" ] && [ -O "$f" ]; then
			my_dir=$f
			return 0
		fi
	done
	return 1
}
my_dir_ensure() {
	[ -n "$my_dir" ] && [ -d "$my_dir" ] && [ ! -L "$my_dir" ] && return 0
	[ -n "$w_dir" ] || lease_where || return 1
	my_dir_find && return 0
	mkdir -m 755 -- "$w_dir/$w_prefix$EUID" 2>/dev/null
	my_dir_find && return 0
	if my_dir=$(mktemp -d -- "$w_dir/$w_prefix$EUID.XXXXXX" 2>/dev/null) && chmod 755 -- "$my_dir"; then
		return 0
	fi
	my_dir=
	lease_err="cannot make a directory for $(id -un 2>/dev/null)'s lease records in $w_dir (is the file system full?)"
	return 1
}

# cache_dir: this user's .cache directory, when there is a records directory.
cache_dir() {
	{ [ -n "$my_dir" ] && [ -d "$my_dir" ]; } || my_dir_find || return 1
	[ -d "$my_dir/.cache" ] || mkdir -m 700 -- "$my_dir/.cache" 2>/dev/null
	[ -d "$my_dir/.cache" ] && [ ! -L "$my_dir/.cache" ]
}

# rec_put NAME LINE: this user's record NAME, written to a temporary of our
# own (only we can create names in our directory) and renamed into place.
rec_put() {
	local tmp try
	for try in 1 2; do
		my_dir_ensure || return 1
		tmp=$my_dir/.new-$$-$RANDOM
		if (
			umask 022
			set -C
			printf '%s\n' "$2" >"$tmp"
		) 2>/dev/null && mv -f -- "$tmp" "$my_dir/$1" 2>/dev/null; then
			return 0
		fi
		rm -f -- "$tmp" 2>/dev/null
		my_dir=
	done
	lease_err="cannot write the lease record $1 in $w_dir (is the file system full?)"
	return 1
}

# rec_drop NAME: remove this user's record NAME, wherever our directory is.
rec_drop() {
	[ -n "$1" ] || return 0
	{ [ -n "$my_dir" ] && [ -e "$my_dir/$1" ]; } || my_dir_find || return 0
	rm -f -- "$my_dir/$1" 2>/dev/null
}

# ---------------------------------------------------------------- reading

# users_scan lists the user directories: u_dir, u_uid (the uid in the name,
# which owns it) and u_login (the owner's name). One stat for all.
declare -a u_dir=() u_uid=() u_login=() ug_dir=() ug_num=()
u_cands=
# users_glob: the names that could be user directories (ug_dir, with the
# uid each names in ug_num), by glob alone: no fork.
users_glob() {
	local i d pre n
	ug_dir=() ug_num=()
	for i in "${!ns_dirs[@]}"; do
		pre=${ns_prefixes[$i]}
		for d in "${ns_dirs[$i]}/$pre"[0-9]*; do
			[ -d "$d" ] && [ ! -L "$d" ] || continue
			n=${d##*/}
			n=${n#"$pre"}
			n=${n%%.*}
			case $n in '' | *[!0-9]*) continue ;; esac
			ug_dir+=("$d") ug_num+=("$n")
		done
	done
}
users_scan() {
	local i d n u l
	local -A own_u=() own_l=()
	u_dir=() u_uid=() u_login=()
	users_glob
	u_cands=${ug_dir[*]-}
	[ ${#ug_dir[@]} -gt 0 ] || return 0
	while read -r u l n; do
		own_u[$n]=$u own_l[$n]=$l
	done < <(stat -c '%u %U %n' -- "${ug_dir[@]}" 2>/dev/null)
	for i in "${!ug_dir[@]}"; do
		d=${ug_dir[$i]}
		[ "${own_u[$d]:-x}" = "${ug_num[$i]}" ] || continue
		enc "${own_l[$d]}"
		u_dir+=("$d") u_uid+=("${ug_num[$i]}") u_login+=("$enc_out")
	done
}

# locks_read: one read of /proc/locks (scan_locks), which the liveness
# checks of one pass (lock_live) share.
declare -A live_set=()
scan_locks= live_n=0 live_built=
locks_read() {
	scan_locks=
	IFS= read -r -d '' scan_locks </proc/locks
	live_n=0 live_built= live_set=()
}

# lock_live LOCK: scan_locks shows LOCK (MAJ:MIN:INODE) held. A few
# lookups search the text; past 16 the held locks are indexed once, so a
# pass over many records reads /proc/locks' text once, not once a record
# (on a node with hundreds of jobs it has thousands of lines).
lock_live() {
	if [ -z "$live_built" ]; then
		if [ $live_n -lt 16 ]; then
			live_n=$((live_n + 1))
			[[ $scan_locks == *" $1 "* ]]
			return
		fi
		local l IFS=$' \t\n'
		local -a w
		local -
		set -f
		# "N: FLOCK ADVISORY WRITE pid lock ..." or, for a blocked
		# request, "N: -> FLOCK ... pid lock ...".
		while IFS= read -r l; do
			w=($l)
			live_set[${w[5]:-.}]=1 live_set[${w[6]:-.}]=1
		done <<<"$scan_locks"
		live_built=1
	fi
	[ -n "${live_set[$1]+x}" ]
}

# lease_scan [run] [clean]: the live records, from every user: running
# ones in r_* (and leased_by[uuid], the index of the record holding it),
# waiting ones, in queue order, in t_* (not with "run"). With "clean" this
# user's dead records are removed. scan_unknown is set (scan_errs say why)
# when a user's directory cannot be read: who holds what is then not known.
declare -a t_name t_uid t_user t_jname t_n t_since t_allowed t_login
declare -a r_uid r_id r_user r_name r_n r_since r_login r_gpus r_pid r_sid r_lock
declare -A leased_by
declare -a scan_errs
scan_unknown=
lease_scan() {
	local only=${1:-} clean=${2:-} i d f line sorted=1 lastdir=
	local -a files=() order=()
	local -a w_name=() w_uid=() w_user=() w_jname=() w_n=() w_since=() w_allowed=() w_login=() w_di=()
	local -A fdir=() live_run=()
	t_name=() t_uid=() t_user=() t_jname=() t_n=() t_since=() t_allowed=() t_login=()
	r_uid=() r_id=() r_user=() r_name=() r_n=() r_since=() r_login=() r_gpus=() r_pid=() r_sid=() r_lock=()
	leased_by=() scan_errs=() scan_unknown= scan_locks=
	[ ${#ns_dirs[@]} -gt 0 ] || lease_where
	users_scan
	for i in "${!u_dir[@]}"; do
		d=${u_dir[$i]}
		if [ ! -r "$d" ] || [ ! -x "$d" ]; then
			scan_unknown=1
			scan_errs+=("$(unreadable_msg "$i")")
			continue
		fi
		for f in "$d"/r.*; do
			[ -f "$f" ] && [ ! -L "$f" ] && files+=("$f") && fdir[$f]=$i
		done
		[ "$only" = run ] && continue
		for f in "$d"/w.*; do
			[ -f "$f" ] && [ ! -L "$f" ] && files+=("$f") && fdir[$f]=$i
		done
	done
	[ ${#files[@]} -gt 0 ] || return 0
	locks_read
	while IFS= read -r -d '' f && IFS= read -r line; do
		rec_take "$f" "$line" "${fdir[$f]:-}"
	done < <(grep -D skip -a -s -m1 -H -Z -e '' -- "${files[@]}")
	# The queue's order is the names' (w.<ns>.<job>), across users; a
	# waiter whose running record is live is starting, no longer waiting.
	for i in "${!w_name[@]}"; do
		[ -n "${live_run[${w_uid[$i]}]:-}" ] && continue
		order+=("${w_name[$i]} $i")
		[ -n "$lastdir" ] && [ "$lastdir" != "${w_di[$i]}" ] && sorted=
		lastdir=${w_di[$i]}
	done
	[ -n "$sorted" ] || mapfile -t order < <(printf '%s\n' "${order[@]}" | sort)
	for f in ${order[@]+"${order[@]}"}; do
		i=${f##* }
		t_name+=("${w_name[$i]}") t_uid+=("${w_uid[$i]}") t_user+=("${w_user[$i]}") t_jname+=("${w_jname[$i]}")
		t_n+=("${w_n[$i]}") t_since+=("${w_since[$i]}") t_allowed+=("${w_allowed[$i]}") t_login+=("${w_login[$i]}")
	done
}

unreadable_msg() { # unreadable_msg INDEX: why the records of u_dir[INDEX] are not known
	printf '%s' "the sshq records of node user ${u_login[$1]} (${u_dir[$1]}) cannot be read, so which GPUs their jobs hold is unknown: no GPU counts as free until they are readable (chmod 755 ${u_dir[$1]})"
}

# rec_check FILE LINE: one record, checked field by field (it is another
# user's text), into rc_*. Returns 1 for one whose name, job or lock sshq
# would never write, 2 for one with a well-formed lock but other fields
# sshq would never write; whether it is live is the caller's question.
rc_k= rc_u= rc_id= rc_us= rc_jn= rc_n= rc_si= rc_al= rc_gp= rc_pid= rc_sid= rc_lk=
rec_check() {
	local b=${1##*/} x
	local -a F
	local - IFS=$tab
	set -f
	F=($2)
	[ ${#F[@]} -ge 12 ] || return 1
	rc_k=${F[0]} rc_u=${F[1]} rc_id=${F[2]} rc_us=${F[3]} rc_jn=${F[4]} rc_n=${F[5]} rc_si=${F[6]}
	rc_al=${F[7]} rc_gp=${F[8]} rc_pid=${F[9]} rc_sid=${F[10]} rc_lk=${F[11]}
	valid_uid "$rc_u" || return 1
	case $rc_k:$b in
	"r:r.$rc_u") ;;
	w:w.*)
		x=${b#w.}
		[ "${x#*.}" = "$rc_u" ] || return 1
		x=${x%%.*}
		case $x in *[!0-9]*) return 1 ;; esac
		[ ${#x} = 19 ] || return 1
		;;
	*) return 1 ;;
	esac
	[[ $rc_lk =~ ^[0-9a-f]+:[0-9a-f]+:[0-9]+$ ]] || return 1
	case $rc_id in '' | *[!0-9]*) rc_id='~' ;; esac
	case $rc_n in '' | *[!0-9]*) return 2 ;; esac
	[ ${#rc_n} -le 4 ] || return 2
	case $rc_si in '' | *[!0-9.]*) rc_si='~' ;; esac
	field_ok "$rc_us" || rc_us='~'
	field_ok "$rc_jn" || rc_jn='~'
	case $rc_al in '*') ;; *) list_ok "$rc_al" || return 2 ;; esac
	case $rc_gp in -) rc_gp= ;; *) list_ok "$rc_gp" || return 2 ;; esac
	case $rc_pid in '' | *[!0-9]*) rc_pid= ;; esac
	case $rc_sid in '' | *[!0-9]*) rc_sid= ;; esac
	# A waiter asking for no GPU is not one sshq makes.
	[ "$rc_k" = r ] || [ "$((10#$rc_n))" -gt 0 ] || return 2
	return 0
}

# rec_take FILE LINE DIRINDEX: one record (rec_check), counted when live;
# part of lease_scan, whose arrays it fills.
rec_take() {
	local f=$1 di=$3 st x
	[ -n "$di" ] || return 0
	rec_check "$f" "$2"
	st=$?
	[ $st = 1 ] && return 0
	if ! lock_live "$rc_lk"; then
		[ -n "$clean" ] && [ "${u_uid[$di]}" = "$EUID" ] && rm -f -- "$f" 2>/dev/null
		return 0
	fi
	[ $st = 0 ] || return 0
	if [ "$rc_k" = r ]; then
		live_run[$rc_u]=1
		local IFS=,
		for x in $rc_gp; do
			[ -n "${leased_by[$x]+x}" ] || leased_by[$x]=${#r_uid[@]}
		done
		r_uid+=("$rc_u") r_id+=("$rc_id") r_user+=("$rc_us") r_name+=("$rc_jn") r_n+=("$rc_n") r_since+=("$rc_si")
		r_login+=("${u_login[$di]}") r_gpus+=("$rc_gp") r_pid+=("$rc_pid") r_sid+=("$rc_sid") r_lock+=("$rc_lk")
		return 0
	fi
	w_name+=("${f##*/}") w_uid+=("$rc_u") w_user+=("$rc_us") w_jname+=("$rc_jn") w_n+=("$rc_n") w_since+=("$rc_si")
	w_allowed+=("$rc_al") w_login+=("${u_login[$di]}") w_di+=("$di")
}

# ---------------------------------------------------------------- a waiter's view

# lease_view_run is lease_scan run for a waiter's poll, kept up to date at
# little cost. Records are only ever written by rename, which changes their
# directory's time, so a directory older than this waiter's mark (a file in
# .cache, written before it last looked) holds the records it held then.
# One that changed is globbed again (no fork), and only the records new to
# this waiter or newer than the mark are read: its own user's with a read,
# other users' with one grep. There are two marks, ref-<job> and
# ref-<job>.b: the next is written before a look and checked against at
# the look after, so a record replaced during a look is never older than
# the mark it is checked against. Liveness is one read of /proc/locks,
# every fifth poll and whenever something changed (lease_view_run check:
# each poll), and a keeper removes its record as its job ends, so an end
# shows at the next poll. Every minute, when a user directory comes or
# goes, or when one cannot be read, everything is read again as lease_scan
# run does. So a poll in which nothing changed forks nothing and reads no
# record. view_changed says that a records directory changed (the queue
# may have too), view_gen counts the polls that saw one.
declare -a vr_dirs=()
declare -A vr_files=() vr_rec=() vr_login=() vr_live_uid=()
view_ok= view_at=0 view_polls=0 view_cands= view_mark= view_changed= view_gen=0
lease_view_run() {
	local d f names cur= nxt mark full= changed= check=${1:-}
	local -a new=()
	view_changed=
	if cache_dir; then
		cur=$my_dir/.cache/ref-$uid$view_mark
		{ [ -n "$view_ok" ] && [ -f "$cur" ] && [ $((SECONDS - view_at)) -lt 60 ]; } || full=1
	else
		full=1
	fi
	if [ -z "$full" ]; then
		users_glob
		[ "${ug_dir[*]-}" = "$view_cands" ] || full=1
	fi
	if [ -z "$full" ]; then
		for d in ${vr_dirs[@]+"${vr_dirs[@]}"}; do
			[ "$d" -ot "$cur" ] || changed=1
		done
	fi
	if [ -z "$full" ] && [ -n "$changed" ]; then
		mark=.b
		[ -z "$view_mark" ] || mark=
		nxt=$my_dir/.cache/ref-$uid$mark
		: >"$nxt" 2>/dev/null || full=1
		# Which directories changed is asked again after the next mark is
		# written: a change in between is seen now or at the next poll.
		for d in ${vr_dirs[@]+"${vr_dirs[@]}"}; do
			[ -z "$full" ] || break
			[ "$d" -ot "$cur" ] && continue
			if [ ! -r "$d" ] || [ ! -x "$d" ]; then
				full=1
				break
			fi
			names=
			for f in "$d"/r.*; do
				[ -f "$f" ] && [ ! -L "$f" ] || continue
				names+=/${f##*/}
				{ [ -n "${vr_rec[$f]+x}" ] && [ "$f" -ot "$cur" ]; } || new+=("$f")
			done
			vr_files[$d]=$names
		done
		if [ -z "$full" ]; then
			view_read ${new[@]+"${new[@]}"}
			view_mark=$mark view_changed=1 check=1
		fi
	fi
	if [ -n "$full" ]; then
		view_ok= view_at=$SECONDS view_changed=1 check=1
		if [ -n "$my_dir" ] && [ -d "$my_dir/.cache" ]; then
			cur=$my_dir/.cache/ref-$uid$view_mark
			: >"$cur" 2>/dev/null || cur=
		fi
		view_full
		[ -n "$cur" ] && [ -z "$scan_unknown" ] && view_ok=1
	fi
	view_polls=$((view_polls + 1))
	[ $((view_polls % 5)) = 0 ] && check=1
	view_build "$check"
	[ -z "$view_changed" ] || view_gen=$((view_gen + 1))
}

# view_full: every records directory and running record read again (the
# view's lease_scan run).
view_full() {
	local i d f names
	local -a files=()
	vr_dirs=() vr_files=() vr_rec=() vr_login=() scan_errs=() scan_unknown=
	[ ${#ns_dirs[@]} -gt 0 ] || lease_where
	users_scan
	view_cands=$u_cands
	for i in "${!u_dir[@]}"; do
		d=${u_dir[$i]}
		if [ ! -r "$d" ] || [ ! -x "$d" ]; then
			scan_unknown=1
			scan_errs+=("$(unreadable_msg "$i")")
			continue
		fi
		vr_dirs+=("$d")
		vr_login[$d]=${u_login[$i]}
		names=
		for f in "$d"/r.*; do
			[ -f "$f" ] && [ ! -L "$f" ] || continue
			names+=/${f##*/}
			files+=("$f")
		done
		vr_files[$d]=$names
	done
	view_read ${files[@]+"${files[@]}"}
}

# view_read FILE...: the records into vr_rec ("uid|id|user|name|n|since|
# gpus|pid|sid|lock", empty for one sshq would not count). This user's own
# directory holds nothing another user made, so its records are read with
# a read; other users' with one grep, which skips FIFOs and devices.
view_read() {
	local f line
	local -a others=()
	for f in "$@"; do
		vr_rec[$f]=
		if [ "${f%/*}" = "$my_dir" ]; then
			line=
			IFS= read -r line <"$f" 2>/dev/null
			view_put "$f" "$line"
		else
			others+=("$f")
		fi
	done
	[ ${#others[@]} -gt 0 ] || return 0
	while IFS= read -r -d '' f && IFS= read -r line; do
		view_put "$f" "$line"
	done < <(grep -D skip -a -s -m1 -H -Z -e '' -- "${others[@]}")
}
view_put() {
	rec_check "$1" "$2" && [ "$rc_k" = r ] || return 0
	vr_rec[$1]="$rc_u|$rc_id|$rc_us|$rc_jn|$rc_n|$rc_si|$rc_gp|$rc_pid|$rc_sid|$rc_lk"
}

# view_build [check]: r_*, leased_by and vr_live_uid from the view; with
# check, /proc/locks is read again and a record whose lock is not held is
# dropped for good (a lock never comes back; a rewritten record is read
# again).
view_build() {
	local d f b rest rec x
	local -a F
	r_uid=() r_id=() r_user=() r_name=() r_n=() r_since=() r_login=() r_gpus=() r_pid=() r_sid=() r_lock=()
	leased_by=() vr_live_uid=()
	[ -z "${1:-}" ] || locks_read
	local - IFS='|'
	set -f
	for d in ${vr_dirs[@]+"${vr_dirs[@]}"}; do
		rest=${vr_files[$d]-}
		while [ -n "$rest" ]; do
			rest=${rest#/}
			b=${rest%%/*}
			rest=${rest#"$b"}
			f=$d/$b
			rec=${vr_rec[$f]-}
			[ -n "$rec" ] || continue
			if [ -n "${1:-}" ] && ! lock_live "${rec##*|}"; then
				vr_rec[$f]=
				continue
			fi
			F=($rec)
			vr_live_uid[${F[0]}]=1
			for x in ${F[6]//,/|}; do
				[ -n "${leased_by[$x]+x}" ] || leased_by[$x]=${#r_uid[@]}
			done
			r_uid+=("${F[0]}") r_id+=("${F[1]}") r_user+=("${F[2]}") r_name+=("${F[3]}") r_n+=("${F[4]}")
			r_since+=("${F[5]}") r_gpus+=("${F[6]}") r_pid+=("${F[7]}") r_sid+=("${F[8]}") r_lock+=("${F[9]}")
			r_login+=("${vr_login[$d]-~}")
		done
	done
}

# list_ok LIST: comma-separated tokens as nvidia-smi prints uuids.
list_ok() {
	case $1 in '' | ,* | *, | *,,* | *[!A-Za-z0-9_,-]*) return 1 ;; esac
}

# field_ok FIELD: FIELD is as EncodeField writes them, so it can reach
# nobody's terminal as anything but text.
field_ok() {
	case $1 in '' | *[!A-Za-z0-9._%~-]*) return 1 ;; esac
}

# ---------------------------------------------------------------- the keeper

# A job's keeper is `flock -n <job>.lock bash wrapper.sh keeper JOBDIR`: the
# lock lives as long as flock(1), and so its pid in /proc/locks (where a
# lock whose taker has exited may not be shown, in a container). It reads a
# pipe whose write end the wrapper holds and every process of the job
# inherits: when the last of them is gone, it reads EOF, removes the job's
# record and lock file and exits, and the lock goes with it. Until then it checks every
# guard tick that the record is still there, and writes it back when a tmp
# cleaner or `rm -rf /tmp/*` took it. It carries no job mark, so cancel and
# the end-of-job sweep leave it to end by itself, and runs in a session of
# its own, so the hangup a dying wrapper's terminal sends does not end it
# before its job's last process.
kfd= kpid= my_lock=
keeper_start() {
	local lk i st pid lid
	[ -n "$kfd" ] && return 0
	my_dir_ensure || return 1
	lk=$my_dir/$uid.lock
	rm -f -- "$lk" "$jd/keeper" 2>/dev/null
	if ! (
		umask 077
		set -C
		: >"$lk"
	) 2>/dev/null; then
		lease_err="cannot create the job's lock $lk (is the file system full?)"
		return 1
	fi
	i=$!
	exec {kfd}> >(
		for f in /proc/$BASHPID/fd/*; do
			n=${f##*/}
			case $n in '' | *[!0-9]*) continue ;; esac
			[ "$n" -gt 2 ] && exec {n}>&-
		done
		exec env -u SSHQ_JOB_UID setsid flock -n -- "$lk" "$BASH" "$jd/wrapper.sh" keeper "$jd" >/dev/null 2>&1
	) || {
		lease_err="cannot start the job's lock keeper"
		return 1
	}
	# $! names the keeper where bash sets it for a process substitution;
	# a node busy with a burst of submits may take seconds to start it.
	pid=$!
	case $pid in '' | *[!0-9]* | "$i") pid= ;; esac
	for ((i = 0; i < 6000; i++)); do
		[ -s "$jd/keeper" ] && break
		[ -n "$pid" ] && [ $i -gt 100 ] && ! kill -0 "$pid" 2>/dev/null && [ ! -s "$jd/keeper" ] && break
		nap 0.01
	done
	st= pid= lid=
	[ -s "$jd/keeper" ] && read -r st pid lid <"$jd/keeper"
	if [ "$st" != ok ]; then
		exec {kfd}>&-
		kfd=
		lease_err="the job's lock keeper did not start (${st:+$st $pid $lid}); sshq needs flock(1) and a /proc/locks that shows its locks"
		return 1
	fi
	kpid=$pid my_lock=$lid
}

# keeper_tell LINE: "rec NAME", the record the keeper guards now.
keeper_tell() {
	[ -n "$kfd" ] || return 0
	trap '' PIPE
	printf '%s\n' "$1" >&"$kfd" 2>/dev/null
	trap - PIPE
}

# keeper_stop: the wrapper's end of the pipe closes; the keeper ends (and
# the lease with it) once no process of the job holds it, which the wrapper
# waits for briefly so that an ended job holds no GPU.
keeper_stop() {
	local i
	local pipe f holders=
	[ -n "$kfd" ] || return 0
	pipe=$(readlink "/proc/$BASHPID/fd/$kfd" 2>/dev/null)
	exec {kfd}>&-
	kfd=
	for ((i = 0; i < 100; i++)); do
		kill -0 "$kpid" 2>/dev/null || return 0
		nap 0.02
	done
	for f in /proc/[0-9]*/fd/*; do
		[ "$(readlink "$f" 2>/dev/null)" = "$pipe" ] || continue
		f=${f#/proc/}
		holders+=" ${f%%/*}($(tr '\0' ' ' <"/proc/${f%%/*}/cmdline" 2>/dev/null | cut -c1-80))"
	done
	jlog "a process of the job still holds its lock ($my_lock): its GPUs stay leased until it ends;$holders"
}

cmd_keeper() {
	jd=$1
	local line part= st i=0 lid= name= pid=$PPID a b c d e f rest locks touched=$SECONDS
	local re="(^|"$'\n'")[0-9]+: FLOCK +[A-Z]+ +[A-Z]+ +$pid +([0-9a-f]+:[0-9a-f]+:[0-9]+) "
	while [ -z "$lid" ] && [ $i -lt 200 ]; do
		# Read whole: every read(2) of /proc/locks takes the kernel's
		# lock over all the machine's file locks, and `read` line by
		# line makes one per line, each queued behind every waiter's
		# scan on a busy node.
		IFS= read -r -d '' locks </proc/locks
		[[ $locks =~ $re ]] && lid=${BASH_REMATCH[2]}
		[ -n "$lid" ] || nap 0.01
		i=$((i + 1))
	done
	if [ -z "$lid" ]; then
		printf 'fail no-lock-in-/proc/locks %s\n' "$pid" >"$jd/keeper.tmp" && mv -f -- "$jd/keeper.tmp" "$jd/keeper"
		exit 1
	fi
	printf 'ok %s %s\n' "$pid" "$lid" >"$jd/keeper.tmp" && mv -f -- "$jd/keeper.tmp" "$jd/keeper"
	lease_where
	while :; do
		IFS= read -r -t "$guard_tick" line
		st=$?
		if [ $st = 0 ]; then
			line=$part$line part=
			case $line in 'rec '*) name=${line#rec } ;; none) name= ;; esac
			continue
		fi
		[ $st -gt 128 ] || break
		# A tick that ends a read in the middle of a line leaves its start
		# in line (a loaded node may stop the keeper between two bytes):
		# lost, the record the keeper guards would be the last one but
		# one, and a wipe would bring back the ticket of a job that holds
		# GPUs instead of its claim.
		part+=$line
		[ -n "$name" ] || continue
		if [ -z "$my_dir" ] || [ ! -e "$my_dir/$name" ]; then
			my_dir_find && [ -e "$my_dir/$name" ] && continue
			line=
			[ -f "$jd/rec.${name:0:1}" ] && IFS= read -r line <"$jd/rec.${name:0:1}"
			[ -n "$line" ] && rec_put "$name" "$line"
		elif [ $((SECONDS - touched)) -ge 3600 ]; then
			# A tmp cleaner ages files by their times: a job may run
			# for weeks.
			touch -c -- "$my_dir/$name" 2>/dev/null
			touched=$SECONDS
		fi
	done
	[ -n "$name" ] && rec_drop "$name"
	# The lock file goes with the lease, else every ended job leaves one
	# in the directory each waiter's poll lists. Only while it is still the
	# inode flock(1) holds: a path that names another is not this lease's.
	{ [ -n "$my_dir" ] || my_dir_find; } && for f in /proc/$pid/fd/*; do
		[ "$f" -ef "$my_dir/${jd##*/}.lock" ] && rm -f -- "$my_dir/${jd##*/}.lock" 2>/dev/null && break
	done
	exit 0
}

# lock_free FILE: nobody holds FILE's flock (its writer is gone).
lock_free() {
	flock -n 9 9<"$1" 2>/dev/null
}

# side_files KIND: every user's side records KIND.<job> (side_out), from
# directories their owners own; this user's stale ones are removed.
declare -a side_out=()
side_files() {
	local d f
	side_out=()
	[ ${#ns_dirs[@]} -gt 0 ] || lease_where || [ ${#ns_dirs[@]} -gt 0 ] || return 0
	users_scan
	for d in ${u_dir[@]+"${u_dir[@]}"}; do
		for f in "$d/$1".*; do
			[ -f "$f" ] && [ ! -L "$f" ] || continue
			valid_uid "${f##*/"$1".}" || continue
			if lock_free "$f"; then
				[ -O "$f" ] && rm -f -- "$f" 2>/dev/null
				continue
			fi
			side_out+=("$f")
		done
	done
}

# side_put KIND LINE: this job's side record, made under a temporary name,
# locked on side_fd, then renamed, so no reader sees it unlocked; side_rec
# is its path. Later writes rewrite it in place (side_rec, side_fd stay).
side_rec= side_fd=
side_put() {
	local tmp
	[ -n "$w_dir" ] || lease_where || return 1
	my_dir_ensure || return 1
	tmp=$my_dir/.new-$1-$uid
	rm -f -- "$tmp" 2>/dev/null
	side_fd=
	if ! (
		umask 022
		set -C
		printf '%s\n' "$2" >"$tmp"
	) 2>/dev/null || ! exec {side_fd}<"$tmp" || ! flock -n "$side_fd" || ! mv -f -- "$tmp" "$my_dir/$1.$uid" 2>/dev/null; then
		[ -n "$side_fd" ] && exec {side_fd}<&-
		side_fd=
		rm -f -- "$tmp" 2>/dev/null
		lease_err="cannot write this job's record in $my_dir (is the file system full?)"
		return 1
	fi
	side_rec=$my_dir/$1.$uid
}
