#!/usr/bin/env bash
# The memory bound against the process's RSS, by value size: for each size,
# a fresh standalone `--persistence none` node bounded at MAXMEMORY_MB MiB
# (allkeys-lru) is offered 4 × MAXMEMORY_MB MiB of keys (counting each value
# as at least 100 bytes, so small values still overflow the bound several
# times); prints its RSS growth over the idle node against the bound and
# the stated limit, 1.25 × the bound + 64 MiB (README, ARCHITECTURE.md).
#
#   scripts/rss-bound.sh        # MAXMEMORY_MB=32 SIZES="1 100 4000 10000"
set -euo pipefail
cd "$(dirname "$0")/.."

MAXMEMORY_MB=${MAXMEMORY_MB:-32}
SIZES=${SIZES:-1 100 4000 10000}
source scripts/lib.sh

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
for size in $SIZES; do
    serve_single --persistence none --maxmemory "${MAXMEMORY_MB}mb" --maxmemory-policy allkeys-lru
    "$BIN" bench --ops 1000 --keys 1000 --value-size "$size" --read-ratio 0 >/dev/null 2>&1
    base=$(rss_kb "$PID")
    keys=$(( 4 * MAXMEMORY_MB * 1048576 / (size > 100 ? size : 100) ))
    "$BIN" bench --ops "$keys" --keys "$keys" --sequential --value-size "$size" --read-ratio 0 >/dev/null 2>&1
    grown=$(( $(rss_kb "$PID") - base ))
    used=$("$BIN" status 2>/dev/null | awk '/ used [0-9]/ {$1 = $1; print; exit}')
    kill "$PID"
    echo "value $size B, $keys keys offered: RSS growth $((grown / 1024)) MiB =" \
        "$(awk -v g="$grown" -v b="$MAXMEMORY_MB" 'BEGIN {printf "%.2f", g / 1024 / b}') × the bound" \
        "(limit $(( MAXMEMORY_MB * 5 / 4 + 64 )) MiB); status: ${used:-?}"
done
