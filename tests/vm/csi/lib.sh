# Shared helpers for the CSI VM tests (sourced after guest-lib.sh and frontend/lib.sh).
#   start_csi_node          a node as the tests need it: the ublk driver and ext4 loaded, a 64 MiB
#                           backend, the agent started
#   start_csi [args]        unbd-csi on $CSI_SOCK (state in $CSI_DIR), backends $UNBD_SERVER; sets CSI_PID
#   csi CALL [args]         one csi_client call; prints the response
#   expect CODE CALL [args] the call must end with gRPC code CODE (OK, NOT_FOUND, ...)
#   create_volume NAME SIZE prints the new volume's id
#   daemons_for NAME        how many live unbd daemons serve volume NAME
# UNBD_CSI_EXTRA_ARGS adds flags to every unbd-csi (e.g. --heal-interval-ms 60000 to watch the
# daemon-kill test fail without the healer).
CSI_BIN=${CSI_BIN:-$UNBD_BUILD_DIR/csi/unbd-csi}
CSI_CLIENT=${CSI_CLIENT:-$UNBD_BUILD_DIR/tests/vm/csi/csi_client}
[ -x "$CSI_BIN" ] || fail "no unbd-csi at $CSI_BIN"
[ -x "$CSI_CLIENT" ] || fail "no csi_client at $CSI_CLIENT"
CSI_DIR=/tmp/csi
CSI_SOCK=$CSI_DIR/csi.sock
mkdir -p "$CSI_DIR"

start_csi() {
	"$CSI_BIN" --endpoint "unix://$CSI_SOCK" --state-dir "$CSI_DIR/state" --node-id vm-node \
		--backends "$UNBD_SERVER" --unbd "$UNBD" ${UNBD_CSI_EXTRA_ARGS:-} "$@" >>"$CSI_DIR/csi.log" 2>&1 &
	CSI_PID=$!
	wait_until 20 "$CSI_CLIENT" -e "unix://$CSI_SOCK" probe --timeout 1 >/dev/null 2>&1 ||
		fail "unbd-csi did not answer Probe: $(tail -5 "$CSI_DIR/csi.log")"
	log "unbd-csi pid $CSI_PID on $CSI_SOCK"
}
start_csi_node() {
	load_ublk_driver
	modprobe ext4 2>/dev/null || true
	VOLUME_SIZE=64M start_backend
	start_csi
}
csi() { "$CSI_CLIENT" -e "unix://$CSI_SOCK" "$@"; }

code_number() {
	case $1 in
	OK) echo 0 ;; INVALID_ARGUMENT) echo 3 ;; NOT_FOUND) echo 5 ;; ALREADY_EXISTS) echo 6 ;;
	FAILED_PRECONDITION) echo 9 ;; ABORTED) echo 10 ;; UNAVAILABLE) echo 14 ;;
	*) fail "unknown code $1" ;;
	esac
}
expect() {
	local want=$1 rc=0 out
	shift
	out=$(csi "$@" 2>&1) || rc=$?
	[ "$rc" = "$(code_number "$want")" ] || fail "csi $*: expected $want, got exit $rc: $out"
}
create_volume() {
	local out
	out=$(csi create --name "$1" --size "$2" "${@:3}") || fail "CreateVolume $1 failed"
	echo "$out" | jq -r .volume.volumeId
}
daemons_for() {
	"$UNBD" list --json | jq "[.[] | select(.config.remote.volume == \"$1\" and .daemon_alive)] | length"
}
mounts_at() { awk -v p="$1" '$5 == p' /proc/self/mountinfo | wc -l; }
save_csi_log() { cp "$CSI_DIR/csi.log" "$UNBD_VM_OUT/" 2>/dev/null || true; }
trap "save_logs; save_backend_log; save_csi_log" EXIT
