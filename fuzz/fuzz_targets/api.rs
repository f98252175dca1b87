//! Fuzz target `api`: the server API's request judging, `http::api::read_head` on arbitrary request heads and
//! `http::api::read_call` on arbitrary bodies.
//!
//! Input: `[flags][request bytes]`. Flags bit 0: the API is on (with the key `KEY`); bit 1: the origin policy
//! allows `*` instead of nothing. The bytes are parsed with `protocol::handshake::parse_request_head` as the server
//! does; a head then goes through `read_head`, and when that takes it, the bytes after the head (cut to the
//! announced length) go through `read_call`. Asserts:
//! - nothing panics;
//! - with the API off every head is a 404, and without `Authorization: Bearer KEY` nothing gets past 401 (403 and
//!   404 may come first);
//! - an accepted head announces at most `MAX_BODY_BYTES`, and 0 for the endpoints read by GET;
//! - an accepted disconnect has a code of 1000 or 3000 to 4999 and a reason of at most `MAX_REASON_BYTES`;
//! - every refusal writes one HTTP/1.1 response with its status and a JSON body whose `error` is its label, and
//!   every label is one of `ApiError::LABELS`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::http::api::{
    read_call, read_head, ApiError, ApiKey, Call, Endpoint, MAX_BODY_BYTES, MAX_REASON_BYTES,
};
use roomcast::http::origin::OriginPolicy;
use roomcast::protocol::handshake::parse_request_head;

/// The key of the API when it is on.
const KEY: &str = "fuzz-api-key-0123456789";

/// The server's limit on a request head.
const MAX_HEAD_BYTES: usize = 8 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, request)) = data.split_first() else {
        return;
    };
    let key = ApiKey::new(KEY).expect("the key is long enough");
    let key = (flags & 1 != 0).then_some(&key);
    let origins = OriginPolicy {
        allowed: if flags & 2 != 0 {
            vec!["*".to_owned()]
        } else {
            Vec::new()
        },
    };
    let Ok(Some(head)) = parse_request_head(request, MAX_HEAD_BYTES) else {
        return;
    };
    let judged = read_head(&head, key, &origins);
    let has_key = head
        .values("authorization")
        .any(|v| v.windows(KEY.len()).any(|w| w == KEY.as_bytes()));
    match &judged {
        Err(error) => check_refusal(error),
        Ok(accepted) => {
            assert!(key.is_some(), "the API is off but took {accepted:?}");
            assert!(has_key, "no key shown but took {accepted:?}");
            assert!(accepted.body_len <= MAX_BODY_BYTES, "{accepted:?}");
            if matches!(accepted.endpoint, Endpoint::Rooms | Endpoint::Room(_)) {
                assert_eq!(accepted.body_len, 0, "a GET with a body: {accepted:?}");
            }
            let rest = request.get(head.len..).unwrap_or_default();
            let body = &rest[..rest.len().min(accepted.body_len)];
            match read_call(&accepted.endpoint, body) {
                Err(error) => {
                    assert!(matches!(error, ApiError::BadRequest(_)), "{error:?}");
                    check_refusal(&error);
                }
                Ok(Call::Disconnect { code, reason, .. }) => {
                    assert!(code == 1000 || (3000..=4999).contains(&code), "code {code}");
                    assert!(reason.len() <= MAX_REASON_BYTES, "reason {reason:?}");
                }
                Ok(Call::Room { name }) => {
                    assert!(!name.is_empty() && !name.contains('/'), "room {name:?}");
                }
                Ok(_) => {}
            }
        }
    }
    if key.is_none() {
        assert_eq!(judged, Err(ApiError::NotFound));
    }
    if !has_key {
        assert!(
            matches!(
                judged,
                Err(ApiError::NotFound | ApiError::ForbiddenOrigin | ApiError::Unauthorized)
            ),
            "no key shown, yet {judged:?}"
        );
    }
});

/// A refusal's label is a known one, and its response is one HTTP/1.1 answer with its status and JSON body.
fn check_refusal(error: &ApiError) {
    assert!(ApiError::LABELS.contains(&error.label()), "{error:?}");
    for keep_alive in [false, true] {
        let mut out = Vec::new();
        error.write_response(keep_alive, &mut out);
        let text = std::str::from_utf8(&out).expect("a response is UTF-8");
        let status_line = format!("HTTP/1.1 {} ", error.status());
        assert!(text.starts_with(&status_line), "{text}");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        let length = format!("content-length: {}", body.len());
        assert!(head.to_ascii_lowercase().contains(&length), "{text}");
        let json: serde_json::Value = serde_json::from_str(body).expect("the body is JSON");
        assert_eq!(json["error"], error.label(), "{text}");
    }
}
