#!/bin/bash
# The loop target end to end, on a file: fio with crc32c verification over mixed block sizes
# (4k-1M), flush/FUA (fio fsync), discard and write-zeroes reaching the file, ext4 made, filled,
# remounted and checksummed, and the data visible in the backing file after the device is gone.
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/frontend/lib.sh"

load_ublk_driver
truncate -s 512M /tmp/backing.img
dev=$(unbd_add -t loop -f /tmp/backing.img -q 2 --need-get-data)
wait_for_blockdev "$dev"
id=${dev#/dev/ublkb}

log "fio: random writes 4k-1M with crc32c verification, fsync every 32 writes"
fio --name=verify --filename="$dev" --rw=randwrite --bsrange=4k-1M --ioengine=libaio --direct=1 \
	--iodepth=16 --size=256M --verify=crc32c --verify_fatal=1 --fsync=32 --eta=never \
	--output="$UNBD_VM_OUT/fio-verify.txt" || fail "fio verify failed with status $?"

log "discard punches holes in the file; write-zeroes zeroes"
dd if=/dev/urandom of="$dev" bs=1M count=4 seek=300 oflag=direct status=none
before=$(du -k /tmp/backing.img | cut -f1)
blkdiscard -o $((300 << 20)) -l $((2 << 20)) "$dev" || fail "discard failed"
blkdiscard -z -o $((302 << 20)) -l $((1 << 20)) "$dev" || fail "write-zeroes failed"
after=$(du -k /tmp/backing.img | cut -f1)
[ "$after" -lt "$before" ] || fail "discard did not free space in the file ($before -> $after KiB)"
[ "$(dd if=/tmp/backing.img bs=1M skip=300 count=3 status=none | tr -d '\0' | wc -c)" = 0 ] || fail "range not zero"

ext4_roundtrip "$dev" /mnt/l 4
"$UNBD" del -n "$id"
wait_gone "$dev"
# The tags' buffers became the ring's registered buffers once faulted in, and file I/O used them.
grep -h "buffers registered" "$UNBD_RUN_DIR/$id.log" || fail "no queue counters in the daemon log"
awk '/buffers registered/ { if ($0 ~ / [1-9][0-9]* of [0-9]+ buffers registered, [1-9][0-9]* target I\/Os/) ok++ }
	END { exit ok != 2 }' "$UNBD_RUN_DIR/$id.log" || fail "a queue did no file I/O on registered buffers"
# The file system lives on in the file: check it and read a file straight out of it.
e2fsck -fn /tmp/backing.img >/dev/null || fail "the backing file does not hold a clean file system"
[ "$(debugfs -R "cat /f3" /tmp/backing.img 2>/dev/null | sha256sum | cut -d' ' -f1)" = \
	"$(grep ' f3$' /tmp/sums | cut -d' ' -f1)" ] || fail "f3 in the backing file differs"
check_no_daemon_errors
log "loop: ok"
