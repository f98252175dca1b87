//! RFC 6455 section 7.4 status codes and the Close frame body (5.5.1).
//!
//! Owns [`CloseCode`]: which codes exist, which may appear on the wire, and which an endpoint may send of its own
//! accord; and the encoding and parsing of a Close payload. It does not decide when to close: that is
//! `connection`'s job.

use std::fmt;

use super::connection::Role;

/// A close status code (7.4). Any `u16` can be held; [`CloseCode::is_valid_on_wire`] and
/// [`CloseCode::is_sendable`] say where it may appear.
///
/// ```
/// use roomcast::protocol::{CloseCode, Role};
///
/// assert_eq!(CloseCode::GOING_AWAY.get(), 1001);
/// // 1005 and 1006 only ever report what happened; they are never put in a Close frame (7.4.1).
/// assert!(!CloseCode::NO_STATUS_RECEIVED.is_valid_on_wire());
/// // 1010 is a client's complaint about the server's extensions: a server may not send it.
/// assert!(CloseCode::MANDATORY_EXTENSION.is_sendable(Role::Client));
/// assert!(!CloseCode::MANDATORY_EXTENSION.is_sendable(Role::Server));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: normal closure (7.4.1).
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away, e.g. a server shutting down (7.4.1).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: protocol error (7.4.1).
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a type of data the endpoint cannot accept, e.g. binary on a text-only route (7.4.1).
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: reported when a Close frame carried no code; never sent (7.1.5, 7.4.1).
    pub const NO_STATUS_RECEIVED: CloseCode = CloseCode(1005);
    /// 1006: reported when the connection ended without a Close frame; never sent (7.1.5, 7.4.1).
    pub const ABNORMAL_CLOSURE: CloseCode = CloseCode(1006);
    /// 1007: data inconsistent with the message type, e.g. invalid UTF-8 in text (7.4.1).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message that violates the endpoint's policy (7.4.1).
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message too big to process (7.4.1).
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: a client ends because the server did not agree to an extension it needs; clients only (7.4.1).
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server met an unexpected condition (7.4.1).
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1013: try again later, e.g. the server is out of a shared budget (IANA registry, RFC 6455 11.7).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);

    /// The code with this number, whatever it is.
    pub const fn new(code: u16) -> CloseCode {
        CloseCode(code)
    }

    /// The number.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// True for a code that may appear in a Close frame (7.4.1, 7.4.2, and the IANA registry of 11.7, which
    /// added 1012-1014). 1004 is reserved, 1005, 1006 and 1015 are for reporting only, and 1016-2999 are
    /// unassigned: a Close carrying one of them is a protocol error.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// True for a code an endpoint in `role` may start a closing handshake with: any code valid on the wire,
    /// except that 1010 is a client's to send (7.4.1). Echoing a peer's valid code is always allowed (5.5.1).
    pub fn is_sendable(self, role: Role) -> bool {
        self.is_valid_on_wire() && !(role == Role::Server && self == CloseCode::MANDATORY_EXTENSION)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> u16 {
        code.0
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A parsed Close frame body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code, absent when the body was empty (then the code to report is 1005, 7.1.5).
    pub code: Option<CloseCode>,
    /// The UTF-8 reason, possibly empty. 5.5.1: a client must not show it to a person; it is for debugging.
    pub reason: String,
}

impl CloseFrame {
    /// The code to report for this frame: its own, or 1005 when it had none (7.1.5).
    pub fn reported_code(&self) -> CloseCode {
        self.code.unwrap_or(CloseCode::NO_STATUS_RECEIVED)
    }
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
///
/// ```
/// use roomcast::protocol::close::{parse_close_body, CloseBodyError};
/// use roomcast::protocol::CloseCode;
///
/// // 03 e8 is 1000, normal closure; the rest is the reason in UTF-8.
/// let frame = parse_close_body(&[0x03, 0xe8, b'b', b'y', b'e']).unwrap();
/// assert_eq!((frame.code, frame.reason.as_str()), (Some(CloseCode::NORMAL), "bye"));
/// // An empty body is allowed and reported as 1005 (7.1.5); one byte is too short for a code (5.5.1).
/// assert_eq!(parse_close_body(&[]).unwrap().reported_code(), CloseCode::NO_STATUS_RECEIVED);
/// assert_eq!(parse_close_body(&[0x03]), Err(CloseBodyError::Truncated));
/// // 1005 only ever reports what happened: a Close frame carrying it is a protocol error (7.4.1).
/// assert_eq!(parse_close_body(&[0x03, 0xed]), Err(CloseBodyError::InvalidCode(1005)));
/// ```
pub fn parse_close_body(body: &[u8]) -> Result<CloseFrame, CloseBodyError> {
    match body {
        [] => Ok(CloseFrame {
            code: None,
            reason: String::new(),
        }),
        [_] => Err(CloseBodyError::Truncated),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_valid_on_wire() {
                return Err(CloseBodyError::InvalidCode(code.0));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| CloseBodyError::InvalidReason)?;
            Ok(CloseFrame {
                code: Some(code),
                reason: reason.to_owned(),
            })
        }
    }
}

/// The longest reason that fits in a Close frame beside its code: 125 - 2 bytes (5.5, 5.5.1).
pub const MAX_REASON_BYTES: usize = super::frame::MAX_CONTROL_PAYLOAD - 2;

/// Appends a Close body with `code` and as much of `reason` as fits in a control frame (123 bytes), cut at a
/// char boundary so that the reason stays UTF-8 (5.5.1).
pub fn encode_close_body(code: CloseCode, reason: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&code.0.to_be_bytes());
    let mut end = reason.len().min(MAX_REASON_BYTES);
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
            assert!(CloseCode::new(code).is_valid_on_wire(), "{code}");
        }
    }

    #[test]
    fn reserved_and_unassigned_codes_are_refused() {
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode::new(code).is_valid_on_wire(), "{code}");
            assert!(!CloseCode::new(code).is_sendable(Role::Client), "{code}");
        }
    }

    #[test]
    fn a_server_must_not_send_1010() {
        assert!(!CloseCode::MANDATORY_EXTENSION.is_sendable(Role::Server));
        assert!(CloseCode::MANDATORY_EXTENSION.is_sendable(Role::Client));
        assert!(CloseCode::MANDATORY_EXTENSION.is_valid_on_wire());
    }

    #[test]
    fn an_empty_close_reports_1005() {
        let frame = parse_close_body(&[]).unwrap();
        assert_eq!(frame.reported_code(), CloseCode::NO_STATUS_RECEIVED);
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
        encode_close_body(CloseCode::GOING_AWAY, "bye", &mut body);
        assert_eq!(
            parse_close_body(&body),
            Ok(CloseFrame {
                code: Some(CloseCode::GOING_AWAY),
                reason: "bye".into()
            })
        );
    }

    #[test]
    fn long_reason_is_cut_to_123_bytes_at_a_char_boundary() {
        let mut body = Vec::new();
        encode_close_body(CloseCode::NORMAL, &"é".repeat(100), &mut body);
        assert_eq!(body.len(), 2 + 122, "61 two-byte chars fit in 123 bytes");
        assert!(std::str::from_utf8(&body[2..]).is_ok());
    }
}
