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
# start NAME [serve args...]: a clustered node; sets ADDR and GOSSIP.
start() {
    local name=$1; shift
    node_cert "$name"
    "$BIN" serve --config "$tmp/node.toml" --node-id "$name" --certs "$tmp/certs" --data-dir "$tmp/$name" \
        --listen 127.0.0.1:0 --gossip 127.0.0.1:0 "$@" >"$tmp/$name.ready" 2>"$tmp/$name.log" &
    pids+=("$!")
    for _ in $(seq 400); do grep -q serving "$tmp/$name.ready" 2>/dev/null && break; sleep 0.05; done
    ADDR=$(awk '{for (i = 1; i < NF; i++) if ($i == "on") print $(i + 1)}' "$tmp/$name.ready")
    GOSSIP=$(awk '{for (i = 1; i < NF; i++) if ($i == "gossip") print $(i + 1)}' "$tmp/$name.ready")
    [ -n "$ADDR" ] || { cat "$tmp/$name.log"; exit 1; }
}
start c1
first=$ADDR addrs=$ADDR seed=$GOSSIP
start c2 --seeds "$seed"
addrs=$addrs,$ADDR
start c3 --seeds "$seed"
addrs=$addrs,$ADDR
serving() { { RINGKV_ADDR=$first "$BIN" status --brief 2>/dev/null || true; } | awk '$3 == "serving" && $4 == "yes"' | wc -l; }
for _ in $(seq 300); do [ "$(serving)" = 3 ] && break; sleep 0.1; done
[ "$(serving)" = 3 ] || { echo "the cluster did not form"; exit 1; }
json=$(RINGKV_ADDR=$addrs "$BIN" bench --keys 100000000 --value-size 100 --concurrency 50 --duration "$DURATION" \
    --read-ratio 0 --json 2>/dev/null)
ops=$(echo "$json" | field put ops)
errors=$(echo "$json" | sed -E 's/.*"errors":([0-9]+).*/\1/')
echo "3 nodes at $MAXMEMORY, allkeys-lru, tombstone_grace $GRACE, repair_interval $REPAIR, $DURATION of random PUTs:" \
    "$ops acknowledged, $errors refused ($(awk -v e="$errors" -v o="$ops" 'BEGIN {printf "%.1f", 100 * e / (e + o)}')%)"
RINGKV_ADDR=$addrs "$BIN" status | sed -n '/^memory/,/^[a-z]/p' | grep '^  '
