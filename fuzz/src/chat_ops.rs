//! The `chat_message` target's input: a sequence of client frames, disconnects and clock steps over a few
//! connections.
//!
//! Names come mostly from a small pool so that users collide, rooms fill up and direct messages find someone;
//! contents and raw frames are arbitrary text. A join can present a session token or a history epoch that the
//! server handed out earlier in the same run, which is what lets a run reach name reclaiming and replay.

use arbitrary::{Arbitrary, Unstructured};

use crate::bytes::{Reader, Writer};

/// How many connections a run drives.
pub const CONNS: u8 = 6;

/// Names the pool hands out: plain, case-variant, at and over the limits, with control characters, non-ASCII.
pub const NAME_POOL: &[&str] = &[
    "ann",
    "bob",
    "Ann",
    "lobby",
    "general",
    "",
    " ",
    "a",
    "ü",
    "🦀",
    "abcdefghijklmnopqrstuvwxyz012345",
    "abcdefghijklmnopqrstuvwxyz0123456",
    "tab\there",
    "nul\0",
    "\u{7f}",
    "\u{85}",
    "x\u{200b}y",
    "room-with-a-name-that-is-exactly-sixty-four-characters-long-xxxx",
    "room-with-a-name-that-is-exactly-sixty-five-characters-long-xxxxx",
];

/// Whole frames that are not what a client should send: broken JSON, wrong types, odd shapes.
pub const RAW_POOL: &[&str] = &[
    "",
    "{",
    "null",
    "[]",
    "\"join\"",
    "42",
    "{}",
    "{\"type\":null}",
    "{\"type\":1}",
    "{\"type\":\"JOIN\"}",
    "{\"type\":\"nope\"}",
    "{\"type\":\"join\"}",
    "{\"type\":\"join\",\"userId\":1,\"room\":\"r\"}",
    "{\"type\":\"join\",\"userId\":\"a\",\"room\":[]}",
    "{\"type\":\"join\",\"userId\":\"a\",\"room\":\"r\",\"v\":-1}",
    "{\"type\":\"join\",\"userId\":\"a\",\"room\":\"r\",\"v\":1.5}",
    "{\"type\":\"join\",\"userId\":\"a\",\"room\":\"r\",\"v\":18446744073709551616}",
    "{\"type\":\"join\",\"userId\":\"a\",\"room\":\"r\",\"session\":7}",
    "{\"type\":\"join\",\"userId\":\"a\",\"room\":\"r\",\"since\":{\"epoch\":\"e\",\"seq\":-1}}",
    "{\"type\":\"join\",\"userId\":\"a\",\"room\":\"r\",\"since\":\"e:1\"}",
    "{\"type\":\"chat\"}",
    "{\"type\":\"chat\",\"content\":\"\"}",
    "{\"type\":\"chat\",\"content\":5}",
    "{\"type\":\"dm\",\"to\":\"ann\"}",
    "{\"type\":\"dm\",\"content\":\"hi\"}",
    "{\"type\":\"ping\",\"extra\":[1,2,3]}",
    "{\"type\":\"leave\",\"type\":\"ping\"}",
    "{\"type\":\"chat\",\"content\":\"\\ud800\"}",
    "{\"type\":\"chat\",\"content\":\"a\\u0000b\"}",
    "{\"type\":\"join\",\"userId\":\"\\u0007\",\"room\":\"r\"}",
    "{\"type\":\"chat\",\"content\":\"x\"} trailing",
    "\u{feff}{\"type\":\"ping\"}",
    " {\"type\":\"ping\"} ",
];

/// A name field: from the pool, or arbitrary bytes read as lossy UTF-8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Name {
    /// `NAME_POOL[i % len]`.
    Pool(u8),
    /// At most 127 bytes.
    Text(Vec<u8>),
}

impl Name {
    fn read(r: &mut Reader<'_>) -> Name {
        let b = r.u8();
        if b < 0x80 {
            Name::Pool(b)
        } else {
            Name::Text(r.bytes(usize::from(b & 0x7F)).to_vec())
        }
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Name::Pool(i) => {
                assert!(*i < 0x80);
                w.u8(*i);
            }
            Name::Text(bytes) => {
                let len = u8::try_from(bytes.len()).ok().filter(|l| *l < 0x80);
                w.u8(0x80 | len.expect("a Text name is at most 127 bytes"));
                w.bytes(bytes);
            }
        }
    }

    /// The name as it goes into the JSON.
    pub fn text(&self) -> String {
        match self {
            Name::Pool(i) => NAME_POOL[usize::from(*i) % NAME_POOL.len()].to_owned(),
            Name::Text(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        }
    }
}

/// A `content` field: arbitrary bytes read as lossy UTF-8, or a long run of one character.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// At most 191 bytes.
    Text(Vec<u8>),
    /// `len` copies of `ch` (`'x'`, `'é'` or `'🦀'` by `ch % 3`); `len` below 8192, around the 4000-character
    /// limit.
    Long {
        /// Chooses the character.
        ch: u8,
        /// How many.
        len: u16,
    },
}

impl Content {
    fn read(r: &mut Reader<'_>) -> Content {
        let b = r.u8();
        if b < 0xC0 {
            Content::Text(r.bytes(usize::from(b)).to_vec())
        } else {
            let ch = r.u8();
            let len = u16::from(b & 0x1F) << 8 | u16::from(r.u8());
            Content::Long { ch, len }
        }
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            Content::Text(bytes) => {
                let len = u8::try_from(bytes.len()).ok().filter(|l| *l < 0xC0);
                w.u8(len.expect("a Text content is at most 191 bytes"));
                w.bytes(bytes);
            }
            Content::Long { ch, len } => {
                assert!(*len < 1 << 13);
                w.u8(0xC0 | (len >> 8) as u8);
                w.u8(*ch);
                w.u8(*len as u8);
            }
        }
    }

    /// The content as it goes into the JSON.
    pub fn text(&self) -> String {
        match self {
            Content::Text(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Content::Long { ch, len } => {
                let c = ['x', 'é', '🦀'][usize::from(*ch) % 3];
                std::iter::repeat_n(c, usize::from(*len)).collect()
            }
        }
    }
}

/// A whole raw frame: from `RAW_POOL`, or arbitrary bytes read as lossy UTF-8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawText {
    /// `RAW_POOL[i % len]`.
    Pool(u8),
    /// At most 255 bytes.
    Text(Vec<u8>),
}

impl RawText {
    /// The frame's text.
    pub fn text(&self) -> String {
        match self {
            RawText::Pool(i) => RAW_POOL[usize::from(*i) % RAW_POOL.len()].to_owned(),
            RawText::Text(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        }
    }
}

/// What a `join` adds beyond its name and room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinExtras {
    /// Bit 0: `"v": 2`; bit 1: a `session`; bit 2: a `since`; bit 3: `v` is an odd value instead (0, 1 or 3);
    /// bit 4: the session is one handed out earlier (else junk); bit 5: the epoch is one handed out earlier.
    pub flags: u8,
    /// Which earlier session token (modulo how many were seen).
    pub session: u8,
    /// Which earlier epoch.
    pub epoch: u8,
    /// The `seq` of `since`; in token mode also the [`TokenSpec`] of the join's `token`.
    pub seq: u16,
}

/// Which connection token a `join` or `refresh` shows, in token mode (`ChatInput::config` bit 1), as bits.
///
/// Bits 0-1: none, one signed with the chat's secret, one signed with another secret, or a string that is not a
/// token; bit 2: its `sub` is the join's `userId` (else a name from the pool picked by bits 8-15); bits 3-4: it
/// expires in a minute, in a second, an hour ago, or in the far future; bit 5: it lists `rooms`; bit 6: it says
/// `"dm": false`; bit 7: it is not valid before an hour from now.
pub type TokenSpec = u16;

/// One step of the `chat_message` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatOp {
    /// `{"type":"join",...}` from `conn`.
    Join {
        /// The connection (modulo `CONNS`).
        conn: u8,
        /// `userId`.
        user: Name,
        /// `room`.
        room: Name,
        /// Version, session and since.
        extras: JoinExtras,
    },
    /// `{"type":"chat","content":...}`.
    Chat {
        /// The connection.
        conn: u8,
        /// `content`.
        content: Content,
    },
    /// `{"type":"dm","to":...,"content":...}`.
    Dm {
        /// The connection.
        conn: u8,
        /// `to`.
        to: Name,
        /// `content`.
        content: Content,
    },
    /// `{"type":"leave"}`.
    Leave {
        /// The connection.
        conn: u8,
    },
    /// `{"type":"ping"}`.
    Ping {
        /// The connection.
        conn: u8,
    },
    /// Any text frame.
    Raw {
        /// The connection.
        conn: u8,
        /// The frame.
        text: RawText,
    },
    /// `{"type":"refresh","token":...}` (no `token` field when the spec says none).
    Refresh {
        /// The connection.
        conn: u8,
        /// The token.
        token: TokenSpec,
    },
    /// The connection goes away.
    Disconnect {
        /// The connection.
        conn: u8,
    },
    /// Both clocks move forward.
    Advance {
        /// By this many milliseconds.
        ms: u16,
    },
}

impl ChatOp {
    /// Reads one operation.
    pub fn read(r: &mut Reader<'_>) -> ChatOp {
        match r.u8() % 9 {
            0 => ChatOp::Join {
                conn: r.u8(),
                user: Name::read(r),
                room: Name::read(r),
                extras: JoinExtras {
                    flags: r.u8(),
                    session: r.u8(),
                    epoch: r.u8(),
                    seq: r.u16(),
                },
            },
            1 => ChatOp::Chat {
                conn: r.u8(),
                content: Content::read(r),
            },
            2 => ChatOp::Dm {
                conn: r.u8(),
                to: Name::read(r),
                content: Content::read(r),
            },
            3 => ChatOp::Leave { conn: r.u8() },
            4 => ChatOp::Ping { conn: r.u8() },
            5 => {
                let conn = r.u8();
                let b = r.u8();
                let text = if b < 0x80 {
                    RawText::Pool(b)
                } else {
                    RawText::Text(r.short_bytes().to_vec())
                };
                ChatOp::Raw { conn, text }
            }
            6 => ChatOp::Disconnect { conn: r.u8() },
            7 => ChatOp::Advance { ms: r.u16() },
            _ => ChatOp::Refresh {
                conn: r.u8(),
                token: r.u16(),
            },
        }
    }

    /// Writes one operation.
    pub fn encode(&self, w: &mut Writer) {
        match self {
            ChatOp::Join {
                conn,
                user,
                room,
                extras,
            } => {
                w.u8(0);
                w.u8(*conn);
                user.encode(w);
                room.encode(w);
                w.u8(extras.flags);
                w.u8(extras.session);
                w.u8(extras.epoch);
                w.u16(extras.seq);
            }
            ChatOp::Chat { conn, content } => {
                w.u8(1);
                w.u8(*conn);
                content.encode(w);
            }
            ChatOp::Dm { conn, to, content } => {
                w.u8(2);
                w.u8(*conn);
                to.encode(w);
                content.encode(w);
            }
            ChatOp::Leave { conn } => {
                w.u8(3);
                w.u8(*conn);
            }
            ChatOp::Ping { conn } => {
                w.u8(4);
                w.u8(*conn);
            }
            ChatOp::Raw { conn, text } => {
                w.u8(5);
                w.u8(*conn);
                match text {
                    RawText::Pool(i) => {
                        assert!(*i < 0x80);
                        w.u8(*i);
                    }
                    RawText::Text(bytes) => {
                        w.u8(0x80);
                        w.short_bytes(bytes);
                    }
                }
            }
            ChatOp::Disconnect { conn } => {
                w.u8(6);
                w.u8(*conn);
            }
            ChatOp::Advance { ms } => {
                w.u8(7);
                w.u16(*ms);
            }
            ChatOp::Refresh { conn, token } => {
                w.u8(8);
                w.u8(*conn);
                w.u16(*token);
            }
        }
    }
}

/// The whole `chat_message` input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatInput {
    /// Bit 0: tight limits (tiny history, content limit and rate burst; one empty room kept) instead of the
    /// defaults; bit 1: token mode (the chat requires connection tokens, see [`TokenSpec`]).
    pub config: u8,
    /// What happens, in order.
    pub ops: Vec<ChatOp>,
}

impl ChatInput {
    /// Reads an input; every byte string is one.
    pub fn read(data: &[u8]) -> ChatInput {
        let mut r = Reader::new(data);
        let config = r.u8();
        let mut ops = Vec::new();
        while !r.is_empty() {
            ops.push(ChatOp::read(&mut r));
        }
        ChatInput { config, ops }
    }

    /// Writes an input that `read` turns back into `self`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(self.config);
        for op in &self.ops {
            op.encode(&mut w);
        }
        w.out
    }
}

impl<'a> Arbitrary<'a> for ChatInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let data = u.bytes(u.len())?;
        Ok(ChatInput::read(data))
    }

    fn arbitrary_take_rest(mut u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Self::arbitrary(&mut u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_read_is_identity() {
        let input = ChatInput {
            config: 1,
            ops: vec![
                ChatOp::Join {
                    conn: 1,
                    user: Name::Pool(0),
                    room: Name::Text("ü".as_bytes().to_vec()),
                    extras: JoinExtras {
                        flags: 0x37,
                        session: 2,
                        epoch: 3,
                        seq: 513,
                    },
                },
                ChatOp::Chat {
                    conn: 1,
                    content: Content::Long { ch: 2, len: 4001 },
                },
                ChatOp::Dm {
                    conn: 2,
                    to: Name::Pool(1),
                    content: Content::Text(b"hi".to_vec()),
                },
                ChatOp::Leave { conn: 3 },
                ChatOp::Ping { conn: 4 },
                ChatOp::Raw {
                    conn: 5,
                    text: RawText::Pool(3),
                },
                ChatOp::Raw {
                    conn: 5,
                    text: RawText::Text(vec![0xFF, b'{']),
                },
                ChatOp::Disconnect { conn: 1 },
                ChatOp::Advance { ms: 1000 },
                ChatOp::Refresh {
                    conn: 2,
                    token: 0x1235,
                },
            ],
        };
        assert_eq!(ChatInput::read(&input.encode()), input);
    }

    #[test]
    fn long_content_has_the_asked_length() {
        let content = Content::Long { ch: 1, len: 4000 };
        assert_eq!(content.text().chars().count(), 4000);
    }
}
