//! Incremental UTF-8 validation for text messages that arrive in pieces (RFC 6455 5.6 and 8.1).
//!
//! Owns only the validation state between pieces: at most three bytes of a code point cut by a frame or read
//! boundary. It fails at the first byte that can no longer begin or continue valid UTF-8, so a connection can be
//! failed fast (1007) without waiting for the rest of the message. The work is done by `simdutf8`,
//! whose `compat` API reports errors exactly as `std::str::from_utf8` does (`valid_up_to`, `error_len`), at SIMD speed.

use std::fmt;

/// The text was not valid UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidUtf8;

impl fmt::Display for InvalidUtf8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid UTF-8 in text")
    }
}

impl std::error::Error for InvalidUtf8 {}

/// Validates a byte stream fed in arbitrary pieces.
#[derive(Clone, Debug, Default)]
pub struct Utf8Validator {
    /// The start of a code point whose remaining bytes have not arrived yet.
    partial: [u8; 4],
    /// How many bytes of `partial` are held (at most 3): a `u8` keeps the validator, and so every message being
    /// assembled, small.
    partial_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next piece. Errors as soon as the stream so far cannot be the prefix of valid UTF-8.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), InvalidUtf8> {
        if self.partial_len > 0 {
            let held = usize::from(self.partial_len);
            let needed = sequence_len(self.partial[0]);
            let take = (needed - held).min(bytes.len());
            self.partial[held..held + take].copy_from_slice(&bytes[..take]);
            self.partial_len += take as u8;
            bytes = &bytes[take..];
            match simdutf8::compat::from_utf8(&self.partial[..held + take]) {
                Ok(_) => self.partial_len = 0,
                Err(e) if e.error_len().is_none() => return Ok(()),
                Err(_) => return Err(InvalidUtf8),
            }
        }
        match simdutf8::compat::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                // The stream ends inside a code point whose bytes so far are valid: keep them for the next piece.
                let tail = &bytes[e.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Ends the stream: an unfinished code point at the end is invalid.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.partial_len == 0;
        self.partial_len = 0;
        if complete {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }
}

/// How many bytes the code point starting with `lead` has. Only called on a lead byte that `from_utf8` accepted
/// as the valid start of an unfinished sequence, so it is one of C2..=F4.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xF0..=0xF4 => 4,
        0xE0..=0xEF => 3,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate_in_pieces(bytes: &[u8], piece: usize) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        for chunk in bytes.chunks(piece.max(1)) {
            v.feed(chunk)?;
        }
        v.finish()
    }

    #[test]
    fn accepts_multibyte_text_split_at_every_byte() {
        let text = "κόσμε 𝄞 héllo ✓";
        for piece in 1..8 {
            assert_eq!(validate_in_pieces(text.as_bytes(), piece), Ok(()));
        }
    }

    #[test]
    fn rejects_invalid_byte_before_the_message_ends() {
        // Autobahn 6.4.1: "κόσμε" then 0xF4 0x90 (above U+10FFFF) must fail when those bytes arrive.
        let mut v = Utf8Validator::new();
        v.feed("κόσμε".as_bytes()).unwrap();
        assert_eq!(v.feed(&[0xF4]), Ok(()));
        assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8));
    }

    #[test]
    fn rejects_truncated_code_point_at_finish() {
        let mut v = Utf8Validator::new();
        v.feed(&[0xE2, 0x9C]).unwrap();
        assert_eq!(v.finish(), Err(InvalidUtf8));
    }

    #[test]
    fn rejects_surrogates_and_overlongs() {
        for bad in [
            &[0xED, 0xA0, 0x80][..],
            &[0xC0, 0xAF],
            &[0xE0, 0x80, 0xAF],
            &[0xFF],
        ] {
            assert_eq!(validate_in_pieces(bad, 1), Err(InvalidUtf8), "{bad:x?}");
            assert_eq!(validate_in_pieces(bad, 4), Err(InvalidUtf8), "{bad:x?}");
        }
    }

    #[test]
    fn agrees_with_std_on_all_two_byte_inputs() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let bytes = [a, b];
                let expected = std::str::from_utf8(&bytes).is_ok();
                assert_eq!(
                    validate_in_pieces(&bytes, 1).is_ok(),
                    expected,
                    "{bytes:x?}"
                );
            }
        }
    }
}
