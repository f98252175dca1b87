//! The chat tests' shared vocabulary: the JSON shapes of docs/protocol.md and the join/leave exchanges that
//! most chat tests begin with.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::TestClient;

/// How long a test waits to be sure nothing arrives.
pub const QUIET: Duration = Duration::from_millis(150);

/// Milliseconds since the Unix epoch, as the server stamps messages.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// A `system` line.
pub fn system(content: &str) -> Value {
    json!({"type": "system", "content": content})
}

/// The line a joiner gets first, with the count of that room.
pub fn welcome_line(room: &str, online: usize) -> Value {
    system(&format!("Joined room \"{room}\", {online} online"))
}

/// A `chat` request.
pub fn chat_msg(content: &str) -> Value {
    json!({"type": "chat", "content": content})
}

/// A v2 `join` request.
pub fn join_msg(user: &str, room: &str) -> Value {
    json!({"type": "join", "userId": user, "room": room, "v": 2})
}

/// The most member names a `joined` lists (it counts them all in `memberCount`).
pub const JOINED_MEMBERS_LISTED: usize = 100;

/// Sends a v2 `join` with `extra` fields merged in, asserts the welcome line (with the room's count) and a
/// `joined` right after it naming `online` members (at most `JOINED_MEMBERS_LISTED`), and returns `joined`.
pub fn join_with(
    client: &mut TestClient,
    user: &str,
    room: &str,
    online: usize,
    extra: Value,
) -> Value {
    let mut frame = join_msg(user, room);
    for (key, value) in extra.as_object().expect("extra fields").iter() {
        frame[key] = value.clone();
    }
    client.send_json(&frame);
    assert_eq!(client.recv_json(), welcome_line(room, online));
    let joined = client.recv_json();
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(joined["room"], room, "{joined}");
    assert_eq!(joined["userId"], user, "{joined}");
    assert_eq!(
        joined["members"].as_array().map(Vec::len),
        Some(online.min(JOINED_MEMBERS_LISTED)),
        "{joined}"
    );
    assert_eq!(joined["memberCount"], online, "{joined}");
    joined
}

/// A `presence` message without its `count` (which must be there, an integer), for comparing the rest.
pub fn presence_without_count(mut presence: Value) -> Value {
    let count = presence
        .as_object_mut()
        .and_then(|fields| fields.remove("count"));
    assert!(
        count.as_ref().is_some_and(Value::is_u64),
        "presence without an integer count: {presence}"
    );
    presence
}

/// `join_with` without extra fields.
pub fn join_expect(client: &mut TestClient, user: &str, room: &str, online: usize) -> Value {
    join_with(client, user, room, online, json!({}))
}

/// The next two messages tell that `user` joined `room`: the system line, then presence.
pub fn saw_join(client: &mut TestClient, user: &str, room: &str) {
    assert_eq!(
        client.recv_json(),
        system(&format!("User \"{user}\" joined the room"))
    );
    assert_eq!(
        presence_without_count(client.recv_json()),
        json!({"type": "presence", "room": room, "joined": user})
    );
}

/// The next two messages tell that `user` left `room`.
pub fn saw_leave(client: &mut TestClient, user: &str, room: &str) {
    assert_eq!(
        client.recv_json(),
        system(&format!("User \"{user}\" left the room"))
    );
    assert_eq!(
        presence_without_count(client.recv_json()),
        json!({"type": "presence", "room": room, "left": user})
    );
}

/// The connection is open and served: a ping gets exactly a pong.
pub fn assert_alive(client: &mut TestClient) {
    client.send_json(&json!({"type": "ping"}));
    assert_eq!(client.recv_text(), r#"{"type":"pong"}"#);
}

/// Nothing arrives at `who` within `QUIET`.
pub fn assert_quiet(client: &mut TestClient, who: &str) {
    let got = client.recv_timeout(QUIET);
    assert!(
        got.is_none(),
        "{who} should have received nothing, got {got:?}"
    );
}
