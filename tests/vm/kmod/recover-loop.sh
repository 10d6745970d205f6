#!/bin/bash
# The seeds' scenario: fio writes with --verify=crc32c to a device with USER_RECOVERY and
# USER_RECOVERY_REISSUE while its server is killed with kill -9 and recovered ten times.
# Zero I/O errors, data verified, no kernel warning (the harness checks the log).
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/kmod/lib.sh"
load_ublk_driver

loops=${UNBD_RECOVER_LOOPS:-10}
start_server 0 /tmp/srv.log --queues 2 --depth 64 --size-mb 64 --backing /tmp/r.img --reissue
# Back-to-back 10 s fio runs until the rounds are done (a round's length varies a lot under TCG):
# every run must exit 0 with every block verified.
rm -f /tmp/stop-fio
(
	n=0
	while [ ! -e /tmp/stop-fio ]; do
		n=$((n + 1))
		fio --name=verify --filename=/dev/ublkb0 --ioengine=libaio --direct=1 --iodepth=16 --rw=randwrite \
			--bs=4k --size=64M --time_based --runtime=10 --verify=crc32c --verify_fatal=1 \
			--verify_backlog=1024 --eta=never --output=/tmp/fio-$n.out ||
			{ echo "fio run $n exited with status $?: $(cat /tmp/fio-$n.out)"; exit 1; }
	done
) &
fio_pid=$!
sleep 3
deaths=() recoveries=()
for i in $(seq 1 "$loops"); do
	kill_and_wait 0 "$server_pid" QUIESCED
	deaths+=("$death_ms")
	check_death_ms "round $i: kill -> QUIESCED"
	start_recovery 0 "/tmp/rec$i.log" --backing /tmp/r.img
	recoveries+=("$recover_ms")
	log "round $i: kill -> QUIESCED $death_ms ms, recover -> LIVE $recover_ms ms"
	kill -0 "$fio_pid" 2>/dev/null || fail "fio ended early (round $i)"
	sleep 2
done
touch /tmp/stop-fio
wait "$fio_pid" || fail "fio failed (verify or I/O error)"
for f in /tmp/fio-*.out; do
	grep -q "err= 0" "$f" || { cat "$f"; fail "fio reported errors ($f)"; }
done
no_kernel_io_errors
summary() { printf '%s\n' "$@" | awk '{ s += $1; if ($1 > m) m = $1 } END { printf "avg %.1f ms, max %.1f ms", s / NR, m }'; }
log "fio: $(ls /tmp/fio-*.out | wc -l) runs; the first: $(grep -m1 'write: IOPS' /tmp/fio-1.out | sed 's/^ *//')"
log "RESULT $UNBD_UBLK_DRIVER: $loops kill/recover rounds, zero I/O errors, data verified"
log "RESULT $UNBD_UBLK_DRIVER: kill -> QUIESCED: $(summary "${deaths[@]}")"
log "RESULT $UNBD_UBLK_DRIVER: recover -> LIVE: $(summary "${recoveries[@]}")"
assert "$tool" del --id 0
unload_ublk_driver
