# Shared helpers for the frontend's VM tests (sourced after tests/vm/guest-lib.sh).
#   UNBD            the unbd binary of the build under test
#   unbd_add ARGS   `unbd add ARGS`, prints the device path, fails the test on error
#   dev_state ID    LIVE / QUIESCED / DEAD from `unbd list --json`
#   daemon_pid ID   the serving daemon's pid
#   check_no_daemon_errors   fails if any daemon logged a double commit
UNBD=${UNBD:-$UNBD_BUILD_DIR/cli/unbd}
[ -x "$UNBD" ] || fail "no unbd binary at $UNBD (build the unbd target first)"
export UNBD_RUN_DIR=${UNBD_RUN_DIR:-/run/unbd}

unbd_add() {
	local out
	out=$("$UNBD" add "$@" 2>&1) || fail "unbd add $* failed: $out"
	echo "$out"
}
dev_state() { "$UNBD" list -n "$1" --json | jq -r '.[0].state'; }
daemon_pid() { "$UNBD" list -n "$1" --json | jq -r '.[0].daemon_pid'; }
is_state() { [ "$(dev_state "$1")" = "$2" ]; }
check_no_daemon_errors() {
	if grep -l "not owned" "$UNBD_RUN_DIR"/*.log 2>/dev/null; then
		fail "a daemon committed a request it did not own"
	fi
}
save_logs() { cp "$UNBD_RUN_DIR"/*.log "$UNBD_VM_OUT"/ 2>/dev/null || true; }

# start_backend [unbd-server args]: an unbd-server on a free port with a fresh store and a 1 GiB
# volume vol0; sets UNBD_SERVER (HOST:PORT) and BACKEND_PID.
UNBD_SERVER_BIN=${UNBD_SERVER_BIN:-$UNBD_BUILD_DIR/backend/unbd-server}
BACKEND_DIR=/tmp/backend
start_backend_process() {
	local listen=${1:-127.0.0.1:0}
	shift || true
	rm -f "$BACKEND_DIR/port"
	"$UNBD_SERVER_BIN" --listen "$listen" --data-dir "$BACKEND_DIR/db" --port-file "$BACKEND_DIR/port" \
		--log-level warn "$@" >>"$BACKEND_DIR/server.log" 2>&1 &
	BACKEND_PID=$!
	wait_until 20 test -s "$BACKEND_DIR/port" || fail "unbd-server did not start: $(tail -5 "$BACKEND_DIR/server.log")"
	UNBD_SERVER=127.0.0.1:$(head -1 "$BACKEND_DIR/port")
}
start_backend() {
	[ -x "$UNBD_SERVER_BIN" ] || fail "no unbd-server at $UNBD_SERVER_BIN"
	mkdir -p "$BACKEND_DIR"
	start_backend_process 127.0.0.1:0 "$@"
	"$UNBD" volume create vol0 --size "${VOLUME_SIZE:-1G}" --server "$UNBD_SERVER" >/dev/null ||
		fail "volume create failed"
	log "unbd-server pid $BACKEND_PID at $UNBD_SERVER, volume vol0"
}
save_backend_log() {
	[ -d "$BACKEND_DIR" ] || return 0
	cp "$BACKEND_DIR/server.log" "$UNBD_VM_OUT/" 2>/dev/null || true
	# The store lives on the guest's tmpfs: how full it got explains an I/O error from the backend.
	{ df -h /tmp; du -sh "$BACKEND_DIR/db"; free -m; } >"$UNBD_VM_OUT/backend-space.txt" 2>&1 || true
}
trap "save_logs; save_backend_log" EXIT
