# Real unbd-server processes for the shell integration tests (POSIX sh, sourced after setting
# $server to the unbd-server binary; the test defines fail MESSAGE).
#   $dir            a temporary directory, removed at exit with every process listed in $pids
#   start N [PORT]  server N on 127.0.0.1:PORT (0 or none: ephemeral), data in $dir/dbN
#   stop N          kill -9 of server N
#   addr N, port N  its HOST:PORT, its PORT
dir=$(mktemp -d)
pids=""
cleanup() { for p in $pids; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
start() {
  rm -f "$dir/ports$1"
  "$server" --listen "127.0.0.1:${2:-0}" --data-dir "$dir/db$1" --port-file "$dir/ports$1" \
    --log-level warn 2>>"$dir/log$1" &
  echo $! >"$dir/pid$1"
  pids="$pids $!"
  i=0; while [ ! -s "$dir/ports$1" ]; do i=$((i+1)); [ $i -lt 200 ] || fail "server $1 did not start"; sleep 0.05; done
  echo "127.0.0.1:$(head -1 "$dir/ports$1")" >"$dir/addr$1"
}
stop() { kill -9 "$(cat "$dir/pid$1")"; wait "$(cat "$dir/pid$1")" 2>/dev/null || true; }
addr() { cat "$dir/addr$1"; }
port() { addr "$1" | cut -d: -f2; }
