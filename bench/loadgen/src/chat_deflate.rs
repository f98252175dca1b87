//! Compressing the fan-out's chat messages for sending (RFC 7692 7.2.1) at a fraction of the cost of compressing
//! each one whole: a fan-out message is the chat envelope, a 34-byte head that changes with every message (the
//! send time, sender and sequence number) and a padding stretch cut from a fixed text, and there are only so many
//! stretches. Each stretch is compressed once, when the run starts; a message is then its head coded as literals
//! followed by the bits of its stretch.
//!
//! Owns that splicing and the DEFLATE coding it needs: greedy LZ77 inside each stretch, the way roomcast's
//! `QuickCompressor` searches (a hash of four bytes, fewer positions looked at after a run of misses), and fixed
//! Huffman codes (RFC 1951 3.2.6), so what the server inflates has the shape of what that compressor would have
//! sent: about as many literals and matches, a few more literals in the head (a whole-message compressor may match
//! inside it). Every message is one fixed-code block ended as if flushed with Z_SYNC_FLUSH, the trailing
//! `00 00 ff ff` removed (RFC 7692 7.2.1). It knows nothing of sockets or frames.

use crate::client::{CHAT_PREFIX, CHAT_SUFFIX};

/// Bytes of a message's head: the content's marker, stamp and phase.
const HEAD_LEN: usize = crate::CONTENT_HEAD;

/// Bytes coded as literals before the stretch: the envelope's start and the head.
const LITERALS_BEFORE: usize = CHAT_PREFIX.len() + HEAD_LEN;

/// log2 of the match-finding hash table's entries.
const HASH_BITS: u32 = 12;
/// The shortest match DEFLATE can code.
const MIN_MATCH: usize = 3;
/// The longest match DEFLATE can code.
const MAX_MATCH: usize = 258;
/// How far apart `QuickCompressor` looks up a match (its own `PROBE_STEP`).
const PROBE_STEP: usize = 4;

/// Every padding stretch of a run, compressed; a message's head is spliced in front of one.
#[derive(Debug)]
pub struct ChatDeflater {
    /// For each stretch: the fixed-code bits of the stretch, the envelope's end, the end of block and the empty
    /// stored block's header, starting at bit 3 of the first byte (its low 3 bits are left 0 for the head's last
    /// bits), padded with zeros to a whole byte.
    stretches: Vec<Vec<u8>>,
    /// Each stretch's length in bytes, to check a message against the stretch it names.
    stretch_lens: Vec<usize>,
}

impl ChatDeflater {
    /// Compresses every stretch once, with matches reaching back at most `2^window_bits` bytes (8..=15; RFC 7692
    /// 7.1.2.2: the client window the server agreed to).
    pub fn new<'a>(stretches: impl IntoIterator<Item = &'a [u8]>, window_bits: u8) -> ChatDeflater {
        let max_distance = 1usize << window_bits.clamp(8, 15);
        let mut table = vec![0u32; 1 << HASH_BITS];
        let mut base = 1u32;
        let mut coded = Vec::new();
        let mut stretch_lens = Vec::new();
        for stretch in stretches {
            let mut bits = BitSink::default();
            // The bit offset after the block header and the literals before the stretch (all 8-bit codes).
            bits.put(0, 3);
            if u32::try_from(u64::from(base) + stretch.len() as u64 + 1).is_err() {
                table.fill(0);
                base = 1;
            }
            lz77(stretch, base, max_distance, &mut table, &mut bits);
            base += stretch.len() as u32 + 1;
            for &byte in CHAT_SUFFIX {
                bits.literal(byte);
            }
            // End of block (symbol 256: seven zero bits), then the three header bits of the empty stored block of
            // a sync flush, whose LEN and NLEN RFC 7692 7.2.1 removes.
            bits.put(0, 7);
            bits.put(0, 3);
            coded.push(bits.finish());
            stretch_lens.push(stretch.len());
        }
        ChatDeflater {
            stretches: coded,
            stretch_lens,
        }
    }

    /// Appends the compressed form of the chat JSON whose content is `content` (its head, then the text of stretch
    /// `stretch`) to `out` and returns its length, if that is shorter than the JSON; `None` leaves `out` as it
    /// was: the JSON is shorter than its compressed form, `stretch` is not a stretch of this deflater, `content`
    /// is not its head and that stretch, or its head has a byte that is not coded in 8 bits.
    pub fn compress(&self, content: &[u8], stretch: usize, out: &mut Vec<u8>) -> Option<usize> {
        let (coded, &stretch_len) = self
            .stretches
            .get(stretch)
            .zip(self.stretch_lens.get(stretch))?;
        let head = content.get(..HEAD_LEN)?;
        if content.len() != HEAD_LEN + stretch_len {
            return None;
        }
        let json_len = CHAT_PREFIX.len() + content.len() + CHAT_SUFFIX.len();
        let len = LITERALS_BEFORE + coded.len();
        if len >= json_len {
            return None;
        }
        let start = out.len();
        out.reserve(len);
        // RFC 1951 3.2.3: BFINAL = 0, BTYPE = 01 (fixed codes); then every byte before the stretch as a literal.
        // Each literal's code is 8 bits (RFC 1951 3.2.6: values 0-143), so the three header bits carry on from
        // byte to byte.
        let mut carry = 0b010u16;
        for &byte in CHAT_PREFIX.iter().chain(head) {
            let Some(&code) = LITERAL_CODES.get(usize::from(byte)) else {
                out.truncate(start);
                return None;
            };
            let bits = carry | u16::from(code) << 3;
            out.push(bits as u8);
            carry = bits >> 8;
        }
        out.extend_from_slice(coded);
        out[start + LITERALS_BEFORE] |= carry as u8;
        Some(len)
    }
}

/// The fixed codes of the literals 0..=143, each 8 bits (RFC 1951 3.2.6: 00110000 + value), bit-reversed for
/// writing least significant bit first.
static LITERAL_CODES: [u8; 144] = {
    let mut table = [0u8; 144];
    let mut value = 0;
    while value < 144 {
        table[value] = reverse(0x30 + value as u32, 8) as u8;
        value += 1;
    }
    table
};

/// The low `length` bits of `code` in reverse order: Huffman codes go out most significant bit first (RFC 1951
/// 3.1.1).
const fn reverse(code: u32, length: u32) -> u32 {
    let mut reversed = 0;
    let mut i = 0;
    while i < length {
        reversed |= ((code >> i) & 1) << (length - 1 - i);
        i += 1;
    }
    reversed
}

/// Codes `text` as literals and matches into `bits`. `table` maps a hash of four bytes to the absolute position
/// (`base` + index) where they were last seen; positions below `base` belong to earlier texts and are ignored.
fn lz77(text: &[u8], base: u32, max_distance: usize, table: &mut [u32], bits: &mut BitSink) {
    let mut i = 0;
    let mut literals_from = 0;
    // As `QuickCompressor` searches: one probe every `PROBE_STEP` positions, the positions between entered from
    // the same eight bytes, and a match found extended back over them.
    while let Some(&eight) = text.get(i..).and_then(|rest| rest.first_chunk::<8>()) {
        let bytes = u64::from_le_bytes(eight);
        let word = bytes as u32;
        let position = base + i as u32;
        let candidate = std::mem::replace(&mut table[slot(word)], position);
        for step in 1..PROBE_STEP {
            table[slot((bytes >> (8 * step)) as u32)] = position + step as u32;
        }
        let distance = position.wrapping_sub(candidate) as usize;
        let found = distance >= 1
            && distance <= i
            && distance <= max_distance
            && read_u32(text, i - distance) == Some(word);
        if !found {
            // After a run of misses, look at fewer positions, as `QuickCompressor` does.
            i += PROBE_STEP + ((i - literals_from) >> 6);
            continue;
        }
        let mut start = i;
        while start > literals_from
            && start + PROBE_STEP > i + 1
            && start > distance
            && text[start - 1] == text[start - 1 - distance]
        {
            start -= 1;
        }
        let verified = i + 4 - start;
        let length = verified
            + text[i - distance + 4..]
                .iter()
                .zip(&text[i + 4..])
                .take(MAX_MATCH - verified)
                .take_while(|(a, b)| a == b)
                .count();
        for &byte in &text[literals_from..start] {
            bits.literal(byte);
        }
        bits.copy(length, distance);
        let match_end = (start + length).min(text.len().saturating_sub(MIN_MATCH));
        let mut j = i + PROBE_STEP;
        while j < match_end {
            if let Some(word) = read_u32(text, j) {
                table[slot(word)] = base + j as u32;
            }
            j += 4;
        }
        i = start + length;
        literals_from = i;
    }
    for &byte in &text[literals_from.min(text.len())..] {
        bits.literal(byte);
    }
}

/// The four bytes at `i`, little-endian, if there are four.
fn read_u32(text: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes(*text.get(i..)?.first_chunk::<4>()?))
}

/// The hash table slot of four bytes.
fn slot(word: u32) -> usize {
    (word.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
}

/// RFC 1951 3.2.5: the base lengths of the length codes 257..=285.
const LENGTH_BASE: [usize; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
/// RFC 1951 3.2.5: the extra bits of the length codes 257..=285.
const LENGTH_EXTRA: [u32; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
/// RFC 1951 3.2.5: the base distances of the distance codes 0..=29.
const DISTANCE_BASE: [usize; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
/// RFC 1951 3.2.5: the extra bits of the distance codes 0..=29.
const DISTANCE_EXTRA: [u32; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// DEFLATE's bit stream being written into bytes: fields least significant bit first, Huffman codes most
/// significant bit first (RFC 1951 3.1.1). Only for compressing stretches once, so plain rather than fast.
#[derive(Default)]
struct BitSink {
    bytes: Vec<u8>,
    pending: u64,
    count: u32,
}

impl BitSink {
    /// Appends the low `count` bits of `value` (at most 32), least significant first.
    fn put(&mut self, value: u32, count: u32) {
        self.pending |= u64::from(value) << self.count;
        self.count += count;
        while self.count >= 8 {
            self.bytes.push(self.pending as u8);
            self.pending >>= 8;
            self.count -= 8;
        }
    }

    /// Appends the fixed code of literal/length symbol `symbol` (RFC 1951 3.2.6).
    fn symbol(&mut self, symbol: u32) {
        let (code, length) = match symbol {
            0..=143 => (0x30 + symbol, 8),
            144..=255 => (0x190 + symbol - 144, 9),
            256..=279 => (symbol - 256, 7),
            _ => (0xC0 + symbol - 280, 8),
        };
        self.put(reverse(code, length), length);
    }

    /// Appends `byte` as a literal.
    fn literal(&mut self, byte: u8) {
        self.symbol(u32::from(byte));
    }

    /// Appends a match of `length` (3..=258) bytes `distance` (1..=32768) back: its length code and extra bits,
    /// then its five-bit distance code and extra bits (RFC 1951 3.2.5, 3.2.6).
    fn copy(&mut self, length: usize, distance: usize) {
        let index = LENGTH_BASE.iter().rposition(|&b| b <= length).unwrap_or(0);
        self.symbol(257 + index as u32);
        self.put((length - LENGTH_BASE[index]) as u32, LENGTH_EXTRA[index]);
        let index = DISTANCE_BASE
            .iter()
            .rposition(|&b| b <= distance)
            .unwrap_or(0);
        self.put(reverse(index as u32, 5), 5);
        self.put(
            (distance - DISTANCE_BASE[index]) as u32,
            DISTANCE_EXTRA[index],
        );
    }

    /// The bytes, the last one padded with zero bits.
    fn finish(mut self) -> Vec<u8> {
        if self.count > 0 {
            self.bytes.push(self.pending as u8);
        }
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast::protocol::deflate::{MessageDecompressor, QuickCompressor};

    fn json(content: &[u8]) -> Vec<u8> {
        [CHAT_PREFIX, content, CHAT_SUFFIX].concat()
    }

    fn inflate(compressed: &[u8]) -> Vec<u8> {
        let mut text = Vec::new();
        MessageDecompressor::new(true, 1 << 20)
            .decompress_message(compressed, &mut text)
            .unwrap();
        text
    }

    fn stretches() -> Vec<Vec<u8>> {
        let text = crate::chat_text(4096);
        vec![
            text[..478].to_vec(),
            text[1000..1478].to_vec(),
            b"x".repeat(478),
            text[7..37].to_vec(),
            Vec::new(),
        ]
    }

    fn head(seq: u32) -> Vec<u8> {
        format!("@{:016x}{:08x}{seq:08x}m", 0x1234_5678_9abc_u64, 42).into_bytes()
    }

    #[test]
    fn a_spliced_message_inflates_to_the_chat_json() {
        let stretches = stretches();
        for window_bits in [8, 9, 15] {
            let deflater = ChatDeflater::new(stretches.iter().map(Vec::as_slice), window_bits);
            for (index, stretch) in stretches.iter().enumerate().take(3) {
                for seq in [0, 7, 0xffff_ffff] {
                    let content = [head(seq), stretch.clone()].concat();
                    let mut out = vec![0xAA];
                    let len = deflater.compress(&content, index, &mut out).unwrap();
                    assert_eq!(out.len(), 1 + len);
                    assert_eq!(inflate(&out[1..]), json(&content), "stretch {index}");
                }
            }
        }
    }

    #[test]
    fn a_message_compressed_to_no_fewer_bytes_is_left_alone() {
        let stretches = stretches();
        let deflater = ChatDeflater::new(stretches.iter().map(Vec::as_slice), 15);
        let mut out = vec![1, 2];
        let content = [head(1), Vec::new()].concat();
        assert_eq!(deflater.compress(&content, 4, &mut out), None);
        assert_eq!(out, [1, 2]);
    }

    #[test]
    fn content_that_is_not_its_head_and_stretch_is_refused() {
        let stretches = stretches();
        let deflater = ChatDeflater::new(stretches.iter().map(Vec::as_slice), 15);
        let mut out = Vec::new();
        let content = [head(1), stretches[0].clone()].concat();
        assert_eq!(
            deflater.compress(&content, 3, &mut out),
            None,
            "wrong length"
        );
        assert_eq!(
            deflater.compress(&content, 9, &mut out),
            None,
            "no such stretch"
        );
        let mut high = content.clone();
        high[5] = 0xC3;
        assert_eq!(
            deflater.compress(&high, 0, &mut out),
            None,
            "a 9-bit literal"
        );
        assert!(out.is_empty());
    }

    #[test]
    fn matches_reach_no_further_back_than_the_window() {
        // The same 300 bytes twice: with a 256-byte window the second copy cannot refer to the first.
        let part = crate::chat_text(300)[..300].to_vec();
        let stretch = [part.clone(), part].concat();
        let narrow = ChatDeflater::new([stretch.as_slice()], 8);
        let wide = ChatDeflater::new([stretch.as_slice()], 15);
        assert!(wide.stretches[0].len() + 200 < narrow.stretches[0].len());
        let content = [head(3), stretch].concat();
        let mut out = Vec::new();
        narrow.compress(&content, 0, &mut out).unwrap();
        assert_eq!(inflate(&out), json(&content));
    }

    #[test]
    fn spliced_messages_are_about_as_long_as_whole_quick_compressed_ones() {
        let text = crate::chat_text(8192);
        let stretches: Vec<&[u8]> = (0..40).map(|i| &text[i * 150..i * 150 + 478]).collect();
        let deflater = ChatDeflater::new(stretches.iter().copied(), 15);
        let mut quick = QuickCompressor::new(15);
        let (mut spliced_total, mut quick_total) = (0, 0);
        for (index, stretch) in stretches.iter().enumerate() {
            let content = [head(index as u32), stretch.to_vec()].concat();
            let mut out = Vec::new();
            spliced_total += deflater.compress(&content, index, &mut out).unwrap();
            out.clear();
            quick_total += quick
                .compress_if_smaller(&json(&content), &mut out)
                .unwrap();
        }
        let ratio = spliced_total as f64 / quick_total as f64;
        assert!(
            (0.97..1.05).contains(&ratio),
            "{spliced_total} / {quick_total}"
        );
    }
}
