#!/usr/bin/env bash
# Sustained eviction in a cluster: three nodes bounded at MAXMEMORY
# (allkeys-lru) under DURATION of random 100-byte PUTs over a key space far
# larger than fits, with the delete markers' `tombstone_grace` and the
# `repair_interval` that bounds their purge set to GRACE and REPAIR. Prints
# how many PUTs were refused (eviction markers count against the bound).
#
#   scripts/bench-cluster-eviction.sh        # MAXMEMORY=32mb DURATION=60s GRACE=10m REPAIR=30s
#   GRACE=5s REPAIR=5s scripts/bench-cluster-eviction.sh
set -euo pipefail
cd "$(dirname "$0")/.."

MAXMEMORY=${MAXMEMORY:-32mb}
DURATION=${DURATION:-60s}
GRACE=${GRACE:-10m}
REPAIR=${REPAIR:-30s}
source scripts/lib.sh

cat >"$tmp/node.toml" <<TOML
maxmemory = "$MAXMEMORY"
maxmemory_policy = "allkeys-lru"
tombstone_grace = "$GRACE"
repair_interval = "$REPAIR"
TOML
cluster3 "$tmp/node.toml"
json=$("$BIN" bench --keys 100000000 --value-size 100 --concurrency 50 --duration "$DURATION" \
    --read-ratio 0 --json 2>/dev/null)
ops=$(echo "$json" | field put ops)
errors=$(echo "$json" | sed -E 's/.*"errors":([0-9]+).*/\1/')
echo "3 nodes at $MAXMEMORY, allkeys-lru, tombstone_grace $GRACE, repair_interval $REPAIR, $DURATION of random PUTs:" \
    "$ops acknowledged, $errors refused ($(awk -v e="$errors" -v o="$ops" 'BEGIN {printf "%.1f", 100 * e / (e + o)}')%)"
"$BIN" status | sed -n '/^memory/,/^[a-z]/p' | grep '^  '
