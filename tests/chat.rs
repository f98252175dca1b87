//! The chat protocol of `docs/protocol.md` over real sockets against an in-process server: every message type,
//! every error code in both of its forms, the v1 (legacy) shapes and escaping, name uniqueness, rate limits,
//! binary frames, presence cost and JSON round-tripping. Session reclaim and history replay are in
//! `chat_history.rs`.

mod common;

use std::thread::sleep;
use std::time::{Duration, Instant};

use common::chat::{
    assert_alive, assert_quiet, chat_msg, join_expect, join_msg, join_with, now_ms,
    presence_without_count, saw_join, saw_leave, system, welcome_line,
};
use common::{TestClient, TestServer};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------------------------
// Helpers

/// Joins without `v` (the articles' client): only the system line comes back.
fn join_legacy(client: &mut TestClient, user: &str, room: &str, online: usize) {
    client.send_json(&json!({"type": "join", "userId": user, "room": room}));
    assert_eq!(client.recv_json(), welcome_line(room, online));
}

/// The exact `joined` of a room without history: members (any order), a 16-hex-digit epoch, seq 0, a session,
/// and an empty, complete replay.
fn assert_fresh_joined(joined: &Value, room: &str, user: &str, members: &[&str]) {
    let keys: Vec<&str> = joined
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "epoch",
            "memberCount",
            "members",
            "replay",
            "room",
            "seq",
            "session",
            "type",
            "userId"
        ],
        "{joined}"
    );
    assert_eq!(joined["type"], "joined");
    assert_eq!(joined["room"], room);
    assert_eq!(joined["userId"], user);
    let mut got: Vec<&str> = joined["members"]
        .as_array()
        .expect("members array")
        .iter()
        .map(|m| m.as_str().expect("member name"))
        .collect();
    got.sort_unstable();
    let mut want = members.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "{joined}");
    let epoch = joined["epoch"].as_str().expect("epoch string");
    assert_eq!(epoch.len(), 16, "{joined}");
    assert!(epoch.chars().all(|c| c.is_ascii_hexdigit()), "{joined}");
    assert_eq!(joined["seq"], 0);
    let session = joined["session"].as_str().expect("session string");
    assert!(!session.is_empty());
    assert_eq!(joined["replay"], json!({"complete": true, "count": 0}));
}

fn assert_recent(timestamp: &Value) {
    let ts = timestamp.as_u64().expect("timestamp is an integer");
    let now = now_ms();
    assert!(
        ts <= now + 1_000 && ts + 5_000 >= now,
        "timestamp {ts} is not within a few seconds of {now}"
    );
}

/// `msg` with its `timestamp` checked (within a few seconds of now) and removed.
fn without_timestamp(msg: &Value) -> Value {
    assert_recent(&msg["timestamp"]);
    let mut rest = msg.clone();
    rest.as_object_mut().expect("object").remove("timestamp");
    rest
}

fn assert_chat(msg: &Value, room: &str, seq: u64, from: &str, content: &str) {
    assert_eq!(
        without_timestamp(msg),
        json!({"type": "chat", "room": room, "seq": seq, "from": from, "content": content}),
        "{msg}"
    );
}

/// The v2 form of an error: exactly `type`, `code` and a non-empty `message`.
fn assert_error(msg: &Value, code: &str) {
    assert_eq!(msg.as_object().map(|o| o.len()), Some(3), "{msg}");
    assert_eq!(msg["type"], "error", "{msg}");
    assert_eq!(msg["code"], code, "{msg}");
    assert!(
        msg["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{msg}"
    );
}

/// The v1 form of an error: a system line `Error: <message>` carrying the code and `error: true`.
fn assert_legacy_error(msg: &Value, code: &str) {
    assert_eq!(msg.as_object().map(|o| o.len()), Some(4), "{msg}");
    assert_eq!(msg["type"], "system", "{msg}");
    assert_eq!(msg["code"], code, "{msg}");
    assert_eq!(msg["error"], true, "{msg}");
    let content = msg["content"].as_str().expect("content");
    assert!(
        content.starts_with("Error: ") && content.len() > "Error: ".len(),
        "{msg}"
    );
}

#[derive(Clone, Copy, Debug)]
enum Form {
    V2,
    Legacy,
}

fn assert_error_in(form: Form, msg: &Value, code: &str) {
    match form {
        Form::V2 => assert_error(msg, code),
        Form::Legacy => assert_legacy_error(msg, code),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// join

#[test]
fn join_welcomes_with_the_count_of_that_room_then_joined_and_tells_only_that_room() {
    let server = TestServer::start();
    let (mut carol, mut dave) = (server.ws("/ws"), server.ws("/ws"));
    let (mut alice, mut bob) = (server.ws("/ws"), server.ws("/ws"));
    let c = join_expect(&mut carol, "carol", "other", 1);
    join_expect(&mut dave, "dave", "other", 2);
    saw_join(&mut carol, "dave", "other");

    let a = join_expect(&mut alice, "alice", "lobby", 1);
    assert_fresh_joined(&a, "lobby", "alice", &["alice"]);
    let b = join_expect(&mut bob, "bob", "lobby", 2);
    assert_fresh_joined(&b, "lobby", "bob", &["alice", "bob"]);
    assert_eq!(a["epoch"], b["epoch"], "one room, one epoch");
    assert_ne!(a["epoch"], c["epoch"], "each room has its own epoch");
    assert_ne!(a["session"], b["session"]);

    saw_join(&mut alice, "bob", "lobby");
    assert_quiet(&mut alice, "alice");
    assert_quiet(&mut bob, "bob");
    assert_quiet(&mut carol, "carol (other room)");
    assert_quiet(&mut dave, "dave (other room)");
}

#[test]
fn joining_another_room_leaves_the_first_and_keeps_the_session() {
    let server = TestServer::start();
    let (mut alice, mut bob, mut carol) = (server.ws("/ws"), server.ws("/ws"), server.ws("/ws"));
    join_expect(&mut alice, "alice", "lobby", 1);
    let first = join_expect(&mut bob, "bob", "lobby", 2);
    saw_join(&mut alice, "bob", "lobby");
    join_expect(&mut carol, "carol", "other", 1);

    let moved = join_expect(&mut bob, "bob", "other", 2);
    let mut members: Vec<&str> = moved["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    members.sort_unstable();
    assert_eq!(members, ["bob", "carol"]);
    assert_eq!(
        moved["session"], first["session"],
        "the name was held throughout, so its session stays"
    );
    saw_leave(&mut alice, "bob", "lobby");
    saw_join(&mut carol, "bob", "other");

    alice.send_json(&chat_msg("anyone?"));
    assert_chat(&alice.recv_json(), "lobby", 1, "alice", "anyone?");
    assert_quiet(&mut bob, "bob (moved out of lobby)");
    assert_quiet(&mut carol, "carol");
}

#[test]
fn joining_the_room_one_is_in_is_a_fresh_join_seen_as_leave_then_join() {
    let server = TestServer::start();
    let (mut alice, mut bob) = (server.ws("/ws"), server.ws("/ws"));
    join_expect(&mut alice, "alice", "lobby", 1);
    join_expect(&mut bob, "bob", "lobby", 2);
    saw_join(&mut alice, "bob", "lobby");

    join_expect(&mut bob, "bob", "lobby", 2);
    saw_leave(&mut alice, "bob", "lobby");
    saw_join(&mut alice, "bob", "lobby");
    assert_quiet(&mut alice, "alice");
    assert_quiet(&mut bob, "bob");
}

#[test]
fn protocol_version_two_or_higher_gets_joined_and_lower_gets_only_the_system_line() {
    let server = TestServer::start();
    for (i, v) in [json!(0), json!(1), Value::Null].into_iter().enumerate() {
        let mut client = server.ws("/ws");
        client.send_json(
            &json!({"type": "join", "userId": format!("old{i}"), "room": format!("r{i}"), "v": v}),
        );
        assert_eq!(client.recv_json(), welcome_line(&format!("r{i}"), 1));
        assert_quiet(&mut client, "a v1 joiner");
    }
    let mut client = server.ws("/ws");
    client.send_json(&json!({"type": "join", "userId": "new", "room": "r", "v": 3}));
    assert_eq!(client.recv_json(), welcome_line("r", 1));
    assert_fresh_joined(&client.recv_json(), "r", "new", &["new"]);
}

#[test]
fn unknown_fields_are_ignored_and_a_repeated_key_keeps_its_last_value() {
    let server = TestServer::start();
    let mut alice = server.ws("/ws");
    alice.send_text(
        r#"{"type":"join","userId":"nobody","userId":"alice","room":"lobby","v":2,"colour":"red","x":[1,{"y":null}]}"#,
    );
    assert_eq!(alice.recv_json(), welcome_line("lobby", 1));
    assert_fresh_joined(&alice.recv_json(), "lobby", "alice", &["alice"]);
    alice.send_text(r#"{"type":"chat","type":"ping","content":"ignored"}"#);
    assert_eq!(alice.recv_text(), r#"{"type":"pong"}"#);
    alice.send_text(r#"{"type":"ping","type":"chat","content":"hi","session":null}"#);
    assert_chat(&alice.recv_json(), "lobby", 1, "alice", "hi");
}

#[test]
fn names_that_look_alike_are_one_name_and_blank_edges_are_refused() {
    let server = TestServer::start();
    let (mut a, mut b) = (server.ws("/ws"), server.ws("/ws"));
    join_expect(&mut a, "ann", "lobby", 1);
    for look_alike in ["Ann", "ａｎｎ", "ann\u{200b}"] {
        b.send_json(&join_msg(look_alike, "lobby"));
        let reply = b.recv_json();
        assert_eq!(reply["type"], "error", "{look_alike}: {reply}");
        assert!(
            ["name_taken", "invalid_field"].contains(&reply["code"].as_str().unwrap_or_default()),
            "{look_alike}: {reply}"
        );
    }
    b.send_json(&join_msg(" ann ", "lobby"));
    assert_error(&b.recv_json(), "invalid_field");
    join_expect(&mut b, "anna", "lobby", 2);
    saw_join(&mut a, "anna", "lobby");
}

#[test]
fn names_are_limited_in_characters_not_bytes() {
    let server = TestServer::start();
    let mut client = server.ws("/ws");
    let user = "😀".repeat(32);
    let room = "é".repeat(64);
    let joined = join_expect(&mut client, &user, &room, 1);
    assert_fresh_joined(&joined, &room, &user, &[&user]);

    let mut other = server.ws("/ws");
    other.send_json(&join_msg(&"😀".repeat(33), "r"));
    assert_error(&other.recv_json(), "too_long");
    other.send_json(&join_msg("x", &"é".repeat(65)));
    assert_error(&other.recv_json(), "too_long");
    other.send_json(&join_msg(&"a".repeat(33), "r"));
    assert_error(&other.recv_json(), "too_long");
    other.send_json(&join_msg("x", &"r".repeat(65)));
    assert_error(&other.recv_json(), "too_long");
    assert_alive(&mut other);
}

// ---------------------------------------------------------------------------------------------------------------
// chat

#[test]
fn chat_reaches_the_whole_room_sender_included_and_no_other_room() {
    let server = TestServer::start();
    let (mut alice, mut bob, mut carol) = (server.ws("/ws"), server.ws("/ws"), server.ws("/ws"));
    join_expect(&mut alice, "alice", "lobby", 1);
    join_expect(&mut bob, "bob", "lobby", 2);
    saw_join(&mut alice, "bob", "lobby");
    join_expect(&mut carol, "carol", "other", 1);

    alice.send_json(&chat_msg("hello room"));
    let to_alice = alice.recv_text();
    let to_bob = bob.recv_text();
    assert_eq!(to_alice, to_bob, "one message, the same bytes for everyone");
    let msg: Value = serde_json::from_str(&to_alice).unwrap();
    assert_chat(&msg, "lobby", 1, "alice", "hello room");
    assert_quiet(&mut carol, "carol (other room)");
    assert_quiet(&mut alice, "alice");
    assert_quiet(&mut bob, "bob");
}

#[test]
fn chat_seq_counts_up_per_room_independently() {
    let server = TestServer::start();
    let (mut alice, mut carol) = (server.ws("/ws"), server.ws("/ws"));
    join_expect(&mut alice, "alice", "lobby", 1);
    join_expect(&mut carol, "carol", "other", 1);
    let script = [
        ("alice", 1),
        ("alice", 2),
        ("carol", 1),
        ("alice", 3),
        ("carol", 2),
        ("carol", 3),
        ("carol", 4),
        ("alice", 4),
    ];
    for (i, (who, seq)) in script.into_iter().enumerate() {
        let (client, room) = if who == "alice" {
            (&mut alice, "lobby")
        } else {
            (&mut carol, "other")
        };
        let content = format!("message {i}");
        client.send_json(&chat_msg(&content));
        assert_chat(&client.recv_json(), room, seq, who, &content);
    }
    assert_quiet(&mut alice, "alice");
    assert_quiet(&mut carol, "carol");
}

#[test]
fn chat_from_is_the_joined_name_whatever_the_client_claims() {
    let server = TestServer::start();
    let (mut alice, mut bob) = (server.ws("/ws"), server.ws("/ws"));
    join_expect(&mut alice, "alice", "lobby", 1);
    join_expect(&mut bob, "bob", "lobby", 2);
    saw_join(&mut alice, "bob", "lobby");
    alice.send_json(&json!({"type": "chat", "content": "trust me", "from": "bob", "room": "elsewhere", "seq": 99}));
    assert_chat(&bob.recv_json(), "lobby", 1, "alice", "trust me");
    assert_chat(&alice.recv_json(), "lobby", 1, "alice", "trust me");
}

#[test]
fn content_is_limited_in_characters_not_bytes() {
    let server = TestServer::start();
    let mut alice = server.ws("/ws");
    join_expect(&mut alice, "alice", "lobby", 1);
    let max = "😀".repeat(4000);
    alice.send_json(&chat_msg(&max));
    assert_chat(&alice.recv_json(), "lobby", 1, "alice", &max);
    alice.send_json(&chat_msg(&"😀".repeat(4001)));
    assert_error(&alice.recv_json(), "too_long");
    alice.send_json(&chat_msg(&"a".repeat(4001)));
    assert_error(&alice.recv_json(), "too_long");
    alice.send_json(&json!({"type": "dm", "to": "alice", "content": "a".repeat(4001)}));
    assert_error(&alice.recv_json(), "too_long");
    assert_alive(&mut alice);
}

#[test]
fn content_limit_follows_the_configuration() {
    let server = TestServer::with_config(|c| c.chat.max_content_chars = 5);
    let mut alice = server.ws("/ws");
    join_expect(&mut alice, "alice", "lobby", 1);
    alice.send_json(&chat_msg("ééééé"));
    assert_chat(&alice.recv_json(), "lobby", 1, "alice", "ééééé");
    alice.send_json(&chat_msg("123456"));
    assert_error(&alice.recv_json(), "too_long");
}

// ---------------------------------------------------------------------------------------------------------------
// dm

#[test]
fn dm_reaches_the_target_in_another_room_and_a_copy_returns_to_the_sender() {
    let server = TestServer::start();
    let (mut alice, mut carol) = (server.ws("/ws"), server.ws("/ws"));
    let (mut bob, mut dave) = (server.ws("/ws"), server.ws("/ws"));
    join_expect(&mut alice, "alice", "lobby", 1);
    join_expect(&mut carol, "carol", "lobby", 2);
    saw_join(&mut alice, "carol", "lobby");
    join_expect(&mut bob, "bob", "other", 1);
    join_expect(&mut dave, "dave", "other", 2);
    saw_join(&mut bob, "dave", "other");

    alice.send_json(&json!({"type": "dm", "to": "bob", "content": "psst", "from": "carol"}));
    let to_bob = bob.recv_json();
    assert_eq!(
        without_timestamp(&to_bob),
        json!({"type": "dm", "from": "alice", "to": "bob", "content": "psst"})
    );
    let copy = alice.recv_json();
    assert_eq!(copy, to_bob, "the sender's copy is the same message");
    assert_quiet(&mut carol, "carol (sender's room)");
    assert_quiet(&mut dave, "dave (target's room)");
    assert_quiet(&mut alice, "alice");
    assert_quiet(&mut bob, "bob");
}

#[test]
fn dm_to_oneself_arrives_once() {
    let server = TestServer::start();
    let mut alice = server.ws("/ws");
    join_expect(&mut alice, "alice", "lobby", 1);
    alice.send_json(&json!({"type": "dm", "to": "alice", "content": "note to self"}));
    assert_eq!(
        without_timestamp(&alice.recv_json()),
        json!({"type": "dm", "from": "alice", "to": "alice", "content": "note to self"})
    );
    assert_quiet(&mut alice, "alice");
}

#[test]
fn dm_to_a_user_who_is_not_online_is_not_online() {
    let server = TestServer::start();
    let (mut alice, mut bob) = (server.ws("/ws"), server.ws("/ws"));
    join_expect(&mut alice, "alice", "lobby", 1);
    alice.send_json(&json!({"type": "dm", "to": "ghost", "content": "hello?"}));
    assert_error(&alice.recv_json(), "not_online");
    assert_alive(&mut alice);

    // Online but in no room (it left) is not online either.
    join_expect(&mut bob, "bob", "other", 1);
    bob.send_json(&json!({"type": "leave"}));
    assert_alive(&mut bob);
    alice.send_json(&json!({"type": "dm", "to": "bob", "content": "still there?"}));
    assert_error(&alice.recv_json(), "not_online");
    assert_alive(&mut alice);
    assert_quiet(&mut bob, "bob");
}

// ---------------------------------------------------------------------------------------------------------------
// leave

#[test]
fn leave_tells_the_room_makes_chat_not_joined_and_frees_the_name() {
    let server = TestServer::start();
    let (mut alice, mut bob) = (server.ws("/ws"), server.ws("/ws"));
    let first = join_expect(&mut alice, "alice", "lobby", 1);
    join_expect(&mut bob, "bob", "lobby", 2);
    saw_join(&mut alice, "bob", "lobby");

    alice.send_json(&json!({"type": "leave"}));
    saw_leave(&mut bob, "alice", "lobby");
    assert_quiet(&mut alice, "alice (leave has no reply)");

    // Its last successful join was v2, so it still gets the v2 form.
    alice.send_json(&chat_msg("am I here?"));
    assert_error(&alice.recv_json(), "not_joined");
    alice.send_json(&json!({"type": "leave"}));
    assert_error(&alice.recv_json(), "not_joined");
    alice.send_json(&json!({"type": "dm", "to": "bob", "content": "hi"}));
    assert_error(&alice.recv_json(), "not_joined");
    assert_alive(&mut alice);
    assert_quiet(&mut bob, "bob");

    // The name stays reserved for alice's session during the grace period: another connection cannot take it...
    let mut impostor = server.ws("/ws");
    impostor.send_json(&join_msg("alice", "lobby"));
    assert_error(&impostor.recv_json(), "name_taken");
    // ...but alice's session can, from a new connection (a reloaded page), and it keeps the session.
    let mut reloaded = server.ws("/ws");
    let again = join_with(
        &mut reloaded,
        "alice",
        "lobby",
        2,
        json!({"session": first["session"]}),
    );
    assert_eq!(again["session"], first["session"]);
    saw_join(&mut bob, "alice", "lobby");

    // The connection that left can join again under another name.
    join_expect(&mut alice, "alice2", "lobby", 3);
    saw_join(&mut bob, "alice2", "lobby");
    saw_join(&mut reloaded, "alice2", "lobby");
}

#[test]
fn chat_leave_and_dm_before_join_are_not_joined_as_system_lines() {
    let server = TestServer::start();
    let (mut client, mut bob) = (server.ws("/ws"), server.ws("/ws"));
    join_expect(&mut bob, "bob", "lobby", 1);
    for frame in [
        json!({"type": "chat", "content": "hi"}),
        json!({"type": "leave"}),
        json!({"type": "dm", "to": "bob", "content": "hi"}),
    ] {
        client.send_json(&frame);
        assert_legacy_error(&client.recv_json(), "not_joined");
    }
    assert_alive(&mut client);
    assert_quiet(&mut bob, "bob");
}

// ---------------------------------------------------------------------------------------------------------------
// ping

#[test]
fn ping_is_answered_with_pong_before_and_after_joining() {
    let server = TestServer::start();
    let mut client = server.ws("/ws");
    client.send_json(&json!({"type": "ping"}));
    assert_eq!(client.recv_text(), r#"{"type":"pong"}"#);
    join_expect(&mut client, "alice", "lobby", 1);
    client.send_json(&json!({"type": "ping", "content": "ignored"}));
    assert_eq!(client.recv_text(), r#"{"type":"pong"}"#);
    assert_quiet(&mut client, "client");
}

// ---------------------------------------------------------------------------------------------------------------
// error codes, in both forms

/// Frames that are refused whatever the connection's state, with their code.
fn bad_frames() -> Vec<(String, &'static str)> {
    let j = |v: Value| v.to_string();
    vec![
        ("not json".into(), "invalid_json"),
        ("[1]".into(), "invalid_json"),
        ("[]".into(), "invalid_json"),
        (r#""join""#.into(), "invalid_json"),
        ("42".into(), "invalid_json"),
        ("null".into(), "invalid_json"),
        (r#"{"type":"chat""#.into(), "invalid_json"),
        (r#"{"type":"ping"} {}"#.into(), "invalid_json"),
        ("{}".into(), "unknown_type"),
        (j(json!({"content": "no type"})), "unknown_type"),
        (j(json!({"type": "shout"})), "unknown_type"),
        (j(json!({"type": "JOIN"})), "unknown_type"),
        (j(json!({"type": "pong"})), "unknown_type"),
        (j(json!({"type": 1})), "unknown_type"),
        (j(json!({"type": null})), "unknown_type"),
        (j(json!({"type": "join", "room": "r"})), "invalid_field"),
        (
            j(json!({"type": "join", "userId": null, "room": "r"})),
            "invalid_field",
        ),
        (
            j(json!({"type": "join", "userId": "", "room": "r"})),
            "invalid_field",
        ),
        (
            j(json!({"type": "join", "userId": 7, "room": "r"})),
            "invalid_field",
        ),
        (j(json!({"type": "join", "userId": "u"})), "invalid_field"),
        (
            j(json!({"type": "join", "userId": "a\u{1}b", "room": "r"})),
            "invalid_field",
        ),
        (
            j(json!({"type": "join", "userId": "a\nb", "room": "r"})),
            "invalid_field",
        ),
        (
            j(json!({"type": "join", "userId": "nul\u{0}", "room": "r"})),
            "invalid_field",
        ),
        (
            j(json!({"type": "join", "userId": "u", "room": "r\u{7f}"})),
            "invalid_field",
        ),
        (
            j(json!({"type": "join", "userId": "u", "room": "r\u{85}"})),
            "invalid_field",
        ),
        (
            j(json!({"type": "join", "userId": "u", "room": "r", "v": "2"})),
            "invalid_field",
        ),
        (
            j(json!({"type": "join", "userId": "u", "room": "r", "session": 5})),
            "invalid_field",
        ),
        (
            j(json!({"type": "join", "userId": "u", "room": "r", "since": "e:1"})),
            "invalid_field",
        ),
        (
            j(json!({"type": "join", "userId": "x".repeat(33), "room": "r"})),
            "too_long",
        ),
        (
            j(json!({"type": "join", "userId": "u", "room": "x".repeat(65)})),
            "too_long",
        ),
        (j(json!({"type": "chat"})), "invalid_field"),
        (j(json!({"type": "chat", "content": 5})), "invalid_field"),
        (j(json!({"type": "chat", "content": ""})), "invalid_field"),
        (
            j(json!({"type": "chat", "content": ["x"]})),
            "invalid_field",
        ),
        (
            j(json!({"type": "chat", "content": "x".repeat(4001)})),
            "too_long",
        ),
        (j(json!({"type": "dm", "content": "hi"})), "invalid_field"),
        (j(json!({"type": "dm", "to": "bob"})), "invalid_field"),
        (
            j(json!({"type": "dm", "to": "b\u{0}b", "content": "hi"})),
            "invalid_field",
        ),
        (
            j(json!({"type": "dm", "to": "x".repeat(33), "content": "hi"})),
            "too_long",
        ),
    ]
}

/// Sends every bad frame, expecting its code in `form` and a live connection after each.
fn check_bad_frames(client: &mut TestClient, form: Form) {
    for (frame, code) in bad_frames() {
        client.send_text(&frame);
        let reply = client.recv_json();
        assert_eq!(
            reply["code"], code,
            "{frame} should be {code} ({form:?}), got {reply}"
        );
        assert_error_in(form, &reply, code);
        assert_alive(client);
    }
}

fn generous_rate(config: &mut roomcast::Config) {
    config.chat.rate_burst = 10_000;
}

#[test]
fn errors_before_any_join_are_system_lines_and_keep_the_connection() {
    let server = TestServer::with_config(generous_rate);
    let mut client = server.ws("/ws");
    check_bad_frames(&mut client, Form::Legacy);
    // Still usable: it can join afterwards.
    join_expect(&mut client, "late", "lobby", 1);
}

#[test]
fn errors_after_a_v2_join_are_error_objects_and_keep_the_connection() {
    let server = TestServer::with_config(generous_rate);
    let (mut client, mut bob) = (server.ws("/ws"), server.ws("/ws"));
    join_expect(&mut client, "alice", "lobby", 1);
    join_expect(&mut bob, "bob", "lobby", 2);
    saw_join(&mut client, "bob", "lobby");
    check_bad_frames(&mut client, Form::V2);
    // None of it changed its membership or told the room anything.
    assert_quiet(&mut bob, "bob");
    client.send_json(&chat_msg("still here"));
    assert_chat(&client.recv_json(), "lobby", 1, "alice", "still here");
    assert_chat(&bob.recv_json(), "lobby", 1, "alice", "still here");
}

#[test]
fn errors_after_a_v2_join_and_a_leave_are_still_error_objects() {
    let server = TestServer::with_config(generous_rate);
    let mut client = server.ws("/ws");
    join_expect(&mut client, "alice", "lobby", 1);
    client.send_json(&json!({"type": "leave"}));
    check_bad_frames(&mut client, Form::V2);
}

#[test]
fn errors_after_a_legacy_join_are_system_lines() {
    let server = TestServer::with_config(generous_rate);
    let mut client = server.ws("/ws");
    join_legacy(&mut client, "old", "lobby", 1);
    check_bad_frames(&mut client, Form::Legacy);
    client.send_json(&json!({"type": "dm", "to": "ghost", "content": "x"}));
    assert_legacy_error(&client.recv_json(), "not_online");
}

#[test]
fn a_rejected_join_announcing_v2_gets_an_error_object_even_before_joining() {
    let server = TestServer::start();
    let mut client = server.ws("/ws");
    for (frame, code) in [
        (
            json!({"type": "join", "room": "r", "v": 2}),
            "invalid_field",
        ),
        (
            json!({"type": "join", "userId": "a\u{1}", "room": "r", "v": 2}),
            "invalid_field",
        ),
        (
            json!({"type": "join", "userId": "x".repeat(33), "room": "r", "v": 7}),
            "too_long",
        ),
        (
            json!({"type": "join", "userId": "u", "room": "r", "v": 2, "since": 3}),
            "invalid_field",
        ),
    ] {
        client.send_json(&frame);
        assert_error(&client.recv_json(), code);
    }
    // A v1 join, and a v2 announced in a non-integer, still get the system form.
    client.send_json(&json!({"type": "join", "room": "r", "v": 1}));
    assert_legacy_error(&client.recv_json(), "invalid_field");
    client.send_json(&json!({"type": "join", "room": "r", "v": "2"}));
    assert_legacy_error(&client.recv_json(), "invalid_field");
    assert_alive(&mut client);
}

// ---------------------------------------------------------------------------------------------------------------
// name uniqueness

#[test]
fn a_live_name_is_taken_until_its_connection_drops() {
    // Without a grace period, so that the name is free as soon as the connection is gone.
    let server = TestServer::with_config(|c| c.chat.name_grace_ms = 0);
    let (mut first, mut second) = (server.ws("/ws"), server.ws("/ws"));
    join_expect(&mut first, "zed", "lobby", 1);

    second.send_json(&join_msg("zed", "lobby"));
    assert_error(&second.recv_json(), "name_taken");
    assert_alive(&mut second);
    // A v1 attempt gets the system form.
    second.send_json(&json!({"type": "join", "userId": "zed", "room": "other"}));
    assert_legacy_error(&second.recv_json(), "name_taken");
    assert_alive(&mut first);
    assert_quiet(&mut first, "zed");

    drop(first);
    let deadline = Instant::now() + Duration::from_secs(2);
    let joined = loop {
        second.send_json(&join_msg("zed", "lobby"));
        let reply = second.recv_json();
        if reply["type"] == "system" {
            assert_eq!(reply, welcome_line("lobby", 1));
            break second.recv_json();
        }
        assert_error(&reply, "name_taken");
        assert!(
            Instant::now() < deadline,
            "the name is still taken 2 s after its connection dropped"
        );
        sleep(Duration::from_millis(50));
    };
    assert_fresh_joined(&joined, "lobby", "zed", &["zed"]);
}

#[test]
fn a_failed_join_keeps_the_current_room_and_name() {
    let server = TestServer::start();
    let (mut zed, mut yan, mut xi) = (server.ws("/ws"), server.ws("/ws"), server.ws("/ws"));
    join_expect(&mut zed, "zed", "lobby", 1);
    join_expect(&mut yan, "yan", "other", 1);
    join_expect(&mut xi, "xi", "other", 2);
    saw_join(&mut yan, "xi", "other");

    yan.send_json(&join_msg("zed", "lobby"));
    assert_error(&yan.recv_json(), "name_taken");
    assert_quiet(&mut xi, "xi (yan did not leave)");
    assert_quiet(&mut zed, "zed");
    yan.send_json(&chat_msg("still yan"));
    assert_chat(&yan.recv_json(), "other", 1, "yan", "still yan");
    assert_chat(&xi.recv_json(), "other", 1, "yan", "still yan");
}

#[test]
fn a_dropped_connection_is_seen_leaving_by_its_room() {
    let server = TestServer::start();
    let (mut alice, mut bob) = (server.ws("/ws"), server.ws("/ws"));
    join_expect(&mut alice, "alice", "lobby", 1);
    join_expect(&mut bob, "bob", "lobby", 2);
    saw_join(&mut alice, "bob", "lobby");
    drop(bob);
    saw_leave(&mut alice, "bob", "lobby");
}

// ---------------------------------------------------------------------------------------------------------------
// binary frames

#[test]
fn a_binary_frame_on_the_chat_closes_with_1003_and_the_room_is_told() {
    let server = TestServer::start();
    let (mut alice, mut bob) = (server.ws("/ws"), server.ws("/ws"));
    join_expect(&mut alice, "alice", "lobby", 1);
    join_expect(&mut bob, "bob", "lobby", 2);
    saw_join(&mut alice, "bob", "lobby");
    bob.send_binary(br#"{"type":"chat","content":"binary"}"#);
    assert_eq!(bob.recv_close(), Some(1003));
    saw_leave(&mut alice, "bob", "lobby");
    assert_quiet(&mut alice, "alice (the binary frame is not a chat)");
}

/// Within this after the client answered the server's Close, the server must have ended the connection: the
/// room told, the name freed, TCP closed. The default close timeout (5 s) is far above it.
const PROMPT: Duration = Duration::from_secs(1);

#[test]
fn a_member_closed_with_1003_leaves_its_room_and_name_promptly() {
    let server = TestServer::with_config(|c| c.chat.name_grace_ms = 0);
    let (mut alice, mut bob) = (server.ws("/ws"), server.ws("/ws"));
    join_expect(&mut alice, "alice", "lobby", 1);
    join_expect(&mut bob, "bob", "lobby", 2);
    saw_join(&mut alice, "bob", "lobby");
    bob.send_binary(&[1, 2, 3]);
    // recv_close answers the Close at once.
    assert_eq!(bob.recv_close(), Some(1003));
    let answered = Instant::now();

    let got = alice.recv_timeout(PROMPT);
    assert!(
        got.is_some(),
        "the room was not told within {PROMPT:?} that bob's connection ended"
    );
    let text = match got {
        Some(common::Received::Text(text)) => text,
        other => panic!("expected a text message, got {other:?}"),
    };
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        system("User \"bob\" left the room")
    );
    let mut again = server.ws("/ws");
    join_expect(&mut again, "bob", "lobby", 2);
    assert_eq!(
        bob.recv_timeout(PROMPT.saturating_sub(answered.elapsed())),
        Some(common::Received::Eof),
        "the server did not close TCP promptly after the closing handshake"
    );
}

#[test]
fn a_binary_frame_before_joining_closes_with_1003() {
    let server = TestServer::start();
    let mut client = server.ws("/ws");
    client.send_binary(&[0, 1, 2]);
    assert_eq!(client.recv_close(), Some(1003));
}

// ---------------------------------------------------------------------------------------------------------------
// rate limiting

#[test]
fn messages_over_the_burst_are_rate_limited_and_the_bucket_refills() {
    let server = TestServer::with_config(|c| {
        c.chat.rate_per_sec = 1.0;
        c.chat.rate_burst = 3;
    });
    let (mut alice, mut bob) = (server.ws("/ws"), server.ws("/ws"));
    join_expect(&mut alice, "alice", "lobby", 1);
    join_expect(&mut bob, "bob", "lobby", 2);
    saw_join(&mut alice, "bob", "lobby");
    // The join spent one of alice's tokens; let the bucket fill up again.
    sleep(Duration::from_millis(1_100));

    for i in 0..6 {
        alice.send_json(&chat_msg(&format!("m{i}")));
    }
    for seq in 1..=3 {
        assert_chat(
            &alice.recv_json(),
            "lobby",
            seq,
            "alice",
            &format!("m{}", seq - 1),
        );
    }
    for _ in 0..3 {
        assert_error(&alice.recv_json(), "rate_limited");
    }
    for seq in 1..=3 {
        assert_chat(
            &bob.recv_json(),
            "lobby",
            seq,
            "alice",
            &format!("m{}", seq - 1),
        );
    }
    assert_quiet(&mut bob, "bob (dropped messages are not delivered)");
    assert_quiet(&mut alice, "alice");

    sleep(Duration::from_millis(1_100));
    alice.send_json(&chat_msg("refilled"));
    assert_chat(&alice.recv_json(), "lobby", 4, "alice", "refilled");
    alice.send_json(&chat_msg("too soon"));
    assert_error(&alice.recv_json(), "rate_limited");
    assert_chat(&bob.recv_json(), "lobby", 4, "alice", "refilled");
    assert_quiet(&mut bob, "bob");
}

#[test]
fn rate_limited_is_a_system_line_for_a_connection_that_has_not_joined() {
    let server = TestServer::with_config(|c| {
        c.chat.rate_per_sec = 0.5;
        c.chat.rate_burst = 3;
    });
    let mut client = server.ws("/ws");
    for _ in 0..4 {
        client.send_json(&json!({"type": "ping"}));
    }
    for _ in 0..3 {
        assert_eq!(client.recv_text(), r#"{"type":"pong"}"#);
    }
    assert_legacy_error(&client.recv_json(), "rate_limited");
    assert_quiet(&mut client, "client");
}

/// bob and flood in "lobby" on a server with a tight rate limit (1/s, burst 3, abuse after 5 drops), and flood
/// has just sent 20 chats at once. Returns the server too, which must outlive the clients.
fn flooded_lobby() -> (TestServer, TestClient, TestClient) {
    let server = TestServer::with_config(|c| {
        c.chat.rate_per_sec = 1.0;
        c.chat.rate_burst = 3;
        c.chat.abuse_drops = 5;
        c.chat.name_grace_ms = 0;
    });
    let (mut bob, mut flood) = (server.ws("/ws"), server.ws("/ws"));
    join_expect(&mut bob, "bob", "lobby", 1);
    join_expect(&mut flood, "flood", "lobby", 2);
    saw_join(&mut bob, "flood", "lobby");
    for i in 0..20 {
        flood.send_json(&chat_msg(&format!("spam {i}")));
    }
    (server, bob, flood)
}

#[test]
fn a_flood_far_over_the_limit_is_closed_with_1008_and_leaves_the_room() {
    let (_server, mut bob, mut flood) = flooded_lobby();
    // One token went to the join: two chats pass, five are dropped, the sixth drop closes.
    let mut chats = 0;
    let mut limited = 0;
    let code = loop {
        match flood.recv() {
            common::Received::Text(text) => {
                let msg: Value = serde_json::from_str(&text).unwrap();
                if msg["type"] == "chat" {
                    chats += 1;
                } else {
                    assert_error(&msg, "rate_limited");
                    limited += 1;
                }
            }
            common::Received::Close(code) => break code,
            other => panic!("expected text or Close, got {other:?}"),
        }
    };
    assert_eq!(code, Some(1008));
    assert_eq!((chats, limited), (2, 5));
    for seq in 1..=2 {
        assert_chat(
            &bob.recv_json(),
            "lobby",
            seq,
            "flood",
            &format!("spam {}", seq - 1),
        );
    }
    saw_leave(&mut bob, "flood", "lobby");
    assert_quiet(&mut bob, "bob");
}

#[test]
fn a_flooder_closed_with_1008_leaves_its_room_and_name_promptly() {
    let (server, mut bob, mut flood) = flooded_lobby();
    assert_eq!(flood.recv_close(), Some(1008));
    for seq in 1..=2 {
        assert_chat(
            &bob.recv_json(),
            "lobby",
            seq,
            "flood",
            &format!("spam {}", seq - 1),
        );
    }
    let got = bob.recv_timeout(PROMPT);
    assert!(
        got.is_some(),
        "the room was not told within {PROMPT:?} that the flooder's connection ended"
    );
    let mut again = server.ws("/ws");
    join_expect(&mut again, "flood", "lobby", 2);
}

// ---------------------------------------------------------------------------------------------------------------
// v1 (legacy) clients

#[test]
fn a_legacy_client_gets_only_system_and_chat_shapes() {
    let server = TestServer::start();
    let (mut new, mut old, mut third) = (server.ws("/ws"), server.ws("/ws"), server.ws("/ws"));
    join_expect(&mut new, "new", "lobby", 1);
    join_legacy(&mut old, "old", "lobby", 2);
    assert_quiet(&mut old, "old (no joined for v1)");
    saw_join(&mut new, "old", "lobby");

    join_expect(&mut third, "third", "lobby", 3);
    assert_eq!(old.recv_json(), system("User \"third\" joined the room"));
    assert_quiet(&mut old, "old (no presence for v1)");
    saw_join(&mut new, "third", "lobby");
    third.send_json(&json!({"type": "leave"}));
    assert_eq!(old.recv_json(), system("User \"third\" left the room"));
    assert_quiet(&mut old, "old (no presence for v1)");
    saw_leave(&mut new, "third", "lobby");

    new.send_json(&chat_msg("hello"));
    let to_new = new.recv_text();
    let to_old = old.recv_text();
    assert_eq!(to_old, to_new, "nothing to escape: the same bytes");
    assert_chat(
        &serde_json::from_str(&to_old).unwrap(),
        "lobby",
        1,
        "new",
        "hello",
    );

    new.send_json(&json!({"type": "dm", "to": "old", "content": "psst"}));
    assert_eq!(
        without_timestamp(&old.recv_json()),
        json!({"type": "chat", "from": "new", "content": "psst", "private": true})
    );
    assert_eq!(
        without_timestamp(&new.recv_json()),
        json!({"type": "dm", "from": "new", "to": "old", "content": "psst"})
    );

    old.send_json(&json!({"type": "dm", "to": "new", "content": "back"}));
    assert_eq!(
        without_timestamp(&new.recv_json()),
        json!({"type": "dm", "from": "old", "to": "new", "content": "back"})
    );
    assert_eq!(
        without_timestamp(&old.recv_json()),
        json!({"type": "chat", "from": "old", "content": "back", "private": true})
    );

    old.send_json(&chat_msg("from the past"));
    assert_chat(&old.recv_json(), "lobby", 2, "old", "from the past");
    assert_chat(&new.recv_json(), "lobby", 2, "old", "from the past");
    assert_quiet(&mut old, "old");
    assert_quiet(&mut new, "new");
}

#[test]
fn html_in_from_and_content_is_escaped_for_legacy_clients_only() {
    let server = TestServer::start();
    let evil = "<img src=x onerror=alert(1)>";
    let escaped_evil = "&lt;img src=x onerror=alert(1)&gt;";
    let (mut new, mut old, mut attacker) = (server.ws("/ws"), server.ws("/ws"), server.ws("/ws"));
    join_expect(&mut new, "new", "lobby", 1);
    join_legacy(&mut old, "old", "lobby", 2);
    saw_join(&mut new, "old", "lobby");
    join_expect(&mut attacker, evil, "lobby", 3);
    // System lines are never escaped: that page shows them as text.
    assert_eq!(
        old.recv_json(),
        system(&format!("User \"{evil}\" joined the room"))
    );
    saw_join(&mut new, evil, "lobby");

    let content = format!("{evil} & \"quotes\" 'single'");
    let escaped_content = format!("{escaped_evil} &amp; &quot;quotes&quot; &#39;single&#39;");
    attacker.send_json(&chat_msg(&content));
    assert_chat(&new.recv_json(), "lobby", 1, evil, &content);
    assert_chat(&attacker.recv_json(), "lobby", 1, evil, &content);
    assert_chat(&old.recv_json(), "lobby", 1, escaped_evil, &escaped_content);

    attacker.send_json(&json!({"type": "dm", "to": "old", "content": content}));
    assert_eq!(
        without_timestamp(&old.recv_json()),
        json!({"type": "chat", "from": escaped_evil, "content": escaped_content, "private": true})
    );
    assert_eq!(
        without_timestamp(&attacker.recv_json()),
        json!({"type": "dm", "from": evil, "to": "old", "content": content})
    );
    attacker.send_json(&json!({"type": "dm", "to": "new", "content": content}));
    assert_eq!(
        without_timestamp(&new.recv_json()),
        json!({"type": "dm", "from": evil, "to": "new", "content": content})
    );
    assert_eq!(
        without_timestamp(&attacker.recv_json()),
        json!({"type": "dm", "from": evil, "to": "new", "content": content})
    );
    assert_quiet(&mut old, "old");
}

#[test]
fn a_burst_handled_in_one_turn_reaches_every_member_in_order_and_in_its_own_form() {
    // The broadcasts of one loop turn share one buffer per room and form (src/server/batch.rs): the personal
    // messages queued between them must keep their places, and a v1 member must get each message's escaped form.
    let server = TestServer::start();
    let (mut sender, mut old, mut other) = (server.ws("/ws"), server.ws("/ws"), server.ws("/ws"));
    join_expect(&mut sender, "sender", "lobby", 1);
    join_legacy(&mut old, "old", "lobby", 2);
    saw_join(&mut sender, "old", "lobby");
    join_expect(&mut other, "other", "lobby", 3);
    assert_eq!(old.recv_json(), system("User \"other\" joined the room"));
    saw_join(&mut sender, "other", "lobby");

    let burst = [
        chat_msg("one"),
        chat_msg("<b>two</b>"),
        json!({"type": "dm", "to": "nobody", "content": "lost"}),
        chat_msg("three"),
        json!({"type": "dm", "to": "old", "content": "psst & co"}),
        chat_msg("four & more"),
    ];
    sender.send_texts_in_one_write(&burst.iter().map(Value::to_string).collect::<Vec<_>>());

    assert_chat(&sender.recv_json(), "lobby", 1, "sender", "one");
    assert_chat(&sender.recv_json(), "lobby", 2, "sender", "<b>two</b>");
    assert_error(&sender.recv_json(), "not_online");
    assert_chat(&sender.recv_json(), "lobby", 3, "sender", "three");
    assert_eq!(
        without_timestamp(&sender.recv_json()),
        json!({"type": "dm", "from": "sender", "to": "old", "content": "psst & co"})
    );
    assert_chat(&sender.recv_json(), "lobby", 4, "sender", "four & more");

    for (seq, content) in [
        (1, "one"),
        (2, "<b>two</b>"),
        (3, "three"),
        (4, "four & more"),
    ] {
        assert_chat(&other.recv_json(), "lobby", seq, "sender", content);
    }

    assert_chat(&old.recv_json(), "lobby", 1, "sender", "one");
    assert_chat(
        &old.recv_json(),
        "lobby",
        2,
        "sender",
        "&lt;b&gt;two&lt;/b&gt;",
    );
    assert_chat(&old.recv_json(), "lobby", 3, "sender", "three");
    assert_eq!(
        without_timestamp(&old.recv_json()),
        json!({"type": "chat", "from": "sender", "content": "psst &amp; co", "private": true})
    );
    assert_chat(&old.recv_json(), "lobby", 4, "sender", "four &amp; more");

    assert_quiet(&mut sender, "sender");
    assert_quiet(&mut old, "old");
    assert_quiet(&mut other, "other");
}

// ---------------------------------------------------------------------------------------------------------------
// presence cost

#[test]
fn what_an_early_member_receives_grows_linearly_with_later_joiners() {
    const N: usize = 200;
    let started = Instant::now();
    let server = TestServer::start();
    let name = |i: usize| format!("u{i:03}");
    let mut clients: Vec<TestClient> = Vec::with_capacity(N);
    let mut first = server.ws("/ws");
    join_expect(&mut first, &name(0), "big", 1);
    let mut received: Vec<String> = Vec::new();
    for i in 1..N {
        let mut client = server.ws("/ws");
        let joined = join_expect(&mut client, &name(i), "big", i + 1);
        assert_eq!(
            joined["members"].as_array().map(Vec::len),
            Some((i + 1).min(100)),
            "a joined lists at most 100 names, however crowded the room"
        );
        clients.push(client);
        if i % 50 == 0 {
            while let Some(common::Received::Text(text)) = first.recv_timeout(Duration::ZERO) {
                received.push(text);
            }
        }
    }
    while received.len() < 2 * (N - 1) {
        received.push(first.recv_text());
    }
    assert_quiet(&mut first, "the first member");

    // Exactly one system line and one presence per later joiner, each of a size that does not depend on how many
    // are in the room (but for the digits of the count): no member lists.
    let mut total_bytes = 0;
    for (k, pair) in received.chunks(2).enumerate() {
        let user = name(k + 1);
        let sys: Value = serde_json::from_str(&pair[0]).unwrap();
        let presence: Value = serde_json::from_str(&pair[1]).unwrap();
        assert_eq!(sys, system(&format!("User \"{user}\" joined the room")));
        assert_eq!(presence["count"], k + 2);
        assert_eq!(
            presence_without_count(presence),
            json!({"type": "presence", "room": "big", "joined": user})
        );
        total_bytes += pair[0].len() + pair[1].len();
    }
    let per_joiner = received[0].len() + received[1].len();
    assert!(
        total_bytes <= (per_joiner + 2) * (N - 1),
        "bytes grow linearly: {total_bytes}"
    );
    assert!(per_joiner < 120, "{per_joiner} bytes per joiner");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{N} joins took {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// JSON round trip

#[test]
fn tricky_json_characters_round_trip_exactly() {
    let server = TestServer::start();
    let (mut alice, mut bob) = (server.ws("/ws"), server.ws("/ws"));
    let room = "r\\o/m 😀 </script> {}";
    join_expect(&mut alice, "alice", room, 1);
    join_expect(&mut bob, "bob", room, 2);
    saw_join(&mut alice, "bob", room);

    let content =
        "\"double\" 'single' back\\slash \\u0041 new\nline cr\r tab\t nul\u{0} bell\u{7} \
                   del\u{7f} esc\u{1b} emoji 😀👍🏽 zwj 👩‍👩‍👧 combining e\u{301} bom\u{feff} \
                   seps\u{2028}\u{2029} rtl\u{202e} </script> <!-- {\"json\": [1, 2]} \u{10ffff}";
    alice.send_json(&chat_msg(content));
    for client in [&mut alice, &mut bob] {
        let msg = client.recv_json();
        assert_chat(&msg, room, 1, "alice", content);
        assert_eq!(msg["content"].as_str(), Some(content));
    }
    alice.send_json(&json!({"type": "dm", "to": "bob", "content": content}));
    for client in [&mut bob, &mut alice] {
        let msg = client.recv_json();
        assert_eq!(msg["type"], "dm");
        assert_eq!(msg["content"].as_str(), Some(content));
    }
    // Escapes written by hand (\u0000, a surrogate pair) decode to the same text.
    alice.send_text(r#"{"type":"chat","content":"a\u0000b\ud83d\ude00c\"\\\/"}"#);
    assert_chat(&bob.recv_json(), room, 2, "alice", "a\u{0}b😀c\"\\/");
}
