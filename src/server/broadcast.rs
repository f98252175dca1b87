//! Broadcast: one message to every member of a room, encoded once into the room's batch for this turn.
//!
//! Owns who reads which form of a broadcast (an [`Audience`]: a room and a dialect), the hand-out of one span of
//! the shared batch to each member's queue, and the members that fell behind: a member whose queue is over the
//! bound is sent nothing more (the bound holds inside the turn, not only at its end), and its [`Lag`] records the
//! first chat message it missed so that it can be caught up from the history. It must not build frames by hand
//! (`protocol::encode_server_message` does) nor choose the members (the chat's room does).

use log::warn;

use super::Server;
use crate::chat::{self, Dialect};
use crate::http::Endpoint;
use crate::protocol::{encode_server_message, MessageKind};

/// Writes `text` as the one frame every member shares: a server's frame, unmasked (5.1) and unfragmented (5.4).
fn text_frame(text: &str) -> impl FnOnce(&mut Vec<u8>) + '_ {
    move |out| encode_server_message(MessageKind::Text, text.as_bytes(), out)
}

/// A chat client that fell behind: the room and seq of the first chat message it was not sent, if any yet.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Lag {
    pub(super) missed_from: Option<(chat::RoomId, u64)>,
}

/// Who reads a broadcast batch: the members of a room that take one form of its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Audience {
    room: chat::RoomId,
    /// The form: v2, or the original page's v1 where its text differs.
    dialect: Dialect,
}

impl Server {
    /// Encodes the frame once (twice when v1 members get another form) into the room's batch for this turn, and
    /// queues its span for every member: consecutive broadcasts to a member merge into one queue entry.
    pub(super) fn broadcast(
        &mut self,
        room: chat::RoomId,
        except: Option<usize>,
        payload: &str,
        v1_payload: Option<&str>,
        seq: Option<u64>,
    ) {
        let v2 = Audience {
            room,
            dialect: Dialect::V2,
        };
        let Some(frame) = self.batches.append(v2, text_frame(payload)) else {
            warn!(
                "a broadcast of {} bytes is too large to share; dropped",
                payload.len()
            );
            return;
        };
        let v1_frame = match v1_payload {
            Some(text) if std::ptr::eq(text, payload) => Some(frame),
            Some(text) => self.batches.append(
                Audience {
                    room,
                    dialect: Dialect::V1,
                },
                text_frame(text),
            ),
            None => None,
        };
        let bound = self.config.max_queued_bytes;
        let Server {
            chat,
            clients,
            dirty,
            metrics,
            lagging,
            now,
            ..
        } = self;
        for member in chat.members(room) {
            if Some(member.client) == except {
                continue;
            }
            let span = match (member.dialect, v1_frame) {
                (Dialect::V2, _) => frame,
                (Dialect::V1, Some(v1)) => v1,
                (Dialect::V1, None) => continue,
            };
            if let Some(client) = clients.get_mut(member.client) {
                if client.lagging || client.queue.queued_bytes() > bound {
                    // Behind: nothing more until it catches up; what it misses of the chat is in the history.
                    let lag = lagging.entry(member.client).or_default();
                    lag.missed_from = lag.missed_from.or(seq.map(|seq| (room, seq)));
                    if !client.lagging {
                        client.lagging = true;
                        client.times.behind(true, *now);
                        // Its flush this turn arms the grace period's deadline.
                        if !client.dirty {
                            client.dirty = true;
                            dirty.push(member.client);
                        }
                    }
                    metrics.deliveries_skipped += 1;
                    continue;
                }
                if client.can_send_on(Endpoint::Chat) {
                    client.queue.push_span(span);
                    metrics.messages_out += 1;
                    if !client.dirty {
                        client.dirty = true;
                        dirty.push(member.client);
                    }
                }
            }
        }
    }
}
