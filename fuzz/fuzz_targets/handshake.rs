//! Fuzz target `handshake`: `protocol::handshake::parse_request_head` and `validate_upgrade` on arbitrary
//! request bytes.
//!
//! Input: `[flags][n][plan][request]` (see `roomcast_fuzz::raw`); flags bit 7 picks the server's 8 KiB head
//! limit, otherwise the limit is `16 + 8 * flags`, so the too-large paths are reachable. The request is read the
//! way a server reads it, a growing buffer parsed after every read, and also parsed all at once. Asserts:
//! - nothing panics, and the outcome is a head (then an upgrade or a refusal), a head error, or "need more";
//! - the chunking does not change the outcome;
//! - a head is no longer than the limit nor the buffer, ends with its blank line, and parses again from its
//!   own bytes to the same head;
//! - `validate_upgrade` agrees with this target's own reading of RFC 6455 4.2.1 on every head, and when it
//!   accepts, the key is base64 for 16 bytes and the accept value is base64(SHA-1(key + GUID)) computed here.

#![no_main]

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use roomcast::protocol::handshake::{
    parse_request_head, validate_upgrade, HeadError, RequestHead, UpgradeError,
};
use roomcast_fuzz::chunks::Chunker;
use roomcast_fuzz::raw::RawInput;
use sha1::{Digest, Sha1};

/// The GUID of RFC 6455 4.2.2, spelled out here rather than taken from the crate under test.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// How reading a request ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The bytes end inside the head.
    NeedMore,
    /// The head could not be read.
    Refused(HeadError),
    /// A head, and what `validate_upgrade` made of it.
    Head(RequestHead, Result<String, UpgradeError>),
}

fuzz_target!(|data: &[u8]| {
    let input = RawInput::parse(data);
    let max_len = if input.flags & 0x80 != 0 {
        8192
    } else {
        16 + 8 * usize::from(input.flags)
    };
    let whole = outcome(
        input.stream,
        parse_request_head(input.stream, max_len),
        max_len,
    );
    let mut buf = Vec::new();
    let mut chunked = Outcome::NeedMore;
    for piece in Chunker::new(input.plan).split(input.stream) {
        buf.extend_from_slice(piece);
        match parse_request_head(&buf, max_len) {
            Ok(None) => {}
            parsed => {
                chunked = outcome(&buf, parsed, max_len);
                break;
            }
        }
    }
    assert_eq!(chunked, whole, "the chunking changed the outcome");
});

fn outcome(buf: &[u8], parsed: Result<Option<RequestHead>, HeadError>, max_len: usize) -> Outcome {
    let head = match parsed {
        Ok(Some(head)) => head,
        Ok(None) => {
            assert!(buf.len() <= max_len, "need more past the limit");
            return Outcome::NeedMore;
        }
        Err(e) => return Outcome::Refused(e),
    };
    assert!(
        head.len <= max_len && head.len <= buf.len(),
        "head length {}",
        head.len
    );
    assert!(
        buf[..head.len].ends_with(b"\n"),
        "a head ends with its blank line"
    );
    assert_eq!(
        parse_request_head(&buf[..head.len], max_len),
        Ok(Some(head.clone())),
        "the head's own bytes parse to the same head"
    );
    let upgrade = validate_upgrade(&head);
    assert_eq!(
        upgrade,
        expected_upgrade(&head),
        "validate_upgrade on {head:?}"
    );
    Outcome::Head(head, upgrade)
}

/// The values of every header named `name`, case-insensitively, trimmed.
fn values<'a>(head: &'a RequestHead, name: &'a str) -> Vec<&'a [u8]> {
    head.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.trim_ascii())
        .collect()
}

/// True if some value of `name` is a comma-separated list with `token` in it, case-insensitively.
fn has_token(head: &RequestHead, name: &str, token: &str) -> bool {
    values(head, name).iter().any(|v| {
        v.split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// True if every value of `name` is tabs, spaces and visible ASCII: no obs-text, no control bytes.
fn all_ascii_text(head: &RequestHead, name: &str) -> bool {
    values(head, name).iter().all(|v| {
        v.iter()
            .all(|&b| b == b'\t' || b == b' ' || b.is_ascii_graphic())
    })
}

/// RFC 6455 4.2.1, checked in the order `UpgradeError` lists the requirements.
fn expected_upgrade(head: &RequestHead) -> Result<String, UpgradeError> {
    if head.method != "GET" {
        return Err(UpgradeError::NotGet);
    }
    if head.minor_version < 1 {
        return Err(UpgradeError::OldHttpVersion);
    }
    let [host] = values(head, "host")[..] else {
        return Err(UpgradeError::MissingHost);
    };
    if host.is_empty() {
        return Err(UpgradeError::MissingHost);
    }
    if !host.iter().all(u8::is_ascii_graphic) {
        return Err(UpgradeError::InvalidHost);
    }
    if !all_ascii_text(head, "upgrade") || !has_token(head, "upgrade", "websocket") {
        return Err(UpgradeError::MissingUpgrade);
    }
    if !all_ascii_text(head, "connection") || !has_token(head, "connection", "upgrade") {
        return Err(UpgradeError::MissingConnection);
    }
    let versions = values(head, "sec-websocket-version");
    if let [version] = versions[..] {
        // RFC 6455 4.3: 0 to 255 in decimal, without leading zeros.
        let number = std::str::from_utf8(version)
            .ok()
            .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
            .filter(|v| *v == "0" || !v.starts_with('0'))
            .and_then(|v| v.parse::<u32>().ok());
        if !number.is_some_and(|n| n <= 255) {
            return Err(UpgradeError::MalformedVersion);
        }
    }
    if versions.as_slice() != [b"13"] {
        return Err(UpgradeError::UnsupportedVersion);
    }
    let [key] = values(head, "sec-websocket-key")[..] else {
        return Err(UpgradeError::InvalidKey);
    };
    match BASE64.decode(key) {
        Ok(nonce) if nonce.len() == 16 => {}
        _ => return Err(UpgradeError::InvalidKey),
    }
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(GUID);
    let accept = BASE64.encode(sha1.finalize());
    assert_eq!(accept.len(), 28);
    Ok(accept)
}
