#!/usr/bin/env bash
# Memory per key through a running node: RSS growth of a fresh
# `--persistence none` node loaded over the network with KEYS sequential
# keys of 100-byte values, then overwritten once (growth on overwrite would
# be fragmentation rather than held data).
#
#   scripts/mem-per-key.sh [BIN] [KEYS]     # default target/release/ringkv, 1000000
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/ringkv}
KEYS=${2:-1000000}
tmp=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
"$BIN" certs init --dir "$tmp/certs" >/dev/null
"$BIN" serve --certs "$tmp/certs" --data-dir "$tmp/data" --listen 127.0.0.1:0 --persistence none \
    >"$tmp/ready" 2>"$tmp/node.log" &
pid=$!
for _ in $(seq 200); do grep -q serving "$tmp/ready" 2>/dev/null && break; sleep 0.05; done
addr=$(awk '{for (i = 1; i < NF; i++) if ($i == "on") print $(i + 1)}' "$tmp/ready")
[ -n "$addr" ] || { cat "$tmp/node.log"; exit 1; }
export RINGKV_ADDR=$addr RINGKV_CERTS=$tmp/certs
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
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
