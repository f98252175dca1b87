//! The `roomcast` binary: command-line flags and environment variables into a `Config`, then the server loop.
//!
//! Owns the CLI surface and process concerns (logging, signals, exit codes) and nothing of the protocol.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use roomcast::auth::{Verifier, DEFAULT_LEEWAY};
use roomcast::chat::ChatConfig;
use roomcast::cluster::{NodeId, RedisUrl};
use roomcast::config::{AddressLimits, Cidr, TokenChecks, MAX_TIMEOUT};
use roomcast::http::api::ApiKey;
use roomcast::http::origin::OriginPolicy;
use roomcast::http::Compression;
use roomcast::{Config, Server, ShutdownHandle};

/// A real-time WebSocket chat server. Every flag can also be set with the environment variable shown.
#[derive(Debug, Parser)]
#[command(name = "roomcast", version, about, max_term_width = 110)]
struct Cli {
    /// Address to listen on (port 0 picks a free port)
    #[arg(long, env = "ROOMCAST_ADDR", default_value_t = DEFAULTS.addr)]
    addr: SocketAddr,

    /// Largest chat message in bytes; bigger ones close the connection with 1009
    #[arg(long, env = "ROOMCAST_MAX_MESSAGE_SIZE", default_value_t = DEFAULTS.chat_max_message_size)]
    max_message_size: usize,

    /// Largest message on /echo (a test route) in bytes; the Autobahn suite needs 16777216
    #[arg(long, env = "ROOMCAST_ECHO_MAX_MESSAGE_SIZE", default_value_t = DEFAULTS.echo_max_message_size)]
    echo_max_message_size: usize,

    /// Largest HTTP request head in bytes; bigger ones get 431
    #[arg(long, env = "ROOMCAST_MAX_HEADER_BYTES", default_value_t = DEFAULTS.max_header_bytes)]
    max_header_bytes: usize,

    /// Most open connections; more get 503 [default: the open-file limit minus 64]
    #[arg(long, env = "ROOMCAST_MAX_CONNECTIONS")]
    max_connections: Option<usize>,

    /// Most bytes queued for one client: a chat client over it is sent nothing new until it catches up (closed with
    /// 1008 after --slow-consumer-grace), an echo client is not read
    #[arg(long, env = "ROOMCAST_MAX_QUEUED_BYTES", default_value_t = DEFAULTS.max_queued_bytes)]
    max_queued_bytes: usize,

    /// Seconds a client has to finish its HTTP request
    #[arg(long, env = "ROOMCAST_HANDSHAKE_TIMEOUT", default_value_t = Seconds(DEFAULTS.handshake_timeout))]
    handshake_timeout: Seconds,

    /// Seconds of quiet after which a WebSocket is sent a Ping
    #[arg(long, env = "ROOMCAST_PING_INTERVAL", default_value_t = Seconds(DEFAULTS.ping_interval))]
    ping_interval: Seconds,

    /// Seconds without hearing from a WebSocket before it is dropped
    #[arg(long, env = "ROOMCAST_IDLE_TIMEOUT", default_value_t = Seconds(DEFAULTS.idle_timeout))]
    idle_timeout: Seconds,

    /// Seconds a chat client may stay over --max-queued-bytes (sent nothing new, not read) before it is closed with
    /// 1008; one that catches up in time gets what it missed from the history
    #[arg(long, env = "ROOMCAST_SLOW_CONSUMER_GRACE", default_value_t = Seconds(DEFAULTS.slow_consumer_grace))]
    slow_consumer_grace: Seconds,

    /// Seconds a message may take to arrive whole once it has begun; slower ones are closed with 1008
    #[arg(long, env = "ROOMCAST_MESSAGE_TIMEOUT", default_value_t = Seconds(DEFAULTS.message_timeout))]
    message_timeout: Seconds,

    /// Most frames one message may arrive in; more are closed with 1008 (0: unlimited)
    #[arg(long, env = "ROOMCAST_MAX_FRAGMENTS", default_value_t = DEFAULTS.max_fragments)]
    max_fragments: u32,

    /// Frames a client may send per second, control frames included, two seconds' worth at once; more are closed
    /// with 1008 (0: unlimited)
    #[arg(long, env = "ROOMCAST_MAX_FRAMES_PER_SEC", default_value_t = DEFAULTS.max_frames_per_sec)]
    max_frames_per_sec: u32,

    /// Bytes a client may send per second, two seconds' worth at once; more are closed with 1008 (0: unlimited)
    #[arg(long, env = "ROOMCAST_MAX_BYTES_PER_SEC", default_value_t = DEFAULTS.max_bytes_per_sec)]
    max_bytes_per_sec: u32,

    /// Bytes of unfinished incoming messages the whole server holds; past it a client is closed with 1013
    #[arg(long, env = "ROOMCAST_MAX_INCOMING_BYTES", default_value_t = DEFAULTS.max_incoming_bytes)]
    max_incoming_bytes: usize,

    /// Seconds to wait for the peer to finish the closing handshake
    #[arg(long, env = "ROOMCAST_CLOSE_TIMEOUT", default_value_t = Seconds(DEFAULTS.close_timeout))]
    close_timeout: Seconds,

    /// Seconds to wait for clients after SIGINT/SIGTERM before exiting
    #[arg(long, env = "ROOMCAST_SHUTDOWN_TIMEOUT", default_value_t = Seconds(DEFAULTS.shutdown_timeout))]
    shutdown_timeout: Seconds,

    /// Most connections one client address may hold open; more get 503 (0: unlimited)
    #[arg(long, env = "ROOMCAST_MAX_CONNECTIONS_PER_IP", default_value_t = DEFAULTS.addresses.max_connections_per_ip)]
    max_connections_per_ip: u32,

    /// Requests per second one client address may start; more get 429 (0: unlimited)
    #[arg(long, env = "ROOMCAST_HANDSHAKE_RATE_PER_IP", default_value_t = DEFAULTS.addresses.handshake_rate_per_ip)]
    handshake_rate_per_ip: f64,

    /// Requests one client address may start at once
    #[arg(long, env = "ROOMCAST_HANDSHAKE_BURST_PER_IP", default_value_t = DEFAULTS.addresses.handshake_burst_per_ip)]
    handshake_burst_per_ip: u32,

    /// Proxies whose X-Forwarded-For names the client address, as addresses or CIDR blocks (repeatable; env:
    /// comma-separated) [default: 127.0.0.0/8, ::1/128]
    #[arg(
        long = "trusted-proxy",
        env = "ROOMCAST_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Option<Vec<Cidr>>,

    /// A browser Origin allowed besides the server's own (repeatable; `*` allows all; env: comma-separated)
    #[arg(
        long = "allowed-origin",
        env = "ROOMCAST_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,

    /// Compress messages with permessage-deflate (RFC 7692) for clients that offer it: on or off
    #[arg(long, env = "ROOMCAST_DEFLATE", value_name = "on|off", default_value = "on", value_parser = parse_switch, action = clap::ArgAction::Set)]
    deflate: bool,

    /// Chat messages kept per room for replay after a reconnect
    #[arg(long, env = "ROOMCAST_HISTORY", default_value_t = DEFAULTS.chat.history_len)]
    history: usize,

    /// Longest chat message in characters
    #[arg(long, env = "ROOMCAST_MAX_CONTENT", default_value_t = DEFAULTS.chat.max_content_chars)]
    max_content: usize,

    /// Messages per second each client may send (token bucket rate)
    #[arg(long, env = "ROOMCAST_RATE", default_value_t = DEFAULTS.chat.rate_per_sec)]
    rate: f64,

    /// Messages a client may send in a burst (token bucket size)
    #[arg(long, env = "ROOMCAST_BURST", default_value_t = DEFAULTS.chat.rate_burst)]
    burst: u32,

    /// Bytes of chat and DMs per second each client may send (0: unlimited)
    #[arg(long, env = "ROOMCAST_RATE_BYTES", default_value_t = DEFAULTS.chat.rate_bytes_per_sec)]
    rate_bytes: f64,

    /// Bytes of chat and DMs a client may send in a burst
    #[arg(long, env = "ROOMCAST_BURST_BYTES", default_value_t = DEFAULTS.chat.rate_burst_bytes)]
    burst_bytes: u32,

    /// Bytes of chat per second one room may carry, from all its members (0: unlimited)
    #[arg(long, env = "ROOMCAST_ROOM_RATE_BYTES", default_value_t = DEFAULTS.chat.room_rate_bytes_per_sec)]
    room_rate_bytes: f64,

    /// Bytes of chat one room may carry in a burst
    #[arg(long, env = "ROOMCAST_ROOM_BURST_BYTES", default_value_t = DEFAULTS.chat.room_burst_bytes)]
    room_burst_bytes: u32,

    /// Joins per second each client may send, on top of --rate
    #[arg(long, env = "ROOMCAST_JOIN_RATE", default_value_t = DEFAULTS.chat.join_rate_per_sec)]
    join_rate: f64,

    /// Joins a client may send in a burst
    #[arg(long, env = "ROOMCAST_JOIN_BURST", default_value_t = DEFAULTS.chat.join_burst)]
    join_burst: u32,

    /// Seconds a freed user name stays reserved for the session that held it (0: freed at once)
    #[arg(long, env = "ROOMCAST_NAME_GRACE", default_value_t = Seconds(Duration::from_millis(DEFAULTS.chat.name_grace_ms)))]
    name_grace: Seconds,

    /// Most members one room may hold; more get room_full
    #[arg(long, env = "ROOMCAST_MAX_ROOM_MEMBERS", default_value_t = DEFAULTS.chat.max_room_members)]
    max_room_members: usize,

    /// Bytes of chat history all rooms together keep; the least recently active room's oldest go first
    #[arg(long, env = "ROOMCAST_MAX_HISTORY_BYTES", default_value_t = DEFAULTS.chat.max_history_bytes)]
    max_history_bytes: usize,

    /// Bytes of history one join (or one catch-up) may be resent; more is a gap
    #[arg(long, env = "ROOMCAST_MAX_REPLAY_BYTES", default_value_t = DEFAULTS.chat.max_replay_bytes)]
    max_replay_bytes: usize,

    /// Require a connection token (JWT) signed with this HS256 secret, at least 32 bytes; set it through the
    /// environment, which other users' `ps` does not show
    #[arg(
        long,
        env = "ROOMCAST_AUTH_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    auth_secret: Option<String>,

    /// Require a connection token (JWT) signed by the private half of this public key: a PEM file with an RSA key
    /// (RS256) or an EC P-256 key (ES256)
    #[arg(
        long,
        env = "ROOMCAST_AUTH_PUBLIC_KEY",
        value_name = "FILE",
        conflicts_with = "auth_secret"
    )]
    auth_public_key: Option<PathBuf>,

    /// Seconds by which a token's exp and nbf may be off, for clock skew between its issuer and this server
    #[arg(long, env = "ROOMCAST_AUTH_LEEWAY", default_value_t = Seconds(DEFAULT_LEEWAY))]
    auth_leeway: Seconds,

    /// Where token signatures are checked: auto (RS256 and ES256 on a thread of their own, HS256 in the event
    /// loop), inline (all in the event loop) or thread (all on the thread)
    #[arg(
        long,
        env = "ROOMCAST_TOKEN_CHECKS",
        value_name = "auto|inline|thread",
        default_value = "auto"
    )]
    token_checks: TokenChecks,

    /// With token checks on their thread, the most tokens waiting to be checked; a join or refresh past them is
    /// refused with `unavailable`
    #[arg(long, env = "ROOMCAST_TOKEN_CHECK_QUEUE", default_value_t = DEFAULTS.token_check_queue)]
    token_check_queue: usize,

    /// Tokens whose signature checked out, remembered until their exp so that a reconnect with the same token is
    /// not checked again (0: none)
    #[arg(long, env = "ROOMCAST_TOKEN_CACHE", default_value_t = DEFAULTS.token_cache_entries)]
    token_cache: usize,

    /// Turn the server API (/api/...) on for callers that send `Authorization: Bearer KEY`; at least 16 bytes, set
    /// through the environment [default: off, /api/ is 404]
    #[arg(
        long,
        env = "ROOMCAST_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// Join the cluster of nodes sharing this Redis: redis://[user:password@]host[:port][/db] [default: none, every
    /// room in this process]
    #[arg(long, env = "ROOMCAST_REDIS", value_name = "URL")]
    redis: Option<RedisUrl>,

    /// This node's name among the nodes sharing Redis: ASCII letters, digits, `-`, `_`, `.` [default: random]
    #[arg(long, env = "ROOMCAST_NODE_ID")]
    node_id: Option<NodeId>,

    /// Share the listening port with other processes (SO_REUSEPORT): one process per core, Redis between them
    #[arg(long, env = "ROOMCAST_REUSE_PORT")]
    reuse_port: bool,

    /// Seconds between this node's heartbeats to Redis; a node silent for 3 of them is dead and its names are freed
    #[arg(long, env = "ROOMCAST_NODE_HEARTBEAT", default_value_t = Seconds(DEFAULTS.node_heartbeat))]
    node_heartbeat: Seconds,

    /// The most names one heartbeat call renews in Redis; a node's names are renewed in such batches spread over the heartbeat
    #[arg(long, env = "ROOMCAST_NAME_RENEWAL_BATCH", default_value_t = DEFAULTS.name_renewal_batch as u64, value_parser = clap::value_parser!(u64).range(1..))]
    name_renewal_batch: u64,
}

/// The defaults, from the one place they are defined.
static DEFAULTS: LazyLock<Config> = LazyLock::new(Config::default);

/// An on/off switch given on the command line.
fn parse_switch(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("`{text}`: expected on or off")),
    }
}

/// A duration given on the command line as a number of seconds (fractions allowed).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
struct Seconds(Duration);

impl FromStr for Seconds {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let value: f64 = text
            .parse()
            .map_err(|_| format!("`{text}` is not a number of seconds"))?;
        let duration = Duration::try_from_secs_f64(value).map_err(|e| format!("`{text}`: {e}"))?;
        if duration >= MAX_TIMEOUT {
            return Err(format!("`{text}`: timeouts must be shorter than a day"));
        }
        Ok(Seconds(duration))
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

impl Cli {
    /// Rejects settings that parse but cannot work together.
    fn validate(&self) -> Result<(), String> {
        if self.ping_interval >= self.idle_timeout {
            return Err(format!(
                "--ping-interval ({:?}) must be shorter than --idle-timeout ({:?}), or a quiet client is dropped \
                 before it is ever pinged",
                self.ping_interval.0, self.idle_timeout.0
            ));
        }
        if self.token_check_queue == 0 {
            return Err("--token-check-queue must be at least 1".to_owned());
        }
        if self.node_heartbeat.0.is_zero() {
            return Err("--node-heartbeat must be above 0 seconds".to_owned());
        }
        Ok(())
    }

    /// The token verifier the auth flags ask for, if any.
    fn verifier(&self) -> Result<Option<Verifier>, String> {
        let verifier = match (&self.auth_secret, &self.auth_public_key) {
            (Some(secret), _) => {
                Verifier::hs256(secret.as_bytes()).map_err(|e| format!("--auth-secret: {e}"))?
            }
            (None, Some(path)) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("--auth-public-key {}: {e}", path.display()))?;
                Verifier::from_public_key_pem(&pem)
                    .map_err(|e| format!("--auth-public-key {}: {e}", path.display()))?
            }
            (None, None) => return Ok(None),
        };
        Ok(Some(verifier.with_leeway(self.auth_leeway.0)))
    }

    fn into_config(self) -> Result<Config, String> {
        let defaults = Config::default();
        let auth = self.verifier()?;
        let api_key = match &self.api_key {
            Some(key) => Some(ApiKey::new(key).map_err(|e| format!("--api-key: {e}"))?),
            None => None,
        };
        Ok(Config {
            addr: self.addr,
            chat_max_message_size: self.max_message_size,
            echo_max_message_size: self.echo_max_message_size,
            max_header_bytes: self.max_header_bytes,
            max_connections: self.max_connections.unwrap_or(defaults.max_connections),
            max_queued_bytes: self.max_queued_bytes,
            handshake_timeout: self.handshake_timeout.0,
            ping_interval: self.ping_interval.0,
            idle_timeout: self.idle_timeout.0,
            message_timeout: self.message_timeout.0,
            slow_consumer_grace: self.slow_consumer_grace.0,
            max_fragments: self.max_fragments,
            max_frames_per_sec: self.max_frames_per_sec,
            max_bytes_per_sec: self.max_bytes_per_sec,
            max_incoming_bytes: self.max_incoming_bytes,
            close_timeout: self.close_timeout.0,
            shutdown_timeout: self.shutdown_timeout.0,
            addresses: AddressLimits {
                max_connections_per_ip: self.max_connections_per_ip,
                handshake_rate_per_ip: self.handshake_rate_per_ip,
                handshake_burst_per_ip: self.handshake_burst_per_ip,
                trusted_proxies: self
                    .trusted_proxies
                    .unwrap_or_else(|| defaults.addresses.trusted_proxies.clone()),
            },
            origins: OriginPolicy {
                allowed: self.allowed_origins,
            },
            compression: if self.deflate {
                Compression::Deflate
            } else {
                Compression::Off
            },
            chat: ChatConfig {
                history_len: self.history,
                max_content_chars: self.max_content,
                rate_per_sec: self.rate,
                rate_burst: self.burst,
                rate_bytes_per_sec: self.rate_bytes,
                rate_burst_bytes: self.burst_bytes,
                room_rate_bytes_per_sec: self.room_rate_bytes,
                room_burst_bytes: self.room_burst_bytes,
                join_rate_per_sec: self.join_rate,
                join_burst: self.join_burst,
                name_grace_ms: u64::try_from(self.name_grace.0.as_millis()).unwrap_or(u64::MAX),
                max_room_members: self.max_room_members,
                max_history_bytes: self.max_history_bytes,
                max_replay_bytes: self.max_replay_bytes,
                ..ChatConfig::default()
            },
            auth,
            token_checks: self.token_checks,
            token_check_queue: self.token_check_queue,
            token_cache_entries: self.token_cache,
            api_key,
            redis: self.redis,
            node_id: self.node_id,
            reuse_port: self.reuse_port,
            node_heartbeat: self.node_heartbeat.0,
            name_renewal_batch: usize::try_from(self.name_renewal_batch).unwrap_or(usize::MAX),
        })
    }
}

/// First SIGINT/SIGTERM: graceful shutdown. Second: exit at once.
fn watch_signals(handle: ShutdownHandle) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for signal in signals.forever() {
                seen += 1;
                if seen == 1 {
                    log::info!("signal {signal}: shutting down gracefully (again to exit at once)");
                    handle.shutdown();
                } else {
                    eprintln!("roomcast: second signal, exiting now");
                    std::process::exit(1);
                }
            }
        })?;
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    if let Err(message) = cli.validate() {
        Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, message)
            .exit();
    }
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(message) => Cli::command()
            .error(clap::error::ErrorKind::InvalidValue, message)
            .exit(),
    };
    let mut server = match Server::bind(config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("roomcast: cannot listen: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = watch_signals(server.shutdown_handle()) {
        eprintln!("roomcast: cannot install signal handlers: {e}");
        return ExitCode::FAILURE;
    }
    println!("roomcast listening on http://{}/", server.local_addr());
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roomcast: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_flags_give_the_library_defaults() {
        let cli = Cli::try_parse_from(["roomcast"]).expect("no flags parse");
        assert_eq!(
            format!("{:?}", cli.into_config().expect("valid")),
            format!("{:?}", Config::default())
        );
    }

    #[test]
    fn a_bad_redis_url_is_a_usage_error_that_says_why() {
        let error = Cli::try_parse_from(["roomcast", "--redis", "rediss://cache:6380"])
            .expect_err("rediss:// is refused");
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("TLS"), "{error}");
    }

    #[test]
    fn redis_node_id_and_reuse_port_reach_the_config() {
        let cli = Cli::try_parse_from([
            "roomcast",
            "--redis",
            "redis://127.0.0.1:7000/1",
            "--node-id",
            "n1",
            "--reuse-port",
        ])
        .expect("flags parse");
        let config = cli.into_config().expect("valid");
        assert_eq!(config.redis.map(|url| url.port()), Some(7000));
        assert_eq!(
            config.node_id.map(|id| id.to_string()),
            Some("n1".to_owned())
        );
        assert!(config.reuse_port);
    }

    #[test]
    fn a_node_heartbeat_of_zero_is_refused() {
        let cli = Cli::try_parse_from(["roomcast", "--node-heartbeat", "0"]).expect("parses");
        assert!(cli.validate().is_err());
    }

    #[test]
    fn seconds_accept_fractions_and_refuse_a_day() {
        assert_eq!("0.25".parse(), Ok(Seconds(Duration::from_millis(250))));
        assert!("86400".parse::<Seconds>().is_err());
        assert!("soon".parse::<Seconds>().is_err());
    }

    #[test]
    fn an_auth_secret_or_public_key_turns_tokens_on_and_bad_ones_are_refused() {
        let config = Cli::try_parse_from([
            "roomcast",
            "--auth-secret",
            "0123456789abcdef0123456789abcdef",
            "--auth-leeway",
            "2",
        ])
        .expect("parses")
        .into_config()
        .expect("valid");
        let auth = format!("{:?}", config.auth);
        assert!(auth.contains("HS256") && auth.contains("2000"), "{auth}");
        assert!(
            !auth.contains("0123456789"),
            "the secret is not shown: {auth}"
        );
        let short = Cli::try_parse_from(["roomcast", "--auth-secret", "short"]).expect("parses");
        assert!(short.into_config().is_err());
        let key = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/ec_public.pem");
        let config = Cli::try_parse_from(["roomcast", "--auth-public-key", key])
            .expect("parses")
            .into_config()
            .expect("valid");
        assert!(format!("{:?}", config.auth).contains("ES256"));
        let missing = Cli::try_parse_from(["roomcast", "--auth-public-key", "/nonexistent.pem"])
            .expect("parses");
        assert!(missing.into_config().is_err());
        assert!(Cli::try_parse_from([
            "roomcast",
            "--auth-secret",
            "0123456789abcdef0123456789abcdef",
            "--auth-public-key",
            key
        ])
        .is_err());
    }

    #[test]
    fn token_check_flags_set_where_and_how_many_and_an_empty_queue_is_refused() {
        let cli = Cli::try_parse_from([
            "roomcast",
            "--token-checks",
            "inline",
            "--token-check-queue",
            "8",
            "--token-cache",
            "0",
        ])
        .expect("parses");
        cli.validate().expect("valid");
        let config = cli.into_config().expect("config");
        assert_eq!(config.token_checks, TokenChecks::Inline);
        assert_eq!(config.token_check_queue, 8);
        assert_eq!(config.token_cache_entries, 0);
        let defaults = Cli::try_parse_from(["roomcast"]).expect("parses");
        assert_eq!(defaults.token_checks, TokenChecks::Auto);
        let empty = Cli::try_parse_from(["roomcast", "--token-check-queue", "0"]).expect("parses");
        assert!(empty.validate().is_err());
        assert!(Cli::try_parse_from(["roomcast", "--token-checks", "sometimes"]).is_err());
    }

    #[test]
    fn an_api_key_turns_the_api_on_and_a_short_one_is_refused() {
        let config = Cli::try_parse_from(["roomcast", "--api-key", "a-long-enough-api-key"])
            .expect("parses")
            .into_config()
            .expect("valid");
        assert!(config.api_key.is_some());
        assert!(!format!("{config:?}").contains("a-long-enough"));
        let short = Cli::try_parse_from(["roomcast", "--api-key", "short"]).expect("parses");
        assert!(short.into_config().is_err());
    }
}
