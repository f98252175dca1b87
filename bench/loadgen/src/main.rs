//! `roomcast-bench`: a single-threaded mio load generator for roomcast and the servers it is compared with.
//!
//! It speaks WebSocket through roomcast's own client-side codec (`roomcast::protocol::Connection` with
//! `Role::Client`, and `handshake::{write_client_request, parse_server_response}`), or the raw length-prefixed
//! framing of the `rawtcp` peer. Each scenario prints one JSON line with its figures, and with the CPU time the
//! generator and (given `--server-pid`) the server spent, so a reader can see that the generator was not the
//! bottleneck.
//!
//! - `fanout`: R rooms of M members; S members of each room send chat messages, at a fixed rate or as fast as a
//!   window of W messages in flight per sender allows. Every delivery is timed from a send timestamp carried in
//!   the message content.
//! - `idle`: N joined connections held open; the server's resident memory per connection.
//! - `echo`: C connections doing request/response on `/echo` with binary messages of S bytes.
//! - `summarize`: medians and ratios to roomcast, as a markdown table, from the JSON lines of many runs.
//! - `soak`: minutes of innocent chat clients under attack (floods, replay bursts, large messages, connection
//!   churn), checked for drops, losses, duplicates and latency, with the server's memory sampled every 5 s.
//! - `attack`: one attack of the hardening issue at the issue's scale, with a bystander doing round trips beside
//!   it: the server's peak and final memory, the bystander's latency, and how the server treated the attackers.
//! - `attack-table`: a markdown table from the JSON lines of many `attack` runs.
//! - `summarize-deflate`: the permessage-deflate tables and targets from the JSON lines of `bench/deflate.sh`.
//! - `summarize-cluster`: the tables and targets across nodes (issue 13) from the JSON lines of
//!   `bench/cluster.sh`.
//! - `bomb`: one small permessage-deflate frame that inflates past the message size limit; the server's Close
//!   and the growth of its peak memory.
//! - `scale`: one of several processes that together hold more joined connections than one process may open,
//!   each from a loopback source address of its own, and check that a line said in each room reaches every member
//!   (`bench/scale.sh`).
//!
//! `--deflate` makes every connection offer permessage-deflate (RFC 7692): fan-out and idle then run compressed
//! where the server agrees, and each report says how many connections it agreed with, and its answer.
//!
//! `--server-kind` says what the server does with a chat message: roomcast, the tokio-tungstenite peer, the raw
//! TCP peer and the Socket.IO peer deliver it to the whole room, the sender included; the Node seed server skips
//! the sender. The expected number of deliveries is computed from it. `socketio` also switches the wire format
//! to Engine.IO v4 packets inside the WebSocket messages (`engineio`).
//!
//! Several nodes of one cluster: `--also-addr` (repeatable) adds server addresses, and the connections of
//! `fanout` and `idle` are spread over `--addr` and those, round-robin; in `fanout` each room starts one node
//! further, so that a room's members and the rooms' senders are both split across the nodes. `--also-server-pid`
//! adds the other nodes' processes to the server CPU reported, and `--redis-pid` reports Redis's own.

mod attack;
mod bomb;
mod chat_deflate;
mod chat_text;
pub(crate) use chat_text::chat_text;
mod client;
mod cluster_summary;
mod deflate_summary;
mod engineio;
mod inflate;
mod redis_stats;
mod scale;
mod soak;
mod stats;
mod summary;

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use mio::{Events, Poll, Token};
use serde_json::{json, Value};

use chat_deflate::ChatDeflater;
use client::{Client, Framing, Masks, Receive, Received};
use redis_stats::CommandCalls;
use roomcast::protocol::deflate::DeflateParams;
use stats::{cpu_percent, cpu_ticks, machine_steal_ticks, rss_kib, run_queue_wait, Histogram};

/// Load generator for roomcast and its peers; prints one JSON line per run.
#[derive(Debug, Parser)]
#[command(name = "roomcast-bench", version, about, max_term_width = 110)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Room fan-out: throughput and delivery latency.
    Fanout(FanoutArgs),
    /// Joined connections held open: the server's memory per connection.
    Idle(IdleArgs),
    /// Request/response echo of binary messages on /echo.
    Echo(EchoArgs),
    /// Reads JSON lines of many runs and prints medians and ratios to roomcast as markdown.
    Summarize(summary::SummarizeArgs),
    /// Minutes of innocent chat under attack: drops, losses, duplicates, latency and server memory.
    Soak(soak::SoakArgs),
    /// One attack of the hardening issue, with a bystander beside it: server memory, latency, treatment.
    Attack(attack::AttackArgs),
    /// Reads JSON lines of `attack` runs and prints them as one markdown table.
    AttackTable(attack::table::TableArgs),
    /// One small compressed frame that inflates past the message size limit: the server's Close and peak memory.
    Bomb(bomb::BombArgs),
    /// Reads JSON lines of bench/deflate.sh and prints the permessage-deflate tables and targets as markdown.
    SummarizeDeflate(deflate_summary::DeflateSummaryArgs),
    /// Reads JSON lines of bench/cluster.sh and prints the tables and targets across nodes as markdown.
    SummarizeCluster(cluster_summary::ClusterSummaryArgs),
    /// One of several processes holding many joined connections from a source address of its own (bench/scale.sh).
    Scale(scale::ScaleArgs),
}

/// What fills a fan-out message's content after its stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Padding {
    /// `x` repeated: the same bytes in every message.
    X,
    /// English-like chat text, a different stretch of it in every message.
    Words,
}

/// The server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ServerKind {
    /// roomcast: chat goes to the whole room, the sender included.
    Roomcast,
    /// The Node.js + ws seed server: chat goes to the room except the sender; no /echo.
    Seed,
    /// The tokio + tokio-tungstenite peer: chat goes to the whole room, the sender included.
    Tungstenite,
    /// The raw TCP peer: length-prefixed frames, no WebSocket; the whole room, the sender included.
    Rawtcp,
    /// The Socket.IO peer (bench/peers/socketio): Engine.IO v4 over WebSocket; the whole room, the sender
    /// included; no /echo.
    Socketio,
}

impl ServerKind {
    /// The name used in the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Roomcast => "roomcast",
            ServerKind::Seed => "seed",
            ServerKind::Tungstenite => "tungstenite",
            ServerKind::Rawtcp => "rawtcp",
            ServerKind::Socketio => "socketio",
        }
    }

    fn framing(self) -> Framing {
        match self {
            ServerKind::Rawtcp => Framing::Raw,
            ServerKind::Socketio => Framing::EngineIo,
            _ => Framing::WebSocket,
        }
    }

    /// The request target of the chat service.
    fn chat_path(self) -> &'static str {
        match self {
            ServerKind::Socketio => engineio::WEBSOCKET_PATH,
            _ => "/ws",
        }
    }

    /// Whether the server has the /echo service.
    fn has_echo(self) -> bool {
        !matches!(self, ServerKind::Seed | ServerKind::Socketio)
    }

    /// Whether the sender of a chat message receives it too.
    fn echoes_to_sender(self) -> bool {
        self != ServerKind::Seed
    }
}

/// Options every scenario shares.
#[derive(Debug, Args)]
struct Common {
    /// The server's address
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Another node of the same cluster (repeatable): fan-out and idle connections are spread over --addr and
    /// these, round-robin
    #[arg(long, value_name = "ADDR")]
    also_addr: Vec<SocketAddr>,
    /// What the server does with chat messages and how it frames them
    #[arg(long, value_enum, default_value_t = ServerKind::Roomcast)]
    server_kind: ServerKind,
    /// The server's process id, to report its CPU use and memory from /proc
    #[arg(long)]
    server_pid: Option<u32>,
    /// Another server process (repeatable: the other nodes), whose CPU time and memory are added to the server's
    #[arg(long, value_name = "PID")]
    also_server_pid: Vec<u32>,
    /// The Redis server's process id, to report its CPU use separately
    #[arg(long)]
    redis_pid: Option<u32>,
    /// The Redis server's address: fan-out reads its `INFO commandstats` at the start and the end of the
    /// measured interval and reports the commands per chat message
    #[arg(long)]
    redis_addr: Option<SocketAddr>,
    /// A name for this run, copied into the output (compare.sh names scenarios with it)
    #[arg(long, default_value = "")]
    label: String,
    /// Most connections in the middle of connecting and joining at once
    #[arg(long, default_value_t = 200)]
    connect_batch: usize,
    /// Seconds allowed for connecting and joining everyone
    #[arg(long, default_value_t = 60.0)]
    setup_timeout: f64,
    /// Receive through `roomcast::protocol::Connection` (message assembly, UTF-8 validation) instead of its
    /// frame decoder alone: costs the generator more CPU per delivery
    #[arg(long)]
    full_codec: bool,
    /// Mask with keys from a fast generator seeded with the connection's index instead of the operating system's
    /// random source: predictable (RFC 6455 10.3 asks for unpredictable keys), for a server that is trusted
    #[arg(long)]
    fast_masks: bool,
    /// Offer permessage-deflate (RFC 7692) on every connection; where the server agrees, compress what is sent
    /// and inflate every compressed message received
    #[arg(long)]
    deflate: bool,
    /// With --deflate: inflate every compressed message received, even a byte-identical copy of one just
    /// inflated (by default a room's copies of a message compressed on its own are inflated once; see
    /// docs/benchmarks.md)
    #[arg(long)]
    inflate_every_copy: bool,
}

#[derive(Debug, Args)]
struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    /// Number of rooms
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Members per room
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// Senders per room (the first members of each room)
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Chat content size in bytes (at least 34: the marker, timestamp, sender, sequence number and phase)
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// What fills the content after its stamp: `x` repeated, or English-like chat text (`words`), different in
    /// every message, which compresses as real chat does
    #[arg(long, value_enum, default_value_t = Padding::X)]
    padding: Padding,
    /// Messages per second per sender; 0 sends as fast as the window allows
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Messages in flight per sender (sent, not yet delivered to every recipient)
    #[arg(long, default_value_t = 32)]
    window: u32,
    /// Seconds of sending before measuring
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds measured
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds to wait after the measurement for messages still on their way
    #[arg(long, default_value_t = 3.0)]
    drain: f64,
}

#[derive(Debug, Args)]
struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Connections to open and join
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// Rooms they are spread over
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Seconds to hold the connections after they settled, before reading the server's memory
    #[arg(long, default_value_t = 2.0)]
    hold: f64,
}

#[derive(Debug, Args)]
struct EchoArgs {
    #[command(flatten)]
    common: Common,
    /// Connections, each with one message in flight
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Message size in bytes (at least 8: the send timestamp)
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Seconds of echoing before measuring
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds measured
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// WebSocket request path of the echo service
    #[arg(long, default_value = "/echo")]
    path: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.scenario {
        Scenario::Fanout(args) => run_fanout(&args),
        Scenario::Idle(args) => run_idle(&args),
        Scenario::Echo(args) => run_echo(&args),
        Scenario::Bomb(args) => bomb::run(&args),
        Scenario::Summarize(args) => return summary::run(&args),
        Scenario::Soak(args) => return soak::main(&args),
        Scenario::Attack(args) => return attack::main(&args),
        Scenario::AttackTable(args) => return attack::table::run(&args),
        Scenario::SummarizeDeflate(args) => return deflate_summary::run(&args),
        Scenario::SummarizeCluster(args) => return cluster_summary::run(&args),
        Scenario::Scale(args) => return scale::main(&args),
    };
    match result {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roomcast-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Nanoseconds on a monotonic clock since the generator started: what messages carry as their send time.
#[derive(Clone, Copy, Debug)]
struct Clock(Instant);

impl Clock {
    fn now(self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

fn secs_to_ns(secs: f64) -> u64 {
    (secs.max(0.0) * 1e9) as u64
}

impl Common {
    /// Every server address: --addr, then each --also-addr.
    fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        std::iter::once(self.addr).chain(self.also_addr.iter().copied())
    }

    /// How many nodes the connections are spread over.
    fn nodes(&self) -> usize {
        1 + self.also_addr.len()
    }

    /// The address of node `node` (taken modulo the number of nodes).
    fn node_addr(&self, node: usize) -> SocketAddr {
        self.addrs().nth(node % self.nodes()).unwrap_or(self.addr)
    }

    /// Every server process given: --server-pid, then each --also-server-pid.
    fn server_pids(&self) -> Vec<u32> {
        self.server_pid
            .into_iter()
            .chain(self.also_server_pid.iter().copied())
            .collect()
    }
}

/// CPU readings at the start of a measured interval.
struct CpuMark {
    at: u64,
    generator: Option<u64>,
    server: Option<u64>,
    redis: Option<u64>,
    /// The machine's stolen ticks (`machine_steal_ticks`).
    steal: Option<u64>,
    /// The servers' run-queue waits and slices, summed (`run_queue_wait`).
    server_wait: Option<(u64, u64)>,
    /// Redis's run-queue wait and slices.
    redis_wait: Option<(u64, u64)>,
}

impl CpuMark {
    fn take(clock: Clock, server_pid: Option<u32>) -> CpuMark {
        Self::take_all(clock, server_pid.as_slice(), None)
    }

    /// A mark with the CPU time of every server process of `common` summed, and Redis's apart.
    fn take_common(clock: Clock, common: &Common) -> CpuMark {
        Self::take_all(clock, &common.server_pids(), common.redis_pid)
    }

    fn take_all(clock: Clock, server_pids: &[u32], redis_pid: Option<u32>) -> CpuMark {
        let server = (!server_pids.is_empty())
            .then(|| {
                server_pids
                    .iter()
                    .map(|&pid| cpu_ticks(Some(pid)))
                    .sum::<Option<u64>>()
            })
            .flatten();
        let server_wait = (!server_pids.is_empty())
            .then(|| {
                server_pids
                    .iter()
                    .try_fold((0, 0), |(waited, slices), &pid| {
                        let (w, s) = run_queue_wait(pid)?;
                        Some((waited + w, slices + s))
                    })
            })
            .flatten();
        CpuMark {
            at: clock.now(),
            generator: cpu_ticks(None),
            server,
            redis: redis_pid.and_then(|pid| cpu_ticks(Some(pid))),
            steal: machine_steal_ticks(),
            server_wait,
            redis_wait: redis_pid.and_then(run_queue_wait),
        }
    }

    /// The machine's stolen CPU time from this mark to `end`, as a percentage of one CPU.
    fn steal_until(&self, end: &CpuMark) -> Option<f64> {
        let secs = end.at.saturating_sub(self.at) as f64 / 1e9;
        cpu_percent(self.steal, end.steal, secs)
    }

    /// The mean time (µs) the servers' and Redis's loops waited for a CPU each time they were woken, from this
    /// mark to `end`: what the scheduler added to every hop a message makes.
    fn run_queue_waits_until(&self, end: &CpuMark) -> (Option<f64>, Option<f64>) {
        let mean = |before: Option<(u64, u64)>, after: Option<(u64, u64)>| {
            let (before, after) = (before?, after?);
            let slices = after.1.checked_sub(before.1)?;
            let waited = after.0.checked_sub(before.0)?;
            (slices > 0).then(|| waited as f64 / slices as f64 / 1e3)
        };
        (
            mean(self.server_wait, end.server_wait),
            mean(self.redis_wait, end.redis_wait),
        )
    }

    /// Redis's CPU % from this mark to `end`, if its pid was given.
    fn redis_until(&self, end: &CpuMark) -> Option<f64> {
        let secs = end.at.saturating_sub(self.at) as f64 / 1e9;
        cpu_percent(self.redis, end.redis, secs)
    }

    /// (seconds, generator CPU %, server CPU %) from this mark to `end`.
    fn until(&self, end: &CpuMark) -> (f64, Option<f64>, Option<f64>) {
        let secs = end.at.saturating_sub(self.at) as f64 / 1e9;
        (
            secs,
            cpu_percent(self.generator, end.generator, secs),
            cpu_percent(self.server, end.server, secs),
        )
    }
}

/// Every connection of a run, on one poll.
struct Pool {
    poll: Poll,
    events: Events,
    clients: Vec<Client>,
    read_buf: Vec<u8>,
    to_flush: Vec<usize>,
    flagged: Vec<bool>,
    /// Connections that failed or were closed by the server.
    errors: u64,
    /// What the last error was, for the report.
    last_error: Option<String>,
}

impl Pool {
    fn new() -> io::Result<Pool> {
        Ok(Pool {
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            clients: Vec::new(),
            read_buf: vec![0; 256 * 1024],
            to_flush: Vec::new(),
            flagged: Vec::new(),
            errors: 0,
            last_error: None,
        })
    }

    /// Starts connecting one more client to node `node` of `common` (`Common::node_addr`); its index is the
    /// previous count.
    fn connect(&mut self, common: &Common, path: &'static str, node: usize) -> io::Result<usize> {
        let index = self.clients.len();
        let client = Client::connect(
            common.node_addr(node),
            common.server_kind.framing(),
            if common.full_codec {
                Receive::Connection
            } else {
                Receive::Frames
            },
            path,
            if common.fast_masks {
                Masks::Fast {
                    seed: index as u64 + 1,
                }
            } else {
                Masks::Random
            },
            self.poll.registry(),
            Token(index),
        )?;
        let mut client = client;
        if common.deflate {
            client.offer_deflate(!common.inflate_every_copy);
        }
        self.clients.push(client);
        self.flagged.push(false);
        Ok(index)
    }

    /// How many connections agreed to permessage-deflate.
    fn deflate_agreed(&self) -> usize {
        self.clients
            .iter()
            .filter(|c| c.deflate().is_some())
            .count()
    }

    /// The server's permessage-deflate answer as the first connection that has one received it, for the report.
    fn deflate_answer(&self) -> Option<String> {
        self.clients
            .iter()
            .find_map(|c| c.deflate())
            .map(|params| params.response_header())
    }

    /// Bytes read by every connection so far.
    fn bytes_read(&self) -> u64 {
        self.clients.iter().map(Client::bytes_read).sum()
    }

    fn fail(&mut self, index: usize, error: String) {
        self.errors += 1;
        self.last_error = Some(format!("connection {index}: {error}"));
        self.clients[index].close(self.poll.registry());
    }

    /// One poll and the handling of its events. Messages go to `on_message(client, message, now)`; clients whose
    /// connection (and handshake) completed are appended to `opened`.
    fn turn(
        &mut self,
        timeout: Duration,
        clock: Clock,
        opened: &mut Vec<usize>,
        mut on_message: impl FnMut(usize, Received<'_>, u64),
    ) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut failures = Vec::new();
        for event in self.events.iter() {
            let index = event.token().0;
            let Some(client) = self.clients.get_mut(index) else {
                continue;
            };
            if client.is_closed() {
                continue;
            }
            let was_open = client.is_open();
            if event.is_writable() {
                if let Err(e) = client.on_writable() {
                    failures.push((index, e.to_string()));
                    continue;
                }
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                let now = clock.now();
                let peer_closed = event.is_read_closed() || event.is_error();
                match client.read(&mut self.read_buf, peer_closed, |m| {
                    on_message(index, m, now)
                }) {
                    Ok(true) => {}
                    Ok(false) => {
                        failures.push((index, "closed by the server".into()));
                        continue;
                    }
                    Err(e) => {
                        failures.push((index, e.to_string()));
                        continue;
                    }
                }
                if client.has_output() {
                    if let Err(e) = client.flush() {
                        failures.push((index, e.to_string()));
                        continue;
                    }
                }
            }
            if !was_open && client.is_open() {
                opened.push(index);
            }
        }
        for (index, error) in failures {
            self.fail(index, error);
        }
        Ok(())
    }

    /// Remembers that a client has new output, to write it at the end of the turn.
    fn mark(&mut self, index: usize) {
        if !self.flagged[index] {
            self.flagged[index] = true;
            self.to_flush.push(index);
        }
    }

    /// Writes the output of every marked client.
    fn flush_marked(&mut self) {
        while let Some(index) = self.to_flush.pop() {
            self.flagged[index] = false;
            if let Err(e) = self.clients[index].flush() {
                self.fail(index, e.to_string());
            }
        }
    }

    /// Closes every connection.
    fn close_all(&mut self) {
        for client in &mut self.clients {
            client.close(self.poll.registry());
        }
    }
}

/// The chat content of a fan-out message: `@`, the send time (16 hex digits), the sender (8 hex digits), the
/// sender's sequence number (8 hex digits), the phase (`w` warm-up, `m` measured), then the padding up to the
/// size: `x` repeated, or a stretch of English-like chat text that differs from message to message. Nothing in
/// it needs JSON or HTML escaping.
struct ContentWriter {
    buf: Vec<u8>,
    /// With `Padding::Words`: the text the padding is cut from, and where each of its words starts.
    text: Option<(Vec<u8>, Vec<usize>)>,
    /// Messages written, which picks the stretch of text.
    written: u64,
}

/// Bytes of the content before the padding.
const CONTENT_HEAD: usize = 1 + 16 + 8 + 8 + 1;

impl ContentWriter {
    fn new(size: usize, padding: Padding) -> ContentWriter {
        let size = size.max(CONTENT_HEAD);
        let text = (padding == Padding::Words).then(|| {
            let text = chat_text(64 * 1024 + size);
            let starts = std::iter::once(0)
                .chain((0..text.len()).filter(|&i| text[i] == b' ').map(|i| i + 1))
                .filter(|&start| start + size <= text.len())
                .collect();
            (text, starts)
        });
        ContentWriter {
            buf: vec![b'x'; size],
            text,
            written: 0,
        }
    }

    /// The content of the next message, and the index of its padding stretch among `stretches`.
    fn write(&mut self, sent_at: u64, sender: u32, seq: u32, measured: bool) -> (&[u8], usize) {
        let mut stretch = 0;
        if let Some((text, starts)) = &self.text {
            // A stretch starting at a word, picked by a multiplicative hash of the message count.
            let pick = self.written.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
            stretch = (pick % starts.len() as u64) as usize;
            let start = starts[stretch];
            let padding = self.buf.len() - CONTENT_HEAD;
            self.buf[CONTENT_HEAD..].copy_from_slice(&text[start..start + padding]);
            self.written += 1;
        }
        self.buf[0] = b'@';
        write_hex(&mut self.buf[1..17], sent_at);
        write_hex(&mut self.buf[17..25], u64::from(sender));
        write_hex(&mut self.buf[25..33], u64::from(seq));
        self.buf[33] = if measured { b'm' } else { b'w' };
        (&self.buf, stretch)
    }

    /// Every padding a message can carry, by the index `write` gives: one run of `x`, or every stretch of the
    /// text that starts at a word.
    fn stretches(&self) -> Vec<&[u8]> {
        let padding = self.buf.len() - CONTENT_HEAD;
        match &self.text {
            Some((text, starts)) => starts
                .iter()
                .map(|&start| &text[start..start + padding])
                .collect(),
            None => vec![&self.buf[CONTENT_HEAD..]],
        }
    }
}

fn write_hex(out: &mut [u8], mut value: u64) {
    for byte in out.iter_mut().rev() {
        *byte = b"0123456789abcdef"[(value & 0xF) as usize];
        value >>= 4;
    }
}

/// Eight lowercase hex digits to their value, eight bytes at a time (SWAR); `None` if any byte is not one.
fn hex8(digits: &[u8]) -> Option<u32> {
    let word = u64::from_be_bytes(digits.try_into().ok()?);
    // Each byte must be 0x30..=0x39 or 0x61..=0x66. Adding 0x46 to a byte pushes it past 0x7F exactly when it is
    // over 0x39 (and adding 0x19 when over 0x66); the checks run on all eight bytes at once.
    let high = 0x8080_8080_8080_8080u64;
    let low_bits = word & 0x7F7F_7F7F_7F7F_7F7F;
    let ascii = word & high == 0;
    let ge_0 = (low_bits + 0x5050_5050_5050_5050) & high == high; // >= 0x30
    let gt_9 = (low_bits + 0x4646_4646_4646_4646) & high; // > 0x39, per byte
    let ge_a = (low_bits + 0x1F1F_1F1F_1F1F_1F1F) & high; // >= 0x61, per byte
    let gt_f = (low_bits + 0x1919_1919_1919_1919) & high; // > 0x66, per byte
    if !ascii || !ge_0 || gt_9 != ge_a || gt_f != 0 {
        return None;
    }
    // Digits keep their low nibble; letters add 9 ('a' = 0x61 -> 1 + 9).
    let nibbles = (word & 0x0F0F_0F0F_0F0F_0F0F) + (ge_a >> 7) * 9;
    let pairs = (nibbles >> 4 | nibbles) & 0x00FF_00FF_00FF_00FF;
    let quads = (pairs >> 8 | pairs) & 0x0000_FFFF_0000_FFFF;
    Some(((quads >> 16 | quads) & 0xFFFF_FFFF) as u32)
}

/// What a received fan-out message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    sent_at: u64,
    sender: u32,
    seq: u32,
    measured: bool,
}

/// The fan-out message in a received text. `hint` is where the marker was in this connection's last message,
/// tried first, and updated.
fn parse_content(text: &[u8], hint: &mut u32) -> Option<Stamp> {
    let at = match text.get(*hint as usize) {
        Some(b'@') => *hint as usize,
        _ => {
            let at = text.iter().position(|&b| b == b'@')?;
            *hint = at as u32;
            at
        }
    };
    let head = text.get(at..at + CONTENT_HEAD)?;
    Some(Stamp {
        sent_at: u64::from(hex8(&head[1..9])?) << 32 | u64::from(hex8(&head[9..17])?),
        sender: hex8(&head[17..25])?,
        seq: hex8(&head[25..33])?,
        measured: head[33] == b'm',
    })
}

/// True for the server's answer to a join: roomcast's, the seed's and the tokio peer's `system` line.
fn is_join_answer(text: &[u8]) -> bool {
    text.windows(b"Joined room".len())
        .any(|w| w == b"Joined room")
}

/// True for a message reporting an error (roomcast's `error`, or its v1 form with a `code`).
fn is_error_message(text: &[u8]) -> bool {
    text.windows(b"\"code\"".len()).any(|w| w == b"\"code\"")
}

/// Connects and joins clients `0..total` (client i connects to node `node_of(i)` and joins `room_of(i)` as
/// `u{i}`), at most `batch` in progress. Keeps going until all joined, calling `on_other` with every message that
/// is not a join answer.
fn connect_and_join(
    pool: &mut Pool,
    common: &Common,
    clock: Clock,
    total: usize,
    room_of: impl Fn(usize) -> usize,
    node_of: impl Fn(usize) -> usize,
    mut on_other: impl FnMut(usize, Received<'_>, u64),
) -> io::Result<()> {
    let deadline = clock.now() + secs_to_ns(common.setup_timeout);
    let mut joined = vec![false; total];
    let mut joined_count = 0;
    let mut opened = Vec::new();
    while joined_count < total {
        while pool.clients.len() < total
            && pool.clients.len() - joined_count < common.connect_batch.max(1)
        {
            let index = pool.clients.len();
            let path = common.server_kind.chat_path();
            if let Err(e) = pool.connect(common, path, node_of(index)) {
                return Err(io::Error::new(
                    e.kind(),
                    format!("connect #{}: {e}", pool.clients.len()),
                ));
            }
        }
        pool.turn(
            Duration::from_millis(10),
            clock,
            &mut opened,
            |index, message, now| match message {
                Received::JoinAck => {
                    if !std::mem::replace(&mut joined[index], true) {
                        joined_count += 1;
                    }
                }
                Received::Text(text) if !joined[index] && is_join_answer(text) => {
                    joined[index] = true;
                    joined_count += 1;
                }
                other => on_other(index, other, now),
            },
        )?;
        for index in opened.drain(..) {
            pool.clients[index].send_join(&format!("u{index}"), &format!("r{}", room_of(index)));
            pool.mark(index);
        }
        pool.flush_marked();
        if pool.errors > 0 {
            return Err(io::Error::other(format!(
                "{} connection(s) failed while joining; last: {}",
                pool.errors,
                pool.last_error.as_deref().unwrap_or("?")
            )));
        }
        if clock.now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("only {joined_count} of {total} joined in time"),
            ));
        }
    }
    Ok(())
}

/// Keeps handling events until no message arrived for `quiet`, or `limit` passed.
fn settle(
    pool: &mut Pool,
    clock: Clock,
    quiet: Duration,
    limit: Duration,
    mut on_message: impl FnMut(usize, Received<'_>, u64),
) -> io::Result<()> {
    let start = clock.now();
    let mut last = start;
    let mut opened = Vec::new();
    loop {
        let mut any = false;
        pool.turn(
            Duration::from_millis(20),
            clock,
            &mut opened,
            |index, message, now| {
                any = true;
                on_message(index, message, now);
            },
        )?;
        let now = clock.now();
        if any {
            last = now;
        }
        if now - last >= quiet.as_nanos() as u64 || now - start >= limit.as_nanos() as u64 {
            return Ok(());
        }
    }
}

/// One sender of the fan-out.
struct Sender {
    /// Its client.
    client: usize,
    /// The sequence number of its next message.
    seq: u32,
    /// Messages sent and not yet delivered to every recipient.
    in_flight: u32,
    /// Deliveries so far of each message in flight, by sequence number modulo the window.
    deliveries: Vec<u32>,
    /// With a rate: when the next message is due (generator clock, ns).
    next_at: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Warmup,
    Measure,
    Drain,
}

/// The width of a step of a fan-out run's latency timeline: a tenth of a second.
const TIMELINE_STEP_NS: u64 = 100_000_000;
/// A delivery slower than this counts as slow in the timeline: 1 ms.
const SLOW_DELIVERY_NS: u64 = 1_000_000;

/// Counters of a fan-out run, updated as messages arrive.
#[derive(Default)]
struct FanoutTally {
    /// Measured messages sent.
    sent: u64,
    /// Messages sent, warm-up included.
    sent_total: u64,
    /// Deliveries of any fan-out message, warm-up and drain included.
    delivered_total: u64,
    /// Deliveries of measured messages, whenever they arrived.
    delivered: u64,
    /// Deliveries of any message that arrived during the measurement.
    delivered_in_window: u64,
    /// Delivery latencies of messages that arrived during the measurement.
    latency: Histogram,
    /// For each tenth of a second of the measurement: the slowest delivery (ns) and how many took over 1 ms, so
    /// that a tail made of a few stalls can be told from one spread over the run.
    timeline: Vec<(u64, u32)>,
    /// Messages that reported an error (e.g. roomcast's rate limit).
    error_messages: u64,
    /// Texts that were neither fan-out messages nor expected notices.
    unexpected: u64,
}

fn run_fanout(args: &FanoutArgs) -> io::Result<Value> {
    let common = &args.common;
    let kind = common.server_kind;
    let (rooms, members) = (args.rooms.max(1), args.members.max(1));
    let senders_per_room = args.senders.clamp(1, members);
    if !kind.echoes_to_sender() && members < 2 {
        return Err(io::Error::other(
            "a server that skips the sender needs 2+ members per room",
        ));
    }
    let total = rooms * members;
    let clock = Clock(Instant::now());
    let mut pool = Pool::new()?;
    let setup_start = clock.now();
    connect_and_join(
        &mut pool,
        common,
        clock,
        total,
        |i| i / members,
        |i| fanout_node(i, members),
        |_, _, _| {},
    )?;
    settle(
        &mut pool,
        clock,
        Duration::from_millis(300),
        Duration::from_secs(10),
        |_, _, _| {},
    )?;
    let setup_secs = (clock.now() - setup_start) as f64 / 1e9;

    let window = args.window.max(1);
    let mut senders: Vec<Sender> = Vec::with_capacity(rooms * senders_per_room);
    for room in 0..rooms {
        for member in 0..senders_per_room {
            senders.push(Sender {
                client: room * members + member,
                seq: 0,
                in_flight: 0,
                deliveries: vec![0; window as usize],
                next_at: 0,
            });
        }
    }
    let recipients = if kind.echoes_to_sender() {
        members
    } else {
        members - 1
    } as u64;
    let per_message = recipients as u32;
    let interval = if args.rate > 0.0 {
        (1e9 / args.rate) as u64
    } else {
        0
    };
    let mut writer = ContentWriter::new(args.size, args.padding);
    // With permessage-deflate, every padding is compressed once here, before the clock starts, within the
    // narrowest client window a server agreed to (RFC 7692 7.1.2.2).
    let deflater = pool
        .clients
        .iter()
        .filter_map(|client| client.deflate().map(DeflateParams::client_window_bits))
        .min()
        .map(|window_bits| ChatDeflater::new(writer.stretches(), window_bits));
    let start = clock.now();
    let sender_count = senders.len() as u64;
    for (s, sender) in senders.iter_mut().enumerate() {
        sender.next_at = start + interval * s as u64 / sender_count;
    }
    let measure_at = start + secs_to_ns(args.warmup);
    let measure_end = measure_at + secs_to_ns(args.duration);
    let drain_end = measure_end + secs_to_ns(args.drain);

    let mut stage = Stage::Warmup;
    let mut tally = FanoutTally::default();
    let mut hints = vec![0u32; total];
    let mut ready: Vec<usize> = (0..senders.len()).collect();
    let mut opened = Vec::new();
    let mut mark_start = None;
    let mut mark_end = None;
    let mut bytes_at_start = pool.bytes_read();
    let mut bytes_at_end = None;
    let mut redis_before: Option<CommandCalls> = None;
    let mut redis_made: Option<CommandCalls> = None;
    loop {
        let now = clock.now();
        if stage == Stage::Warmup && now >= measure_at {
            stage = Stage::Measure;
            redis_before = common.redis_addr.map(CommandCalls::read).transpose()?;
            mark_start = Some(CpuMark::take_common(clock, common));
            bytes_at_start = pool.bytes_read();
        }
        if stage == Stage::Measure && now >= measure_end {
            stage = Stage::Drain;
            mark_end = Some(CpuMark::take_common(clock, common));
            redis_made = match (&redis_before, common.redis_addr) {
                (Some(before), Some(addr)) => Some(CommandCalls::read(addr)?.since(before)),
                _ => None,
            };
            bytes_at_end = Some(pool.bytes_read());
        }
        if stage == Stage::Drain && (now >= drain_end || tally.delivered >= tally.sent * recipients)
        {
            break;
        }
        if stage < Stage::Drain {
            let measured = stage == Stage::Measure;
            if interval > 0 {
                ready.clear();
                for (s, sender) in senders.iter_mut().enumerate() {
                    while sender.next_at <= now {
                        sender.next_at += interval;
                        if sender.in_flight < window {
                            send_fanout(
                                &mut pool,
                                &mut writer,
                                deflater.as_ref(),
                                &clock,
                                sender,
                                s,
                                measured,
                            );
                            tally.sent += u64::from(measured);
                            tally.sent_total += 1;
                        }
                    }
                }
            } else {
                for s in ready.drain(..) {
                    let sender = &mut senders[s];
                    while sender.in_flight < window {
                        send_fanout(
                            &mut pool,
                            &mut writer,
                            deflater.as_ref(),
                            &clock,
                            sender,
                            s,
                            measured,
                        );
                        tally.sent += u64::from(measured);
                        tally.sent_total += 1;
                    }
                }
            }
            pool.flush_marked();
        }
        let next_event = match stage {
            Stage::Warmup => measure_at,
            Stage::Measure => measure_end,
            Stage::Drain => drain_end,
        };
        let next_send = if interval > 0 && stage < Stage::Drain {
            senders
                .iter()
                .map(|s| s.next_at)
                .min()
                .unwrap_or(next_event)
        } else {
            next_event
        };
        let wake = next_event.min(next_send).saturating_sub(clock.now());
        let in_window = stage == Stage::Measure;
        pool.turn(
            Duration::from_nanos(wake.min(50_000_000)),
            clock,
            &mut opened,
            |index, message, now| {
                let Received::Text(text) = message else {
                    tally.unexpected += 1;
                    return;
                };
                let Some(stamp) = parse_content(text, &mut hints[index]) else {
                    if is_error_message(text) {
                        tally.error_messages += 1;
                    } else if !is_join_answer(text) {
                        tally.unexpected += 1;
                    }
                    return;
                };
                if in_window {
                    tally.delivered_in_window += 1;
                    let latency = now.saturating_sub(stamp.sent_at);
                    tally.latency.record(latency);
                    let tenth = (now.saturating_sub(measure_at) / TIMELINE_STEP_NS) as usize;
                    if tally.timeline.len() <= tenth {
                        tally.timeline.resize(tenth + 1, (0, 0));
                    }
                    let (slowest, over) = &mut tally.timeline[tenth];
                    *slowest = (*slowest).max(latency);
                    *over += u32::from(latency > SLOW_DELIVERY_NS);
                }
                tally.delivered += u64::from(stamp.measured);
                tally.delivered_total += 1;
                let Some(sender) = senders.get_mut(stamp.sender as usize) else {
                    tally.unexpected += 1;
                    return;
                };
                let slot = &mut sender.deliveries[(stamp.seq % window) as usize];
                *slot += 1;
                if *slot == per_message {
                    *slot = 0;
                    sender.in_flight = sender.in_flight.saturating_sub(1);
                    ready.push(stamp.sender as usize);
                }
            },
        )?;
    }
    let generator_end = CpuMark::take_common(clock, common);
    let mark_start = mark_start.unwrap_or_else(|| CpuMark::take_common(clock, common));
    let mark_end = mark_end.unwrap_or(generator_end);
    let (secs, generator_cpu, server_cpu) = mark_start.until(&mark_end);
    let redis_cpu = mark_start.redis_until(&mark_end);
    let steal = mark_start.steal_until(&mark_end);
    let (server_wait, redis_wait) = mark_start.run_queue_waits_until(&mark_end);
    // What the machine did to the run: stolen CPU, waits for a CPU, and when the slow deliveries came.
    let scheduling = json!({
        "steal_pct": steal.map(round1),
        "server_run_queue_wait_us": server_wait.map(round1),
        "redis_run_queue_wait_us": redis_wait.map(round1),
        "timeline_step_ms": TIMELINE_STEP_NS / 1_000_000,
        "timeline_max_us": tally.timeline.iter().map(|&(slowest, _)| (slowest as f64 / 100.0).round() / 10.0).collect::<Vec<_>>(),
        "timeline_over_1ms": tally.timeline.iter().map(|&(_, over)| over).collect::<Vec<_>>(),
    });
    let bytes_in_window = bytes_at_end
        .unwrap_or_else(|| pool.bytes_read())
        .saturating_sub(bytes_at_start);
    let deflate_agreed = pool.deflate_agreed();
    let deflate_answer = pool.deflate_answer();
    let inflate_counts = inflate::counts();
    pool.close_all();
    let expected = tally.sent * recipients;
    let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
    let per_message = |calls: u64| round3(calls as f64 / tally.sent.max(1) as f64);
    Ok(json!({
        "scenario": "fanout",
        "label": common.label,
        "server_kind": kind.name(),
        "rooms": rooms,
        "members": members,
        "senders_per_room": senders_per_room,
        "size": args.size.max(CONTENT_HEAD),
        "padding": format!("{:?}", args.padding).to_lowercase(),
        "deflate_offered": common.deflate,
        "deflate_agreed": deflate_agreed,
        "deflate_answer": deflate_answer,
        "inflated": inflate_counts.inflated,
        "inflate_reused": inflate_counts.reused,
        "inflate_every_copy": common.inflate_every_copy,
        "rate": args.rate,
        "window": args.window,
        "connections": total,
        "duration_s": round3(secs),
        "setup_s": round3(setup_secs),
        "sent": tally.sent,
        "expected": expected,
        "delivered": tally.delivered,
        "lost": expected.saturating_sub(tally.delivered),
        "sent_total": tally.sent_total,
        "delivered_total": tally.delivered_total,
        "messages_per_sec": round3(tally.sent as f64 / secs),
        "deliveries_per_sec": round3(tally.delivered_in_window as f64 / secs),
        "bytes_read_in_window": bytes_in_window,
        "wire_bytes_per_delivery": round3(bytes_in_window as f64 / tally.delivered_in_window.max(1) as f64),
        "latency_us": {
            "p50": us(tally.latency.quantile(0.50)),
            "p90": us(tally.latency.quantile(0.90)),
            "p99": us(tally.latency.quantile(0.99)),
            "max": us(tally.latency.max()),
            "samples": tally.latency.count(),
        },
        "scheduling": scheduling,
        "errors": pool.errors + tally.error_messages + tally.unexpected,
        "error_detail": {
            "connections": pool.errors,
            "error_messages": tally.error_messages,
            "unexpected_messages": tally.unexpected,
            "last": pool.last_error,
        },
        "generator_cpu_pct": generator_cpu.map(round1),
        "server_cpu_pct": server_cpu.map(round1),
        "redis_cpu_pct": redis_cpu.map(round1),
        "redis_calls": redis_made.as_ref().map(CommandCalls::to_json),
        "redis_calls_per_message": redis_made.as_ref().map(|c| per_message(c.total())),
        "redis_sent_per_message": redis_made.as_ref().map(|c| per_message(c.sent_by_clients())),
        "nodes": common.nodes(),
        "full_codec": common.full_codec,
    }))
}

/// The node (before taking it modulo the number of nodes) of fan-out client `index` in rooms of `members`:
/// round-robin, each room starting one node further, so that with 2 nodes rooms of 10 put 5 members on each and
/// the rooms' first members (the senders) alternate between the nodes.
fn fanout_node(index: usize, members: usize) -> usize {
    index / members + index % members
}

/// Queues the next message of `sender` (number `index`), compressed by `deflater` where permessage-deflate is on.
fn send_fanout(
    pool: &mut Pool,
    writer: &mut ContentWriter,
    deflater: Option<&ChatDeflater>,
    clock: &Clock,
    sender: &mut Sender,
    index: usize,
    measured: bool,
) {
    let (content, stretch) = writer.write(clock.now(), index as u32, sender.seq, measured);
    let client = &mut pool.clients[sender.client];
    match deflater {
        Some(deflater) => {
            client.send_chat_compressed(content, |out| deflater.compress(content, stretch, out))
        }
        None => client.send_chat(content),
    }
    pool.mark(sender.client);
    sender.seq = sender.seq.wrapping_add(1);
    sender.in_flight += 1;
}

fn run_idle(args: &IdleArgs) -> io::Result<Value> {
    let common = &args.common;
    let pids = common.server_pids();
    if pids.is_empty() {
        return Err(io::Error::other(
            "idle needs --server-pid to read the server's memory",
        ));
    }
    // Every server process's resident memory, summed.
    let rss_now = || {
        pids.iter()
            .map(|&pid| rss_kib(pid))
            .sum::<Option<u64>>()
            .ok_or_else(|| io::Error::other("cannot read VmRSS"))
    };
    let rooms = args.rooms.max(1);
    let clock = Clock(Instant::now());
    let rss_before = rss_now()?;
    let mut pool = Pool::new()?;
    let mut other_messages = 0u64;
    connect_and_join(
        &mut pool,
        common,
        clock,
        args.conns,
        |i| i % rooms,
        |i| i,
        |_, _, _| other_messages += 1,
    )?;
    let setup_secs = clock.now() as f64 / 1e9;
    settle(
        &mut pool,
        clock,
        Duration::from_millis(500),
        Duration::from_secs(30),
        |_, _, _| other_messages += 1,
    )?;
    let hold_end = clock.now() + secs_to_ns(args.hold);
    let mut opened = Vec::new();
    while clock.now() < hold_end {
        pool.turn(Duration::from_millis(50), clock, &mut opened, |_, _, _| {
            other_messages += 1
        })?;
    }
    let rss_after = rss_now()?;
    let open = pool.clients.iter().filter(|c| c.is_open()).count();
    let deflate_agreed = pool.deflate_agreed();
    let deflate_answer = pool.deflate_answer();
    pool.close_all();
    let per_conn = (rss_after.saturating_sub(rss_before) * 1024) as f64 / args.conns.max(1) as f64;
    Ok(json!({
        "scenario": "idle",
        "label": common.label,
        "server_kind": common.server_kind.name(),
        "nodes": common.nodes(),
        "connections": args.conns,
        "open_at_end": open,
        "deflate_offered": common.deflate,
        "deflate_agreed": deflate_agreed,
        "deflate_answer": deflate_answer,
        "rooms": rooms,
        "setup_s": round3(setup_secs),
        "notices_received": other_messages,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_per_conn_bytes": per_conn.round(),
        "rss_per_million_conns_gib": round3(per_conn * 1e6 / (1u64 << 30) as f64),
        "errors": pool.errors,
        "last_error": pool.last_error,
    }))
}

fn run_echo(args: &EchoArgs) -> io::Result<Value> {
    let common = &args.common;
    if !common.server_kind.has_echo() {
        return Err(io::Error::other(format!(
            "the {} server has no echo service",
            common.server_kind.name()
        )));
    }
    let size = args.size.max(8);
    let path: &'static str = Box::leak(args.path.clone().into_boxed_str());
    let clock = Clock(Instant::now());
    let mut pool = Pool::new()?;
    let mut template = vec![b'e'; size];
    let mut opened = Vec::new();
    let mut ready: Vec<usize> = Vec::new();
    let mut open_count = 0;
    let setup_deadline = clock.now() + secs_to_ns(common.setup_timeout);
    for index in 0..args.conns {
        pool.connect(common, path, index)?;
    }
    while open_count < args.conns {
        pool.turn(Duration::from_millis(10), clock, &mut opened, |_, _, _| {})?;
        open_count += opened.len();
        ready.append(&mut opened);
        if pool.errors > 0 || clock.now() > setup_deadline {
            return Err(io::Error::other(format!(
                "{open_count} of {} echo connections opened; last error: {}",
                args.conns,
                pool.last_error.as_deref().unwrap_or("none")
            )));
        }
    }
    let start = clock.now();
    let measure_at = start + secs_to_ns(args.warmup);
    let measure_end = measure_at + secs_to_ns(args.duration);
    let mut measuring = false;
    let mut round_trips = 0u64;
    let mut bad_replies = 0u64;
    let mut latency = Histogram::default();
    let mut mark_start = None;
    loop {
        let now = clock.now();
        if !measuring && now >= measure_at {
            measuring = true;
            mark_start = Some(CpuMark::take(clock, common.server_pid));
        }
        if now >= measure_end {
            break;
        }
        for index in ready.drain(..) {
            template[..8].copy_from_slice(&clock.now().to_le_bytes());
            pool.clients[index].send_echo(&template);
            pool.mark(index);
        }
        pool.flush_marked();
        let wake = if measuring { measure_end } else { measure_at }.saturating_sub(clock.now());
        pool.turn(
            Duration::from_nanos(wake.min(50_000_000)),
            clock,
            &mut opened,
            |index, message, now| {
                let Received::Binary(payload) = message else {
                    bad_replies += 1;
                    return;
                };
                let Some(stamp) = payload.get(..8).filter(|_| payload.len() == size) else {
                    bad_replies += 1;
                    return;
                };
                let sent_at = u64::from_le_bytes(stamp.try_into().unwrap_or_default());
                if measuring {
                    round_trips += 1;
                    latency.record(now.saturating_sub(sent_at));
                }
                ready.push(index);
            },
        )?;
    }
    let mark_end = CpuMark::take(clock, common.server_pid);
    let mark_start = mark_start.unwrap_or_else(|| CpuMark::take(clock, common.server_pid));
    let (secs, generator_cpu, server_cpu) = mark_start.until(&mark_end);
    pool.close_all();
    let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
    Ok(json!({
        "scenario": "echo",
        "label": common.label,
        "server_kind": common.server_kind.name(),
        "connections": args.conns,
        "size": size,
        "duration_s": round3(secs),
        "round_trips": round_trips,
        "round_trips_per_sec": round3(round_trips as f64 / secs),
        "mib_per_sec_each_way": round3(round_trips as f64 * size as f64 / secs / (1u64 << 20) as f64),
        "latency_us": {
            "p50": us(latency.quantile(0.50)),
            "p90": us(latency.quantile(0.90)),
            "p99": us(latency.quantile(0.99)),
            "max": us(latency.max()),
            "samples": latency.count(),
        },
        "errors": pool.errors + bad_replies,
        "last_error": pool.last_error,
        "generator_cpu_pct": generator_cpu.map(round1),
        "server_cpu_pct": server_cpu.map(round1),
    }))
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_round_trips_through_a_chat_payload() {
        let mut writer = ContentWriter::new(64, Padding::X);
        let content = writer.write(0x1234_5678_9abc, 42, 7, true).0.to_vec();
        assert_eq!(content.len(), 64);
        let mut json = br#"{"type":"chat","room":"r0","seq":7,"from":"u3","content":""#.to_vec();
        json.extend_from_slice(&content);
        json.extend_from_slice(br#"","timestamp":1}"#);
        let stamp = Stamp {
            sent_at: 0x1234_5678_9abc,
            sender: 42,
            seq: 7,
            measured: true,
        };
        let mut hint = 0;
        assert_eq!(parse_content(&json, &mut hint), Some(stamp));
        assert_ne!(hint, 0);
        assert_eq!(parse_content(&json, &mut hint), Some(stamp));
        assert_eq!(parse_content(&content, &mut hint), Some(stamp));
    }

    #[test]
    fn word_padding_is_plain_english_text_that_differs_between_messages() {
        let mut writer = ContentWriter::new(512, Padding::Words);
        let first = writer.write(1, 2, 3, true).0.to_vec();
        let second = writer.write(1, 2, 3, true).0.to_vec();
        assert_eq!((first.len(), second.len()), (512, 512));
        assert_ne!(first[CONTENT_HEAD..], second[CONTENT_HEAD..]);
        for content in [&first, &second] {
            let padding = &content[CONTENT_HEAD..];
            assert!(
                padding
                    .iter()
                    .all(|&b| b.is_ascii_alphabetic() || b" ,.?".contains(&b)),
                "nothing to escape: {}",
                String::from_utf8_lossy(padding)
            );
            assert!(padding.split(|&b| b == b' ').count() > 60, "words");
            let mut hint = 0;
            assert_eq!(parse_content(content, &mut hint).map(|s| s.seq), Some(3));
        }
    }

    #[test]
    fn hex8_agrees_with_the_standard_parser() {
        for value in [
            0u32,
            1,
            9,
            10,
            15,
            0xdead_beef,
            0x0123_4567,
            0x89ab_cdef,
            u32::MAX,
        ] {
            let text = format!("{value:08x}");
            assert_eq!(hex8(text.as_bytes()), Some(value), "{text}");
        }
        for bad in [
            "0000000g",
            "/0000000",
            ":0000000",
            "`0000000",
            "A0000000",
            "0000 000",
            "000000\u{e9}",
        ] {
            let bytes: Vec<u8> = bad.bytes().chain(std::iter::repeat(b'0')).take(8).collect();
            assert_eq!(hex8(&bytes), None, "{bad}");
        }
        assert_eq!(hex8(b"0123"), None);
    }

    #[test]
    fn fanout_splits_each_room_and_the_senders_across_the_nodes() {
        let nodes = 2;
        for members in [10, 100] {
            for room in 0..4 {
                let on_first = (0..members)
                    .filter(|m| fanout_node(room * members + m, members) % nodes == 0)
                    .count();
                assert_eq!(on_first, members / 2, "room {room} of {members}");
            }
        }
        let senders: Vec<usize> = (0..4).map(|room| fanout_node(room * 10, 10) % 3).collect();
        assert_eq!(senders, [0, 1, 2, 0]);
    }

    #[test]
    fn notices_are_recognised() {
        assert!(is_join_answer(
            br#"{"type":"system","content":"Joined room \"r\", 3 online"}"#
        ));
        assert!(!is_join_answer(
            br#"{"type":"system","content":"User \"u\" joined the room"}"#
        ));
        assert!(is_error_message(
            br#"{"type":"system","content":"Error: x","code":"rate_limited","error":true}"#
        ));
    }
}
