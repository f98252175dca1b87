//! Interoperability with an independent client: the `tungstenite` crate speaks to roomcast over a real socket.
//! tungstenite checks the opening handshake and every server frame strictly (masking, RSV bits, opcodes, lengths,
//! UTF-8, close codes), so these tests check our encoder and handshake against someone else's reading of RFC 6455.

mod common;

use std::borrow::Cow;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame};
use tungstenite::{Error, Message, WebSocket};

type Ws = WebSocket<TcpStream>;

/// Connects tungstenite to `path` over a plain TCP stream with read and write timeouts, so no test can hang.
fn connect(server: &TestServer, path: &str) -> Ws {
    let stream = TcpStream::connect(server.addr).expect("connect");
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let url = format!("ws://{}{path}", server.addr);
    let (ws, response) = tungstenite::client::client(url.as_str(), stream)
        .unwrap_or_else(|e| panic!("tungstenite handshake with {path} failed: {e}"));
    assert_eq!(response.status().as_u16(), 101);
    ws
}

/// The next message, with the error spelled out on failure.
fn read(ws: &mut Ws) -> Message {
    ws.read()
        .unwrap_or_else(|e| panic!("tungstenite read failed: {e}"))
}

/// The next text message as JSON, skipping control messages.
fn read_json(ws: &mut Ws) -> Value {
    loop {
        match read(ws) {
            Message::Text(text) => {
                return serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Reads JSON messages until one has `"type": kind`.
fn read_type(ws: &mut Ws, kind: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(Instant::now() < deadline, "no {kind:?} message within 5 s");
        let message = read_json(ws);
        if message["type"] == kind {
            return message;
        }
    }
}

/// Completes a client-initiated close: our Close is answered with the same code, then the server ends TCP and
/// tungstenite reports a clean `ConnectionClosed` (it would report `ReceivedAfterClosing` had the server sent
/// anything after its Close, and `ResetWithoutClosingHandshake` had it dropped TCP without one).
fn close_cleanly(ws: &mut Ws, code: CloseCode) {
    ws.close(Some(CloseFrame {
        code,
        reason: Cow::Borrowed("bye"),
    }))
    .expect("send Close");
    let start = Instant::now();
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), u16::from(code)),
            Ok(Message::Close(None)) => panic!("the server's Close has no code"),
            // Sent before the server read our Close (a broadcast, say): allowed. After its Close, tungstenite
            // itself would fail with `ReceivedAfterClosing`.
            Ok(Message::Text(_) | Message::Binary(_) | Message::Ping(_) | Message::Pong(_)) => {}
            Ok(other) => panic!("unexpected {other:?}"),
            Err(Error::ConnectionClosed) => break,
            Err(e) => panic!("the closing handshake did not complete cleanly: {e}"),
        }
    }
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn tungstenite_echoes_text_and_binary() {
    let server = TestServer::start();
    let mut ws = connect(&server, "/echo");
    for text in ["hello", "", "κόσμε 𝄞 ✓"] {
        ws.send(Message::Text(text.into())).unwrap();
        assert_eq!(read(&mut ws), Message::Text(text.into()));
    }
    for bytes in [vec![0u8, 1, 2, 255], Vec::new(), vec![0xAB; 300]] {
        ws.send(Message::Binary(bytes.clone())).unwrap();
        assert_eq!(read(&mut ws), Message::Binary(bytes));
    }
    close_cleanly(&mut ws, CloseCode::Normal);
}

#[test]
fn tungstenite_echoes_payloads_in_every_length_form_up_to_1_mib() {
    // /echo takes what the chat route takes unless asked for more, as the Autobahn run does.
    let server = TestServer::with_config(|c| {
        c.echo_max_message_size = 16 << 20;
        c.max_bytes_per_sec = 0;
    });
    let mut ws = connect(&server, "/echo");
    for len in [125usize, 126, 65535, 65536, 1 << 20] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        ws.send(Message::Binary(payload.clone())).unwrap();
        match read(&mut ws) {
            Message::Binary(echoed) => assert!(echoed == payload, "payload of {len} bytes differs"),
            other => panic!("expected binary, got {other:?}"),
        }
    }
    let text = "ü".repeat(512 * 1024);
    ws.send(Message::Text(text.clone())).unwrap();
    assert_eq!(read(&mut ws), Message::Text(text));
    close_cleanly(&mut ws, CloseCode::Normal);
}

#[test]
fn tungstenite_ping_is_answered_with_a_matching_pong() {
    let server = TestServer::start();
    let mut ws = connect(&server, "/echo");
    for payload in [b"heartbeat".to_vec(), Vec::new(), vec![7u8; 125]] {
        ws.send(Message::Ping(payload.clone())).unwrap();
        assert_eq!(read(&mut ws), Message::Pong(payload));
    }
    // An unsolicited Pong is not answered: the next message is the echo.
    ws.send(Message::Pong(b"unasked".to_vec())).unwrap();
    ws.send(Message::Text("next".into())).unwrap();
    assert_eq!(read(&mut ws), Message::Text("next".into()));
    close_cleanly(&mut ws, CloseCode::Normal);
}

#[test]
fn tungstenite_fragmented_message_with_interleaved_ping_is_reassembled() {
    let server = TestServer::start();
    let mut ws = connect(&server, "/echo");
    let text = "fragmented κόσμε message".as_bytes();
    ws.write(Message::Frame(Frame::message(
        text[..12].to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .unwrap();
    ws.write(Message::Ping(b"between".to_vec())).unwrap();
    ws.write(Message::Frame(Frame::message(
        text[12..].to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .unwrap();
    ws.flush().unwrap();
    let mut got = vec![read(&mut ws), read(&mut ws)];
    got.sort_by_key(|m| matches!(m, Message::Text(_)));
    assert_eq!(
        got,
        vec![
            Message::Pong(b"between".to_vec()),
            Message::Text(String::from_utf8(text.to_vec()).unwrap()),
        ]
    );
    close_cleanly(&mut ws, CloseCode::Normal);
}

#[test]
fn tungstenite_close_handshake_completes_with_application_codes() {
    let server = TestServer::start();
    for code in [
        CloseCode::Away,
        CloseCode::Library(3000),
        CloseCode::Library(4999),
    ] {
        let mut ws = connect(&server, "/echo");
        ws.send(Message::Text("x".into())).unwrap();
        assert_eq!(read(&mut ws), Message::Text("x".into()));
        close_cleanly(&mut ws, code);
    }
}

#[test]
fn tungstenite_sees_protocol_errors_as_a_clean_close_1002() {
    let server = TestServer::start();
    let mut ws = connect(&server, "/echo");
    // A reserved opcode, sent as a raw frame: the server fails the connection with 1002 and closes.
    ws.send(Message::Frame(Frame::message(
        b"x".to_vec(),
        OpCode::Data(Data::Reserved(3)),
        true,
    )))
    .unwrap();
    match read(&mut ws) {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Protocol),
        other => panic!("expected Close 1002, got {other:?}"),
    }
    // tungstenite answers the Close; the server then ends TCP.
    match ws.read() {
        Err(Error::ConnectionClosed) => {}
        other => panic!("expected a clean end, got {other:?}"),
    }
}

#[test]
fn tungstenite_joins_the_chat_and_chats() {
    let server = TestServer::start();
    let mut alice = connect(&server, "/ws");
    let join =
        |user: &str| json!({"type": "join", "userId": user, "room": "interop", "v": 2}).to_string();
    alice.send(Message::Text(join("alice"))).unwrap();
    let system = read_json(&mut alice);
    assert_eq!(system["type"], "system", "{system}");
    assert!(system["content"]
        .as_str()
        .is_some_and(|c| c.contains("interop")));
    let joined = read_type(&mut alice, "joined");
    assert_eq!(joined["room"], "interop");
    assert_eq!(joined["userId"], "alice");
    assert!(joined["session"].is_string());

    // A second tungstenite client on the chat via an Upgrade on `/`.
    let mut bob = connect(&server, "/");
    bob.send(Message::Text(join("bob"))).unwrap();
    read_type(&mut bob, "joined");

    alice
        .send(Message::Text(
            json!({"type": "chat", "content": "hi from tungstenite"}).to_string(),
        ))
        .unwrap();
    for ws in [&mut alice, &mut bob] {
        let chat = read_type(ws, "chat");
        assert_eq!(chat["from"], "alice");
        assert_eq!(chat["content"], "hi from tungstenite");
        assert!(chat["seq"].is_u64());
    }
    close_cleanly(&mut alice, CloseCode::Normal);
    close_cleanly(&mut bob, CloseCode::Normal);
}

#[test]
fn tungstenite_binary_on_the_chat_gets_close_1003() {
    let server = TestServer::start();
    let mut ws = connect(&server, "/ws");
    ws.send(Message::Binary(vec![1, 2, 3])).unwrap();
    match read(&mut ws) {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Unsupported),
        other => panic!("expected Close 1003, got {other:?}"),
    }
    // tungstenite has answered the Close; the server must end TCP at once (well before its 5 s close timeout)
    // without sending anything else.
    let start = Instant::now();
    match ws.read() {
        Err(Error::ConnectionClosed) => {}
        other => panic!("expected a clean end, got {other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "TCP ended only after {:?}",
        start.elapsed()
    );
}
