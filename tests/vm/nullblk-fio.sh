#!/bin/bash
# First VM test: the image's null_blk under fio for 2 s must complete I/O with no error.
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"

modprobe null_blk nr_devices=1 || fail "modprobe null_blk failed"
wait_for_blockdev /dev/nullb0

json=$UNBD_VM_OUT/fio.json
log "fio: 2 s of 4k random read/write on /dev/nullb0"
fio --name=nullb0 --filename=/dev/nullb0 --rw=randrw --bs=4k --iodepth=16 --ioengine=io_uring \
	--direct=1 --time_based --runtime=2 --eta=never --output-format=json --output="$json" ||
	fail "fio exited with status $?"

# jq, not python: interpreter start-up over 9p under TCG costs seconds.
summary=$(jq -r '.jobs[0] | "error=\(.error) read=\(.read.io_bytes) B (\(.read.iops|floor) IOPS) write=\(.write.io_bytes) B (\(.write.iops|floor) IOPS)"' "$json") ||
	fail "cannot parse fio's JSON output $json"
log "fio: $summary"
jq -e '.jobs[0] | .error == 0 and .read.io_bytes > 0 and .write.io_bytes > 0' "$json" >/dev/null ||
	fail "fio did not report error-free I/O in both directions: $summary"
log "null_blk fio: ok"
