//! One timer structure for every deadline of every connection: handshake, heartbeat, idle, close handshake.
//!
//! A min-heap of (when, connection key, connection serial). Each connection keeps the instant of its earliest
//! entry; a connection whose deadline moves later is not touched here (the entry fires, the connection finds
//! nothing due and re-arms), and one whose deadline moves earlier adds an entry. So a loop turn costs O(log n) per
//! deadline that actually fires, never a scan of idle connections. Entries of closed connections are recognised
//! by their serial and skipped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A pending deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline {
    /// When it is due.
    pub at: Instant,
    /// The connection's slab key.
    pub key: usize,
    /// The connection's serial, so a reused key is not mistaken for the old connection.
    pub serial: u64,
}

/// Deadlines ordered by time.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Deadline>>,
}

impl Timers {
    /// Adds a deadline.
    pub fn schedule(&mut self, deadline: Deadline) {
        self.heap.push(Reverse(deadline));
    }

    /// The earliest deadline, if any.
    pub fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(d)| d.at)
    }

    /// Removes and returns the earliest deadline if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Deadline> {
        match self.heap.peek() {
            Some(Reverse(d)) if d.at <= now => self.heap.pop().map(|Reverse(d)| d),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_only_due_deadlines_in_time_order() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        for (secs, key) in [(3, 3), (1, 1), (2, 2)] {
            timers.schedule(Deadline {
                at: t0 + Duration::from_secs(secs),
                key,
                serial: 0,
            });
        }
        assert_eq!(timers.next_at(), Some(t0 + Duration::from_secs(1)));
        let now = t0 + Duration::from_secs(2);
        let keys: Vec<usize> = std::iter::from_fn(|| timers.pop_due(now))
            .map(|d| d.key)
            .collect();
        assert_eq!(keys, vec![1, 2]);
        assert!(timers.pop_due(t0 + Duration::from_secs(3)).is_some());
    }
}
