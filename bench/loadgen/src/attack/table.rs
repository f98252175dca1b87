//! `roomcast-bench attack-table`: the JSON lines of `attack` runs in, one markdown table out, a row per run in the
//! order given: the server's memory, the bystander's latency, the server's CPU, and how the attackers (and the
//! burst's innocent readers) were treated.
//!
//! Owns only the reading and the formatting; a figure missing from a line shows as `-`.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

/// Options of `attack-table`.
#[derive(Debug, Args)]
pub struct TableArgs {
    /// Files holding the JSON lines `attack` printed (other lines are ignored)
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Entry point of `attack-table`.
pub fn run(args: &TableArgs) -> ExitCode {
    let mut rows = Vec::new();
    for path in &args.files {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("roomcast-bench attack-table: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        };
        rows.extend(
            text.lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter(|v| v["scenario"] == "attack"),
        );
    }
    print!("{}", table(&rows));
    ExitCode::SUCCESS
}

/// The markdown table of `rows`.
fn table(rows: &[Value]) -> String {
    let mut out = String::from(
        "| attack | build | server RSS MiB: start → peak → end → after | bystander ms: p50 / p99 / max \
         | server CPU % | attackers | innocents |\n| --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for row in rows {
        let server = &row["server"];
        let rss = &server["rss_mib"];
        let by = &row["bystander"];
        let mut fate = String::new();
        if server["alive_at_end"] == false {
            let _ = write!(
                fate,
                "**server gone at {} s**; ",
                figure(&server["exited_at_s"])
            );
        }
        if let Some(stopped) = row["stopped_early"].as_str() {
            if server["alive_at_end"] != false {
                let _ = write!(fate, "stopped: {stopped}; ");
            }
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} → {} → {} → {} | {} / {} / {} | {} | {}{} | {} |",
            text(&row["kind"]),
            text(&row["label"]),
            figure(&rss["attack_start"]),
            figure(&rss["peak"]),
            figure(&rss["attack_end"]),
            figure(&rss["final"]),
            figure(&by["p50_ms"]),
            figure(&by["p99_ms"]),
            figure(&by["max_ms"]),
            figure(&server["cpu_pct"]),
            fate,
            treatment(&row["attack"]["attackers"]),
            innocents(&row["attack"]),
        );
    }
    out
}

/// A JSON string as it is, anything else as a figure.
fn text(value: &Value) -> String {
    value.as_str().map_or_else(|| figure(value), str::to_owned)
}

/// A number as written, or `-`.
fn figure(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        _ => "-".into(),
    }
}

/// `N× outcome` for each way attackers ended, most frequent first, and how many were still open.
fn treatment(attackers: &Value) -> String {
    let mut ends: Vec<(u64, String)> = attackers["ended"]
        .as_object()
        .map(|ended| {
            ended
                .iter()
                .map(|(outcome, e)| {
                    let count = e["count"].as_u64().unwrap_or(0);
                    let after = match e["after_ms_p50"].as_f64() {
                        Some(ms) => format!(" (p50 after {ms} ms)"),
                        None => String::new(),
                    };
                    (count, format!("{count}× {outcome}{after}"))
                })
                .collect()
        })
        .unwrap_or_default();
    ends.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut parts: Vec<String> = ends.into_iter().map(|(_, text)| text).collect();
    parts.push(format!(
        "{} of {} open at the end",
        figure(&attackers["open_at_end"]),
        figure(&attackers["connections"])
    ));
    parts.join("; ")
}

/// The burst's readers: how many the server closed, and how.
fn innocents(attack: &Value) -> String {
    let Some(readers) = attack["readers"].as_array() else {
        return "-".into();
    };
    let closed: Vec<String> = readers
        .iter()
        .filter_map(|r| r["closed"].as_str())
        .map(str::to_owned)
        .collect();
    let received: u64 = readers
        .iter()
        .filter_map(|r| r["chat_received"].as_u64())
        .sum();
    if closed.is_empty() {
        format!(
            "{} readers, none closed, {received} chat received",
            readers.len()
        )
    } else {
        format!(
            "{} of {} readers closed ({})",
            closed.len(),
            readers.len(),
            closed.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_row_shows_memory_latency_and_treatment() {
        let row = json!({
            "scenario": "attack", "kind": "flood-pings", "label": "new",
            "stopped_early": null,
            "server": {"alive_at_end": true, "cpu_pct": 12.5,
                       "rss_mib": {"attack_start": 3.0, "peak": 4.5, "attack_end": 4.2, "final": 4.0}},
            "bystander": {"p50_ms": 0.2, "p99_ms": 1.1, "max_ms": 3.0},
            "attack": {"attackers": {"connections": 20, "open_at_end": 1, "ended": {
                "1008 too many frames": {"count": 19, "after_ms_p50": 2.5},
            }}},
        });
        let table = table(&[row]);
        let line = table.lines().nth(2).unwrap();
        assert_eq!(
            line,
            "| flood-pings | new | 3.0 → 4.5 → 4.2 → 4.0 | 0.2 / 1.1 / 3.0 | 12.5 | 19× 1008 too many \
             frames (p50 after 2.5 ms); 1 of 20 open at the end | - |"
        );
    }

    #[test]
    fn a_dead_server_and_closed_readers_are_shown() {
        let row = json!({
            "scenario": "attack", "kind": "burst", "label": "old",
            "stopped_early": "gone",
            "server": {"alive_at_end": false, "exited_at_s": 1.5, "rss_mib": {}},
            "bystander": {},
            "attack": {"attackers": {}, "readers": [
                {"closed": "1008 too slow", "chat_received": 3},
                {"closed": null, "chat_received": 9},
            ]},
        });
        let table = table(&[row]);
        assert!(table.contains("**server gone at 1.5 s**"), "{table}");
        assert!(
            table.contains("1 of 2 readers closed (1008 too slow)"),
            "{table}"
        );
    }
}
