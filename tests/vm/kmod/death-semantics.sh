#!/bin/bash
# What each request sees when the server dies, per device mode:
#   before the kill: success;
#   a request the dead server held: error (none, recovery) or re-issued later (reissue);
#   new I/O while no server runs: error (none) or waits (recovery, reissue);
#   after recovery: the waiting I/O completes successfully and new I/O succeeds.
# Also times kill -> QUIESCED/DEAD (ours: < 100 ms).
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/kmod/lib.sh"
load_ublk_driver

hold=65536 # sector 65536 = 32 MiB: the server takes such requests and never commits them
held_block=$((hold / 8))

for mode in none recovery reissue; do
	flags=()
	[ $mode = recovery ] && flags=(--recovery)
	[ $mode = reissue ] && flags=(--reissue)
	rm -f /tmp/sem.img
	start_server 0 /tmp/sem.log --queues 2 --depth 32 --size-mb 64 --backing /tmp/sem.img \
		--hold-from $hold "${flags[@]}"
	dd if=/dev/urandom of=/tmp/pattern bs=4k count=16 status=none
	dd if=/tmp/pattern of=/dev/ublkb0 bs=4k count=16 oflag=direct status=none ||
		fail "$mode: write before the kill failed"

	dd if=/dev/ublkb0 of=/tmp/held.out bs=4k count=1 skip=$held_block iflag=direct status=none &
	held_pid=$!
	wait_until 10 grep -q HOLD /tmp/sem.log || fail "$mode: the server never received the held read"

	state=QUIESCED
	[ $mode = none ] && state=DEAD
	kill_and_wait 0 "$server_pid" $state
	log "$mode: kill -9 -> $state in $death_ms ms"
	check_death_ms "$mode: kill -> $state"

	# The request the dead server held.
	if [ $mode = reissue ]; then
		sleep 0.5
		kill -0 "$held_pid" 2>/dev/null || fail "reissue: the held request ended instead of waiting"
		log "reissue: held request: waiting"
	else
		wait_pid_gone "$held_pid" 10 || fail "$mode: the held request did not end"
		if wait "$held_pid"; then fail "$mode: the held request succeeded"; fi
		log "$mode: held request: error"
	fi

	# New I/O while no server runs.
	dd if=/dev/ublkb0 of=/tmp/new.out bs=4k count=16 iflag=direct status=none &
	new_pid=$!
	sleep 1
	if [ $mode = none ]; then
		wait_pid_gone "$new_pid" 10 || fail "none: new I/O hangs on a dead device"
		if wait "$new_pid"; then fail "none: new I/O succeeded without a server"; fi
		log "none: new I/O: error"
		assert "$tool" del --id 0
		wait_gone /dev/ublkb0
		continue
	fi
	kill -0 "$new_pid" 2>/dev/null || fail "$mode: new I/O ended instead of waiting for recovery"
	log "$mode: new I/O: waiting"

	start_recovery 0 /tmp/rec.log --backing /tmp/sem.img
	log "$mode: recovered in $recover_ms ms"
	wait_pid_gone "$new_pid" 10 || fail "$mode: waiting I/O did not complete after recovery"
	wait "$new_pid" || fail "$mode: waiting I/O failed after recovery"
	cmp /tmp/new.out /tmp/pattern || fail "$mode: waiting read returned wrong data"
	if [ $mode = reissue ]; then
		wait_pid_gone "$held_pid" 10 || fail "reissue: re-issued request did not complete"
		wait "$held_pid" || fail "reissue: re-issued request failed"
		log "reissue: held request: re-issued and completed"
	fi
	dd if=/dev/urandom of=/tmp/pattern2 bs=4k count=16 status=none
	dd if=/tmp/pattern2 of=/dev/ublkb0 bs=4k count=16 seek=16 oflag=direct status=none ||
		fail "$mode: write after recovery failed"
	dd if=/dev/ublkb0 of=/tmp/check bs=4k count=16 skip=16 iflag=direct status=none
	cmp /tmp/check /tmp/pattern2 || fail "$mode: read after recovery returned wrong data"
	log "$mode: after recovery: waiting I/O completed, new I/O ok"
	assert "$tool" del --id 0
	wait_pid_gone "$server_pid" 10 || fail "$mode: recovered server survived DEL_DEV"
	wait_gone /dev/ublkb0
done

# Idle death: no I/O in flight at all when the server dies.
start_server 0 /tmp/idle.log --queues 2 --depth 32 --size-mb 16 --recovery
sleep 1
kill_and_wait 0 "$server_pid" QUIESCED
log "idle: kill -9 -> QUIESCED in $death_ms ms"
check_death_ms "idle: kill -> QUIESCED"
assert "$tool" stop --id 0
assert "$tool" del --id 0

unload_ublk_driver
log "death semantics ok"
