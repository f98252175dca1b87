#!/usr/bin/env bash
# The load generator's own cost per message: runs a release roomcast natively (pinned to SERVER_CPU) and
# roomcast-bench under valgrind's callgrind against it, SHORT and LONG seconds of the same fan-out scenario, and
# prints the generator's instructions per message sent and per delivery from the difference of the two runs, so
# that connection setup, the joins and the handshakes cancel out. bench/callgrind.sh is the same for the server.
#
#   bench/callgrind-generator.sh --rooms 100 --members 10 --senders 1 --size 512 --padding words --window 32 --deflate
#   BENCH=/tmp/before/roomcast-bench bench/callgrind-generator.sh --rooms 100 --members 10 --size 512
#
# Any arguments are passed to `roomcast-bench fanout`. Each run's `callgrind_annotate --inclusive=yes` output is
# in $OUT/<seconds>/inclusive.txt, the self-cost one in $OUT/<seconds>/annotate.txt.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/server-flags.sh
source bench/server-flags.sh
TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
ROOMCAST=${ROOMCAST:-$TARGET_DIR/release/roomcast}
BENCH=${BENCH:-$TARGET_DIR/release/roomcast-bench}
OUT=${OUT:-$(mktemp -d /tmp/roomcast-gen-callgrind.XXXXXX)}
SHORT=${SHORT:-2}
LONG=${LONG:-6}
SERVER_CPU=${SERVER_CPU:-0}
GENERATOR_CPU=${GENERATOR_CPU:-1}
PORT=${PORT:-18191}
mkdir -p "$OUT"
ulimit -n 20000

SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}
trap cleanup EXIT

for seconds in "$SHORT" "$LONG"; do
  run=$OUT/$seconds
  mkdir -p "$run"
  # shellcheck disable=SC2046 # the flags are a word list on purpose
  taskset -c "$SERVER_CPU" "$ROOMCAST" --addr "127.0.0.1:$PORT" $(roomcast_bench_flags "$ROOMCAST") \
    >"$run/server.log" 2>&1 &
  SERVER_PID=$!
  tries=0
  until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
    tries=$((tries + 1))
    [ $tries -lt 200 ] || { echo "roomcast did not start" >&2; exit 1; }
    sleep 0.05
  done
  taskset -c "$GENERATOR_CPU" valgrind --tool=callgrind --callgrind-out-file="$run/callgrind.out" \
    "$BENCH" fanout --fast-masks --addr "127.0.0.1:$PORT" --warmup 0 --setup-timeout 120 "$@" \
    --duration "$seconds" >"$run/run.json" 2>"$run/valgrind.log"
  cleanup
  callgrind_annotate "$run/callgrind.out" >"$run/annotate.txt" 2>/dev/null
  callgrind_annotate --inclusive=yes "$run/callgrind.out" >"$run/inclusive.txt" 2>/dev/null
done

python3 - "$OUT" "$SHORT" "$LONG" <<'PY'
import json, re, sys
out, short, long_ = sys.argv[1:]
def totals(seconds):
    text = open(f"{out}/{seconds}/annotate.txt").read()
    ir = int(re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", text).group(1).replace(",", ""))
    run = json.load(open(f"{out}/{seconds}/run.json"))
    assert run["errors"] == 0 and run["lost"] == 0, f"{seconds} s run had errors or losses: {run['error_detail']}"
    return ir, run["sent_total"], run["delivered_total"], run
(ir_s, sent_s, del_s, _), (ir_l, sent_l, del_l, run) = totals(short), totals(long_)
print(f"short run: {ir_s} instructions, {sent_s} messages, {del_s} deliveries")
print(f"long run:  {ir_l} instructions, {sent_l} messages, {del_l} deliveries")
print(f"inflated {run['inflated']}, reused {run['inflate_reused']} (long run)")
print(f"marginal instructions per message: {(ir_l - ir_s) / (sent_l - sent_s):.0f}; "
      f"per delivery: {(ir_l - ir_s) / (del_l - del_s):.0f}")
PY
echo "files in $OUT"
