//! Writing: the flush at the end of a turn, and what follows it.
//!
//! Owns the list of clients owed bytes this turn, sealing the turn's broadcast batches before anything is written,
//! one vectored write per client until its queue is empty or the socket is full, and WRITABLE interest only while
//! bytes remain. After a flush it settles what that makes possible: a slow consumer's eviction, reading again, or
//! the end of the connection.

use log::debug;
use mio::{Interest, Token};

use super::client::Flags;
use super::Server;
use crate::http::Endpoint;

impl Server {
    /// Puts a client on this turn's flush list, once.
    pub(super) fn mark_dirty(&mut self, key: usize) {
        if let Some(client) = self.clients.get_mut(key) {
            if !client.flags.contains(Flags::DIRTY) {
                client.flags.set(Flags::DIRTY, true);
                self.dirty.push(key);
            }
        }
    }

    /// A chat client that was behind has drained its queue to half the bound: it is fed and read again, and sent
    /// from the history the chat messages it missed meanwhile.
    fn caught_up(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        client.flags.set(Flags::LAGGING, false);
        client.times.behind(false, self.now);
        if client.flags.contains(Flags::MORE_TO_READ) {
            self.unfinished_reads.push(key);
        }
        self.metrics.slow_consumers_recovered += 1;
        let lag = self.lagging.remove(&key).unwrap_or_default();
        debug!("{key} caught up; missed from {:?}", lag.missed_from);
        if let Some((room, from)) = lag.missed_from {
            self.chat.catch_up(key, room, from, &mut self.actions);
            self.apply_actions();
        }
        self.arm_timer(key);
    }

    /// Flushes every client owed bytes, then ends the turn's broadcast batches: every span queued this turn was
    /// pushed to a client marked dirty, so all of them are resolved by now.
    pub(super) fn flush_dirty(&mut self) {
        while let Some(key) = self.dirty.pop() {
            if let Some(client) = self.clients.get_mut(key) {
                client.flags.set(Flags::DIRTY, false);
                self.flush(key);
            }
        }
        self.batches.end_turn();
    }

    /// Writes a client's queue until it is empty or the socket is full, then settles what follows: WRITABLE
    /// interest, a slow consumer's eviction (10.4: our bound on queued bytes), resumed reading, or the end of the
    /// connection (7.1.1).
    fn flush(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        // A flush can itself broadcast (an eviction announces a departure), so seal here, not once per turn.
        self.batches.seal();
        match client.queue.write_to(&mut client.socket, &self.batches) {
            Ok(written) => self.metrics.bytes_out += written as u64,
            Err(e) => {
                debug!("write to {key}: {e}");
                return self.remove(key);
            }
        }
        let pending = !client.queue.is_empty();
        if pending != client.flags.contains(Flags::WANTS_WRITABLE) {
            let interest = if pending {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) =
                self.poll
                    .registry()
                    .reregister(&mut client.socket, Token(key), interest)
            {
                debug!("reregister {key}: {e}");
                return self.remove(key);
            }
            client.flags.set(Flags::WANTS_WRITABLE, pending);
        }
        let queued = client.queue.queued_bytes();
        let bound = self.config.max_queued_bytes;
        if client.flags.contains(Flags::LAGGING) && queued <= bound / 2 {
            return self.caught_up(key);
        }
        if !client.flags.contains(Flags::LAGGING)
            && queued > bound
            && client.can_send_on(Endpoint::Chat)
        {
            client.flags.set(Flags::LAGGING, true);
            client.times.behind(true, self.now);
            self.lagging.entry(key).or_default();
        }
        if client.flags.contains(Flags::LAGGING) {
            // The grace period runs from now: a client that stays behind through it is closed (timers.rs).
            return self.arm_timer(key);
        }
        if pending {
            return;
        }
        if client.flags.contains(Flags::FAILED) || client.is_finished() {
            self.linger(key);
        } else if client.flags.contains(Flags::MORE_TO_READ) {
            self.unfinished_reads.push(key);
        }
    }
}
