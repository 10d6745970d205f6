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
# Every fio run must exit 0 with every block verified.
start_verifying_writer /tmp/fio --filename=/dev/ublkb0 --iodepth=16 --bs=4k --size=64M --runtime=10 \
	--verify_backlog=1024
sleep 3
deaths=() recoveries=()
for i in $(seq 1 "$loops"); do
	kill_and_wait 0 "$server_pid" QUIESCED
	deaths+=("$death_ms")
	check_death_ms "round $i: kill -> QUIESCED"
	start_recovery 0 "/tmp/rec$i.log" --backing /tmp/r.img
	recoveries+=("$recover_ms")
	log "round $i: kill -> QUIESCED $death_ms ms, recover -> LIVE $recover_ms ms"
	kill -0 "$writer_pid" 2>/dev/null || fail "fio ended early (round $i)"
	sleep 2
done
stop_verifying_writer
summary() { printf '%s\n' "$@" | awk '{ s += $1; if ($1 > m) m = $1 } END { printf "avg %.1f ms, max %.1f ms", s / NR, m }'; }
log "the first fio run: $(grep -m1 'write: IOPS' /tmp/fio-1.txt | sed 's/^ *//')"
log "RESULT $UNBD_UBLK_DRIVER: $loops kill/recover rounds, zero I/O errors, data verified"
log "RESULT $UNBD_UBLK_DRIVER: kill -> QUIESCED: $(summary "${deaths[@]}")"
log "RESULT $UNBD_UBLK_DRIVER: recover -> LIVE: $(summary "${recoveries[@]}")"
assert "$tool" del --id 0
unload_ublk_driver
