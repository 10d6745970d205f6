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
fence_start_device_and_write_a
sleep 1 # the write is now sleeping inside the backend's fence
fence_recover_and_write_b
sleep 4 # longer than the backend's apply delay: a late write of the dead daemon would have landed
fence_block7_holds_b || fail "block 7 does not hold the newest write (a fenced write landed late?)"
log "epoch $epoch1 -> $epoch2, newest data intact"
"$UNBD" del -n "$id"
log "recover-fence: ok"
