//! The JSON shapes on the wire: what a client frame may hold, and every message the server sends.
//!
//! Owns decoding a frame into borrowed, loosely typed fields (so a field of the wrong type is reported as that,
//! not as bad JSON) and encoding outgoing messages, each serialised once into an `Rc<str>`. It must not judge
//! field values (that is `request.rs`) nor decide who gets what.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::rc::Rc;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::room::Seat;

/// The error codes of `docs/protocol.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ErrorCode {
    InvalidJson,
    UnknownType,
    InvalidField,
    TooLong,
    NotJoined,
    NameTaken,
    NotOnline,
    RateLimited,
    Lagged,
    RoomFull,
    Unavailable,
    Unauthorized,
    Forbidden,
}

impl ErrorCode {
    /// Every code, in the order of `index`.
    pub(super) const ALL: [ErrorCode; 13] = [
        ErrorCode::InvalidJson,
        ErrorCode::UnknownType,
        ErrorCode::InvalidField,
        ErrorCode::TooLong,
        ErrorCode::NotJoined,
        ErrorCode::NameTaken,
        ErrorCode::NotOnline,
        ErrorCode::RateLimited,
        ErrorCode::Lagged,
        ErrorCode::RoomFull,
        ErrorCode::Unavailable,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
    ];

    /// Its place in `ALL`.
    pub(super) fn index(self) -> usize {
        self as usize
    }

    /// The `code` on the wire.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::TooLong => "too_long",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::NotOnline => "not_online",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Lagged => "lagged",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
        }
    }
}

/// A JSON value as far as the chat cares: a string, a non-negative integer, or anything else.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Loose<'a> {
    /// A string, borrowed from the frame unless it held escapes.
    Str(Cow<'a, str>),
    /// An integer from 0 to `u64::MAX`.
    Uint(u64),
    /// Any other value (`null` included when a field is not optional).
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LooseVisitor(PhantomData))
    }
}

struct LooseVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for LooseVisitor<'a> {
    type Value = Loose<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(u64::try_from(v).map_or(Loose::Other, Loose::Uint))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Loose::Uint(v))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Borrowed(v)))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Loose::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Loose::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Loose::Other)
    }
}

/// The `since` field: an object's `epoch` and `seq` when it is an object, else `NotObject`.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SinceField<'a> {
    /// It was an object; its two fields as found.
    Object {
        epoch: Option<Loose<'a>>,
        seq: Option<Loose<'a>>,
    },
    /// It was something other than an object.
    NotObject,
}

impl<'de: 'a, 'a> Deserialize<'de> for SinceField<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SinceVisitor(PhantomData))
    }
}

/// A frame's fields, each as found. Unknown keys are skipped; a repeated key keeps its last value.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Frame<'a> {
    pub(super) kind: Option<Loose<'a>>,
    pub(super) user_id: Option<Loose<'a>>,
    pub(super) room: Option<Loose<'a>>,
    pub(super) v: Option<Loose<'a>>,
    pub(super) session: Option<Loose<'a>>,
    pub(super) since: Option<SinceField<'a>>,
    pub(super) content: Option<Loose<'a>>,
    pub(super) to: Option<Loose<'a>>,
    pub(super) token: Option<Loose<'a>>,
}

impl<'a> Frame<'a> {
    /// Decode one frame; `None` unless it is exactly one JSON object.
    pub(super) fn decode(text: &'a str) -> Option<Frame<'a>> {
        serde_json::from_str(text).ok()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Frame<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FrameVisitor(PhantomData))
    }
}

struct FrameVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for FrameVisitor<'a> {
    type Value = Frame<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut frame = Frame::default();
        while let Some(key) = map.next_key::<Loose<'a>>()? {
            let Loose::Str(key) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let slot = match key.as_ref() {
                "type" => &mut frame.kind,
                "userId" => &mut frame.user_id,
                "room" => &mut frame.room,
                "v" => &mut frame.v,
                "session" => &mut frame.session,
                "content" => &mut frame.content,
                "to" => &mut frame.to,
                "token" => &mut frame.token,
                "since" => {
                    frame.since = map.next_value::<Option<SinceField<'a>>>()?;
                    continue;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = map.next_value::<Option<Loose<'a>>>()?;
        }
        Ok(frame)
    }
}

struct SinceVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for SinceVisitor<'a> {
    type Value = SinceField<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(SinceField::NotObject)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(SinceField::NotObject)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(SinceField::NotObject)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(SinceField::NotObject)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(SinceField::NotObject)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(SinceField::NotObject)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(SinceField::NotObject)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut epoch, mut seq) = (None, None);
        while let Some(key) = map.next_key::<Loose<'a>>()? {
            match key {
                Loose::Str(k) if k == "epoch" => epoch = map.next_value::<Option<Loose<'a>>>()?,
                Loose::Str(k) if k == "seq" => seq = map.next_value::<Option<Loose<'a>>>()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(SinceField::Object { epoch, seq })
    }
}

/// The `replay` object of `joined`.
#[derive(Serialize)]
pub(super) struct ReplayOut {
    pub(super) complete: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<&'static str>,
    pub(super) count: usize,
}

/// The names of a room's members, serialised as a JSON array without collecting them first.
pub(super) struct MemberNames<'a>(pub(super) &'a [Seat], pub(super) &'a [Rc<str>]);

/// The most names a `joined` lists: a join into a crowded room must not cost the server (or the joiner's
/// downlink) the whole room. `memberCount` gives the full number.
pub(super) const JOINED_MEMBERS_LISTED: usize = 100;

impl Serialize for MemberNames<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            self.0
                .iter()
                .map(|seat| &*seat.user)
                .chain(self.1.iter().map(|name| &**name))
                .take(JOINED_MEMBERS_LISTED),
        )
    }
}

/// Every message the server sends; see `docs/protocol.md` for who gets which.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(super) enum Out<'a> {
    /// A human-readable line.
    System { content: &'a str },
    /// The v2 joiner's welcome.
    Joined {
        room: &'a str,
        #[serde(rename = "userId")]
        user_id: &'a str,
        members: MemberNames<'a>,
        #[serde(rename = "memberCount")]
        member_count: usize,
        epoch: &'a str,
        seq: u64,
        session: &'a str,
        replay: ReplayOut,
    },
    /// A private message, as v2 clients get it.
    Dm {
        from: &'a str,
        to: &'a str,
        content: &'a str,
        timestamp: u64,
    },
    /// A private message, as v1 clients get it.
    #[serde(rename = "chat")]
    DmV1 {
        from: &'a str,
        content: &'a str,
        timestamp: u64,
        private: bool,
    },
    /// Someone else joined or left the room.
    Presence {
        room: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        joined: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        left: Option<&'a str>,
        /// Members in the room now.
        count: usize,
    },
    /// The answer to `ping`.
    Pong,
    /// A frame that could not be handled, as v2 clients get it.
    Error {
        code: &'static str,
        message: &'a str,
    },
    /// A frame that could not be handled, as v1 clients get it: a `system` line (`content` is
    /// `Error: <message>`) that the articles' client shows as text, carrying the same `code`.
    #[serde(rename = "system")]
    ErrorV1 {
        content: &'a str,
        code: &'static str,
        error: bool,
    },
}

/// Bytes that a JSON string must escape: control characters, `"` and `\\` (RFC 8259 section 7).
const JSON_SPECIAL: u8 = 1;
/// Bytes that `escape_html` replaces.
const HTML_SPECIAL: u8 = 2;

/// The classes of every byte value, so that checking a text costs one table lookup per byte.
static BYTE_CLASS: [u8; 256] = {
    let mut table = [0; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        if b < 0x20 || b == b'"' || b == b'\\' {
            table[byte] |= JSON_SPECIAL;
        }
        if matches!(b, b'<' | b'>' | b'&' | b'"' | b'\'') {
            table[byte] |= HTML_SPECIAL;
        }
        byte += 1;
    }
    table
};

/// Whether `text` holds a byte of `class`: eight bytes at a time (a chat line has none, and is scanned whole by
/// every field that is encoded or escaped), then the tail byte by byte through [`BYTE_CLASS`].
fn contains(text: &str, class: u8) -> bool {
    let bytes = text.as_bytes();
    let mut words = bytes.chunks_exact(8);
    let found = words.by_ref().any(|word| {
        let mut lanes = [0; 8];
        lanes.copy_from_slice(word);
        let word = u64::from_le_bytes(lanes);
        (class & JSON_SPECIAL != 0 && word_has_json_special(word))
            || (class & HTML_SPECIAL != 0 && word_has_html_special(word))
    });
    found
        || words
            .remainder()
            .iter()
            .any(|&b| BYTE_CLASS[usize::from(b)] & class != 0)
}

/// 0x01 in every byte of a word.
const LANES_01: u64 = u64::from_le_bytes([0x01; 8]);
/// 0x80 in every byte of a word.
const LANES_80: u64 = u64::from_le_bytes([0x80; 8]);

/// Whether a byte of `word` is below `n` (`n` at most 0x80): the borrow of subtracting `n` from a byte reaches its
/// top bit only if the byte was below `n`, and `!word` keeps bytes that had the top bit set from counting. Exact as
/// a yes or no (which byte it was is not needed).
fn word_has_byte_below(word: u64, n: u8) -> bool {
    word.wrapping_sub(LANES_01 * u64::from(n)) & !word & LANES_80 != 0
}

/// Whether a byte of `word` equals `byte`: a byte equal to it is zero after the exclusive or.
fn word_has_byte(word: u64, byte: u8) -> bool {
    word_has_byte_below(word ^ (LANES_01 * u64::from(byte)), 1)
}

/// A [`JSON_SPECIAL`] byte in `word`: a control character, `"` or `\\`.
fn word_has_json_special(word: u64) -> bool {
    word_has_byte_below(word, 0x20) || word_has_byte(word, b'"') || word_has_byte(word, b'\\')
}

/// An [`HTML_SPECIAL`] byte in `word`: `< > & " '`.
fn word_has_html_special(word: u64) -> bool {
    word_has_byte(word, b'<')
        || word_has_byte(word, b'>')
        || word_has_byte(word, b'&')
        || word_has_byte(word, b'"')
        || word_has_byte(word, b'\'')
}

/// `text` with `< > & " '` replaced by their HTML character references, for the fields the articles' client
/// puts into `innerHTML` unescaped. Borrowed (no allocation) when there is nothing to replace.
pub(super) fn escape_html(text: &str) -> Cow<'_, str> {
    if !contains(text, HTML_SPECIAL) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// Appends `text` as a JSON string, quoted and escaped exactly as serde_json does.
fn push_json_str(out: &mut String, text: &str) {
    if !contains(text, JSON_SPECIAL) {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else if let Ok(quoted) = serde_json::to_string(text) {
        out.push_str(&quoted);
    }
}

/// Appends `n` in decimal, as serde_json writes integers.
fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        start -= 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[start..]).unwrap_or_default());
}

/// A scratch buffer that grew past this is given back rather than kept for the next message.
const SCRATCH_KEPT: usize = 64 * 1024;

/// The fields of a room's `chat` message.
#[derive(Clone, Copy, Debug)]
pub(super) struct ChatFields<'a> {
    pub(super) room: &'a str,
    pub(super) seq: u64,
    pub(super) from: &'a str,
    pub(super) content: &'a str,
    pub(super) timestamp: u64,
}

/// The `chat` message written by hand: the hottest serialisation (one per chat message), byte for byte what serde
/// would give for `{type, room, seq, from, content, timestamp}`. It is built in `scratch`, kept by the caller
/// from one message to the next, so a message costs one allocation: its shared `Rc<str>`.
pub(super) fn encode_chat(scratch: &mut String, fields: &ChatFields<'_>) -> Rc<str> {
    scratch.clear();
    scratch.push_str(r#"{"type":"chat","room":"#);
    push_json_str(scratch, fields.room);
    scratch.push_str(r#","seq":"#);
    push_u64(scratch, fields.seq);
    scratch.push_str(r#","from":"#);
    push_json_str(scratch, fields.from);
    scratch.push_str(r#","content":"#);
    push_json_str(scratch, fields.content);
    scratch.push_str(r#","timestamp":"#);
    push_u64(scratch, fields.timestamp);
    scratch.push('}');
    let message = Rc::from(scratch.as_str());
    if scratch.capacity() > SCRATCH_KEPT {
        *scratch = String::new();
    }
    message
}

/// What a `chat` message of room `room` says before its seq: `{"type":"chat","room":"<room>","seq":`. With
/// [`encode_chat_tail`] and the seq's digits between them, it is byte for byte what [`encode_chat`] writes: the
/// cluster engine numbers a message by putting its seq between the two.
pub(super) fn encode_chat_head(room: &str) -> String {
    let mut head = String::with_capacity(room.len() + 32);
    head.push_str(r#"{"type":"chat","room":"#);
    push_json_str(&mut head, room);
    head.push_str(r#","seq":"#);
    head
}

/// What a `chat` message says after its seq: `,"from":...,"content":...,"timestamp":...}`.
pub(super) fn encode_chat_tail(
    scratch: &mut String,
    from: &str,
    content: &str,
    timestamp: u64,
) -> Rc<str> {
    scratch.clear();
    scratch.push_str(r#","from":"#);
    push_json_str(scratch, from);
    scratch.push_str(r#","content":"#);
    push_json_str(scratch, content);
    scratch.push_str(r#","timestamp":"#);
    push_u64(scratch, timestamp);
    scratch.push('}');
    let tail = Rc::from(scratch.as_str());
    if scratch.capacity() > SCRATCH_KEPT {
        *scratch = String::new();
    }
    tail
}

/// A `chat` message as a cluster engine hands it back: the text every member is sent, read back into its fields.
#[derive(Debug, Deserialize)]
pub(super) struct Published<'a> {
    #[serde(rename = "type")]
    pub(super) kind: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) room: Cow<'a, str>,
    pub(super) seq: u64,
    #[serde(borrow)]
    pub(super) from: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) content: Cow<'a, str>,
    pub(super) timestamp: u64,
}

impl<'a> Published<'a> {
    /// Reads a published `chat` message: without a JSON parser when it has exactly the shape [`encode_chat`] writes
    /// and none of its strings holds an escape (the common case, and every message this node published whose text
    /// needs none), with serde_json otherwise. Either way the fields are the same: a JSON string without `"`, `\`
    /// or a control character is its own text, and the plain reader accepts nothing else. `None`: not JSON, or
    /// not a `chat` message's fields.
    pub(super) fn read(text: &'a str) -> Option<Published<'a>> {
        Published::read_plain(text).or_else(|| serde_json::from_str(text).ok())
    }

    /// The fields of `text` if it is `{"type":"chat","room":"R","seq":N,"from":"F","content":"C","timestamp":T}`
    /// byte for byte, with R, F and C free of `"`, `\` and control characters and N, T decimal integers as JSON
    /// writes them (no sign, no leading zero) that fit a u64; `None` for anything else.
    fn read_plain(text: &'a str) -> Option<Published<'a>> {
        let rest = text.strip_prefix(r#"{"type":"chat","room":""#)?;
        let (room, rest) = plain_string(rest)?;
        let rest = rest.strip_prefix(r#","seq":"#)?;
        let (seq, rest) = plain_integer(rest)?;
        let rest = rest.strip_prefix(r#","from":""#)?;
        let (from, rest) = plain_string(rest)?;
        let rest = rest.strip_prefix(r#","content":""#)?;
        let (content, rest) = plain_string(rest)?;
        let rest = rest.strip_prefix(r#","timestamp":"#)?;
        let (timestamp, rest) = plain_integer(rest)?;
        (rest == "}").then_some(Published {
            kind: Cow::Borrowed("chat"),
            room: Cow::Borrowed(room),
            seq,
            from: Cow::Borrowed(from),
            content: Cow::Borrowed(content),
            timestamp,
        })
    }
}

/// A JSON string's text up to its closing quote, and what follows the quote, if nothing in it needs unescaping
/// (RFC 8259 7: `"`, `\` and the control characters below U+0020 are what a string must escape).
fn plain_string(text: &str) -> Option<(&str, &str)> {
    let end = text
        .bytes()
        .position(|b| b == b'"' || b == b'\\' || b < 0x20)?;
    let rest = text.get(end..)?.strip_prefix('"')?;
    Some((text.get(..end)?, rest))
}

/// A JSON integer as a u64, and what follows it: digits without a leading zero (RFC 8259 6), no sign, no fraction.
fn plain_integer(text: &str) -> Option<(u64, &str)> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, rest) = text.split_at_checked(digits)?;
    if number.is_empty() || (number.len() > 1 && number.starts_with('0')) {
        return None;
    }
    Some((number.parse().ok()?, rest))
}

/// A member's arrival or departure on another node, as a room's channel carries it.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RemotePresence<'a> {
    #[serde(borrow)]
    pub(super) user: Cow<'a, str>,
    pub(super) joined: bool,
}

/// A presence event as JSON.
pub(super) fn encode_remote_presence(event: &RemotePresence<'_>) -> Rc<str> {
    match serde_json::to_string(event) {
        Ok(text) => Rc::from(text),
        Err(err) => {
            log::error!("cannot serialise a presence event: {err}");
            Rc::from("{}")
        }
    }
}

/// A DM on its way from one node to another: what the recipient's node needs to write it for its holder.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RelayedDm<'a> {
    /// The key of the recipient's name.
    #[serde(borrow, rename = "toKey")]
    pub(super) to_key: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) from: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) content: Cow<'a, str>,
    pub(super) timestamp: u64,
}

/// A relayed DM as JSON.
pub(super) fn encode_relayed_dm(dm: &RelayedDm<'_>) -> Rc<str> {
    match serde_json::to_string(dm) {
        Ok(text) => Rc::from(text),
        Err(err) => {
            log::error!("cannot serialise a relayed DM: {err}");
            Rc::from("{}")
        }
    }
}

/// Serialise a message once, into the form every recipient shares.
pub(super) fn encode(message: &Out<'_>) -> Rc<str> {
    match serde_json::to_string(message) {
        Ok(text) => Rc::from(text),
        Err(err) => {
            log::error!("cannot serialise an outgoing message: {err}");
            Rc::from("{}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Option<Frame<'_>> {
        Frame::decode(text)
    }

    #[test]
    fn head_seq_and_tail_make_the_whole_chat_message() {
        let fields = ChatFields {
            room: "l\"obby",
            seq: 4711,
            from: "ann",
            content: "a \\ b\n",
            timestamp: 1_795_307_457_209,
        };
        let whole = encode_chat(&mut String::new(), &fields);
        let tail = encode_chat_tail(
            &mut String::new(),
            fields.from,
            fields.content,
            fields.timestamp,
        );
        assert_eq!(
            format!("{}4711{tail}", encode_chat_head(fields.room)),
            *whole
        );
    }

    #[test]
    fn a_published_chat_message_reads_back_into_its_fields() {
        let fields = ChatFields {
            room: "lobby",
            seq: 9,
            from: "b\u{e9}a",
            content: "<\"hi\">",
            timestamp: 5,
        };
        let text = encode_chat(&mut String::new(), &fields);
        let published: Published<'_> = serde_json::from_str(&text).expect("parses");
        assert_eq!(published.kind, "chat");
        assert_eq!(
            (
                &*published.room,
                published.seq,
                &*published.from,
                &*published.content,
                published.timestamp
            ),
            ("lobby", 9, "b\u{e9}a", "<\"hi\">", 5)
        );
    }

    /// Both readers' fields, for comparing them.
    fn fields_of(
        published: Option<Published<'_>>,
    ) -> Option<(String, String, u64, String, String, u64)> {
        published.map(|p| {
            (
                p.kind.into_owned(),
                p.room.into_owned(),
                p.seq,
                p.from.into_owned(),
                p.content.into_owned(),
                p.timestamp,
            )
        })
    }

    #[test]
    fn a_plain_chat_message_is_read_without_the_json_parser() {
        let fields = ChatFields {
            room: "lobby",
            seq: 12,
            from: "b\u{e9}a",
            content: "<hi> & 'bye'",
            timestamp: 1_700_000_000_000,
        };
        let text = encode_chat(&mut String::new(), &fields);
        let plain = Published::read_plain(&text).expect("plain");
        assert_eq!(
            (
                &*plain.room,
                plain.seq,
                &*plain.from,
                &*plain.content,
                plain.timestamp
            ),
            ("lobby", 12, "b\u{e9}a", "<hi> & 'bye'", 1_700_000_000_000)
        );
    }

    #[test]
    fn the_plain_reader_declines_what_it_cannot_read_as_json_would_and_read_falls_back() {
        let escaped = encode_chat(
            &mut String::new(),
            &ChatFields {
                room: "lobby",
                seq: 3,
                from: "ann",
                content: "say \"hi\"\n",
                timestamp: 5,
            },
        );
        assert!(Published::read_plain(&escaped).is_none());
        assert_eq!(
            Published::read(&escaped).map(|p| p.content.into_owned()),
            Some("say \"hi\"\n".to_owned())
        );
        for odd in [
            r#"{"type":"chat","room":"r","seq":01,"from":"a","content":"c","timestamp":5}"#,
            r#"{"type":"chat","room":"r","seq":-1,"from":"a","content":"c","timestamp":5}"#,
            r#"{"type":"chat","room":"r","seq":1.5,"from":"a","content":"c","timestamp":5}"#,
            r#"{"type":"chat","room":"r","seq":18446744073709551616,"from":"a","content":"c","timestamp":5}"#,
            r#"{"type":"chat","room":"r","seq":1,"from":"a","content":"c","timestamp":5} "#,
            r#"{"type":"chat","room":"r","seq":1,"content":"c","from":"a","timestamp":5}"#,
            r#"{"type":"chat","room":"r","seq":1,"from":"a","content":"c","timestamp":}"#,
            "{\"type\":\"chat\",\"room\":\"r\",\"seq\":1,\"from\":\"a\u{1}\",\"content\":\"c\",\"timestamp\":5}",
        ] {
            assert!(Published::read_plain(odd).is_none(), "{odd}");
            // Whatever the plain reader declines, read gives exactly what the JSON parser gives.
            assert_eq!(
                fields_of(Published::read(odd)),
                fields_of(serde_json::from_str(odd).ok()),
                "{odd}"
            );
        }
    }

    #[test]
    fn the_plain_reader_agrees_with_the_json_parser_on_every_message_it_reads() {
        let samples = [
            "",
            "a",
            "lobby",
            "\u{e9}t\u{e9}",
            "\u{1f600}",
            "<b>&amp;</b>",
            "\u{7f}",
            "'",
            "/",
        ];
        for room in samples {
            for text in samples {
                for seq in [0, 1, 42, u64::MAX] {
                    let fields = ChatFields {
                        room,
                        seq,
                        from: text,
                        content: text,
                        timestamp: seq / 2,
                    };
                    let message = encode_chat(&mut String::new(), &fields);
                    let plain = Published::read_plain(&message);
                    assert!(plain.is_some(), "{message}");
                    assert_eq!(
                        fields_of(plain),
                        fields_of(serde_json::from_str(&message).ok()),
                        "{message}"
                    );
                }
            }
        }
    }

    #[test]
    fn hand_written_chat_is_byte_identical_to_serde() {
        #[derive(serde::Serialize)]
        struct Reference<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            room: &'a str,
            seq: u64,
            from: &'a str,
            content: &'a str,
            timestamp: u64,
        }
        let samples = [
            "plain",
            "",
            "quote \" and backslash \\",
            "line\nbreak\ttab\u{0}nul\u{1f}",
            "<img src=x onerror=alert(1)>",
            "émoji 😀 \u{7f} \u{2028}",
        ];
        let mut scratch = String::new();
        for (i, text) in samples.iter().enumerate() {
            let seq = [0, 1, 42, u64::MAX][i % 4];
            let timestamp = [1_795_307_457_209, 0, u64::MAX, 9][i % 4];
            let reference = serde_json::to_string(&Reference {
                kind: "chat",
                room: text,
                seq,
                from: samples[(i + 1) % samples.len()],
                content: text,
                timestamp,
            })
            .unwrap();
            let fields = ChatFields {
                room: text,
                seq,
                from: samples[(i + 1) % samples.len()],
                content: text,
                timestamp,
            };
            let ours = encode_chat(&mut scratch, &fields);
            assert_eq!(&*ours, reference.as_str());
        }
    }

    #[test]
    fn decodes_known_fields_borrowed() {
        let f = frame(r#"{"type":"chat","content":"hi","extra":[1,{"a":2}]}"#).expect("object");
        assert_eq!(f.kind, Some(Loose::Str(Cow::Borrowed("chat"))));
        assert!(matches!(f.content, Some(Loose::Str(Cow::Borrowed("hi")))));
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let f = frame(r#"{"type":"chat","content":"a\"b\u00e9"}"#).expect("object");
        assert_eq!(f.content, Some(Loose::Str(Cow::Owned("a\"bé".into()))));
    }

    #[test]
    fn wrong_types_are_kept_as_such() {
        let f =
            frame(r#"{"type":3,"content":null,"v":-1,"to":{"x":1},"room":2.5}"#).expect("object");
        assert_eq!(f.kind, Some(Loose::Uint(3)));
        assert_eq!(f.content, None);
        assert_eq!(f.v, Some(Loose::Other));
        assert_eq!(f.to, Some(Loose::Other));
        assert_eq!(f.room, Some(Loose::Other));
    }

    #[test]
    fn non_objects_and_broken_json_are_rejected() {
        for text in [
            "",
            "[]",
            "[\"join\"]",
            "\"join\"",
            "3",
            "null",
            "{",
            "{} {}",
            "{\"type\":}",
        ] {
            assert_eq!(frame(text), None, "{text}");
        }
    }

    #[test]
    fn repeated_keys_keep_the_last_value() {
        let f = frame(r#"{"type":"ping","type":"chat"}"#).expect("object");
        assert_eq!(f.kind, Some(Loose::Str(Cow::Borrowed("chat"))));
    }

    #[test]
    fn since_is_read_as_object_or_not() {
        let f = frame(r#"{"since":{"epoch":"e","seq":4,"x":[]}}"#).expect("object");
        assert_eq!(
            f.since,
            Some(SinceField::Object {
                epoch: Some(Loose::Str(Cow::Borrowed("e"))),
                seq: Some(Loose::Uint(4)),
            })
        );
        let f = frame(r#"{"since":[1]}"#).expect("object");
        assert_eq!(f.since, Some(SinceField::NotObject));
        let f = frame(r#"{"since":null}"#).expect("object");
        assert_eq!(f.since, None);
    }

    #[test]
    fn outgoing_shapes() {
        assert_eq!(&*encode(&Out::Pong), r#"{"type":"pong"}"#);
        assert_eq!(
            &*encode(&Out::DmV1 {
                from: "a",
                content: "c",
                timestamp: 5,
                private: true
            }),
            r#"{"type":"chat","from":"a","content":"c","timestamp":5,"private":true}"#
        );
        assert_eq!(
            &*encode(&Out::Presence {
                room: "r",
                joined: None,
                left: Some("a"),
                count: 2
            }),
            r#"{"type":"presence","room":"r","left":"a","count":2}"#
        );
        assert_eq!(
            &*encode(&Out::ErrorV1 {
                content: "Error: m",
                code: "c",
                error: true
            }),
            r#"{"type":"system","content":"Error: m","code":"c","error":true}"#
        );
    }

    #[test]
    fn byte_classes_match_the_json_and_html_rules_for_every_byte() {
        for byte in 0..=255u8 {
            let json = byte < 0x20 || byte == b'"' || byte == b'\\';
            let html = b"<>&\"'".contains(&byte);
            assert_eq!(
                BYTE_CLASS[usize::from(byte)] & JSON_SPECIAL != 0,
                json,
                "{byte:#x}"
            );
            assert_eq!(
                BYTE_CLASS[usize::from(byte)] & HTML_SPECIAL != 0,
                html,
                "{byte:#x}"
            );
        }
    }

    #[test]
    fn the_word_at_a_time_scan_finds_every_special_byte_at_every_position_and_nothing_else() {
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 24, 33] {
            let plain = "a".repeat(len);
            assert!(!contains(&plain, JSON_SPECIAL), "{len}");
            assert!(!contains(&plain, HTML_SPECIAL), "{len}");
            for position in 0..len {
                for byte in 0..=127u8 {
                    let mut bytes = plain.clone().into_bytes();
                    bytes[position] = byte;
                    let text = String::from_utf8(bytes).unwrap();
                    for class in [JSON_SPECIAL, HTML_SPECIAL] {
                        assert_eq!(
                            contains(&text, class),
                            BYTE_CLASS[usize::from(byte)] & class != 0,
                            "byte {byte:#x} at {position} of {len}, class {class}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_word_tests_agree_with_the_byte_table_on_arbitrary_words() {
        // Bytes drawn from a few interesting values (specials, their neighbours, 0x00, 0x7f, 0x80, 0xff) and from
        // anywhere, so that borrows between neighbouring bytes get tried.
        let picks = [
            0x00, 0x1f, 0x20, 0x21, b'"', b'\\', b'<', b'>', b'&', b'\'', 0x7f, 0x80, 0xa0, 0xff,
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut lanes = state.to_le_bytes();
            for (i, lane) in lanes.iter_mut().enumerate() {
                if (state >> (i + 40)) & 1 == 1 {
                    *lane = picks[usize::from(*lane) % picks.len()];
                }
            }
            let word = u64::from_le_bytes(lanes);
            let by_table = |class: u8| {
                lanes
                    .iter()
                    .any(|&b| BYTE_CLASS[usize::from(b)] & class != 0)
            };
            assert_eq!(
                word_has_json_special(word),
                by_table(JSON_SPECIAL),
                "{lanes:x?}"
            );
            assert_eq!(
                word_has_html_special(word),
                by_table(HTML_SPECIAL),
                "{lanes:x?}"
            );
        }
    }

    #[test]
    fn the_word_at_a_time_scan_sees_no_special_byte_in_multibyte_characters() {
        // Every byte of a multi-byte UTF-8 character is 0x80 or above: never special, whatever its neighbours.
        let text = "é😀ü\u{7ff}\u{ffff}ß".repeat(5);
        assert!(!contains(&text, JSON_SPECIAL));
        assert!(!contains(&text, HTML_SPECIAL));
        assert!(contains(&format!("{text}\u{1f}"), JSON_SPECIAL));
        assert!(contains(&format!("{text}'{text}"), HTML_SPECIAL));
    }

    #[test]
    fn escape_html_replaces_the_five_specials_only() {
        assert!(matches!(
            escape_html("plain é 😀"),
            Cow::Borrowed("plain é 😀")
        ));
        assert_eq!(
            escape_html(r#"é<a href="x">'&'</a>"#),
            "é&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
