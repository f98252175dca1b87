//! The loop's two connections to Redis (`--redis`): one for commands, one for subscriptions, each a mio socket
//! driven by a sans-IO `cluster::RedisLink`, so the loop never blocks on Redis.
//!
//! Owns connecting (non-blocking, with a timeout), the handshake's outcome, reading replies into the link,
//! writing what the link owes once per turn (so a turn's commands go out pipelined in one write), a `PING` per
//! second on each connection (the round-trip time, and the proof that it is alive), and reconnecting with
//! jittered backoff (`cluster::backoff`) when either connection fails. What the chat sends and receives through
//! them is `relay.rs`'s: this file hands it the replies and pushes, and the commands that will never be answered.
//! It must not decide what the chat says.
//!
//! A host name in `--redis` is resolved at each connection attempt, in the loop: an IP address costs nothing, a
//! name costs a resolver lookup (use an address or `/etc/hosts` where that matters).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::relay::{Job, Relay};
use super::timeouts::Millis;
use super::Server;
use crate::cluster::backoff::Backoff;
use crate::cluster::{Handshake, LinkError, LinkEvent, NodeId, RedisLink, RedisUrl, Script};
use crate::http::metrics::RedisStatus;

/// The command connection's token (the slab's keys never come near `usize::MAX`).
pub(super) const REDIS_COMMANDS: Token = Token(usize::MAX - 2);
/// The subscriber connection's token.
pub(super) const REDIS_SUBSCRIBER: Token = Token(usize::MAX - 3);

/// How often each connection is sent a `PING`.
const PING_INTERVAL_MS: u64 = 1_000;
/// Nothing at all from Redis for this long while a `PING` is unanswered means the connection is dead, whatever TCP
/// says. Judged from the last bytes received, not from the `PING`'s own latency: replies still flowing behind a slow
/// one (or pushes on the subscription) show the connection is alive.
const REPLY_TIMEOUT_MS: u64 = 3_000;
/// How long a TCP connect to Redis may take.
const CONNECT_TIMEOUT_MS: u64 = 2_000;

/// What a command sent to Redis is waiting for.
#[derive(Debug)]
pub(super) enum Tag {
    /// A keepalive `PING`, sent at this instant.
    Ping(Instant),
    /// One of the chat's commands (`relay.rs`).
    Relay(Job),
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
    /// When bytes last came from Redis on this connection (a reply or a push).
    last_heard: Millis,
}

impl Live {
    /// When the connection is judged dead if nothing comes before (`silence_deadline`).
    fn silence_deadline(&self) -> Option<Millis> {
        silence_deadline(self.ping_sent, self.last_heard)
    }
}

/// When a connection is judged dead if nothing comes before: `REPLY_TIMEOUT_MS` after the later of the unanswered
/// `PING` (sent at `ping_sent`) and the last bytes heard; `None` while no `PING` is unanswered.
fn silence_deadline(ping_sent: Option<Millis>, last_heard: Millis) -> Option<Millis> {
    ping_sent.map(|sent| sent.max(last_heard).plus(REPLY_TIMEOUT_MS as u32))
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
    /// Redis refused a subscription (an ACL that denies the channel): the node cannot listen, so it is not ready,
    /// and tries again after the backoff.
    SubscriptionRefused(String),
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::Io(e) => write!(f, "{e}"),
            Lost::Closed => f.write_str("Redis closed the connection"),
            Lost::Link(e) => write!(f, "{e}"),
            Lost::ConnectTimeout => write!(f, "no connection within {CONNECT_TIMEOUT_MS} ms"),
            Lost::ReplyTimeout => write!(
                f,
                "nothing from Redis for {REPLY_TIMEOUT_MS} ms while a PING was unanswered"
            ),
            Lost::SubscriptionRefused(message) => {
                write!(f, "Redis refused a subscription: {message}")
            }
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
    /// Reused for each read's events.
    events: Vec<LinkEvent<Tag>>,
    /// Whether both connections were ready at the end of the last turn (for logging the change).
    was_ready: bool,
    /// The chat's traffic through Redis.
    pub(super) relay: Relay,
}

impl Cluster {
    /// A cluster member with no connection yet: the first turn of the loop connects. `relay` is the chat's side;
    /// its scripts are loaded on the command connection.
    pub(super) fn new(url: RedisUrl, node: NodeId, relay: Relay) -> Cluster {
        let connection = |role: Role| RedisConnection {
            role,
            handshake: match role {
                Role::Commands => relay.scripts().into_iter().fold(
                    Handshake::new(&url, format!("roomcast-{node}-{}", role.name())),
                    Handshake::with_script,
                ),
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
            events: Vec::new(),
            was_ready: false,
            relay,
        }
    }

    /// This node's id.
    pub(super) fn node(&self) -> &NodeId {
        &self.node
    }

    /// Both connections finished their handshakes and are up, and this node listens on its channel.
    pub(super) fn is_ready(&self) -> bool {
        self.commands.is_ready() && self.subscriber.is_ready() && self.relay.is_listening()
    }

    /// The chat's side, and the command connection's link if there is one: apart, so that a call can be built
    /// from the one and queued on the other.
    pub(super) fn relay_and_commands(&mut self) -> (&mut Relay, Option<&mut RedisLink<Tag>>) {
        let link = self.commands.live.as_mut().map(|live| &mut live.link);
        (&mut self.relay, link)
    }

    /// True while a subscriber connection exists (commands queued on it follow its handshake).
    pub(super) fn has_subscriber(&self) -> bool {
        self.subscriber.live.is_some()
    }

    /// Queues a (un)subscription on the subscriber connection, if there is one.
    pub(super) fn on_subscriber(
        &mut self,
        queue: impl FnOnce(&mut RedisLink<Tag>) -> Result<(), LinkError>,
    ) {
        if let Some(live) = self.subscriber.live.as_mut() {
            if let Err(e) = queue(&mut live.link) {
                warn!("cannot encode a subscription: {e}");
            }
        }
    }

    /// The figures `/metrics` shows.
    pub(super) fn status(&self) -> RedisStatus {
        RedisStatus {
            up: self.is_ready(),
            round_trip_us: self.round_trip_us,
            reconnects: self.reconnects,
            publish_errors: self.relay.publish_errors,
            gaps: self.relay.gaps,
            recovered: self.relay.recovered,
        }
    }

    /// The earliest point at which `turn` has something to do.
    pub(super) fn next_deadline(&self) -> Option<Millis> {
        let heartbeat = self.is_ready().then(|| self.relay.next_deadline());
        [&self.commands, &self.subscriber]
            .into_iter()
            .map(RedisConnection::next_deadline)
            .chain(heartbeat)
            .min()
    }

    fn connection_mut(&mut self, role: Role) -> &mut RedisConnection {
        match role {
            Role::Commands => &mut self.commands,
            Role::Subscriber => &mut self.subscriber,
        }
    }
}

/// Queues a script call for the chat on the command connection's `link`; false if there is none, or the call cannot
/// be encoded (logged).
pub(super) fn queue_script(
    link: Option<&mut RedisLink<Tag>>,
    script: Script,
    keys: &[&[u8]],
    args: &[&[u8]],
    job: Job,
) -> bool {
    let Some(link) = link else {
        return false;
    };
    match link.queue_script(&script, keys, args, Tag::Relay(job)) {
        Ok(()) => true,
        Err(e) => {
            warn!("cannot encode a call of script {script:?}: {e}");
            false
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
            Some(live) => live.silence_deadline().unwrap_or(live.next_ping),
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
            last_heard: now,
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

    /// Reads everything waiting into the link, pushing what it decoded onto `events`; `now` is when it was heard.
    fn read_available(
        &mut self,
        buf: &mut [u8],
        events: &mut Vec<LinkEvent<Tag>>,
        now: Millis,
    ) -> Result<(), Lost> {
        loop {
            match self.stream.read(buf) {
                Ok(0) => return Err(Lost::Closed),
                Ok(n) => {
                    self.last_heard = now;
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
        let now = self.now;
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
                    true => live.read_available(&mut buf, &mut events, now),
                    false => Ok(()),
                }),
        };
        self.input = buf;
        let mut outcome = outcome;
        for event in events.drain(..) {
            if let LinkEvent::SubscriptionRefused { message, .. } = &event {
                if outcome.is_ok() {
                    outcome = Err(Lost::SubscriptionRefused(message.clone()));
                }
                continue;
            }
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
                tag: Tag::Relay(job),
                reply,
            } => self.on_relay_reply(job, reply),
            push => self.on_relay_push(push),
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
            cluster.relay.resubscribe();
        }
        let jobs = unanswered
            .into_iter()
            .filter_map(|tag| match tag {
                Tag::Ping(_) => None,
                Tag::Relay(job) => Some(job),
            })
            .collect();
        self.on_relay_lost(jobs);
    }

    /// The Redis side of finishing a turn: connect what is due, time out what is stuck, ping, and write what the
    /// links owe (everything this turn queued, in one write per connection).
    pub(super) fn redis_turn(&mut self) {
        self.relay_turn();
        for role in [Role::Commands, Role::Subscriber] {
            // Before a silent connection is judged dead, what its socket holds is read: with thousands of client
            // sockets ready at once, its readiness may not have been reported in this turn's events yet.
            if self.silence_expired(role) {
                self.on_redis_event(role.token());
            }
        }
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

    /// The connection is up and its silence deadline has passed.
    fn silence_expired(&self, role: Role) -> bool {
        let now = self.now;
        self.cluster.as_ref().is_some_and(|cluster| {
            let connection = match role {
                Role::Commands => &cluster.commands,
                Role::Subscriber => &cluster.subscriber,
            };
            connection.live.as_ref().is_some_and(|live| {
                live.connected
                    && live
                        .silence_deadline()
                        .is_some_and(|deadline| now >= deadline)
            })
        })
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
            .silence_deadline()
            .is_some_and(|deadline| now >= deadline)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ping_unanswered_with_nothing_heard_since_is_dead_after_the_timeout() {
        let deadline = silence_deadline(Some(Millis(10_000)), Millis(9_500));
        assert_eq!(deadline, Some(Millis(10_000 + REPLY_TIMEOUT_MS)));
    }

    #[test]
    fn replies_still_flowing_behind_a_slow_ping_push_the_deadline_on() {
        // The PING went out at 10 s; replies to earlier commands kept coming until 12.9 s.
        let deadline = silence_deadline(Some(Millis(10_000)), Millis(12_900));
        assert_eq!(deadline, Some(Millis(12_900 + REPLY_TIMEOUT_MS)));
    }

    #[test]
    fn with_no_ping_outstanding_silence_is_not_a_failure() {
        assert_eq!(silence_deadline(None, Millis(0)), None);
    }
}
