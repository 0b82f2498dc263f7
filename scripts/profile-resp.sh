#!/usr/bin/env bash
# Where a standalone node's time goes under redis-benchmark: a node with
# persistence none and metrics on, loaded with `redis-benchmark -t OP -d 100
# -r 1000000 -c 50 -P PIPELINE` while `perf record` samples it (Debian's
# linux-perf). Prints the hottest symbols (self time) and the share of
# samples in the metrics code (ringkv's own `metrics` module and the
# `metrics` crates), which is what counting costs.
#   scripts/profile-resp.sh [OP] [PIPELINE] [REQUESTS]
set -euo pipefail
cd "$(dirname "$0")/.."
OP=${1:-set}
PIPELINE=${2:-16}
N=${3:-2000000}
command -v perf >/dev/null || { echo "needs perf (Debian's linux-perf)" >&2; exit 2; }
command -v redis-benchmark >/dev/null || { echo "needs redis-benchmark (Debian's redis-tools)" >&2; exit 2; }
source scripts/lib.sh

port=$(free_port)
serve_single --persistence none --resp "127.0.0.1:$port" --metrics 127.0.0.1:0
perf record -F 999 --call-graph dwarf,8192 -o "$tmp/perf.data" -p "$PID" 2>/dev/null &
perf_pid=$!
sleep 0.5
redis-benchmark -p "$port" -t "$OP" -d 100 -r 1000000 -n "$N" -c 50 -P "$PIPELINE" -q | tr "\r" "\n" | tail -1
kill -INT "$perf_pid"
wait "$perf_pid" || true
perf report -i "$tmp/perf.data" --no-children --sort symbol --stdio -g none > "$tmp/report" 2>"$tmp/report.err" ||
    { cat "$tmp/report.err"; exit 1; }
# Who calls the hottest symbol, memmove: the callers' chains, folded.
perf report -i "$tmp/perf.data" --no-children --stdio --symbols=__memmove_avx_unaligned_erms -g caller,0.5,callee \
    --percent-limit 1 2>/dev/null | grep -E '[0-9.]+%|--' | head -30 | cut -c1-160 > "$tmp/memmove" || true
echo "hottest symbols (self time), $OP at -P $PIPELINE:"
awk '/^ +[0-9.]+%/ && n++ < 40' "$tmp/report" | cut -c1-150
grep -E '^ +[0-9.]+%' "$tmp/report" |
    awk '/metrics|Metrics|Timings|prometheus/ {s += $1} END {printf "samples in metrics code: %.2f%%\n", s}'
echo "callers of memmove:"
cat "$tmp/memmove"
