//! RFC 6455 section 4: the opening handshake, for both ends.
//!
//! Owns reading an HTTP/1.1 request head (with `httparse`), checking it against 4.2.1, computing
//! `Sec-WebSocket-Accept` (4.2.2) and writing the 101 response; and, for clients, writing the request and
//! checking the server's answer (4.1). Routing and non-WebSocket HTTP live in `crate::http`.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The GUID every server appends to the client's key (4.2.2, step 5.4).
pub const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version this implementation speaks (4.1, 4.4).
pub const WEBSOCKET_VERSION: &str = "13";

/// The most header lines a request may carry before it is refused with 431.
pub const MAX_HEADERS: usize = 64;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)) (4.2.2).
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
    /// The path part of the target, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
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

    /// True if the request asks for a WebSocket at all (an `Upgrade` or `Sec-WebSocket-Key` header).
    pub fn wants_websocket(&self) -> bool {
        self.values("upgrade").next().is_some() || self.values("sec-websocket-key").next().is_some()
    }
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
    /// No `Host` (400).
    MissingHost,
    /// No `Upgrade: websocket` (400).
    MissingUpgrade,
    /// No `Connection: Upgrade` (400).
    MissingConnection,
    /// `Sec-WebSocket-Key` absent, repeated, or not 16 bytes in base64 (400).
    InvalidKey,
    /// `Sec-WebSocket-Version` is not 13 (426, with `Sec-WebSocket-Version: 13`).
    UnsupportedVersion,
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
            UpgradeError::MissingUpgrade => "missing or invalid Upgrade header: expected websocket",
            UpgradeError::MissingConnection => {
                "missing or invalid Connection header: expected Upgrade"
            }
            UpgradeError::InvalidKey => "Sec-WebSocket-Key must be 16 bytes in base64",
            UpgradeError::UnsupportedVersion => {
                "unsupported Sec-WebSocket-Version: this server speaks 13"
            }
        })
    }
}

impl std::error::Error for UpgradeError {}

/// Checks a request against 4.2.1 and returns the `Sec-WebSocket-Accept` value to answer with.
pub fn validate_upgrade(head: &RequestHead) -> Result<String, UpgradeError> {
    // 4.2.1 item 1: an HTTP/1.1 or higher GET request.
    if head.method != "GET" {
        return Err(UpgradeError::NotGet);
    }
    if head.minor_version < 1 {
        return Err(UpgradeError::OldHttpVersion);
    }
    // 4.2.1 item 2: a Host header field.
    if head.single_value("host").is_none_or(|h| h.is_empty()) {
        return Err(UpgradeError::MissingHost);
    }
    // 4.2.1 items 3 and 4: Upgrade holds "websocket", Connection holds "Upgrade", case-insensitively.
    if !head.has_token("upgrade", "websocket") {
        return Err(UpgradeError::MissingUpgrade);
    }
    if !head.has_token("connection", "upgrade") {
        return Err(UpgradeError::MissingConnection);
    }
    // 4.2.1 item 6 and 4.2.2: version 13, or 426 naming the version we speak.
    if head.single_value("sec-websocket-version") != Some(WEBSOCKET_VERSION.as_bytes()) {
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

/// Appends the 101 response that completes the handshake (4.2.2, step 5).
pub fn write_accept_response(accept: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    );
    out.extend_from_slice(b"Sec-WebSocket-Accept: ");
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// Appends a client's opening handshake for `path` on `host` with the base64 `key` (4.1).
pub fn write_client_request(host: &str, path: &str, key: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    );
}

/// Why a server's answer to our handshake was refused (4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientHandshakeError {
    /// Not an HTTP/1.1 response, or the head is too large.
    Malformed,
    /// A status other than 101.
    Status(u16),
    /// `Sec-WebSocket-Accept` does not match our key.
    BadAccept,
}

impl fmt::Display for ClientHandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientHandshakeError::Malformed => f.write_str("malformed handshake response"),
            ClientHandshakeError::Status(s) => write!(f, "server answered {s}, not 101"),
            ClientHandshakeError::BadAccept => {
                f.write_str("Sec-WebSocket-Accept does not match the key")
            }
        }
    }
}

impl std::error::Error for ClientHandshakeError {}

/// Reads the server's answer from the start of `buf`. Returns the head's length once complete: the bytes after it
/// are the first frames.
pub fn parse_server_response(buf: &[u8], key: &str) -> Result<Option<usize>, ClientHandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() <= 16 * 1024 => return Ok(None),
        _ => return Err(ClientHandshakeError::Malformed),
    };
    match response.code {
        Some(101) => {}
        Some(code) => return Err(ClientHandshakeError::Status(code)),
        None => return Err(ClientHandshakeError::Malformed),
    }
    let expected = accept_key(key.as_bytes());
    let accepted = response.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("sec-websocket-accept")
            && h.value.trim_ascii() == expected.as_bytes()
    });
    if accepted {
        Ok(Some(len))
    } else {
        Err(ClientHandshakeError::BadAccept)
    }
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
        let text = std::str::from_utf8(SAMPLE_REQUEST).unwrap();
        let mut out = String::new();
        for l in text.split_inclusive("\r\n") {
            if l.to_ascii_lowercase()
                .starts_with(&format!("{}:", name.to_ascii_lowercase()))
            {
                out.push_str(line);
            } else {
                out.push_str(l);
            }
        }
        out.into_bytes()
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
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let mut request = Vec::new();
        write_client_request("localhost:1", "/echo", key, &mut request);
        let accept = validate_upgrade(&head(&request)).unwrap();
        let mut response = Vec::new();
        write_accept_response(&accept, &mut response);
        assert_eq!(
            parse_server_response(&response, key),
            Ok(Some(response.len()))
        );
        assert_eq!(
            parse_server_response(&response, "AAAAAAAAAAAAAAAAAAAAAA=="),
            Err(ClientHandshakeError::BadAccept)
        );
    }
}
