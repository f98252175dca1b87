//! The `extensions` target's input: a server policy and the lines of a `Sec-WebSocket-Extensions` header.
//!
//! `[flags][windows][line 0x0A line 0x0A ...]`. Flags bit 0 makes the policy's `server_context` `Forbid`, bit 1 its
//! `client_context`; the low nibble of `windows` is the policy's `server_max_window_bits`, the high nibble its
//! `client_max_window_bits` (any value, so the clamping is exercised too). Lines are split at each 0x0A, so a
//! header of N lines costs N-1 separators; the lines themselves may hold any other byte.

use crate::bytes::{Reader, Writer};

/// A decoded `extensions` input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtensionsInput<'a> {
    /// Policy bits.
    pub flags: u8,
    /// The policy's two windows, one per nibble.
    pub windows: u8,
    /// The header lines, in order (always at least one, possibly empty).
    pub lines: Vec<&'a [u8]>,
}

impl<'a> ExtensionsInput<'a> {
    /// Reads the layout; any byte string is a valid input.
    pub fn parse(data: &'a [u8]) -> Self {
        let mut r = Reader::new(data);
        let flags = r.u8();
        let windows = r.u8();
        let lines = r.rest().split(|&b| b == b'\n').collect();
        ExtensionsInput {
            flags,
            windows,
            lines,
        }
    }

    /// Writes the layout; no line may contain 0x0A, and there must be at least one.
    pub fn encode(flags: u8, windows: u8, lines: &[&[u8]]) -> Vec<u8> {
        assert!(!lines.is_empty() && lines.iter().all(|l| !l.contains(&b'\n')));
        let mut w = Writer::new();
        w.u8(flags);
        w.u8(windows);
        w.bytes(&lines.join(&b'\n'));
        w.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_parse_is_identity() {
        let lines: [&[u8]; 3] = [b"permessage-deflate; client_max_window_bits", b"", b"x\xff"];
        let bytes = ExtensionsInput::encode(3, 0xF9, &lines);
        assert_eq!(
            ExtensionsInput::parse(&bytes),
            ExtensionsInput {
                flags: 3,
                windows: 0xF9,
                lines: lines.to_vec(),
            }
        );
    }

    #[test]
    fn short_inputs_still_parse() {
        assert_eq!(ExtensionsInput::parse(&[]).lines, vec![&b""[..]]);
    }
}
