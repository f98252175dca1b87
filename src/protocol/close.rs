//! RFC 6455 section 7.4 status codes and the Close frame body (5.5.1).
//!
//! Owns which codes may appear on the wire, and the encoding and parsing of a Close payload. It does not decide
//! when to close: that is `connection`'s job.

use std::fmt;

/// 1000: normal closure (7.4.1).
pub const NORMAL: u16 = 1000;
/// 1001: the endpoint is going away, e.g. a server shutting down (7.4.1).
pub const GOING_AWAY: u16 = 1001;
/// 1002: protocol error (7.4.1).
pub const PROTOCOL_ERROR: u16 = 1002;
/// 1003: a type of data the endpoint cannot accept, e.g. binary on a text-only route (7.4.1).
pub const UNSUPPORTED_DATA: u16 = 1003;
/// 1007: data inconsistent with the message type, e.g. invalid UTF-8 in text (7.4.1).
pub const INVALID_PAYLOAD: u16 = 1007;
/// 1008: a message that violates the endpoint's policy (7.4.1).
pub const POLICY_VIOLATION: u16 = 1008;
/// 1009: a message too big to process (7.4.1).
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// 1011: the server met an unexpected condition (7.4.1).
pub const INTERNAL_ERROR: u16 = 1011;

/// True for a code an endpoint may send in a Close frame (7.4.1, 7.4.2, and the IANA registry of 11.7, which
/// added 1012-1014). 1004 is reserved, and 1005, 1006 and 1015 are for reporting only: they never go on the wire.
pub fn is_sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A parsed Close frame body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code, absent when the body was empty (then the code to report is 1005).
    pub code: Option<u16>,
    /// The UTF-8 reason, possibly empty.
    pub reason: String,
}

/// A Close body that breaks 5.5.1 or 7.4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseBodyError {
    /// A one-byte body: too short for a code (5.5.1). Fails with 1002.
    Truncated,
    /// A code no endpoint may send (7.4). Fails with 1002.
    InvalidCode(u16),
    /// The reason is not UTF-8 (5.5.1). Fails with 1007.
    InvalidReason,
}

impl fmt::Display for CloseBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseBodyError::Truncated => f.write_str("close frame with a one-byte body"),
            CloseBodyError::InvalidCode(code) => write!(f, "close frame with invalid code {code}"),
            CloseBodyError::InvalidReason => f.write_str("close reason is not UTF-8"),
        }
    }
}

impl std::error::Error for CloseBodyError {}

/// Parses a Close frame body (5.5.1): empty, or a 2-byte code followed by a UTF-8 reason.
pub fn parse_close_body(body: &[u8]) -> Result<CloseFrame, CloseBodyError> {
    match body {
        [] => Ok(CloseFrame {
            code: None,
            reason: String::new(),
        }),
        [_] => Err(CloseBodyError::Truncated),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_sendable(code) {
                return Err(CloseBodyError::InvalidCode(code));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| CloseBodyError::InvalidReason)?;
            Ok(CloseFrame {
                code: Some(code),
                reason: reason.to_owned(),
            })
        }
    }
}

/// Appends a Close body with `code` and as much of `reason` as fits in a control frame, cut at a char boundary.
pub fn encode_close_body(code: u16, reason: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&code.to_be_bytes());
    let mut end = reason.len().min(super::frame::MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&reason.as_bytes()[..end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_codes_are_accepted() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            assert!(is_sendable(code), "{code}");
        }
    }

    #[test]
    fn reserved_and_unassigned_codes_are_refused() {
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!is_sendable(code), "{code}");
        }
    }

    #[test]
    fn one_byte_body_is_truncated() {
        assert_eq!(parse_close_body(&[0x03]), Err(CloseBodyError::Truncated));
    }

    #[test]
    fn invalid_utf8_reason_is_refused() {
        assert_eq!(
            parse_close_body(&[0x03, 0xE8, 0xFF]),
            Err(CloseBodyError::InvalidReason)
        );
    }

    #[test]
    fn body_with_code_and_reason_parses() {
        let mut body = Vec::new();
        encode_close_body(1001, "bye", &mut body);
        assert_eq!(
            parse_close_body(&body),
            Ok(CloseFrame {
                code: Some(1001),
                reason: "bye".into()
            })
        );
    }

    #[test]
    fn long_reason_is_cut_to_fit_a_control_frame_at_a_char_boundary() {
        let mut body = Vec::new();
        encode_close_body(1000, &"é".repeat(100), &mut body);
        assert!(body.len() <= 125);
        assert!(std::str::from_utf8(&body[2..]).is_ok());
    }
}
