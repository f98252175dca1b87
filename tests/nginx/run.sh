#!/usr/bin/env bash
# roomcast behind nginx over wss://, end to end: builds the release binary, makes a self-signed certificate, starts
# roomcast on a free port and nginx (TLS, WebSocket proxying, from nginx.conf.template) in front of it, then runs
# client.py, which checks /healthz, a two-client chat, the origin check and the closing handshake through the proxy.
# Also checks that the nginx example in docs/operations.md is this same configuration.
# Needs nginx, openssl and python3. Exits non-zero on any failure; both servers are stopped on exit.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
nginx=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
[ -x "$nginx" ] || { echo "nginx not found (apt-get install nginx)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "openssl not found" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 not found" >&2; exit 1; }

# The documented example must be the tested one: the proxy part of the template, with the doc's values.
doc_values=(-e 's|@UPSTREAM@|127.0.0.1:8080|' -e 's|@LISTEN@|443|' -e 's|@SERVER_NAME@|chat.example.com|'
  -e 's|@CERT@|/etc/letsencrypt/live/chat.example.com/fullchain.pem|'
  -e 's|@KEY@|/etc/letsencrypt/live/chat.example.com/privkey.pem|')
proxy_part='/# --- begin roomcast proxy ---/,/# --- end roomcast proxy ---/p'
if ! diff <(sed -n "$proxy_part" "$here/nginx.conf.template" | sed "${doc_values[@]}") \
          <(sed -n "$proxy_part" "$root/docs/operations.md"); then
  echo "docs/operations.md's nginx example differs from tests/nginx/nginx.conf.template (diff above)" >&2
  exit 1
fi

(cd "$root" && cargo build --release --quiet)
bin="$root/target/release/roomcast"

work=$(mktemp -d)
chmod 755 "$work"
roomcast_pid=
nginx_pid=
finish() {
  local status=$?
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
  [ -n "$roomcast_pid" ] && kill "$roomcast_pid" 2>/dev/null && wait "$roomcast_pid" 2>/dev/null
  if [ "$status" -ne 0 ]; then
    for log in roomcast.err error.log; do
      [ -s "$work/$log" ] && { echo "--- $log"; tail -n 30 "$work/$log"; }
    done
    echo "nginx wss:// proxy test FAILED" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap finish EXIT

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=localhost" \
  -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

"$bin" --addr 127.0.0.1:0 >"$work/roomcast.out" 2>"$work/roomcast.err" &
roomcast_pid=$!
upstream=
for _ in $(seq 100); do
  upstream=$(sed -n 's|^roomcast listening on http://\(.*\)/$|\1|p' "$work/roomcast.out")
  [ -n "$upstream" ] && break
  sleep 0.1
done
[ -n "$upstream" ] || { echo "roomcast did not start" >&2; exit 1; }

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -e "s|@UPSTREAM@|$upstream|" -e "s|@LISTEN@|127.0.0.1:$port|" -e "s|@SERVER_NAME@|localhost|" \
  -e "s|@CERT@|$work/cert.pem|" -e "s|@KEY@|$work/key.pem|" \
  "$here/nginx.conf.template" >"$work/nginx.conf"
mkdir -p "$work/tmp"
nginx_args=(-p "$work/" -c "$work/nginx.conf" -g "daemon off; pid $work/nginx.pid;")
"$nginx" -t -q "${nginx_args[@]}"
"$nginx" "${nginx_args[@]}" &
nginx_pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

echo "roomcast on $upstream, nginx on https://127.0.0.1:$port/"
python3 "$here/client.py" 127.0.0.1 "$port" "$work/cert.pem"
echo "nginx wss:// proxy: ok"
