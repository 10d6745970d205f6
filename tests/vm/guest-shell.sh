#!/bin/bash
# Guest side of `run-in-vm --shell`: an interactive root shell on the serial console, with the
# guest-lib.sh helpers (load_ublk_driver, wait_for_blockdev, ...) already sourced.
rc=$(mktemp)
cat >"$rc" <<RC
[ -f /etc/bash.bashrc ] && . /etc/bash.bashrc
. "$UNBD_REPO/tests/vm/guest-lib.sh"
fail() { echo "FAIL: \$*"; return 1; }   # don't let a helper's failure end the session
PS1='unbd-vm:\w# '
RC
stty sane 2>/dev/null </dev/ttyS0
echo "unbd VM shell (driver $UNBD_UBLK_DRIVER${UNBD_KMOD:+: $UNBD_KMOD}); 'exit' powers the VM off"
# setsid -c makes the serial port the shell's controlling terminal, so Ctrl-C and job control work.
setsid -c -w bash --rcfile "$rc" -i <>/dev/ttyS0 >&0 2>&1
