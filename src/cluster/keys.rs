//! The names roomcast gives its Redis keys and channels, and the scripts it runs there (`*.lua` beside this file).
//!
//! Owns the naming only, so that every node spells a room's keys alike; it must not send anything. Every name starts
//! with `roomcast:`, so one Redis can hold other data beside a cluster's. A room's name is used as it is (keys and
//! channels are binary-safe), after `roomcast:room:`, and its keys end in a suffix no channel has.

use super::script::Script;

/// The start of every key and channel.
pub const PREFIX: &str = "roomcast:";

/// The start of a room's channel and keys; the room's name follows.
pub const ROOM_CHANNEL_PREFIX: &str = "roomcast:room:";

/// The publish script: numbers, keeps and publishes one room's messages of one loop turn.
pub const PUBLISH_SOURCE: &str = include_str!("publish.lua");

/// The publish script, hashed.
pub fn publish_script() -> Script {
    Script::new(PUBLISH_SOURCE)
}

/// The script of a join: takes the name for the node (`SET NX PX`, renewing a name the node holds already) and
/// answers the room's epoch, latest seq and latest messages.
pub fn join_script() -> Script {
    Script::new(include_str!("join.lua"))
}

/// The script that releases a node's name, reserved for a grace period.
pub fn release_script() -> Script {
    Script::new(include_str!("release.lua"))
}

/// The node heartbeat: renews its names, scores it in `NODES`, and removes dead nodes.
pub fn heartbeat_script() -> Script {
    Script::new(include_str!("heartbeat.lua"))
}

/// The script that records a member's arrival or departure on a node and tells the other nodes.
pub fn presence_script() -> Script {
    Script::new(include_str!("presence.lua"))
}

/// The script that answers what a room's stream holds after a seq, for a node whose subscription was down.
pub fn recover_script() -> Script {
    Script::new(include_str!("recover.lua"))
}

/// The rooms with a member on any node, room to member count, for `/api/rooms`: the presence script and the heartbeat
/// write a room's count (its members hash's length) after every change, and remove a room nobody is in. No room's
/// key can be spelled like it: those all start with [`ROOM_CHANNEL_PREFIX`], which ends in `:`.
pub const ROOMS: &str = "roomcast:rooms";

/// A room's members across the cluster, name to node: `roomcast:room:<room>:members`.
pub fn room_members_key(room: &str) -> Vec<u8> {
    [ROOM_CHANNEL_PREFIX.as_bytes(), room.as_bytes(), b":members"].concat()
}

/// A node's members, `<room>\n<name>` each, for the others to remove if it dies: `roomcast:node:<id>:members`.
pub fn node_members_key(node: &str) -> Vec<u8> {
    [NODE_CHANNEL_PREFIX.as_bytes(), node.as_bytes(), b":members"].concat()
}

/// A presence event as a room's channel carries it: `@<node>`, a newline, the event's JSON. `None` for anything
/// else (a chat message starts with its epoch).
pub fn split_presence(payload: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(payload).ok()?.strip_prefix('@')?;
    text.split_once('\n')
}

/// The script that hands a DM to the node holding its recipient's name.
pub fn dm_script() -> Script {
    Script::new(include_str!("dm.lua"))
}

/// The ZSET of live nodes, scored by their last heartbeat.
pub const NODES: &str = "roomcast:nodes";

/// The start of a node's channel, on which it receives the DMs for names it holds; the node's id follows.
pub const NODE_CHANNEL_PREFIX: &str = "roomcast:node:";

/// A node's channel: `roomcast:node:<id>`.
pub fn node_channel(node: &str) -> Vec<u8> {
    [NODE_CHANNEL_PREFIX.as_bytes(), node.as_bytes()].concat()
}

/// The key that says which node holds a user name: `roomcast:name:<key>`, `key` being the name's confusable
/// skeleton, so that two names a person cannot tell apart are one key.
pub fn name_key(key: &str) -> Vec<u8> {
    [NAME_KEY_PREFIX.as_bytes(), key.as_bytes()].concat()
}

/// The start of a name's key.
const NAME_KEY_PREFIX: &str = "roomcast:name:";

/// What a node's channel says when a joiner on another node took a name from it with its session token:
/// `replace`, a newline, the name's key. Gives the name's key (its skeleton) back; `None` for anything else (a DM).
pub fn replaced_name(payload: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(payload).ok()?;
    text.strip_prefix("replace\n")?
        .strip_prefix(NAME_KEY_PREFIX)
}

/// The channel a room's chat messages are published to: `roomcast:room:<room>`.
pub fn room_channel(room: &str) -> Vec<u8> {
    [ROOM_CHANNEL_PREFIX.as_bytes(), room.as_bytes()].concat()
}

/// The room a channel named by `room_channel` belongs to.
pub fn room_of_channel(channel: &[u8]) -> Option<&str> {
    let room = channel.strip_prefix(ROOM_CHANNEL_PREFIX.as_bytes())?;
    std::str::from_utf8(room).ok()
}

/// The channel every node subscribes to for what concerns them all: a server API `/api/disconnect`, which each
/// node carries out on its own connections.
pub const CLUSTER_CHANNEL: &str = "roomcast:cluster";

/// An `/api/disconnect` as the cluster channel carries it: `disconnect`, then the calling node's id, the close
/// code, the user's name and the close reason, each after a newline (the reason last: it may hold newlines).
pub fn disconnect_message(node: &str, code: u16, user: &str, reason: &str) -> Vec<u8> {
    format!("disconnect\n{node}\n{code}\n{user}\n{reason}").into_bytes()
}

/// A disconnect read back from the cluster channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disconnect<'a> {
    /// The node the API was called on (which has closed its own connections already).
    pub node: &'a str,
    /// The close code.
    pub code: u16,
    /// The user whose connections are to be closed.
    pub user: &'a str,
    /// The close reason.
    pub reason: &'a str,
}

/// Reads what [`disconnect_message`] wrote; `None` for anything else.
pub fn split_disconnect(payload: &[u8]) -> Option<Disconnect<'_>> {
    let text = std::str::from_utf8(payload)
        .ok()?
        .strip_prefix("disconnect\n")?;
    let mut parts = text.splitn(4, '\n');
    let node = parts.next()?;
    let code = parts.next()?.parse().ok()?;
    let user = parts.next()?;
    let reason = parts.next()?;
    Some(Disconnect {
        node,
        code,
        user,
        reason,
    })
}

/// The counter of a room's last seq: `roomcast:room:<room>:seq`.
pub fn room_seq_key(room: &str) -> Vec<u8> {
    [ROOM_CHANNEL_PREFIX.as_bytes(), room.as_bytes(), b":seq"].concat()
}

/// The epoch of a room's numbering, set by the first node to publish or join: `roomcast:room:<room>:epoch`. A room
/// whose keys Redis lost gets a new one, and `since` of the old numbering is answered `complete: false`.
pub fn room_epoch_key(room: &str) -> Vec<u8> {
    [ROOM_CHANNEL_PREFIX.as_bytes(), room.as_bytes(), b":epoch"].concat()
}

/// A message as a room's channel carries it: the room's epoch, a newline, the message's JSON (which holds no raw
/// newline). `None` for anything else.
pub fn split_published(payload: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(payload).ok()?;
    text.split_once('\n')
}

/// The stream of a room's history, id `<seq>-0`: `roomcast:room:<room>:stream`.
pub fn room_stream_key(room: &str) -> Vec<u8> {
    [ROOM_CHANNEL_PREFIX.as_bytes(), room.as_bytes(), b":stream"].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disconnect_message_reads_back_with_a_reason_holding_newlines() {
        let message = disconnect_message("n1", 4005, "bob", "bye\nnow");
        assert_eq!(
            split_disconnect(&message),
            Some(Disconnect {
                node: "n1",
                code: 4005,
                user: "bob",
                reason: "bye\nnow"
            })
        );
    }

    #[test]
    fn anything_but_a_disconnect_is_not_read_as_one() {
        assert_eq!(split_disconnect(b"disconnect\nn1\nnot-a-code\nbob\n"), None);
        assert_eq!(split_disconnect(b"disconnect\nn1\n4005\nbob"), None);
        assert_eq!(split_disconnect(b"replace\nroomcast:name:bob"), None);
    }

    #[test]
    fn node_channels_and_name_keys_are_apart_from_rooms() {
        assert_eq!(node_channel("n1"), b"roomcast:node:n1");
        assert_eq!(room_of_channel(&node_channel("n1")), None);
        assert_eq!(name_key("ann"), b"roomcast:name:ann");
        assert_eq!(replaced_name(b"replace\nroomcast:name:ann"), Some("ann"));
        assert_eq!(replaced_name(b"{\"toKey\":\"ann\"}"), None);
    }

    #[test]
    fn every_script_has_its_own_sha() {
        let shas = [
            publish_script(),
            join_script(),
            release_script(),
            heartbeat_script(),
            dm_script(),
            presence_script(),
            recover_script(),
        ]
        .map(|script| script.sha().to_owned());
        for (i, sha) in shas.iter().enumerate() {
            assert!(!shas[i + 1..].contains(sha));
        }
    }

    #[test]
    fn the_hash_of_rooms_is_no_rooms_key_or_channel() {
        assert!(!ROOMS.starts_with(ROOM_CHANNEL_PREFIX));
        assert_eq!(room_of_channel(ROOMS.as_bytes()), None);
    }

    #[test]
    fn a_rooms_channel_gives_back_its_room() {
        let channel = room_channel("lobby:east");
        assert_eq!(channel, b"roomcast:room:lobby:east");
        assert_eq!(room_of_channel(&channel), Some("lobby:east"));
        assert_eq!(room_of_channel(b"other:room:x"), None);
    }

    #[test]
    fn a_presence_event_splits_into_its_node_and_its_json_and_a_chat_message_is_not_one() {
        assert_eq!(
            split_presence(b"@n1\n{\"user\":\"ann\",\"joined\":true}"),
            Some(("n1", "{\"user\":\"ann\",\"joined\":true}"))
        );
        assert_eq!(split_presence(b"0123abcd\n{}"), None);
        assert_eq!(room_members_key("r"), b"roomcast:room:r:members");
        assert_eq!(node_members_key("n1"), b"roomcast:node:n1:members");
    }

    #[test]
    fn a_published_message_splits_into_its_epoch_and_its_json() {
        assert_eq!(
            split_published(b"0123abcd\n{\"type\":\"chat\"}"),
            Some(("0123abcd", "{\"type\":\"chat\"}"))
        );
        assert_eq!(split_published(b"{\"type\":\"chat\"}"), None);
        assert_eq!(split_published(b"\xff\n{}"), None);
    }

    #[test]
    fn a_rooms_keys_differ_from_each_other_and_from_other_rooms_keys() {
        let keys = [
            room_seq_key("a"),
            room_epoch_key("a"),
            room_stream_key("a"),
            room_seq_key("a:stream"),
            room_stream_key("a:seq"),
        ];
        for (i, key) in keys.iter().enumerate() {
            assert!(key.starts_with(PREFIX.as_bytes()));
            for other in &keys[i + 1..] {
                assert_ne!(key, other);
            }
        }
    }
}
