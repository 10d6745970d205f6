#!/bin/bash
# Issue 6's second VM scenario: two frontends racing to open the same 3-replica volume through
# real ublk devices (docs/replication.md, section 1: opening is a quorum ballot, the later ballot
# fences the earlier owner on a majority, and a fenced incarnation fails every request with -EIO).
#  1. Device A opens the volume and writes pattern a (O_DIRECT, fsync), which reads back.
#  2. While A is live and idle, device B opens the same volume: B's epoch is higher; A's next write
#     and read fail with EIO, A's daemon log names the fencing ("is fenced by epoch <B's>"), B
#     reads a (A's acknowledged data, not its late write), writes b and reads it back.
#  3. ROUNDS times: two `unbd add` of the volume at the same moment. Each open either fails because
#     the other's ballot fenced it, or succeeds (the later ballot then fences the earlier device).
#     Both devices that exist write their own pattern concurrently: exactly one write succeeds,
#     the one of the highest epoch; the other fails with EIO and its log names the winner's epoch.
#     The winner reads its pattern back, the replicas are identical (`unbd volume verify`, before
#     any new open could reconcile them) and a fresh third device reads the winner's pattern.
#     Not zero writers: an open is retried (new round) only on transient errors, so the highest
#     ballot promised on a majority belongs to an open that completed, unless a replica outage
#     outlasted the retry deadline (30 s); none happens here.
# Usage: race.sh [ROUNDS]
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/frontend/lib.sh"
. "$UNBD_REPO/tests/vm/replication/lib.sh"
rounds=${1:-5}
names=cdefghijklmnopqrstuv # two patterns per round
((rounds >= 1 && 2 * rounds <= ${#names})) || fail "ROUNDS must be 1..$((${#names} / 2))"

# The region every device writes: 1 MiB at 8 MiB, as 16 O_DIRECT writes of 64 KiB and a FLUSH.
seek=128 count=16
# pattern C: /tmp/pat-C, 1 MiB of the character C.
pattern() { [ -e "/tmp/pat-$1" ] || head -c $((1 << 20)) /dev/zero | tr '\0' "$1" >"/tmp/pat-$1"; }
write_region() { # DEV C
	pattern "$2"
	dd if="/tmp/pat-$2" of="$1" bs=64k seek=$seek count=$count oflag=direct conv=fsync status=none
}
read_region() { dd if="$1" of="$2" bs=64k skip=$seek count=$count iflag=direct status=none; } # DEV FILE
region_is() { # DEV C: the region reads back as pattern C
	pattern "$2"
	read_region "$1" /tmp/back && cmp -s "/tmp/pat-$2" /tmp/back
}
region_chars() { tr -d '\n' </tmp/back | fold -w1 | sort | uniq -c | tr -s ' \n' ' '; } # what /tmp/back holds
add_device() { unbd_add -t remote --replicas "$reps" --volume rv; }
del_device() { # ID
	"$UNBD" del -n "$1" || fail "unbd del -n $1 failed"
	wait_gone "/dev/ublkb$1"
}
verify_replicas() { # WHEN
	"$UNBD" volume verify rv --replicas "$reps" >/tmp/verify.txt 2>&1 ||
		fail "$1: replicas differ: $(cat /tmp/verify.txt)"
	log "$1: $(cat /tmp/verify.txt)"
}
# expect_eio ERRFILE WHAT: the dd that wrote ERRFILE failed with EIO (not a hang, not another error).
expect_eio() {
	grep -q "Input/output error" "$1" || fail "$2 failed, but not with EIO: $(cat "$1")"
}

load_ublk_driver
start_replicas
create_replicated_volume rv 64M

# ---- 1. A opens and writes ----
devA=$(add_device)
wait_for_blockdev "$devA"
idA=${devA#/dev/ublkb}
epochA=$(device_epoch "$idA")
write_region "$devA" a || fail "A's write failed"
region_is "$devA" a || fail "A does not read back its own write: $(region_chars)"
log "A: $devA at epoch $epochA wrote pattern a"

# ---- 2. B opens the same volume while A is live and idle ----
devB=$(add_device)
wait_for_blockdev "$devB"
idB=${devB#/dev/ublkb}
epochB=$(device_epoch "$idB")
log "B: $devB at epoch $epochB"
[ "$epochB" -gt "$epochA" ] || fail "B's epoch $epochB is not above A's $epochA"
[ "$(dev_state "$idA")" = LIVE ] || fail "A is $(dev_state "$idA") after B's open, expected LIVE (fenced, failing I/O)"
if write_region "$devA" x 2>/tmp/a-write.err; then
	fail "split brain: A's write after B's open succeeded"
fi
expect_eio /tmp/a-write.err "A's write after B's open"
if read_region "$devA" /tmp/a-read 2>/tmp/a-read.err; then
	fail "A's read after B's open succeeded (a fenced incarnation must fail every request)"
fi
expect_eio /tmp/a-read.err "A's read after B's open"
grep -q "is fenced by epoch $epochB" "$UNBD_RUN_DIR/$idA.log" ||
	fail "A's daemon log does not name the fencing by epoch $epochB: $(grep -i fenced "$UNBD_RUN_DIR/$idA.log" | head -3)"
log "A: write and read failed with EIO; its log: $(grep -m1 -o "epoch [0-9]* is fenced by epoch [0-9]*" "$UNBD_RUN_DIR/$idA.log")"
region_is "$devB" a || fail "B does not read A's acknowledged data (A's late write landed?): $(region_chars)"
write_region "$devB" b || fail "B's write failed"
region_is "$devB" b || fail "B does not read back its own write: $(region_chars)"
log "B: read pattern a, wrote and read back pattern b"
del_device "$idA"
del_device "$idB"
verify_replicas "after A and B"

# ---- 3. two openers at the same moment ----
winner_pat=b
both_added=0
for ((r = 1; r <= rounds; r++)); do
	pats=("${names:2*r-2:1}" "${names:2*r-1:1}")
	pids=()
	for k in 0 1; do
		(
			rc=0
			"$UNBD" add -t remote --replicas "$reps" --volume rv >"/tmp/add$k.out" 2>&1 || rc=$?
			echo "$rc" >"/tmp/add$k.rc"
		) &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p"; done
	ids=() epochs=() added=() what=""
	for k in 0 1; do
		if [ "$(cat "/tmp/add$k.rc")" = 0 ]; then
			dev=$(grep -o '/dev/ublkb[0-9]*' "/tmp/add$k.out" | tail -1)
			wait_for_blockdev "$dev"
			ids[k]=${dev#/dev/ublkb}
			epochs[k]=$(device_epoch "${ids[k]}")
			added+=("$k")
			what+=" opener $k: $dev epoch ${epochs[k]};"
		else
			# The only way this open may fail: the other's ballot fenced it.
			grep -q "fenced" "/tmp/add$k.out" ||
				fail "round $r: opener $k failed, not fenced: $(cat "/tmp/add$k.out")"
			what+=" opener $k: fenced ($(grep -o 'epoch [0-9]* is fenced by epoch [0-9]*\|fenced: a newer owner exists' "/tmp/add$k.out" | head -1));"
		fi
	done
	log "round $r:$what"
	((${#added[@]} > 0)) || fail "round $r: neither opener got the volume: $(cat /tmp/add0.out /tmp/add1.out)"
	if ((${#added[@]} == 2)); then both_added=$((both_added + 1)); fi

	# Every device that exists writes its own pattern, concurrently.
	pids=()
	for k in "${added[@]}"; do
		(
			rc=0
			write_region "/dev/ublkb${ids[k]}" "${pats[k]}" 2>"/tmp/write$k.err" || rc=$?
			echo "$rc" >"/tmp/write$k.rc"
		) &
		pids+=($!)
	done
	for p in "${pids[@]}"; do wait "$p"; done
	wrote=()
	for k in "${added[@]}"; do
		if [ "$(cat "/tmp/write$k.rc")" = 0 ]; then wrote+=("$k"); fi
	done
	((${#wrote[@]} <= 1)) || fail "round $r: split brain: both devices' writes succeeded (epochs ${epochs[*]})"
	((${#wrote[@]} == 1)) || fail "round $r: no device could write: $(cat /tmp/write*.err)"
	w=${wrote[0]}
	for k in "${added[@]}"; do
		[ "$k" != "$w" ] || continue
		[ "${epochs[w]}" -gt "${epochs[k]}" ] ||
			fail "round $r: the writer (opener $w) has epoch ${epochs[w]}, not above the other's ${epochs[k]}"
		expect_eio "/tmp/write$k.err" "round $r: the fenced device's write"
		grep -q "is fenced by epoch ${epochs[w]}" "$UNBD_RUN_DIR/${ids[k]}.log" ||
			fail "round $r: the fenced device's log does not name epoch ${epochs[w]}"
		if read_region "/dev/ublkb${ids[k]}" /tmp/loser-read 2>/tmp/loser-read.err; then
			fail "round $r: the fenced device's read succeeded"
		fi
		expect_eio /tmp/loser-read.err "round $r: the fenced device's read"
	done
	region_is "/dev/ublkb${ids[w]}" "${pats[w]}" ||
		fail "round $r: the writer does not read back its pattern ${pats[w]}: $(region_chars)"
	winner_pat=${pats[w]}
	for k in "${added[@]}"; do del_device "${ids[k]}"; done
	# Before any new open: it would reconcile replicas that differ.
	verify_replicas "round $r"
	devC=$(add_device)
	wait_for_blockdev "$devC"
	region_is "$devC" "$winner_pat" ||
		fail "round $r: a fresh device does not read the writer's pattern $winner_pat: $(region_chars)"
	[ "$(device_epoch "${devC#/dev/ublkb}")" -gt "${epochs[w]}" ] || fail "round $r: the fresh device's epoch is not above the writer's"
	del_device "${devC#/dev/ublkb}"
	log "round $r: opener $w (epoch ${epochs[w]}) wrote ${pats[w]}, the only write that landed"
done
log "$rounds rounds: both opens succeeded in $both_added, one was fenced during its open in $((rounds - both_added))"
check_no_daemon_errors
log "replicated race: ok"
