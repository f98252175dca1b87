//! The server under attack as seen from outside: its resident memory sampled from `/proc` every few milliseconds,
//! its CPU time, whether it is still alive, and its `/metrics` before and after.
//!
//! Owns the readings and their timeline (milliseconds from the start of the attack window). It must not judge the
//! figures: the report prints them. `/metrics` is fetched with a blocking request with a short timeout, so it is
//! done only between phases, never while the attack is measured.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{json, Value};

use crate::stats::{core_ticks, cpu_percent, cpu_ticks, rss_kib, status_kib};
use crate::{round1, round3};

/// How often the server's memory is read.
pub const SAMPLE_EVERY_NS: u64 = 10_000_000;
/// The memory curve of the report has a point this often.
const CURVE_EVERY_NS: u64 = 1_000_000_000;
/// The cores whose business and steal time the report gives (the server's and the generator's, by default).
const MACHINE_CORES: usize = 2;
/// How long a `/metrics` request may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// The watch over one server process.
pub struct Watch {
    pid: u32,
    addr: SocketAddr,
    next_sample: u64,
    /// When the attack window began (generator clock, ns).
    window_start: u64,
    before_setup_kib: Option<u64>,
    window_start_kib: Option<u64>,
    peak_kib: u64,
    peak_at: u64,
    window_end_kib: Option<u64>,
    final_kib: Option<u64>,
    hwm_kib: Option<u64>,
    /// (ns since the window began, KiB, server CPU % over the second before), a point every `CURVE_EVERY_NS`.
    curve: Vec<(u64, u64, Option<f64>)>,
    /// The server's CPU ticks at the last point of the curve.
    curve_ticks: Option<(u64, u64)>,
    /// Each core's (busy, steal, total) ticks when the window began, and the busy and steal percent over it.
    cores_start: Vec<Option<(u64, u64, u64)>>,
    cores_window: Vec<Option<(f64, f64)>>,
    next_curve_point: Option<u64>,
    exited_at: Option<u64>,
    cpu_start: Option<(u64, Option<u64>, Option<u64>)>,
    cpu_window: Option<(f64, Option<f64>, Option<f64>)>,
    metrics_before: Result<BTreeMap<String, f64>, String>,
    gauges_at_end: Result<BTreeMap<String, f64>, String>,
    metrics_after: Result<BTreeMap<String, f64>, String>,
}

impl Watch {
    /// Starts watching process `pid`, which serves `addr`.
    pub fn new(pid: u32, addr: SocketAddr) -> Watch {
        Watch {
            pid,
            addr,
            next_sample: 0,
            window_start: 0,
            before_setup_kib: rss_kib(pid),
            window_start_kib: None,
            peak_kib: 0,
            peak_at: 0,
            window_end_kib: None,
            final_kib: None,
            hwm_kib: None,
            curve: Vec::new(),
            curve_ticks: None,
            cores_start: Vec::new(),
            cores_window: Vec::new(),
            next_curve_point: None,
            exited_at: None,
            cpu_start: None,
            cpu_window: None,
            metrics_before: Err("not fetched".into()),
            gauges_at_end: Err("not fetched".into()),
            metrics_after: Err("not fetched".into()),
        }
    }

    /// Reads the server's memory if a sample is due; false once the process is gone.
    pub fn sample(&mut self, now: u64) -> bool {
        if self.exited_at.is_some() {
            return false;
        }
        if now < self.next_sample {
            return true;
        }
        self.next_sample = now + SAMPLE_EVERY_NS;
        match rss_kib(self.pid) {
            Some(kib) => {
                if kib > self.peak_kib {
                    self.peak_kib = kib;
                    self.peak_at = now;
                }
                if let Some(at) = self.next_curve_point.filter(|&at| now >= at) {
                    let ticks = cpu_ticks(Some(self.pid)).map(|t| (now, t));
                    let cpu = match (self.curve_ticks, ticks) {
                        (Some((then, before)), Some((_, after))) => {
                            cpu_percent(Some(before), Some(after), (now - then) as f64 / 1e9)
                        }
                        _ => None,
                    };
                    self.curve_ticks = ticks;
                    self.curve.push((now - self.window_start, kib, cpu));
                    self.next_curve_point = Some(at + CURVE_EVERY_NS);
                }
                true
            }
            None => {
                self.exited_at = Some(now);
                self.metrics_after = Err("the server was gone".into());
                self.gauges_at_end = Err("the server was gone".into());
                false
            }
        }
    }

    /// The largest resident size read so far, in KiB (0 before any).
    pub fn peak_kib(&self) -> u64 {
        self.peak_kib
    }

    /// True once the process was seen gone.
    pub fn exited(&self) -> bool {
        self.exited_at.is_some()
    }

    /// The attack window begins: memory and CPU readings, and the counters of `/metrics`.
    pub fn start_window(&mut self, now: u64) {
        self.metrics_before = scrape(self.addr);
        self.window_start = now;
        self.window_start_kib = rss_kib(self.pid);
        self.next_curve_point = Some(now + CURVE_EVERY_NS);
        self.curve_ticks = cpu_ticks(Some(self.pid)).map(|t| (now, t));
        self.cores_start = (0..MACHINE_CORES).map(core_ticks).collect();
        self.cpu_start = Some((now, cpu_ticks(None), cpu_ticks(Some(self.pid))));
    }

    /// The attack window ends: memory, CPU over the window, and the gauges of `/metrics` as the attack left them.
    pub fn end_window(&mut self, now: u64) {
        self.sample(now);
        self.next_curve_point = None;
        self.window_end_kib = rss_kib(self.pid);
        self.cores_window = (0..MACHINE_CORES)
            .map(|core| {
                let (busy0, steal0, total0) = self.cores_start.get(core).copied().flatten()?;
                let (busy1, steal1, total1) = core_ticks(core)?;
                let total = total1.checked_sub(total0).filter(|&t| t > 0)? as f64;
                Some((
                    busy1.saturating_sub(busy0) as f64 / total * 100.0,
                    steal1.saturating_sub(steal0) as f64 / total * 100.0,
                ))
            })
            .collect();
        if let Some((at, generator, server)) = self.cpu_start {
            let secs = now.saturating_sub(at) as f64 / 1e9;
            self.cpu_window = Some((
                secs,
                cpu_percent(generator, cpu_ticks(None), secs),
                cpu_percent(server, cpu_ticks(Some(self.pid)), secs),
            ));
        }
        if !self.exited() {
            self.gauges_at_end = scrape(self.addr);
        }
    }

    /// After the attackers left and the server settled: its memory, its peak as the kernel kept it, and the
    /// counters of `/metrics` again.
    pub fn finish(&mut self, now: u64) {
        self.sample(now);
        self.final_kib = rss_kib(self.pid);
        self.hwm_kib = status_kib(self.pid, "VmHWM:");
        if !self.exited() {
            self.metrics_after = scrape(self.addr);
        }
    }

    /// Seconds from the start of the window to `at`.
    fn window_secs(&self, at: u64) -> f64 {
        round3((at as f64 - self.window_start as f64) / 1e9)
    }

    /// `server` of the report: memory (MiB), CPU over the window, exit, and what `/metrics` says moved.
    pub fn to_json(&self) -> Value {
        let mib = |kib: Option<u64>| kib.map(|k| round1(k as f64 / 1024.0));
        let peak = self.peak_kib.max(self.hwm_kib.unwrap_or(0));
        let moved = match (&self.metrics_before, &self.metrics_after) {
            (Ok(before), Ok(after)) => json!(counters_moved(before, after)),
            (Err(e), _) | (_, Err(e)) => json!({ "unavailable": e }),
        };
        let gauges = match &self.gauges_at_end {
            Ok(values) => json!(values
                .iter()
                .filter(|(name, _)| !name.ends_with("_total") && !name.contains("_total{"))
                .collect::<BTreeMap<_, _>>()),
            Err(e) => json!({ "unavailable": e }),
        };
        let (window_s, generator_cpu, server_cpu) = self.cpu_window.unwrap_or((0.0, None, None));
        json!({
            "alive_at_end": self.exited_at.is_none(),
            "exited_at_s": self.exited_at.map(|at| self.window_secs(at)),
            "rss_mib": {
                "before_setup": mib(self.before_setup_kib),
                "attack_start": mib(self.window_start_kib),
                "peak": mib(Some(peak)),
                "peak_sampled_at_s": (self.peak_kib > 0).then(|| self.window_secs(self.peak_at)),
                "attack_end": mib(self.window_end_kib),
                "final": mib(self.final_kib),
                "each_second": self.curve
                    .iter()
                    .map(|&(at, kib, _)| json!([round3(at as f64 / 1e9), round1(kib as f64 / 1024.0)]))
                    .collect::<Vec<_>>(),
            },
            "cpu_pct": server_cpu.map(round1),
            "cpu_pct_each_second": self.curve.iter().map(|&(_, _, cpu)| cpu.map(round1)).collect::<Vec<_>>(),
            "machine_cores_during_attack": self.cores_window
                .iter()
                .enumerate()
                .map(|(core, window)| {
                    json!({
                        "core": core,
                        "busy_pct": window.map(|(busy, _)| round1(busy)),
                        "steal_pct": window.map(|(_, steal)| round1(steal)),
                    })
                })
                .collect::<Vec<_>>(),
            "window_s": round3(window_s),
            "generator_cpu_pct": generator_cpu.map(round1),
            "metrics_moved": moved,
            "gauges_at_attack_end": gauges,
        })
    }
}

/// Counters (series named `*_total`) that went up between two scrapes, by how much.
fn counters_moved(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter(|(series, _)| series.contains("_total"))
        .filter_map(|(series, value)| {
            let delta = value - before.get(series).copied().unwrap_or(0.0);
            (delta > 0.0).then(|| (series.clone(), delta))
        })
        .collect()
}

/// `GET /metrics`, parsed: series (name with labels) to value.
fn scrape(addr: SocketAddr) -> Result<BTreeMap<String, f64>, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(SCRAPE_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(SCRAPE_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| e.to_string())?;
    parse_metrics(&String::from_utf8_lossy(&response))
}

/// The samples of a Prometheus text response (status line and headers included): series to value.
fn parse_metrics(response: &str) -> Result<BTreeMap<String, f64>, String> {
    let status = response.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(format!("answered `{status}`"));
    }
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok(body
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_parsed_and_only_counters_that_went_up_are_kept() {
        let before = parse_metrics(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n# HELP x\nroomcast_open_connections 3\n\
             roomcast_connections_failed_total{reason=\"frame_budget\"} 1\nroomcast_accepted_total 10\n",
        )
        .unwrap();
        let after = parse_metrics(
            "HTTP/1.1 200 OK\r\n\r\nroomcast_open_connections 9\n\
             roomcast_connections_failed_total{reason=\"frame_budget\"} 4\nroomcast_accepted_total 10\n\
             roomcast_closes_total{code=\"1008\"} 3\n",
        )
        .unwrap();
        let moved = counters_moved(&before, &after);
        assert_eq!(
            moved,
            BTreeMap::from([
                ("roomcast_closes_total{code=\"1008\"}".to_owned(), 3.0),
                (
                    "roomcast_connections_failed_total{reason=\"frame_budget\"}".to_owned(),
                    3.0
                ),
            ])
        );
    }

    #[test]
    fn a_refused_scrape_is_an_error_with_the_status() {
        let refused = parse_metrics("HTTP/1.1 503 Service Unavailable\r\n\r\nbusy\n");
        assert_eq!(
            refused,
            Err("answered `HTTP/1.1 503 Service Unavailable`".into())
        );
    }
}
