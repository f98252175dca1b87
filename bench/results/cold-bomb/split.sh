#!/usr/bin/env bash
# The cold /ws bomb with its frame written in pieces (split_bomb.py), 3 fresh servers per piece size, every default
# flag as bench/deflate.sh's roomcast-defaults. Usage: split.sh ROOMCAST_BINARY [PORT]
set -euo pipefail
cd "$(dirname "$0")"
BIN=$1
PORT=${2:-18381}
for piece in 100000 8192 4096 1460 1024 512; do
  for rep in 1 2 3; do
    "$BIN" --addr "127.0.0.1:$PORT" >/dev/null 2>&1 &
    pid=$!
    sleep 0.3
    python3 split_bomb.py "$PORT" "$pid" "$piece" || true
    kill "$pid"
    wait "$pid" 2>/dev/null || true
  done
done
