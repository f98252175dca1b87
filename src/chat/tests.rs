//! Behaviour tests of [`Chat`] through its public interface, one behaviour each.
//!
//! Broadcasts are resolved the way the server does it: after the call returns, against the membership then. This
//! file must not reach into the chat's private state.

use std::rc::Rc;

use serde_json::{json, Value};

use super::*;

const T0: u64 = 1_700_000_000_000;

/// A chat plus a clock, resolving actions into per-connection deliveries.
struct Harness {
    chat: Chat,
    mono_ms: u64,
    /// What a relayed chat's claims are answered with, at once, as if the engine had answered in the same turn
    /// (`None`: left unanswered).
    claim_answer: Option<ClaimAnswer>,
}

/// What one call made happen.
struct Outcome {
    actions: Vec<Action>,
    delivered: Vec<(ClientId, Value)>,
    closed: Vec<(ClientId, u16, &'static str)>,
}

impl Outcome {
    /// Everything delivered to `client`, in order.
    fn to(&self, client: ClientId) -> Vec<Value> {
        self.delivered
            .iter()
            .filter(|(to, _)| *to == client)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The one message delivered to `client`.
    fn only(&self, client: ClientId) -> Value {
        let got = self.to(client);
        assert_eq!(
            got.len(),
            1,
            "expected one message to {client}, got {got:?}"
        );
        got.into_iter().next().unwrap_or(Value::Null)
    }

    /// The error code of the one message delivered to `client`, an `error` (the v2 form).
    fn error_code(&self, client: ClientId) -> Value {
        let msg = self.only(client);
        assert_eq!(msg["type"], "error", "{msg}");
        assert!(msg["message"].is_string(), "{msg}");
        msg["code"].clone()
    }

    /// The error code of the one message delivered to `client`, a `system` line (the v1 form).
    fn legacy_error_code(&self, client: ClientId) -> Value {
        let msg = self.only(client);
        assert_eq!(msg["type"], "system", "{msg}");
        assert_eq!(msg["error"], true, "{msg}");
        let content = msg["content"].as_str().unwrap_or_default();
        assert!(content.starts_with("Error: "), "{msg}");
        msg["code"].clone()
    }
}

impl Harness {
    fn new() -> Self {
        Harness::with(ChatConfig::default())
    }

    fn with(config: ChatConfig) -> Self {
        Harness {
            chat: Chat::new(config, [42; 32]),
            mono_ms: 0,
            claim_answer: Some(ClaimAnswer::Granted(RoomState {
                epoch: String::new(),
                seq: 0,
                messages: Vec::new(),
                members_elsewhere: Vec::new(),
                reclaimed: false,
            })),
        }
    }

    fn now(&self) -> Now {
        Now {
            unix_ms: T0 + self.mono_ms,
            mono_ms: self.mono_ms,
        }
    }

    fn text(&mut self, client: ClientId, text: &str) -> Outcome {
        let mut out = Vec::new();
        self.chat.handle_text(client, text, self.now(), &mut out);
        let claims: Vec<(ClientId, Rc<str>, Rc<str>)> = out
            .iter()
            .filter_map(|action| match action {
                Action::ClaimName {
                    client, key, room, ..
                } => Some((*client, key.clone(), room.clone())),
                _ => None,
            })
            .collect();
        for (client, key, room) in claims {
            let Some(answer) = self.claim_answer.clone() else {
                break;
            };
            // Granted as the engine would for a room it knows as this node does.
            let answer = match answer {
                ClaimAnswer::Granted(_) => ClaimAnswer::Granted(self.room_state(&room)),
                other => other,
            };
            let now = self.now();
            self.chat
                .name_claimed(client, &key, &room, answer, now, &mut out);
        }
        self.resolve(out)
    }

    /// Room `room` as this chat knows it, as a cluster engine would describe it (a fixed epoch if it is new).
    fn room_state(&self, room: &str) -> RoomState {
        let (epoch, seq) = self
            .chat
            .room_sync_point(room)
            .unwrap_or_else(|| (Rc::from("00000000000000ee"), 0));
        RoomState {
            epoch: epoch.to_string(),
            seq,
            messages: Vec::new(),
            members_elsewhere: Vec::new(),
            reclaimed: false,
        }
    }

    fn send(&mut self, client: ClientId, message: Value) -> Outcome {
        self.text(client, &message.to_string())
    }

    fn disconnect(&mut self, client: ClientId) -> Outcome {
        let mut out = Vec::new();
        self.chat.disconnect(client, self.now(), &mut out);
        self.resolve(out)
    }

    fn join(&mut self, client: ClientId, user: &str, room: &str) -> Outcome {
        self.send(
            client,
            json!({"type": "join", "userId": user, "room": room, "v": 2}),
        )
    }

    fn join_v1(&mut self, client: ClientId, user: &str, room: &str) -> Outcome {
        self.send(
            client,
            json!({"type": "join", "userId": user, "room": room}),
        )
    }

    fn say(&mut self, client: ClientId, content: &str) -> Outcome {
        self.send(client, json!({"type": "chat", "content": content}))
    }

    /// The `joined` message `client` gets for a v2 join.
    fn joined(&mut self, client: ClientId, user: &str, room: &str) -> Value {
        let got = self.join(client, user, room).to(client);
        got.into_iter()
            .find(|m| m["type"] == "joined")
            .unwrap_or(Value::Null)
    }

    fn resolve(&self, actions: Vec<Action>) -> Outcome {
        let mut delivered = Vec::new();
        let mut closed = Vec::new();
        for action in &actions {
            match action {
                Action::Send { to, payload } => delivered.push((*to, parse(payload))),
                Action::Replay { to, texts } => {
                    for text in texts {
                        let text =
                            std::str::from_utf8(text.as_bytes()).expect("stored text is UTF-8");
                        delivered.push((*to, parse(text)));
                    }
                }
                Action::Broadcast {
                    room,
                    except,
                    payload,
                    v1_payload,
                    ..
                } => {
                    for member in self.chat.members(*room) {
                        if Some(member.client) == *except {
                            continue;
                        }
                        let form = if member.dialect == Dialect::V1 {
                            v1_payload.as_ref()
                        } else {
                            Some(payload)
                        };
                        if let Some(form) = form {
                            delivered.push((member.client, parse(form)));
                        }
                    }
                }
                Action::Close {
                    client,
                    code,
                    reason,
                } => {
                    // The chat's own closes have fixed reasons; only the server API's carry the caller's.
                    let Cow::Borrowed(reason) = reason else {
                        panic!("a close with a reason made at run time: {reason}");
                    };
                    closed.push((*client, code.get(), *reason))
                }
                // Handed to the cluster engine: the relayed tests read them from `actions`.
                Action::Publish { .. }
                | Action::ClaimName { .. }
                | Action::ReleaseName { .. }
                | Action::RelayDm { .. }
                | Action::Presence { .. } => {}
                // Asked of the caller only with `check_tokens_elsewhere`, which these tests do not turn on.
                Action::CheckToken { .. } => panic!("a token check asked of the caller"),
            }
        }
        Outcome {
            actions,
            delivered,
            closed,
        }
    }
}

fn parse(payload: &str) -> Value {
    serde_json::from_str(payload).unwrap_or_else(|e| panic!("server sent bad JSON {payload}: {e}"))
}

fn system(content: &str) -> Value {
    json!({"type": "system", "content": content})
}

// ---- ping, errors -------------------------------------------------------------------------------------------

#[test]
fn ping_is_answered_with_pong() {
    let mut h = Harness::new();
    assert_eq!(
        h.send(1, json!({"type": "ping"})).only(1),
        json!({"type": "pong"})
    );
}

#[test]
fn invalid_json_is_reported_not_dropped() {
    let mut h = Harness::new();
    assert_eq!(h.text(1, "{not json").legacy_error_code(1), "invalid_json");
}

#[test]
fn json_that_is_not_an_object_is_invalid_json() {
    let mut h = Harness::new();
    assert_eq!(
        h.text(1, r#"["join"]"#).legacy_error_code(1),
        "invalid_json"
    );
}

#[test]
fn deeply_nested_values_are_handled_without_crashing() {
    let mut h = Harness::new();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let ping = format!(r#"{{"type":"ping","x":{deep}}}"#);
    assert_eq!(h.text(1, &ping).only(1), json!({"type": "pong"}));
    h.join(1, "ann", "lobby");
    let chat = format!(r#"{{"type":"chat","content":{deep}}}"#);
    assert_eq!(h.text(1, &chat).error_code(1), "invalid_field");
    let join = format!(r#"{{"type":"join","userId":"a","room":"r","since":{{"epoch":{deep}}}}}"#);
    assert_eq!(h.text(2, &join).legacy_error_code(2), "invalid_field");
    let unclosed = format!(r#"{{"type":"ping","x":{}}}"#, "{\"a\":".repeat(100_000));
    assert_eq!(h.text(3, &unclosed).legacy_error_code(3), "invalid_json");
}

#[test]
fn a_v_above_2_gets_the_extended_messages() {
    let mut h = Harness::new();
    let out = h.send(
        1,
        json!({"type": "join", "userId": "ann", "room": "lobby", "v": 3}),
    );
    assert_eq!(out.to(1)[1]["type"], "joined");
}

#[test]
fn missing_type_is_unknown_type() {
    let mut h = Harness::new();
    assert_eq!(
        h.send(1, json!({"content": "x"})).legacy_error_code(1),
        "unknown_type"
    );
}

#[test]
fn unknown_type_is_reported() {
    let mut h = Harness::new();
    assert_eq!(
        h.send(1, json!({"type": "shout"})).legacy_error_code(1),
        "unknown_type"
    );
}

#[test]
fn missing_user_id_is_invalid_field() {
    let mut h = Harness::new();
    let out = h.send(1, json!({"type": "join", "room": "lobby"}));
    assert_eq!(out.legacy_error_code(1), "invalid_field");
}

#[test]
fn error_message_has_exactly_type_code_and_message() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    h.send(1, json!({"type": "leave"}));
    let msg = h.send(1, json!({"type": "leave"})).only(1);
    let keys: Vec<_> = msg
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(keys.len(), 3);
    assert_eq!(msg["type"], "error");
    assert_eq!(msg["code"], "not_joined");
}

#[test]
fn user_id_over_32_chars_is_too_long() {
    let mut h = Harness::new();
    let out = h.join(1, &"a".repeat(33), "lobby");
    assert_eq!(out.error_code(1), "too_long");
}

#[test]
fn multibyte_names_are_counted_in_chars() {
    let mut h = Harness::new();
    let name = "ü".repeat(32);
    let msg = h.joined(1, &name, &"界".repeat(64));
    assert_eq!(msg["userId"], name.as_str());
    assert_eq!(h.join(2, &"ü".repeat(33), "x").error_code(2), "too_long");
}

#[test]
fn control_characters_in_names_are_rejected() {
    let mut h = Harness::new();
    assert_eq!(
        h.join(1, "ann\u{7}", "lobby").error_code(1),
        "invalid_field"
    );
    assert_eq!(h.join(1, "ann", "lob\nby").error_code(1), "invalid_field");
    assert_eq!(h.chat.member_count(), 0);
}

#[test]
fn names_that_look_alike_are_one_name() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    for look_alike in ["Ann", "ANN", "ａｎｎ", "\u{391}\u{39D}\u{39D}"] {
        assert_eq!(
            h.join(2, look_alike, "lobby").error_code(2),
            "name_taken",
            "{look_alike}"
        );
    }
    // A Cyrillic а among Latin letters is refused outright (mixed scripts), whoever is online.
    assert_eq!(
        h.join(2, "\u{430}nn", "lobby").error_code(2),
        "invalid_field"
    );
    assert_eq!(h.join(2, " ann", "lobby").error_code(2), "invalid_field");
    assert_eq!(h.joined(3, "anna", "lobby")["userId"], "anna");
}

#[test]
fn names_are_shown_in_their_normal_form() {
    let mut h = Harness::new();
    assert_eq!(h.joined(1, "ａｎｎ", "ｌｏｂｂｙ")["userId"], "ann");
    assert_eq!(h.joined(2, "Zoe\u{308}", "lobby")["userId"], "Zoë");
}

#[test]
fn system_is_reserved_and_names_cannot_forge_a_line() {
    let mut h = Harness::new();
    for name in ["system", "System", "\u{455}ystem"] {
        assert_eq!(
            h.join(1, name, "lobby").error_code(1),
            "name_taken",
            "{name}"
        );
    }
    let forged = r#"x" left the room. User "ann"#;
    assert_eq!(h.join(1, forged, "lobby").error_code(1), "invalid_field");
}

#[test]
fn chat_before_join_is_not_joined() {
    let mut h = Harness::new();
    assert_eq!(h.say(1, "hi").legacy_error_code(1), "not_joined");
}

#[test]
fn leave_before_join_is_not_joined() {
    let mut h = Harness::new();
    assert_eq!(
        h.send(1, json!({"type": "leave"})).legacy_error_code(1),
        "not_joined"
    );
}

#[test]
fn dm_before_join_is_not_joined() {
    let mut h = Harness::new();
    h.join(2, "bob", "lobby");
    let out = h.send(
        1,
        json!({"type": "dm", "to": "bob", "content": "hi", "from": "bob"}),
    );
    assert_eq!(out.legacy_error_code(1), "not_joined");
    assert!(out.to(2).is_empty());
}

#[test]
fn empty_chat_is_invalid_field() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    assert_eq!(h.say(1, "").error_code(1), "invalid_field");
}

#[test]
fn non_string_chat_is_invalid_field() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    let out = h.send(1, json!({"type": "chat", "content": 5}));
    assert_eq!(out.error_code(1), "invalid_field");
}

#[test]
fn chat_over_the_limit_is_too_long_counting_chars() {
    let mut h = Harness::with(ChatConfig {
        max_content_chars: 4,
        ..ChatConfig::default()
    });
    h.join(1, "ann", "lobby");
    assert_eq!(h.say(1, "ééééé").error_code(1), "too_long");
    assert_eq!(h.say(1, "éééé").only(1)["content"], "éééé");
}

// ---- join ---------------------------------------------------------------------------------------------------

#[test]
fn v2_joiner_gets_system_line_then_joined() {
    let mut h = Harness::new();
    let got = h.join(1, "ann", "lobby").to(1);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], system("Joined room \"lobby\", 1 online"));
    let joined = &got[1];
    let epoch = joined["epoch"].as_str().unwrap_or_default();
    let session = joined["session"].as_str().unwrap_or_default();
    assert_eq!(epoch.len(), 16);
    assert!(epoch.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(session.len(), 27);
    assert_eq!(
        *joined,
        json!({
            "type": "joined", "room": "lobby", "userId": "ann", "members": ["ann"], "memberCount": 1,
            "epoch": epoch, "seq": 0, "session": session,
            "replay": {"complete": true, "count": 0}
        })
    );
}

#[test]
fn legacy_joiner_gets_only_the_system_line() {
    let mut h = Harness::new();
    let out = h.join_v1(1, "ann", "lobby");
    assert_eq!(out.only(1), system("Joined room \"lobby\", 1 online"));
}

#[test]
fn online_count_is_of_the_joined_room() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    h.join(2, "bob", "elsewhere");
    let out = h.join(3, "cat", "lobby");
    assert_eq!(out.to(3)[0], system("Joined room \"lobby\", 2 online"));
}

#[test]
fn joined_lists_every_member_of_the_room() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    h.join_v1(2, "bob", "lobby");
    h.join(3, "dan", "elsewhere");
    let msg = h.joined(4, "cat", "lobby");
    let mut members: Vec<_> = msg["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    members.sort();
    assert_eq!(members, ["ann", "bob", "cat"]);
}

#[test]
fn others_get_system_line_and_v2_others_get_presence() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    h.join_v1(2, "bob", "lobby");
    let out = h.join(3, "cat", "lobby");
    assert_eq!(
        out.to(1),
        [
            system("User \"cat\" joined the room"),
            json!({"type": "presence", "room": "lobby", "joined": "cat", "count": 3})
        ]
    );
    assert_eq!(out.to(2), [system("User \"cat\" joined the room")]);
    assert_eq!(out.to(3).len(), 2);
}

#[test]
fn joining_an_empty_room_broadcasts_nothing() {
    let mut h = Harness::new();
    let out = h.join(1, "ann", "lobby");
    assert!(out
        .actions
        .iter()
        .all(|a| !matches!(a, Action::Broadcast { .. })));
}

#[test]
fn a_live_name_is_taken() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    let out = h.join(2, "ann", "other");
    assert_eq!(out.error_code(2), "name_taken");
    assert!(out.to(1).is_empty());
    assert_eq!(h.chat.member_count(), 1);
}

#[test]
fn a_wrong_session_does_not_reclaim() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    let out = h.send(
        2,
        json!({"type": "join", "userId": "ann", "room": "lobby", "v": 2, "session": "guess"}),
    );
    assert_eq!(out.error_code(2), "name_taken");
    assert!(out.closed.is_empty());
}

#[test]
fn a_failed_join_keeps_the_current_room() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    h.join(2, "bob", "lobby");
    assert_eq!(h.join(2, "ann", "other").error_code(2), "name_taken");
    assert_eq!(h.say(2, "still here").to(1)[0]["from"], "bob");
}

#[test]
fn session_reclaim_replaces_the_old_connection() {
    let mut h = Harness::new();
    let session = h.joined(1, "ann", "lobby")["session"].clone();
    h.join(3, "bob", "lobby");
    let out = h.send(
        2,
        json!({"type": "join", "userId": "ann", "room": "lobby", "v": 2, "session": session}),
    );
    assert_eq!(out.closed, [(1, 4001, "replaced")]);
    let got = out.to(2);
    assert_eq!(got[0], system("Joined room \"lobby\", 2 online"));
    assert_eq!(got[1]["type"], "joined");
    assert_eq!(got[1]["session"], session);
    assert!(
        out.to(3).is_empty(),
        "no left/joined noise: {:?}",
        out.to(3)
    );
    assert!(out.to(1).is_empty());
    let lobby = room_of(&h.say(3, "after"));
    let mut members: Vec<_> = h.chat.members(lobby).map(|m| m.client).collect();
    members.sort();
    assert_eq!(members, [2, 3]);
    assert_eq!(h.chat.member_count(), 2);
}

#[test]
fn a_replaced_connection_is_ignored_until_disconnected() {
    let mut h = Harness::new();
    let session = h.joined(1, "ann", "lobby")["session"].clone();
    h.send(
        2,
        json!({"type": "join", "userId": "ann", "room": "lobby", "session": session}),
    );
    assert!(h.send(1, json!({"type": "ping"})).actions.is_empty());
    assert!(h.disconnect(1).actions.is_empty());
    assert_eq!(h.chat.member_count(), 1);
}

#[test]
fn reclaim_into_another_room_tells_the_old_room() {
    let mut h = Harness::new();
    let session = h.joined(1, "ann", "lobby")["session"].clone();
    h.join(3, "bob", "lobby");
    h.join(4, "cat", "other");
    let out = h.send(
        2,
        json!({"type": "join", "userId": "ann", "room": "other", "v": 2, "session": session}),
    );
    assert_eq!(out.closed, [(1, 4001, "replaced")]);
    assert_eq!(
        out.to(3),
        [
            system("User \"ann\" left the room"),
            json!({"type": "presence", "room": "lobby", "left": "ann", "count": 1})
        ]
    );
    assert_eq!(out.to(4)[0], system("User \"ann\" joined the room"));
}

#[test]
fn a_freed_name_is_reserved_for_its_session_during_the_grace_period() {
    let mut h = Harness::new();
    let session = h.joined(1, "ann", "lobby")["session"].clone();
    h.disconnect(1);
    h.mono_ms += 5;
    assert_eq!(h.join(2, "ann", "lobby").error_code(2), "name_taken");
    assert_eq!(
        h.send(
            3,
            json!({"type": "join", "userId": "ann", "room": "lobby", "v": 2, "session": "forged"})
        )
        .error_code(3),
        "name_taken"
    );
    assert_eq!(
        h.send(4, json!({"type": "dm", "to": "ann", "content": "for ann"}))
            .legacy_error_code(4),
        "not_joined"
    );
    let back = h.send(
        5,
        json!({"type": "join", "userId": "ann", "room": "lobby", "v": 2, "session": session}),
    );
    let joined = back
        .to(5)
        .into_iter()
        .find(|m| m["type"] == "joined")
        .unwrap();
    assert_eq!(joined["session"], session, "the session carries over");
}

#[test]
fn dms_to_a_reserved_name_are_not_delivered() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    h.join(2, "bob", "lobby");
    h.disconnect(1);
    assert_eq!(
        h.send(2, json!({"type": "dm", "to": "ann", "content": "hi"}))
            .error_code(2),
        "not_online"
    );
}

#[test]
fn a_freed_name_is_free_after_the_grace_period() {
    let mut h = Harness::new();
    h.join_v1(1, "ann", "lobby");
    h.disconnect(1);
    h.mono_ms += ChatConfig::default().name_grace_ms;
    let out = h.join_v1(2, "ann", "lobby");
    assert_eq!(out.only(2), system("Joined room \"lobby\", 1 online"));
}

#[test]
fn joins_are_rate_limited_on_their_own() {
    let mut h = Harness::new();
    for i in 0..5 {
        let room = format!("room{i}");
        assert_eq!(h.joined(1, "ann", &room)["room"], room.as_str());
    }
    assert_eq!(h.join(1, "ann", "sixth").error_code(1), "rate_limited");
    h.mono_ms += 1_000;
    assert_eq!(h.joined(1, "ann", "sixth")["room"], "sixth");
}

#[test]
fn a_new_holder_gets_a_new_session() {
    let mut h = Harness::new();
    let first = h.joined(1, "ann", "lobby")["session"].clone();
    h.disconnect(1);
    let second = h.joined(2, "ann", "lobby")["session"].clone();
    assert_ne!(first, second);
}

#[test]
fn a_session_for_a_free_name_is_ignored() {
    let mut h = Harness::new();
    let out = h.send(
        1,
        json!({"type": "join", "userId": "ann", "room": "lobby", "v": 2, "session": "stale"}),
    );
    assert_eq!(out.to(1)[1]["type"], "joined");
}

// ---- chat ---------------------------------------------------------------------------------------------------

#[test]
fn chat_reaches_the_whole_room_sender_included() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    h.join_v1(2, "bob", "lobby");
    h.join(3, "cat", "other");
    h.mono_ms = 5;
    let out = h.say(1, "hello");
    let expected = json!({
        "type": "chat", "room": "lobby", "seq": 1, "from": "ann",
        "content": "hello", "timestamp": T0 + 5
    });
    assert_eq!(out.only(1), expected);
    assert_eq!(out.only(2), expected);
    assert!(out.to(3).is_empty());
}

#[test]
fn chat_is_serialised_once_shared_by_both_forms_and_replayed_byte_for_byte() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    let out = h.say(1, "hi");
    let [Action::Broadcast {
        payload,
        v1_payload: Some(legacy),
        except: None,
        ..
    }] = out.actions.as_slice()
    else {
        panic!("expected one broadcast: {:?}", out.actions);
    };
    assert!(Rc::ptr_eq(payload, legacy));
    let epoch = h.joined(2, "bob", "x")["epoch"].clone();
    let out = h.send(
        3,
        json!({"type": "join", "userId": "cat", "room": "lobby", "since": {"epoch": epoch, "seq": 0}}),
    );
    let replayed = replayed_texts(&out);
    let [replayed] = replayed.as_slice() else {
        panic!("expected one replayed message: {:?}", out.actions);
    };
    assert_eq!(replayed.as_bytes(), payload.as_bytes());
}

#[test]
fn seq_counts_up_per_room() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    h.join(2, "bob", "other");
    assert_eq!(h.say(1, "a").only(1)["seq"], 1);
    assert_eq!(h.say(1, "b").only(1)["seq"], 2);
    assert_eq!(h.say(2, "c").only(2)["seq"], 1);
    assert_eq!(h.say(1, "d").only(1)["seq"], 3);
}

#[test]
fn client_supplied_from_is_ignored_in_chat() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    let out = h.send(1, json!({"type": "chat", "content": "x", "from": "admin"}));
    assert_eq!(out.only(1)["from"], "ann");
}

// ---- dm -----------------------------------------------------------------------------------------------------

#[test]
fn dm_goes_to_the_recipient_and_a_copy_to_the_sender() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    h.join(2, "bob", "other");
    h.join(3, "cat", "lobby");
    let out = h.send(1, json!({"type": "dm", "to": "bob", "content": "psst"}));
    let expected =
        json!({"type": "dm", "from": "ann", "to": "bob", "content": "psst", "timestamp": T0});
    assert_eq!(out.only(2), expected);
    assert_eq!(out.only(1), expected);
    assert!(out.to(3).is_empty());
}

#[test]
fn dm_to_a_legacy_client_is_a_private_chat() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    h.join_v1(2, "bob", "lobby");
    let out = h.send(1, json!({"type": "dm", "to": "bob", "content": "psst"}));
    assert_eq!(
        out.only(2),
        json!({"type": "chat", "from": "ann", "content": "psst", "timestamp": T0, "private": true})
    );
    assert_eq!(out.only(1)["type"], "dm");
}

#[test]
fn dm_copy_to_a_legacy_sender_is_a_private_chat() {
    let mut h = Harness::new();
    h.join_v1(1, "ann", "lobby");
    h.join(2, "bob", "lobby");
    let out = h.send(1, json!({"type": "dm", "to": "bob", "content": "psst"}));
    assert_eq!(out.only(1)["private"], true);
    assert_eq!(out.only(2)["type"], "dm");
}

#[test]
fn dm_is_serialised_once_when_both_sides_speak_v2() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    h.join(2, "bob", "lobby");
    let out = h.send(1, json!({"type": "dm", "to": "bob", "content": "psst"}));
    let payloads: Vec<_> = out
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { payload, .. } => Some(payload.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(payloads.len(), 2);
    assert!(Rc::ptr_eq(&payloads[0], &payloads[1]));
}

#[test]
fn dm_to_an_offline_user_is_not_online() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    let out = h.send(1, json!({"type": "dm", "to": "ghost", "content": "psst"}));
    assert_eq!(out.error_code(1), "not_online");
}

#[test]
fn dm_to_self_is_delivered_once() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    let out = h.send(1, json!({"type": "dm", "to": "ann", "content": "note"}));
    assert_eq!(out.only(1)["to"], "ann");
}

#[test]
fn dm_from_is_the_joined_name() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    h.join(2, "bob", "lobby");
    let out = h.send(
        1,
        json!({"type": "dm", "to": "bob", "content": "x", "from": "bob", "fromUserId": "bob"}),
    );
    assert_eq!(out.only(2)["from"], "ann");
}

// ---- leave, switching, disconnect ----------------------------------------------------------------------------

#[test]
fn leave_tells_the_room_and_keeps_the_connection() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    h.join_v1(2, "bob", "lobby");
    h.join(3, "cat", "lobby");
    let out = h.send(1, json!({"type": "leave"}));
    assert!(out.to(1).is_empty());
    assert_eq!(out.to(2), [system("User \"ann\" left the room")]);
    assert_eq!(
        out.to(3),
        [
            system("User \"ann\" left the room"),
            json!({"type": "presence", "room": "lobby", "left": "ann", "count": 2})
        ]
    );
    assert_eq!(
        h.send(1, json!({"type": "ping"})).only(1),
        json!({"type": "pong"})
    );
    assert_eq!(h.say(1, "x").error_code(1), "not_joined");
}

#[test]
fn leave_releases_the_name_to_its_session_and_the_same_connection() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    h.send(1, json!({"type": "leave"}));
    assert_eq!(h.join(2, "ann", "lobby").error_code(2), "name_taken");
    assert_eq!(h.joined(1, "ann", "lobby")["userId"], "ann");
}

#[test]
fn switching_rooms_leaves_the_first() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    h.join(2, "bob", "lobby");
    h.join(3, "cat", "other");
    let out = h.join(1, "ann", "other");
    assert_eq!(out.to(2)[0], system("User \"ann\" left the room"));
    assert_eq!(out.to(3)[0], system("User \"ann\" joined the room"));
    assert_eq!(out.to(1)[0], system("Joined room \"other\", 2 online"));
    assert!(h.say(2, "x").to(1).is_empty());
    assert_eq!(h.chat.room_count(), 2);
    assert_eq!(h.chat.member_count(), 3);
}

#[test]
fn rejoining_the_same_room_is_a_fresh_join() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    let before = h.joined(2, "bob", "lobby");
    let out = h.join(2, "bob", "lobby");
    assert_eq!(
        out.to(1),
        [
            system("User \"bob\" left the room"),
            json!({"type": "presence", "room": "lobby", "left": "bob", "count": 1}),
            system("User \"bob\" joined the room"),
            json!({"type": "presence", "room": "lobby", "joined": "bob", "count": 2}),
        ]
    );
    let got = out.to(2);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], system("Joined room \"lobby\", 2 online"));
    assert_eq!(got[1]["session"], before["session"]);
    assert_eq!(got[1]["epoch"], before["epoch"]);
    assert_eq!(h.chat.member_count(), 2);
}

#[test]
fn disconnect_tells_the_room() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    h.join(2, "bob", "lobby");
    let out = h.disconnect(1);
    assert_eq!(
        out.to(2),
        [
            system("User \"ann\" left the room"),
            json!({"type": "presence", "room": "lobby", "left": "ann", "count": 1})
        ]
    );
    assert_eq!(h.chat.member_count(), 1);
}

#[test]
fn disconnect_of_an_unknown_connection_does_nothing() {
    let mut h = Harness::new();
    assert!(h.disconnect(9).actions.is_empty());
}

#[test]
fn members_carry_their_dialect() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    h.join_v1(2, "bob", "lobby");
    let out = h.say(1, "x");
    let mut members: Vec<_> = h.chat.members(room_of(&out)).collect();
    members.sort_by_key(|m| m.client);
    assert_eq!(
        members,
        [
            Member {
                client: 1,
                dialect: Dialect::V2
            },
            Member {
                client: 2,
                dialect: Dialect::V1
            }
        ]
    );
}

#[test]
fn room_and_member_counts_follow_joins_and_leaves() {
    let mut h = Harness::new();
    h.join(1, "ann", "a");
    h.join(2, "bob", "a");
    h.join(3, "cat", "b");
    assert_eq!((h.chat.room_count(), h.chat.member_count()), (2, 3));
    h.disconnect(3);
    assert_eq!((h.chat.room_count(), h.chat.member_count()), (1, 2));
    h.send(1, json!({"type": "leave"}));
    assert_eq!((h.chat.room_count(), h.chat.member_count()), (1, 1));
}

// ---- history ------------------------------------------------------------------------------------------------

/// Joins `user` on `client` into `room` with `since`, returning what it got.
fn join_since(
    h: &mut Harness,
    client: ClientId,
    user: &str,
    room: &str,
    since: Value,
) -> Vec<Value> {
    h.send(
        client,
        json!({"type": "join", "userId": user, "room": room, "v": 2, "since": since}),
    )
    .to(client)
}

fn contents(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["type"] == "chat")
        .filter_map(|m| m["content"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn replay_after_since_is_complete() {
    let mut h = Harness::new();
    let epoch = h.joined(1, "ann", "lobby")["epoch"].clone();
    for text in ["one", "two", "three"] {
        h.say(1, text);
    }
    let got = join_since(&mut h, 2, "bob", "lobby", json!({"epoch": epoch, "seq": 1}));
    assert_eq!(got[1]["seq"], 3);
    assert_eq!(got[1]["replay"], json!({"complete": true, "count": 2}));
    assert_eq!(contents(&got), ["two", "three"]);
    assert_eq!(got.len(), 4);
}

#[test]
fn replay_behind_the_buffer_is_a_gap() {
    let mut h = Harness::with(ChatConfig {
        history_len: 2,
        ..ChatConfig::default()
    });
    let epoch = h.joined(1, "ann", "lobby")["epoch"].clone();
    for text in ["one", "two", "three", "four"] {
        h.say(1, text);
    }
    let got = join_since(&mut h, 2, "bob", "lobby", json!({"epoch": epoch, "seq": 1}));
    assert_eq!(
        got[1]["replay"],
        json!({"complete": false, "reason": "gap", "count": 2})
    );
    assert_eq!(contents(&got), ["three", "four"]);
}

#[test]
fn replay_from_another_epoch_sends_the_whole_buffer() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    for text in ["one", "two"] {
        h.say(1, text);
    }
    let got = join_since(
        &mut h,
        2,
        "bob",
        "lobby",
        json!({"epoch": "0000000000000000", "seq": 1}),
    );
    assert_eq!(
        got[1]["replay"],
        json!({"complete": false, "reason": "epoch", "count": 2})
    );
    assert_eq!(contents(&got), ["one", "two"]);
}

#[test]
fn replay_since_beyond_latest_is_another_history_and_resends_the_buffer() {
    let mut h = Harness::new();
    let epoch = h.joined(1, "ann", "lobby")["epoch"].clone();
    h.say(1, "one");
    let got = join_since(
        &mut h,
        2,
        "bob",
        "lobby",
        json!({"epoch": epoch, "seq": 99}),
    );
    assert_eq!(
        got[1]["replay"],
        json!({"complete": false, "reason": "epoch", "count": 1})
    );
    assert_eq!(contents(&got), ["one"]);
}

#[test]
fn replayed_messages_are_byte_identical() {
    let mut h = Harness::new();
    let epoch = h.joined(1, "ann", "lobby")["epoch"].clone();
    let live = h.say(1, "one").actions;
    let Some(Action::Broadcast { payload, .. }) = live.first() else {
        panic!("no broadcast");
    };
    let replay = h.send(
        2,
        json!({"type": "join", "userId": "bob", "room": "lobby", "v": 2, "since": {"epoch": epoch, "seq": 0}}),
    );
    let Some(Action::Replay { texts, .. }) = replay.actions.get(2) else {
        panic!("no replay: {:?}", replay.actions);
    };
    assert_eq!(texts[0].as_bytes(), payload.as_bytes());
}

#[test]
fn malformed_since_is_invalid_field() {
    let mut h = Harness::new();
    let out = h.send(
        1,
        json!({"type": "join", "userId": "ann", "room": "lobby", "since": {"epoch": "e", "seq": "3"}}),
    );
    assert_eq!(out.legacy_error_code(1), "invalid_field");
}

#[test]
fn an_empty_room_keeps_its_history() {
    let mut h = Harness::new();
    let epoch = h.joined(1, "ann", "lobby")["epoch"].clone();
    h.say(1, "one");
    h.disconnect(1);
    assert_eq!(h.chat.room_count(), 0);
    let got = join_since(&mut h, 2, "bob", "lobby", json!({"epoch": epoch, "seq": 0}));
    assert_eq!(got[1]["epoch"], epoch);
    assert_eq!(contents(&got), ["one"]);
}

#[test]
fn empty_rooms_beyond_the_bound_are_forgotten_oldest_first() {
    let mut h = Harness::with(ChatConfig {
        max_empty_rooms: 2,
        ..ChatConfig::default()
    });
    let mut epochs = Vec::new();
    for (client, room) in ["a", "b", "c"].iter().enumerate() {
        epochs.push(h.joined(client, &format!("u{client}"), room)["epoch"].clone());
        h.say(client, "kept?");
        h.disconnect(client);
    }
    assert_ne!(h.joined(10, "x", "a")["epoch"], epochs[0]);
    assert_eq!(h.joined(11, "y", "c")["epoch"], epochs[2]);
}

#[test]
fn a_forgotten_room_begins_a_new_epoch_for_since() {
    let mut h = Harness::with(ChatConfig {
        max_empty_rooms: 0,
        ..ChatConfig::default()
    });
    let epoch = h.joined(1, "ann", "lobby")["epoch"].clone();
    h.say(1, "one");
    h.disconnect(1);
    let got = join_since(&mut h, 2, "bob", "lobby", json!({"epoch": epoch, "seq": 1}));
    assert_eq!(
        got[1]["replay"],
        json!({"complete": false, "reason": "epoch", "count": 0})
    );
    assert_eq!(got[1]["seq"], 0);
}

// ---- v1 (legacy) clients: escaping and errors ---------------------------------------------------------------

const XSS: &str = "<img src=x onerror=alert(1)>";
const XSS_ESCAPED: &str = "&lt;img src=x onerror=alert(1)&gt;";

/// The one broadcast in an outcome: its v2 and v1 payloads.
fn broadcast_payloads(out: &Outcome) -> (Rc<str>, Rc<str>) {
    match out.actions.as_slice() {
        [Action::Broadcast {
            payload,
            v1_payload: Some(legacy),
            ..
        }] => (payload.clone(), legacy.clone()),
        other => panic!("expected one broadcast with a legacy payload: {other:?}"),
    }
}

#[test]
fn legacy_chat_payload_escapes_markup_while_v2_keeps_raw_text() {
    let mut h = Harness::new();
    h.join(1, XSS, "lobby");
    h.join_v1(2, "bob", "lobby");
    let out = h.say(1, &format!("{XSS} & \"q\" 'a'"));
    let v2 = out.only(1);
    assert_eq!(v2["from"], XSS);
    assert_eq!(v2["content"], format!("{XSS} & \"q\" 'a'"));
    let v1 = out.only(2);
    assert_eq!(v1["from"], XSS_ESCAPED);
    assert_eq!(
        v1["content"],
        format!("{XSS_ESCAPED} &amp; &quot;q&quot; &#39;a&#39;")
    );
    assert_eq!(
        (v1["type"].clone(), v1["seq"].clone()),
        ("chat".into(), 1.into())
    );
    let (payload, legacy) = broadcast_payloads(&out);
    assert!(!Rc::ptr_eq(&payload, &legacy));
}

#[test]
fn plain_chat_shares_one_payload_with_legacy_members() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    h.join_v1(2, "bob", "lobby");
    let out = h.say(1, "héllo 😀 / \\ ; = `x` #1 %");
    let (payload, legacy) = broadcast_payloads(&out);
    assert!(Rc::ptr_eq(&payload, &legacy));
}

#[test]
fn legacy_joiner_replays_the_escaped_history() {
    let mut h = Harness::new();
    let epoch = h.joined(1, "ann", "lobby")["epoch"].clone();
    h.say(1, XSS);
    let since = json!({"epoch": epoch, "seq": 0});
    let v1 = h.send(
        2,
        json!({"type": "join", "userId": "bob", "room": "lobby", "since": since}),
    );
    assert_eq!(contents(&v1.to(2)), [XSS_ESCAPED]);
    let v2 = join_since(&mut h, 3, "cat", "lobby", since);
    assert_eq!(contents(&v2), [XSS]);
}

/// The texts of every `Replay` in an outcome, in order.
fn replayed_texts(out: &Outcome) -> Vec<SharedText> {
    out.actions
        .iter()
        .filter_map(|a| match a {
            Action::Replay { texts, .. } => Some(texts.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Joins `user` on `client` into `room` with `since` = (epoch, 0), in v1 (no `v`) or v2.
fn join_since_start(
    h: &mut Harness,
    client: ClientId,
    user: &str,
    room: &str,
    epoch: &Value,
    dialect: Dialect,
) -> Outcome {
    let mut join =
        json!({"type": "join", "userId": user, "room": room, "since": {"epoch": epoch, "seq": 0}});
    if dialect == Dialect::V2 {
        join["v"] = json!(2);
    }
    h.send(client, join)
}

#[test]
fn a_v1_replay_of_an_escaped_message_is_byte_for_byte_what_live_v1_members_got() {
    let mut h = Harness::new();
    let epoch = h.joined(1, XSS, "lobby")["epoch"].clone();
    h.join_v1(2, "bob", "lobby");
    let (payload, legacy) = broadcast_payloads(&h.say(1, &format!("{XSS} & 'q'")));
    let v1 = join_since_start(&mut h, 3, "cat", "lobby", &epoch, Dialect::V1);
    let v2 = join_since_start(&mut h, 4, "dan", "lobby", &epoch, Dialect::V2);
    let (v1, v2) = (replayed_texts(&v1), replayed_texts(&v2));
    assert_eq!(v1.len(), 1, "a v1 replay is a shared Replay, not a Send");
    assert_eq!(v1[0].as_bytes(), legacy.as_bytes());
    assert_eq!(v2[0].as_bytes(), payload.as_bytes());
    assert!(
        Rc::ptr_eq(v1[0].shared().0, v2[0].shared().0),
        "both forms are slices of one history segment"
    );
}

#[test]
fn a_v1_replay_of_a_message_that_needs_no_escaping_shares_the_v2_bytes() {
    let mut h = Harness::new();
    let epoch = h.joined(1, "ann", "lobby")["epoch"].clone();
    h.say(1, "plain words / \\ ; `x`");
    let v1 = join_since_start(&mut h, 2, "bob", "lobby", &epoch, Dialect::V1);
    let v2 = join_since_start(&mut h, 3, "cat", "lobby", &epoch, Dialect::V2);
    assert_eq!(replayed_texts(&v1), replayed_texts(&v2), "the same slice");
    assert_eq!(replayed_texts(&v1).len(), 1);
}

#[test]
fn a_message_escaped_for_v1_counts_both_forms_against_the_history_budget() {
    let mut h = Harness::new();
    h.join(1, "ann", "plain");
    let before = h.chat.history_bytes();
    let (payload, _) = broadcast_payloads(&h.say(1, &"a".repeat(500)));
    let plain_cost = h.chat.history_bytes() - before;
    assert_eq!(
        plain_cost,
        payload.len(),
        "a plain message costs its one text"
    );

    h.join(1, "ann", "marked");
    let before = h.chat.history_bytes();
    let (payload, legacy) = broadcast_payloads(&h.say(1, &"<".repeat(500)));
    assert_eq!(
        h.chat.history_bytes() - before,
        payload.len() + legacy.len(),
        "an escaped message costs both its forms"
    );
}

#[test]
fn a_v1_replay_is_cut_at_max_replay_bytes_counted_in_its_escaped_form() {
    let content = "<".repeat(100);
    let mut probe = Harness::new();
    probe.join(1, "ann", "lobby");
    let (payload, legacy) = broadcast_payloads(&probe.say(1, &content));
    let mut h = Harness::with(ChatConfig {
        max_replay_bytes: 3 * payload.len(),
        ..ChatConfig::default()
    });
    let epoch = h.joined(1, "ann", "lobby")["epoch"].clone();
    for _ in 0..3 {
        h.say(1, &content);
    }
    let v2 = join_since_start(&mut h, 2, "bob", "lobby", &epoch, Dialect::V2);
    assert_eq!(replayed_texts(&v2).len(), 3, "the v2 forms fit");
    let v1 = replayed_texts(&join_since_start(
        &mut h,
        3,
        "cat",
        "lobby",
        &epoch,
        Dialect::V1,
    ));
    let sent: usize = v1.iter().map(|t| t.as_bytes().len()).sum();
    assert!(v1.len() < 3, "the v1 forms do not all fit");
    assert_eq!(v1.len(), 3 * payload.len() / legacy.len(), "{sent} bytes");
    assert!(v1.iter().all(|t| t.as_bytes().len() == legacy.len()));
}

#[test]
fn a_lagging_v1_member_is_caught_up_with_the_escaped_forms() {
    let mut h = Harness::new();
    h.join_v1(1, "ann", "lobby");
    let live = h.say(1, XSS);
    let (_, legacy) = broadcast_payloads(&live);
    h.say(1, "plain");
    let mut out = Vec::new();
    h.chat.catch_up(1, room_of(&live), 1, &mut out);
    let caught_up = h.resolve(out);
    let texts = replayed_texts(&caught_up);
    assert_eq!(texts.len(), 2);
    assert_eq!(texts[0].as_bytes(), legacy.as_bytes());
    assert_eq!(contents(&caught_up.to(1)), [XSS_ESCAPED, "plain"]);
}

#[test]
fn legacy_dm_is_escaped_and_the_v2_copy_is_raw() {
    let mut h = Harness::new();
    h.join(1, XSS, "lobby");
    h.join_v1(2, "bob", "other");
    let out = h.send(1, json!({"type": "dm", "to": "bob", "content": XSS}));
    assert_eq!(
        out.only(2),
        json!({"type": "chat", "from": XSS_ESCAPED, "content": XSS_ESCAPED, "timestamp": T0, "private": true})
    );
    let copy = out.only(1);
    assert_eq!(
        (copy["from"].clone(), copy["content"].clone()),
        (XSS.into(), XSS.into())
    );
}

#[test]
fn legacy_system_lines_keep_the_raw_name() {
    let mut h = Harness::new();
    h.join_v1(1, "bob", "lobby");
    let out = h.join(2, XSS, "lobby");
    assert_eq!(
        out.only(1),
        system(&format!("User \"{XSS}\" joined the room"))
    );
}

#[test]
fn legacy_error_is_a_system_line_with_the_code() {
    let mut h = Harness::new();
    h.join_v1(1, "bob", "lobby");
    assert_eq!(
        h.say(1, "").only(1),
        json!({
            "type": "system",
            "content": "Error: \"content\" must be a non-empty string",
            "code": "invalid_field",
            "error": true
        })
    );
}

#[test]
fn v2_error_is_unchanged() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    assert_eq!(
        h.say(1, "").only(1),
        json!({"type": "error", "code": "invalid_field", "message": "\"content\" must be a non-empty string"})
    );
}

#[test]
fn a_failed_v2_join_gets_the_error_shape() {
    let mut h = Harness::new();
    h.join_v1(1, "ann", "lobby");
    assert_eq!(
        h.join(2, "ann", "lobby").only(2),
        json!({"type": "error", "code": "name_taken", "message": "another connection holds this userId"})
    );
}

#[test]
fn a_failed_legacy_join_gets_a_system_line() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    assert_eq!(
        h.join_v1(2, "ann", "lobby").legacy_error_code(2),
        "name_taken"
    );
}

#[test]
fn a_v2_join_rejected_for_its_fields_gets_the_error_shape() {
    let mut h = Harness::new();
    let out = h.send(1, json!({"type": "join", "room": "lobby", "v": 2}));
    assert_eq!(out.error_code(1), "invalid_field");
}

#[test]
fn a_v2_connection_keeps_the_error_shape_after_leaving() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    h.send(1, json!({"type": "leave"}));
    assert_eq!(h.say(1, "hi").error_code(1), "not_joined");
}

#[test]
fn rate_limited_follows_the_connection_protocol() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    h.join_v1(2, "bob", "lobby");
    for _ in 0..39 {
        h.send(1, json!({"type": "ping"}));
        h.send(2, json!({"type": "ping"}));
    }
    assert_eq!(
        h.send(1, json!({"type": "ping"})).error_code(1),
        "rate_limited"
    );
    assert_eq!(
        h.send(2, json!({"type": "ping"})).legacy_error_code(2),
        "rate_limited"
    );
}

// ---- rate limit ---------------------------------------------------------------------------------------------

#[test]
fn a_burst_passes_then_frames_are_rate_limited() {
    let mut h = Harness::new();
    for _ in 0..40 {
        assert_eq!(h.send(1, json!({"type": "ping"})).only(1)["type"], "pong");
    }
    assert_eq!(
        h.send(1, json!({"type": "ping"})).legacy_error_code(1),
        "rate_limited"
    );
}

#[test]
fn the_rate_limit_is_charged_before_parsing() {
    let mut h = Harness::new();
    for _ in 0..40 {
        h.text(1, "garbage");
    }
    assert_eq!(h.text(1, "garbage").legacy_error_code(1), "rate_limited");
}

#[test]
fn the_bucket_refills_with_time() {
    let mut h = Harness::new();
    for _ in 0..41 {
        h.send(1, json!({"type": "ping"}));
    }
    h.mono_ms += 50;
    assert_eq!(h.send(1, json!({"type": "ping"})).only(1)["type"], "pong");
    assert_eq!(
        h.send(1, json!({"type": "ping"})).legacy_error_code(1),
        "rate_limited"
    );
}

#[test]
fn flooding_far_past_the_limit_closes_with_1008() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    h.join(2, "bob", "lobby");
    for _ in 0..39 + 100 {
        h.send(1, json!({"type": "ping"}));
    }
    let out = h.send(1, json!({"type": "ping"}));
    assert_eq!(out.closed, [(1, 1008, "rate limit abuse")]);
    assert!(out.delivered.is_empty());
    assert!(h.send(1, json!({"type": "ping"})).actions.is_empty());
    let out = h.disconnect(1);
    assert_eq!(out.to(2)[0], system("User \"ann\" left the room"));
}

#[test]
fn rate_limits_are_per_connection() {
    let mut h = Harness::new();
    for _ in 0..41 {
        h.send(1, json!({"type": "ping"}));
    }
    assert_eq!(h.send(2, json!({"type": "ping"})).only(2)["type"], "pong");
}

/// The room the first broadcast in an outcome went to.
fn room_of(out: &Outcome) -> RoomId {
    out.actions
        .iter()
        .find_map(|a| match a {
            Action::Broadcast { room, .. } => Some(*room),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no broadcast in {:?}", out.actions))
}

// ---- crowded rooms and storms ----------------------------------------------------------------------------------

#[test]
fn a_full_room_refuses_a_join_and_the_joiner_keeps_its_room() {
    let mut h = Harness::with(ChatConfig {
        max_room_members: 2,
        ..ChatConfig::default()
    });
    h.join(1, "ann", "small");
    h.join(2, "bob", "small");
    h.join(3, "cat", "elsewhere");
    assert_eq!(h.join(3, "cat", "small").error_code(3), "room_full");
    assert_eq!(h.say(3, "still here").to(3)[0]["room"], "elsewhere");
    // A member rejoining its own full room is not refused: it leaves the seat it takes again.
    assert_eq!(h.joined(2, "bob", "small")["memberCount"], 2);
}

#[test]
fn joined_lists_at_most_a_hundred_members_and_counts_them_all() {
    let mut h = Harness::new();
    for client in 0..150 {
        h.join(client, &format!("user{client}"), "crowd");
    }
    let joined = h.joined(150, "late", "crowd");
    assert_eq!(joined["members"].as_array().map(Vec::len), Some(100));
    assert_eq!(joined["memberCount"], 151);
}

#[test]
fn a_storm_of_departures_is_announced_one_by_one_only_up_to_the_cap_then_summed_up() {
    let mut h = Harness::new();
    h.join(1000, "watcher", "crowd");
    for client in 0..100 {
        h.join(client, &format!("user{client}"), "crowd");
    }
    // End the turn of the joins, then drop all 100 in one turn.
    let mut out = Vec::new();
    h.chat.end_turn(&mut out);
    let mut announced = 0;
    for client in 0..100 {
        announced += h.disconnect(client).to(1000).len() / 2;
    }
    assert_eq!(
        announced, 16,
        "one line and one presence each, for the first 16"
    );
    let mut out = Vec::new();
    h.chat.end_turn(&mut out);
    let summary = h.resolve(out).to(1000);
    assert_eq!(
        summary,
        [
            system("0 more joined and 84 more left the room; 1 online"),
            json!({"type": "presence", "room": "crowd", "count": 1})
        ]
    );
    let mut out = Vec::new();
    h.chat.end_turn(&mut out);
    assert!(out.is_empty(), "a quiet turn sends nothing");
}

// ---- relayed through a cluster engine ----------------------------------------------------------------------

fn relayed() -> Harness {
    Harness::with(ChatConfig {
        relayed: true,
        ..ChatConfig::default()
    })
}

impl Harness {
    /// What the engine would hand back for `published`, numbered `seq`: delivered like the server does.
    fn deliver(&mut self, published: &Action, seq: u64) -> (Delivery, Outcome) {
        let Action::Publish { room, .. } = published else {
            panic!("not a publication: {published:?}");
        };
        let epoch = self.room_state(room).epoch;
        self.deliver_in(&epoch, published, seq)
    }

    /// `deliver`, in the numbering `epoch`.
    fn deliver_in(&mut self, epoch: &str, published: &Action, seq: u64) -> (Delivery, Outcome) {
        let Action::Publish { room, tail, .. } = published else {
            panic!("not a publication: {published:?}");
        };
        let text = format!("{}{seq}{tail}", chat_message_head(room));
        let mut out = Vec::new();
        let delivery = self.chat.deliver_published(epoch, &text, &mut out);
        (delivery, self.resolve(out))
    }

    /// The one `Publish` among what `client` saying `content` made happen.
    fn say_relayed(&mut self, client: ClientId, content: &str) -> Action {
        let outcome = self.say(client, content);
        assert!(outcome.delivered.is_empty(), "{:?}", outcome.delivered);
        let mut publications = outcome
            .actions
            .into_iter()
            .filter(|action| matches!(action, Action::Publish { .. }));
        let publication = publications.next().expect("a Publish");
        assert!(publications.next().is_none());
        publication
    }
}

#[test]
fn relayed_chat_is_handed_to_the_engine_not_broadcast() {
    let mut h = relayed();
    h.join(1, "ann", "lobby");
    h.join(2, "bob", "lobby");
    let publication = h.say_relayed(1, "hi");
    let Action::Publish { client, room, tail } = &publication else {
        unreachable!()
    };
    assert_eq!((*client, &**room), (1, "lobby"));
    assert!(
        tail.starts_with(r#","from":"ann","content":"hi","timestamp":"#),
        "{tail}"
    );
}

#[test]
fn a_published_message_is_delivered_to_every_member_in_both_dialects() {
    let mut h = relayed();
    h.join(1, "ann", "lobby");
    h.join_v1(2, "bob", "lobby");
    let publication = h.say_relayed(1, "<b>hi</b>");
    let (delivery, outcome) = h.deliver(&publication, 1);
    assert_eq!(delivery, Delivery::Delivered { gap: false });
    assert_eq!(
        outcome.only(1),
        json!({"type": "chat", "room": "lobby", "seq": 1, "from": "ann", "content": "<b>hi</b>",
               "timestamp": T0})
    );
    assert_eq!(outcome.only(2)["content"], "&lt;b&gt;hi&lt;/b&gt;");
    assert_eq!(outcome.only(2)["seq"], 1);
}

#[test]
fn a_skipped_seq_is_a_gap() {
    let mut h = relayed();
    h.join(1, "ann", "lobby");
    let publication = h.say_relayed(1, "one");
    assert_eq!(
        h.deliver(&publication, 1).0,
        Delivery::Delivered { gap: false }
    );
    assert_eq!(
        h.deliver(&publication, 3).0,
        Delivery::Delivered { gap: true }
    );
}

#[test]
fn a_gap_tells_every_member_here_lagged_before_the_message() {
    let mut h = relayed();
    h.join(1, "ann", "lobby");
    h.join_v1(2, "bob", "lobby");
    let publication = h.say_relayed(1, "one");
    let (_, first) = h.deliver(&publication, 1);
    assert_eq!(first.only(1)["type"], "chat", "no gap, no lagged");
    let (delivery, outcome) = h.deliver(&publication, 3);
    assert_eq!(delivery, Delivery::Delivered { gap: true });
    let ann = outcome.to(1);
    assert_eq!(
        (&ann[0]["type"], &ann[0]["code"]),
        (&json!("error"), &json!("lagged"))
    );
    assert_eq!(
        (&ann[1]["type"], &ann[1]["seq"]),
        (&json!("chat"), &json!(3))
    );
    let bob = outcome.to(2);
    assert_eq!(
        (&bob[0]["type"], &bob[0]["code"]),
        (&json!("system"), &json!("lagged")),
        "the v1 page gets it as a system line"
    );
    assert_eq!(bob[1]["seq"], 3);
}

#[test]
fn a_message_already_kept_is_not_delivered_again() {
    let mut h = relayed();
    h.join(1, "ann", "lobby");
    let publication = h.say_relayed(1, "once");
    assert_eq!(
        h.deliver(&publication, 1).0,
        Delivery::Delivered { gap: false }
    );
    let (again, outcome) = h.deliver(&publication, 1);
    assert_eq!(again, Delivery::Stale);
    assert!(outcome.delivered.is_empty());
}

#[test]
fn a_message_in_another_epoch_restarts_the_room_and_is_delivered() {
    let mut h = relayed();
    h.join(1, "ann", "lobby");
    let publication = h.say_relayed(1, "old numbering");
    h.deliver(&publication, 41);
    let (delivery, outcome) = h.deliver_in("ffffffffffffffff", &publication, 1);
    assert_eq!(delivery, Delivery::Restarted);
    let ann = outcome.to(1);
    assert_eq!(ann[0]["code"], "lagged", "told first: its seqs restart");
    assert_eq!(ann[1]["seq"], 1);
    let after = h.joined(3, "cat", "lobby");
    assert_eq!(after["epoch"], "ffffffffffffffff");
    assert_eq!(after["seq"], 1);
}

#[test]
fn a_join_takes_on_the_rooms_epoch_seq_and_messages_from_the_engine() {
    let mut h = relayed();
    h.claim_answer = None;
    let key = h
        .join(1, "ann", "lobby")
        .actions
        .iter()
        .find_map(|action| match action {
            Action::ClaimName { key, .. } => Some(key.clone()),
            _ => None,
        })
        .expect("a ClaimName");
    let kept = |seq: u64, content: &str| {
        json!({"type": "chat", "room": "lobby", "seq": seq, "from": "bob", "content": content,
               "timestamp": T0})
        .to_string()
    };
    let state = RoomState {
        epoch: "0123456789abcdef".into(),
        seq: 12,
        messages: vec![kept(11, "eleven"), kept(12, "twelve")],
        members_elsewhere: vec!["dan".into()],
        reclaimed: false,
    };
    let mut out = Vec::new();
    let now = h.now();
    h.chat
        .name_claimed(1, &key, "lobby", ClaimAnswer::Granted(state), now, &mut out);
    let joined = h.resolve(out).to(1)[1].clone();
    assert_eq!(
        (&joined["epoch"], &joined["seq"]),
        (&json!("0123456789abcdef"), &json!(12))
    );
    assert_eq!(joined["memberCount"], 2, "{joined}");
    assert_eq!(joined["members"], json!(["ann", "dan"]), "{joined}");
    // A later joiner with `since` 10 of that epoch is replayed both, from this node's history.
    h.claim_answer = Some(ClaimAnswer::Granted(h.room_state("lobby")));
    let rejoin = h.send(
        2,
        json!({"type": "join", "userId": "cat", "room": "lobby", "v": 2,
               "since": {"epoch": "0123456789abcdef", "seq": 10}}),
    );
    let contents: Vec<Value> = rejoin
        .to(2)
        .iter()
        .filter(|m| m["type"] == "chat")
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(contents, [json!("eleven"), json!("twelve")]);
}

#[test]
fn a_published_message_of_a_room_nobody_here_is_in_is_not_delivered() {
    let mut h = relayed();
    h.join(1, "ann", "lobby");
    let mut publication = h.say_relayed(1, "hi");
    if let Action::Publish { room, .. } = &mut publication {
        *room = Rc::from("elsewhere");
    }
    assert_eq!(h.deliver(&publication, 1).0, Delivery::NotHere);
    let mut out = Vec::new();
    assert_eq!(
        h.chat
            .deliver_published("e", "{\"type\":\"pong\"}", &mut out),
        Delivery::Malformed
    );
    assert!(out.is_empty());
}

#[test]
fn a_published_message_joins_the_history_a_rejoin_replays() {
    let mut h = relayed();
    h.join(1, "ann", "lobby");
    let publication = h.say_relayed(1, "kept");
    h.deliver(&publication, 1);
    let joined = h.joined(2, "bob", "lobby");
    assert_eq!(joined["seq"], 1);
}

#[test]
fn the_engine_is_told_which_rooms_gained_their_first_member_or_lost_their_last() {
    let mut h = relayed();
    h.join(1, "ann", "lobby");
    h.join(2, "bob", "lobby");
    h.join(3, "cat", "attic");
    assert_eq!(
        h.chat.take_occupancy_changes(),
        [(Rc::from("lobby"), true), (Rc::from("attic"), true)]
    );
    h.disconnect(1);
    assert_eq!(h.chat.take_occupancy_changes(), []);
    h.disconnect(2);
    h.join(3, "cat", "lobby");
    assert_eq!(
        h.chat.take_occupancy_changes(),
        [(Rc::from("lobby"), true), (Rc::from("attic"), false)]
    );
}

#[test]
fn a_chat_that_cannot_be_relayed_is_answered_unavailable() {
    let mut h = relayed();
    h.join(1, "ann", "lobby");
    let mut out = Vec::new();
    h.chat.refuse_unavailable(1, &mut out);
    assert_eq!(h.resolve(out).error_code(1), "unavailable");
    let mut nobody = Vec::new();
    h.chat.refuse_unavailable(9, &mut nobody);
    assert!(nobody.is_empty(), "a client that is gone is told nothing");
}

#[test]
fn without_a_cluster_engine_nothing_is_recorded_for_it() {
    let mut h = Harness::new();
    h.join(1, "ann", "lobby");
    assert!(h.chat.take_occupancy_changes().is_empty());
}

#[test]
fn a_relayed_join_waits_for_its_name_and_goes_on_once_granted() {
    let mut h = relayed();
    h.claim_answer = None;
    let asked = h.join(1, "Ann", "lobby");
    assert!(asked.delivered.is_empty(), "{:?}", asked.delivered);
    let key = asked
        .actions
        .iter()
        .find_map(|action| match action {
            Action::ClaimName { client: 1, key, .. } => Some(key.clone()),
            _ => None,
        })
        .expect("a ClaimName");
    let mut out = Vec::new();
    let now = h.now();
    let state = h.room_state("lobby");
    h.chat
        .name_claimed(1, &key, "lobby", ClaimAnswer::Granted(state), now, &mut out);
    let outcome = h.resolve(out);
    assert_eq!(outcome.to(1)[1]["type"], "joined");
    assert!(h.chat.holds_name(&key));
}

#[test]
fn a_relayed_join_whose_name_another_node_holds_is_name_taken_or_unavailable() {
    let mut h = relayed();
    h.claim_answer = Some(ClaimAnswer::Taken);
    assert_eq!(h.join(1, "ann", "lobby").error_code(1), "name_taken");
    h.claim_answer = Some(ClaimAnswer::Unavailable);
    assert_eq!(h.join(2, "bob", "lobby").error_code(2), "unavailable");
    assert_eq!(h.chat.member_count(), 0);
}

#[test]
fn an_answer_for_a_claim_nobody_waits_for_changes_nothing() {
    let mut h = relayed();
    h.claim_answer = None;
    h.join(1, "ann", "lobby");
    let mut out = Vec::new();
    let now = h.now();
    let state = h.room_state("lobby");
    h.chat.name_claimed(
        1,
        "someone-else",
        "lobby",
        ClaimAnswer::Granted(state.clone()),
        now,
        &mut out,
    );
    h.chat.name_claimed(
        7,
        "ann",
        "lobby",
        ClaimAnswer::Granted(state),
        now,
        &mut out,
    );
    h.chat.name_claimed(
        1,
        "ann",
        "attic",
        ClaimAnswer::Granted(h.room_state("attic")),
        now,
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!(h.chat.member_count(), 0);
}

#[test]
fn a_join_waiting_for_its_name_is_forgotten_when_its_connection_closes() {
    let mut h = relayed();
    h.claim_answer = None;
    h.join(1, "ann", "lobby");
    assert_eq!(h.chat.claiming.len(), 1, "the join waits for the engine");
    let mut out = Vec::new();
    let now = h.now();
    h.chat.disconnect(1, now, &mut out);
    assert!(h.chat.claiming.is_empty());
    let state = h.room_state("lobby");
    h.chat.name_claimed(
        1,
        "ann",
        "lobby",
        ClaimAnswer::Granted(state),
        now,
        &mut out,
    );
    assert_eq!(h.chat.member_count(), 0, "a late answer seats nobody");
}

#[test]
fn leaving_releases_the_name_for_the_grace_period_across_the_cluster() {
    let mut h = relayed();
    h.join(1, "ann", "lobby");
    let left = h.send(1, json!({"type": "leave"}));
    let released: Vec<(Rc<str>, u64)> = left
        .actions
        .iter()
        .filter_map(|action| match action {
            Action::ReleaseName { key, grace_ms } => Some((key.clone(), *grace_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(
        released,
        [(Rc::from("ann"), ChatConfig::default().name_grace_ms)]
    );
    assert_eq!(h.chat.held_name_keys().count(), 0);
    assert!(
        h.chat.holds_name("ann"),
        "still reserved here during the grace period"
    );
}

#[test]
fn a_dm_to_a_name_not_held_here_is_relayed_and_delivered_by_the_node_that_holds_it() {
    let mut sender_node = relayed();
    sender_node.join(1, "ann", "lobby");
    let sent = sender_node.send(1, json!({"type": "dm", "to": "Bob", "content": "<psst>"}));
    assert!(sent.delivered.is_empty(), "the copy waits for the engine");
    let Some(Action::RelayDm {
        to_key, text, copy, ..
    }) = sent
        .actions
        .iter()
        .find(|action| matches!(action, Action::RelayDm { .. }))
    else {
        panic!("no RelayDm in {:?}", sent.actions);
    };
    assert_eq!(&**to_key, "bob");
    assert_eq!(parse(copy)["to"], "Bob");
    let mut holder_node = relayed();
    holder_node.join_v1(5, "bob", "west");
    let mut out = Vec::new();
    holder_node.chat.deliver_relayed_dm(text, &mut out);
    let delivered = holder_node.resolve(out).only(5);
    assert_eq!(
        (
            &delivered["from"],
            &delivered["content"],
            &delivered["private"]
        ),
        (&json!("ann"), &json!("&lt;psst&gt;"), &json!(true))
    );
}

#[test]
fn a_member_arriving_or_leaving_on_another_node_is_announced_here_and_counted() {
    let mut h = relayed();
    h.join(1, "ann", "lobby");
    let mut out = Vec::new();
    h.chat
        .remote_presence("lobby", &Chat::presence_event("bob", true), &mut out);
    let arrived = h.resolve(out);
    assert_eq!(arrived.to(1)[0], system("User \"bob\" joined the room"));
    assert_eq!(
        arrived.to(1)[1],
        json!({"type": "presence", "room": "lobby", "joined": "bob", "count": 2})
    );
    let mut again = Vec::new();
    h.chat
        .remote_presence("lobby", &Chat::presence_event("bob", true), &mut again);
    assert!(again.is_empty(), "an arrival already known changes nothing");
    let mut out = Vec::new();
    h.chat
        .remote_presence("lobby", &Chat::presence_event("bob", false), &mut out);
    assert_eq!(
        h.resolve(out).to(1)[1],
        json!({"type": "presence", "room": "lobby", "left": "bob", "count": 1})
    );
}

#[test]
fn relayed_joins_and_leaves_are_told_to_the_cluster_but_a_silent_replacement_is_not() {
    let mut h = relayed();
    let presence = |outcome: &Outcome| -> Vec<(String, bool)> {
        outcome
            .actions
            .iter()
            .filter_map(|action| match action {
                Action::Presence { user, joined, .. } => Some((user.to_string(), *joined)),
                _ => None,
            })
            .collect()
    };
    let joined = h.join(1, "ann", "lobby");
    assert_eq!(presence(&joined), [("ann".to_owned(), true)]);
    let token = joined.to(1)[1]["session"].clone();
    let replaced = h.send(
        2,
        json!({"type": "join", "userId": "ann", "room": "lobby", "v": 2, "session": token}),
    );
    assert_eq!(presence(&replaced), []);
    let left = h.send(2, json!({"type": "leave"}));
    assert_eq!(presence(&left), [("ann".to_owned(), false)]);
}

#[test]
fn a_name_taken_elsewhere_with_its_session_closes_the_holder_here_with_4001() {
    let mut h = relayed();
    h.join(1, "ann", "lobby");
    h.join(2, "bob", "lobby");
    let mut out = Vec::new();
    let now = h.now();
    h.chat.replaced_elsewhere("ann", now, &mut out);
    let outcome = h.resolve(out);
    assert_eq!(outcome.closed, [(1, 4001, "replaced")]);
    assert_eq!(outcome.to(2)[0], system("User \"ann\" left the room"));
    assert_eq!(h.chat.member_count(), 1);
}

#[test]
fn a_name_granted_by_the_shown_session_keeps_that_session() {
    let mut h = relayed();
    h.claim_answer = None;
    let asked = h.send(
        1,
        json!({"type": "join", "userId": "ann", "room": "lobby", "v": 2, "session": "the-old-token"}),
    );
    let Some(Action::ClaimName {
        key, shown, token, ..
    }) = asked
        .actions
        .iter()
        .find(|action| matches!(action, Action::ClaimName { .. }))
    else {
        panic!("no ClaimName in {:?}", asked.actions);
    };
    assert_eq!(shown.as_deref(), Some("the-old-token"));
    assert_ne!(
        &**token, "the-old-token",
        "a fresh token is proposed for a free name"
    );
    let mut state = h.room_state("lobby");
    state.reclaimed = true;
    let mut out = Vec::new();
    let now = h.now();
    h.chat
        .name_claimed(1, key, "lobby", ClaimAnswer::Granted(state), now, &mut out);
    assert_eq!(h.resolve(out).to(1)[1]["session"], "the-old-token");
}

#[test]
fn a_leave_while_the_join_waits_for_the_cluster_gives_the_join_up() {
    let mut h = relayed();
    h.claim_answer = None;
    h.join(1, "ann", "lobby");
    let left = h.send(1, json!({"type": "leave"}));
    assert!(left.delivered.is_empty(), "{:?}", left.delivered);
    let mut out = Vec::new();
    let now = h.now();
    let state = h.room_state("lobby");
    h.chat.name_claimed(
        1,
        "ann",
        "lobby",
        ClaimAnswer::Granted(state),
        now,
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!(h.chat.member_count(), 0);
    assert!(
        !h.chat.holds_name("ann"),
        "the engine is to release what it granted"
    );
}
