//! What compressing one chat message costs, each on its own (no context takeover), and what it saves.
//!
//! A plain `harness = false` bench: `cargo bench --bench compress_chat`. On the chat route one compressed frame
//! of each broadcast is shared by every member that negotiated permessage-deflate, so the server compresses
//! every message once, on its own. zlib (here zlib-rs, through flate2) must clear its 128 KiB hash table to forget
//! one message before the next, which costs more than the compression itself; `QuickCompressor` (greedy LZ77,
//! fixed Huffman codes, a hash table of absolute positions that never needs clearing) is what the server uses.
//! Messages are realistic chat JSON of about 140 and 520 bytes, with varied content (a thousand different
//! messages, cycled). Each figure is the median of `RUNS` runs of all messages. A name after `--` runs only the
//! compressors whose row contains it (`cargo bench --bench compress_chat -- Quick`), for profiling one.

use std::hint::black_box;
use std::time::Instant;

use roomcast::protocol::deflate::{MessageCompressor, QuickCompressor};

mod support;

const RUNS: usize = 15;
const MESSAGES: usize = 1_000;

/// `count` chat messages whose content has about `words` words, all different.
fn messages(count: usize, words: usize) -> Vec<Vec<u8>> {
    support::contents(count, words)
        .into_iter()
        .enumerate()
        .map(|(seq, content)| {
            format!(
                r#"{{"type":"chat","room":"lobby","seq":{seq},"from":"user{}","content":"{content}","timestamp":{}}}"#,
                seq % 97,
                1_795_307_457_209u64 + seq as u64 * 37
            )
            .into_bytes()
        })
        .collect()
}

/// Median and least nanoseconds per message (the least is the run other work on the machine disturbed least),
/// and average compressed bytes, for `compress` over `batch`.
fn measure(
    batch: &[Vec<u8>],
    mut compress: impl FnMut(&[u8], &mut Vec<u8>) -> usize,
) -> (f64, f64, f64) {
    let mut out = Vec::with_capacity(4096);
    let mut runs = Vec::with_capacity(RUNS);
    let mut bytes = 0;
    for _ in 0..RUNS {
        bytes = 0;
        let started = Instant::now();
        for message in batch {
            out.clear();
            bytes += compress(black_box(message), &mut out);
        }
        runs.push(started.elapsed().as_nanos() as f64 / batch.len() as f64);
    }
    runs.sort_by(f64::total_cmp);
    (runs[RUNS / 2], runs[0], bytes as f64 / batch.len() as f64)
}

fn main() {
    let only = std::env::args().skip(1).find(|arg| !arg.starts_with("--"));
    let wanted = |row: &str| only.as_deref().is_none_or(|only| row.contains(only));
    for (label, words) in [("short", 6), ("long", 60)] {
        let batch = messages(MESSAGES, words);
        let plain = batch.iter().map(Vec::len).sum::<usize>() as f64 / batch.len() as f64;
        println!("{label} chat messages: {plain:.0} bytes on average");
        if wanted("QuickCompressor") {
            let mut quick = QuickCompressor::new(15);
            let (ns, least, size) = measure(&batch, |m, out| {
                quick.compress_if_smaller(m, out).unwrap_or(m.len())
            });
            println!(
                "  QuickCompressor            {ns:7.0} ns/message (least {least:6.0})  {size:6.1} bytes ({:.0}%)",
                100.0 * size / plain
            );
        }
        for level in [1, 6] {
            if !wanted("zlib-rs") {
                continue;
            }
            let mut zlib = MessageCompressor::with_level(15, true, level);
            let (ns, least, size) = measure(&batch, |m, out| {
                zlib.compress_if_smaller(m, out)
                    .ok()
                    .flatten()
                    .unwrap_or(m.len())
            });
            println!(
                "  zlib-rs level {level}, reset     {ns:7.0} ns/message (least {least:6.0})  {size:6.1} bytes ({:.0}%)",
                100.0 * size / plain
            );
        }
    }
}
