#!/usr/bin/env bash
# What counting costs: two standalone nodes of the same build, persistence
# none, one with --metrics and one without (a node without metrics_listen
# counts nothing), loaded in turn by redis-benchmark through their RESP
# ports; which node goes first alternates by round. Prints each round's
# requests per second and the medians' ratio. With SAME=1 neither node
# counts: the ratio then shows the noise of the comparison itself.
#   scripts/bench-metrics.sh [ROUNDS] [PIPELINE]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
PIPELINE=${2:-16}
command -v redis-benchmark >/dev/null || { echo "needs redis-benchmark (Debian's redis-tools)" >&2; exit 2; }
source scripts/lib.sh

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
plain=$(free_port)
serve_single --persistence none --resp "127.0.0.1:$plain"
counted=$(free_port)
if [ "${SAME:-0}" = 1 ]; then
    serve_single --persistence none --resp "127.0.0.1:$counted"
else
    serve_single --persistence none --resp "127.0.0.1:$counted" --metrics 127.0.0.1:0
fi

echo "redis-benchmark -t set,get -d 100 -r 1000000 -n 1000000 -c 50 -P $PIPELINE, $ROUNDS rounds"
for op in SET GET; do : > "$tmp/$op.plain"; : > "$tmp/$op.counted"; done
for round in $(seq "$ROUNDS"); do
    sides="plain counted"
    [ $((round % 2)) = 0 ] && sides="counted plain"
    for side in $sides; do
        port=${!side}
        out=$(redis-benchmark -p "$port" -t set,get -d 100 -r 1000000 -n 1000000 -c 50 -P "$PIPELINE" --csv 2>/dev/null)
        for op in SET GET; do
            echo "$out" | awk -F'"' -v op="$op" '$2 == op {print $4}' >> "$tmp/$op.$side"
        done
    done
    echo "round $round: SET $(tail -1 "$tmp/SET.plain") vs $(tail -1 "$tmp/SET.counted"), GET $(tail -1 "$tmp/GET.plain") vs $(tail -1 "$tmp/GET.counted") (without vs with metrics)"
done
for op in SET GET; do
    a=$(median < "$tmp/$op.plain"); b=$(median < "$tmp/$op.counted")
    echo "$op median: without $a, with $b, ratio $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", b / a}')"
done
