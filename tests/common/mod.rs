//! Shared helpers for the integration tests: an in-process server on a free port, and a small blocking
//! WebSocket client over a real TCP socket, built on roomcast's own client-side codec.
//!
//! Each test binary uses a subset of these helpers, hence the dead-code allowance.
#![allow(dead_code)]

pub mod attack;
pub mod chat;
pub mod redis;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use roomcast::protocol::deflate::{accept_server_answer, DeflateParams, CLIENT_OFFER};
use roomcast::protocol::frame::{FrameDecoder, FrameEvent, IncomingMask, OpCode};
use roomcast::protocol::handshake;
use roomcast::protocol::{CloseCode, Connection, Event, Message, MessageKind, Role};
use roomcast::{Config, Server, ShutdownHandle};
use serde_json::Value;

/// A server running on its own thread; shut down and joined on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with the default configuration on 127.0.0.1:0.
    pub fn start() -> TestServer {
        TestServer::with_config(|_| {})
    }

    /// Starts a server on 127.0.0.1:0 after `adjust` has changed the default configuration.
    pub fn with_config(adjust: impl FnOnce(&mut Config)) -> TestServer {
        // Every test client comes from 127.0.0.1: the per-address limits are off unless a test sets them.
        let defaults = Config::default();
        let mut config = Config {
            addr: "127.0.0.1:0".parse().unwrap(),
            shutdown_timeout: Duration::from_millis(500),
            addresses: defaults.addresses.clone().unlimited(),
            ..defaults
        };
        adjust(&mut config);
        // The server is single-threaded by design (it shares frames with `Rc`), so it is built on its own thread.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut server = Server::bind(config).expect("bind");
            ready_tx
                .send((server.local_addr(), server.shutdown_handle()))
                .unwrap();
            server.run().expect("server loop");
        });
        let (addr, handle) = ready_rx.recv().expect("server started");
        TestServer {
            addr,
            handle,
            thread: Some(thread),
        }
    }

    /// Asks for a graceful shutdown and waits for the loop to end.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.handle.shutdown();
        if let Some(thread) = self.thread.take() {
            thread.join().expect("server thread panicked");
        }
    }

    /// A raw TCP connection to the server.
    pub fn tcp(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        stream
    }

    /// Sends a raw request and returns everything the server answers until it closes (or 5 s pass).
    pub fn raw_exchange(&self, request: &[u8]) -> String {
        let mut stream = self.tcp();
        stream.write_all(request).unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        String::from_utf8_lossy(&response).into_owned()
    }

    /// An HTTP GET; returns (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .raw_exchange(format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr).as_bytes());
        parse_http_response(&response)
    }

    /// A WebSocket client connected to `path` (e.g. "/ws", "/echo").
    pub fn ws(&self, path: &str) -> TestClient {
        TestClient::connect(self.addr, path).expect("websocket handshake")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_inner();
        }
    }
}

/// Splits a raw HTTP response into (status, body).
pub fn parse_http_response(response: &str) -> (u16, String) {
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// What a client observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The server's Close code (None for an empty Close body).
    Close(Option<u16>),
    /// TCP ended (after or without a Close).
    Eof,
}

/// A blocking WebSocket client for tests: masks its frames, reads with a timeout.
pub struct TestClient {
    pub stream: TcpStream,
    conn: Connection,
    pending: std::collections::VecDeque<Received>,
    eof: bool,
    /// permessage-deflate as the server agreed to it, if it did.
    pub deflate: Option<DeflateParams>,
    /// Reads the server's frames a second time, for their headers.
    headers: FrameDecoder,
    /// Data frames received with RSV1 set (compressed, RFC 7692 6) and without.
    pub compressed_frames: usize,
    pub plain_frames: usize,
    /// Bytes received from the server after the handshake.
    pub wire_bytes: usize,
}

impl TestClient {
    /// Connects and completes the opening handshake.
    pub fn connect(addr: SocketAddr, path: &str) -> io::Result<TestClient> {
        TestClient::connect_with_headers(addr, path, "")
    }

    /// Connects offering permessage-deflate as browsers do (`CLIENT_OFFER`), and uses it if the server agrees.
    pub fn connect_deflate(addr: SocketAddr, path: &str) -> io::Result<TestClient> {
        TestClient::connect_offering(addr, path, "", Some(CLIENT_OFFER))
    }

    /// Connects with extra header lines (each ending in "\r\n").
    pub fn connect_with_headers(
        addr: SocketAddr,
        path: &str,
        extra: &str,
    ) -> io::Result<TestClient> {
        TestClient::connect_offering(addr, path, extra, None)
    }

    /// Connects with extra header lines, offering `extensions` if given.
    pub fn connect_offering(
        addr: SocketAddr,
        path: &str,
        extra: &str,
        extensions: Option<&str>,
    ) -> io::Result<TestClient> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut request = handshake::ClientRequest::with_random_key();
        request.extensions = extensions.map(str::to_owned);
        let mut bytes = Vec::new();
        handshake::write_client_request(&addr.to_string(), path, &request, &mut bytes);
        // The extra lines go before the blank line that ends the head.
        bytes.truncate(bytes.len() - 2);
        bytes.extend_from_slice(extra.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        stream.write_all(&bytes)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head = loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    String::from_utf8_lossy(&buf).into_owned(),
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
            match handshake::parse_server_response(&buf, &request) {
                Ok(Some(answer)) => break answer,
                Ok(None) => continue,
                Err(e) => {
                    return Err(io::Error::other(format!(
                        "{e}: {}",
                        String::from_utf8_lossy(&buf)
                    )));
                }
            }
        };
        let deflate = accept_server_answer(&head.extensions).map_err(io::Error::other)?;
        let mut conn = Connection::new(Role::Client, 64 << 20);
        if let Some(params) = &deflate {
            conn.use_deflate(params);
        }
        let mut headers = FrameDecoder::new(IncomingMask::Forbidden);
        headers.allow_compression();
        let mut client = TestClient {
            stream,
            conn,
            pending: Default::default(),
            eof: false,
            deflate,
            headers,
            compressed_frames: 0,
            plain_frames: 0,
            wire_bytes: 0,
        };
        let leftover = buf.split_off(head.head_len);
        client.absorb(&leftover);
        Ok(client)
    }

    fn absorb(&mut self, bytes: &[u8]) {
        self.wire_bytes += bytes.len();
        let mut rest = bytes;
        while let Ok((used, Some(event))) = self.headers.decode(rest) {
            rest = &rest[used..];
            if let FrameEvent::Header(header) = event {
                match (header.opcode.is_control(), header.rsv1) {
                    (true, _) => {}
                    (false, true) => self.compressed_frames += 1,
                    (false, false) => self.plain_frames += 1,
                }
            }
        }
        let mut events = Vec::new();
        let _ = self.conn.feed(bytes, &mut events);
        for event in events {
            self.pending.push_back(match event {
                Event::Message(Message::Text(text)) => Received::Text(text),
                Event::Message(Message::Binary(bytes)) => Received::Binary(bytes),
                Event::Ping(p) => Received::Ping(p),
                Event::Pong(p) => Received::Pong(p),
                Event::Close(frame) => Received::Close(frame.code.map(CloseCode::get)),
            });
        }
        let out = self.conn.take_output();
        if !out.is_empty() {
            let _ = self.stream.write_all(&out);
        }
    }

    /// The next thing received, waiting at most `timeout`; `None` on timeout.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Some(r);
            }
            if self.eof {
                return Some(Received::Eof);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.absorb(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(_) => self.eof = true,
            }
        }
    }

    /// The next thing received within 5 s; panics on timeout.
    pub fn recv(&mut self) -> Received {
        self.recv_timeout(Duration::from_secs(5))
            .expect("nothing received within 5 s")
    }

    /// The next text message, skipping pings/pongs; panics on anything else.
    pub fn recv_text(&mut self) -> String {
        loop {
            match self.recv() {
                Received::Text(t) => return t,
                Received::Ping(_) | Received::Pong(_) => continue,
                other => panic!("expected a text message, got {other:?}"),
            }
        }
    }

    /// The next text message parsed as JSON.
    pub fn recv_json(&mut self) -> Value {
        let text = self.recv_text();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// Receives JSON messages until one has `"type": kind`; returns it. Panics after 5 s.
    pub fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let msg = self.recv_json();
            if msg["type"] == kind {
                return msg;
            }
        }
    }

    /// Waits for the server's Close and returns its code; skips data until then.
    pub fn recv_close(&mut self) -> Option<u16> {
        loop {
            match self.recv() {
                Received::Close(code) => return code,
                Received::Eof => panic!("TCP ended without a Close"),
                _ => continue,
            }
        }
    }

    /// True if nothing arrives within `wait`.
    pub fn is_quiet(&mut self, wait: Duration) -> bool {
        self.recv_timeout(wait).is_none()
    }

    pub fn send_text(&mut self, text: &str) {
        self.conn.send(MessageKind::Text, text.as_bytes()).unwrap();
        self.flush();
    }

    /// Sends several text frames with one TCP write, so that the server reads them, and answers them, in one turn
    /// of its loop.
    pub fn send_texts_in_one_write(&mut self, texts: &[String]) {
        for text in texts {
            self.conn.send(MessageKind::Text, text.as_bytes()).unwrap();
        }
        self.flush();
    }

    pub fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string());
    }

    pub fn send_binary(&mut self, bytes: &[u8]) {
        self.conn.send(MessageKind::Binary, bytes).unwrap();
        self.flush();
    }

    pub fn send_ping(&mut self, payload: &[u8]) {
        self.conn.send_ping(payload).unwrap();
        self.flush();
    }

    /// Starts the closing handshake.
    pub fn close(&mut self, code: u16) {
        self.conn.close(CloseCode::new(code), "");
        self.flush();
    }

    /// Writes raw bytes, e.g. a hand-made (possibly invalid) frame.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn flush(&mut self) {
        let out = self.conn.take_output();
        self.stream.write_all(&out).unwrap();
    }
}

/// The header of a masked client frame with an arbitrary first byte, a declared payload length (minimal length
/// form; the length may be one RFC 6455 5.2 forbids, such as one with the top bit set) and the masking key.
pub fn masked_header(first_byte: u8, len: u64, key: [u8; 4]) -> Vec<u8> {
    let mut out = vec![first_byte];
    match len {
        0..=125 => out.push(0x80 | len as u8),
        126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out
}

/// A masked client frame with arbitrary header bits, for malformed-frame tests.
pub fn raw_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut out = masked_header(first_byte, payload.len() as u64, key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// Decodes server frames from raw bytes (for tests that speak TCP by hand).
pub fn decode_server_frames(bytes: &[u8]) -> Vec<(OpCode, Vec<u8>)> {
    let mut decoder = FrameDecoder::new(IncomingMask::Forbidden);
    let mut frames: Vec<(OpCode, Vec<u8>)> = Vec::new();
    let mut rest = bytes;
    while let Ok((used, Some(event))) = decoder.decode(rest) {
        rest = &rest[used..];
        match event {
            FrameEvent::Header(h) => frames.push((h.opcode, Vec::new())),
            FrameEvent::Payload(p) => p.unmask_into(&mut frames.last_mut().unwrap().1),
        }
    }
    frames
}

/// Joins `room` as `user` with protocol v2 and returns the `joined` message (after the system line).
pub fn join(client: &mut TestClient, user: &str, room: &str) -> Value {
    client.send_json(&serde_json::json!({"type": "join", "userId": user, "room": room, "v": 2}));
    client.recv_type("joined")
}
