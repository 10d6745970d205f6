#!/bin/bash
# Driver selection: the chosen ublk driver (UNBD_UBLK_DRIVER) loads, creates /dev/ublk-control
# and unloads again cleanly.
set -euo pipefail
. "$UNBD_REPO/tests/vm/guest-lib.sh"

load_ublk_driver
name=$(ublk_driver_name)
case $UNBD_UBLK_DRIVER in
kmod) [ "$name" = unbd_ublk ] || fail "kmod driver is $name, expected unbd_ublk" ;;
upstream) [ "$name" = ublk_drv ] || fail "upstream driver is $name, expected ublk_drv" ;;
esac
[ -c /dev/ublk-control ] || fail "/dev/ublk-control is not a character device"
unload_ublk_driver
wait_gone /dev/ublk-control
grep -q "^$name " /proc/modules && fail "$name still loaded after rmmod"
log "$name: load/unload ok"
