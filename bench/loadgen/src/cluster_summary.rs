//! `roomcast-bench summarize-cluster`: the JSON lines of `bench/cluster.sh` in, the tables and targets of issue 13's
//! benchmarks out, as markdown.
//!
//! Owns the grouping of runs by scenario and setup (the run's label is `<scenario>/<setup>`), their medians, the
//! check of the targets, and the instructions per delivery from the callgrind lines. It reads files and
//! prints; it runs nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use crate::summary::{fmt_value, json_lines, lookup, median};

/// The setups, in table order, and what each is.
const SETUPS: &[(&str, &str)] = &[
    ("roomcast1", "roomcast, 1 node, no Redis"),
    ("roomcast1r", "roomcast, 1 node, --redis"),
    ("roomcast2", "roomcast, 2 nodes, Redis"),
    ("roomcast3", "roomcast, 3 nodes, Redis"),
    ("socketio1", "Socket.IO, 1 node, Redis adapter"),
    ("socketio2", "Socket.IO, 2 nodes, Redis adapter"),
];

/// The scenarios, in table order.
const SCENARIOS: &[&str] = &[
    "fanout_1x100",
    "fanout_100x10",
    "latency_10x100",
    "latency_100x10",
];
/// The latency scenarios (1,000 messages a second), judged by their p99.
const LATENCY_SCENARIOS: &[&str] = &["latency_10x100", "latency_100x10"];
/// A run in which the hypervisor stole less than this share of one CPU (`scheduling.steal_pct`) counts as quiet: at
/// 1,000 messages a second a p99 is 1,000 deliveries in 10 s, and 1% of stolen time, in stalls of a few
/// milliseconds, delays about that many by itself.
const QUIET_STEAL_PCT: f64 = 2.0;

#[derive(Debug, Args)]
pub struct ClusterSummaryArgs {
    /// results.jsonl and callgrind.jsonl of bench/cluster.sh (lines of other shapes are ignored)
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// One way of reading a setup's p99 from its runs.
type P99Of = fn(&Runs) -> Option<f64>;

/// The runs of one scenario against one setup.
#[derive(Default)]
struct Runs(Vec<Value>);

impl Runs {
    fn median(&self, path: &[&str]) -> Option<f64> {
        median(self.0.iter().filter_map(|r| lookup(r, path)).collect())
    }

    /// The p99 these runs would have had with nothing stolen: the intercept of the least-squares line of p99
    /// against stolen CPU. `None` with fewer than three runs or when they all lost the same share.
    fn p99_at_no_steal(&self) -> Option<f64> {
        let points: Vec<(f64, f64)> = self
            .0
            .iter()
            .filter_map(|r| {
                Some((
                    lookup(r, &["scheduling", "steal_pct"])?,
                    lookup(r, &["latency_us", "p99"])?,
                ))
            })
            .collect();
        if points.len() < 3 {
            return None;
        }
        let n = points.len() as f64;
        let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
        let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
        let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
        (sxx > 0.0).then(|| mean_y - sxy / sxx * mean_x)
    }

    /// Every run.
    fn all(&self) -> Runs {
        Runs(self.0.clone())
    }

    /// The runs in which the machine stole less than `QUIET_STEAL_PCT` of a CPU (runs that did not record it are
    /// left out).
    fn quiet(&self) -> Runs {
        Runs(
            self.0
                .iter()
                .filter(|r| {
                    lookup(r, &["scheduling", "steal_pct"]).is_some_and(|s| s < QUIET_STEAL_PCT)
                })
                .cloned()
                .collect(),
        )
    }

    fn min_max(&self, path: &[&str]) -> Option<(f64, f64)> {
        let values: Vec<f64> = self.0.iter().filter_map(|r| lookup(r, path)).collect();
        let min = values.iter().copied().reduce(f64::min)?;
        let max = values.iter().copied().reduce(f64::max)?;
        Some((min, max))
    }

    /// The median over runs of `cpu_path` (a CPU %) turned into microseconds of CPU per unit of `per_path` (a
    /// rate per second): what one message or delivery cost that process, whatever else ran.
    fn median_cpu_us_per(&self, cpu_path: &[&str], per_path: &[&str]) -> Option<f64> {
        median(
            self.0
                .iter()
                .filter_map(|r| {
                    let cpu = lookup(r, cpu_path)?;
                    let rate = lookup(r, per_path).filter(|&rate| rate > 0.0)?;
                    Some(cpu * 10_000.0 / rate)
                })
                .collect(),
        )
    }

    fn sum(&self, path: &[&str]) -> f64 {
        self.0.iter().filter_map(|r| lookup(r, path)).sum()
    }
}

/// Runs by scenario, then setup.
type Groups = BTreeMap<String, BTreeMap<String, Runs>>;

/// One callgrind line: the instructions of every node and of Redis, and the generator's run.
#[derive(Clone, Debug, PartialEq)]
struct Counted {
    duration: f64,
    nodes: Vec<f64>,
    redis: Option<f64>,
    deliveries: f64,
    messages: f64,
}

impl Counted {
    /// What the longest run counted beyond the shortest: starting the processes, connecting and joining cost
    /// both alike and cancel out. With runs of one duration only, the longest run as it is.
    fn beyond_shortest(runs: &[Counted]) -> Option<Counted> {
        let by_duration = |a: &&Counted, b: &&Counted| a.duration.total_cmp(&b.duration);
        let longest = runs.iter().max_by(by_duration)?;
        let shortest = runs.iter().min_by(by_duration)?;
        if shortest.duration >= longest.duration || shortest.nodes.len() != longest.nodes.len() {
            return Some(longest.clone());
        }
        Some(Counted {
            duration: longest.duration - shortest.duration,
            nodes: longest
                .nodes
                .iter()
                .zip(&shortest.nodes)
                .map(|(long, short)| long - short)
                .collect(),
            redis: longest.redis.zip(shortest.redis).map(|(l, s)| l - s),
            deliveries: longest.deliveries - shortest.deliveries,
            messages: longest.messages - shortest.messages,
        })
    }
}

pub fn run(args: &ClusterSummaryArgs) -> ExitCode {
    let mut groups = Groups::new();
    let mut counted: BTreeMap<(String, String), Vec<Counted>> = BTreeMap::new();
    let Some(runs) = json_lines(&args.files) else {
        return ExitCode::FAILURE;
    };
    for value in runs {
        let Some((scenario, setup)) = value
            .get("label")
            .and_then(Value::as_str)
            .and_then(|l| l.split_once('/'))
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        else {
            continue;
        };
        if let Some(nodes) = value.get("node_instructions").and_then(Value::as_array) {
            let run = value.get("run").unwrap_or(&Value::Null);
            counted.entry((scenario, setup)).or_default().push(Counted {
                duration: lookup(&value, &["duration_s"]).unwrap_or(0.0),
                nodes: nodes.iter().filter_map(Value::as_f64).collect(),
                redis: value.get("redis_instructions").and_then(Value::as_f64),
                deliveries: lookup(run, &["delivered_total"]).unwrap_or(0.0),
                messages: lookup(run, &["sent_total"]).unwrap_or(0.0),
            });
        } else if value.get("scenario").and_then(Value::as_str) == Some("fanout") {
            groups
                .entry(scenario)
                .or_default()
                .entry(setup)
                .or_default()
                .0
                .push(value);
        }
    }
    print!("{}", render_runs(&groups));
    print!("{}", render_latency_runs(&groups));
    print!("{}", render_targets(&groups));
    let counted: BTreeMap<(String, String), Counted> = counted
        .into_iter()
        .filter_map(|(key, runs)| Some((key, Counted::beyond_shortest(&runs)?)))
        .collect();
    if !counted.is_empty() {
        print!("{}", render_callgrind(&counted));
    }
    ExitCode::SUCCESS
}

fn cell(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), fmt_value)
}

fn describe(setup: &str) -> &str {
    SETUPS
        .iter()
        .find(|(name, _)| *name == setup)
        .map_or(setup, |(_, what)| what)
}

/// The setups present in a scenario's runs, in table order, unknown ones last.
fn ordered(runs: &BTreeMap<String, Runs>) -> Vec<(&str, &Runs)> {
    let mut rows: Vec<(&str, &Runs)> = runs.iter().map(|(s, r)| (s.as_str(), r)).collect();
    rows.sort_by_key(|(setup, _)| {
        SETUPS
            .iter()
            .position(|(name, _)| name == setup)
            .unwrap_or(usize::MAX)
    });
    rows
}

fn render_runs(groups: &Groups) -> String {
    let mut out = String::new();
    for scenario in SCENARIOS {
        let Some(runs) = groups.get(*scenario) else {
            continue;
        };
        out += &format!("### {scenario}\n\n");
        out += "| setup | runs | deliveries/s, median (min-max) | p50 µs | p99 µs, median (min-max) | server CPU % | Redis CPU % | generator CPU % | server CPU ns / delivery | Redis CPU µs / message | Redis commands sent / message | run in Redis / message | lost | errors |\n";
        out += "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
        for (setup, runs) in ordered(runs) {
            let spread = |path: &[&str]| match (runs.median(path), runs.min_max(path)) {
                (Some(m), Some((lo, hi))) => {
                    format!("{} ({}-{})", fmt_value(m), fmt_value(lo), fmt_value(hi))
                }
                _ => "-".to_owned(),
            };
            out += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                describe(setup),
                runs.0.len(),
                spread(&["deliveries_per_sec"]),
                cell(runs.median(&["latency_us", "p50"])),
                spread(&["latency_us", "p99"]),
                cell(runs.median(&["server_cpu_pct"])),
                cell(runs.median(&["redis_cpu_pct"])),
                cell(runs.median(&["generator_cpu_pct"])),
                cell(
                    runs.median_cpu_us_per(&["server_cpu_pct"], &["deliveries_per_sec"])
                        .map(|us| us * 1000.0)
                ),
                cell(runs.median_cpu_us_per(&["redis_cpu_pct"], &["messages_per_sec"])),
                cell(runs.median(&["redis_sent_per_message"])),
                cell(runs.median(&["redis_calls_per_message"])),
                fmt_value(runs.sum(&["lost"])),
                fmt_value(runs.sum(&["errors"])),
            );
        }
        out += "\n";
    }
    out
}

/// Each latency run on its own, in the order run, with what the machine did meanwhile: a p99 at 1,000 messages a
/// second moves with stolen CPU more than with anything the software does.
fn render_latency_runs(groups: &Groups) -> String {
    let mut out = String::new();
    for scenario in LATENCY_SCENARIOS {
        let Some(runs) = groups.get(*scenario) else {
            continue;
        };
        out += &format!(
            "### {scenario}, run by run\n\n\
             A run is quiet when the hypervisor stole under {QUIET_STEAL_PCT}% of a CPU. \"Waited for a CPU\" is the mean \
             time a process's main thread, once woken, waited on a run queue (`/proc/PID/schedstat`); \"slow tenths\" \
             counts the tenths of a second holding a delivery over 1 ms.\n\n\
             | setup | run | p50 µs | p99 µs | max µs | stolen % of a CPU | servers waited for a CPU, µs | Redis waited, µs | slow tenths |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        );
        for (setup, runs) in ordered(runs) {
            for (i, run) in runs.0.iter().enumerate() {
                let slow_tenths = run["scheduling"]["timeline_over_1ms"]
                    .as_array()
                    .map(|tenths| {
                        let slow = tenths.iter().filter(|n| n.as_u64() > Some(0)).count();
                        format!("{slow} of {}", tenths.len())
                    })
                    .unwrap_or_else(|| "-".to_owned());
                out += &format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {slow_tenths} |\n",
                    describe(setup),
                    i + 1,
                    cell(lookup(run, &["latency_us", "p50"])),
                    cell(lookup(run, &["latency_us", "p99"])),
                    cell(lookup(run, &["latency_us", "max"])),
                    cell(lookup(run, &["scheduling", "steal_pct"])),
                    cell(lookup(run, &["scheduling", "server_run_queue_wait_us"])),
                    cell(lookup(run, &["scheduling", "redis_run_queue_wait_us"])),
                );
            }
        }
        out += "\n";
    }
    out
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "not run",
    }
}

fn render_targets(groups: &Groups) -> String {
    let figure =
        |scenario: &str, setup: &str, path: &[&str]| groups.get(scenario)?.get(setup)?.median(path);
    let mut out = String::from(
        "### The targets of issue 13\n\n| target | figure | met |\n| --- | --- | --- |\n",
    );
    for scenario in ["fanout_1x100", "fanout_100x10"] {
        let ours = figure(scenario, "roomcast2", &["deliveries_per_sec"]);
        let theirs = figure(scenario, "socketio2", &["deliveries_per_sec"]);
        let ratio = ours.zip(theirs).map(|(a, b)| a / b);
        out += &format!(
            "| {scenario}, 2 nodes: deliveries/s >= 10x Socket.IO with its Redis adapter | {} / {} = {}x | {} |\n",
            cell(ours),
            cell(theirs),
            cell(ratio),
            verdict(ratio.map(|r| r >= 10.0)),
        );
    }
    for scenario in LATENCY_SCENARIOS {
        let runs_of = |setup: &str| groups.get(*scenario).and_then(|runs| runs.get(setup));
        let (Some(single), Some(two)) = (runs_of("roomcast1"), runs_of("roomcast2")) else {
            out += &format!(
                "| {scenario} (1,000 msg/s), 2 nodes: p99 within 2 ms of one node's p99 | - | not run |\n"
            );
            continue;
        };
        let median_p99: P99Of = |runs| runs.median(&["latency_us", "p99"]);
        let fitted_p99: P99Of = Runs::p99_at_no_steal;
        let ways = [
            ("median of all runs", single.all(), two.all(), median_p99),
            (
                "median of quiet runs",
                single.quiet(),
                two.quiet(),
                median_p99,
            ),
            (
                "all runs' p99 fitted against stolen % at 0%",
                single.all(),
                two.all(),
                fitted_p99,
            ),
        ];
        for (which, single, two, p99) in ways {
            let excess = p99(&two).zip(p99(&single)).map(|(a, b)| a - b);
            let difference = match excess {
                Some(e) if e < 0.0 => format!("{} µs less", fmt_value(-e)),
                Some(e) => format!("{} µs more", fmt_value(e)),
                None => "-".to_owned(),
            };
            out += &format!(
                "| {scenario} (1,000 msg/s), 2 nodes: p99 within 2 ms of one node's p99, {which} ({} and {}) | {} µs against {} µs: {difference} | {} |\n",
                two.0.len(),
                single.0.len(),
                cell(p99(&two)),
                cell(p99(&single)),
                verdict(excess.map(|e| e <= 2000.0)),
            );
        }
    }
    for scenario in SCENARIOS {
        let sent = figure(scenario, "roomcast2", &["redis_sent_per_message"]);
        // Three decimals: near 1, two would round a figure under 1 up to 1.00.
        out += &format!(
            "| {scenario}, 2 nodes: Redis commands sent per chat message below 1 | {} | {} |\n",
            sent.map_or_else(|| "-".to_owned(), |s| format!("{s:.3}")),
            verdict(sent.map(|s| s < 1.0)),
        );
    }
    out += "\n";
    out
}

fn render_callgrind(counted: &BTreeMap<(String, String), Counted>) -> String {
    let mut out = String::from(
        "### Instructions per delivery (callgrind)\n\n\
         What the longest run counted beyond the shortest, per delivery: user-space instructions of every node \
         together, of the busiest node alone, and of Redis per chat message.\n\n\
         | scenario | setup | deliveries counted | instructions / delivery, all nodes | busiest node / delivery | Redis / chat message | one node with --redis ÷ busiest node |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for scenario in SCENARIOS {
        let one_node = counted
            .get(&(scenario.to_string(), "roomcast1r".to_owned()))
            .and_then(|c| {
                c.nodes
                    .iter()
                    .copied()
                    .reduce(f64::max)
                    .map(|i| i / c.deliveries)
            });
        for (setup, _) in SETUPS {
            let Some(c) = counted.get(&(scenario.to_string(), setup.to_string())) else {
                continue;
            };
            let per_delivery = |i: f64| (c.deliveries > 0.0).then(|| i / c.deliveries);
            let busiest = c
                .nodes
                .iter()
                .copied()
                .reduce(f64::max)
                .and_then(per_delivery);
            let redis = c
                .redis
                .and_then(|i| (c.messages > 0.0).then(|| i / c.messages));
            let projected = one_node.zip(busiest).map(|(a, b)| a / b);
            out += &format!(
                "| {scenario} | {} | {} | {} | {} | {} | {} |\n",
                describe(setup),
                fmt_value(c.deliveries),
                cell(per_delivery(c.nodes.iter().sum())),
                cell(busiest),
                cell(redis),
                cell(projected),
            );
        }
    }
    out += "\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(scenario: &str, setup: &str, deliveries: f64, p99: f64, sent: f64) -> Value {
        json!({
            "scenario": "fanout",
            "label": format!("{scenario}/{setup}"),
            "deliveries_per_sec": deliveries,
            "latency_us": {"p50": p99 / 2.0, "p99": p99},
            "redis_sent_per_message": sent,
            "lost": 0,
            "errors": 0,
        })
    }

    fn groups_of(runs: Vec<Value>) -> Groups {
        let mut groups = Groups::new();
        for value in runs {
            let label = value["label"].as_str().unwrap().to_owned();
            let (scenario, setup) = label.split_once('/').unwrap();
            groups
                .entry(scenario.to_owned())
                .or_default()
                .entry(setup.to_owned())
                .or_default()
                .0
                .push(value);
        }
        groups
    }

    #[test]
    fn the_fanout_target_compares_the_medians_of_two_nodes_of_each() {
        let groups = groups_of(vec![
            run("fanout_1x100", "roomcast2", 1_000_000.0, 1.0, 0.1),
            run("fanout_1x100", "roomcast2", 3_000_000.0, 1.0, 0.1),
            run("fanout_1x100", "roomcast2", 2_000_000.0, 1.0, 0.1),
            run("fanout_1x100", "socketio2", 100_000.0, 1.0, 1.0),
        ]);
        let table = render_targets(&groups);
        assert!(table.contains("= 20.0x | yes"), "{table}");
    }

    #[test]
    fn cpu_per_delivery_is_the_cpu_share_over_the_rate() {
        let mut runs = Runs::default();
        for (cpu, rate) in [(50.0, 1_000_000.0), (80.0, 1_000_000.0), (10.0, 10_000.0)] {
            runs.0
                .push(json!({"server_cpu_pct": cpu, "deliveries_per_sec": rate}));
        }
        let us = runs.median_cpu_us_per(&["server_cpu_pct"], &["deliveries_per_sec"]);
        assert_eq!(
            us,
            Some(0.8),
            "50% of a core for 1M/s is 0.5 µs each; the median of 0.5, 0.8, 10"
        );
    }

    #[test]
    fn the_latency_target_is_the_p99_excess_over_one_node() {
        let groups = groups_of(vec![
            run("latency_10x100", "roomcast1", 100_000.0, 700.0, 0.0),
            run("latency_10x100", "roomcast2", 100_000.0, 3_000.0, 1.2),
        ]);
        let table = render_targets(&groups);
        assert!(
            table.contains("all runs (1 and 1) | 3000 µs against 700.0 µs: 2300 µs more | **no**"),
            "{table}"
        );
        let faster = groups_of(vec![
            run("latency_10x100", "roomcast1", 100_000.0, 900.0, 0.0),
            run("latency_10x100", "roomcast2", 100_000.0, 700.0, 0.5),
        ]);
        assert!(render_targets(&faster).contains("200.0 µs less | yes"));
        assert!(table.contains("latency_10x100, 2 nodes: Redis commands sent per chat message below 1 | 1.200 | **no**"), "{table}");
    }

    #[test]
    fn quiet_runs_are_those_with_little_stolen_cpu() {
        let with_steal = |setup: &str, p99: f64, steal: f64| {
            let mut value = run("latency_100x10", setup, 10_000.0, p99, 1.0);
            value["scheduling"] = json!({"steal_pct": steal});
            value
        };
        let groups = groups_of(vec![
            with_steal("roomcast1", 900.0, 0.5),
            with_steal("roomcast1", 9_000.0, 12.0),
            with_steal("roomcast1", 8_000.0, 20.0),
            with_steal("roomcast2", 1_500.0, 1.0),
            with_steal("roomcast2", 12_000.0, 3.0),
            with_steal("roomcast2", 1_700.0, 1.9),
        ]);
        let table = render_targets(&groups);
        assert!(
            table.contains(
                "median of all runs (3 and 3) | 1700 µs against 8000 µs: 6300 µs less | yes"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "median of quiet runs (2 and 1) | 1600 µs against 900.0 µs: 700.0 µs more | yes"
            ),
            "{table}"
        );
        assert!(render_latency_runs(&groups).contains("| 20.0 |"));
    }

    #[test]
    fn the_fit_against_stolen_cpu_gives_the_p99_with_none_stolen() {
        let runs = Runs(
            [(0.0, 1_000.0), (10.0, 2_000.0), (20.0, 3_000.0), (30.0, 4_000.0)]
                .iter()
                .map(|&(steal, p99)| {
                    json!({"latency_us": {"p99": p99}, "scheduling": {"steal_pct": steal}})
                })
                .collect(),
        );
        let at_zero = runs.p99_at_no_steal().expect("four runs");
        assert!((at_zero - 1_000.0).abs() < 1e-6, "{at_zero}");
        let same_steal = Runs(vec![
            runs.0[1].clone(),
            runs.0[1].clone(),
            runs.0[1].clone(),
        ]);
        assert_eq!(same_steal.p99_at_no_steal(), None);
        assert_eq!(Runs(runs.0[..2].to_vec()).p99_at_no_steal(), None);
    }

    #[test]
    fn the_shorter_run_is_taken_from_the_longer_so_setup_costs_cancel() {
        let run = |duration: f64, node: f64, deliveries: f64| Counted {
            duration,
            nodes: vec![node, node],
            redis: Some(node),
            deliveries,
            messages: deliveries / 100.0,
        };
        let beyond = Counted::beyond_shortest(&[run(5.0, 9_000.0, 50.0), run(1.0, 5_000.0, 10.0)]);
        assert_eq!(beyond, Some(run(4.0, 4_000.0, 40.0)));
        assert_eq!(
            Counted::beyond_shortest(&[run(1.0, 5_000.0, 10.0)]),
            Some(run(1.0, 5_000.0, 10.0))
        );
    }

    #[test]
    fn instructions_per_delivery_sum_the_nodes_and_compare_the_busiest_with_one_node() {
        let mut counted = BTreeMap::new();
        counted.insert(
            ("fanout_1x100".to_owned(), "roomcast1r".to_owned()),
            Counted {
                duration: 1.0,
                nodes: vec![300_000.0],
                redis: Some(1_000.0),
                deliveries: 1_000.0,
                messages: 10.0,
            },
        );
        counted.insert(
            ("fanout_1x100".to_owned(), "roomcast2".to_owned()),
            Counted {
                duration: 1.0,
                nodes: vec![200_000.0, 150_000.0],
                redis: Some(1_000.0),
                deliveries: 1_000.0,
                messages: 10.0,
            },
        );
        let table = render_callgrind(&counted);
        assert!(
            table.contains(
                "| fanout_1x100 | roomcast, 2 nodes, Redis | 1000 | 350.0 | 200.0 | 100.0 | 1.50 |"
            ),
            "{table}"
        );
    }
}
