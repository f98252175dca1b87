//! One TCP connection as the server loop sees it: its socket, where it is in its life, and what it owes the peer.
//!
//! Owns the per-connection state and the rule for its next deadline. It does no I/O of its own beyond what the
//! loop asks, and never decides on its own that it is dead: `Server` does, in one place.

use std::time::{Duration, Instant};

use mio::net::TcpStream;

use super::queue::WriteQueue;
use crate::config::Config;
use crate::http::Endpoint;
use crate::protocol::{self, State};

/// Where a connection is in its life.
#[derive(Debug)]
pub enum Phase {
    /// Reading the HTTP request head; `head` holds what arrived so far.
    Handshake {
        /// The bytes of the unfinished head.
        head: Vec<u8>,
    },
    /// A plain HTTP response is queued; the connection closes once it is sent.
    Responding,
    /// A WebSocket.
    Open {
        /// The RFC 6455 state machine.
        ws: protocol::Connection,
        /// Which service it talks to.
        endpoint: Endpoint,
    },
    /// Everything was sent and our side of TCP is shut: waiting for the peer's FIN, discarding what it sends.
    Lingering,
}

/// A connection in the slab.
#[derive(Debug)]
pub struct Conn {
    /// The socket, registered with the poll under the slab key.
    pub socket: TcpStream,
    /// Unique over the server's life, unlike slab keys.
    pub serial: u64,
    /// Where it is in its life.
    pub phase: Phase,
    /// Bytes owed to the peer.
    pub queue: WriteQueue,
    /// WRITABLE interest is registered (only while bytes are queued).
    pub wants_writable: bool,
    /// Reading stopped before the socket said WouldBlock, so readable data may be waiting without an event.
    pub read_pending: bool,
    /// Waiting in the loop's list of connections to flush this turn.
    pub dirty: bool,
    /// Readiness said the peer shut its side (or the socket failed): read until 0, not just to a short read.
    pub peer_closed: bool,
    /// When the connection was accepted.
    pub accepted_at: Instant,
    /// When the peer last sent anything.
    pub last_heard: Instant,
    /// When we sent a heartbeat Ping that the peer has not yet answered with anything.
    pub ping_sent_at: Option<Instant>,
    /// When the closing phase began: our Close sent, or our FIN sent.
    pub closing_since: Option<Instant>,
    /// The close code to count in metrics when the connection ends (1006 until a Close is seen).
    pub close_code: u16,
    /// The instant of this connection's earliest entry in the timer heap.
    pub timer_at: Option<Instant>,
    /// The peer shut its side of TCP while we still owed it bytes; it ends once they are written.
    pub peer_finished: bool,
}

/// What is due for a connection at a given instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Nothing yet; check again at this instant.
    Later(Instant),
    /// Send a heartbeat Ping, then check again.
    Ping,
    /// The handshake took too long.
    HandshakeTimeout,
    /// The peer sent nothing for the idle timeout.
    IdleTimeout,
    /// The peer did not finish closing in time.
    CloseTimeout,
}

impl Conn {
    /// A freshly accepted connection.
    pub fn new(socket: TcpStream, serial: u64, now: Instant) -> Self {
        Conn {
            socket,
            serial,
            phase: Phase::Handshake { head: Vec::new() },
            queue: WriteQueue::default(),
            wants_writable: false,
            read_pending: false,
            dirty: false,
            peer_closed: false,
            accepted_at: now,
            last_heard: now,
            ping_sent_at: None,
            closing_since: None,
            close_code: 1006,
            timer_at: None,
            peer_finished: false,
        }
    }

    /// The WebSocket state machine, if the connection is one.
    pub fn websocket(&mut self) -> Option<(&mut protocol::Connection, Endpoint)> {
        match &mut self.phase {
            Phase::Open { ws, endpoint } => Some((ws, *endpoint)),
            _ => None,
        }
    }

    /// True if this is a WebSocket on `endpoint` that may still be sent data.
    pub fn can_send_on(&self, endpoint: Endpoint) -> bool {
        matches!(&self.phase, Phase::Open { ws, endpoint: e } if *e == endpoint && ws.can_send())
    }

    /// Decides what is due at `now`.
    pub fn due(&self, now: Instant, config: &Config) -> Due {
        let check = |deadline: Instant, due: Due| {
            if now >= deadline {
                due
            } else {
                Due::Later(deadline)
            }
        };
        match &self.phase {
            Phase::Handshake { .. } | Phase::Responding => check(
                self.accepted_at + config.handshake_timeout,
                Due::HandshakeTimeout,
            ),
            Phase::Lingering => self.closing_deadline(config, now, Due::CloseTimeout),
            Phase::Open { ws, .. } if ws.state() != State::Open => {
                self.closing_deadline(config, now, Due::CloseTimeout)
            }
            Phase::Open { .. } => {
                let idle_at = self.last_heard + config.idle_timeout;
                if now >= idle_at {
                    return Due::IdleTimeout;
                }
                if self.ping_sent_at.is_some() {
                    return Due::Later(idle_at);
                }
                check(self.last_heard + config.ping_interval, Due::Ping)
            }
        }
    }

    fn closing_deadline(&self, config: &Config, now: Instant, due: Due) -> Due {
        let since = self.closing_since.unwrap_or(now);
        let deadline = since + config.close_timeout;
        if now >= deadline {
            due
        } else {
            Due::Later(deadline)
        }
    }
}

/// The shortest sleep the loop needs to wake for `at`, rounded up to whole milliseconds so it does not spin.
pub fn timeout_until(at: Instant, now: Instant) -> Duration {
    let left = at.saturating_duration_since(now);
    let millis = left.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}
