//! How the server treated a connection of the attack, and the tallies of it: a Close with its code and reason, an
//! HTTP refusal with its status, or what TCP said.
//!
//! Owns [`Outcome`] (what one connection's end was), [`Ended`] (that end with who and when) and [`Treatment`] (the
//! counts over a group of connections, with how long each lived). It reads a finished [`Client`] and counts; it must
//! not touch sockets or decide when a connection ends.

use std::collections::BTreeMap;
use std::fmt;
use std::io;

use serde_json::{json, Value};

use super::arena::Role;
use crate::client::{Client, Received};
use crate::round1;
use crate::soak::wire::{classify, ServerMessage};
use crate::stats::Histogram;

/// How a connection ended, as its client saw it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// The server sent a Close frame (RFC 6455 5.5.1), with its code if it had one.
    Close {
        /// The close code.
        code: Option<u16>,
        /// The close reason.
        reason: String,
    },
    /// The server answered the upgrade with this HTTP status instead of 101 (RFC 6455 4.1).
    Refused(u16),
    /// TCP ended (or failed) without a Close frame; the text says how.
    Tcp(String),
}

impl Outcome {
    /// What a client that just stopped tells about its end; `error` is what stopped it, if anything did, and
    /// `was_open` whether its handshake had completed.
    pub fn of(client: &Client, error: Option<&io::Error>, was_open: bool) -> Outcome {
        if let Some(frame) = client.server_close() {
            return Outcome::Close {
                code: frame.code.map(u16::from),
                reason: frame.reason.clone(),
            };
        }
        if let Some(status) = client.refused_status() {
            return Outcome::Refused(status);
        }
        match (error, was_open) {
            (Some(e), _) => Outcome::Tcp(describe_io(e)),
            (None, false) => Outcome::Tcp("closed before the handshake completed".into()),
            (None, true) => Outcome::Tcp("closed without a Close frame".into()),
        }
    }

    /// A connect that failed before any byte was sent.
    pub fn connect_failed(error: &io::Error) -> Outcome {
        Outcome::Tcp(format!("connect failed: {}", describe_io(error)))
    }
}

/// An I/O error in a few words: its kind, with the message for invalid data (a handshake the client refused).
fn describe_io(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::InvalidData => format!("invalid data: {error}"),
        kind => kind.to_string(),
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Close {
                code: Some(code),
                reason,
            } if reason.is_empty() => write!(f, "{code}"),
            Outcome::Close {
                code: Some(code),
                reason,
            } => write!(f, "{code} {reason}"),
            Outcome::Close { code: None, .. } => f.write_str("1005 (close without a code)"),
            Outcome::Refused(status) => write!(f, "HTTP {status}"),
            Outcome::Tcp(how) => write!(f, "tcp: {how}"),
        }
    }
}

/// One connection's end.
#[derive(Clone, Debug)]
pub struct Ended {
    /// Who it was.
    pub role: Role,
    /// Nanoseconds from its connect to the moment its end was seen.
    pub lived_ns: u64,
    /// Whether the end was only found when the attack was over: a connection that never reads learns of a Close
    /// only when it finally reads, so its `lived_ns` says nothing about when the server acted.
    pub seen_late: bool,
    /// How it ended.
    pub outcome: Outcome,
}

/// How the server treated a group of connections: how many there were, how each ended, and what they received.
#[derive(Debug, Default)]
pub struct Treatment {
    connections: u64,
    ended: BTreeMap<Outcome, Lifetimes>,
    received: BTreeMap<String, u64>,
}

/// The lifetimes of the connections that ended one way.
#[derive(Debug, Default)]
struct Lifetimes {
    count: u64,
    seen_late: u64,
    lived_ns: Histogram,
}

impl Treatment {
    /// One more connection was started.
    pub fn connected(&mut self) {
        self.connections += 1;
    }

    /// A connect failed at once.
    pub fn connect_failed(&mut self, error: &io::Error) {
        self.connections += 1;
        self.ended
            .entry(Outcome::connect_failed(error))
            .or_default()
            .count += 1;
    }

    /// One of the group's connections ended.
    pub fn ended(&mut self, ended: &Ended) {
        let entry = self.ended.entry(ended.outcome.clone()).or_default();
        entry.count += 1;
        if ended.seen_late {
            entry.seen_late += 1;
        } else {
            entry.lived_ns.record(ended.lived_ns);
        }
    }

    /// One of the group's connections received `message`: counted by kind (`chat`, `joined`, `error:CODE`, ...).
    pub fn received(&mut self, message: &Received<'_>) {
        *self.received.entry(kind_of(message)).or_default() += 1;
    }

    /// Messages received of one kind (see [`Treatment::received`]).
    pub fn received_count(&self, kind: &str) -> u64 {
        self.received.get(kind).copied().unwrap_or(0)
    }

    /// `{connections, open_at_end, ended: {outcome: {count, after_ms_p50, after_ms_max, seen_at_end}}, received}`.
    pub fn to_json(&self, open_at_end: usize) -> Value {
        let ended: BTreeMap<String, Value> = self
            .ended
            .iter()
            .map(|(outcome, l)| {
                let ms = |ns: u64| round1(ns as f64 / 1e6);
                let timed = l.lived_ns.count() > 0;
                (
                    outcome.to_string(),
                    json!({
                        "count": l.count,
                        "after_ms_p50": timed.then(|| ms(l.lived_ns.quantile(0.5))),
                        "after_ms_max": timed.then(|| ms(l.lived_ns.max())),
                        "seen_at_end": l.seen_late,
                    }),
                )
            })
            .collect();
        json!({
            "connections": self.connections,
            "open_at_end": open_at_end,
            "ended": ended,
            "received": self.received,
        })
    }
}

/// The kind of a received message, for counting.
fn kind_of(message: &Received<'_>) -> String {
    match message {
        Received::Text(text) => match classify(text) {
            ServerMessage::Chat(_) => "chat".into(),
            ServerMessage::Joined(_) => "joined".into(),
            ServerMessage::Error(code) => format!("error:{code}"),
            ServerMessage::Notice => "notice".into(),
            ServerMessage::Unexpected => "other".into(),
        },
        Received::Binary(_) => "binary".into(),
        Received::JoinAck => "other".into(),
    }
}

/// Whether `text` is a `rate_limited` or `lagged` error, or something else: for plans that watch for one code.
pub fn error_code(text: &[u8]) -> Option<String> {
    match classify(text) {
        ServerMessage::Error(code) => Some(code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_as_code_and_reason_status_or_tcp_event() {
        let close = Outcome::Close {
            code: Some(1008),
            reason: "too many frames".into(),
        };
        assert_eq!(close.to_string(), "1008 too many frames");
        let bare = Outcome::Close {
            code: Some(1009),
            reason: String::new(),
        };
        assert_eq!(bare.to_string(), "1009");
        assert_eq!(Outcome::Refused(429).to_string(), "HTTP 429");
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(
            Outcome::connect_failed(&reset).to_string(),
            "tcp: connect failed: connection reset"
        );
    }

    #[test]
    fn the_tally_counts_each_outcome_and_times_only_the_ends_seen_live() {
        let mut treatment = Treatment::default();
        let ended = |lived_ms: u64, seen_late: bool| Ended {
            role: Role::Attacker(0),
            lived_ns: lived_ms * 1_000_000,
            seen_late,
            outcome: Outcome::Refused(503),
        };
        for _ in 0..3 {
            treatment.connected();
        }
        treatment.ended(&ended(10, false));
        treatment.ended(&ended(30, false));
        treatment.ended(&ended(20_000, true));
        let json = treatment.to_json(0);
        let entry = &json["ended"]["HTTP 503"];
        assert_eq!(entry["count"], 3);
        assert_eq!(entry["seen_at_end"], 1);
        assert_eq!(entry["after_ms_max"], 30.0);
        assert_eq!(json["connections"], 3);
    }

    #[test]
    fn received_messages_are_counted_by_kind() {
        let mut treatment = Treatment::default();
        treatment.received(&Received::Text(
            br#"{"type":"error","code":"rate_limited","message":"x"}"#,
        ));
        treatment.received(&Received::Text(
            br#"{"type":"chat","room":"r","seq":1,"from":"a","content":"x","timestamp":1}"#,
        ));
        treatment.received(&Received::Binary(b"x"));
        assert_eq!(treatment.received_count("error:rate_limited"), 1);
        assert_eq!(treatment.received_count("chat"), 1);
        assert_eq!(treatment.received_count("binary"), 1);
        assert_eq!(
            error_code(br#"{"type":"error","code":"lagged","message":"x"}"#).as_deref(),
            Some("lagged")
        );
    }
}
