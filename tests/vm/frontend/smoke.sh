#!/bin/bash
# First contact: null and loop devices come up, move data, show in `unbd list`, and go away with
# `unbd del`; option and environment errors are reported clearly.
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/frontend/lib.sh"

out=$("$UNBD" add -t null 2>&1) && fail "add without the driver succeeded: $out"
echo "$out" | grep -q "ublk-control is missing" || fail "unclear error without the driver: $out"

load_ublk_driver
"$UNBD" features

dev=$(unbd_add -t null -q 2 -d 64 -s 1G)
log "null device: $dev"
[ "$dev" = /dev/ublkb0 ] || fail "expected /dev/ublkb0, got $dev"
wait_for_blockdev "$dev"
[ "$(blockdev --getsize64 "$dev")" = $((1 << 30)) ] || fail "null size is not 1G"
"$UNBD" list
is_state 0 LIVE || fail "device 0 is not LIVE"
fio --name=null --filename="$dev" --rw=randrw --bs=4k --iodepth=16 --ioengine=io_uring --direct=1 \
	--time_based --runtime=2 --numjobs=2 --group_reporting >/dev/null || fail "fio on null failed"

truncate -s 256M /tmp/loop.img
dev=$(unbd_add -t loop -f /tmp/loop.img -n 3 --need-get-data)
[ "$dev" = /dev/ublkb3 ] || fail "expected /dev/ublkb3, got $dev"
wait_for_blockdev "$dev"
dd if=/dev/urandom of=/tmp/data bs=1M count=8 status=none
dd if=/tmp/data of="$dev" bs=1M oflag=direct status=none
dd if="$dev" of=/tmp/back bs=1M count=8 iflag=direct status=none
cmp /tmp/data /tmp/back || fail "loop read-back differs"
cmp -n $((8 << 20)) /tmp/data /tmp/loop.img || fail "backing file does not hold the data"
blkdiscard -o 0 -l 1M "$dev" || fail "discard failed"
blkdiscard -z -o 1M -l 1M "$dev" || fail "write-zeroes failed"
[ "$(dd if="$dev" bs=1M count=2 iflag=direct status=none | tr -d '\0' | wc -c)" = 0 ] || fail "discarded range not zero"
"$UNBD" list -n 3
"$UNBD" list --json | jq -e 'length == 2' >/dev/null || fail "list --json does not show two devices"

out=$("$UNBD" add -t loop -f /nonexistent 2>&1) && fail "missing file accepted"
echo "$out" | grep -q "nonexistent" || fail "unclear missing-file error: $out"
out=$("$UNBD" add -t loop 2>&1) && fail "loop without -f accepted"
out=$("$UNBD" add -t bogus 2>&1) && fail "bogus type accepted"
echo "$out" | grep -q "unknown target type" || fail "unclear type error: $out"
out=$("$UNBD" add -t null -n 3 2>&1) && fail "duplicate id accepted"
echo "$out" | grep -qi "exists" || fail "unclear duplicate error: $out"
out=$("$UNBD" del -n 42 2>&1) && fail "del of unknown device succeeded"
echo "$out" | grep -q "does not exist" || fail "unclear unknown-device error: $out"

"$UNBD" del -n 0
wait_gone /dev/ublkb0
"$UNBD" del -a
wait_gone /dev/ublkb3
[ -z "$(ls "$UNBD_RUN_DIR"/*.json 2>/dev/null)" ] || fail "state files left behind"
pgrep -x unbd-daemon && fail "daemons left behind"
check_no_daemon_errors
log "smoke: ok"
