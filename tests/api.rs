//! The server API over real sockets: off without `--api-key`, the key, every endpoint's effect on connected chat
//! clients, every bad-request status, keep-alive and pipelining, no CORS, and the metrics.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use roomcast::http::api::ApiKey;
use serde_json::{json, Value};

use common::chat::{join_expect, saw_join};
use common::{TestClient, TestServer};

const KEY: &str = "integration-tests-api-key";

fn server() -> TestServer {
    TestServer::with_config(|c| c.api_key = Some(ApiKey::new(KEY).expect("long enough")))
}

/// One answer: status, headers (lower-cased names), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A request with the right key unless `key` says otherwise, and a JSON body if given.
fn request(method: &str, path: &str, key: Option<&str>, body: Option<&str>, extra: &str) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    if let Some(key) = key {
        text.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    if let Some(body) = body {
        text.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    text.push_str(extra);
    text.push_str("\r\n");
    if let Some(body) = body {
        text.push_str(body);
    }
    text
}

/// Reads one response off `stream` (its head, then Content-Length bytes of body).
fn read_answer(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Answer {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "the server closed before answering");
        pending.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(pending[..head_end].to_vec()).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse().expect("length"))
        .unwrap_or(0);
    while pending.len() < head_end + length {
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "the server closed mid-body");
        pending.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8(pending[head_end..head_end + length].to_vec()).expect("UTF-8");
    pending.drain(..head_end + length);
    Answer {
        status,
        headers,
        body,
    }
}

/// Sends `raw` on a new connection and reads one answer.
fn exchange(server: &TestServer, raw: &str) -> Answer {
    let mut stream = server.tcp();
    stream.write_all(raw.as_bytes()).expect("write");
    read_answer(&mut stream, &mut Vec::new())
}

fn post(server: &TestServer, path: &str, body: Value) -> Answer {
    exchange(
        server,
        &request("POST", path, Some(KEY), Some(&body.to_string()), ""),
    )
}

fn get(server: &TestServer, path: &str) -> Answer {
    exchange(server, &request("GET", path, Some(KEY), None, ""))
}

#[test]
fn the_api_is_off_and_a_404_without_an_api_key() {
    let server = TestServer::start();
    for raw in [
        request(
            "POST",
            "/api/publish",
            Some(KEY),
            Some(r#"{"room":"a","content":"b"}"#),
            "",
        ),
        request("GET", "/api/rooms", Some(KEY), None, ""),
        request("GET", "/api/rooms/lobby", None, None, ""),
    ] {
        let answer = exchange(&server, &raw);
        assert_eq!(answer.status, 404, "{raw}: {answer:?}");
        assert_eq!(answer.json()["error"], "not_found");
    }
}

#[test]
fn a_missing_or_wrong_key_is_a_401_with_the_same_answer() {
    let server = server();
    let missing = exchange(&server, &request("GET", "/api/rooms", None, None, ""));
    let wrong = exchange(
        &server,
        &request(
            "GET",
            "/api/rooms",
            Some("integration-tests-api-kez"),
            None,
            "",
        ),
    );
    for answer in [&missing, &wrong] {
        assert_eq!(answer.status, 401, "{answer:?}");
        assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
        assert_eq!(answer.json()["error"], "unauthorized");
    }
    assert_eq!(missing.body, wrong.body);
}

#[test]
fn publish_reaches_the_room_in_order_and_answers_the_seq() {
    let server = server();
    let mut ann = server.ws("/ws");
    join_expect(&mut ann, "ann", "lobby", 1);
    for (n, content) in ["one", "two"].into_iter().enumerate() {
        let answer = post(
            &server,
            "/api/publish",
            json!({"room": "lobby", "content": content}),
        );
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.json(), json!({"seq": n + 1}));
        assert_eq!(answer.header("content-type"), Some("application/json"));
        let chat = ann.recv_type("chat");
        assert_eq!(chat["seq"], n + 1);
        assert_eq!(chat["from"], "system");
        assert_eq!(chat["content"], content);
    }
    let answer = post(
        &server,
        "/api/publish",
        json!({"room": "lobby", "content": "three", "from": "newsbot"}),
    );
    assert_eq!(answer.json(), json!({"seq": 3}));
    assert_eq!(ann.recv_type("chat")["from"], "newsbot");
    ann.send_json(&json!({"type": "chat", "content": "four"}));
    assert_eq!(
        ann.recv_type("chat")["seq"],
        4,
        "members' messages follow in the same numbering"
    );
}

#[test]
fn publish_into_an_empty_room_goes_into_its_history() {
    let server = server();
    let answer = post(
        &server,
        "/api/publish",
        json!({"room": "news", "content": "first"}),
    );
    assert_eq!(answer.json(), json!({"seq": 1}));
    let mut ann = server.ws("/ws");
    let joined = join_expect(&mut ann, "ann", "news", 1);
    assert_eq!(joined["seq"], 1);
}

#[test]
fn dm_reaches_the_holder_and_says_whether_it_did() {
    let server = server();
    let mut ann = server.ws("/ws");
    join_expect(&mut ann, "ann", "lobby", 1);
    let answer = post(
        &server,
        "/api/dm",
        json!({"to": "ann", "content": "psst", "from": "support"}),
    );
    assert_eq!(answer.json(), json!({"delivered": true}));
    let dm = ann.recv_type("dm");
    assert_eq!(
        (dm["from"].as_str(), dm["content"].as_str()),
        (Some("support"), Some("psst"))
    );
    let answer = post(
        &server,
        "/api/dm",
        json!({"to": "ghost", "content": "hello"}),
    );
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), json!({"delivered": false}));
}

#[test]
fn rooms_and_a_rooms_members_are_listed() {
    let server = server();
    let mut ann = server.ws("/ws");
    join_expect(&mut ann, "ann", "lobby", 1);
    let mut bob = server.ws("/ws");
    join_expect(&mut bob, "bob", "lobby", 2);
    let mut cyd = server.ws("/ws");
    join_expect(&mut cyd, "cyd", "the ops", 1);
    let mut rooms = get(&server, "/api/rooms").json()["rooms"]
        .as_array()
        .expect("rooms")
        .clone();
    rooms.sort_by_key(|r| r["room"].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        rooms,
        [
            json!({"room": "lobby", "members": 2}),
            json!({"room": "the ops", "members": 1})
        ]
    );
    let lobby = get(&server, "/api/rooms/lobby").json();
    let mut members: Vec<&str> = lobby["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    members.sort_unstable();
    assert_eq!(members, ["ann", "bob"]);
    assert_eq!(lobby["count"], 2);
    assert_eq!(
        get(&server, "/api/rooms/the%20ops").json()["members"],
        json!(["cyd"])
    );
    assert_eq!(get(&server, "/api/rooms/nowhere").json()["count"], 0);
}

#[test]
fn disconnect_closes_the_users_connection_with_4005_or_the_code_given() {
    let server = server();
    let mut ann = server.ws("/ws");
    join_expect(&mut ann, "ann", "lobby", 1);
    let mut bob = server.ws("/ws");
    join_expect(&mut bob, "bob", "lobby", 2);
    saw_join(&mut ann, "bob", "lobby");
    let answer = post(&server, "/api/disconnect", json!({"userId": "bob"}));
    assert_eq!(answer.json(), json!({"closed": 1}));
    assert_eq!(bob.recv_close(), Some(4005));
    let left = ann.recv_type("presence");
    assert_eq!(left["left"], "bob");
    let answer = post(
        &server,
        "/api/disconnect",
        json!({"userId": "ann", "code": 4100, "reason": "banned"}),
    );
    assert_eq!(answer.json(), json!({"closed": 1}));
    assert_eq!(ann.recv_close(), Some(4100));
    let answer = post(&server, "/api/disconnect", json!({"userId": "nobody"}));
    assert_eq!(answer.json(), json!({"closed": 0}));
}

#[test]
fn every_bad_request_gets_its_status_and_a_json_error() {
    let server = server();
    let big = format!(
        r#"{{"room":"lobby","content":"{}"}}"#,
        "x".repeat(64 * 1024)
    );
    let cases: Vec<(String, u16, &str)> = vec![
        (
            request("POST", "/api/publish", Some(KEY), Some("{nope"), ""),
            400,
            "bad_request",
        ),
        (
            request(
                "POST",
                "/api/publish",
                Some(KEY),
                Some(r#"{"room":"","content":"x"}"#),
                "",
            ),
            400,
            "bad_request",
        ),
        (
            request(
                "POST",
                "/api/publish",
                Some(KEY),
                Some(r#"{"room":"a","content":""}"#),
                "",
            ),
            400,
            "bad_request",
        ),
        (
            request(
                "POST",
                "/api/disconnect",
                Some(KEY),
                Some(r#"{"userId":"a","code":1002}"#),
                "",
            ),
            400,
            "bad_request",
        ),
        (
            request("GET", "/api/nothing", Some(KEY), None, ""),
            404,
            "not_found",
        ),
        (
            request("GET", "/api/publish", Some(KEY), None, ""),
            405,
            "method_not_allowed",
        ),
        (
            request("DELETE", "/api/rooms", Some(KEY), None, ""),
            405,
            "method_not_allowed",
        ),
        (
            format!(
                "POST /api/publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\n\
                 Content-Type: application/json\r\n\r\n"
            ),
            411,
            "length_required",
        ),
        (
            request("POST", "/api/publish", Some(KEY), Some(&big), ""),
            413,
            "payload_too_large",
        ),
        (
            format!(
                "POST /api/publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\n\
                 Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
            ),
            415,
            "unsupported_media_type",
        ),
    ];
    for (raw, status, label) in cases {
        let answer = exchange(&server, &raw);
        assert_eq!(answer.status, status, "{raw:.120}: {answer:?}");
        let json = answer.json();
        assert_eq!(json["error"], label, "{json}");
        assert!(json["message"].is_string(), "{json}");
    }
    let answer = exchange(
        &server,
        &request("GET", "/api/publish", Some(KEY), None, ""),
    );
    assert_eq!(answer.header("allow"), Some("POST"));
}

#[test]
fn a_keep_alive_connection_takes_request_after_request_and_pipelined_ones() {
    let server = server();
    let mut stream = server.tcp();
    let mut pending = Vec::new();
    for n in 1..=3 {
        let body = json!({"room": "lobby", "content": format!("m{n}")}).to_string();
        stream
            .write_all(request("POST", "/api/publish", Some(KEY), Some(&body), "").as_bytes())
            .expect("write");
        let answer = read_answer(&mut stream, &mut pending);
        assert_eq!(answer.json(), json!({"seq": n}));
        assert_eq!(answer.header("connection"), Some("keep-alive"));
    }
    let mut burst = String::new();
    for n in 4..=8 {
        let body = json!({"room": "lobby", "content": format!("m{n}")}).to_string();
        burst.push_str(&request("POST", "/api/publish", Some(KEY), Some(&body), ""));
    }
    burst.push_str(&request(
        "GET",
        "/api/rooms",
        Some(KEY),
        None,
        "Connection: close\r\n",
    ));
    stream.write_all(burst.as_bytes()).expect("write");
    for n in 4..=8 {
        assert_eq!(
            read_answer(&mut stream, &mut pending).json(),
            json!({"seq": n})
        );
    }
    let last = read_answer(&mut stream, &mut pending);
    assert_eq!(last.header("connection"), Some("close"));
    let mut rest = Vec::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    assert_eq!(
        stream.read_to_end(&mut rest).expect("EOF"),
        0,
        "closed after it"
    );
}

#[test]
fn a_refused_request_closes_the_connection() {
    let server = server();
    let mut stream = server.tcp();
    let mut both = request("GET", "/api/rooms", Some("wrong-key-wrong-key"), None, "");
    both.push_str(&request("GET", "/api/rooms", Some(KEY), None, ""));
    stream.write_all(both.as_bytes()).expect("write");
    let answer = read_answer(&mut stream, &mut Vec::new());
    assert_eq!(answer.status, 401);
    assert_eq!(answer.header("connection"), Some("close"));
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing after the refusal");
}

#[test]
fn no_cors_headers_and_a_browser_from_another_origin_is_a_403() {
    let server = server();
    let answer = get(&server, "/api/rooms");
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .headers
            .iter()
            .all(|(n, _)| !n.starts_with("access-control")),
        "{answer:?}"
    );
    let from_page = exchange(
        &server,
        &request(
            "GET",
            "/api/rooms",
            Some(KEY),
            None,
            "Origin: https://evil.example\r\n",
        ),
    );
    assert_eq!(from_page.status, 403);
    assert_eq!(from_page.json()["error"], "forbidden_origin");
    let preflight = exchange(
        &server,
        "OPTIONS /api/publish HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\n\
         Access-Control-Request-Method: POST\r\n\r\n",
    );
    assert_eq!(preflight.status, 403);
    assert!(preflight
        .headers
        .iter()
        .all(|(n, _)| !n.starts_with("access-control")));
}

#[test]
fn calls_with_the_key_are_not_held_to_the_per_address_request_rate() {
    let server = TestServer::with_config(|c| {
        c.api_key = Some(ApiKey::new(KEY).expect("key"));
        c.addresses.handshake_rate_per_ip = 1.0;
        c.addresses.handshake_burst_per_ip = 2;
    });
    for _ in 0..20 {
        assert_eq!(get(&server, "/api/rooms").status, 200);
    }
    let strangers: Vec<u16> = (0..5)
        .map(|_| exchange(&server, &request("GET", "/api/rooms", None, None, "")).status)
        .collect();
    assert!(strangers.contains(&429), "{strangers:?}");
}

#[test]
fn api_calls_and_refusals_are_counted_in_metrics() {
    let server = server();
    post(
        &server,
        "/api/publish",
        json!({"room": "a", "content": "b"}),
    );
    exchange(&server, &request("GET", "/api/rooms", None, None, ""));
    exchange(
        &server,
        &request("GET", "/api/publish", Some(KEY), None, ""),
    );
    let (_, metrics) = server.get("/metrics");
    for series in [
        "roomcast_api_calls_total{endpoint=\"publish\"} 1",
        "roomcast_api_calls_total{endpoint=\"rooms\"} 0",
        "roomcast_api_refusals_total{reason=\"unauthorized\"} 1",
        "roomcast_api_refusals_total{reason=\"method_not_allowed\"} 1",
        "roomcast_api_refusals_total{reason=\"payload_too_large\"} 0",
    ] {
        assert!(metrics.contains(series), "{series} not in:\n{metrics}");
    }
}

#[test]
fn head_of_a_get_endpoint_has_no_body() {
    let server = server();
    let mut stream = server.tcp();
    stream
        .write_all(
            request(
                "HEAD",
                "/api/rooms",
                Some(KEY),
                None,
                "Connection: close\r\n",
            )
            .as_bytes(),
        )
        .expect("write");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8(raw).expect("UTF-8");
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "no body: {text}");
}

#[test]
fn the_chat_page_and_websockets_are_unchanged_with_the_api_on() {
    let server = server();
    assert_eq!(server.get("/").0, 200);
    let mut client: TestClient = server.ws("/ws");
    join_expect(&mut client, "ann", "lobby", 1);
}

#[test]
fn a_client_that_expects_100_continue_is_told_to_send_its_body() {
    let server = server();
    let mut stream = server.tcp();
    let body = json!({"room": "lobby", "content": "x".repeat(2000)}).to_string();
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write");
    let mut pending = Vec::new();
    let interim = read_answer(&mut stream, &mut pending);
    assert_eq!(interim.status, 100);
    stream.write_all(body.as_bytes()).expect("write");
    assert_eq!(
        read_answer(&mut stream, &mut pending).json(),
        json!({"seq": 1})
    );
}
