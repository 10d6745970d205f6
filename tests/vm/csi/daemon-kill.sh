#!/bin/bash
# kill -9 of a staged volume's frontend daemon while a file is being written through the mount:
# the agent's volume healer notices and runs `unbd recover` within 2 s, the writer sees no error
# and the file's checksum is right (also after dropping the page cache and restaging).
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/frontend/lib.sh"
. "$UNBD_REPO/tests/vm/csi/lib.sh"

load_ublk_driver
modprobe ext4 2>/dev/null || true
VOLUME_SIZE=64M start_backend
start_csi

vid=$(create_volume pvc-heal $((256 << 20)))
st=/tmp/k/staging/pvc-heal
tg=/tmp/k/pod/vol
expect OK stage --volume-id "$vid" --staging "$st"
expect OK publish --volume-id "$vid" --staging "$st" --target "$tg"
id=$(jq -r .dev_id "$CSI_DIR"/state/staged/*.json)

dd if=/dev/urandom of=/tmp/blob bs=1M count=48 status=none
for round in 1 2 3; do
	rm -f /tmp/writer
	# Small synchronous writes keep I/O in flight through the whole kill and recovery.
	(dd if=/tmp/blob of="$tg/file$round" bs=64k oflag=sync status=none && echo ok >/tmp/writer) &
	writer=$!
	sleep 1
	pid=$(daemon_pid "$id")
	t0=$(date +%s%N)
	kill -9 "$pid"
	log "round $round: killed daemon $pid of /dev/ublkb$id"
	wait_until 20 sh -c "[ \"\$('$UNBD' list -n $id --json | jq -r '.[0].daemon_alive')\" = true ]" ||
		fail "the volume was not healed: $(tail -5 "$CSI_DIR/csi.log")"
	ms=$((($(date +%s%N) - t0) / 1000000))
	new=$(daemon_pid "$id")
	[ "$new" != "$pid" ] || fail "same daemon pid"
	log "round $round: served again by pid $new after $ms ms"
	echo "$round $ms" >>"$UNBD_VM_OUT/heal-ms.txt"
	[ "$ms" -le 2000 ] || fail "healing took $ms ms (> 2 s)"
	wait "$writer" || fail "round $round: the writer saw an error"
	[ -f /tmp/writer ] || fail "round $round: writer did not finish"
	cmp /tmp/blob "$tg/file$round" || fail "round $round: file differs"
done
grep -c "healed volume $vid" "$CSI_DIR/csi.log" | grep -qx 3 || fail "the agent did not log 3 heals"
[ "$(daemons_for pvc-heal)" = 1 ] || fail "$(daemons_for pvc-heal) daemons"

log "checksums after dropping caches and restaging"
(cd "$tg" && sha256sum file*) >/tmp/sums
expect OK unpublish --volume-id "$vid" --target "$tg"
expect OK unstage --volume-id "$vid" --staging "$st"
echo 3 >/proc/sys/vm/drop_caches
expect OK stage --volume-id "$vid" --staging "$st"
(cd "$st" && sha256sum -c --quiet /tmp/sums) || fail "checksums differ after restaging"
expect OK unstage --volume-id "$vid" --staging "$st"
kill "$CSI_PID"
check_no_daemon_errors
log "csi daemon kill: ok"
