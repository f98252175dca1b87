#!/usr/bin/env bash
# A soak: one roomcast, with its default limits, under DURATION seconds (10 minutes by default) of innocent chat,
# churn and hostile clients (`roomcast-bench soak`, see docs/benchmarks.md, "Soak"). Server pinned to SERVER_CPU,
# generator to GENERATOR_CPU. Writes the 5-second samples, the summary, the progress lines and the server's log to
# $OUT (bench/results/soak-<date>/), prints the server's memory curve, and exits non-zero unless the innocents
# came through unhurt: none dropped, no message lost or duplicated, p99 latency under 50 ms.
#
#   bench/soak.sh                                   # 10 minutes, 2,000 innocents in 100 rooms, every attacker
#   DURATION=60 bench/soak.sh                       # a minute
#   SOAK_FLAGS="--no-flood --clients 500" bench/soak.sh
#   SERVER_FLAGS="--history 200" bench/soak.sh      # extra server flags
#   ROOMCAST=/tmp/before/target/release/roomcast SKIP_BUILD=1 bench/soak.sh
#
# The server and generator this script starts are stopped on exit, however it exits.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-600}
PORT=${PORT:-18290}
SERVER_CPU=${SERVER_CPU:-0}
GENERATOR_CPU=${GENERATOR_CPU:-1}
# A negative NICE (e.g. -10, as root) gives both processes the upper hand over background work on a shared machine.
NICE=${NICE:-0}
SERVER_FLAGS=${SERVER_FLAGS:-}
SOAK_FLAGS=${SOAK_FLAGS:-}
SERVER_MAX_VMEM_MIB=${SERVER_MAX_VMEM_MIB:-4096}
OUT=${OUT:-$ROOT/bench/results/soak-$(date -u +%Y%m%dT%H%M%SZ)}

TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
BENCH=${BENCH:-$TARGET_DIR/release/roomcast-bench}
ROOMCAST=${ROOMCAST:-$TARGET_DIR/release/roomcast}

if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release --quiet -p roomcast -p roomcast-bench
fi
# 2,000 innocents, the attackers and the idle churn, on both ends of loopback.
ulimit -n 20000
mkdir -p "$OUT"

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

# Every connection comes from 127.0.0.1, so per-address limits must be lifted; builds that predate those flags
# do not know them, and get nothing.
help=$("$ROOMCAST" --help)
limit_flags=()
for flag in --max-connections-per-ip --handshake-rate-per-ip; do
  if grep -q -- "$flag" <<<"$help"; then
    limit_flags+=("$flag" 0)
  else
    echo "note: $ROOMCAST has no $flag; not passed" >&2
  fi
done

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc)"
  echo "kernel: $(uname -r)"
  echo "roomcast commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "server: $ROOMCAST --addr 127.0.0.1:$PORT ${limit_flags[*]:-} $SERVER_FLAGS (cpu $SERVER_CPU, nice $NICE," \
    "address space $SERVER_MAX_VMEM_MIB MiB)"
  echo "generator: $BENCH soak --duration $DURATION $SOAK_FLAGS (cpu $GENERATOR_CPU, nice $NICE)"
  echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"

# The server gets at most SERVER_MAX_VMEM_MIB of address space, and the generator stops the soak once the server's
# RSS passes 2 GiB (--max-server-rss-mib): a server that queues without bound fails the soak without taking a
# shared machine down with it.
# shellcheck disable=SC2086 # SERVER_FLAGS is a word list on purpose
(
  ulimit -v $((SERVER_MAX_VMEM_MIB * 1024))
  exec nice -n "$NICE" taskset -c "$SERVER_CPU" "$ROOMCAST" --addr "127.0.0.1:$PORT" \
    ${limit_flags[@]+"${limit_flags[@]}"} $SERVER_FLAGS >"$OUT/server.log" 2>&1
) &
SERVER_PID=$!
until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "roomcast did not start:" >&2
    cat "$OUT/server.log" >&2
    exit 1
  fi
  sleep 0.05
done

set +e
# shellcheck disable=SC2086 # SOAK_FLAGS is a word list on purpose
nice -n "$NICE" taskset -c "$GENERATOR_CPU" "$BENCH" soak --addr "127.0.0.1:$PORT" --server-pid "$SERVER_PID" \
  --fast-masks --label soak --duration "$DURATION" --samples "$OUT/samples.jsonl" $SOAK_FLAGS \
  >"$OUT/summary.json" 2> >(tee "$OUT/progress.log" >&2)
status=$?
set -e
server_alive=yes
kill -0 "$SERVER_PID" 2>/dev/null || server_alive=no
cleanup

# The memory curve, at most about a dozen rows: is the server's RSS flat after warm-up?
echo
echo "server memory and the innocents ($(wc -l <"$OUT/samples.jsonl" 2>/dev/null || echo 0) samples, about a dozen shown):"
awk '
  function field(line, name,    m) {
    if (match(line, "\"" name "\":-?[0-9.]+")) { m = substr(line, RSTART, RLENGTH); sub(/^[^:]*:/, "", m); return m }
    return "-"
  }
  { rows[NR] = $0 }
  END {
    step = int((NR + 11) / 12); if (step < 1) step = 1
    printf "%7s %9s %8s %8s %6s %6s %9s %8s\n", "t (s)", "RSS MiB", "joined", "dropped", "lost", "dup", "p99 ms", "srv CPU%"
    for (i = 1; i <= NR; i++) {
      if (i % step != 0 && i != NR) continue
      r = rows[i]; kib = field(r, "rss_kib")
      printf "%7s %9s %8s %8s %6s %6s %9s %8s\n", field(r, "t_s"), (kib == "-" ? "-" : sprintf("%.1f", kib / 1024)),
        field(r, "innocents_connected"), field(r, "innocents_dropped"), field(r, "lost"), field(r, "duplicated"),
        field(r, "p99"), field(r, "server_cpu_pct")
    }
  }' "$OUT/samples.jsonl" 2>/dev/null || true

echo
grep -o '"rss_kib":{[^}]*}' "$OUT/summary.json" || true
grep -o '"pass":{[^}]*}' "$OUT/summary.json" || true
grep -o '"aborted":"[^"]*"' "$OUT/summary.json" || true
echo "results: $OUT"
if [ "$server_alive" != yes ]; then
  echo "FAIL: roomcast exited during the soak"
  exit 4
fi
case $status in
  0) echo "PASS" ;;
  3) echo "FAIL: a criterion failed, see \"pass\" above and $OUT/summary.json"; exit 3 ;;
  *) echo "ERROR: the soak did not complete (status $status)"; exit "$status" ;;
esac
