#!/usr/bin/env bash
# CPU time per operation of a fresh single node and of the `ringkv bench`
# client driving it: the server's user and system time from /proc around a
# fixed number of operations, the client's from /usr/bin/time. Steadier
# than throughput on a shared machine, and it shows where time goes
# (system time here is mostly QUIC's sockets).
#
#   scripts/cpu-per-op.sh [OPS] [READ_RATIO]          # this tree's build; 200000, 0
#   BIN=../wt-base/target/release/ringkv scripts/cpu-per-op.sh   # another build
set -euo pipefail
cd "$(dirname "$0")/.."
OPS=${1:-200000}
RATIO=${2:-0}
source scripts/lib.sh

serve_single --fsync everysec
ticks() { awk '{print $14, $15}' "/proc/$PID/stat"; }
read -r u0 s0 < <(ticks)
out=$(/usr/bin/time -f "CLIENT %U %S" "$BIN" bench --keys 1000000 --value-size 100 --concurrency 50 \
    --ops "$OPS" --read-ratio "$RATIO" --seed 1 --json 2>&1)
read -r u1 s1 < <(ticks)
op=$([ "$RATIO" = 0 ] && echo put || echo get)
client=$(echo "$out" | awk '/^CLIENT/ {print $2 + $3}')
awk -v u="$((u1 - u0))" -v s="$((s1 - s0))" -v hz="$(getconf CLK_TCK)" -v c="$client" -v n="$OPS" \
    -v o="$(echo "$out" | grep '^{' | field "$op" ops_per_sec)" \
    'BEGIN {printf "server user %.1f sys %.1f us/op   client %.1f us/op   %s ops/s\n", u/hz/n*1e6, s/hz/n*1e6, c/n*1e6, o}'
