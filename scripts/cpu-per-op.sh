#!/usr/bin/env bash
# CPU time per operation of a fresh single node and of the `ringkv bench`
# client driving it: the server's user and system time from /proc around a
# fixed number of operations, the client's from /usr/bin/time. Steadier
# than throughput on a shared machine, and it shows where time goes
# (system time here is mostly QUIC's sockets).
#
#   scripts/cpu-per-op.sh BIN OPS READ_RATIO
#   for i in 1 2 3 4; do for b in ../wt-base/target/release/ringkv target/release/ringkv; do
#       scripts/cpu-per-op.sh "$b" 200000 0; done; done
set -euo pipefail
BIN=$1 OPS=$2 RATIO=$3
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
"$BIN" certs init --dir "$tmp/certs" >/dev/null
"$BIN" serve --certs "$tmp/certs" --data-dir "$tmp/data" --listen 127.0.0.1:0 --fsync everysec \
    >"$tmp/ready" 2>"$tmp/node.log" &
pid=$!
for _ in $(seq 200); do grep -q serving "$tmp/ready" 2>/dev/null && break; sleep 0.05; done
addr=$(awk '{for (i = 1; i < NF; i++) if ($i == "on") print $(i + 1)}' "$tmp/ready")
[ -n "$addr" ] || { cat "$tmp/node.log"; exit 1; }
export RINGKV_ADDR=$addr RINGKV_CERTS=$tmp/certs
ticks() { awk '{print $14, $15}' "/proc/$pid/stat"; }
read -r u0 s0 < <(ticks)
out=$(/usr/bin/time -f "CLIENT %U %S" "$BIN" bench --keys 1000000 --value-size 100 --concurrency 50 \
    --ops "$OPS" --read-ratio "$RATIO" --seed 1 --json 2>&1)
read -r u1 s1 < <(ticks)
op=$([ "$RATIO" = 0 ] && echo put || echo get)
ops=$(echo "$out" | grep -o "\"$op\":{[^}]*" | sed -E 's/.*"ops_per_sec":([0-9.]+).*/\1/')
client=$(echo "$out" | awk '/^CLIENT/ {print $2 + $3}')
awk -v u="$((u1 - u0))" -v s="$((s1 - s0))" -v hz="$(getconf CLK_TCK)" -v c="$client" -v n="$OPS" -v o="$ops" \
    'BEGIN {printf "server user %.1f sys %.1f us/op   client %.1f us/op   %s ops/s\n", u/hz/n*1e6, s/hz/n*1e6, c/n*1e6, o}'
