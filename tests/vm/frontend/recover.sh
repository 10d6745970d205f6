#!/bin/bash
# The seeds' scenario: fio writes with crc32c verification on a --recovery --reissue device while
# its daemon is killed with SIGKILL CYCLES times and `unbd recover` is run at once each time.
# fio must exit 0 (every block verifies, no I/O error), the kernel log must stay clean, and each
# cycle prints the time from kill -9 until a new request completes.
# Usage: recover.sh loop|remote [CYCLES] [standby]
# With "standby" the device keeps a standby daemon (--standby): each cycle waits until one is up,
# and it, not `unbd recover`, must be the one that brings the device back; a last cycle kills the
# standby too, and `unbd recover` must then do it alone.
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/frontend/lib.sh"
target=${1:-loop}
cycles=${2:-10}
standby=${3:-}
extra=()
[ "$standby" = standby ] && extra=(--standby)

load_ublk_driver
case $target in
loop)
	truncate -s 512M /tmp/backing.img
	dev=$(unbd_add -t loop -f /tmp/backing.img -q 2 --recovery --reissue --need-get-data "${extra[@]}")
	;;
remote)
	start_backend
	dev=$(unbd_add -t remote --server "$UNBD_SERVER" --volume vol0 -q 2 --recovery --reissue --need-get-data "${extra[@]}")
	;;
*) fail "unknown target $target" ;;
esac
wait_for_blockdev "$dev"
id=${dev#/dev/ublkb}

# Every fio run must exit 0 with every block verified.
start_verifying_writer "$UNBD_VM_OUT/fio-recover" --filename="$dev" --bsrange=4k-1M --iodepth=8 --size=256M \
	--verify_backlog=16 --runtime=20
sleep 3

# The figure: a probe process, started before the first kill so that no process start-up (slow
# under TCG) falls inside the measured interval, reads one block at a time with O_DIRECT and logs
# when each read was issued and completed (microseconds). A cycle's figure is the completion of the
# read that waited longest across the kill, minus the kill's time.
python3 "$UNBD_REPO/tests/vm/frontend/probe.py" "$dev" /tmp/probe.log &
probe_pid=$!
wait_until 30 test -s /tmp/probe.log || fail "the probe did not start"
now_us() { local t=$EPOCHREALTIME; echo "${t/./}"; }
t0=$(now_us)
"$UNBD" list -n "$id" --json >/dev/null
log "baseline: unbd start-up + list $((($(now_us) - t0) / 1000)) ms (under load)"
# One `unbd list` per cycle: in this loaded guest each costs half a second.
read -r pid state prev_epoch spid < <(device_fields "$id")
times=()
firsts=()
total=$cycles
[ -n "$standby" ] && total=$((cycles + 1))
for ((c = 1; c <= total; c++)); do
	kill -0 "$writer_pid" 2>/dev/null || fail "fio died before cycle $c"
	kill -0 "$probe_pid" 2>/dev/null || fail "the probe died before cycle $c"
	spid=
	if [ -n "$standby" ]; then
		wait_until 60 standby_ready "$id" || fail "no standby ready before cycle $c"
		read -r pid state epoch spid < <(device_fields "$id")
		if [ "$c" -gt "$cycles" ]; then
			log "cycle $c: killing the standby $spid as well: unbd recover alone must bring the device back"
			kill -9 "$spid"
			spid=
		fi
	fi
	t0=$(now_us)
	kill -9 "$pid"
	"$UNBD" recover -n "$id" >/tmp/recover.out 2>&1 || fail "recover (cycle $c) failed: $(cat /tmp/recover.out)"
	t1=$(now_us)
	# Wait for a read issued after `recover` returned to complete: the stalled one is done by then.
	wait_until 30 awk -v t="$t1" '$1 >= t { found = 1 } END { exit !found }' /tmp/probe.log ||
		fail "no probe read completed after recovery $c"
	ms=$(awk -v t0="$t0" -v t1="$t1" '$2 > t0 && $1 < t1 && $2 - $1 >= worst { worst = $2 - $1; done = $2 }
		END { printf "%d", (done - t0) / 1000 }' /tmp/probe.log)
	times+=("$ms")
	read -r new_pid state epoch _ < <(device_fields "$id")
	[ "$state" = LIVE ] || fail "device $state, not LIVE, after recovery $c"
	# The new daemon logs when its queues served their first request: the first I/O completing
	# again, whichever application issued it (the probe's read may queue behind fio's backlog).
	if [ -n "$spid" ]; then
		[ "$new_pid" = "$spid" ] || fail "cycle $c: pid $new_pid serves the device, not the standby $spid"
		grep -q "recovered by its standby, pid $spid" /tmp/recover.out ||
			fail "cycle $c: recover did not report the standby's recovery: $(cat /tmp/recover.out)"
	fi
	wait_until 30 grep -q "(pid $new_pid): first request" "$UNBD_RUN_DIR/$id.log" ||
		fail "the new daemon $new_pid served no request after recovery $c"
	first=$(awk -v p="(pid $new_pid): first request" 'index($0, p) && (t == "" || $(NF - 1) + 0 < t + 0) { t = $(NF - 1) }
		END { print t }' "$UNBD_RUN_DIR/$id.log")
	first_ms=$(((first - t0) / 1000))
	firsts+=("$first_ms")
	log "cycle $c: kill -9 $pid -> first I/O completes after $first_ms ms, the probe's read after $ms ms (recover returned after $(((t1 - t0) / 1000)) ms); $(</tmp/recover.out); epoch $epoch"
	if [ "$target" = remote ]; then
		[ "$epoch" -gt "$prev_epoch" ] || fail "epoch did not increase: $prev_epoch -> $epoch"
	fi
	prev_epoch=$epoch
	pid=$new_pid
	sleep 2
done
kill "$probe_pid"
cp /tmp/probe.log "$UNBD_VM_OUT/"
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
log "kill -> first I/O completes (ms): ${firsts[*]}; median $(median "${firsts[@]}") ms"
log "kill -> the probe's read completes (ms): ${times[*]}; median $(median "${times[@]}") ms"
{
	echo "first I/O: ${firsts[*]}"
	echo "probe: ${times[*]}"
} >"$UNBD_VM_OUT/recovery-ms.txt"
grep -h "recovered (#\|first request" "$UNBD_RUN_DIR"/*.log >"$UNBD_VM_OUT/recovery-phases.txt" || true

stop_verifying_writer
"$UNBD" del -n "$id"
wait_gone "$dev"
check_no_daemon_errors
if [ -n "$standby" ]; then
	left=$(pgrep -x 'unbd-standby|unbd-daemon' || true)
	[ -z "$left" ] || fail "daemon processes left after del: $left"
	[ ! -e "$UNBD_RUN_DIR/$id.lifeline" ] || fail "the lifeline file outlived the device"
fi
log "recover $target: ok"
