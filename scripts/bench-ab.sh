#!/usr/bin/env bash
# Two builds of ringkv side by side: standalone nodes (persistence none)
# of binary A and binary B, loaded in turn by `redis-benchmark -t OP -d 100
# -r 1000000 -c 50 -P PIPELINE` through their RESP ports, which goes first
# alternating by round. Prints the medians of requests/s and the ratio
# B / A per operation.
#   scripts/bench-ab.sh A_BIN B_BIN [ROUNDS] [PIPELINE] [REQUESTS]
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1
B=$2
ROUNDS=${3:-5}
PIPELINE=${4:-16}
N=${5:-500000}
command -v redis-benchmark >/dev/null || { echo "needs redis-benchmark (Debian's redis-tools)" >&2; exit 2; }
# The certificates come from A; neither build is rebuilt.
BIN=$A
source scripts/lib.sh

port_a=$(free_port)
serve_single --persistence none --resp "127.0.0.1:$port_a"
BIN=$B
port_b=$(free_port)
serve_single --persistence none --resp "127.0.0.1:$port_b"
echo "redis-benchmark -t OP -d 100 -r 1000000 -n $N -c 50 -P $PIPELINE, $ROUNDS rounds; A=$A B=$B"
for round in $(seq "$ROUNDS"); do
    sides="a b"
    [ $((round % 2)) = 0 ] && sides="b a"
    for side in $sides; do
        port_var=port_$side
        for op in set get; do
            redis-benchmark -p "${!port_var}" -t "$op" -d 100 -r 1000000 -n "$N" -c 50 -P "$PIPELINE" --csv 2>/dev/null |
                awk -F'"' 'NR == 2 {print $4}' >> "$tmp/$op.$side"
        done
    done
    echo "round $round: $(for op in set get; do printf '%s A %s B %s; ' "$op" "$(tail -1 "$tmp/$op.a")" "$(tail -1 "$tmp/$op.b")"; done)"
done
for op in set get; do
    a=$(median < "$tmp/$op.a") b=$(median < "$tmp/$op.b")
    echo "$op median requests/s: A $a, B $b, B / A $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", b / a}')"
done
