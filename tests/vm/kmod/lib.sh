# Helpers shared by the module's VM test scripts (sourced after guest-lib.sh).
tool=$UNBD_BUILD_DIR/tests/vm/kmod/ublk-tool
[ -x "$tool" ] || fail "$tool is missing: build the ublk-tool target first"

# However a script ends, no server may survive it: a live server that holds requests would keep
# the guest from shutting down (its disk cannot be synced), hiding the real failure.
trap 'pkill -9 -x ublk-tool 2>/dev/null || true' EXIT

# start_server ID OUT [serve options...]: starts ublk-tool serve in the background and waits until
# /dev/ublkbID is usable. Sets $server_pid.
start_server() {
	local id=$1 out=$2
	shift 2
	"$tool" serve --id "$id" "$@" >"$out" 2>&1 &
	server_pid=$!
	wait_until 30 grep -q READY "$out" || fail "server for dev $id did not start: $(cat "$out")"
	wait_for_blockdev "/dev/ublkb$id" 10
}

# start_recovery ID OUT [options...]: runs ublk-tool recover in the background, waits for
# RECOVERED and sets $server_pid and $recover_ms.
start_recovery() {
	local id=$1 out=$2
	shift 2
	"$tool" recover --id "$id" "$@" >"$out" 2>&1 &
	server_pid=$!
	wait_until 30 grep -q RECOVERED "$out" || fail "recovery of dev $id failed: $(cat "$out")"
	recover_ms=$(sed -n 's/.*recover_ms=\([0-9.]*\).*/\1/p' "$out")
}

# kill_and_wait ID PID STATE: SIGKILLs the server and sets $death_ms to the time the device took
# to reach STATE (QUIESCED or DEAD).
kill_and_wait() {
	local out
	out=$("$tool" kill-wait --id "$1" --pid "$2" --state "$3") || fail "dev $1 never reached $3: $out"
	death_ms=$(sed -n 's/.*after_ms=\([0-9.]*\).*/\1/p' <<<"$out")
	# Reap the killed server so that it is not left as a zombie holding nothing.
	wait "$2" 2>/dev/null || true
}

# Our module promises death detection within 100 ms; Linux 6.1's driver does not.
check_death_ms() {
	local what=$1
	if [ "$UNBD_UBLK_DRIVER" = kmod ]; then
		local limit=${UNBD_KMOD_DEATH_MS_LIMIT:-100}
		awk -v ms="$death_ms" -v limit="$limit" 'BEGIN { exit !(ms < limit) }' ||
			fail "$what took $death_ms ms (must be < $limit ms)"
	fi
}

# dev_state ID: the device's state as GET_DEV_INFO reports it (LIVE, QUIESCED, DEAD).
dev_state() { "$tool" info --id "$1" | sed -n 's/.* state=\([A-Z]*\).*/\1/p'; }
# dev_state_is ID STATE: for wait_until, which re-runs it.
dev_state_is() { [ "$(dev_state "$1")" = "$2" ]; }

wait_pid_gone() { # PID SECONDS
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	return 1
}
