//! Operating roomcast for real (issue #4), over real sockets: dead-peer detection, the handshake timeout, the
//! connection limit, backpressure, graceful shutdown of the real binary, leaks over many connections, the origin
//! check, the metrics endpoint, accept errors under a tiny file limit, and configuration from the environment.
//!
//! Every test is bounded in time. Tests that count the process's file descriptors or measure latency hold
//! `EXCLUSIVE` for writing; every other test holds it for reading, so nothing else in this process opens sockets
//! or competes for the CPU while they run.

mod common;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::attack::until_a_round_passes;
use common::{decode_server_frames, join, parse_http_response, Received, TestClient, TestServer};
use roomcast::chat::ChatConfig;
use roomcast::http::origin::OriginPolicy;
use roomcast::protocol::frame::OpCode;
use serde_json::json;

static EXCLUSIVE: RwLock<()> = RwLock::new(());

/// Taken by every test that neither counts file descriptors nor measures latency.
fn shared() -> RwLockReadGuard<'static, ()> {
    EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner())
}

/// Taken by tests that count this process's file descriptors or measure latency.
fn exclusive() -> RwLockWriteGuard<'static, ()> {
    EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner())
}

/// Polls `check` every 10 ms until it holds or `limit` passes; returns whether it held.
fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
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
// Prometheus text
// ---------------------------------------------------------------------------------------------------------------

/// One scrape: sample values keyed by `name` or `name{labels}` exactly as written.
#[derive(Debug, Default)]
struct Scrape {
    samples: HashMap<String, f64>,
}

impl Scrape {
    /// A sample's value; 0 when absent (counters with labels appear on first use).
    fn get(&self, key: &str) -> f64 {
        self.samples.get(key).copied().unwrap_or(0.0)
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses `k="v",k2="v2"`; returns false on anything else.
fn labels_are_valid(labels: &str) -> bool {
    labels.split(',').all(|pair| {
        pair.split_once('=').is_some_and(|(k, v)| {
            is_metric_name(k) && v.len() >= 2 && v.starts_with('"') && v.ends_with('"')
        })
    })
}

/// Parses the Prometheus text exposition format strictly enough for our output: every sample line is
/// `name{labels} value` with a float value, and every metric has `# HELP` and `# TYPE` before its samples.
fn parse_prometheus(text: &str) -> Result<Scrape, String> {
    let mut helped = std::collections::HashSet::new();
    let mut typed = HashMap::new();
    let mut scrape = Scrape::default();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            if !is_metric_name(name) || !helped.insert(name.to_owned()) {
                return Err(format!("bad or repeated HELP: {line}"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (Some(name), Some(kind), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("bad TYPE: {line}"));
            };
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(format!("unknown type: {line}"));
            }
            if typed.insert(name.to_owned(), kind.to_owned()).is_some() {
                return Err(format!("repeated TYPE: {line}"));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("no value: {line}"))?;
        let value: f64 = value
            .parse()
            .map_err(|_| format!("value is not a float: {line}"))?;
        let name = match series.split_once('{') {
            Some((name, rest)) => {
                let labels = rest
                    .strip_suffix('}')
                    .ok_or_else(|| format!("unclosed labels: {line}"))?;
                if !labels_are_valid(labels) {
                    return Err(format!("bad labels: {line}"));
                }
                name
            }
            None => series,
        };
        if !is_metric_name(name) {
            return Err(format!("bad metric name: {line}"));
        }
        if !helped.contains(name) || !typed.contains_key(name) {
            return Err(format!("sample before its HELP and TYPE: {line}"));
        }
        if typed[name] == "counter" && value < 0.0 {
            return Err(format!("negative counter: {line}"));
        }
        if scrape.samples.insert(series.to_owned(), value).is_some() {
            return Err(format!("repeated series: {line}"));
        }
    }
    Ok(scrape)
}

/// Scrapes `/metrics` at `addr`.
fn scrape(addr: SocketAddr) -> Scrape {
    let mut stream = TcpStream::connect(addr).expect("connect for /metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    let (status, body) = parse_http_response(&response);
    assert_eq!(status, 200, "{response}");
    assert!(
        response.contains("Content-Type: text/plain; version=0.0.4"),
        "{response}"
    );
    parse_prometheus(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

// ---------------------------------------------------------------------------------------------------------------
// Raw sockets
// ---------------------------------------------------------------------------------------------------------------

/// Reads from `stream` into `buf` until it ends or `limit` passes. Returns true if TCP ended (EOF or reset).
fn read_until_end(stream: &mut TcpStream, buf: &mut Vec<u8>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut chunk = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// Reads raw bytes until the server frames decoded from them satisfy `done`, or `limit` passes.
fn read_frames_until(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    limit: Duration,
    done: impl Fn(&[(OpCode, Vec<u8>)]) -> bool,
) -> Vec<(OpCode, Vec<u8>)> {
    let deadline = Instant::now() + limit;
    let mut chunk = [0u8; 65536];
    loop {
        let frames = decode_server_frames(buf);
        let left = deadline.saturating_duration_since(Instant::now());
        if done(&frames) || left.is_zero() {
            return frames;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => return decode_server_frames(buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return decode_server_frames(buf),
        }
    }
}

/// The close code of a Close frame's payload.
fn close_code(payload: &[u8]) -> Option<u16> {
    match payload {
        [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

/// A WebSocket upgrade request with an optional Origin.
fn upgrade_request(addr: SocketAddr, path: &str, origin: Option<&str>) -> String {
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
    )
}

/// Sends an upgrade request and returns the status of the response (0 if none).
fn upgrade_status(addr: SocketAddr, path: &str, origin: Option<&str>) -> u16 {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return 0;
    };
    if stream
        .write_all(upgrade_request(addr, path, origin).as_bytes())
        .is_err()
    {
        return 0;
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    parse_http_response(&String::from_utf8_lossy(&buf)).0
}

/// A room member whose frames are read by a thread of its own; it records when each chat message arrived.
struct Reader {
    thread: thread::JoinHandle<Vec<(usize, Instant)>>,
    /// Chat messages read so far.
    read: Arc<AtomicUsize>,
}

impl Reader {
    /// Reads `client` until a chat message whose content starts with "done", or 20 s pass.
    fn spawn(mut client: TestClient) -> Reader {
        let read = Arc::new(AtomicUsize::new(0));
        let counted = read.clone();
        let thread = thread::spawn(move || {
            let mut arrivals = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                match client.recv_timeout(Duration::from_millis(500)) {
                    Some(Received::Text(text)) => {
                        let now = Instant::now();
                        // Cheaper than parsing 4 KB of JSON per message on a busy machine.
                        if !text.contains("\"type\":\"chat\"") {
                            continue;
                        }
                        let Some((_, content)) = text.split_once("\"content\":\"") else {
                            continue;
                        };
                        if content.starts_with("done") {
                            break;
                        }
                        if let Some(index) = content.get(..5).and_then(|s| s.parse().ok()) {
                            arrivals.push((index, now));
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some(Received::Close(_) | Received::Eof) => break,
                    _ => {}
                }
            }
            arrivals
        });
        Reader { thread, read }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------------------------------------------

/// The real binary, started on 127.0.0.1:0; killed on drop if still running.
struct Binary {
    child: Child,
    addr: SocketAddr,
}

impl Binary {
    /// Starts `roomcast` with `args` (through `prefix`, e.g. `prlimit`, if given) and reads its address.
    fn start(prefix: &[&str], args: &[&str], envs: &[(&str, &str)]) -> Binary {
        let exe = env!("CARGO_BIN_EXE_roomcast");
        let mut command = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        command
            .args(args)
            .env_remove("RUST_LOG")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command.spawn().expect("spawn roomcast");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("roomcast listening on http://")
            .and_then(|rest| rest.strip_suffix('/'))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        Binary { child, addr }
    }

    /// Sends a signal with the shell's `kill` builtin (the tests do without a libc binding).
    fn signal(&self, name: &str) {
        let status = Command::new("sh")
            .args(["-c", &format!("kill -{name} {}", self.child.id())])
            .status()
            .expect("run sh");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits up to `limit` for the process to exit.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// CPU time (user + system) the process has used, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("read /proc/PID/stat");
        // Fields after the parenthesised command name start at field 3 (state); utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        field(11) + field(12)
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Dead peers and slowloris
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn silent_peer_is_pinged_then_dropped_within_the_idle_timeout() {
    let _guard = shared();
    let server = TestServer::with_config(|c| {
        c.ping_interval = Duration::from_millis(200);
        c.idle_timeout = Duration::from_millis(600);
    });
    let client = server.ws("/ws");
    let opened = Instant::now();
    // From here on the client never writes: a peer that vanished without a FIN.
    let mut stream = client.stream.try_clone().unwrap();
    let mut buf = Vec::new();
    let frames = read_frames_until(&mut stream, &mut buf, Duration::from_secs(3), |f| {
        !f.is_empty()
    });
    assert!(
        matches!(frames.first(), Some((OpCode::Ping, _))),
        "first frame: {frames:?}"
    );
    let pinged_after = opened.elapsed();
    assert!(
        pinged_after >= Duration::from_millis(150),
        "pinged too early: {pinged_after:?}"
    );
    assert!(
        read_until_end(&mut stream, &mut buf, Duration::from_secs(5)),
        "the silent peer was not dropped"
    );
    let dropped_after = opened.elapsed();
    assert!(
        dropped_after >= Duration::from_millis(550) && dropped_after < Duration::from_millis(2500),
        "dropped after {dropped_after:?}, idle timeout 600 ms"
    );
    let m = scrape(server.addr);
    assert_eq!(m.get("roomcast_idle_timeouts_total"), 1.0);
    assert_eq!(m.get("roomcast_closes_total{code=\"1006\"}"), 1.0);
    drop(client);
}

#[test]
fn peer_that_answers_pings_is_pinged_every_interval_and_kept() {
    let _guard = shared();
    let server = TestServer::with_config(|c| {
        c.ping_interval = Duration::from_millis(100);
        c.idle_timeout = Duration::from_millis(1000);
    });
    let mut client = server.ws("/echo");
    let start = Instant::now();
    let mut pings = 0;
    // Two idle timeouts long: the client answers each Ping (TestClient replies with a Pong) and sends nothing else.
    while start.elapsed() < Duration::from_secs(2) {
        match client.recv_timeout(Duration::from_millis(100)) {
            Some(Received::Ping(_)) => pings += 1,
            None => {}
            Some(other) => panic!("a live peer got {other:?}"),
        }
    }
    // A Ping per quiet interval (about 20 here), not one per idle timeout.
    assert!(pings >= 8, "only {pings} pings in 2 s at a 100 ms interval");
    client.send_text("still here");
    loop {
        match client.recv() {
            Received::Text(t) => break assert_eq!(t, "still here"),
            Received::Ping(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(scrape(server.addr).get("roomcast_idle_timeouts_total"), 0.0);
}

#[test]
fn unfinished_request_is_closed_after_the_handshake_timeout() {
    let _guard = shared();
    let server = TestServer::with_config(|c| c.handshake_timeout = Duration::from_millis(400));
    // Half a request, then nothing.
    let mut half = server.tcp();
    half.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").unwrap();
    // A slowloris: a byte every 50 ms, never finishing.
    let mut trickle = server.tcp();
    let start = Instant::now();
    let trickler = thread::spawn(move || {
        let bytes = b"GET /ws HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for byte in bytes {
            if trickle.write_all(&[*byte]).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let mut buf = Vec::new();
        read_until_end(&mut trickle, &mut buf, Duration::from_secs(5))
    });
    let mut buf = Vec::new();
    assert!(read_until_end(&mut half, &mut buf, Duration::from_secs(5)));
    let closed_after = start.elapsed();
    assert!(buf.is_empty(), "no response is owed: {buf:?}");
    assert!(
        closed_after >= Duration::from_millis(350) && closed_after < Duration::from_millis(3000),
        "closed after {closed_after:?}, handshake timeout 400 ms"
    );
    assert!(
        trickler.join().unwrap(),
        "the trickling client was not closed"
    );
    assert!(start.elapsed() < Duration::from_millis(4000));
    let m = scrape(server.addr);
    assert_eq!(
        m.get("roomcast_handshake_failures_total{reason=\"timeout\"}"),
        2.0
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn connection_limit_refuses_with_503_and_admits_again_after_a_close() {
    let _guard = shared();
    let server = TestServer::with_config(|c| c.max_connections = 5);
    let mut clients: Vec<TestClient> = (0..5).map(|_| server.ws("/ws")).collect();
    // The sixth: a request that waits for the server to speak first, and one that sends at once.
    let mut quiet = server.tcp();
    let mut buf = Vec::new();
    assert!(read_until_end(&mut quiet, &mut buf, Duration::from_secs(5)));
    let (status, body) = parse_http_response(&String::from_utf8_lossy(&buf));
    assert_eq!(status, 503, "{body}");
    assert_eq!(upgrade_status(server.addr, "/ws", None), 503);
    let (status, _) = server.get("/healthz");
    assert_eq!(status, 503);
    // One leaves, with a closing handshake: its slot is free once the server has seen it go.
    clients[0].close(1000);
    assert_eq!(clients[0].recv(), Received::Close(Some(1000)));
    clients.remove(0);
    assert!(
        wait_until(Duration::from_secs(5), || upgrade_status(
            server.addr,
            "/ws",
            None
        ) == 101),
        "no new connection admitted after one closed"
    );
    // The admitted probe has gone again; now there is room for a scrape.
    let mut m = Scrape::default();
    assert!(wait_until(Duration::from_secs(5), || {
        m = scrape_if_admitted(server.addr);
        !m.samples.is_empty()
    }));
    assert!(m.get("roomcast_handshake_failures_total{reason=\"overloaded\"}") >= 3.0);
}

/// Scrapes, or returns an empty scrape if the server is at its limit.
fn scrape_if_admitted(addr: SocketAddr) -> Scrape {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    read_until_end(&mut stream, &mut buf, Duration::from_secs(5));
    let response = String::from_utf8_lossy(&buf);
    match parse_http_response(&response) {
        (200, body) => parse_prometheus(&body).unwrap(),
        _ => Scrape::default(),
    }
}

#[test]
fn oversized_head_gets_431_and_message_limits_are_per_route() {
    let _guard = shared();
    let server = TestServer::with_config(|c| {
        c.max_header_bytes = 1024;
        c.chat_max_message_size = 1000;
        c.echo_max_message_size = 100_000;
    });
    let padding = "a".repeat(2000);
    let response = server
        .raw_exchange(format!("GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {padding}\r\n\r\n").as_bytes());
    assert_eq!(parse_http_response(&response).0, 431, "{response}");
    let big = "b".repeat(5000);
    let mut echo = server.ws("/echo");
    echo.send_text(&big);
    assert_eq!(echo.recv(), Received::Text(big.clone()));
    let mut chat = server.ws("/ws");
    chat.send_text(&big);
    // 10.4: over the route's limit, 1009.
    assert_eq!(chat.recv_close(), Some(1009));
    let m = scrape(server.addr);
    assert_eq!(
        m.get("roomcast_handshake_failures_total{reason=\"header_too_large\"}"),
        1.0
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Backpressure
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn client_that_never_reads_is_dropped_with_1008_while_a_room_mate_keeps_up() {
    // Alone, so that the latency measured is the server's and not that of the other tests sharing the CPU.
    let _guard = exclusive();
    // Latency on a shared machine is noisy: a scheduler stall of the server or of the mate's thread delays every
    // message in flight. Every round must evict the slow clients, lose nothing and stay within the memory bound;
    // one round (of at least three, more within a minute: `until_a_round_passes`) must meet the latency bound.
    let bound = Duration::from_millis(50);
    if let Err(p99s) = until_a_round_passes(slow_consumer_round, |p99| *p99 < bound) {
        panic!("the mate's p99 latency in each round: {p99s:?}");
    }
}

/// Three clients that never read, a mate that does and a sender, in one room; returns the mate's p99 latency.
fn slow_consumer_round() -> Duration {
    const BOUND: usize = 64 * 1024;
    const SLOW: usize = 3;
    const MATE_WINDOW: usize = 12;
    let server = TestServer::with_config(|c| {
        c.max_queued_bytes = BOUND;
        // A client that stays behind this long is closed: short, so that the test takes well under a second.
        c.slow_consumer_grace = Duration::from_millis(300);
        c.max_frames_per_sec = 0;
        c.max_bytes_per_sec = 0;
        c.chat = ChatConfig {
            rate_per_sec: 1e6,
            rate_burst: 1_000_000,
            rate_bytes_per_sec: 0.0,
            room_rate_bytes_per_sec: 0.0,
            history_len: 10,
            ..ChatConfig::default()
        };
    });
    let mut slow: Vec<TestClient> = (0..SLOW)
        .map(|i| {
            let mut c = server.ws("/ws");
            join(&mut c, &format!("slow{i}"), "room");
            c
        })
        .collect();
    let mut mate = server.ws("/ws");
    join(&mut mate, "mate", "room");
    let mate = Reader::spawn(mate);
    let mut sender = server.ws("/ws");
    join(&mut sender, "sender", "room");
    // The sender's own copies are read and thrown away by a thread, so only the slow clients stop reading.
    let mut sender_reads = sender.stream.try_clone().unwrap();
    let drain = thread::spawn(move || {
        let mut buf = Vec::new();
        read_until_end(&mut sender_reads, &mut buf, Duration::from_secs(30));
    });

    let filler = "x".repeat(4000);
    let mut sent_at: Vec<Instant> = Vec::new();
    let mut max_queued = 0.0f64;
    let mut evicted = false;
    // Loopback socket buffers absorb a few MB before the server's queue grows: send until all are evicted.
    while sent_at.len() < 2000 && !(evicted && sent_at.len() >= 200) {
        // The mate reads, but a busy machine can leave its thread waiting for long enough that it falls behind
        // itself, and is caught up from a 10-message history with a loss. So the sender never gets more than
        // `MATE_WINDOW` messages (some 48 KB, under the bound) ahead of what the mate has read: the mate's queue
        // cannot pass the bound, while the slow clients' queues still grow with every message.
        let mate_caught_up =
            || sent_at.len() - mate.read.load(Ordering::Relaxed) + 2 <= MATE_WINDOW;
        assert!(
            wait_until(Duration::from_secs(10), mate_caught_up),
            "the mate stayed {MATE_WINDOW} messages behind for 10 s: read {} of {}",
            mate.read.load(Ordering::Relaxed),
            sent_at.len()
        );
        // About 2 messages (8 KB) a millisecond: a busy room, not a benchmark of a debug build on a busy machine.
        for _ in 0..2 {
            let content = format!("{:05} {}", sent_at.len(), &filler[..3990]);
            sent_at.push(Instant::now());
            sender.send_json(&json!({"type": "chat", "content": content}));
        }
        thread::sleep(Duration::from_millis(1));
        if sent_at.len() % 50 == 0 {
            let m = scrape(server.addr);
            max_queued = max_queued.max(m.get("roomcast_queued_bytes"));
            evicted = m.get("roomcast_slow_consumers_dropped_total") >= SLOW as f64;
        }
    }
    sender.send_json(&json!({"type": "chat", "content": "done"}));
    let arrivals = mate.thread.join().expect("mate reader");
    assert!(
        evicted,
        "slow clients not evicted after {} messages",
        sent_at.len()
    );
    assert_eq!(arrivals.len(), sent_at.len(), "the mate missed messages");
    let mut latencies: Vec<Duration> = arrivals
        .iter()
        .map(|(i, at)| at.saturating_duration_since(sent_at[*i]))
        .collect();
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    let max = latencies[latencies.len() - 1];
    eprintln!(
        "slow consumer: {} messages, mate p50 {:?} p99 {p99:?} max {max:?}, queued bytes peak {max_queued}",
        sent_at.len(),
        latencies[latencies.len() / 2]
    );
    // Memory stays bounded, however many are slow: a queue over the bound is cut at the end of the loop turn, and
    // one turn reads at most 1 MiB from the sender (a scrape may be answered before that turn's flush).
    assert!(
        max_queued <= ((SLOW + 2) * (BOUND + 1024 * 1024)) as f64,
        "queued bytes peaked at {max_queued}"
    );
    // Each slow client, reading at last, finds the Close 1008 after what it was sent, or TCP already closed.
    for client in &mut slow {
        let ending = loop {
            match client.recv_timeout(Duration::from_secs(5)) {
                Some(Received::Close(code)) => {
                    assert_eq!(
                        client.recv_timeout(Duration::from_secs(5)),
                        Some(Received::Eof)
                    );
                    break Received::Close(code);
                }
                Some(Received::Text(_) | Received::Ping(_)) => {}
                other => break other.unwrap_or(Received::Binary(Vec::new())),
            }
        };
        assert!(
            matches!(ending, Received::Close(Some(1008)) | Received::Eof),
            "a slow client's stream ended with {ending:?}"
        );
    }
    let m = scrape(server.addr);
    assert_eq!(m.get("roomcast_slow_consumers_dropped_total"), SLOW as f64);
    sender.stream.shutdown(std::net::Shutdown::Both).unwrap();
    drain.join().unwrap();
    assert!(wait_until(Duration::from_secs(5), || scrape(server.addr)
        .get("roomcast_closes_total{code=\"1008\"}")
        == SLOW as f64));
    p99
}

#[test]
fn echo_stops_reading_a_client_over_its_queue_bound_and_resumes_when_it_reads() {
    let _guard = shared();
    const BOUND: usize = 64 * 1024;
    let server = TestServer::with_config(|c| {
        c.max_queued_bytes = BOUND;
        c.max_bytes_per_sec = 0;
    });
    let mut client = server.ws("/echo");
    let message = vec![7u8; 16 * 1024];
    // Write until the socket stays full for 300 ms: the server has stopped reading.
    client
        .stream
        .set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut sent = 0usize;
    let mut raw = client.stream.try_clone().unwrap();
    let frame = common::raw_frame(0x82, &message);
    while sent < 4000 {
        match raw.write_all(&frame) {
            Ok(()) => sent += 1,
            Err(_) => break,
        }
    }
    assert!(sent < 4000, "the server never stopped reading");
    let m = scrape(server.addr);
    let queued = m.get("roomcast_queued_bytes");
    assert!(
        queued <= (BOUND + 128 * 1024) as f64,
        "queued {queued} bytes for one client"
    );
    // A write that timed out may have left half a frame; the connection is still usable for reading everything.
    let mut echoed = 0usize;
    let deadline = Instant::now() + Duration::from_secs(10);
    while echoed + 1 < sent && Instant::now() < deadline {
        match client.recv_timeout(Duration::from_secs(2)) {
            Some(Received::Binary(b)) => {
                assert_eq!(b, message);
                echoed += 1;
            }
            other => panic!("after {echoed} echoes: {other:?}"),
        }
    }
    assert!(echoed + 1 >= sent, "{echoed} of {sent} echoed");
}

// ---------------------------------------------------------------------------------------------------------------
// Graceful shutdown of the real binary
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn sigterm_sends_every_client_1001_and_exits_0_within_the_timeout() {
    let _guard = shared();
    let mut server = Binary::start(
        &[],
        &["--addr", "127.0.0.1:0", "--shutdown-timeout", "5"],
        &[],
    );
    let mut clients: Vec<TestClient> = Vec::new();
    for i in 0..3 {
        let mut chat = TestClient::connect(server.addr, "/ws").unwrap();
        join(&mut chat, &format!("user{i}"), "lobby");
        clients.push(chat);
        clients.push(TestClient::connect(server.addr, "/echo").unwrap());
    }
    let start = Instant::now();
    server.signal("TERM");
    for client in &mut clients {
        // Each answers the Close (TestClient replies on reading it) and keeps its socket open.
        assert_eq!(client.recv_close(), Some(1001));
    }
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("still running after the shutdown timeout");
    let took = start.elapsed();
    eprintln!("graceful shutdown with 6 clients took {took:?}");
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(3),
        "clients answered at once, yet the exit took {took:?}"
    );
    for client in &mut clients {
        assert_eq!(client.recv(), Received::Eof);
    }
}

#[test]
fn sigterm_with_clients_that_never_answer_exits_0_at_the_shutdown_timeout() {
    let _guard = shared();
    let mut server = Binary::start(
        &[],
        &["--addr", "127.0.0.1:0", "--shutdown-timeout", "1"],
        &[],
    );
    let client = TestClient::connect(server.addr, "/ws").unwrap();
    let mut raw = client.stream.try_clone().unwrap();
    let start = Instant::now();
    server.signal("INT");
    let mut buf = Vec::new();
    let frames = read_frames_until(&mut raw, &mut buf, Duration::from_secs(5), |f| {
        f.iter().any(|(op, _)| *op == OpCode::Close)
    });
    assert!(
        frames
            .iter()
            .any(|(op, p)| *op == OpCode::Close && close_code(p) == Some(1001)),
        "{frames:?}"
    );
    // Draining the clients it has, the server no longer listens: a newcomer is refused at once, not queued.
    let newcomer = std::net::TcpStream::connect(server.addr).map_err(|e| e.kind());
    assert_eq!(
        newcomer.err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "connect during the drain"
    );
    let status = server.wait_exit(Duration::from_secs(5)).expect("exit");
    let took = start.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "exit after {took:?} with a 1 s shutdown timeout"
    );
    drop(client);
}

#[test]
fn second_signal_exits_at_once_even_if_clients_do_not_answer() {
    let _guard = shared();
    let mut server = Binary::start(
        &[],
        &["--addr", "127.0.0.1:0", "--shutdown-timeout", "30"],
        &[],
    );
    let clients: Vec<TestClient> = (0..2)
        .map(|_| TestClient::connect(server.addr, "/echo").unwrap())
        .collect();
    server.signal("TERM");
    // Wait until the first signal has been acted on (signals of one kind may coalesce), never answering.
    let mut raw = clients[0].stream.try_clone().unwrap();
    let mut buf = Vec::new();
    let frames = read_frames_until(&mut raw, &mut buf, Duration::from_secs(5), |f| {
        f.iter().any(|(op, _)| *op == OpCode::Close)
    });
    assert!(frames.iter().any(|(op, _)| *op == OpCode::Close));
    let start = Instant::now();
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(3))
        .expect("the second signal did not end the process");
    eprintln!("second signal: exit {status:?} after {:?}", start.elapsed());
    assert!(!status.success());
    drop(clients);
}

// ---------------------------------------------------------------------------------------------------------------
// Leaks
// ---------------------------------------------------------------------------------------------------------------

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[test]
fn connect_disconnect_cycles_leak_no_connections_or_descriptors() {
    let _guard = exclusive();
    let server = TestServer::start();
    assert_eq!(server.get("/healthz").0, 200);
    thread::sleep(Duration::from_millis(50));
    let before = open_fds();
    let start = Instant::now();
    for i in 0..2000 {
        match i % 3 {
            0 => assert_eq!(server.get("/healthz"), (200, "ok\n".to_owned())),
            1 => {
                let mut client = server.ws(if i % 2 == 0 { "/ws" } else { "/echo" });
                client.close(1000);
                assert_eq!(client.recv(), Received::Close(Some(1000)));
            }
            _ => drop(server.ws("/ws")),
        }
    }
    let cycles = start.elapsed();
    let mut open = f64::NAN;
    let settled = wait_until(Duration::from_secs(5), || {
        open = scrape(server.addr).get("roomcast_open_connections");
        // The scrape's own connection is open while the gauge is read.
        open == 1.0 && open_fds() <= before + 2
    });
    let after = open_fds();
    eprintln!(
        "2000 cycles in {cycles:?}; fds before {before}, after {after}; open connections {open}"
    );
    assert!(
        settled,
        "fds before {before}, after {after}; open connections {open}"
    );
    let m = scrape(server.addr);
    assert!(m.get("roomcast_accepted_total") > 2000.0);
    assert_eq!(
        m.get("roomcast_upgrades_total{endpoint=\"chat\"}")
            + m.get("roomcast_upgrades_total{endpoint=\"echo\"}"),
        1333.0
    );
    assert_eq!(m.get("roomcast_closes_total{code=\"1000\"}"), 667.0);
    assert_eq!(m.get("roomcast_closes_total{code=\"1006\"}"), 666.0);
    assert_eq!(m.get("roomcast_open_websockets"), 0.0);
    assert_eq!(m.get("roomcast_room_members"), 0.0);
    assert_eq!(m.get("roomcast_queued_bytes"), 0.0);
}

// ---------------------------------------------------------------------------------------------------------------
// Origin
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn cross_origin_browser_request_is_refused_with_403() {
    let _guard = shared();
    let server = TestServer::start();
    let addr = server.addr;
    let same = format!("http://{addr}");
    assert_eq!(
        upgrade_status(addr, "/ws", Some("https://evil.example")),
        403
    );
    assert_eq!(upgrade_status(addr, "/echo", Some("null")), 403);
    assert_eq!(upgrade_status(addr, "/ws", Some(&same)), 101);
    assert_eq!(upgrade_status(addr, "/ws", None), 101);
    let m = scrape(addr);
    assert_eq!(
        m.get("roomcast_handshake_failures_total{reason=\"forbidden_origin\"}"),
        2.0
    );

    let listed = TestServer::with_config(|c| {
        c.origins = OriginPolicy {
            allowed: vec!["https://chat.example.com".into()],
        };
    });
    let addr = listed.addr;
    assert_eq!(
        upgrade_status(addr, "/ws", Some("https://chat.example.com")),
        101
    );
    assert_eq!(
        upgrade_status(addr, "/ws", Some(&format!("http://{addr}"))),
        101
    );
    assert_eq!(
        upgrade_status(addr, "/ws", Some("https://evil.example")),
        403
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn chat_refusals_are_counted_by_code() {
    let _guard = shared();
    let server = TestServer::start();
    let before = scrape(server.addr);
    for code in [
        "name_taken",
        "not_joined",
        "invalid_json",
        "rate_limited",
        "room_full",
    ] {
        let series = format!("roomcast_chat_refusals_total{{code=\"{code}\"}}");
        assert!(
            before.samples.contains_key(&series),
            "{series} is listed before it moves"
        );
    }
    let mut alice = server.ws("/ws");
    join(&mut alice, "alice", "lobby");
    let mut impostor = server.ws("/ws");
    impostor.send_json(&json!({"type": "join", "userId": "alice", "room": "lobby", "v": 2}));
    assert_eq!(impostor.recv_type("error")["code"], "name_taken");
    // An error goes to a client that joined with v2 as an `error` (to others, as a `system` line).
    alice.send_text("{not json");
    assert_eq!(alice.recv_type("error")["code"], "invalid_json");
    let after = scrape(server.addr);
    for code in ["name_taken", "invalid_json"] {
        let series = format!("roomcast_chat_refusals_total{{code=\"{code}\"}}");
        assert_eq!(after.get(&series) - before.get(&series), 1.0, "{series}");
    }
}

#[test]
fn metrics_parse_as_prometheus_text_and_every_counter_moves() {
    let _guard = shared();
    let server = TestServer::start();
    let addr = server.addr;
    assert_eq!(server.get("/healthz"), (200, "ok\n".to_owned()));
    let m0 = scrape(addr);
    for name in [
        "roomcast_open_connections",
        "roomcast_open_websockets",
        "roomcast_rooms",
        "roomcast_room_members",
        "roomcast_queued_bytes",
        "roomcast_accepted_total",
        "roomcast_messages_in_total",
        "roomcast_messages_out_total",
        "roomcast_bytes_in_total",
        "roomcast_bytes_out_total",
        "roomcast_slow_consumers_dropped_total",
        "roomcast_idle_timeouts_total",
        "roomcast_accept_errors_total",
        "roomcast_upgrades_total{endpoint=\"chat\"}",
        "roomcast_handshake_failures_total{reason=\"not_found\"}",
        "roomcast_handshake_failures_total{reason=\"timeout\"}",
    ] {
        assert!(m0.samples.contains_key(name), "{name} missing");
    }
    // The healthz request and this scrape.
    assert_eq!(m0.get("roomcast_accepted_total"), 2.0);
    assert_eq!(m0.get("roomcast_open_connections"), 1.0);

    assert_eq!(server.get("/nope").0, 404);
    assert_eq!(
        server
            .raw_exchange(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
            .split(' ')
            .nth(1),
        Some("400")
    );
    let mut alice = server.ws("/ws");
    let mut bob = server.ws("/ws");
    join(&mut alice, "alice", "lobby");
    join(&mut bob, "bob", "lobby");
    let mut echo = server.ws("/echo");
    echo.send_text("hello");
    assert_eq!(echo.recv(), Received::Text("hello".into()));
    alice.send_json(&json!({"type": "chat", "content": "hi"}));
    assert_eq!(bob.recv_type("chat")["content"], "hi");
    assert_eq!(alice.recv_type("chat")["content"], "hi");

    let m1 = scrape(addr);
    let delta = |key: &str| m1.get(key) - m0.get(key);
    // /nope, the bad upgrade, three websockets, and the scrape.
    assert_eq!(delta("roomcast_accepted_total"), 6.0);
    assert_eq!(m1.get("roomcast_open_connections"), 4.0);
    assert_eq!(m1.get("roomcast_open_websockets"), 3.0);
    assert_eq!(delta("roomcast_upgrades_total{endpoint=\"chat\"}"), 2.0);
    assert_eq!(delta("roomcast_upgrades_total{endpoint=\"echo\"}"), 1.0);
    assert_eq!(
        delta("roomcast_handshake_failures_total{reason=\"not_found\"}"),
        1.0
    );
    assert_eq!(
        delta("roomcast_handshake_failures_total{reason=\"missing_upgrade\"}"),
        1.0
    );
    assert_eq!(m1.get("roomcast_rooms"), 1.0);
    assert_eq!(m1.get("roomcast_room_members"), 2.0);
    // In: two joins, one chat, one echo. Out: the echo, and the chat to both members, and whatever the joins
    // were answered with.
    assert_eq!(delta("roomcast_messages_in_total"), 4.0);
    assert!(delta("roomcast_messages_out_total") >= 3.0 + 2.0);
    assert!(delta("roomcast_bytes_in_total") > 0.0);
    assert!(delta("roomcast_bytes_out_total") > 0.0);
    assert_eq!(m1.get("roomcast_queued_bytes"), 0.0);

    alice.close(1000);
    assert_eq!(alice.recv_close(), Some(1000));
    echo.close(1001);
    assert_eq!(echo.recv_close(), Some(1001));
    drop(alice);
    drop(echo);
    // bob leaves without a closing handshake.
    drop(bob);
    let mut m2 = Scrape::default();
    assert!(wait_until(Duration::from_secs(5), || {
        m2 = scrape(addr);
        m2.get("roomcast_open_connections") == 1.0
    }));
    assert_eq!(m2.get("roomcast_closes_total{code=\"1000\"}"), 1.0);
    assert_eq!(m2.get("roomcast_closes_total{code=\"1001\"}"), 1.0);
    assert_eq!(m2.get("roomcast_closes_total{code=\"1006\"}"), 1.0);
    assert_eq!(m2.get("roomcast_rooms"), 0.0);
    assert_eq!(m2.get("roomcast_room_members"), 0.0);
    assert_eq!(m2.get("roomcast_open_websockets"), 0.0);
    assert!(m2.get("roomcast_bytes_out_total") > m1.get("roomcast_bytes_out_total"));

    // A binary frame on the chat is refused with 1003 (7.4.1); the client never answers and then goes away: the
    // close is counted under the code the server sent.
    let mut rude = server.ws("/ws");
    let mut raw = rude.stream.try_clone().unwrap();
    rude.send_binary(b"\x00");
    let mut buf = Vec::new();
    let frames = read_frames_until(&mut raw, &mut buf, Duration::from_secs(5), |f| {
        f.iter().any(|(op, _)| *op == OpCode::Close)
    });
    assert!(frames
        .iter()
        .any(|(op, p)| *op == OpCode::Close && close_code(p) == Some(1003)));
    drop(raw);
    drop(rude);
    assert!(wait_until(Duration::from_secs(5), || scrape(addr)
        .get("roomcast_closes_total{code=\"1003\"}")
        == 1.0));
}

#[test]
fn a_peer_that_half_closes_still_gets_its_answer() {
    let _guard = shared();
    let server = TestServer::start();
    for _ in 0..20 {
        let mut stream = server.tcp();
        write!(stream, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut buf = Vec::new();
        assert!(read_until_end(
            &mut stream,
            &mut buf,
            Duration::from_secs(5)
        ));
        let response = String::from_utf8_lossy(&buf);
        assert_eq!(parse_http_response(&response), (200, "ok\n".to_owned()));
    }
    for _ in 0..20 {
        let mut client = server.ws("/echo");
        client.close(1000);
        client.stream.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(client.recv(), Received::Close(Some(1000)));
        assert_eq!(client.recv(), Received::Eof);
    }
    assert!(wait_until(Duration::from_secs(5), || {
        let m = scrape(server.addr);
        m.get("roomcast_open_connections") == 1.0
            && m.get("roomcast_closes_total{code=\"1000\"}") == 20.0
    }));
}

#[test]
fn healthz_answers_ok() {
    let _guard = shared();
    let server = TestServer::start();
    let response = server
        .raw_exchange(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).as_bytes());
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\nok\n"), "{response}");
}

#[test]
fn the_prometheus_parser_rejects_what_it_should() {
    assert!(parse_prometheus("# HELP a x\n# TYPE a counter\na 1\n").is_ok());
    assert!(parse_prometheus("a 1\n").is_err());
    assert!(parse_prometheus("# HELP a x\n# TYPE a counter\na one\n").is_err());
    assert!(parse_prometheus("# HELP a x\n# TYPE a counter\na{b=c} 1\n").is_err());
    assert!(parse_prometheus("# HELP a x\n# TYPE a gauge\na{b=\"c\"} 1.5\n").is_ok());
}

// ---------------------------------------------------------------------------------------------------------------
// Accept errors
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn running_out_of_descriptors_does_not_spin_and_the_server_recovers() {
    let _guard = shared();
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("prlimit (util-linux) not found: skipping");
        return;
    }
    // 40 descriptors, and a connection limit that does not stop accepting before the process runs out of them.
    let server = Binary::start(
        &["prlimit", "--nofile=40:40", "--"],
        &[
            "--addr",
            "127.0.0.1:0",
            "--max-connections",
            "1000",
            "--handshake-timeout",
            "60",
        ],
        &[],
    );
    let mut held: Vec<TcpStream> = Vec::new();
    for _ in 0..60 {
        held.push(TcpStream::connect(server.addr).expect("connect (the kernel completes it)"));
    }
    // Give the server time to accept what it can and hit EMFILE.
    thread::sleep(Duration::from_millis(300));
    let before = server.cpu_ticks();
    let probe_start = Instant::now();
    thread::sleep(Duration::from_secs(1));
    let used = server.cpu_ticks() - before;
    eprintln!(
        "out of descriptors: {used} ticks of CPU in {:?}",
        probe_start.elapsed()
    );
    // A spinning loop would burn about 100 ticks (one CPU-second); backing off costs next to nothing.
    assert!(
        used <= 15,
        "the server used {used} ticks in 1 s while out of descriptors"
    );
    // A request now waits in the backlog; it is answered once descriptors are free again.
    drop(held);
    let mut ok = false;
    assert!(
        wait_until(Duration::from_secs(5), || {
            ok = TcpStream::connect(server.addr)
                .ok()
                .and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                    write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
                    let mut buf = String::new();
                    s.read_to_string(&mut buf).ok()?;
                    Some(buf.starts_with("HTTP/1.1 200"))
                })
                .unwrap_or(false);
            ok
        }),
        "the server did not recover after clients closed"
    );
    assert!(scrape(server.addr).get("roomcast_accept_errors_total") >= 1.0);
}

// ---------------------------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn environment_variables_configure_the_binary() {
    let _guard = shared();
    let server = Binary::start(
        &[],
        &[],
        &[
            ("ROOMCAST_ADDR", "127.0.0.1:0"),
            ("ROOMCAST_HANDSHAKE_TIMEOUT", "0.3"),
            (
                "ROOMCAST_ALLOWED_ORIGINS",
                "https://a.example,https://b.example",
            ),
            ("ROOMCAST_MAX_CONNECTIONS", "3"),
        ],
    );
    let addr = server.addr;
    assert_ne!(addr.port(), 8080);
    assert_eq!(upgrade_status(addr, "/ws", Some("https://a.example")), 101);
    assert_eq!(upgrade_status(addr, "/ws", Some("https://b.example")), 101);
    assert_eq!(upgrade_status(addr, "/ws", Some("https://c.example")), 403);
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    assert!(read_until_end(&mut half, &mut buf, Duration::from_secs(5)));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let held: Vec<TestClient> = (0..3)
        .map(|_| TestClient::connect(addr, "/echo").unwrap())
        .collect();
    assert_eq!(upgrade_status(addr, "/echo", None), 503);
    drop(held);
}

#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    let _guard = shared();
    let output = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .arg("--help")
        .env_clear()
        .output()
        .expect("run --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    let flags = [
        ("--addr", "ROOMCAST_ADDR"),
        ("--max-message-size", "ROOMCAST_MAX_MESSAGE_SIZE"),
        ("--echo-max-message-size", "ROOMCAST_ECHO_MAX_MESSAGE_SIZE"),
        ("--max-header-bytes", "ROOMCAST_MAX_HEADER_BYTES"),
        ("--max-connections", "ROOMCAST_MAX_CONNECTIONS"),
        ("--max-queued-bytes", "ROOMCAST_MAX_QUEUED_BYTES"),
        ("--handshake-timeout", "ROOMCAST_HANDSHAKE_TIMEOUT"),
        ("--ping-interval", "ROOMCAST_PING_INTERVAL"),
        ("--idle-timeout", "ROOMCAST_IDLE_TIMEOUT"),
        ("--close-timeout", "ROOMCAST_CLOSE_TIMEOUT"),
        ("--message-timeout", "ROOMCAST_MESSAGE_TIMEOUT"),
        ("--slow-consumer-grace", "ROOMCAST_SLOW_CONSUMER_GRACE"),
        ("--max-fragments", "ROOMCAST_MAX_FRAGMENTS"),
        ("--max-frames-per-sec", "ROOMCAST_MAX_FRAMES_PER_SEC"),
        ("--max-bytes-per-sec", "ROOMCAST_MAX_BYTES_PER_SEC"),
        ("--max-incoming-bytes", "ROOMCAST_MAX_INCOMING_BYTES"),
        (
            "--max-connections-per-ip",
            "ROOMCAST_MAX_CONNECTIONS_PER_IP",
        ),
        ("--handshake-rate-per-ip", "ROOMCAST_HANDSHAKE_RATE_PER_IP"),
        (
            "--handshake-burst-per-ip",
            "ROOMCAST_HANDSHAKE_BURST_PER_IP",
        ),
        ("--trusted-proxy", "ROOMCAST_TRUSTED_PROXIES"),
        ("--shutdown-timeout", "ROOMCAST_SHUTDOWN_TIMEOUT"),
        ("--allowed-origin", "ROOMCAST_ALLOWED_ORIGINS"),
        ("--deflate", "ROOMCAST_DEFLATE"),
        ("--history", "ROOMCAST_HISTORY"),
        ("--max-content", "ROOMCAST_MAX_CONTENT"),
        ("--rate", "ROOMCAST_RATE"),
        ("--burst", "ROOMCAST_BURST"),
        ("--rate-bytes", "ROOMCAST_RATE_BYTES"),
        ("--burst-bytes", "ROOMCAST_BURST_BYTES"),
        ("--room-rate-bytes", "ROOMCAST_ROOM_RATE_BYTES"),
        ("--room-burst-bytes", "ROOMCAST_ROOM_BURST_BYTES"),
        ("--join-rate", "ROOMCAST_JOIN_RATE"),
        ("--join-burst", "ROOMCAST_JOIN_BURST"),
        ("--name-grace", "ROOMCAST_NAME_GRACE"),
        ("--max-room-members", "ROOMCAST_MAX_ROOM_MEMBERS"),
        ("--max-history-bytes", "ROOMCAST_MAX_HISTORY_BYTES"),
        ("--max-replay-bytes", "ROOMCAST_MAX_REPLAY_BYTES"),
        ("--auth-secret", "ROOMCAST_AUTH_SECRET"),
        ("--auth-public-key", "ROOMCAST_AUTH_PUBLIC_KEY"),
        ("--auth-leeway", "ROOMCAST_AUTH_LEEWAY"),
        ("--token-checks", "ROOMCAST_TOKEN_CHECKS"),
        ("--token-check-queue", "ROOMCAST_TOKEN_CHECK_QUEUE"),
        ("--token-cache", "ROOMCAST_TOKEN_CACHE"),
        ("--api-key", "ROOMCAST_API_KEY"),
        ("--redis", "ROOMCAST_REDIS"),
        ("--node-id", "ROOMCAST_NODE_ID"),
        ("--reuse-port", "ROOMCAST_REUSE_PORT"),
        ("--node-heartbeat", "ROOMCAST_NODE_HEARTBEAT"),
        ("--name-renewal-batch", "ROOMCAST_NAME_RENEWAL_BATCH"),
    ];
    // Each option's entry runs from its `--name` line to the next option; pair the name with the env var in it.
    let mut listed: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('-') {
            let name = trimmed
                .split_whitespace()
                .find(|w| w.starts_with("--"))
                .unwrap_or_default()
                .trim_end_matches(',');
            listed.push((name.to_owned(), String::new()));
        } else if let (Some(entry), Some((_, rest))) =
            (listed.last_mut(), line.split_once("[env: "))
        {
            // `[env: NAME=value]`, or `[env: NAME]` for the secrets, whose values help never shows.
            entry.1 = rest.split(['=', ']']).next().unwrap_or_default().to_owned();
        }
    }
    listed.retain(|(name, _)| name != "--help" && name != "--version");
    listed.sort();
    let mut expected: Vec<(String, String)> = flags
        .iter()
        .map(|(flag, env)| (flag.to_string(), env.to_string()))
        .collect();
    expected.sort();
    assert_eq!(listed, expected, "{help}");
}

#[test]
fn a_ping_interval_not_shorter_than_the_idle_timeout_is_refused() {
    let _guard = shared();
    let output = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["--addr", "127.0.0.1:0", "--idle-timeout", "10"])
        .env_remove("ROOMCAST_PING_INTERVAL")
        .output()
        .expect("run roomcast");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--ping-interval") && stderr.contains("--idle-timeout"),
        "{stderr}"
    );
}
