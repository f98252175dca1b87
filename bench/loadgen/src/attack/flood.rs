//! Frame floods on the chat route, as fast as TCP takes the bytes: empty continuation frames after a non-final
//! text frame (a connection that reads), or 125-byte Pings (a connection that never reads the Pongs). A flooder the
//! server closes comes back and floods again, at most `--reconnects-per-sec` a second.
//!
//! Owns the flooders' streams; the frames themselves are the soak's (`soak::attack::FloodKind`). It must not read
//! with the Ping flooders: Pongs piling up unread are part of that attack.

use std::collections::VecDeque;
use std::rc::Rc;

use serde_json::{json, Value};

use super::arena::{Arena, Role, Source};
use super::outcome::{Ended, Treatment};
use super::{AttackArgs, Plan, Reconnects};
use crate::client::Received;
use crate::soak::attack::{FloodKind, FloodStream};

/// Which frames flood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frames {
    /// Empty continuations after a non-final text frame; the flooder reads.
    Continuations,
    /// 125-byte Pings; the flooder never reads.
    Pings,
}

impl Frames {
    fn kind(self) -> FloodKind {
        match self {
            Frames::Continuations => FloodKind::Continuations,
            Frames::Pings => FloodKind::Pings,
        }
    }

    /// Bytes of one flood frame as a client sends it (masked).
    fn frame_bytes(self) -> u64 {
        match self {
            Frames::Continuations => 2 + 4,
            Frames::Pings => 2 + 4 + 125,
        }
    }
}

impl Source for FloodStream {
    fn chunk(&self) -> &[u8] {
        self.next_chunk()
    }

    fn advance(&mut self, n: usize) {
        FloodStream::advance(self, n);
    }
}

/// The flood attack.
pub struct Flood<'a> {
    args: &'a AttackArgs,
    frames: Frames,
    mask: [u8; 4],
    cycle: Rc<[u8]>,
    streams: Vec<Option<(usize, FloodStream)>>,
    treatment: Treatment,
    reconnects: Reconnects,
    waiting: VecDeque<usize>,
    bytes_written: u64,
}

impl<'a> Flood<'a> {
    /// The attack as `args` sizes it, flooding with `frames`.
    pub fn new(args: &'a AttackArgs, frames: Frames) -> Flood<'a> {
        let mut mask = [0x5a, 0x17, 0xc3, 0x81];
        // Any key does; a random one when the system has one to give.
        let _ = getrandom::fill(&mut mask);
        Flood {
            args,
            frames,
            mask,
            cycle: frames.kind().cycle(mask),
            streams: vec![None; args.attackers()],
            treatment: Treatment::default(),
            reconnects: Reconnects::new(args.reconnects_per_sec),
            waiting: VecDeque::new(),
            bytes_written: 0,
        }
    }

    fn connect(&mut self, arena: &mut Arena, n: usize, now: u64) {
        match arena.connect("/ws", Role::Attacker(n), now) {
            Ok(_) => self.treatment.connected(),
            Err(e) => {
                self.treatment.connect_failed(&e);
                self.waiting.push_back(n);
            }
        }
    }
}

impl Plan for Flood<'_> {
    fn start(&mut self, arena: &mut Arena, now: u64) {
        for n in 0..self.streams.len() {
            self.connect(arena, n, now);
        }
    }

    fn act(&mut self, arena: &mut Arena, now: u64) -> u64 {
        while !self.waiting.is_empty() && self.reconnects.take(now) {
            if let Some(n) = self.waiting.pop_front() {
                self.connect(arena, n, now);
            }
        }
        let mut next = if self.waiting.is_empty() {
            u64::MAX
        } else {
            now + 10_000_000
        };
        for (slot, stream) in self.streams.iter_mut().flatten() {
            if arena.can_pump(*slot) {
                self.bytes_written += arena.pump(*slot, stream, self.args.turn_bytes, now) as u64;
                if arena.can_pump(*slot) {
                    next = now;
                }
            }
        }
        next
    }

    fn on_open(&mut self, arena: &mut Arena, slot: usize, role: Role, _now: u64) {
        if let Role::Attacker(n) = role {
            let kind = self.frames.kind();
            self.streams[n] = Some((
                slot,
                FloodStream::new(kind.prefix(self.mask), self.cycle.clone()),
            ));
            if self.frames == Frames::Pings {
                arena.set_deaf(slot, true);
            }
        }
    }

    fn on_message(&mut self, role: Role, message: Received<'_>, _now: u64) {
        if let Role::Attacker(_) = role {
            self.treatment.received(&message);
        }
    }

    fn on_end(&mut self, _arena: &mut Arena, ended: &Ended, _now: u64) {
        if let Role::Attacker(n) = ended.role {
            self.treatment.ended(ended);
            self.streams[n] = None;
            self.waiting.push_back(n);
        }
    }

    fn report(&self, arena: &Arena) -> Value {
        json!({
            "frame": match self.frames {
                Frames::Continuations => "empty continuation after a non-final text frame",
                Frames::Pings => "125-byte Ping, never reading the Pongs",
            },
            "bytes_written": self.bytes_written,
            "frames_written": self.bytes_written / self.frames.frame_bytes(),
            "attackers": self.treatment.to_json(arena.open_with(|r| matches!(r, Role::Attacker(_)))),
        })
    }
}
