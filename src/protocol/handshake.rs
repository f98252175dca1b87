//! RFC 6455 section 4: the opening handshake, for both ends.
//!
//! Owns reading an HTTP/1.1 request head (with `httparse`), checking it against 4.2.1, computing
//! `Sec-WebSocket-Accept` (4.2.2) and writing the 101 response; and, for clients, drawing the key (10.3), writing
//! the request and checking the server's answer against what was asked (4.1). It does not negotiate extensions:
//! it reports which ones a server agreed to, and the extension's own code judges their parameters. Routing and
//! non-WebSocket HTTP live in `crate::http`.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

use super::extensions::{parse_extensions, ExtensionOffer};

/// The GUID every server appends to the client's key (4.2.2, step 5.4).
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version this implementation speaks (4.1, 4.4).
pub const WEBSOCKET_VERSION: &str = "13";

/// The most header lines a request may carry before it is refused with 431.
pub const MAX_HEADERS: usize = 64;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)) (4.2.2).
///
/// The key goes in as sent, base64 text and all: it is not decoded first (1.3).
///
/// ```
/// use roomcast::protocol::handshake::accept_key;
///
/// // The example of RFC 6455 1.3 and 4.2.2: the client's key, and what the server must answer.
/// assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha1.finalize())
}

/// One header line of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The field name as sent; compare it case-insensitively.
    pub name: String,
    /// The raw field value.
    pub value: Vec<u8>,
}

/// A parsed HTTP request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The request target as sent, e.g. `/ws?x=1`.
    pub target: String,
    /// The minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub minor_version: u8,
    /// Every header line, in order.
    pub headers: Vec<Header>,
    /// The length of the head in bytes, blank line included: what follows belongs to the first frame.
    pub len: usize,
}

impl RequestHead {
    /// The path part of the target, without the query: `/ws` for the origin form `/ws?x=1`, and also for the
    /// absolute form `http://host:port/ws?x=1`, which is `/` when the URI has no path.
    pub fn path(&self) -> &str {
        let without_query = self.target.split('?').next().unwrap_or_default();
        // RFC 7230 5.3.2 and RFC 6455 4.1: an absolute-form target names the resource by its path after the
        // authority; an empty path is `/` (RFC 7230 5.3.1).
        match absolute_form_hierarchy(without_query) {
            Some(authority_and_path) => authority_and_path
                .find('/')
                .map_or("/", |slash| &authority_and_path[slash..]),
            None => without_query,
        }
    }

    /// Every value of the header `name` (case-insensitive), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// The single value of `name`, trimmed; `None` if absent or repeated.
    pub fn single_value<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        let mut values = self.values(name);
        let first = values.next()?;
        match values.next() {
            Some(_) => None,
            None => Some(first.trim_ascii()),
        }
    }

    /// True if any value of `name` is a comma-separated list holding `token` (case-insensitive), as 4.2.1 asks of
    /// `Upgrade` and `Connection`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.values(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    }

    /// True if every value of `name` is printable ASCII (visible characters, spaces and tabs): no obs-text, no
    /// control bytes. Token lists such as `Upgrade` and `Connection` are never anything else (RFC 7230 3.2.6).
    pub fn is_ascii_text(&self, name: &str) -> bool {
        self.values(name).all(is_ascii_text)
    }

    /// True if the request asks for a WebSocket at all (an `Upgrade` or `Sec-WebSocket-Key` header).
    pub fn wants_websocket(&self) -> bool {
        self.values("upgrade").next().is_some() || self.values("sec-websocket-key").next().is_some()
    }
}

/// The `//authority/path` part of an absolute-form request target `scheme://authority/path`, without the
/// `scheme:`; `None` for any other form (`/path`, `*`, `host:port`). The scheme is checked against RFC 3986 3.1.
fn absolute_form_hierarchy(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    let mut chars = scheme.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let scheme_chars = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (starts_with_letter && scheme_chars).then_some(rest)
}

/// True if `value` holds only visible ASCII, spaces and tabs (RFC 7230 3.2: field content without obs-text).
fn is_ascii_text(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// True if `host` could be a `Host` value, `uri-host [":" port]` (RFC 7230 5.4): non-empty, visible ASCII only.
fn is_plausible_host(host: &[u8]) -> bool {
    !host.is_empty() && host.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

/// True if `version` matches the `version` rule of 4.3: a decimal number from 0 to 255 without leading zeros.
fn is_version_number(version: &[u8]) -> bool {
    let is_decimal = matches!(version, [b'0'..=b'9'] | [b'1'..=b'9', ..])
        && version.len() <= 3
        && version.iter().all(u8::is_ascii_digit);
    // At most three digits: the sum fits a u16.
    is_decimal
        && version
            .iter()
            .fold(0u16, |n, &digit| n * 10 + u16::from(digit - b'0'))
            <= 255
}

/// A request head that could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The head is longer than the limit, or has too many lines (RFC 6585: 431).
    TooLarge,
    /// Not HTTP/1.x (400).
    Malformed,
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::TooLarge => f.write_str("request header fields too large"),
            HeadError::Malformed => f.write_str("malformed HTTP request"),
        }
    }
}

impl std::error::Error for HeadError {}

/// Reads a request head from the start of `buf`, which may hold any prefix of the stream. `Ok(None)` means the
/// head is not complete yet and `buf` is still within `max_len`.
///
/// Only the first `max_len` bytes are ever parsed, so the outcome depends on the bytes and not on how they were
/// split into reads: a head must be complete and well-formed within the limit.
///
/// ```
/// use roomcast::protocol::handshake::{parse_request_head, HeadError};
///
/// let stream = b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\r\n\x81\x85";
/// // The first read ended inside a header line: not complete, read more and call again with all of it.
/// assert_eq!(parse_request_head(&stream[..30], 8192), Ok(None));
/// // With the blank line in, the head is complete. The bytes after it (81 85) begin the first frame.
/// let head = parse_request_head(stream, 8192).unwrap().expect("a complete head");
/// assert_eq!((head.method.as_str(), head.path()), ("GET", "/chat"));
/// assert_eq!(head.single_value("host"), Some(&b"server.example.com"[..]));
/// assert_eq!(&stream[head.len..], b"\x81\x85");
/// // A head still incomplete when it reaches the limit is refused (431).
/// assert_eq!(parse_request_head(&stream[..30], 20), Err(HeadError::TooLarge));
/// ```
pub fn parse_request_head(buf: &[u8], max_len: usize) -> Result<Option<RequestHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let within_limit = &buf[..buf.len().min(max_len)];
    match request.parse(within_limit) {
        Ok(httparse::Status::Complete(len)) => Ok(Some(RequestHead {
            method: request.method.unwrap_or_default().to_owned(),
            target: request.path.unwrap_or_default().to_owned(),
            minor_version: request.version.unwrap_or_default(),
            headers: request
                .headers
                .iter()
                .map(|h| Header {
                    name: h.name.to_owned(),
                    value: h.value.to_vec(),
                })
                .collect(),
            len,
        })),
        // RFC 6455 10.4: our limit on the head; RFC 6585 5: over it is a 431.
        Ok(httparse::Status::Partial) if buf.len() > max_len => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(_) => Err(HeadError::Malformed),
    }
}

/// Why an upgrade request was refused; each maps to an HTTP status (4.2.1, 4.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpgradeError {
    /// Not GET (405).
    NotGet,
    /// Older than HTTP/1.1 (400).
    OldHttpVersion,
    /// No `Host`, an empty one, or more than one (400).
    MissingHost,
    /// A `Host` that cannot be a host: bytes other than visible ASCII (400, RFC 7230 5.4).
    InvalidHost,
    /// No `Upgrade: websocket` (400).
    MissingUpgrade,
    /// No `Connection: Upgrade` (400).
    MissingConnection,
    /// `Sec-WebSocket-Key` absent, repeated, or not 16 bytes in base64 (400).
    InvalidKey,
    /// `Sec-WebSocket-Version` is not a version number at all, e.g. bytes other than digits (400, 4.3).
    MalformedVersion,
    /// `Sec-WebSocket-Version` is absent, repeated, or a version other than 13 (426, with
    /// `Sec-WebSocket-Version: 13`).
    UnsupportedVersion,
    /// `Sec-WebSocket-Extensions` is not an extension list (400, 4.2.1 item 9 and 9.1).
    MalformedExtensions,
}

impl UpgradeError {
    /// The HTTP status to answer with.
    pub fn status(self) -> u16 {
        match self {
            UpgradeError::NotGet => 405,
            UpgradeError::UnsupportedVersion => 426,
            _ => 400,
        }
    }
}

impl fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpgradeError::NotGet => "a WebSocket handshake must be a GET request",
            UpgradeError::OldHttpVersion => "a WebSocket handshake needs HTTP/1.1 or later",
            UpgradeError::MissingHost => "missing Host header",
            UpgradeError::InvalidHost => "invalid Host header: expected host[:port] in ASCII",
            UpgradeError::MissingUpgrade => "missing or invalid Upgrade header: expected websocket",
            UpgradeError::MissingConnection => {
                "missing or invalid Connection header: expected Upgrade"
            }
            UpgradeError::InvalidKey => "Sec-WebSocket-Key must be 16 bytes in base64",
            UpgradeError::MalformedVersion => {
                "malformed Sec-WebSocket-Version: expected a number such as 13"
            }
            UpgradeError::UnsupportedVersion => {
                "unsupported Sec-WebSocket-Version: this server speaks 13"
            }
            UpgradeError::MalformedExtensions => {
                "malformed Sec-WebSocket-Extensions: expected a list of extensions with parameters"
            }
        })
    }
}

impl std::error::Error for UpgradeError {}

/// Checks a request against 4.2.1 and returns the `Sec-WebSocket-Accept` value to answer with.
///
/// ```
/// use roomcast::protocol::handshake::{parse_request_head, validate_upgrade, UpgradeError};
///
/// // The client's handshake of RFC 6455 1.3, without its optional lines.
/// let request = b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
///     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
/// let head = parse_request_head(request, 8192).unwrap().expect("a complete head");
/// assert_eq!(validate_upgrade(&head), Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_owned()));
///
/// // The same request asking for version 8: refused with 426, which names the version we speak (4.2.2).
/// let old = String::from_utf8_lossy(request).replace("Version: 13", "Version: 8");
/// let head = parse_request_head(old.as_bytes(), 8192).unwrap().expect("a complete head");
/// assert_eq!(validate_upgrade(&head), Err(UpgradeError::UnsupportedVersion));
/// assert_eq!(UpgradeError::UnsupportedVersion.status(), 426);
/// ```
pub fn validate_upgrade(head: &RequestHead) -> Result<String, UpgradeError> {
    // 4.2.1 item 1: an HTTP/1.1 or higher GET request.
    if head.method != "GET" {
        return Err(UpgradeError::NotGet);
    }
    if head.minor_version < 1 {
        return Err(UpgradeError::OldHttpVersion);
    }
    // 4.2.1 item 2: a Host header field.
    let host = head
        .single_value("host")
        .filter(|h| !h.is_empty())
        .ok_or(UpgradeError::MissingHost)?;
    // RFC 7230 5.4: a Host with an invalid value is a 400; obs-text and control bytes are never a host.
    if !is_plausible_host(host) {
        return Err(UpgradeError::InvalidHost);
    }
    // 4.2.1 items 3 and 4: Upgrade holds "websocket", Connection holds "Upgrade", case-insensitively, in token
    // lists that are ASCII throughout (RFC 7230 3.2.6: a token list has no obs-text).
    if !head.is_ascii_text("upgrade") || !head.has_token("upgrade", "websocket") {
        return Err(UpgradeError::MissingUpgrade);
    }
    if !head.is_ascii_text("connection") || !head.has_token("connection", "upgrade") {
        return Err(UpgradeError::MissingConnection);
    }
    // 4.2.1 item 6 and 4.2.2: version 13, or 426 naming the version we speak; 4.3: a value that is no version
    // number at all is a malformed request (400).
    let version = head.single_value("sec-websocket-version");
    if version.is_some_and(|v| !is_version_number(v)) {
        return Err(UpgradeError::MalformedVersion);
    }
    if version != Some(WEBSOCKET_VERSION.as_bytes()) {
        return Err(UpgradeError::UnsupportedVersion);
    }
    // 4.2.1 item 5: a key that is base64 for 16 bytes.
    let key = head
        .single_value("sec-websocket-key")
        .ok_or(UpgradeError::InvalidKey)?;
    match BASE64.decode(key) {
        Ok(decoded) if decoded.len() == 16 => Ok(accept_key(key)),
        _ => Err(UpgradeError::InvalidKey),
    }
}

/// The extensions a request offers, in its order of preference (4.2.1 item 9, 9.1): every element of every
/// `Sec-WebSocket-Extensions` line. A line that is not an extension list makes the handshake a bad request.
pub fn extension_offers(head: &RequestHead) -> Result<Vec<ExtensionOffer>, UpgradeError> {
    parse_extensions(head.values("sec-websocket-extensions"))
        .map_err(|_| UpgradeError::MalformedExtensions)
}

/// Appends the 101 response that completes the handshake (4.2.2, step 5).
///
/// ```
/// use roomcast::protocol::handshake::write_accept_response;
///
/// let mut response = Vec::new();
/// write_accept_response("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", &mut response);
/// assert_eq!(
///     String::from_utf8(response).unwrap(),
///     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
///      Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
/// );
/// ```
pub fn write_accept_response(accept: &str, out: &mut Vec<u8>) {
    write_accept_response_with_extensions(accept, None, out);
}

/// Appends the 101 response, naming the extensions the server agreed to, if any, as one
/// `Sec-WebSocket-Extensions` value (4.2.2 step 5, item 4: only extensions the client offered).
pub fn write_accept_response_with_extensions(
    accept: &str,
    extensions: Option<&str>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    );
    // RFC 6455 4.2.2: we agree to no subprotocol, so none is named.
    out.extend_from_slice(b"Sec-WebSocket-Accept: ");
    out.extend_from_slice(accept.as_bytes());
    if let Some(extensions) = extensions {
        out.extend_from_slice(b"\r\nSec-WebSocket-Extensions: ");
        out.extend_from_slice(extensions.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// A fresh `Sec-WebSocket-Key`: base64 of 16 bytes from the operating system's random source. 4.1 asks for a
/// nonce "randomly selected" for each connection, and 10.3 for a strong source of entropy.
pub fn random_key() -> String {
    let mut nonce = [0u8; 16];
    super::mask::fill_random(&mut nonce);
    BASE64.encode(nonce)
}

/// What a client asks for in its opening handshake (4.1), which is what the server's answer is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRequest {
    /// The `Sec-WebSocket-Key`: base64 of 16 random bytes, as `random_key` draws them.
    pub key: String,
    /// The `Sec-WebSocket-Extensions` value to send, e.g. `permessage-deflate; client_max_window_bits`; `None`
    /// offers no extension. It must be one header value: no CR or LF.
    pub extensions: Option<String>,
    /// The subprotocols to offer in `Sec-WebSocket-Protocol`, most preferred first; empty offers none. Each must
    /// be a token (4.1: visible ASCII without separators).
    pub subprotocols: Vec<String>,
}

impl ClientRequest {
    /// A request with a fresh random key that offers no extension and no subprotocol.
    pub fn with_random_key() -> ClientRequest {
        ClientRequest::with_key(random_key())
    }

    /// A request with the given base64 `key` that offers no extension and no subprotocol.
    pub fn with_key(key: impl Into<String>) -> ClientRequest {
        ClientRequest {
            key: key.into(),
            extensions: None,
            subprotocols: Vec::new(),
        }
    }

    /// The offered extensions, in order (9.1); an offer that is not an extension list offers none.
    fn offered_extensions(&self) -> Vec<ExtensionOffer> {
        let offer = self.extensions.as_deref().unwrap_or_default();
        parse_extensions([offer.as_bytes()]).unwrap_or_default()
    }
}

/// Appends a client's opening handshake for `path` on `host` asking for what `request` describes (4.1).
pub fn write_client_request(host: &str, path: &str, request: &ClientRequest, out: &mut Vec<u8>) {
    let key = &request.key;
    out.extend_from_slice(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        )
        .as_bytes(),
    );
    // 4.1 and 9.1: the extensions the client is ready to use, if any.
    if let Some(extensions) = request.extensions.as_deref().filter(|e| !e.is_empty()) {
        out.extend_from_slice(b"Sec-WebSocket-Extensions: ");
        out.extend_from_slice(extensions.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // 4.1: the subprotocols, most preferred first, as one comma-separated list.
    if !request.subprotocols.is_empty() {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(request.subprotocols.join(", ").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A server's answer that completes our handshake (4.1), with what it agreed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerResponse {
    /// The length of the response head in bytes, blank line included: the bytes after it are the first frames.
    pub head_len: usize,
    /// The extensions in use, one entry per element of the `Sec-WebSocket-Extensions` list(s), in the server's
    /// order (e.g. `permessage-deflate; server_no_context_takeover`). Each names an extension the request offered;
    /// its parameters are for that extension's code to judge (`deflate::accept_server_answer`). Empty when there
    /// are none.
    pub extensions: Vec<ExtensionOffer>,
    /// The subprotocol the server chose, one of those offered; `None` when it chose none.
    pub subprotocol: Option<String>,
}

/// Why a server's answer to our handshake was refused (4.1): each is a reason to _Fail the WebSocket Connection_.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientHandshakeError {
    /// Not an HTTP/1.x response, or the head is too large.
    Malformed,
    /// A status other than 101.
    Status(u16),
    /// No `Upgrade` header whose value is `websocket` (case-insensitive).
    MissingUpgrade,
    /// No `Connection` header holding the token `Upgrade` (case-insensitive).
    MissingConnection,
    /// No `Sec-WebSocket-Accept` header.
    MissingAccept,
    /// More than one `Sec-WebSocket-Accept` header.
    RepeatedAccept,
    /// `Sec-WebSocket-Accept` does not match our key.
    BadAccept,
    /// `Sec-WebSocket-Extensions` is not an extension list (9.1): not ASCII, an unclosed quote, or an element
    /// that does not start with a token.
    MalformedExtensions,
    /// `Sec-WebSocket-Extensions` names an extension the request did not offer; the name is given.
    UnrequestedExtension(String),
    /// `Sec-WebSocket-Protocol` names a subprotocol the request did not offer (or the request offered none); the
    /// value is given.
    UnrequestedSubprotocol(String),
    /// More than one `Sec-WebSocket-Protocol` header (11.3.4: at most one in a response).
    RepeatedSubprotocol,
}

impl fmt::Display for ClientHandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientHandshakeError::Malformed => f.write_str("malformed handshake response"),
            ClientHandshakeError::Status(s) => write!(f, "server answered {s}, not 101"),
            ClientHandshakeError::MissingUpgrade => {
                f.write_str("the response lacks Upgrade: websocket")
            }
            ClientHandshakeError::MissingConnection => {
                f.write_str("the response lacks Connection: Upgrade")
            }
            ClientHandshakeError::MissingAccept => {
                f.write_str("the response lacks Sec-WebSocket-Accept")
            }
            ClientHandshakeError::RepeatedAccept => {
                f.write_str("the response has more than one Sec-WebSocket-Accept")
            }
            ClientHandshakeError::BadAccept => {
                f.write_str("Sec-WebSocket-Accept does not match the key")
            }
            ClientHandshakeError::MalformedExtensions => {
                f.write_str("Sec-WebSocket-Extensions in the response is not an extension list")
            }
            ClientHandshakeError::UnrequestedExtension(name) => {
                write!(
                    f,
                    "the server chose extension {name:?}, which was not offered"
                )
            }
            ClientHandshakeError::UnrequestedSubprotocol(name) => {
                write!(
                    f,
                    "the server chose subprotocol {name:?}, which was not offered"
                )
            }
            ClientHandshakeError::RepeatedSubprotocol => {
                f.write_str("the response has more than one Sec-WebSocket-Protocol")
            }
        }
    }
}

impl std::error::Error for ClientHandshakeError {}

/// The longest response head a client waits for before calling the answer malformed.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Reads the server's answer to `request` from the start of `buf`, which may hold any prefix of the stream.
/// `Ok(None)` means the head is not complete yet. Once it is, every check of 4.1 is made, and the answer says
/// how long the head was (the bytes after it are the first frames) and what the server agreed to.
///
/// ```
/// use roomcast::protocol::handshake::{parse_server_response, ClientHandshakeError, ClientRequest};
///
/// // A real client draws its key with `ClientRequest::with_random_key()`; the RFC's sample key keeps this fixed.
/// let request = ClientRequest::with_key("dGhlIHNhbXBsZSBub25jZQ==");
/// let response = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
///     Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
/// assert_eq!(parse_server_response(&response[..40], &request), Ok(None));
/// let agreed = parse_server_response(response, &request).unwrap().expect("a complete head");
/// assert_eq!(agreed.head_len, response.len());
///
/// // An accept value computed from another key is refused: the server did not answer this request.
/// let other = ClientRequest::with_key("AAAAAAAAAAAAAAAAAAAAAA==");
/// assert_eq!(parse_server_response(response, &other), Err(ClientHandshakeError::BadAccept));
/// ```
pub fn parse_server_response(
    buf: &[u8],
    request: &ClientRequest,
) -> Result<Option<ServerResponse>, ClientHandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_RESPONSE_HEAD => return Ok(None),
        _ => return Err(ClientHandshakeError::Malformed),
    };
    // 4.1, answer item 1: anything but 101 is handled as plain HTTP, not as a WebSocket.
    match response.code {
        Some(101) => {}
        Some(code) => return Err(ClientHandshakeError::Status(code)),
        None => return Err(ClientHandshakeError::Malformed),
    }
    let values = |name: &'static str| {
        response
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.trim_ascii())
    };
    // 4.1, answer item 2: Upgrade is "websocket", compared ASCII case-insensitively.
    match values("upgrade").collect::<Vec<_>>()[..] {
        [upgrade] if upgrade.eq_ignore_ascii_case(b"websocket") => {}
        _ => return Err(ClientHandshakeError::MissingUpgrade),
    }
    // 4.1, answer item 3: Connection holds the token "Upgrade", ASCII case-insensitively.
    let has_upgrade_token = values("connection")
        .flat_map(|v| v.split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
    if !has_upgrade_token {
        return Err(ClientHandshakeError::MissingConnection);
    }
    // 4.1, answer item 4: exactly one Sec-WebSocket-Accept, base64(SHA-1(key + GUID)), whitespace ignored.
    let expected = accept_key(request.key.as_bytes());
    match values("sec-websocket-accept").collect::<Vec<_>>()[..] {
        [] => return Err(ClientHandshakeError::MissingAccept),
        [accept] if accept == expected.as_bytes() => {}
        [_] => return Err(ClientHandshakeError::BadAccept),
        _ => return Err(ClientHandshakeError::RepeatedAccept),
    }
    // 4.1, answer item 5 (list syntax in 9.1): every extension in use is one the request offered.
    let offered = request.offered_extensions();
    let extensions = parse_extensions(values("sec-websocket-extensions"))
        .map_err(|_| ClientHandshakeError::MalformedExtensions)?;
    if let Some(unrequested) = extensions
        .iter()
        .find(|answer| !offered.iter().any(|offer| offer.is(&answer.name)))
    {
        return Err(ClientHandshakeError::UnrequestedExtension(
            unrequested.name.clone(),
        ));
    }
    // 4.1, answer item 6, and 11.3.4 (at most once in a response): the subprotocol is one the request offered.
    let subprotocol = match values("sec-websocket-protocol").collect::<Vec<_>>()[..] {
        [] => None,
        [chosen] => {
            let chosen = String::from_utf8_lossy(chosen);
            if !request
                .subprotocols
                .iter()
                .any(|offered| *offered == chosen)
            {
                return Err(ClientHandshakeError::UnrequestedSubprotocol(
                    chosen.into_owned(),
                ));
            }
            Some(chosen.into_owned())
        }
        _ => return Err(ClientHandshakeError::RepeatedSubprotocol),
    };
    Ok(Some(ServerResponse {
        head_len,
        extensions,
        subprotocol,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE_REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";

    fn head(request: &[u8]) -> RequestHead {
        parse_request_head(request, 8192).unwrap().unwrap()
    }

    fn with_header_replaced(name: &str, line: &str) -> Vec<u8> {
        with_header_bytes_replaced(name, line.as_bytes())
    }

    /// The sample request with the line of header `name` replaced by `line` (which ends in CRLF, or is empty).
    fn with_header_bytes_replaced(name: &str, line: &[u8]) -> Vec<u8> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        let mut out = Vec::new();
        for l in SAMPLE_REQUEST.split_inclusive(|&b| b == b'\n') {
            if l.to_ascii_lowercase().starts_with(prefix.as_bytes()) {
                out.extend_from_slice(line);
            } else {
                out.extend_from_slice(l);
            }
        }
        out
    }

    #[test]
    fn rfc_sample_key_gives_the_rfc_accept_value() {
        // RFC 6455 1.3 and 4.2.2.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn valid_request_is_accepted() {
        assert_eq!(
            validate_upgrade(&head(SAMPLE_REQUEST)).as_deref(),
            Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
    }

    #[test]
    fn request_split_at_every_byte_is_partial_until_complete() {
        for cut in 0..SAMPLE_REQUEST.len() {
            assert_eq!(
                parse_request_head(&SAMPLE_REQUEST[..cut], 8192),
                Ok(None),
                "cut at {cut}"
            );
        }
        assert_eq!(head(SAMPLE_REQUEST).len, SAMPLE_REQUEST.len());
    }

    #[test]
    fn bytes_after_the_head_are_not_part_of_it() {
        let mut buf = SAMPLE_REQUEST.to_vec();
        buf.extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]);
        assert_eq!(head(&buf).len, SAMPLE_REQUEST.len());
    }

    #[test]
    fn header_block_over_the_limit_is_too_large() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 9000));
        assert_eq!(parse_request_head(&big, 8192), Err(HeadError::TooLarge));
        let mut complete = big.clone();
        complete.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse_request_head(&complete, 8192),
            Err(HeadError::TooLarge)
        );
    }

    #[test]
    fn too_many_header_lines_is_too_large() {
        let mut req = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADERS + 1 {
            req.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        assert_eq!(parse_request_head(&req, 8192), Err(HeadError::TooLarge));
    }

    #[test]
    fn garbage_is_malformed() {
        assert_eq!(
            parse_request_head(b"\x16\x03\x01\x00\xa5\x01\x00", 8192),
            Err(HeadError::Malformed)
        );
    }

    #[test]
    fn upgrade_and_connection_are_case_insensitive_token_lists() {
        let req = with_header_replaced("connection", "Connection: keep-alive, UPGRADE\r\n");
        let req = String::from_utf8(req)
            .unwrap()
            .replace("Upgrade: websocket", "upgrade: WebSocket");
        assert!(validate_upgrade(&head(req.as_bytes())).is_ok());
    }

    #[test]
    fn each_missing_requirement_has_its_own_error() {
        let cases = [
            ("host", "", UpgradeError::MissingHost),
            ("upgrade", "Upgrade: h2c\r\n", UpgradeError::MissingUpgrade),
            (
                "connection",
                "Connection: keep-alive\r\n",
                UpgradeError::MissingConnection,
            ),
            ("sec-websocket-key", "", UpgradeError::InvalidKey),
            (
                "sec-websocket-key",
                "Sec-WebSocket-Key: c2hvcnQ=\r\n",
                UpgradeError::InvalidKey,
            ),
            (
                "sec-websocket-version",
                "Sec-WebSocket-Version: 8\r\n",
                UpgradeError::UnsupportedVersion,
            ),
            (
                "sec-websocket-version",
                "",
                UpgradeError::UnsupportedVersion,
            ),
        ];
        for (name, line, expected) in cases {
            let req = with_header_replaced(name, line);
            assert_eq!(
                validate_upgrade(&head(&req)),
                Err(expected),
                "{name}: {line:?}"
            );
        }
    }

    #[test]
    fn statuses_match_the_rfc() {
        assert_eq!(UpgradeError::NotGet.status(), 405);
        assert_eq!(UpgradeError::UnsupportedVersion.status(), 426);
        assert_eq!(UpgradeError::InvalidKey.status(), 400);
    }

    #[test]
    fn post_and_http_1_0_are_refused() {
        let post = String::from_utf8(SAMPLE_REQUEST.to_vec())
            .unwrap()
            .replacen("GET", "POST", 1);
        assert_eq!(
            validate_upgrade(&head(post.as_bytes())),
            Err(UpgradeError::NotGet)
        );
        let old = String::from_utf8(SAMPLE_REQUEST.to_vec())
            .unwrap()
            .replacen("HTTP/1.1", "HTTP/1.0", 1);
        assert_eq!(
            validate_upgrade(&head(old.as_bytes())),
            Err(UpgradeError::OldHttpVersion)
        );
    }

    #[test]
    fn client_handshake_round_trips_with_the_server_side() {
        let request = ClientRequest::with_key(SAMPLE_KEY);
        let mut bytes = Vec::new();
        write_client_request("localhost:1", "/echo", &request, &mut bytes);
        let accept = validate_upgrade(&head(&bytes)).unwrap();
        let mut response = Vec::new();
        write_accept_response(&accept, &mut response);
        assert_eq!(
            parse_server_response(&response, &request),
            Ok(Some(ServerResponse {
                head_len: response.len(),
                extensions: Vec::new(),
                subprotocol: None,
            }))
        );
    }

    const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const SAMPLE_ACCEPT: &str = "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    /// A 101 response with exactly these header lines.
    fn response_with(lines: &[&str]) -> Vec<u8> {
        let mut out = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
        for line in lines {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// The answer to the sample key with its three required lines, plus `extra`.
    fn valid_response_plus(extra: &[&str]) -> Vec<u8> {
        let mut lines = vec!["Upgrade: websocket", "Connection: Upgrade", SAMPLE_ACCEPT];
        lines.extend_from_slice(extra);
        response_with(&lines)
    }

    fn offering(extensions: Option<&str>, subprotocols: &[&str]) -> ClientRequest {
        ClientRequest {
            extensions: extensions.map(str::to_owned),
            subprotocols: subprotocols.iter().map(|p| p.to_string()).collect(),
            ..ClientRequest::with_key(SAMPLE_KEY)
        }
    }

    fn answer(
        response: &[u8],
        request: &ClientRequest,
    ) -> Result<ServerResponse, ClientHandshakeError> {
        parse_server_response(response, request).map(|r| r.expect("a complete head"))
    }

    #[test]
    fn rfc_4_1_client_refuses_a_status_other_than_101() {
        let request = ClientRequest::with_key(SAMPLE_KEY);
        let response = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            answer(response, &request),
            Err(ClientHandshakeError::Status(403))
        );
    }

    #[test]
    fn rfc_4_1_client_refuses_101_without_upgrade_websocket() {
        let request = ClientRequest::with_key(SAMPLE_KEY);
        for upgrade in [None, Some("Upgrade: h2c"), Some("Upgrade: websocket, h2c")] {
            let lines: Vec<&str> = upgrade
                .into_iter()
                .chain(["Connection: Upgrade", SAMPLE_ACCEPT])
                .collect();
            assert_eq!(
                answer(&response_with(&lines), &request),
                Err(ClientHandshakeError::MissingUpgrade),
                "{upgrade:?}"
            );
        }
        let repeated = valid_response_plus(&["Upgrade: websocket"]);
        assert_eq!(
            answer(&repeated, &request),
            Err(ClientHandshakeError::MissingUpgrade)
        );
    }

    #[test]
    fn rfc_4_1_client_refuses_101_without_connection_upgrade() {
        let request = ClientRequest::with_key(SAMPLE_KEY);
        for connection in [
            None,
            Some("Connection: keep-alive"),
            Some("Connection: upgraded"),
        ] {
            let lines: Vec<&str> = ["Upgrade: websocket", SAMPLE_ACCEPT]
                .into_iter()
                .chain(connection)
                .collect();
            assert_eq!(
                answer(&response_with(&lines), &request),
                Err(ClientHandshakeError::MissingConnection),
                "{connection:?}"
            );
        }
    }

    #[test]
    fn rfc_4_1_client_takes_upgrade_and_connection_in_any_case_and_connection_as_a_token_list() {
        let request = ClientRequest::with_key(SAMPLE_KEY);
        let response = response_with(&[
            "upgrade: WebSocket",
            "connection: keep-alive, UPGRADE",
            SAMPLE_ACCEPT,
        ]);
        assert!(answer(&response, &request).is_ok());
    }

    #[test]
    fn rfc_4_1_client_refuses_a_missing_wrong_or_repeated_accept() {
        let request = ClientRequest::with_key(SAMPLE_KEY);
        let missing = response_with(&["Upgrade: websocket", "Connection: Upgrade"]);
        assert_eq!(
            answer(&missing, &request),
            Err(ClientHandshakeError::MissingAccept)
        );
        let other_key = ClientRequest::with_key("AAAAAAAAAAAAAAAAAAAAAA==");
        assert_eq!(
            answer(&valid_response_plus(&[]), &other_key),
            Err(ClientHandshakeError::BadAccept)
        );
        let repeated = valid_response_plus(&[SAMPLE_ACCEPT]);
        assert_eq!(
            answer(&repeated, &request),
            Err(ClientHandshakeError::RepeatedAccept)
        );
    }

    #[test]
    fn rfc_4_1_client_ignores_whitespace_around_the_accept_value() {
        let request = ClientRequest::with_key(SAMPLE_KEY);
        let response = response_with(&[
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Accept: \t s3pPLMBiTxaQ9kYGzzhZRbK+xOo=  ",
        ]);
        assert!(answer(&response, &request).is_ok());
    }

    #[test]
    fn rfc_4_1_client_refuses_an_extension_it_did_not_offer() {
        let none_offered = ClientRequest::with_key(SAMPLE_KEY);
        let response = valid_response_plus(&["Sec-WebSocket-Extensions: permessage-deflate"]);
        assert_eq!(
            answer(&response, &none_offered),
            Err(ClientHandshakeError::UnrequestedExtension(
                "permessage-deflate".into()
            ))
        );
        let deflate_offered = offering(Some("permessage-deflate; client_max_window_bits"), &[]);
        let response = valid_response_plus(&[
            "Sec-WebSocket-Extensions: permessage-deflate",
            "Sec-WebSocket-Extensions: x-webkit-deflate-frame",
        ]);
        assert_eq!(
            answer(&response, &deflate_offered),
            Err(ClientHandshakeError::UnrequestedExtension(
                "x-webkit-deflate-frame".into()
            ))
        );
    }

    #[test]
    fn rfc_4_1_client_reports_the_agreed_extensions_with_their_parameters() {
        let request = offering(
            Some("permessage-deflate; client_max_window_bits, x-test; a=\"12\""),
            &[],
        );
        let response = valid_response_plus(&[
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover , ",
            // 9.1: a quoted value is a token once unquoted.
            "Sec-WebSocket-Extensions: x-test; a=\"1\\2\"",
        ]);
        assert_eq!(
            answer(&response, &request).map(|r| r
                .extensions
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()),
            Ok(vec![
                "permessage-deflate; server_no_context_takeover".to_owned(),
                "x-test; a=12".to_owned(),
            ])
        );
    }

    #[test]
    fn rfc_9_1_client_refuses_an_extension_header_that_is_not_an_extension_list() {
        let request = offering(Some("permessage-deflate"), &[]);
        for value in [
            &b"permessage-deflate; x=\"unclosed"[..],
            b"; server_no_context_takeover",
            b"permessage deflate",
            b"permessage-deflate\xff",
        ] {
            let mut line = b"Sec-WebSocket-Extensions: ".to_vec();
            line.extend_from_slice(value);
            let mut response = valid_response_plus(&[]);
            let end = response.len() - 2;
            response.splice(end..end, line.into_iter().chain(*b"\r\n"));
            assert_eq!(
                answer(&response, &request),
                Err(ClientHandshakeError::MalformedExtensions),
                "{value:?}"
            );
        }
    }

    #[test]
    fn rfc_4_1_client_refuses_any_subprotocol_when_none_was_offered() {
        let request = ClientRequest::with_key(SAMPLE_KEY);
        let response = valid_response_plus(&["Sec-WebSocket-Protocol: chat"]);
        assert_eq!(
            answer(&response, &request),
            Err(ClientHandshakeError::UnrequestedSubprotocol("chat".into()))
        );
    }

    #[test]
    fn rfc_4_1_client_refuses_a_subprotocol_it_did_not_offer() {
        let request = offering(None, &["chat.v2", "chat.v1"]);
        for chosen in ["chat.v3", "CHAT.V1", "chat.v1, chat.v2"] {
            let line = format!("Sec-WebSocket-Protocol: {chosen}");
            assert_eq!(
                answer(&valid_response_plus(&[&line]), &request),
                Err(ClientHandshakeError::UnrequestedSubprotocol(chosen.into())),
                "{chosen}"
            );
        }
    }

    #[test]
    fn rfc_11_3_4_client_refuses_a_repeated_subprotocol() {
        let request = offering(None, &["chat.v1"]);
        let response = valid_response_plus(&[
            "Sec-WebSocket-Protocol: chat.v1",
            "Sec-WebSocket-Protocol: chat.v1",
        ]);
        assert_eq!(
            answer(&response, &request),
            Err(ClientHandshakeError::RepeatedSubprotocol)
        );
    }

    #[test]
    fn rfc_4_1_client_reports_the_chosen_subprotocol_or_none() {
        let request = offering(None, &["chat.v2", "chat.v1"]);
        let chosen = valid_response_plus(&["Sec-WebSocket-Protocol:  chat.v1 "]);
        assert_eq!(
            answer(&chosen, &request).map(|r| r.subprotocol),
            Ok(Some("chat.v1".to_owned()))
        );
        assert_eq!(
            answer(&valid_response_plus(&[]), &request).map(|r| r.subprotocol),
            Ok(None)
        );
    }

    #[test]
    fn client_response_split_at_every_byte_is_partial_until_complete() {
        let request = ClientRequest::with_key(SAMPLE_KEY);
        let mut response = valid_response_plus(&[]);
        let head_len = response.len();
        for cut in 0..head_len {
            assert_eq!(parse_server_response(&response[..cut], &request), Ok(None));
        }
        response.extend_from_slice(&[0x81, 0x00]);
        assert_eq!(
            answer(&response, &request).map(|r| r.head_len),
            Ok(head_len)
        );
    }

    #[test]
    fn rfc_4_1_client_request_offers_extensions_and_subprotocols_when_asked() {
        let request = offering(
            Some("permessage-deflate; client_max_window_bits"),
            &["a", "b"],
        );
        let mut bytes = Vec::new();
        write_client_request("h:1", "/ws", &request, &mut bytes);
        let head = head(&bytes);
        assert_eq!(
            head.single_value("sec-websocket-extensions"),
            Some(&b"permessage-deflate; client_max_window_bits"[..])
        );
        assert_eq!(
            head.single_value("sec-websocket-protocol"),
            Some(&b"a, b"[..])
        );
        let mut plain = Vec::new();
        write_client_request(
            "h:1",
            "/ws",
            &ClientRequest::with_key(SAMPLE_KEY),
            &mut plain,
        );
        let plain = self::head(&plain);
        assert_eq!(plain.values("sec-websocket-extensions").count(), 0);
        assert_eq!(plain.values("sec-websocket-protocol").count(), 0);
    }

    #[test]
    fn rfc_10_3_random_key_is_16_fresh_bytes_in_base64() {
        let first = random_key();
        assert_eq!(BASE64.decode(&first).map(|k| k.len()), Ok(16));
        assert_ne!(first, random_key());
        assert_ne!(
            ClientRequest::with_random_key().key,
            ClientRequest::with_random_key().key
        );
    }

    #[test]
    fn rfc_7230_5_3_2_absolute_form_target_has_the_path_after_the_authority() {
        let cases = [
            ("http://host:8080/ws?room=x", "/ws"),
            ("HTTPS://host/echo", "/echo"),
            ("http://host", "/"),
            ("http://host?x=1", "/"),
            ("http://user@host:1/", "/"),
            ("/ws?next=http://elsewhere/x", "/ws"),
            ("*", "*"),
            ("1http://host/ws", "1http://host/ws"),
        ];
        for (target, path) in cases {
            let request = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(head(request.as_bytes()).path(), path, "{target}");
        }
    }

    #[test]
    fn rfc_7230_5_4_host_with_non_ascii_or_control_bytes_is_invalid() {
        for host in [&b"h\xffst"[..], b"\xc3\x28", b"caf\xc3\xa9.example", b"a b"] {
            let mut line = b"Host: ".to_vec();
            line.extend_from_slice(host);
            line.extend_from_slice(b"\r\n");
            let req = with_header_bytes_replaced("host", &line);
            assert_eq!(
                validate_upgrade(&head(&req)),
                Err(UpgradeError::InvalidHost),
                "{host:?}"
            );
        }
    }

    #[test]
    fn rfc_7230_3_2_6_upgrade_or_connection_with_obs_text_is_refused_even_beside_the_token() {
        let upgrade = with_header_bytes_replaced("upgrade", b"Upgrade: websocket, \xff\r\n");
        assert_eq!(
            validate_upgrade(&head(&upgrade)),
            Err(UpgradeError::MissingUpgrade)
        );
        let connection =
            with_header_bytes_replaced("connection", b"Connection: Upgrade, \x80\x81\r\n");
        assert_eq!(
            validate_upgrade(&head(&connection)),
            Err(UpgradeError::MissingConnection)
        );
    }

    #[test]
    fn rfc_4_3_version_that_is_not_a_number_is_malformed_not_unsupported() {
        for version in [&b"\xff"[..], b"13\x80", b"thirteen", b"013", b"256", b"1 3"] {
            let mut line = b"Sec-WebSocket-Version: ".to_vec();
            line.extend_from_slice(version);
            line.extend_from_slice(b"\r\n");
            let req = with_header_bytes_replaced("sec-websocket-version", &line);
            assert_eq!(
                validate_upgrade(&head(&req)),
                Err(UpgradeError::MalformedVersion),
                "{version:?}"
            );
        }
        assert_eq!(UpgradeError::MalformedVersion.status(), 400);
    }

    #[test]
    fn rfc_4_3_version_numbers_run_from_0_to_255_without_leading_zeros() {
        for good in ["0", "8", "13", "99", "255"] {
            assert!(is_version_number(good.as_bytes()), "{good}");
        }
        for bad in ["", "00", "07", "256", "999", "1000", "+1", "-1"] {
            assert!(!is_version_number(bad.as_bytes()), "{bad}");
        }
    }
}
