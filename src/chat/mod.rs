//! The chat state machine: rooms, names, history and rate limits, driven by text frames and disconnects.
//!
//! This module owns the public interface the server calls ([`Chat`], [`Action`] and their companions) and the
//! per-connection bookkeeping. It is pure: it must not touch sockets, read a clock or draw randomness of its own.
//! Time arrives as [`Now`] and every unguessable id is derived from the secret given to [`Chat::new`]. It never
//! panics on network input; everything it wants done is pushed, in order, as [`Action`]s.
//!
//! The wire protocol it implements is `docs/protocol.md`.

mod app;
mod by_client;
mod claims;
mod grants;
mod handlers;
mod history;
// Not called yet: request.rs and the handlers take it up when the chat types are renamed.
mod names;
mod rate;
mod request;
mod room;
mod session;
mod wire;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::rc::Rc;

use crate::id_hash::IdMap;
use crate::protocol::CloseCode;
pub use app::{AppDm, AppPublication, AppRefusal, RoomSummary, APPLICATION_SENDER};
use by_client::ByClient;
use claims::Claims;
use grants::{Admission, Deferred, Grants};
pub use grants::{TokenCheck, DEFAULT_TOKEN_CACHE_ENTRIES};
pub use history::SharedText;
use names::Name;
use rate::{ByteBucket, TokenBucket, Verdict};
use request::Request;
use room::Rooms;
use session::IdSource;
use wire::{ErrorCode, Out};

/// The server's key for one client (a WebSocket on the chat route). The server calls [`Chat::disconnect`] before it
/// reuses one. Keys are small and reused (the server's slab keys): the chat keeps a slot per key up to the largest.
pub type ClientId = usize;

/// Which of the two JSON dialects a client speaks, decided by its last `join`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// The original page's dialect: the seed articles' `index.html`, whose `join` has no `v`. It is sent only the
    /// shapes that page renders, with user-controlled fields HTML-escaped (it puts them into `innerHTML`), and
    /// errors as `system` lines. A client counts as V1 until it joins with `v: 2`.
    #[default]
    V1,
    /// roomcast's own dialect, announced by `"v": 2` (or more) in `join`: structured errors, `joined`, `presence`,
    /// `dm`, and replay.
    V2,
}

/// Names one room for the lifetime of the process. Ids are never reused, so an action aimed at a room that has
/// since been forgotten reaches nobody rather than a newer room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RoomId(u64);

impl RoomId {
    /// A room id for the loop's unit tests, which need one without a chat.
    #[cfg(test)]
    pub(crate) const fn for_test(id: u64) -> RoomId {
        RoomId(id)
    }
}

/// The time of an event, as read by the caller.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// Wall-clock milliseconds since the Unix epoch: the `timestamp` of messages.
    pub unix_ms: u64,
    /// Milliseconds on a monotonic clock: drives the rate limiter.
    pub mono_ms: u64,
}

/// Tunable limits of the chat.
#[derive(Clone, Debug)]
pub struct ChatConfig {
    /// Chat messages kept per room for replay.
    pub history_len: usize,
    /// Longest accepted `content`, in Unicode scalar values.
    pub max_content_chars: usize,
    /// Frames per second a connection may sustain.
    pub rate_per_sec: f64,
    /// Frames a connection may send at once after being quiet.
    pub rate_burst: u32,
    /// Frames dropped in a row, with no token in between, before the connection is closed with 1008.
    pub abuse_drops: u32,
    /// Rooms with nobody in them whose history is still kept; beyond it the longest-empty is forgotten.
    pub max_empty_rooms: usize,
    /// Bytes of history all rooms together keep, a message's V1 form included when it has one; beyond it the least
    /// recently active room's oldest messages go.
    pub max_history_bytes: usize,
    /// Bytes of history one join (or one catch-up) may be resent, counted in the form its dialect is sent; beyond it
    /// the newest that fit, as a gap.
    pub max_replay_bytes: usize,
    /// How long a freed user name stays reserved for the session that held it, in milliseconds (0: freed at once).
    pub name_grace_ms: u64,
    /// Joins per second a connection may sustain, on top of the frame rate: taking names is rate-limited on its own.
    pub join_rate_per_sec: f64,
    /// Joins a connection may send at once after being quiet.
    pub join_burst: u32,
    /// Bytes of chat and DMs per second a connection may sustain, counted as sent to a recipient (0: unlimited).
    pub rate_bytes_per_sec: f64,
    /// Bytes of chat and DMs a connection may send at once.
    pub rate_burst_bytes: u32,
    /// Bytes of chat per second a room may carry, from all its members together: the volume every member's
    /// downlink must absorb (0: unlimited).
    pub room_rate_bytes_per_sec: f64,
    /// Bytes of chat a room may carry at once.
    pub room_burst_bytes: u32,
    /// The most members one room may hold; a join beyond gets `room_full`.
    pub max_room_members: usize,
    /// A cluster engine numbers and carries chat messages (`--redis`): a chat message is handed to it as
    /// [`Action::Publish`] instead of being numbered and broadcast here, and comes back through
    /// [`Chat::deliver_published`], on this node as on every other.
    pub relayed: bool,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            history_len: 100,
            max_content_chars: 4000,
            rate_per_sec: 20.0,
            rate_burst: 40,
            abuse_drops: 100,
            max_empty_rooms: 1000,
            max_history_bytes: 64 * 1024 * 1024,
            max_replay_bytes: 256 * 1024,
            name_grace_ms: 60_000,
            join_rate_per_sec: 1.0,
            join_burst: 5,
            rate_bytes_per_sec: 16.0 * 1024.0,
            rate_burst_bytes: 64 * 1024,
            room_rate_bytes_per_sec: 64.0 * 1024.0,
            room_burst_bytes: 256 * 1024,
            max_room_members: 5000,
            relayed: false,
        }
    }
}

/// Something the server must do, in the order pushed, right after the call that pushed it returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this JSON text to one connection.
    Send {
        /// The recipient.
        to: ClientId,
        /// One JSON object, ready to go in a text frame.
        payload: Rc<str>,
    },
    /// Send to every current member of `room` except `except`. V2 members get `payload`; V1 members get
    /// `v1_payload` when it is Some (often the same Rc), nothing when None.
    Broadcast {
        /// The room whose membership, at the end of the call, receives this.
        room: RoomId,
        /// A member to skip, usually the one the message is about.
        except: Option<ClientId>,
        /// What v2 members get.
        payload: Rc<str>,
        /// What V1 members get, if anything.
        v1_payload: Option<Rc<str>>,
        /// The seq of a chat message (kept in the room's history, so a member that misses it can be caught up
        /// with [`Chat::catch_up`]); `None` for notices.
        seq: Option<u64>,
    },
    /// Send these stored chat messages to one client, in order, as they are: slices of a room's history, in the form
    /// the client's dialect was sent them live, shared with it rather than copied (a replay after `since`, or the
    /// catch-up of a client that fell behind).
    Replay {
        /// The recipient.
        to: ClientId,
        /// The messages' texts, each one JSON object ready to go in a text frame.
        texts: Vec<SharedText>,
    },
    /// With [`ChatConfig::relayed`]: hand this chat message to the cluster engine, which numbers it in its room and
    /// gives it back to every node through [`Chat::deliver_published`]. Its text is
    /// [`chat_message_head`]`(room)`, then the seq in decimal, then `tail`.
    Publish {
        /// The sender, to tell if the engine cannot take the message ([`Chat::refuse_unavailable`]).
        client: ClientId,
        /// The room's name.
        room: Rc<str>,
        /// The message's JSON after its seq: `,"from":...,"content":...,"timestamp":...}`.
        tail: Rc<str>,
    },
    /// With [`ChatConfig::relayed`]: ask the cluster engine for the name with `key` across the cluster, and for
    /// the state of `room`, for `client`'s join, which waits for [`Chat::name_claimed`].
    ClaimName {
        /// The joiner.
        client: ClientId,
        /// The name's key (its confusable skeleton, `names.rs`).
        key: Rc<str>,
        /// The room it joins.
        room: Rc<str>,
        /// The session token the joiner will hold the name with.
        token: Rc<str>,
        /// The session token the joiner showed: it takes the name from another node that holds it with that token
        /// (which then closes its connection with 4001, [`Chat::replaced_elsewhere`]).
        shown: Option<Rc<str>>,
    },
    /// With [`ChatConfig::relayed`]: nobody here holds the name with `key` any more; across the cluster it stays
    /// reserved for `grace_ms` (freed at once with 0), then is free.
    ReleaseName {
        /// The name's key.
        key: Rc<str>,
        /// How long it stays reserved.
        grace_ms: u64,
    },
    /// With [`ChatConfig::relayed`]: a DM to a name nobody here holds. The engine hands `text` to the node holding
    /// `to_key`, whose chat delivers it ([`Chat::deliver_relayed_dm`]); if no node holds it, the sender is told
    /// ([`Chat::refuse_not_online`]). `copy` is the sender's own copy, to be sent once the DM is on its way.
    RelayDm {
        /// The sender.
        client: ClientId,
        /// The key of the recipient's name.
        to_key: Rc<str>,
        /// The DM as the recipient's node reads it.
        text: Rc<str>,
        /// The sender's copy.
        copy: Rc<str>,
    },
    /// With [`ChatConfig::relayed`]: `user` joined (or left) `room` on this node; the other nodes are told, and
    /// pass it on to their members ([`Chat::remote_presence`]).
    Presence {
        /// The room.
        room: Rc<str>,
        /// The member's name, as shown.
        user: Rc<str>,
        /// Joined, or left.
        joined: bool,
    },
    /// Close this client's WebSocket with a close code (1008 abuse, 4001 replaced, 4003 unauthorized, 4004 token
    /// expired, or the application's through the server API).
    Close {
        /// The client to close.
        client: ClientId,
        /// The close code for the Close frame.
        code: CloseCode,
        /// The close reason for the Close frame: at most 123 bytes of UTF-8 (RFC 6455 5.5: a control frame's
        /// payload is at most 125 bytes, two of them the code).
        reason: Cow<'static, str>,
    },
    /// With [`Chat::check_tokens_elsewhere`]: check the signature of `token` for `client` (with
    /// `auth::Verifier::check_signature`, off the caller's loop) and hand the outcome back through
    /// [`Chat::token_checked`]. Until then `client` waits ([`Chat::awaits_token_check`]).
    CheckToken {
        /// The connection whose request carried the token.
        client: ClientId,
        /// The token, as it came.
        token: Box<str>,
        /// The room the request asks to join, as it came; `None` for a token shown in the URL or in a `refresh`.
        /// Checks for the same room may be answered together, so that their arrivals reach the room's members in
        /// one write each (`server/verify.rs`).
        room: Option<Box<str>>,
    },
}

/// What became of a chat message a cluster engine handed back ([`Chat::deliver_published`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Broadcast to the room's members here. `gap` is set when seqs between the latest delivered and this one
    /// never arrived; the members were then sent `lagged` first.
    Delivered {
        /// Messages before this one are missing.
        gap: bool,
    },
    /// Nobody here is in that room.
    NotHere,
    /// Its seq is not after the room's latest: the room has it already (from the engine's answer to a join).
    Stale,
    /// It came in another epoch than the room's here: the engine's numbering began again (it lost the room's
    /// data). The room took the new epoch and dropped its history here, its members were sent `lagged`, and the
    /// message was delivered.
    Restarted,
    /// Not a chat message of the shape [`Action::Publish`] makes.
    Malformed,
}

/// A room as the cluster engine has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomState {
    /// The epoch of its numbering.
    pub epoch: String,
    /// Its latest seq.
    pub seq: u64,
    /// Its latest messages, oldest first, each as clients receive it: all it keeps, or those after the seq this
    /// node knew when the node's epoch was the room's.
    pub messages: Vec<String>,
    /// The names of its members on other nodes.
    pub members_elsewhere: Vec<String>,
    /// The name was taken from another node with the session token the joiner showed.
    pub reclaimed: bool,
}

/// How the cluster engine answered a [`Action::ClaimName`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimAnswer {
    /// The name is this node's now; the room joined is as given.
    Granted(RoomState),
    /// Another node holds the name, or keeps it reserved.
    Taken,
    /// The engine could not be asked.
    Unavailable,
}

/// What every chat message of room `room` says before its seq: `{"type":"chat","room":"<room>","seq":`.
pub fn chat_message_head(room: &str) -> String {
    wire::encode_chat_head(room)
}

/// One member of a room, as the server needs it to deliver a [`Action::Broadcast`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member.
    pub client: ClientId,
    /// The dialect it joined with, which picks the form of a broadcast it gets.
    pub dialect: Dialect,
}

/// Close code for a client flooding far past its rate limit (policy violation).
const CLOSE_ABUSE: CloseCode = CloseCode::POLICY_VIOLATION;
/// Close code for a client whose name a newer connection reclaimed with its session token.
const CLOSE_REPLACED: CloseCode = CloseCode::new(4001);
/// The message of a `name_taken` error for a name another node holds.
const NAME_TAKEN_ELSEWHERE: &str = "another connection holds this userId";
/// The message of an `unavailable` error.
const UNAVAILABLE: &str = "the cluster cannot carry messages right now; the message was not sent";
/// The message of a `rate_limited` error for a frame over the frame rate.
const RATE_LIMITED: &str = "over the rate limit; the message was dropped";
/// The message of a `rate_limited` error for a message over its sender's byte rate.
const BYTE_RATE_LIMITED: &str = "over the byte rate limit; the message was dropped";
/// The message of a `rate_limited` error for a message over its room's byte rate.
const ROOM_RATE_LIMITED: &str = "the room is over its volume limit; the message was dropped";
/// The message of a `lagged` error.
const LAGGED: &str =
    "the connection fell behind and some messages were lost; join again with since to see what the history holds";
/// The message of a `rate_limited` error for a `join` over the join rate.
const JOIN_RATE_LIMITED: &str = "too many joins; wait a moment and join again";

/// Arrivals and departures announced one by one in a room, per loop turn; the rest are summed up at its end.
const ANNOUNCED_PER_TURN: u32 = 16;

/// A room's arrivals and departures during one loop turn.
#[derive(Clone, Copy, Debug, Default)]
struct Storm {
    announced: u32,
    unannounced_joins: u32,
    unannounced_leaves: u32,
}

/// What a client holds while it is in a room.
struct Joined {
    /// The name it holds, as shown and as compared.
    user: Name,
    /// The room it is in.
    room: RoomId,
    /// Its position in the room's member list, kept current as others leave. 32 bits, as this is kept for every
    /// member: a room of more (never seen) has its later positions saturate, and `Rooms::unseat` looks a member
    /// up when its position is wrong.
    index: u32,
    /// The dialect it joined with.
    dialect: Dialect,
}

/// Everything the chat knows about one client that has sent at least one frame.
struct Participant {
    /// Its rate limiter: every frame is charged.
    bucket: TokenBucket,
    /// Frames `bucket` dropped in a row, since it last had a token.
    drops: u32,
    /// Its join limiter: every `join` is charged again here.
    joins: TokenBucket,
    /// Its byte limiter: the bytes of every chat message and DM it sends.
    bytes: ByteBucket,
    /// Its room and name, once it has joined.
    joined: Option<Joined>,
    /// Set once a close was asked for: later frames are ignored until [`Chat::disconnect`].
    closing: bool,
    /// The dialect of its last successful join, kept after it leaves; V1 until then, so that errors are sent in
    /// the form the original page can show.
    dialect: Dialect,
    /// The session token of its last name: while it is in a room, the token that lets a newer connection reclaim
    /// the name it holds; kept after it leaves (for as long as the connection lasts), so the same connection may
    /// take that name back during its grace period without showing the token again.
    session: Option<Rc<str>>,
}

impl Participant {
    /// A client seen for the first time: full buckets, not in a room.
    fn new(config: &ChatConfig, now: Now) -> Self {
        Participant {
            bucket: TokenBucket::new(config.rate_burst, now.mono_ms),
            drops: 0,
            joins: TokenBucket::new(config.join_burst, now.mono_ms),
            bytes: ByteBucket::new(config.rate_burst_bytes, now.mono_ms),
            joined: None,
            closing: false,
            dialect: Dialect::V1,
            session: None,
        }
    }

    /// The session token of the name it holds, if it is in a room.
    fn held_token(&self) -> Option<Rc<str>> {
        self.joined.as_ref().and(self.session.clone())
    }

    /// Takes it out of its room's bookkeeping: its seat, and the token it held the name with.
    fn take_seat(&mut self) -> Option<(Joined, Option<Rc<str>>)> {
        let joined = self.joined.take()?;
        Some((joined, self.session.clone()))
    }
}

/// Messages whose bytes never change, serialised once.
struct Canned {
    pong: Rc<str>,
    rate_limited: Rc<str>,
    rate_limited_v1: Rc<str>,
}

/// The whole chat: every room, every joined name, every connection's limiter.
pub struct Chat {
    config: ChatConfig,
    ids: IdSource,
    rooms: Rooms,
    participants: ByClient<Participant>,
    /// Who holds each user name, and which freed names are reserved.
    claims: Claims,
    /// With [`ChatConfig::relayed`]: the joins waiting for the cluster engine to grant their names, each with the
    /// session token it was asked for with. Kept apart from `Participant`: a join waits one Redis round trip, and
    /// every connection would pay for the field.
    claiming: IdMap<ClientId, (request::JoinRequest<'static>, Rc<str>)>,
    /// This loop turn's arrivals and departures, by room.
    storms: IdMap<RoomId, Storm>,
    canned: Canned,
    /// Where chat messages are serialised before they get their shared `Rc<str>`.
    scratch: String,
    /// Errors sent to clients since the start, by `ErrorCode::index`.
    refusals: [u64; ErrorCode::ALL.len()],
    /// What each connection's token allows (`grants.rs`); empty in open mode.
    grants: Grants,
}

impl Chat {
    /// A chat with no rooms. `secret` seeds every session token and epoch: it must be random and fresh.
    pub fn new(config: ChatConfig, secret: [u8; 32]) -> Chat {
        let canned = Canned {
            pong: wire::encode(&Out::Pong),
            rate_limited: encode_error(ErrorCode::RateLimited, RATE_LIMITED, Dialect::V2),
            rate_limited_v1: encode_error(ErrorCode::RateLimited, RATE_LIMITED, Dialect::V1),
        };
        let mut rooms = Rooms::new();
        if config.relayed {
            rooms.track_occupancy();
        }
        Chat {
            config,
            ids: IdSource::new(secret),
            rooms,
            participants: ByClient::default(),
            claims: Claims::default(),
            claiming: IdMap::default(),
            storms: IdMap::default(),
            canned,
            scratch: String::new(),
            refusals: [0; ErrorCode::ALL.len()],
            grants: Grants::new(),
        }
    }

    /// A text message arrived from `client` (a WebSocket on the chat route). Push what must happen into `out`, in
    /// order.
    pub fn handle_text(&mut self, client: ClientId, text: &str, now: Now, out: &mut Vec<Action>) {
        let config = &self.config;
        let Some(state) = self
            .participants
            .get_or_insert_with(client, || Participant::new(config, now))
        else {
            return;
        };
        if state.closing {
            return;
        }
        let verdict = state.bucket.charge(
            &mut state.drops,
            now.mono_ms,
            config.rate_per_sec,
            config.rate_burst,
            config.abuse_drops,
        );
        match verdict {
            Verdict::Pass => {}
            Verdict::Drop => {
                self.refusals[ErrorCode::RateLimited.index()] += 1;
                let canned = if state.dialect == Dialect::V2 {
                    &self.canned.rate_limited
                } else {
                    &self.canned.rate_limited_v1
                };
                out.push(Action::Send {
                    to: client,
                    payload: canned.clone(),
                });
                return;
            }
            Verdict::Abuse => {
                state.closing = true;
                log::debug!("closing connection {client}: rate limit abuse");
                out.push(Action::Close {
                    client,
                    code: CLOSE_ABUSE,
                    reason: Cow::Borrowed("rate limit abuse"),
                });
                return;
            }
        }
        match request::parse(text, self.config.max_content_chars) {
            Ok(Request::Join(join)) => {
                let joins =
                    state
                        .joins
                        .take(now.mono_ms, config.join_rate_per_sec, config.join_burst);
                if joins {
                    match self.admit_join(client, &join, now, out) {
                        Admission::Admitted => self.join(client, join, None, now, out),
                        Admission::Refused => {}
                        Admission::Deferred(digest) => {
                            self.defer(client, digest, Deferred::Join(join.into_owned()))
                        }
                    }
                } else {
                    let dialect = join.dialect;
                    self.send_error(
                        client,
                        ErrorCode::RateLimited,
                        JOIN_RATE_LIMITED,
                        dialect,
                        out,
                    )
                }
            }
            Ok(Request::Chat { content }) => self.chat(client, &content, now, out),
            Ok(Request::Dm { to, content }) => {
                if self.admit_dm(client, out) {
                    self.dm(client, &to, &content, now, out)
                }
            }
            Ok(Request::Leave) => self.leave(client, now, out),
            Ok(Request::Ping) => out.push(Action::Send {
                to: client,
                payload: self.canned.pong.clone(),
            }),
            Ok(Request::Refresh { token }) => self.refresh(client, &token, now, out),
            Err(rejection) => self.send_error(
                client,
                rejection.code,
                &rejection.message,
                rejection.dialect,
                out,
            ),
        }
        self.rooms.evict_excess(self.config.max_empty_rooms);
    }

    /// `client` is gone (closed for any reason) at `now`. Leaves its room (others told); its name stays reserved
    /// for its session during the grace period.
    pub fn disconnect(&mut self, client: ClientId, now: Now, out: &mut Vec<Action>) {
        self.forget_grant(client);
        self.claiming.remove(&client);
        let Some(mut state) = self.participants.remove(&client) else {
            return;
        };
        if let Some((joined, token)) = state.take_seat() {
            self.depart(client, joined, token, true, now, out);
        }
        self.rooms.evict_excess(self.config.max_empty_rooms);
    }

    /// The current members of a room, for the server to resolve Broadcast; O(1) to start, no allocation.
    pub fn members(&self, room: RoomId) -> impl Iterator<Item = Member> + '_ {
        self.rooms.seats(room).iter().map(|seat| Member {
            client: seat.client(),
            dialect: seat.dialect,
        })
    }

    /// How many errors of each code (`rate_limited`, `name_taken`, ...) clients have been sent since the start.
    pub fn refusals(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ErrorCode::ALL
            .iter()
            .map(|code| (code.as_str(), self.refusals[code.index()]))
    }

    /// Rooms with at least one member.
    pub fn room_count(&self) -> usize {
        self.rooms.occupied()
    }

    /// Connections currently in a room.
    pub fn member_count(&self) -> usize {
        self.rooms.seated()
    }

    /// `client` fell behind in `room` and was not sent its chat messages from seq `from` on: send them now, from
    /// the history, as far as it still holds them and `max_replay_bytes` allows (counted in the form its dialect
    /// is sent), and say so (`lagged`) when some are lost. Nothing if the client is no longer in that room.
    pub fn catch_up(&mut self, client: ClientId, room: RoomId, from: u64, out: &mut Vec<Action>) {
        let Some(joined) = self
            .participants
            .get(&client)
            .and_then(|p| p.joined.as_ref())
        else {
            return;
        };
        if joined.room != room {
            return;
        }
        let dialect = joined.dialect;
        let Some(history) = self.rooms.get(room) else {
            return;
        };
        let start = history.position_after(from.saturating_sub(1));
        let kept_from = history.oldest_kept_seq();
        let capped = history.start_within(start, self.config.max_replay_bytes, dialect);
        if capped > start || kept_from.is_some_and(|oldest| oldest > from) {
            self.send_error(client, ErrorCode::Lagged, LAGGED, dialect, out);
        }
        self.send_history(client, room, capped, dialect, out);
    }

    /// Bytes of chat history every room holds together.
    pub fn history_bytes(&self) -> usize {
        self.rooms.history_bytes()
    }

    /// With [`ChatConfig::relayed`]: a chat message the cluster engine numbered and handed back (`text`, as every
    /// member is sent it), in the room's numbering `epoch`. Delivered to the room's members here, in both dialects,
    /// and kept in its history. Another epoch than the room's here means the numbering began again (the engine lost
    /// the room's data): the room takes it, and drops its history ([`Delivery::Restarted`]).
    pub fn deliver_published(
        &mut self,
        epoch: &str,
        text: &str,
        out: &mut Vec<Action>,
    ) -> Delivery {
        let Some(published) = wire::Published::read(text) else {
            return Delivery::Malformed;
        };
        if published.kind != "chat" {
            return Delivery::Malformed;
        }
        let Some(room_id) = self.rooms.lookup(&published.room) else {
            return Delivery::NotHere;
        };
        let Some(room) = self.rooms.get(room_id) else {
            return Delivery::NotHere;
        };
        if room.seats().is_empty() {
            return Delivery::NotHere;
        }
        let restarted = &**room.epoch() != epoch;
        if restarted {
            self.rooms.restart(room_id, Rc::from(epoch));
        }
        let latest = self.rooms.get(room_id).map_or(0, |room| room.latest_seq());
        if published.seq <= latest {
            return Delivery::Stale;
        }
        let gap = published.seq > latest + 1;
        if gap || restarted {
            self.tell_lagged(room_id, None, out);
        }
        let (payload, v1_payload) = self.keep_published(room_id, text, &published);
        out.push(Action::Broadcast {
            room: room_id,
            except: None,
            payload,
            v1_payload: Some(v1_payload),
            seq: Some(published.seq),
        });
        if restarted {
            Delivery::Restarted
        } else {
            Delivery::Delivered { gap }
        }
    }

    /// Tells every member of `room` here, but `except`, that it missed messages it cannot get any more (a gap the
    /// engine no longer covers, or a numbering that began again): `lagged`, as a connection caught up from too short
    /// a history is told, so that it rejoins with `since` and learns what the room still holds.
    fn tell_lagged(&mut self, room: RoomId, except: Option<ClientId>, out: &mut Vec<Action>) {
        let members: Vec<Member> = self
            .members(room)
            .filter(|member| Some(member.client) != except)
            .collect();
        for member in members {
            self.send_error(
                member.client,
                ErrorCode::Lagged,
                LAGGED,
                member.dialect,
                out,
            );
        }
    }

    /// Keeps a published message in its room's history (the seq moves to it); returns its V2 and V1 forms.
    fn keep_published(
        &mut self,
        room_id: RoomId,
        text: &str,
        published: &wire::Published<'_>,
    ) -> (Rc<str>, Rc<str>) {
        if let Some(room) = self.rooms.get_mut(room_id) {
            room.advance_seq(published.seq);
        }
        let fields = wire::ChatFields {
            room: &published.room,
            seq: published.seq,
            from: &published.from,
            content: &published.content,
            timestamp: published.timestamp,
        };
        let payload: Rc<str> = Rc::from(text);
        let escaped = handlers::escaped_for_v1(&mut self.scratch, &fields);
        self.rooms.remember(
            room_id,
            published.seq,
            &payload,
            escaped.as_deref(),
            self.config.history_len,
            self.config.max_history_bytes,
        );
        let v1_payload = escaped.unwrap_or_else(|| payload.clone());
        (payload, v1_payload)
    }

    /// With [`ChatConfig::relayed`]: room `name` as the cluster engine has it (its epoch, latest seq and latest
    /// messages, oldest first). The room here takes them on: another epoch drops its history, and the messages
    /// after its latest are kept.
    /// Its members here, but for `joiner` (whose `joined` will say it), are sent `lagged` when the epoch changed: the
    /// messages they were waiting for are gone, and the seqs begin again.
    fn sync_room(&mut self, name: &str, state: RoomState, joiner: ClientId, out: &mut Vec<Action>) {
        let epoch: Rc<str> = Rc::from(state.epoch.as_str());
        let room_id = self.rooms.open(name, || epoch.clone());
        if self
            .rooms
            .get(room_id)
            .is_some_and(|room| *room.epoch() != epoch)
        {
            self.rooms.restart(room_id, epoch);
            self.tell_lagged(room_id, Some(joiner), out);
        }
        for text in &state.messages {
            let Some(published) = wire::Published::read(text) else {
                continue;
            };
            let latest = self.rooms.get(room_id).map_or(0, |room| room.latest_seq());
            if published.kind == "chat" && published.room == name && published.seq > latest {
                self.keep_published(room_id, text, &published);
            }
        }
        if let Some(room) = self.rooms.get_mut(room_id) {
            room.advance_seq(state.seq);
            room.set_remote(
                state
                    .members_elsewhere
                    .iter()
                    .map(|name| Rc::from(name.as_str()))
                    .collect(),
            );
        }
    }

    /// With [`ChatConfig::relayed`]: another node says `event` (a member's arrival or departure, as JSON) of room
    /// `room`. Its members here are told, as of a member here, and the room's count takes it in.
    pub fn remote_presence(&mut self, room: &str, event: &str, out: &mut Vec<Action>) {
        let Ok(event) = serde_json::from_str::<wire::RemotePresence<'_>>(event) else {
            return;
        };
        let Some(room_id) = self.rooms.lookup(room) else {
            return;
        };
        let changed = self
            .rooms
            .get_mut(room_id)
            .is_some_and(|room| room.note_remote(&event.user, event.joined));
        if changed {
            self.announce(room_id, None, &event.user, event.joined, out);
        }
    }

    /// With [`ChatConfig::relayed`]: the JSON another node reads for `user` joining (or leaving) a room here.
    pub fn presence_event(user: &str, joined: bool) -> Rc<str> {
        wire::encode_remote_presence(&wire::RemotePresence {
            user: std::borrow::Cow::Borrowed(user),
            joined,
        })
    }

    /// With [`ChatConfig::relayed`]: where room `name` stands here, its epoch and latest seq, if it is remembered:
    /// the cluster engine then sends only what came after.
    pub fn room_sync_point(&self, name: &str) -> Option<(Rc<str>, u64)> {
        let room = self.rooms.get(self.rooms.lookup(name)?)?;
        Some((room.epoch().clone(), room.latest_seq()))
    }

    /// True if room `name` has a member here.
    pub fn room_is_occupied(&self, name: &str) -> bool {
        self.rooms.is_occupied(name)
    }

    /// A new, unguessable epoch, for the cluster engine to give a room that has none.
    pub fn fresh_epoch(&mut self, now: Now) -> Rc<str> {
        self.ids.epoch(now.unix_ms)
    }

    /// With [`ChatConfig::relayed`]: the cluster engine answered the [`Action::ClaimName`] for `key` pushed for
    /// `client`'s join. Granted, the join goes on as it would have on one node; otherwise the joiner is told
    /// `name_taken` or `unavailable`. An answer nobody waits for any more (the client left, or joined again with
    /// another name or into another room) changes nothing.
    pub fn name_claimed(
        &mut self,
        client: ClientId,
        key: &str,
        room: &str,
        answer: ClaimAnswer,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        if self.participants.get(&client).is_none()
            || self
                .claiming
                .get(&client)
                .is_none_or(|(req, _)| **req.user.key() != *key || req.room != room)
        {
            return;
        }
        let Some((req, proposed)) = self.claiming.remove(&client) else {
            return;
        };
        match answer {
            ClaimAnswer::Granted(state) => {
                let token = match (state.reclaimed, req.session.as_deref()) {
                    (true, Some(shown)) => Rc::from(shown),
                    _ => proposed,
                };
                self.sync_room(&req.room, state, client, out);
                self.join(client, req, Some(token), now, out)
            }
            ClaimAnswer::Taken => self.send_error(
                client,
                ErrorCode::NameTaken,
                NAME_TAKEN_ELSEWHERE,
                req.dialect,
                out,
            ),
            ClaimAnswer::Unavailable => self.send_error(
                client,
                ErrorCode::Unavailable,
                UNAVAILABLE,
                req.dialect,
                out,
            ),
        }
    }

    /// True if a client here holds the name with `key` or it is reserved here: the cluster engine keeps it.
    pub fn holds_name(&self, key: &str) -> bool {
        self.claims.is_claimed(key)
    }

    /// The keys of every name a client here holds, for the cluster engine to keep them alive.
    pub fn held_name_keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.claims.held_keys()
    }

    /// With [`ChatConfig::relayed`]: a joiner on another node showed the session token of the name with `key`, held
    /// here: its holder here is closed with 4001 and leaves its room, as when replaced on one node.
    pub fn replaced_elsewhere(&mut self, key: &str, now: Now, out: &mut Vec<Action>) {
        let Some(holder) = self.claims.holder(key) else {
            return;
        };
        out.push(Action::Close {
            client: holder,
            code: CLOSE_REPLACED,
            reason: Cow::Borrowed("replaced"),
        });
        let stale = self.participants.get_mut(&holder).and_then(|p| {
            p.closing = true;
            p.take_seat()
        });
        if let Some((stale, stale_token)) = stale {
            self.depart(holder, stale, stale_token, true, now, out);
        }
    }

    /// With [`ChatConfig::relayed`]: the DM `client` sent to a name no node holds: tell it `not_online`.
    pub fn refuse_not_online(&mut self, client: ClientId, out: &mut Vec<Action>) {
        if self.participants.get(&client).is_some() {
            self.send_error(
                client,
                ErrorCode::NotOnline,
                handlers::NOT_ONLINE,
                Dialect::V1,
                out,
            );
        }
    }

    /// With [`ChatConfig::relayed`]: a DM another node relayed ([`Action::RelayDm`]) for a name held here. Sent to
    /// its holder in the holder's dialect; nothing if nobody here holds the name now.
    pub fn deliver_relayed_dm(&mut self, text: &str, out: &mut Vec<Action>) {
        let Ok(relayed) = serde_json::from_str::<wire::RelayedDm<'_>>(text) else {
            return;
        };
        let Some(recipient) = self.claims.holder(&relayed.to_key) else {
            return;
        };
        let Some(target) = self
            .participants
            .get(&recipient)
            .and_then(|p| p.joined.as_ref())
        else {
            return;
        };
        let payload = handlers::encode_dm(
            target.dialect,
            &relayed.from,
            target.user.shown(),
            &relayed.content,
            relayed.timestamp,
        );
        out.push(Action::Send {
            to: recipient,
            payload,
        });
    }

    /// With [`ChatConfig::relayed`]: the cluster engine cannot carry `client`'s message (Redis is unreachable, or
    /// refused it): tell the client with an `unavailable` error. Nothing if the client is gone.
    pub fn refuse_unavailable(&mut self, client: ClientId, out: &mut Vec<Action>) {
        if self.participants.get(&client).is_some() {
            self.send_error(
                client,
                ErrorCode::Unavailable,
                UNAVAILABLE,
                Dialect::V1,
                out,
            );
        }
    }

    /// With [`ChatConfig::relayed`]: the rooms that gained their first member here or lost their last since the
    /// last call, each once, with whether it has a member now (the engine subscribes to those that do).
    pub fn take_occupancy_changes(&mut self) -> Vec<(Rc<str>, bool)> {
        let mut changes: Vec<(Rc<str>, bool)> = Vec::new();
        for name in self.rooms.take_occupancy_changes() {
            if changes.iter().all(|(seen, _)| *seen != name) {
                let occupied = self.rooms.is_occupied(&name);
                changes.push((name, occupied));
            }
        }
        changes
    }

    /// Tell `client` its frame could not be handled, and why: as an `error` if the frame was a join announcing V2
    /// (`announced`) or the client's last join was V2, else as a `system` line the original page shows.
    fn send_error(
        &mut self,
        client: ClientId,
        code: ErrorCode,
        message: &str,
        announced: Dialect,
        out: &mut Vec<Action>,
    ) {
        let v2 = announced == Dialect::V2
            || self
                .participants
                .get(&client)
                .is_some_and(|p| p.dialect == Dialect::V2);
        let dialect = if v2 { Dialect::V2 } else { Dialect::V1 };
        self.refusals[code.index()] += 1;
        let payload = encode_error(code, message, dialect);
        out.push(Action::Send {
            to: client,
            payload,
        });
    }
}

/// An error in the form a V2 client (`error`) or a V1 client (a `system` line with the code) gets.
fn encode_error(code: ErrorCode, message: &str, dialect: Dialect) -> Rc<str> {
    if dialect == Dialect::V2 {
        wire::encode(&Out::Error {
            code: code.as_str(),
            message,
        })
    } else {
        wire::encode(&Out::ErrorV1 {
            content: &format!("Error: {message}"),
            code: code.as_str(),
            error: true,
        })
    }
}
