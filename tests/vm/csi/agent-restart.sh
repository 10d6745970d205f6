#!/bin/bash
# kill -9 of unbd-csi between NodeStageVolume and NodePublishVolume, then a restart: the volume's
# daemon and mount are left alone (same pid, one mount), Publish works, nothing is duplicated, and
# I/O through the volume carries on across the agent's death. Then kill -9 in the middle of a
# NodeStageVolume (its device added, not yet recorded): the restarted agent adopts that device.
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/frontend/lib.sh"
. "$UNBD_REPO/tests/vm/csi/lib.sh"

start_csi_node

vid=$(create_volume pvc-restart $((256 << 20)))
st=/tmp/k/staging/pvc-restart
expect OK stage --volume-id "$vid" --staging "$st"
id=$(jq -r .dev_id "$CSI_DIR"/state/staged/*.json)
pid=$(daemon_pid "$id")
dd if=/dev/urandom of="$st/before" bs=1M count=8 conv=fsync status=none

# A writer running through the agent's death and restart.
dd if=/dev/urandom of=/tmp/blob bs=1M count=16 status=none
(dd if=/tmp/blob of="$st/during" bs=64k conv=fsync status=none && echo ok >/tmp/writer) &
writer=$!

kill -9 "$CSI_PID"
wait "$CSI_PID" 2>/dev/null || true
log "unbd-csi killed"
[ "$(daemon_pid "$id")" = "$pid" ] || fail "the agent's death touched the volume's daemon"
start_csi
wait_until 10 grep -q "reconcile volume $vid" "$CSI_DIR/csi.log" || fail "no reconcile after restart"
grep "reconcile volume $vid" "$CSI_DIR/csi.log" | tail -1 | grep -q "left alone" ||
	fail "restart touched a healthy volume: $(grep "reconcile volume" "$CSI_DIR/csi.log")"

for i in $(seq 3); do
	wait_until 20 sh -c "'$CSI_CLIENT' -e unix://$CSI_SOCK publish --volume-id '$vid' --staging '$st' --target /tmp/k/pod/vol >/dev/null 2>&1" ||
		fail "publish after the restart failed: $(csi publish --volume-id "$vid" --staging "$st" --target /tmp/k/pod/vol 2>&1)"
done
[ "$(daemons_for pvc-restart)" = 1 ] || fail "$(daemons_for pvc-restart) daemons for the volume"
[ "$(daemon_pid "$id")" = "$pid" ] || fail "the daemon changed"
[ "$(mounts_at "$st")" = 1 ] || fail "$(mounts_at "$st") mounts at the staging path"
[ "$(mounts_at /tmp/k/pod/vol)" = 1 ] || fail "$(mounts_at /tmp/k/pod/vol) mounts at the target"
[ "$(ls /dev/ublkb* | wc -l)" = 1 ] || fail "devices: $(ls /dev/ublkb*)"
wait "$writer" && [ -f /tmp/writer ] || fail "the writer failed across the agent restart"
cmp /tmp/blob /tmp/k/pod/vol/during || fail "data written across the restart differs"
expect OK unpublish --volume-id "$vid" --target /tmp/k/pod/vol
expect OK unstage --volume-id "$vid" --staging "$st"
[ "$(daemons_for pvc-restart)" = 0 ] || fail "daemon left after unstage"

log "kill -9 during NodeStageVolume"
vid2=$(create_volume pvc-midstage $((256 << 20)))
st2=/tmp/k/staging/pvc-midstage
(csi stage --volume-id "$vid2" --staging "$st2" >/dev/null 2>&1 || true) &
stager=$!
wait_until 60 sh -c "[ \"\$('$UNBD' list --json | jq '[.[] | select(.config.remote.volume == \"pvc-midstage\")] | length')\" = 1 ]" ||
	fail "no device appeared for the staged volume"
kill -9 "$CSI_PID"
wait "$CSI_PID" 2>/dev/null || true
wait "$stager" || true
if [ "$(mounts_at "$st2")" = 0 ]; then log "killed before the mount"; else log "killed after the mount"; fi
start_csi
for i in $(seq 3); do
	wait_until 60 sh -c "'$CSI_CLIENT' -e unix://$CSI_SOCK stage --volume-id '$vid2' --staging '$st2' >/dev/null 2>&1" ||
		fail "stage after the restart failed: $(csi stage --volume-id "$vid2" --staging "$st2" 2>&1)"
done
[ "$(daemons_for pvc-midstage)" = 1 ] || fail "$(daemons_for pvc-midstage) daemons after a stage interrupted by kill -9"
[ "$(mounts_at "$st2")" = 1 ] || fail "$(mounts_at "$st2") mounts at the staging path"
[ "$(grep -c "pvc-midstage.*: added /dev/ublkb" "$CSI_DIR/csi.log")" = 1 ] ||
	fail "the volume's device was added more than once: $(grep "pvc-midstage.*added" "$CSI_DIR/csi.log")"
echo data >"$st2/file" && sync || fail "the adopted volume is not writable"
expect OK unstage --volume-id "$vid2" --staging "$st2"
[ "$(daemons_for pvc-midstage)" = 0 ] || fail "daemon left after unstage"
kill "$CSI_PID"
check_no_daemon_errors
log "csi agent restart: ok"
