//! The only code that touches sockets: one mio `Poll`, a slab of clients keyed by token, one timer heap.
//!
//! This file owns the loop itself, one *turn* at a time: wait for readiness, act on every event, then finish the
//! turn (deferred reads, due timers, and one flush of every client owed bytes). What each step does lives in a
//! file named for it, in the order a message meets them:
//!
//! | file | what it does |
//! | --- | --- |
//! | `accept.rs` | takes new TCP clients off the listener, or refuses them at the connection limit |
//! | `read.rs` | reads a readable socket into the loop's buffer and hands the bytes to the client's phase |
//! | `http_phase.rs` | the request head: a plain HTTP response, a refusal, or the WebSocket upgrade |
//! | `api.rs` | a server API request: its body, the call carried out through the chat, the answer, keep-alive |
//! | `websocket.rs` | frames in through `protocol::Connection`, messages to the chat or echoed back |
//! | `actions.rs` | what the chat asked for: a message to one client, a broadcast, a close |
//! | `broadcast.rs` | one frame for a whole room, encoded once into the turn's batch |
//! | `write.rs` | the flush at the end of the turn: vectored writes until the queue is empty or the socket full |
//! | `ending.rs` | the one close path, slow consumers, lingering for the FIN, removal, shutdown |
//! | `timers.rs`, `timeouts.rs` | deadlines: the heap, and the pure rules of what is due when |
//! | `redis.rs` | with `--redis`: the two connections to Redis, their reconnects, and the turn's pipelined write |
//! | `relay.rs` | with `--redis`: the chat's traffic through them: subscriptions, publications, names, DMs, heartbeats |
//! | `verify.rs` | RS256/ES256 token signatures checked on a thread of their own; the connections waiting, parked |
//!
//! Readiness is edge-triggered: every readable event is read until WouldBlock (or a fairness cap, after which the
//! client is revisited in the same turn's tail), and every queue is written until WouldBlock; WRITABLE interest is
//! held only while bytes are queued.

mod accept;
mod actions;
mod addresses;
mod api;
mod batch;
mod broadcast;
mod budget;
mod client;
mod ending;
mod http_phase;
mod queue;
mod read;
mod redis;
mod relay;
mod timeouts;
mod timers;
mod verify;
mod websocket;
mod write;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::chat::{self, Action, Chat, ChatConfig};
use crate::cluster::NodeId;
use crate::config::Config;
use crate::http::metrics::{Gauges, Metrics};
use crate::id_hash::IdMap;
use crate::protocol::Event;
use addresses::AddressBook;
use batch::Batches;
use broadcast::{Audience, Lag};
use budget::InputLimits;
use client::{Client, Flags, Phase};
use redis::{Cluster, REDIS_COMMANDS, REDIS_SUBSCRIBER};
use timeouts::{Millis, Timeouts};
use timers::Timers;
use verify::{Parked, TokenChecker};

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);

/// Asks a running server to shut down gracefully, from any thread (a signal handler thread, a test).
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    requested: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    /// Starts a graceful shutdown: stop accepting, send every client Close 1001, wait up to the shutdown timeout.
    pub fn shutdown(&self) {
        self.requested.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            warn!("cannot wake the server loop: {e}");
        }
    }
}

/// A roomcast server: bind it, read its address, run it.
pub struct Server {
    poll: Poll,
    /// `None` once a shutdown began: the socket is closed, so new connections are refused, not left waiting.
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    config: Config,
    timeouts: Timeouts,
    /// What each WebSocket may make the loop read.
    input_limits: InputLimits,
    /// Bytes held in unfinished incoming messages, over all clients (`Client::held`).
    incoming_bytes: usize,
    /// Open connections and request rates by client address.
    addresses: AddressBook,
    /// Chat clients that fell behind, with what they missed.
    lagging: IdMap<usize, Lag>,
    clients: Slab<Client>,
    timers: Timers,
    chat: Chat,
    metrics: Metrics,
    /// When the loop started: `Millis` count from here.
    started: Instant,
    /// The current turn's time, read once when `poll` returns.
    now: Millis,
    /// The loop-wide read buffer: every socket is read into it, and only unparsed remainders are kept per client.
    input: Vec<u8>,
    /// Reused for the events of each `feed`.
    ws_events: Vec<Event>,
    /// What the chat asked for, applied right after the call that pushed it.
    actions: Vec<Action>,
    /// Clients owed a flush at the end of this turn.
    dirty: Vec<usize>,
    /// This turn's broadcast frames, one buffer per room and form, sliced by the members' queues.
    batches: Batches<Audience>,
    /// Clients whose reading stopped at the fairness cap, to be read again before the turn ends.
    unfinished_reads: Vec<usize>,
    /// Keep-alive API clients with another request already read after the one answered, handled in the turn's
    /// tail.
    pipelined: Vec<usize>,
    next_serial: u32,
    accept_paused_until: Option<Millis>,
    /// Accepting failed and has not succeeded since (logged once per episode).
    accept_failing: bool,
    shutdown_requested: Arc<AtomicBool>,
    waker: Arc<Waker>,
    /// Set when a graceful shutdown began: the point at which the loop stops waiting for clients.
    draining_until: Option<Millis>,
    /// The link to Redis, with `--redis`.
    cluster: Option<Cluster>,
    /// The verifier thread, when token signatures are checked off the loop (`verify.rs`).
    token_checker: Option<TokenChecker>,
    /// Connections waiting for a token check, with the messages read behind it.
    parked: IdMap<usize, Parked>,
    /// Connections whose token check was refused this turn (the queue was full), resumed in the turn's tail.
    resumable: Vec<usize>,
}

impl Server {
    /// Binds the listening socket. Port 0 picks a free port.
    pub fn bind(config: Config) -> io::Result<Server> {
        let timeouts = Timeouts::new(
            config.handshake_timeout,
            config.ping_interval,
            config.idle_timeout,
            config.message_timeout,
            config.slow_consumer_grace,
            config.close_timeout,
        )
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let poll = Poll::new()?;
        let mut listener = bind_listener(config.addr, config.reuse_port)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut chat = Chat::new(
            ChatConfig {
                relayed: config.redis.is_some(),
                ..config.chat.clone()
            },
            random_secret(),
        );
        let mut token_checker = None;
        if let Some(verifier) = &config.auth {
            let join_timeout =
                u64::try_from(config.handshake_timeout.as_millis()).unwrap_or(u64::MAX);
            chat.require_tokens(verifier.clone(), join_timeout);
            chat.cache_tokens(config.token_cache_entries);
            if config.token_checks.off_loop(verifier) {
                token_checker = Some(TokenChecker::spawn(
                    verifier.clone(),
                    config.token_check_queue,
                    waker.clone(),
                )?);
                chat.check_tokens_elsewhere(true);
            }
        }
        let cluster = config.redis.clone().map(|url| {
            let node = config.node_id.clone().unwrap_or_else(|| {
                let mut random = [0u8; 4];
                crate::protocol::mask::fill_random(&mut random);
                NodeId::from_random(random)
            });
            info!("node {node}: connecting to Redis at {url}");
            let heartbeat_ms = u64::try_from(config.node_heartbeat.as_millis()).unwrap_or(u64::MAX);
            // A random phase for the heartbeat, so that nodes started together do not renew their names together.
            let mut random = [0u8; 8];
            crate::protocol::mask::fill_random(&mut random);
            let phase_ms = u64::from_le_bytes(random) % heartbeat_ms.max(1);
            let relay = relay::Relay::new(
                node.clone(),
                config.chat.history_len,
                heartbeat_ms,
                config.name_renewal_batch,
                phase_ms,
            );
            Cluster::new(url, node, relay)
        });
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            input_limits: InputLimits {
                frames_per_sec: config.max_frames_per_sec,
                bytes_per_sec: config.max_bytes_per_sec,
            },
            incoming_bytes: 0,
            addresses: AddressBook::default(),
            lagging: IdMap::default(),
            config,
            timeouts,
            clients: Slab::new(),
            timers: Timers::default(),
            chat,
            metrics: Metrics::default(),
            started: Instant::now(),
            now: Millis(0),
            input: vec![0; read::INPUT_BUFFER_SIZE],
            ws_events: Vec::new(),
            actions: Vec::new(),
            dirty: Vec::new(),
            batches: Batches::default(),
            unfinished_reads: Vec::new(),
            pipelined: Vec::new(),
            next_serial: 0,
            accept_paused_until: None,
            accept_failing: false,
            shutdown_requested: Arc::new(AtomicBool::new(false)),
            waker,
            draining_until: None,
            cluster,
            token_checker,
            parked: IdMap::default(),
            resumable: Vec::new(),
        })
    }

    /// This node's id among the nodes sharing Redis, when the server runs with `--redis`.
    pub fn node_id(&self) -> Option<&NodeId> {
        self.cluster.as_ref().map(Cluster::node)
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that shuts the server down gracefully from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            requested: self.shutdown_requested.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Runs the loop until a graceful shutdown completes.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.now = Millis::between(self.started, Instant::now());
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_waiting(),
                    // The shutdown handle and the verifier thread share the one waker mio allows per poll.
                    WAKER => self.on_verdicts(),
                    REDIS_COMMANDS | REDIS_SUBSCRIBER => self.on_redis_event(event.token()),
                    Token(key) => {
                        let closed = event.is_read_closed() || event.is_error();
                        if closed {
                            if let Some(client) = self.clients.get_mut(key) {
                                client.flags.set(Flags::READ_CLOSED, true);
                            }
                        }
                        if event.is_readable() || closed {
                            self.read_socket(key);
                        }
                        if event.is_writable() {
                            self.mark_dirty(key);
                        }
                    }
                }
            }
            self.finish_turn();
            if self.shutdown_requested.load(Ordering::SeqCst) && self.draining_until.is_none() {
                self.begin_shutdown();
            }
            if let Some(until) = self.draining_until {
                let now = Millis::between(self.started, Instant::now());
                if self.drained() || now >= until {
                    info!(
                        "shut down with {} connection(s) still open",
                        self.clients.len()
                    );
                    return Ok(());
                }
            }
        }
    }

    /// The rest of a turn, after its events: the reads deferred by the fairness cap, the accept backoff, due timers,
    /// and the flush of every client owed bytes.
    fn finish_turn(&mut self) {
        self.resume_refused();
        for key in std::mem::take(&mut self.unfinished_reads) {
            self.read_socket(key);
        }
        while let Some(key) = self.pipelined.pop() {
            self.on_request_bytes(key);
        }
        if self
            .accept_paused_until
            .is_some_and(|until| self.now >= until)
        {
            self.accept_paused_until = None;
            self.accept_waiting();
        }
        self.fire_timers(self.now);
        if self
            .chat
            .next_token_deadline()
            .is_some_and(|at| at <= self.now.0)
        {
            self.chat
                .expire_tokens(chat_time(self.now), &mut self.actions);
        }
        self.chat.end_turn(&mut self.actions);
        self.apply_actions();
        if self.cluster.is_some() {
            self.redis_turn();
        }
        self.flush_dirty();
    }

    /// How long `poll` may sleep: not at all with work left over, else until the next deadline.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.unfinished_reads.is_empty()
            || !self.dirty.is_empty()
            || !self.pipelined.is_empty()
            || !self.resumable.is_empty()
        {
            return Some(Duration::ZERO);
        }
        let now = Millis::between(self.started, Instant::now());
        [
            self.timers.next_at(),
            self.accept_paused_until,
            self.draining_until,
            self.chat.next_token_deadline().map(Millis),
            self.cluster.as_ref().and_then(Cluster::next_deadline),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| now.until(at))
    }

    fn gauges(&self) -> Gauges {
        let mut gauges = Gauges {
            open_connections: self.clients.len(),
            rooms: self.chat.room_count(),
            members: self.chat.member_count(),
            history_bytes: self.chat.history_bytes(),
            incoming_bytes: self.incoming_bytes,
            lagging_clients: self.lagging.len(),
            redis: self.cluster.as_ref().map(Cluster::status),
            tokens: self.chat.requires_tokens(),
            token_checks_waiting: self
                .token_checker
                .as_ref()
                .map_or(0, TokenChecker::in_flight),
            token_cache_entries: self.chat.token_cache_stats().0,
            ..Gauges::default()
        };
        for (_, client) in &self.clients {
            gauges.queued_bytes += client.queue.queued_bytes();
            if matches!(client.phase, Phase::WebSocket { .. }) {
                gauges.open_websockets += 1;
            }
        }
        gauges
    }
}

/// The listening socket: `SO_REUSEADDR` as mio sets it, and `SO_REUSEPORT` when asked, so that several
/// processes can share the port and the kernel spreads new connections over them.
fn bind_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    if !reuse_port {
        return TcpListener::bind(addr);
    }
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // mio's own bind listens with a backlog of 1024.
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// The chat's view of the time at the loop's `now`: wall-clock milliseconds since the Unix epoch for message
/// timestamps, the loop's monotonic milliseconds for rate limits and grace periods.
fn chat_time(now: Millis) -> chat::Now {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    chat::Now {
        unix_ms,
        mono_ms: now.0,
    }
}

/// 32 unpredictable bytes for session tokens and room epochs, from the operating system.
fn random_secret() -> [u8; 32] {
    let mut secret = [0u8; 32];
    crate::protocol::mask::fill_random(&mut secret);
    secret
}
