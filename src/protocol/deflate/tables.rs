//! The fixed codes of RFC 1951 3.2.5 and 3.2.6, which the compressor (`quick`) writes and the fixed-code inflater
//! (`fixed`) reads: the length and distance tables, each literal/length symbol's code, and the bit reversal both
//! need (codes are packed most significant bit first, 3.1.1). Data and const functions only: no coding lives here.

/// RFC 1951 3.2.5: the base lengths of codes 257..=285.
pub const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
/// RFC 1951 3.2.5: the extra bits of codes 257..=285.
pub const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
/// RFC 1951 3.2.5: the base distances of codes 0..=29.
pub const DISTANCE_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
/// RFC 1951 3.2.5: the extra bits of distance codes 0..=29.
pub const DISTANCE_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// The fixed literal/length code of a symbol 0..=287: (code, length in bits), RFC 1951 3.2.6.
pub const fn fixed_code(symbol: u16) -> (u16, u8) {
    match symbol {
        0..=143 => (0x30 + symbol, 8),
        144..=255 => (0x190 + (symbol - 144), 9),
        256..=279 => (symbol - 256, 7),
        _ => (0xc0 + (symbol - 280), 8),
    }
}

/// `code`'s low `bits` bits in reverse order: Huffman codes are packed starting with their most significant bit
/// (RFC 1951 3.1.1), and the stream is written and read from each byte's least significant bit.
pub const fn reversed(code: u16, bits: u8) -> usize {
    let mut out = 0;
    let mut i = 0;
    while i < bits {
        out |= (((code >> i) & 1) as usize) << (bits - 1 - i);
        i += 1;
    }
    out
}
