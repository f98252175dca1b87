//! The WebSocket phase, input side: bytes through `protocol::Connection`, messages to the chat or back to an echo
//! client, and whatever the protocol owes the peer into the write queue.
//!
//! Owns what each endpoint does with a message: `/echo` sends it back as it came, the chat route hands text to the
//! chat state machine and refuses binary (1003). It must not parse frames (`protocol`) or decide chat outcomes
//! (`chat`); the chat's answers are carried out by `actions.rs`.

use log::debug;

use super::budget::Overdrawn;
use super::client::Phase;
use super::ending::Failure;
use super::queue::Chunk;
use super::verify::Parked;
use super::Server;
use crate::http::Endpoint;
use crate::protocol::{CloseCode, Event, FeedLimit, FeedLimits, Message, State};

impl Server {
    /// Frames arrived for a WebSocket: feed them to its protocol state machine and act on the events in order.
    pub(super) fn on_frames(&mut self, key: usize, bytes: &[u8]) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let Phase::WebSocket { ws, endpoint } = &mut client.phase else {
            return;
        };
        let endpoint = *endpoint;
        let serial = client.serial;
        let mut events = std::mem::take(&mut self.ws_events);
        // The input budget is checked before the bytes are served: over the byte allowance, none of them is; over
        // the frame allowance, the frames beyond it are not.
        let limits = &self.input_limits;
        client.input.refill(limits, self.now);
        let mut overdrawn = None;
        let allowed = if client.input.has_bytes_for(limits, bytes.len()) {
            bytes
        } else {
            overdrawn = Some(Overdrawn::Bytes);
            &[]
        };
        // Inflated bytes count against the same byte allowance as the bytes read: a compressed message is charged
        // for what it costs the server to hold, not for what it cost the peer to send.
        let feed_limits = FeedLimits {
            frames: client.input.frames_left(limits),
            inflated_bytes: client
                .input
                .bytes_left(limits)
                .saturating_sub(allowed.len()),
        };
        let frames_before = ws.frames_received();
        let result = ws.feed_within(allowed, &mut events, feed_limits);
        let frames = ws.frames_received().wrapping_sub(frames_before);
        let mut inflated = 0;
        if let Ok(fed) = &result {
            inflated = fed.inflated;
            overdrawn = match fed.stopped {
                Some(FeedLimit::Frames) => Some(Overdrawn::Frames),
                Some(FeedLimit::InflatedBytes) => Some(Overdrawn::Bytes),
                None => overdrawn,
            };
        }
        if let Err(over) = client.input.spend(limits, frames, allowed.len() + inflated) {
            overdrawn = overdrawn.or(Some(over));
        }
        // What an unfinished message holds now counts against the server's total until it completes.
        let held = u32::try_from(ws.buffered_bytes()).unwrap_or(u32::MAX);
        let grew = held > client.held;
        self.incoming_bytes = self.incoming_bytes - client.held as usize + held as usize;
        client.held = held;
        client.times.mid_message(ws.is_mid_message(), self.now);
        // One reading of the wall clock serves every message of this input.
        let mut chat_time = None;
        let mut refusal = None;
        for event in events.drain(..) {
            let Event::Message(message) = event else {
                // Pings were answered by the protocol, Pongs need nothing, and a Close is the protocol's to answer.
                continue;
            };
            self.metrics.messages_in += 1;
            match (endpoint, message) {
                (Endpoint::Echo, message) => {
                    if ws
                        .send_owned(message.kind(), message.into_payload())
                        .is_ok()
                    {
                        self.metrics.messages_out += 1;
                    }
                }
                // 7.4.1: 1003 for a type of data the endpoint cannot accept. Nothing after it is acted on.
                (Endpoint::Chat, Message::Binary(_)) => {
                    refusal = Some((
                        CloseCode::UNSUPPORTED_DATA,
                        "the chat speaks JSON text frames",
                    ));
                    break;
                }
                // Text after our Close (a shutdown, an eviction) is not acted on (5.5.1); text before a Close we
                // merely owe still is.
                // Behind a message whose token is being checked, held until the verdict (`verify.rs`).
                (Endpoint::Chat, Message::Text(text)) if self.parked.contains_key(&key) => {
                    if let Some(parked) = self.parked.get_mut(&key) {
                        parked.hold(text, &mut self.incoming_bytes);
                    }
                }
                (Endpoint::Chat, Message::Text(text)) if ws.can_send() => {
                    let now = *chat_time.get_or_insert_with(|| super::chat_time(self.now));
                    self.chat.handle_text(key, &text, now, &mut self.actions);
                    if self.chat.awaits_token_check(key) {
                        self.parked
                            .entry(key)
                            .or_insert_with(|| Parked::new(serial));
                    }
                }
                (Endpoint::Chat, Message::Text(_)) => {}
            }
        }
        self.ws_events = events;
        if let Err(e) = result {
            debug!("{key} failed the WebSocket connection: {e}");
        }
        // The chat's answers first: they answer messages that came before any Close this input caused.
        self.apply_actions();
        let failure = match overdrawn {
            Some(Overdrawn::Frames) => Some(Failure::TooManyFrames),
            Some(Overdrawn::Bytes) => Some(Failure::TooManyBytes),
            None if grew && self.incoming_bytes > self.config.max_incoming_bytes => {
                Some(Failure::IncomingBudget)
            }
            None => None,
        };
        match (failure, refusal) {
            (Some(failure), _) => self.fail_websocket(key, failure),
            (None, Some((code, reason))) => self.close_websocket(key, code, reason),
            (None, None) => self.queue_protocol_output(key),
        }
    }

    /// Moves the bytes the protocol owes the peer (pongs, closes, echoes) into the write queue, notes when closing
    /// began, and re-arms the client's deadline.
    pub(super) fn queue_protocol_output(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let Phase::WebSocket { ws, .. } = &mut client.phase else {
            return;
        };
        // Once the closing handshake is complete, the flush that follows also ends the connection (7.1.1: the
        // server closes TCP first), even when nothing is left to send.
        let owes_flush = ws.has_output() || ws.state().is_finished();
        for piece in ws.take_output_pieces() {
            client.queue.push(Chunk::Owned(piece));
        }
        if ws.state() != State::Open {
            client.times.closing_began(self.now, false);
        }
        if owes_flush {
            self.mark_dirty(key);
        }
        self.arm_timer(key);
    }
}
