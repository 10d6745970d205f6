#!/bin/bash
# Guest side of bench/run-frontend (runs inside the VM as root).
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/frontend/lib.sh"
rt=${UNBD_BENCH_RUNTIME:-5}
rounds=${UNBD_BENCH_ROUNDS:-3}
# Zero-copy verification (UNBD_VERIFY_ZERO_COPY) costs a Dump per batch; the tests prove it instead.
results=$UNBD_VM_OUT/bench.tsv
: >"$results"

# measure_pair PEER PEER_DEV UNBD UNBD_DEV: each workload on both devices, UNBD_BENCH_ROUNDS times,
# the peer first in odd rounds and unbd first in even ones: the guest's speed drifts by tens of
# percent under TCG, and back-to-back pairs see the same drift. One line per run in $results.
measure_pair() {
	local pn=$1 pd=$2 un=$3 ud=$4 r rw qd first
	for ((r = 1; r <= rounds; r++)); do
		for rw in ${UNBD_BENCH_RW:-randread randwrite}; do
			for qd in 1 32; do
				if ((r % 2)); then first=("$pn" "$pd" "$un" "$ud"); else first=("$un" "$ud" "$pn" "$pd"); fi
				measure_one "${first[0]}" "${first[1]}" $rw $qd $r
				measure_one "${first[2]}" "${first[3]}" $rw $qd $r
			done
		done
	done
}
measure_one() {
	local iops
	iops=$(fio_iops "$2" "$3" "$4" 128M "$rt") || fail "fio on $2 ($1 $3 qd$4) failed"
	printf '%s\t%s\tqd%s\t%s\t%s\n' "$1" "$3" "$4" "$iops" "$5" | tee -a "$results"
}
# UNBD_BENCH_ONLY=remote (comma list of null,loop,remote) runs only those sections.
want() { [ -z "${UNBD_BENCH_ONLY:-}" ] || [[ ",$UNBD_BENCH_ONLY," == *",$1,"* ]]; }

load_ublk_driver
modprobe ext4 2>/dev/null || true

if want null; then
log "null: unbd null target vs null_blk"
modprobe null_blk nr_devices=1 queue_mode=2 irqmode=0 submit_queues=1 gb=4 || fail "modprobe null_blk"
wait_for_blockdev /dev/nullb0
dev=$(unbd_add -t null -q 1 -s 4G --need-get-data --poll-us 200)
wait_for_blockdev "$dev"
measure_pair null_blk /dev/nullb0 unbd-null "$dev"
"$UNBD" del -a
rmmod null_blk || true
fi

if want loop; then
log "loop: unbd loop target vs kernel loop (direct I/O), same file on ext4 on brd"
modprobe loop 2>/dev/null || true
modprobe brd rd_nr=1 rd_size=$((768 * 1024)) || fail "modprobe brd"
mkfs.ext4 -q -F /dev/ram0
mkdir -p /mnt/bench && mount /dev/ram0 /mnt/bench
fallocate -l 512M /mnt/bench/disk.img
kloop=$(losetup --direct-io=on -f --show /mnt/bench/disk.img) || fail "losetup"
[ "$(cat /sys/block/${kloop#/dev/}/loop/dio)" = 1 ] || fail "kernel loop is not using direct I/O"
prefill "$kloop" 128M
# Both on the same file at once; only one of them does I/O at a time.
# --need-get-data although a loop write lands in the tag's buffer either way: without it our
# module copies write data in task work on the server's thread (a signal-like interrupt per
# write), and writes measured 0.75x kernel loop at QD 1 and 32 (5 rounds) instead of 0.84-0.93x.
dev=$(unbd_add -t loop -f /mnt/bench/disk.img -q 1 --need-get-data --poll-us 200)
wait_for_blockdev "$dev"
grep -q "direct_io=1" "$UNBD_RUN_DIR"/*.log || fail "unbd loop target is not using O_DIRECT"
measure_pair kernel-loop "$kloop" unbd-loop "$dev"
"$UNBD" del -a
losetup -d "$kloop"
umount /mnt/bench
rmmod brd
fi

if want remote; then
log "remote: unbd remote target (unbd-server) vs nbd (nbd-server), both on loopback"
# The server's default memtable, as a user would run it (the tests use a smaller one).
# UNBD_BENCH_SERVER_ARGS: extra unbd-server flags (e.g. --poll-us 50).
UNBD_BACKEND_WRITE_BUFFER_MIB=128 VOLUME_SIZE=512M start_backend ${UNBD_BENCH_SERVER_ARGS:-}
dev=$(unbd_add -t remote --server "$UNBD_SERVER" --volume vol0 -q 1 --need-get-data --poll-us 200)
wait_for_blockdev "$dev"
prefill "$dev" 128M
# The prefill fills the store's 128 MiB memtable; its flush to an SST takes ~10 s of a vCPU under
# TCG and ran during the first read workloads, which made reads look 4-7x slower than the writes
# measured after it. nbd-server's prefill leaves nothing to do in the background, so wait for it.
settle_backend
start_nbd_device 512M
prefill /dev/nbd0 128M
measure_pair nbd /dev/nbd0 unbd-remote "$dev"
# When the store's memtable flushes ran, relative to the workloads above (they compete for the CPU).
grep -h '"event": "flush_started"\|"event": "flush_finished"\|"event": "compaction_finished"' /tmp/backend/db/LOG 2>/dev/null |
	sed 's/^\([^ ]* [^ ]*\).*"event": "\([a-z_]*\)".*/backend store: \1 \2/' || true
"$UNBD" del -a
grep -h "writes, payload" "$UNBD_RUN_DIR"/*.log | tail -1 | sed 's/^/unbd remote write path: /'
kill "$BACKEND_PID"; wait "$BACKEND_PID" || true
nbd-client -d /dev/nbd0 >/dev/null 2>&1 || true
fi

# Table: per workload, the median IOPS of each device and the median and range of the per-round
# ratios (each ratio from a back-to-back pair).
echo
awk -v rounds="$rounds" -F'\t' '
	function median(a, n,   i, j, t) {
		for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	{ iops[$1, $2, $3, $5] = $4 }
	END {
		printf "%-12s %-12s %-15s %10s %10s %7s  %s\n", "unbd", "peer", "workload", "unbd IOPS", "peer IOPS", "ratio", "range (" rounds " rounds)"
		split("unbd-null:null_blk unbd-loop:kernel-loop unbd-remote:nbd", pairs, " ")
		split("randread:qd1 randread:qd32 randwrite:qd1 randwrite:qd32", works, " ")
		for (p = 1; p <= 3; p++) {
			split(pairs[p], pu, ":")
			for (w = 1; w <= 4; w++) {
				split(works[w], wk, ":")
				n = 0
				for (r = 1; r <= rounds; r++) {
					u = iops[pu[1], wk[1], wk[2], r]; q = iops[pu[2], wk[1], wk[2], r]
					if (u == "" || q == "" || q == 0) continue
					n++; ui[n] = u; qi[n] = q; ra[n] = u / q
				}
				if (n == 0) continue
				lo = hi = ra[1]
				for (i = 2; i <= n; i++) { if (ra[i] < lo) lo = ra[i]; if (ra[i] > hi) hi = ra[i] }
				printf "%-12s %-12s %-15s %10d %10d %6.2fx  %.2f-%.2fx\n", pu[1], pu[2], wk[1] " " wk[2], median(ui, n), median(qi, n), median(ra, n), lo, hi
			}
		}
	}' "$results" | tee "$UNBD_VM_OUT/bench-table.txt"
