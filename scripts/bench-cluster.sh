#!/usr/bin/env bash
# Cluster benchmarks, on loopback, all in one run so the ratios are fair:
#   1. `ringkv bench` PUT and GET against a single node, a 3-node cluster
#      (N=3, W=2, R=2) and a second 3-node cluster with replication
#      batching off (replica_batch_max = 1), alternating, RUNS times each;
#   2. failure detection: SIGKILL a cluster node, time until another node
#      reports it down (RUNS times);
#   3. hint drain: with one node down, write HINT_KEYS keys, restart it and
#      time until no hints are pending.
#
#   scripts/bench-cluster.sh       # RUNS=3 DURATION=8s HINT_KEYS=20000
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-8s}
HINT_KEYS=${HINT_KEYS:-20000}
source scripts/lib.sh

# start NAME LISTEN [serve args...]: starts a node, waits for its ready
# line, and sets ADDR / GOSSIP / PID.
start() {
    local name=$1 listen=$2; shift 2
    node_cert "$name"
    "$BIN" serve --node-id "$name" --certs "$tmp/certs" --data-dir "$tmp/$name" --listen "$listen" "$@" \
        >"$tmp/$name.ready" 2>"$tmp/$name.log" &
    PID=$!
    pids+=("$PID")
    for _ in $(seq 400); do grep -q serving "$tmp/$name.ready" 2>/dev/null && break; sleep 0.05; done
    ADDR=$(awk '{for (i = 1; i < NF; i++) if ($i == "on") print $(i + 1)}' "$tmp/$name.ready")
    GOSSIP=$(awk '{for (i = 1; i < NF; i++) if ($i == "gossip") print $(i + 1)}' "$tmp/$name.ready")
    [ -n "$ADDR" ] || { echo "node $name did not start:"; cat "$tmp/$name.log"; exit 1; }
}

bench() { # addr read-ratio seed
    RINGKV_ADDR=$1 "$BIN" bench --keys 1000000 --value-size 100 --concurrency 50 --duration "$DURATION" \
        --read-ratio "$2" --seed "$3" --json 2>/dev/null
}

start single 127.0.0.1:0 --fsync everysec
single=$ADDR
start c1 127.0.0.1:0 --fsync everysec --gossip 127.0.0.1:0
c1=$ADDR seed=$GOSSIP
c1_pid=$PID
start c2 127.0.0.1:0 --fsync everysec --gossip 127.0.0.1:0 --seeds "$seed"
c2=$ADDR c2_pid=$PID c2_gossip=$GOSSIP
start c3 127.0.0.1:0 --fsync everysec --gossip 127.0.0.1:0 --seeds "$seed"
c3=$ADDR
cluster=$c1,$c2,$c3
# The same cluster without replication batching, for the batching ratio.
sed 's/^replica_batch_max = .*/replica_batch_max = 1/' config/node.toml >"$tmp/unbatched.toml"
grep -q '^replica_batch_max = 1$' "$tmp/unbatched.toml"
start u1 127.0.0.1:0 --config "$tmp/unbatched.toml" --fsync everysec --gossip 127.0.0.1:0
u1=$ADDR useed=$GOSSIP
start u2 127.0.0.1:0 --config "$tmp/unbatched.toml" --fsync everysec --gossip 127.0.0.1:0 --seeds "$useed"
u2=$ADDR
start u3 127.0.0.1:0 --config "$tmp/unbatched.toml" --fsync everysec --gossip 127.0.0.1:0 --seeds "$useed"
unbatched=$u1,$u2,$ADDR
sleep 3

declare -A results
for run in $(seq "$RUNS"); do
    for target in single cluster unbatched; do
        addr=${!target}
        results[$target.put]+="$(bench "$addr" 0 "$run")"$'\n'
        results[$target.get]+="$(bench "$addr" 1 "$run")"$'\n'
    done
done
echo "ringkv bench: 1M-key space, 100-byte values, 50 in flight, $DURATION per run, median of $RUNS runs, $(nproc) cores"
printf '%-22s %10s %9s %9s %18s\n' target ops/s p50_ms p99_ms "cluster/single"
for op in put get; do
    s_ops=$(printf '%s' "${results[single.$op]}" | grep . | field "$op" ops_per_sec | median)
    for target in single cluster unbatched; do
        r=$(printf '%s' "${results[$target.$op]}" | grep .)
        ops=$(echo "$r" | field "$op" ops_per_sec | median)
        ratio=$(awk -v a="$ops" -v b="$s_ops" 'BEGIN {printf "%.2f", a / b}')
        printf '%-22s %10s %9s %9s %18s\n' "$target ${op^^}" "$ops" \
            "$(echo "$r" | field "$op" p50_ms | median)" "$(echo "$r" | field "$op" p99_ms | median)" "$ratio"
    done
done

# Under full load, no node may have been taken for dead.
flaps=$(cat "$tmp"/c?.log | grep -c 'membership changed.*serving:down' || true)
echo "false failure detections during the load runs (membership changes to down): $flaps"

# c2_live yes|no: whether c1 currently reports c2 live (yes) or down (no).
c2_live() { { RINGKV_ADDR=$c1 "$BIN" status --brief 2>/dev/null || true; } | awk -v want="$1" '$1 == "c2" && $4 == want {found = 1} END {exit !found}'; }

# Failure detection: kill c2, poll c1's view until c2 is down, restart it.
detections=()
for run in $(seq "$RUNS"); do
    kill -9 "$c2_pid"
    t0=$(date +%s%N)
    until c2_live no; do sleep 0.05; done
    detections+=("$(( ($(date +%s%N) - t0) / 1000000 ))")
    start c2 "$c2" --fsync everysec --gossip "$c2_gossip" --seeds "$seed"
    c2_pid=$PID
    until c2_live yes; do sleep 0.05; done
done
echo "failure detection (kill -9 until a peer reports the node down), ms: ${detections[*]}; median $(printf '%s\n' "${detections[@]}" | median)"

# Hint drain.
kill -9 "$c2_pid"
until c2_live no; do sleep 0.05; done
RINGKV_ADDR=$c1,$c3 "$BIN" bench --keys 100000000 --value-size 100 --concurrency 50 --ops "$HINT_KEYS" --read-ratio 0 >/dev/null 2>&1
# Hints held for c2 by c1 and c3 (the status column "c2:N").
pending() {
    { RINGKV_ADDR=$c1,$c3 "$BIN" status 2>/dev/null || true; } |
        awk '$1 == "c1" || $1 == "c3" {for (i = 1; i <= NF; i++) if ($i ~ /^c2:/) {split($i, p, ":"); s += p[2]}} END {print s + 0}'
}
held=$(pending)
start c2 "$c2" --fsync everysec --gossip "$c2_gossip" --seeds "$seed"
until c2_live yes; do sleep 0.05; done
t0=$(date +%s%N)
until [ "$(pending)" = 0 ]; do sleep 0.05; done
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "hint drain: $held hints delivered in ${ms} ms after the restarted node was reported live ($(awk -v h="$held" -v m="$ms" 'BEGIN {printf "%.0f", h * 1000 / m}') hints/s)"
