//! A room's chat history: its last messages as first sent, in both dialects' forms, end to end in one byte ring.
//!
//! Owns how messages are kept (their text appended to one `VecDeque<u8>`, with a small index of seqs and lengths)
//! and dropped (oldest first, beyond a capacity). Keeping a message copies its text once and, once the ring has
//! grown to the room's working size, allocates nothing; dropping one frees nothing and reads nothing of it. A
//! history of separately allocated messages paid a cache miss and a `free` for every message dropped. It knows
//! nothing of epochs or of the replay rules (`room.rs`).

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::rc::Rc;

use super::Dialect;

/// A ring that grew past this and is three-quarters empty gives memory back.
const SHRINK_ABOVE: usize = 64 * 1024;

/// One kept message: its seq and the lengths of its forms, which lie end to end in the ring.
#[derive(Clone, Copy, Debug)]
struct Kept {
    seq: u64,
    /// Bytes of the V2 form.
    len: usize,
    /// Bytes of the V1 form, stored after the V2 form; `None` when the V1 form is the same text.
    v1_len: Option<NonZeroUsize>,
}

impl Kept {
    fn bytes(&self) -> usize {
        self.len + self.v1_len.map_or(0, NonZeroUsize::get)
    }
}

/// The last chat messages of a room, oldest first.
#[derive(Debug, Default)]
pub(super) struct History {
    text: VecDeque<u8>,
    index: VecDeque<Kept>,
}

impl History {
    /// Keeps a message (`v1`: its V1 form, when that differs), dropping the oldest beyond `capacity`.
    pub(super) fn push(&mut self, seq: u64, text: &str, v1: Option<&str>, capacity: usize) {
        if capacity == 0 {
            self.text = VecDeque::new();
            self.index = VecDeque::new();
            return;
        }
        while self.index.len() >= capacity {
            let Some(oldest) = self.index.pop_front() else {
                break;
            };
            self.text.drain(..oldest.bytes().min(self.text.len()));
        }
        self.text.extend(text.as_bytes());
        let v1_len = v1.and_then(|v1| {
            self.text.extend(v1.as_bytes());
            NonZeroUsize::new(v1.len())
        });
        self.index.push_back(Kept {
            seq,
            len: text.len(),
            v1_len,
        });
        if self.text.capacity() > SHRINK_ABOVE && self.text.len() < self.text.capacity() / 4 {
            self.text.shrink_to(self.text.len() * 2);
        }
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

    /// The messages from position `start` on, in the form of `dialect`, each copied into its own `Rc`.
    pub(super) fn texts_from(
        &self,
        start: usize,
        dialect: Dialect,
    ) -> impl Iterator<Item = Rc<str>> + '_ {
        let start = start.min(self.index.len());
        let mut offset: usize = self.index.range(..start).map(Kept::bytes).sum();
        self.index.range(start..).filter_map(move |kept| {
            let at = offset;
            offset += kept.bytes();
            let (from, len) = match (dialect, kept.v1_len) {
                (Dialect::V1, Some(v1_len)) => (at + kept.len, v1_len.get()),
                _ => (at, kept.len),
            };
            let end = from
                .checked_add(len)
                .filter(|&end| end <= self.text.len())?;
            let bytes: Vec<u8> = self.text.range(from..end).copied().collect();
            String::from_utf8(bytes).ok().map(Rc::from)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(history: &History, start: usize, dialect: Dialect) -> Vec<String> {
        history
            .texts_from(start, dialect)
            .map(|text| text.to_string())
            .collect()
    }

    #[test]
    fn keeps_the_last_capacity_messages_in_both_forms() {
        let mut history = History::default();
        for seq in 1..=5 {
            let v1_form = format!("l{seq}");
            let v1_form = (seq % 2 == 0).then_some(v1_form.as_str());
            history.push(seq, &format!("m{seq}"), v1_form, 3);
        }
        assert_eq!(history.len(), 3);
        assert_eq!(history.oldest_seq(), Some(3));
        assert_eq!(texts(&history, 0, Dialect::V2), ["m3", "m4", "m5"]);
        assert_eq!(texts(&history, 0, Dialect::V1), ["m3", "l4", "m5"]);
        assert_eq!(texts(&history, 1, Dialect::V1), ["l4", "m5"]);
        assert_eq!(texts(&history, 9, Dialect::V1), Vec::<String>::new());
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
    fn a_capacity_of_zero_keeps_nothing() {
        let mut history = History::default();
        history.push(1, "a", None, 2);
        history.push(2, "b", None, 0);
        assert_eq!(history.len(), 0);
        assert_eq!(history.oldest_seq(), None);
        assert!(texts(&history, 0, Dialect::V2).is_empty());
    }

    #[test]
    fn matches_a_plain_list_through_many_wraps_of_the_ring() {
        // Messages of varying lengths, multi-byte text among them, pushed through a small capacity: the ring
        // wraps and drains at every offset, and must always read back what a plain list of strings holds.
        let mut history = History::default();
        let mut model: VecDeque<(u64, String, Option<String>)> = VecDeque::new();
        let mut state = 0x9e37_79b9_u64;
        for seq in 1..=2_000u64 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let len = (state >> 33) as usize % 300;
            let text: String = "é<x".chars().cycle().take(len).collect();
            let v1_form = (state >> 20 & 1 == 1).then(|| text.replace('<', "&lt;"));
            let capacity = 1 + (state >> 40) as usize % 7;
            history.push(seq, &text, v1_form.as_deref(), capacity);
            model.push_back((seq, text, v1_form));
            while model.len() > capacity {
                model.pop_front();
            }
            let v2: Vec<String> = model.iter().map(|(_, t, _)| t.clone()).collect();
            let v1: Vec<String> = model
                .iter()
                .map(|(_, t, l)| l.clone().unwrap_or_else(|| t.clone()))
                .collect();
            assert_eq!(texts(&history, 0, Dialect::V2), v2, "seq {seq}");
            assert_eq!(texts(&history, 0, Dialect::V1), v1, "seq {seq}");
            assert_eq!(history.oldest_seq(), model.front().map(|m| m.0));
        }
    }

    #[test]
    fn a_ring_that_held_large_messages_gives_memory_back() {
        let mut history = History::default();
        let large = "x".repeat(100_000);
        history.push(1, &large, None, 1);
        assert!(history.text.capacity() >= 100_000);
        history.push(2, "small", None, 1);
        assert!(
            history.text.capacity() < 1_000,
            "{}",
            history.text.capacity()
        );
        assert_eq!(texts(&history, 0, Dialect::V2), ["small"]);
    }
}
