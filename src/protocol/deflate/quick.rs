//! A small, fast DEFLATE compressor for short messages compressed each on its own (no context takeover): the
//! one a server shares between every member of a room.
//!
//! Owns greedy LZ77 matching over a hash table that never needs clearing (every position entered, one in four
//! probed, a match extended back over the rest), and fixed Huffman coding (RFC 1951 3.2.6), ASCII literals eight
//! at a time. zlib (and zlib-rs) must clear a 128 KiB hash table to forget one message before the next, which costs
//! more than compressing a chat message; here every table entry carries the absolute position it was written at,
//! and an entry from before the current message is simply not a candidate. Fixed codes need no tree in the
//! output, which suits messages of a few hundred bytes. It must not be used where a peer keeps context between
//! messages: `codec::MessageCompressor` (zlib-rs) does that, with dynamic codes and better ratios on long data.

use super::tables::{
    fixed_code, reversed, DISTANCE_BASE, DISTANCE_EXTRA, LENGTH_BASE, LENGTH_EXTRA,
};

/// log2 of the hash table's entries.
const HASH_BITS: u32 = 12;
/// The hash table's entries.
const TABLE_SIZE: usize = 1 << HASH_BITS;
/// The shortest match DEFLATE can code.
const MIN_MATCH: usize = 3;
/// The longest match DEFLATE can code.
const MAX_MATCH: usize = 258;

/// Compresses messages one at a time into raw DEFLATE data that ends the way RFC 7692 7.2.1 wants it: as if
/// flushed with Z_SYNC_FLUSH and with the trailing `00 00 ff ff` removed.
#[derive(Debug)]
pub struct QuickCompressor {
    /// For each hash of four bytes, the absolute position (see `base`) where they were last seen.
    table: Box<[u32; TABLE_SIZE]>,
    /// The absolute position of the current message's first byte: positions only grow, so entries below it
    /// belong to earlier messages and are ignored.
    base: u32,
    /// The absolute position just past the current message: where the next one starts.
    next_base: u32,
    /// The farthest back any match of the last message reached (for tests of the window rule).
    farthest: usize,
    /// The longest distance a match may reach back: 2^window_bits (RFC 7692 7.1.2.1).
    max_distance: usize,
}

impl QuickCompressor {
    /// A compressor whose matches reach back at most `2^window_bits` bytes (8..=15).
    pub fn new(window_bits: u8) -> Self {
        QuickCompressor {
            table: Box::new([0; TABLE_SIZE]),
            base: 1,
            next_base: 1,
            farthest: 0,
            max_distance: 1 << window_bits.clamp(8, 15),
        }
    }

    /// Appends the compressed form of `payload` to `out` if it is shorter than `payload`, and returns its length;
    /// `None` leaves `out` as it was (the caller sends the message uncompressed).
    pub fn compress_if_smaller(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        let start = out.len();
        self.begin(payload.len());
        out.resize(start + output_bound(payload.len()), 0);
        let mut bits = BitWriter::new(&mut out[start..]);
        // RFC 1951 3.2.3: BFINAL = 0 (the message is not the end of a stream), BTYPE = 01 (fixed codes).
        bits.put(0b010, 3);
        let search = Search {
            table: &mut self.table,
            base: self.base,
            max_distance: self.max_distance,
        };
        // A message no longer than the window cannot reach past it: its search skips that test.
        self.farthest = if payload.len() <= self.max_distance {
            search.run::<false>(payload, &mut bits)
        } else {
            search.run::<true>(payload, &mut bits)
        };
        bits.end_of_block();
        // The empty stored block of a sync flush: its three header bits, then zeros to the byte boundary; its
        // LEN and NLEN (`00 00 ff ff`) are what RFC 7692 7.2.1 removes.
        bits.put(0, 3);
        let len = bits.finish();
        if len >= payload.len() {
            out.truncate(start);
            return None;
        }
        out.truncate(start + len);
        Some(len)
    }

    /// Starts a message of `len` bytes: its positions begin past every position used so far. When they would
    /// overflow, the table is cleared once (every 4 GiB of input).
    fn begin(&mut self, len: usize) {
        self.farthest = 0;
        let end = u64::from(self.next_base) + len as u64 + 1;
        if u32::try_from(end).is_err() {
            self.table.fill(0);
            self.next_base = 1;
        }
        self.base = self.next_base;
        self.next_base = self.base + len as u32 + 1;
    }
}

/// Positions from one probe of the search to the next. Every position is entered in the hash table, but only one
/// in `PROBE_STEP` looks up a match there; a match found is extended back over the positions not probed, so any
/// repeat of `PROBE_STEP + 3` bytes or more is still found whole. One 8-byte load covers the positions entered
/// together, so at most 5.
const PROBE_STEP: usize = 4;

/// One message's greedy LZ77 search over the compressor's hash table, writing literals and matches as it goes.
struct Search<'t> {
    table: &'t mut [u32; TABLE_SIZE],
    /// The absolute position of the message's first byte (see `QuickCompressor::base`).
    base: u32,
    /// The longest distance a match may reach back (RFC 7692 7.1.2.1).
    max_distance: usize,
}

impl Search<'_> {
    /// Codes all of `payload` into `bits` as literals and matches, and returns the farthest back a match reached.
    /// `WINDOWED`: the message is longer than `max_distance`, so a candidate may lie beyond the window.
    fn run<const WINDOWED: bool>(self, payload: &[u8], bits: &mut BitWriter<'_>) -> usize {
        let Search {
            table,
            base,
            max_distance,
        } = self;
        let mut farthest = 0;
        let mut i = 0;
        let mut literals_from = 0;
        // The eight bytes it hashes at i: four for each position it enters, the last of them at i + PROBE_STEP - 1.
        let last = payload.len().wrapping_sub(8);
        while i <= last && payload.len() >= 8 {
            let Some(&eight) = payload.get(i..).and_then(|rest| rest.first_chunk::<8>()) else {
                break;
            };
            let bytes = u64::from_le_bytes(eight);
            let word = bytes as u32;
            let position = base.wrapping_add(i as u32);
            let candidate = std::mem::replace(&mut table[slot(word)], position);
            for step in 1..PROBE_STEP {
                table[slot((bytes >> (8 * step)) as u32)] = position.wrapping_add(step as u32);
            }
            // Entries from earlier messages lie further back than the message start, and so fail this test.
            let distance = position.wrapping_sub(candidate) as usize;
            if distance.wrapping_sub(1) >= i
                || (WINDOWED && distance > max_distance)
                || read_u32(payload, i - distance) != word
            {
                // After a run of misses, look at fewer positions (as LZ4 does): text that finds no matches is
                // not searched at every probe.
                i += PROBE_STEP + ((i - literals_from) >> 6);
                continue;
            }
            // The positions just before were entered but not probed: the match may start there.
            let mut start = i;
            while start > literals_from
                && start + PROBE_STEP > i + 1
                && start > distance
                && payload.get(start - 1) == payload.get(start - 1 - distance)
            {
                start -= 1;
            }
            let verified = i + 4 - start;
            let length = verified
                + common_prefix(
                    payload.get(start - distance + verified..).unwrap_or(&[]),
                    payload.get(i + 4..).unwrap_or(&[]),
                    MAX_MATCH - verified,
                );
            bits.literals(payload, literals_from, start);
            bits.copy(length, distance);
            farthest = farthest.max(distance);
            // Remember a few positions inside the match, so that the next repeat can find it from there.
            let match_end = (start + length).min(payload.len().saturating_sub(MIN_MATCH));
            let mut j = i + PROBE_STEP;
            while j < match_end {
                table[slot(read_u32(payload, j))] = base.wrapping_add(j as u32);
                j += 4;
            }
            i = start + length;
            literals_from = i;
            if bits.len() >= payload.len() {
                break;
            }
        }
        bits.literals(payload, literals_from, payload.len());
        farthest
    }
}

/// Room for the compressed form of `len` bytes, whatever they are: at most 9 bits a byte (a literal of the
/// second fixed range; a match of 4+ bytes takes at most 31 bits), the block header, end of block and the empty
/// stored block's header and padding, and the 8 bytes `BitWriter` stores at once past what it has written.
fn output_bound(len: usize) -> usize {
    len + len / 8 + 16
}

/// The four bytes at `i`, little-endian; 0 past the end (never a match: callers check lengths first).
#[inline]
fn read_u32(data: &[u8], i: usize) -> u32 {
    data.get(i..i + 4)
        .and_then(|bytes| bytes.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// The hash table slot of four bytes.
#[inline]
fn slot(word: u32) -> usize {
    (word.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize & (TABLE_SIZE - 1)
}

/// How many leading bytes `a` and `b` share, at most `max`: eight bytes compared at once, the first that differs
/// found from the lowest set bit of their XOR.
#[inline]
fn common_prefix(a: &[u8], b: &[u8], max: usize) -> usize {
    let limit = max.min(a.len()).min(b.len());
    let (a, b) = (&a[..limit], &b[..limit]);
    let mut same = 0;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let difference = le_u64(x) ^ le_u64(y);
        if difference != 0 {
            return same + (difference.trailing_zeros() / 8) as usize;
        }
        same += 8;
    }
    same + a[same..]
        .iter()
        .zip(&b[same..])
        .take_while(|(x, y)| x == y)
        .count()
}

/// Eight bytes as a little-endian number (callers pass exactly eight).
#[inline]
fn le_u64(bytes: &[u8]) -> u64 {
    <[u8; 8]>::try_from(bytes).map_or(0, u64::from_le_bytes)
}

/// RFC 1951 3.2.6: the fixed literal/length codes, bit-reversed for writing, and their lengths, by symbol.
static FIXED_CODES: [(u16, u8); 288] = {
    let mut table = [(0u16, 0u8); 288];
    let mut symbol = 0;
    while symbol < 288 {
        let (code, length) = fixed_code(symbol);
        table[symbol as usize] = (reversed(code, length) as u16, length);
        symbol += 1;
    }
    table
};

/// For each match length 3..=258, the index of its length code (its symbol is 257 + index).
static LENGTH_INDEX: [u8; 259] = {
    let mut table = [0u8; 259];
    let mut index = 0;
    let mut length = 3;
    while length <= 258 {
        while index + 1 < 29 && LENGTH_BASE[index + 1] as usize <= length {
            index += 1;
        }
        table[length] = index as u8;
        length += 1;
    }
    table
};

/// For each match length 3..=258, the bits that code it, ready to write: the fixed code of its length symbol,
/// then its extra bits (RFC 1951 3.2.5); and how many bits that is (at most 8 + 5).
static LENGTH_CODES: [(u16, u8); 259] = {
    let mut table = [(0u16, 0u8); 259];
    let mut length = 3;
    while length <= 258 {
        let index = LENGTH_INDEX[length] as usize;
        let (code, code_bits) = FIXED_CODES[257 + index];
        let extra = (length - LENGTH_BASE[index] as usize) as u16;
        table[length] = (code | extra << code_bits, code_bits + LENGTH_EXTRA[index]);
        length += 1;
    }
    table
};

/// The five-bit distance codes 0..=29 (RFC 1951 3.2.6), bit-reversed for writing.
static DISTANCE_CODES: [u8; 30] = {
    let mut table = [0u8; 30];
    let mut index = 0;
    while index < 30 {
        table[index] = reversed(index as u16, 5) as u8;
        index += 1;
    }
    table
};

/// The index of the distance code for `distance` (1..=32768).
#[inline]
fn distance_index(distance: usize) -> usize {
    // Codes 0..=3 are the distances 1..=4; from there every two codes double the range (RFC 1951 3.2.5).
    if distance <= 4 {
        return distance - 1;
    }
    let d = distance - 1;
    let top = usize::BITS - 1 - d.leading_zeros();
    (2 * top as usize) + ((d >> (top - 1)) & 1)
}

/// Each byte of `x` with its bits in reverse order: Huffman codes go out most significant bit first
/// (RFC 1951 3.1.1), eight 8-bit codes at once.
#[inline(always)]
fn reverse_each_byte(x: u64) -> u64 {
    let x = (x >> 4) & 0x0F0F_0F0F_0F0F_0F0F | (x & 0x0F0F_0F0F_0F0F_0F0F) << 4;
    let x = (x >> 2) & 0x3333_3333_3333_3333 | (x & 0x3333_3333_3333_3333) << 2;
    (x >> 1) & 0x5555_5555_5555_5555 | (x & 0x5555_5555_5555_5555) << 1
}

/// Writes DEFLATE's bit stream: fields least significant bit first, Huffman codes most significant bit first
/// (RFC 1951 3.1.1), into a buffer sized beforehand (`output_bound`). Bits gather in a 64-bit word whose whole
/// bytes are stored eight at a time after each symbol, so fewer than 8 bits wait between symbols.
struct BitWriter<'a> {
    out: &'a mut [u8],
    /// Bytes completed so far.
    written: usize,
    pending: u64,
    /// Bits waiting in `pending` (below 8 between symbols, below 64 always).
    count: u32,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut [u8]) -> Self {
        BitWriter {
            out,
            written: 0,
            pending: 0,
            count: 0,
        }
    }

    /// Bytes written so far (without the bits still pending).
    fn len(&self) -> usize {
        self.written
    }

    /// Appends the low `count` bits of `value`, least significant first; with what waits, at most 64.
    #[inline]
    fn put(&mut self, value: u64, count: u32) {
        self.pending |= value << self.count;
        self.count += count;
    }

    /// Stores the pending bits' whole bytes; fewer than 8 bits stay pending.
    #[inline]
    fn flush(&mut self) {
        // `output_bound` leaves room for these 8 bytes past everything the message can produce.
        self.out[self.written..self.written + 8].copy_from_slice(&self.pending.to_le_bytes());
        let bytes = self.count / 8;
        self.written += bytes as usize;
        self.pending >>= bytes * 8;
        self.count -= bytes * 8;
    }

    /// The fixed codes of `payload[from..to]` as literals (RFC 1951 3.2.6), eight at a time where they are
    /// ASCII.
    #[inline(always)]
    fn literals(&mut self, payload: &[u8], from: usize, to: usize) {
        let mut i = from;
        while i < to {
            // Eight bytes are read even for a shorter run; only the message's last few cannot be, and those go
            // one by one.
            let Some(&eight) = payload.get(i..).and_then(|rest| rest.first_chunk::<8>()) else {
                self.literal_bytes(payload.get(i..to).unwrap_or(&[]));
                return;
            };
            let take = (to - i).min(8);
            let mask = u64::MAX >> (64 - 8 * take);
            let bytes = u64::from_le_bytes(eight) & mask;
            if bytes & 0x8080_8080_8080_8080 != 0 {
                self.literal_bytes(payload.get(i..i + take).unwrap_or(&[]));
            } else {
                // RFC 1951 3.2.6: the bytes 0..=143 have the 8-bit codes 0x30 + byte. Below 0x80 the eight sums
                // carry into no neighbour.
                let codes = reverse_each_byte(bytes + 0x3030_3030_3030_3030) & mask;
                if take == 8 {
                    self.put_64(codes);
                } else {
                    self.put(codes, 8 * take as u32);
                    self.flush();
                }
            }
            i += take;
        }
    }

    /// Appends 64 bits whole: the pending bits and the first of them fill eight bytes, the rest stay pending.
    #[inline]
    fn put_64(&mut self, value: u64) {
        let filled = self.pending | value << self.count;
        // `output_bound` leaves room for 8 bytes past everything the message can produce.
        if let Some(room) = self.out.get_mut(self.written..self.written + 8) {
            room.copy_from_slice(&filled.to_le_bytes());
        }
        self.written += 8;
        // The bits of `value` that did not fit (none when nothing was pending; a shift by 64 is not allowed).
        self.pending = (value >> 1) >> (63 - self.count);
    }

    /// The fixed codes of `bytes` as literals, one at a time (RFC 1951 3.2.6).
    #[inline]
    fn literal_bytes(&mut self, bytes: &[u8]) {
        // Four literals of at most 9 bits fit beside the 7 bits that may wait.
        let mut quads = bytes.chunks_exact(4);
        for quad in &mut quads {
            for &byte in quad {
                let (code, length) = FIXED_CODES[usize::from(byte)];
                self.put(u64::from(code), u32::from(length));
            }
            self.flush();
        }
        for &byte in quads.remainder() {
            let (code, length) = FIXED_CODES[usize::from(byte)];
            self.put(u64::from(code), u32::from(length));
        }
        self.flush();
    }

    fn end_of_block(&mut self) {
        let (code, length) = FIXED_CODES[256];
        self.put(u64::from(code), u32::from(length));
        self.flush();
    }

    /// A match of `length` (3..=258) bytes `distance` (1..=32768) back: at most 31 bits.
    #[inline]
    fn copy(&mut self, length: usize, distance: usize) {
        let (code, bits) = LENGTH_CODES[length];
        self.put(u64::from(code), u32::from(bits));
        let index = distance_index(distance);
        self.put(u64::from(DISTANCE_CODES[index]), 5);
        self.put(
            (distance - usize::from(DISTANCE_BASE[index])) as u64,
            u32::from(DISTANCE_EXTRA[index]),
        );
        self.flush();
    }

    /// Pads with zero bits to the next byte boundary, stores what is pending, and returns the bytes written.
    fn finish(mut self) -> usize {
        self.count = self.count.next_multiple_of(8);
        self.flush();
        self.written
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::deflate::codec::MessageDecompressor;
    use proptest::prelude::*;

    /// Inflates as a peer would: the data, then `00 00 ff ff` (RFC 7692 7.2.2).
    fn inflate(compressed: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        MessageDecompressor::new(true, 1 << 20)
            .decompress_message(compressed, &mut out)
            .expect("valid DEFLATE");
        out
    }

    fn chat(seq: u32, content: &str) -> Vec<u8> {
        format!(
            r#"{{"type":"chat","room":"lobby","seq":{seq},"from":"alice","content":"{content}","timestamp":1795307457209}}"#
        )
        .into_bytes()
    }

    #[test]
    fn a_chat_message_round_trips_and_is_smaller() {
        let mut compressor = QuickCompressor::new(15);
        let message = chat(
            12,
            "Hello everyone, the meeting is at ten; the notes of the meeting are in the other room.",
        );
        let mut out = Vec::new();
        let len = compressor
            .compress_if_smaller(&message, &mut out)
            .expect("smaller");
        assert_eq!(len, out.len());
        assert!(len < message.len(), "{len} vs {}", message.len());
        assert_eq!(inflate(&out), message);
    }

    #[test]
    fn messages_are_independent_whatever_came_before() {
        let mut compressor = QuickCompressor::new(15);
        let first = chat(1, "repeat repeat repeat repeat repeat repeat");
        let second = chat(2, "repeat repeat repeat repeat repeat repeat");
        let mut out = Vec::new();
        compressor.compress_if_smaller(&first, &mut out).unwrap();
        let mut alone = Vec::new();
        compressor.compress_if_smaller(&second, &mut alone).unwrap();
        // A peer that never saw the first message, with a fresh window, inflates the second.
        assert_eq!(inflate(&alone), second);
    }

    #[test]
    fn incompressible_data_is_refused_and_leaves_the_output_untouched() {
        let mut compressor = QuickCompressor::new(15);
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let noise: Vec<u8> = (0..300)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect();
        let mut out = b"kept".to_vec();
        assert_eq!(compressor.compress_if_smaller(&noise, &mut out), None);
        assert_eq!(out, b"kept");
        assert_eq!(compressor.compress_if_smaller(b"", &mut out), None);
        assert_eq!(compressor.compress_if_smaller(b"ab", &mut out), None);
    }

    #[test]
    fn matches_never_reach_further_back_than_the_window() {
        // The same 60 bytes 600 bytes apart, the filler between them unmatchable: a 512-byte window may not
        // match them, a 32 KiB one does.
        let block: Vec<u8> = (0..60u8).map(|i| b'a' + i % 26).collect();
        let mut message = block.clone();
        message.extend((0..600u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 0x80));
        message.extend(&block);
        let mut narrow = QuickCompressor::new(9);
        let mut out = Vec::new();
        let _ = narrow.compress_if_smaller(&message, &mut out);
        assert!(narrow.farthest <= 512, "reached {} back", narrow.farthest);
        let mut wide = QuickCompressor::new(15);
        let mut out = Vec::new();
        let _ = wide.compress_if_smaller(&message, &mut out);
        assert!(wide.farthest > 600, "reached {} back", wide.farthest);
    }

    #[test]
    fn positions_overflowing_start_over_with_a_clean_table() {
        let mut compressor = QuickCompressor::new(15);
        compressor.next_base = u32::MAX - 10;
        let message = chat(7, "overflow overflow overflow overflow");
        for _ in 0..3 {
            let mut out = Vec::new();
            compressor.compress_if_smaller(&message, &mut out).unwrap();
            assert_eq!(inflate(&out), message);
        }
    }

    #[test]
    fn round_trips_through_many_shapes_and_lengths() {
        let mut compressor = QuickCompressor::new(15);
        let mut state = 0x2545_f491_u64;
        for case in 0..3_000u32 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let len = (state >> 35) as usize % 3_000;
            let alphabet = 1 + (state >> 20) as usize % 40;
            let message: Vec<u8> = (0..len)
                .map(|i| {
                    let x = (i as u64).wrapping_mul(state | 1) >> 7;
                    if x % 5 == 0 {
                        b"the quick brown fox "[i % 20]
                    } else {
                        (x % alphabet as u64) as u8 + b' '
                    }
                })
                .collect();
            let mut out = vec![0xEE; case as usize % 3];
            let before = out.len();
            match compressor.compress_if_smaller(&message, &mut out) {
                Some(len) => {
                    assert_eq!(out.len(), before + len);
                    assert!(len < message.len());
                    assert_eq!(inflate(&out[before..]), message, "case {case}");
                }
                None => assert_eq!(out.len(), before),
            }
        }
    }

    #[test]
    fn long_runs_use_the_longest_matches() {
        let mut compressor = QuickCompressor::new(15);
        let message = vec![b'z'; 5_000];
        let mut out = Vec::new();
        let len = compressor.compress_if_smaller(&message, &mut out).unwrap();
        assert!(len < 100, "{len} bytes for 5,000 z");
        assert_eq!(inflate(&out), message);
    }

    #[test]
    fn distance_codes_follow_the_rfc_table() {
        for distance in 1..=32_768usize {
            let expected = DISTANCE_BASE.partition_point(|&base| usize::from(base) <= distance) - 1;
            assert_eq!(distance_index(distance), expected, "distance {distance}");
        }
        for (length, &index) in LENGTH_INDEX.iter().enumerate().skip(3) {
            let expected = LENGTH_BASE.partition_point(|&base| usize::from(base) <= length) - 1;
            assert_eq!(usize::from(index), expected, "length {length}");
        }
    }

    /// `len` printable bytes in which no four in a row repeat (consecutive pairs of a base-94 counter).
    fn unrepeated(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| {
                let n = i / 2 + seed * 997;
                let digit = if i % 2 == 0 { n / 94 } else { n };
                b'!' + (digit % 94) as u8
            })
            .collect()
    }

    #[test]
    fn a_repeat_starting_between_probes_is_matched_whole() {
        for offset in 0..2 * PROBE_STEP {
            let block = unrepeated(24, 50);
            let mut message = unrepeated(offset, 7);
            message.extend(&block);
            message.extend(&block);
            let mut compressor = QuickCompressor::new(15);
            let mut out = Vec::new();
            let len = compressor.compress_if_smaller(&message, &mut out).unwrap();
            assert_eq!(inflate(&out), message);
            // 8 bits for each literal before the repeat, at most 20 for one match covering it all, the block
            // header, end of block and the flush's 3 bits: any byte of the repeat sent as a literal costs more.
            let most = (3 + 8 * (offset + block.len()) + 20 + 7 + 3).div_ceil(8);
            assert!(len <= most, "offset {offset}: {len} bytes, at most {most}");
        }
    }

    #[test]
    fn a_match_reaches_exactly_the_window_and_no_further() {
        for (gap, reaches) in [(256 - 40, true), (256 - 40 + 1, false)] {
            let block = unrepeated(40, 3);
            let mut message = block.clone();
            message.extend(unrepeated(gap, 11).iter().map(|byte| byte | 0x80));
            message.extend(&block);
            let mut compressor = QuickCompressor::new(8);
            let mut out = Vec::new();
            if compressor.compress_if_smaller(&message, &mut out).is_some() {
                assert_eq!(inflate(&out), message);
            }
            assert!(
                compressor.farthest <= 256,
                "reached {} back",
                compressor.farthest
            );
            assert_eq!(compressor.farthest == 256, reaches, "gap {gap}");
        }
    }

    #[test]
    fn repeats_after_a_long_stretch_without_matches_are_still_found() {
        // Past 64 bytes without a match the search probes fewer positions; the repeats after it still match.
        let mut message = unrepeated(700, 1);
        let tail = b"the same words, the same words, the same words, the same words".repeat(10);
        message.extend(&tail);
        let mut compressor = QuickCompressor::new(15);
        let mut out = Vec::new();
        let len = compressor.compress_if_smaller(&message, &mut out).unwrap();
        assert_eq!(inflate(&out), message);
        assert!(len < 700 + tail.len() / 4, "{len} bytes");
    }

    #[test]
    fn literals_eight_at_a_time_are_the_bits_of_literals_one_at_a_time() {
        let payload: Vec<u8> = (0..96u32)
            .map(|i| match i % 13 {
                0 => 0x80 + i as u8,
                5 => 0xFF,
                _ => b' ' + (i * 7 % 90) as u8,
            })
            .collect();
        for from in 0..payload.len() {
            for to in from..payload.len().min(from + 30) {
                for pending in [0u32, 3, 7] {
                    let mut fast = vec![0; 64];
                    let mut slow = vec![0; 64];
                    let mut fast_bits = BitWriter::new(&mut fast);
                    let mut slow_bits = BitWriter::new(&mut slow);
                    fast_bits.put(0b101, pending);
                    slow_bits.put(0b101, pending);
                    fast_bits.literals(&payload, from, to);
                    slow_bits.literal_bytes(&payload[from..to]);
                    let (fast_len, slow_len) = (fast_bits.finish(), slow_bits.finish());
                    assert_eq!(fast_len, slow_len, "{from}..{to}");
                    assert_eq!(
                        fast[..fast_len],
                        slow[..slow_len],
                        "{from}..{to} after {pending} bits"
                    );
                }
            }
        }
    }

    /// A message built of pieces of any bytes (so literals of both fixed code lengths), each repeated a few
    /// times (so matches of many lengths and distances), sometimes a long run of one byte.
    fn pieced_message() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            4 => (proptest::collection::vec(any::<u8>(), 1..24), 1..5usize),
            2 => (proptest::collection::vec(b' '..b'~', 1..12), 1..8usize),
            1 => (proptest::collection::vec(any::<u8>(), 1..2), 100..700usize),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|pieces| {
            pieces
                .into_iter()
                .flat_map(|(bytes, times)| bytes.repeat(times))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn any_message_inflates_back_or_is_refused_untouched(
            messages in proptest::collection::vec(pieced_message(), 1..4),
            window_bits in 8u8..=15,
        ) {
            let mut compressor = QuickCompressor::new(window_bits);
            for message in &messages {
                let mut out = vec![0xAB];
                match compressor.compress_if_smaller(message, &mut out) {
                    Some(len) => {
                        prop_assert_eq!(out.len(), 1 + len);
                        prop_assert!(len < message.len());
                        prop_assert_eq!(out[0], 0xAB);
                        prop_assert_eq!(&inflate(&out[1..]), message);
                        prop_assert!(compressor.farthest <= 1 << window_bits);
                    }
                    None => prop_assert_eq!(out, vec![0xAB]),
                }
            }
        }
    }
}
