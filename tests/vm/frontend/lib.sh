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
trap save_logs EXIT
