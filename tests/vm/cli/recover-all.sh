#!/bin/bash
# `unbd recover --all` and `unbd status` on real devices: a null and a remote device (unbd-server in
# the guest), both with --recovery --reissue. status --json shows them alive; after kill -9 of both
# daemons it shows both dead (exit 1); one `recover --all` brings both back and they serve I/O
# again (the remote one with its data and a higher epoch); a second run leaves live devices alone;
# two recoveries at once recover once.
# Then: a device without --recovery whose daemon died makes recover --all fail (exit 1, named); a
# device whose kernel side is gone but whose state file remains is added again on the same id; a
# dead server shows as unreachable within the status timeout.
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"
. "$UNBD_REPO/tests/vm/frontend/lib.sh"

load_ublk_driver
start_backend
null_dev=$(unbd_add -t null -s 1G --recovery --reissue)
remote_dev=$(unbd_add -t remote --server "$UNBD_SERVER" --volume vol0 --recovery --reissue)
wait_for_blockdev "$null_dev"
wait_for_blockdev "$remote_dev"
n=${null_dev#/dev/ublkb}
r=${remote_dev#/dev/ublkb}

# status [ARGS]: `unbd status --json ARGS` into /tmp/status.json; its exit status in $status_rc.
status() {
	status_rc=0
	"$UNBD" status --json "$@" >/tmp/status.json 2>/tmp/status.err || status_rc=$?
	cp /tmp/status.json "$UNBD_VM_OUT/status-$((++status_runs)).json"
}
status_runs=0
# dev ID FILTER: jq FILTER applied to device ID's entry of the last status.
dev() { jq -e --argjson id "$1" ".devices[] | select(.id == \$id) | $2" /tmp/status.json >/dev/null; }
vol() { jq -e ".volumes[] | select(.name == \"vol0\") | $1" /tmp/status.json >/dev/null; }

# Known data on the remote volume, to find again after every recovery.
head -c 1M /dev/urandom >/tmp/pattern
dd if=/tmp/pattern of="$remote_dev" bs=1M count=1 oflag=direct status=none || fail "write to $remote_dev failed"
serves_io() {
	dd if=/dev/zero of="$null_dev" bs=4k count=256 oflag=direct status=none || fail "$null_dev: write failed"
	dd if="$null_dev" of=/dev/null bs=4k count=256 iflag=direct status=none || fail "$null_dev: read failed"
	cmp <(dd if="$remote_dev" bs=1M count=1 iflag=direct status=none) /tmp/pattern ||
		fail "$remote_dev: the data written before does not read back"
}
serves_io

status
[ "$status_rc" = 0 ] || fail "status of healthy devices exited $status_rc: $(cat /tmp/status.err)"
for id in "$n" "$r"; do
	dev "$id" '.dev == "/dev/ublkb'"$id"'" and .state == "LIVE" and .daemon == "alive" and .daemon_pid > 0 and .managed' ||
		fail "device $id not shown live: $(cat /tmp/status.json)"
done
dev "$n" '.target == "null" and (has("volume") | not)' || fail "null device fields: $(cat /tmp/status.json)"
dev "$r" '.target == "remote" and .volume == "vol0" and .servers == ["'"$UNBD_SERVER"'"] and .epoch >= 1 and .fenced == false' ||
	fail "remote device fields: $(cat /tmp/status.json)"
vol '.health == "healthy" and .reachable and .server == "'"$UNBD_SERVER"'" and .devices == ['"$r"']' ||
	fail "volume fields: $(cat /tmp/status.json)"
epoch0=$(jq ".devices[] | select(.id == $r) | .epoch" /tmp/status.json)
vol ".epoch == $epoch0" || fail "the server's epoch is not the device's: $(cat /tmp/status.json)"
log "status --json of two live devices: ok"
"$UNBD" status | tee "$UNBD_VM_OUT/status-live.txt"

# kill -9 both daemons: status shows them dead.
pn=$(daemon_pid "$n")
pr=$(daemon_pid "$r")
kill -9 "$pn" "$pr"
wait_until 20 is_state "$n" QUIESCED || fail "device $n not QUIESCED after kill -9"
wait_until 20 is_state "$r" QUIESCED || fail "device $r not QUIESCED after kill -9"
status
[ "$status_rc" = 1 ] || fail "status with dead daemons exited $status_rc, not 1"
for id in "$n" "$r"; do
	dev "$id" '.state == "QUIESCED" and .daemon == "dead"' || fail "device $id not shown dead: $(cat /tmp/status.json)"
done
dev "$n" ".daemon_pid == $pn" || fail "dead daemon's pid not shown"
jq -e '.problems >= 2' /tmp/status.json >/dev/null || fail "problems not counted: $(cat /tmp/status.json)"
"$UNBD" status | tee "$UNBD_VM_OUT/status-dead.txt" || true
log "status --json of two dead daemons: ok"

"$UNBD" recover --all >/tmp/recover.out 2>&1 || fail "recover --all failed: $(cat /tmp/recover.out)"
cat /tmp/recover.out
grep -q "^/dev/ublkb$n recovered by pid" /tmp/recover.out || fail "null device not reported recovered"
grep -q "^/dev/ublkb$r recovered by pid" /tmp/recover.out || fail "remote device not reported recovered"
grep -q "recover --all: 2 recovered, 0 live, 0 skipped, 0 failed" /tmp/recover.out || fail "summary: $(cat /tmp/recover.out)"
is_state "$n" LIVE && is_state "$r" LIVE || fail "devices not LIVE after recover --all"
serves_io
status
[ "$status_rc" = 0 ] || fail "status after recovery exited $status_rc: $(cat /tmp/status.json)"
dev "$r" ".daemon == \"alive\" and .epoch > $epoch0 and .recoveries == 1" || fail "remote device after recovery: $(cat /tmp/status.json)"
log "recover --all brought both devices back; they serve I/O"

# Live devices are left alone.
"$UNBD" recover --all >/tmp/recover.out 2>&1 || fail "recover --all of live devices failed: $(cat /tmp/recover.out)"
grep -q "recover --all: 0 recovered, 2 live" /tmp/recover.out || fail "live devices touched: $(cat /tmp/recover.out)"
pn2=$(daemon_pid "$n")
"$UNBD" recover --all >/dev/null
[ "$(daemon_pid "$n")" = "$pn2" ] || fail "recover --all replaced a live daemon"

# Two recoveries at once (an operator's recover --all and the CSI agent's `recover -n`): exactly one
# brings the device back, the other finds it live; the volume is opened once (a second open would
# fence the new daemon).
epoch1=$(jq ".devices[] | select(.id == $r) | .epoch" /tmp/status.json)
kill -9 "$(daemon_pid "$r")"
"$UNBD" recover -n "$r" >/tmp/recover-n.out 2>&1 &
rn=$!
"$UNBD" recover --all >/tmp/recover-all.out 2>&1 || fail "concurrent recover --all failed: $(cat /tmp/recover-all.out)"
wait "$rn" || fail "concurrent recover -n failed: $(cat /tmp/recover-n.out)"
cat /tmp/recover-n.out /tmp/recover-all.out
[ "$(cat /tmp/recover-n.out /tmp/recover-all.out | grep -c "^/dev/ublkb$r recovered by pid")" = 1 ] ||
	fail "not exactly one recovery of device $r"
grep -q "^/dev/ublkb$r: live" /tmp/recover-n.out /tmp/recover-all.out || fail "the second recovery did not find it live"
serves_io
status
dev "$r" ".daemon == \"alive\" and .epoch == $epoch1 + 1 and .fenced == false" ||
	fail "after concurrent recoveries: $(cat /tmp/status.json)"
log "two concurrent recoveries: one recovered, one found it live"

# A device without --recovery whose daemon died cannot be recovered: named, exit 1, the others recovered.
plain_dev=$(unbd_add -t null -s 64M)
wait_for_blockdev "$plain_dev"
p=${plain_dev#/dev/ublkb}
kill -9 "$(daemon_pid "$n")" "$(daemon_pid "$p")"
wait_until 20 is_state "$n" QUIESCED || fail "device $n not QUIESCED"
rc=0
"$UNBD" recover --all >/tmp/recover.out 2>&1 || rc=$?
cat /tmp/recover.out
[ "$rc" = 1 ] || fail "recover --all with an unrecoverable device exited $rc, not 1"
grep -q "^/dev/ublkb$p: FAILED: .*not added with --recovery" /tmp/recover.out || fail "unrecoverable device not named"
grep -q "^/dev/ublkb$n recovered by pid" /tmp/recover.out || fail "the recoverable device was not recovered alongside"
"$UNBD" del -n "$p"
serves_io

# The kernel side is gone but the state file remains (module reload, persistent state dir after a
# reboot): recover --all adds the device again on the same id, with its data.
cp "$UNBD_RUN_DIR/$r.json" /tmp/saved-state.json
"$UNBD" del -n "$r"
wait_gone "$remote_dev"
cp /tmp/saved-state.json "$UNBD_RUN_DIR/$r.json"
status
dev "$r" '.state == "MISSING" and .daemon == "dead"' || fail "missing device: $(cat /tmp/status.json)"
"$UNBD" recover --all >/tmp/recover.out 2>&1 || fail "recover --all (re-add) failed: $(cat /tmp/recover.out)"
grep -q "^/dev/ublkb$r added again by pid" /tmp/recover.out || fail "not re-added: $(cat /tmp/recover.out)"
wait_for_blockdev "$remote_dev"
serves_io
log "a device whose kernel side was gone was added again with its data"

# A dead server: status answers within its timeout and says unreachable.
kill -9 "$BACKEND_PID"
wait "$BACKEND_PID" 2>/dev/null || true
t0=$SECONDS
status --timeout-ms 1000
[ $((SECONDS - t0)) -le 15 ] || fail "status took $((SECONDS - t0)) s with the server down"
[ "$status_rc" = 1 ] || fail "status with the server down exited $status_rc"
vol '.health == "unreachable" and (.reachable | not) and (.error | length > 0)' ||
	fail "dead server not shown unreachable: $(cat /tmp/status.json)"
"$UNBD" status --timeout-ms 1000 | tee "$UNBD_VM_OUT/status-server-down.txt" || true
start_backend_process "$UNBD_SERVER"

"$UNBD" del -n "$n"
"$UNBD" del -n "$r"
wait_gone "$null_dev"
wait_gone "$remote_dev"
check_no_daemon_errors
log "recover --all and status: ok"
