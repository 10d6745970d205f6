# Shared helpers for the replication VM tests (sourced after tests/vm/guest-lib.sh and
# tests/vm/frontend/lib.sh). Three unbd-servers in the guest, each with its own store on the
# guest's tmpfs; their logs are saved to $UNBD_VM_OUT on exit.
#   start_replica I [HOST:PORT]   replica I under /tmp/r$I (restart: pass its old address)
#   start_replicas                replicas 0, 1 and 2; sets reps (HOST:PORT,HOST:PORT,HOST:PORT)
#   create_replicated_volume NAME SIZE   `unbd volume create NAME --size SIZE --replicas $reps`
#   PIDS[i], ADDRS[i]             replica i's server pid and HOST:PORT
[ -x "$UNBD_SERVER_BIN" ] || fail "no unbd-server at $UNBD_SERVER_BIN"

declare -a PIDS ADDRS
start_replica() {
	local i=$1 listen=${2:-127.0.0.1:0}
	mkdir -p "/tmp/r$i"
	rm -f "/tmp/r$i/port"
	"$UNBD_SERVER_BIN" --listen "$listen" --data-dir "/tmp/r$i/db" --port-file "/tmp/r$i/port" --write-buffer-mib 32 \
		--log-level info >>"/tmp/r$i/server.log" 2>&1 &
	PIDS[i]=$!
	wait_until 60 test -s "/tmp/r$i/port" || fail "replica $i did not start: $(tail -5 "/tmp/r$i/server.log")"
	ADDRS[i]=127.0.0.1:$(head -1 "/tmp/r$i/port")
}
start_replicas() {
	local i
	for i in 0 1 2; do start_replica "$i"; done
	reps=${ADDRS[0]},${ADDRS[1]},${ADDRS[2]}
}
create_replicated_volume() {
	# The first connection to a server just started can miss its SETTINGS frame under TCG: retry.
	wait_until 60 "$UNBD" volume create "$1" --size "$2" --replicas "$reps" ||
		fail "volume create $1 failed"
}
save_replica_logs() {
	local i
	for i in 0 1 2; do cp "/tmp/r$i/server.log" "$UNBD_VM_OUT/replica$i.log" 2>/dev/null || true; done
	save_logs
}
trap save_replica_logs EXIT
