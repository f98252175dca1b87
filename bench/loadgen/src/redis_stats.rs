//! Redis's own count of the commands it ran (`INFO commandstats`, <https://redis.io/commands/info>), read by the
//! load generator at the start and the end of a measured interval, so that a report can say how many Redis
//! commands a chat message cost a cluster.
//!
//! Owns one blocking request and the parsing of its answer: RESP2 is decoded by the `redis-protocol` crate, as in
//! roomcast's own link; the text inside the answer is `cmdstat_<name>:calls=<n>,usec=...` lines. It must not be
//! called in a hot loop: each reading is a TCP connect and a round trip, made only at the interval's edges.
//!
//! `INFO commandstats` counts the commands a script runs too (an `EVALSHA` whose script runs `INCR`, `XADD` and
//! `PUBLISH` counts four), so the report keeps every command apart and `sent_by_clients` sums only those a client
//! can have sent itself: every command but the ones roomcast's scripts run, when script calls were made.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;

/// `INFO commandstats` as a RESP2 array of bulk strings.
const INFO_COMMANDSTATS: &[u8] = b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n";

/// The commands roomcast's Lua scripts run (src/cluster/*.lua): counted by `INFO commandstats` but sent by no
/// client when script calls were made.
const RUN_BY_SCRIPTS: &[&str] = &[
    "del",
    "get",
    "hdel",
    "hget",
    "hgetall",
    "hlen",
    "hset",
    "incr",
    "incrby",
    "pexpire",
    "publish",
    "sadd",
    "set",
    "smembers",
    "srem",
    "time",
    "xadd",
    "xrange",
    "xrevrange",
    "xtrim",
    "zadd",
    "zrangebyscore",
    "zrem",
];

/// Calls per command name (lowercase, as Redis names them), as Redis counted them since its last reset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandCalls(BTreeMap<String, u64>);

impl CommandCalls {
    /// Asks the Redis at `addr` for its command statistics.
    pub fn read(addr: SocketAddr) -> io::Result<CommandCalls> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(INFO_COMMANDSTATS)?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "Redis closed before answering INFO",
                ));
            }
            answer.extend_from_slice(&buf[..n]);
            match decode(&answer) {
                Ok(Some((OwnedFrame::BulkString(text), _))) => {
                    return Ok(CommandCalls::parse(&String::from_utf8_lossy(&text)))
                }
                Ok(Some((other, _))) => {
                    return Err(io::Error::other(format!(
                        "unexpected answer to INFO: {other:?}"
                    )))
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
        }
    }

    /// The calls in the text of an `INFO commandstats` answer: `cmdstat_<name>:calls=<n>,...` lines.
    pub fn parse(text: &str) -> CommandCalls {
        let calls = text
            .lines()
            .filter_map(|line| {
                let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = fields
                    .split(',')
                    .find_map(|field| field.strip_prefix("calls="))?;
                Some((name.to_owned(), calls.trim().parse().ok()?))
            })
            .collect();
        CommandCalls(calls)
    }

    /// The calls made since `before`, per command; commands with none left out, and `info` too (the reading
    /// itself).
    pub fn since(&self, before: &CommandCalls) -> CommandCalls {
        let calls = self
            .0
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .filter_map(|(name, &after)| {
                let made = after.saturating_sub(before.0.get(name).copied().unwrap_or(0));
                (made > 0).then(|| (name.clone(), made))
            })
            .collect();
        CommandCalls(calls)
    }

    /// Every call counted, the commands scripts ran included.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// The calls clients sent themselves: all of them when no script was called; otherwise all but the commands
    /// roomcast's scripts run (a client could send those too, but roomcast's nodes never do).
    pub fn sent_by_clients(&self) -> u64 {
        let scripts_called = ["evalsha", "eval"].iter().any(|c| self.0.contains_key(*c));
        self.0
            .iter()
            .filter(|(name, _)| !scripts_called || !RUN_BY_SCRIPTS.contains(&name.as_str()))
            .map(|(_, calls)| calls)
            .sum()
    }

    /// The calls per command as a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        self.0
            .iter()
            .map(|(name, &calls)| (name.clone(), serde_json::Value::from(calls)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# Commandstats\r\n\
        cmdstat_evalsha:calls=10,usec=900,usec_per_call=90.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_incr:calls=100,usec=100,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_publish:calls=100,usec=100,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_ping:calls=4,usec=1,usec_per_call=0.25,rejected_calls=0,failed_calls=0\r\n";

    #[test]
    fn commandstats_lines_are_read_by_command() {
        let calls = CommandCalls::parse(SAMPLE);
        assert_eq!(calls.0.get("evalsha"), Some(&10));
        assert_eq!(calls.0.get("ping"), Some(&4));
        assert_eq!(calls.total(), 214);
    }

    #[test]
    fn commands_run_by_scripts_are_not_counted_as_sent() {
        assert_eq!(CommandCalls::parse(SAMPLE).sent_by_clients(), 14);
    }

    #[test]
    fn without_script_calls_every_command_was_sent_by_a_client() {
        let calls = CommandCalls::parse(
            "cmdstat_publish:calls=7,usec=1\r\ncmdstat_ping:calls=2,usec=1\r\n",
        );
        assert_eq!(calls.sent_by_clients(), 9);
    }

    #[test]
    fn every_command_of_roomcasts_scripts_is_known_to_be_run_by_scripts() {
        let scripts = [
            include_str!("../../../src/cluster/dm.lua"),
            include_str!("../../../src/cluster/heartbeat.lua"),
            include_str!("../../../src/cluster/join.lua"),
            include_str!("../../../src/cluster/presence.lua"),
            include_str!("../../../src/cluster/publish.lua"),
            include_str!("../../../src/cluster/recover.lua"),
            include_str!("../../../src/cluster/release.lua"),
        ];
        for script in scripts {
            for call in script.split("redis.call(").skip(1) {
                let name: String = call
                    .trim_start_matches(['\'', '"'])
                    .chars()
                    .take_while(char::is_ascii_alphabetic)
                    .collect();
                assert!(
                    RUN_BY_SCRIPTS.contains(&name.to_lowercase().as_str()),
                    "{name} is missing from RUN_BY_SCRIPTS"
                );
            }
        }
    }

    #[test]
    fn the_difference_keeps_only_commands_called_in_between_and_not_the_readings() {
        let before = CommandCalls::parse(
            "cmdstat_ping:calls=4,usec=1\r\ncmdstat_publish:calls=1,usec=1\r\n",
        );
        let after = CommandCalls::parse(
            "cmdstat_ping:calls=4,usec=1\r\ncmdstat_publish:calls=9,usec=1\r\ncmdstat_info:calls=3,usec=1\r\n",
        );
        let made = after.since(&before);
        assert_eq!(made.to_json(), serde_json::json!({"publish": 8}));
    }
}
