#!/usr/bin/env bash
# Redis's own time per chat message with one roomcast node (--redis): starts a redis-server and one node, runs
# one fan-out scenario against it, and prints Redis's INFO commandstats for the measured run (CONFIG RESETSTAT
# first, so the warm-up second is counted too) with the script's microseconds per chat message (EVALSHA's usec, which includes the commands the script
# runs, over the XADDs: one per chat message). Redis's CPU per message is what bounds a cluster's throughput.
#
#   bench/redis-cost.sh --rooms 1 --members 100          # the arguments of `roomcast-bench fanout` after the common ones
#   ROOMCAST=... BENCH=... bench/redis-cost.sh --rooms 100 --members 10
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/server-flags.sh
source bench/server-flags.sh
TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
ROOMCAST=${ROOMCAST:-$TARGET_DIR/release/roomcast}
BENCH=${BENCH:-$TARGET_DIR/release/roomcast-bench}
PORT=${PORT:-18290}
REDIS_PORT=${REDIS_PORT:-16290}
DURATION=${DURATION:-5}
dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
ulimit -n 20000
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" >"$dir/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
# shellcheck disable=SC2046
"$ROOMCAST" --addr "127.0.0.1:$PORT" --redis "redis://127.0.0.1:$REDIS_PORT" --node-id cost \
  $(roomcast_bench_flags "$ROOMCAST") >"$dir/node.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/healthz" || true)" = 200 ] && break
  sleep 0.1
done
redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
# Redis counts the warm-up's messages too: the figures are per chat message of the whole run.
"$BENCH" fanout --addr "127.0.0.1:$PORT" --senders 1 --size 64 --window 32 --warmup 1 --duration "$DURATION" "$@" \
  --fast-masks 2>/dev/null | tail -1 >"$dir/result.json" || true
redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' | grep '^cmdstat' >"$dir/stats.txt"
cat "$dir/stats.txt"
awk -F'[:=,]' '
  /^cmdstat_evalsha:/ { usec = $5; calls = $3 }
  /^cmdstat_xadd:/ { messages = $3 }
  END { if (messages > 0) printf "chat messages %d, script calls %d, script usec per chat message %.2f\n", messages, calls, usec / messages }
' "$dir/stats.txt"
