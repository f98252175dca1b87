//! What a join with a token costs the event loop, with the signature checked in the loop (`--token-checks inline`)
//! and on the verifier thread (`--token-checks thread`), for HS256, ES256 and RS256, beside open mode.
//!
//! A plain `harness = false` bench: `cargo bench --bench token_join_loop`. Each run starts a fresh in-process server
//! (so its cache of checked tokens is empty and every token is checked) on a thread named `roomcast-loop`, and
//! talks to it over loopback with `tungstenite`. Tokens are minted before timing, each for its own `sub`.
//!
//! - *sequential*: `JOINS` connections join one after another, each waiting for its `joined`. The loop's CPU time
//!   per join is read from `/proc/self/task/<tid>/schedstat` (nanoseconds on the CPU) of the loop thread, and of the
//!   verifier thread when there is one; the latency is the median time from sending `join` to reading `joined`.
//! - *burst*: `JOINS` connections send their `join` at once; then a bystander, already in another room, sends a
//!   `ping`. Its round trip is how long the loop kept everyone else waiting; the burst's time is until the last
//!   `joined` is read; the threads' CPU per join is read as above, over the whole burst (where one wake-up of the
//!   loop carries many verdicts).
//!
//! Every figure is the median over `RUNS` runs. Run it alone on the machine (`flock /work/bench.lock ...` here).

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use roomcast::auth::Verifier;
use roomcast::config::TokenChecks;
use roomcast::{Config, Server, ShutdownHandle};
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

const RUNS: usize = 5;
const JOINS: usize = 400;
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-bench";
const EC_PRIVATE: &str = include_str!("../tests/keys/ec_private.pem");
const EC_PUBLIC: &str = include_str!("../tests/keys/ec_public.pem");
const RSA_PRIVATE: &str = include_str!("../tests/keys/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("../tests/keys/rsa_public.pem");
const LOOP_THREAD: &str = "roomcast-loop";
const VERIFY_THREAD: &str = "roomcast-verify";

type Client = WebSocket<TcpStream>;

/// One server setup to measure: its label, its verifier (none in open mode), where it checks, the joiners' tokens.
type Setup<'a> = (
    &'a str,
    Option<&'a Verifier>,
    TokenChecks,
    Option<&'a [String]>,
);

/// A server on its own named thread, stopped when dropped.
struct Running {
    addr: SocketAddr,
    handle: ShutdownHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(verifier: Option<&Verifier>, checks: TokenChecks) -> Running {
        let defaults = Config::default();
        let config = Config {
            addr: "127.0.0.1:0".parse().expect("an address"),
            addresses: defaults.addresses.clone().unlimited(),
            auth: verifier.cloned(),
            token_checks: checks,
            token_check_queue: 4 * JOINS,
            shutdown_timeout: Duration::from_millis(100),
            ..defaults
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(LOOP_THREAD.to_owned())
            .spawn(move || {
                let mut server = Server::bind(config).expect("bind");
                ready_tx
                    .send((server.local_addr(), server.shutdown_handle()))
                    .expect("the bench waits");
                server.run().expect("the loop runs");
            })
            .expect("a thread");
        let (addr, handle) = ready_rx.recv().expect("the server started");
        Running {
            addr,
            handle,
            thread: Some(thread),
        }
    }

    fn connect(&self) -> Client {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (client, _) =
            tungstenite::client(format!("ws://{}/ws", self.addr), stream).expect("the handshake");
        client
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Nanoseconds the newest thread of this process named `name` has spent on the CPU, if there is one.
fn thread_cpu_ns(name: &str) -> Option<u64> {
    let mut newest: Option<(u64, u64)> = None;
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let tid: u64 = entry.file_name().to_string_lossy().parse().ok()?;
        let stat = std::fs::read_to_string(entry.path().join("schedstat")).ok()?;
        let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
        if newest.is_none_or(|(t, _)| tid > t) {
            newest = Some((tid, ns));
        }
    }
    newest.map(|(_, ns)| ns)
}

/// How many rooms the joiners are spread over: `TOKEN_JOIN_ROOMS`, 20 unless set. With as many rooms as joiners,
/// nobody is told of anyone else's arrival, which takes the presence fan-out out of the figures.
fn rooms() -> usize {
    std::env::var("TOKEN_JOIN_ROOMS")
        .ok()
        .and_then(|rooms| rooms.parse().ok())
        .filter(|&rooms| rooms > 0)
        .unwrap_or(20)
}

/// The `i`-th joiner's name and room.
fn who(i: usize) -> (String, String) {
    (format!("user{i}"), format!("room{}", i % rooms()))
}

/// One token per joiner (and one more for the bystander, last), signed with `key` by `algorithm`.
fn tokens(algorithm: Algorithm, key: &EncodingKey) -> Vec<String> {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 3600;
    (0..=JOINS)
        .map(|i| {
            let (user, room) = who(i);
            let claims = json!({"sub": user, "exp": exp, "rooms": [room, "side"]});
            encode(&Header::new(algorithm), &claims, key).expect("signing works")
        })
        .collect()
}

/// The `join` of joiner `i` into `room`, with its token when there are tokens.
fn join_frame(i: usize, room: &str, tokens: Option<&[String]>) -> String {
    let (user, _) = who(i);
    let mut frame = json!({"type": "join", "userId": user, "room": room, "v": 2});
    if let Some(tokens) = tokens {
        frame["token"] = json!(tokens[i]);
    }
    frame.to_string()
}

/// Reads until a message of `kind` arrives; panics on an error.
fn read_until(client: &mut Client, kind: &str) {
    loop {
        let Message::Text(text) = client.read().expect("read") else {
            continue;
        };
        let message: Value = serde_json::from_str(&text).expect("JSON");
        assert!(message["type"] != "error", "{message}");
        if message["type"] == kind {
            return;
        }
    }
}

fn median(mut figures: Vec<f64>) -> f64 {
    figures.sort_by(f64::total_cmp);
    figures[figures.len() / 2]
}

/// `JOINS` connections to `server`, each with the `join` it will send (with its token, if any).
fn joiners(server: &Running, tokens: Option<&[String]>) -> (Vec<Client>, Vec<String>) {
    let clients = (0..JOINS).map(|_| server.connect()).collect();
    let frames = (0..JOINS)
        .map(|i| join_frame(i, &who(i).1, tokens))
        .collect();
    (clients, frames)
}

/// The loop's and the verifier thread's CPU time when taken, to tell what the joins since cost each of them.
struct ThreadCpu {
    loop_ns: u64,
    verify_ns: u64,
}

impl ThreadCpu {
    fn now() -> ThreadCpu {
        ThreadCpu {
            loop_ns: thread_cpu_ns(LOOP_THREAD).unwrap_or(0),
            verify_ns: thread_cpu_ns(VERIFY_THREAD).unwrap_or(0),
        }
    }

    /// (loop, verifier thread) CPU µs per join since this mark, over `JOINS` joins; 0 for a thread that is not there.
    fn per_join_since(&self) -> (f64, f64) {
        let loop_ns = thread_cpu_ns(LOOP_THREAD).unwrap_or(0) - self.loop_ns;
        let verify_ns = thread_cpu_ns(VERIFY_THREAD).map_or(0, |ns| ns - self.verify_ns);
        let per_join = |ns: u64| ns as f64 / 1e3 / JOINS as f64;
        (per_join(loop_ns), per_join(verify_ns))
    }
}

/// One sequential run: (loop CPU µs per join, verifier thread CPU µs per join, median join latency µs).
fn sequential(
    verifier: Option<&Verifier>,
    checks: TokenChecks,
    tokens: Option<&[String]>,
) -> [f64; 3] {
    let server = Running::start(verifier, checks);
    let (mut clients, frames) = joiners(&server, tokens);
    let before = ThreadCpu::now();
    let mut latencies = Vec::with_capacity(JOINS);
    for (client, frame) in clients.iter_mut().zip(&frames) {
        let started = Instant::now();
        client.send(Message::text(frame.as_str())).expect("send");
        read_until(client, "joined");
        latencies.push(started.elapsed().as_secs_f64() * 1e6);
    }
    let (loop_us, verify_us) = before.per_join_since();
    [loop_us, verify_us, median(latencies)]
}

/// One burst run: (the bystander's round trip in µs, the whole burst in ms, loop CPU µs per join, verifier thread CPU
/// µs per join).
fn burst(verifier: Option<&Verifier>, checks: TokenChecks, tokens: Option<&[String]>) -> [f64; 4] {
    let server = Running::start(verifier, checks);
    let mut bystander = server.connect();
    bystander
        .send(Message::text(join_frame(JOINS, "side", tokens)))
        .expect("send");
    read_until(&mut bystander, "joined");
    let (mut clients, frames) = joiners(&server, tokens);
    let before = ThreadCpu::now();
    let started = Instant::now();
    for (client, frame) in clients.iter_mut().zip(&frames) {
        client.send(Message::text(frame.as_str())).expect("send");
    }
    let pinged = Instant::now();
    bystander
        .send(Message::text(r#"{"type":"ping"}"#))
        .expect("send");
    read_until(&mut bystander, "pong");
    let round_trip = pinged.elapsed().as_secs_f64() * 1e6;
    for client in &mut clients {
        read_until(client, "joined");
    }
    let burst_ms = started.elapsed().as_secs_f64() * 1e3;
    let (loop_us, verify_us) = before.per_join_since();
    [round_trip, burst_ms, loop_us, verify_us]
}

fn main() {
    let hs = Verifier::hs256(SECRET).expect("a long secret");
    let es = Verifier::from_public_key_pem(EC_PUBLIC.as_bytes()).expect("the EC test key");
    let rs = Verifier::from_public_key_pem(RSA_PUBLIC.as_bytes()).expect("the RSA test key");
    let hs_tokens = tokens(Algorithm::HS256, &EncodingKey::from_secret(SECRET));
    let es_key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).expect("the EC test key");
    let es_tokens = tokens(Algorithm::ES256, &es_key);
    let rs_key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("the RSA test key");
    let rs_tokens = tokens(Algorithm::RS256, &rs_key);

    println!(
        "{JOINS} joins per run over {} rooms, medians of {RUNS} runs. Sequential: loop and verifier thread CPU in µs per join, \
         latency (join -> joined) in µs. Burst: the bystander's round trip in µs, the burst in ms, loop and verifier \
         thread CPU in µs per join",
        rooms()
    );
    println!(
        "{:<6} {:<7} | {:>8} {:>10} {:>11} | {:>13} {:>8} {:>8} {:>10}",
        "alg",
        "checks",
        "loop_cpu",
        "verify_cpu",
        "latency_p50",
        "bystander_rtt",
        "burst_ms",
        "loop_cpu",
        "verify_cpu"
    );
    let mut configs: Vec<Setup> = vec![("open", None, TokenChecks::Inline, None)];
    for (name, verifier, tokens) in [
        ("HS256", &hs, &hs_tokens),
        ("ES256", &es, &es_tokens),
        ("RS256", &rs, &rs_tokens),
    ] {
        for checks in [TokenChecks::Inline, TokenChecks::Thread] {
            configs.push((name, Some(verifier), checks, Some(tokens.as_slice())));
        }
    }
    for (name, verifier, checks, tokens) in configs {
        let mut seq = [Vec::new(), Vec::new(), Vec::new()];
        let mut bursts = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..RUNS {
            for (figures, value) in seq.iter_mut().zip(sequential(verifier, checks, tokens)) {
                figures.push(value);
            }
            for (figures, value) in bursts.iter_mut().zip(burst(verifier, checks, tokens)) {
                figures.push(value);
            }
            // Let the last run's sockets leave TIME_WAIT's way and the loop thread end.
            std::thread::sleep(Duration::from_millis(50));
        }
        let [loop_cpu, verify_cpu, latency] = seq.map(median);
        let [rtt, burst_ms, burst_loop, burst_verify] = bursts.map(median);
        let mode = match (verifier, checks) {
            (None, _) => "-",
            (_, TokenChecks::Thread) => "thread",
            _ => "inline",
        };
        println!(
            "{name:<6} {mode:<7} | {loop_cpu:>8.1} {verify_cpu:>10.1} {latency:>11.1} | {rtt:>13.0} {burst_ms:>8.1} \
             {burst_loop:>8.1} {burst_verify:>10.1}"
        );
    }
}
