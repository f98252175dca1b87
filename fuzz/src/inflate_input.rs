//! The `inflate` target's input: decompressor settings, a chunking plan, and either one raw compressed message or
//! a sequence of plain messages to compress, damage and inflate.
//!
//! `[flags][limit: u16][budget][n][plan: n % 32 bytes][body]`.
//! - flags bit 0: the body is messages (structured) rather than one raw compressed payload;
//!   bit 1: no context takeover in both directions; bits 2-4: the compressor's window, 9 + value % 7.
//! - limit: the decompressor's message limit is `limit * 16` bytes (0 to about 1 MiB).
//! - budget: 0 is no output budget, otherwise each call may append `budget * 64` bytes.
//! - plan: how each compressed payload is cut into `feed` calls (see `chunks`).
//! - body, structured: messages of `[op][arg][repeat][len][len bytes]`, whose plain payload is the bytes repeated
//!   `repeat + 1` times. `op % 4`: 0 compress, 1 compress then flip one byte, 2 compress then cut it short,
//!   3 `compress_if_smaller`. `op` bit 2 (with ops 0-2): compress with flate2 directly, ending in a final block
//!   (BFINAL = 1, RFC 7692 7.2.3.4) instead of a sync flush. `arg` picks where to flip or cut, and the flip's
//!   XOR mask.

use crate::bytes::{Reader, Writer};

/// The longest chunking plan an input carries.
pub const MAX_PLAN: usize = 31;

/// The most messages one input holds.
pub const MAX_MESSAGES: usize = 16;

/// What happens to one plain message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Damage {
    /// Nothing: it must inflate back exactly (or be too big).
    None,
    /// One byte flipped.
    Flip,
    /// Cut short.
    Truncate,
}

/// One message of a structured input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageOp<'a> {
    /// The raw op byte.
    pub op: u8,
    /// Where to flip or cut.
    pub arg: u8,
    /// The plain payload is `data` repeated `repeat + 1` times.
    pub repeat: u8,
    /// The bytes to repeat.
    pub data: &'a [u8],
}

impl MessageOp<'_> {
    /// The damage the op asks for.
    pub fn damage(&self) -> Damage {
        match self.op % 4 {
            1 => Damage::Flip,
            2 => Damage::Truncate,
            _ => Damage::None,
        }
    }

    /// True when the message goes through `compress_if_smaller`.
    pub fn only_if_smaller(&self) -> bool {
        self.op % 4 == 3
    }

    /// True when flate2 compresses it with a final block instead of our compressor.
    pub fn final_block(&self) -> bool {
        self.op % 4 != 3 && self.op & 4 != 0
    }

    /// The plain payload.
    pub fn plain(&self) -> Vec<u8> {
        self.data.repeat(usize::from(self.repeat) + 1)
    }
}

/// A decoded `inflate` input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InflateInput<'a> {
    /// See the module doc.
    pub flags: u8,
    /// The message limit, in units of 16 bytes.
    pub limit: u16,
    /// The per-call output budget, in units of 64 bytes; 0 for none.
    pub budget: u8,
    /// The chunking plan.
    pub plan: &'a [u8],
    /// Structured inputs: the messages. Raw inputs: empty.
    pub messages: Vec<MessageOp<'a>>,
    /// Raw inputs: the compressed payload. Structured inputs: empty.
    pub raw: &'a [u8],
}

impl<'a> InflateInput<'a> {
    /// True for a structured input.
    pub fn structured(&self) -> bool {
        self.flags & 1 != 0
    }

    /// No context takeover, in both directions.
    pub fn no_context_takeover(&self) -> bool {
        self.flags & 2 != 0
    }

    /// The compressor's window bits, 9..=15.
    pub fn window_bits(&self) -> u8 {
        9 + (self.flags >> 2 & 7) % 7
    }

    /// The decompressor's message limit in bytes.
    pub fn limit_bytes(&self) -> usize {
        usize::from(self.limit) * 16
    }

    /// The per-call output budget in bytes.
    pub fn budget_bytes(&self) -> usize {
        match self.budget {
            0 => usize::MAX,
            b => usize::from(b) * 64,
        }
    }

    /// Reads the layout; any byte string is a valid input.
    pub fn parse(data: &'a [u8]) -> Self {
        let mut r = Reader::new(data);
        let flags = r.u8();
        let limit = r.u16();
        let budget = r.u8();
        let plan_len = usize::from(r.u8()) % (MAX_PLAN + 1);
        let plan = r.bytes(plan_len);
        let mut messages = Vec::new();
        let mut raw: &[u8] = &[];
        if flags & 1 != 0 {
            while !r.is_empty() && messages.len() < MAX_MESSAGES {
                let op = r.u8();
                let arg = r.u8();
                let repeat = r.u8();
                let data = r.short_bytes();
                messages.push(MessageOp {
                    op,
                    arg,
                    repeat,
                    data,
                });
            }
        } else {
            raw = r.rest();
        }
        InflateInput {
            flags,
            limit,
            budget,
            plan,
            messages,
            raw,
        }
    }

    /// Writes the layout: `raw` for a raw input (flags bit 0 clear), `messages` for a structured one.
    pub fn encode(
        flags: u8,
        limit: u16,
        budget: u8,
        plan: &[u8],
        messages: &[MessageOp<'_>],
        raw: &[u8],
    ) -> Vec<u8> {
        assert!(plan.len() <= MAX_PLAN && messages.len() <= MAX_MESSAGES);
        let mut w = Writer::new();
        w.u8(flags);
        w.u16(limit);
        w.u8(budget);
        w.short_bytes(plan);
        if flags & 1 != 0 {
            assert!(raw.is_empty());
            for m in messages {
                w.u8(m.op);
                w.u8(m.arg);
                w.u8(m.repeat);
                w.short_bytes(m.data);
            }
        } else {
            assert!(messages.is_empty());
            w.bytes(raw);
        }
        w.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_encode_then_parse_is_identity() {
        let messages = vec![
            MessageOp {
                op: 0,
                arg: 0,
                repeat: 3,
                data: b"hello ",
            },
            MessageOp {
                op: 5,
                arg: 77,
                repeat: 0,
                data: b"",
            },
        ];
        let bytes = InflateInput::encode(0x09, 300, 2, &[1, 0xF0], &messages, b"");
        let input = InflateInput::parse(&bytes);
        assert_eq!(input.messages, messages);
        assert_eq!((input.flags, input.limit, input.budget), (0x09, 300, 2));
        assert_eq!(input.plan, &[1, 0xF0]);
        assert!(input.structured() && !input.no_context_takeover());
        assert_eq!(input.window_bits(), 11);
        assert_eq!(input.messages[0].plain(), b"hello hello hello hello ");
        assert_eq!(input.messages[1].damage(), Damage::Flip);
        assert!(input.messages[1].final_block());
    }

    #[test]
    fn raw_encode_then_parse_is_identity() {
        let bytes = InflateInput::encode(0x02, 1, 0, &[], &[], &[0xf2, 0x48]);
        let input = InflateInput::parse(&bytes);
        assert_eq!(input.raw, &[0xf2, 0x48]);
        assert_eq!(input.budget_bytes(), usize::MAX);
        assert_eq!(input.limit_bytes(), 16);
    }

    #[test]
    fn short_inputs_still_parse() {
        assert_eq!(InflateInput::parse(&[]).raw, b"");
        assert_eq!(InflateInput::parse(&[1]).messages, vec![]);
    }
}
