//! Fuzz target `frame_parser`: `protocol::frame::FrameDecoder` on arbitrary bytes in arbitrary reads.
//!
//! Input: `[flags][n][plan][stream]` (see `roomcast_fuzz::raw`); flags bit 0 picks `IncomingMask::Forbidden`
//! over `Required`. Asserts, for both the planned chunking and a single read of the whole stream:
//! - `decode` never panics, never claims more bytes than it was given, uses every byte when it returns no
//!   event, and every event uses at least one byte: the bytes used add up to exactly the bytes fed;
//! - a header event's byte count equals `FrameHeader::encoded_len`, payload chunks are the input bytes
//!   themselves, in order, with the right offset and `last` flag;
//! - every frame it accepts breaks no rule of RFC 6455 5.2-5.5 (checked here independently), and re-encodes
//!   with `encode_frame` to exactly the bytes it came from;
//! - every error names a rule the frame's header really breaks;
//! - the chunking changes nothing: same frames, same payloads, same error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::protocol::frame::{
    encode_frame, FrameDecoder, FrameError, FrameEvent, FrameHeader, IncomingMask,
};
use roomcast_fuzz::chunks::Chunker;
use roomcast_fuzz::raw::RawInput;

/// Payloads longer than this are counted but not collected (no frame that long can complete in a fuzz input
/// anyway, but a header may announce one).
const MAX_COLLECTED: u64 = 1 << 20;

/// What the decoder made of a stream.
#[derive(Debug, PartialEq)]
struct Decoded {
    /// Every frame whose header was read: the header and the unmasked payload read so far.
    frames: Vec<(FrameHeader, Vec<u8>)>,
    /// The error that stopped decoding, if any.
    error: Option<FrameError>,
}

fuzz_target!(|data: &[u8]| {
    let input = RawInput::parse(data);
    let mode = if input.flags & 1 == 0 {
        IncomingMask::Required
    } else {
        IncomingMask::Forbidden
    };
    let chunked = decode(mode, input.stream, input.plan);
    let whole = decode(mode, input.stream, &[]);
    assert_eq!(chunked, whole, "the chunking changed the outcome");
});

fn decode(mode: IncomingMask, stream: &[u8], plan: &[u8]) -> Decoded {
    let mut decoder = FrameDecoder::new(mode);
    let mut frames: Vec<(FrameHeader, Vec<u8>)> = Vec::new();
    // Bytes of `stream` used so far, where the current frame started, and its payload bytes read so far.
    let mut pos = 0usize;
    let mut frame_start = 0usize;
    let mut read = 0u64;
    for piece in Chunker::new(plan).split(stream) {
        let mut used_in_piece = 0;
        loop {
            if decoder.at_frame_boundary() {
                frame_start = pos;
            }
            let rest = &piece[used_in_piece..];
            let (used, event) = match decoder.decode(rest) {
                Ok(decoded) => decoded,
                Err(error) => {
                    let broken = broken_rules(mode, &stream[frame_start..]);
                    assert!(
                        broken.contains(&error),
                        "error {error:?} but the header at {frame_start} breaks {broken:?}"
                    );
                    return Decoded {
                        frames,
                        error: Some(error),
                    };
                }
            };
            assert!(used <= rest.len(), "used {used} of {} bytes", rest.len());
            used_in_piece += used;
            pos += used;
            let Some(event) = event else {
                assert_eq!(used, rest.len(), "no event, but bytes were left unused");
                break;
            };
            assert!(used > 0, "an event that used no bytes: {event:?}");
            match event {
                FrameEvent::Header(header) => {
                    assert_eq!(
                        header.encoded_len(),
                        pos - frame_start,
                        "header length {header:?}"
                    );
                    let broken = broken_rules(mode, &stream[frame_start..]);
                    assert!(broken.is_empty(), "accepted {header:?} breaking {broken:?}");
                    assert_eq!(
                        decoder.at_frame_boundary(),
                        header.payload_len == 0,
                        "boundary after {header:?}"
                    );
                    frames.push((header, Vec::new()));
                    read = 0;
                    if header.payload_len == 0 {
                        check_reencodes(&frames, &stream[frame_start..pos]);
                    }
                }
                FrameEvent::Payload(chunk) => {
                    let (header, payload) = frames.last_mut().expect("payload before any header");
                    assert_eq!(chunk.data, &rest[..used], "a chunk is the input bytes");
                    assert_eq!(chunk.mask, header.mask);
                    assert_eq!(chunk.offset, read);
                    read += used as u64;
                    assert!(read <= header.payload_len, "read past the payload");
                    assert_eq!(chunk.last, read == header.payload_len);
                    assert_eq!(decoder.at_frame_boundary(), chunk.last);
                    if header.payload_len <= MAX_COLLECTED {
                        chunk.unmask_into(payload);
                    }
                    if chunk.last {
                        check_reencodes(&frames, &stream[frame_start..pos]);
                    }
                }
            }
        }
        assert_eq!(used_in_piece, piece.len(), "a read was not used up");
    }
    assert_eq!(pos, stream.len(), "bytes fed and bytes used differ");
    Decoded {
        frames,
        error: None,
    }
}

/// The last frame, complete, re-encodes to exactly `original`.
fn check_reencodes(frames: &[(FrameHeader, Vec<u8>)], original: &[u8]) {
    let (header, payload) = frames.last().expect("a frame");
    if header.payload_len > MAX_COLLECTED {
        return;
    }
    let mut reencoded = Vec::new();
    encode_frame(
        header.fin,
        header.opcode,
        payload,
        header.mask,
        &mut reencoded,
    );
    assert_eq!(reencoded, original, "re-encoding {header:?}");
}

/// Every framing rule the frame starting at `bytes[0]` breaks, judged from its header alone, by this target's
/// own reading of RFC 6455 5.1, 5.2 and 5.5. Rules whose bytes have not arrived are not judged.
fn broken_rules(mode: IncomingMask, bytes: &[u8]) -> Vec<FrameError> {
    let mut broken = Vec::new();
    let (Some(&b0), Some(&b1)) = (bytes.first(), bytes.get(1)) else {
        return broken;
    };
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7F;
    if b0 & 0x70 != 0 {
        broken.push(FrameError::ReservedBits);
    }
    if !matches!(opcode, 0x0..=0x2 | 0x8..=0xA) {
        broken.push(FrameError::ReservedOpcode(opcode));
    }
    let control = matches!(opcode, 0x8..=0xA);
    if control && !fin {
        broken.push(FrameError::FragmentedControl);
    }
    if control && len7 > 125 {
        broken.push(FrameError::ControlTooLong);
    }
    match (mode, masked) {
        (IncomingMask::Required, false) => broken.push(FrameError::Unmasked),
        (IncomingMask::Forbidden, true) => broken.push(FrameError::Masked),
        _ => {}
    }
    match len7 {
        126 if bytes.len() >= 4 => {
            if u16::from_be_bytes([bytes[2], bytes[3]]) < 126 {
                broken.push(FrameError::NonMinimalLength);
            }
        }
        127 if bytes.len() >= 10 => {
            let mut len = [0u8; 8];
            len.copy_from_slice(&bytes[2..10]);
            let len = u64::from_be_bytes(len);
            if len >= 1 << 63 {
                broken.push(FrameError::LengthTooLarge);
            } else if len < 1 << 16 {
                broken.push(FrameError::NonMinimalLength);
            }
        }
        _ => {}
    }
    broken
}
