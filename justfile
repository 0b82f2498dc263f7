# ringkv tasks. `just --list` shows them.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Certificates for local use.
certs_dir := "certs"

default:
    @just --list

# Build the release binary.
build:
    cargo build --release --bin ringkv

# Create a local cluster CA and certificates in ./certs (once).
certs: build
    [ -f {{certs_dir}}/ca.crt ] || ./target/release/ringkv certs init --dir {{certs_dir}}
    [ -f {{certs_dir}}/gossip.key ] || ./target/release/ringkv certs gossip-key new --dir {{certs_dir}}
    [ -f {{certs_dir}}/operator.crt ] || ./target/release/ringkv certs issue --dir {{certs_dir}} --operator "${USER:-operator}"

# Run one node in the foreground on 127.0.0.1:7400 with data in ./data/node-1.
serve: certs
    @echo "point the CLI at it:  export RINGKV_ADDR=127.0.0.1:7400 RINGKV_CERTS=$PWD/{{certs_dir}}"
    ./target/release/ringkv serve --config config/node.toml --certs {{certs_dir}} --data-dir data/node-1

# A local cluster of N nodes in the foreground; Ctrl-C stops it.
cluster n="3": build
    scripts/cluster.sh {{n}}

# The whole test suite: the simulator's seeds beside the rest (see the
# script).
test: redis-py
    scripts/test.sh

# redis-py's current release in a venv (target/redis-py), for tests/resp.rs.
redis-py:
    [ -x target/redis-py/bin/python ] || python3 -m venv target/redis-py
    target/redis-py/bin/python -c 'import redis' 2>/dev/null || target/redis-py/bin/pip install --quiet redis

# Formatting and lints, as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Criterion benchmarks of the storage engine, then `ringkv bench` against a
# single node (with a Redis baseline if installed) and against a 3-node
# cluster (see BENCHMARKS.md for the figures and commands).
bench: build
    cargo bench -p ringkv-storage
    scripts/bench-node.sh
    scripts/bench-cluster.sh

# ringkv beside redis-server, both loaded by redis-benchmark (SET and GET
# at -c 50 -P 1, -c 50 -P 16 and -c 1; persistence matched; a 3-node
# cluster too). Needs redis-server and redis-tools. BENCHMARKS.md has the
# table.
bench-redis rounds="5" requests="100000":
    scripts/bench-redis.sh {{rounds}} {{requests}}

# The chaos suite: a 5-node cluster under a seeded fault schedule (kill,
# pause, partition, add and remove a node, clear) while clients write and
# read; checks the history. Output in target/chaos/seed-N.
chaos seed="1" duration="120s":
    cargo build --release -p ringkv -p ringkv-chaos
    "${CARGO_TARGET_DIR:-target}/release/ringkv-chaos" --seed {{seed}} --duration {{duration}}

# The chaos suite's cache profile: the same, with every node bound to
# MAXMEMORY under allkeys-lru, so that keys are evicted all run long; the
# nodes' evictions (evictions.jsonl) are the only excuse the checker takes
# for an absent key. Output in target/chaos/cache-seed-N.
chaos-cache seed="1" duration="120s" maxmemory="4mb":
    cargo build --release -p ringkv -p ringkv-chaos
    "${CARGO_TARGET_DIR:-target}/release/ringkv-chaos" --seed {{seed}} --duration {{duration}} --maxmemory {{maxmemory}}

# Deterministic simulation: SEEDS seeds from FIRST on, each a 3-node
# cluster in one process on a simulated network and clock, SIM_DURATION of
# simulated time under the seed's faults, checked like the chaos suite. A
# failing seed prints the command that replays it.
sim seeds="100" sim_duration="60s" first="1":
    cargo build --release -p ringkv-sim
    "${CARGO_TARGET_DIR:-target}/release/ringkv-sim" --seed {{first}} --seeds {{seeds}} --duration {{sim_duration}} --jobs "$(nproc)"

# A failing seed's schedule cut down, an episode at a time, to the episodes
# the failure needs; prints them and the command that replays the rest.
sim-minimize seed sim_duration="60s":
    cargo build --release -p ringkv-sim
    "${CARGO_TARGET_DIR:-target}/release/ringkv-sim" --seed {{seed}} --duration {{sim_duration}} --minimize

# Every fuzz target for SECONDS each, one after the other (nightly;
# installs cargo-fuzz if missing). Findings land in fuzz/artifacts/.
# `cargo test -p ringkv-fuzz` replays the checked-in corpus on stable.
fuzz seconds="60" *targets:
    scripts/fuzz.sh {{seconds}} {{targets}}
