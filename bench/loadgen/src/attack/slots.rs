//! Connection slots: `--attackers` WebSocket connections from one address, opened as fast as the server answers,
//! at most `--connect-batch` in their handshake at once, then held idle (reading nothing) to the end. A connection
//! refused (or ended) is tried again, at most `--reconnects-per-sec` a second, for as long as the attack lasts.
//!
//! Owns the attempts and what came of each: upgraded, refused with an HTTP status, or failed at the TCP level.

use std::collections::VecDeque;

use serde_json::{json, Value};

use super::arena::{Arena, Role};
use super::outcome::{Ended, Treatment};
use super::{AttackArgs, Plan, Reconnects};
use crate::client::Received;
use crate::round3;

/// The slots attack.
pub struct Slots<'a> {
    args: &'a AttackArgs,
    /// Attackers tried once so far (each is tried first in order, then again from `waiting`).
    attempted: usize,
    attempts: u64,
    waiting: VecDeque<usize>,
    reconnects: Reconnects,
    in_handshake: usize,
    upgraded: Vec<bool>,
    /// Whether each attacker's first attempt was answered (upgraded, refused or failed).
    answered: Vec<bool>,
    answered_count: usize,
    opened: u64,
    treatment: Treatment,
    start: u64,
    last_open_at: Option<u64>,
    attempts_done_at: Option<u64>,
}

impl<'a> Slots<'a> {
    /// The attack as `args` sizes it.
    pub fn new(args: &'a AttackArgs) -> Slots<'a> {
        Slots {
            args,
            attempted: 0,
            attempts: 0,
            waiting: VecDeque::new(),
            reconnects: Reconnects::new(args.reconnects_per_sec),
            in_handshake: 0,
            upgraded: vec![false; args.attackers()],
            answered: vec![false; args.attackers()],
            answered_count: 0,
            opened: 0,
            treatment: Treatment::default(),
            start: 0,
            last_open_at: None,
            attempts_done_at: None,
        }
    }
}

impl Slots<'_> {
    /// Attacker `n`'s attempt was answered at `now`; the time is kept once every first attempt was.
    fn answered(&mut self, n: usize, now: u64) {
        if !self.answered[n] {
            self.answered[n] = true;
            self.answered_count += 1;
            if self.answered_count == self.answered.len() {
                self.attempts_done_at = Some(now);
            }
        }
    }
}

impl Plan for Slots<'_> {
    fn start(&mut self, _arena: &mut Arena, now: u64) {
        self.start = now;
    }

    fn act(&mut self, arena: &mut Arena, now: u64) -> u64 {
        let batch = self.args.common.connect_batch.max(1);
        while self.in_handshake < batch {
            let n = if self.attempted < self.upgraded.len() {
                self.attempted += 1;
                self.attempted - 1
            } else if !self.waiting.is_empty() && self.reconnects.take(now) {
                match self.waiting.pop_front() {
                    Some(n) => n,
                    None => break,
                }
            } else {
                break;
            };
            self.attempts += 1;
            match arena.connect("/ws", Role::Attacker(n), now) {
                Ok(_) => {
                    self.treatment.connected();
                    self.in_handshake += 1;
                }
                Err(e) => {
                    self.treatment.connect_failed(&e);
                    self.answered(n, now);
                    self.waiting.push_back(n);
                }
            }
        }
        if self.waiting.is_empty() {
            u64::MAX
        } else {
            now + 10_000_000
        }
    }

    fn on_open(&mut self, arena: &mut Arena, slot: usize, role: Role, now: u64) {
        if let Role::Attacker(n) = role {
            self.upgraded[n] = true;
            self.answered(n, now);
            self.in_handshake = self.in_handshake.saturating_sub(1);
            self.opened += 1;
            self.last_open_at = Some(now);
            arena.set_deaf(slot, true);
        }
    }

    fn on_message(&mut self, role: Role, message: Received<'_>, _now: u64) {
        if let Role::Attacker(_) = role {
            self.treatment.received(&message);
        }
    }

    fn on_end(&mut self, _arena: &mut Arena, ended: &Ended, now: u64) {
        if let Role::Attacker(n) = ended.role {
            self.answered(n, now);
            if !self.upgraded[n] {
                self.in_handshake = self.in_handshake.saturating_sub(1);
            }
            self.upgraded[n] = false;
            self.treatment.ended(ended);
            self.waiting.push_back(n);
        }
    }

    fn report(&self, arena: &Arena) -> Value {
        let secs =
            |at: Option<u64>| at.map(|at| round3(at.saturating_sub(self.start) as f64 / 1e9));
        json!({
            "attempts": self.attempts,
            "upgraded": self.opened,
            "last_upgrade_at_s": secs(self.last_open_at),
            "first_attempts_answered_at_s": secs(self.attempts_done_at),
            "attackers": self.treatment.to_json(arena.open_with(|r| matches!(r, Role::Attacker(_)))),
        })
    }
}
