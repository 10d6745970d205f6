#!/bin/bash
# Harness self-test guest: outlives any short timeout.
echo "sleeping $1 s"
sleep "$1"
