#!/bin/bash
# --recovery without --reissue: requests the killed daemon held fail with an I/O error; requests
# issued after the kill wait and succeed once `unbd recover` has brought a new daemon.
# The backend delays every write 3 s (unbd-server --test-apply-delay-us) so the daemon surely holds
# the first write when it is killed.
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/frontend/lib.sh"

load_ublk_driver
start_backend --test-apply-delay-us 3000000
dev=$(unbd_add -t remote --server "$UNBD_SERVER" --volume vol0 --recovery)
wait_for_blockdev "$dev"
id=${dev#/dev/ublkb}

dd if=/dev/urandom of=/tmp/a bs=4k count=1 status=none
(dd if=/tmp/a of="$dev" bs=4k seek=10 oflag=direct status=none; echo $? >/tmp/held-status) &
held=$!
sleep 1
kill -9 "$(daemon_pid "$id")"
# Issued after the kill: must wait for the new daemon and succeed.
(dd if=/tmp/a of="$dev" bs=4k seek=20 oflag=direct status=none; echo $? >/tmp/later-status) &
later=$!
sleep 0.5
"$UNBD" recover -n "$id" || fail "recover failed"
wait "$held" || true
wait "$later" || true
log "held write exit status $(cat /tmp/held-status), later write exit status $(cat /tmp/later-status)"
[ "$(cat /tmp/held-status)" != 0 ] || fail "the write the dead daemon held succeeded without --reissue"
[ "$(cat /tmp/later-status)" = 0 ] || fail "a write issued after the kill failed"
dd if="$dev" of=/tmp/back bs=4k skip=20 count=1 iflag=direct status=none
cmp /tmp/a /tmp/back || fail "the later write's data is wrong"
dmesg | grep -q "I/O error, dev ublkb$id" || fail "the failed held write left no trace in the kernel log"
"$UNBD" del -n "$id"
log "recover-noreissue: ok"
