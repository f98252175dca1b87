//! The loop's two connections to Redis (`--redis`): one for commands, one for subscriptions, each a mio socket
//! driven by a sans-IO `cluster::RedisLink`, so the loop never blocks on Redis.
//!
//! Owns connecting (non-blocking, with a timeout), the handshake's outcome, reading replies into the link,
//! writing what the link owes once per turn (so a turn's commands go out pipelined in one write), a `PING` per
//! second on each connection (the round-trip time, and the proof that it is alive), and reconnecting with
//! jittered backoff (`cluster::backoff`) when either connection fails; and the chat's traffic through them: a
//! subscription to the channel of every room with a member here, one publish script call per room per turn for
//! that room's chat messages (`Action::Publish`), and the messages that come back on the subscriptions, handed to
//! the chat (`Chat::deliver_published`), which delivers them here, this node's own included. It must not decide
//! what the chat says: who gets what is the chat's decision.
//!
//! A host name in `--redis` is resolved at each connection attempt, in the loop: an IP address costs nothing, a
//! name costs a resolver lookup (use an address or `/etc/hosts` where that matters).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Instant;

use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::timeouts::Millis;
use super::Server;
use crate::chat::{self, Delivery};
use crate::cluster::backoff::Backoff;
use crate::cluster::keys;
use crate::cluster::{Handshake, LinkError, LinkEvent, NodeId, RedisLink, RedisUrl, Script};
use crate::http::metrics::RedisStatus;

/// The command connection's token (the slab's keys never come near `usize::MAX`).
pub(super) const REDIS_COMMANDS: Token = Token(usize::MAX - 2);
/// The subscriber connection's token.
pub(super) const REDIS_SUBSCRIBER: Token = Token(usize::MAX - 3);

/// How often each connection is sent a `PING`.
const PING_INTERVAL_MS: u64 = 1_000;
/// A `PING` unanswered this long means the connection is dead, whatever TCP says.
const REPLY_TIMEOUT_MS: u64 = 3_000;
/// How long a TCP connect to Redis may take.
const CONNECT_TIMEOUT_MS: u64 = 2_000;

/// What a command sent to Redis is waiting for.
#[derive(Debug)]
pub(super) enum Tag {
    /// A keepalive `PING`, sent at this instant.
    Ping(Instant),
    /// One room's publish script call, with the senders of its messages (slab key and serial), in order.
    Publish(Vec<(usize, u32)>),
}

/// A chat message waiting for its room's script call.
struct Pending {
    key: usize,
    serial: u32,
    tail: Rc<str>,
}

/// Where the subscription to a room's channel stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subscribed {
    /// Not asked for on the current subscriber connection.
    No,
    /// `SUBSCRIBE` sent, its confirmation not yet back.
    Asked,
    /// Confirmed: this node receives what is published to the room from now on.
    Yes,
}

/// A room with a member on this node.
struct RoomChannel {
    subscribed: Subscribed,
    /// Its chat messages of this turn (and of earlier turns, while the subscription is not yet confirmed).
    pending: Vec<Pending>,
}

/// Which of the two connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Commands,
    Subscriber,
}

impl Role {
    fn token(self) -> Token {
        match self {
            Role::Commands => REDIS_COMMANDS,
            Role::Subscriber => REDIS_SUBSCRIBER,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Role::Commands => "commands",
            Role::Subscriber => "subscriber",
        }
    }
}

/// A connection that exists: its socket and its protocol state.
struct Live {
    stream: TcpStream,
    link: RedisLink<Tag>,
    /// The TCP connect finished.
    connected: bool,
    /// When the connect began.
    since: Millis,
    /// When the next `PING` goes out.
    next_ping: Millis,
    /// When the `PING` in flight was sent, if one is.
    ping_sent: Option<Millis>,
}

/// One of the two connections, in whatever state it is.
struct RedisConnection {
    role: Role,
    handshake: Handshake,
    live: Option<Live>,
    /// When to try again while `live` is `None`.
    retry_at: Millis,
    backoff: Backoff,
    /// It was ready at some point since it was last made (so losing it is a reconnect worth counting).
    was_ready: bool,
}

/// Why a connection to Redis was dropped.
#[derive(Debug)]
enum Lost {
    Io(io::Error),
    Closed,
    Link(LinkError),
    ConnectTimeout,
    ReplyTimeout,
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::Io(e) => write!(f, "{e}"),
            Lost::Closed => f.write_str("Redis closed the connection"),
            Lost::Link(e) => write!(f, "{e}"),
            Lost::ConnectTimeout => write!(f, "no connection within {CONNECT_TIMEOUT_MS} ms"),
            Lost::ReplyTimeout => write!(f, "no answer to PING within {REPLY_TIMEOUT_MS} ms"),
        }
    }
}

/// Everything the loop knows about Redis.
pub(super) struct Cluster {
    node: NodeId,
    url: RedisUrl,
    commands: RedisConnection,
    subscriber: RedisConnection,
    /// The last `PING` round trip on the command connection, in microseconds.
    round_trip_us: u64,
    /// Connections lost after they had been ready.
    reconnects: u64,
    /// Publications Redis refused or never answered.
    publish_errors: u64,
    /// Reused for each read's events.
    events: Vec<LinkEvent<Tag>>,
    /// Whether both connections were ready at the end of the last turn (for logging the change).
    was_ready: bool,
    /// The rooms with a member here, by name.
    rooms: HashMap<Rc<str>, RoomChannel>,
    /// Rooms whose channel is to be subscribed to on the current subscriber connection.
    to_subscribe: Vec<Rc<str>>,
    /// Rooms with messages in `pending`.
    to_publish: Vec<Rc<str>>,
    /// The publish script.
    publish: Script,
    /// The stream's approximate length (`--history`).
    history_len: String,
    /// Chat messages that came back with seqs missing before them.
    gaps: u64,
}

impl Cluster {
    /// A cluster member with no connection yet: the first turn of the loop connects. Room streams keep about
    /// `history_len` messages.
    pub(super) fn new(url: RedisUrl, node: NodeId, history_len: usize) -> Cluster {
        let publish = keys::publish_script();
        let connection = |role: Role| RedisConnection {
            role,
            handshake: match role {
                Role::Commands => Handshake::new(&url, format!("roomcast-{node}-{}", role.name()))
                    .with_script(publish),
                Role::Subscriber => {
                    Handshake::new(&url, format!("roomcast-{node}-{}", role.name()))
                }
            },
            live: None,
            retry_at: Millis(0),
            backoff: Backoff::default(),
            was_ready: false,
        };
        Cluster {
            commands: connection(Role::Commands),
            subscriber: connection(Role::Subscriber),
            node,
            url,
            round_trip_us: 0,
            reconnects: 0,
            publish_errors: 0,
            events: Vec::new(),
            was_ready: false,
            rooms: HashMap::new(),
            to_subscribe: Vec::new(),
            to_publish: Vec::new(),
            publish,
            history_len: history_len.to_string(),
            gaps: 0,
        }
    }

    /// This node's id.
    pub(super) fn node(&self) -> &NodeId {
        &self.node
    }

    /// Both connections finished their handshakes and are up.
    pub(super) fn is_ready(&self) -> bool {
        self.commands.is_ready() && self.subscriber.is_ready()
    }

    /// The figures `/metrics` shows.
    pub(super) fn status(&self) -> RedisStatus {
        RedisStatus {
            up: self.is_ready(),
            round_trip_us: self.round_trip_us,
            reconnects: self.reconnects,
            publish_errors: self.publish_errors,
            gaps: self.gaps,
        }
    }

    /// The earliest point at which `turn` has something to do.
    pub(super) fn next_deadline(&self) -> Option<Millis> {
        [&self.commands, &self.subscriber]
            .into_iter()
            .map(RedisConnection::next_deadline)
            .min()
    }

    fn connection_mut(&mut self, role: Role) -> &mut RedisConnection {
        match role {
            Role::Commands => &mut self.commands,
            Role::Subscriber => &mut self.subscriber,
        }
    }
}

impl RedisConnection {
    fn is_ready(&self) -> bool {
        self.live
            .as_ref()
            .is_some_and(|live| live.connected && live.link.is_ready())
    }

    fn next_deadline(&self) -> Millis {
        match &self.live {
            None => self.retry_at,
            Some(live) if !live.connected => live.since.plus(CONNECT_TIMEOUT_MS as u32),
            Some(live) => match live.ping_sent {
                Some(sent) => sent.plus(REPLY_TIMEOUT_MS as u32),
                None => live.next_ping,
            },
        }
    }

    /// Starts a non-blocking connect to the first address `url` resolves to.
    fn connect(&mut self, url: &RedisUrl, registry: &Registry, now: Millis) -> io::Result<()> {
        let address: SocketAddr = (url.host(), url.port())
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the host has no address"))?;
        let mut stream = TcpStream::connect(address)?;
        registry.register(
            &mut stream,
            self.role.token(),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.live = Some(Live {
            stream,
            link: RedisLink::new(&self.handshake),
            connected: false,
            since: now,
            next_ping: now.plus(PING_INTERVAL_MS as u32),
            ping_sent: None,
        });
        Ok(())
    }

    /// Drops the connection, if there is one, and schedules the next attempt after the backoff; returns the tags
    /// that will never be answered.
    fn drop_live(&mut self, registry: &Registry, now: Millis) -> Vec<Tag> {
        let mut random = [0u8; 4];
        crate::protocol::mask::fill_random(&mut random);
        let wait = self.backoff.next_wait(u32::from_le_bytes(random));
        self.retry_at = now.plus(u32::try_from(wait.as_millis()).unwrap_or(u32::MAX));
        let Some(mut live) = self.live.take() else {
            return Vec::new();
        };
        if let Err(e) = registry.deregister(&mut live.stream) {
            debug!("deregister the Redis {} connection: {e}", self.role.name());
        }
        live.link.into_unanswered().collect()
    }
}

impl Live {
    /// Checks a connect that was in progress: `Ok(true)` once it finished.
    fn finish_connect(&mut self) -> Result<bool, Lost> {
        if self.connected {
            return Ok(true);
        }
        // mio's TcpStream::connect: a writable event means the connect ended; `take_error` says how, and
        // `peer_addr` fails with NotConnected while it has not.
        if let Some(e) = self.stream.take_error().map_err(Lost::Io)? {
            return Err(Lost::Io(e));
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                let _ = self.stream.set_nodelay(true);
                self.connected = true;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(Lost::Io(e)),
        }
    }

    /// Writes what the link owes until it is all written or the socket is full.
    fn write_pending(&mut self) -> Result<(), Lost> {
        while self.connected && self.link.has_output() {
            match self.stream.write(self.link.pending_output()) {
                Ok(0) => return Err(Lost::Closed),
                Ok(n) => self.link.consumed(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Lost::Io(e)),
            }
        }
        Ok(())
    }

    /// Reads everything waiting into the link, pushing what it decoded onto `events`.
    fn read_available(
        &mut self,
        buf: &mut [u8],
        events: &mut Vec<LinkEvent<Tag>>,
    ) -> Result<(), Lost> {
        loop {
            match self.stream.read(buf) {
                Ok(0) => return Err(Lost::Closed),
                Ok(n) => {
                    let bytes = buf.get(..n).unwrap_or_default();
                    self.link.feed(bytes, events).map_err(Lost::Link)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Lost::Io(e)),
            }
        }
    }
}

impl Server {
    /// A readiness event on one of the Redis sockets.
    pub(super) fn on_redis_event(&mut self, token: Token) {
        let role = if token == REDIS_COMMANDS {
            Role::Commands
        } else {
            Role::Subscriber
        };
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let mut events = std::mem::take(&mut cluster.events);
        let mut buf = std::mem::take(&mut self.input);
        let outcome = match cluster.connection_mut(role).live.as_mut() {
            None => Ok(()),
            Some(live) => live
                .finish_connect()
                .and_then(|connected| match connected {
                    true => live.write_pending(),
                    false => Ok(()),
                })
                .and_then(|()| match live.connected {
                    true => live.read_available(&mut buf, &mut events),
                    false => Ok(()),
                }),
        };
        self.input = buf;
        for event in events.drain(..) {
            self.on_redis_link_event(role, event);
        }
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.events = events;
        }
        self.apply_actions();
        if let Err(lost) = outcome {
            self.lose_redis(role, lost);
        }
    }

    /// One decoded reply or message.
    fn on_redis_link_event(&mut self, role: Role, event: LinkEvent<Tag>) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        match event {
            LinkEvent::Reply {
                tag: Tag::Ping(sent),
                ..
            } => {
                let connection = cluster.connection_mut(role);
                if let Some(live) = connection.live.as_mut() {
                    live.ping_sent = None;
                }
                if role == Role::Commands {
                    cluster.round_trip_us =
                        u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                }
            }
            LinkEvent::Reply {
                tag: Tag::Publish(senders),
                reply,
            } => {
                if let Some(error) = reply.error() {
                    warn!("Redis refused a publication: {error}");
                    cluster.publish_errors += senders.len() as u64;
                    self.refuse_senders(&senders);
                }
            }
            LinkEvent::Subscribed { channel, .. } => {
                let room =
                    keys::room_of_channel(&channel).and_then(|room| cluster.rooms.get_mut(room));
                if let Some(room) = room.filter(|room| room.subscribed == Subscribed::Asked) {
                    room.subscribed = Subscribed::Yes;
                }
            }
            LinkEvent::Message { payload, .. } => {
                let Ok(text) = std::str::from_utf8(&payload) else {
                    return;
                };
                match self.chat.deliver_published(text, &mut self.actions) {
                    Delivery::Delivered { gap: true } => cluster.gaps += 1,
                    Delivery::Restarted => {
                        warn!("a room's seqs began again: Redis lost its data; the room has a new epoch")
                    }
                    Delivery::Malformed => debug!("not a chat message from Redis: {text}"),
                    Delivery::Delivered { gap: false } | Delivery::NotHere => {}
                }
            }
            LinkEvent::PatternMessage { .. } | LinkEvent::Unsubscribed { .. } => {}
            LinkEvent::SubscriptionRefused { message, .. } => {
                warn!("Redis refused a subscription: {message}");
            }
        }
    }

    /// Drops a failed connection; it is made again after the backoff.
    fn lose_redis(&mut self, role: Role, lost: Lost) {
        let now = self.now;
        let registry = self.poll.registry();
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let connection = cluster.connection_mut(role);
        let was_ready = std::mem::take(&mut connection.was_ready);
        let unanswered = connection.drop_live(registry, now);
        let wait = connection.retry_at.0.saturating_sub(now.0);
        if was_ready {
            cluster.reconnects += 1;
            warn!(
                "lost the Redis {} connection to {}: {lost}; reconnecting in {wait} ms",
                role.name(),
                cluster.url
            );
        } else {
            debug!(
                "Redis {} connection to {} failed: {lost}; retrying in {wait} ms",
                role.name(),
                cluster.url
            );
        }
        if role == Role::Subscriber {
            // A new subscriber connection subscribes again to every room, and publishes wait for it.
            cluster.to_subscribe = cluster.rooms.keys().cloned().collect();
            for room in cluster.rooms.values_mut() {
                room.subscribed = Subscribed::No;
            }
        }
        let mut refused = Vec::new();
        for tag in unanswered {
            match tag {
                Tag::Ping(_) => {}
                Tag::Publish(senders) => {
                    cluster.publish_errors += senders.len() as u64;
                    refused.extend(senders);
                }
            }
        }
        self.refuse_senders(&refused);
    }

    /// The chat asked for a chat message to be published to `room`: it waits for the end of the turn, when the
    /// room's messages go to Redis in one script call. Refused at once while Redis is not ready.
    pub(super) fn publish(&mut self, key: usize, room: Rc<str>, tail: Rc<str>) {
        let Some(serial) = self.clients.get(key).map(|client| client.serial) else {
            return;
        };
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        if !cluster.is_ready() {
            self.refuse_senders(&[(key, serial)]);
            return;
        }
        let channel = cluster.rooms.entry(room.clone()).or_insert_with(|| {
            cluster.to_subscribe.push(room.clone());
            RoomChannel {
                subscribed: Subscribed::No,
                pending: Vec::new(),
            }
        });
        if channel.pending.is_empty() {
            cluster.to_publish.push(room);
        }
        channel.pending.push(Pending { key, serial, tail });
    }

    /// Tells each sender still connected (the same connection: key and serial) that its message was not sent.
    fn refuse_senders(&mut self, senders: &[(usize, u32)]) {
        for &(key, serial) in senders {
            if self
                .clients
                .get(key)
                .is_some_and(|client| client.serial == serial)
            {
                self.chat.refuse_unavailable(key, &mut self.actions);
            }
        }
    }

    /// Subscribes to the rooms that gained a member here, unsubscribes from those that lost their last.
    fn follow_occupancy(&mut self) {
        let changes = self.chat.take_occupancy_changes();
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let mut refused = Vec::new();
        let mut leave: Vec<Vec<u8>> = Vec::new();
        for (room, occupied) in changes {
            if occupied {
                if !cluster.rooms.contains_key(&room) {
                    cluster.to_subscribe.push(room.clone());
                    cluster.rooms.insert(
                        room,
                        RoomChannel {
                            subscribed: Subscribed::No,
                            pending: Vec::new(),
                        },
                    );
                }
            } else if let Some(channel) = cluster.rooms.remove(&room) {
                if channel.subscribed != Subscribed::No {
                    leave.push(keys::room_channel(&room));
                }
                refused.extend(channel.pending.iter().map(|p| (p.key, p.serial)));
            }
        }
        if let Some(live) = cluster.subscriber.live.as_mut() {
            let names: Vec<&[u8]> = leave.iter().map(Vec::as_slice).collect();
            // UNSUBSCRIBE answers one confirmation per channel (https://redis.io/commands/unsubscribe).
            if let Err(e) = live.link.unsubscribe(&names) {
                warn!("cannot encode UNSUBSCRIBE: {e}");
            }
        }
        self.refuse_senders(&refused);
    }

    /// Queues the subscriptions still to be asked for, in one `SUBSCRIBE`, and each room's script call.
    fn queue_room_traffic(&mut self) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        if let Some(live) = cluster.subscriber.live.as_mut() {
            let mut channels: Vec<Vec<u8>> = Vec::new();
            for room in cluster.to_subscribe.drain(..) {
                if let Some(channel) = cluster.rooms.get_mut(&room) {
                    if channel.subscribed == Subscribed::No {
                        channel.subscribed = Subscribed::Asked;
                        channels.push(keys::room_channel(&room));
                    }
                }
            }
            let names: Vec<&[u8]> = channels.iter().map(Vec::as_slice).collect();
            if let Err(e) = live.link.subscribe(&names) {
                warn!("cannot encode SUBSCRIBE: {e}");
            }
        }
        if !cluster.is_ready() {
            let mut refused = Vec::new();
            for room in cluster.to_publish.drain(..) {
                if let Some(channel) = cluster.rooms.get_mut(&room) {
                    refused.extend(channel.pending.drain(..).map(|p| (p.key, p.serial)));
                }
            }
            self.refuse_senders(&refused);
            return;
        }
        let Some(live) = cluster.commands.live.as_mut() else {
            return;
        };
        let mut waiting = Vec::new();
        for room in cluster.to_publish.drain(..) {
            let Some(channel) = cluster.rooms.get_mut(&room) else {
                continue;
            };
            if channel.subscribed != Subscribed::Yes {
                // Published before this node listens, its own members would miss it: it waits.
                waiting.push(room);
                continue;
            }
            let head = chat::chat_message_head(&room);
            let channel_name = keys::room_channel(&room);
            let mut args: Vec<&[u8]> = Vec::with_capacity(3 + channel.pending.len());
            args.push(&channel_name);
            args.push(cluster.history_len.as_bytes());
            args.push(head.as_bytes());
            args.extend(channel.pending.iter().map(|p| p.tail.as_bytes()));
            let senders = channel.pending.iter().map(|p| (p.key, p.serial)).collect();
            let seq_key = keys::room_seq_key(&room);
            let stream_key = keys::room_stream_key(&room);
            let queued = live.link.queue_script(
                &cluster.publish,
                &[&seq_key, &stream_key],
                &args,
                Tag::Publish(senders),
            );
            if let Err(e) = queued {
                warn!("cannot encode a publication: {e}");
            }
            channel.pending.clear();
        }
        cluster.to_publish = waiting;
    }

    /// The Redis side of finishing a turn: connect what is due, time out what is stuck, ping, and write what the
    /// links owe (everything this turn queued, in one write per connection).
    pub(super) fn redis_turn(&mut self) {
        self.follow_occupancy();
        self.queue_room_traffic();
        for role in [Role::Commands, Role::Subscriber] {
            if let Err(lost) = self.redis_connection_turn(role) {
                self.lose_redis(role, lost);
            }
        }
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let ready = cluster.is_ready();
        if ready != cluster.was_ready {
            cluster.was_ready = ready;
            if ready {
                info!("node {}: Redis at {} is ready", cluster.node, cluster.url);
            } else {
                warn!(
                    "node {}: Redis at {} is unavailable",
                    cluster.node, cluster.url
                );
            }
        }
        // The refusals this turn's Redis work produced go out with the turn's flush.
        self.apply_actions();
    }

    fn redis_connection_turn(&mut self, role: Role) -> Result<(), Lost> {
        let now = self.now;
        let registry = self.poll.registry();
        let Some(cluster) = self.cluster.as_mut() else {
            return Ok(());
        };
        let url = cluster.url.clone();
        let connection = cluster.connection_mut(role);
        let Some(live) = connection.live.as_mut() else {
            if now >= connection.retry_at {
                if let Err(e) = connection.connect(&url, registry, now) {
                    return Err(Lost::Io(e));
                }
            }
            return Ok(());
        };
        if !live.connected {
            if now >= live.since.plus(CONNECT_TIMEOUT_MS as u32) {
                return Err(Lost::ConnectTimeout);
            }
            return Ok(());
        }
        if live
            .ping_sent
            .is_some_and(|sent| now >= sent.plus(REPLY_TIMEOUT_MS as u32))
        {
            return Err(Lost::ReplyTimeout);
        }
        if live.ping_sent.is_none() && now >= live.next_ping {
            live.link
                .queue(&[b"PING"], Tag::Ping(Instant::now()))
                .map_err(Lost::Link)?;
            live.ping_sent = Some(now);
            live.next_ping = now.plus(PING_INTERVAL_MS as u32);
        }
        live.write_pending()?;
        if live.link.is_ready() && !connection.was_ready {
            connection.was_ready = true;
            connection.backoff.reset();
        }
        Ok(())
    }
}
