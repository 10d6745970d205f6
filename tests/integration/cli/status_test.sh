#!/bin/sh
# `unbd status` without a ublk driver (devices come from their state files) against real
# unbd-servers: daemons shown alive or dead (a reused pid of another program counts as dead), a
# plain volume healthy, a 3-replica volume healthy then degraded, a volume on a closed port and on
# a blackholed address unreachable within the timeout, a missing volume, a fenced device; exit 1
# whenever something is wrong; text output names the same things.
# Usage: status_test.sh UNBD_BIN UNBD_SERVER_BIN
set -eu
unbd=$1 server=$2
. "$(dirname "$0")/../servers.sh"
fail() { echo "FAIL: $*"; [ -f "$dir/json" ] && cat "$dir/json"; exit 1; }
command -v jq >/dev/null || { echo "jq is not installed (scripts/install-deps)"; exit 1; }

for n in 1 2 3; do start $n; done
reps="$(addr 1),$(addr 2),$(addr 3)"
# The first connection to a server just started can miss its SETTINGS frame on a loaded machine.
retry() { i=0; until "$@" >/dev/null 2>"$dir/err"; do i=$((i+1)); [ $i -lt 20 ] || fail "$*: $(cat "$dir/err")"; sleep 0.5; done; }
retry "$unbd" volume create plain --size 64M --server "$(addr 1)"
retry "$unbd" volume create rv --size 64M --replicas "$reps"

# A stand-in for a device daemon: the process name is what status trusts.
cp "$(command -v sleep)" "$dir/unbd-daemon"
"$dir/unbd-daemon" 600 &
alive=$!
pids="$pids $alive"
sleep 600 &
other=$!  # alive, but not a device daemon (a reused pid)
pids="$pids $other"
dead=999999

export UNBD_RUN_DIR="$dir/run"
mkdir -p "$UNBD_RUN_DIR"
# state ID PID EPOCH REMOTE-JSON
state() {
  printf '{"dev_id":%s,"daemon_pid":%s,"epoch":%s,"volume_id":0,"recoveries":0,"config":{"target":"remote","dev_id":%s,"nr_queues":1,"queue_depth":128,"max_io_bytes":524288,"logical_block_size":4096,"recovery":true,"reissue":true,"need_get_data":false,"remote":%s}}\n' \
    "$1" "$2" "$3" "$1" "$4" >"$UNBD_RUN_DIR/$1.json"
}
state 0 "$alive" 0 '{"server":"'"$(addr 1)"'","volume":"plain","retry_deadline_ms":30000}'
rv_epoch=$("$unbd" volume status rv --replicas "$reps" --json | jq .epoch)
state 1 "$alive" "$rv_epoch" '{"server":"","volume":"rv","replicas":["'"$(addr 1)"'","'"$(addr 2)"'","'"$(addr 3)"'"],"retry_deadline_ms":30000}'

"$unbd" status --json >"$dir/json" || fail "healthy status exited $?"
jq -e '.driver.loaded == false and (.driver.error | test("ublk-control"))' "$dir/json" >/dev/null || fail "driver not reported missing"
jq -e '[.devices[] | .state == "UNKNOWN" and .daemon == "alive"] == [true, true]' "$dir/json" >/dev/null || fail "devices"
jq -e '.devices[0] | .dev == "/dev/ublkb0" and .volume == "plain" and .target == "remote" and .epoch == 0 and .fenced == false' "$dir/json" >/dev/null || fail "device 0"
jq -e '.devices[1] | .replicated and (.servers | length) == 3' "$dir/json" >/dev/null || fail "device 1"
jq -e '.volumes[] | select(.name == "plain") | .health == "healthy" and .reachable and .size_bytes == 67108864 and .devices == [0]' "$dir/json" >/dev/null || fail "plain volume"
jq -e '.volumes[] | select(.name == "rv") | .health == "healthy" and .replicas_answered == 3 and ([.replicas[].state] == ["healthy","healthy","healthy"]) and .devices == [1]' "$dir/json" >/dev/null || fail "replicated volume"
jq -e '.problems == 0' "$dir/json" >/dev/null || fail "problems"

# Dead daemons (a dead pid, and a live pid that is not a device daemon); one replica down; a
# volume on a closed port, one on an address that never answers, one the server does not have.
state 0 "$dead" 0 '{"server":"'"$(addr 1)"'","volume":"plain","retry_deadline_ms":30000}'
state 2 "$other" 0 '{"server":"127.0.0.1:1","volume":"gone","retry_deadline_ms":30000}'
state 3 "$alive" 0 '{"server":"192.0.2.1:7420","volume":"blackhole","retry_deadline_ms":30000}'
state 4 "$alive" 0 '{"server":"'"$(addr 2)"'","volume":"nosuch","retry_deadline_ms":30000}'
kill -9 "$(cat "$dir/pid3")"
start=$(date +%s)
rc=0
"$unbd" status --json --timeout-ms 1000 >"$dir/json" || rc=$?
took=$(($(date +%s) - start))
[ "$rc" = 1 ] || fail "status with problems exited $rc, not 1"
[ "$took" -le 6 ] || fail "status took $took s with unreachable servers (timeout 1 s)"
jq -e '.devices[0].daemon == "dead" and .devices[0].daemon_pid == 999999' "$dir/json" >/dev/null || fail "dead pid shown alive"
jq -e '.devices[2].daemon == "dead"' "$dir/json" >/dev/null || fail "a reused pid counted as our daemon"
jq -e '.volumes[] | select(.name == "rv") | .health == "degraded" and .replicas[2].reachable == false and (.replicas[2].error | length > 0)' "$dir/json" >/dev/null || fail "degraded volume"
jq -e '.volumes[] | select(.name == "gone") | .health == "unreachable" and .reachable == false' "$dir/json" >/dev/null || fail "closed port"
jq -e '.volumes[] | select(.name == "blackhole") | .health == "unreachable"' "$dir/json" >/dev/null || fail "blackholed address"
jq -e '.volumes[] | select(.name == "nosuch") | .health == "missing" and .reachable' "$dir/json" >/dev/null || fail "missing volume"
jq -e '.problems == 6' "$dir/json" >/dev/null || fail "problems: 2 dead daemons + 4 unhealthy volumes"

# A device whose epoch is below the volume's was fenced by a newer owner.
state 1 "$alive" $((rv_epoch - 1)) '{"server":"","volume":"rv","replicas":["'"$(addr 1)"'","'"$(addr 2)"'","'"$(addr 3)"'"],"retry_deadline_ms":30000}'
"$unbd" status --json --timeout-ms 1000 >"$dir/json" || true
jq -e '.devices[1].fenced == true' "$dir/json" >/dev/null || fail "a device behind the volume's epoch is not shown fenced"

# The text form names the same things.
"$unbd" status --timeout-ms 1000 >"$dir/text" || true
grep -q "^/dev/ublkb0 .*UNKNOWN .*999999 *dead *remote *plain" "$dir/text" || fail "text: $(cat "$dir/text")"
grep -q "^/dev/ublkb1 .* alive .*rv (FENCED)" "$dir/text" || fail "text fenced: $(cat "$dir/text")"
grep -q "^volume gone on 127.0.0.1:1: unreachable" "$dir/text" || fail "text closed port: $(cat "$dir/text")"
grep -q "^volume rv (replicated): degraded" "$dir/text" || fail "text volume: $(cat "$dir/text")"
grep -q "unreachable: " "$dir/text" || fail "text unreachable replica: $(cat "$dir/text")"

"$unbd" status -n 7 2>"$dir/err" && fail "status of a missing device succeeded"
grep -q "device 7 does not exist" "$dir/err" || fail "missing device message: $(cat "$dir/err")"
echo "PASS"
