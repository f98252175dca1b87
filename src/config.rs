//! Everything an operator can set, with the defaults a person running `roomcast` gets.
//!
//! Owns the values only; `main.rs` fills them from flags and environment variables, tests build them directly.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use crate::auth::Verifier;
use crate::chat::ChatConfig;
use crate::cluster::{NodeId, RedisUrl};
use crate::http::api::ApiKey;
use crate::http::origin::OriginPolicy;
use crate::http::Compression;

/// The longest timeout accepted: the loop keeps a connection's times as 32-bit millisecond stamps, which stay
/// exact for any timeout well under 49 days.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Server configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen. Port 0 picks a free port; `Server::local_addr` tells which.
    pub addr: SocketAddr,
    /// The largest message accepted on the chat route, in bytes (10.4; over it: 1009).
    pub chat_max_message_size: usize,
    /// The largest message accepted on `/echo`, in bytes. `/echo` is a test route: by default it accepts what the
    /// chat route accepts; the Autobahn run raises it to 16 MiB.
    pub echo_max_message_size: usize,
    /// The largest HTTP request head, in bytes (over it: 431).
    pub max_header_bytes: usize,
    /// The most open connections; one more gets 503.
    pub max_connections: usize,
    /// The most bytes queued for one connection. A chat client over it is closed with 1008; an echo client is
    /// not read from until its queue drains.
    pub max_queued_bytes: usize,
    /// How long a client has to send a complete request head.
    pub handshake_timeout: Duration,
    /// A WebSocket quiet for this long is sent a Ping.
    pub ping_interval: Duration,
    /// A WebSocket that sent nothing for this long is dropped.
    pub idle_timeout: Duration,
    /// How long a chat client may stay behind (its queue over `max_queued_bytes`, so it is sent nothing new and read
    /// no more) before it is closed with 1008; one that catches up in time is sent what it missed from the history.
    pub slow_consumer_grace: Duration,
    /// How long a message may take to arrive, from the read that left it unfinished to its last frame (1008 after).
    pub message_timeout: Duration,
    /// The most frames one message may arrive in (1008 beyond; 0: unlimited).
    pub max_fragments: u32,
    /// Frames a WebSocket may send per second, control frames and empty ones included, with two seconds' worth at
    /// once (1008 beyond; 0: unlimited).
    pub max_frames_per_sec: u32,
    /// Bytes a WebSocket may send per second, with two seconds' worth at once (1008 beyond; 0: unlimited).
    pub max_bytes_per_sec: u32,
    /// Bytes held in unfinished incoming messages over the whole server; a read that would take the total past it
    /// fails its connection with 1013. Messages that arrive whole in one read hold nothing.
    pub max_incoming_bytes: usize,
    /// How long to wait for the peer's Close (and for its FIN after ours) before dropping the connection.
    pub close_timeout: Duration,
    /// On SIGINT/SIGTERM, how long to wait for clients to answer Close 1001 before exiting.
    pub shutdown_timeout: Duration,
    /// What one client address may hold and start, and whose word on client addresses is believed.
    pub addresses: AddressLimits,
    /// Which browser origins may open a WebSocket.
    pub origins: OriginPolicy,
    /// Whether permessage-deflate is agreed to when a client offers it (RFC 7692).
    pub compression: Compression,
    /// The chat's limits.
    pub chat: ChatConfig,
    /// Connection tokens (`--auth-secret`, `--auth-public-key`): every chat connection must show a valid one. `None`
    /// is open mode: the first connection to claim a free name takes it.
    pub auth: Option<Verifier>,
    /// Where token signatures are checked (`--token-checks`): on a thread of their own for RS256 and ES256 by
    /// default, in the event loop for HS256.
    pub token_checks: TokenChecks,
    /// With token checks on their thread: the most tokens waiting to be checked; a token past them is refused
    /// with `unavailable` (`--token-check-queue`).
    pub token_check_queue: usize,
    /// Tokens whose signature checked out, remembered until their `exp` so that a reconnect showing the same one
    /// is not checked again (`--token-cache`; 0 remembers none).
    pub token_cache_entries: usize,
    /// The server API's key (`--api-key`); `None` turns the API off (404).
    pub api_key: Option<ApiKey>,
    /// The Redis the nodes of a cluster share (`--redis`); `None`, the default, keeps everything in this process.
    pub redis: Option<RedisUrl>,
    /// This node's name among the nodes sharing Redis (`--node-id`); `None` draws a random one at startup.
    pub node_id: Option<NodeId>,
    /// Sets `SO_REUSEPORT` on the listener so that several processes on one machine can listen on one port.
    pub reuse_port: bool,
    /// With `redis`: how often this node tells Redis it is alive and renews the names its clients hold. A node not
    /// heard from for 3 intervals is dead: the others remove it, and its names are free.
    pub node_heartbeat: Duration,
    /// With `redis`: the most names one heartbeat script call renews. A node's names are renewed in calls of at
    /// most this many, spread evenly over the heartbeat interval, so that no call holds Redis for long.
    pub name_renewal_batch: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            chat_max_message_size: 64 * 1024,
            echo_max_message_size: 64 * 1024,
            max_header_bytes: 8 * 1024,
            max_connections: default_max_connections(),
            max_queued_bytes: 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            message_timeout: Duration::from_secs(30),
            slow_consumer_grace: Duration::from_secs(10),
            max_fragments: 1024,
            max_frames_per_sec: 200,
            max_bytes_per_sec: 1024 * 1024,
            max_incoming_bytes: 64 * 1024 * 1024,
            close_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
            addresses: AddressLimits::default(),
            origins: OriginPolicy::default(),
            compression: Compression::Deflate,
            chat: ChatConfig::default(),
            auth: None,
            token_checks: TokenChecks::Auto,
            token_check_queue: 1024,
            token_cache_entries: crate::chat::DEFAULT_TOKEN_CACHE_ENTRIES,
            api_key: None,
            redis: None,
            node_id: None,
            reuse_port: false,
            node_heartbeat: Duration::from_secs(5),
            name_renewal_batch: 500,
        }
    }
}

/// Where the event loop has token signatures checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenChecks {
    /// On the verifier thread for RS256 and ES256 (a public-key operation, 40-120 µs), in the loop for HS256 (an
    /// HMAC, cheaper than the hop to another thread).
    #[default]
    Auto,
    /// Always in the loop, whatever the algorithm.
    Inline,
    /// Always on the verifier thread, HS256 too.
    Thread,
}

impl TokenChecks {
    /// True if tokens for `verifier` are checked on the verifier thread.
    pub fn off_loop(self, verifier: &Verifier) -> bool {
        match self {
            TokenChecks::Auto => verifier.is_asymmetric(),
            TokenChecks::Inline => false,
            TokenChecks::Thread => true,
        }
    }
}

impl FromStr for TokenChecks {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "auto" => Ok(TokenChecks::Auto),
            "inline" => Ok(TokenChecks::Inline),
            "thread" => Ok(TokenChecks::Thread),
            _ => Err(format!("`{text}`: expected auto, inline or thread")),
        }
    }
}

/// Limits per client address. The address is the TCP peer's, or, when the peer is a trusted proxy, the one it
/// names in `X-Forwarded-For`.
#[derive(Clone, Debug, PartialEq)]
pub struct AddressLimits {
    /// The most connections one address may hold open (503 beyond; 0: unlimited).
    pub max_connections_per_ip: u32,
    /// Request heads per second one address may send (429 beyond; 0: unlimited).
    pub handshake_rate_per_ip: f64,
    /// Request heads one address may send at once.
    pub handshake_burst_per_ip: u32,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Cidr>,
}

impl Default for AddressLimits {
    fn default() -> Self {
        AddressLimits {
            max_connections_per_ip: 1000,
            handshake_rate_per_ip: 50.0,
            handshake_burst_per_ip: 100,
            trusted_proxies: Cidr::loopback(),
        }
    }
}

impl AddressLimits {
    /// No per-address limit at all: for a load generator or a test that opens thousands of connections from one
    /// address. Proxies stay as they are.
    pub fn unlimited(self) -> AddressLimits {
        AddressLimits {
            max_connections_per_ip: 0,
            handshake_rate_per_ip: 0.0,
            ..self
        }
    }
}

/// A block of IP addresses, such as `10.0.0.0/8` or `::1/128`; a bare address is its own block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Loopback, IPv4 and IPv6: a proxy on the same machine.
    pub fn loopback() -> Vec<Cidr> {
        vec![
            Cidr {
                network: IpAddr::from([127, 0, 0, 0]),
                prefix: 8,
            },
            Cidr {
                network: IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
                prefix: 128,
            },
        ]
    }

    /// True if `ip` is in the block (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

/// True if the first `prefix` bits of `a` and `b` agree.
fn prefix_matches(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let mut bits = usize::from(prefix);
    for (x, y) in a.iter().zip(b) {
        if bits == 0 {
            return true;
        }
        let take = bits.min(8);
        let mask = 0xFFu8 << (8 - take);
        if x & mask != y & mask {
            return false;
        }
        bits -= take;
    }
    true
}

/// A CIDR block that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadCidr(String);

impl fmt::Display for BadCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not an address or an address/prefix", self.0)
    }
}

impl std::error::Error for BadCidr {}

impl FromStr for Cidr {
    type Err = BadCidr;

    fn from_str(text: &str) -> Result<Self, BadCidr> {
        let bad = || BadCidr(text.to_owned());
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The open-file limit minus a margin for the listener, the poll descriptor, logs and the like.
pub fn default_max_connections() -> usize {
    open_file_limit().map_or(1000, |limit| limit.saturating_sub(64).max(16))
}

/// The soft limit on open files, read from /proc (Linux); `None` elsewhere or when unlimited.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks_contain_their_addresses_only() {
        let block: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(block.contains("10.1.255.3".parse().unwrap()));
        assert!(!block.contains("10.2.0.1".parse().unwrap()));
        assert!(
            block.contains("::ffff:10.1.0.9".parse().unwrap()),
            "IPv4-mapped"
        );
        let odd: Cidr = "192.0.2.128/25".parse().unwrap();
        assert!(odd.contains("192.0.2.200".parse().unwrap()));
        assert!(!odd.contains("192.0.2.100".parse().unwrap()));
        let host: Cidr = "2001:db8::1".parse().unwrap();
        assert!(host.contains("2001:db8::1".parse().unwrap()));
        assert!(!host.contains("2001:db8::2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.1".parse().unwrap()));
    }

    #[test]
    fn bad_cidr_blocks_are_refused() {
        for text in ["10.0.0.0/33", "::1/129", "nope", "10.0.0.0/x", ""] {
            assert!(text.parse::<Cidr>().is_err(), "{text}");
        }
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
    }

    #[test]
    fn default_connection_limit_stays_under_the_file_limit() {
        if let Some(limit) = open_file_limit() {
            assert!(default_max_connections() < limit);
        }
    }
}
