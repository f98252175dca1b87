//! `roomcast-bench bomb`: one small permessage-deflate frame that inflates far past the server's message size
//! limit, and what it cost the server: the Close it answered with and the growth of its peak resident memory.
//!
//! Owns building the bomb (a short DEFLATE segment that inflates to 1 MiB of one byte, repeated, each copy ended
//! by a sync flush so the copies read as one stream, RFC 7692 7.2.1) and the run: connect with permessage-deflate,
//! join (on the chat route), optionally warm the server up with one ordinary compressed message, read the
//! server's `VmHWM`, send the bomb, wait for the Close, read `VmHWM` again. It also reads `RssFile` both times:
//! the pages of the server's binary that the bomb's code path mapped for the first time count in `VmHWM` too
//! (file-backed, shared, mapped 64 KiB at a time), and they are not memory the bomb made the server allocate. It
//! never sends anything but the one connection's frames, and refuses addresses other than loopback ones.

use std::io;
use std::time::{Duration, Instant};

use clap::Args;
use roomcast::protocol::deflate::codec::FLUSH_TAIL;
use roomcast::protocol::deflate::MessageCompressor;
use roomcast::protocol::frame::{FrameHeader, OpCode};
use roomcast::protocol::mask::apply_mask;
use serde_json::{json, Value};

use crate::stats::{peak_rss_kib, rss_kib, status_kib};
use crate::{Clock, Common, Pool};

/// What one segment of the bomb inflates to.
const SEGMENT_INFLATED: usize = 1 << 20;

/// The bytes the bomb inflates to: valid UTF-8, so that only the size can fail the message.
const BOMB_BYTE: u8 = b'a';

/// Options of `bomb`.
#[derive(Debug, Args)]
pub struct BombArgs {
    #[command(flatten)]
    common: Common,
    /// The WebSocket path to send the bomb to: /ws (the chat) or /echo
    #[arg(long, default_value = "/ws")]
    path: String,
    /// What the bomb inflates to, in bytes (rounded up to whole MiB)
    #[arg(long, default_value_t = 64 << 20)]
    inflate_to: usize,
    /// Send no ordinary compressed message first: the bomb is then also the first message the server inflates,
    /// and its peak includes the decompressor it allocates for it
    #[arg(long)]
    cold: bool,
    /// Seconds to wait for the server's Close after sending the bomb
    #[arg(long, default_value_t = 30.0)]
    wait: f64,
}

/// The compressed payload of a text message of `segments` MiB of `BOMB_BYTE`, as RFC 7692 7.2.1 sends it (the
/// final `00 00 ff ff` left off), and the length of one segment.
pub fn bomb_payload(segments: usize) -> (Vec<u8>, usize) {
    let mut one = Vec::new();
    MessageCompressor::with_level(15, true, 9)
        .compress(&vec![BOMB_BYTE; SEGMENT_INFLATED], &mut one)
        .unwrap_or_default();
    let mut payload = Vec::with_capacity(segments * (one.len() + FLUSH_TAIL.len()));
    for i in 0..segments {
        if i > 0 {
            // The sync flush that ended the previous segment: the next one starts on a byte boundary (7.2.1).
            payload.extend_from_slice(&FLUSH_TAIL);
        }
        payload.extend_from_slice(&one);
    }
    (payload, one.len())
}

/// A client's masked text frame with RSV1 set (RFC 7692 6) holding `payload`.
fn compressed_text_frame(payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let header = FrameHeader {
        fin: true,
        rsv1: true,
        opcode: OpCode::Text,
        mask: Some(key),
        payload_len: payload.len() as u64,
    };
    let mut frame = Vec::with_capacity(header.encoded_len() + payload.len());
    header.encode(&mut frame);
    let start = frame.len();
    frame.extend_from_slice(payload);
    apply_mask(&mut frame[start..], key, 0);
    frame
}

/// Runs one bomb and reports the server's answer and memory.
pub fn run(args: &BombArgs) -> io::Result<Value> {
    let common = &args.common;
    if !common.addr.ip().is_loopback() {
        return Err(io::Error::other(
            "bomb only runs against a loopback address",
        ));
    }
    let Some(pid) = common.server_pid else {
        return Err(io::Error::other(
            "bomb needs --server-pid to read the server's memory",
        ));
    };
    if !common.deflate {
        return Err(io::Error::other("bomb needs --deflate"));
    }
    let path: &'static str = Box::leak(args.path.clone().into_boxed_str());
    let chat = path == "/ws";
    let clock = Clock(Instant::now());
    let mut pool = Pool::new()?;
    let index = pool.connect(common, path, 0)?;
    let mut opened = Vec::new();
    let mut received = 0u64;
    let deadline = Instant::now() + Duration::from_secs_f64(common.setup_timeout);
    // One poll; counts the messages received.
    let mut turn = |pool: &mut Pool, received: &mut u64| -> io::Result<()> {
        pool.turn(Duration::from_millis(10), clock, &mut opened, |_, _, _| {
            *received += 1
        })?;
        if pool.errors > 0 || Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "before the bomb: {}",
                pool.last_error.as_deref().unwrap_or("timed out")
            )));
        }
        Ok(())
    };
    while !pool.clients[index].is_open() {
        turn(&mut pool, &mut received)?;
    }
    if chat {
        // The join's answer is the first message.
        pool.clients[index].send_join("bomber", "bomb");
        pool.mark(index);
        pool.flush_marked();
        while received == 0 {
            turn(&mut pool, &mut received)?;
        }
    }
    let Some(agreed) = pool.clients[index].deflate().map(|p| p.response_header()) else {
        return Err(io::Error::other(
            "the server did not agree to permessage-deflate",
        ));
    };
    // Warm-up: one ordinary compressed message, answered (broadcast back, or echoed).
    if !args.cold {
        let warm = crate::chat_text(2048);
        let before = received;
        if chat {
            pool.clients[index].send_chat(&warm[..1500]);
        } else {
            pool.clients[index].send_text(&warm[..1500]);
        }
        pool.mark(index);
        pool.flush_marked();
        while received == before {
            turn(&mut pool, &mut received)?;
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let peak_before = peak_rss_kib(pid).ok_or_else(|| io::Error::other("cannot read VmHWM"))?;
    let rss_before = rss_kib(pid).ok_or_else(|| io::Error::other("cannot read VmRSS"))?;
    let file_before =
        status_kib(pid, "RssFile:").ok_or_else(|| io::Error::other("cannot read RssFile"))?;

    let segments = args.inflate_to.div_ceil(SEGMENT_INFLATED).max(1);
    let (payload, segment_len) = bomb_payload(segments);
    let frame = compressed_text_frame(&payload, [0x5a, 0x17, 0xc3, 0x2e]);
    let sent_at = Instant::now();
    pool.clients[index].send_bytes(frame);
    pool.mark(index);
    pool.flush_marked();
    let wait_end = sent_at + Duration::from_secs_f64(args.wait);
    while !pool.clients[index].is_closed() && Instant::now() < wait_end {
        pool.turn(
            Duration::from_millis(10),
            clock,
            &mut Vec::new(),
            |_, _, _| {},
        )?;
        pool.flush_marked();
    }
    let closed_after = sent_at.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let peak_after = peak_rss_kib(pid).ok_or_else(|| io::Error::other("cannot read VmHWM"))?;
    let rss_after = rss_kib(pid).ok_or_else(|| io::Error::other("cannot read VmRSS"))?;
    let file_after =
        status_kib(pid, "RssFile:").ok_or_else(|| io::Error::other("cannot read RssFile"))?;
    let close = pool.clients[index].server_close().cloned();
    let closed = pool.clients[index].is_closed();
    pool.close_all();
    Ok(json!({
        "scenario": "bomb",
        "label": common.label,
        "server_kind": common.server_kind.name(),
        "path": path,
        "deflate_answer": agreed,
        "warm": !args.cold,
        "inflates_to": segments * SEGMENT_INFLATED,
        "frame_payload_bytes": payload.len(),
        "segment_bytes": segment_len,
        "closed": closed,
        "close_code": close.as_ref().and_then(|c| c.code).map(u16::from),
        "close_reason": close.as_ref().map(|c| c.reason.clone()),
        "tcp_error": pool.last_error,
        "closed_after_ms": (closed_after.as_secs_f64() * 1e4).round() / 10.0,
        "server_peak_rss_before_kib": peak_before,
        "server_peak_rss_after_kib": peak_after,
        "server_peak_growth_kib": peak_after.saturating_sub(peak_before),
        "server_rss_before_kib": rss_before,
        "server_rss_after_kib": rss_after,
        "server_rss_file_before_kib": file_before,
        "server_rss_file_after_kib": file_after,
        "server_file_growth_kib": file_after.saturating_sub(file_before),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast::protocol::deflate::MessageDecompressor;

    #[test]
    fn the_bomb_inflates_to_whole_segments_of_one_byte() {
        let (payload, segment) = bomb_payload(3);
        assert!(
            segment < 2048,
            "a MiB of one byte compresses to {segment} bytes"
        );
        let mut out = Vec::new();
        MessageDecompressor::new(true, usize::MAX)
            .decompress_message(&payload, &mut out)
            .unwrap();
        assert_eq!(out.len(), 3 * SEGMENT_INFLATED);
        assert!(out.iter().all(|&b| b == BOMB_BYTE));
    }

    #[test]
    fn the_bomb_frame_is_masked_and_marked_compressed() {
        let frame = compressed_text_frame(b"abc", [1, 2, 3, 4]);
        assert_eq!(frame[0], 0xC1, "FIN, RSV1, text");
        assert_eq!(frame[1], 0x80 | 3, "masked, 3 bytes");
        assert_eq!(&frame[6..], &[b'a' ^ 1, b'b' ^ 2, b'c' ^ 3]);
    }
}
