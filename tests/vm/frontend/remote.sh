#!/bin/bash
# The remote target end to end: fio with crc32c verification over mixed block sizes (4k-1M), ext4
# made, filled, remounted and checksummed, flush/discard/write-zeroes carried to the backend, the
# zero-copy write path proven by the daemon's counters, I/O riding out a backend restart, and clear
# errors for an unreachable backend or an unknown volume.
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/frontend/lib.sh"

export UNBD_VERIFY_ZERO_COPY=1  # the daemon checks every payload slice is our buffer
load_ublk_driver
start_backend

out=$("$UNBD" add -t remote --server 127.0.0.1:1 --volume vol0 2>&1) && fail "unreachable backend accepted"
echo "$out" | grep -q "unreachable" || fail "unclear unreachable-backend error: $out"
out=$("$UNBD" add -t remote --server "$UNBD_SERVER" --volume nosuch 2>&1) && fail "unknown volume accepted"
echo "$out" | grep -q "does not exist" || fail "unclear unknown-volume error: $out"
out=$("$UNBD" add -t remote --volume vol0 2>&1) && fail "remote without --server accepted"
echo "$out" | grep -q "\-\-server" || fail "unclear missing --server error: $out"

# RocksDB reopening under TCG takes tens of seconds: give the restart below room.
dev=$(unbd_add -t remote --server "$UNBD_SERVER" --volume vol0 -q 2 --need-get-data --retry-deadline-ms 180000)
wait_for_blockdev "$dev"
id=${dev#/dev/ublkb}
# What the daemon logged before the driver gave it an id (the target's open) is in the device's log.
grep -q "remote target: volume 'vol0'.*connected in" "$UNBD_RUN_DIR/$id.log" ||
	fail "the target's open is missing from $id.log: $(head -5 "$UNBD_RUN_DIR/$id.log")"
ls "$UNBD_RUN_DIR"/add-*.log 2>/dev/null && fail "an add's own log was left behind"
[ "$(blockdev --getsize64 "$dev")" = $((1 << 30)) ] || fail "size is not 1G"
[ "$(blockdev --getss "$dev")" = 4096 ] || fail "logical block size is not 4096"
"$UNBD" list -n "$id"

log "fio: random writes 4k-1M with crc32c verification"
fio --name=verify --filename="$dev" --rw=randwrite --bsrange=4k-1M --ioengine=libaio --direct=1 \
	--iodepth=16 --size=192M --verify=crc32c --verify_fatal=1 --eta=never \
	--output="$UNBD_VM_OUT/fio-verify.txt" || fail "fio verify failed with status $?"

log "discard and write-zeroes reach the backend"
dd if=/dev/urandom of="$dev" bs=1M count=4 oflag=direct status=none
blkdiscard -o 0 -l 1M "$dev" || fail "discard failed"
blkdiscard -z -o 1M -l 1M "$dev" || fail "write-zeroes failed"
[ "$(dd if="$dev" bs=1M count=2 iflag=direct status=none | tr -d '\0' | wc -c)" = 0 ] || fail "zeroed range not zero"
[ "$(dd if="$dev" bs=1M skip=2 count=2 iflag=direct status=none | tr -d '\0' | wc -c)" -gt 0 ] || fail "data lost"

ext4_roundtrip "$dev" /mnt/r 3

log "a backend restart is ridden out"
dd if=/dev/urandom of=/tmp/blob bs=1M count=8 status=none
dd if=/tmp/blob of="$dev" bs=1M seek=64 oflag=direct status=none
port=${UNBD_SERVER##*:}
kill -TERM "$BACKEND_PID"
wait "$BACKEND_PID" || true
(dd if=/tmp/blob of="$dev" bs=1M seek=128 oflag=direct conv=fsync status=none && echo ok >/tmp/during) &
writer=$!
sleep 2
t0=$(date +%s)
start_backend_process "127.0.0.1:$port"
log "unbd-server back after $(($(date +%s) - t0)) s"
wait "$writer" || fail "a write during the backend restart failed"
dd if="$dev" of=/tmp/back bs=1M skip=128 count=8 iflag=direct status=none
cmp /tmp/blob /tmp/back || fail "data written across the restart differs"
dd if="$dev" of=/tmp/back bs=1M skip=64 count=8 iflag=direct status=none
cmp /tmp/blob /tmp/back || fail "data written before the restart differs after it"

"$UNBD" del -n "$id"
wait_gone "$dev"
grep -h "writes, payload" "$UNBD_RUN_DIR/$id.log" || fail "no write-path counters in the daemon log"
awk '/writes, payload/ { if ($0 !~ / 0 bytes copied/) bad = 1; if ($0 ~ /from pool [1-9]/ && $0 ~ / [1-9][0-9]* payloads checked/) pool = 1 }
	END { exit (bad || !pool) }' "$UNBD_RUN_DIR/$id.log" ||
	fail "write payloads were copied or never came from the NEED_GET_DATA pool"
check_no_daemon_errors
log "remote: ok"
