//! Inflating the compressed messages the generator's connections receive (RFC 7692 7.2.2), on the fast receive
//! path (`client::FrameReceiver`), with roomcast's own `MessageDecompressor`.
//!
//! Owns the decompressors and one shortcut. A server that compresses each message on its own
//! (`server_no_context_takeover`) sends a room's members byte-identical compressed frames, and identical bytes
//! without context inflate to identical text. One generator core plays a thousand clients that in life would each
//! inflate on their own machine, so inflating every copy again would make the generator, not the server, set the
//! pace (inflating is most of its work per delivery). With `reuse`, the text of a recent compressed message is
//! kept and handed out again for a byte-identical copy: every copy is compared in full with the one that was
//! inflated, so what the caller receives is exactly what inflating it would give. A server that keeps context
//! sends each connection its own stream, and every message is inflated by that connection's own decompressor.
//! Nothing here touches a socket or a frame.

use std::cell::RefCell;
use std::io;

use roomcast::protocol::deflate::{DeflateParams, MessageDecompressor};

/// Recent compressed messages whose text is kept for `reuse`: enough for every message in flight in a fan-out of
/// 100 rooms with 32 messages in flight each, many times over.
const SLOTS: usize = 1 << 14;
/// Slots a message may be kept in: the pair its hash picks. Messages whose compressed forms end alike (the same
/// padding stretch, the stamp being near the start) pick the same pair; with one slot each, two such messages in
/// flight at once evicted each other and were inflated again (2% more inflations in a 100 x 10 fan-out).
const WAYS: usize = 2;

/// How one connection inflates its compressed messages.
#[derive(Debug)]
pub enum Inflate {
    /// The server compresses each message on its own: the thread's shared decompressor serves every connection.
    Alone {
        /// Hand out the kept text of a byte-identical compressed message instead of inflating it again.
        reuse: bool,
    },
    /// The server's messages refer back to its earlier ones: this connection's own decompressor, made at the first
    /// compressed message, and the buffer its messages are inflated into.
    WithContext(Option<Box<(MessageDecompressor, Vec<u8>)>>),
}

/// One kept message: its compressed bytes and its text.
#[derive(Default)]
struct Slot {
    compressed: Vec<u8>,
    text: Vec<u8>,
    /// When it was last handed out or filled (`Shared::clock`): the older of a pair is replaced.
    used_at: u64,
}

/// What every connection of the thread whose server compresses each message on its own shares.
struct Shared {
    decompressor: MessageDecompressor,
    /// Where a message is inflated when its text is not kept.
    scratch: Vec<u8>,
    /// Kept messages, by a hash of their compressed bytes; empty until `reuse` is first asked for.
    slots: Vec<Slot>,
    /// Counts lookups, to date the slots' use.
    clock: u64,
    counts: InflateCounts,
}

/// How many compressed messages were inflated, and how many were handed the kept text of an identical one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InflateCounts {
    /// Messages inflated.
    pub inflated: u64,
    /// Messages given the text kept for a byte-identical compressed message.
    pub reused: u64,
}

thread_local! {
    static SHARED: RefCell<Shared> = RefCell::new(Shared {
        decompressor: MessageDecompressor::new(true, usize::MAX),
        scratch: Vec::new(),
        slots: Vec::new(),
        clock: 0,
        counts: InflateCounts::default(),
    });
    static CONTEXT_INFLATED: RefCell<u64> = const { RefCell::new(0) };
}

/// This thread's counts so far, over every connection.
pub fn counts() -> InflateCounts {
    let mut counts = SHARED.with(|shared| shared.borrow().counts);
    counts.inflated += CONTEXT_INFLATED.with(|n| *n.borrow());
    counts
}

/// How many bytes of a compressed message its slot is chosen by: its last ones, where two messages of a room
/// differ (their first ones are the same envelope). Only the slot depends on it: a copy is handed the kept text
/// only when it equals the kept message in full.
const KEYED_BYTES: usize = 32;

/// A hash of the length of `bytes` and of their last `KEYED_BYTES`, eight at a time (the Fx multiply-and-rotate).
/// Hashing the whole of every copy received cost as much as the rest of receiving it; the full comparison that
/// follows is what makes a reused text exact.
fn hash(bytes: &[u8]) -> u64 {
    let mut h = bytes.len() as u64;
    let keyed = &bytes[bytes.len().saturating_sub(KEYED_BYTES)..];
    let mut words = keyed.chunks_exact(8);
    for word in &mut words {
        let value = u64::from_le_bytes(word.try_into().unwrap_or_default());
        h = (h.rotate_left(5) ^ value).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    for &byte in words.remainder() {
        h = (h.rotate_left(5) ^ u64::from(byte)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    h
}

impl Inflate {
    /// How to inflate what a server that agreed to `params` sends.
    pub fn for_params(params: &DeflateParams, reuse: bool) -> Inflate {
        if params.server_no_context_takeover {
            Inflate::Alone { reuse }
        } else {
            Inflate::WithContext(None)
        }
    }

    /// Inflates one whole compressed message, at most `max_len` bytes, and hands its text to `use_text`.
    pub fn message<R>(
        &mut self,
        compressed: &[u8],
        max_len: usize,
        use_text: impl FnOnce(&[u8]) -> R,
    ) -> io::Result<R> {
        let bad = |e: roomcast::protocol::deflate::InflateError| {
            io::Error::new(io::ErrorKind::InvalidData, e.to_string())
        };
        match self {
            Inflate::WithContext(kept) => {
                let (decompressor, text) = &mut **kept.get_or_insert_with(|| {
                    Box::new((MessageDecompressor::new(false, max_len), Vec::new()))
                });
                text.clear();
                decompressor
                    .decompress_message(compressed, text)
                    .map_err(bad)?;
                CONTEXT_INFLATED.with(|n| *n.borrow_mut() += 1);
                Ok(use_text(text))
            }
            Inflate::Alone { reuse } => SHARED.with(|shared| {
                let shared = &mut *shared.borrow_mut();
                shared.decompressor.set_max_message_len(max_len);
                if !*reuse {
                    shared.scratch.clear();
                    shared
                        .decompressor
                        .decompress_message(compressed, &mut shared.scratch)
                        .map_err(bad)?;
                    shared.counts.inflated += 1;
                    return Ok(use_text(&shared.scratch));
                }
                if shared.slots.is_empty() {
                    shared.slots.resize_with(SLOTS, Slot::default);
                }
                shared.clock += 1;
                let first = hash(compressed) as usize % (SLOTS / WAYS) * WAYS;
                let pair = &mut shared.slots[first..first + WAYS];
                if let Some(slot) = pair.iter_mut().find(|slot| slot.compressed == compressed) {
                    slot.used_at = shared.clock;
                    shared.counts.reused += 1;
                    return Ok(use_text(&slot.text));
                }
                let Some(slot) = pair.iter_mut().min_by_key(|slot| slot.used_at) else {
                    return Err(io::Error::other("no slot to keep a message in"));
                };
                slot.used_at = shared.clock;
                slot.compressed.clear();
                slot.text.clear();
                shared
                    .decompressor
                    .decompress_message(compressed, &mut slot.text)
                    .map_err(bad)?;
                slot.compressed.extend_from_slice(compressed);
                shared.counts.inflated += 1;
                Ok(use_text(&slot.text))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast::protocol::deflate::QuickCompressor;

    fn compressed(text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        QuickCompressor::new(15)
            .compress_if_smaller(text, &mut out)
            .unwrap();
        out
    }

    fn inflate(inflate: &mut Inflate, data: &[u8]) -> Vec<u8> {
        inflate.message(data, 1 << 20, <[u8]>::to_vec).unwrap()
    }

    #[test]
    fn an_identical_copy_is_handed_the_kept_text_and_a_different_one_is_inflated() {
        let first = b"the meeting moved to the afternoon, the meeting moved again".repeat(4);
        let second = b"the meeting moved to the morning, the meeting moved again".repeat(4);
        let (a, b) = (compressed(&first), compressed(&second));
        let mut reusing = Inflate::Alone { reuse: true };
        let before = counts();
        assert_eq!(inflate(&mut reusing, &a), first);
        assert_eq!(inflate(&mut reusing, &a), first);
        assert_eq!(inflate(&mut reusing, &b), second);
        assert_eq!(inflate(&mut reusing, &a), first);
        let after = counts();
        assert_eq!(after.inflated - before.inflated, 2);
        assert!(after.reused - before.reused >= 1);
    }

    /// `text` as one stored DEFLATE block (RFC 1951 3.2.4), not final, as a compressed message's payload.
    fn stored(text: &[u8]) -> Vec<u8> {
        let len = u16::try_from(text.len()).unwrap();
        [&[0x00][..], &len.to_le_bytes(), &(!len).to_le_bytes(), text].concat()
    }

    #[test]
    fn messages_that_share_their_last_bytes_are_told_apart_by_the_rest() {
        let tail = b" and that is the whole plan for the release of the new build";
        let first = [&b"alice: moved to noon."[..], tail].concat();
        let second = [&b"bob: moved to monday."[..], tail].concat();
        let (a, b) = (stored(&first), stored(&second));
        assert_eq!(hash(&a), hash(&b), "the same slot");
        let mut reusing = Inflate::Alone { reuse: true };
        for _ in 0..2 {
            assert_eq!(inflate(&mut reusing, &a), first);
            assert_eq!(inflate(&mut reusing, &b), second);
        }
    }

    #[test]
    fn two_messages_that_pick_the_same_slots_are_both_kept() {
        let tail = b" and that is the whole plan for the release of the new build";
        let first = [&b"carol: moved to noon."[..], tail].concat();
        let second = [&b"dave: moved to friday"[..], tail].concat();
        let (a, b) = (stored(&first), stored(&second));
        let mut reusing = Inflate::Alone { reuse: true };
        assert_eq!(inflate(&mut reusing, &a), first);
        assert_eq!(inflate(&mut reusing, &b), second);
        let before = counts();
        for _ in 0..3 {
            assert_eq!(inflate(&mut reusing, &a), first);
            assert_eq!(inflate(&mut reusing, &b), second);
        }
        let after = counts();
        assert_eq!(after.inflated, before.inflated);
        assert_eq!(after.reused - before.reused, 6);
    }

    #[test]
    fn without_reuse_every_copy_is_inflated() {
        let text = b"see you all at the release review tomorrow morning. ".repeat(5);
        let data = compressed(&text);
        let mut every = Inflate::Alone { reuse: false };
        let before = counts();
        for _ in 0..3 {
            assert_eq!(inflate(&mut every, &data), text);
        }
        assert_eq!(counts().inflated - before.inflated, 3);
        assert_eq!(counts().reused, before.reused);
    }

    #[test]
    fn a_corrupt_message_is_an_error_not_a_kept_text() {
        let mut reusing = Inflate::Alone { reuse: true };
        let garbage = [0xffu8; 40];
        assert!(reusing.message(&garbage, 1 << 20, |_| ()).is_err());
        assert!(
            reusing.message(&garbage, 1 << 20, |_| ()).is_err(),
            "not served from a slot"
        );
    }
}
