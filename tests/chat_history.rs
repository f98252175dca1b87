//! Session reclaim and history replay over real sockets against an in-process server (`docs/protocol.md`,
//! "History" and the `session` / `since` fields of `join`).

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::chat::{
    assert_alive, assert_quiet, chat_msg, join_expect, join_with, saw_join, saw_leave,
    welcome_line, QUIET,
};
use common::{Received, TestClient, TestServer};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------------------------
// Helpers

fn members(joined: &Value) -> Vec<String> {
    let mut names: Vec<String> = joined["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m.as_str().expect("name").to_owned())
        .collect();
    names.sort_unstable();
    names
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn assert_chat(msg: &Value, room: &str, seq: u64, from: &str, content: &str) {
    let ts = msg["timestamp"].as_u64().expect("timestamp");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(ts <= now + 1_000 && ts + 10_000 >= now, "timestamp {ts}");
    let mut rest = msg.clone();
    rest.as_object_mut().unwrap().remove("timestamp");
    assert_eq!(
        rest,
        json!({"type": "chat", "room": room, "seq": seq, "from": from, "content": content}),
        "{msg}"
    );
}

/// Sends `count` chats `m1`, `m2`, ... from `client` and returns the raw text of each as it came back.
fn say_many(client: &mut TestClient, room: &str, user: &str, count: u64) -> Vec<String> {
    (1..=count)
        .map(|seq| {
            client.send_json(&chat_msg(&format!("m{seq}")));
            let text = client.recv_text();
            assert_chat(&parse(&text), room, seq, user, &format!("m{seq}"));
            text
        })
        .collect()
}

fn assert_error(msg: &Value, code: &str) {
    assert_eq!(msg.as_object().map(|o| o.len()), Some(3), "{msg}");
    assert_eq!(msg["type"], "error", "{msg}");
    assert_eq!(msg["code"], code, "{msg}");
    assert!(msg["message"].as_str().is_some_and(|m| !m.is_empty()));
}

/// An epoch certainly different from `epoch`.
fn other_epoch(epoch: &str) -> &'static str {
    if epoch == "0000000000000000" {
        "1111111111111111"
    } else {
        "0000000000000000"
    }
}

/// A server whose rooms keep 5 messages.
fn small_history() -> TestServer {
    TestServer::with_config(|c| c.chat.history_len = 5)
}

// ---------------------------------------------------------------------------------------------------------------
// Session reclaim

#[test]
fn a_session_reclaims_the_name_closes_the_old_connection_with_4001_and_is_silent_in_the_room() {
    let server = TestServer::start();
    let (mut ann_old, mut bob) = (server.ws("/ws"), server.ws("/ws"));
    let first = join_expect(&mut ann_old, "ann", "lobby", 1);
    join_expect(&mut bob, "bob", "lobby", 2);
    saw_join(&mut ann_old, "bob", "lobby");
    let session = first["session"].as_str().unwrap().to_owned();

    let mut ann = server.ws("/ws");
    let joined = join_with(&mut ann, "ann", "lobby", 2, json!({"session": session}));
    assert_eq!(ann_old.recv_close(), Some(4001));
    assert_eq!(
        joined["session"], session,
        "the session survives the reclaim"
    );
    assert_eq!(joined["epoch"], first["epoch"]);
    assert_eq!(joined["seq"], 0);
    assert_eq!(joined["replay"], json!({"complete": true, "count": 0}));
    assert_eq!(members(&joined), ["ann", "bob"]);
    assert_quiet(&mut bob, "bob (the name never left)");

    // The new connection holds the name: chats and DMs reach it, not the old one.
    bob.send_json(&json!({"type": "dm", "to": "ann", "content": "welcome back"}));
    assert_eq!(ann.recv_json()["content"], "welcome back");
    assert_eq!(bob.recv_json()["type"], "dm");
    ann.send_json(&chat_msg("I'm back"));
    assert_chat(&ann.recv_json(), "lobby", 1, "ann", "I'm back");
    assert_chat(&bob.recv_json(), "lobby", 1, "ann", "I'm back");
    // The replaced connection got nothing after its Close.
    match ann_old.recv_timeout(QUIET) {
        None | Some(Received::Eof) => {}
        Some(other) => panic!("the replaced connection got {other:?} after its Close"),
    }
}

#[test]
fn a_replaced_connection_is_disconnected_promptly_after_the_closing_handshake() {
    let server = TestServer::start();
    let mut ann_old = server.ws("/ws");
    let first = join_expect(&mut ann_old, "ann", "lobby", 1);
    let mut ann = server.ws("/ws");
    join_with(
        &mut ann,
        "ann",
        "lobby",
        1,
        json!({"session": first["session"]}),
    );
    assert_eq!(ann_old.recv_close(), Some(4001));
    assert_eq!(
        ann_old.recv_timeout(Duration::from_secs(1)),
        Some(Received::Eof),
        "TCP should end right after the closing handshake"
    );
}

#[test]
fn a_wrong_session_is_name_taken_and_the_holder_keeps_its_name() {
    // Six joins in a row from one connection: more than the join burst allows by default.
    let server = TestServer::with_config(|c| c.chat.join_burst = 10);
    let (mut ann, mut bob, mut intruder) = (server.ws("/ws"), server.ws("/ws"), server.ws("/ws"));
    let a = join_expect(&mut ann, "ann", "lobby", 1);
    let b = join_expect(&mut bob, "bob", "lobby", 2);
    saw_join(&mut ann, "bob", "lobby");
    let session = a["session"].as_str().unwrap();
    let almost = format!("{}x", &session[..session.len() - 1]);
    for shown in [
        json!("wrong"),
        json!(""),
        json!(almost),
        json!(format!("{session}x")),
        b["session"].clone(),
    ] {
        intruder.send_json(
            &json!({"type": "join", "userId": "ann", "room": "lobby", "v": 2, "session": shown}),
        );
        assert_error(&intruder.recv_json(), "name_taken");
    }
    assert_alive(&mut intruder);
    assert_alive(&mut ann);
    assert_quiet(&mut ann, "ann");
    assert_quiet(&mut bob, "bob");
    // The right session still works afterwards.
    let joined = join_with(
        &mut intruder,
        "ann",
        "lobby",
        2,
        json!({"session": session}),
    );
    assert_eq!(joined["session"], session);
    assert_eq!(ann.recv_close(), Some(4001));
}

#[test]
fn a_reclaim_into_another_room_is_seen_as_leave_and_join() {
    let server = TestServer::start();
    let (mut ann_old, mut bob, mut carol) = (server.ws("/ws"), server.ws("/ws"), server.ws("/ws"));
    let first = join_expect(&mut ann_old, "ann", "lobby", 1);
    join_expect(&mut bob, "bob", "lobby", 2);
    saw_join(&mut ann_old, "bob", "lobby");
    join_expect(&mut carol, "carol", "other", 1);

    let mut ann = server.ws("/ws");
    let joined = join_with(
        &mut ann,
        "ann",
        "other",
        2,
        json!({"session": first["session"]}),
    );
    assert_eq!(ann_old.recv_close(), Some(4001));
    assert_eq!(joined["session"], first["session"]);
    assert_eq!(members(&joined), ["ann", "carol"]);
    saw_leave(&mut bob, "ann", "lobby");
    saw_join(&mut carol, "ann", "other");
    assert_quiet(&mut bob, "bob");
    assert_quiet(&mut carol, "carol");
}

#[test]
fn the_session_stays_across_reclaims_and_is_new_once_the_name_was_freed() {
    // No grace period: the name is free as soon as it is left.
    let server = TestServer::with_config(|c| c.chat.name_grace_ms = 0);
    let mut first = server.ws("/ws");
    let joined = join_expect(&mut first, "ann", "lobby", 1);
    let session = joined["session"].clone();

    let mut second = server.ws("/ws");
    let again = join_with(&mut second, "ann", "lobby", 1, json!({"session": session}));
    assert_eq!(first.recv_close(), Some(4001));
    assert_eq!(again["session"], session);
    let mut third = server.ws("/ws");
    let again = join_with(&mut third, "ann", "lobby", 1, json!({"session": session}));
    assert_eq!(second.recv_close(), Some(4001));
    assert_eq!(again["session"], session);

    third.send_json(&json!({"type": "leave"}));
    assert_alive(&mut third);
    // The name is free: a session for it is ignored, and the new holder gets a new token.
    let mut fourth = server.ws("/ws");
    let fresh = join_with(&mut fourth, "ann", "lobby", 1, json!({"session": session}));
    assert_ne!(fresh["session"], session);
    assert_quiet(&mut third, "the connection that left");
}

// ---------------------------------------------------------------------------------------------------------------
// History replay

#[test]
fn a_reconnect_gets_exactly_the_missed_messages_byte_identical_before_live_ones() {
    let server = small_history();
    let (mut alice, mut bob_old) = (server.ws("/ws"), server.ws("/ws"));
    join_expect(&mut alice, "alice", "lobby", 1);
    let first = join_expect(&mut bob_old, "bob", "lobby", 2);
    saw_join(&mut alice, "bob", "lobby");

    let sent = say_many(&mut alice, "lobby", "alice", 3);
    let seen: Vec<String> = (0..3).map(|_| bob_old.recv_text()).collect();
    assert_eq!(seen, sent, "every member gets the same bytes");

    let mut bob = server.ws("/ws");
    let since = json!({"epoch": first["epoch"], "seq": 1});
    bob.send_json(
        &json!({"type": "join", "userId": "bob", "room": "lobby", "v": 2,
                          "session": first["session"], "since": since}),
    );
    // The old connection's Close shows the join was handled; only then is the live message sent.
    assert_eq!(bob_old.recv_close(), Some(4001));
    alice.send_json(&chat_msg("live"));

    assert_eq!(bob.recv_json(), welcome_line("lobby", 2));
    let joined = bob.recv_json();
    assert_eq!(joined["type"], "joined");
    assert_eq!(joined["epoch"], first["epoch"]);
    assert_eq!(joined["seq"], 3);
    assert_eq!(joined["session"], first["session"]);
    assert_eq!(joined["replay"], json!({"complete": true, "count": 2}));
    assert_eq!(members(&joined), ["alice", "bob"]);
    assert_eq!(bob.recv_text(), sent[1], "seq 2, byte for byte");
    assert_eq!(bob.recv_text(), sent[2], "seq 3, byte for byte");
    assert_chat(&bob.recv_json(), "lobby", 4, "alice", "live");
    assert_quiet(&mut bob, "bob");

    assert_chat(&alice.recv_json(), "lobby", 4, "alice", "live");
    assert_quiet(&mut alice, "alice (a silent reclaim)");
}

#[test]
fn a_since_behind_the_buffer_is_a_gap_and_the_whole_buffer_is_resent() {
    let server = small_history();
    let mut alice = server.ws("/ws");
    let first = join_expect(&mut alice, "alice", "lobby", 1);
    let sent = say_many(&mut alice, "lobby", "alice", 10);
    let epoch = first["epoch"].clone();

    let mut carl = server.ws("/ws");
    let joined = join_with(
        &mut carl,
        "carl",
        "lobby",
        2,
        json!({"since": {"epoch": epoch, "seq": 1}}),
    );
    assert_eq!(joined["seq"], 10);
    assert_eq!(
        joined["replay"],
        json!({"complete": false, "reason": "gap", "count": 5})
    );
    for expected in &sent[5..] {
        assert_eq!(&carl.recv_text(), expected);
    }
    assert_quiet(&mut carl, "carl");

    // The one just before the oldest kept message missed nothing that is lost.
    let mut dana = server.ws("/ws");
    let joined = join_with(
        &mut dana,
        "dana",
        "lobby",
        3,
        json!({"since": {"epoch": epoch, "seq": 5}}),
    );
    assert_eq!(joined["replay"], json!({"complete": true, "count": 5}));
    for expected in &sent[5..] {
        assert_eq!(&dana.recv_text(), expected);
    }
    let mut eve = server.ws("/ws");
    let joined = join_with(
        &mut eve,
        "eve",
        "lobby",
        4,
        json!({"since": {"epoch": epoch, "seq": 8}}),
    );
    assert_eq!(joined["replay"], json!({"complete": true, "count": 2}));
    assert_eq!(eve.recv_text(), sent[8]);
    assert_eq!(eve.recv_text(), sent[9]);
    assert_quiet(&mut eve, "eve");
}

#[test]
fn a_since_from_another_epoch_resends_the_whole_buffer() {
    let server = small_history();
    let mut alice = server.ws("/ws");
    let first = join_expect(&mut alice, "alice", "lobby", 1);
    let sent = say_many(&mut alice, "lobby", "alice", 3);
    let epoch = other_epoch(first["epoch"].as_str().unwrap());

    for (i, seq) in [0u64, 2, 3, 1_000].into_iter().enumerate() {
        let mut client = server.ws("/ws");
        let joined = join_with(
            &mut client,
            &format!("c{i}"),
            "lobby",
            2,
            json!({"since": {"epoch": epoch, "seq": seq}}),
        );
        assert_eq!(joined["epoch"], first["epoch"]);
        assert_eq!(
            joined["replay"],
            json!({"complete": false, "reason": "epoch", "count": 3}),
            "since seq {seq} of another epoch"
        );
        for expected in &sent {
            assert_eq!(&client.recv_text(), expected);
        }
        assert_quiet(&mut client, "the joiner");
        client.send_json(&json!({"type": "leave"}));
        saw_join(&mut alice, &format!("c{i}"), "lobby");
        saw_leave(&mut alice, &format!("c{i}"), "lobby");
    }
}

#[test]
fn a_since_at_the_latest_seq_resends_nothing_and_live_traffic_follows() {
    let server = small_history();
    let mut alice = server.ws("/ws");
    let first = join_expect(&mut alice, "alice", "lobby", 1);
    say_many(&mut alice, "lobby", "alice", 3);
    let mut client = server.ws("/ws");
    let joined = join_with(
        &mut client,
        "carol",
        "lobby",
        2,
        json!({"since": {"epoch": first["epoch"], "seq": 3}}),
    );
    assert_eq!(joined["seq"], 3);
    assert_eq!(joined["replay"], json!({"complete": true, "count": 0}));
    saw_join(&mut alice, "carol", "lobby");
    // The next thing it gets is live.
    alice.send_json(&chat_msg("live"));
    assert_chat(&client.recv_json(), "lobby", 4, "alice", "live");
    assert_chat(&alice.recv_json(), "lobby", 4, "alice", "live");
}

#[test]
fn a_since_past_the_latest_seq_is_another_history_and_the_buffer_is_resent() {
    let server = small_history();
    let mut alice = server.ws("/ws");
    let first = join_expect(&mut alice, "alice", "lobby", 1);
    say_many(&mut alice, "lobby", "alice", 3);
    for (i, seen) in [4, u64::MAX].into_iter().enumerate() {
        let mut client = server.ws("/ws");
        let name = format!("c{i}");
        let joined = join_with(
            &mut client,
            &name,
            "lobby",
            2,
            json!({"since": {"epoch": first["epoch"], "seq": seen}}),
        );
        assert_eq!(
            joined["replay"],
            json!({"complete": false, "reason": "epoch", "count": 3}),
            "since seq {seen}"
        );
        for seq in 1..=3 {
            assert_eq!(client.recv_json()["seq"], seq);
        }
        saw_join(&mut alice, &name, "lobby");
        client.send_json(&json!({"type": "leave"}));
        saw_leave(&mut alice, &name, "lobby");
    }
}

#[test]
fn a_join_without_since_resends_nothing_but_reports_the_latest_seq() {
    let server = small_history();
    let mut alice = server.ws("/ws");
    let first = join_expect(&mut alice, "alice", "lobby", 1);
    say_many(&mut alice, "lobby", "alice", 4);
    let mut bob = server.ws("/ws");
    let joined = join_expect(&mut bob, "bob", "lobby", 2);
    assert_eq!(joined["epoch"], first["epoch"]);
    assert_eq!(joined["seq"], 4);
    assert_eq!(joined["replay"], json!({"complete": true, "count": 0}));
    assert_quiet(&mut bob, "bob");
}

#[test]
fn a_legacy_joiner_is_replayed_the_escaped_form_it_would_have_got_live() {
    let server = small_history();
    let (mut alice, mut old) = (server.ws("/ws"), server.ws("/ws"));
    let first = join_expect(&mut alice, "alice", "lobby", 1);
    old.send_json(&json!({"type": "join", "userId": "old", "room": "lobby"}));
    assert_eq!(old.recv_json(), welcome_line("lobby", 2));
    saw_join(&mut alice, "old", "lobby");

    let content = "<b>bold</b> & 'so' \"on\"";
    alice.send_json(&chat_msg(content));
    let raw_v2 = alice.recv_text();
    let raw_v1 = old.recv_text();
    assert_chat(&parse(&raw_v2), "lobby", 1, "alice", content);
    assert_chat(
        &parse(&raw_v1),
        "lobby",
        1,
        "alice",
        "&lt;b&gt;bold&lt;/b&gt; &amp; &#39;so&#39; &quot;on&quot;",
    );
    alice.send_json(&chat_msg("plain"));
    let plain = alice.recv_text();
    assert_eq!(old.recv_text(), plain);

    let since = json!({"epoch": first["epoch"], "seq": 0});
    let mut old2 = server.ws("/ws");
    old2.send_json(&json!({"type": "join", "userId": "old2", "room": "lobby", "since": since}));
    assert_eq!(old2.recv_json(), welcome_line("lobby", 3));
    assert_eq!(old2.recv_text(), raw_v1, "the v1 form, byte for byte");
    assert_eq!(old2.recv_text(), plain);
    assert_quiet(&mut old2, "old2 (no joined for v1)");

    let mut new2 = server.ws("/ws");
    let joined = join_with(&mut new2, "new2", "lobby", 4, json!({"since": since}));
    assert_eq!(joined["replay"], json!({"complete": true, "count": 2}));
    assert_eq!(new2.recv_text(), raw_v2, "the v2 form, byte for byte");
    assert_eq!(new2.recv_text(), plain);
    assert_quiet(&mut new2, "new2");
}

#[test]
fn an_empty_room_keeps_its_history_for_the_next_joiner() {
    let server = small_history();
    let mut alice = server.ws("/ws");
    let first = join_expect(&mut alice, "alice", "attic", 1);
    let sent = say_many(&mut alice, "attic", "alice", 2);
    alice.send_json(&json!({"type": "leave"}));
    drop(alice);

    let mut bob = server.ws("/ws");
    let joined = join_with(
        &mut bob,
        "bob",
        "attic",
        1,
        json!({"since": {"epoch": first["epoch"], "seq": 0}}),
    );
    assert_eq!(joined["epoch"], first["epoch"]);
    assert_eq!(joined["seq"], 2);
    assert_eq!(members(&joined), ["bob"]);
    assert_eq!(joined["replay"], json!({"complete": true, "count": 2}));
    assert_eq!(bob.recv_text(), sent[0]);
    assert_eq!(bob.recv_text(), sent[1]);
    bob.send_json(&chat_msg("next"));
    assert_chat(&bob.recv_json(), "attic", 3, "bob", "next");
}

#[test]
fn private_messages_are_not_replayed() {
    let server = small_history();
    let (mut alice, mut bob) = (server.ws("/ws"), server.ws("/ws"));
    let first = join_expect(&mut alice, "alice", "lobby", 1);
    join_expect(&mut bob, "bob", "lobby", 2);
    saw_join(&mut alice, "bob", "lobby");
    alice.send_json(&chat_msg("public 1"));
    let p1 = alice.recv_text();
    alice.send_json(&json!({"type": "dm", "to": "bob", "content": "secret"}));
    assert_eq!(alice.recv_json()["type"], "dm");
    alice.send_json(&chat_msg("public 2"));
    let p2 = alice.recv_text();

    let mut carl = server.ws("/ws");
    let joined = join_with(
        &mut carl,
        "carl",
        "lobby",
        3,
        json!({"since": {"epoch": first["epoch"], "seq": 0}}),
    );
    assert_eq!(joined["seq"], 2, "a dm takes no seq");
    assert_eq!(joined["replay"], json!({"complete": true, "count": 2}));
    assert_eq!(carl.recv_text(), p1);
    assert_eq!(carl.recv_text(), p2);
    assert_quiet(&mut carl, "carl");
}

#[test]
fn a_malformed_since_is_invalid_field_and_changes_nothing() {
    let server = small_history();
    let mut alice = server.ws("/ws");
    let first = join_expect(&mut alice, "alice", "lobby", 1);
    let epoch = first["epoch"].clone();
    let mut bob = server.ws("/ws");
    for since in [
        json!({"epoch": epoch}),
        json!({"seq": 1}),
        json!({"epoch": epoch, "seq": -1}),
        json!({"epoch": epoch, "seq": 1.5}),
        json!({"epoch": epoch, "seq": "1"}),
        json!({"epoch": 5, "seq": 1}),
        json!([epoch, 1]),
        json!("e:1"),
    ] {
        bob.send_json(
            &json!({"type": "join", "userId": "bob", "room": "lobby", "v": 2, "since": since}),
        );
        assert_error(&bob.recv_json(), "invalid_field");
    }
    assert_quiet(&mut alice, "alice (bob never joined)");
    // `since: null` counts as absent.
    let joined = join_with(&mut bob, "bob", "lobby", 2, json!({"since": null}));
    assert_eq!(joined["replay"], json!({"complete": true, "count": 0}));
}

#[test]
fn history_len_bounds_what_any_joiner_can_get() {
    let server = TestServer::with_config(|c| c.chat.history_len = 2);
    let started = Instant::now();
    let mut alice = server.ws("/ws");
    let first = join_expect(&mut alice, "alice", "lobby", 1);
    let sent = say_many(&mut alice, "lobby", "alice", 6);
    let mut bob = server.ws("/ws");
    let joined = join_with(
        &mut bob,
        "bob",
        "lobby",
        2,
        json!({"since": {"epoch": first["epoch"], "seq": 0}}),
    );
    assert_eq!(
        joined["replay"],
        json!({"complete": false, "reason": "gap", "count": 2})
    );
    assert_eq!(bob.recv_text(), sent[4]);
    assert_eq!(bob.recv_text(), sent[5]);
    assert_quiet(&mut bob, "bob");
    assert!(started.elapsed() < Duration::from_secs(5));
}
