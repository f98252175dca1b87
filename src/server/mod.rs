//! The only code that touches sockets: one mio `Poll`, a slab of connections keyed by token, one timer heap.
//!
//! Readiness is edge-triggered: every readable event is read until WouldBlock (or a fairness cap, after which the
//! connection is revisited next turn), and every queue is written until WouldBlock; WRITABLE interest is held only
//! while bytes are queued. Input goes through the sans-IO `protocol` and the pure `chat`; what they return is
//! queued, and every connection owed bytes in a loop turn is flushed once, with one vectored write, at the end of
//! the turn. A connection ends in exactly one place, `Server::remove`.

mod batch;
mod conn;
mod queue;
mod timers;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::chat::{self, Action, Chat};
use crate::config::Config;
use crate::http::metrics::{Gauges, Metrics};
use crate::http::{self, Endpoint, Refusal, Route};
use crate::protocol::frame::{encode_frame, OpCode};
use crate::protocol::handshake::{self, RequestHead};
use crate::protocol::{self, close, Event, MessageKind, Role, State};
use batch::Batches;
use conn::{timeout_until, Conn, Due, Phase};
use queue::Chunk;
use timers::{Deadline, Timers};

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);

/// The loop-wide read buffer: every socket is read into it, and only unparsed remainders are kept per connection.
const READ_BUFFER_SIZE: usize = 64 * 1024;

/// How many reads one connection gets per readable event before others get a turn.
const READS_PER_TURN: usize = 16;

/// How long to stop accepting after the process ran out of file descriptors, instead of spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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

/// Who reads a broadcast batch: the members of a room that take one form of its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Audience {
    room: chat::RoomId,
    /// The v1 form (the articles' client), where it differs from the v2 one.
    legacy: bool,
}

/// The state of a graceful shutdown.
#[derive(Clone, Copy, Debug)]
struct Draining {
    deadline: Instant,
}

/// A roomcast server: bind it, read its address, run it.
pub struct Server {
    poll: Poll,
    /// `None` once a shutdown began: the socket is closed, so new connections are refused, not left waiting.
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    config: Config,
    conns: Slab<Conn>,
    timers: Timers,
    chat: Chat,
    metrics: Metrics,
    read_buf: Vec<u8>,
    ws_events: Vec<Event>,
    actions: Vec<Action>,
    dirty: Vec<usize>,
    /// This turn's broadcast frames, one buffer per room and form, sliced by the members' queues.
    batches: Batches<Audience>,
    read_again: Vec<usize>,
    next_serial: u64,
    accept_paused_until: Option<Instant>,
    /// Accepting failed and has not succeeded since (logged once per episode).
    accept_failing: bool,
    shutdown_requested: Arc<AtomicBool>,
    waker: Arc<Waker>,
    draining: Option<Draining>,
}

impl Server {
    /// Binds the listening socket. Port 0 picks a free port.
    pub fn bind(config: Config) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.addr)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let chat = Chat::new(config.chat.clone(), random_secret());
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            config,
            conns: Slab::new(),
            timers: Timers::default(),
            chat,
            metrics: Metrics::default(),
            read_buf: vec![0; READ_BUFFER_SIZE],
            ws_events: Vec::new(),
            actions: Vec::new(),
            dirty: Vec::new(),
            batches: Batches::default(),
            read_again: Vec::new(),
            next_serial: 0,
            accept_paused_until: None,
            accept_failing: false,
            shutdown_requested: Arc::new(AtomicBool::new(false)),
            waker,
            draining: None,
        })
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
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(now),
                    WAKER => {}
                    Token(key) => {
                        if event.is_read_closed() || event.is_error() {
                            if let Some(conn) = self.conns.get_mut(key) {
                                conn.peer_closed = true;
                            }
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read_ready(key, now);
                        }
                        if event.is_writable() {
                            self.mark_dirty(key);
                        }
                    }
                }
            }
            self.after_events(now);
            if self.shutdown_requested.load(Ordering::SeqCst) && self.draining.is_none() {
                self.begin_shutdown(now);
            }
            if let Some(draining) = self.draining {
                if self.drained() || Instant::now() >= draining.deadline {
                    info!(
                        "shut down with {} connection(s) still open",
                        self.conns.len()
                    );
                    return Ok(());
                }
            }
        }
    }

    /// Work that follows a batch of events: deferred reads, timers, the accept backoff, and the flush of every
    /// connection owed bytes.
    fn after_events(&mut self, now: Instant) {
        for key in std::mem::take(&mut self.read_again) {
            self.read_ready(key, now);
        }
        if self.accept_paused_until.is_some_and(|until| now >= until) {
            self.accept_paused_until = None;
            self.accept_all(now);
        }
        self.fire_timers(now);
        self.flush_dirty(now);
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.read_again.is_empty() || !self.dirty.is_empty() {
            return Some(Duration::ZERO);
        }
        let candidates = [
            self.timers.next_at(),
            self.accept_paused_until,
            self.draining.map(|d| d.deadline),
        ];
        candidates
            .into_iter()
            .flatten()
            .min()
            .map(|at| timeout_until(at, now))
    }

    fn accept_all(&mut self, now: Instant) {
        if self.draining.is_some() || self.accept_paused_until.is_some() {
            return;
        }
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((socket, peer)) => {
                    self.accept_failing = false;
                    self.admit(socket, peer, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS: the pending connections stay in the backlog; retry after a pause
                    // instead of spinning on a listener that stays readable.
                    self.metrics.accept_errors += 1;
                    if !self.accept_failing {
                        warn!("accept failed: {e}; retrying every {ACCEPT_BACKOFF:?} until it succeeds");
                    }
                    self.accept_failing = true;
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut socket: TcpStream, peer: SocketAddr, now: Instant) {
        self.metrics.accepted_total += 1;
        if self.conns.len() >= self.config.max_connections {
            self.metrics.count_refusal(Refusal::Overloaded);
            self.metrics.bytes_out += refuse_unregistered(&mut socket, Refusal::Overloaded) as u64;
            return;
        }
        if let Err(e) = socket.set_nodelay(true) {
            debug!("set_nodelay for {peer}: {e}");
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut socket, Token(key), Interest::READABLE)
        {
            warn!("cannot register {peer}: {e}");
            return;
        }
        self.next_serial += 1;
        entry.insert(Conn::new(socket, self.next_serial, now));
        debug!("accepted {peer} as {key}");
        self.arm_timer(key, now);
        // The request may already be waiting: with edge-triggered readiness, read now rather than hope for an event.
        self.read_ready(key, now);
    }

    fn read_ready(&mut self, key: usize, now: Instant) {
        let mut buf = std::mem::take(&mut self.read_buf);
        for _ in 0..READS_PER_TURN {
            let Some(conn) = self.conns.get_mut(key) else {
                break;
            };
            conn.read_pending = false;
            if self.read_paused(key) {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.read_pending = true;
                }
                break;
            }
            let Some(conn) = self.conns.get_mut(key) else {
                break;
            };
            match conn.socket.read(&mut buf) {
                Ok(0) => {
                    self.peer_finished(key, now);
                    break;
                }
                Ok(n) => {
                    // A short read drained the socket: with edge-triggered readiness on TCP, more bytes raise a
                    // new edge, so reading again only to see WouldBlock would be a wasted system call. A FIN that
                    // came with the data raises no new edge, hence `peer_closed`.
                    let drained = n < buf.len() && !conn.peer_closed;
                    self.metrics.bytes_in += n as u64;
                    self.on_input(key, &buf[..n], now);
                    if let Some(conn) = self.conns.get_mut(key) {
                        conn.read_pending = !drained;
                    }
                    if drained {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.read_pending = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("read from {key}: {e}");
                    self.remove(key, now);
                    break;
                }
            }
        }
        self.read_buf = buf;
        if let Some(conn) = self.conns.get(key) {
            if conn.read_pending && !self.read_paused(key) {
                self.read_again.push(key);
            }
        }
    }

    /// Echo stops reading a connection while its own queue is over the bound, so a client that sends without
    /// reading slows itself down instead of growing our memory.
    fn read_paused(&self, key: usize) -> bool {
        self.conns.get(key).is_some_and(|conn| {
            matches!(
                conn.phase,
                Phase::Open {
                    endpoint: Endpoint::Echo,
                    ..
                }
            ) && conn.queue.queued_bytes() > self.config.max_queued_bytes
        })
    }

    /// The peer shut its side of TCP (read returned 0). A peer may half-close right after its request or its
    /// Close (RFC 9293 3.6): what we owe it in answer still goes out, and `linger` then ends the connection.
    fn peer_finished(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        debug!(
            "peer {key} closed TCP in phase {:?}",
            phase_name(&conn.phase)
        );
        let owes_answer = match &conn.phase {
            Phase::Responding => true,
            Phase::Open { ws, .. } => ws.state() == State::Closed,
            Phase::Handshake { .. } | Phase::Lingering => false,
        };
        if owes_answer && !conn.queue.is_empty() {
            conn.peer_finished = true;
            conn.read_pending = false;
            return;
        }
        self.remove(key, now);
    }

    fn on_input(&mut self, key: usize, bytes: &[u8], now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.last_heard = now;
        conn.ping_sent_at = None;
        match &mut conn.phase {
            Phase::Handshake { head } => {
                head.extend_from_slice(bytes);
                self.advance_handshake(key, now);
            }
            Phase::Open { .. } => self.on_websocket_input(key, bytes, now),
            // A response is on its way or we are closing: what the peer says now does not matter.
            Phase::Responding | Phase::Lingering => {}
        }
    }

    fn advance_handshake(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Phase::Handshake { head } = &mut conn.phase else {
            return;
        };
        let request = match handshake::parse_request_head(head, self.config.max_header_bytes) {
            Ok(None) => return,
            Ok(Some(request)) => request,
            Err(e) => return self.refuse(key, Refusal::Head(e)),
        };
        let leftover = head.split_off(request.len);
        match http::route(&request, &self.config.origins) {
            Err(refusal) => self.refuse(key, refusal),
            Ok(Route::Upgrade { endpoint, accept }) => {
                self.upgrade(key, &request, endpoint, &accept, leftover, now)
            }
            Ok(route) => self.respond(key, route, request.method == "HEAD"),
        }
    }

    fn refuse(&mut self, key: usize, refusal: Refusal) {
        debug!("refusing {key}: {} {refusal}", refusal.status());
        self.metrics.count_refusal(refusal);
        let mut out = Vec::new();
        refusal.write_response(&mut out);
        self.send_http(key, out);
    }

    fn respond(&mut self, key: usize, route: Route, head_only: bool) {
        let mut out = Vec::new();
        match route {
            Route::Page => http::write_page(&mut out),
            Route::Healthz => {
                http::write_response(200, "text/plain; charset=utf-8", &[], b"ok\n", &mut out)
            }
            Route::Metrics => {
                let text = self.metrics.render(self.gauges());
                http::write_response(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    &[],
                    text.as_bytes(),
                    &mut out,
                );
            }
            Route::Upgrade { .. } => return,
        }
        if head_only {
            http::drop_body(&mut out);
        }
        self.send_http(key, out);
    }

    fn send_http(&mut self, key: usize, response: Vec<u8>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.phase = Phase::Responding;
        conn.queue.push(Chunk::Owned(response));
        self.mark_dirty(key);
    }

    fn upgrade(
        &mut self,
        key: usize,
        request: &RequestHead,
        endpoint: Endpoint,
        accept: &str,
        leftover: Vec<u8>,
        now: Instant,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let max_message_size = match endpoint {
            Endpoint::Chat => self.config.chat_max_message_size,
            Endpoint::Echo => self.config.echo_max_message_size,
        };
        let mut response = Vec::with_capacity(160);
        handshake::write_accept_response(accept, &mut response);
        conn.queue.push(Chunk::Owned(response));
        conn.phase = Phase::Open {
            ws: protocol::Connection::new(Role::Server, max_message_size),
            endpoint,
        };
        let label = match endpoint {
            Endpoint::Chat => "chat",
            Endpoint::Echo => "echo",
        };
        *self.metrics.upgrades_total.entry(label).or_default() += 1;
        debug!("{key} upgraded to {label} ({})", request.target);
        self.mark_dirty(key);
        self.arm_timer(key, now);
        // Bytes after the head are the start of the first frame (4.2.1: the client may send at once).
        if !leftover.is_empty() {
            self.on_websocket_input(key, &leftover, now);
        }
    }

    fn on_websocket_input(&mut self, key: usize, bytes: &[u8], now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Phase::Open { ws, endpoint } = &mut conn.phase else {
            return;
        };
        let endpoint = *endpoint;
        let mut events = std::mem::take(&mut self.ws_events);
        let result = ws.feed(bytes, &mut events);
        // One reading of the wall clock serves every message of this input.
        let mut chat_time = None;
        for event in events.drain(..) {
            match event {
                Event::Message(message) => {
                    self.metrics.messages_in += 1;
                    match (endpoint, message.kind) {
                        (Endpoint::Echo, kind) => {
                            if ws.send_owned(kind, message.payload).is_ok() {
                                self.metrics.messages_out += 1;
                            }
                        }
                        // 7.4.1: 1003 for a type of data the endpoint cannot accept.
                        (Endpoint::Chat, MessageKind::Binary) => {
                            ws.close(close::UNSUPPORTED_DATA, "the chat speaks JSON text frames");
                            conn.close_code = close::UNSUPPORTED_DATA;
                        }
                        // Text after our Close (a shutdown, an eviction, a 1003 earlier in this read) is not acted on
                        // (5.5.1); text before a Close we merely owe still is.
                        (Endpoint::Chat, MessageKind::Text) if ws.can_send() => {
                            if let Some(text) = message.text() {
                                let chat_time = *chat_time.get_or_insert_with(|| chat_now(now));
                                self.chat
                                    .handle_text(key, text, chat_time, &mut self.actions);
                            }
                        }
                        (Endpoint::Chat, MessageKind::Text) => {}
                    }
                }
                Event::Close(frame) => conn.close_code = frame.code.unwrap_or(1005),
                Event::Ping(_) | Event::Pong(_) => {}
            }
        }
        self.ws_events = events;
        if let Err(e) = result {
            debug!("{key} failed the WebSocket connection: {e}");
            conn.close_code = e.close_code();
        }
        // The chat's answers first: they answer messages that came before any Close this input caused.
        self.apply_actions(now);
        self.take_protocol_output(key, now);
    }

    /// Moves the bytes the protocol owes the peer (handshake replies, pongs, closes, echoes) into the write queue.
    fn take_protocol_output(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Phase::Open { ws, .. } = &mut conn.phase else {
            return;
        };
        if ws.state() != State::Open && conn.closing_since.is_none() {
            conn.closing_since = Some(now);
            if conn.close_code == 1006 {
                conn.close_code = close::NORMAL;
            }
        }
        // Once the closing handshake is complete, the flush that follows also ends the connection (7.1.1: the
        // server closes TCP first), even when the handshake was ours and nothing is left to send.
        let owes_flush = ws.has_output() || ws.state() == State::Closed;
        for piece in ws.take_output_pieces() {
            conn.queue.push(Chunk::Owned(piece));
        }
        if owes_flush {
            self.mark_dirty(key);
        }
        self.arm_timer(key, now);
    }

    fn apply_actions(&mut self, now: Instant) {
        while !self.actions.is_empty() {
            for action in std::mem::take(&mut self.actions) {
                match action {
                    Action::Send { to, payload } => {
                        let frame = encode_text_frame(&payload);
                        self.enqueue_frame(to, Chunk::Owned(frame));
                    }
                    Action::Broadcast {
                        room,
                        except,
                        payload,
                        legacy_payload,
                    } => self.broadcast(room, except, &payload, legacy_payload.as_deref()),
                    Action::Close {
                        conn: key,
                        code,
                        reason,
                    } => {
                        if let Some(conn) = self.conns.get_mut(key) {
                            if let Phase::Open { ws, .. } = &mut conn.phase {
                                ws.close(code, reason);
                                conn.close_code = code;
                            }
                        }
                        self.take_protocol_output(key, now);
                    }
                }
            }
        }
    }

    /// Encodes the frame once (twice when legacy members get another shape) into the room's batch for this turn,
    /// and queues its span for every member: consecutive broadcasts to a member merge into one queue entry.
    fn broadcast(
        &mut self,
        room: chat::RoomId,
        except: Option<usize>,
        payload: &str,
        legacy: Option<&str>,
    ) {
        let audience = Audience {
            room,
            legacy: false,
        };
        let Some(frame) = self.batches.append(audience, text_frame(payload)) else {
            warn!(
                "a broadcast of {} bytes is too large to share; dropped",
                payload.len()
            );
            return;
        };
        let legacy_frame = match legacy {
            Some(text) if std::ptr::eq(text, payload) => Some(frame),
            Some(text) => self
                .batches
                .append(Audience { room, legacy: true }, text_frame(text)),
            None => None,
        };
        let Server {
            chat,
            conns,
            dirty,
            metrics,
            ..
        } = self;
        for member in chat.members(room) {
            if Some(member.conn) == except {
                continue;
            }
            let span = match (member.legacy, legacy_frame) {
                (false, _) => frame,
                (true, Some(legacy)) => legacy,
                (true, None) => continue,
            };
            if let Some(conn) = conns.get_mut(member.conn) {
                if conn.can_send_on(Endpoint::Chat) {
                    conn.queue.push_span(span);
                    metrics.messages_out += 1;
                    if !conn.dirty {
                        conn.dirty = true;
                        dirty.push(member.conn);
                    }
                }
            }
        }
    }

    fn enqueue_frame(&mut self, key: usize, frame: Chunk) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !conn.can_send_on(Endpoint::Chat) {
            return;
        }
        conn.queue.push(frame);
        self.metrics.messages_out += 1;
        self.mark_dirty(key);
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Flushes every connection owed bytes, then ends the turn's broadcast batches: every span queued this turn
    /// was pushed to a connection marked dirty, so all of them are resolved by now.
    fn flush_dirty(&mut self, now: Instant) {
        while let Some(key) = self.dirty.pop() {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.dirty = false;
                self.flush(key, now);
            }
        }
        self.batches.end_turn();
    }

    /// Writes a connection's queue until it is empty or the socket is full, then settles what follows: WRITABLE
    /// interest, a slow consumer's eviction, resumed reading, or the end of the connection.
    fn flush(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        // A flush can itself broadcast (an eviction announces a departure), so seal here, not once per turn.
        self.batches.seal();
        match conn.queue.write_to(&mut conn.socket, &self.batches) {
            Ok(written) => self.metrics.bytes_out += written as u64,
            Err(e) => {
                debug!("write to {key}: {e}");
                return self.remove(key, now);
            }
        }
        let pending = !conn.queue.is_empty();
        if pending != conn.wants_writable {
            let interest = if pending {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut conn.socket, Token(key), interest)
            {
                debug!("reregister {key}: {e}");
                return self.remove(key, now);
            }
            conn.wants_writable = pending;
        }
        if pending {
            if conn.queue.queued_bytes() > self.config.max_queued_bytes {
                self.evict_slow_consumer(key, now);
            }
            return;
        }
        let finished = match &conn.phase {
            Phase::Responding => true,
            Phase::Open { ws, .. } => ws.state() == State::Closed,
            Phase::Handshake { .. } | Phase::Lingering => false,
        };
        if finished {
            self.linger(key, now);
        } else if conn.read_pending {
            self.read_again.push(key);
        }
    }

    /// A chat client whose queue grew past the bound is not reading: drop what it has not started to receive,
    /// send Close 1008, and give it the close timeout to go. Its room mates are not held up: broadcasts skip it.
    fn evict_slow_consumer(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Phase::Open {
            ws,
            endpoint: Endpoint::Chat,
        } = &mut conn.phase
        else {
            return;
        };
        if ws.state() != State::Open {
            return;
        }
        let dropped = conn.queue.truncate_to_started_frame();
        ws.close(close::POLICY_VIOLATION, "too slow: not reading messages");
        conn.close_code = close::POLICY_VIOLATION;
        self.metrics.slow_consumers_dropped += 1;
        debug!("{key} is a slow consumer; dropped {dropped} queued bytes");
        self.take_protocol_output(key, now);
        self.leave_chat(key, now);
    }

    /// Everything is sent: shut our side of TCP (the server closes first, 7.1.1) and wait briefly for the peer's FIN.
    fn linger(&mut self, key: usize, now: Instant) {
        self.leave_chat(key, now);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.peer_finished {
            return self.remove(key, now);
        }
        if let Err(e) = conn.socket.shutdown(Shutdown::Write) {
            debug!("shutdown {key}: {e}");
            return self.remove(key, now);
        }
        if matches!(conn.phase, Phase::Open { .. }) {
            self.metrics.count_close(conn.close_code);
        }
        conn.phase = Phase::Lingering;
        conn.closing_since = Some(now);
        let read_pending = conn.read_pending;
        self.arm_timer(key, now);
        if read_pending {
            self.read_again.push(key);
        }
    }

    /// Takes a chat connection out of its room now, so the others hear of it at once rather than when TCP ends.
    fn leave_chat(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if matches!(
            conn.phase,
            Phase::Open {
                endpoint: Endpoint::Chat,
                ..
            }
        ) {
            self.chat.disconnect(key, chat_now(now), &mut self.actions);
            self.apply_actions(now);
        }
    }

    /// The one place a connection ends.
    fn remove(&mut self, key: usize, now: Instant) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        if let Err(e) = self.poll.registry().deregister(&mut conn.socket) {
            debug!("deregister {key}: {e}");
        }
        if let Phase::Open { endpoint, .. } = conn.phase {
            self.metrics.count_close(conn.close_code);
            if endpoint == Endpoint::Chat {
                self.chat.disconnect(key, chat_now(now), &mut self.actions);
                self.apply_actions(now);
            }
        }
        debug!("removed {key}");
    }

    fn arm_timer(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let at = match conn.due(now, &self.config) {
            Due::Later(at) => at,
            _ => now,
        };
        if conn.timer_at.is_none_or(|current| at < current) {
            conn.timer_at = Some(at);
            self.timers.schedule(Deadline {
                at,
                key,
                serial: conn.serial,
            });
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(deadline) = self.timers.pop_due(now) {
            let Some(conn) = self.conns.get_mut(deadline.key) else {
                continue;
            };
            if conn.serial != deadline.serial || conn.timer_at != Some(deadline.at) {
                continue;
            }
            conn.timer_at = None;
            let key = deadline.key;
            match conn.due(now, &self.config) {
                Due::Later(_) => {}
                Due::Ping => {
                    if let Some((ws, _)) = conn.websocket() {
                        // 5.5.2: a Ping as a keepalive; any frame from the peer, the Pong included, counts as life.
                        let _ = ws.send_ping(b"");
                    }
                    conn.ping_sent_at = Some(now);
                    self.take_protocol_output(key, now);
                }
                Due::HandshakeTimeout => {
                    debug!("{key}: handshake timeout");
                    // A response that the client does not read in time is not a failed handshake.
                    if matches!(conn.phase, Phase::Handshake { .. }) {
                        self.metrics.count_handshake_timeout();
                    }
                    self.remove(key, now);
                    continue;
                }
                Due::IdleTimeout => {
                    debug!("{key}: idle timeout");
                    self.metrics.idle_timeouts += 1;
                    self.remove(key, now);
                    continue;
                }
                Due::CloseTimeout => {
                    debug!("{key}: close timeout");
                    self.remove(key, now);
                    continue;
                }
            }
            self.arm_timer(key, now);
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        info!("shutting down: closing {} connection(s)", self.conns.len());
        if let Some(mut listener) = self.listener.take() {
            if let Err(e) = self.poll.registry().deregister(&mut listener) {
                debug!("deregister listener: {e}");
            }
        }
        self.draining = Some(Draining {
            deadline: now + self.config.shutdown_timeout,
        });
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            match &mut conn.phase {
                Phase::Open { ws, .. } => {
                    ws.close(close::GOING_AWAY, "server shutting down");
                    conn.close_code = close::GOING_AWAY;
                    self.take_protocol_output(key, now);
                }
                Phase::Handshake { .. } => self.remove(key, now),
                Phase::Responding | Phase::Lingering => {}
            }
        }
        self.flush_dirty(now);
    }

    /// True when every connection left has finished its closing handshake and been sent our FIN: nothing more is
    /// owed to anyone, so a shutdown need not wait for their FINs.
    fn drained(&self) -> bool {
        self.conns
            .iter()
            .all(|(_, conn)| matches!(conn.phase, Phase::Lingering))
    }

    fn gauges(&self) -> Gauges {
        let mut gauges = Gauges {
            open_connections: self.conns.len(),
            rooms: self.chat.room_count(),
            members: self.chat.member_count(),
            ..Gauges::default()
        };
        for (_, conn) in &self.conns {
            gauges.queued_bytes += conn.queue.queued_bytes();
            if matches!(conn.phase, Phase::Open { .. }) {
                gauges.open_websockets += 1;
            }
        }
        gauges
    }
}

/// A name for a phase in logs.
fn phase_name(phase: &Phase) -> &'static str {
    match phase {
        Phase::Handshake { .. } => "handshake",
        Phase::Responding => "responding",
        Phase::Open { .. } => "open",
        Phase::Lingering => "lingering",
    }
}

/// A server frame carrying `text`, unmasked (5.1).
/// Writes `text` as one unmasked, unfragmented text frame (the server's frames are never masked, 5.1).
fn text_frame(text: &str) -> impl FnOnce(&mut Vec<u8>) + '_ {
    move |out| encode_frame(true, OpCode::Text, text.as_bytes(), None, out)
}

/// One text frame in a buffer of its own, for a single recipient.
fn encode_text_frame(text: &str) -> Vec<u8> {
    let mut frame = Vec::with_capacity(text.len() + 10);
    text_frame(text)(&mut frame);
    frame
}

/// Refuses a connection that never made it into the slab: best-effort response, then close. Returns the bytes
/// written.
fn refuse_unregistered(socket: &mut TcpStream, refusal: Refusal) -> usize {
    let mut out = Vec::new();
    refusal.write_response(&mut out);
    let written = socket.write(&out).unwrap_or(0);
    let _ = socket.shutdown(Shutdown::Write);
    written
}

/// The chat's view of the clock.
fn chat_now(now: Instant) -> chat::Now {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| now);
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mono_ms =
        u64::try_from(now.saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX);
    chat::Now { unix_ms, mono_ms }
}

/// 32 unpredictable bytes for session tokens and room epochs, from the kernel.
fn random_secret() -> [u8; 32] {
    let mut secret = [0u8; 32];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut secret)) {
        Ok(()) => secret,
        Err(e) => {
            warn!("/dev/urandom unavailable ({e}); deriving the secret from the clock and the hasher's keys");
            use std::hash::{BuildHasher, Hasher};
            for (i, chunk) in secret.chunks_mut(8).enumerate() {
                let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
                hasher.write_usize(i);
                hasher.write_u128(
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos()),
                );
                chunk.copy_from_slice(&hasher.finish().to_le_bytes());
            }
            secret
        }
    }
}
