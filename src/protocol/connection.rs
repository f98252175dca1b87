//! The sans-IO WebSocket connection: bytes in, events out; commands in, bytes out (RFC 6455 sections 5 to 7).
//!
//! Owns message assembly from fragments (5.4), control frames in the middle of a message (5.5), incremental UTF-8
//! validation of text (5.6, 8.1), the message size limit (10.4), answering Pings (5.5.2) and the closing handshake
//! (5.5.1, 7). It writes every frame it owes the peer into an output buffer that the caller drains, in order;
//! a large payload given up with `send_owned` stays a buffer of its own in that order instead of being copied. It
//! never touches a socket or a clock: the caller decides when bytes move and when a peer has been quiet too long.

use std::fmt;
use std::num::NonZeroU64;

use super::close::{self, CloseBodyError, CloseFrame};
use super::frame::{
    encode_frame, FrameDecoder, FrameError, FrameEvent, FrameHeader, IncomingMask, OpCode,
    PayloadChunk,
};
use super::mask::apply_mask;
use super::utf8::Utf8Validator;

/// Which end of the connection this is: it decides the masking direction (5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Expects masked frames and sends unmasked ones.
    Server,
    /// Sends masked frames, with keys drawn from a generator seeded with `mask_seed`, and expects unmasked ones.
    /// The keys are unpredictable only as far as the seed is: a browser-facing client needs a random seed (10.3).
    Client {
        /// The seed of the masking-key generator; zero is replaced by a fixed non-zero value.
        mask_seed: u64,
    },
}

/// The kind of a data message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// UTF-8 text; the payload has been validated.
    Text,
    /// Arbitrary bytes.
    Binary,
}

impl MessageKind {
    fn opcode(self) -> OpCode {
        match self {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        }
    }
}

/// A complete data message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Text or binary.
    pub kind: MessageKind,
    /// The reassembled, unmasked payload. For `Text` it is valid UTF-8.
    pub payload: Vec<u8>,
}

impl Message {
    /// The payload as text, for a text message.
    pub fn text(&self) -> Option<&str> {
        match self.kind {
            MessageKind::Text => std::str::from_utf8(&self.payload).ok(),
            MessageKind::Binary => None,
        }
    }
}

/// What the peer did, in the order it did it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete data message.
    Message(Message),
    /// A Ping; the Pong is already in the output buffer (unless we are closing).
    Ping(Vec<u8>),
    /// A Pong, solicited or not (5.5.3: an unsolicited Pong needs no answer).
    Pong(Vec<u8>),
    /// The peer's Close. If we had not sent one, our answer is already in the output buffer.
    Close(CloseFrame),
}

/// Where the closing handshake stands (7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Data flows both ways.
    Open,
    /// We sent Close and wait for the peer's; we send nothing more.
    CloseSent,
    /// Both Close frames were exchanged, or the connection failed: send the output, then close TCP (7.1.1).
    Closed,
}

/// A violation of RFC 6455 by the peer; the connection fails with `close_code()` (7.1.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// A framing rule was broken (1002).
    Frame(FrameError),
    /// A continuation frame with no message to continue (5.4; 1002).
    UnexpectedContinuation,
    /// A new data frame while a fragmented message was unfinished (5.4; 1002).
    ExpectedContinuation,
    /// Text that is not UTF-8 (8.1; 1007).
    InvalidUtf8,
    /// A message over the route's size limit (10.4; 1009).
    MessageTooBig {
        /// The limit in bytes.
        limit: usize,
    },
    /// A malformed Close body (5.5.1; 1002 or 1007).
    CloseBody(CloseBodyError),
}

impl ProtocolError {
    /// The status code to fail the connection with (7.4.1).
    pub fn close_code(&self) -> u16 {
        match self {
            ProtocolError::InvalidUtf8
            | ProtocolError::CloseBody(CloseBodyError::InvalidReason) => close::INVALID_PAYLOAD,
            ProtocolError::MessageTooBig { .. } => close::MESSAGE_TOO_BIG,
            _ => close::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Frame(e) => e.fmt(f),
            ProtocolError::UnexpectedContinuation => {
                f.write_str("continuation frame without a message")
            }
            ProtocolError::ExpectedContinuation => {
                f.write_str("new message before the last one finished")
            }
            ProtocolError::InvalidUtf8 => f.write_str("invalid UTF-8 in text"),
            ProtocolError::MessageTooBig { limit } => write!(f, "message over {limit} bytes"),
            ProtocolError::CloseBody(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ProtocolError {}

impl From<FrameError> for ProtocolError {
    fn from(e: FrameError) -> Self {
        ProtocolError::Frame(e)
    }
}

/// Why a message could not be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// A Close was already sent or received: no data may follow (5.5.1).
    Closing,
    /// A control frame payload over 125 bytes (5.5).
    ControlTooLong,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closing => f.write_str("the connection is closing"),
            SendError::ControlTooLong => f.write_str("control frame payload over 125 bytes"),
        }
    }
}

impl std::error::Error for SendError {}

/// A data message being reassembled.
#[derive(Debug)]
struct Assembly {
    kind: MessageKind,
    payload: Vec<u8>,
    utf8: Utf8Validator,
}

/// The frame whose payload is arriving.
#[derive(Debug)]
enum Receiving {
    /// A data frame; the payload goes to the assembly. `fin` ends the message with this frame.
    Data { fin: bool },
    /// A control frame, collected whole (at most 125 bytes).
    Control { opcode: OpCode, payload: Vec<u8> },
}

/// Never read more than this much ahead of the payload that has actually arrived: a peer that announces a 16 MiB
/// message and stalls costs us what it sent, not what it promised.
const MAX_PREALLOCATION: u64 = 64 * 1024;

/// A payload at least this long, given to `send_owned`, is queued as it is instead of being copied into the output
/// buffer: past a few KiB the copy costs more than the write segment of its own that it saves.
const HAND_OVER_MIN: usize = 4 * 1024;

/// One WebSocket connection after the opening handshake.
#[derive(Debug)]
pub struct Connection {
    state: State,
    max_message_size: usize,
    decoder: FrameDecoder,
    receiving: Option<Receiving>,
    assembly: Option<Assembly>,
    output: Vec<u8>,
    /// Output that precedes `output`, oldest first: the buffers finished when a payload was handed over by
    /// `send_owned`, and those payloads themselves.
    handed_over: Vec<Vec<u8>>,
    /// The body of a Close we owe the peer (a reply to theirs, or a failure). It is written at the next
    /// `take_output`, after whatever the caller sends in answer to the messages that came before it.
    owed_close: Option<Vec<u8>>,
    /// A client's masking-key generator (5.3); `None` for a server, which masks nothing (5.1).
    mask_state: Option<NonZeroU64>,
}

impl Connection {
    /// A connection in the Open state whose messages may be at most `max_message_size` bytes.
    pub fn new(role: Role, max_message_size: usize) -> Self {
        let (incoming, mask_state) = match role {
            Role::Server => (IncomingMask::Required, None),
            Role::Client { mask_seed } => (
                IncomingMask::Forbidden,
                Some(NonZeroU64::new(mask_seed).unwrap_or(NonZeroU64::MIN)),
            ),
        };
        Connection {
            state: State::Open,
            max_message_size,
            decoder: FrameDecoder::new(incoming),
            receiving: None,
            assembly: None,
            output: Vec::new(),
            handed_over: Vec::new(),
            owed_close: None,
            mask_state,
        }
    }

    /// Where the closing handshake stands.
    pub fn state(&self) -> State {
        self.state
    }

    /// True while data messages may still be sent (5.5.1: none after our Close). Answers to the events of the
    /// last `feed` may be sent even if that input also closed the connection: they go out before the Close.
    pub fn can_send(&self) -> bool {
        self.state == State::Open || self.owed_close.is_some()
    }

    /// True when no partial frame or message is held: the connection is idle on the receiving side.
    pub fn is_idle(&self) -> bool {
        self.decoder.at_frame_boundary() && self.assembly.is_none()
    }

    /// Bytes the connection owes the peer, oldest first, ending with any Close it owes; the caller must write
    /// them before anything it adds later. Taking them leaves the buffer empty and unallocated.
    pub fn take_output(&mut self) -> Vec<u8> {
        if self.handed_over.is_empty() {
            self.write_owed_close();
            return std::mem::take(&mut self.output);
        }
        let mut pieces = self.take_output_pieces();
        let mut all = pieces.next().unwrap_or_default();
        for piece in pieces {
            all.extend_from_slice(&piece);
        }
        all
    }

    /// The same bytes as `take_output`, in pieces that are written in order: payloads handed over with
    /// `send_owned` come back as the buffers they were instead of being copied into one. No piece is empty.
    pub fn take_output_pieces(&mut self) -> impl Iterator<Item = Vec<u8>> {
        self.write_owed_close();
        let last = std::mem::take(&mut self.output);
        std::mem::take(&mut self.handed_over)
            .into_iter()
            .chain(std::iter::once(last))
            .filter(|piece| !piece.is_empty())
    }

    /// True when `take_output` would return bytes.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty() || !self.handed_over.is_empty() || self.owed_close.is_some()
    }

    fn write_owed_close(&mut self) {
        if let Some(body) = self.owed_close.take() {
            self.write_frame(OpCode::Close, &body);
        }
    }

    /// Feeds bytes received from the peer. Events are appended to `events` in order. On a protocol violation the
    /// connection fails: a Close with the error's code is owed, the state becomes `Closed`, and the error is
    /// returned. Input after the peer's Close, or after a failure, is ignored (7.1.1, 7.1.7). Events before the
    /// violation stand, and the caller may still answer them before taking the output.
    pub fn feed(&mut self, input: &[u8], events: &mut Vec<Event>) -> Result<(), ProtocolError> {
        let mut rest = input;
        while self.state != State::Closed {
            let (used, event) = match self.decoder.decode(rest) {
                Ok(decoded) => decoded,
                Err(e) => return Err(self.fail(e.into())),
            };
            rest = &rest[used..];
            let result = match event {
                None => break,
                Some(FrameEvent::Header(header)) => self.on_header(header, events),
                Some(FrameEvent::Payload(chunk)) => self.on_payload(chunk, events),
            };
            if let Err(e) = result {
                return Err(self.fail(e));
            }
        }
        Ok(())
    }

    /// Queues a data message.
    pub fn send(&mut self, kind: MessageKind, payload: &[u8]) -> Result<(), SendError> {
        self.send_frame(kind.opcode(), payload)
    }

    /// Queues a data message whose payload the caller gives up, e.g. an echo or a relay of a received message. A
    /// large payload is queued as it is, without a copy (a client's is masked in place, 5.3); a small one is
    /// copied as `send` would. `take_output_pieces` hands the payload back untouched.
    pub fn send_owned(&mut self, kind: MessageKind, mut payload: Vec<u8>) -> Result<(), SendError> {
        if payload.len() < HAND_OVER_MIN {
            return self.send(kind, &payload);
        }
        if !self.can_send() {
            return Err(SendError::Closing);
        }
        let mask = self.mask_for_next_frame();
        let header = FrameHeader {
            fin: true,
            opcode: kind.opcode(),
            mask,
            payload_len: payload.len() as u64,
        };
        header.encode(&mut self.output);
        if let Some(key) = mask {
            apply_mask(&mut payload, key, 0);
        }
        self.handed_over.push(std::mem::take(&mut self.output));
        self.handed_over.push(payload);
        Ok(())
    }

    /// Queues a Ping, e.g. a heartbeat (5.5.2).
    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        if payload.len() > super::frame::MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlTooLong);
        }
        self.send_frame(OpCode::Ping, payload)
    }

    /// Starts the closing handshake with `code` and `reason` (7.1.2). Does nothing if a Close was already sent.
    /// A code no endpoint may send (7.4: 1005, 1006, 1015, unassigned ranges) is a caller's bug: it is replaced
    /// by 1011 rather than put on the wire.
    pub fn close(&mut self, code: u16, reason: &str) {
        if self.state != State::Open {
            return;
        }
        debug_assert!(
            close::is_sendable(code),
            "close code {code} may not be sent (RFC 6455 7.4)"
        );
        let code = if close::is_sendable(code) {
            code
        } else {
            close::INTERNAL_ERROR
        };
        let mut body = Vec::with_capacity(2 + reason.len());
        close::encode_close_body(code, reason, &mut body);
        self.write_frame(OpCode::Close, &body);
        self.state = State::CloseSent;
    }

    fn send_frame(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        if !self.can_send() {
            return Err(SendError::Closing);
        }
        self.write_frame(opcode, payload);
        Ok(())
    }

    fn write_frame(&mut self, opcode: OpCode, payload: &[u8]) {
        let mask = self.mask_for_next_frame();
        encode_frame(true, opcode, payload, mask, &mut self.output);
    }

    /// 5.1: a client masks every frame with a fresh key; a server masks none.
    fn mask_for_next_frame(&mut self) -> Option<[u8; 4]> {
        self.mask_state.as_mut().map(next_mask)
    }

    /// Fails the connection (7.1.7): owe a Close with the error's code unless one was sent, and stop.
    fn fail(&mut self, error: ProtocolError) -> ProtocolError {
        if self.state == State::Open {
            let mut body = Vec::with_capacity(64);
            close::encode_close_body(error.close_code(), &error.to_string(), &mut body);
            self.owed_close = Some(body);
        }
        self.state = State::Closed;
        self.receiving = None;
        self.assembly = None;
        error
    }

    fn on_header(
        &mut self,
        header: FrameHeader,
        events: &mut Vec<Event>,
    ) -> Result<(), ProtocolError> {
        if header.opcode.is_control() {
            let payload = Vec::with_capacity(header.payload_len as usize);
            self.receiving = Some(Receiving::Control {
                opcode: header.opcode,
                payload,
            });
            if header.payload_len == 0 {
                self.finish_control(events)?;
            }
            return Ok(());
        }
        let assembled = match (&self.assembly, header.opcode) {
            // 5.4: a continuation continues something, and a new message waits for the last to finish.
            (None, OpCode::Continuation) => return Err(ProtocolError::UnexpectedContinuation),
            (Some(_), OpCode::Text | OpCode::Binary) => {
                return Err(ProtocolError::ExpectedContinuation)
            }
            (Some(assembly), _) => assembly.payload.len() as u64,
            (None, _) => 0,
        };
        // 10.4: refuse a message over the limit as soon as its size is known.
        let limit = self.max_message_size;
        if assembled.saturating_add(header.payload_len) > limit as u64 {
            return Err(ProtocolError::MessageTooBig { limit });
        }
        let assembly = self.assembly.get_or_insert_with(|| Assembly {
            kind: if header.opcode == OpCode::Text {
                MessageKind::Text
            } else {
                MessageKind::Binary
            },
            payload: Vec::new(),
            utf8: Utf8Validator::new(),
        });
        assembly
            .payload
            .reserve(header.payload_len.min(MAX_PREALLOCATION) as usize);
        self.receiving = Some(Receiving::Data { fin: header.fin });
        if header.payload_len == 0 {
            self.finish_data_frame(events)?;
        }
        Ok(())
    }

    fn on_payload(
        &mut self,
        chunk: PayloadChunk<'_>,
        events: &mut Vec<Event>,
    ) -> Result<(), ProtocolError> {
        match &mut self.receiving {
            Some(Receiving::Control { payload, .. }) => {
                chunk.unmask_into(payload);
                if chunk.last {
                    self.finish_control(events)?;
                }
            }
            Some(Receiving::Data { .. }) => {
                if let Some(assembly) = &mut self.assembly {
                    let start = assembly.payload.len();
                    chunk.unmask_into(&mut assembly.payload);
                    // 8.1: fail fast, at the first byte that cannot be UTF-8.
                    if assembly.kind == MessageKind::Text {
                        assembly
                            .utf8
                            .feed(&assembly.payload[start..])
                            .map_err(|_| ProtocolError::InvalidUtf8)?;
                    }
                }
                if chunk.last {
                    self.finish_data_frame(events)?;
                }
            }
            None => {}
        }
        Ok(())
    }

    fn finish_data_frame(&mut self, events: &mut Vec<Event>) -> Result<(), ProtocolError> {
        let fin = matches!(self.receiving.take(), Some(Receiving::Data { fin: true }));
        if !fin {
            return Ok(());
        }
        if let Some(mut assembly) = self.assembly.take() {
            if assembly.kind == MessageKind::Text {
                assembly
                    .utf8
                    .finish()
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            events.push(Event::Message(Message {
                kind: assembly.kind,
                payload: assembly.payload,
            }));
        }
        Ok(())
    }

    fn finish_control(&mut self, events: &mut Vec<Event>) -> Result<(), ProtocolError> {
        let Some(Receiving::Control { opcode, payload }) = self.receiving.take() else {
            return Ok(());
        };
        match opcode {
            OpCode::Ping => {
                // 5.5.2: answer with a Pong carrying the same payload, unless our Close went out already.
                if self.state == State::Open {
                    self.write_frame(OpCode::Pong, &payload);
                }
                events.push(Event::Ping(payload));
            }
            OpCode::Pong => events.push(Event::Pong(payload)),
            OpCode::Close => {
                let frame = close::parse_close_body(&payload).map_err(ProtocolError::CloseBody)?;
                // 5.5.1: answer a Close with a Close, echoing the code, unless we sent ours first.
                if self.state == State::Open {
                    let mut body = Vec::with_capacity(2);
                    if let Some(code) = frame.code {
                        close::encode_close_body(code, "", &mut body);
                    }
                    self.owed_close = Some(body);
                }
                self.state = State::Closed;
                self.assembly = None;
                events.push(Event::Close(frame));
            }
            OpCode::Continuation | OpCode::Text | OpCode::Binary => {}
        }
        Ok(())
    }
}

/// xorshift64*: cheap and well spread; see `Role::Client` for what it does not promise. A non-zero state stays
/// non-zero.
fn next_mask(state: &mut NonZeroU64) -> [u8; 4] {
    let mut x = state.get();
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = NonZeroU64::new(x).unwrap_or(NonZeroU64::MIN);
    let word = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
    let bytes = word.to_be_bytes();
    [bytes[0], bytes[1], bytes[2], bytes[3]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::encode_frame;

    const KEY: [u8; 4] = [9, 8, 7, 6];

    fn client_frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(fin, opcode, payload, Some(KEY), &mut out);
        out
    }

    fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(reason);
        client_frame(true, OpCode::Close, &body)
    }

    fn server() -> Connection {
        Connection::new(Role::Server, 1 << 20)
    }

    /// Feeds `input` one byte at a time and returns the events and the result of the last feed.
    fn feed_bytewise(
        conn: &mut Connection,
        input: &[u8],
    ) -> (Vec<Event>, Result<(), ProtocolError>) {
        let mut events = Vec::new();
        for byte in input {
            if let Err(e) = conn.feed(std::slice::from_ref(byte), &mut events) {
                return (events, Err(e));
            }
        }
        (events, Ok(()))
    }

    /// Decodes what the server wrote, as a client would.
    fn server_frames(output: &[u8]) -> Vec<(OpCode, Vec<u8>)> {
        let mut decoder = FrameDecoder::new(IncomingMask::Forbidden);
        let mut frames: Vec<(OpCode, Vec<u8>)> = Vec::new();
        let mut rest = output;
        while let (used, Some(event)) = decoder.decode(rest).unwrap() {
            rest = &rest[used..];
            match event {
                FrameEvent::Header(h) => frames.push((h.opcode, Vec::new())),
                FrameEvent::Payload(p) => p.unmask_into(&mut frames.last_mut().unwrap().1),
            }
        }
        frames
    }

    fn close_code_sent(conn: &mut Connection) -> Option<u16> {
        server_frames(&conn.take_output())
            .into_iter()
            .find(|(op, _)| *op == OpCode::Close)
            .map(|(_, body)| u16::from_be_bytes([body[0], body[1]]))
    }

    #[test]
    fn a_large_owned_payload_goes_out_as_the_same_buffer_in_its_place() {
        let mut conn = server();
        let payload = vec![7u8; HAND_OVER_MIN];
        let address = payload.as_ptr();
        conn.send(MessageKind::Text, b"before").unwrap();
        conn.send_owned(MessageKind::Binary, payload).unwrap();
        conn.send(MessageKind::Text, b"after").unwrap();
        conn.close(close::NORMAL, "");
        let pieces: Vec<Vec<u8>> = conn.take_output_pieces().collect();
        assert!(
            pieces.iter().any(|piece| piece.as_ptr() == address),
            "copied"
        );
        assert!(!conn.has_output());

        let mut reference = server();
        reference.send(MessageKind::Text, b"before").unwrap();
        reference
            .send(MessageKind::Binary, &[7u8; HAND_OVER_MIN])
            .unwrap();
        reference.send(MessageKind::Text, b"after").unwrap();
        reference.close(close::NORMAL, "");
        assert_eq!(pieces.concat(), reference.take_output());
    }

    #[test]
    fn take_output_joins_the_pieces_and_the_owed_close_stays_last() {
        let mut conn = server();
        let mut events = Vec::new();
        // A message and a violation in one input: the answer to the message goes before the owed Close.
        let mut input = client_frame(true, OpCode::Binary, &[1u8; HAND_OVER_MIN + 1]);
        input.extend(client_frame(
            true,
            OpCode::Continuation,
            b"no message to continue",
        ));
        assert!(conn.feed(&input, &mut events).is_err());
        let Some(Event::Message(message)) = events.pop() else {
            panic!("no message before the violation")
        };
        conn.send_owned(message.kind, message.payload).unwrap();
        assert!(conn.has_output());
        let frames = server_frames(&conn.take_output());
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], (OpCode::Binary, vec![1u8; HAND_OVER_MIN + 1]));
        assert_eq!(frames[1].0, OpCode::Close);
        assert_eq!(
            conn.send_owned(MessageKind::Binary, vec![0; HAND_OVER_MIN]),
            Err(SendError::Closing)
        );
    }

    #[test]
    fn a_client_masks_an_owned_payload_in_place_and_a_server_reads_it_back() {
        let mut client = Connection::new(Role::Client { mask_seed: 42 }, 1 << 20);
        let payload: Vec<u8> = (0..HAND_OVER_MIN * 2).map(|i| i as u8).collect();
        client
            .send_owned(MessageKind::Binary, payload.clone())
            .unwrap();
        client
            .send_owned(MessageKind::Text, b"small".to_vec())
            .unwrap();
        let wire = client.take_output();
        let mut events = Vec::new();
        server().feed(&wire, &mut events).unwrap();
        assert_eq!(
            events,
            vec![
                Event::Message(Message {
                    kind: MessageKind::Binary,
                    payload
                }),
                Event::Message(Message {
                    kind: MessageKind::Text,
                    payload: b"small".to_vec()
                }),
            ]
        );
    }

    #[test]
    fn fragmented_text_with_interleaved_ping_assembles_and_pongs() {
        let mut conn = server();
        let mut input = client_frame(false, OpCode::Text, "hé".as_bytes());
        input.extend(client_frame(true, OpCode::Ping, b"are you there"));
        input.extend(client_frame(true, OpCode::Continuation, "llo".as_bytes()));
        let (events, result) = feed_bytewise(&mut conn, &input);
        assert_eq!(result, Ok(()));
        assert_eq!(
            events,
            vec![
                Event::Ping(b"are you there".to_vec()),
                Event::Message(Message {
                    kind: MessageKind::Text,
                    payload: "héllo".as_bytes().to_vec()
                }),
            ]
        );
        assert_eq!(
            server_frames(&conn.take_output()),
            vec![(OpCode::Pong, b"are you there".to_vec())]
        );
        assert!(conn.is_idle());
    }

    #[test]
    fn continuation_without_a_message_fails_with_1002() {
        let mut conn = server();
        let (_, result) = feed_bytewise(&mut conn, &client_frame(true, OpCode::Continuation, b"x"));
        assert_eq!(result, Err(ProtocolError::UnexpectedContinuation));
        assert_eq!(close_code_sent(&mut conn), Some(1002));
        assert_eq!(conn.state(), State::Closed);
    }

    #[test]
    fn new_message_inside_a_fragmented_one_fails_with_1002() {
        let mut conn = server();
        let mut input = client_frame(false, OpCode::Text, b"a");
        input.extend(client_frame(true, OpCode::Binary, b"b"));
        let (_, result) = feed_bytewise(&mut conn, &input);
        assert_eq!(result, Err(ProtocolError::ExpectedContinuation));
        assert_eq!(close_code_sent(&mut conn), Some(1002));
    }

    #[test]
    fn invalid_utf8_fails_with_1007_before_the_message_ends() {
        let mut conn = server();
        let mut input = client_frame(false, OpCode::Text, &[b'o', b'k', 0xFF]);
        let first_frame_len = input.len();
        input.extend(client_frame(true, OpCode::Continuation, b"never read"));
        let mut events = Vec::new();
        let result = conn.feed(&input[..first_frame_len], &mut events);
        assert_eq!(result, Err(ProtocolError::InvalidUtf8));
        assert_eq!(close_code_sent(&mut conn), Some(1007));
    }

    #[test]
    fn truncated_code_point_at_message_end_fails_with_1007() {
        let mut conn = server();
        let (_, result) =
            feed_bytewise(&mut conn, &client_frame(true, OpCode::Text, &[0xE2, 0x82]));
        assert_eq!(result, Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn message_over_the_limit_fails_with_1009_from_the_header() {
        let mut conn = Connection::new(Role::Server, 10);
        let mut input = client_frame(false, OpCode::Binary, b"123456");
        input.extend(client_frame(true, OpCode::Continuation, b"7890!"));
        let mut events = Vec::new();
        let result = conn.feed(&input, &mut events);
        assert_eq!(result, Err(ProtocolError::MessageTooBig { limit: 10 }));
        assert_eq!(close_code_sent(&mut conn), Some(1009));
        assert!(events.is_empty());
    }

    #[test]
    fn message_exactly_at_the_limit_is_accepted() {
        let mut conn = Connection::new(Role::Server, 10);
        let (events, result) = feed_bytewise(
            &mut conn,
            &client_frame(true, OpCode::Binary, b"0123456789"),
        );
        assert_eq!(result, Ok(()));
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn peer_close_is_echoed_and_later_input_ignored() {
        let mut conn = server();
        let mut input = close_frame(1001, b"bye");
        input.extend(client_frame(true, OpCode::Text, b"after close"));
        let mut events = Vec::new();
        assert_eq!(conn.feed(&input, &mut events), Ok(()));
        assert_eq!(
            events,
            vec![Event::Close(CloseFrame {
                code: Some(1001),
                reason: "bye".into()
            })]
        );
        assert_eq!(conn.state(), State::Closed);
        assert_eq!(close_code_sent(&mut conn), Some(1001));
    }

    #[test]
    fn answer_to_a_message_goes_out_before_the_close_that_followed_it() {
        let mut conn = server();
        let mut input = client_frame(true, OpCode::Text, b"first");
        input.extend(client_frame(true, OpCode::Text, &[0xFF]));
        let mut events = Vec::new();
        assert_eq!(
            conn.feed(&input, &mut events),
            Err(ProtocolError::InvalidUtf8)
        );
        assert!(conn.can_send(), "the answer to `first` may still go out");
        conn.send(MessageKind::Text, b"first").unwrap();
        let frames = server_frames(&conn.take_output());
        assert_eq!(frames[0], (OpCode::Text, b"first".to_vec()));
        assert_eq!(frames[1].0, OpCode::Close);
        assert!(!conn.can_send(), "nothing after the Close");
        assert_eq!(
            conn.send(MessageKind::Text, b"late"),
            Err(SendError::Closing)
        );
    }

    #[test]
    fn empty_close_is_answered_with_empty_close() {
        let mut conn = server();
        let (_, result) = feed_bytewise(&mut conn, &client_frame(true, OpCode::Close, b""));
        assert_eq!(result, Ok(()));
        assert_eq!(
            server_frames(&conn.take_output()),
            vec![(OpCode::Close, Vec::new())]
        );
    }

    #[test]
    fn close_with_invalid_code_fails_with_1002() {
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            let mut conn = server();
            let (_, result) = feed_bytewise(&mut conn, &close_frame(code, b""));
            assert_eq!(
                result,
                Err(ProtocolError::CloseBody(CloseBodyError::InvalidCode(code)))
            );
            assert_eq!(close_code_sent(&mut conn), Some(1002), "code {code}");
        }
    }

    #[test]
    fn close_with_one_byte_body_fails_with_1002() {
        let mut conn = server();
        let (_, result) = feed_bytewise(&mut conn, &client_frame(true, OpCode::Close, &[3]));
        assert_eq!(
            result,
            Err(ProtocolError::CloseBody(CloseBodyError::Truncated))
        );
        assert_eq!(close_code_sent(&mut conn), Some(1002));
    }

    #[test]
    fn close_with_invalid_utf8_reason_fails_with_1007() {
        let mut conn = server();
        let (_, result) = feed_bytewise(
            &mut conn,
            &close_frame(1000, &[0xCE, 0xBA, 0xED, 0xA0, 0x80]),
        );
        assert_eq!(
            result,
            Err(ProtocolError::CloseBody(CloseBodyError::InvalidReason))
        );
        assert_eq!(close_code_sent(&mut conn), Some(1007));
    }

    #[test]
    fn our_close_then_peer_close_completes_the_handshake() {
        let mut conn = server();
        conn.close(1001, "going away");
        assert_eq!(conn.state(), State::CloseSent);
        assert_eq!(
            conn.send(MessageKind::Text, b"late"),
            Err(SendError::Closing)
        );
        assert_eq!(close_code_sent(&mut conn), Some(1001));
        let (events, result) = feed_bytewise(&mut conn, &close_frame(1001, b""));
        assert_eq!(result, Ok(()));
        assert!(matches!(events.as_slice(), [Event::Close(_)]));
        assert_eq!(conn.state(), State::Closed);
        assert!(!conn.has_output(), "no second Close after the handshake");
    }

    #[test]
    fn ping_after_our_close_gets_no_pong() {
        let mut conn = server();
        conn.close(1000, "");
        conn.take_output();
        let (events, _) = feed_bytewise(&mut conn, &client_frame(true, OpCode::Ping, b"x"));
        assert_eq!(events, vec![Event::Ping(b"x".to_vec())]);
        assert!(!conn.has_output());
    }

    #[test]
    fn unsolicited_pong_is_reported_and_not_answered() {
        let mut conn = server();
        let (events, _) = feed_bytewise(&mut conn, &client_frame(true, OpCode::Pong, b"beat"));
        assert_eq!(events, vec![Event::Pong(b"beat".to_vec())]);
        assert!(!conn.has_output());
    }

    #[test]
    fn data_sent_by_a_server_is_unmasked_and_by_a_client_masked() {
        let mut server = server();
        server.send(MessageKind::Text, b"hi").unwrap();
        assert_eq!(server.take_output(), vec![0x81, 0x02, b'h', b'i']);
        let mut client = Connection::new(Role::Client { mask_seed: 7 }, 1 << 20);
        client.send(MessageKind::Text, b"hi").unwrap();
        let out = client.take_output();
        assert_eq!(out[1] & 0x80, 0x80);
        let mut events = Vec::new();
        server.feed(&out, &mut events).unwrap();
        assert_eq!(
            events[0],
            Event::Message(Message {
                kind: MessageKind::Text,
                payload: b"hi".to_vec()
            })
        );
    }

    #[test]
    fn chunking_does_not_change_events() {
        let mut input = client_frame(false, OpCode::Binary, &[1; 300]);
        input.extend(client_frame(true, OpCode::Ping, b"p"));
        input.extend(client_frame(true, OpCode::Continuation, &[2; 70000]));
        input.extend(client_frame(true, OpCode::Text, "✓".as_bytes()));
        let mut whole = server();
        let mut expected = Vec::new();
        whole.feed(&input, &mut expected).unwrap();
        for piece in [1, 3, 7, 128, 4096] {
            let mut conn = server();
            let mut events = Vec::new();
            for chunk in input.chunks(piece) {
                conn.feed(chunk, &mut events).unwrap();
            }
            assert_eq!(events, expected, "piece {piece}");
        }
    }
}
