//! Fuzz target `chat_message`: the chat state machine (`roomcast::chat::Chat`) driven by text frames from
//! several connections, disconnects and a moving clock.
//!
//! Input: `roomcast_fuzz::chat_ops::ChatInput`: join/chat/dm/leave/ping/refresh frames built as JSON from
//! arbitrary names and contents (sessions and epochs the server handed out earlier can be presented again), raw
//! arbitrary frames, disconnects and clock steps. In token mode (config bit 1) the chat requires connection
//! tokens checked by an HS256 verifier with `SECRET`; joins and refreshes carry tokens minted here as the op's
//! `TokenSpec` says (valid, wrongly signed, junk, expired, not yet valid, for another `sub`, with `rooms` or
//! `"dm": false`), a connection's first frame is preceded by `Chat::connect`, and every clock step runs
//! `Chat::expire_tokens`. A connection the chat asks to close stays connected until the
//! input disconnects it, as a slow client would. Asserts:
//! - nothing panics;
//! - every `Send` and `Broadcast` payload (and legacy payload) is one JSON object whose `type` is a string
//!   from `docs/protocol.md`, and every `error` carries a known `code`;
//! - every `Close` is 1008 or 4001 (and in token mode 4003 or 4004), for a live connection;
//! - actions only name live connections, a closing connection's frames are ignored, and room membership
//!   (as `members` reports it) only ever holds live connections, each once.

#![no_main]

use std::collections::{BTreeSet, HashMap};

use jsonwebtoken::{encode, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use roomcast::auth::Verifier;
use roomcast::chat::{Action, Chat, ChatConfig, Now, RoomId};
use roomcast_fuzz::chat_ops::{ChatInput, ChatOp, TokenSpec, CONNS, NAME_POOL};
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
    "lagged",
    "room_full",
    "unavailable",
    "unauthorized",
    "forbidden",
];

/// The HS256 secret of the chat in token mode.
const SECRET: &[u8] = b"fuzz-secret-for-chat-message-target-0123";

/// How long a connection has to join in token mode, in milliseconds.
const JOIN_TIMEOUT_MS: u64 = 5_000;

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
            relayed: false,
        }
    };
    let mut chat = Chat::new(config, [0x5A; 32]);
    let tokens = input.config & 2 != 0;
    if tokens {
        let verifier = Verifier::hs256(SECRET).expect("the secret is long enough");
        chat.require_tokens(verifier, JOIN_TIMEOUT_MS);
    }
    let mut run = Run {
        chat,
        tokens,
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
    /// The chat requires connection tokens.
    tokens: bool,
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
                let mut out = Vec::new();
                self.chat.expire_tokens(self.now, &mut out);
                self.check(&out);
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
                if self.tokens {
                    if let Some(token) = mint(extras.seq, &user.text(), self.now.unix_ms) {
                        join.insert("token".into(), json!(token));
                    }
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
            ChatOp::Refresh { token, .. } => match mint(*token, "ann", self.now.unix_ms) {
                Some(token) => json!({"type": "refresh", "token": token}).to_string(),
                None => json!({"type": "refresh"}).to_string(),
            },
        };
        let conn = match op {
            ChatOp::Join { conn, .. }
            | ChatOp::Chat { conn, .. }
            | ChatOp::Dm { conn, .. }
            | ChatOp::Leave { conn }
            | ChatOp::Ping { conn }
            | ChatOp::Raw { conn, .. }
            | ChatOp::Refresh { conn, .. } => usize::from(conn % CONNS),
            ChatOp::Advance { .. } | ChatOp::Disconnect { .. } => unreachable!(),
        };
        let mut out = Vec::new();
        if self.live.insert(conn) && self.tokens {
            self.chat.connect(conn, None, self.now, &mut out);
            self.check(&out);
            out.clear();
        }
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
                    let allowed = match code.get() {
                        1008 | 4001 => true,
                        4003 | 4004 => self.tokens,
                        _ => false,
                    };
                    assert!(allowed, "close code {code}");
                    assert!(
                        self.live.contains(client),
                        "close of dead connection {client}"
                    );
                    self.closing.insert(*client);
                }
                Action::Publish { .. }
                | Action::ClaimName { .. }
                | Action::ReleaseName { .. }
                | Action::RelayDm { .. }
                | Action::Presence { .. } => {
                    panic!("a cluster action from a chat that is not relayed: {action:?}")
                }
                Action::CheckToken { .. } => {
                    panic!("a token check asked of the caller by a chat that checks tokens itself")
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

/// The token `spec` asks for (see `TokenSpec`), for a join as `user` at `now_unix_ms`; `None` for no token.
fn mint(spec: TokenSpec, user: &str, now_unix_ms: u64) -> Option<String> {
    let now_s = now_unix_ms / 1000;
    let sub = if spec & 4 != 0 {
        user.to_owned()
    } else {
        NAME_POOL[usize::from(spec >> 8) % NAME_POOL.len()].to_owned()
    };
    let exp = match (spec >> 3) & 3 {
        0 => json!(now_s + 60),
        1 => json!(now_s + 1),
        2 => json!(now_s.saturating_sub(3600)),
        _ => json!(1e300),
    };
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(sub));
    claims.insert("exp".into(), exp);
    if spec & 0x20 != 0 {
        claims.insert("rooms".into(), json!(["lobby", "general"]));
    }
    if spec & 0x40 != 0 {
        claims.insert("dm".into(), json!(false));
    }
    if spec & 0x80 != 0 {
        claims.insert("nbf".into(), json!(now_s + 3600));
    }
    let secret: &[u8] = match spec & 3 {
        0 => return None,
        1 => SECRET,
        2 => b"another-secret-that-the-chat-does-not-know",
        _ => {
            return Some(
                ["", "a.b.c", "eyJhbGciOiJub25lIn0.e30."][usize::from(spec >> 8) % 3].to_owned(),
            )
        }
    };
    let token = encode(
        &Header::default(),
        &Value::Object(claims),
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing of a JSON object does not fail");
    Some(token)
}
