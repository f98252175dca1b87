//! A deterministic corpus for counting `QuickCompressor`'s instructions per message under callgrind; it times
//! nothing.
//!
//! A plain `harness = false` bench: `cargo bench --bench quick_corpus --no-run`, then
//!
//!     valgrind --tool=callgrind --toggle-collect='*quick_corpus*compress_one*' <bench binary> [passes]
//!
//! and divide the collected instructions by the messages it prints. The messages are the broadcasts of
//! `roomcast-bench fanout --size 512 --padding words` as the server sends them: `{"type":"chat","room":"r<R>",...}`
//! whose content is the generator's stamp (`@`, 16 + 8 + 8 hex digits, `m`) and then a stretch of its English-like
//! chat text starting at a word. The text comes from the same word list, draw and seed as bench/loadgen's
//! `chat_text`, so the bytes match what the generator sends. It must not time anything: instruction counts do not
//! depend on the machine's load, timings do.

use std::hint::black_box;

use roomcast::protocol::deflate::QuickCompressor;

/// Different messages in the corpus.
const MESSAGES: usize = 1_000;
/// Bytes of chat content per message (`--size 512`).
const CONTENT_SIZE: usize = 512;
/// Bytes of the content before the padding: `@`, 16 + 8 + 8 hex digits, the phase.
const CONTENT_HEAD: usize = 1 + 16 + 8 + 8 + 1;

/// bench/loadgen's padding text, the same file, so the corpus is the bytes the generator sends.
#[path = "../bench/loadgen/src/chat_text.rs"]
mod chat_text;
use chat_text::chat_text;

/// The broadcasts of a 100-room fan-out run with one sender per room: the generator's contents (its stretch of
/// text picked as `ContentWriter::write` picks it) in the server's `chat` JSON.
fn corpus() -> Vec<Vec<u8>> {
    let text = chat_text(64 * 1024 + CONTENT_SIZE);
    let starts: Vec<usize> = std::iter::once(0)
        .chain((0..text.len()).filter(|&i| text[i] == b' ').map(|i| i + 1))
        .filter(|&start| start + CONTENT_SIZE <= text.len())
        .collect();
    (0..MESSAGES as u64)
        .map(|written| {
            let pick = written.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
            let start = starts[(pick % starts.len() as u64) as usize];
            let room = written % 100;
            let sender = room * 10;
            let seq = written / 100;
            let sent_at = 0x0000_1a2b_3c4d_5e6f_u64 + written * 1_234_567;
            let padding = &text[start..start + CONTENT_SIZE - CONTENT_HEAD];
            let content = format!(
                "@{sent_at:016x}{sender:08x}{seq:08x}m{}",
                String::from_utf8_lossy(padding)
            );
            format!(
                r#"{{"type":"chat","room":"r{room}","seq":{},"from":"u{sender}","content":"{content}","timestamp":{}}}"#,
                seq + 1,
                1_795_307_457_209u64 + written * 3
            )
            .into_bytes()
        })
        .collect()
}

/// One message compressed: the function callgrind collects (`--toggle-collect`).
#[inline(never)]
fn compress_one(compressor: &mut QuickCompressor, message: &[u8], out: &mut Vec<u8>) -> usize {
    out.clear();
    compressor
        .compress_if_smaller(message, out)
        .unwrap_or(message.len())
}

fn main() {
    let passes: usize = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with("--"))
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(1);
    let corpus = corpus();
    let mut compressor = QuickCompressor::new(15);
    let mut out = Vec::with_capacity(4096);
    let (mut plain, mut compressed) = (0, 0);
    for _ in 0..passes {
        for message in &corpus {
            plain += message.len();
            compressed += compress_one(&mut compressor, black_box(message), &mut out);
        }
    }
    let messages = passes * corpus.len();
    println!(
        "messages: {messages}; bytes per message: {:.1} plain, {:.1} compressed ({:.1}%)",
        plain as f64 / messages as f64,
        compressed as f64 / messages as f64,
        100.0 * compressed as f64 / plain as f64
    );
}
