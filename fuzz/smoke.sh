#!/usr/bin/env bash
# Fuzz smoke test: runs every cargo-fuzz target for N seconds (default 30) and fails on any crash.
#
# Usage: bash fuzz/smoke.sh [SECONDS]
# Each target starts from its committed seed corpus (fuzz/corpus/TARGET, only read) plus a scratch corpus under
# fuzz/target/smoke-corpus/TARGET that receives what the run discovers. Crashing inputs are saved by cargo-fuzz in
# fuzz/artifacts/TARGET/. Needs the nightly toolchain; installs cargo-fuzz from crates.io if it is missing.
set -euo pipefail

secs="${1:-30}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
targets=(frame_parser handshake utf8 connection chat_message extensions inflate deflate_connection api)

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz/smoke.sh: the nightly toolchain is required (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

cargo +nightly fuzz build

failed=()
for target in "${targets[@]}"; do
    work="fuzz/target/smoke-corpus/$target"
    log="fuzz/target/smoke-$target.log"
    mkdir -p "$work"
    extra=()
    if [ -f "fuzz/dict/$target.dict" ]; then
        extra+=("-dict=fuzz/dict/$target.dict")
    fi
    echo "== $target: ${secs}s"
    if cargo +nightly fuzz run "$target" "$work" "fuzz/corpus/$target" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        ${extra[@]+"${extra[@]}"} >"$log" 2>&1; then
        grep -E "^#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units" "$log" || true
    else
        echo "!! $target failed; the end of $log:"
        tail -n 60 "$log"
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz smoke failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz smoke passed: ${targets[*]}"
