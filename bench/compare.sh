#!/usr/bin/env bash
# roomcast and its peers, side by side: every scenario against every server, REPS times, server pinned to one core
# and the load generator to another. Writes one JSON line per run to $OUT/results.jsonl and the medians and ratios
# to $OUT/summary.md. See docs/benchmarks.md for what each scenario measures.
#
#   bench/compare.sh                          # everything, 3 repetitions (about 8 minutes)
#   REPS=1 DURATION=2 bench/compare.sh        # a quick look
#   SERVERS="roomcast rawtcp" SCENARIOS="fanout_1x100" bench/compare.sh
#   ROOMCAST=/tmp/variant/target/release/roomcast SKIP_BUILD=1 SERVERS=roomcast bench/compare.sh   # A/B a build
#
# Every server and generator this script starts is stopped on exit, however it exits.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/server-flags.sh
source bench/server-flags.sh
REPS=${REPS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
SERVERS=${SERVERS:-"roomcast seed tungstenite rawtcp"}
SCENARIOS=${SCENARIOS:-"fanout_1x100 fanout_100x10 latency_10x100 idle_10k echo_50x64 echo_16mib"}
SERVER_CPU=${SERVER_CPU:-0}
GENERATOR_CPU=${GENERATOR_CPU:-1}
OUT=${OUT:-$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}
PORT_BASE=${PORT_BASE:-18080}
# A negative NICE (e.g. -10, as root) gives the server and the generator the upper hand over background work
# on a shared machine; it applies to every server alike.
NICE=${NICE:-0}

# The workspace's target directory: roomcast and the generator (bench/loadgen) are both built into it.
TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
BENCH=${BENCH:-$TARGET_DIR/release/roomcast-bench}
ROOMCAST=${ROOMCAST:-$TARGET_DIR/release/roomcast}
TOKIO_CHAT=$ROOT/bench/peers/tokio-chat/target/release/tokio-chat
RAWTCP=$ROOT/bench/peers/rawtcp/target/release/rawtcp
NODE_SEED=$ROOT/bench/peers/node-seed/server.js

# The fd hard limit on this machine is 20,000: the idle scenario holds 10,000 connections on each side.
ulimit -n 20000

STARTED=()
cleanup() {
  local pid
  for pid in "${STARTED[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  STARTED=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$OUT/run.log" >&2; }

build() {
  log "building roomcast, roomcast-bench and the peers"
  cargo build --release --quiet -p roomcast -p roomcast-bench
  (cd bench/peers/tokio-chat && cargo build --release --quiet)
  (cd bench/peers/rawtcp && cargo build --release --quiet)
  if [ ! -d bench/peers/node-seed/node_modules/ws ]; then
    (cd bench/peers/node-seed && npm ci --no-audit --no-fund --silent)
  fi
}

machine() {
  {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
      "(family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')," \
      "model $(grep -m1 '^model[[:space:]]*:' /proc/cpuinfo | cut -d: -f2 | tr -d ' '))"
    echo "hypervisor: $(lscpu 2>/dev/null | sed -n 's/^Hypervisor vendor: *//p')"
    echo "kernel: $(uname -r)"
    echo "node: $(node --version)"
    echo "rustc: $(rustc --version)"
    echo "roomcast commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "nice: $NICE"
    echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  } > "$OUT/machine.txt"
}

port_of() {
  case $1 in
    roomcast) echo $((PORT_BASE)) ;;
    seed) echo $((PORT_BASE + 1)) ;;
    tungstenite) echo $((PORT_BASE + 2)) ;;
    rawtcp) echo $((PORT_BASE + 3)) ;;
  esac
}

# Starts server $1 pinned to SERVER_CPU and sets SERVER_PID once it accepts connections.
start_server() {
  local kind=$1 port
  port=$(port_of "$kind")
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use: stop whatever listens there, or set PORT_BASE" >&2
    return 1
  fi
  case $kind in
    roomcast)
      # The default limits (rate 20 msg/s, per-address and input budgets) would throttle the generator: lift them.
      # shellcheck disable=SC2046 # the flags are a word list on purpose
      nice -n "$NICE" taskset -c "$SERVER_CPU" "$ROOMCAST" --addr "127.0.0.1:$port" $(roomcast_bench_flags "$ROOMCAST") \
        >>"$OUT/servers.log" 2>&1 &
      ;;
    seed) PORT=$port nice -n "$NICE" taskset -c "$SERVER_CPU" node "$NODE_SEED" >>"$OUT/servers.log" 2>&1 & ;;
    tungstenite) PORT=$port nice -n "$NICE" taskset -c "$SERVER_CPU" "$TOKIO_CHAT" >>"$OUT/servers.log" 2>&1 & ;;
    rawtcp) nice -n "$NICE" taskset -c "$SERVER_CPU" "$RAWTCP" "127.0.0.1:$port" >>"$OUT/servers.log" 2>&1 & ;;
    *) echo "unknown server $kind" >&2; return 1 ;;
  esac
  SERVER_PID=$!
  STARTED+=("$SERVER_PID")
  local tries=0
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    tries=$((tries + 1))
    if [ $tries -gt 100 ] || ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "server $kind did not start on port $port" >&2
      return 1
    fi
    sleep 0.1
  done
  sleep 0.2
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "server $kind exited right after starting" >&2
    return 1
  fi
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  local kept=() pid
  for pid in "${STARTED[@]}"; do
    [ "$pid" = "$SERVER_PID" ] || kept+=("$pid")
  done
  STARTED=("${kept[@]+"${kept[@]}"}")
}

# The generator's arguments for scenario $1.
scenario_args() {
  local timing="--warmup $WARMUP --duration $DURATION"
  case $1 in
    fanout_1x100) echo "fanout --rooms 1 --members 100 --senders 1 --size 64 --window 32 $timing" ;;
    fanout_100x10) echo "fanout --rooms 100 --members 10 --senders 1 --size 64 --window 32 $timing" ;;
    latency_10x100) echo "fanout --rooms 10 --members 100 --senders 1 --size 64 --rate 100 --window 32 $timing" ;;
    idle_10k) echo "idle --conns 10000 --rooms 100 --hold 2" ;;
    echo_50x64) echo "echo --conns 50 --size 64 $timing" ;;
    echo_16mib) echo "echo --conns 1 --size 16777216 --warmup $WARMUP --duration $DURATION" ;;
    *) echo "unknown scenario $1" >&2; return 1 ;;
  esac
}

# Scenarios a server cannot run: the seed has no /echo.
supported() {
  case "$1:$2" in
    seed:echo_*) return 1 ;;
    *) return 0 ;;
  esac
}

mkdir -p "$OUT"
[ -n "${SKIP_BUILD:-}" ] || build
machine
log "results in $OUT; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for rep in $(seq 1 "$REPS"); do
  for scenario in $SCENARIOS; do
    # Servers take turns inside each repetition, so a change in background load touches them all alike.
    for kind in $SERVERS; do
      supported "$kind" "$scenario" || continue
      start_server "$kind"
      log "rep $rep/$REPS $scenario $kind (load $(cut -d' ' -f1 /proc/loadavg))"
      # shellcheck disable=SC2046
      if ! timeout 300 nice -n "$NICE" taskset -c "$GENERATOR_CPU" "$BENCH" $(scenario_args "$scenario") --addr "127.0.0.1:$(port_of "$kind")" \
        --fast-masks --server-kind "$kind" --server-pid "$SERVER_PID" --label "$scenario" >>"$OUT/results.jsonl" 2>>"$OUT/run.log"; then
        log "rep $rep $scenario $kind FAILED (see run.log)"
      fi
      stop_server
    done
  done
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"
"$BENCH" summarize "$OUT/results.jsonl" > "$OUT/summary.md"
cat "$OUT/machine.txt" "$OUT/summary.md"
