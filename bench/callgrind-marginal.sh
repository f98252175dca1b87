#!/usr/bin/env bash
# The cost of one more delivery, without start-up: runs bench/callgrind.sh twice per build (SHORT and LONG seconds
# of the same fan-out scenario) with valgrind's cache and branch simulation, and prints, per build, the difference
# of every event total divided by the difference of deliveries. Connection setup, joins and the handshakes' SHA-1
# cancel out, which in a run of a few seconds under valgrind they do not.
#
#   bench/callgrind-marginal.sh /work/step2/roomcast target/release/roomcast -- --rooms 100 --members 10
#
# Events: Ir instructions, Dr/Dw data reads/writes, I1mr/D1mr/D1mw first-level misses, ILmr/DLmr/DLmw last-level
# misses, Bc/Bcm conditional branches/mispredicted, Bi/Bim indirect branches/mispredicted (valgrind's model of this
# machine's caches, not a measurement of them).
set -euo pipefail

cd "$(dirname "$0")/.."
SHORT=${SHORT:-2}
LONG=${LONG:-8}
builds=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do builds+=("$1"); shift; done
[ $# -gt 0 ] && shift
[ ${#builds[@]} -ge 1 ] || { echo "usage: $0 BINARY... -- FANOUT-ARGS" >&2; exit 2; }
OUT=${OUT:-$(mktemp -d /tmp/roomcast-marginal.XXXXXX)}
mkdir -p "$OUT"

for i in "${!builds[@]}"; do
  for seconds in "$SHORT" "$LONG"; do
    VALGRIND_ARGS="--cache-sim=yes --branch-sim=yes" ROOMCAST="${builds[$i]}" OUT="$OUT/$i-$seconds" \
      bench/callgrind.sh "$@" --duration "$seconds" >"$OUT/$i-$seconds.log" 2>&1
  done
done

python3 - "$OUT" "$SHORT" "$LONG" "${builds[@]}" <<'PY'
import json, re, sys
out, short, long_, builds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def totals(run):
    lines = open(f"{out}/{run}/annotate.txt").read().splitlines()
    at = next(k for k, line in enumerate(lines) if "PROGRAM TOTALS" in line)
    names = lines[at - 2].split()
    values = [int(v.replace(",", "")) for v in re.findall(r"([\d,]+) \(", lines[at])]
    delivered = json.load(open(f"{out}/{run}/run.json"))["delivered_total"]
    return dict(zip(names, values)), delivered
for i, build in enumerate(builds):
    (a, da), (b, db) = totals(f"{i}-{short}"), totals(f"{i}-{long_}")
    print(f"{build}: deliveries {da} and {db}; per delivery at the margin:")
    print("  " + "  ".join(f"{name} {(b[name] - a[name]) / (db - da):.2f}" for name in a))
PY
echo "runs kept in $OUT"
