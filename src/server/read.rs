//! Reading: a readable socket into the loop's one input buffer, and the bytes to whatever phase the client is in.
//!
//! Owns the read loop with its fairness cap, backpressure on `/echo` (a client that sends without reading is not
//! read from), and the peer's FIN. It keeps no bytes of its own: a phase keeps only what it could not use yet.

use std::io::{self, Read};

use log::debug;

use super::client::{Flags, Phase};
use super::Server;
use crate::http::Endpoint;

/// The size of the loop-wide input buffer.
pub(super) const INPUT_BUFFER_SIZE: usize = 64 * 1024;

/// How many reads one client gets per readable event before others get a turn.
const READS_PER_TURN: usize = 16;

impl Server {
    /// Reads a readable client until WouldBlock, a short read, or the fairness cap, handing each read's bytes to
    /// its phase. A client stopped by the cap is read again before the turn ends.
    pub(super) fn read_socket(&mut self, key: usize) {
        let mut buf = std::mem::take(&mut self.input);
        for _ in 0..READS_PER_TURN {
            if self.is_backpressured(key) {
                break;
            }
            let Some(client) = self.clients.get_mut(key) else {
                break;
            };
            client.flags.set(Flags::MORE_TO_READ, false);
            match client.socket.read(&mut buf) {
                Ok(0) => {
                    self.on_fin(key);
                    break;
                }
                Ok(n) => {
                    // A short read drained the socket: with edge-triggered readiness on TCP, more bytes raise a
                    // new edge, so reading again only to see WouldBlock would be a wasted system call. A FIN that
                    // came with the data raises no new edge, hence `read_closed`.
                    let drained = n < buf.len() && !client.flags.contains(Flags::READ_CLOSED);
                    client.flags.set(Flags::MORE_TO_READ, !drained);
                    client.times.heard_from(self.now);
                    self.metrics.bytes_in += n as u64;
                    self.on_input(key, &buf[..n]);
                    if drained {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    client.flags.set(Flags::MORE_TO_READ, true)
                }
                Err(e) => {
                    debug!("read from {key}: {e}");
                    self.remove(key);
                    break;
                }
            }
        }
        self.input = buf;
        if self
            .clients
            .get(key)
            .is_some_and(|client| client.flags.contains(Flags::MORE_TO_READ))
            && !self.is_backpressured(key)
        {
            self.unfinished_reads.push(key);
        }
    }

    /// Echo stops reading a client while its own queue is over the bound, so a client that sends without reading
    /// slows itself down instead of growing our memory (10.4). Reading resumes when a flush drains the queue.
    fn is_backpressured(&mut self, key: usize) -> bool {
        let bound = self.config.max_queued_bytes;
        // A connection waiting for a token check is read no more until the verdict (`verify.rs`).
        let parked = self.is_parked(key);
        self.clients.get_mut(key).is_some_and(|client| {
            // A failed connection is read no more (7.1.7) until its Close is written and it lingers; a lingering one
            // only until it has sent what it may. Either waits for its deadline with the rest unread: what it sends
            // then stays in its own socket buffer, and our Close, already on its way, is not lost to a reset.
            match client.phase {
                Phase::Lingering { discard_left: 0 } => return true,
                Phase::Lingering { .. } => {}
                _ if client.flags.contains(Flags::FAILED) => return true,
                _ => {}
            }
            // A chat client behind is not read either: what it asks for would only queue more behind.
            let full = parked
                || client.flags.contains(Flags::LAGGING)
                || matches!(
                    client.phase,
                    Phase::WebSocket {
                        endpoint: Endpoint::Echo,
                        ..
                    }
                ) && client.queue.queued_bytes() > bound;
            if full {
                client.flags.set(Flags::MORE_TO_READ, true);
            }
            full
        })
    }

    /// The peer shut its side of TCP (read returned 0). A peer may half-close right after its request or its
    /// Close (RFC 9293 3.6): what we owe it in answer still goes out, and the flush then ends the connection.
    fn on_fin(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        debug!("peer {key} closed TCP while {}", client.phase_name());
        if client.is_finished() && !client.queue.is_empty() {
            client.flags.set(Flags::FIN_RECEIVED, true);
            client.flags.set(Flags::MORE_TO_READ, false);
            return;
        }
        self.remove(key);
    }

    /// Hands bytes to the client's phase.
    fn on_input(&mut self, key: usize, bytes: &[u8]) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        match &mut client.phase {
            Phase::ReadingRequest { head } => {
                head.extend_from_slice(bytes);
                self.on_request_bytes(key);
            }
            Phase::ReadingBody { .. } => self.on_api_body(key, bytes),
            Phase::WebSocket { .. } => self.on_frames(key, bytes),
            // A response is on its way: what the peer sends now is discarded (RFC 6455 7.1.1).
            Phase::Responding => {}
            // A pipelined request behind one waiting for the cluster, read once that one is answered; past a body's
            // limit, the connection closes after the answer instead.
            Phase::AwaitingCluster { answer, rest } => {
                if answer.keep_alive && rest.len() + bytes.len() <= crate::http::api::MAX_BODY_BYTES
                {
                    rest.extend_from_slice(bytes);
                } else {
                    answer.keep_alive = false;
                    rest.clear();
                }
            }
            // Discarded; past what a lingering peer may send, it is read no more (`is_backpressured`).
            Phase::Lingering { discard_left } => {
                let read = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
                *discard_left = discard_left.saturating_sub(read);
            }
        }
    }
}
