#!/usr/bin/env python3
"""Latency probe for recovery tests: reads one 4 KiB block with O_DIRECT from DEV in a loop, one
at a time, and appends "<issued_us> <completed_us>" (wall clock, microseconds) to LOG for each read.
Started before a daemon is killed, it shows when I/O completes again without paying a process
start-up (slow under TCG) inside the measured interval.
Usage: probe.py DEV LOG [INTERVAL_MS]"""
import mmap
import os
import random
import sys
import time

dev, log = sys.argv[1], sys.argv[2]
interval = float(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0.005
fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
blocks = os.lseek(fd, 0, os.SEEK_END) // 4096
buf = mmap.mmap(-1, 4096)  # page aligned, as O_DIRECT needs
with open(log, "a", buffering=1) as out:
    while True:
        issued = time.time_ns() // 1000
        os.preadv(fd, [buf], random.randrange(blocks) * 4096)
        out.write(f"{issued} {time.time_ns() // 1000}\n")
        time.sleep(interval)
