//! The bystander: one v2 chat client in a room of its own, doing round trips (a chat message out, its own copy
//! back) all through an attack, so that what the attack costs everybody else shows as latency.
//!
//! Owns its schedule (one round trip in flight, the next due `interval` after the last one was sent, or at once if
//! that time has passed), the histogram of the round trips made while the attack is measured, and how its
//! connection ended if it did. It runs on a thread and a poll of its own ([`spawn`]), so that the attack's own work
//! in the generator (masking megabytes, opening thousands of connections) does not show as the server's latency.
//! It must not share a room, a name or a rate limit with any attacker.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::arena::{Arena, Role};
use super::outcome::{Ended, Outcome};
use crate::client::Received;
use crate::soak::wire::{classify, join_json, ServerMessage, Stamp};
use crate::stats::Histogram;
use crate::{round1, round3, Clock, ContentWriter, Padding};

/// The bystander's room; no attack touches it.
pub const ROOM: &str = "bystander-room";
/// The bystander's name.
const NAME: &str = "bystander";
/// Bytes of its chat content: a stamp and a little padding.
const CONTENT_BYTES: usize = 48;

/// The longest the bystander's loop sleeps, so that it sees a change of phase promptly.
const MAX_WAIT: Duration = Duration::from_millis(2);

/// What the run asks of the bystander's thread, and what the thread says back (`READY`).
const SETTING_UP: u8 = 0;
const READY: u8 = 1;
const MEASURING: u8 = 2;
const STOPPED: u8 = 3;
const EXIT: u8 = 4;

/// The bystander running on its own thread.
pub struct Handle {
    phase: Arc<AtomicU8>,
    thread: JoinHandle<io::Result<Value>>,
}

impl Handle {
    /// True once it is in its room.
    pub fn ready(&self) -> bool {
        self.phase.load(Ordering::Acquire) >= READY
    }

    /// True if its thread stopped early (it could not connect, or its poll failed).
    pub fn failed(&self) -> bool {
        self.thread.is_finished()
    }

    /// Starts recording round trips.
    pub fn start_measuring(&self) {
        self.phase.store(MEASURING, Ordering::Release);
    }

    /// Stops recording round trips (one still in flight counts with the time it has waited).
    pub fn stop_measuring(&self) {
        self.phase.store(STOPPED, Ordering::Release);
    }

    /// Ends the thread and returns the bystander's figures.
    pub fn finish(self) -> io::Result<Value> {
        self.phase.store(EXIT, Ordering::Release);
        self.thread
            .join()
            .map_err(|_| io::Error::other("the bystander's thread panicked"))?
    }
}

/// Starts a bystander against `addr` on a thread of its own, a round trip every `interval_ns`.
pub fn spawn(addr: SocketAddr, fast_masks: bool, interval_ns: u64) -> io::Result<Handle> {
    let phase = Arc::new(AtomicU8::new(SETTING_UP));
    let shared = phase.clone();
    let thread = thread::Builder::new()
        .name("bystander".into())
        .spawn(move || run(addr, fast_masks, interval_ns, &shared))?;
    Ok(Handle { phase, thread })
}

/// The bystander's loop: connect, join, and do round trips until told to exit.
fn run(
    addr: SocketAddr,
    fast_masks: bool,
    interval_ns: u64,
    phase: &AtomicU8,
) -> io::Result<Value> {
    let clock = Clock(Instant::now());
    let mut arena = Arena::new(addr, fast_masks)?;
    let mut bystander = Bystander::new(interval_ns);
    bystander.connect(&mut arena, clock.now())?;
    loop {
        let now = clock.now();
        match phase.load(Ordering::Acquire) {
            SETTING_UP if bystander.ready() => phase.store(READY, Ordering::Release),
            MEASURING if !bystander.measuring => bystander.measure(true, now),
            // Told to stop, or to exit before it saw the stop: the round trip in flight counts either way.
            STOPPED | EXIT if bystander.measuring => bystander.measure(false, now),
            _ => {}
        }
        if phase.load(Ordering::Acquire) == EXIT {
            break;
        }
        let next = bystander.act(&mut arena, now);
        arena.flush_marked(now);
        let wait = Duration::from_nanos(next.saturating_sub(clock.now())).min(MAX_WAIT);
        arena.turn(wait, clock, |_, _, message, now| {
            bystander.on_message(message, now)
        })?;
        for slot in arena.take_opened() {
            bystander.on_open(&mut arena, slot);
        }
        for ended in arena.take_ended() {
            bystander.on_end(&ended);
        }
    }
    Ok(bystander.to_json())
}

/// Where the bystander is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Connecting,
    Joining,
    Talking,
    Gone,
}

/// The bystander and its figures.
pub struct Bystander {
    interval_ns: u64,
    slot: Option<usize>,
    phase: Phase,
    writer: ContentWriter,
    /// Round trips sent; the stamp's counter of the next.
    sent: u32,
    /// The round trip in flight: (sent at, counter).
    in_flight: Option<(u64, u32)>,
    next_at: u64,
    measuring: bool,
    /// When measuring began.
    measured_from: u64,
    /// When the longest round trip measured began (it is the stall an attack caused).
    longest_sent_at: u64,
    round_trips: Histogram,
    /// The longest a round trip still in flight had waited when measuring stopped.
    unanswered_ns: u64,
    errors: BTreeMap<String, u64>,
    ended: Option<Outcome>,
}

impl Bystander {
    /// A bystander that starts a round trip every `interval_ns` (or as soon as the last one is back, if later).
    fn new(interval_ns: u64) -> Bystander {
        Bystander {
            interval_ns,
            slot: None,
            phase: Phase::Connecting,
            writer: ContentWriter::new(CONTENT_BYTES, Padding::X),
            sent: 0,
            in_flight: None,
            next_at: 0,
            measuring: false,
            measured_from: 0,
            longest_sent_at: 0,
            round_trips: Histogram::default(),
            unanswered_ns: 0,
            errors: BTreeMap::new(),
            ended: None,
        }
    }

    /// Connects to the chat route.
    fn connect(&mut self, arena: &mut Arena, now: u64) -> io::Result<()> {
        self.slot = Some(arena.connect("/ws", Role::Bystander, now)?);
        Ok(())
    }

    /// True once it is in its room.
    fn ready(&self) -> bool {
        self.phase == Phase::Talking
    }

    /// Its connection completed the handshake: join.
    fn on_open(&mut self, arena: &mut Arena, slot: usize) {
        arena.send_text(slot, &join_json(NAME, ROOM, None, None));
        self.phase = Phase::Joining;
    }

    /// Its connection ended: no more round trips.
    fn on_end(&mut self, ended: &Ended) {
        self.phase = Phase::Gone;
        self.ended = Some(ended.outcome.clone());
    }

    /// Starts or stops recording round trips. Stopping records how long the one in flight has waited.
    fn measure(&mut self, on: bool, now: u64) {
        if on && !self.measuring {
            self.measured_from = now;
        }
        if !on && self.measuring {
            if let Some((sent_at, _)) = self.in_flight {
                self.unanswered_ns = now.saturating_sub(sent_at);
                if self.unanswered_ns > self.round_trips.max() {
                    self.longest_sent_at = sent_at;
                }
            }
        }
        self.measuring = on;
    }

    /// Sends the next round trip if it is due and none is in flight; returns when to look again.
    fn act(&mut self, arena: &mut Arena, now: u64) -> u64 {
        let Some(slot) = self.slot.filter(|_| self.phase == Phase::Talking) else {
            return u64::MAX;
        };
        if self.in_flight.is_some() {
            return u64::MAX;
        }
        if now < self.next_at {
            return self.next_at;
        }
        let (content, _) = self.writer.write(now, 0, self.sent, self.measuring);
        let mut json = Vec::with_capacity(content.len() + 32);
        json.extend_from_slice(br#"{"type":"chat","content":""#);
        json.extend_from_slice(content);
        json.extend_from_slice(br#""}"#);
        arena.send_text(slot, &json);
        self.in_flight = Some((now, self.sent));
        self.sent = self.sent.wrapping_add(1);
        self.next_at = now + self.interval_ns;
        u64::MAX
    }

    /// A message arrived for the bystander.
    fn on_message(&mut self, message: Received<'_>, now: u64) {
        let Received::Text(text) = message else {
            return;
        };
        match classify(text) {
            ServerMessage::Joined(_) => self.phase = Phase::Talking,
            ServerMessage::Chat(chat) => {
                let Some(Stamp {
                    sent_at, counter, ..
                }) = chat.stamp
                else {
                    return;
                };
                if chat.from != NAME || self.in_flight != Some((sent_at, counter)) {
                    return;
                }
                self.in_flight = None;
                if self.measuring {
                    let took = now.saturating_sub(sent_at);
                    if took > self.round_trips.max() {
                        self.longest_sent_at = sent_at;
                    }
                    self.round_trips.record(took);
                }
            }
            ServerMessage::Error(code) => *self.errors.entry(code).or_default() += 1,
            ServerMessage::Notice | ServerMessage::Unexpected => {}
        }
    }

    /// `{round_trips, p50_ms, p99_ms, max_ms, max_began_at_s, unanswered_ms, errors, ended}`: `max_ms` includes a
    /// round trip still unanswered when measuring stopped; `max_began_at_s` is when the longest one was sent, in
    /// seconds from the start of the attack.
    fn to_json(&self) -> Value {
        let h = &self.round_trips;
        let ms = |ns: u64| round1(ns as f64 / 1e6);
        let timed = h.count() > 0;
        json!({
            "round_trips": h.count(),
            "p50_ms": timed.then(|| ms(h.quantile(0.5))),
            "p99_ms": timed.then(|| ms(h.quantile(0.99))),
            "max_ms": ms(h.max().max(self.unanswered_ns)),
            "max_began_at_s": (h.max().max(self.unanswered_ns) > 0).then(|| {
                round3(self.longest_sent_at.saturating_sub(self.measured_from) as f64 / 1e9)
            }),
            "unanswered_ms": (self.unanswered_ns > 0).then(|| ms(self.unanswered_ns)),
            "errors": self.errors,
            "ended": self.ended.as_ref().map(ToString::to_string),
        })
    }
}
