#!/bin/sh
# `unbd volume create --replicas`, `unbd volume status`, `unbd volume replace-replica` and
# `unbd volume resize --replicas` against four real unbd-servers: exit codes 0 healthy /
# 1 degraded / 2 no majority, --json, bad input; the plain resize of one copy refused.
# Usage: cli_replication_test.sh UNBD_BIN UNBD_SERVER_BIN
set -eu
unbd=$1 server=$2
. "$(dirname "$0")/../servers.sh"
fail() { echo "FAIL: $*"; exit 1; }

for n in 1 2 3 4; do start $n; done
reps="$(addr 1),$(addr 2),$(addr 3)"

# Bad input is refused with exit 2 and says why.
set +e
"$unbd" volume create v --size 64M --replicas "$(addr 1),nonsense" 2>"$dir/err"; rc=$?
set -e
[ $rc -eq 2 ] || fail "bad target: exit $rc"
grep -q 'is not HOST:PORT' "$dir/err" || fail "bad target message: $(cat "$dir/err")"
set +e
"$unbd" volume create v --size 64M --replicas "$(addr 1),$(addr 1)" 2>"$dir/err"; rc=$?
set -e
[ $rc -eq 2 ] || fail "duplicate replica: exit $rc"
grep -q 'listed twice' "$dir/err" || fail "duplicate replica message: $(cat "$dir/err")"

"$unbd" volume create v --size 64M --replicas "$reps" >"$dir/out" || fail "create: $(cat "$dir/out")"
grep -q 'created replicated volume "v" (64.0 MiB) on 3 replicas' "$dir/out" || fail "create output: $(cat "$dir/out")"
"$unbd" volume create v --size 64M --replicas "$reps" 2>"$dir/err" && fail "duplicate volume accepted"
grep -q 'already exists' "$dir/err" || fail "duplicate volume message: $(cat "$dir/err")"

"$unbd" volume status v --replicas "$reps" >"$dir/out" || fail "status of a healthy volume: $(cat "$dir/out")"
grep -q 'volume:   v (healthy)' "$dir/out" || fail "status output: $(cat "$dir/out")"
[ "$(grep -c ' healthy ' "$dir/out")" = 3 ] || fail "3 healthy replicas: $(cat "$dir/out")"
"$unbd" volume status v --replicas "$reps" --json >"$dir/json" || fail "status --json"
grep -q '"health": "healthy"' "$dir/json" || fail "json health: $(cat "$dir/json")"
grep -q '"config_version": 1' "$dir/json" || fail "json config_version: $(cat "$dir/json")"
[ "$(grep -c '"state": "healthy"' "$dir/json")" = 3 ] || fail "json states: $(cat "$dir/json")"

# One replica down: degraded (exit 1); two down: no majority (exit 2).
stop 3
set +e
"$unbd" volume status v --replicas "$reps" --timeout-ms 500 >"$dir/out"; rc=$?
set -e
[ $rc -eq 1 ] || fail "one replica down: exit $rc: $(cat "$dir/out")"
grep -q 'degraded' "$dir/out" || fail "degraded output: $(cat "$dir/out")"
stop 2
set +e
"$unbd" volume status v --replicas "$reps" --timeout-ms 500 --json >"$dir/json"; rc=$?
set -e
[ $rc -eq 2 ] || fail "two replicas down: exit $rc"
grep -q '"health": "no majority"' "$dir/json" || fail "no majority json: $(cat "$dir/json")"
start 2 "$(port 2)"
start 3 "$(port 3)"
"$unbd" volume status v --replicas "$reps" >/dev/null || fail "healthy again after the restarts"

# Replace replica 3 by server 4 and rebuild it now.
"$unbd" volume replace-replica v "$(addr 3)" "$(addr 3)" --replicas "$reps" 2>"$dir/err" && fail "OLD == NEW accepted"
"$unbd" volume replace-replica v 127.0.0.1:9 "$(addr 4)" --replicas "$reps" 2>"$dir/err" && fail "unknown OLD accepted"
grep -q 'not a replica of volume' "$dir/err" || fail "unknown OLD message: $(cat "$dir/err")"
"$unbd" volume replace-replica v "$(addr 3)" "$(addr 4)" --replicas "$reps" --rebuild >"$dir/out" \
  || fail "replace-replica: $(cat "$dir/out")"
grep -q "replaced by $(addr 4), rebuilt" "$dir/out" || fail "replace output: $(cat "$dir/out")"
new="$(addr 1),$(addr 2),$(addr 4)"
"$unbd" volume status v --replicas "$new" >"$dir/out" || fail "status after replace: $(cat "$dir/out")"
grep -q "$(addr 4) .* healthy" "$dir/out" || fail "new replica healthy: $(cat "$dir/out")"
# The old set still finds the volume through its metadata (it names the current replica set).
"$unbd" volume status v --replicas "$(addr 1)" --json >"$dir/json" || fail "status from one member"
grep -q "\"address\": \"$(addr 4)\"" "$dir/json" || fail "metadata names the new replica: $(cat "$dir/json")"

# Without --rebuild the replacement waits in REBUILDING for the next owner: degraded.
"$unbd" volume replace-replica v "$(addr 4)" "$(addr 3)" --replicas "$new" >"$dir/out" 2>&1 \
  && fail "replace onto a server that still holds a copy named v accepted"
grep -q 'already exists' "$dir/out" || fail "existing copy message: $(cat "$dir/out")"

# Resize: one copy alone is refused by its server (the message says how), the whole volume grows.
"$unbd" volume create g --size 64M --replicas "$reps" >/dev/null || fail "create g"
set +e
"$unbd" volume resize g --size 128M --server "$(addr 1)" 2>"$dir/err"; rc=$?
set -e
[ $rc -eq 1 ] || fail "plain resize of a copy: exit $rc"
grep -q "is a copy of replicated volume \"g\": resize it with unbd volume resize g --replicas $reps" "$dir/err" \
  || fail "plain resize message: $(cat "$dir/err")"
"$unbd" volume stat g --server "$(addr 1)" --json | grep -q '"size_bytes": 67108864' \
  || fail "the refused resize changed the copy"
set +e
"$unbd" volume resize g --size 32M --replicas "$reps" 2>"$dir/err"; rc=$?
set -e
[ $rc -eq 2 ] || fail "shrink: exit $rc"
grep -q 'cannot shrink' "$dir/err" || fail "shrink message: $(cat "$dir/err")"
"$unbd" volume resize g --size 128M --replicas "$reps" >"$dir/out" || fail "resize: $(cat "$dir/out")"
grep -q 'volume "g": resized from 64.0 MiB to 128.0 MiB (134217728 bytes)' "$dir/out" \
  || fail "resize output: $(cat "$dir/out")"
[ "$(grep -c ': grown$' "$dir/out")" = 3 ] || fail "3 copies grown: $(cat "$dir/out")"
for n in 1 2 3; do
  "$unbd" volume stat g --server "$(addr $n)" --json | grep -q '"size_bytes": 134217728' \
    || fail "copy on server $n not grown"
done
"$unbd" volume status g --replicas "$reps" >"$dir/out" || fail "status after resize"
grep -q 'size:     128.0 MiB' "$dir/out" || fail "status size: $(cat "$dir/out")"
# One replica down: the majority commits and grows; the returning copy grows at the next open.
stop 3
"$unbd" volume resize g --size 192M --replicas "$reps" --timeout-ms 1000 --json >"$dir/json" \
  || fail "resize with one replica down: $(cat "$dir/json")"
grep -q '"size_bytes": 201326592' "$dir/json" || fail "resize json: $(cat "$dir/json")"
[ "$(grep -c '"grown": true' "$dir/json")" = 2 ] || fail "2 of 3 grown: $(cat "$dir/json")"
start 3 "$(port 3)"
"$unbd" volume resize g --size 192M --replicas "$reps" >"$dir/out" || fail "resize again: $(cat "$dir/out")"
"$unbd" volume stat g --server "$(addr 3)" --json | grep -q '"size_bytes": 201326592' \
  || fail "the returning copy did not grow at the next open"
"$unbd" volume verify g --replicas "$reps" >/dev/null || fail "verify after the resizes"
echo PASS
