#!/bin/bash
# CSI conformance in the spirit of csi-sanity's node tests, against unbd-csi over its socket with
# the kmod driver and a real unbd-server: every missing-field case, NOT_FOUND, each call repeated
# 10 times (idempotent: one daemon, one mount), the target path removed after unpublish, the
# second writer refused, incompatible republish, raw block volumes, stats.
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/frontend/lib.sh"
. "$UNBD_REPO/tests/vm/csi/lib.sh"

start_csi_node

vid=$(create_volume pvc-conf $((256 << 20)))
[ "$vid" = "pvc-conf@$UNBD_SERVER" ] || fail "volume id $vid"
st=/tmp/k/staging/pvc-conf
tg=/tmp/k/pods/a/volume
tg2=/tmp/k/pods/b/volume

log "missing fields"
expect INVALID_ARGUMENT stage --staging "$st"
expect INVALID_ARGUMENT stage --volume-id "$vid"
expect INVALID_ARGUMENT stage --volume-id "$vid" --staging "$st" --no-cap
expect INVALID_ARGUMENT stage --volume-id "$vid" --staging "$st" --no-access-type
expect INVALID_ARGUMENT stage --volume-id "$vid" --staging "$st" --mode UNKNOWN
expect INVALID_ARGUMENT unstage --staging "$st"
expect INVALID_ARGUMENT unstage --volume-id "$vid"
expect INVALID_ARGUMENT publish --staging "$st" --target "$tg"
expect INVALID_ARGUMENT publish --volume-id "$vid" --target "$tg"
expect INVALID_ARGUMENT publish --volume-id "$vid" --staging "$st"
expect INVALID_ARGUMENT publish --volume-id "$vid" --staging "$st" --target "$tg" --no-cap
expect INVALID_ARGUMENT unpublish --target "$tg"
expect INVALID_ARGUMENT unpublish --volume-id "$vid"
expect INVALID_ARGUMENT stats --volume-path "$st"
expect INVALID_ARGUMENT stats --volume-id "$vid"
expect INVALID_ARGUMENT create --size 1000
expect INVALID_ARGUMENT create --name x --no-cap
expect INVALID_ARGUMENT delete
[ ! -e "$st" ] || fail "a refused call created $st"

log "NOT_FOUND"
expect NOT_FOUND stage --volume-id "nosuch@$UNBD_SERVER" --staging "$st"
expect NOT_FOUND stage --volume-id "no-at-sign" --staging "$st"
expect NOT_FOUND publish --volume-id "$vid" --staging "$st" --target "$tg"
expect NOT_FOUND stats --volume-id "$vid" --volume-path "$st"
[ "$(daemons_for nosuch)" = 0 ] || fail "a daemon stayed for a missing volume"

log "stage x10"
for i in $(seq 10); do expect OK stage --volume-id "$vid" --staging "$st"; done
[ "$(daemons_for pvc-conf)" = 1 ] || fail "$(daemons_for pvc-conf) daemons after 10 stages"
[ "$(mounts_at "$st")" = 1 ] || fail "$(mounts_at "$st") mounts at $st after 10 stages"
findmnt -n -o FSTYPE "$st" | grep -qx ext4 || fail "staging path is not ext4"
expect ALREADY_EXISTS stage --volume-id "$vid" --staging "$st.other"
expect ALREADY_EXISTS stage --volume-id "$vid" --staging "$st" --fs xfs

log "publish x10"
for i in $(seq 10); do expect OK publish --volume-id "$vid" --staging "$st" --target "$tg"; done
[ "$(mounts_at "$tg")" = 1 ] || fail "$(mounts_at "$tg") mounts at $tg after 10 publishes"
echo hello >"$tg/hello"
[ "$(cat "$st/hello")" = hello ] || fail "publish does not show the staged file system"
expect ALREADY_EXISTS publish --volume-id "$vid" --staging "$st" --target "$tg" --readonly
expect FAILED_PRECONDITION publish --volume-id "$vid" --staging "$st.other" --target "$tg2"

log "second writer"
expect FAILED_PRECONDITION publish --volume-id "$vid" --staging "$st" --target "$tg2"
[ ! -e "$tg2" ] || [ "$(mounts_at "$tg2")" = 0 ] || fail "refused second writer got mounted"
expect OK publish --volume-id "$vid" --staging "$st" --target "$tg2" --readonly
[ "$(cat "$tg2/hello")" = hello ] || fail "read-only publish does not show the file"
if (echo no >"$tg2/other") 2>/dev/null; then fail "read-only publish is writable"; fi
expect FAILED_PRECONDITION unstage --volume-id "$vid" --staging "$st"

log "stats"
out=$(csi stats --volume-id "$vid" --volume-path "$tg") || fail "stats failed"
echo "$out" | jq -e '.usage[] | select(.unit == "BYTES") | (.total | tonumber) > 200000000' >/dev/null ||
	fail "stats: no byte total: $out"
echo "$out" | jq -e '.usage[] | select(.unit == "INODES") | (.used | tonumber) > 0' >/dev/null ||
	fail "stats: no inode usage: $out"
expect NOT_FOUND stats --volume-id "$vid" --volume-path /tmp/k/nowhere

log "unpublish x10"
for t in "$tg" "$tg2"; do
	for i in $(seq 10); do expect OK unpublish --volume-id "$vid" --target "$t"; done
	[ ! -e "$t" ] || fail "target path $t still exists after unpublish"
done

log "unstage x10"
for i in $(seq 10); do expect OK unstage --volume-id "$vid" --staging "$st"; done
[ "$(mounts_at "$st")" = 0 ] || fail "staging path still mounted"
[ "$(daemons_for pvc-conf)" = 0 ] || fail "daemon left after unstage"
ls /dev/ublkb* 2>/dev/null && fail "a device is left after unstage"

log "raw block"
bid=$(create_volume pvc-blk $((64 << 20)))
for i in $(seq 3); do expect OK stage --volume-id "$bid" --staging "$st-b" --block; done
for i in $(seq 3); do expect OK publish --volume-id "$bid" --staging "$st-b" --target "$tg-b" --block; done
[ -b "$tg-b" ] && [ "$(mounts_at "$tg-b")" = 1 ] || fail "block target is not one bind-mounted device node"
dd if=/dev/urandom of=/tmp/blk bs=1M count=4 status=none
dd if=/tmp/blk of="$tg-b" bs=1M oflag=direct status=none || fail "write through the block target failed"
cmp /tmp/blk <(dd if="$tg-b" bs=1M count=4 iflag=direct status=none) || fail "block target read back differs"
out=$(csi stats --volume-id "$bid" --volume-path "$tg-b") || fail "block stats failed"
echo "$out" | jq -e '.usage[0].total | tonumber == 67108864' >/dev/null || fail "block stats: $out"
expect OK unpublish --volume-id "$bid" --target "$tg-b"
[ ! -e "$tg-b" ] || fail "block target file left"
expect OK unstage --volume-id "$bid" --staging "$st-b"

log "delete x10"
for i in $(seq 10); do expect OK delete --volume-id "$vid"; done
expect OK delete --volume-id "$bid"
"$UNBD" volume stat pvc-conf --server "$UNBD_SERVER" >/dev/null 2>&1 && fail "volume survived DeleteVolume"
kill "$CSI_PID"
check_no_daemon_errors
log "csi conformance: ok"
