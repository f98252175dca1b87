//! What receiving one compressed chat message costs the server, next to zlib-rs inflating the same bytes alone.
//!
//! A plain `harness = false` bench: `cargo bench --bench inflate_chat`. A browser compresses every message it
//! sends (Chromium: zlib level 6, sync flush, the trailing `00 00 ff ff` left off, RFC 7692 7.2.1) and the chat
//! route agrees to no context takeover, so the server inflates each message on its own with a decompressor lent
//! from its pool. This feeds a thousand different chat messages of about 500 bytes, each as one masked frame with
//! RSV1 set, to `roomcast::protocol::Connection` (the server's side, permessage-deflate agreed as on `/chat`),
//! and times them against flate2's own inflate (the same zlib-rs) of the same bytes with its tail, reset between
//! messages, into a buffer kept across messages. The same messages sent uncompressed show what the frame and
//! UTF-8 work costs alone. Each figure is the median of `RUNS` runs of all messages.

use std::hint::black_box;
use std::time::Instant;

use flate2::{Decompress, FlushDecompress};
use roomcast::protocol::deflate::codec::FLUSH_TAIL;
use roomcast::protocol::deflate::{
    negotiate_server, MessageCompressor, ServerDeflatePolicy, CLIENT_OFFER,
};
use roomcast::protocol::extensions::parse_extensions;
use roomcast::protocol::frame::{FrameHeader, OpCode};
use roomcast::protocol::mask::apply_mask;
use roomcast::protocol::{Connection, Event, Role};

mod support;

const RUNS: usize = 11;
const MESSAGES: usize = 1_000;
const LIMIT: usize = 64 * 1024;
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// `count` different chat messages as a browser sends them, of about 500 bytes each.
fn messages(count: usize) -> Vec<Vec<u8>> {
    support::contents(count, 64)
        .into_iter()
        .enumerate()
        .map(|(seq, content)| {
            format!(r#"{{"type":"send","room":"lobby","seq":{seq},"content":"{content}"}}"#)
                .into_bytes()
        })
        .collect()
}

/// `payload` as one masked text frame, with RSV1 when it is compressed.
fn frame(payload: &[u8], compressed: bool) -> Vec<u8> {
    let header = FrameHeader {
        fin: true,
        rsv1: compressed,
        opcode: OpCode::Text,
        mask: Some(KEY),
        payload_len: payload.len() as u64,
    };
    let mut frame = Vec::new();
    header.encode(&mut frame);
    let start = frame.len();
    frame.extend_from_slice(payload);
    apply_mask(&mut frame[start..], KEY, 0);
    frame
}

/// Checks that the last event is the message `expected`.
fn expect_message(events: &mut Vec<Event>, expected: &[u8]) {
    match events.pop() {
        Some(Event::Message(message)) => assert_eq!(message.as_bytes(), expected),
        other => panic!("expected one message, got {other:?}"),
    }
}

/// The median and the least over `RUNS` runs of nanoseconds per message of `run` (which handles `count`
/// messages); the least is the run other work on the machine disturbed least.
fn median_ns(count: usize, mut run: impl FnMut()) -> (f64, f64) {
    run();
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            run();
            started.elapsed().as_nanos() as f64 / count as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    (runs[RUNS / 2], runs[0])
}

fn main() {
    let offers = parse_extensions([CLIENT_OFFER.as_bytes()]).expect("our own offer parses");
    let params =
        negotiate_server(&offers, &ServerDeflatePolicy::NO_CONTEXT_TAKEOVER).expect("agreed");
    let plain = messages(MESSAGES);
    let mut chromium = MessageCompressor::with_level(15, true, 6);
    let compressed: Vec<Vec<u8>> = plain
        .iter()
        .map(|message| {
            let mut out = Vec::new();
            chromium.compress(message, &mut out).expect("compresses");
            out
        })
        .collect();
    let plain_len = plain.iter().map(Vec::len).sum::<usize>() as f64 / MESSAGES as f64;
    let compressed_len = compressed.iter().map(Vec::len).sum::<usize>() as f64 / MESSAGES as f64;
    println!(
        "{MESSAGES} chat messages of {plain_len:.0} bytes, {compressed_len:.0} compressed (zlib level 6), \
         on /chat ({}), median of {RUNS} runs",
        params.response_header()
    );
    let compressed_frames: Vec<Vec<u8>> = compressed.iter().map(|c| frame(c, true)).collect();
    let plain_frames: Vec<Vec<u8>> = plain.iter().map(|p| frame(p, false)).collect();
    let with_tail: Vec<Vec<u8>> = compressed
        .iter()
        .map(|c| [&c[..], &FLUSH_TAIL[..]].concat())
        .collect();

    let mut connection = Connection::new(Role::Server, LIMIT);
    connection.use_deflate(&params);
    let mut events = Vec::with_capacity(4);
    let receive_compressed = median_ns(MESSAGES, || {
        for (frame, expected) in compressed_frames.iter().zip(&plain) {
            connection
                .feed(black_box(frame), &mut events)
                .expect("a valid message");
            expect_message(&mut events, expected);
        }
    });
    let mut connection = Connection::new(Role::Server, LIMIT);
    connection.use_deflate(&params);
    let receive_plain = median_ns(MESSAGES, || {
        for (frame, expected) in plain_frames.iter().zip(&plain) {
            connection
                .feed(black_box(frame), &mut events)
                .expect("a valid message");
            expect_message(&mut events, expected);
        }
    });
    let mut inflate = Decompress::new_with_window_bits(false, 15);
    let mut out = vec![0u8; LIMIT];
    let zlib = median_ns(MESSAGES, || {
        for (input, expected) in with_tail.iter().zip(&plain) {
            inflate.reset(false);
            inflate
                .decompress(black_box(input), &mut out, FlushDecompress::Sync)
                .expect("valid DEFLATE");
            assert_eq!(&out[..inflate.total_out() as usize], &expected[..]);
        }
    });
    for (name, (median, least)) in [
        ("Connection::feed, compressed frame", receive_compressed),
        ("Connection::feed, plain frame", receive_plain),
        ("zlib-rs inflate alone (reset, kept out)", zlib),
    ] {
        println!("  {name:<40} {median:7.0} ns/message (least {least:6.0})");
    }
    let inflating = receive_compressed.1 - receive_plain.1;
    println!(
        "  least compressed receive - least plain receive = {inflating:.0} ns, {:.2}x zlib-rs alone",
        inflating / zlib.1
    );
}
