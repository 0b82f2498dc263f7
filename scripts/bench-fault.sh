#!/usr/bin/env bash
# Fault-tolerance benchmarks on a 3-node loopback cluster (N=3, W=2, R=2):
#   1. repair: load KEYS keys on all three replicas, kill one node, write
#      KEYS/100 more (1% divergence, hints off), restart it, and time until
#      anti-entropy has made its entry count equal to the others'; report
#      the bytes repair exchanged against the data size;
#   2. rebalancing: RUNS times, `ringkv bench` (50% reads) for DURATION in
#      steady state, then while a fourth node joins, then while it leaves;
#      throughput ratios against the steady state of the same run.
#
#   scripts/bench-fault.sh     # KEYS=1000000 RUNS=3 DURATION=10s PARTS="repair rebalance"
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${KEYS:-1000000}
PARTS=" ${PARTS:-repair rebalance} "
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
source scripts/lib.sh
cat >"$tmp/node.toml" <<EOF
cluster_id = "bench"
fsync = "everysec"
max_hint_bytes = 0
repair_interval = "1h"
EOF

declare -A addr gossip pid
# start NAME [LISTEN]: starts a node with the shared config, waits for its
# ready line.
start() {
    local name=$1 listen=${2:-127.0.0.1:0} seeds=""
    [ "$name" = r1 ] || seeds="--seeds ${gossip[r1]}"
    rm -f "$tmp/$name.ready"
    node_cert "$name"
    # shellcheck disable=SC2086
    "$BIN" serve --config "$tmp/node.toml" --node-id "$name" --certs "$tmp/certs" --data-dir "$tmp/$name" \
        --listen "$listen" --gossip "${gossip[$name]:-127.0.0.1:0}" $seeds >"$tmp/$name.ready" 2>>"$tmp/$name.log" &
    pid[$name]=$!
    disown "${pid[$name]}"
    pids+=("${pid[$name]}")
    for _ in $(seq 600); do grep -q serving "$tmp/$name.ready" 2>/dev/null && break; sleep 0.05; done
    addr[$name]=$(awk '{for (i = 1; i < NF; i++) if ($i == "on") print $(i + 1)}' "$tmp/$name.ready")
    gossip[$name]=$(awk '{for (i = 1; i < NF; i++) if ($i == "gossip") print $(i + 1)}' "$tmp/$name.ready")
    [ -n "${addr[$name]}" ] || { echo "node $name did not start:"; cat "$tmp/$name.log"; exit 1; }
}
status() { RINGKV_ADDR=${addr[r1]} "$BIN" status 2>/dev/null || true; }
# entries NAME: the entry count `status` shows for a node.
entries() { status | awk -v n="$1" '$1 == n && $4 == "yes" {print $7}'; }
member_status() { status | awk -v n="$1" '$1 == n {print $3; exit}'; }
# exchanged: total bytes anti-entropy exchanged, over all nodes.
exchanged() { status | sed -nE 's/.*exchanged [0-9]+ keys, ([0-9]+) bytes.*/\1/p' | awk '{s += $1} END {print s + 0}'; }
now() { date +%s.%N; }
ops_of() { sed -E 's/.*"ops_per_sec":([0-9.]+).*/\1/'; }
bench() { # DURATION -> JSON
    RINGKV_ADDR=${addr[r1]},${addr[r2]},${addr[r3]} "$BIN" bench --keys "$KEYS" --value-size 100 --concurrency 50 \
        --duration "$1" --read-ratio 0.5 --json 2>/dev/null
}

start r1
start r2
start r3
for _ in $(seq 200); do [ "$(status | grep -c ' serving ')" = 3 ] && break; sleep 0.1; done

echo "loading $KEYS keys at consistency all..."
t0=$(now)
RINGKV_ADDR=${addr[r1]},${addr[r2]},${addr[r3]} "$BIN" bench --sequential --ops "$KEYS" --keys "$KEYS" \
    --read-ratio 0 --value-size 100 --concurrency 50 --consistency all --json >/dev/null 2>&1
echo "loaded in $(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}') s"

# 1. Repair of a 1% divergence.
if [[ $PARTS == *" repair "* ]]; then
div=$((KEYS / 100))
declare -a rtime rbytes
for run in $(seq "$RUNS"); do
    kill -9 "${pid[r3]}"
    for _ in $(seq 200); do [ "$(status | awk '$1 == "r3" {print $4; exit}')" = no ] && break; sleep 0.1; done
    RINGKV_ADDR=${addr[r1]},${addr[r2]} "$BIN" bench --sequential --ops "$div" --keys "$div" --key-prefix "div$run" \
        --read-ratio 0 --value-size 100 --concurrency 50 --json >/dev/null 2>&1
    before=$(exchanged)
    target=$(entries r1)
    t0=$(now)
    start r3 "${addr[r3]}"
    while [ "$(entries r3)" != "$target" ]; do sleep 0.2; done
    rtime+=("$(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}')")
    # A pass adds to the counters when it finishes a partition, which can be
    # after the last entry landed: read them once they stop moving (30 s at
    # most). Counters restart with r3; what r3 exchanged since its restart
    # is all new.
    last=-1
    for _ in $(seq 30); do now_bytes=$(exchanged); [ "$now_bytes" = "$last" ] && break; last=$now_bytes; sleep 1; done
    rbytes+=("$(( now_bytes - before ))")
    echo "repair run $run: $div of $target keys differed; converged ${rtime[-1]}s after the restart; ${rbytes[-1]} bytes"
done
data=$(( target * (16 + 100) ))
echo
echo "repair of a 1% divergence on one replica (hints off), median of $RUNS runs:"
echo "  converged $(printf '%s\n' "${rtime[@]}" | median)s after the restart (includes its start-up and gossip)"
awk -v b="$(printf '%s\n' "${rbytes[@]}" | median)" -v d="$data" \
    'BEGIN {printf "  bytes exchanged by anti-entropy: %d = %.2f%% of the %d bytes of keys+values\n", b, 100 * b / d, d}'
fi

# 2. Throughput while a node joins and leaves.
[[ $PARTS == *" rebalance "* ]] || exit 0
echo
declare -a steady join leave jtime ltime
for run in $(seq "$RUNS"); do
    steady+=("$(bench "$DURATION" | ops_of)")
    rm -rf "$tmp/r4"
    t0=$(now)
    bench "$DURATION" >"$tmp/join.json" &
    bpid=$!
    start r4
    while [ "$(member_status r4)" != serving ]; do sleep 0.1; done
    jtime+=("$(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}')")
    wait "$bpid"
    join+=("$(ops_of <"$tmp/join.json")")
    t0=$(now)
    bench "$DURATION" >"$tmp/leave.json" &
    bpid=$!
    RINGKV_ADDR=${addr[r4]} "$BIN" leave >/dev/null
    while kill -0 "${pid[r4]}" 2>/dev/null; do sleep 0.1; done
    ltime+=("$(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}')")
    wait "$bpid"
    leave+=("$(ops_of <"$tmp/leave.json")")
    echo "run $run: steady ${steady[-1]} ops/s; join took ${jtime[-1]}s, ${join[-1]} ops/s; leave took ${ltime[-1]}s, ${leave[-1]} ops/s"
done
s=$(printf '%s\n' "${steady[@]}" | median)
j=$(printf '%s\n' "${join[@]}" | median)
l=$(printf '%s\n' "${leave[@]}" | median)
echo "rebalancing ($KEYS keys, bench 50% reads over $DURATION windows, median of $RUNS runs, $(nproc) cores):"
printf '  %-34s %10s ops/s\n' "steady state" "$s"
awk -v a="$j" -v b="$s" -v t="$(printf '%s\n' "${jtime[@]}" | median)" \
    'BEGIN {printf "  %-34s %10s ops/s  ratio %.2f  (join took %ss)\n", "while a 4th node joins", a, a / b, t}'
awk -v a="$l" -v b="$s" -v t="$(printf '%s\n' "${ltime[@]}" | median)" \
    'BEGIN {printf "  %-34s %10s ops/s  ratio %.2f  (leave took %ss)\n", "while it leaves", a, a / b, t}'
