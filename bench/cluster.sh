#!/usr/bin/env bash
# roomcast across nodes (issue 13), side by side with Socket.IO and its Redis adapter: every scenario against every
# setup, REPS times, each run with a Redis of its own on a free port and the members of every room split across
# the setup's nodes. Then, unless CALLGRIND is empty, the instructions per delivery of 1, 2 and 3 nodes (and of
# Redis) under valgrind's callgrind, which the machine's load does not change. Writes $OUT/results.jsonl (one
# JSON line per run), $OUT/callgrind.jsonl, $OUT/summary.md (`roomcast-bench summarize-cluster`), $OUT/run.log and
# $OUT/machine.txt. See docs/benchmarks.md, "Across nodes (issue 13)".
#
#   bench/cluster.sh                                   # everything, 3 repetitions (about 12 minutes)
#   REPS=1 DURATION=2 CALLGRIND= bench/cluster.sh      # a quick look
#   SETUPS="roomcast2 socketio2" SCENARIOS=fanout_1x100 bench/cluster.sh
#
# Setups: roomcast1 (one node, no Redis), roomcast1r (one node with --redis), roomcast2 and roomcast3 (2 or 3
# nodes with --redis), socketio1 and socketio2 (1 or 2 Socket.IO processes with @socket.io/redis-adapter).
# Every server and Redis runs pinned to SERVER_CPUS (default CPU 0; Redis to REDIS_CPUS, by default the same), the
# generator to GENERATOR_CPU (CPU 1), so on this two-core machine the nodes of a setup share one core: the
# throughput of more nodes is told by callgrind. Callgrind's raw counts are summed up and deleted (the 30 most
# expensive functions of each process are kept as *.top.txt) unless KEEP_CALLGRIND_OUT=1.
# Every process this script starts is stopped on exit, however it exits.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/server-flags.sh
source bench/server-flags.sh
REPS=${REPS:-3}
DURATION=${DURATION:-5}
# Two seconds: Socket.IO takes over one to work off the first window of 3,200 messages of fanout_100x10.
WARMUP=${WARMUP:-2}
SETUPS=${SETUPS:-"roomcast1 roomcast1r roomcast2 roomcast3 socketio2"}
SCENARIOS=${SCENARIOS:-"fanout_1x100 fanout_100x10 latency_10x100"}
CALLGRIND=${CALLGRIND-"0 1 2 3"}
CALLGRIND_SCENARIOS=${CALLGRIND_SCENARIOS:-"fanout_1x100 fanout_100x10"}
CALLGRIND_DURATIONS=${CALLGRIND_DURATIONS:-"1 5"}
SERVER_CPUS=${SERVER_CPUS:-0}
GENERATOR_CPU=${GENERATOR_CPU:-1}
# Redis shares the nodes' core unless told otherwise (REDIS_CPUS=1: the generator's core instead).
REDIS_CPUS=${REDIS_CPUS:-$SERVER_CPUS}
OUT=${OUT:-$ROOT/bench/results/cluster-$(date -u +%Y%m%dT%H%M%SZ)}
PORT_BASE=${PORT_BASE:-18400}
REDIS_PORT_BASE=${REDIS_PORT_BASE:-16400}
NICE=${NICE:-0}

TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
BENCH=${BENCH:-$TARGET_DIR/release/roomcast-bench}
ROOMCAST=${ROOMCAST:-$TARGET_DIR/release/roomcast}
SOCKETIO=$ROOT/bench/peers/socketio/server.js
REDIS_SERVER=${REDIS_SERVER:-redis-server}

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
  log "building roomcast and roomcast-bench; npm ci for the Socket.IO peer"
  cargo build --release --quiet -p roomcast -p roomcast-bench
  if [ ! -d bench/peers/socketio/node_modules/socket.io ]; then
    (cd bench/peers/socketio && npm ci --no-audit --no-fund --silent)
  fi
}

machine() {
  {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "kernel: $(uname -r)"
    echo "node: $(node --version)"
    echo "socket.io: $(node -p "require('$ROOT/bench/peers/socketio/node_modules/socket.io/package.json').version")," \
      "@socket.io/redis-adapter: $(node -p "require('$ROOT/bench/peers/socketio/node_modules/@socket.io/redis-adapter/package.json').version")," \
      "redis (node client): $(node -p "require('$ROOT/bench/peers/socketio/node_modules/redis/package.json').version")"
    echo "redis-server: $("$REDIS_SERVER" --version)"
    echo "rustc: $(rustc --version)"
    echo "roomcast commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "server cpus: $SERVER_CPUS; redis cpus: $REDIS_CPUS; generator cpu: $GENERATOR_CPU; nice: $NICE"
    echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  } > "$OUT/machine.txt"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The first port from $1 up that nothing listens on.
free_port() {
  local port=$1
  while port_open "$port"; do port=$((port + 1)); done
  echo "$port"
}

# Waits until port $1 accepts connections while process $2 lives.
wait_port() {
  local tries=0
  until port_open "$1"; do
    tries=$((tries + 1))
    if [ $tries -gt 300 ] || ! kill -0 "$2" 2>/dev/null; then
      echo "nothing listens on port $1 (process $2)" >&2
      return 1
    fi
    sleep 0.1
  done
}

# Waits until roomcast on port $1 answers /healthz with 200: with --redis, both Redis connections are ready.
wait_healthy() {
  local tries=0
  until (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n' >&3 &&
    head -1 <&3 | grep -q ' 200') 2>/dev/null; do
    tries=$((tries + 1))
    [ $tries -lt 300 ] || { echo "roomcast on port $1 never became healthy" >&2; return 1; }
    sleep 0.1
  done
}

# Starts a Redis of its own on a free port, in a directory of its own, without persistence; sets REDIS_PORT and
# REDIS_PID. Under valgrind when $1 is a callgrind output file.
start_redis() {
  local callgrind_out=${1:-}
  REDIS_PORT=$(free_port "$REDIS_PORT_BASE")
  local dir="$OUT/redis/$REDIS_PORT"
  mkdir -p "$dir"
  local args=(--port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir")
  if [ -n "$callgrind_out" ]; then
    valgrind --tool=callgrind --callgrind-out-file="$callgrind_out" "$(command -v "$REDIS_SERVER")" "${args[@]}" \
      >>"$OUT/servers.log" 2>&1 &
  else
    nice -n "$NICE" taskset -c "$REDIS_CPUS" "$REDIS_SERVER" "${args[@]}" >>"$OUT/servers.log" 2>&1 &
  fi
  REDIS_PID=$!
  STARTED+=("$REDIS_PID")
  wait_port "$REDIS_PORT" "$REDIS_PID"
}

# Starts setup $1; sets KIND, ADDRS, PIDS (the nodes), REDIS_PORT and REDIS_PID (empty without Redis). With $2 a
# directory, every process runs under callgrind and writes its counts there.
start_setup() {
  local setup=$1 callgrind_dir=${2:-} nodes redis=yes kind
  case $setup in
    roomcast1) kind=roomcast; nodes=1; redis= ;;
    roomcast1r) kind=roomcast; nodes=1 ;;
    roomcast[0-9]) kind=roomcast; nodes=${setup#roomcast} ;;
    socketio[0-9]) kind=socketio; nodes=${setup#socketio} ;;
    *) echo "unknown setup $setup" >&2; return 1 ;;
  esac
  KIND=$kind ADDRS=() PIDS=() REDIS_PORT= REDIS_PID=
  if [ -n "$redis" ]; then
    start_redis "${callgrind_dir:+$callgrind_dir/redis.out}"
  fi
  local n port flags
  for n in $(seq 1 "$nodes"); do
    port=$(free_port $((PORT_BASE + n - 1)))
    case $kind in
      roomcast)
        # shellcheck disable=SC2046 # the flags are a word list on purpose
        flags="$(roomcast_bench_flags "$ROOMCAST")${redis:+ --redis redis://127.0.0.1:$REDIS_PORT --node-id node$n}"
        if [ -n "$callgrind_dir" ]; then
          # shellcheck disable=SC2086
          valgrind --tool=callgrind --callgrind-out-file="$callgrind_dir/node$n.out" \
            "$ROOMCAST" --addr "127.0.0.1:$port" $flags >>"$OUT/servers.log" 2>&1 &
        else
          # shellcheck disable=SC2086
          nice -n "$NICE" taskset -c "$SERVER_CPUS" "$ROOMCAST" --addr "127.0.0.1:$port" $flags >>"$OUT/servers.log" 2>&1 &
        fi
        ;;
      socketio)
        PORT=$port REDIS_URL="redis://127.0.0.1:$REDIS_PORT" nice -n "$NICE" taskset -c "$SERVER_CPUS" \
          node "$SOCKETIO" >>"$OUT/servers.log" 2>&1 &
        ;;
    esac
    PIDS+=("$!")
    STARTED+=("$!")
    ADDRS+=("127.0.0.1:$port")
    wait_port "$port" "$!"
    if [ "$kind" = roomcast ] && [ -n "$redis" ]; then wait_healthy "$port"; fi
  done
  sleep 0.3
}

stop_setup() { cleanup; }

# The generator's arguments for scenario $1 (with $2 the timing flags).
scenario_args() {
  case $1 in
    fanout_1x100) echo "fanout --rooms 1 --members 100 --senders 1 --size 64 --window 32 $2" ;;
    fanout_100x10) echo "fanout --rooms 100 --members 10 --senders 1 --size 64 --window 32 $2" ;;
    # 10 senders at 100 messages/s each: 1,000 chat messages/s, 100,000 deliveries/s.
    latency_10x100) echo "fanout --rooms 10 --members 100 --senders 1 --size 64 --rate 100 --window 32 $2" ;;
    # 100 rooms of 10 at 10 messages/s each: the same 1,000 chat messages/s, 10,000 deliveries/s, a load at which
    # no process here is near its core's limit (at 100,000 deliveries/s one node spends ~90% of its core in the
    # kernel's sends), so the p99 is the path's and not a queue's.
    latency_100x10) echo "fanout --rooms 100 --members 10 --senders 1 --size 64 --rate 10 --window 32 $2" ;;
    *) echo "unknown scenario $1" >&2; return 1 ;;
  esac
}

# The generator's flags naming the running setup's nodes, processes and Redis.
target_args() {
  local args="--server-kind $KIND --addr ${ADDRS[0]} --server-pid ${PIDS[0]}" i
  for i in $(seq 1 $((${#ADDRS[@]} - 1))); do
    args="$args --also-addr ${ADDRS[$i]} --also-server-pid ${PIDS[$i]}"
  done
  if [ -n "$REDIS_PORT" ]; then
    args="$args --redis-pid $REDIS_PID --redis-addr 127.0.0.1:$REDIS_PORT"
  fi
  echo "$args"
}

# Stops the processes of a callgrind run with SIGINT (so that callgrind writes its counts) and waits for them.
stop_callgrind() {
  local pid
  for pid in "${PIDS[@]}" ${REDIS_PID:+"$REDIS_PID"}; do
    kill -INT "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}" ${REDIS_PID:+"$REDIS_PID"}; do
    wait "$pid" 2>/dev/null || true
  done
  STARTED=()
}

# The PROGRAM TOTALS of callgrind output file $1; keeps its 30 most expensive functions beside it as .top.txt and
# deletes it unless KEEP_CALLGRIND_OUT is set.
instructions() {
  local top="${1%.out}.top.txt"
  callgrind_annotate "$1" 2>/dev/null | grep -E '^ *[0-9,]+ \(' | head -31 | cut -c1-200 >"$top"
  grep 'PROGRAM TOTALS' "$top" | head -1 | awk '{gsub(",", "", $1); print $1}'
  [ -n "${KEEP_CALLGRIND_OUT:-}" ] || rm -f "$1"
}

# One fan-out scenario $2 of $3 seconds against N = $1 roomcast nodes under callgrind (N = 0: one node without
# Redis); appends a JSON line with every process's instructions to callgrind.jsonl. The summary takes the
# difference between the runs of two durations, so that starting, joining and Redis's idle work cancel out.
callgrind_run() {
  local nodes=$1 scenario=$2 duration=$3 setup dir line n counts=() redis_count=null
  case $nodes in
    0) setup=roomcast1 ;;
    1) setup=roomcast1r ;;
    *) setup=roomcast$nodes ;;
  esac
  dir="$OUT/callgrind/$scenario-$setup-${duration}s"
  mkdir -p "$dir"
  start_setup "$setup" "$dir"
  log "callgrind $scenario $setup ${duration}s"
  # shellcheck disable=SC2046
  line=$(timeout 600 "$BENCH" $(scenario_args "$scenario" "--warmup 0 --duration $duration") \
    $(target_args) --fast-masks --setup-timeout 120 --label "$scenario/$setup" 2>>"$OUT/run.log") || true
  stop_callgrind
  for n in $(seq 1 "${#PIDS[@]}"); do
    counts+=("$(instructions "$dir/node$n.out")")
  done
  [ -f "$dir/redis.out" ] && redis_count=$(instructions "$dir/redis.out")
  printf '{"label":"%s/%s","duration_s":%s,"node_instructions":[%s],"redis_instructions":%s,"run":%s}\n' \
    "$scenario" "$setup" "$duration" "$(IFS=,; echo "${counts[*]}")" "${redis_count:-null}" "${line:-null}" \
    >>"$OUT/callgrind.jsonl"
}

mkdir -p "$OUT"
touch "$OUT/results.jsonl"
[ -n "${SKIP_BUILD:-}" ] || build
machine
log "results in $OUT; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for rep in $(seq 1 "$REPS"); do
  for scenario in $SCENARIOS; do
    # Setups take turns inside each repetition, so a change in background load touches them all alike.
    for setup in $SETUPS; do
      start_setup "$setup"
      log "rep $rep/$REPS $scenario $setup (load $(cut -d' ' -f1 /proc/loadavg))"
      # shellcheck disable=SC2046
      if ! timeout 300 nice -n "$NICE" taskset -c "$GENERATOR_CPU" "$BENCH" \
        $(scenario_args "$scenario" "--warmup $WARMUP --duration $DURATION") $(target_args) \
        --fast-masks --label "$scenario/$setup" >>"$OUT/results.jsonl" 2>>"$OUT/run.log"; then
        log "rep $rep $scenario $setup FAILED (see run.log)"
      fi
      stop_setup
    done
  done
done
for nodes in $CALLGRIND; do
  for scenario in $CALLGRIND_SCENARIOS; do
    for duration in $CALLGRIND_DURATIONS; do
      callgrind_run "$nodes" "$scenario" "$duration"
    done
  done
done
# Each Redis had a directory of its own, left empty without persistence.
find "$OUT/redis" -type d -empty -delete 2>/dev/null || true
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"
"$BENCH" summarize-cluster "$OUT/results.jsonl" ${CALLGRIND:+"$OUT/callgrind.jsonl"} > "$OUT/summary.md"
cat "$OUT/machine.txt" "$OUT/summary.md"
