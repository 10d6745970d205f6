#!/bin/bash
# Guest half of bench/kmod-bench: rounds alternate the three devices so drift hits all alike.
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
tool=$UNBD_BUILD_DIR/tests/vm/kmod/ublk-tool
runtime=${UNBD_BENCH_RUNTIME:-10}
rounds=${UNBD_BENCH_ROUNDS:-2}

fio_iops() { # DEV RW -> IOPS
	fio --name=b --filename="$1" --rw="$2" --bs=4k --iodepth=32 --ioengine=libaio --direct=1 \
		--time_based --runtime="$runtime" --eta=never --output-format=json --output=/tmp/b.json ||
		fail "fio $2 on $1 failed"
	jq -r ".jobs[0].${2#rand}.iops | floor" /tmp/b.json
}

ublk_run() { # KO NAME RW -> IOPS
	insmod "$1" || fail "insmod $1"
	wait_for_path /dev/ublk-control
	"$tool" serve --id 0 --queues 2 --depth 64 --size-mb 1024 >/tmp/srv.log 2>&1 &
	local pid=$!
	wait_until 30 grep -q READY /tmp/srv.log || fail "server on $2 did not start: $(cat /tmp/srv.log)"
	wait_for_blockdev /dev/ublkb0
	fio_iops /dev/ublkb0 "$3"
	"$tool" del --id 0 >/dev/null
	wait "$pid" || true
	rmmod "$(basename "$1" .ko)" || fail "rmmod $2"
}

declare -A sum
for r in $(seq 1 "$rounds"); do
	for rw in randread randwrite; do
		v=$(ublk_run "$UNBD_BENCH_KMOD_KO" kmod $rw); sum[kmod-$rw]=$((${sum[kmod-$rw]:-0} + v))
		log "round $r $rw kmod: $v IOPS"
		v=$(ublk_run "$UNBD_BENCH_UPSTREAM_KO" upstream $rw); sum[upstream-$rw]=$((${sum[upstream-$rw]:-0} + v))
		log "round $r $rw upstream: $v IOPS"
		modprobe null_blk nr_devices=1 submit_queues=2 hw_queue_depth=64 || fail "modprobe null_blk"
		wait_for_blockdev /dev/nullb0
		v=$(fio_iops /dev/nullb0 $rw); sum[nullblk-$rw]=$((${sum[nullblk-$rw]:-0} + v))
		rmmod null_blk
		log "round $r $rw null_blk: $v IOPS"
	done
done
echo "== 4k QD32, 2 queues, $rounds x ${runtime}s (mean IOPS; ratios from this run only)"
for rw in randread randwrite; do
	k=$((sum[kmod-$rw] / rounds)) u=$((sum[upstream-$rw] / rounds)) n=$((sum[nullblk-$rw] / rounds))
	awk -v rw=$rw -v k=$k -v u=$u -v n=$n 'BEGIN {
		printf "RESULT %-9s kmod %7d  upstream %7d  null_blk %7d  kmod/upstream %.2fx  kmod/null_blk %.2fx\n",
			rw, k, u, n, k / u, k / n }'
done
