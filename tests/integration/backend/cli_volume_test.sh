#!/bin/sh
# `unbd volume create|list|stat|resize|delete` against a real unbd-server: human and --json output,
# error exits for bad input. Usage: cli_volume_test.sh UNBD_BIN UNBD_SERVER_BIN
set -eu
unbd=$1 server=$2
. "$(dirname "$0")/../servers.sh"
fail() { echo "FAIL: $*"; exit 1; }
start 1
srv=$(addr 1)

"$unbd" volume create web --size 1G --server "$srv" | grep -q 'created volume 1 "web"' || fail create
"$unbd" volume create db --size 512M --server "$srv" --json | grep -q '"size_bytes": 536870912' || fail create json
"$unbd" volume create web --size 1G --server "$srv" 2>"$dir/err" && fail "duplicate name accepted"
grep -q 'already exists' "$dir/err" || fail "duplicate message: $(cat "$dir/err")"
"$unbd" volume create bad --size 12345 --server "$srv" 2>"$dir/err" && fail "bad size accepted"
grep -q 'invalid argument' "$dir/err" || fail "bad size message: $(cat "$dir/err")"
"$unbd" volume create bad --size 10X --server "$srv" 2>/dev/null && fail "bad unit accepted"
"$unbd" volume list --server "$srv" | grep -Eq '^2 +db +512.0 MiB' || fail list
[ "$("$unbd" volume list --server "$srv" --json | grep -c '"name"')" = 2 ] || fail "list json"
"$unbd" volume resize web --size 2G --server "$srv" | grep -q '2.0 GiB' || fail resize
"$unbd" volume resize web --size 1G --server "$srv" 2>/dev/null && fail "shrink accepted"
"$unbd" volume stat 1 --server "$srv" --json | grep -q '"size_bytes": 2147483648' || fail "stat by id"
"$unbd" volume delete web --server "$srv" | grep -q 'deleted volume web' || fail delete
"$unbd" volume stat web --server "$srv" 2>"$dir/err" && fail "stat after delete"
grep -q 'not found' "$dir/err" || fail "not found message"
UNBD_SERVER=$srv "$unbd" volume list | grep -q '^2 ' || fail "UNBD_SERVER env"
echo PASS
