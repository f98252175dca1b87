//! What the application behind the chat may do through the server API: publish into a room, send a private
//! message, list rooms and members, and disconnect a user.
//!
//! Owns these operations as chat-level calls with plain arguments, so that whatever carries them (the HTTP API on
//! this node today, the cluster relay for other nodes later) gets the same rules: names and lengths judged as in
//! the protocol, a published message numbered, kept in the history and broadcast like a member's, closes pushed as
//! [`Action`]s. The application is trusted: its messages are not charged to any rate limit. It must not parse HTTP
//! or JSON bodies (`http::api`) and must not reach into a connection's frames.

use std::borrow::Cow;
use std::fmt;
use std::rc::Rc;

use super::names;
use super::request::{MAX_ROOM_CHARS, MAX_USER_CHARS};
use super::wire::{self, Out};
use super::{handlers, Action, Chat, Dialect, Now, Participant};
use crate::protocol::CloseCode;

/// Who an application's message is from when the call names nobody: a name no user may take (`names.rs`).
pub const APPLICATION_SENDER: &str = "system";

/// Why the chat refused an application's call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppRefusal {
    /// A name (`room`, `to`, `from`, `userId`) breaks the protocol's name rules; `why` says which rule, in words.
    BadName {
        /// The field.
        field: &'static str,
        /// The rule broken, for the person reading the answer.
        why: String,
    },
    /// `content` is empty.
    EmptyContent,
    /// `content` is over `--max-content` characters.
    ContentTooLong {
        /// The limit, in Unicode scalar values.
        max_chars: usize,
    },
    /// [`Chat::publish_from_app`] on a node of a cluster ([`ChatConfig::relayed`](super::ChatConfig::relayed)):
    /// the cluster engine numbers every room's messages, so the message must go to it
    /// ([`Chat::relayed_publication`]). Numbering it here would put a seq into the room that the engine also gives
    /// to another message.
    Relayed,
}

impl fmt::Display for AppRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppRefusal::BadName { field, why } => write!(f, "\"{field}\": {why}"),
            AppRefusal::EmptyContent => f.write_str("\"content\" must be a non-empty string"),
            AppRefusal::ContentTooLong { max_chars } => {
                write!(f, "\"content\" is over {max_chars} characters")
            }
            AppRefusal::Relayed => f.write_str(
                "a cluster node (--redis) numbers no message itself: the cluster engine does",
            ),
        }
    }
}

impl std::error::Error for AppRefusal {}

/// A room as the API lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomSummary {
    /// Its name.
    pub name: Rc<str>,
    /// Members in it now.
    pub members: usize,
}

/// An application's chat message for the cluster engine to number ([`Chat::relayed_publication`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppPublication {
    /// The room's name, normalised as a member's join would have it.
    pub room: Rc<str>,
    /// The message's JSON after its seq, as [`Action::Publish`]'s `tail`: the engine puts
    /// [`chat_message_head`](super::chat_message_head)`(room)` and the seq before it.
    pub tail: Rc<str>,
}

/// An application's DM for the node holding its recipient's name ([`Chat::relayed_app_dm`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppDm {
    /// The key of the recipient's name (its confusable skeleton).
    pub to_key: Rc<str>,
    /// The DM as the recipient's node reads it ([`Chat::deliver_relayed_dm`]).
    pub text: Rc<str>,
}

impl Chat {
    /// Judges an application's message for a room as [`Chat::publish_from_app`] does and, on a node of a cluster,
    /// encodes it for the cluster engine, which numbers it in the room like any member's message and hands it back
    /// to every node ([`Chat::deliver_published`]): nothing is numbered, kept or broadcast here.
    pub fn relayed_publication(
        &mut self,
        room: &str,
        content: &str,
        from: Option<&str>,
        now: Now,
    ) -> Result<AppPublication, AppRefusal> {
        let room = names::room_name(room, MAX_ROOM_CHARS).map_err(|e| AppRefusal::BadName {
            field: "room",
            why: e.to_string(),
        })?;
        let from = sender(from)?;
        self.check_content(content)?;
        let tail = wire::encode_chat_tail(&mut self.scratch, &from, content, now.unix_ms);
        Ok(AppPublication {
            room: Rc::from(room.as_ref()),
            tail,
        })
    }

    /// Posts `content` into room `room` on behalf of the application, as `from` ([`APPLICATION_SENDER`] when
    /// `None`; any valid user name, or `system`, may be given). It goes out like a member's chat message: numbered
    /// in the room (whose history begins if the room had none), kept in the history, broadcast to every member.
    /// Returns its seq.
    pub fn publish_from_app(
        &mut self,
        room: &str,
        content: &str,
        from: Option<&str>,
        now: Now,
        out: &mut Vec<Action>,
    ) -> Result<u64, AppRefusal> {
        if self.config.relayed {
            return Err(AppRefusal::Relayed);
        }
        let room = names::room_name(room, MAX_ROOM_CHARS).map_err(|e| AppRefusal::BadName {
            field: "room",
            why: e.to_string(),
        })?;
        let from = sender(from)?;
        self.check_content(content)?;
        let ids = &mut self.ids;
        let room_id = self.rooms.open(&room, || ids.epoch(now.unix_ms));
        let Some(seq) = self.rooms.get_mut(room_id).map(|room| room.next_seq()) else {
            return Err(AppRefusal::BadName {
                field: "room",
                why: "the room could not be opened".to_owned(),
            });
        };
        let fields = wire::ChatFields {
            room: &room,
            seq,
            from: &from,
            content,
            timestamp: now.unix_ms,
        };
        let payload = wire::encode_chat(&mut self.scratch, &fields);
        let escaped = handlers::escaped_for_v1(&mut self.scratch, &fields);
        self.keep_and_broadcast(room_id, seq, payload, escaped, out);
        self.rooms.evict_excess(self.config.max_empty_rooms);
        Ok(seq)
    }

    /// Sends `content` privately to the connection holding the name `to`, on behalf of the application, as `from`
    /// (as for [`Chat::publish_from_app`]). True if a connection here holds the name and was sent it.
    pub fn dm_from_app(
        &mut self,
        to: &str,
        content: &str,
        from: Option<&str>,
        now: Now,
        out: &mut Vec<Action>,
    ) -> Result<bool, AppRefusal> {
        let to = names::user_name(to, MAX_USER_CHARS).map_err(|e| AppRefusal::BadName {
            field: "to",
            why: e.to_string(),
        })?;
        let from = sender(from)?;
        self.check_content(content)?;
        let Some((recipient, target)) = self
            .claims
            .holder(to.key())
            .and_then(|r| self.joined(r).map(|j| (r, j)))
        else {
            return Ok(false);
        };
        let payload = if target.dialect == Dialect::V1 {
            wire::encode(&Out::DmV1 {
                from: &wire::escape_html(&from),
                content: &wire::escape_html(content),
                timestamp: now.unix_ms,
                private: true,
            })
        } else {
            wire::encode(&Out::Dm {
                from: &from,
                to: target.user.shown(),
                content,
                timestamp: now.unix_ms,
            })
        };
        out.push(Action::Send {
            to: recipient,
            payload,
        });
        Ok(true)
    }

    /// On a node of a cluster, an application's DM to a name no connection here holds, encoded for the node that
    /// holds it (as a member's DM to another node is, [`Action::RelayDm`]): the name's key and the text its node
    /// reads. `None` when the name is held here ([`Chat::dm_from_app`] delivers it, or nobody can have it).
    pub fn relayed_app_dm(
        &mut self,
        to: &str,
        content: &str,
        from: Option<&str>,
        now: Now,
    ) -> Result<Option<AppDm>, AppRefusal> {
        let to = names::user_name(to, MAX_USER_CHARS).map_err(|e| AppRefusal::BadName {
            field: "to",
            why: e.to_string(),
        })?;
        let from = sender(from)?;
        self.check_content(content)?;
        if self.claims.is_claimed(to.key()) {
            return Ok(None);
        }
        let text = wire::encode_relayed_dm(&wire::RelayedDm {
            to_key: Cow::Borrowed(to.key()),
            from: Cow::Borrowed(&from),
            content: Cow::Borrowed(content),
            timestamp: now.unix_ms,
        });
        Ok(Some(AppDm {
            to_key: to.key().clone(),
            text,
        }))
    }

    /// Every room with at least one member, with its count, in no particular order.
    pub fn rooms(&self) -> Vec<RoomSummary> {
        self.rooms
            .occupied_rooms()
            .map(|room| RoomSummary {
                name: room.name().clone(),
                members: room.seats().len(),
            })
            .collect()
    }

    /// Room name `name` as the chat keeps it (normalised as a join would), for looking it up elsewhere (the
    /// cluster's presence hash); `None` if it is no valid room name.
    pub fn room_name_as_kept(&self, name: &str) -> Option<String> {
        names::room_name(name, MAX_ROOM_CHARS)
            .ok()
            .map(Cow::into_owned)
    }

    /// The names of room `name`'s members, in no particular order; none for a room nobody is in.
    pub fn room_members(&self, name: &str) -> Vec<Rc<str>> {
        let Ok(name) = names::room_name(name, MAX_ROOM_CHARS) else {
            return Vec::new();
        };
        self.rooms
            .lookup(&name)
            .map(|id| {
                self.rooms
                    .seats(id)
                    .iter()
                    .map(|seat| seat.user.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Closes every connection of user `user` with `code` and `reason`: the one holding the name, and, with tokens,
    /// every connection whose token's `sub` it is. Each leaves its room at once (the others are told) and its later
    /// frames are ignored. Returns how many were closed.
    pub fn disconnect_user(
        &mut self,
        user: &str,
        code: CloseCode,
        reason: &str,
        now: Now,
        out: &mut Vec<Action>,
    ) -> Result<usize, AppRefusal> {
        let name = names::user_name(user, MAX_USER_CHARS).map_err(|e| AppRefusal::BadName {
            field: "userId",
            why: e.to_string(),
        })?;
        let mut clients = self.clients_of_sub(name.shown());
        if let Some(holder) = self.claims.holder(name.key()) {
            if !clients.contains(&holder) {
                clients.push(holder);
            }
        }
        let reason: Cow<'static, str> = Cow::Owned(reason.to_owned());
        let mut closed = 0;
        for client in clients {
            let config = &self.config;
            let Some(state) = self
                .participants
                .get_or_insert_with(client, || Participant::new(config, now))
            else {
                continue;
            };
            if state.closing {
                continue;
            }
            state.closing = true;
            let seat = state.take_seat();
            out.push(Action::Close {
                client,
                code,
                reason: reason.clone(),
            });
            closed += 1;
            if let Some((joined, token)) = seat {
                self.depart(client, joined, token, true, now, out);
            }
        }
        self.rooms.evict_excess(self.config.max_empty_rooms);
        Ok(closed)
    }

    /// `content` is not empty and within `--max-content`.
    fn check_content(&self, content: &str) -> Result<(), AppRefusal> {
        if content.is_empty() {
            return Err(AppRefusal::EmptyContent);
        }
        let max_chars = self.config.max_content_chars;
        if content.len() > max_chars && content.chars().nth(max_chars).is_some() {
            return Err(AppRefusal::ContentTooLong { max_chars });
        }
        Ok(())
    }
}

/// The sender an application's message shows: `from` as a user name (NFKC), `system` as it is, or
/// [`APPLICATION_SENDER`] when `None`.
fn sender(from: Option<&str>) -> Result<Rc<str>, AppRefusal> {
    match from {
        None => Ok(Rc::from(APPLICATION_SENDER)),
        Some(APPLICATION_SENDER) => Ok(Rc::from(APPLICATION_SENDER)),
        Some(from) => names::user_name(from, MAX_USER_CHARS)
            .map(|name| name.shown().clone())
            .map_err(|e| AppRefusal::BadName {
                field: "from",
                why: e.to_string(),
            }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::chat::{ChatConfig, ClientId};

    const T0: u64 = 1_767_225_600_000;

    fn now() -> Now {
        Now {
            unix_ms: T0,
            mono_ms: 0,
        }
    }

    fn chat() -> Chat {
        Chat::new(ChatConfig::default(), [9; 32])
    }

    /// Sends `frame` from `client` and returns the actions.
    fn text(chat: &mut Chat, client: ClientId, frame: Value) -> Vec<Action> {
        let mut out = Vec::new();
        chat.handle_text(client, &frame.to_string(), now(), &mut out);
        out
    }

    fn join(chat: &mut Chat, client: ClientId, user: &str, room: &str, v: u64) -> Vec<Action> {
        text(
            chat,
            client,
            json!({"type": "join", "userId": user, "room": room, "v": v}),
        )
    }

    /// The one broadcast among `actions`: its V2 and V1 payloads, parsed, and its seq.
    fn broadcast(actions: &[Action]) -> (Value, Value, Option<u64>) {
        let found: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Broadcast {
                    payload,
                    v1_payload,
                    seq,
                    ..
                } => Some((
                    serde_json::from_str(payload).unwrap(),
                    v1_payload
                        .as_ref()
                        .map_or(Value::Null, |p| serde_json::from_str(p).unwrap()),
                    *seq,
                )),
                _ => None,
            })
            .collect();
        assert_eq!(found.len(), 1, "{actions:?}");
        found.into_iter().next().unwrap()
    }

    #[test]
    fn a_publication_is_a_chat_message_from_system_numbered_in_the_room() {
        let mut chat = chat();
        join(&mut chat, 1, "ann", "lobby", 2);
        let mut out = Vec::new();
        let seq = chat.publish_from_app("lobby", "<b>news</b>", None, now(), &mut out);
        assert_eq!(seq, Ok(1));
        let (v2, v1, seq) = broadcast(&out);
        assert_eq!(
            v2,
            json!({"type": "chat", "room": "lobby", "seq": 1, "from": "system", "content": "<b>news</b>", "timestamp": T0})
        );
        assert_eq!(v1["content"], "&lt;b&gt;news&lt;/b&gt;");
        assert_eq!(seq, Some(1));
        let after = text(&mut chat, 1, json!({"type": "chat", "content": "hi"}));
        assert_eq!(
            broadcast(&after).0["seq"],
            2,
            "members' messages follow in order"
        );
    }

    #[test]
    fn a_publication_into_an_empty_room_is_kept_for_those_who_join_later() {
        let mut chat = chat();
        let mut out = Vec::new();
        assert_eq!(
            chat.publish_from_app("news", "first", Some("bot"), now(), &mut out),
            Ok(1)
        );
        let joined = join(&mut chat, 1, "ann", "news", 2);
        let welcome: Value = joined
            .iter()
            .find_map(|a| match a {
                Action::Send { payload, .. } if payload.contains("\"joined\"") => {
                    serde_json::from_str(payload).ok()
                }
                _ => None,
            })
            .expect("joined");
        assert_eq!(welcome["seq"], 1, "the room kept the publication");
        let again = text(
            &mut chat,
            1,
            json!({"type": "join", "userId": "ann", "room": "news", "v": 2,
                   "since": {"epoch": welcome["epoch"], "seq": 0}}),
        );
        let replayed: Vec<&crate::chat::SharedText> = again
            .iter()
            .filter_map(|a| match a {
                Action::Replay { texts, .. } => Some(texts),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(replayed.len(), 1);
        let message: Value = serde_json::from_slice(replayed[0].as_bytes()).expect("stored JSON");
        assert_eq!(message["from"], "bot");
        assert_eq!(message["content"], "first");
    }

    #[test]
    fn a_publication_with_a_bad_room_sender_or_content_is_refused_and_changes_nothing() {
        let mut chat = chat();
        let mut out = Vec::new();
        let long = "x".repeat(4001);
        for (room, content, from) in [
            ("", "x", None),
            ("lo\u{0}bby", "x", None),
            ("lobby", "", None),
            ("lobby", long.as_str(), None),
            ("lobby", "x", Some("a\"b")),
            ("lobby", "x", Some("")),
        ] {
            assert!(
                chat.publish_from_app(room, content, from, now(), &mut out)
                    .is_err(),
                "{room:?} {from:?}"
            );
        }
        assert!(out.is_empty());
        assert_eq!(chat.room_count(), 0);
        assert!(chat.rooms().is_empty());
    }

    #[test]
    fn a_dm_from_the_application_reaches_the_holder_in_its_dialect() {
        let mut chat = chat();
        join(&mut chat, 1, "ann", "lobby", 2);
        join(&mut chat, 2, "vic", "lobby", 1);
        let mut out = Vec::new();
        assert_eq!(
            chat.dm_from_app("ann", "psst", Some("support"), now(), &mut out),
            Ok(true)
        );
        let [Action::Send { to: 1, payload }] = out.as_slice() else {
            panic!("{out:?}");
        };
        assert_eq!(
            serde_json::from_str::<Value>(payload).unwrap(),
            json!({"type": "dm", "from": "support", "to": "ann", "content": "psst", "timestamp": T0})
        );
        out.clear();
        assert_eq!(
            chat.dm_from_app("vic", "<i>", None, now(), &mut out),
            Ok(true)
        );
        let Some(Action::Send { to: 2, payload }) = out.first() else {
            panic!("{out:?}");
        };
        let v1: Value = serde_json::from_str(payload).unwrap();
        assert_eq!(v1["private"], true);
        assert_eq!(v1["content"], "&lt;i&gt;");
        assert_eq!(v1["from"], "system");
    }

    #[test]
    fn a_dm_to_a_name_nobody_holds_is_not_delivered() {
        let mut chat = chat();
        let mut out = Vec::new();
        assert_eq!(
            chat.dm_from_app("ghost", "hello", None, now(), &mut out),
            Ok(false)
        );
        assert!(out.is_empty());
        assert!(chat
            .dm_from_app("", "hello", None, now(), &mut out)
            .is_err());
    }

    #[test]
    fn rooms_and_members_are_listed() {
        let mut chat = chat();
        join(&mut chat, 1, "ann", "lobby", 2);
        join(&mut chat, 2, "bob", "lobby", 2);
        join(&mut chat, 3, "cyd", "ops", 2);
        let mut rooms = chat.rooms();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(
            rooms,
            [
                RoomSummary {
                    name: Rc::from("lobby"),
                    members: 2
                },
                RoomSummary {
                    name: Rc::from("ops"),
                    members: 1
                },
            ]
        );
        let mut members = chat.room_members("lobby");
        members.sort();
        assert_eq!(members, [Rc::from("ann"), Rc::from("bob")]);
        assert!(chat.room_members("nowhere").is_empty());
    }

    #[test]
    fn disconnecting_a_user_closes_its_connection_with_the_code_and_tells_the_room() {
        let mut chat = chat();
        join(&mut chat, 1, "ann", "lobby", 2);
        join(&mut chat, 2, "bob", "lobby", 2);
        let mut out = Vec::new();
        let closed = chat.disconnect_user("ann", CloseCode::new(4005), "bye", now(), &mut out);
        assert_eq!(closed, Ok(1));
        assert_eq!(
            out.first(),
            Some(&Action::Close {
                client: 1,
                code: CloseCode::new(4005),
                reason: Cow::Owned("bye".to_owned())
            })
        );
        assert!(
            out.iter().any(|a| matches!(a, Action::Broadcast { payload, .. } if payload.contains("\"left\":\"ann\""))),
            "{out:?}"
        );
        assert_eq!(chat.member_count(), 1);
        assert!(
            text(&mut chat, 1, json!({"type": "ping"})).is_empty(),
            "its later frames are ignored"
        );
        out.clear();
        assert_eq!(
            chat.disconnect_user("ann", CloseCode::new(4005), "again", now(), &mut out),
            Ok(0)
        );
        assert_eq!(
            chat.disconnect_user("nobody", CloseCode::new(4005), "x", now(), &mut out),
            Ok(0)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn disconnecting_a_user_closes_its_connections_that_showed_a_token_but_did_not_join() {
        use crate::auth::tests::{hs256, SECRET};
        use crate::auth::Verifier;
        let mut chat = chat();
        chat.require_tokens(Verifier::hs256(SECRET).unwrap(), 10_000);
        let token = hs256(SECRET, &json!({"sub": "ann", "exp": T0 / 1000 + 60}));
        let mut out = Vec::new();
        chat.connect(1, Some(&token), now(), &mut out);
        chat.connect(2, Some(&token), now(), &mut out);
        join(&mut chat, 2, "ann", "lobby", 2);
        out.clear();
        let closed = chat.disconnect_user("ann", CloseCode::new(4100), "banned", now(), &mut out);
        assert_eq!(closed, Ok(2));
        let mut clients: Vec<ClientId> = out
            .iter()
            .filter_map(|a| match a {
                Action::Close { client, .. } => Some(*client),
                _ => None,
            })
            .collect();
        clients.sort_unstable();
        assert_eq!(clients, [1, 2]);
    }

    #[test]
    fn a_node_of_a_cluster_does_not_number_the_applications_messages_itself() {
        let mut chat = Chat::new(
            ChatConfig {
                relayed: true,
                ..ChatConfig::default()
            },
            [9; 32],
        );
        let mut out = Vec::new();
        assert_eq!(
            chat.publish_from_app("lobby", "news", None, now(), &mut out),
            Err(AppRefusal::Relayed)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn a_relayed_publication_is_the_chat_message_the_engine_completes_with_a_seq() {
        let mut chat = chat();
        let publication = chat
            .relayed_publication("lobby", "news", Some("bob"), now())
            .unwrap();
        assert_eq!(&*publication.room, "lobby");
        let text = format!(
            "{}7{}",
            crate::chat::chat_message_head("lobby"),
            publication.tail
        );
        let message: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            message,
            json!({"type": "chat", "room": "lobby", "seq": 7, "from": "bob", "content": "news", "timestamp": T0})
        );
    }

    #[test]
    fn a_relayed_publication_is_judged_like_a_local_one() {
        let mut chat = chat();
        assert_eq!(
            chat.relayed_publication("lobby", "", None, now()),
            Err(AppRefusal::EmptyContent)
        );
        assert!(matches!(
            chat.relayed_publication("", "news", None, now()),
            Err(AppRefusal::BadName { field: "room", .. })
        ));
    }

    #[test]
    fn a_relayed_app_dm_is_read_by_the_recipients_node_as_a_dm_from_the_application() {
        let mut sender_node = chat();
        let dm = sender_node
            .relayed_app_dm("bob", "hello", None, now())
            .unwrap()
            .expect("bob is not here");
        let mut recipient_node = chat();
        join(&mut recipient_node, 1, "bob", "lobby", 2);
        let mut out = Vec::new();
        recipient_node.deliver_relayed_dm(&dm.text, &mut out);
        let [Action::Send { to: 1, payload }] = &out[..] else {
            panic!("{out:?}");
        };
        let message: Value = serde_json::from_str(payload).unwrap();
        assert_eq!(message["type"], "dm");
        assert_eq!(message["from"], APPLICATION_SENDER);
        assert_eq!(message["content"], "hello");
    }

    #[test]
    fn an_app_dm_to_a_name_held_here_is_not_relayed() {
        let mut chat = chat();
        join(&mut chat, 1, "bob", "lobby", 2);
        assert_eq!(chat.relayed_app_dm("bob", "hello", None, now()), Ok(None));
    }

    #[test]
    fn a_room_name_is_looked_up_as_a_join_keeps_it_and_a_bad_one_is_none() {
        let chat = chat();
        assert_eq!(chat.room_name_as_kept("lobby").as_deref(), Some("lobby"));
        assert_eq!(
            chat.room_name_as_kept("ｌｏｂｂｙ").as_deref(),
            Some("lobby")
        );
        assert_eq!(chat.room_name_as_kept(""), None);
    }
}
