//! permessage-deflate through `protocol::Connection` (RFC 7692 6 and 7): a client and a server connection talk to
//! each other with each negotiated parameter set, and a peer's malformed or oversized compressed messages fail the
//! connection with the code RFC 7692 8 and RFC 6455 7.4.1 name.

use roomcast::protocol::deflate::{DeflateParams, MessageCompressor};
use roomcast::protocol::frame::{FrameDecoder, FrameEvent, FrameHeader, IncomingMask, OpCode};
use roomcast::protocol::{
    encode_server_message_compressed, CloseCode, Connection, Event, FeedLimit, FeedLimits, Message,
    MessageKind, ProtocolError, Role,
};

const LIMIT: usize = 1 << 20;

fn params(
    server_keeps: bool,
    client_keeps: bool,
    server_bits: u8,
    client_bits: u8,
) -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: !server_keeps,
        client_no_context_takeover: !client_keeps,
        server_max_window_bits: Some(server_bits),
        client_max_window_bits: Some(client_bits),
    }
}

fn pair(params: &DeflateParams) -> (Connection, Connection) {
    let mut client = Connection::new(Role::Client, LIMIT);
    let mut server = Connection::new(Role::Server, LIMIT);
    client.use_deflate(params);
    server.use_deflate(params);
    (client, server)
}

/// A chat-like message long enough to be compressed (over `MIN_COMPRESSED_LEN`).
fn chat_message(n: usize) -> String {
    format!(
        r#"{{"type":"message","room":"lobby","name":"user{n}","text":"message number {n}: the quick brown fox jumps over the lazy dog, and the lazy dog does not mind at all; the fox, for its part, jumps again and again over the dog, which sleeps on, message number {n}","time":1700000000{n:03},"id":{n}}}"#
    )
}

/// The headers of the frames in `wire`, as a peer reads them: RSV1 tells which messages went out compressed.
fn headers(wire: &[u8], incoming: IncomingMask) -> Vec<FrameHeader> {
    let mut decoder = FrameDecoder::new(incoming);
    decoder.allow_compression();
    let mut headers = Vec::new();
    let mut rest = wire;
    while let (used, Some(event)) = decoder.decode(rest).expect("well-formed frames") {
        rest = &rest[used..];
        if let FrameEvent::Header(header) = event {
            headers.push(header);
        }
    }
    headers
}

fn texts(events: Vec<Event>) -> Vec<String> {
    events
        .into_iter()
        .filter_map(|event| match event {
            Event::Message(Message::Text(text)) => Some(text),
            _ => None,
        })
        .collect()
}

#[test]
fn messages_round_trip_compressed_in_both_directions_with_every_takeover_and_window() {
    assert!(chat_message(0).len() >= roomcast::protocol::connection::MIN_COMPRESSED_LEN);
    for server_keeps in [false, true] {
        for client_keeps in [false, true] {
            for (server_bits, client_bits) in [(15, 15), (9, 9), (10, 12), (8, 8)] {
                let agreed = params(server_keeps, client_keeps, server_bits, client_bits);
                let (mut client, mut server) = pair(&agreed);
                let sent: Vec<String> = (0..20).map(chat_message).collect();
                for text in &sent {
                    client.send(MessageKind::Text, text.as_bytes()).unwrap();
                    server.send(MessageKind::Text, text.as_bytes()).unwrap();
                }
                let to_server = client.take_output();
                let to_client = server.take_output();
                let raw: usize = sent.iter().map(|t| t.len() + 4).sum();
                assert!(
                    to_server.len() < raw && to_client.len() < raw,
                    "{agreed:?}: {} and {} bytes for {raw}",
                    to_server.len(),
                    to_client.len()
                );
                for header in headers(&to_server, IncomingMask::Required) {
                    assert!(header.rsv1, "{agreed:?}: every client message compressed");
                }
                for header in headers(&to_client, IncomingMask::Forbidden) {
                    assert!(header.rsv1, "{agreed:?}: every server message compressed");
                }
                let mut events = Vec::new();
                server.feed(&to_server, &mut events).unwrap();
                assert_eq!(texts(events), sent, "{agreed:?} client to server");
                let mut events = Vec::new();
                client.feed(&to_client, &mut events).unwrap();
                assert_eq!(texts(events), sent, "{agreed:?} server to client");
            }
        }
    }
}

#[test]
fn context_takeover_makes_a_repeated_message_smaller_and_no_context_takeover_does_not() {
    let text = chat_message(7);
    let second_len = |keeps: bool| {
        let (_, mut server) = pair(&params(keeps, false, 15, 15));
        server.send(MessageKind::Text, text.as_bytes()).unwrap();
        let first = server.take_output().len();
        server.send(MessageKind::Text, text.as_bytes()).unwrap();
        (first, server.take_output().len())
    };
    let (first, again_kept) = second_len(true);
    let (_, again_alone) = second_len(false);
    assert!(
        again_kept < first / 4,
        "kept context: {again_kept} after {first}"
    );
    assert!(
        again_alone > first / 2,
        "each on its own: {again_alone} after {first}"
    );
}

#[test]
fn short_and_incompressible_messages_go_out_plain() {
    let (mut client, mut server) = pair(&params(false, false, 15, 15));
    let short = "x".repeat(100);
    let mut noise = vec![0u8; 2000];
    roomcast::protocol::mask::fill_random(&mut noise);
    server.send(MessageKind::Text, short.as_bytes()).unwrap();
    server.send(MessageKind::Binary, &noise).unwrap();
    let wire = server.take_output();
    let rsv1: Vec<bool> = headers(&wire, IncomingMask::Forbidden)
        .iter()
        .map(|h| h.rsv1)
        .collect();
    assert_eq!(rsv1, [false, false]);
    let mut events = Vec::new();
    client.feed(&wire, &mut events).unwrap();
    assert_eq!(
        events,
        [
            Event::Message(Message::Text(short)),
            Event::Message(Message::Binary(noise))
        ]
    );
}

#[test]
fn a_compressed_message_may_arrive_fragmented_with_a_ping_between_and_byte_by_byte() {
    let text = chat_message(3).repeat(4);
    let mut compressor = MessageCompressor::new(15, true);
    let mut compressed = Vec::new();
    compressor
        .compress(text.as_bytes(), &mut compressed)
        .unwrap();
    let (first, second) = compressed.split_at(compressed.len() / 2);
    let mut wire = Vec::new();
    // RFC 7692 6.1: RSV1 on the first frame only.
    let frame = |fin: bool, rsv1: bool, opcode: OpCode, payload: &[u8], wire: &mut Vec<u8>| {
        let key = [9, 8, 7, 6];
        FrameHeader {
            fin,
            rsv1,
            opcode,
            mask: Some(key),
            payload_len: payload.len() as u64,
        }
        .encode(wire);
        let start = wire.len();
        wire.extend_from_slice(payload);
        roomcast::protocol::mask::apply_mask(&mut wire[start..], key, 0);
    };
    frame(false, true, OpCode::Text, first, &mut wire);
    frame(true, false, OpCode::Ping, b"hi", &mut wire);
    frame(true, false, OpCode::Continuation, second, &mut wire);
    let mut server = Connection::new(Role::Server, LIMIT);
    server.use_deflate(&params(false, false, 15, 15));
    let mut events = Vec::new();
    for byte in &wire {
        server
            .feed(std::slice::from_ref(byte), &mut events)
            .unwrap();
    }
    assert_eq!(
        events,
        [
            Event::Ping(b"hi".to_vec()),
            Event::Message(Message::Text(text))
        ]
    );
}

/// A masked client frame with the given RSV1 bit.
fn client_frame(rsv1: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let key = [1, 2, 3, 4];
    let mut wire = Vec::new();
    FrameHeader {
        fin: true,
        rsv1,
        opcode,
        mask: Some(key),
        payload_len: payload.len() as u64,
    }
    .encode(&mut wire);
    let start = wire.len();
    wire.extend_from_slice(payload);
    roomcast::protocol::mask::apply_mask(&mut wire[start..], key, 0);
    wire
}

fn compressed(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    MessageCompressor::new(15, true)
        .compress(payload, &mut out)
        .unwrap();
    out
}

fn failure(server: &mut Connection, wire: &[u8]) -> (ProtocolError, Option<CloseCode>) {
    let mut events = Vec::new();
    let error = server
        .feed(wire, &mut events)
        .expect_err("the connection fails");
    (error, server.close_code())
}

#[test]
fn rsv1_without_permessage_deflate_fails_with_1002() {
    let mut server = Connection::new(Role::Server, LIMIT);
    let (_, code) = failure(
        &mut server,
        &client_frame(true, OpCode::Text, &compressed(b"hello")),
    );
    assert_eq!(code, Some(CloseCode::PROTOCOL_ERROR));
}

#[test]
fn rsv1_on_a_control_frame_fails_with_1002() {
    let mut server = Connection::new(Role::Server, LIMIT);
    server.use_deflate(&params(false, false, 15, 15));
    let (_, code) = failure(&mut server, &client_frame(true, OpCode::Ping, b""));
    assert_eq!(code, Some(CloseCode::PROTOCOL_ERROR));
}

#[test]
fn data_that_is_not_deflate_fails_with_1007() {
    let mut server = Connection::new(Role::Server, LIMIT);
    server.use_deflate(&params(false, false, 15, 15));
    // BTYPE = 11 is reserved (RFC 1951 3.2.3).
    let (error, code) = failure(
        &mut server,
        &client_frame(true, OpCode::Binary, &[0xff, 0xff, 0xff]),
    );
    assert!(matches!(error, ProtocolError::BadCompression), "{error:?}");
    assert_eq!(code, Some(CloseCode::INVALID_PAYLOAD));
}

#[test]
fn compressed_text_that_inflates_to_invalid_utf8_fails_with_1007() {
    let mut server = Connection::new(Role::Server, LIMIT);
    server.use_deflate(&params(false, false, 15, 15));
    let (_, code) = failure(
        &mut server,
        &client_frame(true, OpCode::Text, &compressed(&[b'a', 0xff, b'b'])),
    );
    assert_eq!(code, Some(CloseCode::INVALID_PAYLOAD));
}

#[test]
fn a_small_message_that_inflates_past_the_limit_fails_with_1009_before_it_is_held() {
    let mut server = Connection::new(Role::Server, 64 * 1024);
    server.use_deflate(&params(false, false, 15, 15));
    let bomb = compressed(&vec![b'a'; 16 << 20]);
    assert!(bomb.len() < 64 * 1024, "{} compressed bytes", bomb.len());
    let (error, code) = failure(&mut server, &client_frame(true, OpCode::Text, &bomb));
    assert!(
        matches!(error, ProtocolError::MessageTooBig { .. }),
        "{error:?}"
    );
    assert_eq!(code, Some(CloseCode::MESSAGE_TOO_BIG));
    assert_eq!(server.buffered_bytes(), 0, "nothing held after the failure");
}

#[test]
fn an_inflation_limit_holds_a_message_back_and_the_next_calls_finish_it_unchanged() {
    let text = chat_message(1).repeat(200);
    let wire = client_frame(true, OpCode::Text, &compressed(text.as_bytes()));
    let mut server = Connection::new(Role::Server, LIMIT);
    server.use_deflate(&params(false, false, 15, 15));
    let mut events = Vec::new();
    let limits = FeedLimits {
        frames: u32::MAX,
        inflated_bytes: 1000,
    };
    let fed = server.feed_within(&wire, &mut events, limits).unwrap();
    assert_eq!(fed.stopped, Some(FeedLimit::InflatedBytes));
    assert_eq!(fed.inflated, 1000);
    assert!(events.is_empty());
    let mut rest = &wire[fed.used..];
    let mut total = fed.inflated;
    let mut calls = 1;
    while events.is_empty() {
        let fed = server.feed_within(rest, &mut events, limits).unwrap();
        assert!(fed.inflated <= 1000);
        total += fed.inflated;
        rest = &rest[fed.used..];
        calls += 1;
        assert!(calls < 1000, "no progress");
    }
    assert_eq!(total, text.len());
    assert!(calls > text.len() / 1000, "{calls} calls");
    assert_eq!(texts(events), [text]);
}

#[test]
fn a_frame_limit_leaves_the_next_frame_unread() {
    let mut server = Connection::new(Role::Server, LIMIT);
    server.use_deflate(&params(false, false, 15, 15));
    let mut wire = client_frame(true, OpCode::Text, &compressed(chat_message(1).as_bytes()));
    let first_len = wire.len();
    wire.extend(client_frame(
        true,
        OpCode::Text,
        &compressed(chat_message(2).as_bytes()),
    ));
    let mut events = Vec::new();
    let fed = server
        .feed_within(
            &wire,
            &mut events,
            FeedLimits {
                frames: 1,
                inflated_bytes: usize::MAX,
            },
        )
        .unwrap();
    assert_eq!(fed.stopped, Some(FeedLimit::Frames));
    assert_eq!(fed.used, first_len);
    assert_eq!(fed.inflated, chat_message(1).len());
    assert_eq!(texts(events), [chat_message(1)]);
}

#[test]
fn a_shared_compressed_frame_is_read_by_every_connection_of_its_window() {
    let text = chat_message(42);
    let mut frame = Vec::new();
    assert!(encode_server_message_compressed(
        MessageKind::Text,
        text.as_bytes(),
        12,
        &mut frame
    ));
    assert!(frame.len() < text.len());
    for keeps in [false, true] {
        // A client that keeps its own context still reads a server that compresses each message alone.
        let (mut client, server) = pair(&params(false, keeps, 12, 15));
        assert_eq!(server.shared_compression_window(), Some(12));
        for _ in 0..3 {
            let mut events = Vec::new();
            client.feed(&frame, &mut events).unwrap();
            assert_eq!(texts(events), std::slice::from_ref(&text));
        }
    }
    let (_, keeping) = pair(&params(true, false, 15, 15));
    assert_eq!(
        keeping.shared_compression_window(),
        None,
        "a server keeping context compresses per peer"
    );
    let mut short = Vec::new();
    assert!(!encode_server_message_compressed(
        MessageKind::Text,
        b"hi",
        15,
        &mut short
    ));
    assert!(short.is_empty());
}

#[test]
fn an_echo_of_a_large_owned_payload_is_compressed_too() {
    let (mut client, mut server) = pair(&params(false, false, 15, 15));
    let payload = chat_message(5).repeat(100).into_bytes();
    server
        .send_owned(MessageKind::Binary, payload.clone())
        .unwrap();
    let wire = server.take_output();
    assert!(wire.len() < payload.len() / 10, "{} bytes", wire.len());
    let mut events = Vec::new();
    client.feed(&wire, &mut events).unwrap();
    assert_eq!(events, [Event::Message(Message::Binary(payload))]);
}

#[test]
fn an_empty_compressed_frame_is_an_empty_message_and_a_kept_context_reads_on() {
    let mut server = Connection::new(Role::Server, LIMIT);
    server.use_deflate(&params(false, true, 15, 15));
    let mut compressor = MessageCompressor::new(15, false);
    let mut wire = Vec::new();
    for text in ["first message, first message", ""] {
        let mut compressed = Vec::new();
        if !text.is_empty() {
            compressor
                .compress(text.as_bytes(), &mut compressed)
                .unwrap();
        }
        wire.extend(client_frame(true, OpCode::Text, &compressed));
    }
    let mut third = Vec::new();
    compressor
        .compress(b"first message, again", &mut third)
        .unwrap();
    wire.extend(client_frame(true, OpCode::Text, &third));
    let mut events = Vec::new();
    server.feed(&wire, &mut events).unwrap();
    assert_eq!(
        texts(events),
        ["first message, first message", "", "first message, again"]
    );
}

/// `payload` compressed as a room's broadcast is (`QuickCompressor`: fixed codes, which the server inflates without
/// zlib-rs when the message arrives whole in one frame).
fn quick_compressed(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    roomcast::protocol::deflate::QuickCompressor::new(15)
        .compress_if_smaller(payload, &mut out)
        .expect("compressible");
    out
}

#[test]
fn a_fixed_code_message_whole_in_one_frame_reads_as_it_does_byte_by_byte() {
    let texts_sent: Vec<String> = (0..5).map(chat_message).collect();
    let mut wire = Vec::new();
    for text in &texts_sent {
        wire.extend(client_frame(
            true,
            OpCode::Text,
            &quick_compressed(text.as_bytes()),
        ));
    }
    let mut whole = Connection::new(Role::Server, LIMIT);
    whole.use_deflate(&params(false, false, 15, 15));
    let mut whole_events = Vec::new();
    whole.feed(&wire, &mut whole_events).unwrap();
    let mut bytewise = Connection::new(Role::Server, LIMIT);
    bytewise.use_deflate(&params(false, false, 15, 15));
    let mut bytewise_events = Vec::new();
    for byte in &wire {
        bytewise
            .feed(std::slice::from_ref(byte), &mut bytewise_events)
            .unwrap();
    }
    assert_eq!(texts(whole_events), texts_sent);
    assert_eq!(texts(bytewise_events), texts_sent);
}

#[test]
fn a_fixed_code_message_over_the_inflation_limit_of_a_call_is_held_back_as_before() {
    let text = chat_message(3);
    let wire = client_frame(true, OpCode::Text, &quick_compressed(text.as_bytes()));
    let mut server = Connection::new(Role::Server, LIMIT);
    server.use_deflate(&params(false, false, 15, 15));
    let limits = FeedLimits {
        frames: u32::MAX,
        inflated_bytes: 100,
    };
    let mut events = Vec::new();
    let mut rest = &wire[..];
    let mut calls = 0;
    while events.is_empty() {
        let fed = server.feed_within(rest, &mut events, limits).unwrap();
        assert!(fed.inflated <= 100, "{} bytes in one call", fed.inflated);
        rest = &rest[fed.used..];
        calls += 1;
        assert!(calls < 100, "no progress");
    }
    assert!(calls > text.len() / 100, "{calls} calls");
    assert_eq!(texts(events), [text]);
}

#[test]
fn a_fixed_code_message_past_the_size_limit_fails_with_1009() {
    let mut server = Connection::new(Role::Server, 1024);
    server.use_deflate(&params(false, false, 15, 15));
    let (error, code) = failure(
        &mut server,
        &client_frame(true, OpCode::Text, &quick_compressed(&[b'a'; 5000])),
    );
    assert!(
        matches!(error, ProtocolError::MessageTooBig { .. }),
        "{error:?}"
    );
    assert_eq!(code, Some(CloseCode::MESSAGE_TOO_BIG));
}

#[test]
fn fixed_code_text_that_inflates_to_invalid_utf8_fails_with_1007() {
    let mut server = Connection::new(Role::Server, LIMIT);
    server.use_deflate(&params(false, false, 15, 15));
    let mut payload = b"abcabcabcabcabcabcabcabcabcabc".to_vec();
    payload.push(0xff);
    let (_, code) = failure(
        &mut server,
        &client_frame(true, OpCode::Text, &quick_compressed(&payload)),
    );
    assert_eq!(code, Some(CloseCode::INVALID_PAYLOAD));
}
