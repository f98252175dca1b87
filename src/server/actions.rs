//! Carrying out what the chat asked for: a message to one client, a broadcast to a room, a close, a chat message
//! handed to the cluster (`redis.rs`).
//!
//! Owns the translation of `chat::Action`s into frames and queue entries, in the order the chat pushed them. It
//! must not decide anything itself: who gets what is the chat's decision, and frames come from
//! `protocol::encode_server_message`.

use super::queue::Chunk;
use super::Server;
use crate::chat::{Action, SharedText};
use crate::http::Endpoint;
use crate::protocol::{encode_server_message, encode_server_message_header, MessageKind};

impl Server {
    /// Applies every pending chat action, including those that applying pushes (a close makes the chat announce
    /// a departure).
    pub(super) fn apply_actions(&mut self) {
        while !self.actions.is_empty() {
            for action in std::mem::take(&mut self.actions) {
                match action {
                    Action::Send { to, payload } => self.send_to(to, &payload),
                    Action::Replay { to, texts } => self.replay_to(to, &texts),
                    Action::Broadcast {
                        room,
                        except,
                        payload,
                        v1_payload,
                        seq,
                    } => self.broadcast(room, except, &payload, v1_payload.as_deref(), seq),
                    Action::Publish { client, room, tail } => self.publish(client, room, tail),
                    Action::ClaimName {
                        client,
                        key,
                        room,
                        token,
                        shown,
                    } => self.claim_name(client, key, room, token, shown),
                    Action::ReleaseName { key, grace_ms } => self.release_name(key, grace_ms),
                    Action::Presence { room, user, joined } => {
                        self.relay_presence(room, user, joined)
                    }
                    Action::RelayDm {
                        client,
                        to_key,
                        text,
                        copy,
                    } => self.relay_dm(client, to_key, text, copy),
                    Action::Close {
                        client,
                        code,
                        reason,
                    } => self.close_websocket(client, code, &reason),
                    Action::CheckToken {
                        client,
                        token,
                        room,
                    } => self.check_token(client, token, room),
                }
            }
        }
    }

    /// True if a message for `key` alone may be queued: a chat client that may be sent data, whose queue is not over
    /// twice the bound. Personal messages (answers, DMs, replays) pass a client that is merely behind, so that it
    /// loses none of them when it catches up; past twice the bound they are dropped and counted.
    fn may_send_personal(&mut self, key: usize) -> bool {
        let Some(client) = self.clients.get(key) else {
            return false;
        };
        if !client.can_send_on(Endpoint::Chat) {
            return false;
        }
        if client.queue.queued_bytes() > 2 * self.config.max_queued_bytes {
            self.metrics.deliveries_skipped += 1;
            return false;
        }
        true
    }

    /// Queues stored chat messages for one client without copying them: each frame's header is written, and its
    /// payload is a slice of the history segment that holds it (5.1: unmasked, so the bytes are the same for all).
    fn replay_to(&mut self, key: usize, texts: &[SharedText]) {
        if !self.may_send_personal(key) {
            return;
        }
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        for text in texts {
            let (bytes, start, end) = text.shared();
            let mut header = Vec::with_capacity(10);
            encode_server_message_header(MessageKind::Text, (end - start) as usize, &mut header);
            client.queue.push(Chunk::Owned(header));
            client.queue.push(Chunk::Shared {
                bytes: bytes.clone(),
                start,
                end,
            });
            self.metrics.messages_out += 1;
        }
        self.mark_dirty(key);
    }

    /// Queues one text message for one chat client, in a frame of its own: unmasked (5.1), unfragmented (5.4),
    /// uncompressed, and not at all once our Close is out (5.5.1).
    fn send_to(&mut self, key: usize, text: &str) {
        if !self.may_send_personal(key) {
            return;
        }
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let mut frame = Vec::with_capacity(text.len() + 10);
        // Sent plain even to a client that agreed to compression (RFC 7692 6 lets any message go uncompressed): a
        // personal message can carry a secret (the `joined` welcome's session token) beside text others chose
        // (member names), and compressing the two together would let its length leak the secret (RFC 7692 8).
        encode_server_message(MessageKind::Text, text.as_bytes(), &mut frame);
        client.queue.push(Chunk::Owned(frame));
        self.metrics.messages_out += 1;
        self.mark_dirty(key);
    }
}
