#!/usr/bin/env python3
"""A minimal wss:// client (standard library only) that carries a roomcast chat through the nginx proxy.

Usage: client.py HOST PORT CA_FILE

It checks, over TLS verified against CA_FILE: GET /healthz answers "ok"; two clients join a room and exchange a
message; a same-origin browser handshake is accepted and a cross-site one refused with 403; the closing handshake
completes. It exits non-zero (with a traceback) on the first failure.
"""

import base64
import hashlib
import http.client
import json
import os
import socket
import ssl
import struct
import sys

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TIMEOUT = 10


class WebSocket:
    """One client connection: RFC 6455 opening handshake, masked frames out, unmasked frames in."""

    def __init__(self, host, port, context, path="/ws", origin=None):
        raw = socket.create_connection((host, port), timeout=TIMEOUT)
        self.sock = context.wrap_socket(raw, server_hostname=host)
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if origin is not None:
            lines.append(f"Origin: {origin}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        status_line, *header_lines = head.split("\r\n")
        self.status = int(status_line.split(" ")[1])
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if self.status == 101:
            expected = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            assert headers.get("sec-websocket-accept") == expected, headers

    def _read_until(self, marker):
        while marker not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed before {marker!r}: {self.buf!r}")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(marker)
        return head

    def _read_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed mid-frame")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def send_frame(self, opcode, payload):
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send_json(self, value):
        self.send_frame(0x1, json.dumps(value).encode())

    def recv_frame(self):
        """The next data or Close frame; Pings are answered on the way."""
        while True:
            b0, b1 = self._read_exact(2)
            assert b1 & 0x80 == 0, "server frames are never masked"
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read_exact(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read_exact(8))
            payload = self._read_exact(n)
            opcode = b0 & 0x0F
            if opcode == 0x9:
                self.send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            return opcode, payload

    def recv_type(self, kind):
        """The next JSON message of type `kind`, skipping others."""
        while True:
            opcode, payload = self.recv_frame()
            assert opcode == 0x1, (opcode, payload)
            message = json.loads(payload)
            if message.get("type") == kind:
                return message

    def close(self, code=1000):
        """Starts the closing handshake and expects the echoed code, then the end of the stream."""
        self.send_frame(0x8, struct.pack("!H", code))
        while True:
            opcode, payload = self.recv_frame()
            if opcode == 0x8:
                break
        assert struct.unpack("!H", payload[:2])[0] == code, payload
        assert self.sock.recv(1) == b"", "the server did not close TCP after the closing handshake"
        self.sock.close()


def main():
    host, port, ca_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    context = ssl.create_default_context(cafile=ca_file)

    https = http.client.HTTPSConnection(host, port, context=context, timeout=TIMEOUT)
    https.request("GET", "/healthz")
    response = https.getresponse()
    body = response.read()
    assert (response.status, body) == (200, b"ok\n"), (response.status, body)
    print(f"GET https://{host}:{port}/healthz -> {response.status} {body!r}")

    alice = WebSocket(host, port, context)
    bob = WebSocket(host, port, context)
    assert (alice.status, bob.status) == (101, 101)
    alice.send_json({"type": "join", "userId": "alice", "room": "proxied", "v": 2})
    alice.recv_type("joined")
    bob.send_json({"type": "join", "userId": "bob", "room": "proxied", "v": 2})
    bob.recv_type("joined")
    alice.send_json({"type": "chat", "content": "hello over wss://"})
    for client in (bob, alice):
        message = client.recv_type("chat")
        assert (message["from"], message["content"]) == ("alice", "hello over wss://"), message
    print(f"wss://{host}:{port}/ws: alice -> bob: {message['content']!r}")

    same_site = WebSocket(host, port, context, origin=f"https://{host}:{port}")
    cross_site = WebSocket(host, port, context, origin="https://evil.example")
    assert (same_site.status, cross_site.status) == (101, 403), (same_site.status, cross_site.status)
    print("origin check through the proxy: same-site 101, cross-site 403")

    alice.close(1000)
    bob.close(1000)
    same_site.close(1000)
    print("closing handshakes completed")


if __name__ == "__main__":
    main()
