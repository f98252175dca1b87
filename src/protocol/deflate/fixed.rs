//! A whole-message inflater for the streams short messages are usually compressed into: blocks with the fixed
//! Huffman codes (RFC 1951 3.2.6) and stored blocks (3.2.4), decoded with nothing before them in the window.
//!
//! Owns `inflate_fixed`, which either inflates a complete compressed message exactly or declines it. It declines
//! whatever it does not handle in full: a block with dynamic codes, a stream that is truncated or corrupt, a
//! distance reaching before the message's first byte, output past the caller's cap. A declined message has
//! appended nothing, and the caller inflates it with zlib-rs (`codec::MessageDecompressor`), which gives the real
//! outcome, error included. So it must never accept a stream that zlib-rs would inflate differently or reject: the
//! tests below and the `inflate` fuzz target compare the two on every stream. It keeps nothing between messages,
//! so it must not be used for a peer that keeps its context (RFC 7692 7.1.1), whose matches may reach into earlier
//! messages.
//!
//! Why: a chat message of 512 bytes from `QuickCompressor` (ours) is about 370 fixed-code symbols, and zlib-rs
//! spent ~41 instructions a symbol on them, with its per-call setup around that. Here one table lookup decodes a
//! literal/length code of 7 to 9 bits, and the bit buffer is refilled eight bytes at a time.

use std::cell::RefCell;

use super::codec::FLUSH_TAIL;
use super::tables::{
    fixed_code, reversed, DISTANCE_BASE, DISTANCE_EXTRA, LENGTH_BASE, LENGTH_EXTRA,
};

/// The longest match DEFLATE can code (RFC 1951 3.2.5).
const MAX_MATCH: usize = 258;

/// The farthest back a distance can reach: the 32 KiB window (RFC 1951 3.2.5, RFC 7692 7.1.2.1 at most 15 bits).
const MAX_DISTANCE: usize = 1 << 15;

/// The longest compressed message tried: a declined message is inflated twice, and this bounds the waste.
pub const MAX_INPUT: usize = 64 * 1024;

/// The longest message inflated here: the most the thread's scratch buffer holds (with `FAST_ROOM`).
pub const MAX_OUTPUT: usize = 32 * 1024;

/// Room allotted per compressed byte before the first output (and `FAST_ROOM` more), so a typical message needs
/// no second allotment.
const ROOM_PER_INPUT_BYTE: usize = 3;

/// The output room allotted at least, once a block has output to write.
const MIN_ROOM: usize = 256;

/// Room `fixed_symbols` keeps ahead of its output: the longest match, and a word that a match copied eight bytes at
/// a time may write past its end.
const FAST_ROOM: usize = MAX_MATCH + 8;

// A table entry is one u32: the bits to consume (code, and a length's extra bits) in bits 0-4, flags in bits 8-10,
// the extra bits' count in bits 11-14, and the value (a literal byte, a base length or a base distance) from 16.
const CONSUMED: u32 = 0x1f;
const LITERAL: u32 = 1 << 8;
const LENGTH: u32 = 1 << 9;
const END_OF_BLOCK: u32 = 1 << 10;
const EXTRA_SHIFT: u32 = 11;
const VALUE_SHIFT: u32 = 16;

/// The table entry of literal/length `symbol`, whose code is `code_bits` long. A length consumes its extra bits
/// with its code; codes 286 and 287 take part in the code but never occur in data (RFC 1951 3.2.6), so their
/// entry has no flag.
const fn lit_len_entry(symbol: u16, code_bits: u8) -> u32 {
    let code_bits = code_bits as u32;
    match symbol {
        0..=255 => code_bits | LITERAL | (symbol as u32) << VALUE_SHIFT,
        256 => code_bits | END_OF_BLOCK,
        257..=285 => {
            let extra = LENGTH_EXTRA[(symbol - 257) as usize] as u32;
            let base = LENGTH_BASE[(symbol - 257) as usize] as u32;
            (code_bits + extra) | LENGTH | extra << EXTRA_SHIFT | base << VALUE_SHIFT
        }
        _ => code_bits,
    }
}

/// Every 9-bit input maps to the one code it starts with; a shorter code fills every entry its bits begin.
static LIT_LEN: [u32; 512] = {
    let mut table = [0; 512];
    let mut symbol = 0;
    while symbol < 288 {
        let (code, bits) = fixed_code(symbol);
        let low = reversed(code, bits);
        let mut high = 0;
        while high < 1 << (9 - bits) {
            table[low | high << bits] = lit_len_entry(symbol, bits);
            high += 1;
        }
        symbol += 1;
    }
    table
};

/// Fixed distance codes are all 5 bits, code = distance symbol (RFC 1951 3.2.6); codes 30 and 31 never occur in
/// data, so their entry has no flag. An entry consumes the code and its extra bits.
static DISTANCES: [u32; 32] = {
    let mut table = [0; 32];
    let mut symbol = 0;
    while symbol < 30 {
        let extra = DISTANCE_EXTRA[symbol] as u32;
        table[reversed(symbol as u16, 5)] = (5 + extra)
            | LENGTH
            | extra << EXTRA_SHIFT
            | (DISTANCE_BASE[symbol] as u32) << VALUE_SHIFT;
        symbol += 1;
    }
    table
};

/// Why a message was not inflated here: the caller must use zlib-rs.
#[derive(Debug)]
struct Declined;

/// The compressed payload followed by `FLUSH_TAIL` (RFC 7692 7.2.2), read a bit at a time from each byte's least
/// significant bit (RFC 1951 3.1.1), through a 64-bit buffer. Past the tail it reads zeros and counts them as
/// consumed, so a stream that needs them is caught by `overran`.
#[derive(Clone, Copy)]
struct BitReader<'a> {
    payload: &'a [u8],
    /// The next byte to load, counting the tail's bytes after the payload's.
    next: usize,
    /// Bits loaded and not consumed, the next one lowest. Bits above `count` are either zero or the true bits of
    /// the bytes after `next`, so loading those bytes again changes nothing.
    buffer: u64,
    count: u32,
}

impl<'a> BitReader<'a> {
    fn new(payload: &'a [u8]) -> Self {
        BitReader {
            payload,
            next: 0,
            buffer: 0,
            count: 0,
        }
    }

    /// Loads until at least 56 bits are buffered: a whole word at once while eight payload bytes remain.
    #[inline(always)]
    fn refill(&mut self) {
        match self
            .payload
            .get(self.next..)
            .and_then(|rest| rest.first_chunk::<8>())
        {
            Some(word) => {
                self.buffer |= u64::from_le_bytes(*word) << self.count;
                self.next += ((63 - self.count) >> 3) as usize;
                self.count |= 56;
            }
            None => *self = self.refilled_bytewise(),
        }
    }

    /// The reader with bytes loaded one at a time, near and past the payload's end. Taking and giving the reader by
    /// value lets the decoding loop keep it in registers.
    #[cold]
    #[inline(never)]
    fn refilled_bytewise(mut self) -> Self {
        while self.count <= 56 {
            let byte = match self.payload.get(self.next) {
                Some(&byte) => byte,
                None => FLUSH_TAIL
                    .get(self.next - self.payload.len())
                    .copied()
                    .unwrap_or(0),
            };
            self.buffer |= u64::from(byte) << self.count;
            self.next += 1;
            self.count += 8;
        }
        self
    }

    /// The next `bits` bits (at most 32), not consumed.
    #[inline(always)]
    fn peek(&self, bits: u32) -> usize {
        (self.buffer & ((1u64 << bits) - 1)) as usize
    }

    #[inline(always)]
    fn consume(&mut self, bits: u32) {
        self.buffer >>= bits;
        self.count -= bits;
    }

    /// Takes the next `bits` bits (at most 32).
    #[inline(always)]
    fn take(&mut self, bits: u32) -> usize {
        let value = self.peek(bits);
        self.consume(bits);
        value
    }

    /// Decodes one symbol of a fixed block. The buffer must hold at least 31 bits: the most one symbol takes, an
    /// 8-bit length code, 5 extra bits, a 5-bit distance code and 13 extra bits.
    #[inline(always)]
    fn symbol(&mut self) -> Symbol {
        let entry = LIT_LEN[self.peek(9)];
        if entry & LITERAL != 0 {
            self.consume(entry & CONSUMED);
            return Symbol::Literal((entry >> VALUE_SHIFT) as u8);
        }
        if entry & LENGTH == 0 {
            self.consume(entry & CONSUMED);
            return if entry & END_OF_BLOCK != 0 {
                Symbol::EndOfBlock
            } else {
                Symbol::Invalid
            };
        }
        let consumed = entry & CONSUMED;
        let code_bits = consumed - (entry >> EXTRA_SHIFT & 0xf);
        let length = (entry >> VALUE_SHIFT) as usize + (self.peek(consumed) >> code_bits);
        self.consume(consumed);
        let code = DISTANCES[self.peek(5)];
        if code == 0 {
            return Symbol::Invalid;
        }
        let distance = (code >> VALUE_SHIFT) as usize + (self.peek(code & CONSUMED) >> 5);
        self.consume(code & CONSUMED);
        Symbol::Match { length, distance }
    }

    fn consumed_bits(&self) -> usize {
        self.next * 8 - self.count as usize
    }

    fn total_bits(&self) -> usize {
        (self.payload.len() + FLUSH_TAIL.len()) * 8
    }

    /// The stream went past the tail: it is truncated.
    fn overran(&self) -> bool {
        self.consumed_bits() > self.total_bits()
    }
}

/// One decoded symbol of a fixed block (RFC 1951 3.2.5).
enum Symbol {
    Literal(u8),
    Match {
        length: usize,
        distance: usize,
    },
    EndOfBlock,
    /// Literal/length codes 286 and 287, or distance codes 30 and 31.
    Invalid,
}

/// Where inflated bytes go: `buffer` from `start`, zero-filled in allotments, never past `end`.
struct Output<'a> {
    buffer: &'a mut Vec<u8>,
    start: usize,
    /// The next byte to write.
    at: usize,
    end: usize,
    /// The first allotment's size.
    first_room: usize,
}

impl Output<'_> {
    /// Makes `more` bytes writable at `at`, or declines when they would pass `end`.
    #[inline(always)]
    fn make_room(&mut self, more: usize) -> Result<(), Declined> {
        if self.at + more <= self.usable() {
            return Ok(());
        }
        self.grow(more)
    }

    /// The buffer's length up to `end`: the scratch buffer keeps the length an earlier, longer message gave it.
    #[inline(always)]
    fn usable(&self) -> usize {
        self.buffer.len().min(self.end)
    }

    #[cold]
    fn grow(&mut self, more: usize) -> Result<(), Declined> {
        let wanted = self.at + more;
        if wanted > self.end {
            return Err(Declined);
        }
        let doubled = self.start + (self.buffer.len() - self.start).max(self.first_room) * 2;
        let len = wanted.max(doubled).max(self.start + self.first_room);
        self.buffer.resize(len.min(self.end), 0);
        Ok(())
    }
}

/// Inflates `payload`, a whole compressed message without its `00 00 ff ff` (RFC 7692 7.2.2), into `out` after
/// what it holds, if it is made only of fixed-code and stored blocks and inflates to at most `cap` bytes (and at
/// most `MAX_OUTPUT`), with an empty window. Returns the bytes appended; `None` leaves `out` as it was, for the
/// caller to inflate `payload` with zlib-rs.
pub fn inflate_fixed(payload: &[u8], out: &mut Vec<u8>, cap: usize) -> Option<usize> {
    if payload.len() > MAX_INPUT {
        return None;
    }
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.try_borrow_mut().ok()?;
        let mut output = Output {
            buffer: &mut scratch,
            start: 0,
            at: 0,
            end: cap.min(MAX_OUTPUT),
            first_room: (payload.len() * ROOM_PER_INPUT_BYTE + FAST_ROOM).max(MIN_ROOM),
        };
        inflate_blocks(&mut BitReader::new(payload), &mut output).ok()?;
        let at = output.at;
        let inflated = scratch.get(..at)?;
        out.extend_from_slice(inflated);
        Some(inflated.len())
    })
}

thread_local! {
    /// Where this thread's messages are inflated before they are copied out: it keeps its length (what was once
    /// zero-filled) from message to message, so a message does not pay for clearing room it then overwrites. What
    /// it holds between messages is never read: a match may only reach back into the current message.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn inflate_blocks(bits: &mut BitReader<'_>, out: &mut Output<'_>) -> Result<(), Declined> {
    loop {
        bits.refill();
        // RFC 1951 3.2.3: BFINAL, then BTYPE: 00 stored, 01 fixed codes, 10 dynamic codes, 11 reserved.
        let header = bits.take(3);
        match header >> 1 {
            0 => stored_block(bits, out)?,
            1 => fixed_block(bits, out)?,
            _ => return Err(Declined),
        }
        if bits.overran() {
            return Err(Declined);
        }
        // RFC 7692 7.2.3.4: after a final block, whatever follows (the appended tail) is not data. Without one,
        // the message ends where its bytes do (7.2.2).
        if header & 1 == 1 || bits.consumed_bits() == bits.total_bits() {
            return Ok(());
        }
    }
}

/// RFC 1951 3.2.4: to the next byte boundary, LEN and its one's complement NLEN, then LEN bytes as they are.
fn stored_block(bits: &mut BitReader<'_>, out: &mut Output<'_>) -> Result<(), Declined> {
    bits.consume(bits.count & 7);
    bits.refill();
    let len = bits.take(16);
    let nlen = bits.take(16);
    if len != !nlen & 0xffff || bits.consumed_bits() + len * 8 > bits.total_bits() {
        return Err(Declined);
    }
    out.make_room(len)?;
    for _ in 0..len {
        if bits.count < 8 {
            bits.refill();
        }
        let byte = bits.take(8) as u8;
        *out.buffer.get_mut(out.at).ok_or(Declined)? = byte;
        out.at += 1;
    }
    Ok(())
}

/// What stopped `fixed_symbols`.
enum Stop {
    EndOfBlock,
    /// The output has no room left for the longest match and the slack of a word-wise copy.
    Full,
    Declined,
}

/// RFC 1951 3.2.6 codes, up to and including the end-of-block code: decoded by `fixed_symbols` while the output
/// can be given room for any symbol, then one at a time with exact room checks up to the cap.
fn fixed_block(bits: &mut BitReader<'_>, out: &mut Output<'_>) -> Result<(), Declined> {
    loop {
        if out.make_room(FAST_ROOM).is_err() {
            return fixed_symbols_near_cap(bits, out);
        }
        let usable = out.usable();
        let Some(dst) = out.buffer.get_mut(..usable) else {
            return Err(Declined);
        };
        match fixed_symbols(bits, dst, &mut out.at, out.start) {
            Stop::EndOfBlock => return Ok(()),
            Stop::Full => continue,
            Stop::Declined => return Err(Declined),
        }
    }
}

/// Decodes symbols into `dst` from `at` while `FAST_ROOM` bytes remain there: the loop every literal of a short
/// message goes through. The reader's state lives in locals, and a literal is followed by up to two more decoded
/// without the loop's checks (the buffer holds 32 bits or more, and a literal's code at most 9).
fn fixed_symbols(bits: &mut BitReader<'_>, dst: &mut [u8], at: &mut usize, start: usize) -> Stop {
    let mut reader = *bits;
    let mut o = *at;
    let last_fast_start = dst.len().saturating_sub(FAST_ROOM);
    let stop = loop {
        if o > last_fast_start {
            break Stop::Full;
        }
        if reader.count < 32 {
            reader.refill();
        }
        let entry = LIT_LEN[reader.peek(9)];
        if entry & LITERAL != 0 {
            // Up to three literals on one refill: each takes at most 9 of the 32 or more bits buffered.
            let Some(window) = dst.get_mut(o..o + 3) else {
                break Stop::Declined;
            };
            reader.consume(entry & CONSUMED);
            window[0] = (entry >> VALUE_SHIFT) as u8;
            o += 1;
            let second = LIT_LEN[reader.peek(9)];
            if second & LITERAL == 0 {
                continue;
            }
            reader.consume(second & CONSUMED);
            window[1] = (second >> VALUE_SHIFT) as u8;
            o += 1;
            let third = LIT_LEN[reader.peek(9)];
            if third & LITERAL == 0 {
                continue;
            }
            reader.consume(third & CONSUMED);
            window[2] = (third >> VALUE_SHIFT) as u8;
            o += 1;
            continue;
        }
        match reader.symbol() {
            Symbol::Literal(byte) => match dst.get_mut(o) {
                Some(slot) => {
                    *slot = byte;
                    o += 1;
                }
                None => break Stop::Declined,
            },
            Symbol::Match { length, distance } => {
                // RFC 1951 3.2.5: a distance reaches back within the window, here the message's own output.
                if distance > o - start || distance > MAX_DISTANCE {
                    break Stop::Declined;
                }
                if copy_match_with_slack(dst, o, distance, length).is_err() {
                    break Stop::Declined;
                }
                o += length;
            }
            Symbol::EndOfBlock => break Stop::EndOfBlock,
            Symbol::Invalid => break Stop::Declined,
        }
    };
    *bits = reader;
    *at = o;
    stop
}

/// Copies `length` bytes from `distance` back to `at`, eight at a time when the distance allows it, so up to seven
/// bytes past the match are written too (the caller keeps `FAST_ROOM`, and the bytes are overwritten or cut off
/// later). A word read at least eight bytes behind the one written never reads what the copy has yet to write, so
/// an overlapping match repeats as RFC 1951 3.2.3 wants. Most matches in chat text are short: two words cover
/// them without a loop.
#[inline(always)]
fn copy_match_with_slack(
    dst: &mut [u8],
    at: usize,
    distance: usize,
    length: usize,
) -> Result<(), Declined> {
    let from = at - distance;
    if distance < 8 {
        return copy_match(dst, at, distance, length);
    }
    copy_word(dst, from, at)?;
    if length > 8 {
        copy_word(dst, from + 8, at + 8)?;
        if length > 16 {
            copy_words_from(dst, from, at, 16, length)?;
        }
    }
    Ok(())
}

/// The words of a long match after its first two.
#[inline(never)]
fn copy_words_from(
    dst: &mut [u8],
    from: usize,
    at: usize,
    mut done: usize,
    length: usize,
) -> Result<(), Declined> {
    while done < length {
        copy_word(dst, from + done, at + done)?;
        done += 8;
    }
    Ok(())
}

#[inline(always)]
fn copy_word(dst: &mut [u8], from: usize, to: usize) -> Result<(), Declined> {
    let word = *dst
        .get(from..)
        .and_then(|rest| rest.first_chunk::<8>())
        .ok_or(Declined)?;
    *dst.get_mut(to..)
        .and_then(|rest| rest.first_chunk_mut::<8>())
        .ok_or(Declined)? = word;
    Ok(())
}

/// The symbols of a fixed block near the cap, one at a time, each given exactly the room it needs.
#[cold]
fn fixed_symbols_near_cap(bits: &mut BitReader<'_>, out: &mut Output<'_>) -> Result<(), Declined> {
    loop {
        if bits.count < 32 {
            bits.refill();
        }
        match bits.symbol() {
            Symbol::Literal(byte) => {
                out.make_room(1)?;
                *out.buffer.get_mut(out.at).ok_or(Declined)? = byte;
                out.at += 1;
            }
            Symbol::Match { length, distance } => {
                // RFC 1951 3.2.5: a distance reaches back within the window, here the message's own output.
                if distance > out.at - out.start || distance > MAX_DISTANCE {
                    return Err(Declined);
                }
                out.make_room(length)?;
                copy_match(out.buffer, out.at, distance, length)?;
                out.at += length;
            }
            Symbol::EndOfBlock => return Ok(()),
            Symbol::Invalid => return Err(Declined),
        }
    }
}

/// Copies `length` bytes from `distance` back to `at`, writing nothing past them; when the two overlap, bytes
/// written by the copy are read again further on, which is how a short distance repeats (RFC 1951 3.2.3).
fn copy_match(
    buffer: &mut [u8],
    at: usize,
    distance: usize,
    length: usize,
) -> Result<(), Declined> {
    let from = at - distance;
    let window = buffer.get_mut(from..at + length).ok_or(Declined)?;
    if distance >= length {
        window.copy_within(..length, distance);
    } else {
        for i in distance..distance + length {
            window[i] = window[i - distance];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::deflate::codec::{InflateError, MessageDecompressor};
    use crate::protocol::deflate::quick::QuickCompressor;
    use flate2::{Compress, Compression, FlushCompress};
    use proptest::prelude::*;

    /// What zlib-rs makes of `payload` as one whole message with an empty window and a limit of `cap`: a
    /// decompressor that keeps context never takes the fast path.
    fn zlib(payload: &[u8], cap: usize) -> Result<Vec<u8>, InflateError> {
        let mut out = Vec::new();
        MessageDecompressor::new(false, cap)
            .decompress_message(payload, &mut out)
            .map(|()| out)
    }

    fn fast(payload: &[u8], cap: usize) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let appended = inflate_fixed(payload, &mut out, cap)?;
        assert_eq!(appended, out.len());
        Some(out)
    }

    /// The property every stream must keep: accepted here means inflated exactly as zlib-rs does.
    fn agrees_with_zlib(payload: &[u8], cap: usize) -> Option<Vec<u8>> {
        let fast = fast(payload, cap);
        if let Some(text) = &fast {
            assert_eq!(
                zlib(payload, cap).as_ref(),
                Ok(text),
                "stream {payload:x?} cap {cap}"
            );
        }
        fast
    }

    /// `message` as `QuickCompressor` sends it, if that is smaller.
    fn quick_if_smaller(message: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        QuickCompressor::new(15).compress_if_smaller(message, &mut out)?;
        Some(out)
    }

    fn quick(message: &[u8]) -> Vec<u8> {
        quick_if_smaller(message).expect("compressible")
    }

    fn zlib_compressed(message: &[u8], level: u32) -> Vec<u8> {
        let mut compress = Compress::new(Compression::new(level), false);
        let mut out = Vec::with_capacity(message.len() * 2 + 64);
        compress
            .compress_vec(message, &mut out, FlushCompress::Sync)
            .unwrap();
        out.truncate(out.len() - FLUSH_TAIL.len());
        out
    }

    fn chat(seq: u32, content: &str) -> Vec<u8> {
        format!(
            r#"{{"type":"chat","room":"lobby","seq":{seq},"from":"alice","content":"{content}","timestamp":1795307457209}}"#
        )
        .into_bytes()
    }

    /// A DEFLATE stream written symbol by symbol, for streams no compressor would make.
    #[derive(Default)]
    struct StreamWriter {
        bytes: Vec<u8>,
        buffer: u64,
        count: u32,
    }

    impl StreamWriter {
        fn bits(&mut self, value: usize, bits: u8) -> &mut Self {
            self.buffer |= (value as u64) << self.count;
            self.count += u32::from(bits);
            while self.count >= 8 {
                self.bytes.push(self.buffer as u8);
                self.buffer >>= 8;
                self.count -= 8;
            }
            self
        }

        fn header(&mut self, last: bool, block_type: usize) -> &mut Self {
            self.bits(usize::from(last) | block_type << 1, 3)
        }

        fn symbol(&mut self, symbol: u16) -> &mut Self {
            let (code, bits) = fixed_code(symbol);
            self.bits(reversed(code, bits), bits)
        }

        fn stored(&mut self, last: bool, data: &[u8], nlen_right: bool) -> &mut Self {
            self.header(last, 0);
            if self.count > 0 {
                self.bits(0, (8 - self.count) as u8);
            }
            let nlen = if nlen_right { !data.len() } else { data.len() };
            self.bits(data.len() & 0xffff, 16).bits(nlen & 0xffff, 16);
            for &byte in data {
                self.bits(usize::from(byte), 8);
            }
            self
        }

        /// The sync flush's empty stored block with its `00 00 ff ff` removed, as RFC 7692 7.2.1 sends it.
        fn finish_as_sent(&mut self) -> Vec<u8> {
            self.header(false, 0);
            if self.count > 0 {
                self.bits(0, (8 - self.count) as u8);
            }
            self.bytes.clone()
        }

        fn finish_last(&mut self) -> Vec<u8> {
            if self.count > 0 {
                self.bits(0, (8 - self.count) as u8);
            }
            self.bytes.clone()
        }
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
            assert_eq!(
                agrees_with_zlib(example, 1024).as_deref(),
                Some(&b"Hello"[..])
            );
        }
    }

    #[test]
    fn a_match_into_an_earlier_message_is_declined() {
        // RFC 7692 7.2.3.2: the second "Hello" refers to the first, which this inflater never saw.
        assert_eq!(fast(&[0xf2, 0x00, 0x11, 0x00, 0x00], 1024), None);
    }

    #[test]
    fn quick_compressor_output_is_always_taken() {
        let messages = [
            chat(
                1,
                "Hello everyone, the meeting is at ten; the notes are in the other room.",
            ),
            chat(2, &"abc".repeat(200)),
            chat(3, &"z".repeat(5000)),
            vec![b'a'; MAX_OUTPUT],
        ];
        for message in messages {
            let compressed = quick(&message);
            assert_eq!(
                agrees_with_zlib(&compressed, 1 << 20).as_deref(),
                Some(&message[..])
            );
        }
    }

    #[test]
    fn dynamic_blocks_are_declined() {
        let message = chat(
            4,
            &"the quick brown fox jumps over the lazy dog ".repeat(40),
        );
        let compressed = zlib_compressed(&message, 9);
        // BTYPE 10 in the first header: zlib chose dynamic codes for this much text.
        assert_eq!(compressed[0] >> 1 & 3, 2);
        assert_eq!(fast(&compressed, 1 << 20), None);
        assert_eq!(zlib(&compressed, 1 << 20), Ok(message));
    }

    #[test]
    fn stored_blocks_from_zlib_level_zero_are_taken() {
        let message: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
        let compressed = zlib_compressed(&message, 0);
        assert_eq!(
            agrees_with_zlib(&compressed, 1 << 20).as_deref(),
            Some(&message[..])
        );
    }

    #[test]
    fn output_of_exactly_the_cap_is_taken_and_one_byte_more_declined() {
        let message = chat(5, &"x".repeat(300));
        let compressed = quick(&message);
        // The first call leaves the thread's scratch buffer longer than the second call's cap.
        assert_eq!(
            fast(&compressed, message.len()).as_deref(),
            Some(&message[..])
        );
        assert_eq!(fast(&compressed, message.len() - 1), None);
    }

    #[test]
    fn a_declined_message_leaves_the_output_as_it_was() {
        let compressed = quick(&chat(6, &"y".repeat(400)));
        let mut out = b"before".to_vec();
        assert_eq!(inflate_fixed(&compressed, &mut out, 100), None);
        assert_eq!(out, b"before");
        let taken = inflate_fixed(&compressed, &mut out, 1 << 20).unwrap();
        assert_eq!(out.len(), 6 + taken);
        assert!(out.starts_with(b"before"));
    }

    #[test]
    fn truncated_messages_are_declined() {
        let content = "a message cut short somewhere inside its last block; ".repeat(3);
        let compressed = quick(&chat(7, &content));
        for len in 0..compressed.len() {
            assert_eq!(fast(&compressed[..len], 1 << 20), None, "cut at {len}");
        }
    }

    #[test]
    fn longest_match_and_overlapping_copies_are_exact() {
        // A literal, then length 258 by code 285 and by code 284 with all five extra bits set, at distance 1.
        let stream = StreamWriter::default()
            .header(false, 1)
            .symbol(u16::from(b'q'))
            .symbol(285)
            .bits(0, 5)
            .symbol(284)
            .bits(31, 5)
            .bits(0, 5)
            .symbol(256)
            .finish_as_sent();
        let text = agrees_with_zlib(&stream, 1 << 20).expect("taken");
        assert_eq!(text, vec![b'q'; 1 + 258 + 258]);
    }

    #[test]
    fn overlapping_matches_copied_a_word_at_a_time_repeat_exactly() {
        for distance in 1..=20u16 {
            let text: Vec<u8> = (b'a'..).take(usize::from(distance)).collect();
            let mut writer = StreamWriter::default();
            writer.header(false, 1);
            for &byte in &text {
                writer.symbol(u16::from(byte));
            }
            // Length 258 (code 285) at `distance`, whose code and extra bits come from the RFC's table.
            let code = DISTANCE_BASE
                .iter()
                .rposition(|&base| base <= distance)
                .unwrap();
            let extra = usize::from(distance - DISTANCE_BASE[code]);
            writer
                .symbol(285)
                .bits(reversed(code as u16, 5), 5)
                .bits(extra, DISTANCE_EXTRA[code])
                .symbol(256);
            let stream = writer.finish_as_sent();
            let expected: Vec<u8> = text
                .iter()
                .copied()
                .cycle()
                .take(text.len() + 258)
                .collect();
            assert_eq!(
                agrees_with_zlib(&stream, 1 << 20),
                Some(expected),
                "distance {distance}"
            );
        }
    }

    #[test]
    fn invalid_codes_are_declined() {
        for symbol in [286, 287] {
            let stream = StreamWriter::default()
                .header(false, 1)
                .symbol(u16::from(b'a'))
                .symbol(symbol)
                .symbol(256)
                .finish_as_sent();
            assert_eq!(fast(&stream, 1024), None, "symbol {symbol}");
        }
        for distance_code in [30, 31] {
            let stream = StreamWriter::default()
                .header(false, 1)
                .symbol(u16::from(b'a'))
                .symbol(257)
                .bits(reversed(distance_code, 5), 5)
                .symbol(256)
                .finish_as_sent();
            assert_eq!(fast(&stream, 1024), None, "distance {distance_code}");
        }
    }

    #[test]
    fn a_stored_block_whose_nlen_is_wrong_is_declined() {
        let stream = StreamWriter::default()
            .stored(false, b"Hello", false)
            .finish_as_sent();
        assert_eq!(fast(&stream, 1024), None);
        let stream = StreamWriter::default()
            .stored(false, b"Hello", true)
            .finish_as_sent();
        assert_eq!(
            agrees_with_zlib(&stream, 1024).as_deref(),
            Some(&b"Hello"[..])
        );
    }

    #[test]
    fn bytes_after_a_final_block_are_ignored() {
        let mut stream = StreamWriter::default()
            .header(true, 1)
            .symbol(u16::from(b'h'))
            .symbol(u16::from(b'i'))
            .symbol(256)
            .finish_last();
        stream.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(agrees_with_zlib(&stream, 1024).as_deref(), Some(&b"hi"[..]));
    }

    #[test]
    fn the_farthest_distance_a_message_here_can_reach_is_exact() {
        let mut writer = StreamWriter::default();
        writer
            .stored(false, &vec![b's'; 30_000], true)
            .header(false, 1);
        // Distance code 29: 24,577 plus 13 extra bits; 30,000 reaches the message's first byte.
        writer
            .symbol(u16::from(b't'))
            .symbol(257)
            .bits(reversed(29, 5), 5)
            .bits(30_001 - 24_577, 13)
            .symbol(256);
        let stream = writer.finish_as_sent();
        let text = agrees_with_zlib(&stream, 1 << 20).expect("taken");
        assert_eq!(text.len(), 30_004);
        assert_eq!(&text[30_000..], b"tsss");
    }

    #[test]
    fn a_distance_before_the_message_is_declined() {
        let early = StreamWriter::default()
            .header(false, 1)
            .symbol(u16::from(b'a'))
            .symbol(257)
            .bits(reversed(1, 5), 5)
            .symbol(256)
            .finish_as_sent();
        assert_eq!(fast(&early, 1024), None);
    }

    #[test]
    fn a_message_longer_than_the_scratch_buffer_is_left_to_zlib() {
        let message = vec![b'b'; MAX_OUTPUT + 1];
        let compressed = quick(&message);
        assert_eq!(fast(&compressed, 1 << 20), None);
        assert_eq!(zlib(&compressed, 1 << 20), Ok(message));
    }

    /// One piece of a generated block.
    #[derive(Clone, Debug)]
    enum Piece {
        Literal(u8),
        /// A length symbol 257..=287 with extra bits, then a distance symbol 0..=31 with extra bits.
        Match(u16, usize, usize, usize),
        End,
    }

    fn piece() -> impl Strategy<Value = Piece> {
        prop_oneof![
            6 => any::<u8>().prop_map(Piece::Literal),
            3 => (257u16..288, 0usize..32, 0usize..32, 0usize..8192)
                .prop_map(|(l, le, d, de)| Piece::Match(l, le, d, de)),
            1 => Just(Piece::End),
        ]
    }

    /// A stream of fixed and stored blocks built from generated pieces, valid or not.
    fn written(blocks: &[(bool, Vec<Piece>)], stored: &[u8], last: bool) -> Vec<u8> {
        let mut writer = StreamWriter::default();
        for (as_stored, pieces) in blocks {
            if *as_stored {
                writer.stored(false, stored, true);
                continue;
            }
            writer.header(false, 1);
            for piece in pieces {
                match *piece {
                    Piece::Literal(byte) => {
                        writer.symbol(u16::from(byte));
                    }
                    Piece::Match(length, length_extra, distance, distance_extra) => {
                        let extra = LENGTH_EXTRA
                            .get(usize::from(length) - 257)
                            .copied()
                            .unwrap_or(0);
                        writer
                            .symbol(length)
                            .bits(length_extra & ((1 << extra) - 1), extra);
                        let extra = DISTANCE_EXTRA.get(distance).copied().unwrap_or(0);
                        writer
                            .bits(reversed(distance as u16, 5), 5)
                            .bits(distance_extra & ((1 << extra) - 1), extra);
                    }
                    Piece::End => break,
                }
            }
            writer.symbol(256);
        }
        if last {
            writer.header(true, 1).symbol(256).finish_last()
        } else {
            writer.finish_as_sent()
        }
    }

    /// Chat-like text from a small vocabulary, so that most messages repeat enough to compress.
    const WORDS: &str =
        "(the |quick |brown |fox |jumps |over |a |lazy |dog |again |[a-z]{1,6} |[!-~]){0,150}";

    proptest! {
        #[test]
        fn generated_streams_are_taken_only_as_zlib_inflates_them(
            blocks in proptest::collection::vec(
                (proptest::bool::weighted(0.2), proptest::collection::vec(piece(), 0..60)),
                1..4,
            ),
            stored in proptest::collection::vec(any::<u8>(), 0..40),
            last in any::<bool>(),
            cap in prop_oneof![Just(1usize << 20), 0usize..600],
            cut in proptest::option::of(any::<proptest::sample::Index>()),
        ) {
            let mut stream = written(&blocks, &stored, last);
            if let Some(cut) = cut {
                stream.truncate(cut.index(stream.len() + 1));
            }
            agrees_with_zlib(&stream, cap);
        }

        #[test]
        fn damaged_compressor_output_is_taken_only_as_zlib_inflates_it(
            content in WORDS,
            flips in proptest::collection::vec((any::<proptest::sample::Index>(), 0u8..8), 0..4),
        ) {
            let stream = quick_if_smaller(&chat(9, &content));
            prop_assume!(stream.is_some());
            let mut stream = stream.unwrap_or_default();
            for (at, bit) in flips {
                let at = at.index(stream.len());
                stream[at] ^= 1 << bit;
            }
            agrees_with_zlib(&stream, 1 << 20);
        }

        #[test]
        fn every_quick_compressed_message_is_taken(content in WORDS, seq in any::<u32>()) {
            let message = chat(seq, &content);
            let stream = quick_if_smaller(&message);
            prop_assume!(stream.is_some());
            let stream = stream.unwrap_or_default();
            prop_assert_eq!(agrees_with_zlib(&stream, 1 << 20), Some(message));
        }

        #[test]
        fn short_zlib_streams_agree_whatever_their_blocks(
            message in proptest::collection::vec(any::<u8>(), 0..400),
            level in 0u32..10,
        ) {
            let stream = zlib_compressed(&message, level);
            if let Some(text) = agrees_with_zlib(&stream, 1 << 20) {
                prop_assert_eq!(text, message);
            }
        }
    }
}
