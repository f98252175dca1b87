#!/usr/bin/env bash
# Runs the Autobahn|Testsuite against roomcast in either role and fails unless every case (all 517; sections 12
# and 13 are permessage-deflate) is OK, or INFORMATIONAL where the suite only informs, with behaviorClose OK or
# INFORMATIONAL: 0 NON-STRICT, 0 FAILED, 0 UNIMPLEMENTED.
#
#   server role: wstest -m fuzzingclient against roomcast's /echo route;
#   client role: wstest -m fuzzingserver, driven by examples/autobahn_client.rs.
#
# Usage: tests/autobahn/run.sh [server|client] [CASES]    e.g. `client '1.*,12.1.*'` for a quick subset (default:
# server, all cases). Needs `wstest` (../shared/autobahn/install-wstest.sh installs it). Builds what it runs.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
role=${1:-server}
cases=${2:-*}
case "$role" in
  server|client) ;;
  *) echo "usage: $0 [server|client] [CASES]" >&2; exit 2 ;;
esac
report_dir="$here/reports/$role"
work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

command -v wstest >/dev/null || { echo "wstest not found: run ../shared/autobahn/install-wstest.sh" >&2; exit 2; }
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The spec for wstest: its template with the port, the report directory and the cases filled in.
write_spec() {
  python3 - "$here/$1" "$work/spec.json" "$2" "$report_dir" "$cases" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
spec["outdir"] = sys.argv[4]
if "servers" in spec:
    spec["servers"][0]["url"] = spec["servers"][0]["url"].replace("PORT", sys.argv[3])
else:
    spec["url"] = spec["url"].replace("PORT", sys.argv[3])
spec["cases"] = sys.argv[5].split(",")
json.dump(spec, open(sys.argv[2], "w"), indent=2)
PY
}

rm -rf "$report_dir"
mkdir -p "$report_dir"
started=$(date +%s)

if [ "$role" = server ]; then
  (cd "$root" && cargo build --release --quiet)
  # /echo is a test route: it accepts what the chat route accepts unless told otherwise, and Autobahn sends
  # messages of up to 16 MiB (sections 9 and 10), some in 64-byte fragments, as fast as TCP carries them, from one
  # address. So the budgets a public server needs against floods are lifted for this run.
  "$root/target/release/roomcast" --addr 127.0.0.1:0 --echo-max-message-size 16777216 \
    --max-frames-per-sec 0 --max-bytes-per-sec 0 --max-fragments 0 \
    --max-connections-per-ip 0 --handshake-rate-per-ip 0 \
    > "$work/server.out" 2> "$work/server.err" &
  server_pid=$!
  for _ in $(seq 1 100); do
    grep -q "listening on" "$work/server.out" 2>/dev/null && break
    sleep 0.1
  done
  port=$(sed -n 's#.*listening on http://127\.0\.0\.1:\([0-9]*\)/.*#\1#p' "$work/server.out")
  [ -n "$port" ] || { echo "server did not start:"; cat "$work/server.err"; exit 1; }
  echo "roomcast (pid $server_pid) on port $port"
  write_spec fuzzingclient.json "$port"
  (cd "$work" && wstest -m fuzzingclient -s "$work/spec.json" > "$work/wstest.log" 2>&1) || {
    echo "wstest failed:"; tail -30 "$work/wstest.log"; exit 1;
  }
  kill -0 "$server_pid" 2>/dev/null || { echo "the server died during the run"; cat "$work/server.err"; exit 1; }
else
  (cd "$root" && cargo build --release --quiet --example autobahn_client)
  port=$(free_port)
  write_spec fuzzingserver.json "$port"
  (cd "$work" && exec wstest -m fuzzingserver -s "$work/spec.json" > "$work/wstest.log" 2>&1) &
  server_pid=$!
  for _ in $(seq 1 100); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
    sleep 0.2
  done
  echo "wstest fuzzingserver (pid $server_pid) on port $port"
  "$root/target/release/examples/autobahn_client" "ws://127.0.0.1:$port" > "$work/client.log" 2>&1 || {
    echo "autobahn_client failed:"; tail -30 "$work/client.log"; exit 1;
  }
fi
echo "wstest $role role finished in $(( $(date +%s) - started )) s"

python3 - "$report_dir/index.json" "$role" <<'PY'
import json, sys
from collections import defaultdict
index = json.load(open(sys.argv[1]))
results = next(iter(index.values()))
kinds = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
by_section = defaultdict(lambda: defaultdict(int))
close_by_section = defaultdict(lambda: defaultdict(int))
bad = []
for case, r in results.items():
    section = int(case.split(".")[0])
    by_section[section][r["behavior"]] += 1
    close_by_section[section][r["behaviorClose"]] += 1
    if r["behavior"] not in ("OK", "INFORMATIONAL") or r["behaviorClose"] not in ("OK", "INFORMATIONAL"):
        bad.append((case, r["behavior"], r["behaviorClose"]))
print("%-8s %6s %10s %13s %13s %6s   behaviorClose" % ("section", "OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"))
totals = defaultdict(int)
for section in sorted(by_section):
    row = by_section[section]
    for k in kinds:
        totals[k] += row[k]
    closes = ", ".join("%s %d" % (k, v) for k, v in sorted(close_by_section[section].items()))
    print("%-8d %6d %10d %13d %13d %6d   %s" % (section, row["OK"], row["NON-STRICT"], row["INFORMATIONAL"], row["UNIMPLEMENTED"], row["FAILED"], closes))
print("%-8s %6d %10d %13d %13d %6d" % ("total", totals["OK"], totals["NON-STRICT"], totals["INFORMATIONAL"], totals["UNIMPLEMENTED"], totals["FAILED"]))
print("%d cases" % len(results))
if bad:
    print("NOT OK:")
    for case, behavior, close in sorted(bad, key=lambda c: [int(p) for p in c[0].split(".")]):
        print("  %s behavior=%s behaviorClose=%s" % (case, behavior, close))
    sys.exit(1)
print("autobahn %s role: every case OK or INFORMATIONAL" % sys.argv[2])
PY
