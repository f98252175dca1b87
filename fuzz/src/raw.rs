//! The input layout of the byte-stream targets (`frame_parser`, `handshake`, `utf8`).
//!
//! `[flags][n][plan: n % 32 bytes][stream...]`: one byte of target-specific flags, a chunking plan (see
//! `chunks`), and the bytes under test. Keeping the plan in front leaves the stream itself free for the
//! fuzzer's dictionary and splicing.

use crate::bytes::{Reader, Writer};

/// The longest chunking plan a raw input carries.
pub const MAX_PLAN: usize = 31;

/// A decoded raw input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawInput<'a> {
    /// Target-specific flags.
    pub flags: u8,
    /// The chunking plan.
    pub plan: &'a [u8],
    /// The bytes under test.
    pub stream: &'a [u8],
}

impl<'a> RawInput<'a> {
    /// Reads the layout; any byte string is a valid input.
    pub fn parse(data: &'a [u8]) -> Self {
        let mut r = Reader::new(data);
        let flags = r.u8();
        let plan_len = usize::from(r.u8()) % (MAX_PLAN + 1);
        let plan = r.bytes(plan_len);
        RawInput {
            flags,
            plan,
            stream: r.rest(),
        }
    }

    /// Writes the layout; `plan` must be at most `MAX_PLAN` bytes.
    pub fn encode(flags: u8, plan: &[u8], stream: &[u8]) -> Vec<u8> {
        assert!(plan.len() <= MAX_PLAN);
        let mut w = Writer::new();
        w.u8(flags);
        w.short_bytes(plan);
        w.bytes(stream);
        w.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_parse_is_identity() {
        let bytes = RawInput::encode(0x81, &[1, 2, 0xF3], b"GET / HTTP/1.1\r\n");
        assert_eq!(
            RawInput::parse(&bytes),
            RawInput {
                flags: 0x81,
                plan: &[1, 2, 0xF3],
                stream: b"GET / HTTP/1.1\r\n",
            }
        );
    }

    #[test]
    fn short_inputs_still_parse() {
        assert_eq!(RawInput::parse(&[]).stream, b"");
        assert_eq!(RawInput::parse(&[1, 200, 5]).plan, &[5]);
    }
}
