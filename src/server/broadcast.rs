//! Broadcast: one message to every member of a room, encoded once into the room's batch for this turn.
//!
//! Owns who reads which form of a broadcast (an [`Audience`]: a room and a dialect), the hand-out of one span of
//! the shared batch to each member's queue, and the members that fell behind: a member whose queue is over the
//! bound is sent nothing more (the bound holds inside the turn, not only at its end), and its [`Lag`] records the
//! first chat message it missed so that it can be caught up from the history. It must not build frames by hand
//! (`protocol::encode_server_message` does) nor choose the members (the chat's room does).

use log::warn;

use super::batch::{Batches, Span};
use super::client::Flags;
use super::Server;
use crate::chat::{self, Dialect};
use crate::http::Endpoint;
use crate::protocol::{encode_server_message, encode_server_message_compressed, MessageKind};

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
    /// The window the frames are compressed with (RFC 7692 7.1.2), or 0 for plain frames.
    window: u8,
}

/// Slots per dialect in [`Forms`]: plain, then compressed with windows 8 to 15.
const FORMS_PER_DIALECT: usize = 9;

/// The frames one broadcast becomes, each encoded the first time a member needs it: a plain frame, and a frame
/// compressed once for all the members that share a window (RFC 7692 7.1.1: without context takeover a message
/// compressed on its own reads the same for every peer), for each dialect.
struct Forms<'t> {
    room: chat::RoomId,
    payload: &'t str,
    v1_payload: Option<&'t str>,
    /// `None` until made; then the span, or `None` if the frame could not be shared.
    spans: [[Option<Option<Span>>; FORMS_PER_DIALECT]; 2],
}

/// A form as one small number, for the broadcast loop's check that a member reads the same form as the one
/// before it (most members of a room do).
fn form_key(dialect: Dialect, window: Option<u8>) -> u16 {
    (u16::from(dialect == Dialect::V1) << 8) | u16::from(window.unwrap_or(0))
}

impl<'t> Forms<'t> {
    fn new(room: chat::RoomId, payload: &'t str, v1_payload: Option<&'t str>) -> Self {
        Forms {
            room,
            payload,
            v1_payload,
            spans: [[None; FORMS_PER_DIALECT]; 2],
        }
    }

    /// The frame for a member of `dialect` that shares compressed frames of `window` (`None`: plain frames),
    /// encoded into its batch the first time it is asked for. `None` for a v1 member when the message has no v1
    /// form.
    fn span_for(
        &mut self,
        batches: &mut Batches<Audience>,
        dialect: Dialect,
        window: Option<u8>,
    ) -> Option<Span> {
        let (dialect, text) = match (dialect, self.v1_payload) {
            (Dialect::V2, _) => (Dialect::V2, self.payload),
            // The same text as v2: the same frames.
            (Dialect::V1, Some(text)) if std::ptr::eq(text, self.payload) => {
                (Dialect::V2, self.payload)
            }
            (Dialect::V1, Some(text)) => (Dialect::V1, text),
            (Dialect::V1, None) => return None,
        };
        let window = window.unwrap_or(0);
        let slot = usize::from(window.saturating_sub(7)).min(FORMS_PER_DIALECT - 1);
        let dialect_index = usize::from(dialect == Dialect::V1);
        if let Some(made) = self.spans[dialect_index][slot] {
            return made;
        }
        let audience = Audience {
            room: self.room,
            dialect,
            window,
        };
        let span = if window == 0 {
            let span = batches.append(audience, |out| {
                encode_server_message(MessageKind::Text, text.as_bytes(), out)
            });
            if span.is_none() {
                warn!(
                    "a broadcast of {} bytes is too large to share; dropped",
                    text.len()
                );
            }
            span
        } else {
            // Too short, or no smaller compressed: the plain frame serves these members too (RSV1 clear, 7.2.1).
            batches
                .append_if(audience, |out| {
                    encode_server_message_compressed(
                        MessageKind::Text,
                        text.as_bytes(),
                        window,
                        out,
                    )
                })
                .or_else(|| self.span_for(batches, dialect, None))
        };
        self.spans[dialect_index][slot] = Some(span);
        span
    }
}

impl Server {
    /// Encodes the message once per form its members read (v1 or v2, plain or compressed with one window) into
    /// the room's batches for this turn, and queues its span for every member: consecutive broadcasts to a member
    /// merge into one queue entry.
    pub(super) fn broadcast(
        &mut self,
        room: chat::RoomId,
        except: Option<usize>,
        payload: &str,
        v1_payload: Option<&str>,
        seq: Option<u64>,
    ) {
        let mut forms = Forms::new(room, payload, v1_payload);
        // The form the previous member read (none yet: no form has this key), and its frame.
        let mut last_form = u16::MAX;
        let mut last_span = None;
        let bound = self.config.max_queued_bytes;
        let Server {
            chat,
            clients,
            batches,
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
            if let Some(client) = clients.get_mut(member.client) {
                if client.flags.contains(Flags::LAGGING) || client.queue.queued_bytes() > bound {
                    // Behind: nothing more until it catches up; what it misses of the chat is in the history.
                    let lag = lagging.entry(member.client).or_default();
                    lag.missed_from = lag.missed_from.or(seq.map(|seq| (room, seq)));
                    if !client.flags.contains(Flags::LAGGING) {
                        client.flags.set(Flags::LAGGING, true);
                        client.times.behind(true, *now);
                        // Its flush this turn arms the grace period's deadline.
                        if !client.flags.contains(Flags::DIRTY) {
                            client.flags.set(Flags::DIRTY, true);
                            dirty.push(member.client);
                        }
                    }
                    metrics.deliveries_skipped += 1;
                    continue;
                }
                if !client.can_send_on(Endpoint::Chat) {
                    continue;
                }
                let form = form_key(member.dialect, client.shared_window);
                if form != last_form {
                    last_form = form;
                    last_span = forms.span_for(batches, member.dialect, client.shared_window);
                }
                let Some(span) = last_span else {
                    continue;
                };
                client.queue.push_span(span);
                metrics.messages_out += 1;
                if !client.flags.contains(Flags::DIRTY) {
                    client.flags.set(Flags::DIRTY, true);
                    dirty.push(member.client);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: chat::RoomId = chat::RoomId::for_test(1);

    #[test]
    fn a_broadcast_is_compressed_once_for_every_member_of_one_window() {
        let text = "the quick brown fox jumps over the lazy dog; ".repeat(10);
        let mut batches = Batches::default();
        let mut forms = Forms::new(ROOM, &text, None);
        let first = forms.span_for(&mut batches, Dialect::V2, Some(15));
        let second = forms.span_for(&mut batches, Dialect::V2, Some(15));
        assert_eq!(first, second, "made once");
        let other_window = forms.span_for(&mut batches, Dialect::V2, Some(10));
        let plain = forms.span_for(&mut batches, Dialect::V2, None);
        let (first, other_window, plain) = (first.unwrap(), other_window.unwrap(), plain.unwrap());
        assert_ne!(first.batch, other_window.batch, "a batch per window");
        assert_ne!(first.batch, plain.batch);
        assert!(
            first.len() * 3 < plain.len(),
            "{} vs {}",
            first.len(),
            plain.len()
        );
        batches.seal();
        let compressed = &batches.sealed(first.batch).unwrap()[first.start as usize..];
        assert_eq!(compressed[0], 0xC1, "FIN, RSV1 and Text (RFC 7692 6)");
    }

    #[test]
    fn a_short_broadcast_is_sent_plain_to_every_member() {
        let mut batches = Batches::default();
        let mut forms = Forms::new(ROOM, "hi", None);
        let compressed = forms.span_for(&mut batches, Dialect::V2, Some(15));
        let plain = forms.span_for(&mut batches, Dialect::V2, None);
        assert_eq!(compressed, plain);
    }

    #[test]
    fn v1_members_share_the_v2_frames_when_the_text_is_the_same_and_have_none_without_a_v1_form() {
        let text = "the same text for both dialects, long enough to be compressed. ".repeat(5);
        let mut batches = Batches::default();
        let mut forms = Forms::new(ROOM, &text, Some(&text));
        assert_eq!(
            forms.span_for(&mut batches, Dialect::V1, Some(15)),
            forms.span_for(&mut batches, Dialect::V2, Some(15))
        );
        let mut v2_only = Forms::new(ROOM, &text, None);
        assert_eq!(v2_only.span_for(&mut batches, Dialect::V1, None), None);
    }
}
