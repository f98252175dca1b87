//! Everything an operator can set, with the defaults a person running `roomcast` gets.
//!
//! Owns the values only; `main.rs` fills them from flags and environment variables, tests build them directly.

use std::net::SocketAddr;
use std::time::Duration;

use crate::chat::ChatConfig;
use crate::http::origin::OriginPolicy;

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
    /// Which browser origins may open a WebSocket.
    pub origins: OriginPolicy,
    /// The chat's limits.
    pub chat: ChatConfig,
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
            max_fragments: 1024,
            max_frames_per_sec: 200,
            max_bytes_per_sec: 1024 * 1024,
            max_incoming_bytes: 64 * 1024 * 1024,
            close_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
            origins: OriginPolicy::default(),
            chat: ChatConfig::default(),
        }
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
    fn default_connection_limit_stays_under_the_file_limit() {
        if let Some(limit) = open_file_limit() {
            assert!(default_max_connections() < limit);
        }
    }
}
