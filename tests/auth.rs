//! Connection tokens over real sockets: every outcome of issue 14's identity section, with tokens minted here (HS256
//! with a secret, RS256 and ES256 with the keys in tests/keys/), against an in-process server and, for what is
//! logged, the real binary.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use roomcast::auth::Verifier;
use serde_json::{json, Value};

use common::chat::{assert_alive, join_msg};
use common::{Received, TestClient, TestServer};

const SECRET: &str = "integration-tests-hs256-secret-0123456789";
const RSA_PRIVATE: &str = include_str!("keys/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("keys/rsa_public.pem");
const EC_PRIVATE: &str = include_str!("keys/ec_private.pem");
const EC_PUBLIC: &str = include_str!("keys/ec_public.pem");
const RSA8192_PRIVATE: &str = include_str!("keys/rsa8192_private.pem");
const RSA8192_PUBLIC: &str = include_str!("keys/rsa8192_public.pem");

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Claims for `sub` expiring `secs` seconds from now, with `extra` merged in.
fn claims(sub: &str, secs: i64, extra: Value) -> Value {
    let mut claims = json!({"sub": sub, "exp": now_s() as i64 + secs});
    for (key, value) in extra.as_object().expect("object") {
        claims[key] = value.clone();
    }
    claims
}

fn hs256_with(secret: &str, claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

fn hs256(claims: &Value) -> String {
    hs256_with(SECRET, claims)
}

fn rs256(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("rsa key");
    encode(&Header::new(Algorithm::RS256), claims, &key).expect("encode")
}

fn es256(claims: &Value) -> String {
    let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).expect("ec key");
    encode(&Header::new(Algorithm::ES256), claims, &key).expect("encode")
}

/// A server that requires tokens checked by `verifier` (no leeway), with `adjust` applied.
fn server_with(verifier: Verifier, adjust: impl FnOnce(&mut roomcast::Config)) -> TestServer {
    TestServer::with_config(|c| {
        c.auth = Some(verifier.with_leeway(Duration::ZERO));
        adjust(c);
    })
}

fn hs_server() -> TestServer {
    server_with(Verifier::hs256(SECRET.as_bytes()).expect("secret"), |_| {})
}

/// A v2 join of `user` into `room` with `token`.
fn join_with_token(client: &mut TestClient, user: &str, room: &str, token: &str) {
    let mut frame = join_msg(user, room);
    frame["token"] = json!(token);
    client.send_json(&frame);
}

/// The client is refused: `unauthorized` (as an `error`, or as a v1 `system` line for a client that has not said
/// its dialect), then Close 4003.
fn assert_unauthorized(client: &mut TestClient) {
    let error = client.recv_json();
    assert!(
        error["type"] == "error" || error["error"] == true,
        "not an error: {error}"
    );
    assert_eq!(error["code"], "unauthorized", "{error}");
    assert_eq!(client.recv_close(), Some(4003));
}

/// The connection is still served: a `ping` is answered with a `pong` (other messages may come first).
fn assert_served(client: &mut TestClient) {
    client.send_json(&json!({"type": "ping"}));
    loop {
        match client.recv() {
            Received::Text(text) if text.contains("\"pong\"") => return,
            Received::Close(code) => panic!("closed with {code:?}"),
            Received::Eof => panic!("TCP ended"),
            _ => {}
        }
    }
}

/// The client joins `room`: its `joined` arrives.
fn assert_joined(client: &mut TestClient, room: &str) {
    let joined = client.recv_type("joined");
    assert_eq!(joined["room"], room, "{joined}");
}

#[test]
fn a_valid_hs256_token_in_join_joins() {
    let server = hs_server();
    let mut ann = server.ws("/ws");
    join_with_token(
        &mut ann,
        "ann",
        "lobby",
        &hs256(&claims("ann", 60, json!({}))),
    );
    assert_joined(&mut ann, "lobby");
}

#[test]
fn a_token_in_the_url_serves_a_join_without_one() {
    let server = hs_server();
    let token = hs256(&claims("ann", 60, json!({})));
    let mut ann = server.ws(&format!("/ws?v=2&token={token}"));
    ann.send_json(&join_msg("ann", "lobby"));
    assert_joined(&mut ann, "lobby");
}

#[test]
fn a_bad_token_in_the_url_is_refused_at_once() {
    let server = hs_server();
    let mut client = server.ws("/ws?token=nonsense");
    let error = client.recv_json();
    assert_eq!(error["code"], "unauthorized", "{error}");
    assert_eq!(
        error["type"], "system",
        "the v1 form: the client has not said its dialect"
    );
    assert_eq!(client.recv_close(), Some(4003));
}

#[test]
fn a_join_without_a_token_is_unauthorized_then_closed_with_4003() {
    let server = hs_server();
    let mut client = server.ws("/ws");
    client.send_json(&join_msg("ann", "lobby"));
    assert_unauthorized(&mut client);
}

#[test]
fn an_expired_token_is_closed_with_4004() {
    let server = hs_server();
    let mut client = server.ws("/ws");
    join_with_token(
        &mut client,
        "ann",
        "lobby",
        &hs256(&claims("ann", -10, json!({}))),
    );
    assert_eq!(client.recv_close(), Some(4004));
}

#[test]
fn a_token_not_yet_valid_is_unauthorized() {
    let server = hs_server();
    let mut client = server.ws("/ws");
    let early = hs256(&claims("ann", 600, json!({"nbf": now_s() + 300})));
    join_with_token(&mut client, "ann", "lobby", &early);
    assert_unauthorized(&mut client);
}

#[test]
fn a_token_signed_with_another_secret_is_unauthorized() {
    let server = hs_server();
    let mut client = server.ws("/ws");
    let forged = hs256_with(
        "another-secret-just-as-long-as-the-real-one",
        &claims("ann", 60, json!({})),
    );
    join_with_token(&mut client, "ann", "lobby", &forged);
    assert_unauthorized(&mut client);
}

#[test]
fn an_unsigned_alg_none_token_is_unauthorized() {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let token = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims("ann", 60, json!({})).to_string().as_bytes())
    );
    let server = hs_server();
    let mut client = server.ws("/ws");
    join_with_token(&mut client, "ann", "lobby", &token);
    assert_unauthorized(&mut client);
}

#[test]
fn a_truncated_token_is_unauthorized() {
    let token = hs256(&claims("ann", 60, json!({})));
    let server = hs_server();
    let mut client = server.ws("/ws");
    join_with_token(&mut client, "ann", "lobby", &token[..token.len() - 5]);
    assert_unauthorized(&mut client);
}

#[test]
fn rs256_and_es256_servers_take_their_own_tokens_only() {
    let rsa = server_with(
        Verifier::from_public_key_pem(RSA_PUBLIC.as_bytes()).expect("rsa key"),
        |_| {},
    );
    let mut good = rsa.ws("/ws");
    join_with_token(
        &mut good,
        "ann",
        "lobby",
        &rs256(&claims("ann", 60, json!({}))),
    );
    assert_joined(&mut good, "lobby");
    // HS256 keyed with the public key's PEM: the algorithm confusion RFC 8725 3.1 warns of.
    let confused = hs256_with(RSA_PUBLIC, &claims("bob", 60, json!({})));
    let mut bob = rsa.ws("/ws");
    join_with_token(&mut bob, "bob", "lobby", &confused);
    assert_unauthorized(&mut bob);

    let ec = server_with(
        Verifier::from_public_key_pem(EC_PUBLIC.as_bytes()).expect("ec key"),
        |_| {},
    );
    let mut good = ec.ws("/ws");
    join_with_token(
        &mut good,
        "ann",
        "lobby",
        &es256(&claims("ann", 60, json!({}))),
    );
    assert_joined(&mut good, "lobby");
    let mut rs_on_ec = ec.ws("/ws");
    join_with_token(
        &mut rs_on_ec,
        "cyd",
        "lobby",
        &rs256(&claims("cyd", 60, json!({}))),
    );
    assert_unauthorized(&mut rs_on_ec);
}

#[test]
fn an_rs256_token_against_an_hs256_secret_is_unauthorized() {
    let server = hs_server();
    let mut client = server.ws("/ws");
    join_with_token(
        &mut client,
        "ann",
        "lobby",
        &rs256(&claims("ann", 60, json!({}))),
    );
    assert_unauthorized(&mut client);
}

#[test]
fn a_user_id_other_than_sub_is_forbidden_and_the_connection_stays() {
    let server = hs_server();
    let mut client = server.ws("/ws");
    join_with_token(
        &mut client,
        "mallory",
        "lobby",
        &hs256(&claims("ann", 60, json!({}))),
    );
    let error = client.recv_json();
    assert_eq!(error["code"], "forbidden", "{error}");
    assert_alive(&mut client);
    client.send_json(&join_msg("ann", "lobby"));
    assert_joined(&mut client, "lobby");
}

#[test]
fn a_room_not_in_the_token_is_forbidden_and_joins_nothing() {
    let server = hs_server();
    let mut ann = server.ws("/ws");
    let token = hs256(&claims("ann", 60, json!({"rooms": ["lobby"]})));
    join_with_token(&mut ann, "ann", "staff", &token);
    let error = ann.recv_json();
    assert_eq!(error["code"], "forbidden", "{error}");
    assert_alive(&mut ann);
    let (status, body) = server.get("/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("roomcast_room_members 0\n"), "joined nothing");
    ann.send_json(&join_msg("ann", "lobby"));
    assert_joined(&mut ann, "lobby");
}

#[test]
fn dm_false_in_the_token_forbids_private_messages() {
    let server = hs_server();
    let mut ann = server.ws("/ws");
    join_with_token(
        &mut ann,
        "ann",
        "lobby",
        &hs256(&claims("ann", 60, json!({"dm": false}))),
    );
    assert_joined(&mut ann, "lobby");
    ann.send_json(&json!({"type": "dm", "to": "ann", "content": "hi"}));
    assert_eq!(ann.recv_type("error")["code"], "forbidden");
}

#[test]
fn a_connection_that_has_not_joined_within_the_handshake_timeout_is_closed() {
    let server = server_with(Verifier::hs256(SECRET.as_bytes()).unwrap(), |c| {
        c.handshake_timeout = Duration::from_millis(300);
    });
    let started = Instant::now();
    let mut idle = server.ws("/ws");
    // Pings keep the WebSocket alive but do not join it.
    idle.send_json(&json!({"type": "ping"}));
    assert_eq!(idle.recv_json()["type"], "pong");
    assert_unauthorized(&mut idle);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    let mut joined = server.ws("/ws");
    join_with_token(
        &mut joined,
        "ann",
        "lobby",
        &hs256(&claims("ann", 60, json!({}))),
    );
    assert_joined(&mut joined, "lobby");
    std::thread::sleep(Duration::from_millis(500));
    assert_alive(&mut joined);
}

/// The time until the client's Close arrives, and its code.
fn time_to_close(client: &mut TestClient, limit: Duration) -> (Duration, Option<u16>) {
    let started = Instant::now();
    loop {
        match client.recv_timeout(limit.saturating_sub(started.elapsed())) {
            Some(Received::Close(code)) => return (started.elapsed(), code),
            Some(Received::Eof) | None => panic!("no Close within {limit:?}"),
            Some(_) => {}
        }
    }
}

#[test]
fn a_refreshed_connection_outlives_its_first_token_and_one_not_refreshed_is_closed_with_4004_on_time(
) {
    let server = hs_server();
    // Whole seconds: exp is a NumericDate in seconds. Both tokens run out at the same second, two or three away.
    let exp = now_s() + 3;
    let first = |sub: &str| hs256(&json!({"sub": sub, "exp": exp}));
    let mut kept = server.ws("/ws");
    join_with_token(&mut kept, "ann", "lobby", &first("ann"));
    assert_joined(&mut kept, "lobby");
    let mut dropped = server.ws("/ws");
    join_with_token(&mut dropped, "bob", "lobby", &first("bob"));
    assert_joined(&mut dropped, "lobby");
    kept.send_json(&json!({"type": "refresh", "token": hs256(&claims("ann", 60, json!({})))}));

    let (after, code) = time_to_close(&mut dropped, Duration::from_secs(6));
    assert_eq!(code, Some(4004));
    let closed_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    let late_by = closed_at.saturating_sub(Duration::from_secs(exp));
    assert!(
        closed_at >= Duration::from_secs(exp) && late_by < Duration::from_millis(1500),
        "closed {late_by:?} after exp (waited {after:?})"
    );
    // The refreshed connection is still served, past the first token's exp.
    assert_served(&mut kept);
    std::thread::sleep(Duration::from_millis(300));
    assert_served(&mut kept);
}

#[test]
fn refusals_and_closes_are_counted_in_metrics() {
    let server = hs_server();
    let mut client = server.ws("/ws");
    client.send_json(&join_msg("ann", "lobby"));
    assert_unauthorized(&mut client);
    let mut other = server.ws("/ws");
    join_with_token(
        &mut other,
        "eve",
        "lobby",
        &hs256(&claims("ann", 60, json!({}))),
    );
    assert_eq!(other.recv_json()["code"], "forbidden");
    drop(client);
    std::thread::sleep(Duration::from_millis(200));
    let (_, metrics) = server.get("/metrics");
    for series in [
        "roomcast_chat_refusals_total{code=\"unauthorized\"} 1",
        "roomcast_chat_refusals_total{code=\"forbidden\"} 1",
        "roomcast_closes_total{code=\"4003\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} not in:\n{metrics}");
    }
}

#[test]
fn open_mode_ignores_tokens() {
    let server = TestServer::start();
    let mut ann = server.ws("/ws?token=whatever");
    let mut frame = join_msg("ann", "lobby");
    frame["token"] = json!("not even a JWT");
    ann.send_json(&frame);
    assert_joined(&mut ann, "lobby");
    ann.send_json(&json!({"type": "refresh", "token": "x"}));
    assert_alive(&mut ann);
}

#[test]
fn the_real_binary_never_logs_a_token_even_at_debug() {
    let token = hs256(&claims("ann", 60, json!({})));
    let mut child = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["--addr", "127.0.0.1:0"])
        .env("RUST_LOG", "roomcast=debug")
        .env("ROOMCAST_AUTH_SECRET", SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn roomcast");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the listening line");
    let addr: std::net::SocketAddr = line
        .trim()
        .trim_start_matches("roomcast listening on http://")
        .trim_end_matches('/')
        .parse()
        .expect("address");
    let mut good = TestClient::connect(addr, &format!("/ws?token={token}")).expect("connect");
    good.send_json(&join_msg("ann", "lobby"));
    assert_joined(&mut good, "lobby");
    let mut bad = TestClient::connect(addr, "/ws?token=bad.to.ken").expect("connect");
    assert_eq!(bad.recv_close(), Some(4003));
    let mut in_join = TestClient::connect(addr, "/ws").expect("connect");
    join_with_token(&mut in_join, "bob", "lobby", &format!("{token}x"));
    assert_eq!(in_join.recv_close(), Some(4003));
    std::thread::sleep(Duration::from_millis(100));
    let _ = child.kill();
    let _ = child.wait();
    let mut log = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut log)
        .expect("read the log");
    assert!(
        log.contains("upgraded to chat (/ws)"),
        "debug logging is on: {log}"
    );
    for secret in [token.as_str(), "bad.to.ken", SECRET] {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
    }
}

#[test]
fn help_does_not_show_the_secrets_set_in_the_environment() {
    let output = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .arg("--help")
        .env("ROOMCAST_AUTH_SECRET", SECRET)
        .env("ROOMCAST_API_KEY", "an-api-key-in-the-environment")
        .output()
        .expect("run --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("[env: ROOMCAST_AUTH_SECRET]"), "{help}");
    assert!(!help.contains(SECRET), "{help}");
    assert!(!help.contains("an-api-key-in-the-environment"), "{help}");
}

// Tokens checked off the event loop: with an RS256 or ES256 key (`--token-checks auto`) the signature is checked on
// the verifier thread while the connection waits, parked.

fn es_server(adjust: impl FnOnce(&mut roomcast::Config)) -> TestServer {
    server_with(
        Verifier::from_public_key_pem(EC_PUBLIC.as_bytes()).expect("ec key"),
        adjust,
    )
}

/// The value of the metric series `series` (a whole name with its labels), or 0 if absent.
fn metric(server: &TestServer, series: &str) -> f64 {
    let (_, body) = server.get("/metrics");
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().expect("a number"))
}

#[test]
fn an_es256_join_is_checked_on_the_verifier_thread_and_counted() {
    let server = es_server(|_| {});
    let mut ann = server.ws("/ws");
    join_with_token(
        &mut ann,
        "ann",
        "lobby",
        &es256(&claims("ann", 60, json!({}))),
    );
    assert_joined(&mut ann, "lobby");
    let token = es256(&claims("bob", 60, json!({})));
    let mut bob = server.ws(&format!("/ws?token={token}"));
    bob.send_json(&join_msg("bob", "lobby"));
    assert_joined(&mut bob, "lobby");
    assert_eq!(metric(&server, "roomcast_token_checks_total"), 2.0);
    assert_eq!(metric(&server, "roomcast_token_check_seconds_count"), 2.0);
    assert_eq!(metric(&server, "roomcast_token_checks_busy_total"), 0.0);
}

#[test]
fn an_expired_es256_token_is_closed_with_4004_and_a_forged_one_with_4003() {
    let server = es_server(|_| {});
    let mut late = server.ws("/ws");
    join_with_token(
        &mut late,
        "ann",
        "lobby",
        &es256(&claims("ann", -60, json!({}))),
    );
    assert_eq!(late.recv_close(), Some(4004));
    // Bob's signature over Ann's claims: the signature does not verify.
    let bob = es256(&claims("bob", 60, json!({})));
    let ann = es256(&claims("ann", 60, json!({})));
    let bob_parts: Vec<&str> = bob.split('.').collect();
    let ann_parts: Vec<&str> = ann.split('.').collect();
    let forged = format!("{}.{}.{}", ann_parts[0], ann_parts[1], bob_parts[2]);
    let mut mallory = server.ws("/ws");
    join_with_token(&mut mallory, "ann", "lobby", &forged);
    assert_unauthorized(&mut mallory);
}

#[test]
fn an_es256_refresh_checked_on_the_thread_outlives_the_first_token() {
    let server = es_server(|_| {});
    let exp = now_s() + 2;
    let mut ann = server.ws("/ws");
    join_with_token(
        &mut ann,
        "ann",
        "lobby",
        &es256(&json!({"sub": "ann", "exp": exp})),
    );
    assert_joined(&mut ann, "lobby");
    ann.send_json(&json!({"type": "refresh", "token": es256(&claims("bob", 60, json!({})))}));
    let error = ann.recv_json();
    assert_eq!(error["code"], "forbidden", "another sub: {error}");
    ann.send_json(&json!({"type": "refresh", "token": es256(&claims("ann", 60, json!({})))}));
    std::thread::sleep(Duration::from_secs(exp + 1).saturating_sub(Duration::from_secs(now_s())));
    std::thread::sleep(Duration::from_millis(300));
    assert_served(&mut ann);
}

#[test]
fn messages_sent_right_behind_an_es256_join_keep_their_order() {
    let server = es_server(|_| {});
    let mut bob = server.ws("/ws");
    join_with_token(
        &mut bob,
        "bob",
        "lobby",
        &es256(&claims("bob", 60, json!({}))),
    );
    assert_joined(&mut bob, "lobby");
    let mut ann = server.ws("/ws");
    let mut join = join_msg("ann", "lobby");
    join["token"] = json!(es256(&claims("ann", 60, json!({}))));
    let mut texts = vec![join.to_string()];
    for i in 0..5 {
        texts.push(json!({"type": "chat", "content": format!("m{i}")}).to_string());
    }
    texts.push(json!({"type": "ping"}).to_string());
    ann.send_texts_in_one_write(&texts);
    // Ann: joined first, no error (a chat handled before the join would be `not_joined`), the pong last.
    let mut seen = Vec::new();
    loop {
        let message = ann.recv_json();
        let kind = message["type"].as_str().unwrap_or_default().to_owned();
        assert!(kind != "error" && message["error"] != true, "{message}");
        seen.push(kind.clone());
        if kind == "pong" {
            break;
        }
    }
    let joined = seen.iter().position(|k| k == "joined").expect("joined");
    assert!(!seen[..joined].contains(&"chat".to_owned()), "{seen:?}");
    // Bob: the five messages in the order sent.
    let contents: Vec<String> = (0..5)
        .map(|_| {
            bob.recv_type("chat")["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(contents, ["m0", "m1", "m2", "m3", "m4"]);
}

#[test]
fn a_full_verifier_queue_answers_unavailable_and_the_connection_stays() {
    let server = es_server(|c| c.token_check_queue = 1);
    const JOINERS: usize = 64;
    let tokens: Vec<String> = (0..JOINERS)
        .map(|i| es256(&claims(&format!("u{i}"), 60, json!({}))))
        .collect();
    let mut clients: Vec<TestClient> = (0..JOINERS).map(|_| server.ws("/ws")).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        join_with_token(client, &format!("u{i}"), "lobby", &tokens[i]);
    }
    let mut refused = Vec::new();
    for (i, client) in clients.iter_mut().enumerate() {
        let answer = loop {
            let message = client.recv_json();
            if message["type"] == "joined" || message["type"] == "error" {
                break message;
            }
        };
        if answer["type"] == "error" {
            assert_eq!(answer["code"], "unavailable", "{answer}");
            refused.push(i);
        }
    }
    assert!(
        !refused.is_empty(),
        "64 joins at once against a queue of 1 and ~100 µs a check"
    );
    assert_eq!(
        metric(&server, "roomcast_token_checks_busy_total"),
        refused.len() as f64
    );
    // A refused connection stays and may try again.
    let i = refused[0];
    let client = &mut clients[i];
    assert_served(client);
    join_with_token(client, &format!("u{i}"), "lobby", &tokens[i]);
    assert_joined(client, "lobby");
}

#[test]
fn the_loop_serves_others_while_a_burst_of_token_checks_is_under_way() {
    // An 8192-bit RSA key and no cache: every one of the burst's joins costs the verifier thread a slow check,
    // far more than the loop spends reading it, so the checks are still under way when the bystander is answered.
    let rsa8192 = |claims: &Value| {
        let key = EncodingKey::from_rsa_pem(RSA8192_PRIVATE.as_bytes()).expect("rsa key");
        encode(&Header::new(Algorithm::RS256), claims, &key).expect("encode")
    };
    let server = server_with(
        Verifier::from_public_key_pem(RSA8192_PUBLIC.as_bytes()).expect("rsa key"),
        |c| c.token_cache_entries = 0,
    );
    let mut bystander = server.ws("/ws");
    join_with_token(
        &mut bystander,
        "cyd",
        "side",
        &rsa8192(&claims("cyd", 60, json!({}))),
    );
    assert_joined(&mut bystander, "side");
    const JOINERS: usize = 300;
    // One token for all: the first joins, the others are told the name is taken, each after its own check.
    let token = rsa8192(&claims("ann", 60, json!({})));
    let mut clients: Vec<TestClient> = (0..JOINERS).map(|_| server.ws("/ws")).collect();
    for client in &mut clients {
        join_with_token(client, "ann", "lobby", &token);
    }
    let started = Instant::now();
    bystander.send_json(&json!({"type": "chat", "content": "still here"}));
    assert_eq!(bystander.recv_type("chat")["content"], "still here");
    let round_trip = started.elapsed();
    let checked = metric(&server, "roomcast_token_checks_total");
    for client in &mut clients {
        let answer = loop {
            let message = client.recv_json();
            if message["type"] == "joined" || message["type"] == "error" {
                break message;
            }
        };
        assert!(
            answer["type"] == "joined" || answer["code"] == "name_taken",
            "{answer}"
        );
    }
    let burst = started.elapsed();
    let work = metric(&server, "roomcast_token_check_work_seconds_total");
    assert!(
        checked < (JOINERS + 1) as f64,
        "the bystander was answered in {round_trip:?} with {checked} of {} checks done (all in {burst:?}; \
         the thread worked {work} s)",
        JOINERS + 1
    );
    assert_eq!(
        metric(&server, "roomcast_token_checks_total"),
        (JOINERS + 1) as f64
    );
}

#[test]
fn joiners_that_leave_at_once_are_removed_and_their_slots_serve_new_connections() {
    let server = es_server(|_| {});
    for i in 0..20 {
        let mut gone = server.ws("/ws");
        join_with_token(
            &mut gone,
            &format!("gone{i}"),
            "lobby",
            &es256(&claims(&format!("gone{i}"), 60, json!({}))),
        );
        // Dropped at once: its FIN is read once the verdict is in (a parked connection is not read), then it goes.
    }
    // The slab keys of the gone connections are reused by these; none of them gets another's answer.
    let mut fresh: Vec<TestClient> = (0..20).map(|_| server.ws("/ws")).collect();
    for client in &mut fresh {
        assert!(
            client.is_quiet(Duration::from_millis(20)),
            "nothing before a join"
        );
    }
    let mut ann = server.ws("/ws");
    join_with_token(
        &mut ann,
        "ann",
        "lobby",
        &es256(&claims("ann", 60, json!({}))),
    );
    assert_joined(&mut ann, "lobby");
    for client in &mut fresh {
        assert_served(client);
    }
    let (_, body) = server.get("/metrics");
    assert!(body.contains("roomcast_room_members 1\n"), "{body}");
}

#[test]
fn a_reconnect_storm_over_several_rooms_and_a_join_into_a_quiet_one_are_all_admitted() {
    let server = es_server(|_| {});
    const ROOMS: usize = 4;
    const JOINERS: usize = 32;
    let room = |i: usize| format!("room{}", i % ROOMS);
    let tokens: Vec<String> = (0..=JOINERS)
        .map(|i| es256(&claims(&format!("u{i}"), 60, json!({}))))
        .collect();
    let mut clients: Vec<TestClient> = (0..=JOINERS).map(|_| server.ws("/ws")).collect();
    // The rooms' joins interleaved, as a storm arrives; the quiet room's join among the first.
    for (i, client) in clients.iter_mut().enumerate() {
        let room = if i == 1 { "quiet".to_owned() } else { room(i) };
        join_with_token(client, &format!("u{i}"), &room, &tokens[i]);
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let room = if i == 1 { "quiet".to_owned() } else { room(i) };
        assert_joined(client, &room);
    }
    assert_eq!(
        metric(&server, "roomcast_token_checks_total"),
        (JOINERS + 1) as f64
    );
    let (_, body) = server.get("/metrics");
    assert!(
        body.contains(&format!("roomcast_room_members {}\n", JOINERS + 1)),
        "{body}"
    );
}
