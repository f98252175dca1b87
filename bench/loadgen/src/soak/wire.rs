//! The chat JSON the soak speaks: recognising what the server sent, and writing what its clients send.
//!
//! Owns the fast reading of roomcast's `chat` messages (written by hand in a fixed field order by
//! `src/chat/wire.rs`, so the fields before `content` can be read without parsing the whole message, which for a
//! 4,000-character content of escapes is 24 KB), with serde_json as the fallback for anything else, and the
//! innocents' content: a stamp with the send time and sender, then text. It must not keep state or touch sockets.

use std::borrow::Cow;

use serde_json::{json, Value};

use super::track::{JoinedReplay, ReplayGap};
use crate::{hex8, write_hex};

/// A chat message from the server, with what the soak checks.
#[derive(Debug, PartialEq, Eq)]
pub struct ChatView<'a> {
    /// `room`.
    pub room: Cow<'a, str>,
    /// `seq`.
    pub seq: u64,
    /// `from`.
    pub from: Cow<'a, str>,
    /// The innocent's stamp at the start of `content`, if there is one.
    pub stamp: Option<Stamp>,
}

/// A `joined`, owned (it is rare).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    /// `userId`: the name the connection holds.
    pub user_id: String,
    /// `epoch`.
    pub epoch: String,
    /// `seq`: the room's latest.
    pub latest: u64,
    /// `session`: the token that reclaims the name.
    pub session: String,
    /// `replay.complete`.
    pub complete: bool,
    /// `replay.reason`.
    pub reason: Option<ReplayGap>,
    /// `replay.count`.
    pub count: u64,
}

impl Joined {
    /// The part the sequence tracker takes.
    pub fn replay(&self) -> JoinedReplay<'_> {
        JoinedReplay {
            epoch: &self.epoch,
            latest: self.latest,
            complete: self.complete,
            reason: self.reason,
            count: self.count,
        }
    }
}

/// What a server text message is.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerMessage<'a> {
    /// A room message.
    Chat(ChatView<'a>),
    /// The v2 joiner's welcome.
    Joined(Joined),
    /// An `error`, with its code.
    Error(String),
    /// `system`, `presence`, `pong`: nothing to check.
    Notice,
    /// Not JSON, or a type the soak does not expect (`dm`, or something new).
    Unexpected,
}

const CHAT_HEAD: &[u8] = br#"{"type":"chat","room":""#;

/// Reads one server text message.
pub fn classify(text: &[u8]) -> ServerMessage<'_> {
    if let Some(chat) = fast_chat(text) {
        return ServerMessage::Chat(chat);
    }
    for notice in [
        &br#"{"type":"system","#[..],
        br#"{"type":"presence","#,
        br#"{"type":"pong"}"#,
    ] {
        if text.starts_with(notice) && !is_error_line(text) {
            return ServerMessage::Notice;
        }
    }
    let Ok(value) = serde_json::from_slice::<Value>(text) else {
        return ServerMessage::Unexpected;
    };
    let str_field = |key: &str| value.get(key).and_then(Value::as_str);
    match str_field("type") {
        Some("chat") => slow_chat(&value).map_or(ServerMessage::Unexpected, ServerMessage::Chat),
        Some("joined") => joined(&value).map_or(ServerMessage::Unexpected, ServerMessage::Joined),
        Some("error") => ServerMessage::Error(str_field("code").unwrap_or("?").to_owned()),
        Some("system") if value.get("code").is_some() => {
            ServerMessage::Error(str_field("code").unwrap_or("?").to_owned())
        }
        Some("system" | "presence" | "pong") => ServerMessage::Notice,
        _ => ServerMessage::Unexpected,
    }
}

/// A v1 error line is a `system` with a `code`.
fn is_error_line(text: &[u8]) -> bool {
    text.windows(b"\"code\":".len()).any(|w| w == b"\"code\":")
}

/// The chat fields read in roomcast's fixed order, when no name needs unescaping.
fn fast_chat(text: &[u8]) -> Option<ChatView<'_>> {
    let rest = text.strip_prefix(CHAT_HEAD)?;
    let (room, rest) = plain_string(rest)?;
    let rest = rest.strip_prefix(br#","seq":"#)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let seq = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(br#","from":""#)?;
    let (from, rest) = plain_string(rest)?;
    let content = rest.strip_prefix(br#","content":""#)?;
    Some(ChatView {
        room: Cow::Borrowed(room),
        seq,
        from: Cow::Borrowed(from),
        stamp: Stamp::parse(content),
    })
}

/// The string up to the next `"`, and what follows that quote; `None` if it holds an escape.
fn plain_string(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let end = bytes.iter().position(|&b| b == b'"' || b == b'\\')?;
    if bytes[end] != b'"' {
        return None;
    }
    Some((std::str::from_utf8(&bytes[..end]).ok()?, &bytes[end + 1..]))
}

fn slow_chat(value: &Value) -> Option<ChatView<'static>> {
    Some(ChatView {
        room: Cow::Owned(value.get("room")?.as_str()?.to_owned()),
        seq: value.get("seq")?.as_u64()?,
        from: Cow::Owned(value.get("from")?.as_str()?.to_owned()),
        stamp: Stamp::parse(value.get("content")?.as_str()?.as_bytes()),
    })
}

fn joined(value: &Value) -> Option<Joined> {
    let replay = value.get("replay")?;
    Some(Joined {
        user_id: value.get("userId")?.as_str()?.to_owned(),
        epoch: value.get("epoch")?.as_str()?.to_owned(),
        latest: value.get("seq")?.as_u64()?,
        session: value.get("session")?.as_str()?.to_owned(),
        complete: replay.get("complete")?.as_bool()?,
        reason: match replay.get("reason").and_then(Value::as_str) {
            Some("gap") => Some(ReplayGap::History),
            Some(_) => Some(ReplayGap::Epoch),
            None => None,
        },
        count: replay.get("count")?.as_u64()?,
    })
}

/// What an innocent's message carries at the start of its content: `@`, the send time on the generator's clock
/// (16 hex digits, ns), the sender's index (8 hex digits) and the sender's message counter (8 hex digits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Generator clock, ns.
    pub sent_at: u64,
    /// The innocent's index.
    pub sender: u32,
    /// The innocent's own count of messages sent before this one.
    pub counter: u32,
}

/// Bytes of a stamp.
pub const STAMP_LEN: usize = 1 + 16 + 8 + 8;

impl Stamp {
    /// The stamp at the start of `content`, if there is one.
    pub fn parse(content: &[u8]) -> Option<Stamp> {
        let head = content.get(..STAMP_LEN)?;
        if head[0] != b'@' {
            return None;
        }
        Some(Stamp {
            sent_at: u64::from(hex8(&head[1..9])?) << 32 | u64::from(hex8(&head[9..17])?),
            sender: hex8(&head[17..25])?,
            counter: hex8(&head[25..33])?,
        })
    }

    /// Writes the stamp into the first `STAMP_LEN` bytes of `out`.
    fn write(&self, out: &mut [u8]) {
        out[0] = b'@';
        write_hex(&mut out[1..17], self.sent_at);
        write_hex(&mut out[17..25], u64::from(self.sender));
        write_hex(&mut out[25..33], u64::from(self.counter));
    }
}

/// Words of the innocents' chatter: a little punctuation and some text beyond ASCII, nothing JSON must escape.
const WORDS: &[&str] = &[
    "hello",
    "anyone",
    "around",
    "tonight",
    "the",
    "build",
    "is",
    "green",
    "again",
    "did",
    "you",
    "see",
    "that",
    "release",
    "notes",
    "lunch",
    "at",
    "noon?",
    "sure,",
    "works",
    "for",
    "me.",
    "café",
    "naïve",
    "über",
    "smörgåsbord",
    "señor",
    "日本語",
    "🙂",
    "👍",
    "ok!",
    "brb",
    "lol",
    "meeting",
    "moved",
    "to",
    "3pm",
    "can",
    "someone",
    "review",
    "my",
    "patch",
    "please",
    "thanks",
    "a",
    "lot",
    "—",
    "it's",
    "raining",
    "here",
    "weekend",
    "plans?",
    "deploy",
    "went",
    "fine",
    "coffee",
    "break",
    "in",
    "5",
    "minutes",
    "(maybe)",
    "100%",
    "agree",
    "#general",
    "@all",
];

/// A small, fast, seedable generator (xorshift64*): for picking words and times, never for anything secret.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced, xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A number in `[low, high)`.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Writes an innocent's content into `out`: the stamp, then words, to a length drawn from `min_len..=max_len`
/// bytes (short of it by less than a word; never over `max_len`, never cutting a character).
pub fn write_innocent_content(
    out: &mut Vec<u8>,
    stamp: Stamp,
    rng: &mut Rng,
    min_len: usize,
    max_len: usize,
) {
    let max_len = max_len.max(STAMP_LEN + 2);
    let min_len = min_len.clamp(STAMP_LEN + 2, max_len);
    let target = min_len + rng.below((max_len - min_len + 1) as u64) as usize;
    out.clear();
    out.resize(STAMP_LEN, 0);
    stamp.write(out);
    // "a" always fits while below `max_len - 1`, so a few draws always reach `min_len`.
    for _ in 0..1000 {
        if out.len() >= target {
            break;
        }
        let word = WORDS[rng.below(WORDS.len() as u64) as usize];
        if out.len() + 1 + word.len() > max_len {
            if out.len() >= min_len {
                break;
            }
            continue;
        }
        out.push(b' ');
        out.extend_from_slice(word.as_bytes());
    }
}

/// A v2 `join`, with the session token and `since` of a rejoin when given.
pub fn join_json(
    user: &str,
    room: &str,
    session: Option<&str>,
    since: Option<(&str, u64)>,
) -> Vec<u8> {
    let mut join = json!({"type": "join", "userId": user, "room": room, "v": 2});
    if let Some(session) = session {
        join["session"] = json!(session);
    }
    if let Some((epoch, seq)) = since {
        join["since"] = json!({"epoch": epoch, "seq": seq});
    }
    join.to_string().into_bytes()
}

/// A `chat` whose content is `chars` characters, all but a short visible tail U+0001, which JSON escapes to six
/// bytes (`\u0001`): a legal message of the largest size on the wire for its length in characters.
pub fn escape_heavy_chat_json(chars: usize) -> Vec<u8> {
    const TAIL: &str = " big message";
    let escaped = chars.saturating_sub(TAIL.len()).max(1);
    let mut json = Vec::with_capacity(escaped * 6 + 64);
    json.extend_from_slice(br#"{"type":"chat","content":""#);
    for _ in 0..escaped {
        json.extend_from_slice(br"\u0001");
    }
    json.extend_from_slice(TAIL.as_bytes());
    json.extend_from_slice(br#""}"#);
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_fields_are_read_without_parsing_the_content() {
        let text = br#"{"type":"chat","room":"soak-3","seq":42,"from":"inno-7","content":"@0000000000000001000000070000000b hi","timestamp":1}"#;
        let ServerMessage::Chat(chat) = classify(text) else {
            panic!("not a chat");
        };
        assert!(matches!(chat.room, Cow::Borrowed("soak-3")));
        assert_eq!(chat.seq, 42);
        assert_eq!(chat.from, "inno-7");
        assert_eq!(
            chat.stamp,
            Some(Stamp {
                sent_at: 1,
                sender: 7,
                counter: 11
            })
        );
    }

    #[test]
    fn chat_with_escaped_names_falls_back_to_serde() {
        let text =
            br#"{"type":"chat","room":"a\"b","seq":1,"from":"x","content":"\u0001","timestamp":1}"#;
        let ServerMessage::Chat(chat) = classify(text) else {
            panic!("not a chat");
        };
        assert_eq!(chat.room, "a\"b");
        assert_eq!(chat.stamp, None);
    }

    #[test]
    fn joined_is_read_whole() {
        let text = br#"{"type":"joined","room":"r","userId":"u","members":["u"],"epoch":"ab","seq":9,"session":"tok","replay":{"complete":false,"reason":"gap","count":100}}"#;
        assert_eq!(
            classify(text),
            ServerMessage::Joined(Joined {
                user_id: "u".into(),
                epoch: "ab".into(),
                latest: 9,
                session: "tok".into(),
                complete: false,
                reason: Some(ReplayGap::History),
                count: 100,
            })
        );
    }

    #[test]
    fn errors_and_notices_are_told_apart() {
        assert_eq!(
            classify(br#"{"type":"error","code":"rate_limited","message":"x"}"#),
            ServerMessage::Error("rate_limited".into())
        );
        assert_eq!(
            classify(br#"{"type":"system","content":"Error: x","code":"not_joined","error":true}"#),
            ServerMessage::Error("not_joined".into())
        );
        assert_eq!(
            classify(br#"{"type":"presence","room":"r","joined":"u"}"#),
            ServerMessage::Notice
        );
        assert_eq!(classify(br#"{"type":"dm"}"#), ServerMessage::Unexpected);
        assert_eq!(classify(b"not json"), ServerMessage::Unexpected);
    }

    #[test]
    fn innocent_content_round_trips_and_stays_in_bounds() {
        let mut rng = Rng::new(7);
        let mut out = Vec::new();
        for counter in 0..500 {
            let stamp = Stamp {
                sent_at: 0x0123_4567_89ab_cdef,
                sender: 1999,
                counter,
            };
            write_innocent_content(&mut out, stamp, &mut rng, 100, 300);
            assert!((100..=300).contains(&out.len()), "{} bytes", out.len());
            let text = std::str::from_utf8(&out).expect("UTF-8");
            assert!(!text.contains(['"', '\\']) && !text.chars().any(char::is_control));
            assert_eq!(Stamp::parse(&out), Some(stamp));
        }
    }

    #[test]
    fn rejoin_carries_session_and_since() {
        let join: Value =
            serde_json::from_slice(&join_json("u", "r", Some("t"), Some(("e", 5)))).unwrap();
        assert_eq!(join["v"], 2);
        assert_eq!(join["session"], "t");
        assert_eq!(join["since"], json!({"epoch": "e", "seq": 5}));
        let first: Value = serde_json::from_slice(&join_json("u", "r", None, None)).unwrap();
        assert!(first.get("since").is_none() && first.get("session").is_none());
    }

    #[test]
    fn escape_heavy_chat_has_the_asked_length_in_characters() {
        let json = escape_heavy_chat_json(4000);
        let value: Value = serde_json::from_slice(&json).unwrap();
        let content = value["content"].as_str().unwrap();
        assert_eq!(content.chars().count(), 4000);
        assert!(json.len() > 23_000);
    }
}
