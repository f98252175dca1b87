//! A room's chat history: its last messages as first sent, end to end in a few shared segments.
//!
//! Owns how messages are kept and handed out. Each message is appended to the room's open segment in the forms it
//! was sent in: its V2 text, followed by its V1 text only when that differs (when a field needed HTML-escaping for
//! the original page), so a message that needs no escaping costs exactly its one text. A full segment, or one a
//! replay needs, is sealed into an `Rc<[u8]>` that every replay, in either dialect, hands out as [`SharedText`]
//! slices: a hundred clients replaying the same history share its bytes rather than copying them. Dropping the
//! oldest message frees nothing until its whole segment is unused; a segment is at most [`SEGMENT_BYTES`] long (or
//! one message's forms, if longer), and is allocated once, never grown: twice the size of the one before it, so a
//! quiet room holds little and a busy one copies nothing but the seal. It counts the bytes it holds, both forms included, so that the chat can keep
//! every room's history within one budget, and knows nothing of epochs or the replay rules (`room.rs`), nor how
//! a form is made (`handlers.rs`).

use std::collections::VecDeque;
use std::rc::Rc;

use super::Dialect;

/// A segment is sealed once it holds this much, so history is freed this many bytes at a time.
pub(super) const SEGMENT_BYTES: usize = 16 * 1024;

/// The smallest segment: a quiet room's first messages take this much, not a whole [`SEGMENT_BYTES`].
const FIRST_SEGMENT_BYTES: usize = 256;

/// Part of a shared buffer that holds one message's text, as stored: valid UTF-8, a complete JSON object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedText {
    bytes: Rc<[u8]>,
    start: u32,
    end: u32,
}

impl SharedText {
    /// The text's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes
            .get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }

    /// The buffer holding the text, and where the text lies in it: for a caller that shares the buffer itself.
    pub fn shared(&self) -> (&Rc<[u8]>, u32, u32) {
        (&self.bytes, self.start, self.end)
    }
}

/// One kept message: its seq and where its forms lie in its segment. The V2 text is `start..v2_end`; the V1 text is
/// `v2_end..v1_end` when it differs, and the V2 text itself when it does not (`v1_end == v2_end`). Four `u32`s
/// beside the seq keep an entry at 24 bytes, what it was when only one form was kept.
#[derive(Clone, Copy, Debug)]
struct Kept {
    seq: u64,
    /// The segment's number, counted from the first segment this history ever had, wrapping: fewer than 2^32
    /// segments are ever held at once (at most one per message kept, plus one), so differences stay exact.
    segment: u32,
    start: u32,
    v2_end: u32,
    v1_end: u32,
}

impl Kept {
    /// Where the text a client of `dialect` is sent lies in the segment.
    fn range(&self, dialect: Dialect) -> (u32, u32) {
        match dialect {
            Dialect::V1 if self.v1_end > self.v2_end => (self.v2_end, self.v1_end),
            _ => (self.start, self.v2_end),
        }
    }

    /// The length of the text a client of `dialect` is sent.
    fn len(&self, dialect: Dialect) -> usize {
        let (start, end) = self.range(dialect);
        (end - start) as usize
    }
}

/// A run of message texts, end to end.
#[derive(Debug)]
enum Segment {
    /// Complete: shared with every replay that needs part of it.
    Sealed(Rc<[u8]>),
    /// Still taking messages (only ever the newest segment).
    Open(Vec<u8>),
}

impl Segment {
    /// The bytes of text it holds.
    fn len(&self) -> usize {
        match self {
            Segment::Sealed(bytes) => bytes.len(),
            Segment::Open(bytes) => bytes.len(),
        }
    }

    fn bytes_held(&self) -> usize {
        match self {
            Segment::Sealed(bytes) => bytes.len(),
            Segment::Open(bytes) => bytes.capacity(),
        }
    }
}

/// The last chat messages of a room, oldest first.
#[derive(Debug, Default)]
pub(super) struct History {
    segments: VecDeque<Segment>,
    /// The number of `segments[0]`.
    first_segment: u32,
    index: VecDeque<Kept>,
    /// Bytes of memory the segments hold.
    bytes: usize,
}

impl History {
    /// Keeps a message: `text`, its V2 form, and `v1_text`, its V1 form when that differs (`None` when a V1 client
    /// is sent `text` itself). Drops the oldest beyond `capacity` messages. Returns the change in bytes held.
    pub(super) fn push(
        &mut self,
        seq: u64,
        text: &str,
        v1_text: Option<&str>,
        capacity: usize,
    ) -> isize {
        let before = self.bytes;
        if capacity == 0 {
            self.clear();
            return before.wrapping_neg() as isize;
        }
        while self.index.len() >= capacity {
            self.drop_oldest();
        }
        let v1_text = v1_text.unwrap_or_default();
        let len = text.len() + v1_text.len();
        // A segment never grows (growing would copy it): the next one is twice the size of the one before, up to
        // SEGMENT_BYTES, so a quiet room holds little and a busy one allocates each segment once, at full size.
        let fits = matches!(self.segments.back(), Some(Segment::Open(open)) if open.len() + len <= open.capacity());
        if !fits {
            let previous = self.segments.back().map_or(0, Segment::len);
            self.seal_open();
            let capacity = (previous * 2)
                .clamp(FIRST_SEGMENT_BYTES, SEGMENT_BYTES)
                .max(len);
            self.segments
                .push_back(Segment::Open(Vec::with_capacity(capacity)));
            self.bytes += capacity;
        }
        let number = self
            .first_segment
            .wrapping_add(self.segments.len() as u32)
            .wrapping_sub(1);
        if let Some(Segment::Open(open)) = self.segments.back_mut() {
            let start = open.len();
            let old_capacity = open.capacity();
            open.extend_from_slice(text.as_bytes());
            let v2_end = open.len();
            open.extend_from_slice(v1_text.as_bytes());
            self.bytes = self.bytes + open.capacity() - old_capacity;
            let positions = (
                u32::try_from(start),
                u32::try_from(v2_end),
                u32::try_from(open.len()),
            );
            if let (Ok(start), Ok(v2_end), Ok(v1_end)) = positions {
                self.index.push_back(Kept {
                    seq,
                    segment: number,
                    start,
                    v2_end,
                    v1_end,
                });
            }
        }
        self.bytes as isize - before as isize
    }

    /// Drops the oldest message; returns the bytes freed (nonzero only when its segment is left unused).
    pub(super) fn drop_oldest(&mut self) -> usize {
        let before = self.bytes;
        self.index.pop_front();
        let oldest_used = self.index.front().map(|kept| kept.segment);
        while oldest_used.is_none_or(|used| used != self.first_segment) {
            let Some(segment) = self.segments.pop_front() else {
                break;
            };
            self.bytes -= segment.bytes_held();
            self.first_segment = self.first_segment.wrapping_add(1);
            if self.segments.is_empty() {
                break;
            }
        }
        before - self.bytes
    }

    /// Drops whole segments, oldest first, until at least one is freed or nothing is left; returns the bytes freed.
    /// For a budget over every room: it frees memory in steps of a segment, never a message at a time for nothing.
    pub(super) fn drop_oldest_segment(&mut self) -> usize {
        let mut freed = 0;
        while freed == 0 && !self.index.is_empty() {
            freed += self.drop_oldest();
        }
        freed
    }

    /// Forgets every message.
    fn clear(&mut self) {
        *self = History {
            first_segment: self.first_segment.wrapping_add(self.segments.len() as u32),
            ..History::default()
        };
    }

    /// Bytes of memory held.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many messages are kept.
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// The seq of the oldest message kept.
    pub(super) fn oldest_seq(&self) -> Option<u64> {
        self.index.front().map(|kept| kept.seq)
    }

    /// The position of the first message with a seq above `seen` (the length when there is none).
    pub(super) fn position_after(&self, seen: u64) -> usize {
        self.index.partition_point(|kept| kept.seq <= seen)
    }

    /// The latest position from `start` on whose messages, to the end, add up to at most `max_bytes` in the form a
    /// client of `dialect` is sent: where a replay to it that must fit in `max_bytes` starts.
    pub(super) fn start_within(&self, start: usize, max_bytes: usize, dialect: Dialect) -> usize {
        let mut total = 0usize;
        let mut position = self.index.len();
        for kept in self.index.range(start.min(self.index.len())..).rev() {
            total += kept.len(dialect);
            if total > max_bytes {
                break;
            }
            position -= 1;
        }
        position
    }

    /// The messages from position `start` on, in the form a client of `dialect` is sent, shared: the open segment
    /// is sealed first if they reach into it, which gives back its spare capacity (`bytes` goes down).
    pub(super) fn texts_from(&mut self, start: usize, dialect: Dialect) -> Vec<SharedText> {
        let start = start.min(self.index.len());
        if start < self.index.len() {
            self.seal_open();
        }
        let mut texts = Vec::with_capacity(self.index.len() - start);
        for kept in self.index.range(start..) {
            let position = kept.segment.wrapping_sub(self.first_segment) as usize;
            if let Some(Segment::Sealed(bytes)) = self.segments.get(position) {
                let (start, end) = kept.range(dialect);
                texts.push(SharedText {
                    bytes: bytes.clone(),
                    start,
                    end,
                });
            }
        }
        texts
    }

    /// Turns the open segment into a sealed one: one copy into its final size, then shared for good.
    fn seal_open(&mut self) {
        if let Some(last) = self.segments.back_mut() {
            if let Segment::Open(open) = last {
                let sealed: Rc<[u8]> = Rc::from(open.as_slice());
                self.bytes = self.bytes + sealed.len() - open.capacity();
                *last = Segment::Sealed(sealed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(history: &mut History, start: usize) -> Vec<String> {
        texts_in(history, start, Dialect::V2)
    }

    fn texts_in(history: &mut History, start: usize, dialect: Dialect) -> Vec<String> {
        history
            .texts_from(start, dialect)
            .iter()
            .map(|text| String::from_utf8(text.as_bytes().to_vec()).unwrap())
            .collect()
    }

    /// The bytes held, counted from scratch.
    fn recount(history: &History) -> usize {
        history.segments.iter().map(Segment::bytes_held).sum()
    }

    #[test]
    fn keeps_the_last_capacity_messages() {
        let mut history = History::default();
        for seq in 1..=5 {
            history.push(seq, &format!("m{seq}"), None, 3);
        }
        assert_eq!(history.len(), 3);
        assert_eq!(history.oldest_seq(), Some(3));
        assert_eq!(texts(&mut history, 0), ["m3", "m4", "m5"]);
        assert_eq!(texts(&mut history, 1), ["m4", "m5"]);
        assert!(texts(&mut history, 9).is_empty());
    }

    #[test]
    fn replays_share_one_buffer_instead_of_copying() {
        let mut history = History::default();
        for seq in 1..=3 {
            history.push(seq, &format!("message {seq}"), None, 10);
        }
        let first = history.texts_from(0, Dialect::V2);
        let second = history.texts_from(1, Dialect::V2);
        assert!(Rc::ptr_eq(first[1].shared().0, second[0].shared().0));
        assert_eq!(first[1], second[0]);
        history.push(4, "after the seal", None, 10);
        assert_eq!(texts(&mut history, 0).len(), 4);
    }

    #[test]
    fn positions_follow_seqs() {
        let mut history = History::default();
        for seq in [3, 4, 7] {
            history.push(seq, "x", None, 10);
        }
        assert_eq!(history.position_after(0), 0);
        assert_eq!(history.position_after(3), 1);
        assert_eq!(history.position_after(5), 2);
        assert_eq!(history.position_after(7), 3);
    }

    #[test]
    fn a_replay_within_a_byte_cap_keeps_the_newest_that_fit() {
        let mut history = History::default();
        for seq in 1..=5 {
            history.push(seq, &"x".repeat(10 * seq as usize), None, 10);
        }
        assert_eq!(history.start_within(0, 1000, Dialect::V2), 0);
        assert_eq!(
            history.start_within(0, 90, Dialect::V2),
            3,
            "40 + 50 fit in 90; 30 more does not"
        );
        assert_eq!(history.start_within(4, 10, Dialect::V2), 5, "nothing fits");
        assert_eq!(history.start_within(2, 1000, Dialect::V2), 2);
    }

    #[test]
    fn a_capacity_of_zero_keeps_nothing_and_frees_everything() {
        let mut history = History::default();
        history.push(1, "a", None, 2);
        let freed = history.push(2, "b", None, 0);
        assert!(freed < 0);
        assert_eq!(history.len(), 0);
        assert_eq!(history.bytes(), 0);
        assert!(texts(&mut history, 0).is_empty());
    }

    #[test]
    fn bytes_held_are_counted_exactly_through_pushes_seals_and_drops() {
        let mut history = History::default();
        let mut counted = 0isize;
        let mut state = 0x2545_f491_u64;
        for seq in 1..=3_000u64 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let len = (state >> 33) as usize % 5_000;
            let text = "é".repeat(len / 2);
            let v1_text = (state >> 60 == 0).then(|| "&amp;".repeat(len / 5));
            counted += history.push(seq, &text, v1_text.as_deref(), 50);
            if seq % 17 == 0 {
                let before = history.bytes() as isize;
                history.texts_from(history.len() / 2, Dialect::V1);
                counted += history.bytes() as isize - before;
            }
            if seq % 101 == 0 {
                counted -= history.drop_oldest_segment() as isize;
            }
            assert_eq!(counted as usize, history.bytes(), "seq {seq}");
            assert_eq!(history.bytes(), recount(&history), "seq {seq}");
            assert!(history.segments.len() <= history.len() + 1);
        }
    }

    /// Pushes 2,000 messages of random lengths and capacities, some with a V1 form, into `history` and checks both
    /// dialects' replays against a plain list of every message's two texts.
    fn assert_matches_a_plain_list(mut history: History) {
        let mut model: VecDeque<(u64, String, Option<String>)> = VecDeque::new();
        let mut state = 0x9e37_79b9_u64;
        for seq in 1..=2_000u64 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let len = (state >> 33) as usize % 3_000;
            let text: String = "é<x".chars().cycle().take(len).collect();
            let v1_text = (state >> 62 == 0).then(|| text.replace('<', "&lt;"));
            let capacity = 1 + (state >> 40) as usize % 20;
            history.push(seq, &text, v1_text.as_deref(), capacity);
            model.push_back((seq, text, v1_text));
            while model.len() > capacity {
                model.pop_front();
            }
            if seq % 7 == 0 {
                let v2: Vec<String> = model.iter().map(|(_, t, _)| t.clone()).collect();
                let v1: Vec<String> = model
                    .iter()
                    .map(|(_, t, v1)| v1.clone().unwrap_or_else(|| t.clone()))
                    .collect();
                assert_eq!(texts(&mut history, 0), v2, "seq {seq}");
                assert_eq!(texts_in(&mut history, 0, Dialect::V1), v1, "seq {seq}");
            }
            assert_eq!(history.oldest_seq(), model.front().map(|m| m.0));
        }
    }

    #[test]
    fn matches_a_plain_list_through_many_drops() {
        assert_matches_a_plain_list(History::default());
    }

    #[test]
    fn segment_numbers_that_wrap_around_still_find_their_segments() {
        assert_matches_a_plain_list(History {
            first_segment: u32::MAX - 3,
            ..History::default()
        });
    }

    #[test]
    fn a_message_that_needs_no_v1_form_costs_only_its_text() {
        assert_eq!(
            std::mem::size_of::<Kept>(),
            24,
            "the index entry per message"
        );
        // Sealed, exactly the texts, as before the V1 form was kept. Open, the segments as allocated: each twice
        // the one before, and sealed ones cut to their texts (1,000-byte messages: 1,000 + 2,000 + 4,000 + 8,000 +
        // 16,000, four more sealed at 16,000 and the open one of 16 KiB; 200-byte ones: 200 + 400 + 800 + ... +
        // 12,800, room for 127 messages).
        for (len, open, sealed) in [(1_000, 111_384, 100_000), (200, 25_400, 20_000)] {
            let mut history = History::default();
            for seq in 1..=100 {
                history.push(seq, &"p".repeat(len), None, 100);
            }
            assert_eq!(history.bytes(), open, "{len}-byte messages, open");
            history.texts_from(0, Dialect::V1);
            assert_eq!(history.bytes(), sealed, "{len}-byte messages, sealed");
        }
    }

    #[test]
    fn a_v1_replay_of_a_message_without_a_v1_form_shares_the_v2_bytes() {
        let mut history = History::default();
        history.push(1, "plain", None, 10);
        let v2 = history.texts_from(0, Dialect::V2);
        let v1 = history.texts_from(0, Dialect::V1);
        assert_eq!(v1, v2);
        assert!(Rc::ptr_eq(v1[0].shared().0, v2[0].shared().0));
    }

    #[test]
    fn a_v1_form_is_kept_beside_the_v2_text_shared_and_counted() {
        let mut history = History::default();
        history.push(1, "<b>", Some("&lt;b&gt;"), 10);
        history.push(2, "b", None, 10);
        assert_eq!(texts_in(&mut history, 0, Dialect::V2), ["<b>", "b"]);
        assert_eq!(texts_in(&mut history, 0, Dialect::V1), ["&lt;b&gt;", "b"]);
        assert_eq!(
            history.bytes(),
            "<b>&lt;b&gt;b".len(),
            "sealed: both forms, exactly"
        );
        let v1 = history.texts_from(0, Dialect::V1);
        let v2 = history.texts_from(0, Dialect::V2);
        assert!(
            Rc::ptr_eq(v1[0].shared().0, v2[0].shared().0),
            "one segment"
        );
    }

    #[test]
    fn a_replay_cap_counts_the_form_the_dialect_is_sent() {
        let mut history = History::default();
        history.push(1, "<<", Some("&lt;&lt;"), 10);
        history.push(2, "ab", None, 10);
        assert_eq!(
            history.start_within(0, 4, Dialect::V2),
            0,
            "2 + 2 bytes fit"
        );
        assert_eq!(
            history.start_within(0, 4, Dialect::V1),
            1,
            "8 + 2 bytes do not"
        );
        assert_eq!(history.start_within(0, 10, Dialect::V1), 0);
    }

    #[test]
    fn dropping_segments_frees_memory_in_steps() {
        let mut history = History::default();
        for seq in 1..=100 {
            history.push(seq, &"y".repeat(1_000), None, 1_000);
        }
        // The room's first segments are small (1,000, 2,000, 4,000, 8,000, 16,000 bytes); after them, each is
        // SEGMENT_BYTES, sealed as the 16 messages it holds, so one step frees that much.
        for first in [1_000, 2_000, 4_000, 8_000, 16_000] {
            assert_eq!(history.drop_oldest_segment(), first);
        }
        let held = history.bytes();
        let freed = history.drop_oldest_segment();
        assert_eq!(freed, (SEGMENT_BYTES / 1_000) * 1_000);
        assert_eq!(history.bytes(), held - freed);
        assert_eq!(history.len(), 100 - 31 - 16);
        while history.drop_oldest_segment() > 0 {}
        assert_eq!(history.bytes(), 0);
        assert_eq!(history.len(), 0);
    }
}
