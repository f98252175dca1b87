//! A room's chat history: its last messages as first sent, end to end in a few shared segments.
//!
//! Owns how messages are kept and handed out. Each message's text (its V2 form, the one stored form) is appended
//! to the room's open segment; a full segment, or one a replay needs, is sealed into an `Rc<[u8]>` that every
//! replay hands out as [`SharedText`] slices: a hundred clients replaying the same history share its bytes rather
//! than copying them. Dropping the oldest message frees nothing until its whole segment is unused; a segment is
//! at most [`SEGMENT_BYTES`] long (or one message, if longer). It counts the bytes it holds so that the chat can
//! keep every room's history within one budget, and knows nothing of epochs, dialects or the replay rules
//! (`room.rs`).

use std::collections::VecDeque;
use std::rc::Rc;

/// A segment is sealed once it holds this much, so history is freed this many bytes at a time.
pub(super) const SEGMENT_BYTES: usize = 16 * 1024;

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

/// One kept message: its seq and where its text lies.
#[derive(Clone, Copy, Debug)]
struct Kept {
    seq: u64,
    /// The segment's number, counted from the first segment this history ever had.
    segment: u64,
    start: u32,
    end: u32,
}

impl Kept {
    fn len(&self) -> usize {
        (self.end - self.start) as usize
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
    first_segment: u64,
    index: VecDeque<Kept>,
    /// Bytes of memory the segments hold.
    bytes: usize,
}

impl History {
    /// Keeps a message, dropping the oldest beyond `capacity` messages. Returns the change in bytes held.
    pub(super) fn push(&mut self, seq: u64, text: &str, capacity: usize) -> isize {
        let before = self.bytes;
        if capacity == 0 {
            self.clear();
            return before.wrapping_neg() as isize;
        }
        while self.index.len() >= capacity {
            self.drop_oldest();
        }
        let len = text.len();
        let fits = matches!(self.segments.back(), Some(Segment::Open(open)) if open.len() + len <= SEGMENT_BYTES);
        if !fits {
            self.seal_open();
            let capacity = len.clamp(256, SEGMENT_BYTES).max(len);
            self.segments
                .push_back(Segment::Open(Vec::with_capacity(capacity)));
            self.bytes += capacity;
        }
        let number = self.first_segment + self.segments.len() as u64 - 1;
        if let Some(Segment::Open(open)) = self.segments.back_mut() {
            let start = open.len();
            let old_capacity = open.capacity();
            open.extend_from_slice(text.as_bytes());
            self.bytes = self.bytes + open.capacity() - old_capacity;
            if let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(open.len())) {
                self.index.push_back(Kept {
                    seq,
                    segment: number,
                    start,
                    end,
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
        while oldest_used.is_none_or(|used| used > self.first_segment) {
            let Some(segment) = self.segments.pop_front() else {
                break;
            };
            self.bytes -= segment.bytes_held();
            self.first_segment += 1;
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
            first_segment: self.first_segment + self.segments.len() as u64,
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

    /// The latest position from `start` on whose messages, to the end, add up to at most `max_bytes`: where a
    /// replay that must fit in `max_bytes` starts.
    pub(super) fn start_within(&self, start: usize, max_bytes: usize) -> usize {
        let mut total = 0usize;
        let mut position = self.index.len();
        for kept in self.index.range(start.min(self.index.len())..).rev() {
            total += kept.len();
            if total > max_bytes {
                break;
            }
            position -= 1;
        }
        position
    }

    /// The messages from position `start` on, shared: the open segment is sealed first if they reach into it,
    /// which gives back its spare capacity (`bytes` goes down).
    pub(super) fn texts_from(&mut self, start: usize) -> Vec<SharedText> {
        let start = start.min(self.index.len());
        if start < self.index.len() {
            self.seal_open();
        }
        let mut texts = Vec::with_capacity(self.index.len() - start);
        for kept in self.index.range(start..) {
            let position = kept.segment.saturating_sub(self.first_segment) as usize;
            if let Some(Segment::Sealed(bytes)) = self.segments.get(position) {
                texts.push(SharedText {
                    bytes: bytes.clone(),
                    start: kept.start,
                    end: kept.end,
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
        history
            .texts_from(start)
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
            history.push(seq, &format!("m{seq}"), 3);
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
            history.push(seq, &format!("message {seq}"), 10);
        }
        let first = history.texts_from(0);
        let second = history.texts_from(1);
        assert!(Rc::ptr_eq(first[1].shared().0, second[0].shared().0));
        assert_eq!(first[1], second[0]);
        history.push(4, "after the seal", 10);
        assert_eq!(texts(&mut history, 0).len(), 4);
    }

    #[test]
    fn positions_follow_seqs() {
        let mut history = History::default();
        for seq in [3, 4, 7] {
            history.push(seq, "x", 10);
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
            history.push(seq, &"x".repeat(10 * seq as usize), 10);
        }
        assert_eq!(history.start_within(0, 1000), 0);
        assert_eq!(
            history.start_within(0, 90),
            3,
            "40 + 50 fit in 90; 30 more does not"
        );
        assert_eq!(history.start_within(4, 10), 5, "nothing fits");
        assert_eq!(history.start_within(2, 1000), 2);
    }

    #[test]
    fn a_capacity_of_zero_keeps_nothing_and_frees_everything() {
        let mut history = History::default();
        history.push(1, "a", 2);
        let freed = history.push(2, "b", 0);
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
            counted += history.push(seq, &"é".repeat(len / 2), 50);
            if seq % 17 == 0 {
                let before = history.bytes() as isize;
                history.texts_from(history.len() / 2);
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

    #[test]
    fn matches_a_plain_list_through_many_drops() {
        let mut history = History::default();
        let mut model: VecDeque<(u64, String)> = VecDeque::new();
        let mut state = 0x9e37_79b9_u64;
        for seq in 1..=2_000u64 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let len = (state >> 33) as usize % 3_000;
            let text: String = "é<x".chars().cycle().take(len).collect();
            let capacity = 1 + (state >> 40) as usize % 20;
            history.push(seq, &text, capacity);
            model.push_back((seq, text));
            while model.len() > capacity {
                model.pop_front();
            }
            if seq % 7 == 0 {
                let expected: Vec<String> = model.iter().map(|(_, t)| t.clone()).collect();
                assert_eq!(texts(&mut history, 0), expected, "seq {seq}");
            }
            assert_eq!(history.oldest_seq(), model.front().map(|m| m.0));
        }
    }

    #[test]
    fn dropping_segments_frees_memory_in_steps() {
        let mut history = History::default();
        for seq in 1..=100 {
            history.push(seq, &"y".repeat(1_000), 1_000);
        }
        let held = history.bytes();
        let freed = history.drop_oldest_segment();
        assert!(freed >= SEGMENT_BYTES - 1_000, "{freed}");
        assert_eq!(history.bytes(), held - freed);
        assert!(history.len() < 100);
        while history.drop_oldest_segment() > 0 {}
        assert_eq!(history.bytes(), 0);
        assert_eq!(history.len(), 0);
    }
}
