//! The API's decisions on request heads and bodies, one refusal at a time.

use super::*;
use crate::protocol::handshake;

const KEY: &str = "the-api-key-of-the-tests";

fn key() -> ApiKey {
    ApiKey::new(KEY).expect("long enough")
}

/// The head of `request` (a head only, ending in a blank line).
fn head(request: &str) -> RequestHead {
    handshake::parse_request_head(request.as_bytes(), 8192)
        .expect("parses")
        .expect("complete")
}

/// A request for `method path` with the right key and `extra` header lines.
fn request(method: &str, path: &str, extra: &str) -> RequestHead {
    head(&format!(
        "{method} {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {KEY}\r\n{extra}\r\n"
    ))
}

fn json_post(path: &str, len: usize) -> RequestHead {
    request(
        "POST",
        path,
        &format!("Content-Type: application/json\r\nContent-Length: {len}\r\n"),
    )
}

fn judge(head: &RequestHead) -> Result<Head, ApiError> {
    read_head(head, Some(&key()), &OriginPolicy::default())
}

#[test]
fn the_api_paths_are_api_and_only_they() {
    for path in ["/api", "/api/", "/api/publish", "/api/rooms/x"] {
        assert!(is_api_path(path), "{path}");
    }
    for path in ["/", "/apix", "/ws", "/metrics", "/apis/publish"] {
        assert!(!is_api_path(path), "{path}");
    }
}

#[test]
fn every_endpoint_is_taken_with_its_method() {
    let cases = [
        (json_post("/api/publish", 10), Endpoint::Publish, 10),
        (json_post("/api/dm", 3), Endpoint::Dm, 3),
        (json_post("/api/disconnect", 2), Endpoint::Disconnect, 2),
        (request("GET", "/api/rooms", ""), Endpoint::Rooms, 0),
        (
            request("GET", "/api/rooms/l%C3%B6bby%20one", ""),
            Endpoint::Room("löbby one".into()),
            0,
        ),
    ];
    for (head, endpoint, body_len) in cases {
        let judged = judge(&head).expect("taken");
        assert_eq!(judged.endpoint, endpoint);
        assert_eq!(judged.body_len, body_len);
        assert!(judged.keep_alive);
        assert!(!judged.head_only);
    }
}

#[test]
fn the_api_is_a_404_everywhere_without_a_key() {
    for head in [
        json_post("/api/publish", 10),
        request("GET", "/api/rooms", ""),
        request("DELETE", "/api/nope", ""),
    ] {
        assert_eq!(
            read_head(&head, None, &OriginPolicy::default()),
            Err(ApiError::NotFound)
        );
    }
}

#[test]
fn a_missing_or_wrong_key_is_a_401_that_does_not_say_which() {
    let missing = head("GET /api/rooms HTTP/1.1\r\nHost: a\r\n\r\n");
    let wrong = head("GET /api/rooms HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer the-api-key-of-the-test\r\n\r\n");
    let other_scheme = head(&format!(
        "GET /api/rooms HTTP/1.1\r\nHost: a\r\nAuthorization: Basic {KEY}\r\n\r\n"
    ));
    let twice = head(&format!(
        "GET /api/rooms HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {KEY}\r\nAuthorization: Bearer {KEY}\r\n\r\n"
    ));
    let mut bodies = Vec::new();
    for head in [missing, wrong, other_scheme, twice] {
        let refusal = judge(&head).unwrap_err();
        assert_eq!(refusal, ApiError::Unauthorized);
        let mut out = Vec::new();
        refusal.write_response(false, &mut out);
        bodies.push(out);
    }
    assert!(bodies.windows(2).all(|pair| pair[0] == pair[1]));
    let text = String::from_utf8(bodies.remove(0)).unwrap();
    assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{text}");
    assert!(text.contains("\r\nWWW-Authenticate: Bearer\r\n"), "{text}");
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let head = head(&format!(
        "GET /api/rooms HTTP/1.1\r\nHost: a\r\nAuthorization: bEaReR   {KEY}\r\n\r\n"
    ));
    assert!(judge(&head).is_ok());
}

#[test]
fn the_key_is_checked_before_the_path_so_strangers_learn_no_routes() {
    let stranger = head("GET /api/secret-route HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(judge(&stranger), Err(ApiError::Unauthorized));
    assert_eq!(
        judge(&request("GET", "/api/secret-route", "")),
        Err(ApiError::NotFound)
    );
}

#[test]
fn a_wrong_method_is_a_405_naming_the_right_ones() {
    assert_eq!(
        judge(&request("GET", "/api/publish", "")),
        Err(ApiError::MethodNotAllowed { allow: "POST" })
    );
    let refusal = judge(&request("POST", "/api/rooms", "Content-Length: 0\r\n")).unwrap_err();
    assert_eq!(refusal, ApiError::MethodNotAllowed { allow: "GET, HEAD" });
    let mut out = Vec::new();
    refusal.write_response(false, &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("\r\nAllow: GET, HEAD\r\n"), "{text}");
    assert_eq!(
        judge(&request("OPTIONS", "/api/dm", "")),
        Err(ApiError::MethodNotAllowed { allow: "POST" }),
        "no CORS preflight is answered"
    );
}

#[test]
fn a_post_without_a_length_is_a_411_and_chunked_bodies_are_not_taken() {
    assert_eq!(
        judge(&request(
            "POST",
            "/api/publish",
            "Content-Type: application/json\r\n"
        )),
        Err(ApiError::LengthRequired)
    );
    assert_eq!(
        judge(&request(
            "POST",
            "/api/publish",
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        )),
        Err(ApiError::LengthRequired)
    );
}

#[test]
fn a_body_over_64_kib_is_a_413() {
    assert!(judge(&json_post("/api/publish", MAX_BODY_BYTES)).is_ok());
    assert_eq!(
        judge(&json_post("/api/publish", MAX_BODY_BYTES + 1)),
        Err(ApiError::PayloadTooLarge)
    );
    assert_eq!(
        judge(&json_post("/api/publish", usize::MAX)),
        Err(ApiError::PayloadTooLarge)
    );
}

#[test]
fn a_body_that_is_not_json_is_a_415() {
    for extra in [
        "Content-Length: 2\r\n",
        "Content-Length: 2\r\nContent-Type: text/plain\r\n",
        "Content-Length: 2\r\nContent-Type: application/jsonx\r\n",
    ] {
        assert_eq!(
            judge(&request("POST", "/api/publish", extra)),
            Err(ApiError::UnsupportedMediaType),
            "{extra}"
        );
    }
    assert!(judge(&request(
        "POST",
        "/api/publish",
        "Content-Length: 2\r\nContent-Type: Application/JSON; charset=utf-8\r\n"
    ))
    .is_ok());
}

#[test]
fn a_bad_content_length_is_a_400() {
    for value in ["-1", "1e3", "", "2, 2", "0x10"] {
        let head = request(
            "POST",
            "/api/publish",
            &format!("Content-Type: application/json\r\nContent-Length: {value}\r\n"),
        );
        assert!(
            matches!(judge(&head), Err(ApiError::BadRequest(_))),
            "{value:?}"
        );
    }
    let twice = request(
        "POST",
        "/api/publish",
        "Content-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 2\r\n",
    );
    assert!(matches!(judge(&twice), Err(ApiError::BadRequest(_))));
    let get_with_body = request("GET", "/api/rooms", "Content-Length: 5\r\n");
    assert!(matches!(
        judge(&get_with_body),
        Err(ApiError::BadRequest(_))
    ));
}

#[test]
fn a_browser_from_an_origin_not_allowed_is_a_403_and_one_allowed_passes() {
    let from_elsewhere = request("GET", "/api/rooms", "Origin: https://evil.example\r\n");
    assert_eq!(judge(&from_elsewhere), Err(ApiError::ForbiddenOrigin));
    let allowed = OriginPolicy {
        allowed: vec!["https://evil.example".into()],
    };
    assert!(read_head(&from_elsewhere, Some(&key()), &allowed).is_ok());
}

#[test]
fn connection_close_and_http_1_0_end_the_connection_after_the_answer() {
    let close = request("GET", "/api/rooms", "Connection: close\r\n");
    assert!(!judge(&close).expect("taken").keep_alive);
    let old = head(&format!(
        "GET /api/rooms HTTP/1.0\r\nHost: a\r\nAuthorization: Bearer {KEY}\r\n\r\n"
    ));
    assert!(!judge(&old).expect("taken").keep_alive);
}

#[test]
fn head_is_answered_like_get_without_a_body() {
    let judged = judge(&request("HEAD", "/api/rooms", "")).expect("taken");
    assert!(judged.head_only);
}

#[test]
fn bodies_are_read_into_calls() {
    assert_eq!(
        read_call(
            &Endpoint::Publish,
            br#"{"room":"lobby","content":"hi","from":"bot"}"#
        ),
        Ok(Call::Publish {
            room: "lobby".into(),
            content: "hi".into(),
            from: Some("bot".into())
        })
    );
    assert_eq!(
        read_call(&Endpoint::Dm, br#"{"to":"ann","content":"psst"}"#),
        Ok(Call::Dm {
            to: "ann".into(),
            content: "psst".into(),
            from: None
        })
    );
    assert_eq!(
        read_call(&Endpoint::Disconnect, br#"{"userId":"ann"}"#),
        Ok(Call::Disconnect {
            user: "ann".into(),
            code: 4005,
            reason: "disconnected".into()
        })
    );
    assert_eq!(
        read_call(
            &Endpoint::Disconnect,
            br#"{"userId":"ann","code":4100,"reason":"banned"}"#
        ),
        Ok(Call::Disconnect {
            user: "ann".into(),
            code: 4100,
            reason: "banned".into()
        })
    );
}

#[test]
fn bad_bodies_are_400s() {
    let long_reason = format!(r#"{{"userId":"ann","reason":"{}"}}"#, "x".repeat(124));
    let cases: [(Endpoint, &[u8]); 10] = [
        (Endpoint::Publish, b"not json"),
        (Endpoint::Publish, b"[]"),
        (Endpoint::Publish, br#"{"room":"lobby"}"#),
        (Endpoint::Publish, br#"{"room":"lobby","content":7}"#),
        (
            Endpoint::Publish,
            br#"{"room":"lobby","content":"x","romm":"y"}"#,
        ),
        (Endpoint::Dm, br#"{"content":"x"}"#),
        (Endpoint::Disconnect, br#"{"userId":"ann","code":1002}"#),
        (Endpoint::Disconnect, br#"{"userId":"ann","code":70000}"#),
        (Endpoint::Disconnect, long_reason.as_bytes()),
        (Endpoint::Publish, b"{\"room\":\"\xff\",\"content\":\"x\"}"),
    ];
    for (endpoint, body) in cases {
        let refused = read_call(&endpoint, body).unwrap_err();
        assert_eq!(refused.status(), 400, "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn every_refusal_has_a_listed_label_and_a_json_body() {
    let all = [
        ApiError::NotFound,
        ApiError::ForbiddenOrigin,
        ApiError::Unauthorized,
        ApiError::MethodNotAllowed { allow: "POST" },
        ApiError::LengthRequired,
        ApiError::PayloadTooLarge,
        ApiError::UnsupportedMediaType,
        ApiError::BadRequest(Cow::Borrowed("no")),
        ApiError::Unavailable(Cow::Borrowed("not here")),
    ];
    assert_eq!(all.len(), ApiError::LABELS.len());
    for refusal in all {
        assert!(ApiError::LABELS.contains(&refusal.label()), "{refusal:?}");
        let mut out = Vec::new();
        refusal.write_response(true, &mut out);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        assert!(
            head.starts_with(&format!("HTTP/1.1 {} ", refusal.status())),
            "{head}"
        );
        assert!(!head.contains("Unknown"), "{head}");
        assert!(head.contains("\r\nContent-Type: application/json\r\n"));
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
        assert!(
            !head.to_ascii_lowercase().contains("access-control"),
            "no CORS"
        );
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(json["error"], refusal.label());
    }
}

#[test]
fn keys_match_only_themselves_and_short_ones_are_refused() {
    let key = key();
    assert!(key.matches(KEY.as_bytes()));
    assert!(!key.matches(b"the-api-key-of-the-test"));
    assert!(!key.matches(b""));
    assert_eq!(ApiKey::new("short"), Err(KeyTooShort { len: 5 }));
    assert_eq!(format!("{key:?}"), "ApiKey(..)");
}

#[test]
fn percent_decoding_refuses_broken_escapes_and_non_utf8() {
    assert_eq!(percent_decode("a%20b"), Some("a b".into()));
    assert_eq!(percent_decode("%zz"), None);
    assert_eq!(percent_decode("%4"), None);
    assert_eq!(percent_decode("%ff"), None);
}
