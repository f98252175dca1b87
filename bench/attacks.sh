#!/usr/bin/env bash
# Every attack of the hardening issue against two builds of roomcast (`roomcast-bench attack`, see
# docs/security.md): for each attack, the old build and then the new one, each freshly started with its own
# defaults, server pinned to SERVER_CPU and generator to GENERATOR_CPU. Writes each run's JSON line, server log
# and generator errors (if any) to $OUT, the machine's load before each run to $OUT/runs.txt, and the table of all
# runs to $OUT/summary.md, which it also prints.
#
#   bench/attacks.sh ../roomcast-8645bca/target/release/roomcast target/release/roomcast
#   KINDS="replay burst" bench/attacks.sh old new             # some attacks only
#   ATTACK_FLAGS="--duration 10" bench/attacks.sh old new     # extra generator flags for every run
#   OUT=bench/results/attacks bench/attacks.sh old new        # where the results go
#   NICE=-10 bench/attacks.sh old new                         # both processes ahead of background jobs (root)
#
# Server flags: the defaults of each build, except
#   --max-connections 19000                 for slots and presence-storm, so the limit does not hang on ulimit -n;
#   --max-connections-per-ip 0 --handshake-rate-per-ip 0
#                                           for every attack but slots (which is about them): the bystander and
#                                           every attacker come from 127.0.0.1. Builds without the flags get none.
# Each server gets SERVER_MAX_VMEM_MIB of address space (ulimit -v): a build that grows without bound aborts at
# the cap, and the run reports it, instead of taking a shared machine down. The generator also stops an attack
# once the server's RSS passes 3 GiB. Every server this script starts is stopped on exit, however it exits.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
[ $# -eq 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY" >&2; exit 2; }
OLD=$(realpath "$1")
NEW=$(realpath "$2")
KINDS=${KINDS:-"replay history pin burst flood-continuations flood-pings slots presence-storm"}
PORT=${PORT:-18390}
SERVER_CPU=${SERVER_CPU:-0}
GENERATOR_CPU=${GENERATOR_CPU:-1}
SERVER_MAX_VMEM_MIB=${SERVER_MAX_VMEM_MIB:-2048}
# A negative NICE (as root) puts both processes ahead of other work of this session. With autogroup scheduling
# (/proc/sys/kernel/sched_autogroup_enabled = 1) it orders nothing against other sessions: the report's
# machine_cores_during_attack shows how busy the two cores were anyway.
NICE=${NICE:-0}
ATTACK_FLAGS=${ATTACK_FLAGS:-}
OUT=${OUT:-$ROOT/bench/results/attacks-$(date -u +%Y%m%dT%H%M%SZ)}
TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
BENCH=${BENCH:-$TARGET_DIR/release/roomcast-bench}
[ -x "$BENCH" ] || cargo build --release --quiet -p roomcast-bench
# 15,000 attacking connections and the server's side of them.
ulimit -n 20000
mkdir -p "$OUT"

SERVER_PID=
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}
trap stop_server EXIT
trap 'exit 130' INT TERM

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc), memory: $(free -g | awk '/^Mem:/ {print $2}') GiB, kernel: $(uname -r)"
  echo "roomcast commit (generator, script): $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "old: $OLD ($(sha256sum "$OLD" | cut -c1-16))"
  echo "new: $NEW ($(sha256sum "$NEW" | cut -c1-16))"
  echo "server: cpu $SERVER_CPU, address space $SERVER_MAX_VMEM_MIB MiB; generator: cpu $GENERATOR_CPU; nice $NICE"
  echo "generator flags: --fast-masks --connect-batch 500 $ATTACK_FLAGS"
  echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"
: >"$OUT/runs.txt"

# The flags of `bin` for `kind`: see the header.
server_flags() {
  local bin=$1 kind=$2 help flag
  help=$("$bin" --help)
  echo "--addr 127.0.0.1:$PORT"
  case $kind in
    slots | presence-storm) echo "--max-connections 19000" ;;
  esac
  if [ "$kind" != slots ]; then
    for flag in --max-connections-per-ip --handshake-rate-per-ip; do
      if grep -q -- "$flag " <<<"$help"; then
        echo "$flag 0"
      fi
    done
  fi
}

# One attack against one build: start it, attack it, record how it ended.
run_one() {
  local kind=$1 label=$2 bin=$3
  local base=$OUT/$kind.$label flags status server
  flags=$(server_flags "$bin" "$kind" | tr '\n' ' ')
  # shellcheck disable=SC2086 # the flags are a word list on purpose
  (
    ulimit -v $((SERVER_MAX_VMEM_MIB * 1024))
    exec nice -n "$NICE" taskset -c "$SERVER_CPU" "$bin" $flags >"$base.log" 2>&1
  ) &
  SERVER_PID=$!
  until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "$bin did not start:" >&2
      cat "$base.log" >&2
      exit 1
    fi
    sleep 0.05
  done
  echo "$kind $label: load $(cut -d' ' -f1-3 /proc/loadavg) before; server $bin $flags" >>"$OUT/runs.txt"
  set +e
  # shellcheck disable=SC2086 # ATTACK_FLAGS is a word list on purpose
  nice -n "$NICE" taskset -c "$GENERATOR_CPU" "$BENCH" attack --kind "$kind" --label "$label" \
    --addr "127.0.0.1:$PORT" --server-pid "$SERVER_PID" --server-log "$base.log" --fast-masks --connect-batch 500 \
    $ATTACK_FLAGS >"$base.json" 2>"$base.err"
  status=$?
  set -e
  [ -s "$base.err" ] || rm -f "$base.err"
  # A server that died is a zombie until waited for: it still answers kill -0, so read its state.
  if [ "$(ps -o stat= -p "$SERVER_PID" 2>/dev/null | cut -c1)" = Z ] || ! kill -0 "$SERVER_PID" 2>/dev/null; then
    wait "$SERVER_PID" && server="exited 0" || server="exited with status $?"
    SERVER_PID=
  else
    server="alive at the end"
    stop_server
  fi
  echo "$kind $label: generator exit $status, server $server" | tee -a "$OUT/runs.txt"
  # Let the sockets of this run close before the next server binds.
  sleep 2
}

for kind in $KINDS; do
  run_one "$kind" old "$OLD"
  run_one "$kind" new "$NEW"
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"

files=()
for kind in $KINDS; do
  files+=("$OUT/$kind.old.json" "$OUT/$kind.new.json")
done
"$BENCH" attack-table "${files[@]}" >"$OUT/summary.md"
echo
cat "$OUT/summary.md"
echo "results: $OUT"
