//! The attack tests' shared tools (tests/hardening.rs, tests/hardening_chat.rs): a WebSocket client driven byte by
//! byte, a thread that reads and discards for many connections, readings of /metrics and of this process's memory,
//! a bystander's round trips, and the lock that keeps a measurement alone in its test binary.
//!
//! It mounts nothing itself and asserts only what a helper needs to go on (a handshake answered, a frame parsed):
//! each test decides what its attack is and what the defence must be.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::chat::{chat_msg, join_msg};
use super::{parse_http_response, raw_frame, TestClient, TestServer};

static EXCLUSIVE: RwLock<()> = RwLock::new(());

/// Taken by every test that measures neither latency nor memory.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner())
}

/// Taken by tests that measure latency or this process's memory: nothing else in the test binary runs meanwhile.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner())
}

/// How long an attacker may go on before the server must have failed it.
pub const ATTACK_LIMIT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------------------------
// A raw client: frames written by hand, server frames parsed by hand
// ---------------------------------------------------------------------------------------------------------------

/// A frame's first byte: FIN set, with the opcode.
pub const FIN: u8 = 0x80;
pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// A WebSocket connection driven byte by byte, so an attacker can send what no well-behaved client library would
/// and read only when it chooses to.
pub struct Wire {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// Where the unparsed bytes of `buf` begin.
    start: usize,
    eof: bool,
    /// Bytes read after the handshake's response head.
    received: usize,
}

/// What reading a frame gave.
#[derive(Debug)]
pub enum Got {
    Frame(u8, Vec<u8>),
    Eof,
    Timeout,
}

/// How a connection ended, from its client's side.
#[derive(Debug)]
pub struct Ending {
    /// Frames received before the Close.
    pub before: usize,
    /// The Close's code and reason, if one came.
    pub close: Option<(u16, String)>,
    /// When the Close (or, without one, the end of TCP or the deadline) was read.
    pub at: Instant,
    /// Frames received after the Close.
    pub after: usize,
    /// TCP ended after the Close.
    pub eof: bool,
}

impl Ending {
    /// The server failed this connection with `code` and `reason`: it sent that Close, nothing after it, and
    /// closed TCP.
    pub fn assert_failed(&self, code: u16, reason: &str) {
        assert_eq!(
            self.close,
            Some((code, reason.to_owned())),
            "the connection did not end with Close {code} {reason:?}: {self:?}"
        );
        assert_eq!(self.after, 0, "frames after the Close: {self:?}");
        assert!(self.eof, "TCP still open after the Close: {self:?}");
    }
}

/// An opening handshake's request for `path`, with `extra` header lines (each ending in "\r\n").
fn upgrade_request(addr: SocketAddr, path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

impl Wire {
    /// Connects to `path` and completes the opening handshake.
    pub fn connect(addr: SocketAddr, path: &str) -> Wire {
        Wire::try_connect(addr, path, "").unwrap_or_else(|head| panic!("not a 101: {head}"))
    }

    /// Connects to `path` with `extra` header lines (each ending in "\r\n"): the WebSocket, or the head of the
    /// response that refused it.
    pub fn try_connect(addr: SocketAddr, path: &str, extra: &str) -> Result<Wire, String> {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(upgrade_request(addr, path, extra).as_bytes())
            .unwrap();
        let mut wire = Wire {
            stream,
            buf: Vec::new(),
            start: 0,
            eof: false,
            received: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let head_end = loop {
            if let Some(pos) = wire.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            assert!(
                !wire.eof && wire.fill(deadline),
                "no handshake response: {:?}",
                String::from_utf8_lossy(&wire.buf)
            );
        };
        let head = String::from_utf8_lossy(&wire.buf[..head_end]).into_owned();
        if !head.starts_with("HTTP/1.1 101 ") {
            return Err(head);
        }
        wire.start = head_end;
        wire.received = wire.buf.len() - head_end;
        Ok(wire)
    }

    /// Writes raw bytes; an error means the server is gone or stopped reading for longer than the write timeout.
    /// (A `Drain` makes the socket non-blocking, a flag its clone shares: a full buffer is then waited out here, for
    /// no longer than a blocking write would wait.)
    pub fn send(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let timeout = self
            .stream
            .write_timeout()?
            .unwrap_or(Duration::from_secs(5));
        let deadline = Instant::now() + timeout;
        while !bytes.is_empty() {
            match self.stream.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(1))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes each of `values` as a text frame, all in one write, so that the server reads them together.
    pub fn send_all_at_once(&mut self, values: &[Value]) -> io::Result<()> {
        self.send(&text_frames(values))
    }

    /// Reads once, waiting until `deadline`; false on timeout.
    pub fn fill(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        self.stream.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => self.eof = true,
            Ok(n) => {
                if self.start > 0 && self.start * 2 > self.buf.len() {
                    self.buf.drain(..self.start);
                    self.start = 0;
                }
                self.buf.extend_from_slice(&chunk[..n]);
                self.received += n;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.eof = true,
        }
        true
    }

    /// Bytes read so far after the handshake's response head.
    pub fn received(&self) -> usize {
        self.received
    }

    /// The next server frame, waiting until `deadline`.
    pub fn next(&mut self, deadline: Instant) -> Got {
        loop {
            if let Some((opcode, payload, used)) = parse_server_frame(&self.buf[self.start..]) {
                self.start += used;
                return Got::Frame(opcode, payload);
            }
            if self.eof {
                return Got::Eof;
            }
            if !self.fill(deadline) {
                return Got::Timeout;
            }
        }
    }

    /// The next text frame as JSON, skipping control frames other than Close; None on a Close, the end of TCP or
    /// `deadline`.
    pub fn next_json(&mut self, deadline: Instant) -> Option<Value> {
        loop {
            match self.next(deadline) {
                Got::Frame(TEXT, text) => {
                    return Some(serde_json::from_slice(&text).expect("a JSON text frame"))
                }
                Got::Frame(CLOSE, _) | Got::Eof | Got::Timeout => return None,
                Got::Frame(..) => {}
            }
        }
    }

    /// Reads until the server's Close, the end of TCP or `deadline`; after a Close, goes on reading (for at most
    /// five more seconds) to see that nothing follows it and that TCP ends.
    pub fn until_close(&mut self, deadline: Instant) -> Ending {
        let mut ending = Ending {
            before: 0,
            close: None,
            at: Instant::now(),
            after: 0,
            eof: false,
        };
        loop {
            match self.next(deadline) {
                Got::Frame(CLOSE, payload) => {
                    ending.at = Instant::now();
                    ending.close = Some(close_body(&payload));
                    break;
                }
                Got::Frame(..) => ending.before += 1,
                Got::Eof => {
                    ending.at = Instant::now();
                    ending.eof = true;
                    return ending;
                }
                Got::Timeout => {
                    ending.at = Instant::now();
                    return ending;
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.next(deadline) {
                Got::Frame(..) => ending.after += 1,
                Got::Eof => {
                    ending.eof = true;
                    return ending;
                }
                Got::Timeout => return ending,
            }
        }
    }

    /// Sends a Ping and waits for its Pong, skipping other frames: everything sent before it has been read.
    pub fn ping_pong(&mut self, payload: &[u8]) {
        self.send(&raw_frame(FIN | PING, payload)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.next(deadline) {
                Got::Frame(PONG, got) if got == payload => return,
                Got::Frame(CLOSE, body) => {
                    panic!("closed instead of a Pong: {:?}", close_body(&body))
                }
                Got::Frame(..) => {}
                other => panic!("no Pong: {other:?}"),
            }
        }
    }

    /// Joins `room` as `user` (v2) with a hand-made text frame and returns the `joined`.
    pub fn join(&mut self, user: &str, room: &str) -> Value {
        self.send_all_at_once(&[join_msg(user, room)]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.next_json(deadline) {
                Some(msg) if msg["type"] == "joined" => return msg,
                Some(_) => {}
                None => panic!("no joined for {user} in {room}"),
            }
        }
    }
}

/// Each of `values` as a masked text frame, end to end: bytes a test that sends the same messages many times makes
/// once.
pub fn text_frames(values: &[Value]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for value in values {
        bytes.extend(raw_frame(FIN | TEXT, value.to_string().as_bytes()));
    }
    bytes
}

/// Parses one unmasked server frame at the start of `bytes`: (opcode, payload, bytes used), or None if incomplete.
pub fn parse_server_frame(bytes: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let (&first, rest) = bytes.split_first()?;
    let (&second, rest) = rest.split_first()?;
    assert_eq!(second & 0x80, 0, "a server frame must not be masked");
    let (len, header) = match second & 0x7F {
        126 => (
            u16::from_be_bytes(rest.get(..2)?.try_into().unwrap()) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(rest.get(..8)?.try_into().unwrap()) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = bytes.get(header..header + len)?.to_vec();
    Some((first & 0x0F, payload, header + len))
}

/// A Close body's code and reason.
pub fn close_body(payload: &[u8]) -> (u16, String) {
    match payload {
        [a, b, reason @ ..] => (
            u16::from_be_bytes([*a, *b]),
            String::from_utf8_lossy(reason).into_owned(),
        ),
        _ => (1005, String::new()),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Many connections read at once
// ---------------------------------------------------------------------------------------------------------------

/// One thread reading, and throwing away, whatever many connections are sent, so that the server never counts them
/// as slow consumers: for attackers and extras that must keep reading but whose messages nobody looks at.
pub struct Drain {
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Drain {
    /// Starts reading `streams` (clones of the connections' sockets), each without blocking, until dropped. The
    /// sockets are non-blocking meanwhile, their originals included: `Wire::send` copes with that.
    pub fn start(streams: Vec<TcpStream>) -> Drain {
        let stop = Arc::new(AtomicBool::new(false));
        let bytes = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, bytes) = (stop.clone(), bytes.clone());
            thread::spawn(move || {
                for stream in &streams {
                    stream.set_nonblocking(true).unwrap();
                }
                let mut open = vec![true; streams.len()];
                let mut chunk = vec![0u8; 256 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    let mut read_any = false;
                    for (stream, open) in streams.iter().zip(&mut open) {
                        while *open {
                            match (&*stream).read(&mut chunk) {
                                Ok(0) => *open = false,
                                Ok(n) => {
                                    bytes.fetch_add(n, Ordering::Relaxed);
                                    read_any = true;
                                }
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                                Err(_) => *open = false,
                            }
                        }
                    }
                    if !read_any {
                        thread::sleep(Duration::from_millis(1));
                    }
                }
                // The connections may still be written to, or read, through the originals of these clones.
                for stream in &streams {
                    let _ = stream.set_nonblocking(false);
                }
            })
        };
        Drain {
            stop,
            bytes,
            thread: Some(thread),
        }
    }

    /// Bytes read so far over all the connections.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------------------------

/// The body of GET /metrics, asked for by a connection that comes through a trusted proxy (127.0.0.1 with the
/// default proxies) for `client`: for a test whose own address is at its limits.
pub fn scrape_as(server: &TestServer, client: &str) -> String {
    let response = server.raw_exchange(
        format!(
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nX-Forwarded-For: {client}\r\n\r\n",
            server.addr
        )
        .as_bytes(),
    );
    let (status, body) = parse_http_response(&response);
    assert_eq!(status, 200, "{response}");
    body
}

/// The body of GET /metrics.
pub fn scrape(server: &TestServer) -> String {
    let (status, body) = server.get("/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of one series (a name with its labels, exactly as /metrics writes it) in a scraped body, or None if it
/// has no such line.
pub fn series(body: &str, name: &str) -> Option<u64> {
    let prefix = format!("{name} ");
    body.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.parse().ok())
}

/// The value of `roomcast_connections_failed_total{reason="<reason>"}`, or None if /metrics has no such line.
pub fn failures(server: &TestServer, reason: &str) -> Option<u64> {
    series(
        &scrape(server),
        &format!("roomcast_connections_failed_total{{reason=\"{reason}\"}}"),
    )
}

/// The value of a metric without labels, or None if /metrics has no such line.
pub fn gauge(server: &TestServer, name: &str) -> Option<u64> {
    series(&scrape(server), name)
}

/// Polls `check` every 10 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------------------------

/// This process's resident set size, in bytes (the server runs in it).
pub fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: usize = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// A thread that reads this process's resident set size every 2 ms, for the peak of an attack whose memory may be
/// freed again before the attack is over.
pub struct RssPeak {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl RssPeak {
    /// Starts sampling.
    pub fn start() -> RssPeak {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut peak = rss();
                while !stop.load(Ordering::Relaxed) {
                    peak = peak.max(rss());
                    thread::sleep(Duration::from_millis(2));
                }
                peak.max(rss())
            })
        };
        RssPeak {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the highest resident set size seen.
    pub fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("sampling thread")
            .join()
            .expect("sampling thread")
    }
}

// ---------------------------------------------------------------------------------------------------------------
// A bystander
// ---------------------------------------------------------------------------------------------------------------

/// How often the bystander starts a round trip: it keeps well within its own frame budget (200 a second).
pub const ROUND_TRIP_EVERY: Duration = Duration::from_millis(6);

/// The bystander's round trips: sends a chat and waits for its own copy, `n` times, one every `ROUND_TRIP_EVERY`;
/// returns each one's time. (Its chat frame rate, 20 a second by default, must be raised by the test.)
pub fn round_trips(bystander: &mut TestClient, n: usize, from: usize) -> Vec<Duration> {
    let mut next = Instant::now();
    (from..from + n)
        .map(|i| {
            thread::sleep(next.saturating_duration_since(Instant::now()));
            next += ROUND_TRIP_EVERY;
            let content = format!("round trip {i}");
            let sent = Instant::now();
            bystander.send_json(&chat_msg(&content));
            loop {
                let msg = bystander.recv_json();
                if msg["type"] == "chat" && msg["content"] == content.as_str() {
                    return sent.elapsed();
                }
            }
        })
        .collect()
}

/// The 99th percentile of `latencies` (sorted in place).
pub fn p99(latencies: &mut [Duration]) -> Duration {
    latencies.sort();
    latencies[latencies.len() * 99 / 100]
}

/// The fewest rounds a latency bound is tried in ([`until_a_round_passes`]).
pub const LATENCY_ROUNDS: usize = 3;
/// How long, from the first round's start, more rounds may begin after the first `LATENCY_ROUNDS` failed.
pub const LATENCY_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `round` until a result `passed`: at least `LATENCY_ROUNDS` times, and after that for as long as rounds begin
/// within `LATENCY_DEADLINE` of the first. Latency on a shared machine is noisy: a neighbour compiling can hold three
/// rounds in a row above a bound that a quiet machine meets tenfold, while a server that does hold a bystander up
/// fails every round. Every round must still assert everything else. `Err` with every round's result if none passed.
pub fn until_a_round_passes<T>(
    mut round: impl FnMut() -> T,
    passed: impl Fn(&T) -> bool,
) -> Result<(), Vec<T>> {
    let started = Instant::now();
    let mut results = Vec::new();
    while results.len() < LATENCY_ROUNDS || started.elapsed() < LATENCY_DEADLINE {
        let result = round();
        if passed(&result) {
            return Ok(());
        }
        results.push(result);
    }
    Err(results)
}
