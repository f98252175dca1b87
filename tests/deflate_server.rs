//! permessage-deflate on the running server (RFC 7692): what the opening handshake agrees to on each route, that
//! chat messages reach clients that agreed to it compressed and everyone else plain, that `/echo` keeps context
//! as offered, and that a compressed message is held to the size limit and the byte budget by what it inflates to.

mod common;

use std::time::Duration;

use common::chat::{chat_msg, join_expect};
use common::{masked_header, Received, TestClient, TestServer};
use roomcast::http::Compression;
use roomcast::protocol::deflate::MessageCompressor;
use serde_json::{json, Value};

/// A chat line long enough to be compressed, and as repetitive as chat text tends to be.
fn long_line(n: usize) -> String {
    format!("line {n}: ") + &"the quick brown fox jumps over the lazy dog; ".repeat(12)
}

/// The response head of an upgrade to `path` offering `offer`.
fn upgrade_response(server: &TestServer, path: &str, offer: &str) -> String {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: {offer}\r\n\r\n"
    );
    server.raw_exchange(request.as_bytes())
}

#[test]
fn rfc_7692_5_the_101_agrees_to_chromiums_offer_without_context_takeover_on_the_chat() {
    let server = TestServer::start();
    let response = upgrade_response(&server, "/ws", "permessage-deflate; client_max_window_bits");
    assert!(response.starts_with("HTTP/1.1 101 "), "{response}");
    assert!(
        response.contains(
            "\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
             client_no_context_takeover\r\n"
        ),
        "{response}"
    );
    let client = TestClient::connect_deflate(server.addr, "/ws").unwrap();
    let params = client.deflate.expect("agreed");
    assert!(params.server_no_context_takeover && params.client_no_context_takeover);
}

#[test]
fn rfc_6455_4_2_1_a_malformed_extension_list_is_refused_with_400() {
    let server = TestServer::start();
    let response = upgrade_response(&server, "/ws", "permessage-deflate; x=\"open");
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
}

#[test]
fn with_deflate_off_an_offer_is_declined_and_messages_go_plain() {
    let server = TestServer::with_config(|c| c.compression = Compression::Off);
    let response = upgrade_response(&server, "/ws", "permessage-deflate");
    assert!(response.starts_with("HTTP/1.1 101 "), "{response}");
    assert!(!response.contains("Sec-WebSocket-Extensions"), "{response}");
    let mut client = TestClient::connect_deflate(server.addr, "/echo").unwrap();
    assert_eq!(client.deflate, None);
    client.send_text(&long_line(1));
    assert_eq!(client.recv_text(), long_line(1));
    assert_eq!(client.compressed_frames, 0);
}

fn wait_for_content(client: &mut TestClient, content: &str) -> Value {
    loop {
        let message = client.recv_type("chat");
        if message["content"] == content {
            return message;
        }
    }
}

#[test]
fn a_broadcast_reaches_deflate_members_compressed_and_the_others_plain_with_the_same_text() {
    let server = TestServer::start();
    let mut alice = TestClient::connect_deflate(server.addr, "/ws").unwrap();
    let mut bob = TestClient::connect_deflate(server.addr, "/ws").unwrap();
    let mut carol = TestClient::connect(server.addr, "/ws").unwrap();
    join_expect(&mut alice, "alice", "lobby", 1);
    join_expect(&mut bob, "bob", "lobby", 2);
    join_expect(&mut carol, "carol", "lobby", 3);
    // Let the presence lines arrive first, so that only the message is counted.
    for client in [&mut alice, &mut bob] {
        let _ = client.is_quiet(Duration::from_millis(200));
    }
    let _ = carol.is_quiet(Duration::from_millis(200));
    let (bob_compressed, bob_bytes) = (bob.compressed_frames, bob.wire_bytes);
    let (carol_plain, carol_bytes) = (carol.plain_frames, carol.wire_bytes);
    let line = long_line(1);
    alice.send_json(&chat_msg(&line));
    let to_bob = wait_for_content(&mut bob, &line);
    let to_carol = wait_for_content(&mut carol, &line);
    assert_eq!(to_bob, to_carol, "the same message either way");
    assert_eq!(
        bob.compressed_frames,
        bob_compressed + 1,
        "bob's came compressed"
    );
    assert_eq!(carol.plain_frames, carol_plain + 1, "carol's came plain");
    let bob_wire = bob.wire_bytes - bob_bytes;
    let carol_wire = carol.wire_bytes - carol_bytes;
    assert!(
        bob_wire * 3 < carol_wire,
        "compressed {bob_wire} bytes vs plain {carol_wire}"
    );
}

#[test]
fn rfc_7692_8_a_personal_message_goes_plain_so_its_secrets_are_not_compressed_beside_chosen_text() {
    let server = TestServer::start();
    let mut alice = TestClient::connect_deflate(server.addr, "/ws").unwrap();
    let mut bob = TestClient::connect_deflate(server.addr, "/ws").unwrap();
    join_expect(&mut alice, "alice", "lobby", 1);
    let mut others = Vec::new();
    for n in 0..12 {
        let mut other = TestClient::connect(server.addr, "/ws").unwrap();
        join_expect(&mut other, &format!("member{n}"), "lobby", n + 2);
        others.push(other);
    }
    // The welcome carries bob's session token beside the names of the members: long enough to be compressed.
    let compressed_before = bob.compressed_frames;
    let joined = join_expect(&mut bob, "bob", "lobby", 14);
    assert!(joined["session"].is_string());
    assert!(joined.to_string().len() >= 256, "{joined}");
    assert_eq!(bob.compressed_frames, compressed_before);
    let _ = bob.is_quiet(Duration::from_millis(200));
    let before = bob.compressed_frames;
    let line = long_line(2);
    alice.send_json(&json!({"type": "dm", "to": "bob", "content": line}));
    let dm = bob.recv_type("dm");
    assert_eq!(dm["content"], line);
    assert_eq!(bob.compressed_frames, before, "a DM is personal too");
}

#[test]
fn echo_keeps_context_as_offered_so_a_repeated_message_costs_a_few_bytes() {
    let server = TestServer::start();
    let mut client =
        TestClient::connect_offering(server.addr, "/echo", "", Some("permessage-deflate")).unwrap();
    let params = client.deflate.expect("agreed");
    assert!(!params.server_no_context_takeover, "{params:?}");
    let line = long_line(3);
    let mut sizes = Vec::new();
    for _ in 0..4 {
        let before = client.wire_bytes;
        client.send_text(&line);
        assert_eq!(client.recv_text(), line);
        sizes.push(client.wire_bytes - before);
    }
    assert!(sizes[3] * 4 < sizes[0], "sizes {sizes:?}");
    assert_eq!(client.compressed_frames, 4);
}

/// A masked client frame with RSV1 set carrying `payload` compressed whole by zlib (what a hostile peer sends).
fn compressed_frame(payload: &[u8]) -> Vec<u8> {
    let mut compressed = Vec::new();
    MessageCompressor::with_level(15, true, 9)
        .compress(payload, &mut compressed)
        .unwrap();
    let key = [0x5a, 0x3c, 0x11, 0x07];
    // FIN, RSV1, Text (RFC 7692 6).
    let mut frame = masked_header(0xC1, compressed.len() as u64, key);
    frame.extend(compressed.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

#[test]
fn rfc_6455_10_4_a_small_frame_that_inflates_past_the_limit_is_closed_with_1009() {
    let server = TestServer::start();
    for path in ["/ws", "/echo"] {
        let mut client = TestClient::connect_deflate(server.addr, path).unwrap();
        assert!(client.deflate.is_some());
        let bomb = compressed_frame(&vec![b'a'; 16 << 20]);
        assert!(bomb.len() < 20 * 1024, "{} bytes on the wire", bomb.len());
        client.send_raw(&bomb);
        assert_eq!(client.recv_close(), Some(1009), "{path}");
    }
}

#[test]
fn inflated_bytes_are_charged_to_the_byte_budget() {
    let server = TestServer::with_config(|c| {
        c.echo_max_message_size = 4 << 20;
        c.max_bytes_per_sec = 100_000;
    });
    let mut client = TestClient::connect_deflate(server.addr, "/echo").unwrap();
    // 200 KB per second with the burst: a message of 150 KB passes, one of 1 MB (a few KB on the wire) does not.
    let small = "b".repeat(150_000);
    client.send_raw(&compressed_frame(small.as_bytes()));
    match client.recv() {
        Received::Text(text) => assert_eq!(text, small),
        other => panic!("{other:?}"),
    }
    let _ = client.is_quiet(Duration::from_millis(1500));
    let large = compressed_frame(&vec![b'c'; 1 << 20]);
    assert!(large.len() < 4096);
    client.send_raw(&large);
    assert_eq!(client.recv_close(), Some(1008));
}
