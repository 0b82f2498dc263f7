#!/usr/bin/env bash
# ringkv beside Redis, loaded by the same generator: `redis-benchmark -t
# set,get -d 100 -r 1000000` at `-c 50 -P 1`, `-c 50 -P 16` and `-c 1`,
# against a standalone ringkv node and redis-server started here, with
# persistence matched (ringkv `--persistence none` against Redis without
# persistence; ringkv `--fsync always` against Redis `appendfsync always`),
# and against a 3-node ringkv cluster (N=3, W=2, R=2, persistence none)
# through one node's RESP port. Servers take turns within each round, the
# order reversed every other round; every server, node and the generator
# share this machine's cores. Prints, per line: the medians of requests/s,
# p50 and p99 (ms), and throughput ratios against Redis with the same
# persistence, measured in the same rounds.
#   scripts/bench-redis.sh [ROUNDS] [REQUESTS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
N=${2:-200000}
command -v redis-benchmark >/dev/null || { echo "needs redis-benchmark (Debian's redis-tools)" >&2; exit 2; }
command -v redis-server >/dev/null || { echo "needs redis-server (Debian's redis-server)" >&2; exit 2; }
source scripts/lib.sh

wait_port() { for _ in $(seq 200); do redis-cli -p "$1" ping >/dev/null 2>&1 && return; sleep 0.05; done; exit 1; }

declare -A port
# redis_server NAME ARGS...: starts redis-server, its port in port[NAME].
redis_server() {
    local name=$1 dir
    shift
    port[$name]=$(free_port)
    dir=$(mktemp -d "$tmp/redis.XXXX")
    redis-server --port "${port[$name]}" --bind 127.0.0.1 --dir "$dir" --save '' "$@" >"$dir/log" 2>&1 &
    pids+=("$!")
    wait_port "${port[$name]}"
}
# ringkv_node NAME ARGS...: starts a standalone node, its RESP port in port[NAME].
ringkv_node() {
    local name=$1
    shift
    port[$name]=$(free_port)
    serve_single --resp "127.0.0.1:${port[$name]}" "$@"
    wait_port "${port[$name]}"
}

redis_server redis-none --appendonly no
ringkv_node ringkv-none --persistence none
redis_server redis-always --appendonly yes --appendfsync always
ringkv_node ringkv-always --persistence wal --fsync always
cat >"$tmp/cluster.toml" <<'EOF'
persistence = "none"
replication = 3
write_quorum = 2
read_quorum = 2
resp_listen = "127.0.0.1:0"
EOF
cluster3 "$tmp/cluster.toml"
port[cluster-none]=$(awk '{for (i = 1; i < NF; i++) if ($i == "resp") print $(i + 1)}' "$tmp/c1.ready" | sed 's/.*://')
wait_port "${port[cluster-none]}"

lines=("c50p1:-c 50 -P 1" "c50p16:-c 50 -P 16" "c1p1:-c 1 -P 1")
# Fewer requests where each waits alone, or for an fsync.
requests() {
    case "$1/$2" in
        *always/c50p16) echo $((N / 4)) ;;
        *always/*) echo $((N / 20)) ;;
        */c1p1) echo $((N / 10)) ;;
        *) echo "$N" ;;
    esac
}
servers=(redis-none ringkv-none cluster-none redis-always ringkv-always)
echo "redis-benchmark -t set,get -d 100 -r 1000000 -n N --csv; $ROUNDS rounds; $(redis-server --version | cut -d' ' -f1-3)"
for round in $(seq "$ROUNDS"); do
    order=("${servers[@]}")
    if [ $((round % 2)) = 0 ]; then order=(ringkv-always redis-always cluster-none ringkv-none redis-none); fi
    for server in "${order[@]}"; do
        for line in "${lines[@]}"; do
            name=${line%%:*} args=${line#*:}
            n=$(requests "$server" "$name")
            # shellcheck disable=SC2086
            redis-benchmark -p "${port[$server]}" -t set,get -d 100 -r 1000000 -n "$n" $args --csv 2>/dev/null |
                awk -F'"' -v out="$tmp/$server.$name" 'NR > 1 {op = tolower($2); print $4 > (out "." op ".rps");
                    print $10 > (out "." op ".p50"); print $14 > (out "." op ".p99")}'
            for op in set get; do
                for what in rps p50 p99; do cat "$tmp/$server.$name.$op.$what" >> "$tmp/all.$server.$name.$op.$what"; done
            done
        done
    done
    echo "round $round done"
done
printf '%-8s %-4s %-14s %12s %8s %8s %10s\n' line op server "req/s" p50 p99 "÷ Redis"
for line in "${lines[@]}"; do
    name=${line%%:*}
    for op in set get; do
        for server in "${servers[@]}"; do
            rps=$(median < "$tmp/all.$server.$name.$op.rps")
            base=redis-none
            [[ $server == *always ]] && base=redis-always
            ref=$(median < "$tmp/all.$base.$name.$op.rps")
            printf '%-8s %-4s %-14s %12s %8s %8s %10s\n' "$name" "$op" "$server" "$rps" \
                "$(median < "$tmp/all.$server.$name.$op.p50")" "$(median < "$tmp/all.$server.$name.$op.p99")" \
                "$(awk -v a="$rps" -v b="$ref" 'BEGIN {printf "%.2f", a / b}')"
        done
    done
done
