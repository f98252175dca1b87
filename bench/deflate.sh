#!/usr/bin/env bash
# permessage-deflate (RFC 7692), measured: fan-out with every member on deflate against the same without it and
# against the Node seed server with ws's perMessageDeflate on, the bytes on the wire per delivery, idle memory with
# deflate negotiated, an inflate bomb's cost, and the 16 MiB inflate path against zlib-rs alone. Server pinned to
# SERVER_CPU, generator to GENERATOR_CPU; variants take turns inside every repetition. One JSON line per run in
# $OUT/results.jsonl, the tables and targets in $OUT/summary.md (`roomcast-bench summarize-deflate`), the inflate
# bench's output in $OUT/inflate_large.txt. See docs/benchmarks.md, "permessage-deflate".
#
#   bench/deflate.sh                                  # every part, 3 repetitions (about 15 minutes)
#   PARTS="fanout" REPS=5 bench/deflate.sh            # parts: fanout wire idle bomb inflate
#   VARIANTS="roomcast:plain roomcast:deflate seed:plain seed:deflate" PARTS=fanout bench/deflate.sh
#   ROOMCAST=/tmp/before/roomcast SKIP_BUILD=1 OUT=/tmp/before-deflate bench/deflate.sh
#
# Every server this script starts is stopped on exit, however it exits.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/server-flags.sh
source bench/server-flags.sh
REPS=${REPS:-3}
DURATION=${DURATION:-4}
WARMUP=${WARMUP:-1}
PARTS=${PARTS:-"fanout wire idle bomb inflate"}
# server:mode pairs for the fan-out; mode is what the generator offers (deflate) or not (plain).
VARIANTS=${VARIANTS:-"roomcast:plain roomcast:deflate seed:deflate"}
IDLE_VARIANTS=${IDLE_VARIANTS:-"roomcast:plain roomcast:deflate seed:plain seed:deflate"}
WIRE_VARIANTS=${WIRE_VARIANTS:-"roomcast:plain roomcast:deflate seed:plain seed:deflate"}
SHAPES=${SHAPES:-"1x100 100x10"}
SIZES=${SIZES:-"64 512"}
SERVER_CPU=${SERVER_CPU:-0}
GENERATOR_CPU=${GENERATOR_CPU:-1}
PORT=${PORT:-18380}
NICE=${NICE:-0}
OUT=${OUT:-$ROOT/bench/results/deflate}

TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
BENCH=${BENCH:-$TARGET_DIR/release/roomcast-bench}
ROOMCAST=${ROOMCAST:-$TARGET_DIR/release/roomcast}
SEED_DIR=$ROOT/bench/peers/node-seed

# The fd hard limit on this machine is 20,000: the idle part holds 10,000 connections in the generator and
# 10,000 in the server, each process within its own limit.
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
trap 'exit 130' INT TERM

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$OUT/run.log" >&2; }

# Starts server $1 ("roomcast", "roomcast-defaults" without the benchmark flags, or "seed", with ws's
# permessage-deflate on when $2 is "deflate") and sets SERVER_PID once it accepts connections.
start_server() {
  local kind=$1 mode=${2:-plain}
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "port $PORT is already in use: stop whatever listens there, or set PORT" >&2
    return 1
  fi
  case $kind in
    roomcast)
      # shellcheck disable=SC2046 # the flags are a word list on purpose
      nice -n "$NICE" taskset -c "$SERVER_CPU" "$ROOMCAST" --addr "127.0.0.1:$PORT" $(roomcast_bench_flags "$ROOMCAST") \
        >>"$OUT/servers.log" 2>&1 &
      ;;
    roomcast-defaults)
      nice -n "$NICE" taskset -c "$SERVER_CPU" "$ROOMCAST" --addr "127.0.0.1:$PORT" >>"$OUT/servers.log" 2>&1 &
      ;;
    seed)
      local script=server.js
      [ "$mode" = deflate ] && script=deflate.mjs
      (cd "$SEED_DIR" && PORT=$PORT exec nice -n "$NICE" taskset -c "$SERVER_CPU" node "$script") >>"$OUT/servers.log" 2>&1 &
      ;;
    *) echo "unknown server $kind" >&2; return 1 ;;
  esac
  SERVER_PID=$!
  local tries=0
  until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
    tries=$((tries + 1))
    if [ $tries -gt 200 ] || ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "server $kind did not start on port $PORT" >&2
      return 1
    fi
    sleep 0.05
  done
  sleep 0.2
}

# Runs the generator with "$@" against a fresh server $1 in mode $2, appending its line to results.jsonl.
measure() {
  local kind=$1 mode=$2 label=$3
  shift 3
  local offer=()
  [ "$mode" = deflate ] && offer=(--deflate)
  start_server "$kind" "$mode"
  log "$label $kind $mode (load $(cut -d' ' -f1 /proc/loadavg))"
  if ! timeout 300 nice -n "$NICE" taskset -c "$GENERATOR_CPU" "$BENCH" "$@" "${offer[@]}" --addr "127.0.0.1:$PORT" \
    --fast-masks --server-kind "${kind%-defaults}" --server-pid "$SERVER_PID" --label "$label" \
    >>"$OUT/results.jsonl" 2>>"$OUT/run.log"; then
    log "$label $kind $mode FAILED (see run.log)"
  fi
  cleanup
}

mkdir -p "$OUT"
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release --quiet -p roomcast -p roomcast-bench
  [ -d "$SEED_DIR/node_modules/ws" ] || (cd "$SEED_DIR" && npm ci --no-audit --no-fund --silent)
fi
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc)"
  echo "kernel: $(uname -r)"
  echo "node: $(node --version), ws $(node -p "require('$SEED_DIR/node_modules/ws/package.json').version" 2>/dev/null)"
  echo "roomcast commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "roomcast binary: $ROOMCAST"
  echo "reps: $REPS, duration: $DURATION s, warm-up: $WARMUP s, nice: $NICE"
  echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >>"$OUT/machine.txt"
log "results in $OUT; parts: $PARTS; load average $(cut -d' ' -f1-3 /proc/loadavg)"

timing="--warmup $WARMUP --duration $DURATION"
for part in $PARTS; do
  case $part in
    fanout)
      for rep in $(seq "$REPS"); do
        for shape in $SHAPES; do
          for size in $SIZES; do
            for variant in $VARIANTS; do
              # shellcheck disable=SC2086 # timing is a word list on purpose
              measure "${variant%%:*}" "${variant#*:}" "fanout_${shape}_${size}B" fanout --rooms "${shape%%x*}" \
                --members "${shape#*x}" --senders 1 --size "$size" --padding words --window 32 $timing
            done
          done
        done
      done
      ;;
    wire)
      # A fixed 100 messages/s in one room of 100, so every server carries the same load.
      for variant in $WIRE_VARIANTS; do
        # shellcheck disable=SC2086
        measure "${variant%%:*}" "${variant#*:}" "wire_300B" fanout --rooms 1 --members 100 --senders 1 --size 300 \
          --padding words --rate 100 --window 32 $timing
      done
      ;;
    idle)
      for rep in $(seq "$REPS"); do
        for variant in $IDLE_VARIANTS; do
          measure "${variant%%:*}" "${variant#*:}" idle_10k idle --conns 10000 --rooms 100 --hold 2
        done
      done
      ;;
    bomb)
      for rep in $(seq "$REPS"); do
        # The chat route with every default (64 KiB messages, the per-connection byte budget), and /echo with the
        # benchmark flags' 16 MiB messages. Warm: after one ordinary compressed message; cold: the bomb is the
        # first message the server ever inflates.
        for warmth in warm cold; do
          cold=()
          [ "$warmth" = cold ] && cold=(--cold)
          measure roomcast-defaults deflate "bomb_ws_16MiB_$warmth" bomb --path /ws --inflate-to 16777216 "${cold[@]}"
          measure roomcast deflate "bomb_echo_1GiB_$warmth" bomb --path /echo --inflate-to 1073741824 "${cold[@]}"
        done
      done
      ;;
    inflate)
      log "cargo bench --bench inflate_large (load $(cut -d' ' -f1 /proc/loadavg))"
      nice -n "$NICE" taskset -c "$SERVER_CPU" cargo bench --quiet --bench inflate_large 2>>"$OUT/run.log" \
        | tee -a "$OUT/inflate_large.txt"
      ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
  esac
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
"$BENCH" summarize-deflate "$OUT/results.jsonl" >"$OUT/summary.md"
cat "$OUT/summary.md"
