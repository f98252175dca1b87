//! One timer structure for every deadline of every connection, and the loop's handling of the ones that come due.
//!
//! A min-heap of (when, client key, client serial). Each client keeps the point of its earliest entry; a client
//! whose deadline moves later is not touched here (the entry fires, `timeouts` finds nothing due, and it re-arms),
//! and one whose deadline moves earlier adds an entry. So a loop turn costs O(log n) per deadline that actually
//! fires, never a scan of idle connections. Entries of closed connections are recognised by their serial and
//! skipped. What is due is decided by the pure rules of `timeouts.rs`; this file only schedules and acts.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use log::debug;

use super::ending::Failure;
use super::timeouts::{Due, Millis};
use super::Server;

/// A pending deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline {
    /// When it is due.
    pub at: Millis,
    /// The client's slab key.
    pub key: u32,
    /// The client's serial, so a reused key is not mistaken for the old connection.
    pub serial: u32,
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
    pub fn next_at(&self) -> Option<Millis> {
        self.heap.peek().map(|Reverse(d)| d.at)
    }

    /// Removes and returns the earliest deadline if it is due at `now`.
    pub fn pop_due(&mut self, now: Millis) -> Option<Deadline> {
        match self.heap.peek() {
            Some(Reverse(d)) if d.at <= now => self.heap.pop().map(|Reverse(d)| d),
            _ => None,
        }
    }
}

impl Server {
    /// Makes sure the client has a heap entry no later than its next deadline.
    pub(super) fn arm_timer(&mut self, key: usize) {
        let now = self.now;
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let at = match client.due(now, &self.timeouts) {
            Due::Later(at) => at,
            _ => now,
        };
        if at < client.timer_at {
            client.timer_at = at;
            self.timers.schedule(Deadline {
                at,
                key: key as u32,
                serial: client.serial,
            });
        }
    }

    /// Acts on every deadline due at `now`: heartbeat Pings, and the timeouts that end a connection.
    pub(super) fn fire_timers(&mut self, now: Millis) {
        while let Some(deadline) = self.timers.pop_due(now) {
            let key = deadline.key as usize;
            let Some(client) = self.clients.get_mut(key) else {
                continue;
            };
            if client.serial != deadline.serial || client.timer_at != deadline.at {
                continue;
            }
            client.timer_at = Millis::NEVER;
            match client.due(now, &self.timeouts) {
                Due::Later(_) => {}
                Due::Ping => {
                    if let Some(ws) = client.websocket_mut() {
                        // 5.5.2: a Ping as a keepalive; any frame from the peer, the Pong included, counts as life.
                        let _ = ws.send_ping(b"");
                    }
                    client.times.pinged();
                    self.queue_protocol_output(key);
                }
                Due::HandshakeTimeout => {
                    debug!("{key}: handshake timeout");
                    // A response that the client does not read in time is not a failed handshake.
                    if client.is_reading_request() {
                        self.metrics.count_handshake_timeout();
                    }
                    self.remove(key);
                    continue;
                }
                // RFC 6455 10.7 lets us drop TCP: a peer still silent after our heartbeat Ping gets no Close.
                Due::IdleTimeout => {
                    debug!("{key}: idle timeout");
                    self.metrics.idle_timeouts += 1;
                    self.remove(key);
                    continue;
                }
                // RFC 6455 7.1.1: the peer did not finish closing in time, so TCP is closed without it.
                Due::MessageTimeout => {
                    self.fail_websocket(key, Failure::MessageTimeout);
                }
                Due::SlowConsumer => {
                    debug!("{key}: behind for the whole grace period");
                    self.evict_slow_consumer(key);
                }
                Due::CloseTimeout => {
                    debug!("{key}: close timeout");
                    self.remove(key);
                    continue;
                }
            }
            self.arm_timer(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_only_due_deadlines_in_time_order() {
        let mut timers = Timers::default();
        for (at, key) in [(3, 3), (1, 1), (2, 2)] {
            timers.schedule(Deadline {
                at: Millis(at),
                key,
                serial: 0,
            });
        }
        assert_eq!(timers.next_at(), Some(Millis(1)));
        let keys: Vec<u32> = std::iter::from_fn(|| timers.pop_due(Millis(2)))
            .map(|d| d.key)
            .collect();
        assert_eq!(keys, vec![1, 2]);
        assert!(timers.pop_due(Millis(3)).is_some());
    }
}
