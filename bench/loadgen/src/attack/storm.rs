//! The presence storm: `--attackers` members joined to one room (v2, so every change is a `system` line and a
//! `presence`), who stop reading once they are in, and who all drop at once `--drop-at` seconds into the attack.
//!
//! Owns the members' setup (at most `--connect-batch` connecting at once) and the drop. The drop closes every
//! member's socket from our side in one loop turn, unread bytes and all, as a network outage or a crashed client
//! farm would.

use serde_json::{json, Value};

use super::arena::{Arena, Role};
use super::outcome::{Ended, Treatment};
use super::{AttackArgs, Plan};
use crate::client::Received;
use crate::soak::wire::{classify, join_json, ServerMessage};
use crate::{round3, secs_to_ns};

/// The room of the storm.
const ROOM: &str = "storm-room";

/// The presence storm.
pub struct Storm<'a> {
    args: &'a AttackArgs,
    attempted: usize,
    connecting: usize,
    joined: Vec<bool>,
    joined_count: usize,
    failed: usize,
    to_deafen: Vec<usize>,
    slots: Vec<Option<usize>>,
    treatment: Treatment,
    setup_started: Option<u64>,
    setup_s: f64,
    drop_at: u64,
    dropped: usize,
}

impl<'a> Storm<'a> {
    /// The attack as `args` sizes it.
    pub fn new(args: &'a AttackArgs) -> Storm<'a> {
        Storm {
            args,
            attempted: 0,
            connecting: 0,
            joined: vec![false; args.attackers()],
            joined_count: 0,
            failed: 0,
            to_deafen: Vec::new(),
            slots: vec![None; args.attackers()],
            treatment: Treatment::default(),
            setup_started: None,
            setup_s: 0.0,
            drop_at: u64::MAX,
            dropped: 0,
        }
    }
}

impl Plan for Storm<'_> {
    fn prepare(&mut self, arena: &mut Arena, now: u64) -> std::io::Result<()> {
        let started = *self.setup_started.get_or_insert(now);
        let batch = self.args.common.connect_batch.max(1);
        while self.attempted < self.joined.len() && self.connecting < batch {
            let n = self.attempted;
            self.attempted += 1;
            match arena.connect("/ws", Role::Attacker(n), now) {
                Ok(slot) => {
                    self.treatment.connected();
                    self.slots[n] = Some(slot);
                    self.connecting += 1;
                }
                Err(e) => {
                    self.treatment.connect_failed(&e);
                    self.failed += 1;
                }
            }
        }
        for n in self.to_deafen.drain(..) {
            if let Some(slot) = self.slots[n] {
                arena.set_deaf(slot, true);
            }
        }
        if self.ready() {
            self.setup_s = now.saturating_sub(started) as f64 / 1e9;
        }
        Ok(())
    }

    fn ready(&self) -> bool {
        self.joined_count + self.failed == self.joined.len() && self.to_deafen.is_empty()
    }

    fn start(&mut self, _arena: &mut Arena, now: u64) {
        self.drop_at = now + secs_to_ns(self.args.drop_at);
    }

    fn act(&mut self, arena: &mut Arena, now: u64) -> u64 {
        if now < self.drop_at {
            return self.drop_at;
        }
        if self.dropped == 0 {
            for slot in self.slots.iter_mut().filter_map(Option::take) {
                arena.close(slot);
                self.dropped += 1;
            }
        }
        u64::MAX
    }

    fn on_open(&mut self, arena: &mut Arena, slot: usize, role: Role, _now: u64) {
        if let Role::Attacker(n) = role {
            arena.send_text(slot, &join_json(&format!("member-{n}"), ROOM, None, None));
        }
    }

    fn on_message(&mut self, role: Role, message: Received<'_>, _now: u64) {
        let Role::Attacker(n) = role else {
            return;
        };
        if let Received::Text(text) = message {
            if !self.joined[n] && matches!(classify(text), ServerMessage::Joined(_)) {
                self.joined[n] = true;
                self.joined_count += 1;
                self.connecting = self.connecting.saturating_sub(1);
                self.to_deafen.push(n);
                return;
            }
        }
        self.treatment.received(&message);
    }

    fn on_end(&mut self, _arena: &mut Arena, ended: &Ended, _now: u64) {
        if let Role::Attacker(n) = ended.role {
            self.treatment.ended(ended);
            self.slots[n] = None;
            if !self.joined[n] {
                self.connecting = self.connecting.saturating_sub(1);
                self.failed += 1;
            }
        }
    }

    fn report(&self, arena: &Arena) -> Value {
        json!({
            "members_joined": self.joined_count,
            "join_setup_s": round3(self.setup_s),
            "dropped": self.dropped,
            "dropped_at_s": (self.dropped > 0).then(|| round3(self.args.drop_at)),
            "attackers": self.treatment.to_json(arena.open_with(|r| matches!(r, Role::Attacker(_)))),
        })
    }
}
