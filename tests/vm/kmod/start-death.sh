#!/bin/bash
# A server that dies while the kernel reads the new disk's partition table.
#
# That read is the first request of every device and it goes to the server like any other. If
# START_DEV waited for it (Linux 6.1 does: add_disk() scans inline), a server dying before serving
# it would hang for good: a core dump waits for the thread stuck in START_DEV, and a recovery
# device holds the read back while START_DEV keeps the device's lock that recovery needs.
# The server here holds every request (--hold-from 0), so START_DEV must return with the read still
# at the server; then the server dies (SIGSEGV dumps core, SIGKILL does not) and the device must
# end up QUIESCED and recoverable, or DEAD and deletable. Also checks that partitions still appear.
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/kmod/lib.sh"
load_ublk_driver

# An MBR with one Linux partition: sectors 2048-6143.
write_mbr() { # FILE
	local le32_2048='\x00\x08\x00\x00' le32_4096='\x00\x10\x00\x00'
	printf "\x00\x00\x00\x00\x83\x00\x00\x00${le32_2048}${le32_4096}" |
		dd of="$1" bs=1 seek=446 conv=notrunc status=none
	printf '\x55\xaa' | dd of="$1" bs=1 seek=510 conv=notrunc status=none
}

for sig in SEGV KILL; do
	for mode in none reissue; do
		flags=()
		[ $mode = reissue ] && flags=(--reissue)
		what="$sig, $mode"
		rm -f /tmp/sd.img
		truncate -s 16M /tmp/sd.img
		write_mbr /tmp/sd.img
		"$tool" serve --id 0 --queues 1 --depth 8 --size-mb 16 --backing /tmp/sd.img \
			--hold-from 0 "${flags[@]}" >/tmp/sd.log 2>&1 &
		server_pid=$!
		wait_until 10 grep -q HOLD /tmp/sd.log ||
			fail "$what: the partition-table read never reached the server: $(cat /tmp/sd.log)"
		wait_until 10 grep -q READY /tmp/sd.log ||
			fail "$what: START_DEV did not return while the partition-table read was at the server"
		[ ! -e /dev/ublkb0p1 ] || fail "$what: a partition appeared before its table was read"

		kill -"$sig" "$server_pid"
		wait_pid_gone "$server_pid" 10 || fail "$what: the server did not exit"
		wait "$server_pid" 2>/dev/null || true
		want=DEAD
		[ $mode = reissue ] && want=QUIESCED
		wait_until 10 dev_state_is 0 $want ||
			fail "$what: device is $(dev_state 0), want $want"
		log "$what: server gone during the partition scan -> $want"

		if [ $mode = reissue ]; then
			# The re-issued read is served by the new server and the scan completes.
			start_recovery 0 /tmp/sd-rec.log --backing /tmp/sd.img
			wait_for_blockdev /dev/ublkb0p1 10
			[ "$(cat /sys/class/block/ublkb0p1/size)" = 4096 ] ||
				fail "$what: ublkb0p1 has $(cat /sys/class/block/ublkb0p1/size) sectors, want 4096"
			dd if=/dev/urandom of=/tmp/sd.pattern bs=4k count=4 status=none
			dd if=/tmp/sd.pattern of=/dev/ublkb0p1 bs=4k count=4 oflag=direct status=none ||
				fail "$what: write to ublkb0p1 after recovery failed"
			cmp <(dd if=/tmp/sd.img bs=512 skip=2048 count=32 status=none) /tmp/sd.pattern ||
				fail "$what: the write to ublkb0p1 did not land at sector 2048"
			log "$what: recovered, partition scanned, I/O ok"
		fi
		assert "$tool" del --id 0
		[ $mode = reissue ] && { wait_pid_gone "$server_pid" 10 || fail "$what: server survived DEL_DEV"; }
		wait_gone /dev/ublkb0
	done
done

# A server that answers: partitions appear without anyone asking for a rescan.
rm -f /tmp/sd.img
truncate -s 16M /tmp/sd.img
write_mbr /tmp/sd.img
start_server 0 /tmp/sd.log --queues 1 --depth 8 --size-mb 16 --backing /tmp/sd.img
wait_for_blockdev /dev/ublkb0p1 10
log "live server: ublkb0p1 appeared"
assert "$tool" del --id 0
wait_pid_gone "$server_pid" 10 || fail "server survived DEL_DEV"
wait_gone /dev/ublkb0

unload_ublk_driver
log "start death ok"
