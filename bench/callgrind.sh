#!/usr/bin/env bash
# Runs roomcast under valgrind's callgrind while roomcast-bench drives one fan-out scenario, then prints the
# server's user-space instructions per delivery and its most expensive functions. Instruction counts do not
# depend on what else the machine is doing, so two builds can be compared on a busy machine, where timings cannot.
#
#   bench/callgrind.sh --rooms 1 --members 100 --duration 3
#   ROOMCAST=/tmp/variant/target/release/roomcast bench/callgrind.sh --rooms 100 --members 10
#   VALGRIND_ARGS="--cache-sim=yes --branch-sim=yes" bench/callgrind.sh --rooms 100 --members 10   # + simulated misses
#
# Any arguments are passed to `roomcast-bench fanout`. Startup and connection setup are included in the total;
# they are well under 1% of it for runs of a few seconds. Build both first: `cargo build --release -p roomcast
# -p roomcast-bench` (the generator is the workspace member bench/loadgen).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/server-flags.sh
source bench/server-flags.sh
TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
ROOMCAST=${ROOMCAST:-$TARGET_DIR/release/roomcast}
BENCH=${BENCH:-$TARGET_DIR/release/roomcast-bench}
OUT=${OUT:-$(mktemp -d /tmp/roomcast-callgrind.XXXXXX)}
mkdir -p "$OUT"
PORT=${PORT:-18190}
ulimit -n 20000

VALGRIND_PID=
cleanup() {
  if [ -n "$VALGRIND_PID" ]; then
    kill "$VALGRIND_PID" 2>/dev/null || true
    wait "$VALGRIND_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

# shellcheck disable=SC2086 # VALGRIND_ARGS is a list of options
valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" ${VALGRIND_ARGS:-} \
  "$ROOMCAST" --addr "127.0.0.1:$PORT" $(roomcast_bench_flags "$ROOMCAST") \
  >"$OUT/valgrind.log" 2>&1 &
VALGRIND_PID=$!
tries=0
until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
  tries=$((tries + 1))
  [ $tries -lt 300 ] || { echo "roomcast did not start under valgrind" >&2; exit 1; }
  sleep 0.1
done

"$BENCH" fanout --fast-masks --addr "127.0.0.1:$PORT" --server-pid "$VALGRIND_PID" --warmup 0 --setup-timeout 120 "$@" \
  >"$OUT/run.json"
kill -INT "$VALGRIND_PID"
wait "$VALGRIND_PID" || true
VALGRIND_PID=

callgrind_annotate "$OUT/callgrind.out" >"$OUT/annotate.txt" 2>/dev/null
total=$(grep 'PROGRAM TOTALS' "$OUT/annotate.txt" | head -1 | awk '{gsub(",", "", $1); print $1}')
deliveries=$(sed 's/.*"delivered_total":\([0-9]*\).*/\1/' "$OUT/run.json")
messages=$(sed 's/.*"sent_total":\([0-9]*\).*/\1/' "$OUT/run.json")
echo "instructions: $total; messages: $messages; deliveries: $deliveries"
awk -v t="$total" -v d="$deliveries" -v m="$messages" \
  'BEGIN { printf "instructions per delivery: %.0f; per message: %.0f\n", t / d, t / m }'
echo "top functions (self):"
grep -E '^ *[0-9,]+ \(' "$OUT/annotate.txt" | sed -n '2,16p' | cut -c1-160
echo "files in $OUT"
