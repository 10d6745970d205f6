#!/bin/bash
# Harness self-test guest: loads a module whose init does WARN(1) and then exits 0, so any
# failure of the run comes from the kernel-log check alone.
insmod "$1" || echo "insmod $1 returned $?"
exit 0
