//! Fuzz target `inflate`: `protocol::deflate::codec`'s decompressor on raw and on compressed-then-damaged
//! messages, fed in planned pieces with a message limit and a per-call output budget.
//!
//! Input: `[flags][limit][budget][n][plan][body]` (see `roomcast_fuzz::inflate_input`). Every payload is fed the
//! way a caller would: piece by piece, keeping what a call did not consume and giving it again, then `finish`.
//! Asserts that nothing panics, and:
//! - every call's report is exact: `consumed` within the input, `produced` equal to what was appended and within
//!   the budget, `BudgetSpent` only with the budget used up, `NeedInput` only with all input consumed;
//! - a message never yields more than the limit;
//! - raw payloads: the planned pieces and budget give the same bytes and the same outcome as one call with no
//!   budget (chunking and budgets never change what a message inflates to);
//! - structured messages, compressed by `MessageCompressor` (or by flate2 ending in a final block) and not
//!   damaged: each inflates back exactly, or, when longer than the limit, fails with `TooBig` after exactly
//!   `limit` bytes of it; `compress_if_smaller` output is smaller than the message; context takeover carries
//!   across messages, and after a damaged or oversized message both ends reset and stay in step;
//! - the whole-message fast path (`fixed::inflate_fixed`), on every structured payload and on `QuickCompressor`'s
//!   output for the same message, damaged alike: whatever it takes, zlib-rs inflates the same with an empty window
//!   and the same limit; `QuickCompressor`'s undamaged output within the limit and `fixed::MAX_OUTPUT` it always
//!   takes. (Raw payloads compare it too: `decompress_message` takes the fast path, the planned pieces never do.)

#![no_main]

use flate2::{Compress, Compression, FlushCompress};
use libfuzzer_sys::fuzz_target;
use roomcast::protocol::deflate::codec::{
    InflateError, InflateStatus, MessageCompressor, MessageDecompressor,
};
use roomcast::protocol::deflate::fixed::{self, inflate_fixed};
use roomcast::protocol::deflate::QuickCompressor;
use roomcast_fuzz::chunks::Chunker;
use roomcast_fuzz::inflate_input::{Damage, InflateInput};

/// The most plain bytes one input compresses, to keep executions fast.
const MAX_PLAIN_TOTAL: usize = 48 * 1024;

/// The most pieces one payload is cut into.
const MAX_PIECES: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let input = InflateInput::parse(data);
    if input.structured() {
        structured(&input);
    } else {
        raw(&input);
    }
});

fn raw(input: &InflateInput<'_>) {
    let limit = input.limit_bytes();
    let mut decompressor = MessageDecompressor::new(input.no_context_takeover(), limit);
    let mut out = Vec::new();
    let result = feed_message(
        &mut decompressor,
        input.raw,
        input.plan,
        input.budget_bytes(),
        &mut out,
    );
    assert!(out.len() <= limit);
    let mut whole = MessageDecompressor::new(input.no_context_takeover(), limit);
    let mut whole_out = Vec::new();
    let whole_result = whole.decompress_message(input.raw, &mut whole_out);
    assert_eq!(result, whole_result);
    assert_eq!(out, whole_out);
    if let Err(error) = result {
        let _ = error.to_string();
    }
}

fn structured(input: &InflateInput<'_>) {
    let limit = input.limit_bytes();
    let window_bits = input.window_bits();
    let no_context_takeover = input.no_context_takeover();
    let mut compressor = MessageCompressor::new(window_bits, no_context_takeover);
    let mut decompressor = MessageDecompressor::new(no_context_takeover, limit);
    let mut quick = QuickCompressor::new(window_bits);
    let mut plain_total = 0;
    for message in &input.messages {
        let plain = message.plain();
        plain_total += plain.len();
        if plain_total > MAX_PLAIN_TOTAL {
            break;
        }
        let mut compressed = Vec::new();
        if message.only_if_smaller() {
            match compressor
                .compress_if_smaller(&plain, &mut compressed)
                .expect("compression works")
            {
                Some(len) => assert!(len < plain.len() && len == compressed.len()),
                None => {
                    // Sent uncompressed: the peer's decompressor never sees it.
                    assert!(compressed.is_empty());
                    continue;
                }
            }
        } else if message.final_block() {
            compressed = compress_with_final_block(&plain, window_bits);
            // The decompressor starts a new stream after a final block, so our compressor must too.
            compressor.reset();
        } else {
            compressor
                .compress(&plain, &mut compressed)
                .expect("compression works");
        }
        let damaged =
            !message.only_if_smaller() && damage(&mut compressed, message.damage(), message.arg);
        fast_path_agrees(&compressed, limit, None);
        let mut quick_compressed = Vec::new();
        if quick
            .compress_if_smaller(&plain, &mut quick_compressed)
            .is_some()
        {
            let quick_damaged = damage(&mut quick_compressed, message.damage(), message.arg);
            let fits = plain.len() <= limit.min(fixed::MAX_OUTPUT);
            let must_take = (!quick_damaged && fits).then_some(&plain[..]);
            fast_path_agrees(&quick_compressed, limit, must_take);
        }

        let mut out = Vec::new();
        let result = feed_message(
            &mut decompressor,
            &compressed,
            input.plan,
            input.budget_bytes(),
            &mut out,
        );
        assert!(out.len() <= limit);
        if damaged {
            // Anything but a panic or too much output; then both ends start afresh.
            if result.is_ok() {
                decompressor.reset();
            }
            compressor.reset();
        } else if plain.len() <= limit {
            assert_eq!(
                result,
                Ok(()),
                "message of {} bytes, limit {limit}",
                plain.len()
            );
            assert!(out == plain, "inflated message differs from the original");
        } else {
            assert_eq!(result, Err(InflateError::TooBig { limit }));
            assert!(
                out == plain[..limit],
                "output before TooBig differs from the original"
            );
            // The decompressor reset itself; the compressor follows.
            compressor.reset();
        }
    }
}

/// `inflate_fixed` against zlib-rs on one whole message with an empty window: what it takes, zlib-rs inflates
/// the same, and `must_take`, when given, is what it must take and give.
fn fast_path_agrees(compressed: &[u8], limit: usize, must_take: Option<&[u8]>) {
    let mut fast = Vec::new();
    let taken = inflate_fixed(compressed, &mut fast, limit);
    if let Some(expected) = must_take {
        assert_eq!(taken, Some(expected.len()), "fast path declined a QuickCompressor message");
        assert!(fast == expected, "fast path inflated a QuickCompressor message wrongly");
    }
    if taken.is_none() {
        assert!(fast.is_empty(), "a declined message left output behind");
        return;
    }
    assert!(fast.len() <= limit);
    // A decompressor that keeps context never takes the fast path: this is zlib-rs alone.
    let mut reference = Vec::new();
    let result = MessageDecompressor::new(false, limit).decompress_message(compressed, &mut reference);
    assert_eq!(result, Ok(()), "fast path took a stream zlib-rs rejects");
    assert!(fast == reference, "fast path and zlib-rs inflate differently");
}

/// Raw DEFLATE from flate2 finished with a final block (RFC 7692 7.2.3.4), with nothing removed from its end.
fn compress_with_final_block(plain: &[u8], window_bits: u8) -> Vec<u8> {
    let mut deflate = Compress::new_with_window_bits(Compression::new(6), false, window_bits);
    let mut out = Vec::with_capacity(plain.len() + 64);
    loop {
        let taken = deflate.total_in() as usize;
        let status = deflate
            .compress_vec(&plain[taken..], &mut out, FlushCompress::Finish)
            .expect("compression works");
        if status == flate2::Status::StreamEnd {
            return out;
        }
        out.reserve(out.capacity().max(64));
    }
}

/// Applies the damage; returns whether the bytes changed.
fn damage(compressed: &mut Vec<u8>, damage: Damage, arg: u8) -> bool {
    if compressed.is_empty() {
        return false;
    }
    match damage {
        Damage::None => false,
        Damage::Flip => {
            let at = usize::from(arg).wrapping_mul(7919) % compressed.len();
            compressed[at] ^= 1 << (arg % 8);
            true
        }
        Damage::Truncate => {
            compressed.truncate(usize::from(arg) * compressed.len() / 256);
            true
        }
    }
}

/// Feeds one message as a caller would, checking every report; returns how the message ended.
fn feed_message(
    decompressor: &mut MessageDecompressor,
    payload: &[u8],
    plan: &[u8],
    budget: usize,
    out: &mut Vec<u8>,
) -> Result<(), InflateError> {
    let mut pending: Vec<u8> = Vec::new();
    for piece in Chunker::with_budget(plan, MAX_PIECES).split(payload) {
        pending.extend_from_slice(piece);
        loop {
            let before = out.len();
            let progress = decompressor.feed(&pending, out, budget)?;
            assert!(progress.consumed <= pending.len());
            assert_eq!(out.len() - before, progress.produced);
            assert!(progress.produced <= budget);
            pending.drain(..progress.consumed);
            match progress.status {
                InflateStatus::NeedInput => {
                    assert!(pending.is_empty());
                    break;
                }
                InflateStatus::BudgetSpent => assert_eq!(progress.produced, budget),
                InflateStatus::MessageDone => panic!("feed reported MessageDone"),
            }
        }
    }
    loop {
        let before = out.len();
        let progress = decompressor.finish(out, budget)?;
        assert_eq!(progress.consumed, 0);
        assert_eq!(out.len() - before, progress.produced);
        assert!(progress.produced <= budget);
        match progress.status {
            InflateStatus::MessageDone => return Ok(()),
            InflateStatus::BudgetSpent => assert_eq!(progress.produced, budget),
            InflateStatus::NeedInput => panic!("finish reported NeedInput"),
        }
    }
}
