//! The cost of receiving one 16 MiB masked text message, next to the cost of copying 16 MiB.
//!
//! A plain `harness = false` bench: `cargo bench --bench large_message`. It builds a masked client frame
//! holding 16 MiB of UTF-8 text, feeds it to `roomcast::protocol::Connection` (the server's side) in 64 KiB
//! pieces, as the server's read loop does, and times the whole message: unmasking, incremental UTF-8 validation
//! and the copy into the message's buffer. The yardstick is `copy_from_slice` of 16 MiB, into a buffer that is
//! already mapped (pure memcpy speed) and into a fresh one (memcpy plus the page faults any new 16 MiB buffer
//! pays, which `Connection` pays too). Each figure is the median of `RUNS` runs. The parts (the XOR alone, the
//! UTF-8 check alone) are timed the same way so a regression can be placed.
//!
//! The target: receiving is within 3x of memcpy speed. It is measured on two texts, plain ASCII and
//! mixed (a non-ASCII character every few words), because `str::from_utf8`, which does the validation, is an
//! order of magnitude faster on ASCII.

use std::hint::black_box;
use std::time::{Duration, Instant};

use roomcast::protocol::frame::{encode_frame, OpCode};
use roomcast::protocol::mask::apply_mask;
use roomcast::protocol::{Connection, Event, Role};

const SIZE: usize = 16 * 1024 * 1024;
const READ_CHUNK: usize = 64 * 1024;
const RUNS: usize = 15;
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// 16 MiB of text made of `line` repeated, cut at a character boundary and padded with ASCII.
fn text_payload(line: &str) -> Vec<u8> {
    let mut text = line.repeat(SIZE / line.len() + 1).into_bytes();
    let mut cut = SIZE;
    while std::str::from_utf8(&text[..cut]).is_err() {
        cut -= 1;
    }
    text.truncate(cut);
    text.resize(SIZE, b'.');
    text
}

/// The median of `RUNS` timings of `f`, after one warm-up run.
fn median_of(mut f: impl FnMut() -> Duration) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..RUNS).map(|_| f()).collect();
    times.sort();
    times[RUNS / 2]
}

fn gib_per_sec(d: Duration) -> f64 {
    SIZE as f64 / d.as_secs_f64() / (1u64 << 30) as f64
}

/// The texts measured: plain ASCII (what most chat traffic is) and mixed text with a non-ASCII character every
/// few words (which takes `from_utf8` off its ASCII fast path).
const TEXTS: [(&str, &str); 2] = [
    (
        "ASCII",
        "roomcast says hello to the world and to all rustaceans; the quick brown fox jumps over it.\n",
    ),
    (
        "mixed",
        "roomcast says héllo to the wörld ✓ and 🦀 rustaceans; the quick brown fox jumps over it.\n",
    ),
];

fn main() {
    println!("16 MiB masked text message, median of {RUNS} runs");
    let mut mapped = vec![0u8; SIZE];
    let memcpy_mapped = median_of(|| {
        let source = vec![1u8; SIZE];
        let start = Instant::now();
        mapped.copy_from_slice(black_box(&source));
        black_box(&mut mapped);
        start.elapsed()
    });
    let memcpy_fresh = median_of(|| {
        let source = vec![1u8; SIZE];
        let start = Instant::now();
        let mut fresh = Vec::with_capacity(SIZE);
        fresh.extend_from_slice(black_box(&source));
        black_box(&mut fresh);
        start.elapsed()
    });
    let xor_only = median_of(|| {
        let start = Instant::now();
        apply_mask(black_box(&mut mapped), KEY, 0);
        start.elapsed()
    });
    row("memcpy into a mapped buffer", memcpy_mapped);
    row("memcpy into a fresh buffer", memcpy_fresh);
    row("apply_mask alone, in place", xor_only);

    let mut verdicts = Vec::new();
    for (name, line) in TEXTS {
        let payload = text_payload(line);
        let mut frame = Vec::with_capacity(SIZE + 14);
        encode_frame(true, OpCode::Text, &payload, Some(KEY), &mut frame);
        let receive = median_of(|| {
            let mut conn = Connection::new(Role::Server, SIZE);
            let mut events = Vec::with_capacity(1);
            let start = Instant::now();
            for piece in frame.chunks(READ_CHUNK) {
                conn.feed(black_box(piece), &mut events)
                    .expect("a valid frame");
            }
            let elapsed = start.elapsed();
            match events.pop() {
                Some(Event::Message(message)) => assert_eq!(message.as_bytes().len(), SIZE),
                other => panic!("expected one message, got {other:?}"),
            }
            elapsed
        });
        let utf8_only = median_of(|| {
            let start = Instant::now();
            let ok = std::str::from_utf8(black_box(&payload)).is_ok();
            let elapsed = start.elapsed();
            assert!(ok);
            elapsed
        });
        row(&format!("{name}: Connection::feed, 64 KiB pieces"), receive);
        row(&format!("{name}: str::from_utf8 alone"), utf8_only);
        let ratio = receive.as_secs_f64() / memcpy_mapped.as_secs_f64();
        verdicts.push(format!(
            "{name}: receive / memcpy = {ratio:.2}x: {}",
            if ratio <= 3.0 {
                "within 3x (target met)"
            } else {
                "over 3x (target not met)"
            }
        ));
    }
    for verdict in verdicts {
        println!("{verdict}");
    }
}

fn row(name: &str, d: Duration) {
    println!(
        "{name:<44} {:>9.3} ms  {:>6.2} GiB/s",
        d.as_secs_f64() * 1e3,
        gib_per_sec(d)
    );
}
