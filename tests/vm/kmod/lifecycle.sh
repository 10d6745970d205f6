#!/bin/bash
# Lifecycle: add, start, fio --verify=crc32c, stop, delete (plain and NEED_GET_DATA, with flush
# and discard); many devices at once; delete under load; the module unloads at the end.
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/kmod/lib.sh"
load_ublk_driver

verify_fio() { # DEV NAME extra-fio-args...
	local dev=$1 name=$2
	shift 2
	fio --name="$name" --filename="$dev" --ioengine=libaio --direct=1 --iodepth=16 \
		--size=32M --verify=crc32c --verify_fatal=1 --eta=never --output="/tmp/$name.fio" "$@" ||
		{ cat "/tmp/$name.fio"; fail "fio $name on $dev failed"; }
	grep -q "err= 0" "/tmp/$name.fio" || { cat "/tmp/$name.fio"; fail "fio $name reported errors"; }
	log "fio $name: $(grep -m1 -E 'write: IOPS|read: IOPS' "/tmp/$name.fio" | sed 's/^ *//')"
}

for mode in plain need-get-data; do
	extra=()
	[ $mode = need-get-data ] && extra=(--need-get-data)
	start_server 0 /tmp/srv0.log --queues 2 --depth 64 --size-mb 64 --backing /tmp/d0.img "${extra[@]}"
	"$tool" info --id 0
	verify_fio /dev/ublkb0 "$mode-4k" --rw=randwrite --bs=4k --fsync=64
	verify_fio /dev/ublkb0 "$mode-mixed" --rw=randwrite --bsrange=4k-256k --sync=1
	assert blkdiscard -o 0 -l 1048576 /dev/ublkb0
	assert blkdiscard -z -o 1048576 -l 1048576 /dev/ublkb0
	[ "$(dd if=/dev/ublkb0 bs=1M count=2 iflag=direct status=none | tr -d '\0' | wc -c)" = 0 ] ||
		fail "discarded / zeroed range does not read back as zeroes"
	assert "$tool" stop --id 0
	wait_pid_gone "$server_pid" 10 || fail "server did not exit after STOP_DEV"
	wait "$server_pid" || fail "server exited with an error after STOP_DEV: $(cat /tmp/srv0.log)"
	assert "$tool" del --id 0
	wait_gone /dev/ublkb0
	wait_gone /dev/ublkc0
	log "$mode: add/start/verify/stop/del ok"
done

# Many devices at once.
pids=()
for i in $(seq 0 7); do
	start_server "$i" "/tmp/many$i.log" --queues 1 --depth 16 --size-mb 16
	pids+=("$server_pid")
done
for i in $(seq 0 7); do
	dd if="/dev/ublkb$i" of=/dev/null bs=64k count=16 iflag=direct status=none || fail "read from ublkb$i failed"
done
for i in $(seq 0 7); do assert "$tool" del --id "$i"; done
for p in "${pids[@]}"; do wait_pid_gone "$p" 10 || fail "server $p survived DEL_DEV"; done
for i in $(seq 0 7); do wait_gone "/dev/ublkb$i"; wait_gone "/dev/ublkc$i"; done
log "8 devices: added, read, deleted"

# Delete under load: fio stops with errors, the server exits, nothing hangs.
start_server 3 /tmp/load.log --queues 2 --depth 128 --size-mb 64
fio --name=load --filename=/dev/ublkb3 --ioengine=libaio --direct=1 --iodepth=32 --numjobs=2 \
	--rw=randrw --bs=4k --time_based --runtime=60 --eta=never --output=/tmp/load.fio 2>/dev/null &
fio_pid=$!
sleep 3
t0=$(date +%s%N)
assert timeout 30 "$tool" del --id 3
log "DEL_DEV under load returned after $((($(date +%s%N) - t0) / 1000000)) ms"
wait_pid_gone "$fio_pid" 30 || fail "fio still running 30 s after DEL_DEV"
wait_pid_gone "$server_pid" 10 || fail "server survived DEL_DEV under load"
wait_gone /dev/ublkb3
wait_gone /dev/ublkc3

unload_ublk_driver
log "lifecycle ok; module unloaded"
