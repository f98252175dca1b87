//! What each request does to the chat state, and who is told: join (with reclaim and replay), chat, dm, leave,
//! and departing a room for any reason.
//!
//! Owns the order of messages and who gets which form (v1 or v2). It must not parse frames or check field rules
//! (`request.rs`), nor write JSON by hand (`wire.rs`): every message is built once and shared.

use std::borrow::Cow;
use std::rc::Rc;

use super::claims::{Refused, Taking};
use super::names::Name;
use super::request::JoinRequest;
use super::room::Seat;
use super::wire::{self, ErrorCode, MemberNames, Out, ReplayOut};
use super::{
    Action, Chat, ClientId, Dialect, Joined, Now, Participant, RoomId, ANNOUNCED_PER_TURN,
    BYTE_RATE_LIMITED, CLOSE_REPLACED, ROOM_RATE_LIMITED,
};

const NOT_JOINED: &str = "join a room first";
const NAME_TAKEN: &str = "another connection holds this userId";
const NAME_RESERVED: &str =
    "this userId was in use moments ago and is kept for its owner's session for a while";
pub(super) const NOT_ONLINE: &str = "no connection holds this userId";
const ROOM_FULL: &str = "the room holds as many members as it may; try another room";

impl Chat {
    /// `join`: take the name (reclaiming it with a matching session), leave any current room, enter the new one.
    /// With a cluster engine, a name this node does not hold yet is asked for first (`Action::ClaimName`): the join
    /// waits, and goes on from here once the engine grants it (`Chat::name_claimed`), with `claimed`: the session
    /// token the name is held with across the cluster.
    pub(super) fn join(
        &mut self,
        client: ClientId,
        req: JoinRequest<'_>,
        claimed: Option<Rc<str>>,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some(seat) = Seat::new(client, req.dialect, req.user.shown().clone()) else {
            return;
        };
        self.claims.expire(now.mono_ms);
        let key = req.user.key();
        let participants = &self.participants;
        // The token shown, or the one this connection held last: leaving a name is no reason to lose it.
        let own = participants.get(&client).and_then(|p| p.session.as_deref());
        let session = req.session.as_deref().or(own);
        let taking = self
            .claims
            .may_take(key, client, session, now.mono_ms, |holder| {
                participants.get(&holder)?.held_token()
            });
        let (mut token, replacing) = match taking {
            Ok(Taking::Free) => (None, None),
            Ok(Taking::Reclaimed(token)) => (Some(token), None),
            Ok(Taking::Replacing(holder)) => {
                let token = self
                    .participants
                    .get(&holder)
                    .and_then(Participant::held_token);
                (token, Some(holder))
            }
            Err(refused) => {
                let message = match refused {
                    Refused::Held => NAME_TAKEN,
                    Refused::Reserved => NAME_RESERVED,
                };
                self.send_error(client, ErrorCode::NameTaken, message, req.dialect, out);
                return;
            }
        };

        if self.is_full(&req.room, [Some(client), replacing]) {
            self.send_error(client, ErrorCode::RoomFull, ROOM_FULL, req.dialect, out);
            return;
        }

        // A live holder here shows the name is this node's already; any other name may be held on another node.
        if self.config.relayed && claimed.is_none() && replacing.is_none() {
            let same_name = self
                .participants
                .get(&client)
                .filter(|p| p.joined.as_ref().is_some_and(|j| j.user.key() == key))
                .and_then(Participant::held_token);
            let proposed = match token.or(same_name) {
                Some(token) => token,
                None => self.ids.session_token(now.unix_ms),
            };
            let claim = Action::ClaimName {
                client,
                key: key.clone(),
                room: Rc::from(&*req.room),
                token: proposed.clone(),
                shown: req.session.as_deref().map(Rc::from),
            };
            if self.participants.get(&client).is_some() {
                self.claiming.insert(client, (req.into_owned(), proposed));
                out.push(claim);
            }
            return;
        }
        if claimed.is_some() {
            token = claimed;
        }

        if let Some((previous, previous_token)) = self
            .participants
            .get_mut(&client)
            .and_then(Participant::take_seat)
        {
            if token.is_none() && previous.user.key() == key {
                token = previous_token.clone();
            }
            self.depart(client, previous, previous_token, true, now, out);
        }

        let mut silent = false;
        if let Some(holder) = replacing {
            out.push(Action::Close {
                client: holder,
                code: CLOSE_REPLACED,
                reason: "replaced".into(),
            });
            let stale = self.participants.get_mut(&holder).and_then(|c| {
                c.closing = true;
                c.take_seat()
            });
            if let Some((stale, stale_token)) = stale {
                silent = self.rooms.lookup(&req.room) == Some(stale.room);
                self.depart(holder, stale, stale_token, !silent, now, out);
            }
            log::debug!("connection {holder} replaced by {client}");
        }

        let token = match token {
            Some(token) => token,
            None => self.ids.session_token(now.unix_ms),
        };
        let ids = &mut self.ids;
        let room_id = self.rooms.open(&req.room, || ids.epoch(now.unix_ms));
        let user = req.user.shown().clone();
        let dialect = req.dialect;
        let Some(index) = self.rooms.seat(room_id, seat) else {
            return;
        };
        self.claims.hold(key, client);
        let config = &self.config;
        let Some(state) = self
            .participants
            .get_or_insert_with(client, || Participant::new(config, now))
        else {
            return;
        };
        state.joined = Some(Joined {
            user: req.user.clone(),
            room: room_id,
            index: u32::try_from(index).unwrap_or(u32::MAX),
            dialect,
        });
        state.dialect = dialect;
        state.session = Some(token.clone());

        self.welcome(client, room_id, &token, &req, out);
        if !silent {
            self.announce(room_id, Some(client), &user, true, out);
            self.tell_cluster(room_id, &user, true, out);
        }
    }

    /// True if room `name` holds `max_room_members` already, not counting the clients in `vacating` that are in it
    /// and are about to leave it (the joiner itself, a connection it replaces).
    fn is_full(&self, name: &str, vacating: [Option<ClientId>; 2]) -> bool {
        let Some(room_id) = self.rooms.lookup(name) else {
            return false;
        };
        let Some(room) = self.rooms.get(room_id) else {
            return false;
        };
        let leaving = vacating
            .into_iter()
            .flatten()
            .filter(|c| self.joined(*c).is_some_and(|j| j.room == room_id))
            .count();
        room.seats().len().saturating_sub(leaving) >= self.config.max_room_members
    }

    /// The joiner's `system` line, its `joined` (v2 only), then the replayed history.
    fn welcome(
        &mut self,
        client: ClientId,
        room_id: RoomId,
        token: &str,
        req: &JoinRequest<'_>,
        out: &mut Vec<Action>,
    ) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        let line = format!("Joined room \"{}\", {} online", room.name(), room.online());
        out.push(Action::Send {
            to: client,
            payload: wire::encode(&Out::System { content: &line }),
        });
        let since = req.since.as_ref().map(|s| (&*s.epoch, s.seq));
        let replay = room.replay(since, self.config.max_replay_bytes, req.dialect);
        if req.dialect == Dialect::V2 {
            let joined = Out::Joined {
                room: room.name(),
                user_id: req.user.shown(),
                members: MemberNames(room.seats(), room.remote()),
                member_count: room.online(),
                epoch: room.epoch(),
                seq: room.latest_seq(),
                session: token,
                replay: ReplayOut {
                    complete: replay.gap.is_none(),
                    reason: replay.gap.map(|gap| gap.as_str()),
                    count: replay.count,
                },
            };
            out.push(Action::Send {
                to: client,
                payload: wire::encode(&joined),
            });
        }
        self.send_history(client, room_id, replay.start, req.dialect, out);
    }

    /// Resends the chat messages room `room_id` keeps from position `start` on, in the form `dialect` was sent them
    /// live, as slices shared with the history: no message is parsed, escaped or copied again, whatever the
    /// dialect.
    pub(super) fn send_history(
        &mut self,
        client: ClientId,
        room_id: RoomId,
        start: usize,
        dialect: Dialect,
        out: &mut Vec<Action>,
    ) {
        let texts = self.rooms.history_from(room_id, start, dialect);
        if !texts.is_empty() {
            out.push(Action::Replay { to: client, texts });
        }
    }

    /// Tell the rest of a room that `user` joined (or left): a `system` line for all, `presence` for V2. Beyond
    /// [`ANNOUNCED_PER_TURN`] changes in one room in one loop turn, the rest are only counted, and
    /// [`Chat::end_turn`] sums them up in one line: a storm of arrivals or departures costs the room a bounded
    /// number of broadcasts per turn, not one per member.
    pub(super) fn announce(
        &mut self,
        room_id: RoomId,
        except: Option<ClientId>,
        user: &str,
        joined: bool,
        out: &mut Vec<Action>,
    ) {
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        if room
            .seats()
            .iter()
            .all(|seat| Some(seat.client()) == except)
        {
            return;
        }
        let storm = self.storms.entry(room_id).or_default();
        storm.announced += 1;
        if storm.announced > ANNOUNCED_PER_TURN {
            if joined {
                storm.unannounced_joins += 1;
            } else {
                storm.unannounced_leaves += 1;
            }
            return;
        }
        let verb = if joined { "joined" } else { "left" };
        let line = format!("User \"{user}\" {verb} the room");
        let presence = Out::Presence {
            room: room.name(),
            joined: joined.then_some(user),
            left: (!joined).then_some(user),
            count: room.online(),
        };
        broadcast_notice(room_id, except, &line, &presence, out);
    }

    /// The end of a loop turn: sums up, in one `system` line and one `presence` per room, the arrivals and
    /// departures that were only counted during the turn (beyond the first few of each room, which were announced
    /// one by one).
    pub fn end_turn(&mut self, out: &mut Vec<Action>) {
        if self.storms.is_empty() {
            return;
        }
        for (room_id, storm) in std::mem::take(&mut self.storms) {
            if storm.unannounced_joins + storm.unannounced_leaves == 0 {
                continue;
            }
            let Some(room) = self.rooms.get(room_id) else {
                continue;
            };
            let line = format!(
                "{} more joined and {} more left the room; {} online",
                storm.unannounced_joins,
                storm.unannounced_leaves,
                room.online()
            );
            let presence = Out::Presence {
                room: room.name(),
                joined: None,
                left: None,
                count: room.online(),
            };
            broadcast_notice(room_id, None, &line, &presence, out);
        }
    }

    /// `chat`: one message to the whole room, the sender included, kept in the room's history. V1 members get the
    /// same Rc unless a field needs HTML-escaping for them; then a second serialisation, escaped, which the history
    /// keeps beside the first so that a V1 replay is as cheap as a V2 one.
    pub(super) fn chat(
        &mut self,
        client: ClientId,
        content: &str,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let found = self.joined(client).and_then(|joined| {
            let room = self.rooms.get(joined.room)?;
            Some((
                joined.room,
                room.name().clone(),
                room.latest_seq() + 1,
                joined.user.shown().clone(),
            ))
        });
        let Some((room_id, room_name, seq, from)) = found else {
            self.send_error(client, ErrorCode::NotJoined, NOT_JOINED, Dialect::V1, out);
            return;
        };
        // What it will cost is at least its text: refused before it is encoded (a flood of refusals would
        // otherwise cost an encoding each), charged exactly once it is.
        let at_least = content.len() + room_name.len() + from.len();
        if let Some(refusal) = self.cannot_afford(client, Some(room_id), at_least, now) {
            self.send_error(client, ErrorCode::RateLimited, refusal, Dialect::V1, out);
            return;
        }
        let fields = wire::ChatFields {
            room: &room_name,
            seq,
            from: &from,
            content,
            timestamp: now.unix_ms,
        };
        if self.config.relayed {
            self.publish(client, room_id, &fields, now, out);
            return;
        }
        let payload = wire::encode_chat(&mut self.scratch, &fields);
        let escaped = escaped_for_v1(&mut self.scratch, &fields);
        if let Some(refusal) = self.charge_bytes(client, Some(room_id), payload.len(), now) {
            self.send_error(client, ErrorCode::RateLimited, refusal, Dialect::V1, out);
            return;
        }
        if let Some(room) = self.rooms.get_mut(room_id) {
            room.next_seq();
        }
        self.keep_and_broadcast(room_id, seq, payload, escaped, out);
    }

    /// A numbered chat message, in its V2 form and its V1 form where that differs, kept in its room's history and
    /// broadcast to every member: the end of a member's `chat` and of an application's publication alike.
    pub(super) fn keep_and_broadcast(
        &mut self,
        room_id: RoomId,
        seq: u64,
        payload: Rc<str>,
        escaped: Option<Rc<str>>,
        out: &mut Vec<Action>,
    ) {
        self.rooms.remember(
            room_id,
            seq,
            &payload,
            escaped.as_deref(),
            self.config.history_len,
            self.config.max_history_bytes,
        );
        let v1_payload = escaped.unwrap_or_else(|| payload.clone());
        out.push(Action::Broadcast {
            room: room_id,
            except: None,
            payload,
            v1_payload: Some(v1_payload),
            seq: Some(seq),
        });
    }

    /// A chat message that the cluster engine numbers: charged at the size it will have with the seq `seq` would
    /// give it here (the engine's is of the same order), and handed over without a seq.
    fn publish(
        &mut self,
        client: ClientId,
        room_id: RoomId,
        fields: &wire::ChatFields<'_>,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let tail = wire::encode_chat_tail(
            &mut self.scratch,
            fields.from,
            fields.content,
            fields.timestamp,
        );
        let head = wire::encode_chat_head(fields.room);
        // The seq's decimal digits, counted without formatting it.
        let seq_digits = fields
            .seq
            .checked_ilog10()
            .map_or(1, |log| log as usize + 1);
        let size = head.len() + seq_digits + tail.len();
        if let Some(refusal) = self.charge_bytes(client, Some(room_id), size, now) {
            self.send_error(client, ErrorCode::RateLimited, refusal, Dialect::V1, out);
            return;
        }
        out.push(Action::Publish {
            client,
            room: Rc::from(fields.room),
            tail,
        });
    }

    /// The refusal `charge_bytes` would give `bytes` now, if any, without charging anything.
    fn cannot_afford(
        &self,
        client: ClientId,
        room: Option<RoomId>,
        bytes: usize,
        now: Now,
    ) -> Option<&'static str> {
        let config = &self.config;
        let sender = self.participants.get(&client)?;
        if !sender.bytes.has(
            now.mono_ms,
            config.rate_bytes_per_sec,
            config.rate_burst_bytes,
            bytes,
        ) {
            return Some(BYTE_RATE_LIMITED);
        }
        let room = self.rooms.get(room?)?;
        if !room.could_carry(
            now.mono_ms,
            config.room_rate_bytes_per_sec,
            config.room_burst_bytes,
            bytes,
        ) {
            return Some(ROOM_RATE_LIMITED);
        }
        None
    }

    /// Charges `bytes` sent by `client` against its byte rate and, for a chat message, its room's volume: what one
    /// sender, and the room as a whole, may push into every member's downlink. The refusal's message if over.
    fn charge_bytes(
        &mut self,
        client: ClientId,
        room: Option<RoomId>,
        bytes: usize,
        now: Now,
    ) -> Option<&'static str> {
        let config = &self.config;
        let sender = self.participants.get_mut(&client)?;
        if !sender.bytes.take(
            now.mono_ms,
            config.rate_bytes_per_sec,
            config.rate_burst_bytes,
            bytes,
        ) {
            return Some(BYTE_RATE_LIMITED);
        }
        let room = self.rooms.get_mut(room?)?;
        if !room.carry(
            now.mono_ms,
            config.room_rate_bytes_per_sec,
            config.room_burst_bytes,
            bytes,
        ) {
            return Some(ROOM_RATE_LIMITED);
        }
        None
    }

    /// `dm`: to the connection holding `to`, and a copy to the sender, each in the form its protocol knows (for v1,
    /// a private `chat` with `from` and `content` HTML-escaped).
    pub(super) fn dm(
        &mut self,
        client: ClientId,
        to: &Name,
        content: &str,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some(sender) = self.joined(client) else {
            self.send_error(client, ErrorCode::NotJoined, NOT_JOINED, Dialect::V1, out);
            return;
        };
        // A name reserved for a session that left is nobody's to receive: the DM is refused, not kept.
        let Some((recipient, target)) = self
            .claims
            .holder(to.key())
            .and_then(|r| self.joined(r).map(|j| (r, j)))
        else {
            if self.config.relayed && !self.claims.is_claimed(to.key()) {
                self.relay_dm(client, to, content, now, out);
                return;
            }
            self.send_error(client, ErrorCode::NotOnline, NOT_ONLINE, Dialect::V1, out);
            return;
        };
        let at_least = content.len() + sender.user.shown().len();
        if let Some(refusal) = self.cannot_afford(client, None, at_least, now) {
            self.send_error(client, ErrorCode::RateLimited, refusal, Dialect::V1, out);
            return;
        }
        let encode_for = |dialect: Dialect| {
            encode_dm(
                dialect,
                sender.user.shown(),
                target.user.shown(),
                content,
                now.unix_ms,
            )
        };
        let delivered = encode_for(target.dialect);
        let copy = (recipient != client).then(|| {
            if sender.dialect == target.dialect {
                delivered.clone()
            } else {
                encode_for(sender.dialect)
            }
        });
        if let Some(refusal) = self.charge_bytes(client, None, delivered.len(), now) {
            self.send_error(client, ErrorCode::RateLimited, refusal, Dialect::V1, out);
            return;
        }
        if let Some(copy) = copy {
            out.push(Action::Send {
                to: client,
                payload: copy,
            });
        }
        out.push(Action::Send {
            to: recipient,
            payload: delivered,
        });
    }

    /// A DM to a name no client here holds, handed to the cluster engine for the node that holds it; charged like
    /// one delivered here.
    fn relay_dm(
        &mut self,
        client: ClientId,
        to: &Name,
        content: &str,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some(sender) = self.joined(client) else {
            return;
        };
        let from = sender.user.shown().clone();
        let dialect = sender.dialect;
        let text = wire::encode_relayed_dm(&wire::RelayedDm {
            to_key: Cow::Borrowed(to.key()),
            from: Cow::Borrowed(&from),
            content: Cow::Borrowed(content),
            timestamp: now.unix_ms,
        });
        let copy = encode_dm(dialect, &from, to.shown(), content, now.unix_ms);
        if let Some(refusal) = self.charge_bytes(client, None, copy.len(), now) {
            self.send_error(client, ErrorCode::RateLimited, refusal, Dialect::V1, out);
            return;
        }
        out.push(Action::RelayDm {
            client,
            to_key: to.key().clone(),
            text,
            copy,
        });
    }

    /// `leave`: out of the room, the others told; the connection stays open and its name is released (reserved
    /// for its session during the grace period).
    pub(super) fn leave(&mut self, client: ClientId, now: Now, out: &mut Vec<Action>) {
        // A join still waiting for the cluster's answer is given up: the answer will find nobody waiting.
        let claiming = self.claiming.remove(&client);
        match self
            .participants
            .get_mut(&client)
            .and_then(Participant::take_seat)
        {
            None if claiming.is_some() => {}
            Some((joined, token)) => self.depart(client, joined, token, true, now, out),
            None => self.send_error(client, ErrorCode::NotJoined, NOT_JOINED, Dialect::V1, out),
        }
    }

    /// Take `client` out of its room and release its name, which stays reserved for its session token during the
    /// grace period; when `notify`, tell those still in the room.
    pub(super) fn depart(
        &mut self,
        client: ClientId,
        joined: Joined,
        token: Option<Rc<str>>,
        notify: bool,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let key = joined.user.key();
        if self.config.relayed && self.claims.holder(key) == Some(client) {
            out.push(Action::ReleaseName {
                key: key.clone(),
                grace_ms: self.config.name_grace_ms,
            });
        }
        self.claims
            .release(key, client, token, now.mono_ms, self.config.name_grace_ms);
        if let Some((moved, index)) = self
            .rooms
            .unseat(joined.room, joined.index as usize, client)
        {
            if let Some(j) = self
                .participants
                .get_mut(&moved)
                .and_then(|c| c.joined.as_mut())
            {
                j.index = u32::try_from(index).unwrap_or(u32::MAX);
            }
        }
        if notify {
            self.announce(joined.room, Some(client), joined.user.shown(), false, out);
            self.tell_cluster(joined.room, joined.user.shown(), false, out);
        }
    }

    /// With a cluster engine: `user` joined (or left) room `room_id` here; the other nodes are told.
    fn tell_cluster(&self, room_id: RoomId, user: &str, joined: bool, out: &mut Vec<Action>) {
        if !self.config.relayed {
            return;
        }
        if let Some(room) = self.rooms.get(room_id) {
            out.push(Action::Presence {
                room: room.name().clone(),
                user: Rc::from(user),
                joined,
            });
        }
    }

    /// The room and name `client` holds, if it has joined.
    pub(super) fn joined(&self, client: ClientId) -> Option<&Joined> {
        self.participants
            .get(&client)
            .and_then(|c| c.joined.as_ref())
    }
}

/// The V1 form of a chat message when it differs from the V2 one: the original page puts fields into innerHTML,
/// so every user-controlled one is escaped for it. `None` when nothing needs escaping, so that both dialects share
/// one serialisation.
pub(super) fn escaped_for_v1(
    scratch: &mut String,
    fields: &wire::ChatFields<'_>,
) -> Option<Rc<str>> {
    match (
        wire::escape_html(fields.room),
        wire::escape_html(fields.from),
        wire::escape_html(fields.content),
    ) {
        (Cow::Borrowed(_), Cow::Borrowed(_), Cow::Borrowed(_)) => None,
        (room, from, content) => Some(wire::encode_chat(
            scratch,
            &wire::ChatFields {
                room: &room,
                from: &from,
                content: &content,
                ..*fields
            },
        )),
    }
}

/// A DM from `from` to `to` as a client of `dialect` receives it: `dm` for V2; for V1 a private `chat`, its fields
/// HTML-escaped.
pub(super) fn encode_dm(
    dialect: Dialect,
    from: &str,
    to: &str,
    content: &str,
    timestamp: u64,
) -> Rc<str> {
    if dialect == Dialect::V1 {
        wire::encode(&Out::DmV1 {
            from: &wire::escape_html(from),
            content: &wire::escape_html(content),
            timestamp,
            private: true,
        })
    } else {
        wire::encode(&Out::Dm {
            from,
            to,
            content,
            timestamp,
        })
    }
}

/// Broadcasts a notice to a room: `line` as a `system` line to every member, and `presence` to V2 members.
fn broadcast_notice(
    room: RoomId,
    except: Option<ClientId>,
    line: &str,
    presence: &Out<'_>,
    out: &mut Vec<Action>,
) {
    let system = wire::encode(&Out::System { content: line });
    out.push(Action::Broadcast {
        room,
        except,
        payload: system.clone(),
        v1_payload: Some(system),
        seq: None,
    });
    out.push(Action::Broadcast {
        room,
        except,
        payload: wire::encode(presence),
        v1_payload: None,
        seq: None,
    });
}
