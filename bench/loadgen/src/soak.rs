//! `roomcast-bench soak`: a long run against one roomcast in which innocent chat clients talk, leave and come
//! back while attackers flood, ask for replays, send the largest messages and churn idle connections: the proof
//! that hostile clients do not hurt the innocents.
//!
//! Owns the scenario: who connects when, what each connection sends, what the innocents check in what they
//! receive, the 5-second samples and the final verdict. Everything runs on one mio loop, so the generator's own
//! lag is measured too (how late each send was against its schedule). It talks only to a loopback address, and
//! must not decide anything about the server beyond what it observes on the wire and in `/proc`.
//!
//! - Innocents: v2 clients spread over the rooms; each room gets `--room-rate` messages/s, sent round-robin by
//!   its members, each member kept under its own budget (well inside the server's limits). Every chat message
//!   they receive goes through a [`SeqTracker`]; messages carrying an innocent's stamp are timed.
//! - Churn: `--churn` innocents/s leave with Close 1000 and rejoin on a new connection with their session token
//!   and `since`, so the replay must fill exactly what they missed.
//! - Attackers: flooders (three kinds, see [`FloodKind`]), replay bursts (rejoins of a busy room asking for its
//!   whole history), large-message senders, and idle connections opened and dropped. Each group can be switched
//!   off; attackers the server closes come back, at most `--attacker-reconnects` per second.

pub(crate) mod attack;
mod budget;
pub(crate) mod report;
mod track;
pub(crate) mod wire;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Args;
use mio::{Events, Poll, Token};
use roomcast::protocol::CloseCode;
use serde_json::{json, Value};

use crate::client::{Client, Framing, Masks, Receive, Received};
use crate::stats::{rss_kib, Histogram};
use crate::{round1, round3, secs_to_ns, Clock, Common, CpuMark, ServerKind};
use attack::{FloodKind, FloodStream};
use budget::SendBudget;
use report::{
    close_reason, ClosedByReason, LatencySummary, LatencyWindow, RssCurve, Sample, Verdict,
};
use track::{Arrival, EchoTracker, SeqCounts, SeqTracker};
use wire::{
    classify, escape_heavy_chat_json, join_json, write_innocent_content, Rng, ServerMessage, Stamp,
};

/// Shortest and longest innocent content, bytes.
const CONTENT_MIN: usize = 100;
const CONTENT_MAX: usize = 300;
/// How long a leaving innocent waits for the server's answer to its Close before dropping the connection.
const LEAVE_TIMEOUT_NS: u64 = 5_000_000_000;
/// How long an innocent the server dropped waits before reconnecting.
const DROP_BACKOFF_NS: u64 = 1_000_000_000;
/// A room schedule further behind than this restarts from now instead of catching up in a burst.
const SCHEDULE_SLACK_NS: u64 = 1_000_000_000;
/// How often the server's memory is checked against `--max-server-rss-mib`.
const RSS_CHECK_NS: u64 = 250_000_000;
/// How often leaving innocents are checked for an unanswered Close.
const SWEEP_NS: u64 = 100_000_000;
/// The longest poll wait, so schedules are checked often enough.
const MAX_WAIT_NS: u64 = 5_000_000;
/// Name prefix of the innocents; the stamp's sender index follows it.
const INNOCENT_PREFIX: &str = "inno-";
/// The report name of the idle connection churn.
const IDLE_GROUP: &str = "conn_churn";

/// Options of the soak.
#[derive(Debug, Args)]
pub struct SoakArgs {
    #[command(flatten)]
    common: Common,
    /// Seconds the soak runs once the innocents joined
    #[arg(long, default_value_t = 600.0)]
    duration: f64,
    /// Innocent chat clients
    #[arg(long, default_value_t = 2000)]
    clients: usize,
    /// Rooms the innocents are spread over
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Chat messages per second per room, sent in turn by its innocents
    #[arg(long, default_value_t = 20.0)]
    room_rate: f64,
    /// Innocents per second that leave (Close 1000) and rejoin with their session token and `since`
    #[arg(long, default_value_t = 10.0)]
    churn: f64,
    /// File that gets one JSON line per sample
    #[arg(long)]
    samples: Option<PathBuf>,
    /// Seconds between samples
    #[arg(long, default_value_t = 5.0)]
    sample_every: f64,
    /// The innocents' p99 latency over the run must be under this many milliseconds to pass
    #[arg(long, default_value_t = 50.0)]
    p99_limit_ms: f64,
    /// Stop the soak, failed, as soon as the server's resident memory passes this many MiB (read every 250 ms):
    /// a server that queues without bound must not take the machine down with it
    #[arg(long, default_value_t = 2048)]
    max_server_rss_mib: u64,
    /// Seconds allowed at the end, with nothing more sent, for messages on their way and rejoins to finish
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Seed of the random choices (content, churn picks, hold times)
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Most frames per second an innocent sends, burst twice that (the server allows 20/s, burst 40)
    #[arg(long, default_value_t = 10.0)]
    innocent_max_rate: f64,
    /// Most content bytes per second an innocent sends, burst twice that (assumed server limit: 16 KiB/s)
    #[arg(long, default_value_t = 4096.0)]
    innocent_max_bytes: f64,
    /// No flooding connections
    #[arg(long)]
    no_flood: bool,
    /// No replay bursts
    #[arg(long)]
    no_replay_burst: bool,
    /// No large-message senders
    #[arg(long)]
    no_large: bool,
    /// No idle connection churn
    #[arg(long)]
    no_conn_churn: bool,
    /// Flooding connections of each kind
    #[arg(long, default_value_t = 2)]
    flood_conns: usize,
    /// The kinds of flood (comma-separated)
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = FloodKind::ALL)]
    flood_kinds: Vec<FloodKind>,
    /// Most bytes a flooder writes per loop turn, so the generator keeps serving the innocents
    #[arg(long, default_value_t = 256 * 1024)]
    flood_turn_bytes: usize,
    /// Most attacker reconnects per second, all groups together
    #[arg(long, default_value_t = 5.0)]
    attacker_reconnects: f64,
    /// Replay-burst connections; they join room 0
    #[arg(long, default_value_t = 4)]
    replay_conns: usize,
    /// Rejoins per second of each replay-burst connection, each with `since` at seq 0 of the room's epoch
    #[arg(long, default_value_t = 10.0)]
    replay_rate: f64,
    /// Rooms with large-message senders (rooms 0, 1, ...)
    #[arg(long, default_value_t = 2)]
    large_rooms: usize,
    /// Large-message senders per such room
    #[arg(long, default_value_t = 2)]
    large_senders: usize,
    /// Messages per burst of each large-message sender
    #[arg(long, default_value_t = 4)]
    large_burst: usize,
    /// Seconds between a large-message sender's bursts
    #[arg(long, default_value_t = 1.0)]
    large_every: f64,
    /// Characters of each large message's content, mostly U+0001 (six bytes once JSON-escaped)
    #[arg(long, default_value_t = 4000)]
    large_chars: usize,
    /// Idle connections opened per second and later dropped without a Close
    #[arg(long, default_value_t = 20.0)]
    idle_rate: f64,
    /// Most idle connections open at once
    #[arg(long, default_value_t = 200)]
    idle_max: usize,
    /// Longest an idle connection is held, seconds (each holds between 0.5 s and this)
    #[arg(long, default_value_t = 5.0)]
    idle_hold: f64,
}

/// Entry point of `soak`: prints the summary line; exits 0 when every criterion passed, 3 when one failed, 1 on
/// an error.
pub fn main(args: &SoakArgs) -> ExitCode {
    match run(args) {
        Ok((summary, passed)) => {
            println!("{summary}");
            if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
        Err(e) => {
            eprintln!("roomcast-bench soak: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &SoakArgs) -> io::Result<(Value, bool)> {
    validate(args).map_err(io::Error::other)?;
    let mut soak = Soak::new(args)?;
    soak.setup()?;
    soak.soak()?;
    soak.drain()?;
    Ok(soak.summary())
}

fn validate(args: &SoakArgs) -> Result<(), String> {
    if !args.common.addr.ip().is_loopback() {
        return Err(format!(
            "the soak attacks its server: it only runs against a loopback address, not {}",
            args.common.addr
        ));
    }
    if args.common.server_kind != ServerKind::Roomcast {
        return Err("the soak speaks roomcast's protocol v2 only".into());
    }
    if args.clients == 0 || args.rooms == 0 {
        return Err("--clients and --rooms must be at least 1".into());
    }
    for (name, value) in [
        ("--duration", args.duration),
        ("--sample-every", args.sample_every),
        ("--large-every", args.large_every),
    ] {
        if !(value.is_finite() && value > 0.0) {
            return Err(format!("{name} must be a positive number of seconds"));
        }
    }
    for (name, value) in [
        ("--room-rate", args.room_rate),
        ("--churn", args.churn),
        ("--replay-rate", args.replay_rate),
        ("--idle-rate", args.idle_rate),
        ("--attacker-reconnects", args.attacker_reconnects),
        ("--drain", args.drain),
        ("--idle-hold", args.idle_hold),
    ] {
        if !(value.is_finite() && value >= 0.0) {
            return Err(format!("{name} must be a non-negative number"));
        }
    }
    Ok(())
}

/// Where an innocent is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InnocentPhase {
    /// Not connected; it is in the connect queue.
    Away,
    /// TCP connect and WebSocket handshake under way.
    Connecting,
    /// `join` sent, `joined` not yet received.
    Joining,
    /// In its room.
    Joined,
    /// Close 1000 sent at `since`; waiting for the server's answer.
    Leaving { since: u64 },
}

/// One innocent chat client, across all its connections.
struct Innocent {
    name: String,
    room: usize,
    phase: InnocentPhase,
    session: Option<String>,
    tracker: SeqTracker,
    budget: SendBudget,
    /// Chat messages sent; the stamp's counter of the next one.
    sent: u32,
    /// Its own messages coming back.
    echoes: EchoTracker,
    /// When it last left (or was dropped), until it is back in its room.
    left_at: Option<u64>,
    /// The server closed one of its connections at least once.
    ever_dropped: bool,
}

/// One room and its innocents' sending schedule.
struct Room {
    name: String,
    members: Vec<usize>,
    next_send: u64,
    turn: usize,
    /// The highest seq any innocent received in it.
    latest: u64,
}

/// What the innocents did and suffered.
#[derive(Default)]
struct InnocentTotals {
    sent: u64,
    delivered: u64,
    dropped: u64,
    drop_reasons: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    unexpected: u64,
    chat_before_joined: u64,
    wrong_room: u64,
    sender_mismatch: u64,
    rejoins: u64,
    /// `joined` messages naming someone other than the innocent (its name did not come back).
    name_not_back: u64,
    leave_timeouts: u64,
    leave_unclean: u64,
    sends_skipped: u64,
    schedule_resets: u64,
    connect_errors: u64,
    latency: LatencyWindow,
    rejoin_ns: Histogram,
    send_lag_ns: Histogram,
    send_lag_interval_max: u64,
}

/// The kinds of long-lived attacker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AttackerKind {
    Flood(FloodKind),
    Replay,
    Large,
}

impl AttackerKind {
    fn group(self) -> &'static str {
        match self {
            AttackerKind::Flood(kind) => kind.name(),
            AttackerKind::Replay => "replay_burst",
            AttackerKind::Large => "large_messages",
        }
    }
}

/// Where a long-lived attacker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AttackerPhase {
    Away,
    Connecting,
    Joining,
    Active,
}

/// One long-lived attacker, across its connections.
struct Attacker {
    kind: AttackerKind,
    /// Its name; each connection joins as `{name}.{connections}`, so that a reconnect never finds its
    /// predecessor still holding the name.
    name: String,
    connections: u64,
    room: String,
    slot: usize,
    phase: AttackerPhase,
    connected_at: u64,
    flood: Option<FloodStream>,
    /// The flood hit `WouldBlock`: wait for a writable event.
    blocked: bool,
    epoch: Option<String>,
    next_action: u64,
}

impl Attacker {
    /// The `userId` of its current connection.
    fn user_id(&self) -> String {
        format!("{}.{}", self.name, self.connections)
    }
}

/// What an idle connection does before it is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdleKind {
    /// TCP only: not a byte sent.
    Silent,
    /// The WebSocket handshake, then nothing.
    Upgraded,
    /// The handshake and a `join`, then nothing.
    Joined,
}

/// One idle connection of the churn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IdleConn {
    kind: IdleKind,
    serial: u64,
    opened: u64,
}

/// Who a connection belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Innocent(usize),
    Attacker(usize),
    Idle(IdleConn),
    Free,
}

/// What a connection does with readiness events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Io {
    /// Handshake, then read every message.
    Normal,
    /// Handshake, then never read again (the unread-Pings flooder).
    HandshakeOnly,
    /// Never write; read only to notice the server closing (the silent idle connection).
    Silent,
}

/// One connection slot; its index is the connection's poll token.
struct Slot {
    client: Option<Client>,
    owner: Owner,
}

/// How a connection ended.
struct Ending {
    slot: usize,
    code: Option<u16>,
    reason: String,
}

/// What the attackers did and what the server did to them.
#[derive(Default)]
struct AttackerTotals {
    connections: BTreeMap<&'static str, u64>,
    closed: ClosedByReason,
    lifetime_ns: BTreeMap<&'static str, Histogram>,
    errors: BTreeMap<&'static str, BTreeMap<String, u64>>,
    connect_errors: u64,
    replays_asked: u64,
    replayed_messages: u64,
    large_sent: u64,
    idle_dropped: u64,
    flood_bytes: BTreeMap<&'static str, u64>,
}

/// Everything the message handlers touch: the agents and the tallies.
struct World {
    innocents: Vec<Innocent>,
    rooms: Vec<Room>,
    attackers: Vec<Attacker>,
    innocent_totals: InnocentTotals,
    attacker_totals: AttackerTotals,
}

impl World {
    fn on_message(&mut self, owner: Owner, message: Received<'_>, now: u64) {
        let Received::Text(text) = message else {
            if let Owner::Innocent(_) = owner {
                self.innocent_totals.unexpected += 1;
            }
            return;
        };
        match owner {
            Owner::Innocent(i) => self.innocent_text(i, text, now),
            Owner::Attacker(a) => self.attacker_text(a, text, now),
            Owner::Idle(_) | Owner::Free => {}
        }
    }

    fn innocent_text(&mut self, i: usize, text: &[u8], now: u64) {
        let totals = &mut self.innocent_totals;
        let innocent = &mut self.innocents[i];
        match classify(text) {
            ServerMessage::Chat(chat) => {
                if !matches!(
                    innocent.phase,
                    InnocentPhase::Joined | InnocentPhase::Leaving { .. }
                ) {
                    totals.chat_before_joined += 1;
                    return;
                }
                let room = &mut self.rooms[innocent.room];
                if *chat.room != *room.name {
                    totals.wrong_room += 1;
                    return;
                }
                totals.delivered += 1;
                room.latest = room.latest.max(chat.seq);
                let observed = innocent.tracker.on_chat(chat.seq);
                let Some(stamp) = chat.stamp else {
                    return;
                };
                let from_index = chat
                    .from
                    .strip_prefix(INNOCENT_PREFIX)
                    .and_then(|n| n.parse::<u32>().ok());
                if from_index != Some(stamp.sender) {
                    totals.sender_mismatch += 1;
                }
                if observed.arrival == Arrival::Duplicate {
                    return;
                }
                if !observed.replayed {
                    totals.latency.record(now.saturating_sub(stamp.sent_at));
                }
                if stamp.sender as usize == i {
                    innocent.echoes.on_echo(stamp.counter);
                }
            }
            ServerMessage::Joined(joined) => {
                if innocent.phase != InnocentPhase::Joining {
                    totals.unexpected += 1;
                }
                if joined.user_id != innocent.name {
                    totals.name_not_back += 1;
                }
                innocent.tracker.on_joined(&joined.replay());
                innocent.session = Some(joined.session);
                innocent.phase = InnocentPhase::Joined;
                if let Some(left) = innocent.left_at.take() {
                    totals.rejoins += 1;
                    totals.rejoin_ns.record(now.saturating_sub(left));
                }
            }
            ServerMessage::Error(code) => *totals.errors.entry(code).or_default() += 1,
            ServerMessage::Notice => {}
            ServerMessage::Unexpected => totals.unexpected += 1,
        }
    }

    fn attacker_text(&mut self, a: usize, text: &[u8], now: u64) {
        let attacker = &mut self.attackers[a];
        let totals = &mut self.attacker_totals;
        if text.starts_with(br#"{"type":"joined""#) {
            let ServerMessage::Joined(joined) = classify(text) else {
                return;
            };
            attacker.epoch = Some(joined.epoch);
            totals.replayed_messages += joined.count;
            if attacker.phase == AttackerPhase::Joining {
                attacker.phase = AttackerPhase::Active;
                attacker.next_action = now;
            }
        } else if text.starts_with(br#"{"type":"error""#) {
            if let ServerMessage::Error(code) = classify(text) {
                *totals
                    .errors
                    .entry(attacker.kind.group())
                    .or_default()
                    .entry(code)
                    .or_default() += 1;
            }
        }
    }

    /// Lost and duplicated so far, over every innocent.
    fn seq_counts(&self) -> (SeqCounts, u64) {
        let mut counts = SeqCounts::default();
        let mut own_missing = 0;
        for innocent in &self.innocents {
            counts.add(innocent.tracker.counts());
            own_missing += innocent.echoes.missing();
        }
        (counts, own_missing)
    }

    fn joined_count(&self) -> usize {
        self.innocents
            .iter()
            .filter(|i| i.phase == InnocentPhase::Joined)
            .count()
    }
}

/// The loop and its connections.
struct Soak<'a> {
    args: &'a SoakArgs,
    clock: Clock,
    rng: Rng,
    poll: Poll,
    events: Events,
    slots: Vec<Slot>,
    free_slots: Vec<usize>,
    read_buf: Vec<u8>,
    to_flush: Vec<usize>,
    opened: Vec<usize>,
    ended: Vec<Ending>,
    world: World,
    /// Innocents waiting to connect, by when.
    connect_queue: BinaryHeap<Reverse<(u64, usize)>>,
    /// Attackers waiting for a reconnect token.
    attacker_queue: VecDeque<usize>,
    reconnect_tokens: f64,
    tokens_at: u64,
    /// Idle connections to drop, by when: (time, slot, serial).
    idle_drops: BinaryHeap<Reverse<(u64, usize, u64)>>,
    idle_open: usize,
    idle_serial: u64,
    next_idle: u64,
    next_churn: u64,
    flood_cycles: BTreeMap<&'static str, Rc<[u8]>>,
    flood_mask: [u8; 4],
    content: Vec<u8>,
    large_chat: Vec<u8>,
    /// When the soak proper started (after setup), and the setup's length.
    started_at: u64,
    setup_ns: u64,
    samples_file: Option<File>,
    sample_cpu: Option<CpuMark>,
    run_cpu: Option<CpuMark>,
    run_end_cpu: Option<CpuMark>,
    rss: RssCurve,
    /// Why the soak stopped before its time, if it did.
    aborted: Option<String>,
    ending: bool,
    /// How long the handling of one poll's events took: a delivery handled last in a turn is timed this much
    /// late, so this bounds the latency the generator itself adds.
    turn_busy_ns: Histogram,
    turn_busy_interval_max: u64,
}

impl<'a> Soak<'a> {
    fn new(args: &'a SoakArgs) -> io::Result<Soak<'a>> {
        let clock = Clock(Instant::now());
        let mut rng = Rng::new(args.seed);
        let rooms: Vec<Room> = (0..args.rooms)
            .map(|r| Room {
                name: format!("soak-{r}"),
                members: Vec::new(),
                next_send: 0,
                turn: 0,
                latest: 0,
            })
            .collect();
        let mut world = World {
            innocents: Vec::with_capacity(args.clients),
            rooms,
            attackers: Vec::new(),
            innocent_totals: InnocentTotals::default(),
            attacker_totals: AttackerTotals::default(),
        };
        let mut slots = Vec::new();
        for i in 0..args.clients {
            let room = i % args.rooms;
            world.rooms[room].members.push(i);
            world.innocents.push(Innocent {
                name: format!("{INNOCENT_PREFIX}{i}"),
                room,
                phase: InnocentPhase::Away,
                session: None,
                tracker: SeqTracker::default(),
                budget: SendBudget::new(args.innocent_max_rate, args.innocent_max_bytes, 0),
                sent: 0,
                echoes: EchoTracker::default(),
                left_at: None,
                ever_dropped: false,
            });
            slots.push(Slot {
                client: None,
                owner: Owner::Innocent(i),
            });
        }
        let mut add_attacker = |world: &mut World, kind: AttackerKind, room: String| {
            let a = world.attackers.len();
            let prefix = match kind {
                AttackerKind::Flood(_) => "flood",
                AttackerKind::Replay => "replay",
                AttackerKind::Large => "big",
            };
            world.attackers.push(Attacker {
                kind,
                name: format!("{prefix}-{a}"),
                room,
                slot: slots.len(),
                phase: AttackerPhase::Away,
                connected_at: 0,
                connections: 0,
                flood: None,
                blocked: false,
                epoch: None,
                next_action: 0,
            });
            slots.push(Slot {
                client: None,
                owner: Owner::Attacker(a),
            });
        };
        if !args.no_flood {
            for &kind in &args.flood_kinds {
                for k in 0..args.flood_conns {
                    add_attacker(
                        &mut world,
                        AttackerKind::Flood(kind),
                        format!("soak-{}", (k * 7 + 3) % args.rooms),
                    );
                }
            }
        }
        if !args.no_replay_burst {
            for _ in 0..args.replay_conns {
                add_attacker(&mut world, AttackerKind::Replay, "soak-0".to_owned());
            }
        }
        if !args.no_large {
            for room in 0..args.large_rooms.min(args.rooms) {
                for _ in 0..args.large_senders {
                    add_attacker(&mut world, AttackerKind::Large, format!("soak-{room}"));
                }
            }
        }
        let flood_mask = (rng.next_u64() as u32).to_le_bytes();
        let flood_cycles = FloodKind::ALL
            .into_iter()
            .map(|kind| (kind.name(), kind.cycle(flood_mask)))
            .collect();
        let samples_file = args.samples.as_ref().map(File::create).transpose()?;
        Ok(Soak {
            args,
            clock,
            rng,
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            slots,
            free_slots: Vec::new(),
            read_buf: vec![0; 256 * 1024],
            to_flush: Vec::new(),
            opened: Vec::new(),
            ended: Vec::new(),
            world,
            connect_queue: BinaryHeap::new(),
            attacker_queue: VecDeque::new(),
            reconnect_tokens: 0.0,
            tokens_at: 0,
            idle_drops: BinaryHeap::new(),
            idle_open: 0,
            idle_serial: 0,
            next_idle: 0,
            next_churn: 0,
            flood_cycles,
            flood_mask,
            content: Vec::with_capacity(CONTENT_MAX),
            large_chat: escape_heavy_chat_json(args.large_chars),
            started_at: 0,
            setup_ns: 0,
            samples_file,
            sample_cpu: None,
            run_cpu: None,
            run_end_cpu: None,
            rss: RssCurve::default(),
            aborted: None,
            ending: false,
            turn_busy_ns: Histogram::default(),
            turn_busy_interval_max: 0,
        })
    }

    /// Opens a connection in `slot` (whose owner is already set).
    fn connect(&mut self, slot: usize) -> io::Result<()> {
        let common = &self.args.common;
        let client = Client::connect(
            common.addr,
            Framing::WebSocket,
            if common.full_codec {
                Receive::Connection
            } else {
                Receive::Frames
            },
            "/ws",
            if common.fast_masks {
                Masks::Fast {
                    seed: self.rng.next_u64(),
                }
            } else {
                Masks::Random
            },
            self.poll.registry(),
            Token(slot),
        )?;
        self.slots[slot].client = Some(client);
        Ok(())
    }

    fn mark(&mut self, slot: usize) {
        self.to_flush.push(slot);
    }

    fn flush_marked(&mut self) {
        self.to_flush.sort_unstable();
        self.to_flush.dedup();
        for slot in std::mem::take(&mut self.to_flush) {
            let Some(client) = self.slots[slot].client.as_mut() else {
                continue;
            };
            if let Err(e) = client.flush() {
                self.ended.push(Ending {
                    slot,
                    code: None,
                    reason: close_reason(client.server_close(), Some(&e)),
                });
            }
        }
    }

    /// Connects and joins every innocent, `connect_batch` at a time; the soak proper starts after.
    fn setup(&mut self) -> io::Result<()> {
        for i in 0..self.args.clients {
            self.connect_queue.push(Reverse((0, i)));
        }
        let deadline = self.clock.now() + secs_to_ns(self.args.common.setup_timeout);
        let batch = self.args.common.connect_batch.max(1);
        loop {
            let now = self.clock.now();
            let joined = self.world.joined_count();
            if joined == self.args.clients {
                break;
            }
            if now > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "only {joined} of {} innocents joined in {} s; drops: {:?}",
                        self.args.clients,
                        self.args.common.setup_timeout,
                        self.world.innocent_totals.drop_reasons
                    ),
                ));
            }
            let in_progress = self
                .world
                .innocents
                .iter()
                .filter(|i| matches!(i.phase, InnocentPhase::Connecting | InnocentPhase::Joining))
                .count();
            self.connect_innocents(now, batch.saturating_sub(in_progress));
            self.flush_marked();
            self.turn(Duration::from_millis(10))?;
        }
        self.setup_ns = self.clock.now();
        Ok(())
    }

    /// Connects up to `most` innocents whose time has come.
    fn connect_innocents(&mut self, now: u64, most: usize) {
        for _ in 0..most {
            match self.connect_queue.peek() {
                Some(Reverse((at, _))) if *at <= now => {}
                _ => return,
            }
            let Some(Reverse((_, i))) = self.connect_queue.pop() else {
                return;
            };
            match self.connect(i) {
                Ok(()) => self.world.innocents[i].phase = InnocentPhase::Connecting,
                Err(_) => {
                    self.world.innocent_totals.connect_errors += 1;
                    self.connect_queue.push(Reverse((now + DROP_BACKOFF_NS, i)));
                }
            }
        }
    }

    /// The soak proper: innocents talk and churn, attackers attack, samples are taken.
    fn soak(&mut self) -> io::Result<()> {
        let args = self.args;
        let start = self.clock.now();
        self.started_at = start;
        let end = start + secs_to_ns(args.duration);
        let room_interval = rate_interval(args.room_rate);
        let rooms = self.world.rooms.len() as u64;
        for (r, room) in self.world.rooms.iter_mut().enumerate() {
            room.next_send = start + room_interval.unwrap_or(0) * r as u64 / rooms;
        }
        self.next_churn = start + rate_interval(args.churn).unwrap_or(0);
        self.next_idle = start;
        self.tokens_at = start;
        for a in 0..self.world.attackers.len() {
            self.connect_attacker(a, start);
        }
        self.run_cpu = Some(CpuMark::take(self.clock, args.common.server_pid));
        self.sample_cpu = Some(CpuMark::take(self.clock, args.common.server_pid));
        let sample_every = secs_to_ns(args.sample_every);
        let mut next_sample = start + sample_every;
        let mut next_sweep = start;
        let mut next_rss_check = start;
        loop {
            let now = self.clock.now();
            if now >= end {
                break;
            }
            if now >= next_rss_check {
                next_rss_check = now + RSS_CHECK_NS;
                if self.server_rss_over_limit(now) {
                    break;
                }
            }
            if now >= next_sample {
                self.sample(now)?;
                next_sample += sample_every;
            }
            self.send_innocent_chat(now, room_interval);
            self.churn(now);
            if now >= next_sweep {
                self.leave_timeouts(now);
                next_sweep = now + SWEEP_NS;
            }
            self.connect_innocents(now, usize::MAX);
            self.reconnect_attackers(now);
            self.act_attackers(now);
            self.churn_idle(now);
            self.flush_marked();
            let flooding = self.pump_floods();
            let wait = if flooding {
                0
            } else {
                self.next_deadline(now, end, next_sample, room_interval)
                    .saturating_sub(self.clock.now())
            };
            self.turn(Duration::from_nanos(wait.min(MAX_WAIT_NS)))?;
        }
        let now = self.clock.now();
        self.sample(now)?;
        self.run_end_cpu = Some(CpuMark::take(self.clock, args.common.server_pid));
        Ok(())
    }

    /// Reads the server's memory; true (and the soak marked aborted) if it is over `--max-server-rss-mib`.
    fn server_rss_over_limit(&mut self, now: u64) -> bool {
        let Some(kib) = self.args.common.server_pid.and_then(rss_kib) else {
            return false;
        };
        if kib <= self.args.max_server_rss_mib.saturating_mul(1024) {
            return false;
        }
        let t_s = now.saturating_sub(self.started_at) as f64 / 1e9;
        self.rss.observe(t_s, kib);
        let reason = format!(
            "server RSS {} MiB passed --max-server-rss-mib {} at {t_s:.1} s",
            kib / 1024,
            self.args.max_server_rss_mib
        );
        eprintln!("roomcast-bench soak: stopping: {reason}");
        self.aborted = Some(reason);
        true
    }

    /// The earliest time something is scheduled.
    fn next_deadline(
        &self,
        now: u64,
        end: u64,
        next_sample: u64,
        room_interval: Option<u64>,
    ) -> u64 {
        let mut next = end.min(next_sample);
        if room_interval.is_some() {
            if let Some(room) = self.world.rooms.iter().map(|r| r.next_send).min() {
                next = next.min(room);
            }
        }
        if self.args.churn > 0.0 {
            next = next.min(self.next_churn);
        }
        if let Some(Reverse((at, _))) = self.connect_queue.peek() {
            next = next.min(*at);
        }
        if let Some(Reverse((at, _, _))) = self.idle_drops.peek() {
            next = next.min(*at);
        }
        if !self.args.no_conn_churn && self.args.idle_rate > 0.0 {
            next = next.min(self.next_idle);
        }
        for attacker in &self.world.attackers {
            if attacker.phase == AttackerPhase::Active
                && matches!(attacker.kind, AttackerKind::Replay | AttackerKind::Large)
            {
                next = next.min(attacker.next_action);
            }
        }
        if !self.attacker_queue.is_empty() {
            next = next.min(now + 10_000_000);
        }
        next
    }

    /// Each room's next messages, from whichever of its joined innocents has budget, in turn.
    fn send_innocent_chat(&mut self, now: u64, room_interval: Option<u64>) {
        let Some(interval) = room_interval else {
            return;
        };
        for r in 0..self.world.rooms.len() {
            if self.world.rooms[r].members.is_empty() {
                continue;
            }
            while self.world.rooms[r].next_send <= now {
                let due = self.world.rooms[r].next_send;
                let totals = &mut self.world.innocent_totals;
                let lag = now - due;
                totals.send_lag_ns.record(lag);
                totals.send_lag_interval_max = totals.send_lag_interval_max.max(lag);
                if lag > SCHEDULE_SLACK_NS {
                    totals.schedule_resets += 1;
                    self.world.rooms[r].next_send = now + interval;
                } else {
                    self.world.rooms[r].next_send += interval;
                }
                self.send_one_chat(r, now);
            }
        }
    }

    fn send_one_chat(&mut self, r: usize, now: u64) {
        let members = self.world.rooms[r].members.len();
        for _ in 0..members {
            let room = &mut self.world.rooms[r];
            let i = room.members[room.turn % members];
            room.turn = room.turn.wrapping_add(1);
            let innocent = &mut self.world.innocents[i];
            if innocent.phase != InnocentPhase::Joined
                || !innocent.budget.try_spend(now, CONTENT_MAX)
            {
                continue;
            }
            let stamp = Stamp {
                sent_at: self.clock.now(),
                sender: i as u32,
                counter: innocent.sent,
            };
            innocent.sent += 1;
            write_innocent_content(
                &mut self.content,
                stamp,
                &mut self.rng,
                CONTENT_MIN,
                CONTENT_MAX,
            );
            if let Some(client) = self.slots[i].client.as_mut() {
                client.send_chat(&self.content);
            }
            self.world.innocent_totals.sent += 1;
            self.mark(i);
            return;
        }
        self.world.innocent_totals.sends_skipped += 1;
    }

    /// Innocents leaving, `--churn` per second: a clean Close 1000.
    fn churn(&mut self, now: u64) {
        let Some(interval) = rate_interval(self.args.churn) else {
            return;
        };
        while self.next_churn <= now {
            self.next_churn = if now - self.next_churn > SCHEDULE_SLACK_NS {
                now + interval
            } else {
                self.next_churn + interval
            };
            for _ in 0..16 {
                let i = self.rng.below(self.world.innocents.len() as u64) as usize;
                if self.world.innocents[i].phase != InnocentPhase::Joined {
                    continue;
                }
                if let Some(client) = self.slots[i].client.as_mut() {
                    client.send_close(CloseCode::NORMAL, "soak churn");
                }
                let innocent = &mut self.world.innocents[i];
                innocent.phase = InnocentPhase::Leaving { since: now };
                innocent.left_at = Some(now);
                self.mark(i);
                break;
            }
        }
    }

    /// Leaving innocents whose Close went unanswered too long: dropped by us, and back in the queue.
    fn leave_timeouts(&mut self, now: u64) {
        for i in 0..self.world.innocents.len() {
            if let InnocentPhase::Leaving { since } = self.world.innocents[i].phase {
                if now - since > LEAVE_TIMEOUT_NS {
                    self.world.innocent_totals.leave_timeouts += 1;
                    if let Some(mut client) = self.slots[i].client.take() {
                        client.close(self.poll.registry());
                    }
                    self.world.innocents[i].phase = InnocentPhase::Away;
                    self.connect_queue.push(Reverse((now, i)));
                }
            }
        }
    }

    fn connect_attacker(&mut self, a: usize, now: u64) {
        let slot = self.world.attackers[a].slot;
        let group = self.world.attackers[a].kind.group();
        match self.connect(slot) {
            Ok(()) => {
                let attacker = &mut self.world.attackers[a];
                attacker.phase = AttackerPhase::Connecting;
                attacker.connected_at = now;
                attacker.connections += 1;
                attacker.flood = None;
                attacker.blocked = false;
                *self
                    .world
                    .attacker_totals
                    .connections
                    .entry(group)
                    .or_default() += 1;
            }
            Err(_) => {
                self.world.attacker_totals.connect_errors += 1;
                self.attacker_queue.push_back(a);
            }
        }
    }

    /// Attackers the server closed come back, at most `--attacker-reconnects` per second.
    fn reconnect_attackers(&mut self, now: u64) {
        let rate = self.args.attacker_reconnects;
        let burst = rate.max(1.0);
        self.reconnect_tokens =
            (self.reconnect_tokens + (now - self.tokens_at) as f64 / 1e9 * rate).min(burst);
        self.tokens_at = now;
        while self.reconnect_tokens >= 1.0 {
            let Some(a) = self.attacker_queue.pop_front() else {
                break;
            };
            self.reconnect_tokens -= 1.0;
            self.connect_attacker(a, now);
        }
    }

    /// Replay bursts and large-message bursts that are due.
    fn act_attackers(&mut self, now: u64) {
        let replay_interval = rate_interval(self.args.replay_rate);
        let large_interval = secs_to_ns(self.args.large_every);
        for a in 0..self.world.attackers.len() {
            let attacker = &mut self.world.attackers[a];
            if attacker.phase != AttackerPhase::Active || attacker.next_action > now {
                continue;
            }
            let Some(client) = self.slots[attacker.slot].client.as_mut() else {
                continue;
            };
            match attacker.kind {
                AttackerKind::Replay => {
                    let Some(interval) = replay_interval else {
                        continue;
                    };
                    if let Some(epoch) = &attacker.epoch {
                        client.send_text(&join_json(
                            &attacker.user_id(),
                            &attacker.room,
                            None,
                            Some((epoch, 0)),
                        ));
                        self.world.attacker_totals.replays_asked += 1;
                    }
                    attacker.next_action = (attacker.next_action + interval).max(now);
                }
                AttackerKind::Large => {
                    for _ in 0..self.args.large_burst {
                        client.send_text(&self.large_chat);
                    }
                    self.world.attacker_totals.large_sent += self.args.large_burst as u64;
                    attacker.next_action = (attacker.next_action + large_interval).max(now);
                }
                AttackerKind::Flood(_) => continue,
            }
            let slot = attacker.slot;
            self.mark(slot);
        }
    }

    /// Idle connections: open `--idle-rate` per second (up to `--idle-max`), drop those whose time is up.
    fn churn_idle(&mut self, now: u64) {
        while let Some(&Reverse((at, slot, serial))) = self.idle_drops.peek() {
            if at > now {
                break;
            }
            self.idle_drops.pop();
            if let Owner::Idle(conn) = self.slots[slot].owner {
                if conn.serial == serial {
                    if let Some(mut client) = self.slots[slot].client.take() {
                        client.close(self.poll.registry());
                    }
                    self.free_idle(slot);
                    self.world.attacker_totals.idle_dropped += 1;
                }
            }
        }
        if self.args.no_conn_churn || self.ending {
            return;
        }
        let Some(interval) = rate_interval(self.args.idle_rate) else {
            return;
        };
        while self.next_idle <= now {
            self.next_idle = if now - self.next_idle > SCHEDULE_SLACK_NS {
                now + interval
            } else {
                self.next_idle + interval
            };
            if self.idle_open >= self.args.idle_max {
                continue;
            }
            let serial = self.idle_serial;
            self.idle_serial += 1;
            let kind =
                [IdleKind::Silent, IdleKind::Upgraded, IdleKind::Joined][(serial % 3) as usize];
            let slot = self.free_slots.pop().unwrap_or_else(|| {
                self.slots.push(Slot {
                    client: None,
                    owner: Owner::Free,
                });
                self.slots.len() - 1
            });
            self.slots[slot].owner = Owner::Idle(IdleConn {
                kind,
                serial,
                opened: now,
            });
            if self.connect(slot).is_err() {
                self.world.attacker_totals.connect_errors += 1;
                self.slots[slot].owner = Owner::Free;
                self.free_slots.push(slot);
                continue;
            }
            self.idle_open += 1;
            *self
                .world
                .attacker_totals
                .connections
                .entry(IDLE_GROUP)
                .or_default() += 1;
            let hold = secs_to_ns(self.rng.uniform(0.5, self.args.idle_hold.max(0.5)));
            self.idle_drops.push(Reverse((now + hold, slot, serial)));
        }
    }

    fn free_idle(&mut self, slot: usize) {
        self.slots[slot].owner = Owner::Free;
        self.free_slots.push(slot);
        self.idle_open = self.idle_open.saturating_sub(1);
    }

    /// Writes flood frames for every flooder not blocked; true if one could write more at once.
    fn pump_floods(&mut self) -> bool {
        let mut more = false;
        for a in 0..self.world.attackers.len() {
            let attacker = &mut self.world.attackers[a];
            if attacker.phase != AttackerPhase::Active || attacker.blocked {
                continue;
            }
            let Some(flood) = attacker.flood.as_mut() else {
                continue;
            };
            let Some(client) = self.slots[attacker.slot].client.as_mut() else {
                continue;
            };
            let mut result = Ok(());
            if client.has_output() {
                result = client.flush();
            }
            let mut budget = self.args.flood_turn_bytes.max(1);
            while result.is_ok() && budget > 0 {
                if client.has_output() {
                    attacker.blocked = true;
                    break;
                }
                let chunk = flood.next_chunk();
                let take = chunk.len().min(budget);
                match client.write_direct(&chunk[..take]) {
                    Ok(0) => {
                        attacker.blocked = true;
                        break;
                    }
                    Ok(n) => {
                        flood.advance(n);
                        budget -= n;
                    }
                    Err(e) => result = Err(e),
                }
            }
            match result {
                Ok(()) => more |= !attacker.blocked,
                Err(e) => self.ended.push(Ending {
                    slot: attacker.slot,
                    code: None,
                    reason: close_reason(client.server_close(), Some(&e)),
                }),
            }
        }
        if !self.ended.is_empty() {
            self.finish_ended();
        }
        more
    }

    /// One poll, its events handled, then the connections that opened or ended.
    fn turn(&mut self, timeout: Duration) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let busy_from = self.clock.now();
        let Soak {
            events,
            slots,
            world,
            read_buf,
            opened,
            ended,
            clock,
            ..
        } = self;
        for event in events.iter() {
            let index = event.token().0;
            let Some(Slot { client, owner }) = slots.get_mut(index) else {
                continue;
            };
            let owner = *owner;
            let io_mode = io_mode(world, owner);
            let Some(client) = client.as_mut() else {
                continue;
            };
            if client.is_closed() {
                continue;
            }
            let was_open = client.is_open();
            let peer_closed = event.is_read_closed() || event.is_error();
            let mut outcome = Ok(true);
            if io_mode == Io::Silent {
                if event.is_readable() || peer_closed {
                    outcome = client.read_discard(read_buf);
                }
            } else {
                if event.is_writable() {
                    if let Err(e) = client.on_writable() {
                        outcome = Err(e);
                    }
                    if let Owner::Attacker(a) = owner {
                        world.attackers[a].blocked = false;
                    }
                }
                let reads = io_mode == Io::Normal || !was_open;
                if outcome.is_ok() && reads && (event.is_readable() || peer_closed) {
                    let now = clock.now();
                    outcome =
                        client.read(read_buf, peer_closed, |m| world.on_message(owner, m, now));
                    if matches!(outcome, Ok(true)) && client.has_output() {
                        if let Err(e) = client.flush() {
                            outcome = Err(e);
                        }
                    }
                }
            }
            if !was_open && client.is_open() {
                opened.push(index);
            }
            let close_code = |c: &Client| c.server_close().and_then(|f| f.code).map(u16::from);
            match outcome {
                Ok(true) => {}
                Ok(false) => ended.push(Ending {
                    slot: index,
                    code: close_code(client),
                    reason: close_reason(client.server_close(), None),
                }),
                Err(e) => ended.push(Ending {
                    slot: index,
                    code: close_code(client),
                    reason: close_reason(client.server_close(), Some(&e)),
                }),
            }
        }
        let now = self.clock.now();
        if !self.events.is_empty() {
            let busy = now - busy_from;
            self.turn_busy_ns.record(busy);
            self.turn_busy_interval_max = self.turn_busy_interval_max.max(busy);
        }
        for slot in std::mem::take(&mut self.opened) {
            self.on_open(slot, now);
        }
        self.finish_ended();
        Ok(())
    }

    /// A connection completed its handshake: send its `join`, start its flood.
    fn on_open(&mut self, slot: usize, now: u64) {
        let owner = self.slots[slot].owner;
        let Some(client) = self.slots[slot].client.as_mut() else {
            return;
        };
        match owner {
            Owner::Innocent(i) => {
                let innocent = &mut self.world.innocents[i];
                let room = &self.world.rooms[innocent.room].name;
                innocent.budget.try_spend(now, 0);
                client.send_text(&join_json(
                    &innocent.name,
                    room,
                    innocent.session.as_deref(),
                    innocent.tracker.since(),
                ));
                innocent.phase = InnocentPhase::Joining;
            }
            Owner::Attacker(a) => {
                let attacker = &mut self.world.attackers[a];
                match attacker.kind {
                    AttackerKind::Flood(kind) => {
                        if kind.joins() {
                            client.send_text(&join_json(
                                &attacker.user_id(),
                                &attacker.room,
                                None,
                                None,
                            ));
                        }
                        let cycle = self.flood_cycles[kind.name()].clone();
                        attacker.flood =
                            Some(FloodStream::new(kind.prefix(self.flood_mask), cycle));
                        attacker.blocked = false;
                        attacker.phase = AttackerPhase::Active;
                    }
                    AttackerKind::Replay | AttackerKind::Large => {
                        client.send_text(&join_json(
                            &attacker.user_id(),
                            &attacker.room,
                            None,
                            None,
                        ));
                        attacker.phase = AttackerPhase::Joining;
                    }
                }
            }
            Owner::Idle(conn) => {
                if conn.kind == IdleKind::Joined {
                    let room = conn.serial as usize % self.world.rooms.len();
                    client.send_text(&join_json(
                        &format!("idle-{}", conn.serial),
                        &self.world.rooms[room].name,
                        None,
                        None,
                    ));
                }
            }
            Owner::Free => {}
        }
        self.mark(slot);
    }

    /// Connections that ended: innocents are counted dropped (unless they were leaving) and queued to come back,
    /// attackers are counted closed and queued for a reconnect token, idle slots are freed.
    fn finish_ended(&mut self) {
        let now = self.clock.now();
        for ending in std::mem::take(&mut self.ended) {
            let Some(mut client) = self.slots[ending.slot].client.take() else {
                continue;
            };
            client.close(self.poll.registry());
            match self.slots[ending.slot].owner {
                Owner::Innocent(i) => {
                    let innocent = &mut self.world.innocents[i];
                    let totals = &mut self.world.innocent_totals;
                    let back_at = if let InnocentPhase::Leaving { .. } = innocent.phase {
                        if ending.code != Some(1000) {
                            totals.leave_unclean += 1;
                        }
                        now
                    } else {
                        totals.dropped += 1;
                        *totals.drop_reasons.entry(ending.reason).or_default() += 1;
                        innocent.ever_dropped = true;
                        innocent.left_at.get_or_insert(now);
                        now + DROP_BACKOFF_NS
                    };
                    innocent.phase = InnocentPhase::Away;
                    self.connect_queue.push(Reverse((back_at, i)));
                }
                Owner::Attacker(a) => {
                    let attacker = &mut self.world.attackers[a];
                    let group = attacker.kind.group();
                    let totals = &mut self.world.attacker_totals;
                    totals.closed.add(group, ending.reason);
                    totals
                        .lifetime_ns
                        .entry(group)
                        .or_default()
                        .record(now.saturating_sub(attacker.connected_at));
                    attacker.phase = AttackerPhase::Away;
                    retire_flood(attacker, &mut totals.flood_bytes);
                    if !self.ending {
                        self.attacker_queue.push_back(a);
                    }
                }
                Owner::Idle(conn) => {
                    let totals = &mut self.world.attacker_totals;
                    totals.closed.add(IDLE_GROUP, ending.reason);
                    totals
                        .lifetime_ns
                        .entry(IDLE_GROUP)
                        .or_default()
                        .record(now.saturating_sub(conn.opened));
                    self.free_idle(ending.slot);
                }
                Owner::Free => {}
            }
        }
    }

    /// Writes one sample line (and a short progress line to stderr).
    fn sample(&mut self, now: u64) -> io::Result<()> {
        let pid = self.args.common.server_pid;
        let mark = CpuMark::take(self.clock, pid);
        let (_, generator_cpu, server_cpu) = match &self.sample_cpu {
            Some(previous) => previous.until(&mark),
            None => (0.0, None, None),
        };
        self.sample_cpu = Some(mark);
        let t_s = now.saturating_sub(self.started_at) as f64 / 1e9;
        let rss = pid.and_then(rss_kib);
        if let Some(kib) = rss {
            self.rss.observe(t_s, kib);
        }
        let (counts, own_missing) = self.world.seq_counts();
        let totals = &mut self.world.innocent_totals;
        let latency = totals.latency.take_interval();
        let send_lag_max_ms = std::mem::take(&mut totals.send_lag_interval_max) as f64 / 1e6;
        let mut attackers_open = BTreeMap::new();
        for attacker in &self.world.attackers {
            if attacker.phase != AttackerPhase::Away {
                *attackers_open.entry(attacker.kind.group()).or_default() += 1;
            }
        }
        if self.idle_open > 0 {
            attackers_open.insert(IDLE_GROUP, self.idle_open as u64);
        }
        let sample = Sample {
            t_s,
            rss_kib: rss,
            server_cpu_pct: server_cpu,
            generator_cpu_pct: generator_cpu,
            innocents_connected: self.world.joined_count(),
            innocents_dropped: self.world.innocent_totals.dropped,
            lost: counts.lost + own_missing,
            duplicated: counts.duplicates,
            latency,
            sent: self.world.innocent_totals.sent,
            delivered: self.world.innocent_totals.delivered,
            rejoins: self.world.innocent_totals.rejoins,
            send_lag_max_ms,
            generator_turn_max_ms: std::mem::take(&mut self.turn_busy_interval_max) as f64 / 1e6,
            attackers_open,
            attackers_closed: self.world.attacker_totals.closed.clone(),
        };
        if let Some(file) = self.samples_file.as_mut() {
            writeln!(file, "{}", sample.to_json())?;
            file.flush()?;
        }
        eprintln!(
            "t={:>5.0}s rss={} KiB joined={} dropped={} lost={} dup={} p99={:.2} ms max={:.2} ms \
             gen_cpu={}% gen_turn_max={:.1} ms server_cpu={}% attackers_closed={}",
            t_s,
            rss.map_or("?".into(), |k| k.to_string()),
            sample.innocents_connected,
            sample.innocents_dropped,
            sample.lost,
            sample.duplicated,
            latency.p99_ms,
            latency.max_ms,
            generator_cpu.map_or("?".into(), |c| format!("{c:.0}")),
            sample.generator_turn_max_ms,
            server_cpu.map_or("?".into(), |c| format!("{c:.0}")),
            sample.attackers_closed.total(),
        );
        Ok(())
    }

    /// The end: attackers go, nothing more is sent, and the innocents get `--drain` seconds to receive what is on
    /// its way and to finish rejoining. Then what each did not receive of its room's messages is counted lost.
    fn drain(&mut self) -> io::Result<()> {
        self.ending = true;
        for slot in 0..self.slots.len() {
            match self.slots[slot].owner {
                Owner::Attacker(a) => {
                    if let Some(mut client) = self.slots[slot].client.take() {
                        client.close(self.poll.registry());
                    }
                    let attacker = &mut self.world.attackers[a];
                    attacker.phase = AttackerPhase::Away;
                    retire_flood(attacker, &mut self.world.attacker_totals.flood_bytes);
                }
                Owner::Idle(_) => {
                    if let Some(mut client) = self.slots[slot].client.take() {
                        client.close(self.poll.registry());
                    }
                    self.free_idle(slot);
                }
                Owner::Innocent(_) | Owner::Free => {}
            }
        }
        self.attacker_queue.clear();
        self.idle_drops.clear();
        let deadline = self.clock.now() + secs_to_ns(self.args.drain);
        let mut settled_since = None;
        loop {
            let now = self.clock.now();
            if now >= deadline {
                break;
            }
            let settled = self
                .world
                .innocents
                .iter()
                .all(|i| i.phase == InnocentPhase::Joined && i.echoes.all_back(i.sent));
            match (settled, settled_since) {
                (false, _) => settled_since = None,
                (true, None) => settled_since = Some(now),
                (true, Some(since)) if now - since > 300_000_000 => break,
                (true, Some(_)) => {}
            }
            self.leave_timeouts(now);
            self.connect_innocents(now, usize::MAX);
            self.flush_marked();
            self.turn(Duration::from_millis(5))?;
        }
        let World {
            innocents, rooms, ..
        } = &mut self.world;
        for innocent in innocents.iter_mut() {
            if innocent.phase == InnocentPhase::Joined {
                innocent.tracker.settle_tail(rooms[innocent.room].latest);
            }
            innocent.echoes.settle(innocent.sent);
        }
        Ok(())
    }

    /// The summary line and whether the run passed.
    fn summary(&self) -> (Value, bool) {
        let args = self.args;
        let world = &self.world;
        let totals = &world.innocent_totals;
        let attackers = &world.attacker_totals;
        let (counts, own_missing) = world.seq_counts();
        let lost = counts.lost + own_missing;
        let latency = totals.latency.whole();
        let verdict = Verdict::judge(
            totals.dropped,
            lost,
            counts.duplicates,
            latency.p99_ms,
            args.p99_limit_ms,
            self.aborted.is_none(),
        );
        let (duration, generator_cpu, server_cpu) = match (&self.run_cpu, &self.run_end_cpu) {
            (Some(start), Some(end)) => start.until(end),
            _ => (0.0, None, None),
        };
        let ms = |h: &Histogram| LatencySummary::of(h).to_json();
        let send_lag = LatencySummary::of(&totals.send_lag_ns);
        let rejoin = LatencySummary::of(&totals.rejoin_ns);
        let mut notes = Vec::new();
        if let Some(reason) = &self.aborted {
            notes.push(format!("stopped early: {reason}"));
        }
        if send_lag.p99_ms > args.p99_limit_ms / 5.0 {
            notes.push(format!(
                "the generator's own sends were late by {:.1} ms at p99: the machine delayed the generator too, \
                 so part of the innocents' latency is not the server's",
                send_lag.p99_ms
            ));
        }
        if counts.beyond_history > 0 {
            notes.push(format!(
                "{} messages were older than the room's history when churned innocents came back (rejoin p99 \
                 {:.0} ms); they are not counted as lost",
                counts.beyond_history, rejoin.p99_ms
            ));
        }
        let lifetimes: BTreeMap<&str, Value> = attackers
            .lifetime_ns
            .iter()
            .map(|(group, h)| {
                let s = LatencySummary::of(h);
                (
                    *group,
                    json!({"count": s.count, "p50_s": round3(s.p50_ms / 1e3), "max_s": round3(s.max_ms / 1e3)}),
                )
            })
            .collect();
        let summary = json!({
            "scenario": "soak",
            "label": args.common.label,
            "duration_s": round3(duration),
            "aborted": self.aborted,
            "setup_s": round3(self.setup_ns as f64 / 1e9),
            "clients": args.clients,
            "rooms": args.rooms,
            "room_rate": args.room_rate,
            "churn_per_s": args.churn,
            "innocents": {
                "sent": totals.sent,
                "delivered": totals.delivered,
                "replayed": counts.replayed,
                "connected_at_end": world.joined_count(),
                "dropped": totals.dropped,
                "innocents_ever_dropped": world.innocents.iter().filter(|i| i.ever_dropped).count(),
                "drop_reasons": totals.drop_reasons,
                "lost": lost,
                "lost_detail": {"seq_gaps_and_tail": counts.lost, "own_never_echoed": own_missing},
                "duplicated": counts.duplicates,
                "late": counts.late,
                "beyond_history": counts.beyond_history,
                "epoch_resets": counts.epoch_resets,
                "replay_miscounts": counts.replay_miscounts,
                "errors": totals.errors,
                "unexpected": totals.unexpected,
                "chat_before_joined": totals.chat_before_joined,
                "wrong_room": totals.wrong_room,
                "sender_mismatch": totals.sender_mismatch,
                "rejoins": totals.rejoins,
                "name_not_back": totals.name_not_back,
                "rejoin_ms": ms(&totals.rejoin_ns),
                "leave_timeouts": totals.leave_timeouts,
                "leave_unclean": totals.leave_unclean,
                "sends_skipped": totals.sends_skipped,
                "connect_errors": totals.connect_errors,
                "latency_ms": latency.to_json(),
            },
            "attackers": {
                "enabled": {
                    "flood": !args.no_flood,
                    "replay_burst": !args.no_replay_burst,
                    "large": !args.no_large,
                    "conn_churn": !args.no_conn_churn,
                },
                "connections": attackers.connections,
                "closed_by_server": attackers.closed.to_json(),
                "lifetime_of_closed": lifetimes,
                "flood_bytes": attackers.flood_bytes,
                "errors": attackers.errors,
                "connect_errors": attackers.connect_errors,
                "replays_asked": attackers.replays_asked,
                "replayed_messages": attackers.replayed_messages,
                "large_sent": attackers.large_sent,
                "idle_dropped_by_us": attackers.idle_dropped,
            },
            "rss_kib": self.rss.to_json(),
            "generator_cpu_pct": generator_cpu.map(round1),
            "server_cpu_pct": server_cpu.map(round1),
            "generator_send_lag_ms": ms(&totals.send_lag_ns),
            "generator_turn_busy_ms": ms(&self.turn_busy_ns),
            "generator_schedule_resets": totals.schedule_resets,
            "pass": verdict.to_json(args.p99_limit_ms),
            "notes": notes,
        });
        (summary, verdict.passed())
    }
}

/// Ends an attacker's flood, adding what it wrote to `bytes` by kind.
fn retire_flood(attacker: &mut Attacker, bytes: &mut BTreeMap<&'static str, u64>) {
    if let (AttackerKind::Flood(kind), Some(flood)) = (attacker.kind, attacker.flood.take()) {
        *bytes.entry(kind.name()).or_default() += flood.written;
    }
}

/// How a connection of `owner` uses readiness events.
fn io_mode(world: &World, owner: Owner) -> Io {
    match owner {
        Owner::Attacker(a) => match world.attackers[a].kind {
            AttackerKind::Flood(kind) if !kind.reads() => Io::HandshakeOnly,
            _ => Io::Normal,
        },
        Owner::Idle(IdleConn {
            kind: IdleKind::Silent,
            ..
        }) => Io::Silent,
        _ => Io::Normal,
    }
}

/// Nanoseconds between events at `per_sec` a second; `None` for a rate of 0.
fn rate_interval(per_sec: f64) -> Option<u64> {
    (per_sec > 0.0).then(|| (1e9 / per_sec).max(1.0) as u64)
}
