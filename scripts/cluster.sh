#!/usr/bin/env bash
# A local cluster of N nodes (default 3) on loopback, in the foreground:
# node i serves QUIC on 127.0.0.1:740i, gossips on 127.0.0.1:750i and speaks
# RESP (Redis clients) on 127.0.0.1:638i and serves Prometheus metrics on
# http://127.0.0.1:940i/metrics, with
# data in .cluster/n<i> and certificates in .cluster/certs. Logs are
# prefixed by node. Ctrl-C stops every node cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-3}
[[ "$N" =~ ^[0-9]+$ ]] && [ "$N" -ge 1 ] && [ "$N" -le 90 ] || { echo "usage: $0 [NODES 1..90]" >&2; exit 2; }
BIN=target/release/ringkv
DIR=.cluster
CERTS=$DIR/certs
[ -x "$BIN" ] || cargo build --release --bin ringkv
mkdir -p "$DIR"
[ -f "$CERTS/ca.crt" ] || "$BIN" certs init --dir "$CERTS" >/dev/null
# Certificates made before gossip was sealed have no gossip key yet.
[ -f "$CERTS/gossip.key" ] || "$BIN" certs gossip-key new --dir "$CERTS" >/dev/null
# Each node needs a certificate naming its node id. Certificates made before
# node certificates named their node (no .named-nodes marker) are replaced.
[ -f "$CERTS/.named-nodes" ] || rm -f "$CERTS"/n[0-9]*.crt "$CERTS"/n[0-9]*.key
for i in $(seq "$N"); do
    [ -f "$CERTS/n$i.crt" ] || "$BIN" certs issue --dir "$CERTS" --name "n$i" >/dev/null
done
touch "$CERTS/.named-nodes"
# `ringkv leave` needs the operator certificate.
[ -f "$CERTS/operator.crt" ] || "$BIN" certs issue --dir "$CERTS" --operator "${USER:-operator}" >/dev/null

pids=()
stop() {
    trap - INT TERM EXIT
    for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    wait
}
trap stop INT TERM EXIT

addrs=()
for i in $(seq "$N"); do
    quic=127.0.0.1:$((7400 + i))
    addrs+=("$quic")
    "$BIN" serve --config config/cluster.toml --node-id "n$i" --listen "$quic" \
        --gossip "127.0.0.1:$((7500 + i))" --seeds 127.0.0.1:7501 --resp "127.0.0.1:$((6380 + i))" \
        --metrics "127.0.0.1:$((9400 + i))" --data-dir "$DIR/n$i" --certs "$CERTS" > >(sed -u "s/^/[n$i] /") 2>&1 &
    pids+=($!)
done
addr_list=$(IFS=,; echo "${addrs[*]}")
# Wait until a node reports every member serving.
for _ in $(seq 100); do
    serving=$(RINGKV_ADDR=$addr_list RINGKV_CERTS=$CERTS "$BIN" status 2>/dev/null | grep -c ' serving ' || true)
    [ "$serving" -ge "$N" ] && break
    sleep 0.2
done
echo
echo "ringkv cluster of $N nodes is up. Point the CLI at it with:"
echo "  export RINGKV_ADDR=$addr_list RINGKV_CERTS=$PWD/$CERTS"
echo "or with any Redis client, through any node (RESP: README):"
echo "  redis-cli -p 6381"
echo "Prometheus metrics:"
for i in $(seq "$N"); do echo "  http://127.0.0.1:$((9400 + i))/metrics"; done
echo
wait
