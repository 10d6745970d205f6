#!/bin/bash
# Harness self-test guest: prints kernel-problem words in its own output (they must not count as
# a kernel problem), then exits with the status given as $1.
echo "WARNING: this line is the test's output, not the kernel's"
echo "BUG: Oops soft lockup hung_task rcu: INFO blocked for more than 120 seconds"
echo "[    1.000000]-looking text without the kernel saying it"
exit "$1"
