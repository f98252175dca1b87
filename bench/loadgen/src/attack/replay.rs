//! The replay amplification: connections that each send `--burst-messages` joins at once, every one with a stale
//! `since` (an epoch the room never had, seq 0), so that every join asks for the room's whole history, and that
//! never read. A new wave of `--attackers` such connections comes every `--burst-every` seconds.
//!
//! Owns the setup (fillers that leave up to `--fill-messages` messages of `--content-chars` escape-heavy characters
//! in the room's history, as fast as the server lets them within `--fill-secs`) and the waves. It must not read
//! with the attackers: their queues are what the attack grows.

use std::collections::VecDeque;

use serde_json::{json, Value};

use super::arena::{Arena, Role};
use super::outcome::{error_code, Ended, Treatment};
use super::{escaped_chat, AttackArgs, Plan};
use crate::client::Received;
use crate::soak::wire::{classify, join_json, ServerMessage};
use crate::{round3, secs_to_ns};

/// The room whose history is replayed.
const ROOM: &str = "replay-room";
/// Nanoseconds between two fill messages, from the fillers in turn.
const FILL_EVERY_NS: u64 = 50_000_000;
/// How long the setup waits for the last fill messages to come back.
const FILL_DRAIN_NS: u64 = 1_000_000_000;

/// Where the fill is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fill {
    /// Fillers connecting and joining.
    Joining,
    /// Sending, since this time.
    Sending {
        since: u64,
    },
    /// Done sending at this time; waiting for the last echoes.
    Draining {
        since: u64,
    },
    Done,
}

/// The replay attack.
pub struct Replay<'a> {
    args: &'a AttackArgs,
    chat: Vec<u8>,
    fill: Fill,
    fillers_started: bool,
    fillers_joined: usize,
    fill_turn: usize,
    next_fill: u64,
    fill_sent: u64,
    fill_refused: u64,
    fill_secs: f64,
    /// Byte lengths of the room's last messages, as filler 0 received them (the form the history stores).
    history: VecDeque<usize>,
    chats_seen: u64,
    attackers: Treatment,
    next_attacker: usize,
    waves: u32,
    next_wave: u64,
    joins_sent: u64,
}

impl<'a> Replay<'a> {
    /// The attack as `args` sizes it.
    pub fn new(args: &'a AttackArgs) -> Replay<'a> {
        Replay {
            args,
            chat: escaped_chat(args.content_chars),
            fill: Fill::Joining,
            fillers_started: false,
            fillers_joined: 0,
            fill_turn: 0,
            next_fill: 0,
            fill_sent: 0,
            fill_refused: 0,
            fill_secs: 0.0,
            history: VecDeque::new(),
            chats_seen: 0,
            attackers: Treatment::default(),
            next_attacker: 0,
            waves: 0,
            next_wave: 0,
            joins_sent: 0,
        }
    }

    fn history_full(&self) -> bool {
        self.chats_seen >= self.args.fill_messages as u64
    }

    /// Connects one wave of attackers.
    fn wave(&mut self, arena: &mut Arena, now: u64) {
        self.waves += 1;
        for _ in 0..self.args.attackers() {
            let n = self.next_attacker;
            self.next_attacker += 1;
            match arena.connect("/ws", Role::Attacker(n), now) {
                Ok(_) => self.attackers.connected(),
                Err(e) => self.attackers.connect_failed(&e),
            }
        }
    }
}

impl Plan for Replay<'_> {
    fn prepare(&mut self, arena: &mut Arena, now: u64) -> std::io::Result<()> {
        if !self.fillers_started {
            self.fillers_started = true;
            for i in 0..self.args.fillers.max(1) {
                arena.connect("/ws", Role::Helper(i), now)?;
            }
        }
        let fillers = arena.slots_with(|role| matches!(role, Role::Helper(_)));
        match self.fill {
            Fill::Joining if self.fillers_joined == self.args.fillers.max(1) => {
                self.fill = Fill::Sending { since: now };
                self.next_fill = now;
            }
            Fill::Sending { since } => {
                let over = now.saturating_sub(since) > secs_to_ns(self.args.fill_secs);
                if self.history_full() || over || fillers.is_empty() {
                    self.fill_secs = now.saturating_sub(since) as f64 / 1e9;
                    self.fill = Fill::Draining { since: now };
                } else if now >= self.next_fill {
                    let slot = fillers[self.fill_turn % fillers.len()];
                    self.fill_turn += 1;
                    arena.send_text(slot, &self.chat);
                    self.fill_sent += 1;
                    self.next_fill = now + FILL_EVERY_NS;
                }
            }
            Fill::Draining { since } if now.saturating_sub(since) > FILL_DRAIN_NS => {
                self.fill = Fill::Done;
            }
            _ => {}
        }
        Ok(())
    }

    fn ready(&self) -> bool {
        self.fill == Fill::Done
    }

    fn start(&mut self, arena: &mut Arena, now: u64) {
        self.wave(arena, now);
        self.next_wave = now + secs_to_ns(self.args.burst_every);
    }

    fn act(&mut self, arena: &mut Arena, now: u64) -> u64 {
        if now >= self.next_wave {
            self.wave(arena, now);
            self.next_wave = now + secs_to_ns(self.args.burst_every);
        }
        self.next_wave
    }

    fn on_open(&mut self, arena: &mut Arena, slot: usize, role: Role, _now: u64) {
        match role {
            Role::Helper(i) => {
                arena.send_text(slot, &join_json(&format!("filler-{i}"), ROOM, None, None))
            }
            Role::Attacker(n) => {
                let join = join_json(&format!("replay-{n}"), ROOM, None, Some(("stale", 0)));
                for _ in 0..self.args.burst_messages {
                    arena.send_text(slot, &join);
                }
                self.joins_sent += self.args.burst_messages as u64;
                arena.set_deaf(slot, true);
            }
            Role::Bystander | Role::Innocent(_) => {}
        }
    }

    fn on_message(&mut self, role: Role, message: Received<'_>, _now: u64) {
        match (role, &message) {
            (Role::Attacker(_), _) => self.attackers.received(&message),
            (Role::Helper(i), Received::Text(text)) => match classify(text) {
                ServerMessage::Joined(_) => self.fillers_joined += 1,
                ServerMessage::Chat(_) if i == 0 => {
                    self.chats_seen += 1;
                    self.history.push_back(text.len());
                    if self.history.len() > self.args.fill_messages {
                        self.history.pop_front();
                    }
                }
                _ if error_code(text).as_deref() == Some("rate_limited") => self.fill_refused += 1,
                _ => {}
            },
            _ => {}
        }
    }

    fn on_end(&mut self, _arena: &mut Arena, ended: &Ended, _now: u64) {
        if let Role::Attacker(_) = ended.role {
            self.attackers.ended(ended);
        }
    }

    fn report(&self, arena: &Arena) -> Value {
        let history_bytes: usize = self.history.iter().sum();
        json!({
            "fill": {
                "sent": self.fill_sent,
                "rate_limited": self.fill_refused,
                "secs": round3(self.fill_secs),
            },
            "history_messages": self.history.len(),
            "history_bytes": history_bytes,
            "waves": self.waves,
            "joins_sent": self.joins_sent,
            "bytes_asked_for": self.joins_sent * history_bytes as u64,
            "attackers": self.attackers.to_json(arena.open_with(|r| matches!(r, Role::Attacker(_)))),
        })
    }
}
