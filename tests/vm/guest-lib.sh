# Helpers for scripts that run inside the VM guest (through run-in-vm). Source it:
#   . "$UNBD_REPO/tests/vm/guest-lib.sh"
#
#   log MSG...               prints "[test +<seconds>s] MSG" on the console
#   fail MSG...              prints "FAIL: MSG" and exits 1
#   skip MSG...              prints "SKIP: MSG" and exits 77
#   assert CMD...            runs CMD, fails with its text if it returns non-zero
#   wait_for_path PATH [S]   waits up to S seconds (default 10) for PATH to exist
#   wait_for_blockdev DEV [S]  waits for DEV to be a block device with non-zero size
#   wait_gone PATH [S]       waits for PATH to disappear
#   load_ublk_driver         loads $UNBD_KMOD (the .ko for $UNBD_UBLK_DRIVER), waits for
#                            /dev/ublk-control; fails with the reason if there is no .ko
#   unload_ublk_driver       rmmod of the loaded driver
#   ublk_driver_name         module name of $UNBD_KMOD (unbd_ublk or ublk_drv)
#   start_verifying_writer REPORT FIO_ARGS...  back-to-back time-based fio random-write runs with
#                            --verify=crc32c (reports REPORT-1.txt, REPORT-2.txt, ...; FIO_ARGS
#                            name the device, sizes, depth, runtime) until stop_verifying_writer;
#                            sets writer_pid. A run's length varies a lot under TCG, and fio exits
#                            128 when interrupted, hence runs that end by themselves.
#   stop_verifying_writer    lets the current run finish; fails unless every run exited 0 with
#                            "err= 0" and no_kernel_io_errors passes; logs the run count
#   no_kernel_io_errors      fails if the kernel logged an I/O error (any device) or a failed
#                            request on a ublk device
#
# The script runs with `set -euo pipefail`-friendly helpers; cwd is the repository, /tmp is a
# fresh tmpfs, files written to $UNBD_VM_OUT are kept in the host's run directory.

_guest_lib_t0=$EPOCHSECONDS

log() { echo "[test +$((EPOCHSECONDS - _guest_lib_t0))s] $*"; }
fail() {
	echo "FAIL: $*"
	exit 1
}
skip() {
	echo "SKIP: $*"
	exit 77
}
assert() {
	"$@" || fail "assertion failed (status $?): $*"
}

# wait_until SECONDS CMD...: polls CMD every 0.1 s.
wait_until() {
	local limit=$1 i
	shift
	for ((i = 0; i < limit * 10; i++)); do
		"$@" && return 0
		sleep 0.1
	done
	"$@"
}
_blockdev_ready() { [ -b "$1" ] && [ "$(blockdev --getsize64 "$1" 2>/dev/null || echo 0)" -gt 0 ]; }
_absent() { [ ! -e "$1" ]; }

wait_for_path() {
	wait_until "${2:-10}" test -e "$1" || fail "$1 did not appear within ${2:-10}s"
}
wait_for_blockdev() {
	wait_until "${2:-10}" _blockdev_ready "$1" || fail "$1 is not a usable block device after ${2:-10}s"
}
wait_gone() {
	wait_until "${2:-10}" _absent "$1" || fail "$1 still exists after ${2:-10}s"
}

ublk_driver_name() {
	basename "${UNBD_KMOD:?UNBD_KMOD unset}" .ko
}

load_ublk_driver() {
	if [ -z "${UNBD_KMOD:-}" ]; then
		fail "no ublk driver to load (UNBD_UBLK_DRIVER=${UNBD_UBLK_DRIVER:-unset}): ${UNBD_KMOD_ERROR:-UNBD_KMOD is not set}"
	fi
	[ -f "$UNBD_KMOD" ] || fail "ublk driver $UNBD_KMOD does not exist"
	if ! grep -q "^$(ublk_driver_name) " /proc/modules; then
		insmod "$UNBD_KMOD" || fail "insmod $UNBD_KMOD failed"
	fi
	wait_for_path /dev/ublk-control 10
	log "loaded $(ublk_driver_name) ($UNBD_UBLK_DRIVER driver)"
}

unload_ublk_driver() {
	rmmod "$(ublk_driver_name)" || fail "rmmod $(ublk_driver_name) failed"
}

start_verifying_writer() {
	_writer_report=$1
	shift
	rm -f /tmp/stop-writer
	(
		n=0
		while [ ! -e /tmp/stop-writer ]; do
			n=$((n + 1))
			fio --name=verify --rw=randwrite --ioengine=libaio --direct=1 --verify=crc32c --verify_fatal=1 \
				--time_based --eta=never "$@" --output="$_writer_report-$n.txt" ||
				{ echo "fio run $n exited with status $?: $(cat "$_writer_report-$n.txt")"; exit 1; }
		done
	) &
	writer_pid=$!
}
stop_verifying_writer() {
	touch /tmp/stop-writer
	wait "$writer_pid" || fail "a fio run failed (see $_writer_report-*.txt)"
	grep -L "err= 0" "$_writer_report"-*.txt | grep . && fail "fio reported errors"
	no_kernel_io_errors
	log "$(ls "$_writer_report"-*.txt | wc -l) fio runs, all exited 0 with data verified"
}
no_kernel_io_errors() {
	local errors
	errors=$(dmesg | grep -iE "I/O error|blk_update_request.*ublkb" || true)
	[ -z "$errors" ] || fail "the kernel logged I/O errors: $(echo "$errors" | head -5)"
}
