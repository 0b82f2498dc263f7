#!/usr/bin/env bash
# The whole test suite (`just test`), from one build, in three lanes. The
# simulator's seeds are minutes of CPU-bound work; every other integration
# test mostly waits on real processes' timers, so the machine sits half
# idle if they run one binary after another. The chaos test (the longest,
# a cluster in network namespaces of its own) runs beside the rest; the
# seeds run beside both at the lowest CPU priority, where they use the
# cores the others leave idle without slowing the processes whose timing
# those observe. Each lane's output follows the rest's; the suite fails if
# any lane fails.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --no-run

# Lanes of their own: these test targets (by name).
beside=(seeds chaos)

# Every other test target by name, from the manifests, so that a new test
# file is never left out.
others=()
while read -r name; do
    others+=(--test "$name")
done < <(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
beside = set(sys.argv[1:])
for package in json.load(sys.stdin)["packages"]:
    for target in package["targets"]:
        if "test" in target["kind"] and target["name"] not in beside:
            print(target["name"])
' "${beside[@]}")

logs="${CARGO_TARGET_DIR:-target}/test-lanes"
mkdir -p "$logs"
# Each lane a process group of its own, so that it is killed whole however
# this ends.
lanes=()
trap 'for lane in "${lanes[@]}"; do kill -KILL -- "-$lane" 2>/dev/null || true; done' EXIT
setsid nice -n 19 cargo test --workspace --no-fail-fast --test seeds > "$logs/seeds.log" 2>&1 &
lanes+=($!)
setsid cargo test --workspace --no-fail-fast --test chaos > "$logs/chaos.log" 2>&1 &
lanes+=($!)

status=0
cargo test --workspace --no-fail-fast --lib --bins --examples "${others[@]}" || status=$?
for i in "${!beside[@]}"; do
    lane_status=0
    wait "${lanes[$i]}" || lane_status=$?
    echo "--- tests/${beside[$i]}.rs (ran beside the tests above) ---"
    cat "$logs/${beside[$i]}.log"
    [ "$lane_status" -eq 0 ] || status=$lane_status
done
cargo test --workspace --no-fail-fast --doc || status=$?
exit "$status"
