#!/usr/bin/env bash
# deploy/dkms/install builds and installs unbd_ublk.ko through DKMS for the guest's kernel, and the
# installed module loads with modprobe (found by depmod under updates/dkms) and serves a device.
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"

command -v dkms >/dev/null || fail "dkms is not installed (scripts/install-deps)"
kver=$(uname -r)
kdir=$("$UNBD_REPO/tests/vm/fetch-kernel" --print-kdir)

# The image's modules are bound read-only from the host; DKMS installs into them, so lay a
# writable overlay on top (copying them over 9p takes minutes under TCG) and link the headers in
# as an installed kernel has them.
mkdir -p /tmp/modules/upper /tmp/modules/work
mount -t overlay overlay -o "lowerdir=/lib/modules/$kver,upperdir=/tmp/modules/upper,workdir=/tmp/modules/work" \
	"/lib/modules/$kver" || fail "cannot make /lib/modules/$kver writable"
ln -sfn "$kdir" "/lib/modules/$kver/build"

log "deploy/dkms/install -k $kver"
"$UNBD_REPO/deploy/dkms/install" -k "$kver" || fail "dkms install failed"
status=$(dkms status unbd-ublk)
grep -q "$kver.*: installed" <<<"$status" || fail "dkms does not list unbd-ublk as installed: $status"
ko=$(modinfo -n unbd_ublk) || fail "modinfo cannot find the installed unbd_ublk"
case $ko in */updates/dkms/*) ;; *) fail "unbd_ublk resolved to $ko, not the DKMS build" ;; esac

modprobe unbd_ublk
wait_for_path /dev/ublk-control 5
"$UNBD_BUILD_DIR/cli/unbd" add -t null -n 0 >/dev/null
wait_for_blockdev /dev/ublkb0 10
dd if=/dev/ublkb0 of=/dev/null bs=1M count=4 iflag=direct status=none || fail "reading the null device failed"
"$UNBD_BUILD_DIR/cli/unbd" del -n 0
modprobe -r unbd_ublk || fail "the DKMS module did not unload"
log "DKMS module built, installed, loaded, served I/O and unloaded"
