#!/bin/bash
# Issue 6's VM scenario: the seeds' kill -9 / recover loop on a 3-replica remote volume while one
# replica is also killed and restarted. fio writes with crc32c verification through /dev/ublkbN the
# whole time (back-to-back runs, each must exit 0); the daemon is killed CYCLES times with
# `unbd recover` at once (every recovery is a new quorum open: the epoch must rise); replica 1 is
# killed during cycle 2 and restarted on its port during cycle 4. At the end the volume must be
# healthy again and every block identical on the three replicas (`unbd volume verify`).
# With "standby" the device runs with --standby: before each kill a standby must be ready and it,
# not `unbd recover`, must bring the device back, except in the last cycle, which kills the
# standby too.
# Usage: recover.sh [CYCLES] [standby]
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/frontend/lib.sh"
. "$UNBD_REPO/tests/vm/replication/lib.sh"
cycles=${1:-6}
standby=${2:-}
extra=()
[ "$standby" = standby ] && extra=(--standby)

load_ublk_driver
start_replicas
create_replicated_volume rv 512M
dev=$(unbd_add -t remote --replicas "$reps" --volume rv -q 2 --recovery --reissue --need-get-data \
	--retry-deadline-ms 60000 "${extra[@]}")
wait_for_blockdev "$dev"
id=${dev#/dev/ublkb}
log "$("$UNBD" list -n "$id")"

start_verifying_writer "$UNBD_VM_OUT/fio" --filename="$dev" --bsrange=4k-256k --iodepth=8 --size=64M \
	--verify_backlog=16 --runtime=20
sleep 3

status() { "$UNBD" volume status rv --replicas "$reps" --timeout-ms 30000 "$@"; }
read -r pid state prev_epoch _ < <(device_fields "$id")  # one `unbd list` per cycle from here on
for ((c = 1; c <= cycles; c++)); do
	kill -0 "$writer_pid" 2>/dev/null || fail "fio died before cycle $c"
	if [ "$c" = 2 ]; then
		# Killing a replica while another is still out (under TCG a stream's connection can time
		# out right after a recovery, and that replica is then marked out and resynced) would
		# take the majority away: the scenario is one replica lost from a healthy volume.
		wait_until 120 status >/dev/null 2>&1 || fail "volume not healthy before cycle 2: $(status || true)"
		kill -9 "${PIDS[1]}"
		wait "${PIDS[1]}" 2>/dev/null || true
		log "cycle $c: replica 1 (${ADDRS[1]}) killed"
	fi
	if [ "$c" = 4 ]; then
		start_replica 1 "${ADDRS[1]}"
		log "cycle $c: replica 1 restarted on ${ADDRS[1]}"
	fi
	spid=
	if [ -n "$standby" ]; then
		wait_until 120 standby_ready "$id" || fail "no standby ready before cycle $c"
		read -r pid state epoch spid < <(device_fields "$id")
		if [ "$c" = "$cycles" ]; then
			kill -9 "$spid"
			log "cycle $c: standby $spid killed as well: unbd recover alone must bring the device back"
			spid=
		fi
	fi
	kill -9 "$pid"
	"$UNBD" recover -n "$id" >/tmp/recover.out 2>&1 || fail "recover (cycle $c) failed: $(</tmp/recover.out)"
	read -r new_pid state epoch _ < <(device_fields "$id")
	log "cycle $c: daemon $pid killed, recovered at epoch $epoch: $(</tmp/recover.out)"
	if [ -n "$spid" ]; then
		[ "$new_pid" = "$spid" ] || fail "cycle $c: pid $new_pid serves the device, not the standby $spid"
	fi
	[ "$epoch" -gt "$prev_epoch" ] || fail "cycle $c: epoch did not rise ($prev_epoch -> $epoch)"
	prev_epoch=$epoch
	[ "$state" = LIVE ] || fail "device $state, not LIVE, after recovery $c"
	pid=$new_pid
	sleep 5
done

# The replica that came back is resynced by the serving daemon (the prober) while fio goes on.
wait_until 180 status >/dev/null 2>&1 || fail "volume not healthy 180 s after replica 1 returned: $(status || true)"
log "healthy again: $(status --json | jq -c '[.replicas[] | {address, state}]')"
stop_verifying_writer
grep -hE "opened on|marked out|->|resync" "$UNBD_RUN_DIR/$id.log" | tail -20 || true

# With the writer gone, the three copies must be identical block for block.
"$UNBD" del -n "$id"
wait_gone "$dev"
"$UNBD" volume verify rv --replicas "$reps" >"$UNBD_VM_OUT/verify.txt" 2>&1 ||
	fail "replicas differ after resync: $(cat "$UNBD_VM_OUT/verify.txt")"
log "$(cat "$UNBD_VM_OUT/verify.txt")"
check_no_daemon_errors
log "replicated recover: ok"
