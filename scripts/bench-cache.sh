#!/usr/bin/env bash
# The cache's figures (issue 10), all in one run:
#   1. memory per key: RSS growth of a fresh `--persistence none` ringkv
#      node and of a fresh Redis (no persistence), each loaded over the
#      network with the same KEYS keys ("key:" and 12 digits, 16 bytes) of
#      100-byte values;
#   2. PUT throughput at steady eviction: a node bounded at MAXMEMORY_MB MiB
#      (allkeys-lru) with a key space four times what fits, against an
#      unbounded node, both filled first, alternating, RUNS times each;
#   3. the LRU-quality simulation (cargo example lru_quality).
# Needs redis-server and redis-cli (Debian: apt-get install redis-server).
#
#   scripts/bench-cache.sh          # KEYS=1000000 MAXMEMORY_MB=64 RUNS=3 DURATION=8s
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${KEYS:-1000000}
MAXMEMORY_MB=${MAXMEMORY_MB:-64}
RUNS=${RUNS:-3}
DURATION=${DURATION:-8s}
source scripts/lib.sh

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# 1. Memory per key.
serve_single --persistence none
node=$PID
# Warm the connection and the runtime first, so the base is a serving node.
"$BIN" bench --ops 1000 --keys 1000 --value-size 100 --read-ratio 0 >/dev/null 2>&1
base=$(rss_kb "$node")
"$BIN" bench --ops "$KEYS" --keys "$KEYS" --sequential --value-size 100 --read-ratio 0 >/dev/null 2>&1
ringkv_per_key=$(( ($(rss_kb "$node") - base) * 1024 / KEYS ))
kill "$node"

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" >"$tmp/redis.log" 2>&1 &
redis=$!
pids+=("$redis")
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.05; done
base=$(rss_kb "$redis")
used_base=$(redis-cli -p "$redis_port" info memory | awk -F: '/^used_memory:/ {print $2+0}')
value=$(printf 'x%.0s' $(seq 100))
awk -v n="$KEYS" -v v="$value" 'BEGIN {
    for (i = 0; i < n; i++) {
        k = sprintf("key:%012d", i)
        printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v
    }
}' | redis-cli -p "$redis_port" --pipe >/dev/null
redis_per_key=$(( ($(rss_kb "$redis") - base) * 1024 / KEYS ))
used=$(redis-cli -p "$redis_port" info memory | awk -F: '/^used_memory:/ {print $2+0}')
redis_used_per_key=$(( (used - used_base) / KEYS ))
[ "$(redis-cli -p "$redis_port" dbsize)" = "$KEYS" ]
redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
echo "memory per key, $KEYS keys of 16 + 100 bytes (RSS growth): ringkv $ringkv_per_key B," \
    "$(redis-server --version | awk '{print $1, $3}') $redis_per_key B (used_memory $redis_used_per_key B);" \
    "ringkv/redis $(awk -v a="$ringkv_per_key" -v b="$redis_per_key" 'BEGIN {printf "%.2f", a / b}')"

# 2. PUT at steady eviction. What fits is what the bounded node holds
# after being offered more keys (one per 100 bytes of the bound) than fit.
serve_single --persistence none --maxmemory "${MAXMEMORY_MB}mb" --maxmemory-policy allkeys-lru
bounded=$ADDR bounded_pid=$PID
offered=$(( MAXMEMORY_MB * 1048576 / 100 ))
"$BIN" bench --ops "$offered" --keys "$offered" --sequential --value-size 100 --read-ratio 0 >/dev/null 2>&1
fits=$("$BIN" status | awk '$1 == "node-1" && $3 == "serving" {print $8}')
space=$(( fits * 4 ))
serve_single --persistence none
unbounded=$ADDR
RINGKV_ADDR=$unbounded "$BIN" bench --ops "$space" --keys "$space" --sequential --value-size 100 --read-ratio 0 \
    >/dev/null 2>&1
unbounded_pid=$PID
# bench ADDR PID SEED: "ops/s server-CPU-µs-per-PUT" of one run (the
# server's user and system time from /proc, steadier than throughput on a
# shared machine).
bench() {
    local before after json
    before=$(awk '{print $14 + $15}' "/proc/$2/stat")
    json=$(RINGKV_ADDR=$1 "$BIN" bench --keys "$space" --value-size 100 --concurrency 50 --duration "$DURATION" \
        --read-ratio 0 --seed "$3" --json 2>/dev/null)
    after=$(awk '{print $14 + $15}' "/proc/$2/stat")
    awk -v ops="$(echo "$json" | field put ops_per_sec)" -v n="$(echo "$json" | field put ops)" \
        -v t="$((after - before))" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%d %.1f\n", ops, t / hz / n * 1e6}'
}
b=() u=() bc=() uc=()
for run in $(seq "$RUNS"); do
    read -r ops cpu < <(bench "$bounded" "$bounded_pid" "$run")
    b+=("$ops") bc+=("$cpu")
    read -r ops cpu < <(bench "$unbounded" "$unbounded_pid" "$run")
    u+=("$ops") uc+=("$cpu")
done
memory=$(RINGKV_ADDR=$bounded "$BIN" status | awk '/policy allkeys-lru/')
b_med=$(printf '%s\n' "${b[@]}" | median)
u_med=$(printf '%s\n' "${u[@]}" | median)
bc_med=$(printf '%s\n' "${bc[@]}" | median)
uc_med=$(printf '%s\n' "${uc[@]}" | median)
echo "PUT, $space-key space (4x the $fits keys ${MAXMEMORY_MB} MiB holds), 100-byte values, 50 in flight, $DURATION runs:" \
    "bounded ${b[*]} ops/s (median $b_med), unbounded ${u[*]} (median $u_med);" \
    "bounded/unbounded $(awk -v a="$b_med" -v c="$u_med" 'BEGIN {printf "%.2f", a / c}')"
echo "server CPU per PUT: bounded ${bc[*]} us (median $bc_med), unbounded ${uc[*]} (median $uc_med);" \
    "unbounded/bounded $(awk -v a="$uc_med" -v c="$bc_med" 'BEGIN {printf "%.2f", a / c}')"
echo "bounded node after the runs:$memory; RSS $(( $(rss_kb "$bounded_pid") / 1024 )) MiB"

# 3. LRU quality.
cargo run --release --quiet -p ringkv-storage --example lru_quality
