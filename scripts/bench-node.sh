#!/usr/bin/env bash
# `ringkv bench` against a fresh single node on loopback: PUT then GET over a
# 1M-key space, 100-byte values, 50 requests in flight. Each phase runs RUNS
# times; the medians are printed. If redis-server and redis-benchmark are
# installed, Redis is measured in the same run as the baseline.
#
#   scripts/bench-node.sh            # RUNS=3 DURATION=10s FSYNC=everysec
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
FSYNC=${FSYNC:-everysec}
source scripts/lib.sh

serve_single --fsync "$FSYNC"

phase() { # name read-ratio
    local name=$1 ratio=$2 out=()
    for run in $(seq "$RUNS"); do
        out+=("$("$BIN" bench --keys 1000000 --value-size 100 --concurrency 50 --duration "$DURATION" \
            --read-ratio "$ratio" --seed "$run" --json 2>/dev/null)")
    done
    local op; op=$([ "$ratio" = 0 ] && echo put || echo get)
    printf '%-8s ops/s %8s   p50 %6s ms   p99 %6s ms   (median of %s runs of %s)\n' "$name" \
        "$(printf '%s\n' "${out[@]}" | field "$op" ops_per_sec | median)" \
        "$(printf '%s\n' "${out[@]}" | field "$op" p50_ms | median)" \
        "$(printf '%s\n' "${out[@]}" | field "$op" p99_ms | median)" "$RUNS" "$DURATION"
}

echo "ringkv single node, fsync=$FSYNC, $(nproc) cores"
phase PUT 0
phase GET 1
"$BIN" bench --keys 1000000 --concurrency 1 --duration 5s --read-ratio 0.5 2>/dev/null | head -1 | sed 's/^/single client: /'

if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
    port=$((20000 + RANDOM % 20000))
    redis-server --port "$port" --save '' --appendonly no --daemonize no >/dev/null &
    pids+=($!)
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    echo "redis baseline (same machine, same run): redis-benchmark -c 50 -P 1 -d 100 -r 1000000 -n 500000"
    for _ in $(seq "$RUNS"); do
        redis-benchmark -p "$port" -c 50 -P 1 -d 100 -r 1000000 -n 500000 -t set,get --csv 2>/dev/null | tail -n +2
    done | awk -F'"' '{print $2, $4}' >"$tmp/redis"
    for op in SET GET; do
        printf 'redis %-4s ops/s %8s (median of %s runs)\n' "$op" "$(grep "^$op " "$tmp/redis" | awk '{print $2}' | median)" "$RUNS"
    done
    redis-benchmark -p "$port" -c 1 -P 1 -d 100 -r 1000000 -n 50000 -t get --csv 2>/dev/null | tail -n +2 |
        awk -F'"' '{printf "redis single client GET ops/s %s\n", $4}'
fi
