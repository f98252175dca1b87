#!/usr/bin/env bash
# 100,000 joined connections on one machine, past one process's file limit (issue 13): six roomcast processes share
# one port with --reuse-port and one redis-server; eight `roomcast-bench scale` processes, each from a loopback
# source address of its own (127.0.0.11, .12, ...), connect and join them in rooms of 10. Reports the time to join
# them all, each server process's resident memory per connection, Redis's memory per connection (INFO memory), how
# the rooms' members are spread over the processes (from Redis), and that a line said in every room reached each
# of its members once. Everything it starts it stops, on any exit; the whole run is bounded (SCALE_LIMIT seconds).
#
#   nice -n 10 bench/scale.sh                 # 100,000 connections, 6 nodes, 8 generators, rooms of 10
#   SCALE_CONNS=20000 bench/scale.sh          # smaller
#
# Environment: SCALE_CONNS (100000), SCALE_NODES (6), SCALE_GENERATORS (8), SCALE_ROOM_SIZE (10), SCALE_BATCH
# (50: joins in flight per generator), SCALE_STAGGER (seconds between node starts: 5/6), SCALE_CHECK_BATCH (100: rooms whose check line is in flight per generator),
# SCALE_LIMIT (1200 s), SCALE_OUT (bench/results/scale-<UTC time>), ROOMCAST_REDIS_SERVER (redis-server),
# CARGO_TARGET_DIR; ROOMCAST and BENCH (both) to run binaries built elsewhere instead of building them here.
# Needs redis-server and redis-cli, python3, and a kernel that lets the connections exist: it checks the limits it
# needs (open files per process and in all, the listen backlog cap, ephemeral ports per source address, the
# connection tracking table), raises only a system-wide one that is too low, says so, and puts it back at the end.
# It never raises its own open-file limit: going past it with more processes is the point.
# Talks only to 127.0.0.0/8.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
conns=${SCALE_CONNS:-100000}
nodes=${SCALE_NODES:-6}
generators=${SCALE_GENERATORS:-8}
room_size=${SCALE_ROOM_SIZE:-10}
limit=${SCALE_LIMIT:-1200}
batch=${SCALE_BATCH:-50}
check_batch=${SCALE_CHECK_BATCH:-100}
out=${SCALE_OUT:-$root/bench/results/scale-$(date -u +%Y%m%dT%H%M%SZ)}
redis_server=${ROOMCAST_REDIS_SERVER:-$(command -v redis-server || echo /usr/bin/redis-server)}
redis_cli=$(command -v redis-cli || echo /usr/bin/redis-cli)
target=${CARGO_TARGET_DIR:-$root/target}
bin=${ROOMCAST:-$target/release/roomcast}
gen=${BENCH:-$target/release/roomcast-bench}

say() { echo "scale: $*" >&2; }
die() { say "$*"; exit 1; }
[ -x "$redis_server" ] || die "redis-server not found (apt-get install redis-server, or set ROOMCAST_REDIS_SERVER)"
[ -x "$redis_cli" ] || die "redis-cli not found (apt-get install redis-tools)"
command -v python3 >/dev/null || die "python3 not found"
rooms=$((conns / room_size))
[ $((rooms * room_size)) -eq "$conns" ] || die "SCALE_CONNS ($conns) must be a multiple of SCALE_ROOM_SIZE ($room_size)"
[ "$generators" -ge 1 ] && [ "$generators" -le 200 ] || die "SCALE_GENERATORS must be 1..200"

if [ -z "${ROOMCAST:-}" ] || [ -z "${BENCH:-}" ]; then
  (cd "$root" && cargo build --release --quiet -p roomcast -p roomcast-bench)
fi

work=$(mktemp -d)
mkdir -p "$out"
pids_nodes=()
pids_gens=()
redis_pid=
restore=()         # "key value" of each sysctl changed, to put back
changed=()         # what was changed, in words, for the report
watchdog_pid=

finish() {
  local status=$?
  trap - EXIT INT TERM
  [ -n "$watchdog_pid" ] && kill "$watchdog_pid" 2>/dev/null
  for pid in "${pids_gens[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${pids_nodes[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 100); do
    local alive=0
    for pid in "${pids_nodes[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${pids_nodes[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  [ -n "$redis_pid" ] && kill -KILL "$redis_pid" 2>/dev/null
  wait 2>/dev/null
  local entry
  for entry in "${restore[@]}"; do
    sysctl -q -w "${entry%% *}=${entry#* }" >/dev/null 2>&1 || say "could not put back ${entry%% *}"
  done
  for log in "$work"/node*.err "$work"/gen*.err; do
    [ -s "$log" ] && { mkdir -p "$out/logs"; tail -n 50 "$log" >"$out/logs/$(basename "$log")"; }
  done
  rm -rf "$work"
  [ "$status" -ne 0 ] && say "FAILED (status $status); what there is is in $out"
  exit "$status"
}
trap finish EXIT
trap 'exit 130' INT TERM
# The whole run is bounded: past SCALE_LIMIT seconds the script ends itself (and finish stops everything).
# Stopped by finish, the watchdog stops its own sleep too (a trapped TERM interrupts its wait).
(
  trap 'kill "$nap" 2>/dev/null; exit 0' TERM
  sleep "$limit" &
  nap=$!
  wait "$nap" && say "gave up after $limit s" && kill -TERM $$
) 2>/dev/null &
watchdog_pid=$!

# --- kernel limits -------------------------------------------------------------------------------------------
per_node=$(( (conns + nodes - 1) / nodes ))
per_gen=$(( (rooms + generators - 1) / generators * room_size ))
nofile=$(ulimit -n)
# A node holds its share of the connections (reuse-port spreads them by a hash, so give it 10% more), two Redis
# connections and a few files; roomcast's --max-connections defaults to the limit less 64.
[ $((per_node * 11 / 10 + 64)) -le "$nofile" ] ||
  die "each of $nodes nodes would hold ~$per_node connections, too close to the open-file limit ($nofile): use more nodes"
[ $((per_gen + 64)) -le "$nofile" ] || die "each generator would hold $per_gen connections, over the open-file limit ($nofile): use more generators"
read -r port_low port_high < /proc/sys/net/ipv4/ip_local_port_range
[ "$per_gen" -lt $((port_high - port_low)) ] ||
  die "each generator connects $per_gen times from one source address, but the ephemeral range $port_low-$port_high has fewer ports: use more generators"

# Raises a sysctl to at least $2 (never lowers it), remembering the old value.
at_least() {
  local key=$1 want=$2 have
  have=$(sysctl -n "$key" 2>/dev/null) || { say "no $key here: not checked"; return 0; }
  if [ "$have" -lt "$want" ]; then
    sysctl -q -w "$key=$want" >/dev/null || die "$key is $have, below the $want needed, and cannot be raised"
    restore+=("$key $have")
    changed+=("$key $have -> $want")
    say "raised $key from $have to $want (put back at the end)"
  fi
}
file_nr=$(cut -f1 /proc/sys/fs/file-nr)
at_least fs.file-max $((file_nr + 2 * conns + 50000))
at_least net.core.somaxconn 1024
if [ -r /proc/sys/net/netfilter/nf_conntrack_max ]; then
  # Every loopback connection is one tracked flow, and closed ones stay tracked for a while after.
  tracked=$(cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo 0)
  at_least net.netfilter.nf_conntrack_max $((tracked + 2 * conns + 20000))
fi
limits=$(printf '{"nofile": %s, "ip_local_port_range": "%s-%s", "somaxconn": %s, "file_max": %s, "nf_conntrack_max": "%s", "changed": [%s]}' \
  "$nofile" "$port_low" "$port_high" "$(sysctl -n net.core.somaxconn)" "$(sysctl -n fs.file-max)" \
  "$(sysctl -n net.netfilter.nf_conntrack_max 2>/dev/null || echo none)" \
  "$(for c in "${changed[@]}"; do printf '"%s",' "$c"; done | sed 's/,$//')")
say "limits: $limits"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# --- Redis ---------------------------------------------------------------------------------------------------
redis_port=$(free_port)
"$redis_server" --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  --logfile "$work/redis.log" >/dev/null 2>&1 &
redis_pid=$!
rcli() { "$redis_cli" -p "$redis_port" "$@"; }
for _ in $(seq 100); do rcli ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
rcli ping | grep -q PONG || die "redis-server did not start"
info() { rcli info "$1" | tr -d '\r' | sed -n "s/^$2:\(.*\)$/\1/p"; }

# --- the nodes -----------------------------------------------------------------------------------------------
port=$(free_port)
flags=(--max-connections-per-ip 0 --handshake-rate-per-ip 0)
# Started SCALE_STAGGER seconds apart, by default a fraction of a heartbeat (--node-heartbeat, 5 s), as nodes
# started by hand or by a deploy are; SCALE_STAGGER=0 starts them in the same instant (each node's heartbeat has a
# random phase of its own since 690a721, docs/benchmarks.md).
heartbeat=5
stagger=${SCALE_STAGGER:-$(awk -v h="$heartbeat" -v n="$nodes" 'BEGIN { printf "%.2f", h / n }')}
for n in $(seq "$nodes"); do
  "$bin" --addr "127.0.0.1:$port" --reuse-port --redis "redis://127.0.0.1:$redis_port" --node-id "scale-$n" \
    --node-heartbeat "$heartbeat" "${flags[@]}" >"$work/node$n.out" 2>"$work/node$n.err" &
  pids_nodes+=($!)
  [ "$n" -lt "$nodes" ] && sleep "$stagger"
done
# Ready: both Redis connections of every node are named (CLIENT SETNAME comes after the connect and AUTH) and every
# node answered its first heartbeat.
for _ in $(seq 300); do
  named=$(rcli client list | grep -c 'name=roomcast-scale-' || true)
  live=$(rcli zcard roomcast:nodes)
  [ "$named" -eq $((2 * nodes)) ] && [ "$live" -eq "$nodes" ] && break
  sleep 0.1
done
[ "$named" -eq $((2 * nodes)) ] || die "only $named of $((2 * nodes)) node connections reached Redis"
sleep 1
rss_kib() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$1/status"; }
# CPU seconds (user + system) the given processes used so far, from /proc/PID/stat (fields 14 and 15, in ticks).
cpu_s() {
  local ticks=0 pid
  for pid in "$@"; do ticks=$((ticks + $(awk '{ print $14 + $15 }' "/proc/$pid/stat"))); done
  awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'
}
redis_cpu_s() { rcli info cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { printf "%.2f", s }'; }
rss_before=()
for pid in "${pids_nodes[@]}"; do rss_before+=("$(rss_kib "$pid")"); done
redis_before=$(info memory used_memory)
redis_rss_before=$(info memory used_memory_rss)
commands_before=$(info stats total_commands_processed)
script_calls() { rcli info commandstats | tr -d '\r' | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),.*/\1/p'; }
scripts_before=$(script_calls)
# The kernel's TCP counters that tell of connects the listeners dropped (system-wide: other programs count too).
tcp_counters() {
  nstat -az TcpExtListenOverflows TcpExtListenDrops TcpExtTCPSynRetrans 2>/dev/null |
    awk 'NR > 1 { printf "%s\"%s\": %s", (n++ ? ", " : ""), $1, $2 }'
}
tcp_before="{$(tcp_counters)}"
nodes_cpu_before=$(cpu_s "${pids_nodes[@]}")
redis_cpu_before=$(redis_cpu_s)
say "$nodes nodes on 127.0.0.1:$port (--reuse-port), Redis on $redis_port using $redis_before bytes"

# --- the generators ------------------------------------------------------------------------------------------
rooms_per_gen=$(( (rooms + generators - 1) / generators ))
# The machine is shared: its load average (1 min) before and after says what else ran beside the benchmark.
load_before=$(cut -d' ' -f1 /proc/loadavg)
started=$(date +%s.%N)
left=$rooms
for g in $(seq 0 $((generators - 1))); do
  mine=$(( left < rooms_per_gen ? left : rooms_per_gen ))
  left=$((left - mine))
  [ "$mine" -gt 0 ] || break
  "$gen" scale --addr "127.0.0.1:$port" --source "127.0.0.$((11 + g))" --conns $((mine * room_size)) \
    --room-size "$room_size" --prefix "g$g" --go-file "$work/go" --setup-timeout $((limit / 2)) \
    --hold-timeout "$limit" --check-timeout 120 --connect-batch "$batch" --check-batch "$check_batch" >"$work/gen$g.json" 2>"$work/gen$g.err" &
  pids_gens+=($!)
done
gens=${#pids_gens[@]}
say "$gens generators connecting $conns members to $rooms rooms of $room_size"

# Seconds from $1 to $2 (default: now), both from date +%s.%N, to a tenth.
elapsed_since() { awk -v from="$1" -v to="${2:-$(date +%s.%N)}" 'BEGIN { printf "%.1f", to - from }'; }
joined_lines() { cat "$work"/gen*.json 2>/dev/null | grep -c '"phase":"joined"' || true; }
members_in_redis() {
  local total=0 n
  for n in $(seq "$nodes"); do total=$((total + $(rcli scard "roomcast:node:scale-$n:members"))); done
  echo "$total"
}
last_report=0
while [ "$(joined_lines)" -lt "$gens" ]; do
  for pid in "${pids_gens[@]}"; do
    kill -0 "$pid" 2>/dev/null || { cat "$work"/gen*.err >&2; die "a generator exited before joining"; }
  done
  now=$(date +%s)
  if [ $((now - last_report)) -ge 10 ]; then
    say "$(members_in_redis) members joined so far ($(elapsed_since "$started") s)"
    last_report=$now
  fi
  sleep 0.2
done
all_joined=$(date +%s.%N)
nodes_cpu_join=$(awk -v a="$(cpu_s "${pids_nodes[@]}")" -v b="$nodes_cpu_before" 'BEGIN { printf "%.2f", a - b }')
gens_cpu_join=$(cpu_s "${pids_gens[@]}")
tcp_after="{$(tcp_counters)}"
redis_cpu_join=$(awk -v a="$(redis_cpu_s)" -v b="$redis_cpu_before" 'BEGIN { printf "%.2f", a - b }')
say "every generator joined its members in $(elapsed_since "$started" "$all_joined") s; letting presence settle"
# The presence writes of the last joins may still be on their way: wait until Redis counts every joined member.
joined_total=$(cat "$work"/gen*.json | python3 -c 'import json, sys; print(sum(json.loads(l)["joined"] for l in sys.stdin if "\"joined\"" in l))')
for _ in $(seq 150); do
  [ "$(members_in_redis)" -ge "$joined_total" ] && break
  sleep 0.2
done
sleep 2

# --- what it costs -------------------------------------------------------------------------------------------
node_report=()
for i in $(seq 0 $((nodes - 1))); do
  n=$((i + 1))
  pid=${pids_nodes[$i]}
  members=$(rcli scard "roomcast:node:scale-$n:members")
  fds=$(ls "/proc/$pid/fd" | wc -l)
  node_report+=("{\"node\": \"scale-$n\", \"pid\": $pid, \"members\": $members, \"fds\": $fds, \"rss_before_kib\": ${rss_before[$i]}, \"rss_after_kib\": $(rss_kib "$pid")}")
done
redis_after=$(info memory used_memory)
redis_rss_after=$(info memory used_memory_rss)
commands_after=$(info stats total_commands_processed)
scripts_after=$(script_calls)
pubsub_channels=$(info stats pubsub_channels)
# Redis's slowest commands so far (over 10 ms: slowlog-log-slower-than's default), for the report.
rcli slowlog get 10 >"$out/redis-slowlog.txt" || true
redis_reconnects=$(cat "$work"/node*.err | grep -c 'lost the Redis' || true)
keys=$(rcli dbsize)
gen_rss=0
for pid in "${pids_gens[@]}"; do gen_rss=$((gen_rss + $(rss_kib "$pid"))); done
# How many processes each room's members sit on, from the rooms' member hashes (name -> node).
spread=$(rcli eval "
  local gens, per, size = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
  local counts = {}
  for i = 1, 64 do counts[i] = 0 end
  for g = 0, gens - 1 do
    for r = 0, per - 1 do
      local values = redis.call('HVALS', 'roomcast:room:g' .. g .. 'r' .. r .. ':members')
      if #values > 0 then
        local seen, distinct = {}, 0
        for _, node in ipairs(values) do
          if not seen[node] then seen[node] = true; distinct = distinct + 1 end
        end
        counts[distinct] = counts[distinct] + 1
      end
    end
  end
  return counts" 0 "$gens" "$rooms_per_gen" "$room_size" | head -n "$nodes" | paste -sd, -)

# --- the check: one line in every room, every member gets it once ----------------------------------------------
touch "$work/go"
for pid in "${pids_gens[@]}"; do
  wait "$pid" || say "generator $pid reported a failed check (exit $?)"
done
pids_gens=()
finished=$(date +%s.%N)
load_after=$(cut -d' ' -f1 /proc/loadavg)

python3 - "$out/scale.json" "$work" <<PY
import glob, json, sys
path, work = sys.argv[1], sys.argv[2]
lines = [json.loads(l) for f in sorted(glob.glob(work + "/gen*.json")) for l in open(f) if l.strip()]
joined = [l for l in lines if l.get("phase") == "joined"]
checked = [l for l in lines if l.get("phase") == "checked"]
nodes = [$(IFS=,; echo "${node_report[*]}")]
for n in nodes:
    n["rss_per_member_bytes"] = round((n["rss_after_kib"] - n["rss_before_kib"]) * 1024 / max(n["members"], 1))
members = sum(n["members"] for n in nodes)
report = {
    "scenario": "scale",
    "connections": $conns, "nodes": $nodes, "generators": len(joined), "room_size": $room_size, "rooms": $rooms,
    "limits": $limits,
    "join_s_wall": round($all_joined - $started, 2),
    "join_s_slowest_generator": max(l["join_s"] for l in joined),
    "joined": sum(l["joined"] for l in joined),
    "join_failures": sum(l["failed"] for l in joined),
    "members_in_redis": members,
    "nodes_detail": nodes,
    "rss_per_member_bytes_all_nodes": round(sum((n["rss_after_kib"] - n["rss_before_kib"]) * 1024 for n in nodes) / max(members, 1)),
    "redis": {
        "used_memory_before": $redis_before, "used_memory_after": $redis_after,
        "used_memory_rss_before": $redis_rss_before, "used_memory_rss_after": $redis_rss_after,
        "bytes_per_member": round(($redis_after - $redis_before) / max(members, 1)),
        "keys": $keys, "pubsub_channels": $pubsub_channels,
        "commands_per_join": round(($commands_after - $commands_before) / max(members, 1), 2),
        "script_calls_per_join": round((${scripts_after:-0} - ${scripts_before:-0}) / max(members, 1), 2),
    },
    "rooms_by_processes_holding_members": {str(i + 1): int(c) for i, c in enumerate("$spread".split(","))},
    "generators_rss_kib": $gen_rss,
    "check": {
        "rooms_checked": sum(c["rooms_checked"] for c in checked),
        "rooms_complete": sum(c["rooms_complete"] for c in checked),
        "deliveries_expected": sum(c["deliveries_expected"] for c in checked),
        "deliveries": sum(c["deliveries"] for c in checked),
        "refused": sum(c["refused"] for c in checked),
        "duplicates": sum(c["duplicates"] for c in checked),
        "wrong_room": sum(c["wrong_room"] for c in checked),
        "room_complete_ms_p50_worst_generator": max(c["room_complete_ms"]["p50"] for c in checked),
        "room_complete_ms_p99_worst_generator": max(c["room_complete_ms"]["p99"] for c in checked),
        "room_complete_ms_max": max(c["room_complete_ms"]["max"] for c in checked),
        "failed_while_held": sum(c["failed_while_held"] for c in checked),
        "check_s_slowest_generator": max(c["check_s"] for c in checked),
    } if len(checked) == len(joined) else None,
    "cpu_s_while_joining": {"nodes": $nodes_cpu_join, "redis": $redis_cpu_join, "generators": $gens_cpu_join},
    "node_redis_reconnects": $redis_reconnects,
    "kernel_tcp_counters_while_joining": {k: v - $tcp_before.get(k, 0) for k, v in $tcp_after.items()},
    "connect_to_joined_ms_worst_generator": {q: max(l["connect_to_joined_ms"][q] for l in joined) for q in ("p50", "p99", "p999", "max")},
    "connect_batch_per_generator": $batch, "check_batch_per_generator": $check_batch,
    "total_s": round($finished - $started, 2),
    "loadavg_1min_before_and_after": [$load_before, $load_after],
    "generator_lines": lines,
}
json.dump(report, open(path, "w"), indent=1)
print(json.dumps({k: v for k, v in report.items() if k != "generator_lines"}, indent=1))
ok = (report["check"] is not None and report["join_failures"] == 0 and members == $conns
      and report["check"]["deliveries"] == report["check"]["deliveries_expected"]
      and report["check"]["refused"] == 0
      and report["check"]["duplicates"] == 0 and report["check"]["wrong_room"] == 0)
sys.exit(0 if ok else 1)
PY
say "results in $out/scale.json"
