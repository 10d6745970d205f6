#!/bin/bash
# The volume lifecycle through unbd-csi: create -> stage -> publish -> write files -> unpublish ->
# unstage -> stage again at another path -> publish -> the files are intact (the file system was
# not reformatted). Once with ext4, once with xfs (ARGS: fs types).
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/frontend/lib.sh"
. "$UNBD_REPO/tests/vm/csi/lib.sh"

start_csi_node

for fs in "$@"; do
	modprobe "$fs" 2>/dev/null || true
	vid=$(create_volume "pvc-life-$fs" $((320 << 20)))
	log "$fs: stage, publish, write"
	expect OK stage --volume-id "$vid" --staging "/tmp/k/st1-$fs" --fs "$fs"
	findmnt -n -o FSTYPE "/tmp/k/st1-$fs" | grep -qx "$fs" || fail "staging path is not $fs"
	expect OK publish --volume-id "$vid" --staging "/tmp/k/st1-$fs" --target "/tmp/k/pod1-$fs" --fs "$fs"
	mkdir "/tmp/k/pod1-$fs/dir"
	for i in 1 2 3; do
		dd if=/dev/urandom of="/tmp/k/pod1-$fs/dir/f$i" bs=1M count=$((i * 4)) status=none
	done
	(cd "/tmp/k/pod1-$fs" && sha256sum dir/f*) >"/tmp/sums-$fs"
	log "$fs: unpublish, unstage"
	expect OK unpublish --volume-id "$vid" --target "/tmp/k/pod1-$fs"
	expect OK unstage --volume-id "$vid" --staging "/tmp/k/st1-$fs"
	[ "$(daemons_for "pvc-life-$fs")" = 0 ] || fail "daemon left after unstage"
	log "$fs: stage again elsewhere"
	expect OK stage --volume-id "$vid" --staging "/tmp/k/st2-$fs" --fs "$fs"
	expect OK publish --volume-id "$vid" --staging "/tmp/k/st2-$fs" --target "/tmp/k/pod2-$fs" --fs "$fs" --readonly
	(cd "/tmp/k/pod2-$fs" && sha256sum -c --quiet "/tmp/sums-$fs") || fail "$fs: files differ after restaging"
	expect OK unpublish --volume-id "$vid" --target "/tmp/k/pod2-$fs"
	expect OK unstage --volume-id "$vid" --staging "/tmp/k/st2-$fs"
	expect OK delete --volume-id "$vid"
	grep -c "is blank, making $fs" "$CSI_DIR/csi.log" | grep -qx 1 || fail "$fs: not formatted exactly once"
done
kill "$CSI_PID"
check_no_daemon_errors
log "csi lifecycle: ok"
