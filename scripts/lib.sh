# Shared by the bench scripts; sourced from the repository root, not run.
# Builds the release binary (a stale one would be measured otherwise) and
# sets BIN, a scratch directory $tmp with cluster certificates in
# $tmp/certs (exported as RINGKV_CERTS), and a list pids of processes that
# are killed, like $tmp is removed, on every exit path.

# BIN may be set by the caller to measure another build (a baseline's);
# the default is this tree's, built first.
if [ -z "${BIN:-}" ]; then
    BIN=$PWD/target/release/ringkv
    cargo build --release --bin ringkv --quiet
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
"$BIN" certs init --dir "$tmp/certs" >/dev/null
# `ringkv leave` needs the operator certificate.
"$BIN" certs issue --dir "$tmp/certs" --operator bench >/dev/null
# node_cert NAME: a certificate naming node NAME, which a clustered node needs.
node_cert() { [ -f "$tmp/certs/$1.crt" ] || "$BIN" certs issue --dir "$tmp/certs" --name "$1" >/dev/null; }
export RINGKV_CERTS=$tmp/certs

# serve_single [serve args...]: starts a standalone node on loopback with a
# data directory of its own, waits for its ready line, and sets ADDR and PID
# (also exported as RINGKV_ADDR).
serve_single() {
    local dir
    dir=$(mktemp -d "$tmp/node.XXXX")
    "$BIN" serve --certs "$tmp/certs" --data-dir "$dir/data" --listen 127.0.0.1:0 "$@" \
        >"$dir/ready" 2>"$dir/node.log" &
    PID=$!
    pids+=("$PID")
    for _ in $(seq 200); do grep -q serving "$dir/ready" 2>/dev/null && break; sleep 0.05; done
    ADDR=$(awk '{for (i = 1; i < NF; i++) if ($i == "on") print $(i + 1)}' "$dir/ready")
    [ -n "$ADDR" ] || { cat "$dir/node.log"; exit 1; }
    export RINGKV_ADDR=$ADDR
}

# free_port: a TCP port on loopback that is free now.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# median: the median of the numbers on stdin, one per line.
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# field OP NAME: NAME of OP's section in `ringkv bench --json` output.
field() { sed -E "s/.*\"$1\":\{[^}]*\"$2\":([0-9.]+).*/\1/"; }

# cluster3 CONFIG: starts three clustered nodes c1, c2, c3 on loopback with
# the config file CONFIG (certificates and data directories of their own),
# waits until each serves, and sets ADDRS (their addresses, comma-separated,
# also exported as RINGKV_ADDR).
cluster3() {
    local config=$1 name seed="" addr gossip
    ADDRS=""
    for name in c1 c2 c3; do
        node_cert "$name"
        "$BIN" serve --config "$config" --node-id "$name" --certs "$tmp/certs" --data-dir "$tmp/$name" \
            --listen 127.0.0.1:0 --gossip 127.0.0.1:0 ${seed:+--seeds "$seed"} \
            >"$tmp/$name.ready" 2>"$tmp/$name.log" &
        pids+=("$!")
        for _ in $(seq 400); do grep -q serving "$tmp/$name.ready" 2>/dev/null && break; sleep 0.05; done
        addr=$(awk '{for (i = 1; i < NF; i++) if ($i == "on") print $(i + 1)}' "$tmp/$name.ready")
        gossip=$(awk '{for (i = 1; i < NF; i++) if ($i == "gossip") print $(i + 1)}' "$tmp/$name.ready")
        [ -n "$addr" ] || { cat "$tmp/$name.log"; exit 1; }
        seed=${seed:-$gossip}
        ADDRS=${ADDRS:+$ADDRS,}$addr
    done
    local first=${ADDRS%%,*}
    serving() { { RINGKV_ADDR=$first "$BIN" status --brief 2>/dev/null || true; } | awk '$3 == "serving" && $4 == "yes"' | wc -l; }
    for _ in $(seq 300); do [ "$(serving)" = 3 ] && break; sleep 0.1; done
    [ "$(serving)" = 3 ] || { echo "the cluster did not form"; exit 1; }
    export RINGKV_ADDR=$ADDRS
}
