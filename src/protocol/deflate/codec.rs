//! RFC 7692 7.2: compressing one message into raw DEFLATE and inflating it back, and the compressed server frame.
//!
//! Owns the payload transformation only: sync-flushed raw DEFLATE with the trailing `00 00 ff ff` removed on the
//! way out (7.2.1) and put back on the way in (7.2.2), the context-takeover resets, the size limit checked while
//! inflating, and the per-call output budget that lets a caller stop inflating and resume later. It does not know
//! about connections or routes: a caller keeps one compressor and one decompressor per connection, or shares one
//! of each per event loop and resets it between messages (which needs no context takeover in that direction).
//! It must never panic on peer data; corrupt or oversized input is a typed error.

use std::fmt;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::protocol::frame::{encode_frame, encode_frame_in_place, FrameHeader, OpCode};

use super::fixed;
use super::negotiate::{MAX_WINDOW_BITS, MIN_COMPRESS_WINDOW_BITS};

/// The zlib compression level used by `MessageCompressor::new`: zlib's own default.
pub const DEFAULT_LEVEL: u32 = 6;

/// RFC 7692 7.2.1: the LEN and NLEN of the empty stored block a sync flush ends with. The sender removes them;
/// the receiver appends them again before inflating the message's end (7.2.2).
pub const FLUSH_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The RSV1 bit of a frame's first byte: "Per-Message Compressed" (RFC 7692 6).
pub const RSV1: u8 = 0x40;

/// How much payload one deflate call takes, so incompressible data is given up on early.
const COMPRESS_INPUT_STEP: usize = 64 * 1024;

/// The least spare capacity the compressor wants in the output before each call.
const MIN_OUTPUT_SPARE: usize = 64;

/// The least and the most output room one inflate call is given.
const MIN_INFLATE_ROOM: usize = 1024;
const MAX_INFLATE_ROOM: usize = 256 * 1024;

/// The output room `finish` starts with: the tail's empty stored block inflates to nothing, so all it writes is
/// what an earlier call could not fit; a small room keeps a message's buffer from growing (a reallocation and a
/// copy of the message) and being zero-filled for bytes that never come.
const FINISH_ROOM: usize = 64;

/// Compression failed inside the DEFLATE library. It does not happen with valid parameters; the caller can send
/// the message uncompressed instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressError {
    /// The library refused the call.
    Library,
    /// The flushed output did not end with `00 00 ff ff`, so the RFC 7692 7.2.1 tail could not be removed.
    MissingFlushTail,
}

impl fmt::Display for CompressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompressError::Library => f.write_str("the DEFLATE library failed to compress"),
            CompressError::MissingFlushTail => {
                f.write_str("compressed output does not end with a sync flush")
            }
        }
    }
}

impl std::error::Error for CompressError {}

/// Compresses whole messages, one at a time (RFC 7692 7.2.1).
pub struct MessageCompressor {
    deflate: Compress,
    window_bits: u8,
    no_context_takeover: bool,
}

impl fmt::Debug for MessageCompressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageCompressor")
            .field("window_bits", &self.window_bits)
            .field("no_context_takeover", &self.no_context_takeover)
            .finish_non_exhaustive()
    }
}

impl MessageCompressor {
    /// A compressor with an LZ77 window of `2^window_bits` bytes at the default level. `window_bits` is taken as
    /// 9..=15: negotiation never agrees on 8 for our own compression (see `negotiate`). With
    /// `no_context_takeover` every message is compressed on its own (7.1.1); without it, each may refer back to
    /// the ones before, so the compressor must stay with its one peer.
    pub fn new(window_bits: u8, no_context_takeover: bool) -> Self {
        Self::with_level(window_bits, no_context_takeover, DEFAULT_LEVEL)
    }

    /// Like `new`, with a zlib level from 0 (store) to 9 (smallest); higher values are taken as 9.
    pub fn with_level(window_bits: u8, no_context_takeover: bool, level: u32) -> Self {
        let window_bits = window_bits.clamp(MIN_COMPRESS_WINDOW_BITS, MAX_WINDOW_BITS);
        MessageCompressor {
            deflate: Compress::new_with_window_bits(
                Compression::new(level.min(9)),
                false,
                window_bits,
            ),
            window_bits,
            no_context_takeover,
        }
    }

    /// The window this compressor uses, after clamping.
    pub fn window_bits(&self) -> u8 {
        self.window_bits
    }

    /// Appends the compressed form of `payload` to `out` and returns its length.
    ///
    /// On an error `out` is as it was and the compressor has been reset.
    pub fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<usize, CompressError> {
        // With no size bound the message is never given up on, so the `None` arm cannot be taken.
        Ok(self.compress_within(payload, out, usize::MAX)?.unwrap_or(0))
    }

    /// Appends the compressed form of `payload` to `out` only if it is smaller than `payload`, and returns its
    /// length; `None` leaves `out` as it was, and the caller sends the payload uncompressed (RSV1 clear).
    ///
    /// Giving up resets the compressor, which is safe under context takeover too: the peer never saw the
    /// abandoned bytes, and a fresh DEFLATE stream refers to nothing before its own start.
    pub fn compress_if_smaller(
        &mut self,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Option<usize>, CompressError> {
        match payload.len().checked_sub(1) {
            Some(max_len) => self.compress_within(payload, out, max_len),
            None => Ok(None),
        }
    }

    /// Forgets the context: the next message refers to nothing before it. A compressor shared by several peers
    /// is reset automatically after each message when built with `no_context_takeover`.
    pub fn reset(&mut self) {
        self.deflate.reset();
    }

    /// Appends one whole final server frame carrying `payload` (unmasked, RFC 6455 5.1): compressed with RSV1 set
    /// when that is smaller, plain otherwise. Returns whether it was compressed.
    ///
    /// Control frames are never compressed (RFC 7692 6.1 allows RSV1 only on a data message's first frame), and
    /// neither are continuation frames; both are written plain.
    pub fn encode_server_frame(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool, CompressError> {
        if opcode.is_control() || opcode == OpCode::Continuation {
            encode_frame(true, opcode, payload, None, out);
            return Ok(false);
        }
        let header = FrameHeader {
            fin: true,
            rsv1: true,
            opcode,
            mask: None,
            payload_len: payload.len() as u64,
        };
        let mut failure = None;
        let compressed = encode_frame_in_place(header, out, |out| {
            match self.compress_if_smaller(payload, out) {
                Ok(compressed) => compressed,
                Err(error) => {
                    failure = Some(error);
                    None
                }
            }
        });
        if let Some(error) = failure {
            return Err(error);
        }
        if !compressed {
            encode_frame(true, opcode, payload, None, out);
        }
        Ok(compressed)
    }

    /// Compresses `payload` into `out`, giving up (`None`, `out` untouched, compressor reset) as soon as the
    /// result would be longer than `max_len`.
    fn compress_within(
        &mut self,
        payload: &[u8],
        out: &mut Vec<u8>,
        max_len: usize,
    ) -> Result<Option<usize>, CompressError> {
        let start = out.len();
        if payload.is_empty() {
            if max_len == 0 {
                return Ok(None);
            }
            // RFC 7692 7.2.3.6: an empty message is an empty stored block less its LEN and NLEN: one 0x00.
            // (zlib emits nothing for a second sync flush in a row, so this cannot go through the library.)
            out.push(0x00);
            return Ok(Some(1));
        }
        let max_with_tail = max_len.saturating_add(FLUSH_TAIL.len());
        let mut taken = 0;
        loop {
            let end = taken + (payload.len() - taken).min(COMPRESS_INPUT_STEP);
            let flush = if end == payload.len() {
                // RFC 7692 7.2.1: the message ends with a sync flush, so it ends on a byte boundary.
                FlushCompress::Sync
            } else {
                FlushCompress::None
            };
            if out.capacity() - out.len() < MIN_OUTPUT_SPARE {
                let written = out.len() - start;
                out.reserve(written.max(payload.len() / 4).max(256));
            }
            let before = self.deflate.total_in();
            if self
                .deflate
                .compress_vec(&payload[taken..end], out, flush)
                .is_err()
            {
                self.abandon(out, start);
                return Err(CompressError::Library);
            }
            taken += (self.deflate.total_in() - before) as usize;
            if out.len() - start > max_with_tail {
                self.abandon(out, start);
                return Ok(None);
            }
            // Done once every byte is in and the flush left spare room (a full buffer may hide more output).
            if taken == payload.len() && out.len() < out.capacity() {
                break;
            }
        }
        // RFC 7692 7.2.1: remove the 0x00 0x00 0xff 0xff the sync flush ended with.
        if !out[start..].ends_with(&FLUSH_TAIL) {
            self.abandon(out, start);
            return Err(CompressError::MissingFlushTail);
        }
        out.truncate(out.len() - FLUSH_TAIL.len());
        if self.no_context_takeover {
            self.deflate.reset();
        }
        Ok(Some(out.len() - start))
    }

    fn abandon(&mut self, out: &mut Vec<u8>, start: usize) {
        out.truncate(start);
        self.deflate.reset();
    }
}

/// A compressed message that cannot be inflated. Either one fails the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InflateError {
    /// The message inflates to more than the limit; at most `limit` bytes of it were produced.
    TooBig {
        /// The limit that was hit, in inflated bytes.
        limit: usize,
    },
    /// The data is not valid DEFLATE, or refers further back than the window. What the message inflated to
    /// before the bad data has been appended, however the input was cut.
    Corrupt,
}

impl fmt::Display for InflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InflateError::TooBig { limit } => {
                write!(f, "compressed message inflates to more than {limit} bytes")
            }
            InflateError::Corrupt => f.write_str("compressed message is not valid DEFLATE data"),
        }
    }
}

impl std::error::Error for InflateError {}

/// Where a decompressor call stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InflateStatus {
    /// `feed`: all the input was taken and all its output written; feed the next piece, or `finish`.
    NeedInput,
    /// The call's output budget is spent. Call again later with the input not yet consumed (`feed`), or call
    /// `finish` again; output already decoded but not yet written waits inside the decompressor.
    BudgetSpent,
    /// `finish`: the message is complete and the decompressor is ready for the next one.
    MessageDone,
}

/// What one decompressor call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// How many bytes of the input were consumed (always 0 from `finish`). The rest must be given again.
    pub consumed: usize,
    /// How many inflated bytes were appended to the output.
    pub produced: usize,
    /// Why the call returned.
    pub status: InflateStatus,
}

/// Inflates compressed messages as their payload arrives (RFC 7692 7.2.2), within a size limit per message and
/// an output budget per call.
///
/// Per message: `feed` each piece of the compressed payload, then `finish`. A call that returns
/// `BudgetSpent` is resumed by calling it again: `feed` with the input from `consumed` on (more may follow it),
/// `finish` as it is. The decompressor holds no input of its own, only DEFLATE's state, so the caller decides
/// where unconsumed bytes wait. A shared decompressor must finish (or `reset`) one message before starting
/// another.
///
/// It always inflates with a 32 KiB window, which decodes a peer's data whatever window (8..=15) was agreed:
/// zlib-rs allocates 32 KiB for any inflate window anyway, and checks distances against the window only across
/// calls, so a smaller one would neither save memory nor be enforced; and flate2 resets a 15-bit inflater in
/// place, but rebuilds (allocates) any other.
pub struct MessageDecompressor {
    inflate: Decompress,
    no_context_takeover: bool,
    max_message_len: usize,
    /// Inflated bytes of the current message so far.
    produced: usize,
    /// How much of `FLUSH_TAIL` the current message's `finish` has fed.
    tail_fed: usize,
    /// A final block (BFINAL = 1) ended the DEFLATE stream during this message (7.2.3.4).
    stream_ended: bool,
    /// Some of the current message's input has been fed.
    fed: bool,
}

impl fmt::Debug for MessageDecompressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageDecompressor")
            .field("no_context_takeover", &self.no_context_takeover)
            .field("max_message_len", &self.max_message_len)
            .field("produced", &self.produced)
            .finish_non_exhaustive()
    }
}

impl MessageDecompressor {
    /// A decompressor whose messages may each inflate to at most `max_message_len` bytes. With
    /// `no_context_takeover` the window is dropped after every message (RFC 7692 7.1.1); without it, each
    /// message may refer back to the ones before, so the decompressor must stay with its one peer.
    pub fn new(no_context_takeover: bool, max_message_len: usize) -> Self {
        MessageDecompressor {
            inflate: Decompress::new_with_window_bits(false, MAX_WINDOW_BITS),
            no_context_takeover,
            max_message_len,
            produced: 0,
            tail_fed: 0,
            stream_ended: false,
            fed: false,
        }
    }

    /// Changes the limit from the next call on, for a decompressor shared between routes.
    pub fn set_max_message_len(&mut self, max_message_len: usize) {
        self.max_message_len = max_message_len;
    }

    /// How many bytes the current message has inflated to so far.
    pub fn message_len(&self) -> usize {
        self.produced
    }

    /// Inflates the next piece of a message's compressed payload, appending at most `budget` bytes to `out`.
    ///
    /// Bytes after a final DEFLATE block (7.2.3.4) are consumed and ignored. On an error the decompressor is
    /// reset, ready for a new message with no context.
    pub fn feed(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        budget: usize,
    ) -> Result<Progress, InflateError> {
        self.fed |= !input.is_empty();
        let room = input
            .len()
            .saturating_mul(4)
            .clamp(MIN_INFLATE_ROOM, MAX_INFLATE_ROOM);
        let (consumed, produced, complete) = self.inflate_some(input, out, budget, room)?;
        let status = if complete {
            InflateStatus::NeedInput
        } else {
            InflateStatus::BudgetSpent
        };
        Ok(Progress {
            consumed,
            produced,
            status,
        })
    }

    /// Ends the message: inflates `00 00 ff ff` (RFC 7692 7.2.2) and whatever output still waits, appending at
    /// most `budget` bytes to `out`. Returns `MessageDone` once the message is complete; then the window is kept
    /// for the next message, or dropped under no context takeover.
    pub fn finish(&mut self, out: &mut Vec<u8>, budget: usize) -> Result<Progress, InflateError> {
        let tail = FLUSH_TAIL.get(self.tail_fed..).unwrap_or(&[]);
        let (consumed, produced, complete) = self.inflate_some(tail, out, budget, FINISH_ROOM)?;
        self.tail_fed += consumed;
        if !complete {
            return Ok(Progress {
                consumed: 0,
                produced,
                status: InflateStatus::BudgetSpent,
            });
        }
        // After a final block the DEFLATE stream is over: the next message has to start a new one.
        if self.no_context_takeover || self.stream_ended {
            self.inflate.reset(false);
        }
        self.start_message();
        Ok(Progress {
            consumed: 0,
            produced,
            status: InflateStatus::MessageDone,
        })
    }

    /// Inflates a whole compressed message, `payload` without its `00 00 ff ff`, appending at most `budget` bytes
    /// to `out`, without zlib-rs: when the decompressor keeps no context (RFC 7692 7.1.1), no input of this
    /// message has been fed yet, and `fixed::inflate_fixed` takes the stream (fixed-code and stored blocks only,
    /// within the limit and the budget). Returns the bytes appended, with the message done and the decompressor
    /// ready for the next one; `None` changes nothing, and the message goes through `feed` and `finish`.
    pub fn inflate_whole_quickly(
        &mut self,
        payload: &[u8],
        out: &mut Vec<u8>,
        budget: usize,
    ) -> Option<usize> {
        if !self.no_context_takeover || self.fed || self.produced > 0 || self.tail_fed > 0 {
            return None;
        }
        fixed::inflate_fixed(payload, out, budget.min(self.max_message_len))
    }

    /// Inflates one whole compressed payload with no budget: `inflate_whole_quickly`, or else `feed` then
    /// `finish`.
    pub fn decompress_message(
        &mut self,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        if self
            .inflate_whole_quickly(payload, out, usize::MAX)
            .is_some()
        {
            return Ok(());
        }
        self.feed(payload, out, usize::MAX)?;
        self.finish(out, usize::MAX)?;
        Ok(())
    }

    /// Abandons the current message, if any, and forgets the window.
    pub fn reset(&mut self) {
        self.inflate.reset(false);
        self.start_message();
    }

    fn start_message(&mut self) {
        self.produced = 0;
        self.tail_fed = 0;
        self.stream_ended = false;
        self.fed = false;
    }

    /// Inflates from `input` until it is all consumed and its output written (`complete`), or `budget` bytes
    /// were appended. Returns (consumed, appended, complete).
    ///
    /// DEFLATE writes straight into `out`, into room zero-filled beforehand (filling it is what lets this stay
    /// free of `unsafe`). The room starts at `first_room` (near what the input is likely to inflate to) and
    /// doubles whenever it fills, so a small piece costs little and a large one few calls; it never goes past the
    /// budget or the limit, which is how neither is ever exceeded. `out`'s capacity never goes past the limit
    /// either (`reserve_within`).
    fn inflate_some(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        budget: usize,
        first_room: usize,
    ) -> Result<(usize, usize, bool), InflateError> {
        let mut consumed = 0;
        let mut appended = 0;
        let mut room_wanted = first_room;
        loop {
            if self.stream_ended {
                // RFC 7692 7.2.3.4: whatever follows a final block, such as the appended tail, is not data.
                return Ok((input.len(), appended, true));
            }
            let budget_left = budget - appended;
            if budget_left == 0 {
                return Ok((consumed, appended, false));
            }
            let limit_left = self.max_message_len.saturating_sub(self.produced);
            let start = out.len();
            // At the limit, a one-byte probe tells whether the message wants to go past it. It is inflated
            // beside `out`, not into it: growing `out` by a byte that is never kept would double its capacity
            // (a reallocation, and the copy of everything inflated so far) exactly when a bomb reaches the limit.
            let mut probe = [0u8; 1];
            let (room, target) = if limit_left == 0 {
                (1, &mut probe[..])
            } else {
                let room = room_wanted.min(limit_left).min(budget_left);
                reserve_within(out, room, limit_left);
                out.resize(start + room, 0);
                (room, &mut out[start..])
            };
            let (in_before, out_before) = (self.inflate.total_in(), self.inflate.total_out());
            let status = self
                .inflate
                .decompress(&input[consumed..], target, FlushDecompress::None);
            let used = (self.inflate.total_in() - in_before) as usize;
            let made = (self.inflate.total_out() - out_before) as usize;
            // Output comes strictly in stream order, so a byte past the limit precedes any bad data after it.
            if made > limit_left {
                out.truncate(start);
                let limit = self.max_message_len;
                self.reset();
                return Err(InflateError::TooBig { limit });
            }
            // Kept even when the call failed, so the output before bad data does not depend on the chunking.
            out.truncate(start + made);
            consumed += used;
            self.produced += made;
            appended += made;
            let Ok(status) = status else {
                self.reset();
                return Err(InflateError::Corrupt);
            };
            if status == Status::StreamEnd {
                self.stream_ended = true;
                continue;
            }
            if made == room {
                room_wanted = room_wanted.saturating_mul(2).min(MAX_INFLATE_ROOM);
            } else if consumed == input.len() {
                // Output stopped short of the room with no input left: everything decodable has been written.
                return Ok((consumed, appended, true));
            } else if used == 0 && made == 0 {
                // Input and room were both there and DEFLATE took neither: the stream cannot go on.
                self.reset();
                return Err(InflateError::Corrupt);
            }
        }
    }
}

/// Makes `out` able to take `room` more bytes, growing its capacity by doubling as `Vec` does (so a message
/// inflated in many calls is copied a bounded number of times) but never to more than `most` bytes past its
/// length: the rest of the message's limit. `Vec`'s own growth doubles whatever the limit: a bomb fed in pieces
/// of 300 bytes (a first room of 1,200) ended in 74,400 bytes of capacity for a 64 KiB limit, and a doubling
/// that cannot grow in place copies everything inflated so far.
fn reserve_within(out: &mut Vec<u8>, room: usize, most: usize) {
    if out.capacity() - out.len() >= room {
        return;
    }
    let wanted = out
        .len()
        .saturating_add(room)
        .max(out.capacity().saturating_mul(2))
        .min(out.len().saturating_add(most.max(room)));
    out.reserve_exact(wanted - out.len());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{FrameDecoder, FrameEvent, IncomingMask};

    /// Text that compresses well but not trivially.
    fn sample_text(len: usize) -> Vec<u8> {
        let words = [
            "roomcast ",
            "deflate ",
            "window ",
            "message ",
            "frame ",
            "chat ",
            "{\"type\":\"chat\"} ",
            "0123 ",
        ];
        let mut out = Vec::with_capacity(len + 32);
        let mut state = 0x9E37_79B9u32;
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            out.extend_from_slice(words[(state % words.len() as u32) as usize].as_bytes());
        }
        out.truncate(len);
        out
    }

    /// Bytes that do not compress.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    fn compress(compressor: &mut MessageCompressor, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        compressor.compress(payload, &mut out).unwrap();
        out
    }

    fn inflate(
        decompressor: &mut MessageDecompressor,
        payload: &[u8],
    ) -> Result<Vec<u8>, InflateError> {
        let mut out = Vec::new();
        decompressor.decompress_message(payload, &mut out)?;
        Ok(out)
    }

    /// Raw DEFLATE with a sync flush straight from flate2, tail included.
    fn flate2_sync_flushed(payload: &[u8], window_bits: u8) -> Vec<u8> {
        let mut deflate =
            Compress::new_with_window_bits(Compression::new(DEFAULT_LEVEL), false, window_bits);
        let mut out = Vec::with_capacity(payload.len() + 1024);
        deflate
            .compress_vec(payload, &mut out, FlushCompress::Sync)
            .unwrap();
        out
    }

    /// `count` copies of 1 MiB of zeros compressed and sync flushed: a valid stream of about 1 KiB per MiB.
    fn zero_bomb(mebibytes: usize) -> Vec<u8> {
        let one = flate2_sync_flushed(&vec![0u8; 1 << 20], 15);
        one.repeat(mebibytes)
    }

    const HELLO: &[u8] = b"Hello";

    #[test]
    fn rfc_7692_hello_example_is_what_we_send() {
        let mut compressor = MessageCompressor::new(15, true);
        assert_eq!(
            compress(&mut compressor, HELLO),
            [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
        );
    }

    #[test]
    fn rfc_7692_examples_inflate_to_hello() {
        let examples: [&[u8]; 4] = [
            // 7.2.3.1: a compressed text message.
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
            // 7.2.3.3: a DEFLATE block with no compression.
            &[
                0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
            ],
            // 7.2.3.4: a DEFLATE block with BFINAL set to 1.
            &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00],
            // 7.2.3.5: two DEFLATE blocks in one message.
            &[
                0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
            ],
        ];
        for example in examples {
            let mut decompressor = MessageDecompressor::new(false, 1024);
            assert_eq!(
                inflate(&mut decompressor, example).unwrap(),
                HELLO,
                "{example:x?}"
            );
        }
    }

    #[test]
    fn rfc_7692_shared_window_example_refers_to_the_first_message() {
        // 7.2.3.2: the second "Hello" is a back-reference into the first message.
        let mut decompressor = MessageDecompressor::new(false, 1024);
        inflate(
            &mut decompressor,
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
        )
        .unwrap();
        assert_eq!(
            inflate(&mut decompressor, &[0xf2, 0x00, 0x11, 0x00, 0x00]).unwrap(),
            HELLO
        );
        let mut fresh = MessageDecompressor::new(false, 1024);
        assert_eq!(
            inflate(&mut fresh, &[0xf2, 0x00, 0x11, 0x00, 0x00]),
            Err(InflateError::Corrupt)
        );
    }

    #[test]
    fn compressor_with_context_takeover_refers_back_like_the_rfc_example() {
        let mut compressor = MessageCompressor::new(15, false);
        compress(&mut compressor, HELLO);
        assert_eq!(
            compress(&mut compressor, HELLO),
            [0xf2, 0x00, 0x11, 0x00, 0x00]
        );
    }

    #[test]
    fn empty_message_is_one_zero_byte_fresh_and_after_a_message() {
        // RFC 7692 7.2.3.6.
        for no_context_takeover in [true, false] {
            let mut compressor = MessageCompressor::new(15, no_context_takeover);
            assert_eq!(compress(&mut compressor, b""), [0x00]);
            compress(&mut compressor, HELLO);
            assert_eq!(compress(&mut compressor, b""), [0x00]);
            let mut decompressor = MessageDecompressor::new(no_context_takeover, 16);
            assert_eq!(inflate(&mut decompressor, &[0x00]).unwrap(), b"");
        }
    }

    #[test]
    fn trailing_flush_bytes_are_removed_and_nothing_else() {
        for len in [1, 100, 5000, 200_000] {
            let payload = sample_text(len);
            let ours = compress(&mut MessageCompressor::new(15, true), &payload);
            let mut expected = flate2_sync_flushed(&payload, 15);
            assert!(expected.ends_with(&FLUSH_TAIL));
            expected.truncate(expected.len() - 4);
            assert_eq!(ours, expected, "len {len}");
        }
    }

    #[test]
    fn compressed_output_is_appended_after_existing_bytes() {
        let mut out = b"prefix".to_vec();
        let len = MessageCompressor::new(15, true)
            .compress(HELLO, &mut out)
            .unwrap();
        assert_eq!(len, 7);
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(&out[6..], [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    }

    #[test]
    fn round_trips_at_every_window_with_and_without_context_takeover() {
        let messages: Vec<Vec<u8>> = vec![
            sample_text(3000),
            sample_text(3000),
            Vec::new(),
            noise(700, 7),
            sample_text(70_000),
            b"x".to_vec(),
            sample_text(3000),
        ];
        for window_bits in 9..=15 {
            for no_context_takeover in [true, false] {
                let mut compressor = MessageCompressor::new(window_bits, no_context_takeover);
                let mut decompressor = MessageDecompressor::new(no_context_takeover, 1 << 20);
                for (i, message) in messages.iter().enumerate() {
                    let compressed = compress(&mut compressor, message);
                    assert_eq!(
                        &inflate(&mut decompressor, &compressed).unwrap(),
                        message,
                        "window {window_bits}, no_context_takeover {no_context_takeover}, message {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn context_takeover_makes_a_repeated_message_smaller_and_needs_the_window() {
        let message = sample_text(2000);
        let mut compressor = MessageCompressor::new(15, false);
        let first = compress(&mut compressor, &message);
        let second = compress(&mut compressor, &message);
        assert!(
            second.len() * 10 < first.len(),
            "{} vs {}",
            second.len(),
            first.len()
        );
        let mut keeping = MessageDecompressor::new(false, 1 << 20);
        assert_eq!(inflate(&mut keeping, &first).unwrap(), message);
        assert_eq!(inflate(&mut keeping, &second).unwrap(), message);
        let mut forgetting = MessageDecompressor::new(true, 1 << 20);
        assert_eq!(inflate(&mut forgetting, &first).unwrap(), message);
        assert_eq!(
            inflate(&mut forgetting, &second),
            Err(InflateError::Corrupt)
        );
    }

    #[test]
    fn no_context_takeover_compresses_every_message_alone() {
        let message = sample_text(2000);
        let mut compressor = MessageCompressor::new(15, true);
        let first = compress(&mut compressor, &message);
        assert_eq!(compress(&mut compressor, &message), first);
    }

    #[test]
    fn explicit_reset_drops_the_context() {
        let mut compressor = MessageCompressor::new(15, false);
        let first = compress(&mut compressor, HELLO);
        compressor.reset();
        assert_eq!(compress(&mut compressor, HELLO), first);
    }

    #[test]
    fn incompressible_payload_is_not_worth_compressing() {
        let payload = noise(4000, 3);
        let mut out = b"kept".to_vec();
        let mut compressor = MessageCompressor::new(15, false);
        assert_eq!(compressor.compress_if_smaller(&payload, &mut out), Ok(None));
        assert_eq!(out, b"kept");
        assert_eq!(compressor.compress_if_smaller(b"", &mut out), Ok(None));
        assert_eq!(compressor.compress_if_smaller(b"a", &mut out), Ok(None));
        assert_eq!(out, b"kept");
    }

    #[test]
    fn compressible_payload_is_worth_compressing() {
        let payload = sample_text(4000);
        let mut out = Vec::new();
        let len = MessageCompressor::new(15, true)
            .compress_if_smaller(&payload, &mut out)
            .unwrap()
            .unwrap();
        assert_eq!(len, out.len());
        assert!(len < payload.len() / 2);
    }

    #[test]
    fn giving_up_under_context_takeover_keeps_the_peer_in_step() {
        let mut compressor = MessageCompressor::new(15, false);
        let mut decompressor = MessageDecompressor::new(false, 1 << 20);
        let text = sample_text(3000);
        let noisy = noise(3000, 11);
        for message in [&text, &noisy, &text, &noisy, &text] {
            let mut out = Vec::new();
            match compressor.compress_if_smaller(message, &mut out).unwrap() {
                Some(_) => assert_eq!(&inflate(&mut decompressor, &out).unwrap(), message),
                // Sent plain: the peer's decompressor does not see it.
                None => assert_eq!(message, &noisy),
            }
        }
    }

    #[test]
    fn window_bits_outside_the_usable_range_are_clamped_not_panicked_on() {
        assert_eq!(MessageCompressor::new(8, true).window_bits(), 9);
        assert_eq!(MessageCompressor::new(0, true).window_bits(), 9);
        assert_eq!(MessageCompressor::new(99, true).window_bits(), 15);
    }

    /// Feeds the pieces in order, giving again what a call left unconsumed, then finishes; at most `budget`
    /// bytes of output per call. `out` keeps what was inflated even when it fails.
    fn inflate_pieces(
        decompressor: &mut MessageDecompressor,
        pieces: &[&[u8]],
        budget: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        for piece in pieces {
            let mut pending = *piece;
            loop {
                let progress = decompressor.feed(pending, out, budget)?;
                pending = &pending[progress.consumed..];
                if progress.status == InflateStatus::NeedInput {
                    break;
                }
            }
        }
        while decompressor.finish(out, budget)?.status != InflateStatus::MessageDone {}
        Ok(())
    }

    fn inflate_in_steps(
        decompressor: &mut MessageDecompressor,
        input: &[u8],
        budget: usize,
    ) -> Result<Vec<u8>, InflateError> {
        let mut out = Vec::new();
        inflate_pieces(decompressor, &[input], budget, &mut out)?;
        Ok(out)
    }

    #[test]
    fn message_of_exactly_the_limit_passes_and_one_more_byte_fails() {
        let payload = sample_text(5000);
        let compressed = compress(&mut MessageCompressor::new(15, true), &payload);
        let mut exact = MessageDecompressor::new(true, 5000);
        assert_eq!(inflate(&mut exact, &compressed).unwrap(), payload);
        let mut short = MessageDecompressor::new(true, 4999);
        let mut out = Vec::new();
        assert_eq!(
            short.decompress_message(&compressed, &mut out),
            Err(InflateError::TooBig { limit: 4999 })
        );
        assert_eq!(out.len(), 4999);
    }

    #[test]
    fn bomb_fails_after_at_most_the_limit() {
        // About 10 KiB that would inflate to 10 MiB.
        let bomb = zero_bomb(10);
        assert!(bomb.len() < 12 * 1024, "{}", bomb.len());
        let limit = 64 * 1024;
        let mut decompressor = MessageDecompressor::new(false, limit);
        let mut out = Vec::new();
        let result = decompressor.feed(&bomb, &mut out, usize::MAX);
        assert_eq!(result, Err(InflateError::TooBig { limit }));
        assert!(out.len() <= limit);
    }

    #[test]
    fn a_bomb_stopped_at_the_limit_does_not_grow_the_output_past_it() {
        let limit = 64 * 1024;
        let mut decompressor = MessageDecompressor::new(true, limit);
        let mut out = Vec::with_capacity(limit);
        let result = decompressor.feed(&zero_bomb(1), &mut out, usize::MAX);
        assert_eq!(result, Err(InflateError::TooBig { limit }));
        assert_eq!(out.len(), limit);
        assert_eq!(
            out.capacity(),
            limit,
            "the probe past the limit is not written to the output"
        );
    }

    #[test]
    fn a_bomb_fed_in_small_pieces_never_grows_the_output_capacity_past_the_limit() {
        let limit = 64 * 1024;
        let mut decompressor = MessageDecompressor::new(true, limit);
        let mut out = Vec::new();
        let mut error = None;
        let mut most_capacity = 0;
        // Small pieces start with small rooms (1,200 bytes for 300), so the output grows many times before it
        // reaches the limit, by doubling from a size that does not double into it.
        for piece in zero_bomb(1).chunks(300) {
            let result = decompressor.feed(piece, &mut out, usize::MAX);
            most_capacity = most_capacity.max(out.capacity());
            if let Err(e) = result {
                error = Some(e);
                break;
            }
        }
        assert_eq!(error, Some(InflateError::TooBig { limit }));
        assert_eq!(out.len(), limit);
        assert!(
            most_capacity <= limit,
            "capacity reached {most_capacity} for a limit of {limit}"
        );
    }

    #[test]
    fn gigabyte_bomb_stops_at_the_limit_in_pieces_too() {
        // About 1 MiB that would inflate to 1 GiB, fed in 4 KiB pieces.
        let bomb = zero_bomb(1024);
        let limit = 1 << 20;
        let mut decompressor = MessageDecompressor::new(true, limit);
        let mut out = Vec::new();
        let mut error = None;
        for piece in bomb.chunks(4096) {
            if let Err(e) = decompressor.feed(piece, &mut out, usize::MAX) {
                error = Some(e);
                break;
            }
        }
        assert_eq!(error, Some(InflateError::TooBig { limit }));
        assert_eq!(out.len(), limit);
    }

    #[test]
    fn limit_counts_the_message_not_the_output_vector() {
        let payload = sample_text(1000);
        let compressed = compress(&mut MessageCompressor::new(15, true), &payload);
        let mut decompressor = MessageDecompressor::new(true, 1000);
        let mut out = vec![0u8; 5000];
        decompressor
            .decompress_message(&compressed, &mut out)
            .unwrap();
        decompressor
            .decompress_message(&compressed, &mut out)
            .unwrap();
        assert_eq!(out.len(), 7000);
    }

    #[test]
    fn output_budget_stops_a_call_and_the_next_call_resumes() {
        let payload = sample_text(300_000);
        let compressed = compress(&mut MessageCompressor::new(15, false), &payload);
        let budget = 10_000;
        let mut decompressor = MessageDecompressor::new(false, 1 << 20);
        let mut out = Vec::new();
        let mut pending = compressed.as_slice();
        let mut calls = 0;
        loop {
            let progress = decompressor.feed(pending, &mut out, budget).unwrap();
            calls += 1;
            assert!(progress.produced <= budget);
            pending = &pending[progress.consumed..];
            if progress.status == InflateStatus::NeedInput {
                assert!(pending.is_empty());
                break;
            }
        }
        loop {
            let progress = decompressor.finish(&mut out, budget).unwrap();
            calls += 1;
            assert!(progress.produced <= budget);
            if progress.status == InflateStatus::MessageDone {
                break;
            }
        }
        assert_eq!(out, payload);
        assert!(calls >= payload.len() / budget, "{calls} calls");
        // The window carried over: a second message still inflates.
        let mut compressor_again = MessageCompressor::new(15, false);
        compress(&mut compressor_again, &payload);
        let second = compress(&mut compressor_again, HELLO);
        assert_eq!(inflate(&mut decompressor, &second).unwrap(), HELLO);
    }

    #[test]
    fn any_budget_gives_the_same_message() {
        let payload = sample_text(40_000);
        let mut compressor = MessageCompressor::new(15, false);
        let first = compress(&mut compressor, &payload);
        let second = compress(&mut compressor, &payload);
        for budget in [
            1,
            7,
            100,
            MIN_INFLATE_ROOM + 1,
            MAX_INFLATE_ROOM - 1,
            usize::MAX,
        ] {
            let mut decompressor = MessageDecompressor::new(false, 1 << 20);
            assert_eq!(
                inflate_in_steps(&mut decompressor, &first, budget).unwrap(),
                payload
            );
            assert_eq!(
                inflate_in_steps(&mut decompressor, &second, budget).unwrap(),
                payload
            );
        }
    }

    #[test]
    fn budget_of_zero_makes_no_progress() {
        let compressed = compress(&mut MessageCompressor::new(15, true), HELLO);
        let mut decompressor = MessageDecompressor::new(true, 100);
        let mut out = Vec::new();
        let progress = decompressor.feed(&compressed, &mut out, 0).unwrap();
        assert_eq!(
            progress,
            Progress {
                consumed: 0,
                produced: 0,
                status: InflateStatus::BudgetSpent
            }
        );
        decompressor
            .decompress_message(&compressed, &mut out)
            .unwrap();
        assert_eq!(out, HELLO);
    }

    #[test]
    fn output_that_waits_for_finish_is_written_by_finish() {
        // The final bytes of "Hello" come out only once the tail's empty stored block closes the block.
        let compressed = compress(&mut MessageCompressor::new(15, true), &sample_text(100));
        let mut decompressor = MessageDecompressor::new(true, 1000);
        let mut out = Vec::new();
        let fed = decompressor
            .feed(&compressed, &mut out, usize::MAX)
            .unwrap();
        let finished = decompressor.finish(&mut out, usize::MAX).unwrap();
        assert_eq!(fed.produced + finished.produced, 100);
        assert_eq!(finished.status, InflateStatus::MessageDone);
        assert_eq!(out, sample_text(100));
    }

    #[test]
    fn every_split_point_of_a_small_message_inflates_the_same() {
        let payload = sample_text(300);
        for no_context_takeover in [true, false] {
            let mut compressor = MessageCompressor::new(15, no_context_takeover);
            let messages = [
                compress(&mut compressor, &payload),
                compress(&mut compressor, &payload),
            ];
            for (round, compressed) in messages.iter().enumerate() {
                for split in 0..=compressed.len() {
                    let mut decompressor = MessageDecompressor::new(no_context_takeover, 1000);
                    // The second message may refer back to the first, so the first goes in whole beforehand.
                    for earlier in &messages[..round] {
                        decompressor
                            .decompress_message(earlier, &mut Vec::new())
                            .unwrap();
                    }
                    let mut out = Vec::new();
                    let a = decompressor
                        .feed(&compressed[..split], &mut out, usize::MAX)
                        .unwrap();
                    let b = decompressor
                        .feed(&compressed[split..], &mut out, usize::MAX)
                        .unwrap();
                    assert_eq!((a.consumed, b.consumed), (split, compressed.len() - split));
                    assert_eq!(
                        decompressor.finish(&mut out, usize::MAX).unwrap().status,
                        InflateStatus::MessageDone
                    );
                    assert_eq!(out, payload, "split {split}, round {round}");
                }
            }
        }
    }

    #[test]
    fn byte_at_a_time_feeding_inflates_the_same() {
        let payload = sample_text(2000);
        let compressed = compress(&mut MessageCompressor::new(12, true), &payload);
        let mut decompressor = MessageDecompressor::new(true, 1 << 20);
        let mut out = Vec::new();
        for byte in compressed.chunks(1) {
            let progress = decompressor.feed(byte, &mut out, usize::MAX).unwrap();
            assert_eq!(progress.consumed, 1);
        }
        decompressor.finish(&mut out, usize::MAX).unwrap();
        assert_eq!(out, payload);
    }

    #[test]
    fn corrupt_streams_are_typed_errors_and_the_decompressor_recovers() {
        let corrupt: [&[u8]; 3] = [
            // BTYPE = 11, reserved.
            &[0x07, 0x00],
            // A stored block whose NLEN is not the complement of LEN.
            &[0x00, 0x05, 0x00, 0x00, 0x00, b'H'],
            // A fixed-Huffman block whose first symbol is a match with nothing before it.
            &[0x02, 0x01, 0x00],
        ];
        for data in corrupt {
            let mut decompressor = MessageDecompressor::new(false, 1000);
            assert_eq!(
                inflate(&mut decompressor, data),
                Err(InflateError::Corrupt),
                "{data:x?}"
            );
            let good = compress(&mut MessageCompressor::new(15, true), HELLO);
            assert_eq!(inflate(&mut decompressor, &good).unwrap(), HELLO);
        }
    }

    #[test]
    fn output_before_corrupt_data_is_the_same_however_the_input_is_cut() {
        // RFC 7692 7.2.3.5's two blocks, with the empty stored block between them damaged (NLEN 0x10ff).
        let damaged = [
            0xf2, 0x48, 0x05, 0x00, 0x00, 0x10, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
        ];
        for split in 0..=damaged.len() {
            for budget in [1, 2, usize::MAX] {
                let mut decompressor = MessageDecompressor::new(false, 100);
                let mut out = Vec::new();
                let pieces = [&damaged[..split], &damaged[split..]];
                let result = inflate_pieces(&mut decompressor, &pieces, budget, &mut out);
                assert_eq!(
                    result,
                    Err(InflateError::Corrupt),
                    "split {split}, budget {budget}"
                );
                assert_eq!(out, b"He", "split {split}, budget {budget}");
            }
        }
    }

    #[test]
    fn truncated_and_flipped_streams_never_panic() {
        let payload = sample_text(4000);
        let compressed = compress(&mut MessageCompressor::new(15, true), &payload);
        for cut in 0..compressed.len() {
            let mut decompressor = MessageDecompressor::new(true, 1 << 20);
            // A message cut short is not detectable: the appended tail may even decode as a few symbols.
            if let Ok(out) = inflate(&mut decompressor, &compressed[..cut]) {
                assert!(out.len() <= 1 << 20);
            }
        }
        for i in 0..compressed.len() {
            let mut flipped = compressed.clone();
            flipped[i] ^= 0x5a;
            let mut decompressor = MessageDecompressor::new(true, 8000);
            let _ = inflate(&mut decompressor, &flipped);
        }
    }

    #[test]
    fn bytes_after_a_final_block_are_ignored_and_the_next_message_starts_afresh() {
        let mut decompressor = MessageDecompressor::new(false, 1000);
        let mut with_junk = vec![0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        with_junk.extend_from_slice(b"junk after the end");
        assert_eq!(inflate(&mut decompressor, &with_junk).unwrap(), HELLO);
        assert_eq!(
            inflate(
                &mut decompressor,
                &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
            )
            .unwrap(),
            HELLO
        );
    }

    /// Splits one server frame into (first byte, payload), checking the length encoding by hand.
    fn split_server_frame(frame: &[u8]) -> (u8, &[u8]) {
        let (len, rest) = match frame[1] {
            126 => (
                usize::from(u16::from_be_bytes([frame[2], frame[3]])),
                &frame[4..],
            ),
            127 => (
                u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
                &frame[10..],
            ),
            len => (usize::from(len), &frame[2..]),
        };
        assert_eq!(rest.len(), len, "one whole frame, nothing after it");
        (frame[0], rest)
    }

    #[test]
    fn compressed_server_frame_has_fin_rsv1_and_opcode_and_inflates_back() {
        for len in [50, 200, 1000, 70_000, 300_000] {
            for opcode in [OpCode::Text, OpCode::Binary] {
                let payload = sample_text(len);
                let mut out = b"queued".to_vec();
                let compressed = MessageCompressor::new(15, true)
                    .encode_server_frame(opcode, &payload, &mut out)
                    .unwrap();
                assert!(compressed);
                assert_eq!(&out[..6], b"queued");
                let (first, body) = split_server_frame(&out[6..]);
                assert_eq!(first, 0x80 | RSV1 | opcode.bits(), "len {len}");
                let mut decompressor = MessageDecompressor::new(true, 1 << 20);
                assert_eq!(inflate(&mut decompressor, body).unwrap(), payload);
            }
        }
    }

    #[test]
    fn frame_header_shrinks_when_the_compressed_payload_needs_a_shorter_length() {
        // 200 plain bytes need a 16-bit length; compressed they fit in 7 bits.
        let payload = vec![b'a'; 200];
        let mut out = Vec::new();
        assert!(MessageCompressor::new(15, true)
            .encode_server_frame(OpCode::Text, &payload, &mut out)
            .unwrap());
        assert!(out[1] < 126);
        assert_eq!(out.len(), 2 + usize::from(out[1]));
    }

    #[test]
    fn frame_that_does_not_pay_is_written_plain_and_decodes_without_extensions() {
        let payload = noise(3000, 9);
        let mut out = Vec::new();
        let compressed = MessageCompressor::new(15, true)
            .encode_server_frame(OpCode::Binary, &payload, &mut out)
            .unwrap();
        assert!(!compressed);
        let mut decoder = FrameDecoder::new(IncomingMask::Forbidden);
        let (used, event) = decoder.decode(&out).unwrap();
        assert!(
            matches!(event, Some(FrameEvent::Header(h)) if h.fin && h.opcode == OpCode::Binary)
        );
        assert_eq!(&out[used..], payload);
    }

    #[test]
    fn control_and_continuation_frames_are_never_compressed() {
        for opcode in [
            OpCode::Ping,
            OpCode::Pong,
            OpCode::Close,
            OpCode::Continuation,
        ] {
            let mut out = Vec::new();
            let compressed = MessageCompressor::new(15, true)
                .encode_server_frame(opcode, &[b'a'; 100], &mut out)
                .unwrap();
            assert!(!compressed);
            assert_eq!(out[0], 0x80 | opcode.bits());
        }
    }

    #[test]
    fn errors_display_as_text() {
        assert!(InflateError::TooBig { limit: 5 }
            .to_string()
            .contains("5 bytes"));
        assert!(InflateError::Corrupt.to_string().contains("DEFLATE"));
        assert!(CompressError::MissingFlushTail
            .to_string()
            .contains("sync flush"));
    }
}
