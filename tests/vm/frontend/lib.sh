# Shared helpers for the frontend's VM tests (sourced after tests/vm/guest-lib.sh).
#   UNBD            the unbd binary of the build under test
#   unbd_add ARGS   `unbd add ARGS`, prints the device path, fails the test on error
#   dev_state ID    LIVE / QUIESCED / DEAD from `unbd list --json`
#   daemon_pid ID   the serving daemon's pid
#   check_no_daemon_errors   fails if any daemon logged a double commit
#   ext4_roundtrip DEV MNT MIB   mkfs, files of MIB..4*MIB MiB, remount, checksums (sums in /tmp/sums)
#   fence_* the two fencing tests' common steps (see below)
#   fio_iops DEV RW QD SIZE RUNTIME   IOPS of 4 KiB random I/O; prefill DEV SIZE   writes it once
#   start_backend [ARGS]   unbd-server on an ephemeral port with volume vol0 ($UNBD_SERVER)
#   settle_backend         waits until the backend store's memtable flushes are done
#   start_nbd_device SIZE  kernel nbd on /dev/nbd0 from nbd-server on loopback (the remote's peer)
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
device_epoch() { "$UNBD" list -n "$1" --json | jq -r '.[0].epoch'; }
is_state() { [ "$(dev_state "$1")" = "$2" ]; }
standby_pid() { "$UNBD" list -n "$1" --json | jq -r '.[0].standby_pid // 0'; }
# device_fields ID: "daemon_pid state epoch standby_pid" from one `unbd list` (each process start
# costs a few hundred ms in a loaded TCG guest), for `read -r pid state epoch spid < <(...)`.
device_fields() {
	"$UNBD" list -n "$1" --json | jq -r '.[0] | "\(.daemon_pid) \(.state) \(.epoch // 0) \(.standby_pid // 0)"'
}
standby_ready() { # device $1 (--standby) has a standby that is up, connected and waiting
	local pid state epoch s
	read -r pid state epoch s < <(device_fields "$1")
	[ "$s" != 0 ] && { [ "$(</proc/"$s"/comm)" = unbd-standby ]; } 2>/dev/null &&
		grep -q "standby $s for device $1 (daemon pid $pid) ready" "$UNBD_RUN_DIR/$1.log"
}
check_no_daemon_errors() {
	if grep -l "not owned" "$UNBD_RUN_DIR"/*.log 2>/dev/null; then
		fail "a daemon committed a request it did not own"
	fi
}
ext4_roundtrip() {
	local dev=$1 mnt=$2 mib=$3 i
	log "ext4: mkfs, write, unmount, remount, compare"
	modprobe ext4 2>/dev/null || true
	mkfs.ext4 -q -F "$dev" || fail "mkfs.ext4 failed"
	mkdir -p "$mnt"
	mount "$dev" "$mnt"
	for i in 1 2 3 4; do dd if=/dev/urandom of="$mnt/f$i" bs=1M count=$((i * mib)) status=none; done
	(cd "$mnt" && sha256sum f*) >/tmp/sums
	sync
	umount "$mnt"
	mount "$dev" "$mnt"
	(cd "$mnt" && sha256sum -c --quiet /tmp/sums) || fail "checksums differ after remount"
	umount "$mnt"
}

# The fencing tests: a remote --recovery --reissue device on vol0 (sets dev, id, epoch1), patterns
# A and B in /tmp/a and /tmp/b, and a background O_DIRECT write of A to block 7 (sets writer).
fence_start_device_and_write_a() {
	dev=$(unbd_add -t remote --server "$UNBD_SERVER" --volume vol0 --recovery --reissue)
	wait_for_blockdev "$dev"
	id=${dev#/dev/ublkb}
	epoch1=$(device_epoch "$id")
	printf 'A%.0s' $(seq 4096) >/tmp/a
	printf 'B%.0s' $(seq 4096) >/tmp/b
	[ -z "${1:-}" ] || echo "$epoch1" >"$1" # the hold file, when the backend has one
	(dd if=/tmp/a of="$dev" bs=4k seek=7 oflag=direct status=none) &
	writer=$!
}
# While A is stuck at the backend: kill -9 the daemon, recover (a higher epoch, sets epoch2), the
# re-issued A completes, then the application writes B to block 7.
fence_recover_and_write_b() {
	kill -9 "$(daemon_pid "$id")"
	"$UNBD" recover -n "$id" || fail "recover failed"
	epoch2=$(device_epoch "$id")
	[ "$epoch2" -gt "$epoch1" ] || fail "epoch did not go up: $epoch1 -> $epoch2"
	wait "$writer" || fail "the re-issued write failed"
	dd if=/tmp/b of="$dev" bs=4k seek=7 oflag=direct status=none || fail "the new write failed"
}
fence_block7_holds_b() {
	dd if="$dev" of=/tmp/back bs=4k skip=7 count=1 iflag=direct status=none
	cmp -s /tmp/b /tmp/back
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
	# The store lives on the guest's tmpfs (2 GiB with everything else): a 32 MiB memtable caps the
	# WAL at 256 MiB, so a long fio run cannot fill the disk with logs (default 128: 1 GiB).
	"$UNBD_SERVER_BIN" --listen "$listen" --data-dir "$BACKEND_DIR/db" --port-file "$BACKEND_DIR/port" \
		--log-level warn --write-buffer-mib "${UNBD_BACKEND_WRITE_BUFFER_MIB:-32}" "$@" >>"$BACKEND_DIR/server.log" 2>&1 &
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
# fio_iops DEV RW QD SIZE RUNTIME -> IOPS of 4 KiB direct I/O (RW randread or randwrite) over the
# first SIZE of DEV for RUNTIME seconds after a 1 s ramp.
fio_iops() {
	fio --name=b --filename="$1" --ioengine=io_uring --direct=1 --rw="$2" --bs=4k --iodepth="$3" \
		--size="$4" --time_based --runtime="$5" --ramp_time=1 --output-format=json 2>/dev/null |
		jq -r "if \"$2\" == \"randread\" then .jobs[0].read.iops else .jobs[0].write.iops end | floor"
}
# prefill DEV SIZE: writes the first SIZE of DEV once, so reads find data.
prefill() {
	fio --name=fill --filename="$1" --ioengine=io_uring --direct=1 --rw=write --bs=1M --size="$2" --iodepth=4 \
		>/dev/null || fail "prefill $1"
}
# settle_backend: waits (up to 120 s) until the backend store has finished every memtable flush it
# started; prints how long that took.
settle_backend() {
	local log=$BACKEND_DIR/db/LOG t0=$SECONDS started finished
	sleep 2  # a flush triggered by the last prefill write starts shortly after it
	while [ $((SECONDS - t0)) -lt 120 ]; do
		started=$(grep -c '"event": "flush_started"' "$log" 2>/dev/null || true)
		finished=$(grep -c '"event": "flush_finished"' "$log" 2>/dev/null || true)
		[ "${started:-0}" = "${finished:-0}" ] && break
		sleep 1
	done
	log "backend store settled after $((SECONDS - t0)) s (${finished:-0} memtable flushes)"
}
# start_nbd_device SIZE: the peer of the remote target, kernel nbd on /dev/nbd0 served by Debian's
# nbd-server from a file of SIZE on loopback.
start_nbd_device() {
	truncate -s "$1" /tmp/nbd.img
	printf '[generic]\n[peer]\nexportname = /tmp/nbd.img\n' >/tmp/nbd.conf
	nbd-server -C /tmp/nbd.conf || fail "nbd-server did not start"
	modprobe nbd nbds_max=2 || fail "modprobe nbd"
	wait_until 10 nbd-client -N peer 127.0.0.1 /dev/nbd0 >/dev/null 2>&1 || fail "nbd-client could not connect"
	wait_for_blockdev /dev/nbd0
}
save_backend_log() {
	[ -d "$BACKEND_DIR" ] || return 0
	cp "$BACKEND_DIR/server.log" "$UNBD_VM_OUT/" 2>/dev/null || true
	# The store lives on the guest's tmpfs: how full it got explains an I/O error from the backend.
	{ df -h /tmp; du -sh "$BACKEND_DIR/db"; free -m; } >"$UNBD_VM_OUT/backend-space.txt" 2>&1 || true
}
trap "save_logs; save_backend_log" EXIT
