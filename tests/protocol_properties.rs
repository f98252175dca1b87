//! Property tests of the sans-IO RFC 6455 core (`roomcast::protocol`), run by `cargo test` on stable.
//!
//! Owns the properties the fuzz targets in `fuzz/` check at depth, in a form cheap enough for every test run:
//! frame encode/decode round trips for arbitrary headers and payloads, chunking independence of `FrameDecoder`,
//! of `Connection` and of request-head parsing, `Utf8Validator` against `std::str::from_utf8` under
//! fragmentation, and masking (an involution that can be split at any offset). It also holds the regression
//! tests for what the fuzzers found. Case counts are kept low enough that the file runs in a few seconds.

use proptest::prelude::*;
use roomcast::protocol::close::parse_close_body;
use roomcast::protocol::frame::{
    encode_frame, FrameDecoder, FrameError, FrameEvent, FrameHeader, IncomingMask, OpCode,
};
use roomcast::protocol::handshake::{parse_request_head, HeadError, RequestHead};
use roomcast::protocol::mask::apply_mask;
use roomcast::protocol::utf8::Utf8Validator;
use roomcast::protocol::{Connection, Event, ProtocolError, Role, State};

/// Cuts `data` into reads of the given sizes, used in a cycle (0 is an empty read); no sizes means one read.
fn chunks<'a>(data: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    if sizes.is_empty() {
        return vec![data];
    }
    let mut pieces = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        // An empty read is followed by a non-empty one, so the loop always progresses.
        let size = match sizes[i % sizes.len()] {
            0 if pieces.last().is_some_and(|p: &&[u8]| p.is_empty()) => 1,
            size => size,
        };
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        pieces.push(piece);
        rest = tail;
        i += 1;
    }
    pieces
}

/// A chunking plan: mostly small reads, sometimes empty ones, sometimes everything at once.
fn plan() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![4 => 1..8usize, 1 => 0..1usize, 1 => 8..200usize],
        0..6,
    )
}

/// What a frame decoder made of a stream: every frame with its unmasked payload so far, and the error if any.
type Decoded = (Vec<(FrameHeader, Vec<u8>)>, Option<FrameError>);

/// Decodes `stream` fed in `sizes` reads, checking that every byte fed is used exactly once.
fn decode_frames(mode: IncomingMask, stream: &[u8], sizes: &[usize]) -> Decoded {
    let mut decoder = FrameDecoder::new(mode);
    let mut frames: Vec<(FrameHeader, Vec<u8>)> = Vec::new();
    for piece in chunks(stream, sizes) {
        let mut pos = 0;
        loop {
            let (used, event) = match decoder.decode(&piece[pos..]) {
                Ok(decoded) => decoded,
                Err(e) => return (frames, Some(e)),
            };
            assert!(used <= piece.len() - pos);
            pos += used;
            match event {
                None => break,
                Some(FrameEvent::Header(h)) => frames.push((h, Vec::new())),
                Some(FrameEvent::Payload(p)) => {
                    p.unmask_into(&mut frames.last_mut().expect("a header first").1)
                }
            }
        }
        assert_eq!(pos, piece.len(), "a read was not used up");
    }
    (frames, None)
}

const OPCODES: [OpCode; 6] = [
    OpCode::Continuation,
    OpCode::Text,
    OpCode::Binary,
    OpCode::Close,
    OpCode::Ping,
    OpCode::Pong,
];

/// A payload length around every length-encoding boundary (RFC 6455 5.2), or any short one.
fn payload_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0..300usize,
        1 => prop::sample::select(vec![125usize, 126, 127, 65535, 65536, 65537]),
    ]
}

/// A valid frame: header fields, payload, and the direction (masked for a client's frame).
fn valid_frame() -> impl Strategy<Value = (bool, OpCode, Option<[u8; 4]>, Vec<u8>)> {
    (
        any::<bool>(),
        prop::sample::select(OPCODES.to_vec()),
        any::<Option<[u8; 4]>>(),
        payload_len(),
        any::<u8>(),
    )
        .prop_map(|(fin, opcode, mask, len, seed)| {
            let (fin, len) = if opcode.is_control() {
                (true, len % 126)
            } else {
                (fin, len)
            };
            let payload = (0..len)
                .map(|i| (i as u8).wrapping_mul(seed | 1) ^ seed)
                .collect();
            (fin, opcode, mask, payload)
        })
}

/// Reads a request head the way a server does (a growing buffer parsed after every read) and also all at once.
fn head_outcomes(
    request: &[u8],
    max_len: usize,
    sizes: &[usize],
) -> (
    Result<Option<RequestHead>, HeadError>,
    Result<Option<RequestHead>, HeadError>,
) {
    let whole = parse_request_head(request, max_len);
    let mut buf = Vec::new();
    let mut chunked = Ok(None);
    for piece in chunks(request, sizes) {
        buf.extend_from_slice(piece);
        chunked = parse_request_head(&buf, max_len);
        if chunked != Ok(None) {
            break;
        }
    }
    (chunked, whole)
}

/// The index of the first byte after which `bytes` can no longer be the start of valid UTF-8.
fn first_bad_byte(bytes: &[u8]) -> Option<usize> {
    let error = std::str::from_utf8(bytes).err()?;
    error.error_len()?;
    let start = error.valid_up_to();
    (start..bytes.len()).find(|&i| {
        std::str::from_utf8(&bytes[start..=i])
            .err()
            .is_some_and(|e| e.error_len().is_some())
    })
}

/// A client's frame as raw bytes, rules broken on request: any opcode, RSV bits, mask or not.
fn client_frame() -> impl Strategy<Value = Vec<u8>> {
    let payload = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..40),
        2 => prop::collection::vec(any::<char>(), 0..12)
            .prop_map(|cs| cs.into_iter().collect::<String>().into_bytes()),
        1 => (any::<u16>(), prop::collection::vec(any::<u8>(), 0..8)).prop_map(|(code, reason)| {
            let mut body = code.to_be_bytes().to_vec();
            body.extend(reason);
            body
        }),
        1 => (prop::sample::select(vec![1000u16, 1001, 1003, 1008, 3000, 4999]), "[a-z]{0,6}")
            .prop_map(|(code, reason)| {
                let mut body = code.to_be_bytes().to_vec();
                body.extend(reason.into_bytes());
                body
            }),
    ];
    (
        prop_oneof![
            12 => prop::sample::select(vec![0u8, 1, 2, 8, 9, 10]),
            1 => 0..16u8
        ],
        prop_oneof![4 => Just(true), 1 => Just(false)],
        prop_oneof![12 => Just(0u8), 1 => 1..8u8],
        prop_oneof![12 => Just(true), 1 => Just(false)],
        any::<[u8; 4]>(),
        payload,
    )
        .prop_map(|(bits, fin, rsv, masked, key, payload)| {
            let mut out = Vec::new();
            let opcode = OpCode::from_bits(bits);
            // Reserved opcodes are written by hand: `encode_frame` only knows the real ones.
            encode_frame(
                fin,
                opcode.unwrap_or(OpCode::Binary),
                &payload,
                masked.then_some(key),
                &mut out,
            );
            if opcode.is_none() {
                out[0] = (out[0] & 0xF0) | bits;
            }
            out[0] |= rsv << 4;
            out
        })
}

/// What a server connection made of a client byte stream.
#[derive(Debug, PartialEq)]
struct Observed {
    events: Vec<Event>,
    error: Option<ProtocolError>,
    state: State,
    output: Vec<u8>,
}

fn run_connection(stream: &[u8], sizes: &[usize], limit: usize) -> Observed {
    let mut conn = Connection::new(Role::Server, limit);
    let mut events = Vec::new();
    let mut error = None;
    for piece in chunks(stream, sizes) {
        if let Err(e) = conn.feed(piece, &mut events) {
            assert_eq!(conn.state(), State::Failed);
            assert!(error.is_none(), "two errors");
            error = Some(e);
        }
    }
    Observed {
        events,
        error,
        state: conn.state(),
        output: conn.take_output(),
    }
}

proptest! {
    // Failures are not persisted to a file next to this one: each one found becomes a named regression test below.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn encoded_frames_decode_to_themselves_in_any_chunking(
        (fin, opcode, mask, payload) in valid_frame(),
        sizes in plan(),
    ) {
        let mut bytes = Vec::new();
        encode_frame(fin, opcode, &payload, mask, &mut bytes);
        let mode = if mask.is_some() { IncomingMask::Required } else { IncomingMask::Forbidden };
        let (frames, error) = decode_frames(mode, &bytes, &sizes);
        prop_assert_eq!(error, None);
        prop_assert_eq!(frames.len(), 1);
        let (header, decoded) = &frames[0];
        prop_assert_eq!(
            *header,
            FrameHeader { fin, rsv1: false, opcode, mask, payload_len: payload.len() as u64 }
        );
        prop_assert_eq!(header.encoded_len() + payload.len(), bytes.len());
        prop_assert_eq!(decoded, &payload);
    }

    #[test]
    fn frame_decoder_does_not_depend_on_chunking(
        parts in prop::collection::vec(
            prop_oneof![
                3 => valid_frame().prop_map(|(fin, opcode, mask, payload)| {
                    let mut out = Vec::new();
                    encode_frame(fin, opcode, &payload[..payload.len().min(300)], mask, &mut out);
                    out
                }),
                1 => prop::collection::vec(any::<u8>(), 0..6),
            ],
            0..6,
        ),
        forbidden in any::<bool>(),
        sizes in plan(),
    ) {
        let stream = parts.concat();
        let mode = if forbidden { IncomingMask::Forbidden } else { IncomingMask::Required };
        prop_assert_eq!(decode_frames(mode, &stream, &sizes), decode_frames(mode, &stream, &[]));
    }

    #[test]
    fn connection_events_do_not_depend_on_chunking(
        frames in prop::collection::vec(client_frame(), 0..8),
        sizes_a in plan(),
        sizes_b in plan(),
        limit in prop_oneof![3 => Just(1usize << 20), 1 => 0..40usize],
    ) {
        let stream = frames.concat();
        let a = run_connection(&stream, &sizes_a, limit);
        let b = run_connection(&stream, &sizes_b, limit);
        prop_assert_eq!(&a, &b);
        // What the server wrote is well-formed, and a failure closes with the error's own code.
        let (written, error) = decode_frames(IncomingMask::Forbidden, &a.output, &[]);
        prop_assert_eq!(error, None);
        let closes: Vec<_> = written.iter().filter(|(h, _)| h.opcode == OpCode::Close).collect();
        prop_assert!(closes.len() <= 1);
        if let Some((_, body)) = closes.first() {
            prop_assert_eq!(written.last().map(|(h, _)| h.opcode), Some(OpCode::Close));
            let body = parse_close_body(body).expect("a valid Close body");
            prop_assert!(body.code.is_none_or(|code| code.is_valid_on_wire()));
            if let Some(e) = &a.error {
                prop_assert_eq!(body.code, Some(e.close_code()));
            }
        }
        if a.error.is_some() {
            prop_assert_eq!(a.state, State::Failed);
            prop_assert_eq!(closes.len(), 1);
        }
    }

    #[test]
    fn utf8_validator_agrees_with_std_in_any_fragmentation(
        parts in prop::collection::vec(
            prop_oneof![
                3 => prop::collection::vec(any::<char>(), 0..6)
                    .prop_map(|cs| cs.into_iter().collect::<String>().into_bytes()),
                1 => prop::collection::vec(any::<u8>(), 0..4),
                1 => prop::sample::select(vec![
                    vec![0xEDu8, 0xA0, 0x80], vec![0xF4, 0x90, 0x80, 0x80], vec![0xC0, 0xAF],
                    vec![0xE0, 0x80], vec![0xF0, 0x9F, 0x98], vec![0xFF],
                ]),
            ],
            0..8,
        ),
        sizes in plan(),
    ) {
        let bytes = parts.concat();
        let first_bad = first_bad_byte(&bytes);
        let mut validator = Utf8Validator::new();
        let mut end = 0;
        let mut failed = false;
        for piece in chunks(&bytes, &sizes) {
            end += piece.len();
            let holds_bad = first_bad.is_some_and(|bad| bad < end);
            prop_assert_eq!(validator.feed(piece).is_err(), holds_bad, "fails on the piece with the bad byte");
            if holds_bad {
                failed = true;
                break;
            }
        }
        if !failed {
            prop_assert_eq!(validator.finish().is_ok(), std::str::from_utf8(&bytes).is_ok());
        }
    }

    #[test]
    fn masking_twice_is_the_identity(
        data in prop::collection::vec(any::<u8>(), 0..100),
        key in any::<[u8; 4]>(),
        offset in 0..16usize,
    ) {
        let mut masked = data.clone();
        apply_mask(&mut masked, key, offset);
        let bytewise: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ key[(offset + i) % 4]).collect();
        prop_assert_eq!(&masked, &bytewise);
        apply_mask(&mut masked, key, offset);
        prop_assert_eq!(masked, data);
    }

    #[test]
    fn masking_can_be_split_at_any_point(
        data in prop::collection::vec(any::<u8>(), 0..100),
        key in any::<[u8; 4]>(),
        offset in 0..16usize,
        cut in any::<prop::sample::Index>(),
    ) {
        let cut = cut.index(data.len() + 1);
        let mut whole = data.clone();
        apply_mask(&mut whole, key, offset);
        let mut pieces = data;
        let (a, b) = pieces.split_at_mut(cut);
        apply_mask(a, key, offset);
        apply_mask(b, key, offset + cut);
        prop_assert_eq!(whole, pieces);
    }

    #[test]
    fn request_head_parsing_does_not_depend_on_chunking(
        lines in prop::collection::vec(
            prop_oneof![
                4 => prop::sample::select(vec![
                    "Host: example.com", "Upgrade: websocket", "Connection: Upgrade",
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
                    "X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "Bad Header", "X-Nul: a\0b",
                ]).prop_map(String::from),
                1 => prop::collection::vec(any::<char>(), 0..12).prop_map(|cs| cs.into_iter().collect()),
            ],
            0..8,
        ),
        request_line in prop::sample::select(vec!["GET /chat HTTP/1.1", "POST / HTTP/1.0", "GET / HTTP/1.1", "\0"]),
        eol in prop::sample::select(vec!["\r\n", "\n"]),
        complete in prop_oneof![3 => Just(true), 1 => Just(false)],
        max_len in prop_oneof![1 => Just(8192usize), 2 => 16..300usize],
        sizes in plan(),
    ) {
        let mut request = format!("{request_line}{eol}");
        for line in &lines {
            request.push_str(line);
            request.push_str(eol);
        }
        if complete {
            request.push_str(eol);
        }
        let (chunked, whole) = head_outcomes(request.as_bytes(), max_len, &sizes);
        prop_assert_eq!(chunked, whole);
    }
}

/// Found by the `handshake` fuzz target: a head that runs past the limit and holds a malformed byte beyond it
/// was `TooLarge` when read in pieces (the limit is hit first) but `Malformed` when it arrived in one read
/// (httparse reached the bad byte). The outcome must not depend on how the bytes arrived.
#[test]
fn regression_head_past_the_limit_is_too_large_however_it_arrives() {
    let request = b"GET / HTTP/1.1\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\0\r\n\r\n";
    let max_len = 32;
    let (chunked, whole) = head_outcomes(request, max_len, &[33]);
    assert_eq!(chunked, Err(HeadError::TooLarge));
    assert_eq!(whole, Err(HeadError::TooLarge));
}
