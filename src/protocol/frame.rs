//! RFC 6455 section 5.2 base framing: the frame header, a streaming frame decoder and the one frame encoder.
//!
//! Owns the byte layout of a frame and the rules that can be checked from one frame alone (reserved bits,
//! reserved opcodes, control-frame size and fragmentation, the masking direction, the length encoding). It does
//! not assemble messages, validate text or know about closing: that is `connection`'s job.

use std::fmt;

use super::mask::apply_mask;

/// The largest payload a control frame may carry (5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The largest header: 2 bytes, a 64-bit extended length and a masking key (5.2).
pub const MAX_HEADER_LEN: usize = 14;

/// A frame's opcode (5.2; 11.8 for the registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: the first frame of a UTF-8 text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: starts or answers the closing handshake.
    Close,
    /// 0x9: asks for a Pong.
    Ping,
    /// 0xA: answers a Ping, or is an unsolicited heartbeat.
    Pong,
}

impl OpCode {
    /// The opcode for a 4-bit value, or `None` for the reserved values 0x3-0x7 and 0xB-0xF.
    pub fn from_bits(bits: u8) -> Option<OpCode> {
        match bits {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// The 4-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Control frames are the opcodes with the high bit set (5.5).
    pub fn is_control(self) -> bool {
        self.bits() & 0x8 != 0
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the final fragment of its message.
    pub fin: bool,
    /// RSV1: with permessage-deflate, the message this frame begins is compressed (RFC 7692 6).
    pub rsv1: bool,
    /// What the frame carries.
    pub opcode: OpCode,
    /// The masking key, present on every client-to-server frame and on no server-to-client frame (5.3).
    pub mask: Option<[u8; 4]>,
    /// The payload length in bytes.
    pub payload_len: u64,
}

impl FrameHeader {
    /// How many bytes `encode` writes for this header.
    pub fn encoded_len(&self) -> usize {
        let length_bytes = match self.payload_len {
            0..=125 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        2 + length_bytes + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Appends the header to `out`, with the length in the minimal number of bytes (5.2).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (bytes, len) = self.to_bytes();
        out.extend_from_slice(&bytes[..len]);
    }

    /// The header's bytes, in the first `encoded_len()` bytes of the array.
    fn to_bytes(self) -> ([u8; MAX_HEADER_LEN], usize) {
        let mut bytes = [0u8; MAX_HEADER_LEN];
        let fin = if self.fin { 0x80 } else { 0 };
        let rsv1 = if self.rsv1 { 0x40 } else { 0 };
        bytes[0] = fin | rsv1 | self.opcode.bits();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut len = 2;
        match self.payload_len {
            payload_len @ 0..=125 => bytes[1] = mask_bit | payload_len as u8,
            payload_len @ 126..=0xFFFF => {
                bytes[1] = mask_bit | 126;
                bytes[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
                len = 4;
            }
            payload_len => {
                bytes[1] = mask_bit | 127;
                bytes[2..10].copy_from_slice(&payload_len.to_be_bytes());
                len = 10;
            }
        }
        if let Some(key) = self.mask {
            bytes[len..len + 4].copy_from_slice(&key);
            len += 4;
        }
        (bytes, len)
    }
}

/// Appends one whole frame whose payload `write_payload` appends to `out` and whose length it returns, or nothing
/// if it returns `None`: for a payload made in place, such as a compressed message, with no copy through a buffer
/// of its own. `header` gives everything but the length, and a length the payload will not exceed; the payload is
/// masked if `header` has a key.
pub fn encode_frame_in_place(
    header: FrameHeader,
    out: &mut Vec<u8>,
    write_payload: impl FnOnce(&mut Vec<u8>) -> Option<usize>,
) -> bool {
    let start = out.len();
    // The header is written once the length is known: reserve the longest it can be, then close the gap.
    let reserved = header.encoded_len();
    out.resize(start + reserved, 0);
    let Some(payload_len) = write_payload(out) else {
        out.truncate(start);
        return false;
    };
    debug_assert_eq!(out.len(), start + reserved + payload_len);
    let header = FrameHeader {
        payload_len: payload_len as u64,
        ..header
    };
    let (bytes, header_len) = header.to_bytes();
    if header_len < reserved {
        out.copy_within(start + reserved.., start + header_len);
        out.truncate(start + header_len + payload_len);
    }
    out[start..start + header_len].copy_from_slice(&bytes[..header_len]);
    if let Some(key) = header.mask {
        apply_mask(&mut out[start + header_len..], key, 0);
    }
    true
}

/// Appends one whole frame to `out`: the header, then the payload, masked with `mask` if one is given.
///
/// This is the only frame encoder: servers pass `None` (5.1: a server MUST NOT mask), clients a fresh key.
///
/// ```
/// use roomcast::protocol::frame::{encode_frame, OpCode};
///
/// // RFC 6455 5.7: "Hello" from a server (unmasked), then from a client (masked with the key 37 fa 21 3d).
/// let mut out = Vec::new();
/// encode_frame(true, OpCode::Text, b"Hello", None, &mut out);
/// assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
/// out.clear();
/// encode_frame(true, OpCode::Text, b"Hello", Some([0x37, 0xfa, 0x21, 0x3d]), &mut out);
/// assert_eq!(out, [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
/// // 256 bytes do not fit in 7 bits: the length byte says 126 and a 16-bit length follows (5.2).
/// out.clear();
/// encode_frame(true, OpCode::Binary, &[0; 256], None, &mut out);
/// assert_eq!(out[..4], [0x82, 0x7e, 0x01, 0x00]);
/// ```
pub fn encode_frame(
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
    out: &mut Vec<u8>,
) {
    let header = FrameHeader {
        fin,
        rsv1: false,
        opcode,
        mask,
        payload_len: payload.len() as u64,
    };
    out.reserve(header.encoded_len() + payload.len());
    header.encode(out);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

/// Which masking the decoder demands of incoming frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncomingMask {
    /// A server decoding a client's frames: every frame must be masked (5.1).
    Required,
    /// A client decoding a server's frames: no frame may be masked (5.1).
    Forbidden,
}

/// A frame that breaks a framing rule. Every one fails the connection with 1002 (protocol error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// RSV1-3 set without a negotiated extension (5.2).
    ReservedBits,
    /// An opcode from the reserved ranges (5.2).
    ReservedOpcode(u8),
    /// A control frame without FIN (5.5).
    FragmentedControl,
    /// A control frame with more than 125 bytes of payload (5.5).
    ControlTooLong,
    /// A client frame without a mask (5.1).
    Unmasked,
    /// A server frame with a mask (5.1).
    Masked,
    /// A 64-bit length with the most significant bit set (5.2).
    LengthTooLarge,
    /// A length not written in the minimal number of bytes (5.2).
    NonMinimalLength,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::ReservedBits => f.write_str("reserved bits set without an extension"),
            FrameError::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            FrameError::FragmentedControl => f.write_str("fragmented control frame"),
            FrameError::ControlTooLong => f.write_str("control frame payload over 125 bytes"),
            FrameError::Unmasked => f.write_str("unmasked client frame"),
            FrameError::Masked => f.write_str("masked server frame"),
            FrameError::LengthTooLarge => {
                f.write_str("64-bit payload length with the high bit set")
            }
            FrameError::NonMinimalLength => f.write_str("payload length not minimally encoded"),
        }
    }
}

impl std::error::Error for FrameError {}

/// A piece of a frame's payload as it stood in the input: still masked.
#[derive(Debug, PartialEq, Eq)]
pub struct PayloadChunk<'a> {
    /// The bytes, exactly as they arrived.
    pub data: &'a [u8],
    /// The frame's masking key, if any.
    pub mask: Option<[u8; 4]>,
    /// How far into the frame's payload `data` starts, which selects the key byte to start with.
    pub offset: u64,
    /// This chunk ends the frame.
    pub last: bool,
}

impl PayloadChunk<'_> {
    /// Appends the unmasked bytes to `dst`: one copy, then the mask applied in place a word at a time.
    pub fn unmask_into(&self, dst: &mut Vec<u8>) {
        self.unmask_into_from(0, dst);
    }

    /// Appends the bytes from `from` on, unmasked, to `dst`: the rest of a chunk consumed in parts.
    pub fn unmask_into_from(&self, from: usize, dst: &mut Vec<u8>) {
        let start = dst.len();
        dst.extend_from_slice(self.data.get(from..).unwrap_or_default());
        if let Some(key) = self.mask {
            // The offset only matters modulo 4, so truncating it is harmless.
            let offset = self.offset.wrapping_add(from as u64) % 4;
            apply_mask(&mut dst[start..], key, offset as usize);
        }
    }

    /// Copies the bytes from `from` on, unmasked, into the front of `dst`, as many as fit, and returns how many:
    /// for a caller that consumes the payload in pieces of a fixed buffer instead of keeping all of it.
    pub fn unmask_part(&self, from: usize, dst: &mut [u8]) -> usize {
        let part = self.data.get(from..).unwrap_or_default();
        let len = part.len().min(dst.len());
        let (dst, part) = (&mut dst[..len], &part[..len]);
        dst.copy_from_slice(part);
        if let Some(key) = self.mask {
            // The offset only matters modulo 4, so truncating it is harmless.
            let offset = self.offset.wrapping_add(from as u64) % 4;
            apply_mask(dst, key, offset as usize);
        }
        len
    }
}

/// What the decoder found in the input.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameEvent<'a> {
    /// A complete header. With `payload_len == 0` the frame is already complete and no chunk follows.
    Header(FrameHeader),
    /// The next piece of the current frame's payload (never empty).
    Payload(PayloadChunk<'a>),
}

/// A streaming frame decoder: feed it any slice of the byte stream, it returns the next event and how many bytes
/// that event took. It never holds more than a partial header (at most 14 bytes); payload bytes are handed back
/// as slices of the input, so nothing is copied here.
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    incoming_mask: IncomingMask,
    /// permessage-deflate was negotiated: RSV1 may begin a data message (RFC 7692 6).
    compression: bool,
    header: [u8; MAX_HEADER_LEN],
    header_len: usize,
    /// The frame whose payload is being read: its header and how many payload bytes were read so far.
    current: Option<(FrameHeader, u64)>,
}

impl FrameDecoder {
    /// A decoder at a frame boundary.
    pub fn new(incoming_mask: IncomingMask) -> Self {
        FrameDecoder {
            incoming_mask,
            compression: false,
            header: [0; MAX_HEADER_LEN],
            header_len: 0,
            current: None,
        }
    }

    /// Lets RSV1 begin a data message: permessage-deflate was negotiated (RFC 7692 6).
    pub fn allow_compression(&mut self) {
        self.compression = true;
    }

    /// True at a frame boundary: no partial header and no unread payload.
    pub fn at_frame_boundary(&self) -> bool {
        self.header_len == 0 && self.current.is_none()
    }

    /// Decodes from the front of `input`. Returns how many bytes were used and the event they completed; `None`
    /// means every byte was used and more are needed. Each event uses at least one byte, except that a header
    /// with an empty payload completes its frame on its own.
    ///
    /// ```
    /// use roomcast::protocol::frame::{FrameDecoder, FrameEvent, IncomingMask, OpCode};
    ///
    /// // A client decodes a server's frames, which are never masked (5.1). RFC 6455 5.7, unmasked "Hello":
    /// let mut client = FrameDecoder::new(IncomingMask::Forbidden);
    /// let frame = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    /// let (used, Some(FrameEvent::Header(header))) = client.decode(&frame).unwrap() else { panic!() };
    /// assert_eq!((used, header.fin, header.opcode, header.payload_len), (2, true, OpCode::Text, 5));
    /// let (used, Some(FrameEvent::Payload(chunk))) = client.decode(&frame[2..]).unwrap() else { panic!() };
    /// assert_eq!((used, chunk.data, chunk.last), (5, &b"Hello"[..], true));
    ///
    /// // A server decodes a client's frames, always masked. The masked "Hello" of 5.7, in two reads:
    /// let mut server = FrameDecoder::new(IncomingMask::Required);
    /// let frame = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    /// let (first_read, second_read) = frame.split_at(8); // the 6-byte header and 2 payload bytes
    /// let (used, Some(FrameEvent::Header(header))) = server.decode(first_read).unwrap() else { panic!() };
    /// assert_eq!((used, header.mask), (6, Some([0x37, 0xfa, 0x21, 0x3d])));
    /// let mut text = Vec::new();
    /// let (_, Some(FrameEvent::Payload(chunk))) = server.decode(&first_read[6..]).unwrap() else { panic!() };
    /// assert_eq!((chunk.data, chunk.last), (&[0x7f, 0x9f][..], false)); // still masked
    /// chunk.unmask_into(&mut text);
    /// // The decoder remembers how far into the payload it is, so the next piece unmasks with the right key byte.
    /// let (_, Some(FrameEvent::Payload(chunk))) = server.decode(second_read).unwrap() else { panic!() };
    /// assert_eq!((chunk.offset, chunk.last), (2, true));
    /// chunk.unmask_into(&mut text);
    /// assert_eq!(text, b"Hello");
    /// ```
    pub fn decode<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<(usize, Option<FrameEvent<'a>>), FrameError> {
        if let Some((header, read)) = self.current {
            let remaining = header.payload_len - read;
            if input.is_empty() {
                return Ok((0, None));
            }
            let take = usize::try_from(remaining).map_or(input.len(), |r| r.min(input.len()));
            let last = take as u64 == remaining;
            self.current = if last {
                None
            } else {
                Some((header, read + take as u64))
            };
            let chunk = PayloadChunk {
                data: &input[..take],
                mask: header.mask,
                offset: read,
                last,
            };
            return Ok((take, Some(FrameEvent::Payload(chunk))));
        }
        self.decode_header(input)
    }

    /// Reads a header (5.2), checking the rules of its first two bytes as soon as they are in.
    fn decode_header<'a>(
        &mut self,
        input: &'a [u8],
    ) -> Result<(usize, Option<FrameEvent<'a>>), FrameError> {
        let mut used = 0;
        // Take the two fixed bytes first, so the rules they carry fail fast.
        used += self.fill_header(2, input);
        if self.header_len < 2 {
            return Ok((used, None));
        }
        let needed = self.check_fixed_bytes()?;
        used += self.fill_header(needed, &input[used..]);
        if self.header_len < needed {
            return Ok((used, None));
        }
        let header = self.parse_complete_header()?;
        self.header_len = 0;
        if header.payload_len > 0 {
            self.current = Some((header, 0));
        }
        Ok((used, Some(FrameEvent::Header(header))))
    }

    /// Copies bytes from `input` until the buffered header holds `target` bytes; returns how many it took.
    fn fill_header(&mut self, target: usize, input: &[u8]) -> usize {
        let take = target.saturating_sub(self.header_len).min(input.len());
        self.header[self.header_len..self.header_len + take].copy_from_slice(&input[..take]);
        self.header_len += take;
        take
    }

    /// Checks the rules held in the first two bytes (5.2 reserved bits and opcodes, 5.5 control frames, 5.1 the
    /// masking direction) and returns the header's full length.
    fn check_fixed_bytes(&self) -> Result<usize, FrameError> {
        let [b0, b1] = [self.header[0], self.header[1]];
        // 5.2: reserved opcodes fail the connection.
        let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(FrameError::ReservedOpcode(b0 & 0x0F))?;
        // 5.2: RSV1-3 MUST be 0 unless an extension defining them was negotiated. RFC 7692 6: with
        // permessage-deflate, RSV1 marks the first frame of a compressed message, and only that frame: never a
        // control frame or a continuation (6.1).
        let rsv1_allowed = self.compression && matches!(opcode, OpCode::Text | OpCode::Binary);
        if b0 & 0x30 != 0 || (b0 & 0x40 != 0 && !rsv1_allowed) {
            return Err(FrameError::ReservedBits);
        }
        let fin = b0 & 0x80 != 0;
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7F;
        if opcode.is_control() {
            // 5.5: control frames MUST NOT be fragmented and carry at most 125 bytes.
            if !fin {
                return Err(FrameError::FragmentedControl);
            }
            if len7 > 125 {
                return Err(FrameError::ControlTooLong);
            }
        }
        // 5.1: clients MUST mask, servers MUST NOT.
        match (self.incoming_mask, masked) {
            (IncomingMask::Required, false) => return Err(FrameError::Unmasked),
            (IncomingMask::Forbidden, true) => return Err(FrameError::Masked),
            _ => {}
        }
        let length_bytes = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        Ok(2 + length_bytes + if masked { 4 } else { 0 })
    }

    /// Reads a whole header, refusing a 64-bit length with its top bit set and, by our choice, a length that is not
    /// in the minimal number of bytes (5.2).
    fn parse_complete_header(&self) -> Result<FrameHeader, FrameError> {
        let h = &self.header[..self.header_len];
        let fin = h[0] & 0x80 != 0;
        let opcode =
            OpCode::from_bits(h[0] & 0x0F).ok_or(FrameError::ReservedOpcode(h[0] & 0x0F))?;
        let masked = h[1] & 0x80 != 0;
        let (payload_len, rest) = match h[1] & 0x7F {
            126 => {
                let len = u64::from(u16::from_be_bytes([h[2], h[3]]));
                // 5.2: "the minimal number of bytes MUST be used to encode the length".
                if len < 126 {
                    return Err(FrameError::NonMinimalLength);
                }
                (len, &h[4..])
            }
            127 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&h[2..10]);
                let len = u64::from_be_bytes(bytes);
                // 5.2: "the most significant bit MUST be 0".
                if len >> 63 != 0 {
                    return Err(FrameError::LengthTooLarge);
                }
                if len <= 0xFFFF {
                    return Err(FrameError::NonMinimalLength);
                }
                (len, &h[10..])
            }
            len => (u64::from(len), &h[2..]),
        };
        let mask = if masked {
            Some([rest[0], rest[1], rest[2], rest[3]])
        } else {
            None
        };
        Ok(FrameHeader {
            fin,
            rsv1: h[0] & 0x40 != 0,
            opcode,
            mask,
            payload_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// Decodes every frame in `input`, fed `piece` bytes at a time; returns headers with their unmasked payloads.
    fn decode_all(
        incoming: IncomingMask,
        input: &[u8],
        piece: usize,
    ) -> Result<Vec<(FrameHeader, Vec<u8>)>, FrameError> {
        let mut decoder = FrameDecoder::new(incoming);
        let mut frames: Vec<(FrameHeader, Vec<u8>)> = Vec::new();
        for chunk in input.chunks(piece.max(1)) {
            let mut pos = 0;
            loop {
                let (used, event) = decoder.decode(&chunk[pos..])?;
                pos += used;
                match event {
                    None => break,
                    Some(FrameEvent::Header(h)) => frames.push((h, Vec::new())),
                    Some(FrameEvent::Payload(p)) => {
                        p.unmask_into(&mut frames.last_mut().unwrap().1)
                    }
                }
            }
        }
        Ok(frames)
    }

    fn masked(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(fin, opcode, payload, Some(KEY), &mut out);
        out
    }

    #[test]
    fn rfc_single_frame_unmasked_text_example() {
        // RFC 6455 5.7: 0x81 0x05 "Hello", as a client decodes it.
        let frames = decode_all(
            IncomingMask::Forbidden,
            &[0x81, 0x05, b'H', b'e', b'l', b'l', b'o'],
            7,
        )
        .unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].0.opcode, OpCode::Text);
        assert_eq!(frames[0].1, b"Hello");
    }

    #[test]
    fn rfc_masked_text_example() {
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let frames = decode_all(IncomingMask::Required, &bytes, 3).unwrap();
        assert_eq!(frames[0].1, b"Hello");
        assert_eq!(masked(OpCode::Text, true, b"Hello"), bytes);
    }

    #[test]
    fn all_three_length_forms_round_trip_in_any_chunking() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let bytes = masked(OpCode::Binary, true, &payload);
            for piece in [1, 2, 5, 13, 4096, bytes.len()] {
                let frames = decode_all(IncomingMask::Required, &bytes, piece).unwrap();
                assert_eq!(frames.len(), 1, "len {len} piece {piece}");
                assert_eq!(frames[0].0.payload_len, len as u64);
                assert_eq!(frames[0].1, payload);
                let mut reencoded = Vec::new();
                encode_frame(
                    true,
                    OpCode::Binary,
                    &frames[0].1,
                    frames[0].0.mask,
                    &mut reencoded,
                );
                assert_eq!(reencoded, bytes);
            }
        }
    }

    #[test]
    fn empty_payload_frame_completes_with_its_header() {
        let bytes = masked(OpCode::Ping, true, b"");
        let mut decoder = FrameDecoder::new(IncomingMask::Required);
        let (used, event) = decoder.decode(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert!(matches!(event, Some(FrameEvent::Header(h)) if h.payload_len == 0));
        assert!(decoder.at_frame_boundary());
    }

    #[test]
    fn reserved_bits_are_rejected() {
        for rsv in [0x40u8, 0x20, 0x10] {
            let mut bytes = masked(OpCode::Text, true, b"x");
            bytes[0] |= rsv;
            assert_eq!(
                decode_all(IncomingMask::Required, &bytes, 1),
                Err(FrameError::ReservedBits)
            );
        }
    }

    #[test]
    fn reserved_opcodes_are_rejected() {
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            let bytes = [0x80 | op, 0x80, 1, 2, 3, 4];
            assert_eq!(
                decode_all(IncomingMask::Required, &bytes, 1),
                Err(FrameError::ReservedOpcode(op))
            );
        }
    }

    #[test]
    fn fragmented_control_frame_is_rejected() {
        let bytes = masked(OpCode::Ping, false, b"x");
        assert_eq!(
            decode_all(IncomingMask::Required, &bytes, 64),
            Err(FrameError::FragmentedControl)
        );
    }

    #[test]
    fn control_frame_over_125_bytes_is_rejected_from_the_first_two_bytes() {
        let bytes = masked(OpCode::Ping, true, &[0u8; 126]);
        assert_eq!(
            decode_all(IncomingMask::Required, &bytes[..2], 1),
            Err(FrameError::ControlTooLong)
        );
    }

    #[test]
    fn a_payload_unmasked_in_parts_reads_as_one_unmasked_whole() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut masked = b"Hello, parts of a masked payload".to_vec();
        apply_mask(&mut masked, key, 1);
        let chunk = PayloadChunk {
            data: &masked,
            mask: Some(key),
            offset: 5,
            last: true,
        };
        let mut whole = Vec::new();
        chunk.unmask_into(&mut whole);
        let mut parts = Vec::new();
        let mut piece = [0u8; 3];
        while parts.len() < masked.len() {
            let len = chunk.unmask_part(parts.len(), &mut piece);
            parts.extend_from_slice(&piece[..len]);
        }
        assert_eq!(parts, whole);
        assert_eq!(chunk.unmask_part(masked.len(), &mut piece), 0);
        let mut rest = b"Hello".to_vec();
        chunk.unmask_into_from(5, &mut rest);
        assert_eq!(rest, whole);
    }

    #[test]
    fn unmasked_client_frame_is_rejected() {
        assert_eq!(
            decode_all(IncomingMask::Required, &[0x81, 0x00], 2),
            Err(FrameError::Unmasked)
        );
    }

    #[test]
    fn masked_server_frame_is_rejected_by_a_client() {
        let bytes = masked(OpCode::Text, true, b"hi");
        assert_eq!(
            decode_all(IncomingMask::Forbidden, &bytes, 64),
            Err(FrameError::Masked)
        );
    }

    #[test]
    fn length_with_high_bit_set_is_rejected() {
        let mut bytes = vec![0x82, 0xFF];
        bytes.extend_from_slice(&(1u64 << 63).to_be_bytes());
        bytes.extend_from_slice(&KEY);
        assert_eq!(
            decode_all(IncomingMask::Required, &bytes, 3),
            Err(FrameError::LengthTooLarge)
        );
    }

    #[test]
    fn non_minimal_lengths_are_rejected() {
        let sixteen = [0x82, 0xFE, 0x00, 0x05, 1, 2, 3, 4];
        assert_eq!(
            decode_all(IncomingMask::Required, &sixteen, 8),
            Err(FrameError::NonMinimalLength)
        );
        let mut sixty_four = vec![0x82, 0xFF];
        sixty_four.extend_from_slice(&200u64.to_be_bytes());
        sixty_four.extend_from_slice(&KEY);
        assert_eq!(
            decode_all(IncomingMask::Required, &sixty_four, 64),
            Err(FrameError::NonMinimalLength)
        );
    }

    #[test]
    fn huge_declared_length_is_read_lazily_without_allocating() {
        let mut bytes = vec![0x82, 0xFF];
        bytes.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
        bytes.extend_from_slice(&KEY);
        bytes.extend_from_slice(b"abc");
        let mut decoder = FrameDecoder::new(IncomingMask::Required);
        let (used, event) = decoder.decode(&bytes).unwrap();
        assert_eq!(used, 14);
        assert!(matches!(event, Some(FrameEvent::Header(h)) if h.payload_len == u64::MAX >> 1));
        let (used, event) = decoder.decode(&bytes[14..]).unwrap();
        assert_eq!(used, 3);
        assert!(matches!(event, Some(FrameEvent::Payload(p)) if !p.last && p.data == b"abc"));
    }

    #[test]
    fn back_to_back_frames_in_one_read() {
        let mut bytes = masked(OpCode::Text, false, b"Hel");
        bytes.extend(masked(OpCode::Ping, true, b"p"));
        bytes.extend(masked(OpCode::Continuation, true, b"lo"));
        let frames = decode_all(IncomingMask::Required, &bytes, bytes.len()).unwrap();
        let kinds: Vec<_> = frames
            .iter()
            .map(|(h, p)| (h.opcode, h.fin, p.clone()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (OpCode::Text, false, b"Hel".to_vec()),
                (OpCode::Ping, true, b"p".to_vec()),
                (OpCode::Continuation, true, b"lo".to_vec()),
            ]
        );
    }
}
