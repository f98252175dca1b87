//! The chat state machine: rooms, names, history and rate limits, driven by text frames and disconnects.
//!
//! This module owns the public interface the server calls ([`Chat`], [`Action`] and their companions) and the
//! per-connection bookkeeping. It is pure: it must not touch sockets, read a clock or draw randomness of its own.
//! Time arrives as [`Now`] and every unguessable id is derived from the secret given to [`Chat::new`]. It never
//! panics on network input; everything it wants done is pushed, in order, as [`Action`]s.
//!
//! The wire protocol it implements is `docs/protocol.md`.

mod handlers;
mod history;
// Not called yet: request.rs and the handlers take it up when the chat types are renamed.
#[allow(dead_code)]
mod names;
mod rate;
mod request;
mod room;
mod session;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::rc::Rc;

use crate::id_hash::IdMap;
use rate::{TokenBucket, Verdict};
use request::Request;
use room::Rooms;
use session::IdSource;
use wire::{ErrorCode, Out};

/// The server's key for one connection. The server calls [`Chat::disconnect`] before it reuses one.
pub type ConnId = usize;

/// Names one room for the lifetime of the process. Ids are never reused, so an action aimed at a room that has
/// since been forgotten reaches nobody rather than a newer room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RoomId(u64);

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
        }
    }
}

/// Something the server must do, in the order pushed, right after the call that pushed it returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this JSON text to one connection.
    Send {
        /// The recipient.
        to: ConnId,
        /// One JSON object, ready to go in a text frame.
        payload: Rc<str>,
    },
    /// Send to every current member of `room` except `except`. Members that joined with v2 get `payload`;
    /// v1 (legacy, the articles' client) members get `legacy_payload` when it is Some (often the same Rc),
    /// nothing when None.
    Broadcast {
        /// The room whose membership, at the end of the call, receives this.
        room: RoomId,
        /// A member to skip, usually the one the message is about.
        except: Option<ConnId>,
        /// What v2 members get.
        payload: Rc<str>,
        /// What v1 members get, if anything.
        legacy_payload: Option<Rc<str>>,
    },
    /// Close this connection with a WebSocket close code (1008 abuse, 4001 replaced).
    Close {
        /// The connection to close.
        conn: ConnId,
        /// The close code for the Close frame.
        code: u16,
        /// The close reason for the Close frame.
        reason: &'static str,
    },
}

/// One member of a room, as the server needs it to deliver a [`Action::Broadcast`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's connection.
    pub conn: ConnId,
    /// True when it joined without `v: 2` and so speaks only the articles' protocol.
    pub legacy: bool,
}

/// Close code for a connection flooding far past its rate limit (policy violation).
const CLOSE_ABUSE: u16 = 1008;
/// Close code for a connection whose name a newer connection reclaimed with its session token.
const CLOSE_REPLACED: u16 = 4001;
/// The message of every `rate_limited` error.
const RATE_LIMITED: &str = "over the rate limit; the message was dropped";

/// What a connection holds while it is in a room.
struct Joined {
    /// The name it holds.
    user: Rc<str>,
    /// The room it is in.
    room: RoomId,
    /// Its position in the room's member list, kept current as others leave.
    index: usize,
    /// Whether it speaks only the v1 protocol.
    legacy: bool,
    /// The session token that lets a newer connection reclaim the name.
    token: Rc<str>,
}

/// Everything known about one connection that has sent at least one frame.
struct Conn {
    /// Its rate limiter.
    bucket: TokenBucket,
    /// Its room and name, once it has joined.
    joined: Option<Joined>,
    /// Set once a close was asked for: later frames are ignored until [`Chat::disconnect`].
    closing: bool,
    /// Whether its last successful join announced v2; kept after it leaves. Until then it is taken for v1, so
    /// errors are sent in the form the articles' client can show.
    v2: bool,
}

impl Conn {
    /// A connection seen for the first time: full bucket, not in a room.
    fn new(burst: u32, now: Now) -> Self {
        Conn {
            bucket: TokenBucket::new(burst, now.mono_ms),
            joined: None,
            closing: false,
            v2: false,
        }
    }
}

/// Messages whose bytes never change, serialised once.
struct Canned {
    pong: Rc<str>,
    rate_limited: Rc<str>,
    rate_limited_legacy: Rc<str>,
}

/// The whole chat: every room, every joined name, every connection's limiter.
pub struct Chat {
    config: ChatConfig,
    ids: IdSource,
    rooms: Rooms,
    conns: IdMap<ConnId, Conn>,
    users: HashMap<Rc<str>, ConnId>,
    canned: Canned,
    /// Where chat messages are serialised before they get their shared `Rc<str>`.
    scratch: String,
}

impl Chat {
    /// A chat with no rooms. `secret` seeds every session token and epoch: it must be random and fresh.
    pub fn new(config: ChatConfig, secret: [u8; 32]) -> Chat {
        let canned = Canned {
            pong: wire::encode(&Out::Pong),
            rate_limited: encode_error(ErrorCode::RateLimited, RATE_LIMITED, true),
            rate_limited_legacy: encode_error(ErrorCode::RateLimited, RATE_LIMITED, false),
        };
        Chat {
            config,
            ids: IdSource::new(secret),
            rooms: Rooms::new(),
            conns: IdMap::default(),
            users: HashMap::new(),
            canned,
            scratch: String::new(),
        }
    }

    /// A text frame arrived from `conn` (a WebSocket on the chat route). Push what must happen into `out`, in
    /// order.
    pub fn handle_text(&mut self, conn: ConnId, text: &str, now: Now, out: &mut Vec<Action>) {
        let config = &self.config;
        let state = self
            .conns
            .entry(conn)
            .or_insert_with(|| Conn::new(config.rate_burst, now));
        if state.closing {
            return;
        }
        let verdict = state.bucket.charge(
            now.mono_ms,
            config.rate_per_sec,
            config.rate_burst,
            config.abuse_drops,
        );
        match verdict {
            Verdict::Pass => {}
            Verdict::Drop => {
                let canned = if state.v2 {
                    &self.canned.rate_limited
                } else {
                    &self.canned.rate_limited_legacy
                };
                out.push(Action::Send {
                    to: conn,
                    payload: canned.clone(),
                });
                return;
            }
            Verdict::Abuse => {
                state.closing = true;
                log::debug!("closing connection {conn}: rate limit abuse");
                out.push(Action::Close {
                    conn,
                    code: CLOSE_ABUSE,
                    reason: "rate limit abuse",
                });
                return;
            }
        }
        match request::parse(text, self.config.max_content_chars) {
            Ok(Request::Join(join)) => self.join(conn, join, now, out),
            Ok(Request::Chat { content }) => self.chat(conn, &content, now, out),
            Ok(Request::Dm { to, content }) => self.dm(conn, &to, &content, now, out),
            Ok(Request::Leave) => self.leave(conn, out),
            Ok(Request::Ping) => out.push(Action::Send {
                to: conn,
                payload: self.canned.pong.clone(),
            }),
            Err(rejection) => {
                self.send_error(conn, rejection.code, rejection.message, rejection.v2, out)
            }
        }
        self.rooms.evict_excess(self.config.max_empty_rooms);
    }

    /// `conn` is gone (closed for any reason). Leaves its room (others told), frees its name.
    pub fn disconnect(&mut self, conn: ConnId, _now: Now, out: &mut Vec<Action>) {
        let Some(state) = self.conns.remove(&conn) else {
            return;
        };
        if let Some(joined) = state.joined {
            self.depart(conn, joined, true, out);
        }
        self.rooms.evict_excess(self.config.max_empty_rooms);
    }

    /// The current members of a room, for the server to resolve Broadcast; O(1) to start, no allocation.
    pub fn members(&self, room: RoomId) -> impl Iterator<Item = Member> + '_ {
        self.rooms.seats(room).iter().map(|seat| Member {
            conn: seat.conn,
            legacy: seat.legacy,
        })
    }

    /// Rooms with at least one member.
    pub fn room_count(&self) -> usize {
        self.rooms.occupied()
    }

    /// Connections currently in a room.
    pub fn member_count(&self) -> usize {
        self.rooms.seated()
    }

    /// Tell `conn` its frame could not be handled, and why: as an `error` if the frame was a join announcing v2
    /// (`announced_v2`) or the connection's last join was v2, else as a `system` line the articles' client shows.
    fn send_error(
        &self,
        conn: ConnId,
        code: ErrorCode,
        message: &'static str,
        announced_v2: bool,
        out: &mut Vec<Action>,
    ) {
        let v2 = announced_v2 || self.conns.get(&conn).is_some_and(|c| c.v2);
        let payload = encode_error(code, message, v2);
        out.push(Action::Send { to: conn, payload });
    }
}

/// An error in the form a v2 client (`error`) or a v1 client (a `system` line with the code) gets.
fn encode_error(code: ErrorCode, message: &'static str, v2: bool) -> Rc<str> {
    if v2 {
        wire::encode(&Out::Error {
            code: code.as_str(),
            message,
        })
    } else {
        wire::encode(&Out::LegacyError {
            content: &format!("Error: {message}"),
            code: code.as_str(),
            error: true,
        })
    }
}
