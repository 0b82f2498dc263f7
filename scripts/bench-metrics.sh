#!/usr/bin/env bash
# What counting costs: two standalone nodes of the same build, persistence
# none, one with --metrics and one without (a node without metrics_listen
# counts nothing), loaded in turn by redis-benchmark through their RESP
# ports; which node goes first alternates by round. For each run: requests
# per second, and the node's CPU time per request (user + system, from
# /proc), which is steadier than throughput on a shared machine. Prints
# the medians and their ratios. With SAME=1 neither node counts: the
# ratios then show the noise of the comparison itself.
#   scripts/bench-metrics.sh [ROUNDS] [PIPELINE]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
PIPELINE=${2:-16}
N=1000000
command -v redis-benchmark >/dev/null || { echo "needs redis-benchmark (Debian's redis-tools)" >&2; exit 2; }
source scripts/lib.sh

plain_port=$(free_port)
serve_single --persistence none --resp "127.0.0.1:$plain_port"
plain_pid=$PID
counted_port=$(free_port)
if [ "${SAME:-0}" = 1 ]; then
    serve_single --persistence none --resp "127.0.0.1:$counted_port"
else
    serve_single --persistence none --resp "127.0.0.1:$counted_port" --metrics 127.0.0.1:0
fi
counted_pid=$PID

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
echo "redis-benchmark -t OP -d 100 -r 1000000 -n $N -c 50 -P $PIPELINE, $ROUNDS rounds"
for round in $(seq "$ROUNDS"); do
    sides="plain counted"
    [ $((round % 2)) = 0 ] && sides="counted plain"
    for side in $sides; do
        port_var=${side}_port pid_var=${side}_pid
        for op in set get; do
            t0=$(ticks "${!pid_var}")
            rps=$(redis-benchmark -p "${!port_var}" -t "$op" -d 100 -r 1000000 -n "$N" -c 50 -P "$PIPELINE" --csv 2>/dev/null |
                awk -F'"' 'NR == 2 {print $4}')
            t1=$(ticks "${!pid_var}")
            echo "$rps" >> "$tmp/$op.$side.rps"
            awk -v t="$((t1 - t0))" -v hz="$hz" -v n="$N" 'BEGIN {printf "%.3f\n", t / hz / n * 1e6}' >> "$tmp/$op.$side.cpu"
        done
    done
    echo "round $round: $(for op in set get; do for side in plain counted; do
        printf '%s %s %s rps %s us/req; ' "$op" "$side" "$(tail -1 "$tmp/$op.$side.rps")" "$(tail -1 "$tmp/$op.$side.cpu")"
    done; done)"
done
for op in set get; do
    for what in rps cpu; do
        a=$(median < "$tmp/$op.plain.$what"); b=$(median < "$tmp/$op.counted.$what")
        echo "$op $what median: without metrics $a, with $b, ratio with/without $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", b / a}')"
    done
done
