//! Client frames judged against the protocol's rules: one [`Request`] with checked fields, or the error to send.
//!
//! Owns the field rules of `docs/protocol.md` (which fields each type needs, their types, lengths counted in
//! Unicode scalar values, no control characters in names). It must not look at chat state: whether the sender has
//! joined, whether a name is free or a user online is for the handlers.

use std::borrow::Cow;

use super::names::{self, Name, NameError};
use super::wire::{ErrorCode, Frame, Loose, SinceField};
use super::Dialect;

/// Longest `userId` (and `to`), in Unicode scalar values.
pub(super) const MAX_USER_CHARS: usize = 32;
/// Longest `room`, in Unicode scalar values.
pub(super) const MAX_ROOM_CHARS: usize = 64;

/// A frame that cannot be handled: the error code and a human-readable message for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Rejection {
    pub(super) code: ErrorCode,
    pub(super) message: Cow<'static, str>,
    /// V2 when the frame was a `join` announcing protocol version 2 (or later) in a valid `v`, so that the error
    /// can be sent in the V2 form even before the client has joined.
    pub(super) dialect: Dialect,
}

impl Rejection {
    const fn new(code: ErrorCode, message: &'static str) -> Self {
        Rejection {
            code,
            message: Cow::Borrowed(message),
            dialect: Dialect::V1,
        }
    }
}

/// The `since` of a join: the last chat message the client saw.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Since<'a> {
    pub(super) epoch: Cow<'a, str>,
    pub(super) seq: u64,
}

/// A checked `join`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct JoinRequest<'a> {
    /// The name, normalised, with its key (`names.rs`).
    pub(super) user: Name,
    pub(super) room: Cow<'a, str>,
    /// V2 when the client announced protocol version 2 (or later).
    pub(super) dialect: Dialect,
    pub(super) session: Option<Cow<'a, str>>,
    pub(super) since: Option<Since<'a>>,
    /// A connection token (a JWT), when the server requires them: who the joiner is, and where it may go.
    pub(super) token: Option<Cow<'a, str>>,
}

impl JoinRequest<'_> {
    /// The same request owning its text, to be kept while the cluster engine is asked for the name.
    pub(super) fn into_owned(self) -> JoinRequest<'static> {
        JoinRequest {
            user: self.user,
            room: Cow::Owned(self.room.into_owned()),
            dialect: self.dialect,
            session: self.session.map(|s| Cow::Owned(s.into_owned())),
            since: self.since.map(|since| Since {
                epoch: Cow::Owned(since.epoch.into_owned()),
                seq: since.seq,
            }),
            token: self.token.map(|t| Cow::Owned(t.into_owned())),
        }
    }
}

/// A client frame whose fields are all valid.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Request<'a> {
    Join(JoinRequest<'a>),
    Chat {
        content: Cow<'a, str>,
    },
    Dm {
        to: Name,
        content: Cow<'a, str>,
    },
    Leave,
    Ping,
    /// A new connection token for the same `sub`, which extends the connection past the old one's `exp`.
    Refresh {
        token: Cow<'a, str>,
    },
}

/// Which field a name came in, for the error message.
#[derive(Clone, Copy)]
enum NameField {
    UserId,
    To,
    Room,
}

impl NameField {
    fn as_str(self) -> &'static str {
        match self {
            NameField::UserId => "userId",
            NameField::To => "to",
            NameField::Room => "room",
        }
    }

    fn max_chars(self) -> usize {
        match self {
            NameField::UserId | NameField::To => MAX_USER_CHARS,
            NameField::Room => MAX_ROOM_CHARS,
        }
    }

    /// The rejection for a field that is missing or not a string.
    fn not_a_string(self) -> Rejection {
        Rejection {
            code: ErrorCode::InvalidField,
            message: Cow::Owned(format!("\"{}\" must be a string", self.as_str())),
            dialect: Dialect::V1,
        }
    }

    /// The rejection for a string the name rules refuse (`names.rs`), saying why.
    fn refused(self, error: NameError) -> Rejection {
        let code = match error {
            NameError::TooLong { .. } => ErrorCode::TooLong,
            NameError::Reserved => ErrorCode::NameTaken,
            _ => ErrorCode::InvalidField,
        };
        Rejection {
            code,
            message: Cow::Owned(format!("\"{}\": {error}", self.as_str())),
            dialect: Dialect::V1,
        }
    }
}

const NOT_AN_OBJECT: Rejection =
    Rejection::new(ErrorCode::InvalidJson, "the frame is not a JSON object");
const UNKNOWN_TYPE: Rejection = Rejection::new(
    ErrorCode::UnknownType,
    "\"type\" must be one of join, chat, dm, leave, ping, refresh",
);
const BAD_CONTENT: Rejection = Rejection::new(
    ErrorCode::InvalidField,
    "\"content\" must be a non-empty string",
);
const LONG_CONTENT: Rejection =
    Rejection::new(ErrorCode::TooLong, "\"content\" is over the length limit");
const BAD_V: Rejection = Rejection::new(
    ErrorCode::InvalidField,
    "\"v\" must be a non-negative integer",
);
const BAD_SESSION: Rejection =
    Rejection::new(ErrorCode::InvalidField, "\"session\" must be a string");
const BAD_TOKEN: Rejection = Rejection::new(ErrorCode::InvalidField, "\"token\" must be a string");
const BAD_SINCE: Rejection = Rejection::new(
    ErrorCode::InvalidField,
    "\"since\" must be {\"epoch\": string, \"seq\": non-negative integer}",
);

/// Judge one text frame. `max_content_chars` bounds `content`.
pub(super) fn parse(text: &str, max_content_chars: usize) -> Result<Request<'_>, Rejection> {
    let frame = Frame::decode(text).ok_or(NOT_AN_OBJECT)?;
    let Some(Loose::Str(kind)) = &frame.kind else {
        return Err(UNKNOWN_TYPE);
    };
    match kind.as_ref() {
        "join" => join(frame).map(Request::Join),
        "chat" => Ok(Request::Chat {
            content: content(frame.content, max_content_chars)?,
        }),
        "dm" => {
            let to = user_name(frame.to, NameField::To)?;
            let content = content(frame.content, max_content_chars)?;
            Ok(Request::Dm { to, content })
        }
        "leave" => Ok(Request::Leave),
        "ping" => Ok(Request::Ping),
        "refresh" => match frame.token {
            Some(Loose::Str(token)) => Ok(Request::Refresh { token }),
            _ => Err(BAD_TOKEN),
        },
        _ => Err(UNKNOWN_TYPE),
    }
}

fn join(frame: Frame<'_>) -> Result<JoinRequest<'_>, Rejection> {
    let dialect = announced_dialect(frame.v.as_ref());
    join_fields(frame).map_err(|rejection| Rejection {
        dialect,
        ..rejection
    })
}

/// The dialect a `v` field announces: V2 for a non-negative integer of 2 or more, V1 otherwise.
fn announced_dialect(v: Option<&Loose<'_>>) -> Dialect {
    match v {
        Some(Loose::Uint(v)) if *v >= 2 => Dialect::V2,
        _ => Dialect::V1,
    }
}

/// The fields of a `join`, checked in order.
fn join_fields(frame: Frame<'_>) -> Result<JoinRequest<'_>, Rejection> {
    let user = user_name(frame.user_id, NameField::UserId)?;
    let room = room_name(frame.room)?;
    let dialect = match &frame.v {
        None | Some(Loose::Uint(_)) => announced_dialect(frame.v.as_ref()),
        Some(_) => return Err(BAD_V),
    };
    let session = match frame.session {
        None => None,
        Some(Loose::Str(token)) => Some(token),
        Some(_) => return Err(BAD_SESSION),
    };
    let since = match frame.since {
        None => None,
        Some(SinceField::Object {
            epoch: Some(Loose::Str(epoch)),
            seq: Some(Loose::Uint(seq)),
        }) => Some(Since { epoch, seq }),
        Some(_) => return Err(BAD_SINCE),
    };
    let token = match frame.token {
        None => None,
        Some(Loose::Str(token)) => Some(token),
        Some(_) => return Err(BAD_TOKEN),
    };
    Ok(JoinRequest {
        user,
        room,
        dialect,
        session,
        since,
        token,
    })
}

/// A user name (`userId` or `to`) under the name rules of `names.rs`.
fn user_name(field: Option<Loose<'_>>, which: NameField) -> Result<Name, Rejection> {
    let Some(Loose::Str(value)) = field else {
        return Err(which.not_a_string());
    };
    names::user_name(&value, which.max_chars()).map_err(|e| which.refused(e))
}

/// A room name under the name rules of `names.rs`.
fn room_name(field: Option<Loose<'_>>) -> Result<Cow<'_, str>, Rejection> {
    let which = NameField::Room;
    let Some(Loose::Str(value)) = field else {
        return Err(which.not_a_string());
    };
    match names::room_name(&value, which.max_chars()) {
        Ok(Cow::Borrowed(_)) => Ok(value),
        Ok(Cow::Owned(normalised)) => Ok(Cow::Owned(normalised)),
        Err(e) => Err(which.refused(e)),
    }
}

/// Message text: a non-empty string of at most `max_chars` scalar values.
fn content(field: Option<Loose<'_>>, max_chars: usize) -> Result<Cow<'_, str>, Rejection> {
    let Some(Loose::Str(value)) = field else {
        return Err(BAD_CONTENT);
    };
    if value.is_empty() {
        return Err(BAD_CONTENT);
    }
    if over_chars(&value, max_chars) {
        return Err(LONG_CONTENT);
    }
    Ok(value)
}

/// Whether `text` holds more than `max` Unicode scalar values, without counting past `max + 1`.
fn over_chars(text: &str, max: usize) -> bool {
    text.len() > max && text.chars().nth(max).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        match parse(text, 10) {
            Ok(req) => panic!("accepted {text}: {req:?}"),
            Err(rejection) => rejection.code,
        }
    }

    #[test]
    fn join_with_every_field() {
        let req = parse(
            r#"{"type":"join","userId":"ann","room":"lobby","v":2,"session":"t","since":{"epoch":"e","seq":3},"token":"j.w.t"}"#,
            10,
        );
        assert_eq!(
            req,
            Ok(Request::Join(JoinRequest {
                user: names::user_name("ann", MAX_USER_CHARS).unwrap(),
                room: "lobby".into(),
                dialect: Dialect::V2,
                session: Some("t".into()),
                since: Some(Since {
                    epoch: "e".into(),
                    seq: 3
                }),
                token: Some("j.w.t".into()),
            }))
        );
    }

    #[test]
    fn join_without_v_is_v1() {
        let Ok(Request::Join(join)) = parse(r#"{"type":"join","userId":"a","room":"r"}"#, 10)
        else {
            panic!("rejected");
        };
        assert_eq!(join.dialect, Dialect::V1);
        let Ok(Request::Join(join)) = parse(r#"{"type":"join","userId":"a","room":"r","v":1}"#, 10)
        else {
            panic!("rejected");
        };
        assert_eq!(join.dialect, Dialect::V1);
    }

    #[test]
    fn names_count_chars_not_bytes() {
        let user = "é".repeat(32);
        let text = format!(r#"{{"type":"join","userId":"{user}","room":"r"}}"#);
        assert!(parse(&text, 10).is_ok());
        let text = format!(r#"{{"type":"join","userId":"{user}é","room":"r"}}"#);
        assert_eq!(code(&text), ErrorCode::TooLong);
    }

    #[test]
    fn room_limit_is_64_chars() {
        let room = "😀".repeat(64);
        let text = format!(r#"{{"type":"join","userId":"a","room":"{room}"}}"#);
        assert!(parse(&text, 10).is_ok());
        let text = format!(r#"{{"type":"join","userId":"a","room":"{room}x"}}"#);
        assert_eq!(code(&text), ErrorCode::TooLong);
    }

    #[test]
    fn blank_names_are_invalid() {
        for blank in [" ", "   ", "\u{3000}", "\u{2003} "] {
            let frame = format!(r#"{{"type":"join","userId":"{blank}","room":"lobby"}}"#);
            assert_eq!(code(&frame), ErrorCode::InvalidField, "{blank:?}");
        }
    }

    #[test]
    fn control_characters_in_names_are_invalid() {
        for name in [r"a\u0000", r"a\nb", r"\u007f", r"a\u0085"] {
            let text = format!(r#"{{"type":"join","userId":"{name}","room":"r"}}"#);
            assert_eq!(code(&text), ErrorCode::InvalidField, "{name}");
            let text = format!(r#"{{"type":"join","userId":"a","room":"{name}"}}"#);
            assert_eq!(code(&text), ErrorCode::InvalidField, "{name}");
        }
    }

    #[test]
    fn bad_join_fields_are_invalid() {
        for text in [
            r#"{"type":"join","room":"r"}"#,
            r#"{"type":"join","userId":"","room":"r"}"#,
            r#"{"type":"join","userId":5,"room":"r"}"#,
            r#"{"type":"join","userId":"a"}"#,
            r#"{"type":"join","userId":"a","room":"r","v":"2"}"#,
            r#"{"type":"join","userId":"a","room":"r","session":1}"#,
            r#"{"type":"join","userId":"a","room":"r","token":{}}"#,
            r#"{"type":"join","userId":"a","room":"r","since":"e:3"}"#,
            r#"{"type":"join","userId":"a","room":"r","since":{"epoch":"e"}}"#,
            r#"{"type":"join","userId":"a","room":"r","since":{"epoch":"e","seq":-1}}"#,
            r#"{"type":"join","userId":"a","room":"r","since":{"epoch":1,"seq":1}}"#,
        ] {
            assert_eq!(code(text), ErrorCode::InvalidField, "{text}");
        }
    }

    #[test]
    fn a_rejected_join_tells_whether_it_announced_v2() {
        let v2 = |text: &str| {
            parse(text, 10)
                .map(|_| ())
                .map_err(|r| r.dialect == Dialect::V2)
        };
        assert_eq!(v2(r#"{"type":"join","room":"r","v":2}"#), Err(true));
        assert_eq!(
            v2(r#"{"type":"join","userId":"a","v":3,"since":1}"#),
            Err(true)
        );
        assert_eq!(v2(r#"{"type":"join","room":"r","v":1}"#), Err(false));
        assert_eq!(v2(r#"{"type":"join","room":"r"}"#), Err(false));
        assert_eq!(
            v2(r#"{"type":"join","userId":"a","room":"r","v":"2"}"#),
            Err(false)
        );
        assert_eq!(v2(r#"{"type":"chat","v":2}"#), Err(false));
    }

    #[test]
    fn content_rules() {
        assert_eq!(code(r#"{"type":"chat"}"#), ErrorCode::InvalidField);
        assert_eq!(
            code(r#"{"type":"chat","content":""}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code(r#"{"type":"chat","content":["x"]}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code(r#"{"type":"chat","content":"12345678901"}"#),
            ErrorCode::TooLong
        );
        assert_eq!(
            parse(r#"{"type":"chat","content":"ééééééééé\n"}"#, 10),
            Ok(Request::Chat {
                content: "ééééééééé\n".into()
            })
        );
    }

    #[test]
    fn dm_needs_a_valid_to() {
        assert_eq!(
            code(r#"{"type":"dm","content":"x"}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(
            parse(
                r#"{"type":"dm","to":"bob","content":"x","from":"mallory"}"#,
                10
            ),
            Ok(Request::Dm {
                to: names::user_name("bob", MAX_USER_CHARS).unwrap(),
                content: "x".into()
            })
        );
    }

    #[test]
    fn type_must_be_a_known_string() {
        assert_eq!(code(r#"{}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":1}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"JOIN"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"pong"}"#), ErrorCode::UnknownType);
    }

    #[test]
    fn non_objects_are_invalid_json() {
        assert_eq!(code("nope"), ErrorCode::InvalidJson);
        assert_eq!(code(r#"["ping"]"#), ErrorCode::InvalidJson);
        assert_eq!(code(r#""ping""#), ErrorCode::InvalidJson);
    }

    #[test]
    fn leave_and_ping_ignore_other_fields() {
        assert_eq!(
            parse(r#"{"type":"leave","room":5}"#, 10),
            Ok(Request::Leave)
        );
        assert_eq!(parse(r#"{"type":"ping","x":null}"#, 10), Ok(Request::Ping));
    }

    #[test]
    fn refresh_carries_its_token_and_needs_one_that_is_a_string() {
        assert_eq!(
            parse(r#"{"type":"refresh","token":"j.w.t"}"#, 10),
            Ok(Request::Refresh {
                token: "j.w.t".into()
            })
        );
        for frame in [
            r#"{"type":"refresh"}"#,
            r#"{"type":"refresh","token":7}"#,
            r#"{"type":"refresh","token":null}"#,
        ] {
            assert_eq!(code(frame), ErrorCode::InvalidField, "{frame}");
        }
    }
}
