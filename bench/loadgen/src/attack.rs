//! `roomcast-bench attack`: one attack of the hardening issue, mounted against a running server at the scale the
//! issue measured it, with a bystander in another room doing chat round trips beside it, and one JSON line that
//! says what the attack cost: the server's memory (peak and final), the bystander's latency, and how the server
//! treated the attackers (closed with which code and reason after how long, refused with which HTTP status).
//!
//! Owns the run's phases: setup (what must exist before the attack, unmeasured), the attack window (measured), the
//! end of the attack (deaf attackers read at last, every attacker closed), and a settling time after which the
//! server's memory and `/metrics` are read again. Each kind of attack is a [`Plan`] in a file of its own. It talks
//! only to a loopback address and stops by itself: after `--duration`, when the server's memory passes
//! `--max-server-rss-mib`, or when the server process is gone.
//!
//! Squatting a freed name and look-alike names are attacks on correctness, not load: `tests/hardening.rs` mounts
//! them, and they have no kind here.

mod arena;
mod burst;
mod bystander;
mod flood;
mod history;
mod outcome;
mod pin;
mod replay;
mod slots;
mod storm;
pub mod table;
mod watch;

use std::fs;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use crate::client::Received;
use crate::{round3, secs_to_ns, Clock, Common, ServerKind};
use arena::{Arena, Role};
use outcome::Ended;
use watch::Watch;

/// The longest the loop sleeps, so that schedules and memory samples stay on time.
const MAX_WAIT_NS: u64 = 5_000_000;

/// The attacks, named as on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Joins with a stale `since`, many at once, from connections that never read: each asks for the room's
    /// whole history.
    Replay,
    /// Chat of 4,000 escape-heavy characters within the message rate, moving to a new room every `--per-room`
    /// messages, so that every room keeps a full history.
    History,
    /// A non-final frame of `--pin-bytes` on /echo, then an empty continuation now and then: a message that is
    /// never finished.
    Pin,
    /// Members of one room each sending a legal burst of `--burst-messages` large chat messages at once, beside
    /// `--readers` innocent members who read everything.
    Burst,
    /// A non-final text frame, then empty continuation frames as fast as TCP takes them.
    FloodContinuations,
    /// 125-byte Pings as fast as TCP takes them, from a connection that never reads.
    FloodPings,
    /// As many idle WebSockets from one address as it can open.
    Slots,
    /// A room of `--attackers` members that all drop at once.
    PresenceStorm,
}

impl Kind {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Replay => "replay",
            Kind::History => "history",
            Kind::Pin => "pin",
            Kind::Burst => "burst",
            Kind::FloodContinuations => "flood-continuations",
            Kind::FloodPings => "flood-pings",
            Kind::Slots => "slots",
            Kind::PresenceStorm => "presence-storm",
        }
    }

    /// Attacking connections at the issue's scale.
    fn default_attackers(self) -> usize {
        match self {
            Kind::Replay => 25,
            Kind::History | Kind::Pin => 100,
            Kind::Burst => 20,
            Kind::FloodContinuations | Kind::FloodPings => 1,
            Kind::Slots => 15_000,
            Kind::PresenceStorm => 1980,
        }
    }

    /// Seconds of attack. The issue watched the history grow for 35 s; under the byte rates the history budget is
    /// only reached after about 40 s, so the history attack lasts long enough to show it hold.
    fn default_duration(self) -> f64 {
        match self {
            Kind::History => 90.0,
            Kind::PresenceStorm => 10.0,
            _ => 20.0,
        }
    }
}

/// Options of `attack`.
#[derive(Debug, Args)]
pub struct AttackArgs {
    #[command(flatten)]
    common: Common,
    /// The attack
    #[arg(long, value_enum)]
    kind: Kind,
    /// Seconds the attack lasts once set up [default: 90 for history, 10 for presence-storm, else 20]
    #[arg(long)]
    duration: Option<f64>,
    /// Attacking connections [default: the issue's scale: replay 25, history 100, pin 100, burst 20, floods 1,
    /// slots 15000, presence-storm 1980]
    #[arg(long)]
    attackers: Option<usize>,
    /// Seconds after the attackers are gone before the server's memory and /metrics are read again
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Stop the attack as soon as the server's resident memory passes this many MiB
    #[arg(long, default_value_t = 3072)]
    max_server_rss_mib: u64,
    /// The server's log file, whose last lines go into the report if the server dies
    #[arg(long)]
    server_log: Option<PathBuf>,
    /// Milliseconds between the bystander's round trips (one in flight at a time)
    #[arg(long, default_value_t = 100)]
    bystander_every_ms: u64,
    /// Characters of each large chat message: all U+0001 (six bytes once JSON-escaped) but a final `<`
    #[arg(long, default_value_t = 4000)]
    content_chars: usize,
    /// Messages each attacker sends at once (burst), or joins (replay)
    #[arg(long, default_value_t = 40)]
    burst_messages: usize,
    /// Seconds between an attacker's bursts (burst), or between waves of new attackers (replay)
    #[arg(long, default_value_t = 5.0)]
    burst_every: f64,
    /// Innocent members of the burst's room who read everything
    #[arg(long, default_value_t = 3)]
    readers: usize,
    /// Connections filling the replayed room's history before the attack
    #[arg(long, default_value_t = 5)]
    fillers: usize,
    /// Chat messages the fillers aim to leave in the history (the server's --history)
    #[arg(long, default_value_t = 100)]
    fill_messages: usize,
    /// Most seconds spent filling the history
    #[arg(long, default_value_t = 20.0)]
    fill_secs: f64,
    /// Chat messages a history attacker sends to one room before it joins the next
    #[arg(long, default_value_t = 100)]
    per_room: usize,
    /// Frames per second each history attacker sends, joins included (the server's --rate)
    #[arg(long, default_value_t = 20.0)]
    send_rate: f64,
    /// Bytes the pinned message announces and sends before it stops
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pin_bytes: u64,
    /// Seconds between the pinning connections' empty continuations
    #[arg(long, default_value_t = 5.0)]
    keepalive_secs: f64,
    /// Most bytes one connection writes per loop turn (floods, pins), so that the bystander is served too
    #[arg(long, default_value_t = 256 * 1024)]
    turn_bytes: usize,
    /// Most reconnects per second of attackers the server closed (floods, history): what one address may start
    /// against the server's default --handshake-rate-per-ip
    #[arg(long, default_value_t = 50.0)]
    reconnects_per_sec: f64,
    /// Seconds into the attack when the presence storm's members all drop
    #[arg(long, default_value_t = 2.0)]
    drop_at: f64,
}

impl AttackArgs {
    fn attackers(&self) -> usize {
        self.attackers.unwrap_or(self.kind.default_attackers())
    }

    fn duration(&self) -> f64 {
        self.duration.unwrap_or(self.kind.default_duration())
    }
}

/// One kind of attack: what it sets up, what it does during the window, and its own figures.
trait Plan {
    /// Opens and drives what must exist before the window (fillers, readers, members); called every setup turn.
    fn prepare(&mut self, _arena: &mut Arena, _now: u64) -> io::Result<()> {
        Ok(())
    }

    /// True once the setup is complete.
    fn ready(&self) -> bool {
        true
    }

    /// The window begins at `now`.
    fn start(&mut self, arena: &mut Arena, now: u64);

    /// Sends what is due; returns when it next needs to act (`now` or earlier: as soon as possible).
    fn act(&mut self, arena: &mut Arena, now: u64) -> u64;

    /// One of its connections completed the handshake.
    fn on_open(&mut self, arena: &mut Arena, slot: usize, role: Role, now: u64);

    /// A message for one of its connections.
    fn on_message(&mut self, role: Role, message: Received<'_>, now: u64);

    /// One of its connections ended.
    fn on_end(&mut self, arena: &mut Arena, ended: &Ended, now: u64);

    /// The window is over: connections that never read read now, to learn how the server treated them.
    fn finish(&mut self, arena: &mut Arena, now: u64) {
        for slot in arena.slots_with(|_| true) {
            arena.drain(slot, now, |role, message| {
                self.on_message(role, message, now)
            });
        }
    }

    /// Its figures: `attackers` (how the server treated them) and anything of its own.
    fn report(&self, arena: &Arena) -> Value;
}

/// The plan for `args.kind`.
fn plan_for(args: &AttackArgs) -> Box<dyn Plan + '_> {
    match args.kind {
        Kind::Replay => Box::new(replay::Replay::new(args)),
        Kind::History => Box::new(history::History::new(args)),
        Kind::Pin => Box::new(pin::Pin::new(args)),
        Kind::Burst => Box::new(burst::Burst::new(args)),
        Kind::FloodContinuations => Box::new(flood::Flood::new(args, flood::Frames::Continuations)),
        Kind::FloodPings => Box::new(flood::Flood::new(args, flood::Frames::Pings)),
        Kind::Slots => Box::new(slots::Slots::new(args)),
        Kind::PresenceStorm => Box::new(storm::Storm::new(args)),
    }
}

/// Entry point of `attack`: prints the report line; exits 0 when the attack ran to its end (whatever it did to
/// the server), 1 on an error.
pub fn main(args: &AttackArgs) -> ExitCode {
    match run(args) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roomcast-bench attack: {e}");
            ExitCode::FAILURE
        }
    }
}

fn validate(args: &AttackArgs) -> Result<u32, String> {
    if !args.common.addr.ip().is_loopback() {
        return Err(format!(
            "attacks only run against a loopback address, not {}",
            args.common.addr
        ));
    }
    if args.common.server_kind != ServerKind::Roomcast {
        return Err("attacks speak roomcast's chat protocol only".into());
    }
    let Some(pid) = args.common.server_pid else {
        return Err("--server-pid is needed to read the server's memory".into());
    };
    for (name, value) in [
        ("--duration", args.duration()),
        ("--burst-every", args.burst_every),
        ("--keepalive-secs", args.keepalive_secs),
        ("--send-rate", args.send_rate),
    ] {
        if !(value.is_finite() && value > 0.0) {
            return Err(format!("{name} must be a positive number"));
        }
    }
    for (name, value) in [
        ("--settle", args.settle),
        ("--fill-secs", args.fill_secs),
        ("--drop-at", args.drop_at),
        ("--reconnects-per-sec", args.reconnects_per_sec),
    ] {
        if !(value.is_finite() && value >= 0.0) {
            return Err(format!("{name} must be a non-negative number"));
        }
    }
    if args.attackers() == 0 {
        return Err("--attackers must be at least 1".into());
    }
    Ok(pid)
}

/// The run: setup, window, end, settle; then the report.
fn run(args: &AttackArgs) -> io::Result<Value> {
    let pid = validate(args).map_err(io::Error::other)?;
    let clock = Clock(Instant::now());
    let mut watch = Watch::new(pid, args.common.addr);
    let mut arena = Arena::new(args.common.addr, args.common.fast_masks)?;
    let bystander = bystander::spawn(
        args.common.addr,
        args.common.fast_masks,
        args.bystander_every_ms.max(1) * 1_000_000,
    )?;
    let mut plan = plan_for(args);
    let mut stopped = None;

    let setup_deadline = clock.now() + secs_to_ns(args.common.setup_timeout);
    loop {
        let now = clock.now();
        if !watch.sample(now) {
            return Err(io::Error::other("the server exited during the setup"));
        }
        if bystander.failed() {
            return Err(match bystander.finish() {
                Err(e) => e,
                Ok(report) => io::Error::other(format!("the bystander stopped: {report}")),
            });
        }
        if bystander.ready() && plan.ready() {
            break;
        }
        if now > setup_deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "setup unfinished after {} s (bystander ready: {}, plan ready: {})",
                    args.common.setup_timeout,
                    bystander.ready(),
                    plan.ready()
                ),
            ));
        }
        plan.prepare(&mut arena, now)?;
        arena.flush_marked(now);
        turn(&mut arena, plan.as_mut(), clock, MAX_WAIT_NS)?;
    }
    let setup_s = clock.now() as f64 / 1e9;

    let start = clock.now();
    watch.start_window(start);
    bystander.start_measuring();
    plan.start(&mut arena, start);
    let end = start + secs_to_ns(args.duration());
    let rss_limit_kib = args.max_server_rss_mib.saturating_mul(1024);
    loop {
        let now = clock.now();
        if now >= end {
            break;
        }
        if !watch.sample(now) {
            stopped = Some(format!(
                "the server process was gone {:.1} s into the attack",
                (now - start) as f64 / 1e9
            ));
            break;
        }
        if watch.peak_kib() > rss_limit_kib {
            stopped = Some(format!(
                "the server's RSS passed --max-server-rss-mib {} {:.1} s into the attack",
                args.max_server_rss_mib,
                (now - start) as f64 / 1e9
            ));
            break;
        }
        let next = plan.act(&mut arena, now).min(end).min(now + MAX_WAIT_NS);
        arena.flush_marked(now);
        let wait = next.saturating_sub(clock.now());
        turn(&mut arena, plan.as_mut(), clock, wait)?;
    }
    let window_end = clock.now();
    bystander.stop_measuring();
    watch.end_window(window_end);
    plan.finish(&mut arena, clock.now());
    dispatch_ended(&mut arena, plan.as_mut(), clock.now());
    let attack_report = plan.report(&arena);
    for slot in arena.slots_with(|_| true) {
        arena.close(slot);
    }

    let settle_end = clock.now() + secs_to_ns(args.settle);
    while clock.now() < settle_end && watch.sample(clock.now()) {
        std::thread::sleep(Duration::from_nanos(watch::SAMPLE_EVERY_NS));
    }
    watch.finish(clock.now());
    let bystander = bystander.finish()?;

    let mut server = watch.to_json();
    if watch.exited() {
        if let Some(path) = &args.server_log {
            server["log_tail"] = json!(log_tail(path));
        }
    }
    Ok(json!({
        "scenario": "attack",
        "kind": args.kind.name(),
        "label": args.common.label,
        "setup_s": round3(setup_s),
        "duration_s": args.duration(),
        "attackers_asked": args.attackers(),
        "stopped_early": stopped,
        "server": server,
        "bystander": bystander,
        "attack": attack_report,
    }))
}

/// One poll, with messages, opened connections and ends handed to the plan.
fn turn(arena: &mut Arena, plan: &mut dyn Plan, clock: Clock, wait_ns: u64) -> io::Result<()> {
    arena.turn(
        Duration::from_nanos(wait_ns.min(MAX_WAIT_NS)),
        clock,
        |_, role, message, now| plan.on_message(role, message, now),
    )?;
    let now = clock.now();
    for slot in arena.take_opened() {
        if let Some(role) = arena.role(slot) {
            plan.on_open(arena, slot, role, now);
        }
    }
    dispatch_ended(arena, plan, now);
    Ok(())
}

fn dispatch_ended(arena: &mut Arena, plan: &mut dyn Plan, now: u64) {
    for ended in arena.take_ended() {
        plan.on_end(arena, &ended, now);
    }
}

/// The last lines of the server's log (an allocation failure is the last thing an aborting server writes).
fn log_tail(path: &PathBuf) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..]
        .iter()
        .map(|line| line.chars().take(300).collect())
        .collect()
}

/// A chat message whose content is `chars` characters: all U+0001 (six bytes each once JSON-escaped) and a final
/// `<` (which the v1 form HTML-escapes, so the two forms differ). Legal, and the largest on the wire for its length.
fn escaped_chat(chars: usize) -> Vec<u8> {
    let escaped = chars.saturating_sub(1);
    let mut json = Vec::with_capacity(escaped * 6 + 40);
    json.extend_from_slice(br#"{"type":"chat","content":""#);
    for _ in 0..escaped {
        json.extend_from_slice(br"\u0001");
    }
    json.extend_from_slice(br#"<"}"#);
    json
}

/// A token bucket for reconnects: `rate` a second, at most `rate` (and at least one) at once.
struct Reconnects {
    rate: f64,
    tokens: f64,
    at: u64,
}

impl Reconnects {
    fn new(rate: f64) -> Reconnects {
        Reconnects {
            rate,
            tokens: rate.max(1.0),
            at: 0,
        }
    }

    /// True (and a token spent) if a reconnect may happen at `now`.
    fn take(&mut self, now: u64) -> bool {
        let elapsed = now.saturating_sub(self.at) as f64 / 1e9;
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(1.0));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_escaped_chat_has_the_asked_characters_and_ends_in_a_markup_character() {
        let json = escaped_chat(4000);
        let value: Value = serde_json::from_slice(&json).unwrap();
        let content = value["content"].as_str().unwrap();
        assert_eq!(content.chars().count(), 4000);
        assert!(content.ends_with('<'));
        assert_eq!(
            json.len(),
            3999 * 6 + br#"{"type":"chat","content":"<"}"#.len()
        );
    }

    #[test]
    fn reconnects_come_at_their_rate() {
        let mut reconnects = Reconnects::new(2.0);
        assert!(reconnects.take(0) && reconnects.take(0));
        assert!(!reconnects.take(0));
        assert!(!reconnects.take(400_000_000));
        assert!(reconnects.take(500_000_000));
    }

    #[test]
    fn every_kind_has_a_scale_and_a_duration() {
        for kind in Kind::value_variants() {
            assert!(kind.default_attackers() > 0, "{kind:?}");
            assert!(kind.default_duration() > 0.0, "{kind:?}");
            assert_eq!(
                Kind::from_str(kind.name(), false).ok(),
                Some(*kind),
                "the report names {kind:?} as the command line does"
            );
        }
    }
}
