#!/usr/bin/env bash
# Requests per second of POST /api/publish on one server core, with keep-alive, measured by wrk (Debian's `wrk`).
#
#   bench/api.sh [BINARY]        # default: $CARGO_TARGET_DIR/release/roomcast (else target/release/roomcast)
#   CONNS=16 DURATION=20 bench/api.sh
#
# The server (single-threaded) is pinned to SERVER_CPU and wrk (one thread) to GENERATOR_CPU. Each of CONNS
# keep-alive connections sends `POST /api/publish` with `Authorization: Bearer KEY` and a 47-byte JSON body into
# a room nobody is in (the message is numbered and kept in the room's history, as for members). The run's wrk
# output, the load average before and after, and the server's /metrics API counters go to
# bench/results/api-<timestamp>/.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=bench/server-flags.sh
source bench/server-flags.sh
BIN=${1:-${CARGO_TARGET_DIR:-target}/release/roomcast}
PORT=${PORT:-18193}
CONNS=${CONNS:-8}
DURATION=${DURATION:-10}
SERVER_CPU=${SERVER_CPU:-0}
GENERATOR_CPU=${GENERATOR_CPU:-1}
KEY=bench-api-key-0123456789abcdef
command -v wrk >/dev/null || { echo "bench/api.sh needs wrk (apt-get install wrk)" >&2; exit 1; }
out=bench/results/api-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"

SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

# shellcheck disable=SC2046
ROOMCAST_API_KEY=$KEY taskset -c "$SERVER_CPU" "$BIN" --addr "127.0.0.1:$PORT" $(roomcast_bench_flags "$BIN") \
  >"$out/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

cat >"$out/publish.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"room":"bench","content":"hello from the api bench"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
LUA

{
  echo "binary: $BIN ($(git rev-parse --short HEAD))"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "command: taskset -c $GENERATOR_CPU wrk -t1 -c$CONNS -d${DURATION}s --latency -s publish.lua http://127.0.0.1:$PORT/api/publish"
} | tee "$out/run.txt"
taskset -c "$GENERATOR_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$out/publish.lua" \
  "http://127.0.0.1:$PORT/api/publish" | tee -a "$out/run.txt"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/run.txt"
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^roomcast_api' >"$out/metrics.txt" || true
echo "results in $out"
