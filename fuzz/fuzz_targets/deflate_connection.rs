//! Fuzz target `deflate_connection`: permessage-deflate (RFC 7692) inside `protocol::Connection`, both roles.
//!
//! Input: `roomcast_fuzz::deflate_ops::DeflateInput`. The parameters come out of the real negotiation
//! (`negotiate_server` on an offer and a policy from the input, then our client's `accept_server_answer`); a
//! client `Connection` and two server `Connection`s, A and B, use them. The client's messages, whatever is
//! injected into its stream, and its Close go to both servers; A and B read the same bytes cut by different read
//! plans and budgeted by different `FeedLimits` (inflated bytes and frames), calling `feed_within` again on what a
//! call left unused, and with nothing when it stopped at its inflation limit, as a server loop does across turns.
//! Server commands apply to both at the same point of the stream, and the client reads what the servers wrote.
//! Asserts:
//! - nothing panics;
//! - A and B see the same events, the same error, the same states and close codes, and write the same bytes;
//! - every `Fed` is exact: `used` within the input and all of it unless the call stopped at a limit or reading
//!   ended, `inflated` within its limit and equal to it when it stopped there, a stop makes progress (unless the
//!   inflation limit was zero), and no inflation without permessage-deflate;
//! - inflated bytes add up: what the calls report, less the length of every compressed message delivered (which
//!   messages were compressed is read off the stream's RSV1 bits), never goes negative nor past the size limit,
//!   and is zero whenever the connection is between messages, where `buffered_bytes()` is 0 too;
//! - events are sane: messages within the size limit, control payloads within 125 bytes, peer Close codes valid;
//! - an error comes with the close code 7.4.1 names for it, the limit it broke, and, unless the server had closed
//!   first, a Close carrying that code;
//! - what the client's `Connection` writes is one frame per message, compressed (RSV1) only when permessage-deflate
//!   is on, the message is at least `MIN_COMPRESSED_LEN` and it got smaller, and plain otherwise; so does what the
//!   server writes, shared compressed frames included, and a server writes one Close at most, then no data;
//! - with nothing injected, the servers see exactly the Pings, messages and Close the client sent, in order, until
//!   the first message over the size or fragment limit, which fails with 1009 or 1008 and yields no event;
//! - the client reads back exactly the messages the server sent, in order, and never fails.

#![no_main]

use flate2::{Compress, Compression, FlushCompress};
use libfuzzer_sys::fuzz_target;
use roomcast::protocol::close::{parse_close_body, CloseBodyError, CloseCode};
use roomcast::protocol::connection::MIN_COMPRESSED_LEN;
use roomcast::protocol::deflate::{
    accept_server_answer, negotiate_server, DeflateParams, MessageCompressor,
};
use roomcast::protocol::extensions::parse_extensions;
use roomcast::protocol::frame::{FrameDecoder, FrameEvent, IncomingMask, OpCode};
use roomcast::protocol::{
    encode_server_message, encode_server_message_compressed, Connection, Event, Fed, FeedLimit,
    FeedLimits, Message, MessageKind, ProtocolError, Role, SendError, State,
};
use roomcast_fuzz::chunks::Chunker;
use roomcast_fuzz::conn_ops::{ClientFrame, LenForm, Payload};
use roomcast_fuzz::deflate_ops::{Body, DeflateInput, DeflateOp, ReaderPlan};

/// Client bytes a run may send in all; operations past it are skipped.
const MAX_STREAM: usize = 96 * 1024;

/// Plain bytes a run may compress or send in all (client, injected and server messages); operations past it are
/// skipped. Enough for a message past the 64 KiB limit, few enough to keep executions fast: zlib slides its hash
/// table every window's worth of input, which with a 512-byte window costs more than the compression itself.
const MAX_PLAIN: usize = 128 * 1024;

/// Reads a server follows its read plan for; the rest of the run arrives in whole segments.
const MAX_READS: usize = 8192;

/// `feed_within` calls a server follows its budgets for; later calls have no limits.
const MAX_CALLS: usize = 4096;

/// The client's message size limit: more than anything the server sends.
const CLIENT_LIMIT: usize = 1 << 24;

/// Codes a Close command's raw code is mapped onto when its role may not send it.
const SENDABLE: &[u16] = &[1000, 1001, 1003, 1007, 1008, 1009, 1011, 3000, 4999];

fuzz_target!(|input: DeflateInput| {
    let params = negotiate(&input);
    let mut run = Run::new(&input, params);
    for op in &input.ops {
        run.apply(op);
    }
    run.finish();
});

/// The parameters the real handshake agrees on: the server's answer to the input's offer under its policy, as our
/// client reads that answer back. `None` when nothing is offered, the server declines, or our client refuses the
/// answer (a client window of 8, which our compressor cannot use: the handshake would fail).
fn negotiate(input: &DeflateInput) -> Option<DeflateParams> {
    let offer = input.negotiation.offer()?;
    let params = negotiate_server(std::slice::from_ref(&offer), &input.negotiation.policy())?;
    // RFC 7692 7.1.2.1: a window is 2^8 to 2^15 bytes; every one of them can be honoured, 8 bits included.
    assert!(
        (8..=15).contains(&params.server_window_bits()),
        "{offer} agreed on {params:?}"
    );
    let header = params.response_header();
    let answer = parse_extensions([header.as_bytes()]).expect("our own answer parses");
    match accept_server_answer(&answer) {
        Ok(Some(agreed)) => {
            assert_eq!(agreed, params, "our client reads {header:?} differently");
            Some(params)
        }
        other => panic!("our client refuses our server's answer {header:?}: {other:?}"),
    }
}

/// A whole run: the client, the two servers, and what each is expected to see.
struct Run<'i> {
    params: Option<DeflateParams>,
    limit: usize,
    max_fragments: Option<u32>,
    client: Connection,
    /// Everything the client read from the servers.
    client_events: Vec<Event>,
    a: Side<'i>,
    b: Side<'i>,
    /// Which messages of the client's stream are compressed, read off the stream itself.
    walker: Walker,
    /// Client bytes not yet read by the servers.
    segment: Vec<u8>,
    /// Client bytes sent in all.
    stream_len: usize,
    /// Plain bytes used in all.
    plain: usize,
    /// Bytes the client's `Connection` did not write went into its stream: no expectation of the events.
    injected: bool,
    /// The events the servers must see when nothing is injected, as long as `violation` is `None`.
    expected: Vec<Event>,
    /// The first client message over a limit.
    violation: Option<Violation>,
    /// A compressor for injected messages, each compressed on its own; made when first needed.
    injector: Option<MessageCompressor>,
    /// The messages the server sent, in order.
    server_sent: Vec<Message>,
    /// The server wrote its Close.
    server_close_written: bool,
}

/// The first message the client sent over the size limit or the fragment limit.
#[derive(Debug)]
struct Violation {
    too_big: bool,
    too_many_fragments: bool,
    /// Pings sent between its fragments: the ones before the frame that fails it are delivered.
    pings: usize,
}

impl<'i> Run<'i> {
    fn new(input: &'i DeflateInput, params: Option<DeflateParams>) -> Self {
        let limit = input.max_message_size();
        let max_fragments = input.max_fragments();
        let mut client = Connection::new(Role::Client, CLIENT_LIMIT);
        client.use_predictable_masks(0x5eed);
        let mut walker = Walker::new();
        if let Some(params) = &params {
            client.use_deflate(params);
            walker.decoder.allow_compression();
        }
        let side = |plan: &'i ReaderPlan| {
            let mut conn = Connection::new(Role::Server, limit);
            if let Some(params) = &params {
                conn.use_deflate(params);
            }
            if let Some(max) = max_fragments {
                conn.limit_fragments(max);
            }
            // The window a shared compressed frame is made for: only when the server keeps no context (7.1.1.1).
            let shared = params
                .filter(|p| p.server_no_context_takeover)
                .map(|p| p.server_window_bits());
            assert_eq!(conn.shared_compression_window(), shared);
            Side {
                conn,
                plan,
                chunker: Chunker::with_budget(&plan.reads, MAX_READS),
                calls: 0,
                limit,
                max_fragments,
                deflate: params.is_some(),
                events: Vec::new(),
                error: None,
                closed_first: false,
                messages: 0,
                inflated_total: 0,
                pending_inflated: 0,
                written: Vec::new(),
            }
        };
        Run {
            params,
            limit,
            max_fragments,
            client,
            client_events: Vec::new(),
            a: side(&input.reader_a),
            b: side(&input.reader_b),
            walker,
            segment: Vec::new(),
            stream_len: 0,
            plain: 0,
            injected: false,
            expected: Vec::new(),
            violation: None,
            injector: None,
            server_sent: Vec::new(),
            server_close_written: false,
        }
    }

    fn apply(&mut self, op: &DeflateOp) {
        match op {
            DeflateOp::ClientMessage { flags, body, cuts } => {
                self.client_message(*flags, body, cuts)
            }
            DeflateOp::ClientClose { code, reason } => {
                self.flush_client();
                let code = sendable(*code, Role::Client);
                self.client.close(code, &String::from_utf8_lossy(reason));
                self.flush_client();
            }
            DeflateOp::Raw(bytes) => {
                self.inject(bytes);
            }
            DeflateOp::Frame {
                flags,
                opcode,
                payload,
            } => {
                let frame = ClientFrame {
                    fin: flags & 1 != 0,
                    rsv: (flags >> 1) & 7,
                    opcode: opcode & 0x0F,
                    mask: (flags & 0x10 == 0).then_some([0x11, 0x22, 0x33, *opcode]),
                    len_form: LenForm::Minimal,
                    payload: Payload::Bytes(payload.clone()),
                };
                self.inject(&frame.to_bytes());
            }
            DeflateOp::Deflated { flags, arg, body } => self.deflated(*flags, *arg, body),
            DeflateOp::ServerMessage { flags, body } => self.server_message(*flags, body),
            DeflateOp::ServerClose { code, reason } => {
                self.feed_segment();
                let code = sendable(*code, Role::Server);
                let reason = String::from_utf8_lossy(reason);
                self.a.close(code, &reason);
                self.b.close(code, &reason);
                self.exchange();
            }
        }
    }

    /// Counts `len` plain bytes against the run's allowance; false (and nothing counted) if they do not fit.
    fn reserve_plain(&mut self, len: usize) -> bool {
        if self.plain + len > MAX_PLAIN {
            return false;
        }
        self.plain += len;
        true
    }

    /// True if `len` more client bytes fit in the run (with room for a Close and Pongs after them).
    fn stream_fits(&self, len: usize) -> bool {
        self.stream_len + len + 512 <= MAX_STREAM
    }

    fn push_stream(&mut self, bytes: &[u8]) {
        self.stream_len += bytes.len();
        self.segment.extend_from_slice(bytes);
    }

    fn inject(&mut self, bytes: &[u8]) {
        if self.stream_fits(bytes.len()) {
            self.push_stream(bytes);
            self.injected = true;
        }
    }

    /// The client sends a message through its `Connection`; the frame it writes is checked, then re-cut into
    /// fragments (with Pings between them) if the input asks.
    fn client_message(&mut self, flags: u8, body: &Body, cuts: &[u8]) {
        let (kind, payload) = payload_of(flags, body);
        let fragments = cuts.len() + 1;
        let pings = if flags & 2 != 0 { cuts.len() } else { 0 };
        // Compressed only when smaller: the payload, a header per fragment and the Pings bound the frame's size.
        let wire_max = payload.len() + 14 * fragments + 7 * pings;
        if !self.stream_fits(wire_max) || !self.reserve_plain(payload.len()) {
            return;
        }
        self.flush_client();
        let can_send = self.client.can_send();
        match self.client.send(kind, &payload) {
            Ok(()) => assert!(can_send),
            Err(error) => {
                assert_eq!(error, SendError::Closing);
                assert!(!can_send);
                return;
            }
        }
        let written = self.client.take_output();
        let frames = parse_frames(&written, true);
        let [frame] = frames.as_slice() else {
            panic!("one message, {} frames", frames.len());
        };
        assert!(frame.fin, "the client fragmented a message");
        assert_eq!(frame.opcode, opcode_of(kind));
        self.check_compression(frame, &payload, "client");
        let bytes = if cuts.is_empty() {
            written
        } else {
            refragment(frame, cuts, pings > 0)
        };
        self.push_stream(&bytes);
        self.expect_message(kind, payload, fragments, pings);
    }

    /// A frame's payload is `payload` compressed (RSV1) only where permessage-deflate allows and it helps, and
    /// `payload` itself otherwise.
    fn check_compression(&self, frame: &WireFrame, payload: &[u8], who: &str) {
        if frame.rsv1 {
            assert!(
                self.params.is_some(),
                "{who}: RSV1 without permessage-deflate"
            );
            assert!(
                payload.len() >= MIN_COMPRESSED_LEN,
                "{who}: a {}-byte message compressed",
                payload.len()
            );
            assert!(
                frame.payload.len() < payload.len(),
                "{who}: compressed {} bytes into {}",
                payload.len(),
                frame.payload.len()
            );
        } else {
            assert!(frame.payload == payload, "{who}: a plain frame changed");
        }
    }

    /// What the servers must see of a message the client sent, when nothing is injected.
    fn expect_message(
        &mut self,
        kind: MessageKind,
        payload: Vec<u8>,
        fragments: usize,
        pings: usize,
    ) {
        if self.violation.is_some() {
            return;
        }
        let too_big = payload.len() > self.limit;
        let too_many_fragments = self
            .max_fragments
            .is_some_and(|max| fragments > max as usize);
        if too_big || too_many_fragments {
            self.violation = Some(Violation {
                too_big,
                too_many_fragments,
                pings,
            });
            return;
        }
        for i in 0..pings {
            self.expected.push(Event::Ping(vec![i as u8]));
        }
        let message = match kind {
            MessageKind::Text => {
                Message::Text(String::from_utf8(payload).expect("text payloads are UTF-8"))
            }
            MessageKind::Binary => Message::Binary(payload),
        };
        self.expected.push(Event::Message(message));
    }

    /// Moves what the client owes (a Close answering the server's, Pongs) into its stream, and expects the
    /// servers to see it.
    fn flush_client(&mut self) {
        let written = self.client.take_output();
        if written.is_empty() || !self.stream_fits(written.len()) {
            return;
        }
        for frame in parse_frames(&written, true) {
            let event = match OpCode::from_bits(frame.opcode) {
                Some(OpCode::Close) => Event::Close(
                    parse_close_body(&frame.payload).expect("the client's Close parses"),
                ),
                Some(OpCode::Pong) => Event::Pong(frame.payload),
                _ => panic!("the client wrote {frame:?} unasked"),
            };
            if self.violation.is_none() {
                self.expected.push(event);
            }
        }
        self.push_stream(&written);
    }

    /// A message compressed outside the client, maybe damaged, in one or two frames, goes into its stream.
    fn deflated(&mut self, flags: u8, arg: u8, body: &Body) {
        let (kind, plain) = payload_of(flags, body);
        if !self.stream_fits(plain.len() + 64) || !self.reserve_plain(plain.len()) {
            return;
        }
        let mut compressed = Vec::new();
        if flags & 2 != 0 {
            compressed = compress_with_final_block(&plain);
        } else {
            self.injector
                .get_or_insert_with(|| MessageCompressor::new(15, true))
                .compress(&plain, &mut compressed)
                .expect("compression works");
        }
        let at = |len: usize| usize::from(arg) * len / 256;
        match (flags >> 2) & 3 {
            1 if !compressed.is_empty() => {
                let i = at(compressed.len());
                compressed[i] ^= 1 << (arg % 8);
            }
            2 => compressed.truncate(at(compressed.len())),
            3 => compressed.push(arg),
            _ => {}
        }
        let opcode = opcode_of(kind);
        let rsv_first = if flags & 0x40 == 0 { 4 } else { 0 };
        let frame = |fin: bool, rsv: u8, opcode: u8, payload: &[u8]| {
            ClientFrame {
                fin,
                rsv,
                opcode,
                mask: Some([arg, 0x5a, 0xa5, flags]),
                len_form: LenForm::Minimal,
                payload: Payload::Bytes(payload.to_vec()),
            }
            .to_bytes()
        };
        let mut bytes;
        if flags & 0x10 != 0 {
            let (first, second) = compressed.split_at(at(compressed.len()));
            bytes = frame(false, rsv_first, opcode, first);
            if flags & 0x80 != 0 {
                bytes.extend(frame(true, 0, OpCode::Ping.bits(), b"between"));
            }
            let rsv_second = if flags & 0x20 != 0 { 4 } else { 0 };
            bytes.extend(frame(true, rsv_second, 0, second));
        } else {
            bytes = frame(true, rsv_first, opcode, &compressed);
        }
        self.inject(&bytes);
    }

    /// The server sends a message: through `send`, `send_owned`, or as the shared compressed frame.
    fn server_message(&mut self, flags: u8, body: &Body) {
        let (kind, payload) = payload_of(flags, body);
        if !self.reserve_plain(payload.len()) {
            return;
        }
        self.feed_segment();
        let owned = flags & 2 != 0;
        let shared = flags & 4 != 0;
        let sent_a = self.a.send(kind, &payload, owned, shared);
        let sent_b = self.b.send(kind, &payload, owned, shared);
        assert_eq!(sent_a, sent_b, "the readers disagree on sending");
        let frames = self.exchange();
        let data: Vec<&WireFrame> = frames
            .iter()
            .filter(|f| !OpCode::from_bits(f.opcode).is_some_and(OpCode::is_control))
            .collect();
        if sent_a.is_err() {
            assert!(data.is_empty(), "a refused message was written");
            return;
        }
        let [frame] = data.as_slice() else {
            panic!("one message, {} data frames", data.len());
        };
        assert!(frame.fin, "the server fragmented a message");
        assert_eq!(frame.opcode, opcode_of(kind));
        self.check_compression(frame, &payload, "server");
        self.server_sent.push(match kind {
            MessageKind::Text => {
                Message::Text(String::from_utf8(payload).expect("text payloads are UTF-8"))
            }
            MessageKind::Binary => Message::Binary(payload),
        });
    }

    /// Both servers read the client bytes sent since they last read, and must agree on everything they saw.
    fn feed_segment(&mut self) {
        let segment = std::mem::take(&mut self.segment);
        self.walker.push(&segment);
        self.a.feed(&segment, &self.walker.compressed);
        self.b.feed(&segment, &self.walker.compressed);
        assert_eq!(
            self.a.events, self.b.events,
            "the readers saw different events"
        );
        assert_eq!(self.a.error, self.b.error, "the readers failed differently");
        assert_eq!(self.a.conn.state(), self.b.conn.state());
        assert_eq!(self.a.conn.close_code(), self.b.conn.close_code());
        assert_eq!(self.a.conn.is_mid_message(), self.b.conn.is_mid_message());
        if !self.injected {
            // The client writes whole messages, so a server that read them all is between messages.
            assert!(
                !self.a.conn.is_mid_message(),
                "mid-message after whole messages"
            );
            assert_eq!(self.a.conn.buffered_bytes(), 0);
        }
    }

    /// Takes what both servers wrote (which must be the same bytes), checks it, and gives it to the client.
    fn exchange(&mut self) -> Vec<WireFrame> {
        let written = self.a.take_written();
        let written_b = self.b.take_written();
        assert!(written == written_b, "the readers wrote different bytes");
        let frames = parse_frames(&written, false);
        for frame in &frames {
            let opcode = OpCode::from_bits(frame.opcode).expect("a known opcode");
            assert!(frame.fin, "a fragmented server frame");
            if opcode.is_control() {
                assert!(!frame.rsv1, "RSV1 on a control frame");
                assert!(frame.payload.len() <= 125);
            } else {
                assert!(!self.server_close_written, "data after the server's Close");
            }
            if opcode == OpCode::Close {
                assert!(!self.server_close_written, "a second Close");
                self.server_close_written = true;
                let close = parse_close_body(&frame.payload).expect("the server's Close parses");
                if let (Some(error), false) = (&self.a.error, self.a.closed_first) {
                    assert_eq!(
                        close.code,
                        Some(error.close_code()),
                        "the Close after {error:?}"
                    );
                }
            }
        }
        if self.client.state().reads_input() {
            let result = self.client.feed(&written, &mut self.client_events);
            assert_eq!(result, Ok(()), "the client fails reading the server");
        }
        frames
    }

    fn finish(&mut self) {
        for _ in 0..2 {
            self.feed_segment();
            self.exchange();
            self.flush_client();
        }
        self.feed_segment();
        self.exchange();
        if self.a.error.is_none() && !self.a.conn.is_mid_message() {
            assert_eq!(self.a.pending_inflated, 0);
            assert_eq!(self.a.inflated_total, self.b.inflated_total);
        }
        let client_messages: Vec<&Message> = self
            .client_events
            .iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some(m),
                _ => None,
            })
            .collect();
        let sent: Vec<&Message> = self.server_sent.iter().collect();
        assert!(
            client_messages == sent,
            "the client read other messages than the server sent"
        );
        if self.injected {
            return;
        }
        let events = &self.a.events;
        match &self.violation {
            None => {
                assert_eq!(self.a.error, None, "a clean run failed");
                assert!(
                    *events == self.expected,
                    "the server saw other events than the client sent"
                );
            }
            Some(violation) => {
                let (before, after) = events.split_at(self.expected.len().min(events.len()));
                assert!(
                    before == self.expected,
                    "the events before the violation differ"
                );
                assert!(after.len() <= violation.pings);
                assert!(after.iter().all(|e| matches!(e, Event::Ping(_))));
                let error = self
                    .a
                    .error
                    .as_ref()
                    .expect("the violation fails the connection");
                let fits = match error {
                    ProtocolError::MessageTooBig { .. } => violation.too_big,
                    ProtocolError::TooManyFragments { .. } => violation.too_many_fragments,
                    _ => false,
                };
                assert!(fits, "{violation:?} failed with {error:?}");
            }
        }
    }
}

/// One server connection and everything observed of it.
struct Side<'i> {
    conn: Connection,
    plan: &'i ReaderPlan,
    chunker: Chunker<'i>,
    /// `feed_within` calls made.
    calls: usize,
    limit: usize,
    max_fragments: Option<u32>,
    deflate: bool,
    events: Vec<Event>,
    error: Option<ProtocolError>,
    /// The server's own Close went out before any failure.
    closed_first: bool,
    /// Messages delivered.
    messages: usize,
    /// `Fed::inflated`, summed.
    inflated_total: usize,
    /// Inflated bytes reported and not yet delivered as a compressed message.
    pending_inflated: usize,
    /// Output taken from the connection early, to put a shared frame after it, and the shared frames.
    written: Vec<u8>,
}

impl Side<'_> {
    /// Reads client bytes as a server loop does: in this side's reads, each served by `feed_within` calls until
    /// it is used up (or reading ends), a call that stopped at its inflation limit called again even with nothing
    /// new to give.
    fn feed(&mut self, bytes: &[u8], compressed: &[bool]) {
        for piece in self.chunker.split(bytes) {
            let mut rest = piece;
            loop {
                if !self.conn.state().reads_input() {
                    let seen = self.events.len();
                    let fed = self
                        .conn
                        .feed_within(rest, &mut self.events, FeedLimits::NONE);
                    assert_eq!(fed.map(|f| (f.inflated, f.stopped)), Ok((0, None)));
                    assert_eq!(self.events.len(), seen, "events after reading ended");
                    break;
                }
                let limits = if self.calls < MAX_CALLS {
                    self.plan.limits(self.calls)
                } else {
                    FeedLimits::NONE
                };
                self.calls += 1;
                let frames_before = self.conn.frames_received();
                let events_before = self.events.len();
                let result = self.conn.feed_within(rest, &mut self.events, limits);
                self.check_events(events_before);
                match result {
                    Ok(fed) => {
                        self.check_fed(&fed, rest.len(), limits, frames_before);
                        self.account(fed.inflated, events_before, compressed);
                        rest = &rest[fed.used..];
                        if fed.stopped.is_none() {
                            break;
                        }
                    }
                    Err(error) => {
                        self.failed(error);
                        break;
                    }
                }
            }
        }
    }

    /// One `Fed` is exact.
    fn check_fed(&self, fed: &Fed, offered: usize, limits: FeedLimits, frames_before: u32) {
        assert!(fed.used <= offered);
        assert!(
            fed.inflated <= limits.inflated_bytes,
            "{fed:?} within {limits:?}"
        );
        if !self.deflate {
            assert_eq!(fed.inflated, 0, "inflated without permessage-deflate");
        }
        let frames_read = self.conn.frames_received().wrapping_sub(frames_before);
        match fed.stopped {
            None => {
                if self.conn.state().reads_input() {
                    assert_eq!(fed.used, offered, "input left over without a stop");
                }
            }
            Some(FeedLimit::InflatedBytes) => {
                assert!(self.deflate);
                assert_eq!(
                    fed.inflated, limits.inflated_bytes,
                    "stopped short of the limit"
                );
            }
            Some(FeedLimit::Frames) => {
                // A frame begun by the last call may finish its header in this one, uncounted by the limit.
                assert!(
                    frames_read == limits.frames || frames_read == limits.frames.wrapping_add(1),
                    "{frames_read} frames read within {limits:?}"
                );
                assert!(
                    fed.used < offered,
                    "stopped at the frame limit with nothing left"
                );
            }
        }
        if fed.stopped.is_some() {
            assert!(
                self.conn.state().reads_input(),
                "stopped after reading ended"
            );
            assert!(
                fed.used > 0 || fed.inflated > 0 || limits.inflated_bytes == 0,
                "a stop without progress: {fed:?} within {limits:?}"
            );
        }
    }

    /// Inflated bytes reported add up to the compressed messages delivered, plus at most one message in progress.
    fn account(&mut self, inflated: usize, events_before: usize, compressed: &[bool]) {
        self.inflated_total += inflated;
        self.pending_inflated += inflated;
        for event in &self.events[events_before..] {
            let Event::Message(message) = event else {
                continue;
            };
            let was_compressed = *compressed
                .get(self.messages)
                .expect("a message the stream has not finished");
            self.messages += 1;
            if was_compressed {
                let len = message.as_bytes().len();
                assert!(
                    self.pending_inflated >= len,
                    "a {len}-byte compressed message delivered with {} bytes reported inflated",
                    self.pending_inflated
                );
                self.pending_inflated -= len;
            }
        }
        assert!(
            self.pending_inflated <= self.limit,
            "{} bytes inflated in a message limited to {}",
            self.pending_inflated,
            self.limit
        );
        if !self.conn.is_mid_message() {
            assert_eq!(self.pending_inflated, 0, "inflated bytes of no message");
            assert_eq!(self.conn.buffered_bytes(), 0, "bytes held between messages");
        }
    }

    fn check_events(&self, from: usize) {
        for event in &self.events[from..] {
            match event {
                Event::Message(m) => {
                    assert!(m.as_bytes().len() <= self.limit, "a message over the limit");
                }
                Event::Ping(p) | Event::Pong(p) => assert!(p.len() <= 125),
                Event::Close(frame) => {
                    assert!(frame.code.is_none_or(CloseCode::is_valid_on_wire));
                }
            }
        }
    }

    /// The connection failed: the error names the right code and limit, and the connection records it.
    fn failed(&mut self, error: ProtocolError) {
        assert_eq!(self.conn.state(), State::Failed, "state after {error:?}");
        assert!(self.error.is_none(), "a second error: {error:?}");
        // RFC 6455 7.4.1 and RFC 7692 8.
        let code = match &error {
            ProtocolError::Frame(_)
            | ProtocolError::UnexpectedContinuation
            | ProtocolError::ExpectedContinuation
            | ProtocolError::CloseBody(
                CloseBodyError::Truncated | CloseBodyError::InvalidCode(_),
            ) => 1002,
            ProtocolError::InvalidUtf8
            | ProtocolError::BadCompression
            | ProtocolError::CloseBody(CloseBodyError::InvalidReason) => 1007,
            ProtocolError::TooManyFragments { limit } => {
                assert_eq!(Some(*limit), self.max_fragments);
                1008
            }
            ProtocolError::MessageTooBig { limit } => {
                assert_eq!(*limit, self.limit);
                1009
            }
        };
        assert_eq!(error.close_code(), CloseCode::new(code), "{error:?}");
        if matches!(error, ProtocolError::BadCompression) {
            assert!(self.deflate, "bad compression without permessage-deflate");
        }
        if !self.closed_first {
            assert_eq!(self.conn.close_code(), Some(error.close_code()));
        }
        assert_eq!(self.conn.buffered_bytes(), 0, "bytes held after a failure");
        self.error = Some(error);
    }

    fn send(
        &mut self,
        kind: MessageKind,
        payload: &[u8],
        owned: bool,
        shared: bool,
    ) -> Result<(), SendError> {
        let can_send = self.conn.can_send();
        // A shared frame bypasses the connection, so only while it owes nothing (no Close in particular).
        if let (true, Some(bits), State::Open) = (
            shared,
            self.conn.shared_compression_window(),
            self.conn.state(),
        ) {
            let mut frame = Vec::new();
            if !encode_server_message_compressed(kind, payload, bits, &mut frame) {
                assert!(frame.is_empty(), "a frame left behind");
                encode_server_message(kind, payload, &mut frame);
            }
            self.written.extend(self.conn.take_output());
            self.written.extend(frame);
            return Ok(());
        }
        let result = if owned {
            self.conn.send_owned(kind, payload.to_vec())
        } else {
            self.conn.send(kind, payload)
        };
        assert_eq!(result.is_ok(), can_send, "{result:?}");
        result
    }

    /// Everything written since the last call: the connection's output, with shared frames in their places.
    fn take_written(&mut self) -> Vec<u8> {
        self.written.extend(self.conn.take_output());
        std::mem::take(&mut self.written)
    }

    fn close(&mut self, code: CloseCode, reason: &str) {
        if self.conn.state() == State::Open {
            self.closed_first = true;
        }
        self.conn.close(code, reason);
    }
}

/// Reads which messages of the client's stream are compressed: RSV1 on a message's first frame (RFC 7692 6).
/// It follows frames only, so it agrees with a connection up to the first violation, after which no message is
/// delivered anyway.
struct Walker {
    decoder: FrameDecoder,
    dead: bool,
    /// RSV1 of the message in progress.
    message: Option<bool>,
    /// The data frame in progress and its FIN.
    data_frame: Option<bool>,
    /// For every message completed so far, in order: was it compressed.
    compressed: Vec<bool>,
}

impl Walker {
    fn new() -> Self {
        Walker {
            decoder: FrameDecoder::new(IncomingMask::Required),
            dead: false,
            message: None,
            data_frame: None,
            compressed: Vec::new(),
        }
    }

    fn push(&mut self, mut bytes: &[u8]) {
        while !self.dead && !bytes.is_empty() {
            let Ok((used, event)) = self.decoder.decode(bytes) else {
                self.dead = true;
                return;
            };
            bytes = &bytes[used..];
            match event {
                None => return,
                Some(FrameEvent::Header(header)) => {
                    if header.opcode.is_control() {
                        continue;
                    }
                    if header.opcode != OpCode::Continuation {
                        self.message = Some(header.rsv1);
                    }
                    self.data_frame = Some(header.fin);
                    if header.payload_len == 0 {
                        self.end_data_frame();
                    }
                }
                Some(FrameEvent::Payload(chunk)) => {
                    if chunk.last && self.data_frame.is_some() {
                        self.end_data_frame();
                    }
                }
            }
        }
    }

    fn end_data_frame(&mut self) {
        if self.data_frame.take() == Some(true) {
            if let Some(compressed) = self.message.take() {
                self.compressed.push(compressed);
            }
        }
    }
}

/// A whole frame as it went over the wire, unmasked.
#[derive(Debug)]
struct WireFrame {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// Splits bytes a `Connection` wrote into its frames, with a parser of the target's own (RFC 6455 5.2).
fn parse_frames(mut bytes: &[u8], masked: bool) -> Vec<WireFrame> {
    let mut frames = Vec::new();
    while let [b0, b1, rest @ ..] = bytes {
        assert_eq!(b0 & 0x30, 0, "RSV2 or RSV3 written");
        assert_eq!(b1 & 0x80 != 0, masked, "the mask bit");
        let (len, rest) = match b1 & 0x7F {
            126 => {
                let (len, rest) = rest.split_at(2);
                (u64::from(u16::from_be_bytes([len[0], len[1]])), rest)
            }
            127 => {
                let (len, rest) = rest.split_at(8);
                (u64::from_be_bytes(len.try_into().expect("8 bytes")), rest)
            }
            len => (u64::from(len), rest),
        };
        let (key, rest) = if masked {
            let (key, rest) = rest.split_at(4);
            (Some(key), rest)
        } else {
            (None, rest)
        };
        let len = usize::try_from(len).expect("a length that fits");
        assert!(rest.len() >= len, "a frame cut short");
        let (payload, rest) = rest.split_at(len);
        let mut payload = payload.to_vec();
        if let Some(key) = key {
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= key[i % 4];
            }
        }
        frames.push(WireFrame {
            fin: b0 & 0x80 != 0,
            rsv1: b0 & 0x40 != 0,
            opcode: b0 & 0x0F,
            payload,
        });
        bytes = rest;
    }
    assert!(bytes.is_empty(), "a frame cut short");
    frames
}

/// Re-cuts one frame into fragments at `cuts` (RFC 6455 5.4; RFC 7692 6.1: RSV1 on the first one only), with a
/// Ping between every two if asked (5.5: control frames may come between fragments).
fn refragment(frame: &WireFrame, cuts: &[u8], pings: bool) -> Vec<u8> {
    let len = frame.payload.len();
    let mut points: Vec<usize> = cuts.iter().map(|&c| usize::from(c) * len / 256).collect();
    points.sort_unstable();
    points.push(len);
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &end) in points.iter().enumerate() {
        let first = i == 0;
        let last = i + 1 == points.len();
        let fragment = ClientFrame {
            fin: last,
            rsv: if first && frame.rsv1 { 4 } else { 0 },
            opcode: if first { frame.opcode } else { 0 },
            mask: Some([i as u8, 0x5a, 0xa5, 0x0f]),
            len_form: LenForm::Minimal,
            payload: Payload::Bytes(frame.payload[start..end].to_vec()),
        };
        out.extend(fragment.to_bytes());
        if pings && !last {
            let ping = ClientFrame::masked(0x9, Payload::Bytes(vec![i as u8]));
            out.extend(ping.to_bytes());
        }
        start = end;
    }
    out
}

/// The kind and payload a body makes, by bit 0 of `flags`.
fn payload_of(flags: u8, body: &Body) -> (MessageKind, Vec<u8>) {
    if flags & 1 != 0 {
        (MessageKind::Binary, body.binary())
    } else {
        (MessageKind::Text, body.text().into_bytes())
    }
}

fn opcode_of(kind: MessageKind) -> u8 {
    match kind {
        MessageKind::Text => OpCode::Text.bits(),
        MessageKind::Binary => OpCode::Binary.bits(),
    }
}

/// `code` if `role` may send it, otherwise a code it may (`close` trusts its caller).
fn sendable(code: u16, role: Role) -> CloseCode {
    let code = CloseCode::new(code);
    if code.is_sendable(role) {
        code
    } else {
        CloseCode::new(SENDABLE[usize::from(code.get()) % SENDABLE.len()])
    }
}

/// Raw DEFLATE ending with a final block (RFC 7692 7.2.3.4), nothing removed from its end.
fn compress_with_final_block(plain: &[u8]) -> Vec<u8> {
    let mut deflate = Compress::new_with_window_bits(Compression::new(6), false, 15);
    let mut out = Vec::with_capacity(plain.len() + 64);
    loop {
        let taken = deflate.total_in() as usize;
        let status = deflate
            .compress_vec(&plain[taken..], &mut out, FlushCompress::Finish)
            .expect("compression works");
        if status == flate2::Status::StreamEnd {
            return out;
        }
        out.reserve(out.capacity().max(64));
    }
}
