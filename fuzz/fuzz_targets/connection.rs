//! Fuzz target `connection`: `protocol::Connection` (server role) driven by client frames, garbage and
//! server-side commands.
//!
//! Input: `roomcast_fuzz::conn_ops::ConnInput`: a message size limit, two chunking plans and a sequence of
//! operations. Two connections, A and B, get the same client bytes cut by different plans; each server command
//! is applied to both after both have read every client byte before it. Asserts:
//! - nothing panics;
//! - everything the server writes decodes with a client-side `FrameDecoder` (`IncomingMask::Forbidden`) into
//!   whole, final frames; every Close body parses and its code is one a server may send; only Pongs follow the
//!   server's Close (5.5.2) and there is only one;
//! - every Ping that is read is answered by a Pong with its payload, our Close sent or not, and Pongs answer nothing
//!   else; every command writes exactly the one frame it asks for, or is refused exactly when it must be (a
//!   binary send whose first byte is odd goes through `send_owned` with a payload of 4 KiB or more);
//! - events are sane: text is UTF-8, messages fit the limit, a peer's Close code is valid on the wire;
//! - once `feed` returns a `ProtocolError` the state is `Failed`, the Close written (if the server had not
//!   sent one) carries `error.close_code()`, and later input is ignored;
//! - both chunkings give the same events, the same error, the same state and the same bytes out;
//! - the events and the error are those of `roomcast_fuzz::reference`, an independent whole-buffer reading of
//!   the client's bytes: messages carry exactly the payloads sent, and every failure is the right one.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::protocol::close::{self, parse_close_body, CloseCode};
use roomcast::protocol::frame::{FrameDecoder, FrameEvent, IncomingMask, OpCode};
use roomcast::protocol::{Connection, Event, MessageKind, ProtocolError, Role, SendError, State};
use roomcast_fuzz::chunks::Chunker;
use roomcast_fuzz::conn_ops::{ConnInput, Op};
use roomcast_fuzz::reference;

/// Client bytes a run may send in all (room for one message past the 64-bit length boundary); operations past
/// it are skipped to keep executions fast.
const MAX_STREAM: usize = 80 * 1024;

/// Reads each connection follows its plan for; the rest of the run arrives in whole segments.
const MAX_READS: usize = 8192;

/// Sendable codes a Close command's raw code is mapped onto when it is not sendable itself.
const SENDABLE: &[u16] = &[
    1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1014, 3000, 4999,
];

fuzz_target!(|input: ConnInput| {
    let limit = input.max_message_size();
    let mut a = Side::new(&input.plan_a, limit);
    let mut b = Side::new(&input.plan_b, limit);
    let mut segment = Vec::new();
    let mut stream = Vec::new();
    for op in &input.ops {
        match op {
            Op::Frame(frame) => {
                if stream.len() + frame.max_wire_len() <= MAX_STREAM {
                    let bytes = frame.to_bytes();
                    stream.extend_from_slice(&bytes);
                    segment.extend_from_slice(&bytes);
                }
                continue;
            }
            Op::Raw(bytes) => {
                if stream.len() + bytes.len() <= MAX_STREAM {
                    stream.extend_from_slice(bytes);
                    segment.extend_from_slice(bytes);
                }
                continue;
            }
            _ => {}
        }
        a.feed(&segment);
        b.feed(&segment);
        segment.clear();
        a.command(op);
        b.command(op);
        assert_eq!(
            a.conn.state(),
            b.conn.state(),
            "the chunking changed the state"
        );
        assert_eq!(a.error, b.error, "the chunking changed the error");
    }
    a.feed(&segment);
    b.feed(&segment);
    a.same_as(&b);
    let (events, error) = reference::expected(&stream, limit);
    assert_eq!(
        a.events, events,
        "the events differ from the reference reading"
    );
    assert_eq!(
        a.error, error,
        "the error differs from the reference reading"
    );
});

/// One connection, the plan it reads with, and everything observed of it.
struct Side<'p> {
    conn: Connection,
    chunker: Chunker<'p>,
    limit: usize,
    events: Vec<Event>,
    error: Option<ProtocolError>,
    /// Every byte the server wrote.
    output: Vec<u8>,
    /// Decodes the server's output as a client would.
    client: FrameDecoder,
    /// The server wrote a Close.
    close_sent: bool,
}

/// One frame the server wrote.
#[derive(Debug)]
struct Written {
    opcode: OpCode,
    payload: Vec<u8>,
}

impl<'p> Side<'p> {
    fn new(plan: &'p [u8], limit: usize) -> Self {
        Side {
            conn: Connection::new(Role::Server, limit),
            chunker: Chunker::with_budget(plan, MAX_READS),
            limit,
            events: Vec::new(),
            error: None,
            output: Vec::new(),
            client: FrameDecoder::new(IncomingMask::Forbidden),
            close_sent: false,
        }
    }

    /// Feeds client bytes in this side's reads and checks what came of them.
    fn feed(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if !self.conn.state().reads_input() {
            let seen = self.events.len();
            for piece in self.chunker.split(bytes) {
                assert_eq!(
                    self.conn.feed(piece, &mut self.events),
                    Ok(()),
                    "feed after Closed"
                );
            }
            assert_eq!(self.events.len(), seen, "events after Closed");
            assert!(!self.conn.has_output(), "output after Closed");
            return;
        }
        let close_sent_before = self.close_sent;
        let first_event = self.events.len();
        let mut failed = None;
        let mut out = Vec::new();
        for piece in self.chunker.split(bytes) {
            let closed_before = !self.conn.state().reads_input();
            let events_before = self.events.len();
            let out_before = out.len();
            let result = self.conn.feed(piece, &mut self.events);
            out.extend(self.conn.take_output());
            if closed_before {
                assert_eq!(result, Ok(()), "feed after Closed");
                assert_eq!(self.events.len(), events_before, "events after Closed");
                assert_eq!(out.len(), out_before, "output after Closed");
            }
            if let Err(error) = result {
                assert_eq!(self.conn.state(), State::Failed, "state after {error:?}");
                assert!(self.error.is_none(), "a second error: {error:?}");
                self.error = Some(error.clone());
                failed = Some(error);
            }
        }
        let written = self.decode_written(out);
        let new_events = &self.events[first_event..];
        for event in new_events {
            self.check_event(event);
        }
        // 5.5.2: every Ping read gets its Pong, in order, whether or not our Close went out.
        let pings: Vec<&[u8]> = new_events
            .iter()
            .filter_map(|e| match e {
                Event::Ping(p) => Some(p.as_slice()),
                _ => None,
            })
            .collect();
        let pongs: Vec<&[u8]> = written
            .iter()
            .filter(|w| w.opcode == OpCode::Pong)
            .map(|w| w.payload.as_slice())
            .collect();
        assert_eq!(pongs, pings, "every Ping read is answered");
        for w in &written {
            assert!(
                matches!(w.opcode, OpCode::Pong | OpCode::Close),
                "reading wrote {w:?}"
            );
        }
        let closes: Vec<&Written> = written
            .iter()
            .filter(|w| w.opcode == OpCode::Close)
            .collect();
        if let Some(error) = failed {
            if close_sent_before {
                assert!(closes.is_empty(), "a second Close after {error:?}");
            } else {
                let close = written.last().expect("a failed connection writes a Close");
                assert_eq!(close.opcode, OpCode::Close);
                let code = parse_close_body(&close.payload).unwrap().code;
                assert_eq!(code, Some(error.close_code()), "close code for {error:?}");
            }
        } else if self.conn.state() == State::Closed {
            // Only the peer's Close closes without an error, and it is answered unless ours went first.
            assert!(
                matches!(self.events.last(), Some(Event::Close(_))),
                "closed without a Close"
            );
            assert!(self.close_sent, "the peer's Close was not answered");
            if let (false, Some(Event::Close(peer))) = (close_sent_before, self.events.last()) {
                let echoed = parse_close_body(&closes[0].payload).unwrap();
                assert_eq!(echoed.code, peer.code, "the echo carries the peer's code");
            }
        } else {
            assert!(closes.is_empty(), "a Close while the connection stays open");
        }
    }

    fn check_event(&self, event: &Event) {
        match event {
            Event::Message(m) => {
                assert!(m.as_bytes().len() <= self.limit, "message over the limit");
                if let Some(text) = m.as_text() {
                    assert!(
                        std::str::from_utf8(text.as_bytes()).is_ok(),
                        "text message that is not UTF-8"
                    );
                }
            }
            Event::Ping(p) | Event::Pong(p) => assert!(p.len() <= 125),
            Event::Close(frame) => {
                assert!(
                    frame.code.is_none_or(CloseCode::is_valid_on_wire),
                    "peer close {frame:?}"
                );
            }
        }
    }

    /// Applies a server command and checks it wrote exactly what it should.
    fn command(&mut self, op: &Op) {
        let open = self.conn.state() == State::Open;
        let state = self.conn.state();
        let (expected, result) = match op {
            Op::SendText(bytes) => {
                let text = String::from_utf8_lossy(bytes);
                let result = self.conn.send(MessageKind::Text, text.as_bytes());
                ((OpCode::Text, text.as_bytes().to_vec()), result)
            }
            // An odd first byte sends at least 4 KiB through `send_owned`, which hands the buffer over uncopied.
            Op::SendBinary(bytes) if bytes.first().is_some_and(|b| b & 1 == 1) => {
                let payload = bytes.repeat(4096 / bytes.len() + 1);
                let result = self.conn.send_owned(MessageKind::Binary, payload.clone());
                ((OpCode::Binary, payload), result)
            }
            Op::SendBinary(bytes) => {
                let result = self.conn.send(MessageKind::Binary, bytes);
                ((OpCode::Binary, bytes.clone()), result)
            }
            Op::SendPing(bytes) => {
                let result = self.conn.send_ping(bytes);
                if bytes.len() > 125 {
                    assert_eq!(result, Err(SendError::ControlTooLong));
                    assert!(self.take_written().is_empty());
                    return;
                }
                ((OpCode::Ping, bytes.clone()), result)
            }
            Op::Close { code, reason } => {
                let code = CloseCode::new(if CloseCode::new(*code).is_sendable(Role::Server) {
                    *code
                } else {
                    SENDABLE[usize::from(*code) % SENDABLE.len()]
                });
                let reason = String::from_utf8_lossy(reason);
                self.conn.close(code, &reason);
                let mut body = Vec::new();
                close::encode_close_body(code, &reason, &mut body);
                let written = self.take_written();
                if open {
                    assert_eq!(self.conn.state(), State::CloseSent);
                    assert!(
                        matches!(&written[..], [w] if w.opcode == OpCode::Close && w.payload == body),
                        "close({code}) wrote {written:?}"
                    );
                    let sent = parse_close_body(&body).unwrap();
                    assert_eq!(sent.code, Some(code));
                    assert!(
                        reason.starts_with(&sent.reason),
                        "the reason is cut, not changed"
                    );
                } else {
                    assert_eq!(self.conn.state(), state);
                    assert!(
                        written.is_empty(),
                        "close() when not open wrote {written:?}"
                    );
                }
                return;
            }
            Op::Frame(_) | Op::Raw(_) => unreachable!("client bytes are not commands"),
        };
        let written = self.take_written();
        if open {
            assert_eq!(result, Ok(()));
            assert!(
                matches!(&written[..], [w] if (w.opcode, &w.payload) == (expected.0, &expected.1)),
                "{op:?} wrote {written:?}"
            );
        } else {
            assert_eq!(result, Err(SendError::Closing));
            assert!(written.is_empty(), "{op:?} when not open wrote {written:?}");
        }
        assert_eq!(self.conn.state(), state);
    }

    /// Takes the server's new output and decodes it.
    fn take_written(&mut self) -> Vec<Written> {
        let bytes = self.conn.take_output();
        assert!(!self.conn.has_output());
        self.decode_written(bytes)
    }

    /// Decodes bytes the server wrote as a client would: whole frames, each well-formed.
    fn decode_written(&mut self, bytes: Vec<u8>) -> Vec<Written> {
        self.output.extend_from_slice(&bytes);
        let mut written: Vec<Written> = Vec::new();
        let mut rest = &bytes[..];
        loop {
            let (used, event) = self
                .client
                .decode(rest)
                .unwrap_or_else(|e| panic!("the server wrote a bad frame: {e}"));
            rest = &rest[used..];
            match event {
                None => break,
                Some(FrameEvent::Header(h)) => {
                    assert!(
                        !self.close_sent || h.opcode == OpCode::Pong,
                        "{h:?} after the server's Close"
                    );
                    assert!(h.fin, "the server fragments nothing");
                    assert_ne!(h.opcode, OpCode::Continuation);
                    if h.opcode == OpCode::Close {
                        self.close_sent = true;
                    }
                    written.push(Written {
                        opcode: h.opcode,
                        payload: Vec::new(),
                    });
                }
                Some(FrameEvent::Payload(p)) => {
                    p.unmask_into(&mut written.last_mut().unwrap().payload)
                }
            }
        }
        assert!(
            self.client.at_frame_boundary(),
            "the server wrote part of a frame"
        );
        for w in written.iter().filter(|w| w.opcode == OpCode::Close) {
            let body = parse_close_body(&w.payload)
                .unwrap_or_else(|e| panic!("the server's Close body {:x?}: {e}", w.payload));
            assert!(
                body.code.is_none_or(CloseCode::is_valid_on_wire),
                "close code {:?}",
                body.code
            );
        }
        written
    }

    /// Everything observable is the same as on `other`. Events and output only grow, so checking once at the
    /// end covers every step.
    fn same_as(&self, other: &Side<'_>) {
        assert_eq!(self.events, other.events, "the chunking changed the events");
        assert_eq!(self.error, other.error, "the chunking changed the error");
        assert_eq!(self.conn.state(), other.conn.state());
        assert_eq!(self.output, other.output, "the chunking changed the output");
    }
}
