//! `roomcast-bench summarize-deflate`: the JSON lines of `bench/deflate.sh` in, markdown tables out.
//!
//! Owns the grouping of runs by label and by variant (server, and whether permessage-deflate was agreed), the
//! medians and spreads, and the check of the permessage-deflate targets: fan-out with deflate at least half as
//! fast as without and at least 20 times the Node seed with deflate, idle memory with deflate within 10% of
//! without, and an inflate bomb's peak memory growth under twice the message size limit. It reads only what the
//! scenarios printed; it runs nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use crate::summary::{fmt_value, json_lines, lookup, median};

/// Options of `summarize-deflate`.
#[derive(Debug, Args)]
pub struct DeflateSummaryArgs {
    /// Files of JSON lines written by the scenarios (other lines are ignored)
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// The variants, in table order: server, and whether its connections agreed to permessage-deflate.
const VARIANTS: [&str; 4] = [
    "roomcast plain",
    "roomcast deflate",
    "seed plain",
    "seed deflate",
];

/// The runs of one label.
#[derive(Default)]
struct Group {
    scenario: String,
    runs: BTreeMap<&'static str, Vec<Value>>,
}

impl Group {
    fn values(&self, variant: &str, path: &[&str]) -> Vec<f64> {
        self.runs
            .get(variant)
            .map(|runs| runs.iter().filter_map(|r| lookup(r, path)).collect())
            .unwrap_or_default()
    }

    fn median(&self, variant: &str, path: &[&str]) -> Option<f64> {
        median(self.values(variant, path))
    }

    /// "median (min-max, n runs)" of a figure.
    fn spread(&self, variant: &str, path: &[&str]) -> String {
        let values = self.values(variant, path);
        let (Some(mid), Some(min), Some(max)) = (
            median(values.clone()),
            values.iter().copied().reduce(f64::min),
            values.iter().copied().reduce(f64::max),
        ) else {
            return "n/a".into();
        };
        format!(
            "**{}** ({}–{}, {} runs)",
            fmt_value(mid),
            fmt_value(min),
            fmt_value(max),
            values.len()
        )
    }
}

/// The variant a run belongs to.
fn variant_of(run: &Value) -> Option<&'static str> {
    let server = run.get("server_kind")?.as_str()?;
    let deflate = run.get("deflate_agreed").and_then(Value::as_u64).map_or(
        run.get("scenario").and_then(Value::as_str) == Some("bomb"),
        |n| n > 0,
    );
    let name = format!("{server} {}", if deflate { "deflate" } else { "plain" });
    VARIANTS.iter().copied().find(|v| *v == name)
}

/// The limit a bomb's Close reason names ("message over 65536 bytes").
fn limit_of(run: &Value) -> Option<f64> {
    let reason = run.get("close_reason")?.as_str()?;
    let digits: String = reason
        .split_whitespace()
        .find(|word| word.bytes().all(|b| b.is_ascii_digit()))?
        .to_owned();
    digits.parse().ok()
}

fn verdict(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "**no**"
    }
}

/// Entry point of `summarize-deflate`.
pub fn run(args: &DeflateSummaryArgs) -> ExitCode {
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let Some(runs) = json_lines(&args.files) else {
        return ExitCode::FAILURE;
    };
    for run in runs {
        let (Some(label), Some(scenario), Some(variant)) = (
            run.get("label").and_then(Value::as_str).map(str::to_owned),
            run.get("scenario")
                .and_then(Value::as_str)
                .map(str::to_owned),
            variant_of(&run),
        ) else {
            continue;
        };
        if !groups.contains_key(&label) {
            order.push(label.clone());
        }
        let group = groups.entry(label).or_default();
        group.scenario = scenario;
        group.runs.entry(variant).or_default().push(run);
    }
    print!("{}", render(&order, &groups));
    ExitCode::SUCCESS
}

/// The labels of one scenario, in the order they were first seen, with their runs.
fn of_scenario<'a>(
    order: &'a [String],
    groups: &'a BTreeMap<String, Group>,
    scenario: &'static str,
) -> impl Iterator<Item = (&'a String, &'a Group)> + 'a {
    order
        .iter()
        .filter(move |label| groups[*label].scenario == scenario)
        .map(move |label| (label, &groups[label]))
}

fn render(order: &[String], groups: &BTreeMap<String, Group>) -> String {
    let mut out = String::new();
    let mut targets =
        String::from("| scenario | target | figure | met |\n| --- | --- | ---: | --- |\n");
    let by_scenario = |scenario: &'static str| of_scenario(order, groups, scenario);
    if by_scenario("fanout").next().is_some() {
        out.push_str("| scenario | variant | deliveries/s: median (min–max) | p99 µs | wire bytes/delivery | CPU gen/server % |\n");
        out.push_str("| --- | --- | ---: | ---: | ---: | ---: |\n");
    }
    for (label, group) in by_scenario("fanout") {
        for variant in VARIANTS {
            if !group.runs.contains_key(variant) {
                continue;
            }
            let figure =
                |path: &[&str]| group.median(variant, path).map_or("n/a".into(), fmt_value);
            out.push_str(&format!(
                "| {label} | {variant} | {} | {} | {} | {}/{} |\n",
                group.spread(variant, &["deliveries_per_sec"]),
                figure(&["latency_us", "p99"]),
                figure(&["wire_bytes_per_delivery"]),
                figure(&["generator_cpu_pct"]),
                figure(&["server_cpu_pct"]),
            ));
        }
        if label.starts_with("wire") {
            // A fixed send rate: deliveries/s says nothing here, the bytes on the wire are the figure.
            let wire = |variant| group.median(variant, &["wire_bytes_per_delivery"]);
            if let (Some(deflate), Some(plain)) = (wire("roomcast deflate"), wire("roomcast plain"))
            {
                targets.push_str(&format!(
                    "| {label} | wire bytes per delivery with deflate < without | {} < {} | {} |\n",
                    fmt_value(deflate),
                    fmt_value(plain),
                    verdict(deflate < plain)
                ));
            }
            continue;
        }
        let rate = |variant| group.median(variant, &["deliveries_per_sec"]);
        if let (Some(deflate), Some(plain)) = (rate("roomcast deflate"), rate("roomcast plain")) {
            let ratio = deflate / plain;
            targets.push_str(&format!(
                "| {label} | deliveries/s with deflate ≥ 50% of without | {:.0}% | {} |\n",
                ratio * 100.0,
                verdict(ratio >= 0.5)
            ));
        }
        if let (Some(ours), Some(seed)) = (rate("roomcast deflate"), rate("seed deflate")) {
            let ratio = ours / seed;
            targets.push_str(&format!(
                "| {label} | deliveries/s with deflate ≥ 20× the Node seed with deflate | {ratio:.1}× | {} |\n",
                verdict(ratio >= 20.0)
            ));
        }
    }
    if by_scenario("idle").next().is_some() {
        out.push_str("\n| scenario | variant | server RSS bytes/connection: median (min–max) | connections agreeing to deflate |\n");
        out.push_str("| --- | --- | ---: | ---: |\n");
    }
    for (label, group) in by_scenario("idle") {
        for variant in VARIANTS {
            if !group.runs.contains_key(variant) {
                continue;
            }
            out.push_str(&format!(
                "| {label} | {variant} | {} | {} |\n",
                group.spread(variant, &["rss_per_conn_bytes"]),
                group
                    .median(variant, &["deflate_agreed"])
                    .map_or("n/a".into(), fmt_value),
            ));
        }
        let bytes = |variant| group.median(variant, &["rss_per_conn_bytes"]);
        if let (Some(deflate), Some(plain)) = (bytes("roomcast deflate"), bytes("roomcast plain")) {
            let ratio = deflate / plain;
            targets.push_str(&format!(
                "| {label} | RSS per connection with deflate within 10% of without | {:+.1}% | {} |\n",
                (ratio - 1.0) * 100.0,
                verdict(ratio <= 1.10)
            ));
        }
    }
    if by_scenario("bomb").next().is_some() {
        out.push_str("\n| scenario | path | inflates to | frame payload | close | server peak RSS growth KiB: median (min–max) | of it, file-backed pages mapped KiB | limit |\n");
        out.push_str("| --- | --- | ---: | ---: | --- | ---: | ---: | ---: |\n");
    }
    for (label, group) in by_scenario("bomb") {
        let Some(runs) = group.runs.get("roomcast deflate") else {
            continue;
        };
        let Some(first) = runs.first() else {
            continue;
        };
        let text = |key: &str| first.get(key).map_or("?".into(), |v| v.to_string());
        let mut closes: Vec<String> = runs
            .iter()
            .map(|r| {
                r.get("close_code")
                    .and_then(Value::as_u64)
                    .map_or("none".into(), |c| c.to_string())
            })
            .collect();
        closes.dedup();
        let limit = limit_of(first);
        out.push_str(&format!(
            "| {label} | {} | {} | {} | {} | {} | {} | {} |\n",
            text("path").trim_matches('"'),
            text("inflates_to"),
            text("frame_payload_bytes"),
            closes.join(", "),
            group.spread("roomcast deflate", &["server_peak_growth_kib"]),
            group.spread("roomcast deflate", &["server_file_growth_kib"]),
            limit.map_or("?".into(), fmt_value),
        ));
        let growth = group.median("roomcast deflate", &["server_peak_growth_kib"]);
        let all_1009 = runs
            .iter()
            .all(|r| r.get("close_code").and_then(Value::as_u64) == Some(1009));
        if let (Some(growth), Some(limit)) = (growth, limit) {
            let ratio = growth * 1024.0 / limit;
            targets.push_str(&format!(
                "| {label} | closed with 1009, peak RSS growth < 2× the limit | {}, {ratio:.2}× | {} |\n",
                if all_1009 { "1009" } else { "not always 1009" },
                verdict(all_1009 && ratio < 2.0)
            ));
        }
    }
    out.push_str("\nTargets (medians):\n\n");
    out.push_str(&targets);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn group(runs: &[Value]) -> Group {
        let mut group = Group::default();
        for run in runs {
            group.scenario = run["scenario"].as_str().unwrap().to_owned();
            group
                .runs
                .entry(variant_of(run).unwrap())
                .or_default()
                .push(run.clone());
        }
        group
    }

    #[test]
    fn runs_are_told_apart_by_server_and_by_what_was_agreed() {
        let plain = json!({"scenario": "fanout", "server_kind": "roomcast", "deflate_agreed": 0});
        let deflate = json!({"scenario": "fanout", "server_kind": "seed", "deflate_agreed": 100});
        let bomb = json!({"scenario": "bomb", "server_kind": "roomcast"});
        assert_eq!(variant_of(&plain), Some("roomcast plain"));
        assert_eq!(variant_of(&deflate), Some("seed deflate"));
        assert_eq!(variant_of(&bomb), Some("roomcast deflate"));
    }

    #[test]
    fn fanout_targets_compare_medians() {
        let run = |kind: &str, agreed: u64, rate: f64| {
            json!({"scenario": "fanout", "label": "f", "server_kind": kind, "deflate_agreed": agreed,
                   "deliveries_per_sec": rate})
        };
        let mut groups = BTreeMap::new();
        groups.insert(
            "f".to_owned(),
            group(&[
                run("roomcast", 0, 100.0),
                run("roomcast", 0, 300.0),
                run("roomcast", 0, 200.0),
                run("roomcast", 100, 90.0),
                run("seed", 100, 5.0),
            ]),
        );
        let text = render(&["f".to_owned()], &groups);
        assert!(text.contains("**200.0** (100.0–300.0, 3 runs)"), "{text}");
        assert!(text.contains("| 45% | **no** |"), "{text}");
        assert!(text.contains("| 18.0× | **no** |"), "{text}");
    }

    #[test]
    fn a_fixed_rate_wire_scenario_is_judged_on_bytes_not_deliveries() {
        let run = |kind: &str, agreed: u64, wire: f64| {
            json!({"scenario": "fanout", "label": "wire_300B", "server_kind": kind, "deflate_agreed": agreed,
                   "deliveries_per_sec": 100.0, "wire_bytes_per_delivery": wire})
        };
        let mut groups = BTreeMap::new();
        groups.insert(
            "wire_300B".to_owned(),
            group(&[
                run("roomcast", 0, 392.0),
                run("roomcast", 100, 326.0),
                run("seed", 100, 114.0),
            ]),
        );
        let text = render(&["wire_300B".to_owned()], &groups);
        assert!(
            text.contains("with deflate < without | 326.0 < 392.0 | yes |"),
            "{text}"
        );
        assert!(!text.contains("Node seed with deflate |"), "{text}");
        assert!(!text.contains("≥ 50% of without"), "{text}");
    }

    #[test]
    fn a_bomb_is_judged_against_the_limit_its_close_names() {
        let run = json!({"scenario": "bomb", "label": "b", "server_kind": "roomcast", "path": "/ws",
                         "close_code": 1009, "close_reason": "message over 65536 bytes",
                         "server_peak_growth_kib": 100, "server_file_growth_kib": 64});
        assert_eq!(limit_of(&run), Some(65536.0));
        let mut groups = BTreeMap::new();
        groups.insert("b".to_owned(), group(&[run]));
        let text = render(&["b".to_owned()], &groups);
        assert!(text.contains("| 1009, 1.56× | yes |"), "{text}");
        assert!(
            text.contains(
                "| **100.0** (100.0–100.0, 1 runs) | **64.0** (64.0–64.0, 1 runs) | 65536 |"
            ),
            "{text}"
        );
    }
}
