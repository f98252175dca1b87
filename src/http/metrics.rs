//! The server's counters and their rendering in the Prometheus text exposition format (version 0.0.4).
//!
//! Owns the numbers and the text; the server loop increments them and supplies the gauges it can read off its
//! own state (open connections, rooms, queued bytes) at render time. No locks: the loop is single-threaded.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::Refusal;
use crate::protocol::CloseCode;

/// Counters that only go up, kept by the server loop.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// TCP connections accepted.
    pub accepted_total: u64,
    /// WebSocket handshakes completed, by endpoint label.
    pub upgrades_total: BTreeMap<&'static str, u64>,
    /// WebSocket handshakes that agreed to permessage-deflate, by endpoint label.
    pub deflate_upgrades_total: BTreeMap<&'static str, u64>,
    /// Requests refused, by `Refusal::label`.
    pub handshake_failures: BTreeMap<&'static str, u64>,
    /// Data messages received.
    pub messages_in: u64,
    /// Data messages queued for sending (a broadcast to N members counts N).
    pub messages_out: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// WebSocket connections ended, by the close code we sent or received (1006 for an abrupt end).
    pub closes_by_code: BTreeMap<u16, u64>,
    /// Connections dropped because they did not read what was sent to them.
    pub slow_consumers_dropped: u64,
    /// Messages not queued for a chat client that was behind (chat messages among them are caught up from the
    /// history when it catches up).
    pub deliveries_skipped: u64,
    /// Chat clients that fell behind and caught up within the grace period.
    pub slow_consumers_recovered: u64,
    /// Connections that sent nothing for the idle timeout.
    pub idle_timeouts: u64,
    /// Failed `accept` calls (EMFILE and the like); each pauses accepting briefly.
    pub accept_errors: u64,
    /// WebSockets the server failed for going over a budget, by reason label.
    pub connections_failed: BTreeMap<&'static str, u64>,
    /// Server API calls answered 200, by endpoint label (`http::api::Endpoint::label`).
    pub api_calls: BTreeMap<&'static str, u64>,
    /// Server API requests refused, by `http::api::ApiError::label`.
    pub api_refusals: BTreeMap<&'static str, u64>,
    /// Errors the chat has sent to clients, by code (`rate_limited`, `name_taken`, `room_full`, ...), as of the
    /// last render: the chat counts them, the server copies them here before rendering.
    pub chat_refusals: Vec<(&'static str, u64)>,
    /// Token signatures checked on the verifier thread.
    pub token_checks: u64,
    /// Microseconds the verifier thread spent checking them.
    pub token_check_work_us: u64,
    /// Token checks refused because the verifier's queue was full (each answered `unavailable`).
    pub token_checks_busy: u64,
    /// From the loop handing a token to the verifier thread to the loop taking its verdict.
    pub token_check_latency: LatencyHistogram,
    /// Token checks answered from the cache of checked tokens, as of the last render (the chat counts them).
    pub token_cache_hits: u64,
}

/// The upper bounds of [`LatencyHistogram`]'s buckets, in microseconds (the last bucket, `+Inf`, is implied).
pub const LATENCY_BOUNDS_US: [u64; 9] = [
    100, 250, 500, 1_000, 2_500, 10_000, 50_000, 250_000, 1_000_000,
];

/// A Prometheus histogram of durations: how many fell at or under each of [`LATENCY_BOUNDS_US`], their count
/// and their sum.
#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram {
    /// Per bucket, not cumulative: `buckets[i]` counts the durations in (`LATENCY_BOUNDS_US[i-1]`,
    /// `LATENCY_BOUNDS_US[i]`]; the last, those above every bound.
    buckets: [u64; LATENCY_BOUNDS_US.len() + 1],
    count: u64,
    sum_us: u64,
}

impl LatencyHistogram {
    /// Counts one duration.
    pub fn observe(&mut self, duration: std::time::Duration) {
        let us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        self.buckets[bucket] += 1;
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// How many durations were counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Renders it as the histogram `name` with `help`.
    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BOUNDS_US.iter().zip(&self.buckets) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {cumulative}",
                *bound as f64 / 1e6
            );
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {:.6}", self.sum_us as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// The `reason` labels of `roomcast_connections_failed_total`: WebSockets failed for going over a budget.
pub const FAILURE_LABELS: [&str; 4] = [
    "frame_budget",
    "byte_budget",
    "message_timeout",
    "incoming_budget",
];

/// The `reason` label of a request head that did not arrive within the handshake timeout.
pub const TIMEOUT_REASON: &str = "timeout";

/// Values read off the live server at render time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauges {
    /// Open TCP connections, in any phase.
    pub open_connections: usize,
    /// Open WebSocket connections.
    pub open_websockets: usize,
    /// Rooms with at least one member.
    pub rooms: usize,
    /// Connections that are members of a room.
    pub members: usize,
    /// Bytes waiting in write queues.
    pub queued_bytes: usize,
    /// Bytes of chat history kept over all rooms.
    pub history_bytes: usize,
    /// Bytes held in unfinished incoming messages.
    pub incoming_bytes: usize,
    /// Chat clients behind (their queue over the bound), sent nothing new until they catch up.
    pub lagging_clients: usize,
    /// The link to Redis, when the server runs with `--redis`.
    pub redis: Option<RedisStatus>,
    /// Connections need tokens (`--auth-secret`, `--auth-public-key`): the token series are rendered.
    pub tokens: bool,
    /// Tokens handed to the verifier thread whose verdict the loop has not taken.
    pub token_checks_waiting: usize,
    /// Tokens kept in the cache of checked tokens.
    pub token_cache_entries: usize,
}

/// The state of the link to Redis, read off the server at render time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedisStatus {
    /// Both connections (commands, subscriber) are up and through their handshakes.
    pub up: bool,
    /// The last `PING` round trip on the command connection, in microseconds.
    pub round_trip_us: u64,
    /// Connections to Redis lost after they had been ready.
    pub reconnects: u64,
    /// Publications Redis refused or never answered.
    pub publish_errors: u64,
    /// Chat messages that came back from Redis with seqs missing before them.
    pub gaps: u64,
    /// Chat messages read from a room's stream after the subscription was down: gaps filled.
    pub recovered: u64,
}

impl Metrics {
    /// Counts a refused request.
    pub fn count_refusal(&mut self, refusal: Refusal) {
        *self.handshake_failures.entry(refusal.label()).or_default() += 1;
    }

    /// Counts a request head that did not arrive in time (slowloris protection).
    pub fn count_handshake_timeout(&mut self) {
        *self.handshake_failures.entry(TIMEOUT_REASON).or_default() += 1;
    }

    /// Counts a server API request refused with the label `label`.
    pub fn count_api_refusal(&mut self, label: &'static str) {
        *self.api_refusals.entry(label).or_default() += 1;
    }

    /// Counts a WebSocket the server failed for going over a budget.
    pub fn count_failure(&mut self, label: &'static str) {
        *self.connections_failed.entry(label).or_default() += 1;
    }

    /// Counts a WebSocket connection's end.
    pub fn count_close(&mut self, code: CloseCode) {
        *self.closes_by_code.entry(code.get()).or_default() += 1;
    }

    /// Renders every metric as Prometheus text.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let mut gauge = |name: &str, help: &str, value: usize| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        gauge(
            "roomcast_open_connections",
            "Open TCP connections in any phase.",
            gauges.open_connections,
        );
        gauge(
            "roomcast_open_websockets",
            "Open WebSocket connections.",
            gauges.open_websockets,
        );
        gauge(
            "roomcast_rooms",
            "Rooms with at least one member.",
            gauges.rooms,
        );
        gauge(
            "roomcast_room_members",
            "Connections that are members of a room.",
            gauges.members,
        );
        gauge(
            "roomcast_queued_bytes",
            "Bytes waiting in write queues.",
            gauges.queued_bytes,
        );
        gauge(
            "roomcast_history_bytes",
            "Bytes of chat history kept over all rooms (--max-history-bytes).",
            gauges.history_bytes,
        );
        gauge(
            "roomcast_incoming_bytes",
            "Bytes held in unfinished incoming messages (--max-incoming-bytes).",
            gauges.incoming_bytes,
        );
        gauge(
            "roomcast_lagging_clients",
            "Chat clients behind, sent nothing new until they catch up (--slow-consumer-grace).",
            gauges.lagging_clients,
        );
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "roomcast_accepted_total",
            "TCP connections accepted.",
            self.accepted_total,
        );
        counter(
            "roomcast_messages_in_total",
            "Data messages received.",
            self.messages_in,
        );
        counter(
            "roomcast_messages_out_total",
            "Data messages queued for sending.",
            self.messages_out,
        );
        counter(
            "roomcast_bytes_in_total",
            "Bytes read from sockets.",
            self.bytes_in,
        );
        counter(
            "roomcast_bytes_out_total",
            "Bytes written to sockets.",
            self.bytes_out,
        );
        counter(
            "roomcast_slow_consumers_dropped_total",
            "Connections closed for not reading what was sent to them.",
            self.slow_consumers_dropped,
        );
        counter(
            "roomcast_deliveries_skipped_total",
            "Messages not queued for a chat client that was behind (its chat is caught up from the history).",
            self.deliveries_skipped,
        );
        counter(
            "roomcast_slow_consumers_recovered_total",
            "Chat clients that fell behind and caught up within the grace period.",
            self.slow_consumers_recovered,
        );
        counter(
            "roomcast_idle_timeouts_total",
            "Connections dropped after sending nothing for the idle timeout.",
            self.idle_timeouts,
        );
        counter(
            "roomcast_accept_errors_total",
            "Failed accepts (such as running out of file descriptors); each pauses accepting briefly.",
            self.accept_errors,
        );
        let _ = writeln!(
            out,
            "# HELP roomcast_upgrades_total WebSocket handshakes completed.\n# TYPE roomcast_upgrades_total counter"
        );
        for endpoint in ["chat", "echo"] {
            let value = self.upgrades_total.get(endpoint).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "roomcast_upgrades_total{{endpoint=\"{endpoint}\"}} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP roomcast_deflate_upgrades_total WebSocket handshakes that agreed to permessage-deflate.\n# TYPE roomcast_deflate_upgrades_total counter"
        );
        for endpoint in ["chat", "echo"] {
            let value = self
                .deflate_upgrades_total
                .get(endpoint)
                .copied()
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "roomcast_deflate_upgrades_total{{endpoint=\"{endpoint}\"}} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP roomcast_handshake_failures_total Requests refused, or unfinished at the handshake timeout, \
             by reason.\n# TYPE roomcast_handshake_failures_total counter"
        );
        for reason in Refusal::LABELS.into_iter().chain([TIMEOUT_REASON]) {
            let value = self.handshake_failures.get(reason).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "roomcast_handshake_failures_total{{reason=\"{reason}\"}} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP roomcast_connections_failed_total WebSockets failed (closed at once) for going over a budget, \
             by reason.\n# TYPE roomcast_connections_failed_total counter"
        );
        for reason in FAILURE_LABELS {
            let value = self.connections_failed.get(reason).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "roomcast_connections_failed_total{{reason=\"{reason}\"}} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP roomcast_chat_refusals_total Chat requests refused with an error, by its code.\n\
             # TYPE roomcast_chat_refusals_total counter"
        );
        for (code, value) in &self.chat_refusals {
            let _ = writeln!(
                out,
                "roomcast_chat_refusals_total{{code=\"{code}\"}} {value}"
            );
        }
        self.render_api(&mut out);
        let _ = writeln!(
            out,
            "# HELP roomcast_closes_total WebSocket connections ended, by close code (1006: no close frame).\n\
             # TYPE roomcast_closes_total counter"
        );
        for (code, value) in &self.closes_by_code {
            let _ = writeln!(out, "roomcast_closes_total{{code=\"{code}\"}} {value}");
        }
        if let Some(redis) = gauges.redis {
            render_redis(&mut out, redis);
        }
        if gauges.tokens {
            self.render_tokens(&mut out, gauges);
        }
        out
    }
}

impl Metrics {
    /// The token series, present only when connections need tokens.
    fn render_tokens(&self, out: &mut String, gauges: Gauges) {
        let mut series = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        series(
            "roomcast_token_checks_total",
            "counter",
            "Token signatures checked on the verifier thread.",
            self.token_checks.to_string(),
        );
        series(
            "roomcast_token_check_work_seconds_total",
            "counter",
            "Time the verifier thread spent checking token signatures.",
            format!("{:.6}", self.token_check_work_us as f64 / 1e6),
        );
        series(
            "roomcast_token_checks_busy_total",
            "counter",
            "Token checks refused with unavailable because the verifier's queue was full (--token-check-queue).",
            self.token_checks_busy.to_string(),
        );
        series(
            "roomcast_token_checks_waiting",
            "gauge",
            "Tokens handed to the verifier thread whose verdict the loop has not taken.",
            gauges.token_checks_waiting.to_string(),
        );
        series(
            "roomcast_token_cache_entries",
            "gauge",
            "Checked tokens remembered until their exp (--token-cache).",
            gauges.token_cache_entries.to_string(),
        );
        series(
            "roomcast_token_cache_hits_total",
            "counter",
            "Token checks answered from the cache of checked tokens.",
            self.token_cache_hits.to_string(),
        );
        self.token_check_latency.render(
            "roomcast_token_check_seconds",
            "From a token handed to the verifier thread to its verdict taken by the loop (queueing included).",
            out,
        );
    }

    /// The server API's series: calls answered by endpoint, refusals by reason, zeros included.
    fn render_api(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP roomcast_api_calls_total Server API calls answered 200, by endpoint.\n\
             # TYPE roomcast_api_calls_total counter"
        );
        for endpoint in super::api::Endpoint::LABELS {
            let value = self.api_calls.get(endpoint).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "roomcast_api_calls_total{{endpoint=\"{endpoint}\"}} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP roomcast_api_refusals_total Server API requests refused, by reason.\n\
             # TYPE roomcast_api_refusals_total counter"
        );
        for reason in super::api::ApiError::LABELS {
            let value = self.api_refusals.get(reason).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "roomcast_api_refusals_total{{reason=\"{reason}\"}} {value}"
            );
        }
    }
}

/// The Redis series, present only when the server runs with `--redis`.
fn render_redis(out: &mut String, redis: RedisStatus) {
    let _ = writeln!(
        out,
        "# HELP roomcast_redis_up 1 when both connections to Redis are up and through their handshakes.\n\
         # TYPE roomcast_redis_up gauge\nroomcast_redis_up {}",
        u8::from(redis.up)
    );
    let _ = writeln!(
        out,
        "# HELP roomcast_redis_round_trip_seconds The last PING round trip on the command connection.\n\
         # TYPE roomcast_redis_round_trip_seconds gauge\nroomcast_redis_round_trip_seconds {:.6}",
        redis.round_trip_us as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "# HELP roomcast_redis_reconnects_total Connections to Redis lost after they had been ready.\n\
         # TYPE roomcast_redis_reconnects_total counter\nroomcast_redis_reconnects_total {}",
        redis.reconnects
    );
    let _ = writeln!(
        out,
        "# HELP roomcast_redis_publish_errors_total Publications Redis refused or never answered.\n\
         # TYPE roomcast_redis_publish_errors_total counter\nroomcast_redis_publish_errors_total {}",
        redis.publish_errors
    );
    let _ = writeln!(
        out,
        "# HELP roomcast_redis_gaps_total Chat messages that came back from Redis with seqs missing before them.\n\
         # TYPE roomcast_redis_gaps_total counter\nroomcast_redis_gaps_total {}",
        redis.gaps
    );
    let _ = writeln!(
        out,
        "# HELP roomcast_redis_recovered_total Chat messages read from a room's stream after the subscription was \
         down: gaps filled.\n# TYPE roomcast_redis_recovered_total counter\nroomcast_redis_recovered_total {}",
        redis.recovered
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_help_type_and_value_for_each_metric() {
        let mut m = Metrics {
            accepted_total: 3,
            ..Metrics::default()
        };
        m.count_close(CloseCode::NORMAL);
        m.count_refusal(Refusal::NotFound);
        m.count_handshake_timeout();
        let text = m.render(Gauges {
            open_connections: 2,
            ..Gauges::default()
        });
        assert!(
            text.contains("# TYPE roomcast_accepted_total counter\nroomcast_accepted_total 3\n")
        );
        assert!(text.contains("roomcast_open_connections 2\n"));
        assert!(text.contains("roomcast_closes_total{code=\"1000\"} 1\n"));
        assert!(text.contains("roomcast_handshake_failures_total{reason=\"not_found\"} 1\n"));
        assert!(text.contains("roomcast_handshake_failures_total{reason=\"timeout\"} 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        assert!(
            !text.contains("roomcast_redis_"),
            "Redis series without --redis"
        );
    }

    #[test]
    fn token_series_are_rendered_only_when_tokens_are_required() {
        let mut metrics = Metrics {
            token_checks: 3,
            token_checks_busy: 1,
            ..Metrics::default()
        };
        assert!(!metrics
            .render(Gauges::default())
            .contains("roomcast_token_"));
        for us in [80, 120, 2_000_000] {
            metrics
                .token_check_latency
                .observe(std::time::Duration::from_micros(us));
        }
        let text = metrics.render(Gauges {
            tokens: true,
            token_checks_waiting: 2,
            ..Gauges::default()
        });
        assert!(text.contains("\nroomcast_token_checks_total 3\n"), "{text}");
        assert!(text.contains("\nroomcast_token_checks_busy_total 1\n"));
        assert!(text.contains("\nroomcast_token_checks_waiting 2\n"));
        assert!(text.contains("# TYPE roomcast_token_check_seconds histogram\n"));
        assert!(text.contains("\nroomcast_token_check_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(text.contains("\nroomcast_token_check_seconds_bucket{le=\"0.00025\"} 2\n"));
        assert!(text.contains("\nroomcast_token_check_seconds_bucket{le=\"1\"} 2\n"));
        assert!(text.contains("\nroomcast_token_check_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("\nroomcast_token_check_seconds_sum 2.000200\n"));
        assert!(text.contains("\nroomcast_token_check_seconds_count 3\n"));
    }

    #[test]
    fn redis_series_are_rendered_when_the_server_has_redis() {
        let text = Metrics::default().render(Gauges {
            redis: Some(RedisStatus {
                up: true,
                round_trip_us: 250,
                reconnects: 2,
                publish_errors: 3,
                gaps: 4,
                recovered: 5,
            }),
            ..Gauges::default()
        });
        assert!(text.contains("\nroomcast_redis_up 1\n"), "{text}");
        assert!(
            text.contains("\nroomcast_redis_round_trip_seconds 0.000250\n"),
            "{text}"
        );
        assert!(text.contains(
            "# TYPE roomcast_redis_reconnects_total counter\nroomcast_redis_reconnects_total 2\n"
        ));
        assert!(text.contains("\nroomcast_redis_publish_errors_total 3\n"));
        assert!(text.contains("\nroomcast_redis_gaps_total 4\n"));
        assert!(text.contains("\nroomcast_redis_recovered_total 5\n"));
    }
}
