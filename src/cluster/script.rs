//! A Lua script that Redis runs: its source, its SHA1, and how a call is spelled and re-spelled.
//!
//! Owns the script's identity (Redis names a script by the SHA1 of its source, in lowercase hex) and the shapes of
//! `SCRIPT LOAD`, `EVALSHA` and `EVAL`. A call is sent as `EVALSHA`; the link keeps its keys and arguments until
//! the reply, and if Redis answers `NOSCRIPT` (it restarted, or someone ran `SCRIPT FLUSH`) the same call goes out
//! again as `EVAL` with the whole source, which also puts the script back in Redis's cache. This file must not
//! queue or write anything itself: `RedisLink::queue_script` does, and the handshake loads every script it is
//! given with `SCRIPT LOAD` before the first call.

use std::fmt;

use sha1::{Digest, Sha1};

use super::link::Reply;

/// A Lua script, named by the SHA1 of its source.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Script {
    source: &'static str,
    sha: [u8; 40],
}

impl Script {
    /// A script with this source (usually an `include_str!`). Hashes it once.
    pub fn new(source: &'static str) -> Script {
        let digest = Sha1::digest(source.as_bytes());
        let mut sha = [0u8; 40];
        for (pair, byte) in sha.chunks_exact_mut(2).zip(digest.iter()) {
            pair.copy_from_slice(&hex_pair(*byte));
        }
        Script { source, sha }
    }

    /// The Lua source.
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// The SHA1 of the source, 40 lowercase hex digits: the name `EVALSHA` and `SCRIPT LOAD` use.
    pub fn sha(&self) -> &str {
        // The digits are ASCII by construction.
        std::str::from_utf8(&self.sha).unwrap_or_default()
    }
}

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Script({})", self.sha())
    }
}

fn hex_pair(byte: u8) -> [u8; 2] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    [
        DIGITS[usize::from(byte >> 4)],
        DIGITS[usize::from(byte & 0x0f)],
    ]
}

/// True if `reply` is Redis saying it does not know the script (`-NOSCRIPT No matching script...`).
pub fn is_noscript(reply: &Reply) -> bool {
    reply
        .error()
        .is_some_and(|message| message.starts_with("NOSCRIPT"))
}

/// One script call kept until its reply: enough to send it again as `EVAL`.
#[derive(Clone, Debug)]
pub(super) struct ScriptCall {
    script: Script,
    /// How many of `words` are keys (the rest are arguments).
    keys: usize,
    /// The keys and arguments, end to end.
    bytes: Vec<u8>,
    /// Where each key or argument ends in `bytes`.
    ends: Vec<usize>,
}

impl ScriptCall {
    /// Keeps a copy of one call's keys and arguments.
    pub(super) fn new(script: Script, keys: &[&[u8]], args: &[&[u8]]) -> ScriptCall {
        let words = keys.iter().chain(args);
        let mut bytes = Vec::with_capacity(words.clone().map(|w| w.len()).sum());
        let mut ends = Vec::with_capacity(keys.len() + args.len());
        for word in words {
            bytes.extend_from_slice(word);
            ends.push(bytes.len());
        }
        ScriptCall {
            script,
            keys: keys.len(),
            bytes,
            ends,
        }
    }

    /// The script called.
    pub(super) fn script(&self) -> Script {
        self.script
    }

    /// How many of the words are keys.
    pub(super) fn key_count(&self) -> usize {
        self.keys
    }

    /// The keys, then the arguments.
    pub(super) fn words(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(start, end)| self.bytes.get(start..end).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis_protocol::resp2::types::OwnedFrame;

    #[test]
    fn the_sha_is_the_sha1_of_the_source_in_lowercase_hex() {
        // `printf 'return 1' | sha1sum`
        let script = Script::new("return 1");
        assert_eq!(script.sha(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }

    #[test]
    fn noscript_errors_are_recognised_and_others_are_not() {
        let noscript = Reply::from(OwnedFrame::Error(
            "NOSCRIPT No matching script. Please use EVAL.".into(),
        ));
        assert!(is_noscript(&noscript));
        assert!(!is_noscript(&Reply::from(OwnedFrame::Error(
            "ERR x".into()
        ))));
        assert!(!is_noscript(&Reply::from(OwnedFrame::BulkString(
            b"NOSCRIPT".to_vec()
        ))));
    }

    #[test]
    fn a_kept_call_gives_back_its_keys_then_its_arguments() {
        let call = ScriptCall::new(Script::new("return 1"), &[b"k1", b""], &[b"a"]);
        let words: Vec<&[u8]> = call.words().collect();
        assert_eq!(words, [&b"k1"[..], b"", b"a"]);
        assert_eq!(call.key_count(), 2);
    }
}
