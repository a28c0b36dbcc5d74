#!/usr/bin/env bash
# Simulated nvidia-smi for sshq test nodes and `sshq demo`.
#
# It answers the query flags sshq and its node scripts use, in the real tool's
# formats, from a per-node description in $SSHQ_SIM_DIR (default: the gpusim
# directory beside the bin directory holding this script):
#   gpus.csv   header of nvidia-smi field names, then one line per GPU
#   procs.csv  gpu_uuid,pid,used_memory,process_name (no header); a line whose
#              pid is gone (or a zombie) is not reported, as the driver forgets
#              a process when it exits
#   mode       optional: driver-failed | no-devices
#   delay      optional: seconds each call takes, as a real driver's do
# Only bash, coreutils and a POSIX awk: it runs on every probe, so it must stay
# cheap (one awk process).

case $0 in
*/*) here=${0%/*} ;;
*) here=. ;;
esac
sim=${SSHQ_SIM_DIR:-$here/../gpusim}

bad_args() {
	echo "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help."
	exit 2
}

op=table q= fmt= ids=
while [ $# -gt 0 ]; do
	case $1 in
	--query-gpu=*) op=gpu q=${1#*=} ;;
	--query-compute-apps=*) op=apps q=${1#*=} ;;
	--format=*) fmt=${1#*=} ;;
	--id=*) ids=${1#*=} ;;
	--query-gpu | --query-compute-apps | --format | -i | --id)
		[ $# -ge 2 ] || bad_args
		case $1 in
		--query-gpu) op=gpu q=$2 ;;
		--query-compute-apps) op=apps q=$2 ;;
		--format) fmt=$2 ;;
		*) ids=$2 ;;
		esac
		shift
		;;
	-i*) ids=${1#-i} ;;
	-L | --list-gpus) op=list ;;
	-h | --help)
		echo "NVIDIA System Management Interface -- (simulated by sshq)"
		echo "Supported: --query-gpu=F,... --query-compute-apps=F,... --format=csv[,noheader][,nounits] -L -i ID"
		exit 0
		;;
	*) bad_args ;;
	esac
	shift
done
case $op in
gpu | apps)
	case ",$fmt," in
	*,csv,*) ;;
	*) bad_args ;;
	esac
	;;
esac

# A real nvidia-smi spends tens of milliseconds starting NVML; "delay"
# (seconds) makes the simulator cost as much, for benchmarks.
if [ -r "$sim/delay" ]; then
	IFS= read -r delay <"$sim/delay"
	case $delay in '' | *[!0-9.]*) ;; *) sleep "$delay" ;; esac
fi

mode=
if [ -r "$sim/mode" ]; then
	IFS= read -r mode <"$sim/mode"
fi
case $mode in
driver-failed)
	echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."
	echo
	exit 9
	;;
no-devices)
	echo "No devices were found"
	exit 6
	;;
esac
if [ ! -r "$sim/gpus.csv" ]; then
	echo "nvidia-smi (sshq simulator): no GPU description at $sim/gpus.csv; install one with gpusim.Install or set SSHQ_SIM_DIR" >&2
	exit 255
fi

now=
[ "$op" = table ] && now=$(date '+%a %b %e %H:%M:%S %Y')

SIM_OP=$op SIM_Q=$q SIM_FMT=$fmt SIM_IDS=$ids SIM_NOW=$now \
	SIM_GPUS=$sim/gpus.csv SIM_PROCS=$sim/procs.csv exec awk '
function trim(s) { sub(/^[ \t\r]+/, "", s); sub(/[ \t\r]+$/, "", s); return s }
function num(v) { return v ~ /^[0-9]+(\.[0-9]+)?$/ }
function unit(f) {
	if (f ~ /^memory\.(total|used|free|reserved)$/ || f == "used_gpu_memory") return "MiB"
	if (f ~ /^utilization\.(gpu|memory)$/ || f == "fan.speed") return "%"
	if (f ~ /^power\.(draw|limit|default_limit|min_limit|max_limit)$/) return "W"
	if (f ~ /^clocks\./) return "MHz"
	return ""
}
function cell(f, v,   u) {
	u = unit(f)
	if (u == "" || nounits || v ~ /^\[.*\]$/) return v
	return v " " u
}
function head(f,   u) { u = unit(f); return u == "" ? f : f " [" u "]" }
function gcanon(f) {
	if (f == "gpu_name") return "name"
	if (f == "gpu_uuid") return "uuid"
	if (f == "gpu_bus_id") return "pci.bus_id"
	if (f == "gpu_serial") return "serial"
	return f
}
function acanon(f) {
	if (f == "used_memory") return "used_gpu_memory"
	if (f == "name") return "process_name"
	return f
}
# alive: the driver reports a process only while it exists and has not exited.
function alive(pid,   f, s, r) {
	f = "/proc/" pid "/stat"
	r = (getline s < f)
	close(f)
	if (r <= 0) return 0
	sub(/^.*\) /, "", s)
	return substr(s, 1, 1) !~ /[ZX]/
}
function busmatch(id, bus) {
	bus = tolower(bus)
	if (id == bus) return 1
	# -i accepts the bus id with a 4- or 8-digit domain, as the real tool does.
	sub(/^[0-9a-f]+:/, "", bus)
	if (id ~ /^[0-9a-f]+:[0-9a-f]+:[0-9a-f]+\.[0-9a-f]+$/) sub(/^[0-9a-f]+:/, "", id)
	return id == bus
}
function gval(r, f) {
	if (f == "memory.used") return used[r]
	if (f == "memory.free") return (num(G[r, "memory.total"]) && num(used[r])) ? G[r, "memory.total"] - used[r] : "[N/A]"
	if (f == "count") return n
	if ((r, f) in G) return G[r, f]
	return "[N/A]"
}
function fit(l, rt, w,   pad) {
	if (length(l) + length(rt) > w) l = substr(l, 1, w - length(rt))
	pad = w - length(l) - length(rt)
	return l sprintf("%" (pad > 0 ? pad : 1) "s", "") rt
}
function rule(c,   s, i) { s = ""; for (i = 0; i < 41; i++) s = s c; return s }
function onoff(v) { return v == "Enabled" ? "On" : (v == "Disabled" ? "Off" : "N/A") }
function plain(v, u) { return num(v) ? v u : "N/A" }
function watts(v) { return num(v) ? int(v) "W" : "N/A" }
BEGIN {
	op = ENVIRON["SIM_OP"]; fmt = "," ENVIRON["SIM_FMT"] ","
	noheader = index(fmt, ",noheader,") > 0
	nounits = index(fmt, ",nounits,") > 0
	known = ",index,uuid,name,pci.bus_id,memory.total,memory.used,memory.free,memory.reserved,utilization.gpu,utilization.memory,temperature.gpu,temperature.memory,power.draw,power.limit,power.default_limit,power.min_limit,power.max_limit,persistence_mode,display_mode,display_active,mig.mode.current,mig.mode.pending,compute_mode,driver_version,count,serial,vbios_version,pstate,fan.speed,clocks.sm,clocks.mem,clocks.gr,pci.domain,pci.bus,pci.device,pci.device_id,ecc.mode.current,"
	gpus = ENVIRON["SIM_GPUS"]; procs = ENVIRON["SIM_PROCS"]
	getline line < gpus
	nh = split(trim(line), H, ",")
	for (i = 1; i <= nh; i++) { H[i] = trim(H[i]); known = known H[i] "," }
	n = 0
	while ((getline line < gpus) > 0) {
		line = trim(line)
		if (line == "") continue
		n++
		m = split(line, V, ",")
		for (i = 1; i <= nh; i++) G[n, H[i]] = i <= m ? trim(V[i]) : "[N/A]"
		if (!((n, "index") in G)) G[n, "index"] = n - 1
		used[n] = G[n, "memory.used"]
		if (!((n, "memory.used") in G)) used[n] = 0
		row[G[n, "uuid"]] = n
		sel[n] = 1
	}
	np = 0
	while ((getline line < procs) > 0) {
		m = split(trim(line), V, ",")
		if (m < 4) continue
		pid = trim(V[2])
		r = row[trim(V[1])]
		if (pid !~ /^[0-9]+$/ || !r || !alive(pid)) continue
		np++
		pgpu[np] = r; P[np, "gpu_uuid"] = trim(V[1]); P[np, "pid"] = pid
		P[np, "used_gpu_memory"] = trim(V[3])
		name = V[4]
		for (i = 5; i <= m; i++) name = name "," V[i]
		P[np, "process_name"] = trim(name)
		if (num(used[r]) && num(trim(V[3]))) used[r] += trim(V[3])
	}

	ids = ENVIRON["SIM_IDS"]
	if (ids != "") {
		for (r = 1; r <= n; r++) sel[r] = 0
		k = split(ids, I, ",")
		for (j = 1; j <= k; j++) {
			id = tolower(trim(I[j])); found = 0
			for (r = 1; r <= n; r++)
				if (id == G[r, "index"] || id == tolower(G[r, "uuid"]) || busmatch(id, G[r, "pci.bus_id"])) { sel[r] = 1; found = 1 }
			if (!found) { print "No devices were found"; exit 6 }
		}
	}
	if (n == 0) { print "No devices were found"; exit 6 }

	if (op == "gpu" || op == "apps") {
		nf = split(ENVIRON["SIM_Q"], Q, ",")
		if (nf == 0) { print "Field \"\" is not a valid field to query."; print ""; exit 2 }
		for (i = 1; i <= nf; i++) {
			f = trim(Q[i])
			Q[i] = op == "gpu" ? gcanon(f) : acanon(f)
			ok = op == "gpu" ? index(known, "," Q[i] ",") > 0 && Q[i] != "" : Q[i] ~ /^(gpu_uuid|pid|used_gpu_memory|process_name|gpu_bus_id|gpu_name|gpu_serial)$/
			if (!ok) { print "Field \"" f "\" is not a valid field to query."; print ""; exit 2 }
		}
		if (!noheader) {
			s = ""
			for (i = 1; i <= nf; i++) s = s (i > 1 ? ", " : "") head(Q[i])
			print s
		}
	}
	if (op == "gpu") {
		for (r = 1; r <= n; r++) {
			if (!sel[r]) continue
			s = ""
			for (i = 1; i <= nf; i++) s = s (i > 1 ? ", " : "") cell(Q[i], gval(r, Q[i]))
			print s
		}
		exit 0
	}
	if (op == "apps") {
		for (r = 1; r <= n; r++) {
			if (!sel[r]) continue
			for (p = 1; p <= np; p++) {
				if (pgpu[p] != r) continue
				s = ""
				for (i = 1; i <= nf; i++) {
					f = Q[i]
					if (f == "gpu_bus_id") v = gval(r, "pci.bus_id")
					else if (f == "gpu_name") v = gval(r, "name")
					else if (f == "gpu_serial") v = gval(r, "serial")
					else v = P[p, f]
					s = s (i > 1 ? ", " : "") cell(f, v)
				}
				print s
			}
		}
		exit 0
	}
	if (op == "list") {
		for (r = 1; r <= n; r++)
			if (sel[r]) print "GPU " G[r, "index"] ": " G[r, "name"] " (UUID: " G[r, "uuid"] ")"
		exit 0
	}

	# The human table: what a person typing nvidia-smi on the node expects.
	drv = gval(1, "driver_version"); if (drv ~ /^\[/) drv = "550.54.15"
	top = "+" rule("-") "+" substr(rule("-"), 1, 24) "+" substr(rule("-"), 1, 22) "+"
	full = "+" rule("-") "-" substr(rule("-"), 1, 24) "-" substr(rule("-"), 1, 22) "+"
	w = length(full) - 2
	print ENVIRON["SIM_NOW"]
	print full
	print "|" fit(" NVIDIA-SMI " drv "              Driver Version: " drv, "CUDA Version: 12.4     ", w) "|"
	print "|" rule("-") "+" substr(rule("-"), 1, 24) "+" substr(rule("-"), 1, 22) "|"
	print "| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |"
	print "| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |"
	print "|                                         |                        |               MIG M. |"
	print "|" rule("=") "+" substr(rule("="), 1, 24) "+" substr(rule("="), 1, 22) "|"
	for (r = 1; r <= n; r++) {
		if (!sel[r]) continue
		mig = gval(r, "mig.mode.current")
		print "|" fit(sprintf(" %3s  %s", G[r, "index"], gval(r, "name")), onoff(gval(r, "persistence_mode")) "  ", 41) "|" \
			fit("", gval(r, "pci.bus_id") " " onoff(gval(r, "display_active")) " ", 24) "|" fit("", "0 ", 22) "|"
		print "|" fit(" N/A  " sprintf("%3s", plain(gval(r, "temperature.gpu"), "C")) "    P0", \
			sprintf("%5s / %5s ", watts(gval(r, "power.draw")), watts(gval(r, "power.limit"))), 41) "|" \
			fit("", sprintf("%9s / %9s ", plain(used[r], "MiB"), plain(gval(r, "memory.total"), "MiB")), 24) "|" \
			fit(sprintf("    %4s", plain(gval(r, "utilization.gpu"), "%")), "Default ", 22) "|"
		print "|" fit("", "", 41) "|" fit("", "", 24) "|" fit("", (mig ~ /^\[/ ? "N/A" : mig) " ", 22) "|"
		print top
	}
	print ""
	print full
	print "|" fit(" Processes:", "", w) "|"
	print "|" fit("  GPU   GI   CI        PID   Type   Process name", "GPU Memory ", w) "|"
	print "|" fit("        ID   ID", "Usage      ", w) "|"
	print "|" rule("=") "=" substr(rule("="), 1, 24) "=" substr(rule("="), 1, 22) "|"
	shown = 0
	for (r = 1; r <= n; r++) {
		if (!sel[r]) continue
		for (p = 1; p <= np; p++) {
			if (pgpu[p] != r) continue
			shown++
			print "|" fit(sprintf("  %3s   N/A  N/A  %9s      C   %s", G[r, "index"], P[p, "pid"], P[p, "process_name"]), \
				plain(P[p, "used_gpu_memory"], "MiB") " ", w) "|"
		}
	}
	if (!shown) print "|" fit("  No running processes found", "", w) "|"
	print full
	exit 0
}'
