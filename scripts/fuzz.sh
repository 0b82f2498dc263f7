#!/usr/bin/env bash
# Runs every cargo-fuzz target (or the ones named) for SECONDS each, one
# after the other, from the checked-in corpus. New interesting inputs go to
# fuzz/work/<target> (not checked in); a finding stops the run and is left
# in fuzz/artifacts/<target>/ with the command that reproduces it.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]      # default 60 s, every target
#
# Needs the nightly toolchain (cargo-fuzz's instrumentation); installs
# cargo-fuzz if missing. Builds without a sanitizer: ringkv is safe Rust (but
# for the storage record's thin pointer, which has tests of its own),
# and what the targets look for is panics, hangs, stack overflows and
# runaway allocations, which libFuzzer catches by itself.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

SECONDS_EACH=${1:-60}
shift || true
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build --sanitizer none
for target in "${targets[@]}"; do
    mkdir -p "work/$target"
    log="work/$target.log"
    echo "== $target: ${SECONDS_EACH}s (log in fuzz/$log)"
    # -timeout: an input taking over 10 s is a hang; -rss_limit_mb (and the
    # malloc limit it implies) turns a runaway allocation into a finding.
    status=0
    cargo +nightly fuzz run --sanitizer none "$target" "work/$target" "corpus/$target" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1 ||
        status=$?
    grep -E '^(#[0-9]+[[:space:]]+DONE|stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb))' "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -40 "$log" >&2
        echo "$target: finding in fuzz/artifacts/$target (log in fuzz/$log)" >&2
        exit 1
    fi
done
