//! History without a global budget: `--attackers` connections each sending chat of `--content-chars` escape-heavy
//! characters at `--send-rate` frames a second (within the server's message rate), each alone in its room, and
//! moving to a new room every `--per-room` messages, so that every room it leaves behind keeps a full history.
//!
//! Owns the attackers' schedules and their rooms. Attackers read what comes back (their own messages) and count it;
//! one the server closes comes back, at most `--reconnects-per-sec` a second.

use std::collections::VecDeque;

use serde_json::{json, Value};

use super::arena::{Arena, Role};
use super::outcome::{Ended, Treatment};
use super::{escaped_chat, AttackArgs, Plan, Reconnects};
use crate::client::Received;
use crate::soak::wire::join_json;

/// A schedule further behind than this restarts from now instead of catching up in a burst.
const SLACK_NS: u64 = 1_000_000_000;

/// One attacker, across its connections.
#[derive(Clone, Copy, Debug, Default)]
struct Attacker {
    slot: Option<usize>,
    /// Connections it opened; each joins under a name of its own (`hist-{n}.{connections}`), since the name of a
    /// connection the server closed stays reserved for that connection's session.
    connections: u32,
    /// Rooms it joined so far; the current one is `history-{n}-{rooms - 1}`.
    rooms: u32,
    sent_in_room: usize,
    next_at: u64,
}

/// The history attack.
pub struct History<'a> {
    args: &'a AttackArgs,
    chat: Vec<u8>,
    interval_ns: u64,
    attackers: Vec<Attacker>,
    treatment: Treatment,
    reconnects: Reconnects,
    waiting: VecDeque<usize>,
    chats_sent: u64,
    joins_sent: u64,
}

impl<'a> History<'a> {
    /// The attack as `args` sizes it.
    pub fn new(args: &'a AttackArgs) -> History<'a> {
        History {
            args,
            chat: escaped_chat(args.content_chars),
            interval_ns: (1e9 / args.send_rate) as u64,
            attackers: vec![Attacker::default(); args.attackers()],
            treatment: Treatment::default(),
            reconnects: Reconnects::new(args.reconnects_per_sec),
            waiting: VecDeque::new(),
            chats_sent: 0,
            joins_sent: 0,
        }
    }

    fn connect(&mut self, arena: &mut Arena, n: usize, now: u64) {
        match arena.connect("/ws", Role::Attacker(n), now) {
            Ok(slot) => {
                self.treatment.connected();
                self.attackers[n].slot = Some(slot);
                self.attackers[n].connections += 1;
            }
            Err(e) => {
                self.treatment.connect_failed(&e);
                self.waiting.push_back(n);
            }
        }
    }

    /// Joins attacker `n`'s next room.
    fn join_next_room(&mut self, arena: &mut Arena, n: usize, slot: usize) {
        let attacker = &mut self.attackers[n];
        let room = format!("history-{n}-{}", attacker.rooms);
        attacker.rooms += 1;
        attacker.sent_in_room = 0;
        let name = format!("hist-{n}.{}", attacker.connections);
        arena.send_text(slot, &join_json(&name, &room, None, None));
        self.joins_sent += 1;
    }
}

impl Plan for History<'_> {
    fn start(&mut self, arena: &mut Arena, now: u64) {
        for n in 0..self.attackers.len() {
            self.connect(arena, n, now);
        }
    }

    fn act(&mut self, arena: &mut Arena, now: u64) -> u64 {
        while !self.waiting.is_empty() && self.reconnects.take(now) {
            if let Some(n) = self.waiting.pop_front() {
                self.connect(arena, n, now);
            }
        }
        let mut next = u64::MAX;
        for n in 0..self.attackers.len() {
            let Some(slot) = self.attackers[n].slot.filter(|&s| arena.is_open(s)) else {
                continue;
            };
            if self.attackers[n].rooms == 0 {
                continue;
            }
            if now.saturating_sub(self.attackers[n].next_at) > SLACK_NS {
                self.attackers[n].next_at = now;
            }
            while self.attackers[n].next_at <= now {
                self.attackers[n].next_at += self.interval_ns;
                if self.attackers[n].sent_in_room >= self.args.per_room {
                    self.join_next_room(arena, n, slot);
                } else {
                    arena.send_text(slot, &self.chat);
                    self.attackers[n].sent_in_room += 1;
                    self.chats_sent += 1;
                }
            }
            next = next.min(self.attackers[n].next_at);
        }
        if !self.waiting.is_empty() {
            next = next.min(now + 10_000_000);
        }
        next
    }

    fn on_open(&mut self, arena: &mut Arena, slot: usize, role: Role, now: u64) {
        if let Role::Attacker(n) = role {
            self.join_next_room(arena, n, slot);
            self.attackers[n].next_at = now + self.interval_ns;
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
            self.attackers[n].slot = None;
            self.waiting.push_back(n);
        }
    }

    fn report(&self, arena: &Arena) -> Value {
        let rooms: u64 = self.attackers.iter().map(|a| u64::from(a.rooms)).sum();
        json!({
            "chat_bytes": self.chat.len(),
            "chats_sent": self.chats_sent,
            "chats_accepted": self.treatment.received_count("chat"),
            "chats_refused": self.treatment.received_count("error:rate_limited"),
            "joins_sent": self.joins_sent,
            "rooms_filled": rooms,
            "seconds_per_room_at_send_rate": self.args.per_room as f64 / self.args.send_rate,
            "attackers": self.treatment.to_json(arena.open_with(|r| matches!(r, Role::Attacker(_)))),
        })
    }
}
