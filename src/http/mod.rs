//! Plain HTTP around the WebSocket routes: routing a request head, the origin check, and every non-101 response.
//!
//! Owns which paths exist and what each answers: the page at `/`, `/healthz`, `/metrics`, and the WebSocket
//! endpoints `/ws` (also an Upgrade on `/`) and `/echo`. It holds no sockets: it turns a parsed request head into a
//! decision, and decisions into response bytes. The WebSocket handshake rules themselves are in
//! `crate::protocol::handshake`.

pub mod api;
pub mod metrics;
pub mod origin;

use std::fmt;

use crate::protocol::deflate::{negotiate_server, DeflateParams, ServerDeflatePolicy};
use crate::protocol::handshake::{self, HeadError, RequestHead, UpgradeError};

/// The browser client, embedded in the binary.
pub const INDEX_HTML: &str = include_str!("../web/index.html");

/// A WebSocket service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// The chat (`/ws`, or an Upgrade on `/`).
    Chat,
    /// Echoes every message back as received (`/echo`), for conformance tests.
    Echo,
}

impl Endpoint {
    /// A short stable name, used in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Echo => "echo",
        }
    }

    /// What the endpoint agrees to of permessage-deflate (RFC 7692 7.1). The chat keeps no context in either
    /// direction, so one compressed frame serves every member of a room and a connection holds no zlib state
    /// between messages; `/echo` agrees to what the client offers, as a conformance route should.
    pub fn deflate_policy(self) -> ServerDeflatePolicy {
        match self {
            Endpoint::Chat => ServerDeflatePolicy::NO_CONTEXT_TAKEOVER,
            Endpoint::Echo => ServerDeflatePolicy::AS_OFFERED,
        }
    }
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /`: the chat page.
    Page,
    /// `GET /healthz`: liveness.
    Healthz,
    /// `GET /metrics`: Prometheus text.
    Metrics,
    /// A valid WebSocket upgrade for `endpoint`; `accept` is the `Sec-WebSocket-Accept` value.
    Upgrade {
        /// The service.
        endpoint: Endpoint,
        /// The value for `Sec-WebSocket-Accept`.
        accept: String,
        /// permessage-deflate as agreed (RFC 7692 5), if the client offered it, the server allows it, and an offer
        /// could be honoured.
        deflate: Option<DeflateParams>,
    },
}

/// Why a request was refused; each has an HTTP status and a plain-text reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The head could not be read (400 or 431).
    Head(HeadError),
    /// No such path (404).
    NotFound,
    /// A method other than GET or HEAD (405).
    MethodNotAllowed,
    /// A WebSocket request that breaks RFC 6455 4.2.1 (400 or 426).
    Upgrade(UpgradeError),
    /// A browser page from another site (403): cross-site WebSocket hijacking protection.
    ForbiddenOrigin,
    /// The server is at its connection limit (503).
    Overloaded,
    /// The client's address holds as many connections as one address may (503, with `Retry-After`).
    TooManyFromAddress,
    /// The client's address starts requests faster than one address may (429, with `Retry-After`).
    TooFastFromAddress {
        /// Whole seconds until a request from the address would pass.
        retry_after_secs: u32,
    },
}

impl Refusal {
    /// The HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            Refusal::Head(HeadError::TooLarge) => 431,
            Refusal::Head(HeadError::Malformed) => 400,
            Refusal::NotFound => 404,
            Refusal::MethodNotAllowed => 405,
            Refusal::Upgrade(e) => e.status(),
            Refusal::ForbiddenOrigin => 403,
            Refusal::Overloaded | Refusal::TooManyFromAddress => 503,
            Refusal::TooFastFromAddress { .. } => 429,
        }
    }

    /// A short stable label, used as the `reason` label of the handshake-failure metric.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Head(HeadError::TooLarge) => "header_too_large",
            Refusal::Head(HeadError::Malformed) => "malformed",
            Refusal::NotFound => "not_found",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::Upgrade(UpgradeError::NotGet) => "method_not_allowed",
            Refusal::Upgrade(UpgradeError::OldHttpVersion) => "http_version",
            Refusal::Upgrade(UpgradeError::MissingHost) => "missing_host",
            Refusal::Upgrade(UpgradeError::InvalidHost) => "invalid_host",
            Refusal::Upgrade(UpgradeError::MissingUpgrade) => "missing_upgrade",
            Refusal::Upgrade(UpgradeError::MissingConnection) => "missing_connection",
            Refusal::Upgrade(UpgradeError::InvalidKey) => "invalid_key",
            Refusal::Upgrade(UpgradeError::MalformedVersion) => "malformed_version",
            Refusal::Upgrade(UpgradeError::UnsupportedVersion) => "unsupported_version",
            Refusal::Upgrade(UpgradeError::MalformedExtensions) => "malformed_extensions",
            Refusal::ForbiddenOrigin => "forbidden_origin",
            Refusal::Overloaded => "overloaded",
            Refusal::TooManyFromAddress => "too_many_from_address",
            Refusal::TooFastFromAddress { .. } => "too_fast_from_address",
        }
    }

    /// Every label `label` can return, so metrics can show zeros.
    pub const LABELS: [&'static str; 17] = [
        "header_too_large",
        "malformed",
        "not_found",
        "method_not_allowed",
        "http_version",
        "missing_host",
        "invalid_host",
        "missing_upgrade",
        "missing_connection",
        "invalid_key",
        "malformed_version",
        "unsupported_version",
        "malformed_extensions",
        "forbidden_origin",
        "overloaded",
        "too_many_from_address",
        "too_fast_from_address",
    ];

    /// Appends the full response: status line, headers, and the reason as the body.
    pub fn write_response(self, out: &mut Vec<u8>) {
        let mut extra: &[(&str, &str)] = &[];
        let retry_after;
        let with_retry;
        match self {
            // 4.2.2: tell the client which version we speak.
            Refusal::Upgrade(UpgradeError::UnsupportedVersion) => {
                extra = &[("Sec-WebSocket-Version", handshake::WEBSOCKET_VERSION)]
            }
            // RFC 9110 15.5.6: a 405 lists the methods the server answers: GET and HEAD for any path...
            Refusal::MethodNotAllowed => extra = &[("Allow", "GET, HEAD")],
            // ...and only GET for a WebSocket handshake (RFC 6455 4.2.1 item 1).
            Refusal::Upgrade(UpgradeError::NotGet) => extra = &[("Allow", "GET")],
            // RFC 9110 10.2.3 and RFC 6585 4: when to come back.
            Refusal::TooManyFromAddress | Refusal::TooFastFromAddress { .. } => {
                let secs = match self {
                    Refusal::TooFastFromAddress { retry_after_secs } => retry_after_secs,
                    _ => ADDRESS_RETRY_AFTER_SECS,
                };
                retry_after = secs.to_string();
                with_retry = [("Retry-After", retry_after.as_str())];
                extra = &with_retry;
            }
            _ => {}
        }
        let body = format!("{self}\n");
        write_response(
            self.status(),
            "text/plain; charset=utf-8",
            extra,
            body.as_bytes(),
            out,
        );
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Head(e) => e.fmt(f),
            Refusal::NotFound => f.write_str("not found"),
            Refusal::MethodNotAllowed => f.write_str("method not allowed: use GET"),
            Refusal::Upgrade(e) => e.fmt(f),
            Refusal::ForbiddenOrigin => f.write_str("origin not allowed"),
            Refusal::Overloaded => f.write_str("server at its connection limit, try again later"),
            Refusal::TooManyFromAddress => {
                f.write_str("too many connections from your address, try again later")
            }
            Refusal::TooFastFromAddress { .. } => {
                f.write_str("too many requests from your address, try again later")
            }
        }
    }
}

/// Whether the server agrees to permessage-deflate (RFC 7692) when a client offers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Agree to the first offer the endpoint's policy can honour.
    Deflate,
    /// Decline every offer: messages go uncompressed.
    Off,
}

/// Routes a request head. Method first (405), then path (404), then the WebSocket rules (400, 426), then the
/// origin (403). HEAD is answered like GET without the body (RFC 9110 9.3.2); a WebSocket handshake must be GET.
/// An upgrade agrees to permessage-deflate as `compression` and the endpoint allow.
pub fn route(
    head: &RequestHead,
    origins: &origin::OriginPolicy,
    compression: Compression,
) -> Result<Route, Refusal> {
    if head.method != "GET" && head.method != "HEAD" {
        return Err(Refusal::MethodNotAllowed);
    }
    let endpoint = match head.path() {
        "/" if head.wants_websocket() => Endpoint::Chat,
        "/" => return Ok(Route::Page),
        "/healthz" => return Ok(Route::Healthz),
        "/metrics" => return Ok(Route::Metrics),
        "/ws" => Endpoint::Chat,
        "/echo" => Endpoint::Echo,
        // RFC 6455 4.2.2: a service we do not provide is a 404.
        _ => return Err(Refusal::NotFound),
    };
    let accept = handshake::validate_upgrade(head).map_err(Refusal::Upgrade)?;
    // The offers are read whether or not compression is on: a malformed list is a bad request either way.
    let offers = handshake::extension_offers(head).map_err(Refusal::Upgrade)?;
    // RFC 6455 10.2: an origin we do not expect is a 403.
    if !origins.allows(head) {
        return Err(Refusal::ForbiddenOrigin);
    }
    let deflate = match compression {
        Compression::Deflate => negotiate_server(&offers, &endpoint.deflate_policy()),
        Compression::Off => None,
    };
    Ok(Route::Upgrade {
        endpoint,
        accept,
        deflate,
    })
}

/// The `Retry-After` of a refusal for too many connections from one address: a guess, since it depends on
/// when the address's other connections end.
const ADDRESS_RETRY_AFTER_SECS: u32 = 10;

/// The text of a status code's reason phrase.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Appends a complete HTTP/1.1 response that closes the connection after the body.
pub fn write_response(
    status: u16,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    out: &mut Vec<u8>,
) {
    write_head(status, content_type, body.len(), false, extra, out);
    out.extend_from_slice(body);
}

/// Appends an HTTP/1.1 response head: the status line, the headers every answer of ours carries (type, length,
/// `Connection`, `Cache-Control: no-store`), then `extra` and the blank line that ends the head.
pub(crate) fn write_head(
    status: u16,
    content_type: &str,
    content_length: usize,
    keep_alive: bool,
    extra: &[(&str, &str)],
    out: &mut Vec<u8>,
) {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {content_length}\r\n\
         Connection: {connection}\r\nCache-Control: no-store\r\n",
        reason_phrase(status),
    );
    for (name, value) in extra {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
}

/// Cuts a complete response down to its head, for a HEAD request (RFC 9110 9.3.2): the headers, Content-Length
/// included, stay as they would be for GET.
pub fn drop_body(response: &mut Vec<u8>) {
    if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
        response.truncate(end + 4);
    }
}

/// The connection token in a request target's query (`/ws?token=...`), percent-decoded: browsers cannot set
/// headers on a WebSocket, so a page may put its token there. The first `token` parameter counts.
pub fn query_token(target: &str) -> Option<String> {
    let (_, query) = target.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .and_then(api::percent_decode)
}

/// Appends the chat page.
pub fn write_page(out: &mut Vec<u8>) {
    write_response(
        200,
        "text/html; charset=utf-8",
        &[
            ("X-Content-Type-Options", "nosniff"),
            ("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self' ws: wss:"),
        ],
        INDEX_HTML.as_bytes(),
        out,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> RequestHead {
        handshake::parse_request_head(text.as_bytes(), 8192)
            .unwrap()
            .unwrap()
    }

    fn upgrade(path: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    }

    fn any_origin() -> origin::OriginPolicy {
        origin::OriginPolicy::default()
    }

    /// The permessage-deflate agreed for an upgrade of `path` offering `offer`.
    fn agreed(path: &str, offer: &str, compression: Compression) -> Option<DeflateParams> {
        let request = upgrade(path).replacen(
            "\r\n\r\n",
            &format!("\r\nSec-WebSocket-Extensions: {offer}\r\n\r\n"),
            1,
        );
        match route(&head(&request), &any_origin(), compression) {
            Ok(Route::Upgrade { deflate, .. }) => deflate,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rfc_7692_the_chat_agrees_to_deflate_without_context_takeover_either_way() {
        // What Chromium offers.
        let params = agreed(
            "/ws",
            "permessage-deflate; client_max_window_bits",
            Compression::Deflate,
        )
        .expect("agreed");
        assert!(params.server_no_context_takeover && params.client_no_context_takeover);
        assert_eq!(
            params.response_header(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
    }

    #[test]
    fn rfc_7692_echo_agrees_to_context_takeover_as_offered() {
        let params = agreed("/echo", "permessage-deflate", Compression::Deflate).expect("agreed");
        assert!(!params.server_no_context_takeover && !params.client_no_context_takeover);
        let params = agreed(
            "/echo",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10",
            Compression::Deflate,
        )
        .expect("agreed");
        assert!(params.server_no_context_takeover);
        assert_eq!(params.server_window_bits(), 10);
    }

    #[test]
    fn compression_off_or_other_extensions_agree_to_nothing() {
        assert_eq!(agreed("/ws", "permessage-deflate", Compression::Off), None);
        assert_eq!(
            agreed("/ws", "x-webkit-deflate-frame", Compression::Deflate),
            None
        );
    }

    #[test]
    fn a_malformed_extension_list_is_a_400_whether_or_not_compression_is_on() {
        for compression in [Compression::Deflate, Compression::Off] {
            let request = upgrade("/ws").replacen(
                "\r\n\r\n",
                "\r\nSec-WebSocket-Extensions: permessage-deflate; a=\"unclosed\r\n\r\n",
                1,
            );
            let refusal = route(&head(&request), &any_origin(), compression).unwrap_err();
            assert_eq!(refusal, Refusal::Upgrade(UpgradeError::MalformedExtensions));
            assert_eq!(refusal.status(), 400);
        }
    }

    #[test]
    fn plain_get_of_root_is_the_page_and_upgrade_of_root_is_the_chat() {
        assert_eq!(
            route(
                &head("GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
                &any_origin(),
                Compression::Deflate
            ),
            Ok(Route::Page)
        );
        assert!(matches!(
            route(&head(&upgrade("/")), &any_origin(), Compression::Deflate),
            Ok(Route::Upgrade {
                endpoint: Endpoint::Chat,
                ..
            })
        ));
    }

    #[test]
    fn ws_and_echo_paths_upgrade_with_query_strings_ignored() {
        assert!(matches!(
            route(
                &head(&upgrade("/ws?room=x")),
                &any_origin(),
                Compression::Deflate
            ),
            Ok(Route::Upgrade {
                endpoint: Endpoint::Chat,
                ..
            })
        ));
        assert!(matches!(
            route(
                &head(&upgrade("/echo")),
                &any_origin(),
                Compression::Deflate
            ),
            Ok(Route::Upgrade {
                endpoint: Endpoint::Echo,
                ..
            })
        ));
    }

    #[test]
    fn head_is_routed_like_get_but_cannot_upgrade() {
        assert_eq!(
            route(
                &head("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"),
                &any_origin(),
                Compression::Deflate
            ),
            Ok(Route::Page)
        );
        assert_eq!(
            route(
                &head("HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n"),
                &any_origin(),
                Compression::Deflate,
            ),
            Ok(Route::Healthz)
        );
        let upgrade_by_head = upgrade("/ws").replacen("GET", "HEAD", 1);
        assert_eq!(
            route(&head(&upgrade_by_head), &any_origin(), Compression::Deflate),
            Err(Refusal::Upgrade(UpgradeError::NotGet))
        );
    }

    #[test]
    fn drop_body_keeps_the_head_and_its_content_length() {
        let mut out = Vec::new();
        write_response(200, "text/plain", &[], b"ok\n", &mut out);
        drop_body(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with(
            "Content-Length: 3\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n"
        ));
    }

    #[test]
    fn method_is_checked_before_path() {
        assert_eq!(
            route(
                &head("POST /nope HTTP/1.1\r\nHost: a\r\n\r\n"),
                &any_origin(),
                Compression::Deflate,
            ),
            Err(Refusal::MethodNotAllowed)
        );
        assert_eq!(
            route(
                &head("GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"),
                &any_origin(),
                Compression::Deflate,
            ),
            Err(Refusal::NotFound)
        );
    }

    #[test]
    fn plain_get_of_a_websocket_path_is_a_bad_upgrade() {
        assert_eq!(
            route(
                &head("GET /ws HTTP/1.1\r\nHost: a\r\n\r\n"),
                &any_origin(),
                Compression::Deflate
            ),
            Err(Refusal::Upgrade(UpgradeError::MissingUpgrade))
        );
    }

    #[test]
    fn version_refusal_names_the_supported_version() {
        let mut out = Vec::new();
        Refusal::Upgrade(UpgradeError::UnsupportedVersion).write_response(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
    }

    #[test]
    fn refusal_body_carries_the_reason() {
        let mut out = Vec::new();
        Refusal::Upgrade(UpgradeError::InvalidKey).write_response(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(text.ends_with("\r\n\r\nSec-WebSocket-Key must be 16 bytes in base64\n"));
    }

    #[test]
    fn every_label_is_listed() {
        let all = [
            Refusal::Head(HeadError::TooLarge),
            Refusal::Head(HeadError::Malformed),
            Refusal::NotFound,
            Refusal::MethodNotAllowed,
            Refusal::Upgrade(UpgradeError::OldHttpVersion),
            Refusal::Upgrade(UpgradeError::MissingHost),
            Refusal::Upgrade(UpgradeError::InvalidHost),
            Refusal::Upgrade(UpgradeError::MissingUpgrade),
            Refusal::Upgrade(UpgradeError::MissingConnection),
            Refusal::Upgrade(UpgradeError::InvalidKey),
            Refusal::Upgrade(UpgradeError::MalformedVersion),
            Refusal::Upgrade(UpgradeError::UnsupportedVersion),
            Refusal::Upgrade(UpgradeError::MalformedExtensions),
            Refusal::ForbiddenOrigin,
            Refusal::Overloaded,
            Refusal::TooManyFromAddress,
            Refusal::TooFastFromAddress {
                retry_after_secs: 1,
            },
        ];
        for r in all {
            assert!(Refusal::LABELS.contains(&r.label()), "{r:?}");
        }
        assert_eq!(all.len(), Refusal::LABELS.len());
    }

    /// The value of header `name` in a response, if present once.
    fn response_header(response: &str, name: &str) -> Option<String> {
        let head = response.split("\r\n\r\n").next().unwrap_or_default();
        let mut values = head.split("\r\n").filter_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        });
        let first = values.next();
        assert_eq!(values.next(), None, "{name} is repeated");
        first
    }

    #[test]
    fn rfc_9110_405_for_another_method_allows_get_and_head() {
        let refusal = route(
            &head("DELETE /healthz HTTP/1.1\r\nHost: a\r\n\r\n"),
            &any_origin(),
            Compression::Deflate,
        )
        .unwrap_err();
        let mut out = Vec::new();
        refusal.write_response(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert_eq!(
            response_header(&text, "allow").as_deref(),
            Some("GET, HEAD")
        );
    }

    #[test]
    fn rfc_6455_4_2_1_405_for_a_handshake_by_head_allows_only_get() {
        let refusal = route(
            &head(&upgrade("/echo").replacen("GET", "HEAD", 1)),
            &any_origin(),
            Compression::Deflate,
        )
        .unwrap_err();
        let mut out = Vec::new();
        refusal.write_response(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert_eq!(response_header(&text, "allow").as_deref(), Some("GET"));
    }

    #[test]
    fn only_405_responses_carry_allow() {
        for refusal in [
            Refusal::NotFound,
            Refusal::Upgrade(UpgradeError::InvalidKey),
            Refusal::Upgrade(UpgradeError::UnsupportedVersion),
        ] {
            let mut out = Vec::new();
            refusal.write_response(&mut out);
            let text = String::from_utf8(out).unwrap();
            assert_eq!(response_header(&text, "allow"), None, "{refusal:?}");
        }
    }

    #[test]
    fn rfc_7230_5_3_2_absolute_form_targets_route_like_their_paths() {
        let cases = [
            ("http://a:8080/ws?room=x", Endpoint::Chat),
            ("http://a/echo", Endpoint::Echo),
            ("http://a:8080", Endpoint::Chat),
            ("http://a/", Endpoint::Chat),
        ];
        for (target, endpoint) in cases {
            assert!(
                matches!(
                    route(&head(&upgrade(target)), &any_origin(), Compression::Deflate),
                    Ok(Route::Upgrade { endpoint: e, .. }) if e == endpoint
                ),
                "{target}"
            );
        }
        assert_eq!(
            route(
                &head("GET http://a:8080/ HTTP/1.1\r\nHost: a\r\n\r\n"),
                &any_origin(),
                Compression::Deflate,
            ),
            Ok(Route::Page)
        );
        assert_eq!(
            route(
                &head("GET http://a/nope HTTP/1.1\r\nHost: a\r\n\r\n"),
                &any_origin(),
                Compression::Deflate,
            ),
            Err(Refusal::NotFound)
        );
    }

    /// Reads `request` the way the server does and routes it: the refusal, if any.
    fn refusal_for(request: &[u8]) -> Option<Refusal> {
        match handshake::parse_request_head(request, 8192) {
            Ok(Some(head)) => route(&head, &any_origin(), Compression::Deflate).err(),
            Ok(None) => panic!("incomplete request {request:?}"),
            Err(e) => Some(Refusal::Head(e)),
        }
    }

    /// The header lines of a valid upgrade request, in order.
    const UPGRADE_HEADERS: [(&str, &str); 5] = [
        ("Host", "a"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];

    /// An upgrade request for `/ws` whose header `replaced` has the raw value `value`.
    fn upgrade_with_raw_value(replaced: &str, value: &[u8]) -> Vec<u8> {
        let mut request = b"GET /ws HTTP/1.1\r\n".to_vec();
        for (name, good) in UPGRADE_HEADERS {
            request.extend_from_slice(name.as_bytes());
            request.extend_from_slice(b": ");
            if name == replaced {
                request.extend_from_slice(value);
            } else {
                request.extend_from_slice(good.as_bytes());
            }
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        request
    }

    #[test]
    fn rfc_6455_4_2_1_non_ascii_bytes_in_handshake_tokens_are_refused_with_400() {
        let bad_bytes: [&[u8]; 6] = [
            b"\xff",
            b"\xc3\x28",
            b"\x80",
            b"\xc3\xa9",
            b"\xfe\xff\xfd",
            b"\xa0",
        ];
        for (name, good) in UPGRADE_HEADERS {
            assert_eq!(
                refusal_for(&upgrade_with_raw_value(name, good.as_bytes())),
                None,
                "the unaltered request is accepted"
            );
            for bad in bad_bytes {
                // The bad bytes alone, after the good value and before it.
                for value in [
                    bad.to_vec(),
                    [good.as_bytes(), bad].concat(),
                    [bad, good.as_bytes()].concat(),
                ] {
                    let refusal = refusal_for(&upgrade_with_raw_value(name, &value));
                    assert_eq!(
                        refusal.map(Refusal::status),
                        Some(400),
                        "{name}: {value:?} gave {refusal:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn address_refusals_say_when_to_come_back() {
        let mut out = Vec::new();
        Refusal::TooFastFromAddress {
            retry_after_secs: 3,
        }
        .write_response(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nRetry-After: 3\r\n"), "{text}");
        let mut out = Vec::new();
        Refusal::TooManyFromAddress.write_response(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nRetry-After: 10\r\n"), "{text}");
    }
}
