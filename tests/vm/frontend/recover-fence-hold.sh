#!/bin/bash
# Fencing of a dead daemon's late write: the backend holds every write of the first epoch before
# its fence check (--test-hold-writes-file). An O_DIRECT write of pattern A to block 7 is held there
# when the daemon is killed; `unbd recover` opens the volume with a higher epoch (the re-issued A
# is not held and lands), the application writes pattern B to block 7, then the hold is released
# and the dead daemon's A reaches the fence check: it must be refused, so block 7 reads B.
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/frontend/lib.sh"

"$UNBD_SERVER_BIN" --help | grep -q -- --test-hold-writes-file ||
	skip "this unbd-server has no --test-hold-writes-file"
load_ublk_driver
hold=/tmp/hold-writes
start_backend --test-hold-writes-file "$hold"
fence_start_device_and_write_a "$hold"
sleep 2 # the write is now held at the backend, before its fence check
kill -0 "$writer" 2>/dev/null || fail "the write of A was not held (the hook did not work)"
fence_recover_and_write_b
rm "$hold" # the dead daemon's write of A goes on to the fence check now
sleep 2    # the backend polls the hold file every 10 ms
fence_block7_holds_b ||
	fail "block 7 does not hold B: the dead daemon's write (epoch $epoch1) landed after epoch $epoch2's"
log "epoch $epoch1 -> $epoch2: the held write of the dead daemon was fenced, block 7 holds B"
"$UNBD" del -n "$id"
log "recover-fence-hold: ok"
