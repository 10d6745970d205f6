#!/bin/bash
# Guest side of bench/run-qd1-profile: backend_bench at QD1 against unbd-server and nbd-server.
# Per workload and target, one run: its IOPS and the CPU time the server's and the client's
# processes use per request (perf stat's task-clock over a timed window, split into user and
# kernel time by /proc/PID/stat, whose tick-sampled times alone were off by up to 2x under TCG).
# It used to add a second run under `perf record -a` for the share of gRPC's code. In later runs
# of this TCG guest the samples landed on the idle task (98.5 % of them while backend_bench ran at
# 467 IOPS, QD1, 2026-12-07) and that share read 0, so the sampling run is gone. With a ublk
# driver (UNBD_UBLK_DRIVER), it then puts the bare gRPC client's IOPS between fio's on the
# kernel's nbd device and on a remote unbd device, all at QD1 in this run: what the network
# protocol allows, and what the frontend adds; the exact CPU per request of unbd-server and the
# daemon behind the device, and which threads of the guest spend the CPU while it runs
# (tick-sampled).
set -uo pipefail
b=$UNBD_BUILD_DIR/bench/backend_bench
echo 0 >/proc/sys/kernel/kptr_restrict
echo -1 >/proc/sys/kernel/perf_event_paranoid
hz=$(getconf CLK_TCK)
window_s=4
declare -A grpc_client_iops
start_bench() { # TARGET WORKLOAD: starts backend_bench, returns once its timed run is going
	rm -rf /tmp/bb /tmp/bb.out
	# The store configured as start_backend configures the device's (32 MiB memtables): with the
	# default 128 MiB the whole 64 MiB prefill stays in the memtable and reads never touch an SST.
	"$b" --server-bin "$UNBD_BUILD_DIR/backend/unbd-server" --size-mib 64 --depths 1 \
		--server-arg=--write-buffer-mib --server-arg="${UNBD_BACKEND_WRITE_BUFFER_MIB:-32}" \
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
# cpu_window PID FILE: in the background (its pid in $!), perf stat's task-clock, the exact on-CPU
# time of all PID's threads, over the next window_s seconds. /proc's utime and stime are sampled at
# the tick, which under TCG was off by up to 2x, so they only split such a total into user and
# kernel time.
cpu_window() { perf stat -x, -e task-clock -p "$1" -o "$2" -- sleep "$window_s" >/dev/null 2>&1 & }
# us_per_request FILE IOPS: cpu_window's total as CPU microseconds per request.
us_per_request() {
	awk -F, -v w="$window_s" -v iops="$2" '$3 == "task-clock" { ms = $1 } END { printf "%.0f", ms * 1000 / (w * iops) }' "$1"
}
for wl in randread randwrite; do
	for t in unbd nbd; do
		start_bench "$t" "$wl"
		cpu_window "$server_pid" /tmp/ts.csv
		server_stat=$!
		cpu_window "$bench_pid" /tmp/tc.csv
		client_stat=$!
		read -r su0 sk0 <<<"$(ticks "$server_pid")"
		read -r cu0 ck0 <<<"$(ticks "$bench_pid")"
		sleep "$window_s"
		read -r su1 sk1 <<<"$(ticks "$server_pid")"
		read -r cu1 ck1 <<<"$(ticks "$bench_pid")"
		wait "$server_stat" "$client_stat"
		finish_bench "$t"
		[ "$t" = unbd ] && grpc_client_iops[$wl]=$iops
		awk -v s="$(us_per_request /tmp/ts.csv "$iops")" -v c="$(us_per_request /tmp/tc.csv "$iops")" \
			-v a="$((su1 - su0)) $((sk1 - sk0)) $((cu1 - cu0)) $((ck1 - ck0))" -v wl="$wl" -v t="$t" 'BEGIN {
				split(a, d, " ")
				su = d[1] + d[2] > 0 ? d[1] / (d[1] + d[2]) : 1; cu = d[3] + d[4] > 0 ? d[3] / (d[3] + d[4]) : 1
				printf "RESULT %-9s %-4s CPU us/request: server user %4.0f kernel %4.0f | client user %4.0f kernel %4.0f | total %4.0f\n",
					wl, t, s * su, s * (1 - su), c * cu, c * (1 - cu), s + c
			}'
		echo "RESULT $wl $t: $iops IOPS, 1/IOPS = $(awk -v i="$iops" 'BEGIN { printf "%.0f", 1e6 / i }') us"
	done
done

[ "${UNBD_UBLK_DRIVER:-none}" != none ] || exit 0
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/frontend/lib.sh"
load_ublk_driver
start_nbd_device 64M
prefill /dev/nbd0 64M
VOLUME_SIZE=64M start_backend
dev=$(unbd_add -t remote --server "$UNBD_SERVER" --volume vol0 -q 1 --need-get-data --poll-us 200)
wait_for_blockdev "$dev"
prefill "$dev" 64M
settle_backend
daemon=$(daemon_pid "${dev#/dev/ublkb}")
thread_ticks() { # one line per thread: "ticks name tid" (one awk: forks cost much under TCG)
	cat /proc/[0-9]*/task/[0-9]*/stat 2>/dev/null |
		awk '{ name = $0; sub(/^[0-9]+ \(/, "", name); sub(/\) [^)]*$/, "", name); gsub(/ /, "_", name)
		       n = split($0, a, ") "); split(a[n], f, " "); print f[12] + f[13], name, $1 }'
}
for wl in randread randwrite; do
	n=$(fio_iops /dev/nbd0 "$wl" 1 64M $((window_s + 3)))
	# The remote device's run also shows which threads of the guest did the work (CPU time per
	# request over the middle of the run).
	fio_iops "$dev" "$wl" 1 64M $((window_s + 3)) >/tmp/u.iops &
	fio_pid=$!
	sleep 2
	cpu_window "$BACKEND_PID" /tmp/ts.csv
	server_stat=$!
	cpu_window "$daemon" /tmp/td.csv
	daemon_stat=$!
	thread_ticks >/tmp/t0
	sleep "$window_s"
	thread_ticks >/tmp/t1
	wait "$server_stat" "$daemon_stat" "$fio_pid"
	u=$(cat /tmp/u.iops)
	printf "RESULT remote device %-9s QD1, exact CPU us per request: unbd-server %s, daemon %s\n" "$wl" \
		"$(us_per_request /tmp/ts.csv "$u")" "$(us_per_request /tmp/td.csv "$u")"
	awk -v hz="$hz" -v s="$window_s" -v iops="$u" -v wl="$wl" '
		NR == FNR { before[$3] = $1; next }
		{ d = $1 - before[$3]; if (d > 0) by[$2] += d }
		END { line = ""; for (c in by) if (by[c] / hz / s * 1e6 / iops >= 50) line = line sprintf(" %s %.0f", c, by[c] / hz / s * 1e6 / iops)
		      print "RESULT threads on the remote device, " wl " QD1, CPU us per request (tick-sampled):" line }' /tmp/t0 /tmp/t1
	g=${grpc_client_iops[$wl]}
	awk -v wl="$wl" -v n="$n" -v g="$g" -v u="$u" 'BEGIN {
		printf "RESULT chain %-9s QD1: kernel nbd device %5d IOPS | gRPC client without ublk (backend_bench) %5d = %.2fx | unbd remote device %5d = %.2fx\n",
			wl, n, g, g / n, u, u / n }'
done
"$UNBD" del -a
nbd-client -d /dev/nbd0 >/dev/null 2>&1 || true
