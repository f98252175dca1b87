//! What is due for a connection, and when: the handshake timeout, a heartbeat Ping, the idle timeout, the message
//! timeout and the close timeout, as a pure function of the connection's recorded times and the current time.
//!
//! Owns the rules and the compact record they read ([`Times`], 16 bytes per connection). It must not read a clock
//! or touch a connection: the loop passes `now` in and acts on the [`Due`] it gets back, the way quinn-proto's
//! `poll_timeout`/`handle_timeout` split works. So every rule is a unit test without a socket or a sleep.

use std::time::{Duration, Instant};

use crate::config::MAX_TIMEOUT;

/// A point in the server's life: milliseconds since it started. 64 bits never wrap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub u64);

impl Millis {
    /// A point no deadline reaches: 64 bits of milliseconds never run out (see the type's doc).
    pub const NEVER: Millis = Millis(u64::MAX);

    /// The point `later` reached from the loop's start `start`.
    pub fn between(start: Instant, later: Instant) -> Millis {
        Millis(
            u64::try_from(later.saturating_duration_since(start).as_millis()).unwrap_or(u64::MAX),
        )
    }

    /// This point plus `ms` milliseconds.
    pub fn plus(self, ms: u32) -> Millis {
        Millis(self.0.saturating_add(u64::from(ms)))
    }

    /// How long from `self` until `at`; zero when `at` has passed. `self` is truncated to whole milliseconds, so a
    /// loop that sleeps this long wakes at or after `at` and does not spin.
    pub fn until(self, at: Millis) -> Duration {
        Duration::from_millis(at.0.saturating_sub(self.0))
    }
}

/// A recorded point in 32 bits: the low bits of its [`Millis`]. Read back against a later `now`, it is right as
/// long as it lies less than 2^32 ms (49 days) in the past. Every stamp the rules read is at most the longest
/// timeout old when it is read (a connection is dropped once its timeout passes), and [`Timeouts::new`] refuses
/// timeouts of a day or more, so a connection open for months is still timed correctly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp(u32);

impl Stamp {
    fn at(now: Millis) -> Stamp {
        // Keeping the low 32 bits is the point: see the type's doc.
        Stamp(now.0 as u32)
    }

    /// The full point this stamp was taken at, given a `now` no earlier than it.
    fn resolve(self, now: Millis) -> Millis {
        let elapsed = (now.0 as u32).wrapping_sub(self.0);
        Millis(now.0.saturating_sub(u64::from(elapsed)))
    }
}

/// The limits the rules apply, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    handshake: u32,
    ping_interval: u32,
    idle: u32,
    message: u32,
    slow_consumer_grace: u32,
    close: u32,
}

/// A timeout of a day or more: longer than a stamp can be trusted for (see [`Stamp`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutTooLong;

impl std::fmt::Display for TimeoutTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("timeouts must be shorter than a day")
    }
}

impl std::error::Error for TimeoutTooLong {}

impl Timeouts {
    /// The limits: time to send a request head, quiet before a heartbeat Ping, quiet before the peer is dropped,
    /// time for a message to arrive whole, time a chat client may stay behind, and time for the peer to finish
    /// closing.
    pub fn new(
        handshake: Duration,
        ping_interval: Duration,
        idle: Duration,
        message: Duration,
        slow_consumer_grace: Duration,
        close: Duration,
    ) -> Result<Timeouts, TimeoutTooLong> {
        let ms = |d: Duration| {
            if d >= MAX_TIMEOUT {
                return Err(TimeoutTooLong);
            }
            u32::try_from(d.as_millis()).map_err(|_| TimeoutTooLong)
        };
        Ok(Timeouts {
            handshake: ms(handshake)?,
            ping_interval: ms(ping_interval)?,
            idle: ms(idle)?,
            message: ms(message)?,
            slow_consumer_grace: ms(slow_consumer_grace)?,
            close: ms(close)?,
        })
    }
}

/// What a connection is waiting for, which decides the rule that applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// For its HTTP request head, or for its response to be read: the handshake timeout, from acceptance.
    Request,
    /// A WebSocket in the Open state, for its peer to say anything: Ping after the interval, drop after the idle
    /// timeout.
    Peer,
    /// For the closing handshake or the peer's FIN: the close timeout, from when closing began.
    Close,
}

/// What is due at a given instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// Nothing yet; look again at this point.
    Later(Millis),
    /// Send a heartbeat Ping (5.5.2), record it with [`Times::pinged`], and look again.
    Ping,
    /// The request head (or the reading of our response) took too long.
    HandshakeTimeout,
    /// The peer said nothing for the idle timeout, heartbeat included.
    IdleTimeout,
    /// A message began arriving longer than the message timeout ago and is still unfinished: whatever else the
    /// peer sends, it is holding memory it may not hold.
    MessageTimeout,
    /// A chat client has been behind (its queue over the bound) for longer than the grace period.
    SlowConsumer,
    /// The peer did not finish closing in time.
    CloseTimeout,
}

/// The times the rules need, for one connection.
#[derive(Clone, Copy, Debug)]
pub struct Times {
    /// When the current wait began: the connection was accepted, or its closing began.
    since: Stamp,
    /// When the peer last sent anything.
    heard: Stamp,
    /// When the message now arriving began, if `in_message`.
    message: Stamp,
    /// When the client fell behind, if `lagging`.
    lag: Stamp,
    /// A heartbeat Ping went out and nothing was heard since.
    pinged: bool,
    /// Closing has begun (`since` then marks it).
    closing: bool,
    /// A message is partly received.
    in_message: bool,
    /// The client is behind: its queue passed the bound and has not drained since.
    lagging: bool,
}

impl Times {
    /// A connection accepted at `now`.
    pub fn accepted(now: Millis) -> Times {
        Times {
            since: Stamp::at(now),
            heard: Stamp::at(now),
            message: Stamp::at(now),
            lag: Stamp::at(now),
            pinged: false,
            closing: false,
            in_message: false,
            lagging: false,
        }
    }

    /// The peer sent something: any byte is a sign of life, a Pong or otherwise.
    pub fn heard_from(&mut self, now: Millis) {
        self.heard = Stamp::at(now);
        self.pinged = false;
    }

    /// After a read: whether a message is now partly received. The message timeout runs from the read that left
    /// it unfinished first.
    pub fn mid_message(&mut self, unfinished: bool, now: Millis) {
        if unfinished && !self.in_message {
            self.message = Stamp::at(now);
        }
        self.in_message = unfinished;
    }

    /// The client fell behind at `now` (its queue passed the bound), or caught up: slow consumers are judged over
    /// the grace period, not by one look at their queue.
    pub fn behind(&mut self, lagging: bool, now: Millis) {
        if lagging && !self.lagging {
            self.lag = Stamp::at(now);
        }
        self.lagging = lagging;
    }

    /// A heartbeat Ping was sent.
    pub fn pinged(&mut self) {
        self.pinged = true;
    }

    /// Closing began at `now` (our Close, the peer's, a failure, or our FIN); later calls keep the first time
    /// unless `restart` asks for a fresh close timeout (our FIN after a finished closing handshake).
    pub fn closing_began(&mut self, now: Millis, restart: bool) {
        if !self.closing || restart {
            self.since = Stamp::at(now);
            self.closing = true;
        }
    }

    /// What is due at `now` for a connection waiting as `waiting` says.
    pub fn due(&self, waiting: Waiting, now: Millis, limits: &Timeouts) -> Due {
        let check = |deadline: Millis, due: Due| {
            if now >= deadline {
                due
            } else {
                Due::Later(deadline)
            }
        };
        match waiting {
            Waiting::Request => check(
                self.since.resolve(now).plus(limits.handshake),
                Due::HandshakeTimeout,
            ),
            Waiting::Close => {
                let since = if self.closing {
                    self.since
                } else {
                    Stamp::at(now)
                };
                check(since.resolve(now).plus(limits.close), Due::CloseTimeout)
            }
            Waiting::Peer => {
                let heard = self.heard.resolve(now);
                let idle_at = heard.plus(limits.idle);
                if now >= idle_at {
                    return Due::IdleTimeout;
                }
                let mut next = if self.pinged {
                    Due::Later(idle_at)
                } else {
                    check(heard.plus(limits.ping_interval), Due::Ping)
                };
                for (active, since, limit, due) in [
                    (
                        self.in_message,
                        self.message,
                        limits.message,
                        Due::MessageTimeout,
                    ),
                    (
                        self.lagging,
                        self.lag,
                        limits.slow_consumer_grace,
                        Due::SlowConsumer,
                    ),
                ] {
                    if !active {
                        continue;
                    }
                    let at = since.resolve(now).plus(limit);
                    if now >= at {
                        return due;
                    }
                    if matches!(next, Due::Later(later) if at < later) {
                        next = Due::Later(at);
                    }
                }
                next
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Timeouts {
        Timeouts::new(
            Duration::from_secs(10),
            Duration::from_secs(20),
            Duration::from_secs(60),
            Duration::from_secs(30),
            Duration::from_secs(10),
            Duration::from_secs(5),
        )
        .unwrap()
    }

    fn s(secs: u64) -> Millis {
        Millis(secs * 1000)
    }

    #[test]
    fn a_request_head_has_the_handshake_timeout_from_acceptance() {
        let times = Times::accepted(s(100));
        assert_eq!(
            times.due(Waiting::Request, s(105), &limits()),
            Due::Later(s(110))
        );
        assert_eq!(
            times.due(Waiting::Request, s(110), &limits()),
            Due::HandshakeTimeout
        );
    }

    #[test]
    fn a_quiet_websocket_is_pinged_after_the_interval_then_dropped_at_the_idle_timeout() {
        let mut times = Times::accepted(s(0));
        assert_eq!(times.due(Waiting::Peer, s(5), &limits()), Due::Later(s(20)));
        assert_eq!(times.due(Waiting::Peer, s(20), &limits()), Due::Ping);
        times.pinged();
        assert_eq!(
            times.due(Waiting::Peer, s(21), &limits()),
            Due::Later(s(60))
        );
        assert_eq!(times.due(Waiting::Peer, s(60), &limits()), Due::IdleTimeout);
    }

    #[test]
    fn hearing_from_the_peer_restarts_the_heartbeat_and_clears_the_ping() {
        let mut times = Times::accepted(s(0));
        times.pinged();
        times.heard_from(s(30));
        assert_eq!(
            times.due(Waiting::Peer, s(31), &limits()),
            Due::Later(s(50))
        );
        assert_eq!(times.due(Waiting::Peer, s(50), &limits()), Due::Ping);
    }

    #[test]
    fn an_unfinished_message_has_the_message_timeout_whatever_else_arrives() {
        let mut times = Times::accepted(s(0));
        times.heard_from(s(10));
        times.mid_message(true, s(10));
        for t in [12, 20, 35] {
            times.heard_from(s(t));
            times.mid_message(true, s(t));
        }
        assert_eq!(
            times.due(Waiting::Peer, s(36), &limits()),
            Due::Later(s(40))
        );
        assert_eq!(
            times.due(Waiting::Peer, s(40), &limits()),
            Due::MessageTimeout
        );
    }

    #[test]
    fn a_finished_message_stops_the_message_timeout() {
        let mut times = Times::accepted(s(0));
        times.mid_message(true, s(1));
        times.heard_from(s(30));
        times.mid_message(false, s(30));
        assert_eq!(
            times.due(Waiting::Peer, s(31), &limits()),
            Due::Later(s(50))
        );
        times.mid_message(true, s(45));
        assert_eq!(times.due(Waiting::Peer, s(71), &limits()), Due::Ping);
        times.pinged();
        assert_eq!(
            times.due(Waiting::Peer, s(72), &limits()),
            Due::Later(s(75))
        );
    }

    #[test]
    fn a_client_behind_for_the_grace_period_is_a_slow_consumer_and_catching_up_clears_it() {
        let mut times = Times::accepted(s(0));
        times.behind(true, s(2));
        times.heard_from(s(5));
        times.behind(true, s(6));
        assert_eq!(times.due(Waiting::Peer, s(7), &limits()), Due::Later(s(12)));
        assert_eq!(
            times.due(Waiting::Peer, s(12), &limits()),
            Due::SlowConsumer
        );
        times.behind(false, s(11));
        assert_eq!(
            times.due(Waiting::Peer, s(12), &limits()),
            Due::Later(s(25))
        );
    }

    #[test]
    fn closing_has_the_close_timeout_from_when_it_began() {
        let mut times = Times::accepted(s(0));
        times.closing_began(s(40), false);
        times.closing_began(s(42), false);
        assert_eq!(
            times.due(Waiting::Close, s(44), &limits()),
            Due::Later(s(45))
        );
        assert_eq!(
            times.due(Waiting::Close, s(45), &limits()),
            Due::CloseTimeout
        );
        times.closing_began(s(50), true);
        assert_eq!(
            times.due(Waiting::Close, s(54), &limits()),
            Due::Later(s(55))
        );
    }

    #[test]
    fn stamps_are_right_across_the_32_bit_wrap() {
        let start = Millis(u64::from(u32::MAX) - 1_000);
        let mut times = Times::accepted(start);
        times.heard_from(start);
        let later = start.plus(20_000);
        assert!(later.0 > u64::from(u32::MAX), "the low bits wrapped");
        assert_eq!(times.due(Waiting::Peer, later, &limits()), Due::Ping);
        assert_eq!(
            times.due(Waiting::Peer, start.plus(1_000), &limits()),
            Due::Later(start.plus(20_000))
        );
    }

    #[test]
    fn a_connection_open_for_months_is_still_timed_from_its_last_sign_of_life() {
        let mut times = Times::accepted(s(0));
        let months = s(200 * 24 * 3600);
        times.heard_from(months);
        assert_eq!(
            times.due(Waiting::Peer, months.plus(1), &limits()),
            Due::Later(months.plus(20_000))
        );
    }

    #[test]
    fn timeouts_of_a_day_or_more_are_refused() {
        let day = Duration::from_secs(24 * 3600);
        let second = Duration::from_secs(1);
        assert_eq!(
            Timeouts::new(second, second, day, second, second, second),
            Err(TimeoutTooLong)
        );
        assert!(Timeouts::new(second, second, day - second, second, second, second).is_ok());
    }

    #[test]
    fn waiting_is_rounded_up_to_whole_milliseconds_and_never_negative() {
        assert_eq!(s(1).until(Millis(1_500)), Duration::from_millis(500));
        assert_eq!(s(2).until(s(1)), Duration::ZERO);
    }
}
