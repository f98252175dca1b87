//! Fuzz target `chat_message`: the chat state machine (`roomcast::chat::Chat`) driven by text frames from
//! several connections, disconnects and a moving clock.
//!
//! Input: `roomcast_fuzz::chat_ops::ChatInput`: join/chat/dm/leave/ping frames built as JSON from arbitrary
//! names and contents (sessions and epochs the server handed out earlier can be presented again), raw
//! arbitrary frames, disconnects and clock steps. A connection the chat asks to close stays connected until the
//! input disconnects it, as a slow client would. Asserts:
//! - nothing panics;
//! - every `Send` and `Broadcast` payload (and legacy payload) is one JSON object whose `type` is a string
//!   from `docs/protocol.md`, and every `error` carries a known `code`;
//! - every `Close` is 1008 or 4001, for a live connection;
//! - actions only name live connections, a closing connection's frames are ignored, and room membership
//!   (as `members` reports it) only ever holds live connections, each once.

#![no_main]

use std::collections::{BTreeSet, HashMap};

use libfuzzer_sys::fuzz_target;
use roomcast::chat::{Action, Chat, ChatConfig, Now, RoomId};
use roomcast_fuzz::chat_ops::{ChatInput, ChatOp, CONNS};
use serde_json::{json, Map, Value};

/// The `type`s a server may send (`docs/protocol.md`).
const SERVER_TYPES: &[&str] = &[
    "system", "joined", "chat", "dm", "presence", "pong", "error",
];

/// The `code`s of `error` messages (`docs/protocol.md`).
const ERROR_CODES: &[&str] = &[
    "invalid_json",
    "unknown_type",
    "invalid_field",
    "too_long",
    "not_joined",
    "name_taken",
    "not_online",
    "rate_limited",
];

fuzz_target!(|input: ChatInput| {
    let config = if input.config & 1 == 0 {
        ChatConfig::default()
    } else {
        ChatConfig {
            history_len: 3,
            max_content_chars: 16,
            rate_per_sec: 5.0,
            rate_burst: 4,
            abuse_drops: 6,
            max_empty_rooms: 1,
            max_history_bytes: 200,
            max_replay_bytes: 100,
            name_grace_ms: 50,
            join_rate_per_sec: 5.0,
            join_burst: 2,
            rate_bytes_per_sec: 200.0,
            rate_burst_bytes: 400,
            room_rate_bytes_per_sec: 300.0,
            room_burst_bytes: 600,
            max_room_members: 3,
        }
    };
    let mut run = Run {
        chat: Chat::new(config, [0x5A; 32]),
        now: Now {
            unix_ms: 1_700_000_000_000,
            mono_ms: 0,
        },
        live: BTreeSet::new(),
        closing: BTreeSet::new(),
        rooms: Vec::new(),
        sessions: Vec::new(),
        epochs: Vec::new(),
    };
    for op in &input.ops {
        run.step(op);
    }
});

/// The chat under test and what the target knows of the connections around it.
struct Run {
    chat: Chat,
    now: Now,
    /// Connections that sent a frame and have not disconnected.
    live: BTreeSet<usize>,
    /// Live connections the chat asked to close.
    closing: BTreeSet<usize>,
    /// Every room a broadcast named.
    rooms: Vec<RoomId>,
    /// Session tokens the chat handed out.
    sessions: Vec<String>,
    /// History epochs the chat handed out.
    epochs: Vec<String>,
}

impl Run {
    fn step(&mut self, op: &ChatOp) {
        let text = match op {
            ChatOp::Advance { ms } => {
                self.now.unix_ms += u64::from(*ms);
                self.now.mono_ms += u64::from(*ms);
                return;
            }
            ChatOp::Disconnect { conn } => {
                let conn = usize::from(conn % CONNS);
                let mut out = Vec::new();
                self.chat.disconnect(conn, self.now, &mut out);
                self.live.remove(&conn);
                self.closing.remove(&conn);
                self.check(&out);
                return;
            }
            ChatOp::Join {
                user, room, extras, ..
            } => {
                let mut join = Map::new();
                join.insert("type".into(), json!("join"));
                join.insert("userId".into(), json!(user.text()));
                join.insert("room".into(), json!(room.text()));
                if extras.flags & 8 != 0 {
                    join.insert("v".into(), json!(extras.flags >> 6));
                } else if extras.flags & 1 != 0 {
                    join.insert("v".into(), json!(2));
                }
                if extras.flags & 2 != 0 {
                    let session = pick(&self.sessions, extras.session)
                        .filter(|_| extras.flags & 0x10 != 0)
                        .unwrap_or_else(|| "not-a-session".to_owned());
                    join.insert("session".into(), json!(session));
                }
                if extras.flags & 4 != 0 {
                    let epoch = pick(&self.epochs, extras.epoch)
                        .filter(|_| extras.flags & 0x20 != 0)
                        .unwrap_or_else(|| "not-an-epoch".to_owned());
                    join.insert("since".into(), json!({"epoch": epoch, "seq": extras.seq}));
                }
                Value::Object(join).to_string()
            }
            ChatOp::Chat { content, .. } => {
                json!({"type": "chat", "content": content.text()}).to_string()
            }
            ChatOp::Dm { to, content, .. } => {
                json!({"type": "dm", "to": to.text(), "content": content.text()}).to_string()
            }
            ChatOp::Leave { .. } => json!({"type": "leave"}).to_string(),
            ChatOp::Ping { .. } => json!({"type": "ping"}).to_string(),
            ChatOp::Raw { text, .. } => text.text(),
        };
        let conn = match op {
            ChatOp::Join { conn, .. }
            | ChatOp::Chat { conn, .. }
            | ChatOp::Dm { conn, .. }
            | ChatOp::Leave { conn }
            | ChatOp::Ping { conn }
            | ChatOp::Raw { conn, .. } => usize::from(conn % CONNS),
            ChatOp::Advance { .. } | ChatOp::Disconnect { .. } => unreachable!(),
        };
        self.live.insert(conn);
        let mut out = Vec::new();
        self.chat.handle_text(conn, &text, self.now, &mut out);
        if self.closing.contains(&conn) {
            assert!(out.is_empty(), "a closing connection's frame did {out:?}");
        }
        self.check(&out);
    }

    /// Checks the actions of one call, then the membership of every room seen so far.
    fn check(&mut self, out: &[Action]) {
        for action in out {
            match action {
                Action::Replay { to, texts } => {
                    assert!(self.live.contains(to), "replay to dead connection {to}");
                    for text in texts {
                        let text =
                            std::str::from_utf8(text.as_bytes()).expect("stored text is UTF-8");
                        self.check_payload(text);
                    }
                }
                Action::Send { to, payload } => {
                    assert!(self.live.contains(to), "send to dead connection {to}");
                    self.check_payload(payload);
                }
                Action::Broadcast {
                    room,
                    payload,
                    v1_payload,
                    ..
                } => {
                    self.check_payload(payload);
                    if let Some(v1) = v1_payload {
                        self.check_payload(v1);
                    }
                    if !self.rooms.contains(room) {
                        self.rooms.push(*room);
                    }
                }
                Action::Close { client, code, .. } => {
                    assert!(matches!(code.get(), 1008 | 4001), "close code {code}");
                    assert!(
                        self.live.contains(client),
                        "close of dead connection {client}"
                    );
                    self.closing.insert(*client);
                }
            }
        }
        for room in &self.rooms {
            let mut seen = HashMap::new();
            for member in self.chat.members(*room) {
                assert!(
                    self.live.contains(&member.client),
                    "dead connection {} in {room:?}",
                    member.client
                );
                assert!(
                    seen.insert(member.client, ()).is_none(),
                    "connection {} twice in {room:?}",
                    member.client
                );
            }
        }
    }

    /// A payload is one JSON object with a known `type`; sessions and epochs in it are kept for later joins.
    fn check_payload(&mut self, payload: &str) {
        let value: Value = serde_json::from_str(payload)
            .unwrap_or_else(|e| panic!("payload is not JSON ({e}): {payload}"));
        let object = value
            .as_object()
            .unwrap_or_else(|| panic!("payload is not an object: {payload}"));
        let kind = object
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("payload without a string type: {payload}"));
        assert!(SERVER_TYPES.contains(&kind), "unknown type in {payload}");
        if kind == "error" {
            let code = object.get("code").and_then(Value::as_str);
            assert!(
                code.is_some_and(|c| ERROR_CODES.contains(&c)),
                "error code in {payload}"
            );
        }
        for (field, seen) in [("session", &mut self.sessions), ("epoch", &mut self.epochs)] {
            if let Some(value) = object.get(field).and_then(Value::as_str) {
                if !seen.iter().any(|s| s == value) && seen.len() < 64 {
                    seen.push(value.to_owned());
                }
            }
        }
    }
}

/// The `index`-th of `seen`, modulo its length; `None` when nothing was seen.
fn pick(seen: &[String], index: u8) -> Option<String> {
    (!seen.is_empty()).then(|| seen[usize::from(index) % seen.len()].clone())
}
