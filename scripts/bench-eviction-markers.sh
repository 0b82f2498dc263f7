#!/usr/bin/env bash
# How many eviction markers a cluster holds when its cache turns over more
# slowly than `tombstone_grace`: three nodes bounded at MAXMEMORY
# (allkeys-lru, `tombstone_grace` GRACE, `repair_interval` REPAIR) are
# filled with keys "old:…", left alone past the grace, then written new keys
# "new:…" for DURATION with CONCURRENCY requests in flight (a moderate rate,
# so the victims are the old keys). Prints, per node, stored entries, live
# values, the dead markers between them, evictions and refused writes.
#
#   scripts/bench-eviction-markers.sh   # MAXMEMORY=32mb GRACE=90s REPAIR=5s DURATION=90s CONCURRENCY=1
#   BIN=../wt-prev/target/release/ringkv scripts/bench-eviction-markers.sh   # another build
set -euo pipefail
cd "$(dirname "$0")/.."

MAXMEMORY=${MAXMEMORY:-32mb}
GRACE=${GRACE:-90s}
REPAIR=${REPAIR:-5s}
DURATION=${DURATION:-90s}
CONCURRENCY=${CONCURRENCY:-1}
source scripts/lib.sh

cat >"$tmp/node.toml" <<TOML
maxmemory = "$MAXMEMORY"
maxmemory_policy = "allkeys-lru"
tombstone_grace = "$GRACE"
repair_interval = "$REPAIR"
TOML
cluster3 "$tmp/node.toml"

limit=$(awk -v m="$MAXMEMORY" 'BEGIN {n = m + 0; print n * 1048576}')
old=$(( limit / 168 ))
"$BIN" bench --ops "$old" --keys "$old" --sequential --key-prefix old --value-size 100 --read-ratio 0 \
    --concurrency 50 >/dev/null 2>&1
grace_s=$(awk -v g="$GRACE" 'BEGIN {n = g + 0; if (g ~ /m$/) n *= 60; print n}')
sleep $(( grace_s + 5 ))
json=$("$BIN" bench --duration "$DURATION" --keys 1000000000 --key-prefix new --value-size 100 --read-ratio 0 \
    --concurrency "$CONCURRENCY" --json 2>/dev/null)
ops=$(echo "$json" | field put ops)
errors=$(echo "$json" | sed -E 's/.*"errors":([0-9]+).*/\1/')
echo "3 nodes at $MAXMEMORY, tombstone_grace $GRACE, repair_interval $REPAIR: $old old keys, then $DURATION of" \
    "new keys at concurrency $CONCURRENCY: $ops acknowledged, $errors refused"
"$BIN" status | awk '$2 ~ /:[0-9]+$/ && $7 ~ /^[0-9]+$/ && $8 ~ /^[0-9]+$/ {
    printf "  %-12s entries %s, values %s, dead markers %s\n", $1, $7, $8, $7 - $8 }'
"$BIN" status | sed -n '/^memory/,/^[a-z]/p' | grep '^  '
