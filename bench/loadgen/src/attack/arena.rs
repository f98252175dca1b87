//! Every connection of an attack run on one mio poll: opening them, reading and writing them, and noticing how
//! each one ends.
//!
//! Owns the slots (a slot's index is its poll token), whether a connection reads (a *deaf* one reads nothing after
//! its handshake until it is drained, as an attacker that never reads), writing as fast as TCP takes bytes, and the
//! [`Ended`] record of every connection the server (or TCP) ended. It knows nothing of what an attack sends or
//! what a message means: the caller decides, and receives each message as a borrowed slice.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use mio::{Events, Poll, Token};

use super::outcome::{Ended, Outcome};
use crate::client::{Client, Framing, Masks, Receive, Received};
use crate::Clock;

/// Who a connection is, as the attack's plan counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The bystander doing round trips in a room of its own.
    Bystander,
    /// Attacker number `n` (numbered by the plan).
    Attacker(usize),
    /// Innocent member number `n` whose fate is reported (the burst's readers).
    Innocent(usize),
    /// Helper number `n` of the setup (the replay's history fillers).
    Helper(usize),
}

/// A source of bytes written as fast as a socket takes them: a flood, a large frame.
pub trait Source {
    /// The bytes to write next (empty when there is nothing more).
    fn chunk(&self) -> &[u8];
    /// The first `n` bytes of `chunk()` were written.
    fn advance(&mut self, n: usize);
}

/// One connection and what the arena knows of it.
struct Slot {
    client: Option<Client>,
    role: Role,
    deaf: bool,
    /// The socket took less than it was offered: wait for a writable event before pumping again.
    blocked: bool,
    connected_at: u64,
}

/// The connections of one run.
pub struct Arena {
    addr: SocketAddr,
    fast_masks: bool,
    mask_seed: u64,
    poll: Poll,
    events: Events,
    read_buf: Vec<u8>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    to_flush: Vec<usize>,
    opened: Vec<usize>,
    ended: Vec<Ended>,
}

/// A connection that stopped during a turn, before its end is recorded.
struct Stop {
    slot: usize,
    error: Option<io::Error>,
    was_open: bool,
}

impl Arena {
    /// An arena connecting to `addr`; `fast_masks` picks predictable masking keys (see `Masks::Fast`).
    pub fn new(addr: SocketAddr, fast_masks: bool) -> io::Result<Arena> {
        Ok(Arena {
            addr,
            fast_masks,
            mask_seed: 0,
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            read_buf: vec![0; 256 * 1024],
            slots: Vec::new(),
            free: Vec::new(),
            to_flush: Vec::new(),
            opened: Vec::new(),
            ended: Vec::new(),
        })
    }

    /// Starts a WebSocket connection to `path` for `role`; its slot, or the connect's error.
    pub fn connect(&mut self, path: &'static str, role: Role, now: u64) -> io::Result<usize> {
        self.mask_seed += 1;
        let masks = if self.fast_masks {
            Masks::Fast {
                seed: self.mask_seed,
            }
        } else {
            Masks::Random
        };
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot {
                client: None,
                role,
                deaf: false,
                blocked: false,
                connected_at: now,
            });
            self.slots.len() - 1
        });
        match Client::connect(
            self.addr,
            Framing::WebSocket,
            Receive::Frames,
            path,
            masks,
            self.poll.registry(),
            Token(slot),
        ) {
            Ok(client) => {
                self.slots[slot] = Slot {
                    client: Some(client),
                    role,
                    deaf: false,
                    blocked: false,
                    connected_at: now,
                };
                Ok(slot)
            }
            Err(e) => {
                self.free.push(slot);
                Err(e)
            }
        }
    }

    /// Connections of `role`'s kind still open (`Attacker(_)` counts every attacker, and so on).
    pub fn open_with(&self, matches: impl Fn(Role) -> bool) -> usize {
        self.slots
            .iter()
            .filter(|s| s.client.is_some() && matches(s.role))
            .count()
    }

    /// True once the connection's handshake completed and it has not ended.
    pub fn is_open(&self, slot: usize) -> bool {
        self.client(slot).is_some_and(Client::is_open)
    }

    fn client(&self, slot: usize) -> Option<&Client> {
        self.slots.get(slot)?.client.as_ref()
    }

    fn client_mut(&mut self, slot: usize) -> Option<&mut Client> {
        self.slots.get_mut(slot)?.client.as_mut()
    }

    /// From now on the connection reads nothing until it is drained or the server closes TCP (`deaf`), or reads
    /// everything again.
    pub fn set_deaf(&mut self, slot: usize, deaf: bool) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.deaf = deaf;
        }
    }

    /// Queues a text message on the connection; it is written at the end of the turn.
    pub fn send_text(&mut self, slot: usize, payload: &[u8]) {
        if let Some(client) = self.client_mut(slot) {
            client.send_text(payload);
            self.to_flush.push(slot);
        }
    }

    /// Writes the queued output of every connection that was sent something this turn.
    pub fn flush_marked(&mut self, now: u64) {
        self.to_flush.sort_unstable();
        self.to_flush.dedup();
        for slot in std::mem::take(&mut self.to_flush) {
            let Some(client) = self.client_mut(slot) else {
                continue;
            };
            if let Err(e) = client.flush() {
                self.stop(slot, Some(e), now);
            }
        }
    }

    /// True if the connection is open and its socket was not full at the last write.
    pub fn can_pump(&self, slot: usize) -> bool {
        self.slots
            .get(slot)
            .is_some_and(|s| !s.blocked && s.client.as_ref().is_some_and(Client::is_open))
    }

    /// Writes from `source` until `budget` bytes went out, the source is empty or the socket is full; returns the
    /// bytes written. A write error ends the connection (its end is recorded).
    pub fn pump(
        &mut self,
        slot: usize,
        source: &mut impl Source,
        budget: usize,
        now: u64,
    ) -> usize {
        let mut written = 0;
        let mut failure = None;
        if let Some(s) = self.slots.get_mut(slot) {
            if let Some(client) = s.client.as_mut() {
                if client.has_output() {
                    match client.flush() {
                        Err(e) => failure = Some(e),
                        Ok(()) => s.blocked = client.has_output(),
                    }
                }
                while failure.is_none() && !s.blocked && written < budget {
                    let chunk = source.chunk();
                    if chunk.is_empty() {
                        break;
                    }
                    let take = chunk.len().min(budget - written);
                    match client.write_direct(&chunk[..take]) {
                        Ok(0) => s.blocked = true,
                        Ok(n) => {
                            source.advance(n);
                            written += n;
                        }
                        Err(e) => failure = Some(e),
                    }
                }
            }
        }
        if let Some(e) = failure {
            self.stop(slot, Some(e), now);
        }
        written
    }

    /// Reads everything the connection holds now, as a deaf attacker finally reading at the end: messages go to
    /// `on_message`; a Close or the end of TCP found there ends it, recorded as seen late.
    pub fn drain(&mut self, slot: usize, now: u64, mut on_message: impl FnMut(Role, Received<'_>)) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        let role = s.role;
        let Some(client) = s.client.as_mut() else {
            return;
        };
        let was_open = client.is_open();
        let result = client.read(&mut self.read_buf, true, |m| on_message(role, m));
        match result {
            Ok(true) => {}
            Ok(false) => self.record_end(slot, None, was_open, now, true),
            Err(e) => self.record_end(slot, Some(e), was_open, now, true),
        }
    }

    /// Ends a connection from our side without recording anything: the attack is over for it.
    pub fn close(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            if let Some(mut client) = s.client.take() {
                client.close(self.poll.registry());
                self.free.push(slot);
            }
        }
    }

    /// The slots of every connection still open whose role `matches`.
    pub fn slots_with(&self, matches: impl Fn(Role) -> bool) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].client.is_some() && matches(self.slots[i].role))
            .collect()
    }

    /// A write failed: read what the socket still holds (the server's Close is often there), then record the end.
    fn stop(&mut self, slot: usize, error: Option<io::Error>, now: u64) {
        let Arena {
            slots, read_buf, ..
        } = self;
        let Some(client) = slots.get_mut(slot).and_then(|s| s.client.as_mut()) else {
            return;
        };
        let was_open = client.is_open();
        let _ = client.read(read_buf, true, |_| {});
        self.record_end(slot, error, was_open, now, false);
    }

    fn record_end(
        &mut self,
        slot: usize,
        error: Option<io::Error>,
        was_open: bool,
        now: u64,
        seen_late: bool,
    ) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        let Some(mut client) = s.client.take() else {
            return;
        };
        let outcome = Outcome::of(&client, error.as_ref(), was_open);
        client.close(self.poll.registry());
        self.ended.push(Ended {
            role: s.role,
            lived_ns: now.saturating_sub(s.connected_at),
            seen_late,
            outcome,
        });
        self.free.push(slot);
    }

    /// One poll and its events: handshakes completed, messages to `on_message(slot, role, message, now)`, ends
    /// recorded. Then [`Arena::take_opened`] and [`Arena::take_ended`] tell what changed.
    pub fn turn(
        &mut self,
        timeout: Duration,
        clock: Clock,
        mut on_message: impl FnMut(usize, Role, Received<'_>, u64),
    ) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut stops = Vec::new();
        let Arena {
            events,
            slots,
            read_buf,
            opened,
            ..
        } = self;
        for event in events.iter() {
            let index = event.token().0;
            let Some(slot) = slots.get_mut(index) else {
                continue;
            };
            let Some(client) = slot.client.as_mut() else {
                continue;
            };
            let was_open = client.is_open();
            let peer_closed = event.is_read_closed() || event.is_error();
            let mut outcome = Ok(true);
            if event.is_writable() {
                slot.blocked = false;
                if let Err(e) = client.on_writable() {
                    outcome = Err(e);
                }
            }
            // A deaf connection reads its handshake's answer, and reads again only once the server closed TCP.
            let reads = !slot.deaf || !was_open || peer_closed;
            if outcome.is_ok() && reads && (event.is_readable() || peer_closed) {
                let now = clock.now();
                let role = slot.role;
                outcome = client.read(read_buf, peer_closed, |m| on_message(index, role, m, now));
                if matches!(outcome, Ok(true)) && client.has_output() {
                    if let Err(e) = client.flush() {
                        outcome = Err(e);
                    }
                }
            }
            if !was_open && client.is_open() {
                opened.push(index);
            }
            match outcome {
                Ok(true) => {}
                Ok(false) => stops.push(Stop {
                    slot: index,
                    error: None,
                    was_open: was_open || client.is_open(),
                }),
                Err(e) => stops.push(Stop {
                    slot: index,
                    error: Some(e),
                    was_open: was_open || client.is_open(),
                }),
            }
        }
        let now = clock.now();
        for stop in stops {
            self.record_end(stop.slot, stop.error, stop.was_open, now, false);
        }
        Ok(())
    }

    /// The connections whose handshake completed since the last call.
    pub fn take_opened(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.opened)
    }

    /// The connections that ended since the last call.
    pub fn take_ended(&mut self) -> Vec<Ended> {
        std::mem::take(&mut self.ended)
    }

    /// The role of the connection in `slot` (meaningful while it is open).
    pub fn role(&self, slot: usize) -> Option<Role> {
        self.slots
            .get(slot)
            .filter(|s| s.client.is_some())
            .map(|s| s.role)
    }
}
