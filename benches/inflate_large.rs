//! The cost of receiving one 16 MiB compressed text message on `/echo`, next to zlib-rs inflating the same data.
//!
//! A plain `harness = false` bench: `cargo bench --bench inflate_large`. It builds 16 MiB of English-like text
//! (and a mixed variant with a non-ASCII character every few words), compresses it as a client would send it
//! (zlib-rs through flate2, level 6, RFC 7692 7.2.1: sync flush, the last four bytes left off), frames it masked
//! with RSV1 set, and feeds it to `roomcast::protocol::Connection` (the server's side, with permessage-deflate as
//! `/echo` agrees to `CLIENT_OFFER`) in 64 KiB pieces, as the server's read loop does. That times the whole
//! receive path of a compressed message: unmasking, inflating into the message's buffer, and incremental UTF-8
//! validation.
//!
//! The yardstick is flate2's own inflate (`Decompress::decompress_vec`, the same zlib-rs) of the same compressed
//! bytes in one call: into a buffer already mapped, and into a fresh `Vec` (which pays the page faults of any new
//! 16 MiB buffer, as `Connection` does). Each figure is the median of `RUNS` runs. The target: the receive
//! path within 2x of zlib-rs's own inflate.

use std::hint::black_box;
use std::time::{Duration, Instant};

use flate2::{Decompress, FlushDecompress};
use roomcast::protocol::deflate::codec::FLUSH_TAIL;
use roomcast::protocol::deflate::{
    negotiate_server, MessageCompressor, ServerDeflatePolicy, CLIENT_OFFER,
};
use roomcast::protocol::extensions::parse_extensions;
use roomcast::protocol::frame::{FrameHeader, OpCode};
use roomcast::protocol::mask::apply_mask;
use roomcast::protocol::{Connection, Event, Role};

const SIZE: usize = 16 * 1024 * 1024;
const READ_CHUNK: usize = 64 * 1024;
const RUNS: usize = 11;
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

const WORDS: [&str; 40] = [
    "the",
    "to",
    "I",
    "you",
    "and",
    "it",
    "is",
    "that",
    "for",
    "we",
    "on",
    "this",
    "have",
    "can",
    "just",
    "with",
    "not",
    "what",
    "about",
    "think",
    "know",
    "good",
    "time",
    "today",
    "meeting",
    "thanks",
    "release",
    "build",
    "deploy",
    "again",
    "later",
    "check",
    "review",
    "tests",
    "green",
    "lunch",
    "coffee",
    "team",
    "afternoon",
    "tomorrow",
];

/// 16 MiB of sentences of common words, drawn from a fixed seed; with `accents`, every seventh word is
/// followed by a non-ASCII one. Padded with ASCII to exactly `SIZE`.
fn text(accents: bool) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut text = String::with_capacity(SIZE + 64);
    let mut count = 0u64;
    while text.len() < SIZE - 32 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        text.push_str(WORDS[(state % WORDS.len() as u64) as usize]);
        count += 1;
        if accents && count % 7 == 0 {
            text.push_str([" café", " naïve ✓", " 🦀", " Grüße"][(state >> 8) as usize % 4]);
        }
        text.push_str(if state % 11 == 0 { ". " } else { " " });
    }
    let mut bytes = text.into_bytes();
    bytes.resize(SIZE, b'.');
    bytes
}

/// The median of `RUNS` timings of `f`, after one warm-up run.
fn median_of(mut f: impl FnMut() -> Duration) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..RUNS).map(|_| f()).collect();
    times.sort();
    times[RUNS / 2]
}

fn row(name: &str, d: Duration) {
    println!(
        "{name:<52} {:>8.2} ms  {:>6.2} GiB/s inflated",
        d.as_secs_f64() * 1e3,
        SIZE as f64 / d.as_secs_f64() / (1u64 << 30) as f64
    );
}

/// How long zlib-rs takes to inflate `compressed` (with its sync-flush tail) into a fresh `Vec`, page faults
/// included, and to check the result as UTF-8 too when `check_utf8`.
fn inflate_into_fresh_vec(compressed: &[u8], check_utf8: bool) -> Duration {
    let mut inflate = Decompress::new_with_window_bits(false, 15);
    let started = Instant::now();
    let mut fresh = Vec::with_capacity(SIZE);
    inflate
        .decompress_vec(black_box(compressed), &mut fresh, FlushDecompress::Sync)
        .expect("valid DEFLATE");
    let valid = !check_utf8 || std::str::from_utf8(black_box(&fresh)).is_ok();
    let elapsed = started.elapsed();
    assert_eq!(fresh.len(), SIZE);
    assert!(valid);
    elapsed
}

fn main() {
    let offers = parse_extensions([CLIENT_OFFER.as_bytes()]).expect("our own offer parses");
    let params = negotiate_server(&offers, &ServerDeflatePolicy::AS_OFFERED).expect("agreed");
    println!(
        "16 MiB compressed text message on /echo ({}), median of {RUNS} runs",
        params.response_header()
    );
    let mut verdicts = Vec::new();
    for (name, accents) in [("English-like ASCII", false), ("mixed UTF-8", true)] {
        let plain = text(accents);
        let mut compressed = Vec::new();
        MessageCompressor::new(15, true)
            .compress(&plain, &mut compressed)
            .expect("compresses");
        println!(
            "{name}: {} bytes compressed ({:.1}% of 16 MiB)",
            compressed.len(),
            100.0 * compressed.len() as f64 / SIZE as f64
        );
        let header = FrameHeader {
            fin: true,
            rsv1: true,
            opcode: OpCode::Text,
            mask: Some(KEY),
            payload_len: compressed.len() as u64,
        };
        let mut frame = Vec::new();
        header.encode(&mut frame);
        let start = frame.len();
        frame.extend_from_slice(&compressed);
        apply_mask(&mut frame[start..], KEY, 0);
        let mut with_tail = compressed.clone();
        with_tail.extend_from_slice(&FLUSH_TAIL);

        let receive = median_of(|| {
            let mut conn = Connection::new(Role::Server, SIZE);
            conn.use_deflate(&params);
            let mut events = Vec::with_capacity(1);
            let started = Instant::now();
            for piece in frame.chunks(READ_CHUNK) {
                conn.feed(black_box(piece), &mut events)
                    .expect("a valid message");
            }
            let elapsed = started.elapsed();
            match events.pop() {
                Some(Event::Message(message)) => assert_eq!(message.as_bytes(), &plain[..]),
                other => panic!("expected one message, got {other:?}"),
            }
            elapsed
        });
        let mut mapped: Vec<u8> = vec![1; SIZE];
        let zlib_mapped = median_of(|| {
            let mut inflate = Decompress::new_with_window_bits(false, 15);
            mapped.clear();
            let started = Instant::now();
            inflate
                .decompress_vec(black_box(&with_tail), &mut mapped, FlushDecompress::Sync)
                .expect("valid DEFLATE");
            let elapsed = started.elapsed();
            assert_eq!(mapped.len(), SIZE);
            elapsed
        });
        let zlib_fresh = median_of(|| inflate_into_fresh_vec(&with_tail, false));
        let zlib_fresh_utf8 = median_of(|| inflate_into_fresh_vec(&with_tail, true));
        row(&format!("{name}: Connection::feed, 64 KiB pieces"), receive);
        row(
            &format!("{name}: zlib-rs inflate into a mapped buffer"),
            zlib_mapped,
        );
        row(
            &format!("{name}: zlib-rs inflate into a fresh Vec"),
            zlib_fresh,
        );
        row(
            &format!("{name}: zlib-rs into a fresh Vec + str::from_utf8"),
            zlib_fresh_utf8,
        );
        for (yardstick, time) in [("mapped", zlib_mapped), ("fresh", zlib_fresh)] {
            let ratio = receive.as_secs_f64() / time.as_secs_f64();
            verdicts.push(format!(
                "{name}: receive / zlib-rs into a {yardstick} buffer = {ratio:.2}x: {}",
                if ratio <= 2.0 {
                    "within 2x (target met)"
                } else {
                    "over 2x (target not met)"
                }
            ));
        }
    }
    for verdict in verdicts {
        println!("{verdict}");
    }
}
