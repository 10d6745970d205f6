#!/bin/bash
# The hostile-input matrix (ublk-tool badinput): bad ids, wrong states, non-owner tasks, bad
# mmaps, a second START_USER_RECOVERY, an interrupted END_USER_RECOVERY, STOP/DEL mid-recovery;
# then a server handing the driver unmapped, unaligned buffers. Nothing may oops, and the module
# must unload afterwards. Our module must return the exact errnos (--strict).
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/kmod/lib.sh"
load_ublk_driver

strict=()
[ "$UNBD_UBLK_DRIVER" = kmod ] && strict=(--strict)
"$tool" badinput "${strict[@]}" | tee /tmp/matrix.txt || true
grep -q '^PASSED' /tmp/matrix.txt || fail "hostile-input matrix failed"

# A server whose buffers are unmapped and unaligned: every data transfer fails cleanly.
# (Linux 6.1 re-queues a read that copied nothing, forever: ours only.)
if [ "$UNBD_UBLK_DRIVER" = kmod ]; then
start_server 0 /tmp/badbuf.log --queues 1 --depth 8 --size-mb 16 --bad-buf
if dd if=/dev/ublkb0 of=/dev/null bs=4k count=1 iflag=direct status=none; then
	fail "a read through an unmapped server buffer succeeded"
fi
if dd if=/dev/zero of=/dev/ublkb0 bs=4k count=1 oflag=direct status=none; then
	fail "a write through an unmapped server buffer succeeded"
fi
log "unmapped server buffers: reads and writes fail with an error, no oops"
assert "$tool" del --id 0
wait_pid_gone "$server_pid" 10 || fail "bad-buffer server survived DEL_DEV"
fi

# A server that takes requests, never commits them, and exits on its own.
# (The first MiB stays served: add_disk()'s partition scan reads there.)
start_server 1 /tmp/hold.log --queues 1 --depth 8 --size-mb 16 --hold-from 2048
dd if=/dev/ublkb1 of=/dev/null bs=4k count=1 skip=256 iflag=direct status=none &
dd_pid=$!
wait_until 10 grep -q HOLD /tmp/hold.log || fail "the holding server never received the request"
kill -TERM "$server_pid"
wait_pid_gone "$dd_pid" 20 || fail "I/O held by an exited server never completed"
if wait "$dd_pid"; then fail "I/O held by an exited server succeeded"; fi
wait_until 20 dev_state_is 1 DEAD || fail "device not stopped after its server exited"
assert "$tool" del --id 1
log "server that never commits and exits: held I/O failed, device stopped, DEL_DEV ok"

unload_ublk_driver
log "badinput ok; module unloaded"
