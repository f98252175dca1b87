//! `roomcast-bench summarize`: the JSON lines of many runs in, a markdown report out.
//!
//! Owns the grouping (by `label`, then by server), the medians, the ratios to roomcast and the check of the
//! issue's targets. A ratio always reads "how many times better roomcast is": the peer's figure divided by
//! roomcast's for costs (latency, memory), roomcast's divided by the peer's for rates (deliveries/s, round
//! trips/s). Over 1 means roomcast is ahead.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

/// The servers, in table order.
const SERVERS: [&str; 4] = ["roomcast", "seed", "tungstenite", "rawtcp"];

#[derive(Debug, Args)]
pub struct SummarizeArgs {
    /// Files of JSON lines written by the scenarios (other lines are ignored)
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Whether a bigger figure is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

/// A figure shown for a scenario: its heading, its JSON path, and which way is better.
struct Metric {
    heading: &'static str,
    path: &'static [&'static str],
    better: Better,
}

const FANOUT: &[Metric] = &[
    Metric {
        heading: "deliveries/s",
        path: &["deliveries_per_sec"],
        better: Better::Higher,
    },
    Metric {
        heading: "p50 µs",
        path: &["latency_us", "p50"],
        better: Better::Lower,
    },
    Metric {
        heading: "p99 µs",
        path: &["latency_us", "p99"],
        better: Better::Lower,
    },
];
const IDLE: &[Metric] = &[Metric {
    heading: "RSS bytes/conn",
    path: &["rss_per_conn_bytes"],
    better: Better::Lower,
}];
const ECHO: &[Metric] = &[
    Metric {
        heading: "round trips/s",
        path: &["round_trips_per_sec"],
        better: Better::Higher,
    },
    Metric {
        heading: "p99 µs",
        path: &["latency_us", "p99"],
        better: Better::Lower,
    },
];

fn metrics_of(scenario: &str) -> &'static [Metric] {
    match scenario {
        "fanout" => FANOUT,
        "idle" => IDLE,
        "echo" => ECHO,
        _ => &[],
    }
}

/// The number at `path` (keys, outermost first) in one run's JSON.
pub(crate) fn lookup(run: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(run, |v, key| v.get(key))?.as_f64()
}

/// The median of the figures (the mean of the middle two for an even count).
pub(crate) fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// Runs of one label, by server.
struct Group {
    scenario: String,
    runs: BTreeMap<&'static str, Vec<Value>>,
}

impl Group {
    fn median(&self, server: &str, path: &[&str]) -> Option<f64> {
        let runs = self.runs.get(server)?;
        median(runs.iter().filter_map(|r| lookup(r, path)).collect())
    }

    /// How many times better roomcast is than `server` on `metric`.
    fn ratio(&self, server: &str, metric: &Metric) -> Option<f64> {
        let ours = self.median("roomcast", metric.path)?;
        let theirs = self.median(server, metric.path)?;
        let ratio = match metric.better {
            Better::Higher => ours / theirs,
            Better::Lower => theirs / ours,
        };
        ratio.is_finite().then_some(ratio)
    }
}

/// A figure with as many decimals as its size deserves: none from 1,000, one from 10, else two.
pub(crate) fn fmt_value(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Entry point of `summarize`.
/// Every line of `files` that parses as JSON, in order (other lines are skipped); `None`, said on stderr, if a file
/// cannot be read. What each `summarize-*` scenario reads.
pub(crate) fn json_lines(files: &[PathBuf]) -> Option<Vec<Value>> {
    let mut runs = Vec::new();
    for file in files {
        match fs::read_to_string(file) {
            Ok(text) => runs.extend(
                text.lines()
                    .filter_map(|line| serde_json::from_str::<Value>(line).ok()),
            ),
            Err(e) => {
                eprintln!("roomcast-bench: {}: {e}", file.display());
                return None;
            }
        }
    }
    Some(runs)
}

pub fn run(args: &SummarizeArgs) -> ExitCode {
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let Some(runs) = json_lines(&args.files) else {
        return ExitCode::FAILURE;
    };
    for run in runs {
        let (Some(label), Some(scenario), Some(server)) = (
            run.get("label").and_then(Value::as_str),
            run.get("scenario").and_then(Value::as_str),
            run.get("server_kind").and_then(Value::as_str),
        ) else {
            continue;
        };
        let Some(server) = SERVERS.iter().find(|s| **s == server) else {
            continue;
        };
        let label = if label.is_empty() { scenario } else { label }.to_owned();
        if !groups.contains_key(&label) {
            order.push(label.clone());
        }
        groups
            .entry(label)
            .or_insert_with(|| Group {
                scenario: scenario.to_owned(),
                runs: BTreeMap::new(),
            })
            .runs
            .entry(server)
            .or_default()
            .push(run);
    }
    print!("{}", render(&order, &groups));
    ExitCode::SUCCESS
}

fn render(order: &[String], groups: &BTreeMap<String, Group>) -> String {
    let mut out = String::new();
    out.push_str(
        "| scenario | figure | roomcast | seed (Node ws) | tokio-tungstenite | raw TCP |\n",
    );
    out.push_str("| --- | --- | ---: | ---: | ---: | ---: |\n");
    for label in order {
        let group = &groups[label];
        for metric in metrics_of(&group.scenario) {
            out.push_str(&format!("| {label} | {} (median) |", metric.heading));
            for server in SERVERS {
                let cell = match (group.median(server, metric.path), server) {
                    (None, _) => "n/a".to_owned(),
                    (Some(v), "roomcast") => format!("**{}**", fmt_value(v)),
                    (Some(v), _) => match group.ratio(server, metric) {
                        Some(r) => format!("{} (roomcast {r:.2}×)", fmt_value(v)),
                        None => fmt_value(v),
                    },
                };
                out.push_str(&format!(" {cell} |"));
            }
            out.push('\n');
        }
    }
    out.push_str("\nEvery run (primary figure; generator CPU % / server CPU %; errors):\n\n");
    out.push_str("| scenario | server | runs | CPU gen/server % | errors |\n| --- | --- | --- | --- | --- |\n");
    for label in order {
        let group = &groups[label];
        let Some(primary) = metrics_of(&group.scenario).first() else {
            continue;
        };
        for server in SERVERS {
            let Some(runs) = group.runs.get(server) else {
                continue;
            };
            let values: Vec<String> = runs
                .iter()
                .map(|r| lookup(r, primary.path).map_or("?".into(), fmt_value))
                .collect();
            let cpu: Vec<String> = runs
                .iter()
                .map(|r| {
                    let g = lookup(r, &["generator_cpu_pct"]).map_or("-".into(), fmt_value);
                    let s = lookup(r, &["server_cpu_pct"]).map_or("-".into(), fmt_value);
                    format!("{g}/{s}")
                })
                .collect();
            let errors: f64 = runs.iter().filter_map(|r| lookup(r, &["errors"])).sum();
            out.push_str(&format!(
                "| {label} | {server} | {} {}: {} | {} | {errors} |\n",
                primary.heading,
                if runs.len() == 1 { "" } else { "each" },
                values.join(", "),
                cpu.join(", "),
            ));
        }
    }
    out.push_str(&render_targets(groups));
    out
}

/// One of the targets: a ratio (as `Group::ratio` reads it) that must reach `at_least`.
struct Target {
    label: &'static str,
    server: &'static str,
    metric: &'static Metric,
    at_least: f64,
    wording: &'static str,
}

const TARGETS: &[Target] = &[
    Target {
        label: "fanout_1x100",
        server: "seed",
        metric: &FANOUT[0],
        at_least: 8.0,
        wording: "deliveries/s ≥ 8× the Node seed",
    },
    Target {
        label: "fanout_1x100",
        server: "tungstenite",
        metric: &FANOUT[0],
        at_least: 6.0,
        wording: "deliveries/s ≥ 6× tokio-tungstenite",
    },
    Target {
        label: "fanout_1x100",
        server: "rawtcp",
        metric: &FANOUT[0],
        at_least: 0.5,
        wording: "deliveries/s ≥ 50% of raw TCP",
    },
    Target {
        label: "fanout_100x10",
        server: "seed",
        metric: &FANOUT[0],
        at_least: 8.0,
        wording: "deliveries/s ≥ 8× the Node seed",
    },
    Target {
        label: "fanout_100x10",
        server: "tungstenite",
        metric: &FANOUT[0],
        at_least: 6.0,
        wording: "deliveries/s ≥ 6× tokio-tungstenite",
    },
    Target {
        label: "fanout_100x10",
        server: "rawtcp",
        metric: &FANOUT[0],
        at_least: 0.5,
        wording: "deliveries/s ≥ 50% of raw TCP",
    },
    Target {
        label: "latency_10x100",
        server: "rawtcp",
        metric: &FANOUT[2],
        at_least: 1.0 / 1.5,
        wording: "p99 ≤ 1.5× raw TCP's p99",
    },
    Target {
        label: "latency_10x100",
        server: "tungstenite",
        metric: &FANOUT[2],
        at_least: 1.0,
        wording: "p99 below tokio-tungstenite's",
    },
    Target {
        label: "echo_50x64",
        server: "tungstenite",
        metric: &ECHO[0],
        at_least: 2.0,
        wording: "round trips/s ≥ 2× tokio-tungstenite",
    },
];

fn render_targets(groups: &BTreeMap<String, Group>) -> String {
    let mut out = String::from(
        "\nTargets (medians):\n\n| scenario | target | ratio | met |\n| --- | --- | ---: | --- |\n",
    );
    for target in TARGETS {
        let Some(group) = groups.get(target.label) else {
            continue;
        };
        let (ratio, met) = match group.ratio(target.server, target.metric) {
            Some(r) => (
                format!("{r:.2}×"),
                if r >= target.at_least {
                    "yes"
                } else {
                    "**no**"
                },
            ),
            None => ("n/a".into(), "n/a"),
        };
        out.push_str(&format!(
            "| {} | {} | {ratio} | {met} |\n",
            target.label, target.wording
        ));
    }
    if let Some(group) = groups.get("idle_10k") {
        if let Some(bytes) = group.median("roomcast", IDLE[0].path) {
            let met = if bytes <= 1024.0 { "yes" } else { "**no**" };
            out.push_str(&format!(
                "| idle_10k | ≤ 1 KiB server RSS per connection | {bytes:.0} B | {met} |\n"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        let mut runs = BTreeMap::new();
        let run = |server: &str, rate: f64, p99: f64| {
            serde_json::json!({"server_kind": server, "deliveries_per_sec": rate,
                               "latency_us": {"p99": p99}})
        };
        runs.insert("roomcast", vec![run("roomcast", 800.0, 100.0)]);
        runs.insert("seed", vec![run("seed", 100.0, 400.0)]);
        let group = Group {
            scenario: "fanout".into(),
            runs,
        };
        assert_eq!(group.ratio("seed", &FANOUT[0]), Some(8.0));
        assert_eq!(group.ratio("seed", &FANOUT[2]), Some(4.0));
        assert_eq!(group.ratio("rawtcp", &FANOUT[0]), None);
    }
}
