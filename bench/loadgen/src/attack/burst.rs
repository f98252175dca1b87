//! Legal bursts evicting innocent readers: one room with `--readers` innocent members who read everything and
//! `--attackers` members who each send `--burst-messages` chat messages of `--content-chars` escape-heavy
//! characters at once (within the message burst), every `--burst-every` seconds, and never read.
//!
//! Owns the room's setup and the bursts, and what the readers went through: the chat they received, the errors
//! (`lagged` when they were caught up from the history), and whether the server closed them. Readers do not come
//! back; an attacker the server closed sends no more.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::arena::{Arena, Role};
use super::outcome::{error_code, Ended, Treatment};
use super::{escaped_chat, AttackArgs, Plan};
use crate::client::Received;
use crate::soak::wire::{classify, join_json, ServerMessage};
use crate::{round3, secs_to_ns};

/// The room of the burst.
const ROOM: &str = "burst-room";

/// What one reader went through.
#[derive(Clone, Debug, Default)]
struct Reader {
    joined: bool,
    chat: u64,
    chat_bytes: u64,
    errors: BTreeMap<String, u64>,
    /// How it ended and how long after the first burst.
    ended: Option<(String, f64)>,
}

/// The burst attack.
pub struct Burst<'a> {
    args: &'a AttackArgs,
    chat: Vec<u8>,
    started: bool,
    readers: Vec<Reader>,
    attacker_slots: Vec<Option<usize>>,
    attackers_joined: Vec<bool>,
    /// Attackers joined whose connection is not deaf yet.
    to_deafen: Vec<usize>,
    treatment: Treatment,
    start: u64,
    next_burst: u64,
    bursts: u64,
    messages_sent: u64,
}

impl<'a> Burst<'a> {
    /// The attack as `args` sizes it.
    pub fn new(args: &'a AttackArgs) -> Burst<'a> {
        Burst {
            args,
            chat: escaped_chat(args.content_chars),
            started: false,
            readers: vec![Reader::default(); args.readers],
            attacker_slots: vec![None; args.attackers()],
            attackers_joined: vec![false; args.attackers()],
            to_deafen: Vec::new(),
            treatment: Treatment::default(),
            start: 0,
            next_burst: 0,
            bursts: 0,
            messages_sent: 0,
        }
    }

    fn burst(&mut self, arena: &mut Arena, now: u64) {
        self.bursts += 1;
        for slot in self.attacker_slots.iter().flatten() {
            if !arena.is_open(*slot) {
                continue;
            }
            for _ in 0..self.args.burst_messages {
                arena.send_text(*slot, &self.chat);
            }
            self.messages_sent += self.args.burst_messages as u64;
        }
        self.next_burst = now + secs_to_ns(self.args.burst_every);
    }
}

impl Plan for Burst<'_> {
    fn prepare(&mut self, arena: &mut Arena, now: u64) -> std::io::Result<()> {
        if !self.started {
            self.started = true;
            for i in 0..self.readers.len() {
                arena.connect("/ws", Role::Innocent(i), now)?;
            }
            for n in 0..self.attacker_slots.len() {
                self.attacker_slots[n] = Some(arena.connect("/ws", Role::Attacker(n), now)?);
                self.treatment.connected();
            }
        }
        for n in self.to_deafen.drain(..) {
            if let Some(slot) = self.attacker_slots[n] {
                arena.set_deaf(slot, true);
            }
        }
        Ok(())
    }

    fn ready(&self) -> bool {
        self.started
            && self.readers.iter().all(|r| r.joined)
            && self.attackers_joined.iter().all(|&j| j)
            && self.to_deafen.is_empty()
    }

    fn start(&mut self, arena: &mut Arena, now: u64) {
        self.start = now;
        self.burst(arena, now);
    }

    fn act(&mut self, arena: &mut Arena, now: u64) -> u64 {
        if now >= self.next_burst {
            self.burst(arena, now);
        }
        self.next_burst
    }

    fn on_open(&mut self, arena: &mut Arena, slot: usize, role: Role, _now: u64) {
        let name = match role {
            Role::Innocent(i) => format!("reader-{i}"),
            Role::Attacker(n) => format!("burster-{n}"),
            Role::Bystander | Role::Helper(_) => return,
        };
        arena.send_text(slot, &join_json(&name, ROOM, None, None));
    }

    fn on_message(&mut self, role: Role, message: Received<'_>, _now: u64) {
        match role {
            Role::Innocent(i) => {
                let Received::Text(text) = message else {
                    return;
                };
                let reader = &mut self.readers[i];
                match classify(text) {
                    ServerMessage::Joined(_) => reader.joined = true,
                    ServerMessage::Chat(_) => {
                        reader.chat += 1;
                        reader.chat_bytes += text.len() as u64;
                    }
                    _ => {
                        if let Some(code) = error_code(text) {
                            *reader.errors.entry(code).or_default() += 1;
                        }
                    }
                }
            }
            Role::Attacker(n) => {
                if let Received::Text(text) = message {
                    if !self.attackers_joined[n]
                        && matches!(classify(text), ServerMessage::Joined(_))
                    {
                        self.attackers_joined[n] = true;
                        self.to_deafen.push(n);
                        return;
                    }
                }
                self.treatment.received(&message);
            }
            Role::Bystander | Role::Helper(_) => {}
        }
    }

    fn on_end(&mut self, _arena: &mut Arena, ended: &Ended, now: u64) {
        match ended.role {
            Role::Innocent(i) => {
                let after = if self.start > 0 {
                    round3((now as f64 - self.start as f64) / 1e9)
                } else {
                    0.0
                };
                self.readers[i].ended = Some((ended.outcome.to_string(), after));
            }
            Role::Attacker(n) => {
                self.treatment.ended(ended);
                self.attacker_slots[n] = None;
            }
            Role::Bystander | Role::Helper(_) => {}
        }
    }

    fn report(&self, arena: &Arena) -> Value {
        let readers: Vec<Value> = self
            .readers
            .iter()
            .map(|r| {
                json!({
                    "chat_received": r.chat,
                    "chat_bytes_received": r.chat_bytes,
                    "errors": r.errors,
                    "closed": r.ended.as_ref().map(|(how, _)| how),
                    "closed_after_s": r.ended.as_ref().map(|(_, after)| after),
                })
            })
            .collect();
        json!({
            "chat_bytes": self.chat.len(),
            "bursts": self.bursts,
            "messages_sent": self.messages_sent,
            "readers_closed": self.readers.iter().filter(|r| r.ended.is_some()).count(),
            "readers": readers,
            "attackers": self.treatment.to_json(arena.open_with(|r| matches!(r, Role::Attacker(_)))),
        })
    }
}
