#!/usr/bin/env bash
# Two (or more) builds of roomcast side by side: the builds take turns, REPS times, in one fan-out, echo or idle
# scenario, server pinned to SERVER_CPU and generator to GENERATOR_CPU, and the script prints every run and each
# build's median. This machine's speed drifts by up to 25% over minutes, so a change is measured only as the
# ratio of medians taken in one such interleaved run.
#
#   bench/ab.sh /tmp/before/roomcast target/release/roomcast                    # fanout 100 x 10, 3 reps
#   REPS=5 SCENARIO="fanout --rooms 1 --members 100" bench/ab.sh old new
#   SCENARIO="echo --conns 1 --size 16777216" bench/ab.sh old new
#   SCENARIO="idle --conns 10000 --rooms 100 --hold 2" bench/ab.sh old new
#
# Build a "before" binary with `git worktree add /tmp/before <commit> && cargo build --release -p roomcast` there.
# The generator is the workspace member bench/loadgen (`cargo build --release -p roomcast-bench`), built here if
# missing; like every path here it lives in the workspace's target directory ($CARGO_TARGET_DIR, else target/).
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=bench/server-flags.sh
source bench/server-flags.sh
[ $# -ge 2 ] || { echo "usage: $0 BINARY BINARY [BINARY...]" >&2; exit 2; }
REPS=${REPS:-3}
SCENARIO=${SCENARIO:-"fanout --rooms 100 --members 10 --senders 1 --size 64 --window 32"}
PORT=${PORT:-18190}
SERVER_CPU=${SERVER_CPU:-0}
GENERATOR_CPU=${GENERATOR_CPU:-1}
BENCH=${BENCH:-${CARGO_TARGET_DIR:-target}/release/roomcast-bench}
[ -x "$BENCH" ] || cargo build --release --quiet -p roomcast-bench
ulimit -n 20000

case "$SCENARIO" in
  idle*) FIELD=rss_per_conn_bytes; TIMING="" ;;
  echo*) FIELD=round_trips_per_sec; TIMING="--warmup 1 --duration 4" ;;
  *) FIELD=deliveries_per_sec; TIMING="--warmup 1 --duration 4" ;;
esac

SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

declare -A figures
for rep in $(seq "$REPS"); do
  for bin in "$@"; do
    # shellcheck disable=SC2046 # the flags are a word list on purpose
    taskset -c "$SERVER_CPU" "$bin" --addr "127.0.0.1:$PORT" $(roomcast_bench_flags "$bin") >/dev/null 2>&1 &
    SERVER_PID=$!
    until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do sleep 0.05; done
    # shellcheck disable=SC2086 # SCENARIO and TIMING are word lists on purpose
    line=$(taskset -c "$GENERATOR_CPU" "$BENCH" $SCENARIO $TIMING --addr "127.0.0.1:$PORT" --server-pid "$SERVER_PID" --fast-masks)
    cleanup
    SERVER_PID=
    figure=$(grep -o "\"$FIELD\":[0-9.]*" <<<"$line" | cut -d: -f2)
    cpu=$(grep -o '"server_cpu_pct":[0-9.]*' <<<"$line" | cut -d: -f2 || true)
    echo "rep $rep  $bin  $FIELD $figure  server CPU ${cpu:--}%"
    figures[$bin]="${figures[$bin]:-} $figure"
  done
done

first=
for bin in "$@"; do
  median=$(tr ' ' '\n' <<<"${figures[$bin]}" | grep . | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}')
  if [ -z "$first" ]; then
    first=$median
    echo "median  $bin  $median"
  else
    echo "median  $bin  $median  ($(awk -v a="$median" -v b="$first" 'BEGIN {printf "%.3f", a/b}')x the first)"
  fi
done
