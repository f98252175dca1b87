//! The `deflate_connection` target's input: a permessage-deflate negotiation, a message size limit, how two
//! server-side readers read and budget what arrives, and a sequence of operations on a client and a server.
//!
//! Layout: `[offer flags][offer windows][policy windows][limit][fragment limit]`, then for reader A and then B
//! three length-prefixed plans (read sizes, inflation budgets, frame budgets), then operations until the end.
//! An operation is a message the client sends (through its own `Connection`, possibly re-cut into fragments with
//! Pings between them), a Close the client sends, bytes injected into the client's stream (raw bytes, a frame with
//! any RSV bits, or a message compressed outside the client and maybe damaged), a message the server sends
//! (`send`, `send_owned`, or the shared compressed frame), or a Close the server sends. This file only reads and
//! writes the grammar and says what each field means; the target decides what to check.

use arbitrary::{Arbitrary, Unstructured};
use roomcast::protocol::deflate::{ServerDeflatePolicy, TakeoverPolicy};
use roomcast::protocol::extensions::ExtensionOffer;
use roomcast::protocol::FeedLimits;

use crate::bytes::{Reader, Writer};

/// The client's half of the opening handshake and the server's policy, from which the real negotiation agrees
/// on parameters (or declines).
///
/// `flags`: bit 0 offers `server_no_context_takeover`, bit 1 `client_no_context_takeover`, bit 2
/// `server_max_window_bits` (8 + `windows & 7`), bit 3 `client_max_window_bits`, with the value 8 +
/// `(windows >> 4) & 7` when bit 4 is set and without one otherwise; bit 5 makes the server forbid its own
/// context takeover, bit 6 the client's; bit 7 offers nothing (no compression). `policy_windows`: the server's
/// largest windows, 8 + `& 7` for its own and 8 + `(>> 4) & 7` for the client's (8 is clamped by the policy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiation {
    /// See the type's doc.
    pub flags: u8,
    /// The window values offered.
    pub windows: u8,
    /// The server policy's windows.
    pub policy_windows: u8,
}

impl Negotiation {
    /// The permessage-deflate offer the client makes, if it makes one.
    pub fn offer(&self) -> Option<ExtensionOffer> {
        if self.flags & 0x80 != 0 {
            return None;
        }
        let mut params = Vec::new();
        let mut flag = |bit: u8, name: &str, value: Option<u8>| {
            if self.flags & bit != 0 {
                params.push((name.to_string(), value.map(|v| v.to_string())));
            }
        };
        flag(1, "server_no_context_takeover", None);
        flag(2, "client_no_context_takeover", None);
        flag(4, "server_max_window_bits", Some(8 + (self.windows & 7)));
        let client_value = (self.flags & 0x10 != 0).then_some(8 + ((self.windows >> 4) & 7));
        flag(8, "client_max_window_bits", client_value);
        Some(ExtensionOffer {
            name: "permessage-deflate".to_string(),
            params,
        })
    }

    /// What the server is willing to agree to.
    pub fn policy(&self) -> ServerDeflatePolicy {
        let takeover = |bit: u8| {
            if self.flags & bit != 0 {
                TakeoverPolicy::Forbid
            } else {
                TakeoverPolicy::AsOffered
            }
        };
        ServerDeflatePolicy {
            server_context: takeover(0x20),
            client_context: takeover(0x40),
            server_max_window_bits: 8 + (self.policy_windows & 7),
            client_max_window_bits: 8 + ((self.policy_windows >> 4) & 7),
        }
    }
}

/// How one server-side reader takes the client's bytes: the sizes of its reads (a `chunks` plan) and the
/// `FeedLimits` of its successive `feed_within` calls, each plan used in a cycle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReaderPlan {
    /// Read sizes (see `chunks`).
    pub reads: Vec<u8>,
    /// Inflation budgets, one per call (see `inflation_budget`); empty means none.
    pub inflate: Vec<u8>,
    /// Frame budgets, one per call: 0 is none, otherwise that many frames; empty means none.
    pub frames: Vec<u8>,
}

impl ReaderPlan {
    /// The limits of the reader's `call`-th `feed_within`.
    pub fn limits(&self, call: usize) -> FeedLimits {
        let inflated_bytes = match self.inflate.get(call % self.inflate.len().max(1)) {
            Some(&b) => inflation_budget(b),
            None => usize::MAX,
        };
        let frames = match self.frames.get(call % self.frames.len().max(1)) {
            Some(0) | None => u32::MAX,
            Some(&b) => u32::from(b),
        };
        FeedLimits {
            frames,
            inflated_bytes,
        }
    }

    fn read(r: &mut Reader<'_>) -> ReaderPlan {
        ReaderPlan {
            reads: r.short_bytes().to_vec(),
            inflate: r.short_bytes().to_vec(),
            frames: r.short_bytes().to_vec(),
        }
    }

    fn encode(&self, w: &mut Writer) {
        w.short_bytes(&self.reads);
        w.short_bytes(&self.inflate);
        w.short_bytes(&self.frames);
    }
}

/// One byte of an inflation plan as a budget in bytes: 0 is none, 1 is zero (a call that may inflate nothing),
/// 2..=0x3F are 1 to 62 bytes, 0x40..=0xBF steps of 64 bytes up to 8 KiB, 0xC0..=0xFF steps of 4 KiB up to 256
/// KiB.
pub fn inflation_budget(b: u8) -> usize {
    match b {
        0 => usize::MAX,
        1..=0x3F => usize::from(b - 1),
        0x40..=0xBF => usize::from(b - 0x3F) * 64,
        _ => usize::from(b - 0xBF) * 4096,
    }
}

/// A payload: `data` repeated `(repeat + 1) << (scale & 7)` times (read as lossy UTF-8 first for text), so that
/// a few input bytes make a long, compressible message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Body {
    /// Repetitions, less one, before scaling.
    pub repeat: u8,
    /// Bits 0-2 double the repetitions that many times.
    pub scale: u8,
    /// The bytes repeated.
    pub data: Vec<u8>,
}

impl Body {
    /// How many copies of `data` the payload holds.
    pub fn copies(&self) -> usize {
        (usize::from(self.repeat) + 1) << (self.scale & 7)
    }

    /// An upper bound of the payload's length, without building it (lossy UTF-8 at most triples a byte).
    pub fn max_len(&self) -> usize {
        self.data.len() * 3 * self.copies()
    }

    /// The payload of a binary message.
    pub fn binary(&self) -> Vec<u8> {
        self.data.repeat(self.copies())
    }

    /// The payload of a text message.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).repeat(self.copies())
    }

    fn read(r: &mut Reader<'_>) -> Body {
        Body {
            repeat: r.u8(),
            scale: r.u8(),
            data: r.short_bytes().to_vec(),
        }
    }

    fn encode(&self, w: &mut Writer) {
        w.u8(self.repeat);
        w.u8(self.scale);
        w.short_bytes(&self.data);
    }
}

/// One step of the `deflate_connection` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeflateOp {
    /// The client sends a message through its `Connection`. `flags` bit 0: binary; bit 1: a Ping between
    /// every two fragments. `cuts`: the frame the client wrote is re-cut into fragments at these points, each
    /// `byte * len / 256` of its payload (RSV1 stays on the first fragment only); none keeps the frame as written.
    ClientMessage {
        /// See the variant's doc.
        flags: u8,
        /// The payload.
        body: Body,
        /// Where to cut the payload into fragments.
        cuts: Vec<u8>,
    },
    /// The client starts the closing handshake; the target maps `code` onto one a client may send.
    ClientClose {
        /// The raw code.
        code: u16,
        /// The reason, read as lossy UTF-8.
        reason: Vec<u8>,
    },
    /// These bytes go into the client's stream as they are.
    Raw(Vec<u8>),
    /// A frame goes into the client's stream. `flags` bit 0: FIN; bits 1-3: RSV1-3 (RSV1 is bit 3); bit 4:
    /// unmasked. The low nibble of `opcode` is the opcode.
    Frame {
        /// See the variant's doc.
        flags: u8,
        /// The opcode.
        opcode: u8,
        /// The payload, before masking.
        payload: Vec<u8>,
    },
    /// A message compressed outside the client goes into its stream. `flags` bit 0: binary; bit 1: compressed
    /// with a final block (flate2, 7.2.3.4) rather than a fresh `MessageCompressor`; bits 2-3: 0 intact, 1 one
    /// byte flipped at `arg`, 2 cut short at `arg`, 3 `arg` appended; bit 4: sent as two frames, cut at `arg`;
    /// bit 5: RSV1 on the second frame too (a violation); bit 6: RSV1 on no frame; bit 7: a Ping between the two
    /// frames.
    Deflated {
        /// See the variant's doc.
        flags: u8,
        /// Where to damage or cut.
        arg: u8,
        /// The plain payload.
        body: Body,
    },
    /// The server sends a message. `flags` bit 0: binary; bit 1: through `send_owned`; bit 2: as the shared frame
    /// of `encode_server_message_compressed`, when the connection's messages are compressed each on its own.
    ServerMessage {
        /// See the variant's doc.
        flags: u8,
        /// The payload.
        body: Body,
    },
    /// The server starts the closing handshake; the target maps `code` onto one a server may send.
    ServerClose {
        /// The raw code.
        code: u16,
        /// The reason, read as lossy UTF-8.
        reason: Vec<u8>,
    },
}

const TAG_CLIENT_MESSAGE: u8 = 0;
const TAG_CLIENT_CLOSE: u8 = 1;
const TAG_RAW: u8 = 2;
const TAG_FRAME: u8 = 3;
const TAG_DEFLATED: u8 = 4;
const TAG_SERVER_MESSAGE: u8 = 5;
const TAG_SERVER_CLOSE: u8 = 6;
/// A second tag for client messages, so that random inputs hold more of them.
const TAG_CLIENT_MESSAGE_TOO: u8 = 7;
const TAGS: u8 = 8;

impl DeflateOp {
    /// Reads one operation (the grammar is in `encode`).
    pub fn read(r: &mut Reader<'_>) -> DeflateOp {
        match r.u8() % TAGS {
            TAG_CLIENT_MESSAGE | TAG_CLIENT_MESSAGE_TOO => DeflateOp::ClientMessage {
                flags: r.u8(),
                body: Body::read(r),
                cuts: r.short_bytes().to_vec(),
            },
            TAG_CLIENT_CLOSE => DeflateOp::ClientClose {
                code: r.u16(),
                reason: r.short_bytes().to_vec(),
            },
            TAG_RAW => DeflateOp::Raw(r.short_bytes().to_vec()),
            TAG_FRAME => DeflateOp::Frame {
                flags: r.u8(),
                opcode: r.u8(),
                payload: r.short_bytes().to_vec(),
            },
            TAG_DEFLATED => DeflateOp::Deflated {
                flags: r.u8(),
                arg: r.u8(),
                body: Body::read(r),
            },
            TAG_SERVER_MESSAGE => DeflateOp::ServerMessage {
                flags: r.u8(),
                body: Body::read(r),
            },
            _ => DeflateOp::ServerClose {
                code: r.u16(),
                reason: r.short_bytes().to_vec(),
            },
        }
    }

    /// Writes one operation; every byte string is at most 255 bytes.
    pub fn encode(&self, w: &mut Writer) {
        match self {
            DeflateOp::ClientMessage { flags, body, cuts } => {
                w.u8(TAG_CLIENT_MESSAGE);
                w.u8(*flags);
                body.encode(w);
                w.short_bytes(cuts);
            }
            DeflateOp::ClientClose { code, reason } => {
                w.u8(TAG_CLIENT_CLOSE);
                w.u16(*code);
                w.short_bytes(reason);
            }
            DeflateOp::Raw(bytes) => {
                w.u8(TAG_RAW);
                w.short_bytes(bytes);
            }
            DeflateOp::Frame {
                flags,
                opcode,
                payload,
            } => {
                w.u8(TAG_FRAME);
                w.u8(*flags);
                w.u8(*opcode);
                w.short_bytes(payload);
            }
            DeflateOp::Deflated { flags, arg, body } => {
                w.u8(TAG_DEFLATED);
                w.u8(*flags);
                w.u8(*arg);
                body.encode(w);
            }
            DeflateOp::ServerMessage { flags, body } => {
                w.u8(TAG_SERVER_MESSAGE);
                w.u8(*flags);
                body.encode(w);
            }
            DeflateOp::ServerClose { code, reason } => {
                w.u8(TAG_SERVER_CLOSE);
                w.u16(*code);
                w.short_bytes(reason);
            }
        }
    }

    /// True for the operations that put bytes into the client's stream that its `Connection` did not write.
    pub fn injects(&self) -> bool {
        matches!(
            self,
            DeflateOp::Raw(_) | DeflateOp::Frame { .. } | DeflateOp::Deflated { .. }
        )
    }
}

/// The whole `deflate_connection` input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeflateInput {
    /// The negotiation.
    pub negotiation: Negotiation,
    /// Chooses the message size limit (see `max_message_size`).
    pub limit: u8,
    /// 0: no fragment limit; otherwise the most frames a message may arrive in.
    pub fragment_limit: u8,
    /// How server-side reader A reads.
    pub reader_a: ReaderPlan,
    /// How server-side reader B reads.
    pub reader_b: ReaderPlan,
    /// What happens, in order.
    pub ops: Vec<DeflateOp>,
}

impl DeflateInput {
    /// Reads an input; every byte string is one.
    pub fn read(data: &[u8]) -> DeflateInput {
        let mut r = Reader::new(data);
        let negotiation = Negotiation {
            flags: r.u8(),
            windows: r.u8(),
            policy_windows: r.u8(),
        };
        let limit = r.u8();
        let fragment_limit = r.u8();
        let reader_a = ReaderPlan::read(&mut r);
        let reader_b = ReaderPlan::read(&mut r);
        let mut ops = Vec::new();
        while !r.is_empty() {
            ops.push(DeflateOp::read(&mut r));
        }
        DeflateInput {
            negotiation,
            limit,
            fragment_limit,
            reader_a,
            reader_b,
            ops,
        }
    }

    /// Writes an input that `read` turns back into `self`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(self.negotiation.flags);
        w.u8(self.negotiation.windows);
        w.u8(self.negotiation.policy_windows);
        w.u8(self.limit);
        w.u8(self.fragment_limit);
        self.reader_a.encode(&mut w);
        self.reader_b.encode(&mut w);
        for op in &self.ops {
            op.encode(&mut w);
        }
        w.out
    }

    /// The server's message size limit: mostly 64 KiB, sometimes 1 MiB, tiny, around `MIN_COMPRESSED_LEN`
    /// (256), or a few KiB.
    pub fn max_message_size(&self) -> usize {
        let high = usize::from(self.limit >> 3);
        match self.limit & 7 {
            0..=2 => 1 << 16,
            3 => 1 << 20,
            4 => high,
            5 => 240 + high,
            6 => 1000 + high * 64,
            _ => 4096,
        }
    }

    /// The fragment limit, if any.
    pub fn max_fragments(&self) -> Option<u32> {
        (self.fragment_limit != 0).then_some(u32::from(self.fragment_limit))
    }
}

impl<'a> Arbitrary<'a> for DeflateInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let data = u.bytes(u.len())?;
        Ok(DeflateInput::read(data))
    }

    fn arbitrary_take_rest(mut u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Self::arbitrary(&mut u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(data: &[u8]) -> Body {
        Body {
            repeat: 2,
            scale: 1,
            data: data.to_vec(),
        }
    }

    #[test]
    fn encode_then_read_is_identity() {
        let input = DeflateInput {
            negotiation: Negotiation {
                flags: 0x5B,
                windows: 0x31,
                policy_windows: 0x77,
            },
            limit: 0x2D,
            fragment_limit: 3,
            reader_a: ReaderPlan {
                reads: vec![1, 0, 0xF1],
                inflate: vec![0, 1, 0x80],
                frames: vec![2],
            },
            reader_b: ReaderPlan::default(),
            ops: vec![
                DeflateOp::ClientMessage {
                    flags: 3,
                    body: body(b"hello "),
                    cuts: vec![10, 200],
                },
                DeflateOp::ClientClose {
                    code: 1000,
                    reason: b"bye".to_vec(),
                },
                DeflateOp::Raw(vec![0xC1, 0x80]),
                DeflateOp::Frame {
                    flags: 0x09,
                    opcode: 0x1,
                    payload: vec![0xFF],
                },
                DeflateOp::Deflated {
                    flags: 0x94,
                    arg: 7,
                    body: body(&[0]),
                },
                DeflateOp::ServerMessage {
                    flags: 6,
                    body: body(b"{}"),
                },
                DeflateOp::ServerClose {
                    code: 1001,
                    reason: vec![],
                },
            ],
        };
        assert_eq!(DeflateInput::read(&input.encode()), input);
    }

    #[test]
    fn budgets_cover_none_zero_and_large() {
        assert_eq!(inflation_budget(0), usize::MAX);
        assert_eq!(inflation_budget(1), 0);
        assert_eq!(inflation_budget(0x3F), 62);
        assert_eq!(inflation_budget(0x40), 64);
        assert_eq!(inflation_budget(0xFF), 256 * 1024);
        let plan = ReaderPlan {
            reads: vec![],
            inflate: vec![2, 0],
            frames: vec![],
        };
        assert_eq!(plan.limits(0).inflated_bytes, 1);
        assert_eq!(plan.limits(1), FeedLimits::NONE);
        assert_eq!(ReaderPlan::default().limits(5), FeedLimits::NONE);
    }

    #[test]
    fn the_offer_names_what_the_flags_ask_for() {
        let offer = Negotiation {
            flags: 0x1F,
            windows: 0x52,
            policy_windows: 0,
        }
        .offer()
        .expect("an offer");
        assert_eq!(
            offer.to_string(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=13"
        );
        let none = Negotiation {
            flags: 0x80,
            windows: 0,
            policy_windows: 0,
        };
        assert_eq!(none.offer(), None);
    }
}
