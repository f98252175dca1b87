//! The chat's traffic through Redis, with `--redis`: what `redis.rs`'s two connections carry for the chat.
//!
//! Owns a subscription to the channel of every room with a member on this node and to the node's own channel; one
//! publish script call per room per turn for that room's chat messages (`Action::Publish`), delivered here only
//! when they come back on the subscription (`Chat::deliver_published`); the claim and release of user names across
//! the cluster (`Action::ClaimName`, `Action::ReleaseName`); DMs to names held on other nodes (`Action::RelayDm`);
//! and the node's heartbeat, which renews its names and removes dead nodes. Every chat message, claim or DM that
//! Redis refuses or never answers gets its sender an answer (`unavailable`, `name_taken`, `not_online`): nothing
//! is dropped without a word. It must not touch the sockets (`redis.rs` does) nor decide what the chat says.

use std::collections::HashMap;
use std::rc::Rc;

use log::{debug, info, warn};

use super::redis::{queue_script, Tag};
use super::timeouts::Millis;
use super::Server;
use redis_protocol::resp2::types::OwnedFrame;

use crate::chat::{self, Action, ClaimAnswer, Delivery, RoomState};
use crate::cluster::keys;
use crate::cluster::renewal::RenewalSchedule;
use crate::cluster::{LinkEvent, NodeId, Reply, Script};
use crate::http::api::ApiError;
use serde_json::json;

/// A command of the chat's, waiting for its reply.
#[derive(Debug)]
pub(super) enum Job {
    /// One room's publish script call, with the senders of its messages, in order.
    Publish {
        /// The room.
        room: Rc<str>,
        /// The senders.
        senders: Vec<Sender>,
    },
    /// A join's name and room asked for.
    Claim {
        /// The joiner's slab key and serial.
        client: (usize, u32),
        /// The name's key.
        name: Rc<str>,
        /// The room joined.
        room: Rc<str>,
    },
    /// A DM handed to the node holding its recipient's name; `copy` goes to the sender once it is on its way.
    Dm {
        /// The sender's slab key and serial.
        client: (usize, u32),
        /// The sender's copy.
        copy: Rc<str>,
    },
    /// An `/api/dm` handed to the node holding its recipient's name; the request (slab key and serial) waits for
    /// the answer.
    ApiDm {
        /// The request's connection.
        request: (usize, u32),
    },
    /// An `/api/rooms/NAME`: the room's members across the cluster, read from its presence hash.
    ApiRoom {
        /// The request's connection.
        request: (usize, u32),
        /// The room's name as the request gave it, for the answer.
        asked: String,
    },
    /// An `/api/rooms`: every room with members on any node, with their counts, from the hash of rooms.
    ApiRooms {
        /// The request's connection.
        request: (usize, u32),
    },
    /// What a room's stream holds after the seq this node saw last, after its subscription was down.
    Recover {
        /// The room.
        room: Rc<str>,
    },
    /// A name released, or the node's heartbeat: nobody waits for these.
    Housekeeping,
}

/// Who sent a chat message handed to the cluster engine, to be told if it is refused: a member's connection, or
/// a server API request waiting for its seq (slab key and serial, either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sender {
    /// A member's WebSocket.
    Member(usize, u32),
    /// An `/api/publish` request, answered `{"seq": N}` once the script has numbered it.
    Api(usize, u32),
}

/// A chat message waiting for its room's script call.
struct Pending {
    sender: Sender,
    tail: Rc<str>,
}

/// Where a subscription stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subscribed {
    /// Not asked for on the current subscriber connection.
    No,
    /// `SUBSCRIBE` sent, its confirmation not yet back.
    Asked,
    /// Confirmed: what is published to the channel reaches this node from now on.
    Yes,
}

/// A join waiting for its room's subscription.
struct WaitingJoin {
    key: usize,
    serial: u32,
    /// The name's key.
    name: Rc<str>,
    /// The session token the name is to be held with.
    token: Rc<str>,
    /// The session token the joiner showed, if any.
    shown: Option<Rc<str>>,
}

/// A room with a member on this node, or a join into it under way.
struct RoomChannel {
    subscribed: Subscribed,
    /// Its chat messages of this turn (and of earlier turns, while the subscription is not yet confirmed).
    pending: Vec<Pending>,
    /// Joins waiting for the subscription (slab key, serial, name's key): the join script runs once this node
    /// listens to the room, so that whatever is published after the script's answer reaches the node.
    claims: Vec<WaitingJoin>,
    /// Join scripts sent and not yet answered.
    claims_in_flight: usize,
    /// The subscription was down: once it is back, the room's gap is read from its stream (`Job::Recover`).
    needs_recovery: bool,
    /// The room's gap is being read from its stream.
    recovering: bool,
    /// Messages the subscription brought (epoch, JSON) while they could not be delivered yet, in order: while the
    /// room's gap is read, delivered after it; and while a join script is in flight for a room nobody here is in,
    /// delivered once the join has its answer. (The script's answer and the subscription come on two connections:
    /// what is published just after the script ran can arrive first, and would find nobody here to keep it.)
    held: Option<Vec<(String, String)>>,
}

impl RoomChannel {
    /// Nothing here needs the room's channel but its members, if any.
    fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.claims.is_empty() && self.claims_in_flight == 0
    }
}

/// The chat's side of the cluster.
pub(super) struct Relay {
    node: NodeId,
    /// The node's own channel (DMs for the names it holds).
    node_channel: Vec<u8>,
    node_subscribed: Subscribed,
    /// The rooms with a member here, by name.
    rooms: HashMap<Rc<str>, RoomChannel>,
    /// Rooms whose channel is to be subscribed to on the current subscriber connection.
    to_subscribe: Vec<Rc<str>>,
    /// `SUBSCRIBE`s sent per room channel on the current subscriber connection whose confirmation has not come:
    /// a room left and joined again within a round trip has two, and only the second confirmation is its own.
    confirmations_due: HashMap<Rc<str>, u32>,
    /// Rooms with messages in `pending`.
    to_publish: Vec<Rc<str>>,
    /// Rooms with joins in `claims`.
    to_claim: Vec<Rc<str>>,
    publish: Script,
    join: Script,
    release: Script,
    heartbeat: Script,
    dm: Script,
    presence: Script,
    recover: Script,
    /// Rooms whose gap is to be read from their stream.
    to_recover: Vec<Rc<str>>,
    /// Chat messages delivered from a room's stream after the subscription was down.
    pub(super) recovered: u64,
    /// Arrivals and departures here not yet told to the cluster (room, name, joined), kept while Redis is away.
    presence_queue: Vec<(Rc<str>, Rc<str>, bool)>,
    /// The stream's approximate length (`--history`).
    history_len: String,
    /// How long a name lives in Redis unless the heartbeat renews it: 3 heartbeats.
    name_ttl: String,
    /// When the heartbeat's calls go out, and which names each renews.
    renewal: RenewalSchedule,
    /// Chat messages Redis refused or never answered.
    pub(super) publish_errors: u64,
    /// Chat messages that came back with seqs missing before them.
    pub(super) gaps: u64,
}

impl Relay {
    /// The chat's side of node `node`: room streams keep about `history_len` messages, and the heartbeat renews the
    /// node's names every `heartbeat_ms`, at most `renewal_batch` per script call, its cycles shifted by
    /// `phase_ms` (drawn at random by the caller, so that nodes started together do not renew together).
    pub(super) fn new(
        node: NodeId,
        history_len: usize,
        heartbeat_ms: u64,
        renewal_batch: usize,
        phase_ms: u64,
    ) -> Relay {
        Relay {
            node_channel: keys::node_channel(node.as_str()),
            node,
            node_subscribed: Subscribed::No,
            rooms: HashMap::new(),
            to_subscribe: Vec::new(),
            confirmations_due: HashMap::new(),
            to_publish: Vec::new(),
            to_claim: Vec::new(),
            publish: keys::publish_script(),
            join: keys::join_script(),
            release: keys::release_script(),
            heartbeat: keys::heartbeat_script(),
            dm: keys::dm_script(),
            presence: keys::presence_script(),
            recover: keys::recover_script(),
            to_recover: Vec::new(),
            recovered: 0,
            presence_queue: Vec::new(),
            history_len: history_len.to_string(),
            name_ttl: heartbeat_ms.max(1).saturating_mul(3).to_string(),
            renewal: RenewalSchedule::new(heartbeat_ms, renewal_batch, phase_ms),
            publish_errors: 0,
            gaps: 0,
        }
    }

    /// The scripts the command connection loads in its handshake.
    pub(super) fn scripts(&self) -> [Script; 7] {
        [
            self.publish,
            self.join,
            self.release,
            self.heartbeat,
            self.dm,
            self.presence,
            self.recover,
        ]
    }

    /// The subscriber connection is subscribed to this node's channel.
    pub(super) fn is_listening(&self) -> bool {
        self.node_subscribed == Subscribed::Yes
    }

    /// When the heartbeat's next call is due.
    pub(super) fn next_deadline(&self) -> Millis {
        Millis(self.renewal.next_due())
    }

    /// A new subscriber connection: every subscription is to be asked for again, and publications wait for them.
    pub(super) fn resubscribe(&mut self) {
        self.node_subscribed = Subscribed::No;
        self.to_subscribe = self.rooms.keys().cloned().collect();
        self.confirmations_due.clear();
        for room in self.rooms.values_mut() {
            room.subscribed = Subscribed::No;
            room.needs_recovery = true;
        }
    }

    fn add_room(&mut self, room: Rc<str>) -> &mut RoomChannel {
        let to_subscribe = &mut self.to_subscribe;
        self.rooms.entry(room.clone()).or_insert_with(|| {
            to_subscribe.push(room);
            RoomChannel {
                subscribed: Subscribed::No,
                pending: Vec::new(),
                claims: Vec::new(),
                claims_in_flight: 0,
                needs_recovery: false,
                recovering: false,
                held: None,
            }
        })
    }
}

/// The slab key and serial of a client, if it is still connected.
fn who(server: &Server, key: usize) -> Option<(usize, u32)> {
    server.clients.get(key).map(|client| (key, client.serial))
}

impl Server {
    fn relay_mut(&mut self) -> Option<&mut Relay> {
        self.cluster.as_mut().map(|cluster| &mut cluster.relay)
    }

    fn cluster_ready(&self) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|cluster| cluster.is_ready())
    }

    /// True if `client` is still the connection it was (same slab key and serial).
    fn still_there(&self, (key, serial): (usize, u32)) -> bool {
        self.clients
            .get(key)
            .is_some_and(|client| client.serial == serial)
    }

    /// Tells each sender still connected that its message was not sent: `unavailable` to a member, 503 to an API
    /// request.
    fn refuse_senders(&mut self, senders: &[Sender]) {
        for &sender in senders {
            match sender {
                Sender::Member(key, serial) => {
                    if self.still_there((key, serial)) {
                        self.chat.refuse_unavailable(key, &mut self.actions);
                    }
                }
                Sender::Api(key, serial) => self.answer_later(
                    (key, serial),
                    Err(unavailable(
                        "the cluster engine (Redis) did not take the message",
                    )),
                ),
            }
        }
    }

    /// Answers each API request among `senders` with the seq the publish script gave its message: the script
    /// numbers a call's messages one after another from `first`.
    fn answer_api_senders(&mut self, senders: &[Sender], first: i64) {
        for (offset, sender) in (0_i64..).zip(senders) {
            if let Sender::Api(key, serial) = *sender {
                let seq = first.saturating_add(offset);
                self.answer_later((key, serial), Ok(json!({ "seq": seq }).to_string()));
            }
        }
    }

    /// The chat asked for a chat message to be published to `room`: it waits for the end of the turn, when the
    /// room's messages go to Redis in one script call. Refused at once while Redis is not ready.
    pub(super) fn publish(&mut self, key: usize, room: Rc<str>, tail: Rc<str>) {
        let Some((key, serial)) = who(self, key) else {
            return;
        };
        let sender = Sender::Member(key, serial);
        if !self.cluster_ready() {
            self.refuse_senders(&[sender]);
            return;
        }
        self.queue_publication(sender, room, tail);
    }

    /// An `/api/publish` on connection `key`, for the cluster engine to number like a member's message: it goes
    /// with the turn's publications of its room (subscribing to the room first if nobody here is in it), and the
    /// request is answered with the script's seq, or 503. False, with nothing queued, while Redis is not ready.
    pub(super) fn publish_for_api(
        &mut self,
        key: usize,
        publication: chat::AppPublication,
    ) -> bool {
        let Some((key, serial)) = who(self, key) else {
            return false;
        };
        if !self.cluster_ready() {
            return false;
        }
        self.queue_publication(Sender::Api(key, serial), publication.room, publication.tail);
        true
    }

    /// Puts a message into its room's publications of this turn.
    fn queue_publication(&mut self, sender: Sender, room: Rc<str>, tail: Rc<str>) {
        let Some(relay) = self.relay_mut() else {
            return;
        };
        let first = relay
            .rooms
            .get(&room)
            .is_none_or(|channel| channel.pending.is_empty());
        if first {
            relay.to_publish.push(room.clone());
        }
        relay.add_room(room).pending.push(Pending { sender, tail });
    }

    /// The chat asked for a name across the cluster, and the state of `room`, for a joiner. The join waits for the
    /// room's subscription (`queue_claims`); refused at once while Redis is not ready.
    pub(super) fn claim_name(
        &mut self,
        key: usize,
        name: Rc<str>,
        room: Rc<str>,
        token: Rc<str>,
        shown: Option<Rc<str>>,
    ) {
        let Some((key, serial)) = who(self, key) else {
            return;
        };
        if !self.cluster_ready() {
            let now = super::chat_time(self.now);
            self.chat.name_claimed(
                key,
                &name,
                &room,
                ClaimAnswer::Unavailable,
                now,
                &mut self.actions,
            );
            return;
        }
        let Some(relay) = self.relay_mut() else {
            return;
        };
        let first = relay
            .rooms
            .get(&room)
            .is_none_or(|channel| channel.claims.is_empty());
        if first {
            relay.to_claim.push(room.clone());
        }
        relay.add_room(room).claims.push(WaitingJoin {
            key,
            serial,
            name,
            token,
            shown,
        });
    }

    /// One join script per join waiting in a room whose subscription is confirmed; the others wait for theirs.
    fn queue_claims(&mut self) {
        if self
            .relay_mut()
            .is_none_or(|relay| relay.to_claim.is_empty())
        {
            return;
        }
        let ready = self.cluster_ready();
        let fresh = self.chat.fresh_epoch(super::chat_time(self.now));
        let Some(relay) = self.relay_mut() else {
            return;
        };
        let mut unavailable: Vec<(usize, u32, Rc<str>, Rc<str>)> = Vec::new();
        let mut due: Vec<(Rc<str>, Vec<WaitingJoin>)> = Vec::new();
        let mut waiting = Vec::new();
        for room in std::mem::take(&mut relay.to_claim) {
            let Some(channel) = relay.rooms.get_mut(&room) else {
                continue;
            };
            if !ready {
                unavailable.extend(
                    channel
                        .claims
                        .drain(..)
                        .map(|join| (join.key, join.serial, join.name, room.clone())),
                );
            } else if channel.subscribed == Subscribed::Yes {
                channel.claims_in_flight += channel.claims.len();
                due.push((room, std::mem::take(&mut channel.claims)));
            } else {
                waiting.push(room);
            }
        }
        relay.to_claim = waiting;
        for (room, claims) in due {
            let (known_epoch, known_seq) = self
                .chat
                .room_sync_point(&room)
                .unwrap_or_else(|| (Rc::from(""), 0));
            let Some(cluster) = self.cluster.as_mut() else {
                return;
            };
            for WaitingJoin {
                key,
                serial,
                name,
                token,
                shown,
            } in claims
            {
                let (relay, link) = cluster.relay_and_commands();
                let keys = [
                    keys::name_key(&name),
                    keys::room_epoch_key(&room),
                    keys::room_seq_key(&room),
                    keys::room_stream_key(&room),
                    keys::room_members_key(&room),
                ];
                let known_seq = known_seq.to_string();
                let args: [&[u8]; 9] = [
                    relay.node.as_str().as_bytes(),
                    relay.name_ttl.as_bytes(),
                    fresh.as_bytes(),
                    known_epoch.as_bytes(),
                    known_seq.as_bytes(),
                    relay.history_len.as_bytes(),
                    token.as_bytes(),
                    shown.as_deref().unwrap_or_default().as_bytes(),
                    keys::NODE_CHANNEL_PREFIX.as_bytes(),
                ];
                let job = Job::Claim {
                    client: (key, serial),
                    name: name.clone(),
                    room: room.clone(),
                };
                let keys = [&keys[0][..], &keys[1], &keys[2], &keys[3], &keys[4]];
                if !queue_script(link, relay.join, &keys, &args, job) {
                    if let Some(channel) = relay.rooms.get_mut(&room) {
                        channel.claims_in_flight = channel.claims_in_flight.saturating_sub(1);
                    }
                    unavailable.push((key, serial, name, room.clone()));
                }
            }
        }
        let now = super::chat_time(self.now);
        for (key, serial, name, room) in unavailable {
            if self.still_there((key, serial)) {
                self.chat.name_claimed(
                    key,
                    &name,
                    &room,
                    ClaimAnswer::Unavailable,
                    now,
                    &mut self.actions,
                );
            }
            self.release_held(&room);
            self.forget_room_if_unused(&room);
        }
    }

    /// A room nobody here is in, or about to be, is unsubscribed from.
    fn forget_room_if_unused(&mut self, room: &Rc<str>) {
        if self.chat.room_is_occupied(room) {
            return;
        }
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let idle = cluster
            .relay
            .rooms
            .get(room)
            .is_some_and(RoomChannel::is_idle);
        if !idle {
            return;
        }
        if let Some(channel) = cluster.relay.rooms.remove(room) {
            if channel.subscribed != Subscribed::No {
                let name = keys::room_channel(room);
                cluster.on_subscriber(|link| link.unsubscribe(&[&name]));
            }
        }
    }

    /// Nobody here holds the name any more: reserved across the cluster for the grace period, then free. While
    /// Redis is away nothing is sent: the name's key expires by itself.
    pub(super) fn release_name(&mut self, name: Rc<str>, grace_ms: u64) {
        if !self.cluster_ready() {
            return;
        }
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let (relay, link) = cluster.relay_and_commands();
        let grace = grace_ms.to_string();
        let args: [&[u8]; 2] = [relay.node.as_str().as_bytes(), grace.as_bytes()];
        queue_script(
            link,
            relay.release,
            &[&keys::name_key(&name)],
            &args,
            Job::Housekeeping,
        );
    }

    /// An `/api/disconnect` carried out here, told to every other node on the cluster's channel, whose relays
    /// carry it out on their own connections. False, with nothing sent, while Redis is not ready.
    pub(super) fn disconnect_across_cluster(
        &mut self,
        user: &str,
        code: u16,
        reason: &str,
    ) -> bool {
        if !self.cluster_ready() {
            return false;
        }
        let Some(cluster) = self.cluster.as_mut() else {
            return false;
        };
        let (relay, link) = cluster.relay_and_commands();
        let Some(link) = link else {
            return false;
        };
        let message = keys::disconnect_message(relay.node.as_str(), code, user, reason);
        let words: [&[u8]; 3] = [b"PUBLISH", keys::CLUSTER_CHANNEL.as_bytes(), &message];
        match link.queue(&words, Tag::Relay(Job::Housekeeping)) {
            Ok(()) => true,
            Err(e) => {
                warn!("cannot send a disconnect to the cluster: {e}");
                false
            }
        }
    }

    /// An `/api/dm` to a name nobody here holds: the DM script hands it to the node holding it, and request `key`
    /// is answered whether one did. False, with nothing sent, while Redis is not ready.
    pub(super) fn relay_dm_for_api(&mut self, key: usize, dm: chat::AppDm) -> bool {
        let Some(request) = who(self, key) else {
            return false;
        };
        self.cluster_ready()
            && self.cluster.as_mut().is_some_and(|cluster| {
                let (relay, link) = cluster.relay_and_commands();
                let args: [&[u8]; 2] = [keys::NODE_CHANNEL_PREFIX.as_bytes(), dm.text.as_bytes()];
                queue_script(
                    link,
                    relay.dm,
                    &[&keys::name_key(&dm.to_key)],
                    &args,
                    Job::ApiDm { request },
                )
            })
    }

    /// An `/api/rooms/NAME` on a node of a cluster: the room's presence hash (name to node) is read, and request
    /// `key` is answered with its names. False, with nothing sent, while Redis is not ready.
    pub(super) fn room_members_for_api(&mut self, key: usize, room: &str, asked: String) -> bool {
        let hash = keys::room_members_key(room);
        self.read_hash_for_api(key, &hash, |request| Job::ApiRoom { request, asked })
    }

    /// An `/api/rooms` on a node of a cluster: the hash of rooms (room to member count, kept by the presence script
    /// and the heartbeat) is read, and request `key` is answered with it. False, with nothing sent, while Redis is not
    /// ready.
    pub(super) fn rooms_for_api(&mut self, key: usize) -> bool {
        self.read_hash_for_api(key, keys::ROOMS.as_bytes(), |request| Job::ApiRooms {
            request,
        })
    }

    /// Reads Redis hash `hash` whole for API request `key`, whose answer `job` makes of the reply. False, with
    /// nothing sent, while Redis is not ready or the request is gone.
    fn read_hash_for_api(
        &mut self,
        key: usize,
        hash: &[u8],
        job: impl FnOnce((usize, u32)) -> Job,
    ) -> bool {
        let Some(request) = who(self, key) else {
            return false;
        };
        if !self.cluster_ready() {
            return false;
        }
        let Some(link) = self
            .cluster
            .as_mut()
            .and_then(|cluster| cluster.relay_and_commands().1)
        else {
            return false;
        };
        // HGETALL answers field, value, field, value... (https://redis.io/commands/hgetall).
        let words: [&[u8]; 2] = [b"HGETALL", hash];
        link.queue(&words, Tag::Relay(job(request))).is_ok()
    }

    /// A DM to a name held on another node, if any: the DM script hands it to that node's channel.
    pub(super) fn relay_dm(&mut self, key: usize, to_key: Rc<str>, text: Rc<str>, copy: Rc<str>) {
        let Some(client) = who(self, key) else {
            return;
        };
        let queued = self.cluster_ready()
            && self.cluster.as_mut().is_some_and(|cluster| {
                let (relay, link) = cluster.relay_and_commands();
                let args: [&[u8]; 2] = [keys::NODE_CHANNEL_PREFIX.as_bytes(), text.as_bytes()];
                queue_script(
                    link,
                    relay.dm,
                    &[&keys::name_key(&to_key)],
                    &args,
                    Job::Dm { client, copy },
                )
            });
        if !queued {
            self.chat.refuse_unavailable(key, &mut self.actions);
        }
    }

    /// The reply to one of the chat's commands.
    pub(super) fn on_relay_reply(&mut self, job: Job, reply: Reply) {
        match job {
            Job::Publish { room, senders } => {
                if let Some(error) = reply.error() {
                    warn!("Redis refused a publication: {error}");
                    if let Some(relay) = self.relay_mut() {
                        relay.publish_errors += senders.len() as u64;
                    }
                    self.refuse_senders(&senders);
                } else if let Some(first) = reply.as_int() {
                    self.answer_api_senders(&senders, first);
                } else {
                    warn!("Redis answered a publication oddly: {reply:?}");
                    let api: Vec<Sender> = senders
                        .into_iter()
                        .filter(|sender| matches!(sender, Sender::Api(..)))
                        .collect();
                    self.refuse_senders(&api);
                }
                // A room subscribed to only for an API publication is let go once it is published.
                self.forget_room_if_unused(&room);
            }
            Job::Claim { client, name, room } => {
                if let Some(channel) = self
                    .relay_mut()
                    .and_then(|relay| relay.rooms.get_mut(&room))
                {
                    channel.claims_in_flight = channel.claims_in_flight.saturating_sub(1);
                }
                let node = self
                    .cluster
                    .as_ref()
                    .map(|cluster| cluster.relay.node.to_string())
                    .unwrap_or_default();
                let answer = join_answer(&reply, &node);
                if answer == ClaimAnswer::Unavailable {
                    warn!("Redis refused a join, or answered it oddly: {reply:?}");
                }
                let granted = matches!(answer, ClaimAnswer::Granted(_));
                if self.still_there(client) {
                    let now = super::chat_time(self.now);
                    self.chat
                        .name_claimed(client.0, &name, &room, answer, now, &mut self.actions);
                }
                // Granted to a joiner that left, or that asked for another name meanwhile: nobody holds it here.
                if granted && !self.chat.holds_name(&name) {
                    self.release_name(name, 0);
                }
                self.release_held(&room);
                self.forget_room_if_unused(&room);
            }
            Job::Dm { client, copy } => {
                if !self.still_there(client) {
                    return;
                }
                match reply.as_int() {
                    Some(n) if n > 0 => self.actions.push(Action::Send {
                        to: client.0,
                        payload: copy,
                    }),
                    Some(_) => self.chat.refuse_not_online(client.0, &mut self.actions),
                    None => self.chat.refuse_unavailable(client.0, &mut self.actions),
                }
            }
            Job::ApiDm { request } => {
                let answer = match reply.as_int() {
                    Some(n) => Ok(json!({ "delivered": n > 0 }).to_string()),
                    None => Err(unavailable(
                        "the cluster engine (Redis) did not take the DM",
                    )),
                };
                self.answer_later(request, answer);
            }
            Job::ApiRoom { request, asked } => {
                let answer = match members_answer(&reply) {
                    Some(members) => Ok(
                        json!({"room": asked, "count": members.len(), "members": members})
                            .to_string(),
                    ),
                    None => Err(unavailable("the cluster engine (Redis) did not answer")),
                };
                self.answer_later(request, answer);
            }
            Job::ApiRooms { request } => {
                let answer = match rooms_answer(&reply) {
                    Some(rooms) => {
                        let rooms: Vec<_> = rooms
                            .iter()
                            .map(|(room, members)| json!({"room": room, "members": members}))
                            .collect();
                        Ok(json!({ "rooms": rooms }).to_string())
                    }
                    None => Err(unavailable("the cluster engine (Redis) did not answer")),
                };
                self.answer_later(request, answer);
            }
            Job::Recover { room } => {
                match recover_answer(&reply) {
                    Some((epoch, messages)) => {
                        for text in &messages {
                            self.deliver_from_redis(&epoch, text, true);
                        }
                    }
                    None => warn!("Redis did not answer a room's recovery: {reply:?}"),
                }
                self.recovery_done(&room);
            }
            Job::Housekeeping => {
                if let Some(error) = reply.error() {
                    warn!("Redis refused a heartbeat or a name release: {error}");
                } else if let Some(dead) = reply.as_array().filter(|dead| !dead.is_empty()) {
                    info!("nodes not heard from in 3 heartbeats, removed: {dead:?}");
                }
            }
        }
    }

    /// Commands that will never be answered (the command connection broke): each waiting client is told.
    pub(super) fn on_relay_lost(&mut self, jobs: Vec<Job>) {
        let now = super::chat_time(self.now);
        for job in jobs {
            match job {
                Job::Publish { room, senders } => {
                    if let Some(relay) = self.relay_mut() {
                        relay.publish_errors += senders.len() as u64;
                    }
                    self.refuse_senders(&senders);
                    self.forget_room_if_unused(&room);
                }
                Job::Claim { client, name, room } => {
                    if let Some(channel) = self
                        .relay_mut()
                        .and_then(|relay| relay.rooms.get_mut(&room))
                    {
                        channel.claims_in_flight = channel.claims_in_flight.saturating_sub(1);
                    }
                    if self.still_there(client) {
                        self.chat.name_claimed(
                            client.0,
                            &name,
                            &room,
                            ClaimAnswer::Unavailable,
                            now,
                            &mut self.actions,
                        );
                    }
                    self.release_held(&room);
                    self.forget_room_if_unused(&room);
                }
                Job::Dm { client, .. } => {
                    self.refuse_senders(&[Sender::Member(client.0, client.1)])
                }
                Job::ApiDm { request } => self.answer_later(
                    request,
                    Err(unavailable("the cluster engine (Redis) did not answer")),
                ),
                Job::ApiRoom { request, .. } | Job::ApiRooms { request } => self.answer_later(
                    request,
                    Err(unavailable("the cluster engine (Redis) did not answer")),
                ),
                Job::Recover { room } => self.recovery_done(&room),
                Job::Housekeeping => {}
            }
        }
    }

    /// A push on the subscriber connection: a confirmation, or a message on a room's, this node's or the cluster's
    /// channel.
    pub(super) fn on_relay_push(&mut self, event: LinkEvent<Tag>) {
        let Some(relay) = self.cluster.as_mut().map(|cluster| &mut cluster.relay) else {
            return;
        };
        match event {
            LinkEvent::Subscribed { channel, .. } if channel == relay.node_channel => {
                relay.node_subscribed = Subscribed::Yes;
            }
            LinkEvent::Subscribed { channel, .. } => {
                let Some(room) = keys::room_of_channel(&channel) else {
                    return;
                };
                let Some(name) = relay
                    .rooms
                    .get_key_value(room)
                    .map(|(name, _)| name.clone())
                else {
                    return;
                };
                if let Some(due) = relay.confirmations_due.get_mut(room) {
                    *due = due.saturating_sub(1);
                    if *due > 0 {
                        // The confirmation of an earlier SUBSCRIBE, from before an UNSUBSCRIBE.
                        return;
                    }
                    relay.confirmations_due.remove(room);
                }
                let Some(state) = relay.rooms.get_mut(room) else {
                    return;
                };
                if state.subscribed != Subscribed::Asked {
                    return;
                }
                state.subscribed = Subscribed::Yes;
                // Back after the subscription was down: what was published meanwhile is read from the stream, and
                // what arrives from now on waits behind it.
                if std::mem::take(&mut state.needs_recovery) {
                    state.recovering = true;
                    state.held.get_or_insert_with(Vec::new);
                    relay.to_recover.push(name);
                }
            }
            LinkEvent::Message { channel, payload } => {
                if channel == keys::CLUSTER_CHANNEL.as_bytes() {
                    match keys::split_disconnect(&payload) {
                        // The calling node closed its own connections already.
                        Some(disconnect) if disconnect.node != relay.node.as_str() => {
                            let now = super::chat_time(self.now);
                            let closed = self.chat.disconnect_user(
                                disconnect.user,
                                crate::protocol::CloseCode::new(disconnect.code),
                                disconnect.reason,
                                now,
                                &mut self.actions,
                            );
                            debug!("a disconnect from node {}: {closed:?}", disconnect.node);
                        }
                        Some(_) => {}
                        None => debug!("not a cluster message: {payload:?}"),
                    }
                    return;
                }
                if let Some((node, event)) = keys::split_presence(&payload) {
                    if node != relay.node.as_str() {
                        if let Some(room) = keys::room_of_channel(&channel) {
                            self.chat.remote_presence(room, event, &mut self.actions);
                        }
                    }
                    return;
                }
                if channel == relay.node_channel {
                    if let Some(name) = keys::replaced_name(&payload) {
                        let now = super::chat_time(self.now);
                        self.chat.replaced_elsewhere(name, now, &mut self.actions);
                    } else if let Ok(text) = std::str::from_utf8(&payload) {
                        self.chat.deliver_relayed_dm(text, &mut self.actions);
                    }
                    return;
                }
                let Some((epoch, text)) = keys::split_published(&payload) else {
                    debug!("not a room message from Redis: {payload:?}");
                    return;
                };
                let room = keys::room_of_channel(&channel);
                let state = room.and_then(|room| relay.rooms.get_mut(room));
                if let Some(state) = state {
                    // Whether anyone here is in the room matters only while a join is in flight.
                    if state.held.is_none()
                        && state.claims_in_flight > 0
                        && !room.is_some_and(|room| self.chat.room_is_occupied(room))
                    {
                        state.held = Some(Vec::new());
                    }
                    if let Some(held) = state.held.as_mut() {
                        held.push((epoch.to_owned(), text.to_owned()));
                        return;
                    }
                }
                self.deliver_from_redis(epoch, text, false);
            }
            LinkEvent::SubscriptionRefused { .. }
            | LinkEvent::Reply { .. }
            | LinkEvent::PatternMessage { .. }
            | LinkEvent::Unsubscribed { .. } => {}
        }
    }

    /// One chat message from Redis (from the subscription, or from the stream when `recovered`), to the chat.
    fn deliver_from_redis(&mut self, epoch: &str, text: &str, recovered: bool) {
        let delivery = self.chat.deliver_published(epoch, text, &mut self.actions);
        let Some(relay) = self.relay_mut() else {
            return;
        };
        if recovered && matches!(delivery, Delivery::Delivered { .. } | Delivery::Restarted) {
            relay.recovered += 1;
        }
        match delivery {
            Delivery::Delivered { gap: true } => relay.gaps += 1,
            Delivery::Restarted => {
                warn!("a room's seqs began again: Redis lost its data; the room has a new epoch")
            }
            Delivery::Malformed => debug!("not a chat message from Redis: {text}"),
            Delivery::Delivered { gap: false } | Delivery::NotHere | Delivery::Stale => {}
        }
    }

    /// Reads each room's gap from its stream, once its subscription is back; while Redis is not ready, the
    /// messages held for it are delivered as they are (the gap is counted).
    fn queue_recoveries(&mut self) {
        let ready = self.cluster_ready();
        let rooms = match self.relay_mut() {
            Some(relay) => std::mem::take(&mut relay.to_recover),
            None => return,
        };
        for room in rooms {
            let known = self.chat.room_sync_point(&room);
            let queued = ready
                && self.cluster.as_mut().is_some_and(|cluster| {
                    let (relay, link) = cluster.relay_and_commands();
                    let (epoch, seq) = known.unwrap_or_else(|| (Rc::from(""), 0));
                    let seq = seq.to_string();
                    let keys = [keys::room_epoch_key(&room), keys::room_stream_key(&room)];
                    let args: [&[u8]; 3] = [
                        epoch.as_bytes(),
                        seq.as_bytes(),
                        relay.history_len.as_bytes(),
                    ];
                    let job = Job::Recover { room: room.clone() };
                    queue_script(link, relay.recover, &[&keys[0], &keys[1]], &args, job)
                });
            if !queued {
                self.recovery_done(&room);
            }
        }
    }

    /// A room's gap was read from its stream (or will not be): what was held behind it can go.
    fn recovery_done(&mut self, room: &str) {
        if let Some(state) = self.relay_mut().and_then(|relay| relay.rooms.get_mut(room)) {
            state.recovering = false;
        }
        self.release_held(room);
    }

    /// Delivers what the subscription brought while a room's messages were held, and stops holding, once nothing
    /// holds them any more: no gap being read, and no join script in flight unless someone here is in the room
    /// (the first joiner granted has its answer's state, and what came after it follows).
    fn release_held(&mut self, room: &str) {
        let occupied = self.chat.room_is_occupied(room);
        let held = self
            .relay_mut()
            .and_then(|relay| relay.rooms.get_mut(room))
            .filter(|state| !state.recovering && (state.claims_in_flight == 0 || occupied))
            .and_then(|state| state.held.take())
            .unwrap_or_default();
        for (epoch, text) in held {
            self.deliver_from_redis(&epoch, &text, false);
        }
    }

    /// The chat's part of the turn, before the connections write: follow the rooms' occupancy, ask for the
    /// subscriptions still missing, send each room's publications, and the heartbeat when it is due.
    pub(super) fn relay_turn(&mut self) {
        self.follow_occupancy();
        self.queue_subscriptions();
        self.queue_claims();
        self.queue_recoveries();
        self.queue_publications();
        self.queue_presence();
        self.queue_heartbeat();
    }

    /// A member joined or left a room here: the cluster is told with the turn (or once Redis is back).
    pub(super) fn relay_presence(&mut self, room: Rc<str>, user: Rc<str>, joined: bool) {
        if let Some(relay) = self.relay_mut() {
            relay.presence_queue.push((room, user, joined));
        }
    }

    /// The turn's arrivals and departures, one presence script call each, when Redis is ready.
    fn queue_presence(&mut self) {
        if self
            .relay_mut()
            .is_none_or(|relay| relay.presence_queue.is_empty())
            || !self.cluster_ready()
        {
            return;
        }
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let (relay, mut link) = cluster.relay_and_commands();
        let node_members = keys::node_members_key(relay.node.as_str());
        for (room, user, joined) in std::mem::take(&mut relay.presence_queue) {
            let room_members = keys::room_members_key(&room);
            let channel = keys::room_channel(&room);
            let event = chat::Chat::presence_event(&user, joined);
            let args: [&[u8]; 6] = [
                relay.node.as_str().as_bytes(),
                &channel,
                room.as_bytes(),
                user.as_bytes(),
                if joined { b"1" } else { b"0" },
                event.as_bytes(),
            ];
            let keys: [&[u8]; 3] = [&room_members, &node_members, keys::ROOMS.as_bytes()];
            queue_script(
                link.as_deref_mut(),
                relay.presence,
                &keys,
                &args,
                Job::Housekeeping,
            );
        }
    }

    /// Subscribes to the rooms that gained a member here, unsubscribes from those that lost their last.
    fn follow_occupancy(&mut self) {
        let changes = self.chat.take_occupancy_changes();
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let relay = &mut cluster.relay;
        let mut refused = Vec::new();
        let mut leave: Vec<Vec<u8>> = Vec::new();
        for (room, occupied) in changes {
            if occupied {
                relay.add_room(room);
            } else if relay
                .rooms
                .get(&room)
                .is_some_and(|channel| channel.claims.is_empty() && channel.claims_in_flight == 0)
            {
                if let Some(channel) = relay.rooms.remove(&room) {
                    if channel.subscribed != Subscribed::No {
                        leave.push(keys::room_channel(&room));
                    }
                    refused.extend(channel.pending.iter().map(|p| p.sender));
                }
            }
        }
        let names: Vec<&[u8]> = leave.iter().map(Vec::as_slice).collect();
        // UNSUBSCRIBE answers one confirmation per channel (https://redis.io/commands/unsubscribe).
        cluster.on_subscriber(|link| link.unsubscribe(&names));
        self.refuse_senders(&refused);
    }

    /// Asks, in one `SUBSCRIBE`, for this node's channel and the rooms' channels not yet asked for on the current
    /// subscriber connection.
    fn queue_subscriptions(&mut self) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        if !cluster.has_subscriber() {
            return;
        }
        let relay = &mut cluster.relay;
        let mut channels: Vec<Vec<u8>> = Vec::new();
        if relay.node_subscribed == Subscribed::No {
            relay.node_subscribed = Subscribed::Asked;
            channels.push(relay.node_channel.clone());
            // The cluster's channel goes with the node's, on every subscriber connection.
            channels.push(keys::CLUSTER_CHANNEL.as_bytes().to_vec());
        }
        for room in relay.to_subscribe.drain(..) {
            if let Some(channel) = relay.rooms.get_mut(&room) {
                if channel.subscribed == Subscribed::No {
                    channel.subscribed = Subscribed::Asked;
                    channels.push(keys::room_channel(&room));
                    *relay.confirmations_due.entry(room).or_default() += 1;
                }
            }
        }
        let names: Vec<&[u8]> = channels.iter().map(Vec::as_slice).collect();
        cluster.on_subscriber(|link| link.subscribe(&names));
    }

    /// One script call per room with publications whose subscription is confirmed; the others wait for theirs.
    fn queue_publications(&mut self) {
        if !self.cluster_ready() {
            let mut refused = Vec::new();
            if let Some(relay) = self.relay_mut() {
                for room in std::mem::take(&mut relay.to_publish) {
                    if let Some(channel) = relay.rooms.get_mut(&room) {
                        refused.extend(channel.pending.drain(..).map(|p| p.sender));
                    }
                }
            }
            self.refuse_senders(&refused);
            return;
        }
        if self
            .relay_mut()
            .is_none_or(|relay| relay.to_publish.is_empty())
        {
            return;
        }
        // Used only by a room Redis has no epoch for (new, or lost): one per turn is enough.
        let fresh = self.chat.fresh_epoch(super::chat_time(self.now));
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let mut waiting = Vec::new();
        let (relay, mut link) = cluster.relay_and_commands();
        for room in std::mem::take(&mut relay.to_publish) {
            let Some(channel) = relay.rooms.get_mut(&room) else {
                continue;
            };
            if channel.subscribed != Subscribed::Yes {
                // Published before this node listens, its own members would miss it: it waits.
                waiting.push(room);
                continue;
            }
            let head = chat::chat_message_head(&room);
            let channel_name = keys::room_channel(&room);
            let mut args: Vec<&[u8]> = Vec::with_capacity(4 + channel.pending.len());
            args.push(&channel_name);
            args.push(relay.history_len.as_bytes());
            args.push(fresh.as_bytes());
            args.push(head.as_bytes());
            args.extend(channel.pending.iter().map(|p| p.tail.as_bytes()));
            let senders = channel.pending.iter().map(|p| p.sender).collect();
            let keys = [
                keys::room_seq_key(&room),
                keys::room_stream_key(&room),
                keys::room_epoch_key(&room),
            ];
            let job = Job::Publish {
                room: room.clone(),
                senders,
            };
            let keys = [&keys[0][..], &keys[1], &keys[2]];
            if !queue_script(link.as_deref_mut(), relay.publish, &keys, &args, job) {
                // Not expected: the command connection is ready.
                warn!("the publications of room {room} could not be queued");
            }
            channel.pending.clear();
        }
        relay.to_publish = waiting;
    }

    /// One call of the node's heartbeat, when it is due and the command connection is ready: it tells Redis the
    /// node is alive, renews the next batch of the names held here (`cluster::renewal`: spread over the interval, so
    /// that no call holds Redis for long), and removes the nodes not heard from.
    fn queue_heartbeat(&mut self) {
        let now = self.now;
        let due = self
            .cluster
            .as_ref()
            .is_some_and(|cluster| now.0 >= cluster.relay.renewal.next_due());
        if !due || !self.cluster_ready() {
            return;
        }
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let chat = &self.chat;
        let (relay, link) = cluster.relay_and_commands();
        let batch = relay
            .renewal
            .take_batch(now.0, || chat.held_name_keys().map(str::to_owned));
        // The batch was cut when its cycle began: a name let go since is not renewed (nor written back).
        let names: Vec<Vec<u8>> = batch
            .iter()
            .filter(|name| chat.holds_name(name))
            .map(|name| keys::name_key(name))
            .collect();
        let mut keys: Vec<&[u8]> = Vec::with_capacity(2 + names.len());
        keys.push(keys::NODES.as_bytes());
        keys.push(keys::ROOMS.as_bytes());
        keys.extend(names.iter().map(Vec::as_slice));
        let args: [&[u8]; 4] = [
            relay.node.as_str().as_bytes(),
            relay.name_ttl.as_bytes(),
            keys::NODE_CHANNEL_PREFIX.as_bytes(),
            keys::ROOM_CHANNEL_PREFIX.as_bytes(),
        ];
        queue_script(link, relay.heartbeat, &keys, &args, Job::Housekeeping);
    }
}

/// A 503 for an API request the cluster engine could not carry.
fn unavailable(why: &'static str) -> ApiError {
    ApiError::Unavailable(why.into())
}

/// The members' names in an `HGETALL` of a room's presence hash (name, node, name, node...); `None` for anything
/// but an array.
fn members_answer(reply: &Reply) -> Option<Vec<String>> {
    let fields = reply.as_array()?;
    Some(
        fields
            .iter()
            .step_by(2)
            .filter_map(|field| match field {
                OwnedFrame::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
                _ => None,
            })
            .collect(),
    )
}

/// An `HGETALL` of the hash of rooms, `[room, count, room, count...]`, as rooms and counts sorted by room; `None`
/// for anything else.
fn rooms_answer(reply: &Reply) -> Option<Vec<(String, u64)>> {
    let items = reply.as_array()?;
    if items.len() % 2 != 0 {
        return None;
    }
    let mut rooms = items
        .chunks_exact(2)
        .map(|pair| match pair {
            [OwnedFrame::BulkString(room), OwnedFrame::BulkString(count)] => Some((
                String::from_utf8(room.clone()).ok()?,
                std::str::from_utf8(count).ok()?.parse().ok()?,
            )),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    rooms.sort_unstable();
    Some(rooms)
}

/// The recovery script's answer: `[epoch, [messages]]`; `None` for anything else (an empty epoch: the room has none
/// in Redis, so nothing to read).
fn recover_answer(reply: &Reply) -> Option<(String, Vec<String>)> {
    match reply.as_array()? {
        [OwnedFrame::BulkString(epoch), OwnedFrame::Array(messages)] => {
            let epoch = String::from_utf8(epoch.clone()).ok()?;
            let messages = messages
                .iter()
                .filter_map(|message| match message {
                    OwnedFrame::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
                    _ => None,
                })
                .collect();
            Some((epoch, messages))
        }
        _ => None,
    }
}

/// The join script's answer: `[1, epoch, seq, [messages], [name, node, ...]]` granted (`2` instead of `1`: taken
/// from another node with the joiner's session token; the members on nodes other than `node` kept), `[0]` taken;
/// anything else is unavailable.
fn join_answer(reply: &Reply, node: &str) -> ClaimAnswer {
    let Some(items) = reply.as_array() else {
        return ClaimAnswer::Unavailable;
    };
    match items {
        [OwnedFrame::Integer(0)] => ClaimAnswer::Taken,
        [OwnedFrame::Integer(granted @ (1 | 2)), OwnedFrame::BulkString(epoch), OwnedFrame::Integer(seq), OwnedFrame::Array(messages), OwnedFrame::Array(members)] =>
        {
            let (Ok(epoch), Ok(seq)) = (String::from_utf8(epoch.clone()), u64::try_from(*seq))
            else {
                return ClaimAnswer::Unavailable;
            };
            let messages = messages
                .iter()
                .filter_map(|message| match message {
                    OwnedFrame::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
                    _ => None,
                })
                .collect();
            let members_elsewhere = members
                .chunks_exact(2)
                .filter_map(|pair| match pair {
                    [OwnedFrame::BulkString(name), OwnedFrame::BulkString(held_by)]
                        if held_by.as_slice() != node.as_bytes() =>
                    {
                        String::from_utf8(name.clone()).ok()
                    }
                    _ => None,
                })
                .collect();
            ClaimAnswer::Granted(RoomState {
                epoch,
                seq,
                messages,
                members_elsewhere,
                reclaimed: *granted == 2,
            })
        }
        _ => ClaimAnswer::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> OwnedFrame {
        OwnedFrame::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn a_granted_join_reads_the_rooms_epoch_seq_and_messages() {
        let reply = Reply::from(OwnedFrame::Array(vec![
            OwnedFrame::Integer(1),
            bulk("00112233aabbccdd"),
            OwnedFrame::Integer(42),
            OwnedFrame::Array(vec![bulk("{\"a\":1}"), bulk("{\"b\":2}")]),
            OwnedFrame::Array(vec![bulk("ann"), bulk("n1"), bulk("bob"), bulk("n2")]),
        ]));
        assert_eq!(
            join_answer(&reply, "n1"),
            ClaimAnswer::Granted(RoomState {
                epoch: "00112233aabbccdd".into(),
                seq: 42,
                messages: vec!["{\"a\":1}".into(), "{\"b\":2}".into()],
                members_elsewhere: vec!["bob".into()],
                reclaimed: false,
            })
        );
    }

    #[test]
    fn the_rooms_answer_reads_rooms_and_counts_sorted_by_room() {
        let reply = Reply::from(OwnedFrame::Array(vec![
            bulk("lobby"),
            bulk("2"),
            bulk("annex"),
            bulk("1"),
        ]));
        assert_eq!(
            rooms_answer(&reply),
            Some(vec![("annex".into(), 1), ("lobby".into(), 2)])
        );
        let none = Reply::from(OwnedFrame::Array(Vec::new()));
        assert_eq!(rooms_answer(&none), Some(Vec::new()));
    }

    #[test]
    fn a_rooms_answer_of_another_shape_is_none() {
        let error = Reply::from(OwnedFrame::Error("ERR oops".into()));
        assert_eq!(rooms_answer(&error), None);
        let odd = Reply::from(OwnedFrame::Array(vec![bulk("lobby")]));
        assert_eq!(rooms_answer(&odd), None);
        let negative = Reply::from(OwnedFrame::Array(vec![bulk("lobby"), bulk("-1")]));
        assert_eq!(rooms_answer(&negative), None);
    }

    #[test]
    fn a_refused_join_is_taken_and_anything_else_unavailable() {
        let taken = Reply::from(OwnedFrame::Array(vec![OwnedFrame::Integer(0)]));
        assert_eq!(join_answer(&taken, "n1"), ClaimAnswer::Taken);
        let error = Reply::from(OwnedFrame::Error("ERR oops".into()));
        assert_eq!(join_answer(&error, "n1"), ClaimAnswer::Unavailable);
        let odd = Reply::from(OwnedFrame::Array(vec![OwnedFrame::Integer(1)]));
        assert_eq!(join_answer(&odd, "n1"), ClaimAnswer::Unavailable);
    }
}
