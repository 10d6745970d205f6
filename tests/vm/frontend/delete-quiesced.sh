#!/bin/bash
# Deleting a --recovery device whose daemon is dead: once while QUIESCED, once while recovery is
# half done (START_USER_RECOVERY sent, END_USER_RECOVERY never). A reader blocked on the device
# must get an error rather than hang, the device must disappear and leave no state behind.
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/frontend/lib.sh"

load_ublk_driver
truncate -s 64M /tmp/backing.img

for phase in quiesced half-recovered; do
	dev=$(unbd_add -t loop -f /tmp/backing.img --recovery)
	wait_for_blockdev "$dev"
	id=${dev#/dev/ublkb}
	kill -9 "$(daemon_pid "$id")"
	wait_until 30 is_state "$id" QUIESCED || fail "device $id not QUIESCED after its daemon died: $(dev_state "$id")"
	if [ $phase = half-recovered ]; then
		UNBD_TEST_STALL_RECOVERY=1 "$UNBD" recover -n "$id" || fail "stalled recover did not start"
	fi
	# A reader that arrives now waits for a daemon that never comes.
	(dd if="$dev" of=/dev/null bs=4k count=1 iflag=direct status=none; echo $? >/tmp/reader-status) &
	reader=$!
	sleep 1
	log "$phase: deleting device $id"
	timeout 60 "$UNBD" del -n "$id" || fail "del of a $phase device failed or hung"
	wait_gone "$dev" 10
	wait_gone "/dev/ublkc$id" 10
	wait "$reader" || true
	[ "$(cat /tmp/reader-status)" != 0 ] || fail "the blocked reader succeeded on a deleted device"
	[ ! -e "$UNBD_RUN_DIR/$id.json" ] || fail "state file of $id left behind"
	"$UNBD" list -n "$id" 2>/dev/null && fail "deleted device $id still listed"
	log "$phase: deleted, blocked reader failed cleanly"
done
pgrep -x unbd-daemon && fail "daemons left behind"
log "delete-quiesced: ok"
