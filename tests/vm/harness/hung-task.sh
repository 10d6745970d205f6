#!/bin/bash
# Harness self-test guest: insmod of a module that sleeps in D state at init (run with a short
# hung_task_timeout_secs), then exits 0, so any failure comes from the kernel-log check alone.
insmod "$1" || echo "insmod $1 returned $?"
exit 0
