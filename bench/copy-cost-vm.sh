#!/bin/bash
# Guest side of bench/run-copy-cost.
echo "RESULT copy_cost: $("$UNBD_BUILD_DIR/bench/copy_cost"); guest cpu flags: $(grep -o -w -E 'erms|rep_good' /proc/cpuinfo | sort -u | tr '\n' ' ')"
