#!/bin/bash
# Guest side of bench/run-frontend (runs inside the VM as root).
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/frontend/lib.sh"
rt=${UNBD_BENCH_RUNTIME:-5}
# Zero-copy verification (UNBD_VERIFY_ZERO_COPY) costs a Dump per batch; the tests prove it instead.
results=$UNBD_VM_OUT/bench.tsv
: >"$results"

# fio_iops DEV RW QD -> IOPS
fio_iops() {
	fio --name=b --filename="$1" --ioengine=io_uring --direct=1 --rw="$2" --bs=4k --iodepth="$3" \
		--size=128M --time_based --runtime="$rt" --ramp_time=1 --output-format=json 2>/dev/null |
		jq -r "if \"$2\" == \"randread\" then .jobs[0].read.iops else .jobs[0].write.iops end | floor"
}
# measure NAME DEV: four workloads, one line per workload in $results
measure() {
	local name=$1 dev=$2 rw qd
	for rw in ${UNBD_BENCH_RW:-randread randwrite}; do
		for qd in 1 32; do
			[ -n "${UNBD_BENCH_RW:-}" ] && log "$name $rw qd$qd at $(date +%T)"
			iops=$(fio_iops "$dev" $rw $qd) || fail "fio on $dev ($name $rw qd$qd) failed"
			printf '%s\t%s\tqd%s\t%s\n' "$name" "$rw" "$qd" "$iops" | tee -a "$results"
		done
	done
}
# UNBD_BENCH_ONLY=remote (comma list of null,loop,remote) runs only those sections.
want() { [ -z "${UNBD_BENCH_ONLY:-}" ] || [[ ",$UNBD_BENCH_ONLY," == *",$1,"* ]]; }
# settle_backend: waits (up to 120 s) until the backend store has finished every memtable flush it
# started; prints how long that took.
settle_backend() {
	local log=$BACKEND_DIR/db/LOG t0=$SECONDS started finished
	sleep 2  # a flush triggered by the last prefill write starts shortly after it
	while [ $((SECONDS - t0)) -lt 120 ]; do
		started=$(grep -c '"event": "flush_started"' "$log" 2>/dev/null || true)
		finished=$(grep -c '"event": "flush_finished"' "$log" 2>/dev/null || true)
		[ "${started:-0}" = "${finished:-0}" ] && break
		sleep 1
	done
	log "backend store settled after $((SECONDS - t0)) s (${finished:-0} memtable flushes)"
}
prefill() { fio --name=fill --filename="$1" --ioengine=io_uring --direct=1 --rw=write --bs=1M --size=128M --iodepth=4 >/dev/null || fail "prefill $1"; }

load_ublk_driver
modprobe ext4 2>/dev/null || true

if want null; then
log "null: unbd null target vs null_blk"
modprobe null_blk nr_devices=1 queue_mode=2 irqmode=0 submit_queues=1 gb=4 || fail "modprobe null_blk"
wait_for_blockdev /dev/nullb0
measure null_blk /dev/nullb0
dev=$(unbd_add -t null -q 1 -s 4G --need-get-data --poll-us 200)
wait_for_blockdev "$dev"
measure unbd-null "$dev"
"$UNBD" del -a
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
prefill "$kloop"
measure kernel-loop "$kloop"
losetup -d "$kloop"
dev=$(unbd_add -t loop -f /mnt/bench/disk.img -q 1 --need-get-data --poll-us 200)
wait_for_blockdev "$dev"
"$UNBD" list | grep -q "target loop" || true
grep -q "direct_io=1" "$UNBD_RUN_DIR"/*.log || fail "unbd loop target is not using O_DIRECT"
measure unbd-loop "$dev"
"$UNBD" del -a
umount /mnt/bench
rmmod brd
fi

if want remote; then
log "remote: unbd remote target (unbd-server) vs nbd (nbd-server), both on loopback"
VOLUME_SIZE=512M start_backend
dev=$(unbd_add -t remote --server "$UNBD_SERVER" --volume vol0 -q 1 --need-get-data --poll-us 200)
wait_for_blockdev "$dev"
prefill "$dev"
# The prefill fills the store's 128 MiB memtable; its flush to an SST takes ~10 s of a vCPU under
# TCG and ran during the first read workloads, which made reads look 4-7x slower than the writes
# measured after it. nbd-server's prefill leaves nothing to do in the background, so wait for it.
settle_backend
measure unbd-remote "$dev"
# When the store's memtable flushes ran, relative to the workloads above (they compete for the CPU).
grep -h '"event": "flush_started"\|"event": "flush_finished"\|"event": "compaction_finished"' /tmp/backend/db/LOG 2>/dev/null |
	sed 's/^\([^ ]* [^ ]*\).*"event": "\([a-z_]*\)".*/backend store: \1 \2/' || true
"$UNBD" del -a
grep -h "writes, payload" "$UNBD_RUN_DIR"/*.log | tail -1 | sed 's/^/unbd remote write path: /'
kill "$BACKEND_PID"; wait "$BACKEND_PID" || true
truncate -s 512M /tmp/nbd.img
printf '[generic]\n[bench]\nexportname = /tmp/nbd.img\n' >/tmp/nbd.conf
nbd-server -C /tmp/nbd.conf || fail "nbd-server did not start"
modprobe nbd nbds_max=2 || fail "modprobe nbd"
wait_until 10 nbd-client -N bench 127.0.0.1 /dev/nbd0 >/dev/null 2>&1 || fail "nbd-client could not connect"
wait_for_blockdev /dev/nbd0
prefill /dev/nbd0
measure nbd /dev/nbd0
nbd-client -d /dev/nbd0 >/dev/null 2>&1 || true
fi

# Table: unbd vs peer per workload.
echo
printf '%-12s %-12s %-10s %10s %10s %7s\n' unbd peer workload "unbd IOPS" "peer IOPS" ratio
for pair in unbd-null:null_blk unbd-loop:kernel-loop unbd-remote:nbd; do
	u=${pair%%:*} p=${pair##*:}
	for w in "randread qd1" "randread qd32" "randwrite qd1" "randwrite qd32"; do
		set -- $w
		ui=$(awk -v n="$u" -v rw="$1" -v q="$2" '$1 == n && $2 == rw && $3 == q { print $4 }' "$results")
		pi=$(awk -v n="$p" -v rw="$1" -v q="$2" '$1 == n && $2 == rw && $3 == q { print $4 }' "$results")
		ratio=$(awk -v a="$ui" -v b="$pi" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
		printf '%-12s %-12s %-10s %10s %10s %7s\n' "$u" "$p" "$1 $2" "$ui" "$pi" "${ratio}x"
	done
done | tee "$UNBD_VM_OUT/bench-table.txt"
