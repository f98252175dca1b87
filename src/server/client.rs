//! One accepted TCP client as the server loop sees it: its socket, where it is in its life, what it owes the peer
//! and the times its deadlines are computed from.
//!
//! Owns the per-client state and which timeout rule applies in each phase. It does no I/O of its own beyond what
//! the loop asks, and never decides on its own that it is dead: the loop does, in `ending.rs`.

use std::net::IpAddr;

use mio::net::TcpStream;

use super::budget::{InputAllowance, InputLimits};
use super::queue::WriteQueue;
use super::timeouts::{Due, Millis, Timeouts, Times, Waiting};
use crate::http::Endpoint;
use crate::protocol::{self, State};

/// Where a client is in its life.
#[derive(Debug)]
pub enum Phase {
    /// Reading the HTTP request head; `head` holds what arrived so far.
    ReadingRequest {
        /// The bytes of the unfinished head.
        head: Vec<u8>,
    },
    /// The body of a server API request (`http::api`) is arriving; `body` holds what arrived so far.
    ReadingBody {
        /// The request's head, as the API judged it: it says how long the body is.
        head: Box<crate::http::api::Head>,
        /// The body's bytes so far (and any that came after it).
        body: Vec<u8>,
    },
    /// A server API request waits for the cluster engine's answer (`/api/publish` on a node with `--redis`); its
    /// response is queued once it comes, or once Redis is found away.
    AwaitingCluster {
        /// What the request asked for its response.
        answer: Box<crate::http::api::Head>,
        /// Bytes that came after the request's body (a pipelined request), read once it is answered.
        rest: Vec<u8>,
    },
    /// A plain HTTP response is queued; the connection closes once it is sent.
    Responding,
    /// The handshake succeeded: a WebSocket.
    WebSocket {
        /// The RFC 6455 state machine.
        ws: protocol::Connection,
        /// Which service it talks to.
        endpoint: Endpoint,
    },
    /// Everything was sent and our side of TCP is shut: waiting for the peer's FIN (or the close timeout),
    /// discarding what it sends, at most `discard_left` more bytes of it.
    Lingering {
        /// Bytes the peer may still send to be discarded; past them it is not read until the close timeout.
        discard_left: u32,
    },
}

/// A client's yes-or-no facts as bits of one byte: a slab entry is a few hundred bytes per connection, and eight
/// `bool`s would cost a word of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags(u8);

impl Flags {
    /// The connection is counted against `address` in the server's `AddressBook`.
    pub const COUNTED: Flags = Flags(1);
    /// WRITABLE interest is registered (only while bytes are queued).
    pub const WANTS_WRITABLE: Flags = Flags(1 << 1);
    /// Reading stopped before the socket said WouldBlock, so readable data may be waiting without an event.
    pub const MORE_TO_READ: Flags = Flags(1 << 2);
    /// Waiting in the loop's list of clients to flush this turn.
    pub const DIRTY: Flags = Flags(1 << 3);
    /// Readiness reported that the peer shut its side (or the socket failed): read until 0, not just to a short
    /// read, because no new edge will come.
    pub const READ_CLOSED: Flags = Flags(1 << 4);
    /// We read the peer's FIN while still owing it bytes: the connection ends once they are written.
    pub const FIN_RECEIVED: Flags = Flags(1 << 5);
    /// We failed the connection (7.1.7): nothing more is read, and it ends once our Close is written.
    pub const FAILED: Flags = Flags(1 << 6);
    /// A chat client behind: its queue passed the bound, so it is sent nothing new and not read until it drains.
    pub const LAGGING: Flags = Flags(1 << 7);

    /// True if every bit of `flag` is set.
    pub fn contains(self, flag: Flags) -> bool {
        self.0 & flag.0 == flag.0
    }

    /// Sets the bits of `flag` when `on`, clears them otherwise.
    pub fn set(&mut self, flag: Flags, on: bool) {
        if on {
            self.0 |= flag.0;
        } else {
            self.0 &= !flag.0;
        }
    }
}

/// A client in the slab.
#[derive(Debug)]
pub struct Client {
    /// The socket, registered with the poll under the slab key.
    pub socket: TcpStream,
    /// Unique among the clients alive at once, unlike slab keys (it wraps after 2^32 connections).
    pub serial: u32,
    /// Where it is in its life.
    pub phase: Phase,
    /// Bytes owed to the peer.
    pub queue: WriteQueue,
    /// The times its deadlines are computed from.
    pub times: Times,
    /// What it may still make the loop read (a WebSocket's frames and bytes).
    pub input: InputAllowance,
    /// Bytes its WebSocket held in an unfinished message after the last read, as counted in the server's total.
    pub held: u32,
    /// The client's address: the TCP peer's, or the one a trusted proxy named once the request head arrived.
    pub address: IpAddr,
    /// The point of this client's earliest entry in the timer heap; [`Millis::NEVER`] when it has none.
    pub timer_at: Millis,
    /// Its yes-or-no facts, one bit each (see [`Flags`]).
    pub flags: Flags,
    /// The window of the compressed frames it shares with other clients (its WebSocket's
    /// `shared_compression_window`), or `None` if it is sent plain ones.
    pub shared_window: Option<u8>,
}

impl Client {
    /// A client accepted at `now`, about to send its request head.
    pub fn new(
        socket: TcpStream,
        serial: u32,
        now: Millis,
        limits: &InputLimits,
        address: IpAddr,
        counted: bool,
    ) -> Self {
        let mut flags = Flags::default();
        flags.set(Flags::COUNTED, counted);
        Client {
            socket,
            serial,
            phase: Phase::ReadingRequest { head: Vec::new() },
            queue: WriteQueue::default(),
            times: Times::accepted(now),
            input: InputAllowance::full(limits, now),
            held: 0,
            address,
            timer_at: Millis::NEVER,
            flags,
            shared_window: None,
        }
    }

    /// The WebSocket state machine, if the client is one.
    pub fn websocket_mut(&mut self) -> Option<&mut protocol::Connection> {
        match &mut self.phase {
            Phase::WebSocket { ws, .. } => Some(ws),
            _ => None,
        }
    }

    /// True while the request head is still arriving.
    pub fn is_reading_request(&self) -> bool {
        matches!(self.phase, Phase::ReadingRequest { .. })
    }

    /// True if this is a WebSocket on `endpoint` that may still be sent data.
    pub fn can_send_on(&self, endpoint: Endpoint) -> bool {
        // RFC 6455 5.5.1: no data frame after our Close (`Connection::can_send`).
        matches!(&self.phase, Phase::WebSocket { ws, endpoint: e } if *e == endpoint && ws.can_send())
    }

    /// True when all that is left is to send what is queued and close TCP: a response, or a WebSocket whose
    /// closing handshake is over (7.1.1).
    pub fn is_finished(&self) -> bool {
        match &self.phase {
            Phase::Responding => true,
            Phase::WebSocket { ws, .. } => ws.state().is_finished(),
            Phase::ReadingRequest { .. }
            | Phase::ReadingBody { .. }
            | Phase::AwaitingCluster { .. }
            | Phase::Lingering { .. } => false,
        }
    }

    /// What the client waits for, which picks the timeout rule.
    fn waiting(&self) -> Waiting {
        match &self.phase {
            Phase::ReadingRequest { .. }
            | Phase::ReadingBody { .. }
            | Phase::AwaitingCluster { .. }
            | Phase::Responding => Waiting::Request,
            Phase::WebSocket { ws, .. } if ws.state() == State::Open => Waiting::Peer,
            Phase::WebSocket { .. } | Phase::Lingering { .. } => Waiting::Close,
        }
    }

    /// What is due for this client at `now`.
    pub fn due(&self, now: Millis, timeouts: &Timeouts) -> Due {
        self.times.due(self.waiting(), now, timeouts)
    }

    /// A name for the phase, for logs.
    pub fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::ReadingRequest { .. } => "reading request",
            Phase::ReadingBody { .. } => "reading body",
            Phase::AwaitingCluster { .. } => "awaiting cluster",
            Phase::Responding => "responding",
            Phase::WebSocket { .. } => "websocket",
            Phase::Lingering { .. } => "lingering",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_flag_is_set_and_cleared_without_touching_the_others() {
        let all = [
            Flags::COUNTED,
            Flags::WANTS_WRITABLE,
            Flags::MORE_TO_READ,
            Flags::DIRTY,
            Flags::READ_CLOSED,
            Flags::FIN_RECEIVED,
            Flags::FAILED,
            Flags::LAGGING,
        ];
        for (i, flag) in all.into_iter().enumerate() {
            let mut flags = Flags::default();
            flags.set(flag, true);
            for (j, other) in all.into_iter().enumerate() {
                assert_eq!(flags.contains(other), i == j);
            }
            flags.set(Flags::DIRTY, true);
            flags.set(flag, false);
            assert!(!flags.contains(flag));
            assert_eq!(flags.contains(Flags::DIRTY), flag != Flags::DIRTY);
        }
    }
}
