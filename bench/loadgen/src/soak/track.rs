//! What one soak innocent saw of its room's chat: every `seq` once and in order, across its own reconnects, and
//! every message it sent back to it.
//!
//! Owns the arithmetic of gaps, duplicates, late arrivals and replays (docs/protocol.md, "History"): a `joined`
//! after a reconnect announces how many replayed messages follow and whether they fill the whole gap since the
//! `since` the client sent. It must not parse JSON, read a clock or touch a socket: the caller hands it numbers.

use std::collections::VecDeque;

/// The most gaps remembered for late arrivals; older ones stay counted as lost.
const GAPS_KEPT: usize = 64;

/// What a `joined` said, as far as sequence tracking cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinedReplay<'a> {
    /// The room's history epoch.
    pub epoch: &'a str,
    /// The room's latest `seq` when the join was handled.
    pub latest: u64,
    /// `replay.complete`: every message after `since` follows.
    pub complete: bool,
    /// `replay.reason` when not complete: `gap` or `epoch`.
    pub reason: Option<ReplayGap>,
    /// `replay.count`: how many replayed messages follow before live traffic.
    pub count: u64,
}

/// Why a replay was incomplete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayGap {
    /// The client was further behind than the room's history buffer.
    History,
    /// What the client saw is not this room's history.
    Epoch,
}

/// Counters of one tracker (or, added up, of many).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqCounts {
    /// Distinct seqs received.
    pub seen: u64,
    /// Of those, received as a replay after a reconnect.
    pub replayed: u64,
    /// Seqs skipped over and never received (so far).
    pub lost: u64,
    /// Seqs received again.
    pub duplicates: u64,
    /// Seqs received after a later one (first counted lost, then found).
    pub late: u64,
    /// Seqs the server said were older than its history when the client came back (not counted as lost).
    pub beyond_history: u64,
    /// Times the room's epoch changed under the client: what it had seen could not be checked any more.
    pub epoch_resets: u64,
    /// `joined` messages whose replay count did not match the gap it should fill.
    pub replay_miscounts: u64,
}

impl SeqCounts {
    /// Adds another tracker's counts to these.
    pub fn add(&mut self, other: &SeqCounts) {
        self.seen += other.seen;
        self.replayed += other.replayed;
        self.lost += other.lost;
        self.duplicates += other.duplicates;
        self.late += other.late;
        self.beyond_history += other.beyond_history;
        self.epoch_resets += other.epoch_resets;
        self.replay_miscounts += other.replay_miscounts;
    }
}

/// How a chat message's `seq` fitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The next seq, or a later one after a gap of `skipped` seqs (counted lost).
    Fresh { skipped: u64 },
    /// A seq seen before.
    Duplicate,
    /// A seq that had been skipped over: no longer lost, but out of order.
    Late,
}

/// The outcome of one chat message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    /// How its seq fitted.
    pub arrival: Arrival,
    /// It came in the replay announced by the last `joined` (so its latency means nothing).
    pub replayed: bool,
}

/// The sequence state of one client in one room.
#[derive(Clone, Debug, Default)]
pub struct SeqTracker {
    epoch: Option<String>,
    /// Every seq up to this one was received or counted lost.
    last: u64,
    /// Half-open ranges `[from, to)` skipped over, that may still arrive late; oldest first.
    gaps: VecDeque<(u64, u64)>,
    /// Replayed messages still to come after the last `joined`.
    replay_left: u64,
    counts: SeqCounts,
}

impl SeqTracker {
    /// The epoch and last seq seen, for the `since` of a rejoin; `None` before the first `joined`.
    pub fn since(&self) -> Option<(&str, u64)> {
        self.epoch.as_deref().map(|epoch| (epoch, self.last))
    }

    /// The counters so far.
    pub fn counts(&self) -> &SeqCounts {
        &self.counts
    }

    /// Takes in a `joined`. The first one fixes the epoch; later ones (after a rejoin with `since`) are checked
    /// against the gap they should fill.
    pub fn on_joined(&mut self, joined: &JoinedReplay<'_>) {
        self.replay_left = joined.count;
        let first_replayed = joined.latest.saturating_sub(joined.count);
        match self.epoch.as_deref() {
            Some(epoch) if epoch == joined.epoch => {
                if joined.complete {
                    if joined.latest < self.last || joined.count != joined.latest - self.last {
                        self.counts.replay_miscounts += 1;
                    }
                } else if joined.reason == Some(ReplayGap::History) && first_replayed > self.last {
                    self.counts.beyond_history += first_replayed - self.last;
                    self.last = first_replayed;
                } else {
                    self.counts.replay_miscounts += 1;
                }
            }
            Some(_) => {
                self.counts.epoch_resets += 1;
                self.restart(joined.epoch, first_replayed);
            }
            None => self.restart(joined.epoch, first_replayed),
        }
    }

    fn restart(&mut self, epoch: &str, last: u64) {
        self.epoch = Some(epoch.to_owned());
        self.last = last;
        self.gaps.clear();
    }

    /// Takes in one chat message's `seq`.
    pub fn on_chat(&mut self, seq: u64) -> Observed {
        let replayed = self.replay_left > 0;
        self.replay_left = self.replay_left.saturating_sub(1);
        let arrival = if seq > self.last {
            let skipped = seq - self.last - 1;
            if skipped > 0 {
                self.counts.lost += skipped;
                if self.gaps.len() == GAPS_KEPT {
                    self.gaps.pop_front();
                }
                self.gaps.push_back((self.last + 1, seq));
            }
            self.last = seq;
            Arrival::Fresh { skipped }
        } else if self.fill_gap(seq) {
            self.counts.lost -= 1;
            self.counts.late += 1;
            Arrival::Late
        } else {
            self.counts.duplicates += 1;
            Arrival::Duplicate
        };
        if arrival != Arrival::Duplicate {
            self.counts.seen += 1;
            self.counts.replayed += u64::from(replayed);
        }
        Observed { arrival, replayed }
    }

    /// Removes `seq` from the remembered gaps; false if it was in none.
    fn fill_gap(&mut self, seq: u64) -> bool {
        let Some(index) = self
            .gaps
            .iter()
            .position(|&(from, to)| from <= seq && seq < to)
        else {
            return false;
        };
        let (from, to) = self.gaps[index];
        match (from == seq, seq + 1 == to) {
            (true, true) => {
                self.gaps.remove(index);
            }
            (true, false) => self.gaps[index].0 = seq + 1,
            (false, true) => self.gaps[index].1 = seq,
            (false, false) => {
                self.gaps[index].1 = seq;
                self.gaps.insert(index + 1, (seq + 1, to));
            }
        }
        true
    }

    /// Counts as lost the seqs after the last one received up to `room_latest` (the highest any member of the
    /// room saw), once traffic has stopped and drained; returns how many.
    pub fn settle_tail(&mut self, room_latest: u64) -> u64 {
        let tail = room_latest.saturating_sub(self.last);
        self.counts.lost += tail;
        self.last = self.last.max(room_latest);
        tail
    }
}

/// A client's own messages coming back to it (the server sends a chat message to the sender too): a message the
/// server accepted but never broadcast has no seq, so only this notices it.
#[derive(Clone, Copy, Debug, Default)]
pub struct EchoTracker {
    /// The number of the next own message expected back.
    next: u32,
    missing: u64,
}

impl EchoTracker {
    /// Own message number `counter` (0 for the first sent) came back, and was not a duplicate delivery. The ones
    /// before it not seen yet are missing, unless they come late.
    pub fn on_echo(&mut self, counter: u32) {
        if counter >= self.next {
            self.missing += u64::from(counter - self.next);
            self.next = counter + 1;
        } else {
            self.missing = self.missing.saturating_sub(1);
        }
    }

    /// Whether every one of the `sent` messages came back (or was counted missing).
    pub fn all_back(&self, sent: u32) -> bool {
        self.next >= sent
    }

    /// At the end, after `sent` messages: the ones never back are missing too.
    pub fn settle(&mut self, sent: u32) {
        self.missing += u64::from(sent.saturating_sub(self.next));
        self.next = self.next.max(sent);
    }

    /// Own messages missing so far.
    pub fn missing(&self) -> u64 {
        self.missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(epoch: &str, latest: u64, count: u64) -> JoinedReplay<'_> {
        JoinedReplay {
            epoch,
            latest,
            complete: true,
            reason: None,
            count,
        }
    }

    fn fresh_tracker(latest: u64) -> SeqTracker {
        let mut tracker = SeqTracker::default();
        tracker.on_joined(&joined("e1", latest, 0));
        tracker
    }

    #[test]
    fn messages_in_order_are_all_fresh() {
        let mut tracker = fresh_tracker(5);
        for seq in 6..=10 {
            assert_eq!(tracker.on_chat(seq).arrival, Arrival::Fresh { skipped: 0 });
        }
        assert_eq!(tracker.counts().seen, 5);
        assert_eq!(tracker.counts().lost, 0);
        assert_eq!(tracker.since(), Some(("e1", 10)));
    }

    #[test]
    fn a_skipped_seq_is_lost() {
        let mut tracker = fresh_tracker(0);
        tracker.on_chat(1);
        assert_eq!(tracker.on_chat(4).arrival, Arrival::Fresh { skipped: 2 });
        assert_eq!(tracker.counts().lost, 2);
    }

    #[test]
    fn a_repeated_seq_is_a_duplicate() {
        let mut tracker = fresh_tracker(0);
        tracker.on_chat(1);
        tracker.on_chat(2);
        assert_eq!(tracker.on_chat(2).arrival, Arrival::Duplicate);
        assert_eq!(tracker.on_chat(1).arrival, Arrival::Duplicate);
        assert_eq!(tracker.counts().duplicates, 2);
        assert_eq!(tracker.counts().seen, 2);
    }

    #[test]
    fn a_skipped_seq_arriving_later_is_late_not_lost() {
        let mut tracker = fresh_tracker(0);
        tracker.on_chat(1);
        tracker.on_chat(5);
        assert_eq!(tracker.on_chat(3).arrival, Arrival::Late);
        assert_eq!(tracker.counts().lost, 2);
        assert_eq!(tracker.counts().late, 1);
        assert_eq!(tracker.on_chat(3).arrival, Arrival::Duplicate);
        assert_eq!(tracker.on_chat(2).arrival, Arrival::Late);
        assert_eq!(tracker.on_chat(4).arrival, Arrival::Late);
        assert_eq!(tracker.counts().lost, 0);
        assert_eq!(tracker.counts().seen, 5);
    }

    #[test]
    fn a_replay_that_fills_the_gap_loses_nothing() {
        let mut tracker = fresh_tracker(0);
        tracker.on_chat(1);
        tracker.on_chat(2);
        // Away while 3..=5 were sent; the rejoin with since = 2 replays exactly those, then live 6.
        tracker.on_joined(&joined("e1", 5, 3));
        for seq in 3..=5 {
            assert!(tracker.on_chat(seq).replayed);
        }
        assert!(!tracker.on_chat(6).replayed);
        assert_eq!(tracker.counts().lost, 0);
        assert_eq!(tracker.counts().duplicates, 0);
        assert_eq!(tracker.counts().replayed, 3);
        assert_eq!(tracker.counts().replay_miscounts, 0);
    }

    #[test]
    fn a_replay_that_repeats_a_seen_message_counts_a_duplicate() {
        let mut tracker = fresh_tracker(0);
        tracker.on_chat(1);
        tracker.on_chat(2);
        tracker.on_joined(&joined("e1", 4, 3));
        for seq in 2..=4 {
            tracker.on_chat(seq);
        }
        assert_eq!(tracker.counts().duplicates, 1);
        assert_eq!(tracker.counts().replay_miscounts, 1);
    }

    #[test]
    fn a_replay_that_skips_a_message_counts_it_lost() {
        let mut tracker = fresh_tracker(0);
        tracker.on_chat(1);
        tracker.on_joined(&joined("e1", 4, 2));
        tracker.on_chat(3);
        tracker.on_chat(4);
        assert_eq!(tracker.counts().lost, 1);
        assert_eq!(tracker.counts().replay_miscounts, 1);
    }

    #[test]
    fn a_gap_beyond_the_history_is_not_lost() {
        let mut tracker = fresh_tracker(0);
        tracker.on_chat(1);
        // 150 messages later, with a history of 100: the server replays 51..=150 and says so.
        tracker.on_joined(&JoinedReplay {
            epoch: "e1",
            latest: 150,
            complete: false,
            reason: Some(ReplayGap::History),
            count: 100,
        });
        for seq in 51..=150 {
            assert_eq!(tracker.on_chat(seq).arrival, Arrival::Fresh { skipped: 0 });
        }
        assert_eq!(tracker.counts().beyond_history, 49);
        assert_eq!(tracker.counts().lost, 0);
    }

    #[test]
    fn a_new_epoch_restarts_the_count() {
        let mut tracker = fresh_tracker(0);
        tracker.on_chat(1);
        tracker.on_joined(&JoinedReplay {
            epoch: "e2",
            latest: 3,
            complete: false,
            reason: Some(ReplayGap::Epoch),
            count: 3,
        });
        for seq in 1..=3 {
            assert_eq!(tracker.on_chat(seq).arrival, Arrival::Fresh { skipped: 0 });
        }
        assert_eq!(tracker.counts().epoch_resets, 1);
        assert_eq!(tracker.counts().duplicates, 0);
        assert_eq!(tracker.since(), Some(("e2", 3)));
    }

    #[test]
    fn the_tail_not_received_by_the_end_is_lost() {
        let mut tracker = fresh_tracker(0);
        tracker.on_chat(1);
        assert_eq!(tracker.settle_tail(4), 3);
        assert_eq!(tracker.counts().lost, 3);
        assert_eq!(tracker.settle_tail(4), 0);
    }

    #[test]
    fn gaps_split_when_their_middle_arrives() {
        let mut tracker = fresh_tracker(0);
        tracker.on_chat(10);
        assert_eq!(tracker.on_chat(5).arrival, Arrival::Late);
        assert_eq!(tracker.on_chat(4).arrival, Arrival::Late);
        assert_eq!(tracker.on_chat(6).arrival, Arrival::Late);
        assert_eq!(tracker.on_chat(5).arrival, Arrival::Duplicate);
        assert_eq!(tracker.counts().lost, 6);
    }

    #[test]
    fn own_messages_back_in_order_miss_nothing() {
        let mut echoes = EchoTracker::default();
        for counter in 0..5 {
            echoes.on_echo(counter);
        }
        echoes.settle(5);
        assert_eq!(echoes.missing(), 0);
        assert!(echoes.all_back(5));
    }

    #[test]
    fn an_own_message_skipped_is_missing_until_it_comes_late() {
        let mut echoes = EchoTracker::default();
        echoes.on_echo(0);
        echoes.on_echo(3);
        assert_eq!(echoes.missing(), 2);
        echoes.on_echo(1);
        assert_eq!(echoes.missing(), 1);
    }

    #[test]
    fn own_messages_never_back_by_the_end_are_missing() {
        let mut echoes = EchoTracker::default();
        echoes.on_echo(0);
        assert!(!echoes.all_back(3));
        echoes.settle(3);
        assert_eq!(echoes.missing(), 2);
    }
}
