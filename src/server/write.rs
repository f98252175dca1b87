//! Writing: the flush at the end of a turn, and what follows it.
//!
//! Owns the list of clients owed bytes this turn, sealing the turn's broadcast batches before anything is written,
//! one vectored write per client until its queue is empty or the socket is full, and WRITABLE interest only while
//! bytes remain. After a flush it settles what that makes possible: a slow consumer's eviction, reading again, or
//! the end of the connection.

use log::debug;
use mio::{Interest, Token};

use super::Server;

impl Server {
    /// Puts a client on this turn's flush list, once.
    pub(super) fn mark_dirty(&mut self, key: usize) {
        if let Some(client) = self.clients.get_mut(key) {
            if !client.dirty {
                client.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Flushes every client owed bytes, then ends the turn's broadcast batches: every span queued this turn was
    /// pushed to a client marked dirty, so all of them are resolved by now.
    pub(super) fn flush_dirty(&mut self) {
        while let Some(key) = self.dirty.pop() {
            if let Some(client) = self.clients.get_mut(key) {
                client.dirty = false;
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
        if pending != client.wants_writable {
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
            client.wants_writable = pending;
        }
        if pending {
            if client.queue.queued_bytes() > self.config.max_queued_bytes {
                self.evict_slow_consumer(key);
            }
            return;
        }
        if client.failed {
            // 7.1.7: once the Close of a failed connection is out, TCP is closed without waiting for anything.
            self.remove(key);
        } else if client.is_finished() {
            self.linger(key);
        } else if client.more_to_read {
            self.unfinished_reads.push(key);
        }
    }
}
