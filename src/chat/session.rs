//! Unguessable ids derived from the server's secret: session tokens and room epochs.
//!
//! Owns the derivation, SHA-1 over the secret, a counter and the caller's wall-clock time, and the comparison of
//! tokens. It must not read a clock or any randomness source itself: the secret is the only entropy. The time is
//! mixed in so that a secret reused across restarts still yields fresh epochs (a repeated epoch would make a
//! client skip messages it never saw).

use std::fmt::Write as _;
use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// Hands out a new id on every call, never the same one twice for one secret.
pub(super) struct IdSource {
    secret: [u8; 32],
    counter: u64,
}

impl IdSource {
    /// A source seeded with `secret`.
    pub(super) fn new(secret: [u8; 32]) -> Self {
        IdSource { secret, counter: 0 }
    }

    /// SHA-1 of secret || counter || unix_ms, then the counter moves on.
    fn next_digest(&mut self, unix_ms: u64) -> impl AsRef<[u8]> {
        let mut hasher = Sha1::new();
        hasher.update(self.secret);
        hasher.update(self.counter.to_be_bytes());
        hasher.update(unix_ms.to_be_bytes());
        self.counter = self.counter.wrapping_add(1);
        hasher.finalize()
    }

    /// A session token: 160 bits, base64url without padding (27 characters).
    pub(super) fn session_token(&mut self, unix_ms: u64) -> Rc<str> {
        Rc::from(URL_SAFE_NO_PAD.encode(self.next_digest(unix_ms)))
    }

    /// A room epoch: 64 bits as 16 lowercase hex digits.
    pub(super) fn epoch(&mut self, unix_ms: u64) -> Rc<str> {
        let digest = self.next_digest(unix_ms);
        let mut hex = String::with_capacity(16);
        for byte in digest.as_ref().iter().take(8) {
            let _ = write!(hex, "{byte:02x}");
        }
        Rc::from(hex)
    }
}

/// Whether a token a client showed equals the one held, in time independent of where they differ.
pub(super) fn same_token(held: &str, shown: &str) -> bool {
    let (held, shown) = (held.as_bytes(), shown.as_bytes());
    if held.len() != shown.len() {
        return false;
    }
    held.iter()
        .zip(shown)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_tokens_are_27_base64url_chars_and_distinct() {
        let mut ids = IdSource::new([7; 32]);
        let a = ids.session_token(1);
        let b = ids.session_token(1);
        assert_eq!(a.len(), 27);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_ne!(a, b);
    }

    #[test]
    fn epochs_are_16_hex_digits_and_distinct() {
        let mut ids = IdSource::new([7; 32]);
        let a = ids.epoch(1);
        let b = ids.epoch(1);
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn ids_depend_on_the_secret() {
        let a = IdSource::new([1; 32]).session_token(5);
        let b = IdSource::new([2; 32]).session_token(5);
        assert_ne!(a, b);
    }

    #[test]
    fn same_secret_at_another_time_gives_another_epoch() {
        let a = IdSource::new([1; 32]).epoch(1_000);
        let b = IdSource::new([1; 32]).epoch(2_000);
        assert_ne!(a, b);
    }

    #[test]
    fn same_token_compares_whole_strings() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
        assert!(!same_token("abc", ""));
    }
}
