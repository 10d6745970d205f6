#!/bin/bash
# Guest side of bench/run-qd1-profile: backend_bench at QD1 against unbd-server and nbd-server.
# Per workload and target, two runs of the same load: the first unobserved, for IOPS and the CPU
# time the server's and the client's processes use per request (/proc/PID/stat over a timed
# window); the second under `perf record -a`, for the share of each process's user time spent in
# gRPC's libraries. (perf's own start-up costs seconds of CPU under TCG and its sampling clock
# drifts there, so it gives shares, not totals.)
set -uo pipefail
b=$UNBD_BUILD_DIR/bench/backend_bench
echo 0 >/proc/sys/kernel/kptr_restrict
echo -1 >/proc/sys/kernel/perf_event_paranoid
hz=$(getconf CLK_TCK)
window_s=4
start_bench() { # TARGET WORKLOAD: starts backend_bench, returns once its timed run is going
	rm -rf /tmp/bb /tmp/bb.out
	"$b" --server-bin "$UNBD_BUILD_DIR/backend/unbd-server" --size-mib 64 --depths 1 \
		--seconds $((window_s + 4)) --targets "$1" --workloads "$2" --work-dir /tmp/bb >/tmp/bb.out 2>&1 &
	bench_pid=$!
	until grep -q "QD1  *running" /tmp/bb.out 2>/dev/null; do
		kill -0 "$bench_pid" 2>/dev/null || { cat /tmp/bb.out; exit 1; }
		sleep 0.2
	done
	server_pid=$(pgrep -n "^(unbd-server|nbd-server)$") || { echo "no server process" >&2; exit 1; }
	sleep 1
}
finish_bench() {
	wait "$bench_pid" || { cat /tmp/bb.out; exit 1; }
	iops=$(awk -v t="$1" '$1 == t && $3 == 1 { print $4 }' /tmp/bb.out)
	[ -n "$iops" ] || { cat /tmp/bb.out; exit 1; }
}
ticks() { awk '{ print $14, $15 }' "/proc/$1/stat"; } # utime stime, all threads
for wl in randread randwrite; do
	for t in unbd nbd; do
		start_bench "$t" "$wl"
		read -r su0 sk0 <<<"$(ticks "$server_pid")"
		read -r cu0 ck0 <<<"$(ticks "$bench_pid")"
		n0=$(date +%s%N)
		sleep "$window_s"
		read -r su1 sk1 <<<"$(ticks "$server_pid")"
		read -r cu1 ck1 <<<"$(ticks "$bench_pid")"
		n1=$(date +%s%N)
		finish_bench "$t"
		cpu=$(awk -v hz="$hz" -v ns=$((n1 - n0)) -v iops="$iops" -v a="$((su1 - su0)) $((sk1 - sk0)) $((cu1 - cu0)) $((ck1 - ck0))" \
			'BEGIN { split(a, d, " "); for (i = 1; i <= 4; i++) printf "%.0f ", d[i] / hz / (ns / 1e9) * 1e6 / iops }')
		start_bench "$t" "$wl"
		perf record -a -F 999 -o /tmp/perf.data -- sleep "$window_s" >/dev/null 2>&1
		finish_bench "$t"
		perf report -i /tmp/perf.data --sort comm,dso -F overhead,comm,dso -t '|' --stdio 2>/dev/null |
			grep -v '^#' | grep '%' |
			awk -F'|' -v t="$t" -v wl="$wl" -v cpu="$cpu" '
			BEGIN { split(cpu, c, " ") }
			{
				pct = $1; sub(/%/, "", pct); comm = $2; dso = $3
				gsub(/^ +| +$/, "", pct); gsub(/^ +| +$/, "", comm); gsub(/^ +| +$/, "", dso)
				if (dso == "[kernel.kallsyms]") next
				side = comm == "backend_bench" ? "client" : (comm ~ /^(unbd-server|nbd-server|pool|grpc)/ ? "server" : "")
				if (side == "") next
				user[side] += pct
				if (dso ~ /^lib(grpc|gpr)/) grpc[side] += pct
			}
			END {
				sg = user["server"] > 0 ? grpc["server"] / user["server"] : 0
				cg = user["client"] > 0 ? grpc["client"] / user["client"] : 0
				total = c[1] + c[2] + c[3] + c[4]
				printf "RESULT %-9s %-4s CPU us/request: server user %4.0f (gRPC %4.0f) kernel %4.0f | client user %4.0f (gRPC %4.0f) kernel %4.0f | total %4.0f, gRPC %4.0f\n",
					wl, t, c[1], c[1] * sg, c[2], c[3], c[3] * cg, c[4], total, c[1] * sg + c[3] * cg
			}'
		echo "RESULT $wl $t: $iops IOPS, 1/IOPS = $(awk -v i="$iops" 'BEGIN { printf "%.0f", 1e6 / i }') us"
	done
done
