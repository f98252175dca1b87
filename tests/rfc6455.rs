//! RFC 6455 as a client sees it over a real TCP socket: the opening handshake and its refusals, the plain HTTP
//! routes, framing in all three length forms, every protocol violation with its exact close code, and the
//! closing handshake. The client here is written by hand (not roomcast's own codec) and reads the server's
//! frames strictly, so an encoder slip on the server side shows up as a failure too.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{join, TestServer};

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

// ---------------------------------------------------------------------------------------------------------------
// A strict hand-written client.
// ---------------------------------------------------------------------------------------------------------------

/// A masked client frame: `fin`, `opcode`, and the payload length encoded minimally.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = header((if fin { 0x80 } else { 0 }) | opcode, payload.len() as u64);
    let key = mask_key(&out);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// Only the header of a masked client frame with an arbitrary first byte and declared length (the payload, if
/// any, is up to the caller; `masked_payload` masks it consistently).
fn header(first_byte: u8, len: u64) -> Vec<u8> {
    common::masked_header(first_byte, len, [0x5a, 0xc3, 0x17, 0x8e])
}

/// The masking key at the end of a header made by `header`.
fn mask_key(header: &[u8]) -> [u8; 4] {
    let n = header.len();
    [header[n - 4], header[n - 3], header[n - 2], header[n - 1]]
}

/// `payload` masked as the bytes starting `offset` into the payload of the frame whose header is `header`.
fn masked_payload(header: &[u8], offset: usize, payload: &[u8]) -> Vec<u8> {
    let key = mask_key(header);
    payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[(offset + i) % 4])
        .collect()
}

/// A Close frame whose body is `code` (big-endian) followed by raw `reason` bytes.
fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(reason);
    frame(true, OP_CLOSE, &body)
}

/// One server frame, as read off the wire.
#[derive(Debug, PartialEq, Eq)]
struct Frame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
    /// The header's length in bytes: 2, 4 or 10 for an unmasked frame.
    header_len: usize,
}

impl Frame {
    fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, OP_CLOSE, "not a Close frame: {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Why no frame was read.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The server closed TCP cleanly (FIN).
    Eof,
    /// The server reset the connection.
    Reset,
    /// Nothing arrived in time.
    Timeout,
}

/// A raw TCP client that speaks RFC 6455 by hand.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Wire {
    fn tcp(addr: SocketAddr) -> Wire {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Wire {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Connects to `path` and completes the opening handshake, checking the 101 response.
    fn connect(addr: SocketAddr, path: &str) -> Wire {
        let mut wire = Wire::tcp(addr);
        wire.send(upgrade_request(path, &addr.to_string(), "").as_bytes());
        wire.expect_101();
        wire
    }

    /// Reads the handshake response and checks it is a valid 101 for the sample key; keeps the bytes after it.
    fn expect_101(&mut self) {
        let head = self.read_head(Duration::from_secs(5));
        assert!(
            head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "not a 101: {head}"
        );
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("\r\nupgrade: websocket\r\n"), "{head}");
        assert!(lower.contains("\r\nconnection: upgrade\r\n"), "{head}");
        assert!(
            head.contains(&format!("\r\nSec-WebSocket-Accept: {SAMPLE_ACCEPT}\r\n")),
            "{head}"
        );
    }

    /// Reads up to and including the blank line ending an HTTP response head.
    fn read_head(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..pos + 4).collect();
                return String::from_utf8(head).expect("response head is not UTF-8");
            }
            match self.fill(deadline) {
                Ok(()) => {}
                Err(end) => panic!(
                    "no complete response head ({end:?}); got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads more bytes into the buffer, or says why not.
    fn fill(&mut self, deadline: Instant) -> Result<(), End> {
        if self.eof {
            return Err(End::Eof);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(End::Timeout);
        }
        self.stream.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                self.eof = true;
                Err(End::Eof)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(End::Timeout)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(_) => Err(End::Reset),
        }
    }

    /// The next server frame within `timeout`, checked strictly against 5.2: no RSV bits, a known opcode, no
    /// mask (5.1), a minimal length, and control frames unfragmented and at most 125 bytes (5.5).
    fn read_frame_within(&mut self, timeout: Duration) -> Result<Frame, End> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(frame) = self.parse_frame() {
                return Ok(frame);
            }
            if let Err(end) = self.fill(deadline) {
                assert!(
                    end == End::Timeout || self.buf.is_empty(),
                    "connection ended ({end:?}) inside a frame: {} bytes left over",
                    self.buf.len()
                );
                return Err(end);
            }
        }
    }

    fn read_frame(&mut self) -> Frame {
        self.read_frame_within(Duration::from_secs(5))
            .unwrap_or_else(|end| panic!("expected a frame, got {end:?}"))
    }

    fn parse_frame(&mut self) -> Option<Frame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let fin = b[0] & 0x80 != 0;
        assert_eq!(b[0] & 0x70, 0, "server frame with RSV bits: {:#04x}", b[0]);
        let opcode = b[0] & 0x0F;
        assert!(
            matches!(opcode, 0x0..=0x2 | 0x8..=0xA),
            "server frame with reserved opcode {opcode:#x}"
        );
        assert_eq!(b[1] & 0x80, 0, "server frames must not be masked");
        let (len, header_len) = match b[1] & 0x7F {
            126 => {
                if b.len() < 4 {
                    return None;
                }
                let len = u64::from(u16::from_be_bytes([b[2], b[3]]));
                assert!(len >= 126, "non-minimal 16-bit length {len}");
                (len, 4)
            }
            127 => {
                if b.len() < 10 {
                    return None;
                }
                let len = u64::from_be_bytes(b[2..10].try_into().unwrap());
                assert!(len > 0xFFFF && len >> 63 == 0, "bad 64-bit length {len}");
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        if opcode >= 0x8 {
            assert!(fin, "fragmented control frame from the server");
            assert!(len <= 125, "control frame of {len} bytes from the server");
        }
        let total = header_len + len as usize;
        if b.len() < total {
            return None;
        }
        let payload = b[header_len..total].to_vec();
        self.buf.drain(..total);
        Some(Frame {
            fin,
            opcode,
            payload,
            header_len,
        })
    }

    /// The next frame must be a Close with `code`; then TCP must end (cleanly) with nothing after the Close.
    fn expect_close_then_eof(&mut self, code: u16) {
        let close = self.read_frame();
        assert_eq!(
            close.opcode,
            OP_CLOSE,
            "expected Close {code}, got {close:?} ({:?})",
            String::from_utf8_lossy(&close.payload)
        );
        assert_eq!(
            close.close_code(),
            Some(code),
            "close reason: {:?}",
            String::from_utf8_lossy(&close.payload[2.min(close.payload.len())..])
        );
        assert!(
            std::str::from_utf8(&close.payload[2..]).is_ok(),
            "the close reason must be UTF-8"
        );
        self.expect_eof(Duration::from_secs(2));
    }

    /// The server closes TCP within `within`, sending nothing more.
    fn expect_eof(&mut self, within: Duration) {
        match self.read_frame_within(within) {
            Err(End::Eof) => {}
            Ok(frame) => panic!("the server sent {frame:?} where the connection should end"),
            Err(end) => panic!("expected the server to close TCP within {within:?}, got {end:?}"),
        }
    }

    /// Nothing arrives within `wait`.
    fn expect_quiet(&mut self, wait: Duration) {
        match self.read_frame_within(wait) {
            Err(End::Timeout) => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// Sends `payload` as one text message and expects it back unchanged as one frame.
    fn echo_text(&mut self, payload: &str) {
        self.send(&frame(true, OP_TEXT, payload.as_bytes()));
        let echoed = self.read_frame();
        assert_eq!(
            (echoed.fin, echoed.opcode, echoed.payload.as_slice()),
            (true, OP_TEXT, payload.as_bytes())
        );
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn upgrade_request(path: &str, host: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

// ---------------------------------------------------------------------------------------------------------------
// Plain HTTP exchanges.
// ---------------------------------------------------------------------------------------------------------------

/// A complete HTTP response, read until the server closed TCP.
#[derive(Debug)]
struct HttpResponse {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl HttpResponse {
    /// The single value of header `name` (case-insensitive).
    fn header(&self, name: &str) -> Option<&str> {
        let mut found = self.head.split("\r\n").skip(1).filter_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        });
        let first = found.next();
        assert!(found.next().is_none(), "header {name} repeated");
        first
    }

    fn body_text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("body is not UTF-8")
    }

    /// A refusal: the status, a plain-text body that is exactly the reason (plus a newline), `Connection: close`.
    fn assert_refusal(&self, status: u16, reason: &str) {
        assert_eq!(self.status, status, "{}", self.head);
        assert_eq!(self.body_text(), format!("{reason}\n"), "{}", self.head);
        assert!(
            self.header("content-type")
                .is_some_and(|t| t.starts_with("text/plain")),
            "{}",
            self.head
        );
        assert_eq!(self.header("connection"), Some("close"), "{}", self.head);
    }
}

/// Sends `request` in one write and reads the response until the server closes TCP; panics if it does not close
/// within 3 s, or if the body does not match `Content-Length`.
fn http_exchange(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let mut wire = Wire::tcp(addr);
    wire.send(request);
    read_http_until_close(&mut wire)
}

fn read_http_until_close(wire: &mut Wire) -> HttpResponse {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match wire.fill(deadline) {
            Ok(()) => continue,
            Err(End::Eof) => break,
            Err(end) => panic!(
                "the server did not close TCP after its response ({end:?}); got {:?}",
                String::from_utf8_lossy(&wire.buf)
            ),
        }
    }
    let raw = std::mem::take(&mut wire.buf);
    let split = find(&raw, b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8(raw[..split + 4].to_vec()).unwrap();
    let body = raw[split + 4..].to_vec();
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    let status = head[9..12].parse().expect("status code");
    let response = HttpResponse { status, head, body };
    let length: usize = response
        .header("content-length")
        .expect("Content-Length")
        .parse()
        .unwrap();
    assert_eq!(response.body.len(), length, "{}", response.head);
    response
}

/// An upgrade request with one header line replaced (`None` removes it).
fn upgrade_with(host: &str, name: &str, line: Option<&str>) -> String {
    let mut out = String::new();
    for l in upgrade_request("/echo", host, "").split_inclusive("\r\n") {
        if l.to_ascii_lowercase()
            .starts_with(&format!("{}:", name.to_ascii_lowercase()))
        {
            if let Some(line) = line {
                out.push_str(line);
                out.push_str("\r\n");
            }
        } else {
            out.push_str(l);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// The opening handshake and its refusals (RFC 6455 4.2.1, 4.2.2; RFC 6585 for 431).
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn rfc_sample_key_is_answered_with_the_rfc_accept_value() {
    let server = TestServer::start();
    let mut wire = Wire::tcp(server.addr);
    wire.send(
        b"GET /echo HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    let head = wire.read_head(Duration::from_secs(5));
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    // And the connection is a working WebSocket.
    wire.echo_text("after the handshake");
}

#[test]
fn post_is_refused_with_405_and_allow_get_and_head_then_closed() {
    let server = TestServer::start();
    let response = http_exchange(
        server.addr,
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    );
    response.assert_refusal(405, "method not allowed: use GET");
    assert_eq!(response.header("allow"), Some("GET, HEAD"));
    // A WebSocket-looking request with another method gets the same answer.
    let request = upgrade_request("/ws", "a", "").replacen("GET", "PUT", 1);
    let response = http_exchange(server.addr, request.as_bytes());
    response.assert_refusal(405, "method not allowed: use GET");
    assert_eq!(response.header("allow"), Some("GET, HEAD"));
}

#[test]
fn head_gets_the_get_headers_without_a_body() {
    // RFC 9110 9.3.2: HEAD is GET without the content; Content-Length is what GET would send.
    let server = TestServer::start();
    let raw = server.raw_exchange(b"HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete head");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nContent-Length: 3\r\n"), "{head}");
    assert_eq!(body, "");
    let page = server.raw_exchange(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(page.contains("Content-Type: text/html"), "{page}");
    assert!(page.ends_with("\r\n\r\n"), "no body after the head");
}

#[test]
fn unknown_path_is_refused_with_404_then_closed() {
    let server = TestServer::start();
    http_exchange(server.addr, b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n")
        .assert_refusal(404, "not found");
    http_exchange(server.addr, upgrade_request("/chat", "a", "").as_bytes())
        .assert_refusal(404, "not found");
}

#[test]
fn missing_or_invalid_upgrade_header_is_refused_with_400() {
    let server = TestServer::start();
    let reason = "missing or invalid Upgrade header: expected websocket";
    for line in [None, Some("Upgrade: h2c"), Some("Upgrade: websockets")] {
        let request = upgrade_with("a", "upgrade", line);
        http_exchange(server.addr, request.as_bytes()).assert_refusal(400, reason);
    }
    // Plain GET of a WebSocket path.
    http_exchange(server.addr, b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n").assert_refusal(400, reason);
}

#[test]
fn missing_or_invalid_connection_header_is_refused_with_400() {
    let server = TestServer::start();
    for line in [
        None,
        Some("Connection: keep-alive"),
        Some("Connection: close"),
    ] {
        let request = upgrade_with("a", "connection", line);
        http_exchange(server.addr, request.as_bytes()).assert_refusal(
            400,
            "missing or invalid Connection header: expected Upgrade",
        );
    }
}

#[test]
fn upgrade_and_connection_tokens_are_case_insensitive_lists() {
    let server = TestServer::start();
    let request = upgrade_with("a", "connection", Some("Connection: keep-alive, UPGRADE"));
    let request = request.replace("Upgrade: websocket", "Upgrade: WebSocket");
    let mut wire = Wire::tcp(server.addr);
    wire.send(request.as_bytes());
    wire.expect_101();
    wire.echo_text("ok");
}

#[test]
fn missing_or_repeated_host_is_refused_with_400() {
    let server = TestServer::start();
    let missing = upgrade_with("a", "host", None);
    http_exchange(server.addr, missing.as_bytes()).assert_refusal(400, "missing Host header");
    let repeated = upgrade_request("/echo", "a", "Host: b\r\n");
    http_exchange(server.addr, repeated.as_bytes()).assert_refusal(400, "missing Host header");
}

#[test]
fn key_not_decoding_to_16_bytes_is_refused_with_400() {
    let server = TestServer::start();
    let reason = "Sec-WebSocket-Key must be 16 bytes in base64";
    for line in [
        None,
        // 15 bytes.
        Some("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j"),
        // 17 bytes.
        Some("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZXg="),
        // Not base64.
        Some("Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!!!"),
        Some("Sec-WebSocket-Key: "),
    ] {
        let request = upgrade_with("a", "sec-websocket-key", line);
        http_exchange(server.addr, request.as_bytes()).assert_refusal(400, reason);
    }
    let repeated = upgrade_request(
        "/echo",
        "a",
        "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n",
    );
    http_exchange(server.addr, repeated.as_bytes()).assert_refusal(400, reason);
}

#[test]
fn version_8_is_refused_with_426_naming_version_13() {
    let server = TestServer::start();
    for line in [
        Some("Sec-WebSocket-Version: 8"),
        Some("Sec-WebSocket-Version: 14"),
        None,
    ] {
        let request = upgrade_with("a", "sec-websocket-version", line);
        let response = http_exchange(server.addr, request.as_bytes());
        response.assert_refusal(
            426,
            "unsupported Sec-WebSocket-Version: this server speaks 13",
        );
        assert_eq!(response.header("sec-websocket-version"), Some("13"));
    }
}

#[test]
fn http_1_0_upgrade_is_refused_with_400() {
    let server = TestServer::start();
    let request = upgrade_request("/echo", "a", "").replacen("HTTP/1.1", "HTTP/1.0", 1);
    http_exchange(server.addr, request.as_bytes())
        .assert_refusal(400, "a WebSocket handshake needs HTTP/1.1 or later");
}

/// An upgrade request padded with an `X-Pad` header so that the whole head is exactly `total` bytes.
fn padded_upgrade(total: usize) -> String {
    let base = upgrade_request("/echo", "a", "X-Pad: \r\n");
    assert!(total >= base.len());
    upgrade_request(
        "/echo",
        "a",
        &format!("X-Pad: {}\r\n", "p".repeat(total - base.len())),
    )
}

#[test]
fn header_block_over_the_default_8_kib_is_refused_with_431() {
    let server = TestServer::start();
    let reason = "request header fields too large";
    // Complete but too large.
    let request = padded_upgrade(8 * 1024 + 1);
    http_exchange(server.addr, request.as_bytes()).assert_refusal(431, reason);
    // Never completed: the server must not wait for the blank line.
    let mut wire = Wire::tcp(server.addr);
    wire.send(format!("GET /echo HTTP/1.1\r\nX: {}", "a".repeat(9000)).as_bytes());
    read_http_until_close(&mut wire).assert_refusal(431, reason);
    // Too many lines, each short.
    let mut many = String::from("GET /echo HTTP/1.1\r\nHost: a\r\n");
    for i in 0..100 {
        many.push_str(&format!("X-{i}: y\r\n"));
    }
    many.push_str("\r\n");
    http_exchange(server.addr, many.as_bytes()).assert_refusal(431, reason);
    // Exactly at the limit is fine.
    let mut wire = Wire::tcp(server.addr);
    wire.send(padded_upgrade(8 * 1024).as_bytes());
    wire.expect_101();
    wire.echo_text("fits");
}

#[test]
fn header_block_over_a_custom_max_header_bytes_is_refused_with_431() {
    let server = TestServer::with_config(|c| c.max_header_bytes = 512);
    http_exchange(server.addr, padded_upgrade(513).as_bytes())
        .assert_refusal(431, "request header fields too large");
    let mut wire = Wire::tcp(server.addr);
    wire.send(padded_upgrade(512).as_bytes());
    wire.expect_101();
    wire.echo_text("fits");
}

#[test]
fn handshake_sent_one_byte_per_write_still_upgrades() {
    let server = TestServer::start();
    let mut wire = Wire::tcp(server.addr);
    let request = upgrade_request("/echo", &server.addr.to_string(), "");
    for byte in request.as_bytes() {
        wire.send(&[*byte]);
        std::thread::sleep(Duration::from_micros(300));
    }
    wire.expect_101();
    // The first frame, also one byte at a time.
    for byte in frame(true, OP_TEXT, b"slow") {
        wire.send(&[byte]);
        std::thread::sleep(Duration::from_micros(300));
    }
    let echoed = wire.read_frame();
    assert_eq!((echoed.opcode, echoed.payload), (OP_TEXT, b"slow".to_vec()));
}

#[test]
fn frame_in_the_same_write_as_the_handshake_is_echoed() {
    let server = TestServer::start();
    let mut wire = Wire::tcp(server.addr);
    let mut bytes = upgrade_request("/echo", "a", "").into_bytes();
    bytes.extend(frame(true, OP_TEXT, b"early"));
    bytes.extend(frame(true, OP_PING, b"p"));
    bytes.extend(frame(false, OP_BINARY, b"fr"));
    bytes.extend(frame(true, OP_CONT, b"ag"));
    wire.send(&bytes);
    wire.expect_101();
    let frames: Vec<(u8, Vec<u8>)> = (0..3)
        .map(|_| wire.read_frame())
        .map(|f| (f.opcode, f.payload))
        .collect();
    // The Pong may overtake the echoes (5.5.2 only asks for it "as soon as is practical"); the data keeps its order.
    let data: Vec<_> = frames
        .iter()
        .filter(|(op, _)| *op != OP_PONG)
        .cloned()
        .collect();
    assert_eq!(
        data,
        vec![(OP_TEXT, b"early".to_vec()), (OP_BINARY, b"frag".to_vec())]
    );
    assert!(frames.contains(&(OP_PONG, b"p".to_vec())), "{frames:?}");
    wire.expect_quiet(Duration::from_millis(100));
}

// ---------------------------------------------------------------------------------------------------------------
// Plain HTTP routes.
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn get_root_serves_the_html_page() {
    let server = TestServer::start();
    let response = http_exchange(server.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(response.status, 200, "{}", response.head);
    assert!(response
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
    assert!(response.body_text().contains("<html"));
    assert_eq!(response.header("connection"), Some("close"));
}

#[test]
fn get_healthz_is_200_ok() {
    let server = TestServer::start();
    let response = http_exchange(server.addr, b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(response.status, 200, "{}", response.head);
    assert_eq!(response.body_text().trim(), "ok");
}

#[test]
fn get_metrics_is_prometheus_text() {
    let server = TestServer::start();
    let response = http_exchange(server.addr, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(response.status, 200, "{}", response.head);
    assert!(response
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain")));
    let text = response.body_text();
    for name in [
        "roomcast_open_connections ",
        "roomcast_open_websockets ",
        "roomcast_accepted_total ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{text}"
        );
    }
    // The query string does not change the route.
    let response = http_exchange(server.addr, b"GET /healthz?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(response.status, 200);
}

#[test]
fn upgrade_on_root_is_the_chat() {
    let server = TestServer::start();
    let mut client = common::TestClient::connect(server.addr, "/").expect("upgrade on /");
    let joined = join(&mut client, "alice", "lobby");
    assert_eq!(joined["room"], "lobby");
    assert_eq!(joined["userId"], "alice");
}

// ---------------------------------------------------------------------------------------------------------------
// Data framing (5.2, 5.4) and control frames (5.5).
// ---------------------------------------------------------------------------------------------------------------

/// A server whose /echo takes messages of up to 16 MiB as fast as they come, as the Autobahn run asks for (the
/// default is 64 KiB, at 1 MiB/s).
fn large_echo() -> TestServer {
    TestServer::with_config(|c| {
        c.echo_max_message_size = 16 << 20;
        c.max_bytes_per_sec = 0;
    })
}

#[test]
fn payloads_in_all_three_length_forms_are_echoed_with_minimal_headers() {
    let server = large_echo();
    let mut wire = Wire::connect(server.addr, "/echo");
    for len in [0usize, 1, 125, 126, 127, 65535, 65536, 1 << 20] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        wire.send(&frame(true, OP_BINARY, &payload));
        let echoed = wire.read_frame();
        assert_eq!(echoed.opcode, OP_BINARY, "len {len}");
        assert!(echoed.fin);
        assert_eq!(echoed.payload.len(), len);
        assert!(echoed.payload == payload, "payload of {len} bytes differs");
        let expected_header = match len {
            0..=125 => 2,
            126..=65535 => 4,
            _ => 10,
        };
        assert_eq!(echoed.header_len, expected_header, "len {len}");
    }
    // Text too, including multi-byte UTF-8 across the 16-bit boundary.
    let text = "é".repeat(40_000);
    wire.echo_text(&text);
    wire.echo_text("");
}

#[test]
fn fragmented_text_with_a_ping_in_between_is_ponged_then_echoed_whole() {
    let server = TestServer::start();
    let mut wire = Wire::connect(server.addr, "/echo");
    // "κόσμε" cut inside a code point: 'κ' is CE BA.
    let text = "κόσμε".as_bytes();
    wire.send(&frame(false, OP_TEXT, &text[..1]));
    wire.send(&frame(true, OP_PING, b"mid"));
    let pong = wire.read_frame();
    assert_eq!((pong.opcode, pong.payload), (OP_PONG, b"mid".to_vec()));
    wire.send(&frame(false, OP_CONT, &text[1..5]));
    wire.send(&frame(false, OP_CONT, b""));
    wire.send(&frame(true, OP_CONT, &text[5..]));
    let echoed = wire.read_frame();
    assert_eq!((echoed.fin, echoed.opcode), (true, OP_TEXT));
    assert_eq!(echoed.payload, text);
}

#[test]
fn ping_gets_a_pong_with_the_same_payload() {
    let server = TestServer::start();
    let mut wire = Wire::connect(server.addr, "/echo");
    let max: Vec<u8> = (0..125u8).collect();
    for payload in [&b""[..], b"hello", &[0xFF, 0x00, 0x80], &max] {
        wire.send(&frame(true, OP_PING, payload));
        let pong = wire.read_frame();
        assert_eq!((pong.opcode, pong.payload.as_slice()), (OP_PONG, payload));
    }
}

#[test]
fn unsolicited_pong_is_ignored() {
    let server = TestServer::start();
    let mut wire = Wire::connect(server.addr, "/echo");
    wire.send(&frame(true, OP_PONG, b"unasked"));
    wire.send(&frame(true, OP_PONG, b""));
    wire.expect_quiet(Duration::from_millis(300));
    // Still open, and the next thing it sends is the echo.
    wire.echo_text("still here");
}

// ---------------------------------------------------------------------------------------------------------------
// Violations: the exact close code, then the server closes TCP (7.1.7).
// ---------------------------------------------------------------------------------------------------------------

/// Opens /echo on `server`, sends `bytes` in one write, and expects Close `code` and then EOF.
fn assert_fails_with(server: &TestServer, bytes: &[u8], code: u16) {
    let mut wire = Wire::connect(server.addr, "/echo");
    wire.send(bytes);
    wire.expect_close_then_eof(code);
}

#[test]
fn rsv_bits_fail_with_1002() {
    let server = TestServer::start();
    for rsv in [0x40u8, 0x20, 0x10, 0x70] {
        let mut bytes = frame(true, OP_TEXT, b"x");
        bytes[0] |= rsv;
        assert_fails_with(&server, &bytes, 1002);
    }
    let mut ping = frame(true, OP_PING, b"x");
    ping[0] |= 0x40;
    assert_fails_with(&server, &ping, 1002);
}

#[test]
fn reserved_opcodes_fail_with_1002() {
    let server = TestServer::start();
    for opcode in [0x3u8, 0x7, 0xB, 0xF] {
        assert_fails_with(&server, &frame(true, opcode, b""), 1002);
        assert_fails_with(&server, &frame(true, opcode, b"payload"), 1002);
    }
}

#[test]
fn unmasked_client_frame_fails_with_1002() {
    let server = TestServer::start();
    assert_fails_with(&server, &[0x81, 0x02, b'h', b'i'], 1002);
    assert_fails_with(&server, &[0x89, 0x00], 1002);
}

#[test]
fn control_frame_over_125_bytes_fails_with_1002() {
    let server = TestServer::start();
    for opcode in [OP_PING, OP_PONG, OP_CLOSE] {
        let mut body = 1000u16.to_be_bytes().to_vec();
        body.resize(126, b'a');
        assert_fails_with(&server, &frame(true, opcode, &body), 1002);
    }
    // Refused from the header alone: the payload never needs to arrive.
    assert_fails_with(&server, &header(0x80 | OP_PING, 126), 1002);
}

#[test]
fn fragmented_ping_fails_with_1002() {
    let server = TestServer::start();
    assert_fails_with(&server, &frame(false, OP_PING, b"x"), 1002);
    let mut bytes = frame(false, OP_PING, b"a");
    bytes.extend(frame(true, OP_CONT, b"b"));
    assert_fails_with(&server, &bytes, 1002);
}

#[test]
fn continuation_without_a_start_fails_with_1002() {
    let server = TestServer::start();
    assert_fails_with(&server, &frame(true, OP_CONT, b"orphan"), 1002);
    // Also right after a complete message.
    let mut wire = Wire::connect(server.addr, "/echo");
    wire.echo_text("done");
    wire.send(&frame(true, OP_CONT, b"late"));
    wire.expect_close_then_eof(1002);
}

#[test]
fn new_text_during_a_fragmented_message_fails_with_1002() {
    let server = TestServer::start();
    let mut bytes = frame(false, OP_TEXT, b"first");
    bytes.extend(frame(true, OP_TEXT, b"second"));
    assert_fails_with(&server, &bytes, 1002);
    let mut bytes = frame(false, OP_BINARY, b"first");
    bytes.extend(frame(false, OP_BINARY, b"second"));
    assert_fails_with(&server, &bytes, 1002);
}

#[test]
fn sixty_four_bit_length_with_the_msb_set_fails_with_1002() {
    let server = TestServer::start();
    let mut bytes = vec![0x82, 0x80 | 127];
    bytes.extend_from_slice(&(1u64 << 63).to_be_bytes());
    bytes.extend_from_slice(&[1, 2, 3, 4]);
    assert_fails_with(&server, &bytes, 1002);
    let mut bytes = vec![0x81, 0x80 | 127];
    bytes.extend_from_slice(&u64::MAX.to_be_bytes());
    bytes.extend_from_slice(&[1, 2, 3, 4]);
    assert_fails_with(&server, &bytes, 1002);
}

#[test]
fn non_minimal_length_encoding_fails_with_1002() {
    let server = TestServer::start();
    let mut sixteen = vec![0x82, 0x80 | 126, 0x00, 0x05, 1, 2, 3, 4];
    sixteen.extend_from_slice(&[0; 5]);
    assert_fails_with(&server, &sixteen, 1002);
    let mut sixty_four = vec![0x82, 0x80 | 127];
    sixty_four.extend_from_slice(&200u64.to_be_bytes());
    sixty_four.extend_from_slice(&[1, 2, 3, 4]);
    assert_fails_with(&server, &sixty_four, 1002);
}

#[test]
fn invalid_utf8_text_fails_with_1007() {
    let server = TestServer::start();
    for bad in [
        &b"\xFF"[..],
        b"abc\xC0\xAFdef",
        b"\xED\xA0\x80",
        b"\xF4\x90\x80\x80",
        // Truncated code point at the end of the message.
        b"ok\xE2\x82",
    ] {
        assert_fails_with(&server, &frame(true, OP_TEXT, bad), 1007);
    }
    // Invalid only across a fragment boundary: E2 82 then 28.
    let mut bytes = frame(false, OP_TEXT, b"\xE2\x82");
    bytes.extend(frame(true, OP_CONT, b"\x28"));
    assert_fails_with(&server, &bytes, 1007);
}

#[test]
fn invalid_utf8_fails_fast_before_the_rest_of_the_message_is_sent() {
    let server = large_echo();
    // A first fragment with FIN=0 holding the invalid byte: the Close comes without any continuation.
    let mut wire = Wire::connect(server.addr, "/echo");
    wire.send(&frame(false, OP_TEXT, b"hello \xFF world"));
    wire.expect_close_then_eof(1007);
    // Within a single frame: a 1 MiB text frame of which only the first 64 bytes are sent.
    let mut wire = Wire::connect(server.addr, "/echo");
    let head = header(0x80 | OP_TEXT, 1 << 20);
    let mut prefix = vec![b'a'; 64];
    prefix[10] = 0xC0;
    let mut bytes = head.clone();
    bytes.extend(masked_payload(&head, 0, &prefix));
    wire.send(&bytes);
    wire.expect_close_then_eof(1007);
}

#[test]
fn close_with_a_one_byte_body_fails_with_1002() {
    let server = TestServer::start();
    assert_fails_with(&server, &frame(true, OP_CLOSE, &[0x03]), 1002);
}

#[test]
fn close_with_an_invalid_code_fails_with_1002() {
    let server = TestServer::start();
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
    ] {
        let mut wire = Wire::connect(server.addr, "/echo");
        wire.send(&close_frame(code, b""));
        let close = wire.read_frame();
        assert_eq!(close.close_code(), Some(1002), "for close code {code}");
        wire.expect_eof(Duration::from_secs(2));
    }
}

#[test]
fn close_with_an_invalid_utf8_reason_fails_with_1007() {
    let server = TestServer::start();
    assert_fails_with(&server, &close_frame(1000, b"bye \xFF"), 1007);
    assert_fails_with(&server, &close_frame(1000, b"\xE2\x82"), 1007);
}

#[test]
fn valid_close_codes_are_echoed() {
    let server = TestServer::start();
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 3999, 4000, 4999,
    ] {
        assert_fails_with(&server, &close_frame(code, b"reason \xC3\xA9"), code);
    }
    // An empty Close body is answered with an empty Close body.
    let mut wire = Wire::connect(server.addr, "/echo");
    wire.send(&frame(true, OP_CLOSE, b""));
    let close = wire.read_frame();
    assert_eq!((close.opcode, close.payload), (OP_CLOSE, Vec::new()));
    wire.expect_eof(Duration::from_secs(2));
}

#[test]
fn message_over_the_chat_limit_fails_with_1009_from_its_header() {
    let server = TestServer::with_config(|c| c.chat_max_message_size = 4096);
    for path in ["/ws", "/"] {
        let mut wire = Wire::connect(server.addr, path);
        // Only the header: the size is refused as soon as it is known.
        wire.send(&header(0x80 | OP_TEXT, 4097));
        wire.expect_close_then_eof(1009);
    }
    let server = TestServer::start();
    let mut wire = Wire::connect(server.addr, "/ws");
    wire.send(&header(0x80 | OP_TEXT, 64 * 1024 + 1));
    wire.expect_close_then_eof(1009);
}

#[test]
fn message_over_the_echo_limit_fails_with_1009() {
    let server = TestServer::with_config(|c| c.echo_max_message_size = 1024);
    // Exactly at the limit is echoed.
    let mut wire = Wire::connect(server.addr, "/echo");
    let payload = vec![7u8; 1024];
    wire.send(&frame(true, OP_BINARY, &payload));
    assert_eq!(wire.read_frame().payload, payload);
    // One frame over it.
    assert_fails_with(&server, &frame(true, OP_BINARY, &[0; 1025]), 1009);
    // Fragments that only add up to more than the limit.
    let mut wire = Wire::connect(server.addr, "/echo");
    wire.send(&frame(false, OP_TEXT, &[b'a'; 600]));
    wire.expect_quiet(Duration::from_millis(100));
    wire.send(&header(OP_CONT, 600));
    wire.expect_close_then_eof(1009);
}

// ---------------------------------------------------------------------------------------------------------------
// The closing handshake (5.5.1, 7.1).
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn client_close_1000_is_echoed_and_tcp_closed_within_a_second() {
    let server = TestServer::start();
    let mut wire = Wire::connect(server.addr, "/echo");
    wire.echo_text("before");
    wire.send(&close_frame(1000, b"done"));
    let start = Instant::now();
    let close = wire.read_frame();
    assert_eq!(close.close_code(), Some(1000));
    wire.expect_eof(Duration::from_secs(1));
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn half_closed_client_still_gets_its_http_answer() {
    let server = TestServer::start();
    for (request, status) in [
        (&b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"[..], 200),
        (b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n", 404),
    ] {
        let mut wire = Wire::tcp(server.addr);
        wire.send(request);
        // The request and our FIN may arrive in one read: the answer is still owed (RFC 9293 3.6 half-close).
        wire.stream.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_http_until_close(&mut wire).status, status);
    }
}

#[test]
fn close_followed_by_fin_still_gets_the_close_echo() {
    let server = TestServer::start();
    let mut wire = Wire::connect(server.addr, "/echo");
    wire.send(&close_frame(1000, b""));
    wire.stream.shutdown(std::net::Shutdown::Write).unwrap();
    wire.expect_close_then_eof(1000);
}

#[test]
fn nothing_is_sent_after_the_servers_close() {
    let server = TestServer::start();
    // A message, a violation and another message in one write: the first is echoed, the Close follows, and
    // nothing after it.
    let mut wire = Wire::connect(server.addr, "/echo");
    let mut bytes = frame(true, OP_TEXT, b"before");
    let mut bad = frame(true, OP_TEXT, b"x");
    bad[0] |= 0x40;
    bytes.extend(bad);
    bytes.extend(frame(true, OP_TEXT, b"after"));
    bytes.extend(frame(true, OP_PING, b"after"));
    wire.send(&bytes);
    let first = wire.read_frame();
    assert_eq!((first.opcode, first.payload), (OP_TEXT, b"before".to_vec()));
    wire.expect_close_then_eof(1002);

    // After the peer's Close too: data and pings that follow it in the same write are ignored.
    let mut wire = Wire::connect(server.addr, "/echo");
    let mut bytes = close_frame(1000, b"");
    bytes.extend(frame(true, OP_TEXT, b"after"));
    bytes.extend(frame(true, OP_PING, b"after"));
    wire.send(&bytes);
    wire.expect_close_then_eof(1000);
}

#[test]
fn binary_frame_on_the_chat_route_is_closed_with_1003() {
    let server = TestServer::start();
    let mut wire = Wire::connect(server.addr, "/ws");
    wire.send(&frame(true, OP_BINARY, b"\x00\x01"));
    let close = wire.read_frame();
    assert_eq!(close.close_code(), Some(1003));
    // The server started the closing handshake: it sends no more data, even when spoken to (5.5.1), but a Ping
    // still gets its Pong (5.5.2: only a Ping after the peer's Close goes unanswered).
    wire.send(&frame(
        true,
        OP_TEXT,
        br#"{"type":"join","userId":"late","room":"r","v":2}"#,
    ));
    wire.send(&frame(true, OP_PING, b"p"));
    let pong = wire.read_frame();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (OP_PONG, &b"p"[..]));
    wire.expect_quiet(Duration::from_millis(200));
    wire.send(&close_frame(1003, b""));
    wire.expect_eof(Duration::from_secs(1));
}

/// Regression: the server used to wait for `close_timeout` (5 s) after the client answered its Close, because
/// nothing was left to flush and only a flush ends the connection.
#[test]
fn server_initiated_close_ends_tcp_promptly_once_the_client_answers() {
    let server = TestServer::start();
    let mut wire = Wire::connect(server.addr, "/ws");
    wire.send(&frame(true, OP_BINARY, b"\x00"));
    assert_eq!(wire.read_frame().close_code(), Some(1003));
    wire.send(&close_frame(1003, b""));
    // RFC 6455 7.1.1: the server closes TCP first, once both Close frames have been exchanged.
    wire.expect_eof(Duration::from_secs(1));
}

#[test]
fn chat_text_after_the_servers_close_is_not_acted_on() {
    let server = TestServer::start();
    let mut bob = server.ws("/ws");
    join(&mut bob, "bob", "lobby");
    // A binary frame (Close 1003) and then a join, in one write: the join comes after our Close and must be
    // ignored (5.5.1), so bob hears nothing of "mallory".
    let mut wire = Wire::connect(server.addr, "/ws");
    let mut bytes = frame(true, OP_BINARY, b"\x00");
    bytes.extend(frame(
        true,
        OP_TEXT,
        br#"{"type":"join","userId":"mallory","room":"lobby","v":2}"#,
    ));
    wire.send(&bytes);
    assert_eq!(wire.read_frame().close_code(), Some(1003));
    wire.send(&close_frame(1003, b""));
    drop(wire);
    if let Some(received) = bob.recv_timeout(Duration::from_millis(500)) {
        panic!("bob heard of a connection that was already closed: {received:?}");
    }
}
