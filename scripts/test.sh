#!/usr/bin/env bash
# The whole test suite (`just test`), from one build. The simulator's
# seeds are minutes of CPU-bound work; every other integration test mostly
# waits on real processes' timers. So the seeds run beside the rest, at the
# lowest CPU priority, where they use the cores the rest leaves idle
# without slowing the processes whose timing the rest observes. Their
# output follows the rest's; the suite fails if either part fails.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace --no-run

# Every test target by name but the simulator's seeds, from the manifests,
# so that a new test file is never left out.
others=()
while read -r name; do
    others+=(--test "$name")
done < <(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
for package in json.load(sys.stdin)["packages"]:
    for target in package["targets"]:
        if "test" in target["kind"] and target["name"] != "seeds":
            print(target["name"])
')

seeds_log="${CARGO_TARGET_DIR:-target}/seeds-test.log"
# A process group of its own, so that it is killed whole however this ends.
setsid nice -n 19 cargo test --workspace --no-fail-fast --test seeds > "$seeds_log" 2>&1 &
seeds=$!
trap 'kill -KILL -- "-$seeds" 2>/dev/null || true' EXIT

status=0
cargo test --workspace --no-fail-fast --lib --bins --examples "${others[@]}" || status=$?
seeds_status=0
wait "$seeds" || seeds_status=$?
echo "--- the simulator's seeds (ran beside the tests above) ---"
cat "$seeds_log"
[ "$seeds_status" -eq 0 ] || status=$seeds_status
cargo test --workspace --no-fail-fast --doc || status=$?
exit "$status"
