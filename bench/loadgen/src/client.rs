//! One load-generator connection: a non-blocking TCP socket that speaks WebSocket through roomcast's own client
//! codec (`Role::Client`), or the raw length-prefixed framing of the `rawtcp` peer, or Socket.IO's Engine.IO
//! packets inside WebSocket messages (`engineio`).
//!
//! Owns connecting, the opening handshake, framing in both directions and the output buffer. It knows the two
//! wire protocols' shapes (the chat JSON and the raw frame kinds) but nothing of scenarios: what to send and what
//! a message means is decided by the caller, which receives each message as a borrowed slice.
//!
//! Masking keys (RFC 6455 5.3) are unpredictable unless the caller asks for `Masks::Fast`: 10.3 wants a client's
//! keys beyond the guess of whoever chooses its payloads, which costs little here, but a generator aimed at its
//! own server may choose the cheap predictable kind.
//!
//! Sending goes through `roomcast::protocol::Connection` (masking with `Role::Client`), except chat messages over
//! plain WebSocket: those are framed here, straight into the output buffer, with roomcast's frame encoder and mask
//! keys of the connection's own (`send_chat`, and `send_chat_compressed` for a message the caller compressed).
//! Receiving goes through `Connection` with `Receive::Connection`; the default, `Receive::Frames`, runs roomcast's
//! `FrameDecoder` (the decoder inside `Connection`) directly and hands whole unfragmented frames over as slices of the read buffer. That skips the
//! per-message allocation, copy and UTF-8 check of message assembly, which otherwise cost the generator more CPU
//! per delivery than roomcast spends producing it (see docs/benchmarks.md).
//!
//! A client asked to (`offer_deflate`) offers permessage-deflate (RFC 7692) with roomcast's `CLIENT_OFFER`, checks
//! the answer with `accept_server_answer`, compresses what it sends through `Connection::use_deflate`, and inflates
//! every compressed message it receives before handing it over, on either receive path (the fast one through
//! `inflate`, which may hand out the kept text of a byte-identical copy).

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use roomcast::protocol::close::parse_close_body;
use roomcast::protocol::connection::MIN_COMPRESSED_LEN;
use roomcast::protocol::deflate::{accept_server_answer, DeflateParams, CLIENT_OFFER};
use roomcast::protocol::frame::{
    encode_frame, encode_frame_in_place, FrameDecoder, FrameEvent, FrameHeader, IncomingMask,
    OpCode,
};
use roomcast::protocol::handshake::{
    parse_server_response, write_client_request, ClientHandshakeError, ClientRequest,
};
use roomcast::protocol::mask::MaskKeys;
use roomcast::protocol::{CloseCode, CloseFrame, Connection, Event, Message, MessageKind, Role};

use crate::engineio::{self, Session, Step};
use crate::inflate::Inflate;

/// The largest message the generator accepts from a server (the 16 MiB echo fits).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// What a chat message's JSON holds before its content.
pub const CHAT_PREFIX: &[u8] = br#"{"type":"chat","content":""#;
/// What a chat message's JSON holds after its content.
pub const CHAT_SUFFIX: &[u8] = br#""}"#;

/// How a server frames its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// RFC 6455, through `roomcast::protocol`.
    WebSocket,
    /// `[u32 big-endian length][kind byte][rest]`, the `rawtcp` peer's framing.
    Raw,
    /// Socket.IO: Engine.IO v4 packets in WebSocket text messages (`engineio`), through the same codec as
    /// `WebSocket`.
    EngineIo,
}

/// How WebSocket input is decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receive {
    /// `FrameDecoder` directly, whole frames handed over without a copy.
    Frames,
    /// `Connection::feed`, with message assembly and UTF-8 validation.
    Connection,
}

/// Where a connection's masking keys come from (RFC 6455 5.3, 10.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Masks {
    /// Unpredictable: every key comes from the operating system's random source.
    Random,
    /// Predictable and cheap: keys from a fast generator seeded with `seed`. Only for a generator aimed at a
    /// server it trusts.
    Fast {
        /// Any number; connections given different seeds draw different keys.
        seed: u64,
    },
}

impl Masks {
    /// A client connection whose keys come from this source.
    fn client_connection(self) -> Connection {
        let mut ws = Connection::new(Role::Client, MAX_MESSAGE);
        if let Masks::Fast { seed } = self {
            ws.use_predictable_masks(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        }
        ws
    }

    /// The keys of the chat frames a client framed itself: a sequence of their own, from the same source.
    fn chat_keys(self) -> MaskKeys {
        match self {
            Masks::Random => MaskKeys::Strong,
            Masks::Fast { seed } => {
                MaskKeys::predictable(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1)
            }
        }
    }
}

/// A message received from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// A WebSocket text message, or a raw `M` (room message) frame's content.
    Text(&'a [u8]),
    /// A WebSocket binary message, or a raw `E` (echo) frame's content.
    Binary(&'a [u8]),
    /// The raw server's `A`: the join was accepted.
    JoinAck,
}

/// Where the connection is in its life.
#[derive(Debug)]
enum Phase {
    /// The TCP connect is in progress.
    Connecting,
    /// The upgrade request was sent; `response` holds what came back so far.
    Handshake {
        request: ClientRequest,
        response: Vec<u8>,
    },
    /// Messages flow.
    Open,
    /// The server closed, or an error ended the connection.
    Closed,
}

/// What the connection decodes with.
#[derive(Debug)]
enum Codec {
    WebSocket {
        ws: Box<Connection>,
        events: Vec<Event>,
        frames: Option<Box<FrameReceiver>>,
    },
    Raw {
        input: Vec<u8>,
    },
}

/// One client connection of the load generator.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    phase: Phase,
    codec: Codec,
    path: &'static str,
    host: String,
    out: Vec<u8>,
    out_sent: usize,
    /// The body of the server's Close frame, once one arrived.
    server_close: Option<CloseFrame>,
    /// The HTTP status the server answered the upgrade with, when it was not 101.
    refused_status: Option<u16>,
    /// permessage-deflate is offered in the upgrade request.
    offers_deflate: bool,
    /// The fast receive path may hand out the kept text of a byte-identical compressed message (`inflate`).
    reuse_inflated: bool,
    /// What the server agreed to, once its 101 named permessage-deflate.
    deflate: Option<DeflateParams>,
    /// Bytes read from the socket since the connection opened, handshake included.
    bytes_read: u64,
    /// With `Framing::EngineIo`: the Engine.IO open and Socket.IO connect after the WebSocket handshake.
    session: Option<Session>,
    /// The masking keys of the chat frames framed here rather than by `Connection` (RFC 6455 5.3).
    chat_keys: MaskKeys,
}

impl Client {
    /// Starts a non-blocking connect to `addr` and registers it for reading and writing (edge-triggered) under
    /// `token`. `path` is the WebSocket request target; `masks` says where the masking keys come from. The
    /// handshake key is always random (`ClientRequest::with_random_key`).
    pub fn connect(
        addr: SocketAddr,
        framing: Framing,
        receive: Receive,
        path: &'static str,
        masks: Masks,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Client> {
        let mut stream = TcpStream::connect(addr)?;
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        let codec = match framing {
            Framing::WebSocket | Framing::EngineIo => Codec::WebSocket {
                ws: Box::new(masks.client_connection()),
                events: Vec::new(),
                frames: (receive == Receive::Frames).then(|| Box::new(FrameReceiver::new(masks))),
            },
            Framing::Raw => Codec::Raw { input: Vec::new() },
        };
        Ok(Client {
            stream,
            phase: Phase::Connecting,
            codec,
            path,
            host: addr.to_string(),
            out: Vec::new(),
            out_sent: 0,
            server_close: None,
            refused_status: None,
            offers_deflate: false,
            reuse_inflated: false,
            deflate: None,
            bytes_read: 0,
            session: (framing == Framing::EngineIo).then_some(Session::AwaitingOpen),
            chat_keys: masks.chat_keys(),
        })
    }

    /// Makes the upgrade request offer permessage-deflate (`CLIENT_OFFER`, RFC 7692 5). Must be called before the
    /// connect completes; no effect on raw framing. With `reuse_inflated`, the fast receive path hands out the
    /// kept text of a byte-identical message compressed on its own instead of inflating it again (`inflate`).
    pub fn offer_deflate(&mut self, reuse_inflated: bool) {
        self.offers_deflate = true;
        self.reuse_inflated = reuse_inflated;
    }

    /// The permessage-deflate parameters the server agreed to, if it did.
    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.deflate.as_ref()
    }

    /// Bytes read from the socket so far: the upgrade response and every frame, as they came over TCP.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// True once messages can be sent: the TCP connect (and for WebSocket, the handshake; for Socket.IO, the
    /// namespace connect too) completed.
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open) && self.session.is_none_or(|s| s == Session::Connected)
    }

    /// True once the connection ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Deregisters and ends the connection.
    pub fn close(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        self.phase = Phase::Closed;
    }

    /// Handles a writable event: completes the connect (sending the upgrade request, for WebSocket), then
    /// writes what is queued.
    pub fn on_writable(&mut self) -> io::Result<()> {
        if matches!(self.phase, Phase::Connecting) {
            if let Some(e) = self.stream.take_error()? {
                return Err(e);
            }
            match self.stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(e),
            }
            self.stream.set_nodelay(true)?;
            match self.codec {
                Codec::WebSocket { .. } => {
                    let mut request = ClientRequest::with_random_key();
                    if self.offers_deflate {
                        request.extensions = Some(CLIENT_OFFER.to_string());
                    }
                    let mut bytes = Vec::with_capacity(200);
                    write_client_request(&self.host, self.path, &request, &mut bytes);
                    self.queue(bytes);
                    self.phase = Phase::Handshake {
                        request,
                        response: Vec::new(),
                    };
                }
                Codec::Raw { .. } => self.phase = Phase::Open,
            }
        }
        self.flush()
    }

    /// Reads what the socket holds, handing every complete message to `on_message` in order. Returns false when
    /// the server closed the connection. `buf` is scratch space for reads.
    ///
    /// A read that returns less than `buf` holds means the socket was drained at that moment; stopping there
    /// instead of reading again for `WouldBlock` saves a system call per event, and is safe with edge-triggered
    /// epoll on TCP: bytes or a FIN arriving later raise a new readiness edge. A FIN that had already arrived
    /// raises none, so when the event said the peer closed (`peer_closed`), reading goes on until the end.
    pub fn read(
        &mut self,
        buf: &mut [u8],
        peer_closed: bool,
        mut on_message: impl FnMut(Received<'_>),
    ) -> io::Result<bool> {
        loop {
            let n = match self.stream.read(buf) {
                Ok(0) => {
                    self.phase = Phase::Closed;
                    return Ok(false);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.bytes_read += n as u64;
            if self.session.is_some() {
                self.on_engine_io_bytes(&buf[..n], &mut on_message)?;
            } else {
                self.on_bytes(&buf[..n], &mut on_message)?;
            }
            if self.is_closed() {
                return Ok(false);
            }
            if n < buf.len() && !peer_closed {
                return Ok(true);
            }
        }
    }

    /// Reads and throws away whatever the socket holds, without decoding it: for a connection that never
    /// completed its handshake. Returns false when the server closed the connection.
    pub fn read_discard(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        loop {
            match self.stream.read(buf) {
                Ok(0) => {
                    self.phase = Phase::Closed;
                    return Ok(false);
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// `on_bytes` for a Socket.IO connection: each text message goes through the Engine.IO session first, which
    /// answers the open and the pings itself and hands on the events' JSON arrays.
    fn on_engine_io_bytes(
        &mut self,
        bytes: &[u8],
        on_message: &mut impl FnMut(Received<'_>),
    ) -> io::Result<()> {
        let mut session = self.session.take();
        let mut replies: Vec<&'static [u8]> = Vec::new();
        let mut failure = None;
        let result = self.on_bytes(bytes, &mut |message: Received<'_>| match (
            session.as_mut(),
            message,
        ) {
            (Some(session), Received::Text(text)) => match session.on_text(text) {
                Step::Reply(reply) => replies.push(reply),
                Step::Deliver(event) => on_message(Received::Text(event)),
                Step::Fail(reason) => {
                    failure.get_or_insert(reason);
                }
                Step::Nothing => {}
            },
            (_, other) => on_message(other),
        });
        self.session = session;
        for reply in replies {
            self.send_ws(MessageKind::Text, reply);
        }
        result?;
        match failure {
            Some(reason) => Err(io::Error::other(reason)),
            None => Ok(()),
        }
    }

    fn on_bytes(
        &mut self,
        mut bytes: &[u8],
        on_message: &mut impl FnMut(Received<'_>),
    ) -> io::Result<()> {
        if let Phase::Handshake { request, response } = &mut self.phase {
            response.extend_from_slice(bytes);
            let answer = match parse_server_response(response, request) {
                Ok(answer) => answer,
                Err(e) => {
                    if let ClientHandshakeError::Status(status) = e {
                        self.refused_status = Some(status);
                    }
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
                }
            };
            let Some(answer) = answer else {
                return Ok(());
            };
            let head_len = answer.head_len;
            // RFC 7692 5: the answer names what we compress and inflate with, or nothing.
            let agreed = accept_server_answer(&answer.extensions)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if let (Some(params), Codec::WebSocket { ws, frames, .. }) = (&agreed, &mut self.codec)
            {
                ws.use_deflate(params);
                if let Some(frames) = frames {
                    frames.use_deflate(params, self.reuse_inflated);
                }
            }
            self.deflate = agreed;
            let response = std::mem::take(response);
            self.phase = Phase::Open;
            return self.on_bytes(&response[head_len..], on_message);
        }
        match &mut self.codec {
            Codec::WebSocket {
                frames: Some(frames),
                ..
            } => {
                let mut pong = Vec::new();
                let result = frames.feed(bytes, on_message, &mut pong);
                let close = matches!(result, Ok(false)).then(|| frames.close_frame());
                if !pong.is_empty() {
                    self.queue(pong);
                }
                match result {
                    Ok(true) => Ok(()),
                    Ok(false) => {
                        self.server_close = close;
                        self.phase = Phase::Closed;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Codec::WebSocket { ws, events, .. } => {
                let result = ws.feed(bytes, events);
                for event in events.drain(..) {
                    match event {
                        Event::Message(Message::Text(text)) => {
                            on_message(Received::Text(text.as_bytes()))
                        }
                        Event::Message(Message::Binary(bytes)) => {
                            on_message(Received::Binary(&bytes))
                        }
                        Event::Close(frame) => {
                            self.server_close = Some(frame);
                            self.phase = Phase::Closed;
                        }
                        Event::Ping(_) | Event::Pong(_) => {}
                    }
                }
                if ws.has_output() {
                    let output = ws.take_output();
                    self.queue(output);
                }
                result.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
            }
            Codec::Raw { input } => {
                if input.is_empty() {
                    // The common case: whole frames straight from the read buffer, no copy.
                    let used = raw_frames(bytes, on_message)?;
                    bytes = &bytes[used..];
                    input.extend_from_slice(bytes);
                } else {
                    input.extend_from_slice(bytes);
                    let used = raw_frames(input, on_message)?;
                    input.drain(..used);
                }
                Ok(())
            }
        }
    }

    /// Queues a `join` for `user` to `room`.
    pub fn send_join(&mut self, user: &str, room: &str) {
        match self.codec {
            Codec::WebSocket { .. } if self.session.is_some() => {
                self.send_ws(MessageKind::Text, &engineio::join_event(user, room));
            }
            Codec::WebSocket { .. } => {
                let json = format!(r#"{{"type":"join","userId":"{user}","room":"{room}"}}"#);
                self.send_ws(MessageKind::Text, json.as_bytes());
            }
            Codec::Raw { .. } => self.send_raw(b'J', room.as_bytes()),
        }
    }

    /// Queues a chat message. `content` must need no JSON escaping.
    ///
    /// Over plain WebSocket, a message that goes out uncompressed (no permessage-deflate, or shorter than
    /// `MIN_COMPRESSED_LEN`, which `Connection` would not compress either) is framed here, straight into the
    /// output buffer; one to compress goes through `Connection`.
    pub fn send_chat(&mut self, content: &[u8]) {
        match self.codec {
            Codec::WebSocket { .. } if self.session.is_some() => {
                let mut event = Vec::with_capacity(content.len() + 32);
                engineio::chat_event(content, &mut event);
                self.send_ws(MessageKind::Text, &event);
            }
            Codec::WebSocket { .. } => {
                let json_len = CHAT_PREFIX.len() + content.len() + CHAT_SUFFIX.len();
                if self.deflate.is_none() || json_len < MIN_COMPRESSED_LEN {
                    self.frame_chat(false, json_len, |out| {
                        out.extend_from_slice(CHAT_PREFIX);
                        out.extend_from_slice(content);
                        out.extend_from_slice(CHAT_SUFFIX);
                        Some(json_len)
                    });
                    return;
                }
                let mut json = Vec::with_capacity(json_len);
                json.extend_from_slice(CHAT_PREFIX);
                json.extend_from_slice(content);
                json.extend_from_slice(CHAT_SUFFIX);
                self.send_ws(MessageKind::Text, &json);
            }
            Codec::Raw { .. } => self.send_raw(b'C', content),
        }
    }

    /// Queues a chat message that `compress` compresses: it appends the compressed form of the JSON `send_chat`
    /// would send for `content` (`CHAT_PREFIX`, `content`, `CHAT_SUFFIX`) to the buffer it is given, as RFC 7692
    /// 7.2.1 wants it, and returns its length, or `None` to send the message as `send_chat` does. `compress` is
    /// called only over plain WebSocket with permessage-deflate agreed and a message `Connection` would compress
    /// (`MIN_COMPRESSED_LEN` bytes or more); otherwise this is `send_chat`.
    pub fn send_chat_compressed(
        &mut self,
        content: &[u8],
        compress: impl FnOnce(&mut Vec<u8>) -> Option<usize>,
    ) {
        let json_len = CHAT_PREFIX.len() + content.len() + CHAT_SUFFIX.len();
        let compressible = matches!(self.codec, Codec::WebSocket { .. })
            && self.session.is_none()
            && self.deflate.is_some()
            && json_len >= MIN_COMPRESSED_LEN;
        // RFC 7692 6: RSV1 on the frame marks the message compressed.
        if !(compressible && self.frame_chat(true, json_len, compress)) {
            self.send_chat(content);
        }
    }

    /// Appends one whole masked text frame, FIN set and RSV1 as `compressed` says, whose payload of at most
    /// `max_len` bytes `write_payload` appends to the output; false, with nothing appended, if it returns `None`
    /// or our Close was sent (RFC 6455 5.5.1: no data frames after it).
    fn frame_chat(
        &mut self,
        compressed: bool,
        max_len: usize,
        write_payload: impl FnOnce(&mut Vec<u8>) -> Option<usize>,
    ) -> bool {
        let Codec::WebSocket { ws, .. } = &self.codec else {
            return false;
        };
        if !ws.can_send() {
            return false;
        }
        let header = FrameHeader {
            fin: true,
            rsv1: compressed,
            opcode: OpCode::Text,
            // RFC 6455 5.3: a fresh key for every frame a client sends.
            mask: Some(self.chat_keys.next_key()),
            payload_len: max_len as u64,
        };
        encode_frame_in_place(header, &mut self.out, write_payload)
    }

    /// Queues a WebSocket text message holding `payload` as it is (the caller makes it the JSON it wants).
    pub fn send_text(&mut self, payload: &[u8]) {
        self.send_ws(MessageKind::Text, payload);
    }

    /// Starts the closing handshake with `code` and `reason` (RFC 6455 7.1.2): the server answers with its own
    /// Close and then closes TCP. Nothing more can be sent after it.
    pub fn send_close(&mut self, code: CloseCode, reason: &str) {
        if let Codec::WebSocket { ws, .. } = &mut self.codec {
            ws.close(code, reason);
            let output = ws.take_output();
            self.queue(output);
        }
    }

    /// The server's Close frame (its code and reason), once one arrived.
    pub fn server_close(&self) -> Option<&CloseFrame> {
        self.server_close.as_ref()
    }

    /// The HTTP status of a refused upgrade (429, 503, ...): set when the server answered anything but 101.
    pub fn refused_status(&self) -> Option<u16> {
        self.refused_status
    }

    /// Writes `bytes` straight to the socket, bypassing the output queue: how a flooding client pushes
    /// precomputed frames as fast as TCP takes them. Returns how many bytes went out, 0 when the socket would
    /// block, the connection is not open yet, or queued output must go first.
    pub fn write_direct(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if !self.is_open() || self.has_output() {
            return Ok(0);
        }
        loop {
            match self.stream.write(bytes) {
                Ok(0) if !bytes.is_empty() => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues bytes to be written as they are, e.g. a frame the caller built itself. Written by `flush`.
    pub fn send_bytes(&mut self, bytes: Vec<u8>) {
        self.queue(bytes);
    }

    /// Queues a binary message for the echo service.
    pub fn send_echo(&mut self, payload: &[u8]) {
        match self.codec {
            Codec::WebSocket { .. } => self.send_ws(MessageKind::Binary, payload),
            Codec::Raw { .. } => self.send_raw(b'E', payload),
        }
    }

    fn send_ws(&mut self, kind: MessageKind, payload: &[u8]) {
        if let Codec::WebSocket { ws, .. } = &mut self.codec {
            if ws.send(kind, payload).is_ok() {
                let output = ws.take_output();
                self.queue(output);
            }
        }
    }

    fn send_raw(&mut self, kind: u8, rest: &[u8]) {
        let len = u32::try_from(rest.len() + 1).unwrap_or(u32::MAX);
        self.out.extend_from_slice(&len.to_be_bytes());
        self.out.push(kind);
        self.out.extend_from_slice(rest);
    }

    /// Appends bytes to the output, taking the buffer over without a copy when nothing else waits.
    fn queue(&mut self, bytes: Vec<u8>) {
        if self.out_sent == self.out.len() {
            self.out = bytes;
            self.out_sent = 0;
        } else {
            self.out.extend_from_slice(&bytes);
        }
    }

    /// True when queued bytes wait to be written.
    pub fn has_output(&self) -> bool {
        self.out_sent < self.out.len()
    }

    /// Writes queued bytes until done or the socket would block (the next writable event resumes).
    pub fn flush(&mut self) -> io::Result<()> {
        if matches!(self.phase, Phase::Connecting | Phase::Closed) {
            return Ok(());
        }
        while self.out_sent < self.out.len() {
            match self.stream.write(&self.out[self.out_sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_sent = 0;
        Ok(())
    }
}

/// The fast receive path: roomcast's frame decoder, with messages handed over as slices when they arrived whole.
#[derive(Debug)]
struct FrameReceiver {
    decoder: FrameDecoder,
    /// The header of the frame whose payload is arriving.
    frame: Option<FrameHeader>,
    /// The kind of a data message still being received (fragmented, or split across reads).
    message: Option<OpCode>,
    /// Its payload so far.
    assembly: Vec<u8>,
    /// The payload of a control frame so far.
    control: Vec<u8>,
    /// Where the masking keys of Pongs come from.
    pong_masks: PongMasks,
    /// The payload of the server's Close frame, once it arrived.
    closed_with: Option<Vec<u8>>,
    /// How compressed messages are inflated, once permessage-deflate is agreed.
    inflate: Option<Inflate>,
    /// The data message being received is compressed (RSV1 on its first frame, RFC 7692 6).
    compressed: bool,
}

/// The masking keys of the Pongs `FrameReceiver` sends.
#[derive(Debug)]
enum PongMasks {
    /// Fresh from the operating system's random source for each Pong (they are rare).
    Random,
    /// xorshift64 with this state: predictable, for `Masks::Fast`.
    Fast(u64),
}

impl FrameReceiver {
    fn new(masks: Masks) -> FrameReceiver {
        FrameReceiver {
            decoder: FrameDecoder::new(IncomingMask::Forbidden),
            frame: None,
            message: None,
            assembly: Vec::new(),
            control: Vec::new(),
            pong_masks: match masks {
                Masks::Random => PongMasks::Random,
                Masks::Fast { seed } => PongMasks::Fast(seed | 1),
            },
            closed_with: None,
            inflate: None,
            compressed: false,
        }
    }

    /// Accepts compressed messages from now on, inflated as `params` say the server compresses them; `reuse` as
    /// `Inflate::Alone` takes it.
    fn use_deflate(&mut self, params: &DeflateParams, reuse: bool) {
        self.decoder.allow_compression();
        self.inflate = Some(Inflate::for_params(params, reuse));
    }

    /// The server's Close frame as parsed from its payload (RFC 6455 5.5.1); a malformed body is reported with
    /// no code and a reason saying so.
    fn close_frame(&self) -> CloseFrame {
        let body = self.closed_with.as_deref().unwrap_or_default();
        parse_close_body(body).unwrap_or_else(|e| CloseFrame {
            code: None,
            reason: format!("malformed close body: {e}"),
        })
    }

    /// Decodes `input`, handing each data message to `on_message`. A Ping is answered by appending a masked Pong
    /// to `pong`. Returns false after the server's Close.
    fn feed(
        &mut self,
        mut input: &[u8],
        on_message: &mut impl FnMut(Received<'_>),
        pong: &mut Vec<u8>,
    ) -> io::Result<bool> {
        loop {
            let (used, event) = self
                .decoder
                .decode(input)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            input = &input[used..];
            let (header, data, last) = match event {
                None => return Ok(true),
                Some(FrameEvent::Header(header)) => {
                    self.frame = Some(header);
                    if header.payload_len > 0 {
                        continue;
                    }
                    (header, &[][..], true)
                }
                Some(FrameEvent::Payload(chunk)) => {
                    let Some(header) = self.frame else {
                        continue;
                    };
                    (header, chunk.data, chunk.last)
                }
            };
            if header.opcode.is_control() {
                self.control.extend_from_slice(data);
                if !last {
                    continue;
                }
                match header.opcode {
                    OpCode::Ping => {
                        let mask = self.next_mask()?;
                        encode_frame(true, OpCode::Pong, &self.control, Some(mask), pong);
                    }
                    OpCode::Close => {
                        self.closed_with = Some(std::mem::take(&mut self.control));
                        return Ok(false);
                    }
                    _ => {}
                }
                self.control.clear();
                continue;
            }
            let kind = match header.opcode {
                OpCode::Continuation => self.message,
                opcode => {
                    // RFC 7692 6: RSV1 on a message's first frame (the decoder refuses it elsewhere).
                    self.compressed = header.rsv1;
                    Some(opcode)
                }
            };
            let Some(kind) = kind else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "stray continuation",
                ));
            };
            let complete = last && header.fin;
            if complete && self.assembly.is_empty() {
                self.deliver(kind, Whole::Slice(data), on_message)?;
                self.message = None;
                continue;
            }
            self.assembly.extend_from_slice(data);
            self.message = Some(kind);
            if complete {
                self.deliver(kind, Whole::Assembly, on_message)?;
                self.assembly.clear();
                self.message = None;
            }
        }
    }

    /// The masking key of the next Pong.
    fn next_mask(&mut self) -> io::Result<[u8; 4]> {
        match &mut self.pong_masks {
            PongMasks::Random => {
                let mut key = [0u8; 4];
                getrandom::fill(&mut key).map_err(io::Error::other)?;
                Ok(key)
            }
            PongMasks::Fast(state) => {
                let mut x = *state;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *state = x;
                let bytes = x.to_le_bytes();
                Ok([bytes[0], bytes[1], bytes[2], bytes[3]])
            }
        }
    }
}

/// Where a whole received message is.
enum Whole<'a> {
    /// In the read buffer, as it arrived.
    Slice(&'a [u8]),
    /// In the receiver's assembly buffer.
    Assembly,
}

impl FrameReceiver {
    /// Hands a whole message to `on_message`, inflated first if it came compressed.
    fn deliver(
        &mut self,
        kind: OpCode,
        whole: Whole<'_>,
        on_message: &mut impl FnMut(Received<'_>),
    ) -> io::Result<()> {
        let data = match whole {
            Whole::Slice(data) => data,
            Whole::Assembly => &self.assembly,
        };
        match (&mut self.inflate, self.compressed) {
            (Some(inflate), true) => {
                inflate.message(data, MAX_MESSAGE, |text| hand_over(kind, text, on_message))
            }
            _ => {
                hand_over(kind, data, on_message);
                Ok(())
            }
        }
    }
}

fn hand_over(kind: OpCode, data: &[u8], on_message: &mut impl FnMut(Received<'_>)) {
    match kind {
        OpCode::Text => on_message(Received::Text(data)),
        OpCode::Binary => on_message(Received::Binary(data)),
        _ => {}
    }
}

/// Hands every whole raw frame at the front of `input` to `on_message`; returns the bytes they took.
fn raw_frames(input: &[u8], on_message: &mut impl FnMut(Received<'_>)) -> io::Result<usize> {
    let mut used = 0;
    while let Some(header) = input.get(used..used + 4) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len == 0 || len > MAX_MESSAGE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad raw frame"));
        }
        let Some(body) = input.get(used + 4..used + 4 + len) else {
            break;
        };
        match body[0] {
            b'M' => on_message(Received::Text(&body[1..])),
            b'E' => on_message(Received::Binary(&body[1..])),
            b'A' => on_message(Received::JoinAck),
            _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "bad raw kind")),
        }
        used += 4 + len;
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The masking key of the first frame a client connection with `masks` sends.
    fn first_key(masks: Masks) -> [u8; 4] {
        let mut ws = masks.client_connection();
        ws.send(MessageKind::Text, b"x").unwrap();
        let out = ws.take_output();
        [out[2], out[3], out[4], out[5]]
    }

    #[test]
    fn fast_mask_keys_repeat_and_random_ones_do_not() {
        let fast = Masks::Fast { seed: 7 };
        assert_eq!(first_key(fast), first_key(fast));
        assert_ne!(first_key(Masks::Random), first_key(Masks::Random));
    }

    /// The Pong a `FrameReceiver` with `masks` sends for a Ping carrying `payload`: (masking key, unmasked payload).
    fn pong_for(masks: Masks, payload: &[u8]) -> ([u8; 4], Vec<u8>) {
        let mut receiver = FrameReceiver::new(masks);
        let mut ping = vec![0x89, payload.len() as u8];
        ping.extend_from_slice(payload);
        let mut pong = Vec::new();
        let open = receiver
            .feed(&ping, &mut |_: Received<'_>| {}, &mut pong)
            .unwrap();
        assert!(open);
        assert_eq!(
            pong[..2],
            [0x8A, 0x80 | payload.len() as u8],
            "a masked Pong"
        );
        let key = [pong[2], pong[3], pong[4], pong[5]];
        let unmasked = pong[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        (key, unmasked)
    }

    #[test]
    fn pings_are_answered_with_masked_pongs_whatever_the_mask_source() {
        for masks in [Masks::Random, Masks::Fast { seed: 3 }] {
            assert_eq!(pong_for(masks, b"hello").1, b"hello", "{masks:?}");
        }
        assert_eq!(
            pong_for(Masks::Fast { seed: 3 }, b"x").0,
            pong_for(Masks::Fast { seed: 3 }, b"x").0
        );
        assert_ne!(
            pong_for(Masks::Random, b"hello world").0,
            pong_for(Masks::Random, b"hello world").0
        );
    }

    /// What a server that agreed to `params` sends for each of `texts`, and the texts.
    fn server_frames(params: &DeflateParams, texts: &[String]) -> Vec<u8> {
        let mut server = Connection::new(Role::Server, MAX_MESSAGE);
        server.use_deflate(params);
        for text in texts {
            server.send(MessageKind::Text, text.as_bytes()).unwrap();
        }
        server.take_output()
    }

    /// The texts a deflate-enabled `FrameReceiver` delivers for `stream`, fed in pieces of `piece` bytes.
    fn received_texts(params: &DeflateParams, stream: &[u8], piece: usize) -> Vec<String> {
        let mut receiver = FrameReceiver::new(Masks::Fast { seed: 1 });
        receiver.use_deflate(params, true);
        let mut texts = Vec::new();
        let mut pong = Vec::new();
        for chunk in stream.chunks(piece) {
            let mut record = |m: Received<'_>| {
                if let Received::Text(t) = m {
                    texts.push(String::from_utf8(t.to_vec()).unwrap());
                }
            };
            assert!(receiver.feed(chunk, &mut record, &mut pong).unwrap());
        }
        texts
    }

    fn chat_lines() -> Vec<String> {
        (0..3)
            .map(|i| {
                format!("message {i}: ")
                    + &"the meeting is moved to the afternoon, see you there. ".repeat(8)
            })
            .collect()
    }

    #[test]
    fn compressed_messages_are_inflated_whole_or_split_anywhere() {
        let params = DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: None,
            client_max_window_bits: None,
        };
        let texts = chat_lines();
        let stream = server_frames(&params, &texts);
        assert!(
            stream.len() < texts.iter().map(String::len).sum::<usize>() / 2,
            "compressed"
        );
        for piece in [stream.len(), 1, 7, 100] {
            assert_eq!(
                received_texts(&params, &stream, piece),
                texts,
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn messages_of_a_server_that_keeps_context_are_inflated_in_order() {
        let params = DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: None,
            client_max_window_bits: None,
        };
        let texts = chat_lines();
        let stream = server_frames(&params, &texts);
        assert_eq!(received_texts(&params, &stream, stream.len()), texts);
        assert_eq!(received_texts(&params, &stream, 13), texts);
    }

    #[test]
    fn raw_frames_split_anywhere_are_reassembled() {
        let mut stream = Vec::new();
        for (kind, rest) in [(b'A', &b""[..]), (b'M', b"@hello"), (b'E', b"\x00\x01")] {
            stream.extend_from_slice(&(rest.len() as u32 + 1).to_be_bytes());
            stream.push(kind);
            stream.extend_from_slice(rest);
        }
        for split in 0..stream.len() {
            let mut seen = Vec::new();
            let mut record = |m: Received<'_>| seen.push(format!("{m:?}"));
            let used = raw_frames(&stream[..split], &mut record).unwrap();
            let mut rest = stream[used..split].to_vec();
            rest.extend_from_slice(&stream[split..]);
            let used2 = raw_frames(&rest, &mut record).unwrap();
            assert_eq!(used2, rest.len());
            assert_eq!(seen.len(), 3, "split at {split}");
        }
    }
}
