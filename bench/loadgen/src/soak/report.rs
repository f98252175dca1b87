//! The soak's figures: latency per interval and over the whole run, the 5-second sample lines, the server's
//! memory curve, and the pass/fail verdict.
//!
//! Owns the arithmetic and the JSON shapes of what the soak reports. It must not read clocks, `/proc` or
//! sockets: the caller measures and hands the numbers in.

use std::collections::BTreeMap;
use std::io;

use roomcast::protocol::CloseFrame;
use serde_json::{json, Value};

use crate::stats::Histogram;
use crate::{round1, round3};

/// Latency of deliveries, kept twice: for the current sampling interval, and for the whole run.
#[derive(Clone, Debug, Default)]
pub struct LatencyWindow {
    interval: Histogram,
    whole: Histogram,
}

impl LatencyWindow {
    /// Adds one delivery's latency, in ns.
    pub fn record(&mut self, ns: u64) {
        self.interval.record(ns);
        self.whole.record(ns);
    }

    /// The interval's figures; the next interval starts empty.
    pub fn take_interval(&mut self) -> LatencySummary {
        let summary = LatencySummary::of(&self.interval);
        self.interval.clear();
        summary
    }

    /// The figures of the whole run so far.
    pub fn whole(&self) -> LatencySummary {
        LatencySummary::of(&self.whole)
    }
}

/// Quantiles of a latency histogram, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySummary {
    /// Deliveries measured.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl LatencySummary {
    /// The figures of `histogram` (of ns values).
    pub fn of(histogram: &Histogram) -> LatencySummary {
        let ms = |ns: u64| ns as f64 / 1e6;
        LatencySummary {
            count: histogram.count(),
            p50_ms: ms(histogram.quantile(0.50)),
            p99_ms: ms(histogram.quantile(0.99)),
            p999_ms: ms(histogram.quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }

    /// As JSON, to the microsecond.
    pub fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "p50": round3(self.p50_ms),
            "p99": round3(self.p99_ms),
            "p999": round3(self.p999_ms),
            "max": round3(self.max_ms),
        })
    }
}

/// Why a connection ended without being asked to: its Close frame's code and reason, or what TCP said.
pub fn close_reason(frame: Option<&CloseFrame>, error: Option<&io::Error>) -> String {
    match (frame, error) {
        (Some(frame), _) => match (frame.code, frame.reason.as_str()) {
            (Some(code), "") => code.to_string(),
            (Some(code), reason) => format!("{code} {reason}"),
            (None, "") => "1005 (close without a code)".to_owned(),
            (None, reason) => reason.to_owned(),
        },
        (None, Some(error)) if error.kind() == io::ErrorKind::InvalidData => {
            format!("refused: {error}")
        }
        (None, Some(error)) => format!("tcp: {}", error.kind()),
        (None, None) => "tcp: closed without a Close frame".to_owned(),
    }
}

/// Counts of connections ended by the server, by attacker group and reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClosedByReason(BTreeMap<&'static str, BTreeMap<String, u64>>);

impl ClosedByReason {
    /// Counts one connection of `group` ended for `reason`.
    pub fn add(&mut self, group: &'static str, reason: String) {
        *self.0.entry(group).or_default().entry(reason).or_default() += 1;
    }

    /// How many connections ended, all groups and reasons together.
    pub fn total(&self) -> u64 {
        self.0.values().flat_map(BTreeMap::values).sum()
    }

    /// `{group: {reason: count}}`.
    pub fn to_json(&self) -> Value {
        json!(self.0)
    }
}

/// One line of the samples file, written every sampling interval.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Seconds since the soak started (after the innocents joined).
    pub t_s: f64,
    /// The server's resident memory.
    pub rss_kib: Option<u64>,
    /// The server's CPU use over the interval, % of a core.
    pub server_cpu_pct: Option<f64>,
    /// The generator's CPU use over the interval, % of a core.
    pub generator_cpu_pct: Option<f64>,
    /// Innocents joined right now.
    pub innocents_connected: usize,
    /// Innocents closed by the server (or their TCP connection lost) so far.
    pub innocents_dropped: u64,
    /// Chat messages lost so far (gaps in seqs, own messages never echoed).
    pub lost: u64,
    /// Chat messages received twice so far.
    pub duplicated: u64,
    /// Innocents' delivery latency over the interval.
    pub latency: LatencySummary,
    /// Chat messages the innocents sent so far.
    pub sent: u64,
    /// Chat messages the innocents received so far (replays included).
    pub delivered: u64,
    /// Churned innocents back in their room so far.
    pub rejoins: u64,
    /// The most a send was late against its schedule over the interval: the generator's own lag.
    pub send_lag_max_ms: f64,
    /// The longest the generator spent handling one poll's events over the interval: the most its own work
    /// can have added to a measured latency.
    pub generator_turn_max_ms: f64,
    /// Attacker connections open right now, by group.
    pub attackers_open: BTreeMap<&'static str, u64>,
    /// Attacker connections the server ended so far, by group and reason.
    pub attackers_closed: ClosedByReason,
}

impl Sample {
    /// The sample as one JSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "t_s": round1(self.t_s),
            "rss_kib": self.rss_kib,
            "server_cpu_pct": self.server_cpu_pct.map(round1),
            "generator_cpu_pct": self.generator_cpu_pct.map(round1),
            "innocents_connected": self.innocents_connected,
            "innocents_dropped": self.innocents_dropped,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "latency_ms": self.latency.to_json(),
            "sent": self.sent,
            "delivered": self.delivered,
            "rejoins": self.rejoins,
            "send_lag_max_ms": round3(self.send_lag_max_ms),
            "generator_turn_max_ms": round3(self.generator_turn_max_ms),
            "attackers_open": self.attackers_open,
            "attackers_closed": self.attackers_closed.to_json(),
        })
    }
}

/// The server's resident memory over the run: enough to judge whether it is flat after warm-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RssCurve {
    /// At the first sample.
    pub first_kib: Option<u64>,
    /// At the first sample taken 60 s or more into the run.
    pub at_1min_kib: Option<u64>,
    /// At the last sample.
    pub end_kib: Option<u64>,
    /// The largest.
    pub max_kib: Option<u64>,
}

impl RssCurve {
    /// Takes in one reading, `t_s` seconds into the run.
    pub fn observe(&mut self, t_s: f64, kib: u64) {
        self.first_kib.get_or_insert(kib);
        if t_s >= 60.0 {
            self.at_1min_kib.get_or_insert(kib);
        }
        self.end_kib = Some(kib);
        self.max_kib = Some(self.max_kib.map_or(kib, |max| max.max(kib)));
    }

    /// `{first, at_1min, end, max}` in KiB, and the growth from 1 minute to the end.
    pub fn to_json(self) -> Value {
        let growth = match (self.at_1min_kib, self.end_kib) {
            (Some(at_1min), Some(end)) => Some(end as i64 - at_1min as i64),
            _ => None,
        };
        json!({
            "first": self.first_kib,
            "at_1min": self.at_1min_kib,
            "end": self.end_kib,
            "max": self.max_kib,
            "growth_after_1min": growth,
        })
    }
}

/// The pass criteria of a soak: the innocents were not hurt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// No innocent was closed by the server.
    pub no_drops: bool,
    /// No message was lost.
    pub no_loss: bool,
    /// No message arrived twice.
    pub no_duplicates: bool,
    /// The innocents' p99 latency over the whole run stayed under the limit.
    pub p99_under_limit: bool,
    /// The soak ran its whole course (it stops early when the server's memory passes a safety limit).
    pub completed: bool,
}

impl Verdict {
    /// Judges the run's totals.
    pub fn judge(
        dropped: u64,
        lost: u64,
        duplicated: u64,
        p99_ms: f64,
        limit_ms: f64,
        completed: bool,
    ) -> Verdict {
        Verdict {
            no_drops: dropped == 0,
            no_loss: lost == 0,
            no_duplicates: duplicated == 0,
            p99_under_limit: p99_ms < limit_ms,
            completed,
        }
    }

    /// Every criterion met.
    pub fn passed(&self) -> bool {
        self.no_drops
            && self.no_loss
            && self.no_duplicates
            && self.p99_under_limit
            && self.completed
    }

    /// Each criterion and the whole.
    pub fn to_json(self, limit_ms: f64) -> Value {
        json!({
            "no_innocent_dropped": self.no_drops,
            "no_message_lost": self.no_loss,
            "no_message_duplicated": self.no_duplicates,
            format!("p99_under_{limit_ms}ms"): self.p99_under_limit,
            "ran_to_the_end": self.completed,
            "passed": self.passed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast::protocol::CloseCode;

    #[test]
    fn interval_latency_starts_afresh_but_the_whole_run_keeps_everything() {
        let mut window = LatencyWindow::default();
        for ms in 1..=100u64 {
            window.record(ms * 1_000_000);
        }
        let first = window.take_interval();
        assert_eq!(first.count, 100);
        assert!((first.p99_ms - 99.0).abs() < 3.0, "{}", first.p99_ms);
        window.record(500_000);
        let second = window.take_interval();
        assert_eq!(second.count, 1);
        assert_eq!(second.max_ms, 0.5);
        assert_eq!(window.take_interval().count, 0);
        let whole = window.whole();
        assert_eq!(whole.count, 101);
        assert_eq!(whole.max_ms, 100.0);
    }

    #[test]
    fn an_empty_interval_reports_zeros() {
        let summary = LatencyWindow::default().take_interval();
        assert_eq!(summary, LatencySummary::default());
    }

    #[test]
    fn sample_lines_carry_every_figure_rounded() {
        let mut closed = ClosedByReason::default();
        closed.add("flood", "1008 rate limit".into());
        closed.add("flood", "1008 rate limit".into());
        let sample = Sample {
            t_s: 5.04,
            rss_kib: Some(12_345),
            generator_cpu_pct: Some(41.26),
            innocents_connected: 1998,
            innocents_dropped: 2,
            lost: 3,
            generator_turn_max_ms: 0.25,
            latency: LatencySummary {
                count: 10,
                p50_ms: 1.23456,
                p99_ms: 7.0,
                p999_ms: 8.0,
                max_ms: 9.0,
            },
            attackers_open: BTreeMap::from([("flood", 4)]),
            attackers_closed: closed,
            ..Sample::default()
        };
        let line = sample.to_json().to_string();
        assert!(!line.contains('\n'));
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["t_s"], 5.0);
        assert_eq!(value["rss_kib"], 12_345);
        assert_eq!(value["server_cpu_pct"], Value::Null);
        assert_eq!(value["generator_cpu_pct"], 41.3);
        assert_eq!(value["innocents_connected"], 1998);
        assert_eq!(value["innocents_dropped"], 2);
        assert_eq!(value["lost"], 3);
        assert_eq!(value["duplicated"], 0);
        assert_eq!(value["latency_ms"]["p50"], 1.235);
        assert_eq!(value["latency_ms"]["count"], 10);
        assert_eq!(value["generator_turn_max_ms"], 0.25);
        assert_eq!(value["send_lag_max_ms"], 0.0);
        assert_eq!(value["attackers_open"]["flood"], 4);
        assert_eq!(value["attackers_closed"]["flood"]["1008 rate limit"], 2);
    }

    #[test]
    fn close_reasons_name_the_code_and_text_or_the_tcp_event() {
        let frame = |code: Option<u16>, reason: &str| CloseFrame {
            code: code.map(CloseCode::new),
            reason: reason.into(),
        };
        assert_eq!(
            close_reason(Some(&frame(Some(1008), "flood")), None),
            "1008 flood"
        );
        assert_eq!(close_reason(Some(&frame(Some(1009), "")), None), "1009");
        assert_eq!(
            close_reason(Some(&frame(None, "")), None),
            "1005 (close without a code)"
        );
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(close_reason(None, Some(&reset)), "tcp: connection reset");
        let refused = io::Error::new(io::ErrorKind::InvalidData, "status 503");
        assert_eq!(close_reason(None, Some(&refused)), "refused: status 503");
        assert_eq!(
            close_reason(None, None),
            "tcp: closed without a Close frame"
        );
    }

    #[test]
    fn closed_counts_add_up_across_groups() {
        let mut closed = ClosedByReason::default();
        closed.add("flood", "1008".into());
        closed.add("replay", "1008".into());
        closed.add("replay", "1009".into());
        assert_eq!(closed.total(), 3);
    }

    #[test]
    fn rss_curve_keeps_the_reading_at_one_minute_the_end_and_the_max() {
        let mut curve = RssCurve::default();
        for (t, kib) in [
            (5.0, 100),
            (55.0, 900),
            (60.0, 800),
            (65.0, 850),
            (70.0, 820),
        ] {
            curve.observe(t, kib);
        }
        assert_eq!(curve.first_kib, Some(100));
        assert_eq!(curve.at_1min_kib, Some(800));
        assert_eq!(curve.end_kib, Some(820));
        assert_eq!(curve.max_kib, Some(900));
        assert_eq!(curve.to_json()["growth_after_1min"], 20);
    }

    #[test]
    fn any_failed_criterion_fails_the_run() {
        assert!(Verdict::judge(0, 0, 0, 49.9, 50.0, true).passed());
        assert!(!Verdict::judge(1, 0, 0, 1.0, 50.0, true).passed());
        assert!(!Verdict::judge(0, 1, 0, 1.0, 50.0, true).passed());
        assert!(!Verdict::judge(0, 0, 1, 1.0, 50.0, true).passed());
        assert!(!Verdict::judge(0, 0, 0, 1.0, 50.0, false).passed());
        let slow = Verdict::judge(0, 0, 0, 50.0, 50.0, true);
        assert!(!slow.passed() && !slow.p99_under_limit);
        assert_eq!(slow.to_json(50.0)["p99_under_50ms"], false);
    }
}
