//! One misbehaving connection never affects another, nor the server's life. A healthy echo client keeps
//! round-tripping while other connections send garbage, impossible lengths, half handshakes, half frames, resets
//! and floods, alone and fifty at a time; afterwards `/healthz` answers and `/metrics` shows every connection the
//! misbehaving clients opened is gone.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Received, TestClient, TestServer};

/// The header of a masked client frame declaring `len` payload bytes (64-bit form when needed); `len` may have
/// its top bit set, which RFC 6455 5.2 forbids.
fn declared_header(first_byte: u8, len: u64) -> Vec<u8> {
    common::masked_header(first_byte, len, [0x0f, 0x1e, 0x2d, 0x3c])
}

/// A masked binary frame (the payload is sent as is; the server unmasks it into other bytes, which is fine).
fn binary_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = declared_header(0x82, payload.len() as u64);
    out.extend_from_slice(payload);
    out
}

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The start of a TLS 1.2 ClientHello, as a browser sends to `https://` on a plain-HTTP port.
const TLS_CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, 0x5e, 0x2a, 0x8b, 0x11, 0x00,
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10,
    0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x00, 0x00, 0x20, 0xc0, 0x2b,
    0xc0, 0x2f, 0x00, 0x9e, 0xcc, 0xa9, 0xcc, 0xa8, 0x00, 0x0a, 0x01, 0x00,
];

fn tcp(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Reads until the server ends TCP (EOF or reset), for at most `within`; returns what arrived and whether the
/// server did end the connection.
fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, false);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return (out, false)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return (out, true),
        }
    }
}

/// Writes `bytes`, tolerating the server having closed on us partway (that is the point of some cases).
fn write_tolerant(stream: &mut TcpStream, bytes: &[u8]) {
    for chunk in bytes.chunks(256 * 1024) {
        if stream.write_all(chunk).is_err() {
            return;
        }
    }
}

/// The WebSocket close code the server sends next, then EOF; panics otherwise.
fn expect_close_then_eof(client: &mut TestClient) -> Option<u16> {
    let code = client.recv_close();
    assert_eq!(
        client.recv(),
        Received::Eof,
        "the server must close TCP after its Close"
    );
    code
}

/// The misbehaviours. Each opens its own connection(s), asserts what the server must answer where that is
/// deterministic, and leaves nothing open behind it.
#[derive(Clone, Copy, Debug)]
enum Case {
    /// A TLS ClientHello instead of HTTP: 400, then closed.
    TlsClientHello,
    /// A frame declaring 2^63-1 bytes on /echo: over the limit, 1009 at once.
    HugeDeclaredLength,
    /// A 64-bit length with the most significant bit set: 1002.
    LengthWithMsbSet,
    /// Part of a request head, then the socket is dropped.
    HalfHandshakeThenDisconnect,
    /// Half a frame, then the socket is dropped (FIN).
    HalfFrameThenDrop,
    /// Half a frame, then shutdown(Both).
    HalfFrameThenShutdown,
    /// Half a frame, then the socket is dropped with unread data in its receive buffer, which makes the kernel
    /// send a reset instead of a FIN.
    HalfFrameThenReset,
    /// 10 MiB of garbage instead of HTTP.
    GarbageInsteadOfHttp,
    /// 10 MiB of garbage after a valid upgrade.
    GarbageAfterUpgrade,
    /// A valid 10 MiB message on /echo, then the socket vanishes without reading the echo.
    EchoTenMibThenVanish,
}

const ALL_CASES: [Case; 10] = [
    Case::TlsClientHello,
    Case::HugeDeclaredLength,
    Case::LengthWithMsbSet,
    Case::HalfHandshakeThenDisconnect,
    Case::HalfFrameThenDrop,
    Case::HalfFrameThenShutdown,
    Case::HalfFrameThenReset,
    Case::GarbageInsteadOfHttp,
    Case::GarbageAfterUpgrade,
    Case::EchoTenMibThenVanish,
];

const TEN_MIB: usize = 10 << 20;

impl Case {
    fn run(self, addr: SocketAddr, flood: &[u8]) {
        match self {
            Case::TlsClientHello => {
                let mut stream = tcp(addr);
                stream.write_all(TLS_CLIENT_HELLO).unwrap();
                let (response, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
                let text = String::from_utf8_lossy(&response);
                assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
                assert!(text.ends_with("\r\n\r\nmalformed HTTP request\n"), "{text}");
                assert!(closed, "the server must close TCP after the 400");
            }
            Case::HugeDeclaredLength => {
                let mut client = TestClient::connect(addr, "/echo").expect("upgrade");
                client.send_raw(&declared_header(0x82, u64::MAX >> 1));
                client.send_raw(b"a few bytes of the promised exabytes");
                assert_eq!(expect_close_then_eof(&mut client), Some(1009));
            }
            Case::LengthWithMsbSet => {
                let mut client = TestClient::connect(addr, "/echo").expect("upgrade");
                client.send_raw(&declared_header(0x82, 1 << 63));
                assert_eq!(expect_close_then_eof(&mut client), Some(1002));
            }
            Case::HalfHandshakeThenDisconnect => {
                let mut stream = tcp(addr);
                stream
                    .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: webso")
                    .unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            Case::HalfFrameThenDrop | Case::HalfFrameThenShutdown => {
                let mut client = TestClient::connect(addr, "/echo").expect("upgrade");
                let frame = binary_frame(&[0x55; 1000]);
                client.send_raw(&frame[..frame.len() / 2]);
                std::thread::sleep(Duration::from_millis(20));
                if matches!(self, Case::HalfFrameThenShutdown) {
                    client.stream.shutdown(Shutdown::Both).unwrap();
                }
            }
            Case::HalfFrameThenReset => {
                let mut client = TestClient::connect(addr, "/echo").expect("upgrade");
                // Leave an echo unread: closing a socket with unread data sends RST.
                client.send_raw(&binary_frame(b"unread echo"));
                std::thread::sleep(Duration::from_millis(30));
                let frame = binary_frame(&[0xAA; 5000]);
                client.send_raw(&frame[..2000]);
            }
            Case::GarbageInsteadOfHttp => {
                let mut stream = tcp(addr);
                write_tolerant(&mut stream, flood);
                let (response, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
                let text = String::from_utf8_lossy(&response);
                assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
                assert!(closed);
            }
            Case::GarbageAfterUpgrade => {
                let mut client = TestClient::connect(addr, "/echo").expect("upgrade");
                write_tolerant(&mut client.stream, flood);
                let code = expect_close_then_eof(&mut client);
                assert!(
                    matches!(code, Some(1002 | 1007 | 1009)),
                    "garbage frames closed with {code:?}"
                );
            }
            Case::EchoTenMibThenVanish => {
                let mut client = TestClient::connect(addr, "/echo").expect("upgrade");
                write_tolerant(&mut client.stream, &binary_frame(&flood[..TEN_MIB]));
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A healthy echo client that must keep working whatever the others do.
struct Healthy {
    client: TestClient,
    round_trips: usize,
}

impl Healthy {
    fn new(server: &TestServer) -> Healthy {
        Healthy {
            client: server.ws("/echo"),
            round_trips: 0,
        }
    }

    /// One echo round trip; returns how long it took.
    fn round_trip(&mut self, context: &str) -> Duration {
        self.round_trips += 1;
        let text = format!("healthy #{} after {context}", self.round_trips);
        let start = Instant::now();
        self.client.send_text(&text);
        let echoed = self.client.recv_text();
        assert_eq!(
            echoed, text,
            "the healthy client was disturbed by {context}"
        );
        start.elapsed()
    }
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tcp(addr);
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let (response, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
    assert!(closed, "no complete response to GET {path}");
    common::parse_http_response(&String::from_utf8_lossy(&response))
}

/// The value of a metric line `name value` in /metrics, or `None` if /metrics did not answer 200.
fn metric(addr: SocketAddr, name: &str) -> Option<u64> {
    let (status, body) = http_get(addr, "/metrics");
    if status != 200 {
        return None;
    }
    let value = body
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{body}"));
    Some(value.trim().parse().unwrap())
}

/// Polls /metrics for up to 2 s until `roomcast_open_connections` is `held` plus the /metrics request itself.
fn assert_open_connections_fall_back_to(addr: SocketAddr, held: u64) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        // The connection asking for /metrics is open while the answer is rendered, so it counts.
        let open = metric(addr, "roomcast_open_connections");
        if open == Some(held + 1) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "roomcast_open_connections stayed at {open:?}, expected {held} held + 1 for the request"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The end state every test here asks for: only the connections still held are open, /healthz answers, and the
/// healthy client works.
fn assert_server_healthy(server: &TestServer, healthy: &mut Healthy, held: u64) {
    healthy.round_trip("everything");
    assert_open_connections_fall_back_to(server.addr, held);
    assert_eq!(http_get(server.addr, "/healthz"), (200, "ok\n".to_string()));
    healthy.round_trip("the metrics check");
}

#[test]
fn each_misbehaving_connection_leaves_a_healthy_client_working() {
    let server = TestServer::start();
    let mut healthy = Healthy::new(&server);
    // A connection that stalls mid-frame and is held open throughout: it must not block anyone either.
    let mut stalled = server.ws("/echo");
    stalled.send_raw(&declared_header(0x81, 100)[..4]);
    let flood = garbage(TEN_MIB + 64, 0x5eed);
    healthy.round_trip("the start");
    for case in ALL_CASES {
        case.run(server.addr, &flood);
        healthy.round_trip(&format!("{case:?}"));
    }
    assert_server_healthy(&server, &mut healthy, 2);
    drop(stalled);
    assert_open_connections_fall_back_to(server.addr, 1);
}

#[test]
fn fifty_concurrent_misbehaving_connections_leave_the_server_healthy() {
    let server = TestServer::start();
    let mut healthy = Healthy::new(&server);
    let flood = Arc::new(garbage(TEN_MIB + 64, 0xfeed));
    let addr = server.addr;
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let flood = flood.clone();
            std::thread::spawn(move || {
                // Spread the 10 MiB cases thin: a debug-build server pushes them all through one thread.
                let case = match ALL_CASES[i % ALL_CASES.len()] {
                    Case::GarbageInsteadOfHttp
                    | Case::GarbageAfterUpgrade
                    | Case::EchoTenMibThenVanish
                        if i >= 30 =>
                    {
                        Case::HalfFrameThenReset
                    }
                    case => case,
                };
                case.run(addr, &flood);
                case
            })
        })
        .collect();
    // Keep round-tripping while the storm runs.
    let mut worst = Duration::ZERO;
    let mut trips = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while threads.iter().any(|t| !t.is_finished()) {
        assert!(
            Instant::now() < deadline,
            "the misbehaving clients did not finish within 30 s"
        );
        worst = worst.max(healthy.round_trip("the concurrent storm"));
        trips += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    for thread in threads {
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }
    assert!(trips > 0);
    assert!(
        worst < Duration::from_secs(3),
        "a healthy round trip took {worst:?} during the storm"
    );
    assert_server_healthy(&server, &mut healthy, 1);
}

#[test]
fn stalled_half_handshake_is_dropped_at_the_handshake_timeout() {
    let server = TestServer::with_config(|c| c.handshake_timeout = Duration::from_millis(300));
    let mut healthy = Healthy::new(&server);
    let mut stream = tcp(server.addr);
    stream
        .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let start = Instant::now();
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(2));
    assert!(closed, "a stalled handshake must be dropped");
    assert!(start.elapsed() >= Duration::from_millis(250));
    // Trickling one byte every 50 ms does not reset the clock either.
    let mut slow = tcp(server.addr);
    let request = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let start = Instant::now();
    let mut sent = 0;
    let dropped = loop {
        if start.elapsed() > Duration::from_secs(2) {
            break false;
        }
        let byte = request.get(sent).copied().unwrap_or(b'a');
        sent += 1;
        if slow.write_all(&[byte]).is_err() {
            break true;
        }
        slow.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        match slow.read(&mut [0u8; 256]) {
            Ok(0) => break true,
            Ok(n) => panic!("the server answered a half-sent head with {n} bytes"),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break true,
        }
    };
    assert!(
        dropped,
        "a trickled handshake outlived the handshake timeout"
    );
    assert!(start.elapsed() >= Duration::from_millis(250));
    assert_server_healthy(&server, &mut healthy, 1);
}

#[test]
fn connection_limit_refuses_with_503_and_recovers() {
    let server = TestServer::with_config(|c| c.max_connections = 3);
    let mut healthy = Healthy::new(&server);
    let held: Vec<TestClient> = (0..2).map(|_| server.ws("/echo")).collect();
    let mut extra = tcp(server.addr);
    extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (response, closed) = read_until_closed(&mut extra, Duration::from_secs(3));
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
    assert!(closed);
    healthy.round_trip("a refused connection");
    drop(held);
    assert_server_healthy(&server, &mut healthy, 1);
}
