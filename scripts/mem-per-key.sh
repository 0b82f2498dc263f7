#!/usr/bin/env bash
# Memory per key through a running node: RSS growth of a fresh
# `--persistence none` node loaded over the network with KEYS sequential
# keys of 100-byte values, then overwritten once (growth on overwrite would
# be fragmentation rather than held data).
#
#   scripts/mem-per-key.sh [KEYS]                     # this tree's build; 1000000
#   BIN=../wt-base/target/release/ringkv scripts/mem-per-key.sh   # another build
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${1:-1000000}
source scripts/lib.sh

serve_single --persistence none
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }
load() { "$BIN" bench --ops "$KEYS" --keys "$KEYS" --sequential --value-size 100 --read-ratio 0 >/dev/null 2>&1; }
# Warm the connection and the runtime first, so the base is a serving node.
"$BIN" bench --ops 1000 --keys 1000 --value-size 100 --read-ratio 0 >/dev/null 2>&1
base=$(rss_kb)
load
loaded=$(rss_kb)
load
again=$(rss_kb)
echo "rss: base $((base / 1024)) MiB, loaded $((loaded / 1024)) MiB, overwritten $((again / 1024)) MiB;" \
    "$(( (loaded - base) * 1024 / KEYS )) bytes per key"
