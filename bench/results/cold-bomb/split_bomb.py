# Diagnostic only: the cold bomb of `roomcast-bench bomb --cold`, but its frame written in pieces with a pause
# between them, so the server reads it in several reads. Prints the server's peak RSS growth in KiB.
import os, socket, struct, sys, time, zlib, base64

port, pid, piece = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

def hwm():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

def frame(payload, opcode=1, rsv1=False, key=b"\x5a\x17\xc3\x2e"):
    head = bytes([0x80 | (0x40 if rsv1 else 0) | opcode])
    n = len(payload)
    if n < 126: head += bytes([0x80 | n])
    elif n < 65536: head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else: head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked

s = socket.create_connection(("127.0.0.1", port))
key = base64.b64encode(os.urandom(16)).decode()
s.sendall((f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
           f"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n").encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(4096)
assert b"permessage-deflate" in head, head
s.sendall(frame(b'{"type":"join","userId":"bomber","room":"bomb"}'))
time.sleep(0.2)
s.setblocking(False)
try:
    s.recv(65536)
except BlockingIOError:
    pass
s.setblocking(True)
one = zlib.compressobj(9, zlib.DEFLATED, -15)
seg = one.compress(b"a" * (1 << 20)) + one.flush(zlib.Z_SYNC_FLUSH)
seg = seg[:-4]
payload = (seg + b"\x00\x00\xff\xff") * 15 + seg
bomb = frame(payload, rsv1=True)
time.sleep(0.2)
before = hwm()
for i in range(0, len(bomb), piece):
    s.sendall(bomb[i:i + piece])
    time.sleep(0.02)
s.settimeout(5)
got = b""
try:
    while True:
        d = s.recv(65536)
        if not d: break
        got += d
except (socket.timeout, ConnectionResetError):
    pass
time.sleep(0.2)
close = got.rfind(b"\x88")
code = struct.unpack(">H", got[close + 2:close + 4])[0] if close >= 0 else None
print(f"piece {piece}: frame {len(bomb)}, close {code}, peak growth {hwm() - before} KiB")
