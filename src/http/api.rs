//! The server API for the application behind the chat (`--api-key`): which requests it takes, and every refusal
//! with its status.
//!
//! Owns the decisions on a request's head (is the API on, is the caller a browser from an origin not allowed, is
//! the key right, which endpoint and method, is the body announced, small enough and JSON), the reading of a body
//! into a typed [`Call`], and the JSON of every answer. It is pure: no sockets, no chat. The server carries a call
//! out through the chat's operations for the application (`Chat::publish_from_app`, `Chat::dm_from_app`, `Chat::rooms`,
//! `Chat::room_members`, `Chat::disconnect_user`) and answers with what they return. It must not log the key.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::origin::OriginPolicy;
use crate::protocol::handshake::RequestHead;

/// The largest body accepted, in bytes; a bigger one is a 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The close code of `POST /api/disconnect` when the call names none.
pub const DEFAULT_DISCONNECT_CODE: u16 = 4005;

/// The close reason of `POST /api/disconnect` when the call gives none.
pub const DEFAULT_DISCONNECT_REASON: &str = "disconnected";

/// The longest close reason, in bytes: RFC 6455 5.5, a control frame's payload is at most 125 bytes, two of them
/// the code.
pub const MAX_REASON_BYTES: usize = 123;

/// The shortest key accepted, in bytes: a key is a password that a machine types, so it can be long.
pub const MIN_KEY_BYTES: usize = 16;

/// The API's key, kept only as its SHA-256 digest.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    digest: [u8; 32],
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

/// A key too short to be one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyTooShort {
    /// Its length in bytes.
    pub len: usize,
}

impl fmt::Display for KeyTooShort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the API key is {} bytes; it must be at least {MIN_KEY_BYTES}",
            self.len
        )
    }
}

impl std::error::Error for KeyTooShort {}

impl ApiKey {
    /// The key `key`, if it is long enough.
    pub fn new(key: &str) -> Result<ApiKey, KeyTooShort> {
        if key.len() < MIN_KEY_BYTES {
            return Err(KeyTooShort { len: key.len() });
        }
        Ok(ApiKey {
            digest: Sha256::digest(key.as_bytes()).into(),
        })
    }

    /// True if `presented` is the key. The digests are compared in constant time, so neither how much of the key a
    /// guess got right nor the key's length shows in the time the answer takes.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.digest).into()
    }
}

/// True if `path` is the API's: `/api` or under `/api/`.
pub fn is_api_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// An endpoint of the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /api/publish`.
    Publish,
    /// `POST /api/dm`.
    Dm,
    /// `GET /api/rooms`.
    Rooms,
    /// `GET /api/rooms/NAME`, with NAME percent-decoded.
    Room(String),
    /// `POST /api/disconnect`.
    Disconnect,
}

impl Endpoint {
    /// A short stable name, for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Endpoint::Publish => "publish",
            Endpoint::Dm => "dm",
            Endpoint::Rooms => "rooms",
            Endpoint::Room(_) => "room",
            Endpoint::Disconnect => "disconnect",
        }
    }

    /// Every label `label` can return, so metrics can show zeros.
    pub const LABELS: [&'static str; 5] = ["publish", "dm", "rooms", "room", "disconnect"];

    /// True for the endpoints that take a JSON body by POST.
    fn takes_body(&self) -> bool {
        matches!(
            self,
            Endpoint::Publish | Endpoint::Dm | Endpoint::Disconnect
        )
    }
}

/// A request head the API takes: what it asks for, how many body bytes follow, and how the connection goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Bytes of body that follow the head (0 for GET).
    pub body_len: usize,
    /// The connection stays open for another request after the answer (HTTP/1.1 without `Connection: close`).
    pub keep_alive: bool,
    /// A HEAD request: the answer has no body.
    pub head_only: bool,
}

/// Why the API refuses a request; each has a status and a JSON body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// The API is off, or no such endpoint (404).
    NotFound,
    /// A browser page from an origin `--allowed-origin` does not allow (403).
    ForbiddenOrigin,
    /// No `Authorization: Bearer KEY`, or the wrong key; which of the two is not said (401).
    Unauthorized,
    /// The endpoint exists but not with this method (405); `allow` lists the ones it answers.
    MethodNotAllowed {
        /// The `Allow` header's value.
        allow: &'static str,
    },
    /// A body is needed and no `Content-Length` announces it (chunked bodies are not taken) (411).
    LengthRequired,
    /// A body over [`MAX_BODY_BYTES`] (413).
    PayloadTooLarge,
    /// A body that is not `application/json` (415).
    UnsupportedMediaType,
    /// The body is not the JSON the endpoint takes, or a field breaks a rule; the message says which (400).
    BadRequest(Cow<'static, str>),
    /// The call cannot be carried out by this server as it runs (503): a publication on a node of a cluster.
    Unavailable(Cow<'static, str>),
}

impl ApiError {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::NotFound => 404,
            ApiError::ForbiddenOrigin => 403,
            ApiError::Unauthorized => 401,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::LengthRequired => 411,
            ApiError::PayloadTooLarge => 413,
            ApiError::UnsupportedMediaType => 415,
            ApiError::BadRequest(_) => 400,
            ApiError::Unavailable(_) => 503,
        }
    }

    /// A short stable label: the `error` of the JSON body, and the metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            ApiError::NotFound => "not_found",
            ApiError::ForbiddenOrigin => "forbidden_origin",
            ApiError::Unauthorized => "unauthorized",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::LengthRequired => "length_required",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unavailable(_) => "unavailable",
        }
    }

    /// Every label `label` can return, so metrics can show zeros.
    pub const LABELS: [&'static str; 9] = [
        "not_found",
        "forbidden_origin",
        "unauthorized",
        "method_not_allowed",
        "length_required",
        "payload_too_large",
        "unsupported_media_type",
        "bad_request",
        "unavailable",
    ];

    /// Appends the full response: `{"error": label, "message": ...}` with the status, closing the connection
    /// unless `keep_alive` (a refusal after which the request's body, if any, was not read always closes it).
    pub fn write_response(&self, keep_alive: bool, out: &mut Vec<u8>) {
        let body = serde_json::json!({"error": self.label(), "message": self.to_string()});
        let allow;
        let extra: &[(&str, &str)] = match self {
            // RFC 9110 15.5.6: a 405 lists the methods the resource answers.
            ApiError::MethodNotAllowed { allow: methods } => {
                allow = [("Allow", *methods)];
                &allow
            }
            // RFC 9110 11.6.1: a 401 says which scheme would do (RFC 6750 3: Bearer).
            ApiError::Unauthorized => &[("WWW-Authenticate", "Bearer")],
            _ => &[],
        };
        write_json(self.status(), &body.to_string(), extra, keep_alive, out);
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::NotFound => f.write_str("no such endpoint"),
            ApiError::ForbiddenOrigin => f.write_str("origin not allowed"),
            ApiError::Unauthorized => f.write_str("send the API key as Authorization: Bearer KEY"),
            ApiError::MethodNotAllowed { allow } => write!(f, "method not allowed: use {allow}"),
            ApiError::LengthRequired => f.write_str("a body with Content-Length is required"),
            ApiError::PayloadTooLarge => {
                write!(f, "the body is over {MAX_BODY_BYTES} bytes")
            }
            ApiError::UnsupportedMediaType => {
                f.write_str("the body must be JSON (Content-Type: application/json)")
            }
            ApiError::BadRequest(message) | ApiError::Unavailable(message) => f.write_str(message),
        }
    }
}

/// Judges a request head for the API: off (404), a browser from an origin not allowed (403), the key (401), the
/// endpoint (404) and method (405), then for a body its length (411, 413) and type (415). `key` is `None` when the
/// API is off.
pub fn read_head(
    head: &RequestHead,
    key: Option<&ApiKey>,
    origins: &OriginPolicy,
) -> Result<Head, ApiError> {
    let key = key.ok_or(ApiError::NotFound)?;
    // The API is for servers; a browser (one that sends Origin) is held to --allowed-origin like a WebSocket.
    if !origins.allows(head) {
        return Err(ApiError::ForbiddenOrigin);
    }
    if !bearer(head).is_some_and(|presented| key.matches(presented)) {
        return Err(ApiError::Unauthorized);
    }
    let endpoint = endpoint(head.path())?;
    let head_only = head.method == "HEAD";
    let allowed = if endpoint.takes_body() {
        head.method == "POST"
    } else {
        head.method == "GET" || head_only
    };
    if !allowed {
        let allow = if endpoint.takes_body() {
            "POST"
        } else {
            "GET, HEAD"
        };
        return Err(ApiError::MethodNotAllowed { allow });
    }
    let body_len = body_length(head, endpoint.takes_body())?;
    // RFC 9112 9.3: HTTP/1.1 stays open unless either side says `close`; HTTP/1.0 closes.
    let keep_alive = head.minor_version >= 1 && !head.has_token("connection", "close");
    Ok(Head {
        endpoint,
        body_len,
        keep_alive,
        head_only,
    })
}

/// The credentials of `Authorization: Bearer <token>` (RFC 6750 2.1; the scheme is case-insensitive, RFC 9110
/// 11.1), if the header is there once and has that form.
fn bearer(head: &RequestHead) -> Option<&[u8]> {
    let value = head.single_value("authorization")?;
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

/// The endpoint at `path`.
fn endpoint(path: &str) -> Result<Endpoint, ApiError> {
    match path {
        "/api/publish" => Ok(Endpoint::Publish),
        "/api/dm" => Ok(Endpoint::Dm),
        "/api/disconnect" => Ok(Endpoint::Disconnect),
        "/api/rooms" | "/api/rooms/" => Ok(Endpoint::Rooms),
        _ => {
            let name = path.strip_prefix("/api/rooms/").ok_or(ApiError::NotFound)?;
            match percent_decode(name) {
                Some(name) if !name.is_empty() && !name.contains('/') => Ok(Endpoint::Room(name)),
                _ => Err(ApiError::NotFound),
            }
        }
    }
}

/// `text` with every `%XX` decoded, if the result is UTF-8 and every `%` is followed by two hex digits.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(byte);
            i += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// The announced body length: for an endpoint with a body, `Content-Length` must be there (411), at most
/// [`MAX_BODY_BYTES`] (413), and the type JSON (415); without one, no body may be announced (400).
fn body_length(head: &RequestHead, takes_body: bool) -> Result<usize, ApiError> {
    // RFC 9112 6.1: a server that does not take chunked bodies may answer 411 to make the client send a length.
    let chunked = head.values("transfer-encoding").next().is_some();
    let length = match head.values("content-length").next() {
        None => None,
        Some(_) => {
            let value = head
                .single_value("content-length")
                .filter(|v| !v.is_empty() && v.iter().all(u8::is_ascii_digit))
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or(ApiError::BadRequest(Cow::Borrowed(
                    "Content-Length must be one decimal number",
                )))?;
            Some(value)
        }
    };
    if !takes_body {
        return match (chunked, length) {
            (false, None | Some(0)) => Ok(0),
            _ => Err(ApiError::BadRequest(Cow::Borrowed(
                "this endpoint takes no body",
            ))),
        };
    }
    let length = match (chunked, length) {
        (false, Some(length)) => length,
        _ => return Err(ApiError::LengthRequired),
    };
    if length > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    if !is_json(head.single_value("content-type")) {
        return Err(ApiError::UnsupportedMediaType);
    }
    Ok(length)
}

/// True for `application/json`, with parameters (`; charset=utf-8`) or without, in any case (RFC 9110 8.3.1).
fn is_json(content_type: Option<&[u8]>) -> bool {
    let Some(value) = content_type else {
        return false;
    };
    let media_type = value.split(|&b| b == b';').next().unwrap_or_default();
    media_type
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/json")
}

/// What a call asks the chat to do, its fields read but not yet judged by the chat's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// Post `content` into `room`, as `from` (the chat's default sender when `None`).
    Publish {
        /// The room's name.
        room: String,
        /// The message.
        content: String,
        /// Who it says it is from.
        from: Option<String>,
    },
    /// Send `content` privately to the connection holding `to`.
    Dm {
        /// The recipient's userId.
        to: String,
        /// The message.
        content: String,
        /// Who it says it is from.
        from: Option<String>,
    },
    /// List the rooms with members.
    Rooms,
    /// List one room's members.
    Room {
        /// The room's name.
        name: String,
    },
    /// Close every connection of `user` with `code` and `reason`.
    Disconnect {
        /// The userId.
        user: String,
        /// A close code: 1000, or 3000 to 4999.
        code: u16,
        /// At most [`MAX_REASON_BYTES`] bytes.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    room: String,
    content: String,
    #[serde(default)]
    from: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DmBody {
    to: String,
    content: String,
    #[serde(default)]
    from: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    #[serde(rename = "userId")]
    user_id: String,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    reason: Option<String>,
}

/// Reads the body of a call to `endpoint`: a JSON object with exactly the endpoint's fields, of their types (400
/// otherwise). The chat judges the values themselves (names, lengths).
pub fn read_call(endpoint: &Endpoint, body: &[u8]) -> Result<Call, ApiError> {
    let bad = |shape: &'static str| ApiError::BadRequest(Cow::Borrowed(shape));
    match endpoint {
        Endpoint::Rooms => Ok(Call::Rooms),
        Endpoint::Room(name) => Ok(Call::Room { name: name.clone() }),
        Endpoint::Publish => {
            let body: PublishBody = serde_json::from_slice(body).map_err(|_| {
                bad("the body must be {\"room\": string, \"content\": string, \"from\"?: string}")
            })?;
            Ok(Call::Publish {
                room: body.room,
                content: body.content,
                from: body.from,
            })
        }
        Endpoint::Dm => {
            let body: DmBody = serde_json::from_slice(body).map_err(|_| {
                bad("the body must be {\"to\": string, \"content\": string, \"from\"?: string}")
            })?;
            Ok(Call::Dm {
                to: body.to,
                content: body.content,
                from: body.from,
            })
        }
        Endpoint::Disconnect => {
            let body: DisconnectBody = serde_json::from_slice(body).map_err(|_| {
                bad("the body must be {\"userId\": string, \"code\"?: integer, \"reason\"?: string}")
            })?;
            let code = body.code.unwrap_or(DEFAULT_DISCONNECT_CODE);
            // RFC 6455 7.4.2: 3000-3999 are registered for libraries and applications, 4000-4999 private; 1000 is
            // a normal closure. The others say things about the protocol that would not be true.
            if code != 1000 && !(3000..=4999).contains(&code) {
                return Err(bad("\"code\" must be 1000 or from 3000 to 4999"));
            }
            let reason = body
                .reason
                .unwrap_or_else(|| DEFAULT_DISCONNECT_REASON.to_owned());
            if reason.len() > MAX_REASON_BYTES {
                return Err(bad("\"reason\" must be at most 123 bytes of UTF-8"));
            }
            Ok(Call::Disconnect {
                user: body.user_id,
                code,
                reason,
            })
        }
    }
}

/// Appends a `200` with the JSON `body`.
pub fn write_ok(body: &str, keep_alive: bool, out: &mut Vec<u8>) {
    write_json(200, body, &[], keep_alive, out);
}

/// Appends a complete response with a JSON body. No CORS headers: the API is for servers, and a browser page from
/// another origin must not read its answers.
fn write_json(
    status: u16,
    body: &str,
    extra: &[(&str, &str)],
    keep_alive: bool,
    out: &mut Vec<u8>,
) {
    super::write_head(
        status,
        "application/json",
        body.len() + 1,
        keep_alive,
        extra,
        out,
    );
    out.extend_from_slice(body.as_bytes());
    out.push(b'\n');
}

#[cfg(test)]
mod tests;
