#!/bin/bash
# Fencing across a daemon crash: the backend holds every write 3 s inside its fence
# (--test-apply-delay-us); a write is in flight there when the daemon is killed. `unbd recover`
# opens the volume with a higher epoch, the write is re-issued, then the application writes new
# data to the same block. After waiting out any delayed apply, the block must hold the new data
# and the epoch must have gone up.
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/frontend/lib.sh"

load_ublk_driver
start_backend --test-apply-delay-us 3000000
dev=$(unbd_add -t remote --server "$UNBD_SERVER" --volume vol0 --recovery --reissue)
wait_for_blockdev "$dev"
id=${dev#/dev/ublkb}
epoch1=$("$UNBD" list -n "$id" --json | jq -r '.[0].epoch')

printf 'A%.0s' $(seq 4096) >/tmp/a
printf 'B%.0s' $(seq 4096) >/tmp/b
(dd if=/tmp/a of="$dev" bs=4k seek=7 oflag=direct status=none) &
writer=$!
sleep 1 # the write is now sleeping inside the backend's fence
kill -9 "$(daemon_pid "$id")"
"$UNBD" recover -n "$id" || fail "recover failed"
epoch2=$("$UNBD" list -n "$id" --json | jq -r '.[0].epoch')
[ "$epoch2" -gt "$epoch1" ] || fail "epoch did not go up: $epoch1 -> $epoch2"
wait "$writer" || fail "the re-issued write failed"
dd if=/tmp/b of="$dev" bs=4k seek=7 oflag=direct status=none || fail "the new write failed"
sleep 4 # longer than the backend's apply delay: a late write of the dead daemon would have landed
dd if="$dev" of=/tmp/back bs=4k skip=7 count=1 iflag=direct status=none
cmp /tmp/b /tmp/back || fail "block 7 does not hold the newest write (a fenced write landed late?)"
log "epoch $epoch1 -> $epoch2, newest data intact"
"$UNBD" del -n "$id"
log "recover-fence: ok"
