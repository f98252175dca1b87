//! The end of a connection: the one close path for a WebSocket, slow consumers, lingering for the peer's FIN,
//! removal, and a graceful shutdown of all of them.
//!
//! Owns every way a client stops: [`Server::close_websocket`] is how the server closes a WebSocket (with a code
//! and a reason, for any cause), and [`Server::remove`] is the one place a client leaves the slab. The close code a
//! WebSocket ended with is read from `protocol::Connection`, never kept here.

use std::net::Shutdown;

use log::{debug, info};

use super::client::{Flags, Phase};
use super::Server;
use crate::http::Endpoint;
use crate::protocol::{CloseCode, State};

/// What a lingering peer may still send, discarded: enough for the frames a client had in flight when our Close
/// went out. Past it the peer is not read until the close timeout, so a flood cannot keep the server reading.
const LINGER_DISCARD_BYTES: u32 = 256 * 1024;

/// Why the server failed a WebSocket (7.1.7) for what its client did, beyond the protocol errors that
/// `protocol::Connection` fails on by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// More frames per second than its allowance (`budget.rs`).
    TooManyFrames,
    /// More bytes per second than its allowance.
    TooManyBytes,
    /// A message still unfinished at the message timeout.
    MessageTimeout,
    /// Its unfinished message would take the server's total past `max_incoming_bytes`.
    IncomingBudget,
}

impl Failure {
    /// The close code: 1008 for breaking a limit of ours, 1013 when the limit is the server's, not the client's.
    fn code(self) -> CloseCode {
        match self {
            Failure::IncomingBudget => CloseCode::TRY_AGAIN_LATER,
            _ => CloseCode::POLICY_VIOLATION,
        }
    }

    /// The close reason.
    fn reason(self) -> &'static str {
        match self {
            Failure::TooManyFrames => "too many frames",
            Failure::TooManyBytes => "too many bytes",
            Failure::MessageTimeout => "message took too long",
            Failure::IncomingBudget => "server busy: try again later",
        }
    }

    /// The label of `roomcast_connections_failed_total`.
    pub(super) fn label(self) -> &'static str {
        match self {
            Failure::TooManyFrames => "frame_budget",
            Failure::TooManyBytes => "byte_budget",
            Failure::MessageTimeout => "message_timeout",
            Failure::IncomingBudget => "incoming_budget",
        }
    }
}

impl Server {
    /// Closes a WebSocket: starts the closing handshake with `code` and `reason` (7.1.2) and queues the Close
    /// behind what the client is already owed. Then the close timeout runs; the peer's Close or our FIN after it
    /// ends the connection. Does nothing to a client that is not an open WebSocket.
    pub(super) fn close_websocket(&mut self, key: usize, code: CloseCode, reason: &str) {
        if let Some(ws) = self.clients.get_mut(key).and_then(|c| c.websocket_mut()) {
            ws.close(code, reason);
        }
        self.queue_protocol_output(key);
    }

    /// Fails a WebSocket for `failure` (7.1.7): a Close with its code and reason, nothing more read, the room told
    /// at once, and TCP closed as soon as the Close is written (or at the close timeout).
    pub(super) fn fail_websocket(&mut self, key: usize, failure: Failure) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        client.flags.set(Flags::FAILED, true);
        debug!("{key} failed: {}", failure.reason());
        self.metrics.count_failure(failure.label());
        self.close_websocket(key, failure.code(), failure.reason());
        self.leave_chat(key);
    }

    /// A chat client that stayed behind for the whole grace period is not reading: drop what it has not started to receive,
    /// close with 1008, and give it the close timeout to go. Its room mates are not held up: broadcasts skip it.
    pub(super) fn evict_slow_consumer(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let Phase::WebSocket {
            ws,
            endpoint: Endpoint::Chat,
        } = &client.phase
        else {
            return;
        };
        if ws.state() != State::Open {
            return;
        }
        let dropped = client.queue.truncate_to_started_frame();
        // Read again: the only thing left to hear from it is its Close.
        client.flags.set(Flags::LAGGING, false);
        client.times.behind(false, self.now);
        self.lagging.remove(&key);
        self.metrics.slow_consumers_dropped += 1;
        debug!("{key} is a slow consumer; dropped {dropped} queued bytes");
        // RFC 6455 7.4.1: 1008, the generic code for a policy the peer broke.
        self.close_websocket(
            key,
            CloseCode::POLICY_VIOLATION,
            "too slow: not reading messages",
        );
        self.leave_chat(key);
    }

    /// Everything is sent: shut our side of TCP (the server closes first, 7.1.1) and wait briefly for the peer's
    /// FIN, reading and discarding what it still sends. A failed connection lingers too: closing a socket with
    /// unread bytes resets it, and a reset can destroy the Close we just sent before the peer reads it.
    pub(super) fn linger(&mut self, key: usize) {
        self.leave_chat(key);
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        if client.flags.contains(Flags::FIN_RECEIVED) {
            return self.remove(key);
        }
        if let Err(e) = client.socket.shutdown(Shutdown::Write) {
            debug!("shutdown {key}: {e}");
            return self.remove(key);
        }
        if let Phase::WebSocket { ws, .. } = &client.phase {
            self.metrics.count_close(ended_with(ws.close_code()));
        }
        client.phase = Phase::Lingering {
            discard_left: LINGER_DISCARD_BYTES,
        };
        client.times.closing_began(self.now, true);
        let more_to_read = client.flags.contains(Flags::MORE_TO_READ);
        self.arm_timer(key);
        if more_to_read {
            self.unfinished_reads.push(key);
        }
    }

    /// Takes a chat client out of its room now, so the others hear of it at once rather than when TCP ends.
    fn leave_chat(&mut self, key: usize) {
        let in_chat = self.clients.get(key).is_some_and(|client| {
            matches!(
                client.phase,
                Phase::WebSocket {
                    endpoint: Endpoint::Chat,
                    ..
                }
            )
        });
        if in_chat {
            self.chat
                .disconnect(key, super::chat_time(self.now), &mut self.actions);
            self.apply_actions();
        }
    }

    /// The one place a client ends: out of the slab, the poll and the chat.
    pub(super) fn remove(&mut self, key: usize) {
        if !self.clients.contains(key) {
            return;
        }
        let mut client = self.clients.remove(key);
        self.lagging.remove(&key);
        self.unpark(key);
        self.incoming_bytes -= client.held as usize;
        if client.flags.contains(Flags::COUNTED) {
            self.addresses.close(client.address);
        }
        if let Err(e) = self.poll.registry().deregister(&mut client.socket) {
            debug!("deregister {key}: {e}");
        }
        if let Phase::WebSocket { ws, endpoint } = &client.phase {
            self.metrics.count_close(ended_with(ws.close_code()));
            if *endpoint == Endpoint::Chat {
                self.chat
                    .disconnect(key, super::chat_time(self.now), &mut self.actions);
                self.apply_actions();
            }
        }
        debug!("removed {key}");
    }

    /// Starts a graceful shutdown: close the listener, send every WebSocket Close 1001, drop clients still reading
    /// their request, and give the rest the shutdown timeout.
    pub(super) fn begin_shutdown(&mut self) {
        info!(
            "shutting down: closing {} connection(s)",
            self.clients.len()
        );
        if let Some(mut listener) = self.listener.take() {
            if let Err(e) = self.poll.registry().deregister(&mut listener) {
                debug!("deregister listener: {e}");
            }
        }
        let timeout = self.config.shutdown_timeout.as_millis();
        self.draining_until = Some(self.now.plus(u32::try_from(timeout).unwrap_or(u32::MAX)));
        let keys: Vec<usize> = self.clients.iter().map(|(key, _)| key).collect();
        for key in keys {
            match self.clients.get(key).map(|client| &client.phase) {
                // RFC 6455 7.4.1: 1001, the server is going away.
                Some(Phase::WebSocket { .. }) => {
                    self.close_websocket(key, CloseCode::GOING_AWAY, "server shutting down")
                }
                Some(
                    Phase::ReadingRequest { .. }
                    | Phase::ReadingBody { .. }
                    | Phase::AwaitingCluster { .. },
                ) => self.remove(key),
                Some(Phase::Responding | Phase::Lingering { .. }) | None => {}
            }
        }
        self.flush_dirty();
    }

    /// True when every client left has finished its closing handshake and been sent our FIN: nothing more is owed
    /// to anyone, so a shutdown need not wait for their FINs.
    pub(super) fn drained(&self) -> bool {
        self.clients
            .iter()
            .all(|(_, client)| matches!(client.phase, Phase::Lingering { .. }))
    }
}

/// The code to count for a WebSocket that ended: that of its closing handshake, or 1006 when there was none
/// (7.1.5: the connection was closed without a Close frame).
fn ended_with(code: Option<CloseCode>) -> CloseCode {
    code.unwrap_or(CloseCode::ABNORMAL_CLOSURE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::metrics::FAILURE_LABELS;

    #[test]
    fn every_failure_has_a_listed_label_and_a_sendable_code() {
        for failure in [
            Failure::TooManyFrames,
            Failure::TooManyBytes,
            Failure::MessageTimeout,
            Failure::IncomingBudget,
        ] {
            assert!(FAILURE_LABELS.contains(&failure.label()), "{failure:?}");
            assert!(failure.code().is_sendable(crate::protocol::Role::Server));
        }
    }
}
