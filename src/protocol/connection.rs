//! The sans-IO WebSocket connection: bytes in, events out; commands in, bytes out (RFC 6455 sections 5 to 7).
//!
//! Owns message assembly from fragments (5.4), control frames in the middle of a message (5.5), incremental UTF-8
//! validation of text (5.6, 8.1), the message size limit (10.4), answering Pings (5.5.2) and the closing handshake
//! (5.5.1, 7), including the code the connection ended with, and permessage-deflate once negotiated (RFC 7692:
//! inflating compressed messages within the size limit, compressing ours where that makes them smaller). It writes
//! every frame it owes the peer into an output
//! buffer that the caller drains, in order; a large payload given up with `send_owned` stays a buffer of its own in
//! that order instead of being copied. It never touches a socket or a clock: the caller decides when bytes move and
//! when a peer has been quiet too long.

use std::fmt;

use super::close::{self, CloseBodyError, CloseCode, CloseFrame};
use super::deflate::negotiate::MIN_COMPRESS_WINDOW_BITS;
use super::deflate::shared::{self, DECOMPRESSOR_BYTES};
use super::deflate::{
    DeflateParams, InflateError, InflateStatus, MessageCompressor, MessageDecompressor,
};
use super::frame::{
    encode_frame, encode_frame_in_place, FrameDecoder, FrameError, FrameEvent, FrameHeader,
    IncomingMask, OpCode, PayloadChunk, MAX_CONTROL_PAYLOAD,
};
use super::mask::{apply_mask, MaskKeys};
use super::utf8::Utf8Validator;

/// Which end of the connection this is: it decides the masking direction (5.1) and which close codes it may send
/// (7.4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Expects masked frames and sends unmasked ones.
    Server,
    /// Sends masked frames, each with a fresh key (5.3), and expects unmasked ones.
    Client,
}

/// The kind of a data message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// UTF-8 text.
    Text,
    /// Arbitrary bytes.
    Binary,
}

impl MessageKind {
    /// The opcode of the message's first frame (5.2, 6.1 step 3).
    fn opcode(self) -> OpCode {
        match self {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        }
    }
}

/// A complete data message, reassembled and unmasked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message. Its bytes were proven UTF-8 as they arrived (8.1), so it is a `String` with no second check.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

impl Message {
    /// Text or binary.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Text(_) => MessageKind::Text,
            Message::Binary(_) => MessageKind::Binary,
        }
    }

    /// The payload as text, for a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(text) => Some(text),
            Message::Binary(_) => None,
        }
    }

    /// The payload's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
        }
    }

    /// The payload, given up as bytes without a copy.
    pub fn into_payload(self) -> Vec<u8> {
        match self {
            Message::Text(text) => text.into_bytes(),
            Message::Binary(bytes) => bytes,
        }
    }
}

/// What the peer did, in the order it did it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete data message.
    Message(Message),
    /// A Ping; its Pong is already in the output buffer (5.5.2).
    Ping(Vec<u8>),
    /// A Pong, solicited or not (5.5.3: an unsolicited Pong needs no answer).
    Pong(Vec<u8>),
    /// The peer's Close. If we had not sent one, our answer is owed and goes out with the next `take_output`.
    Close(CloseFrame),
}

/// Where the closing handshake stands (7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Data flows both ways.
    Open,
    /// We sent our Close and wait for the peer's (7.1.2). No data goes out any more (5.5.1); Pings are still
    /// answered (5.5.2).
    CloseSent,
    /// The peer's Close arrived and ours is owed: answers to the messages that came before it may still be sent,
    /// then the next `take_output` writes our Close and the state becomes `Closed` (5.5.1).
    CloseReceived,
    /// Both Close frames were exchanged: send what is left, then close TCP (7.1.1).
    Closed,
    /// The peer broke the protocol. A Close with the error's code is owed (unless ours was already out), nothing
    /// more is read, and once the output is sent TCP is closed (7.1.7).
    Failed,
}

impl State {
    /// True while frames from the peer are still read: until its Close arrives or the connection fails.
    pub fn reads_input(self) -> bool {
        // RFC 6455 1.4: input after the peer's Close is discarded; 7.1.7: and after a failure.
        matches!(self, State::Open | State::CloseSent)
    }

    /// True once nothing more will be read or written after the output is sent: TCP can be closed.
    pub fn is_finished(self) -> bool {
        matches!(self, State::Closed | State::Failed)
    }
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
    /// A compressed message that is not valid DEFLATE data (RFC 7692 6.2; 1007: it is not what a message of its
    /// type must be).
    BadCompression,
    /// A message in more frames than the connection allows (10.4: a limit of our own; 1008).
    TooManyFragments {
        /// The limit in frames.
        limit: u32,
    },
    /// A malformed Close body (5.5.1; 1002 or 1007).
    CloseBody(CloseBodyError),
}

impl ProtocolError {
    /// The status code to fail the connection with (7.4.1).
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::Frame(_)
            | ProtocolError::UnexpectedContinuation
            | ProtocolError::ExpectedContinuation
            | ProtocolError::CloseBody(
                CloseBodyError::Truncated | CloseBodyError::InvalidCode(_),
            ) => CloseCode::PROTOCOL_ERROR,
            ProtocolError::InvalidUtf8
            | ProtocolError::BadCompression
            | ProtocolError::CloseBody(CloseBodyError::InvalidReason) => CloseCode::INVALID_PAYLOAD,
            ProtocolError::MessageTooBig { .. } => CloseCode::MESSAGE_TOO_BIG,
            ProtocolError::TooManyFragments { .. } => CloseCode::POLICY_VIOLATION,
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
            ProtocolError::BadCompression => {
                f.write_str("compressed message is not valid DEFLATE data")
            }
            ProtocolError::MessageTooBig { limit } => write!(f, "message over {limit} bytes"),
            ProtocolError::TooManyFragments { limit } => {
                write!(f, "message in more than {limit} frames")
            }
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
    /// Frames of the message so far.
    fragments: u32,
    /// The message is compressed (RFC 7692 6: RSV1 on its first frame): what arrives is inflated into `payload`.
    /// Boxed: a decompressor is ~180 bytes, and every plain message's assembly would carry and move them.
    inflating: Option<Box<Inflating>>,
}

/// A compressed message being inflated.
#[derive(Debug)]
struct Inflating {
    inflater: Inflater,
    /// Compressed bytes received, unmasked, and not yet taken by the decompressor: empty except while a
    /// `feed_within` limit holds the message back.
    input: Vec<u8>,
    /// The frame that brought `input` has ended: once it is inflated, the frame is finished (and, with FIN, the
    /// message).
    frame_ended: bool,
    /// Compressed bytes received so far: a compressed message may not be longer than the size limit either.
    received: u64,
    /// The message arrived whole in one frame and was inflated at once (`inflate_whole_quickly`): there is no
    /// `finish` to call.
    inflated_whole: bool,
}

/// The decompressor of a message: the connection's own when the peer keeps its context (RFC 7692 7.1.1), or one
/// lent by the thread's pool for this message alone.
#[derive(Debug)]
enum Inflater {
    Kept(Box<MessageDecompressor>),
    Lent(shared::LentDecompressor),
}

impl Inflater {
    fn get(&mut self) -> &mut MessageDecompressor {
        match self {
            Inflater::Kept(kept) => kept,
            Inflater::Lent(lent) => lent,
        }
    }
}

/// Whether reading goes on after a step, or stops at a limit of `feed_within`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Go,
    Stop,
}

/// What a connection holds while a frame or a fragmented message is arriving. Boxed, and dropped as soon as a frame
/// ends with no message unfinished: an idle connection holds none of it.
#[derive(Debug, Default)]
struct Incoming {
    /// The frame whose payload is arriving.
    frame: Option<Receiving>,
    /// The data message being assembled, across frames.
    assembly: Option<Assembly>,
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

/// How much of a compressed payload is unmasked at a time, on the stack, on its way to the decompressor: a page,
/// so a compressed message costs no copy of itself on the heap.
const UNMASK_PIECE: usize = 4 * 1024;

/// The piece a short compressed chunk (a chat message's) is unmasked into instead: the stack buffer is zero-filled
/// before use (safe Rust has no uninitialised buffer), and filling 4 KiB for a few hundred bytes was a tenth of the
/// instructions of receiving a compressed 512-byte message (bench/callgrind.sh, `fanout_100x10_512B`).
const SMALL_UNMASK_PIECE: usize = 1024;

/// A payload at least this long, given to `send_owned`, is queued as it is instead of being copied into the output
/// buffer: past a few KiB the copy costs more than the write segment of its own that it saves.
const HAND_OVER_MIN: usize = 4 * 1024;

/// One WebSocket connection after the opening handshake.
///
/// Drive it in this order, whatever the transport: `feed` it the bytes that arrived and act on the events it
/// pushed; `send` (or `close`) what you want to say; `take_output` and write those bytes, in order, before any you
/// take later; once [`State::is_finished`], close the transport.
///
/// ```
/// use roomcast::protocol::frame::{encode_frame, OpCode};
/// use roomcast::protocol::{Connection, Event, Message, MessageKind, Role, State};
///
/// let mut server = Connection::new(Role::Server, 64 * 1024);
///
/// // A client's masked "Hello" (RFC 6455 5.7), then its Close with code 1000.
/// let mut input = Vec::new();
/// encode_frame(true, OpCode::Text, b"Hello", Some([0x37, 0xfa, 0x21, 0x3d]), &mut input);
/// encode_frame(true, OpCode::Close, &1000u16.to_be_bytes(), Some([1, 2, 3, 4]), &mut input);
///
/// // 1. Feed what arrived; events come out in order.
/// let mut events = Vec::new();
/// server.feed(&input, &mut events).expect("valid frames");
/// assert_eq!(events[0], Event::Message(Message::Text("Hello".into())));
/// assert!(matches!(events[1], Event::Close(_)));
///
/// // 2. Answer: a message that came before the Close may still be answered.
/// server.send(MessageKind::Text, b"Hello yourself").expect("still allowed");
///
/// // 3. Take the output and write it: the reply, then the Close we owed (unmasked: 5.1).
/// let output = server.take_output();
/// assert_eq!(&output[..16], b"\x81\x0eHello yourself");
/// assert_eq!(&output[16..], b"\x88\x02\x03\xe8");
///
/// // 4. Both Close frames are exchanged: the server closes TCP (7.1.1).
/// assert_eq!(server.state(), State::Closed);
/// ```
#[derive(Debug)]
pub struct Connection {
    state: State,
    role: Role,
    max_message_size: usize,
    /// The most frames one message may arrive in.
    max_fragments: u32,
    /// Frame headers read so far, of every opcode (wrapping): what a caller charges against a frame budget.
    frames_received: u32,
    decoder: FrameDecoder,
    /// A frame or message in progress; `None` at a message boundary.
    incoming: Option<Box<Incoming>>,
    output: Vec<u8>,
    /// Output that precedes `output`, oldest first: the buffers finished when a payload was handed over by
    /// `send_owned`, and those payloads themselves.
    handed_over: Vec<Vec<u8>>,
    /// The body of a Close we owe the peer (a reply to theirs, or a failure). It is written at the next
    /// `take_output`, after whatever the caller sends in answer to the messages that came before it. A boxed slice,
    /// not a `Vec`: every connection carries the slot and few ever fill it.
    owed_close: Option<Box<[u8]>>,
    /// The code of the first Close frame sent or received, or of the failure, once there is one. 7.1.5's Close Code
    /// counts only the first Close received; this one also counts ours when it went out first.
    close_code: Option<CloseCode>,
    /// What only some connections carry, boxed together so that a server's connection without permessage-deflate
    /// holds one empty pointer for both: a server keeps one `Connection` per peer.
    extras: Option<Box<Extras>>,
}

/// The parts of a connection that only some connections have.
#[derive(Debug, Default)]
struct Extras {
    /// A client's source of masking keys (5.3); `None` for a server, which masks nothing (5.1).
    mask_keys: Option<MaskKeys>,
    /// permessage-deflate, once negotiated (RFC 7692).
    compression: Option<Compression>,
}

/// The permessage-deflate state in `extras`, if it was negotiated. A function of the field rather than a method, so
/// that it borrows `extras` alone beside the connection's other fields.
fn compression_in(extras: &mut Option<Box<Extras>>) -> Option<&mut Compression> {
    extras.as_deref_mut()?.compression.as_mut()
}

/// What permessage-deflate needs on one connection: the agreed windows and takeovers (RFC 7692 7.1), and the
/// codec state kept between messages, only where a side keeps its context.
#[derive(Debug)]
struct Compression {
    /// Our messages may refer back to our earlier ones: we keep a compressor of our own.
    we_keep_context: bool,
    /// The peer's messages refer back to its earlier ones: we keep a decompressor for them.
    peer_keeps_context: bool,
    /// The window our compressed messages may use (2^bits).
    our_window_bits: u8,
    /// Boxed, as each is a few hundred bytes of zlib stream state that most connections never make: this struct is
    /// allocated for every connection that agreed to permessage-deflate.
    kept_compressor: Option<Box<MessageCompressor>>,
    kept_decompressor: Option<Box<MessageDecompressor>>,
    /// How many more inflated bytes this `feed_within` may produce.
    inflate_left: usize,
}

impl Compression {
    /// Appends `payload` compressed to `out` if that makes it smaller, and returns its length: with our own
    /// compressor when we keep context (its window refers back to our earlier messages), with the thread's shared
    /// one otherwise. `None` leaves `out` as it was.
    ///
    /// An 8-bit window, which zlib cannot deflate with, is compressed on its own even when we may keep context:
    /// keeping it is a permission, not a duty (RFC 7692 7.1.1), and a message that refers to nothing before it
    /// reads the same either way.
    fn compress(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Option<usize> {
        if !self.we_keep_context || self.our_window_bits < MIN_COMPRESS_WINDOW_BITS {
            return shared::compress_alone(payload, self.our_window_bits, out);
        }
        let bits = self.our_window_bits;
        let compressor = self
            .kept_compressor
            .get_or_insert_with(|| Box::new(MessageCompressor::new(bits, false)));
        // A compressor that fails has reset itself, and the message goes out plain: the peer never saw the
        // abandoned bytes, so its window and ours still agree.
        compressor.compress_if_smaller(payload, out).ok().flatten()
    }
}

/// Messages shorter than this are sent uncompressed: the bytes saved would not pay for the work (RFC 7692 lets
/// any message go uncompressed, with RSV1 clear).
pub const MIN_COMPRESSED_LEN: usize = 256;

/// The most one `feed_within` may do, for a caller that budgets what one peer costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedLimits {
    /// Frames it may start.
    pub frames: u32,
    /// Bytes compressed messages may inflate to.
    pub inflated_bytes: usize,
}

impl FeedLimits {
    /// No limit.
    pub const NONE: FeedLimits = FeedLimits {
        frames: u32::MAX,
        inflated_bytes: usize::MAX,
    };
}

/// What one `feed_within` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fed {
    /// Bytes of the input used: all of them unless it stopped at a limit.
    pub used: usize,
    /// Bytes compressed messages inflated to.
    pub inflated: usize,
    /// The limit it stopped at, if it did.
    pub stopped: Option<FeedLimit>,
}

/// A limit of [`FeedLimits`] that stopped a `feed_within`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedLimit {
    /// As many frames as allowed were started.
    Frames,
    /// Compressed messages inflated to as many bytes as allowed.
    InflatedBytes,
}

impl Connection {
    /// A connection in the Open state whose messages may be at most `max_message_size` bytes. A client's masking
    /// keys come from the operating system's random generator.
    pub fn new(role: Role, max_message_size: usize) -> Self {
        let (incoming, extras) = match role {
            Role::Server => (IncomingMask::Required, None),
            Role::Client => (
                IncomingMask::Forbidden,
                Some(Box::new(Extras {
                    mask_keys: Some(MaskKeys::Strong),
                    compression: None,
                })),
            ),
        };
        Connection {
            state: State::Open,
            role,
            max_message_size,
            max_fragments: u32::MAX,
            frames_received: 0,
            decoder: FrameDecoder::new(incoming),
            incoming: None,
            output: Vec::new(),
            handed_over: Vec::new(),
            owed_close: None,
            close_code: None,
            extras,
        }
    }

    /// Turns permessage-deflate on, with the parameters the opening handshake agreed (RFC 7692 7.1): a peer's
    /// message may now begin with RSV1 (compressed), and ours are compressed where that makes them smaller.
    pub fn use_deflate(&mut self, params: &DeflateParams) {
        let (we_keep_context, peer_keeps_context, our_window_bits) = match self.role {
            Role::Server => (
                !params.server_no_context_takeover,
                !params.client_no_context_takeover,
                params.server_window_bits(),
            ),
            Role::Client => (
                !params.client_no_context_takeover,
                !params.server_no_context_takeover,
                params.client_window_bits(),
            ),
        };
        self.decoder.allow_compression();
        self.extras.get_or_insert_with(Box::default).compression = Some(Compression {
            we_keep_context,
            peer_keeps_context,
            our_window_bits,
            kept_compressor: None,
            kept_decompressor: None,
            inflate_left: usize::MAX,
        });
    }

    /// When permessage-deflate is on and our messages are each compressed on their own (no context takeover), the
    /// window bits they may use: a server that sends one message to many connections compresses it once for all
    /// that share this window (`encode_server_message_compressed`).
    pub fn shared_compression_window(&self) -> Option<u8> {
        self.extras
            .as_deref()?
            .compression
            .as_ref()
            .filter(|c| !c.we_keep_context)
            .map(|c| c.our_window_bits)
    }

    /// Replaces a client's masking keys by a fast predictable sequence from `seed`. Only for a client that talks
    /// to a server of its own, such as a load generator: 10.3 asks for unpredictable keys. No effect on a server.
    pub fn use_predictable_masks(&mut self, seed: u64) {
        if let Some(keys) = self
            .extras
            .as_deref_mut()
            .and_then(|e| e.mask_keys.as_mut())
        {
            *keys = MaskKeys::predictable(seed);
        }
    }

    /// Fails a message that arrives in more than `max` frames with 1008 (10.4: an endpoint may limit what it
    /// buffers). Unlimited unless set.
    pub fn limit_fragments(&mut self, max: u32) {
        self.max_fragments = max.max(1);
    }

    /// How many frame headers have been read, of every opcode, counting on from `u32::MAX` to 0: compare two
    /// readings with `wrapping_sub` to learn how many frames one `feed` read.
    pub fn frames_received(&self) -> u32 {
        self.frames_received
    }

    /// True while a frame or a fragmented message is partly received.
    pub fn is_mid_message(&self) -> bool {
        self.incoming.is_some()
    }

    /// Bytes of memory held for the frame and message being received (0 between messages).
    pub fn buffered_bytes(&self) -> usize {
        let Some(incoming) = &self.incoming else {
            return 0;
        };
        let frame = match &incoming.frame {
            Some(Receiving::Control { payload, .. }) => payload.capacity(),
            _ => 0,
        };
        let message = incoming.assembly.as_ref().map_or(0, |a| {
            // A message being inflated also holds a decompressor lent from the thread's pool, and the compressed
            // bytes an inflation limit held back.
            let inflater = a
                .inflating
                .as_ref()
                .map_or(0, |i| DECOMPRESSOR_BYTES + i.input.capacity());
            a.payload.capacity() + inflater
        });
        std::mem::size_of::<Incoming>() + frame + message
    }

    /// Where the closing handshake stands.
    pub fn state(&self) -> State {
        self.state
    }

    /// The code this connection is closing or closed with: the code of the first Close frame sent or received
    /// (1005 for one without a code, 7.1.5), or of the failure. `None` while no Close has been seen; a caller
    /// whose transport ends then reports 1006 (7.1.5).
    pub fn close_code(&self) -> Option<CloseCode> {
        self.close_code
    }

    /// True while data messages may still be sent (5.5.1: none after our Close). Answers to the events of the
    /// last `feed` may be sent even if that input also closed the connection: they go out before the Close.
    pub fn can_send(&self) -> bool {
        self.state == State::Open || self.owed_close.is_some()
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

    /// Writes the Close we owe; an answer to the peer's completes the closing handshake (7.1.2).
    fn write_owed_close(&mut self) {
        if let Some(body) = self.owed_close.take() {
            self.write_frame(OpCode::Close, &body);
            if self.state == State::CloseReceived {
                self.state = State::Closed;
            }
        }
    }

    /// Feeds bytes received from the peer. Events are appended to `events` in order. On a protocol violation the
    /// connection fails: a Close with the error's code is owed, the state becomes `Failed`, and the error is
    /// returned. Input after the peer's Close, or after a failure, is ignored (7.1.1, 7.1.7). Events before the
    /// violation stand, and the caller may still answer them before taking the output.
    pub fn feed(&mut self, input: &[u8], events: &mut Vec<Event>) -> Result<(), ProtocolError> {
        self.feed_within(input, events, FeedLimits::NONE)
            .map(|_| ())
    }

    /// Feeds bytes as [`Connection::feed`] does, but starts at most `limits.frames` frames and inflates at most
    /// `limits.inflated_bytes`: a caller that budgets what a peer costs stops a flood (or a compression bomb) at its
    /// budget, not after serving the whole read it arrived in. A stop leaves the connection in the middle of
    /// whatever it was reading, so the caller fails it.
    pub fn feed_within(
        &mut self,
        input: &[u8],
        events: &mut Vec<Event>,
        limits: FeedLimits,
    ) -> Result<Fed, ProtocolError> {
        if let Some(compression) = compression_in(&mut self.extras) {
            compression.inflate_left = limits.inflated_bytes;
        }
        let mut rest = input;
        let mut started = 0u32;
        let mut stopped = None;
        // A message an earlier call held back at its inflation limit goes on first.
        if self.is_inflation_held_back() {
            match self.inflate_held_input(events) {
                Ok(Flow::Go) => {}
                Ok(Flow::Stop) => stopped = Some(FeedLimit::InflatedBytes),
                Err(e) => return Err(self.fail(e)),
            }
        }
        while stopped.is_none() && self.state.reads_input() {
            if self.decoder.at_frame_boundary() && !rest.is_empty() {
                if started == limits.frames {
                    stopped = Some(FeedLimit::Frames);
                    break;
                }
                started += 1;
            }
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
            match result {
                Ok(Flow::Go) => {}
                Ok(Flow::Stop) => {
                    stopped = Some(FeedLimit::InflatedBytes);
                    break;
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
        let inflated =
            compression_in(&mut self.extras).map_or(0, |c| limits.inflated_bytes - c.inflate_left);
        Ok(Fed {
            used: input.len() - rest.len(),
            inflated,
            stopped,
        })
    }

    /// Queues a data message, unfragmented (we never fragment, 5.4), compressed when permessage-deflate is on and
    /// that makes it smaller.
    pub fn send(&mut self, kind: MessageKind, payload: &[u8]) -> Result<(), SendError> {
        if !self.can_send() {
            return Err(SendError::Closing);
        }
        self.write_message(kind, payload);
        Ok(())
    }

    /// Queues a data message whose payload the caller gives up, e.g. an echo or a relay of a received message. A
    /// large payload is queued as it is, without a copy (a client's is masked in place, 5.3); a small one is
    /// copied as `send` would. `take_output_pieces` hands the payload back untouched.
    pub fn send_owned(&mut self, kind: MessageKind, mut payload: Vec<u8>) -> Result<(), SendError> {
        // A message to compress is copied anyway, into its compressed form.
        if payload.len() < HAND_OVER_MIN || compression_in(&mut self.extras).is_some() {
            return self.send(kind, &payload);
        }
        if !self.can_send() {
            return Err(SendError::Closing);
        }
        let mask = self.mask_for_next_frame();
        let header = FrameHeader {
            fin: true,
            rsv1: false,
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

    /// Queues a Ping, e.g. a heartbeat (5.5.2). Its payload is at most 125 bytes (5.5).
    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlTooLong);
        }
        self.send_frame(OpCode::Ping, payload)
    }

    /// Starts the closing handshake with `code` and `reason` (7.1.2); the reason is cut to 123 bytes at a char
    /// boundary (5.5.1). Does nothing once a Close was sent or received. A code this end may not send (7.4: 1005,
    /// 1006, 1015, unassigned ranges; 1010 from a server) is a caller's bug: it is replaced by 1011 rather than put
    /// on the wire.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        if self.state != State::Open {
            return;
        }
        debug_assert!(
            code.is_sendable(self.role),
            "close code {code} may not be sent by a {:?} (RFC 6455 7.4)",
            self.role
        );
        let code = if code.is_sendable(self.role) {
            code
        } else {
            CloseCode::INTERNAL_ERROR
        };
        let mut body = Vec::with_capacity(2 + reason.len().min(close::MAX_REASON_BYTES));
        close::encode_close_body(code, reason, &mut body);
        self.write_frame(OpCode::Close, &body);
        self.state = State::CloseSent;
        self.close_code.get_or_insert(code);
    }

    /// Queues a frame while `can_send` allows: no data frame may follow our Close (5.5.1).
    fn send_frame(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        if !self.can_send() {
            return Err(SendError::Closing);
        }
        self.write_frame(opcode, payload);
        Ok(())
    }

    /// Writes a data message as one frame: compressed with RSV1 set on it when permessage-deflate is on and that makes
    /// it smaller (RFC 7692 6, 7.2.1), plain otherwise; masked by a client after compressing (RFC 7692 6: the
    /// payload is masked as any other).
    fn write_message(&mut self, kind: MessageKind, payload: &[u8]) {
        if payload.len() >= MIN_COMPRESSED_LEN {
            if let Some(Extras {
                mask_keys,
                compression: Some(compression),
            }) = self.extras.as_deref_mut()
            {
                let mask = mask_keys.as_mut().map(MaskKeys::next_key);
                let header = FrameHeader {
                    fin: true,
                    rsv1: true,
                    opcode: kind.opcode(),
                    mask,
                    payload_len: payload.len() as u64,
                };
                let compressed = encode_frame_in_place(header, &mut self.output, |out| {
                    compression.compress(payload, out)
                });
                if !compressed {
                    encode_frame(true, kind.opcode(), payload, mask, &mut self.output);
                }
                return;
            }
        }
        self.write_frame(kind.opcode(), payload);
    }

    /// Writes one whole frame, FIN set (we never fragment, 5.4), masked by a client and not by a server (5.1).
    fn write_frame(&mut self, opcode: OpCode, payload: &[u8]) {
        let mask = self.mask_for_next_frame();
        encode_frame(true, opcode, payload, mask, &mut self.output);
    }

    /// 5.1, 5.3: a client masks every frame with a fresh key; a server masks none.
    fn mask_for_next_frame(&mut self) -> Option<[u8; 4]> {
        self.extras
            .as_deref_mut()?
            .mask_keys
            .as_mut()
            .map(MaskKeys::next_key)
    }

    /// The frame and message in progress, allocated when the first frame of a message (or a control frame) starts.
    fn incoming_mut(&mut self) -> &mut Incoming {
        self.incoming.get_or_insert_with(Box::default)
    }

    /// Fails the connection (7.1.7): owe a Close with the error's code unless one was sent, and stop reading.
    fn fail(&mut self, error: ProtocolError) -> ProtocolError {
        if self.state == State::Open {
            let mut body = Vec::with_capacity(64);
            close::encode_close_body(error.close_code(), &error.to_string(), &mut body);
            self.owed_close = Some(body.into_boxed_slice());
        }
        self.close_code.get_or_insert(error.close_code());
        self.state = State::Failed;
        self.incoming = None;
        error
    }

    /// A frame's header arrived: a control frame is collected whole (5.5); a data frame must continue the message
    /// being assembled or start one, not both (5.4), and must keep the message within the size limit (10.4). RSV1 on
    /// a message's first frame marks it compressed (RFC 7692 6; the decoder refuses it anywhere else).
    fn on_header(
        &mut self,
        header: FrameHeader,
        events: &mut Vec<Event>,
    ) -> Result<Flow, ProtocolError> {
        self.frames_received = self.frames_received.wrapping_add(1);
        if header.opcode.is_control() {
            let payload = Vec::with_capacity(header.payload_len as usize);
            self.incoming_mut().frame = Some(Receiving::Control {
                opcode: header.opcode,
                payload,
            });
            if header.payload_len == 0 {
                self.finish_control(events)?;
            }
            return Ok(Flow::Go);
        }
        let assembly = self.incoming.as_ref().and_then(|i| i.assembly.as_ref());
        let assembled = match (assembly, header.opcode) {
            // 5.4: a continuation continues something, and a new message waits for the last to finish.
            (None, OpCode::Continuation) => return Err(ProtocolError::UnexpectedContinuation),
            (Some(_), OpCode::Text | OpCode::Binary) => {
                return Err(ProtocolError::ExpectedContinuation)
            }
            (Some(assembly), _) => {
                if assembly.fragments >= self.max_fragments {
                    return Err(ProtocolError::TooManyFragments {
                        limit: self.max_fragments,
                    });
                }
                match &assembly.inflating {
                    Some(inflating) => inflating.received,
                    None => assembly.payload.len() as u64,
                }
            }
            (None, _) => 0,
        };
        // 10.4: refuse a message over the limit as soon as its size is known. A compressed one is held to the
        // limit twice: what arrives (here), and what it inflates to (as it inflates).
        let limit = self.max_message_size;
        if assembled.saturating_add(header.payload_len) > limit as u64 {
            return Err(ProtocolError::MessageTooBig { limit });
        }
        let inflating = header.rsv1.then(|| self.start_inflating()).flatten();
        let incoming = self.incoming_mut();
        let assembly = incoming.assembly.get_or_insert_with(|| Assembly {
            kind: if header.opcode == OpCode::Text {
                MessageKind::Text
            } else {
                MessageKind::Binary
            },
            payload: Vec::new(),
            utf8: Utf8Validator::new(),
            fragments: 0,
            inflating,
        });
        assembly.fragments += 1;
        match &mut assembly.inflating {
            Some(inflating) => inflating.received += header.payload_len,
            None => assembly
                .payload
                .reserve(header.payload_len.min(MAX_PREALLOCATION) as usize),
        }
        incoming.frame = Some(Receiving::Data { fin: header.fin });
        if header.payload_len == 0 {
            return self.finish_data_frame(events);
        }
        Ok(Flow::Go)
    }

    /// The decompressor for a compressed message that begins: the one kept for a peer that keeps its context, or
    /// one borrowed from the loop's pool (RFC 7692 7.1.1: without context takeover none is needed in between).
    fn start_inflating(&mut self) -> Option<Box<Inflating>> {
        let compression = compression_in(&mut self.extras)?;
        let inflater = match compression.kept_decompressor.take() {
            Some(kept) => Inflater::Kept(kept),
            None if compression.peer_keeps_context => Inflater::Kept(Box::new(
                MessageDecompressor::new(false, self.max_message_size),
            )),
            None => Inflater::Lent(shared::LentDecompressor::borrow(self.max_message_size)),
        };
        Some(Box::new(Inflating {
            inflater,
            input: Vec::new(),
            frame_ended: false,
            received: 0,
            inflated_whole: false,
        }))
    }

    /// Payload arrived: a control frame's is collected, a data frame's is unmasked into the message (5.3), or, for
    /// a compressed message, unmasked and inflated into it (RFC 7692 6.2); text is checked as UTF-8 at once (5.6,
    /// 8.1).
    fn on_payload(
        &mut self,
        chunk: PayloadChunk<'_>,
        events: &mut Vec<Event>,
    ) -> Result<Flow, ProtocolError> {
        let Some(incoming) = self.incoming.as_deref_mut() else {
            return Ok(Flow::Go);
        };
        match &mut incoming.frame {
            Some(Receiving::Control { payload, .. }) => {
                chunk.unmask_into(payload);
                if chunk.last {
                    self.finish_control(events)?;
                }
            }
            Some(Receiving::Data { .. }) => {
                if let Some(assembly) = &mut incoming.assembly {
                    let start = assembly.payload.len();
                    if let Some(inflating) = &mut assembly.inflating {
                        if inflating.input.is_empty() {
                            return self.inflate_arriving(&chunk, events);
                        }
                        chunk.unmask_into(&mut inflating.input);
                        inflating.frame_ended = chunk.last;
                        return self.inflate_held_input(events);
                    }
                    chunk.unmask_into(&mut assembly.payload);
                    check_utf8(assembly, start)?;
                }
                if chunk.last {
                    return self.finish_data_frame(events);
                }
            }
            None => {}
        }
        Ok(Flow::Go)
    }

    /// True if a compressed message was held back at an inflation limit with input or a frame's end still to go.
    fn is_inflation_held_back(&self) -> bool {
        let inflating = self
            .incoming
            .as_ref()
            .and_then(|i| i.assembly.as_ref())
            .and_then(|a| a.inflating.as_ref());
        inflating.is_some_and(|i| i.frame_ended || !i.input.is_empty())
    }

    /// Inflates a compressed message's payload as it arrives (RFC 7692 6.2), unmasked a piece at a time into a
    /// buffer on the stack rather than copied whole: only what this call's inflation limit holds back is kept, in
    /// `Inflating::input`, for the next `feed_within`. Text is checked as UTF-8 as it inflates (8.1), and a frame
    /// whose bytes are all inflated is finished.
    fn inflate_arriving(
        &mut self,
        chunk: &PayloadChunk<'_>,
        events: &mut Vec<Event>,
    ) -> Result<Flow, ProtocolError> {
        let (Some(incoming), Some(compression)) = (
            self.incoming.as_deref_mut(),
            compression_in(&mut self.extras),
        ) else {
            return Ok(Flow::Go);
        };
        let Some(assembly) = &mut incoming.assembly else {
            return Ok(Flow::Go);
        };
        let mut small = [0u8; SMALL_UNMASK_PIECE];
        let mut large;
        let piece: &mut [u8] = if chunk.data.len() <= SMALL_UNMASK_PIECE {
            &mut small
        } else {
            large = [0u8; UNMASK_PIECE];
            &mut large
        };
        let mut taken = 0;
        // Unmasked bytes at the front of `piece` not yet given to the decompressor.
        let mut unmasked = 0;
        let whole_message = matches!(incoming.frame, Some(Receiving::Data { fin: true }))
            && assembly.fragments == 1
            && chunk.offset == 0
            && chunk.last
            && chunk.data.len() <= SMALL_UNMASK_PIECE;
        if let (true, Some(inflating)) = (whole_message, &mut assembly.inflating) {
            unmasked = chunk.unmask_part(0, piece);
            taken = unmasked;
            let start = assembly.payload.len();
            let quick = inflating.inflater.get().inflate_whole_quickly(
                &piece[..unmasked],
                &mut assembly.payload,
                compression.inflate_left,
            );
            if let Some(produced) = quick {
                compression.inflate_left -= produced;
                inflating.inflated_whole = true;
                check_utf8(assembly, start)?;
                return self.finish_data_frame(events);
            }
        }
        while taken < chunk.data.len() || unmasked > 0 {
            let Some(inflating) = &mut assembly.inflating else {
                return Ok(Flow::Go);
            };
            let len = match std::mem::take(&mut unmasked) {
                0 => {
                    let len = chunk.unmask_part(taken, piece);
                    taken += len;
                    len
                }
                ready => ready,
            };
            let start = assembly.payload.len();
            let result = inflating.inflater.get().feed(
                &piece[..len],
                &mut assembly.payload,
                compression.inflate_left,
            );
            let progress = match result {
                Ok(progress) => progress,
                Err(error) => return Err(inflate_failure(assembly, start, error)),
            };
            compression.inflate_left -= progress.produced;
            let held_back = progress.status == InflateStatus::BudgetSpent;
            if held_back {
                // What the decompressor did not take waits for the next `feed_within`.
                let unconsumed = piece.get(progress.consumed..len).unwrap_or_default();
                inflating.input.extend_from_slice(unconsumed);
                chunk.unmask_into_from(taken, &mut inflating.input);
                inflating.frame_ended = chunk.last;
            }
            check_utf8(assembly, start)?;
            if held_back {
                return Ok(Flow::Stop);
            }
        }
        if chunk.last {
            return self.finish_data_frame(events);
        }
        Ok(Flow::Go)
    }

    /// Inflates the compressed bytes received into the message, as far as this call's inflation limit allows
    /// (RFC 7692 6.2); bytes beyond it wait for the next `feed_within`. Text is checked as UTF-8 as it inflates
    /// (8.1), and a frame whose bytes are all inflated is finished.
    fn inflate_held_input(&mut self, events: &mut Vec<Event>) -> Result<Flow, ProtocolError> {
        let (Some(incoming), Some(compression)) = (
            self.incoming.as_deref_mut(),
            compression_in(&mut self.extras),
        ) else {
            return Ok(Flow::Go);
        };
        let Some(assembly) = &mut incoming.assembly else {
            return Ok(Flow::Go);
        };
        let Some(inflating) = &mut assembly.inflating else {
            return Ok(Flow::Go);
        };
        let start = assembly.payload.len();
        let result = inflating.inflater.get().feed(
            &inflating.input,
            &mut assembly.payload,
            compression.inflate_left,
        );
        let progress = match result {
            Ok(progress) => progress,
            Err(error) => return Err(inflate_failure(assembly, start, error)),
        };
        compression.inflate_left -= progress.produced;
        inflating.input.drain(..progress.consumed);
        let frame_ended = std::mem::take(&mut inflating.frame_ended);
        let held_back = progress.status == InflateStatus::BudgetSpent;
        if held_back {
            inflating.frame_ended = frame_ended;
        }
        check_utf8(assembly, start)?;
        match (held_back, frame_ended) {
            (true, _) => Ok(Flow::Stop),
            (false, true) => self.finish_data_frame(events),
            (false, false) => Ok(Flow::Go),
        }
    }

    /// A data frame is complete; with FIN, so is its message: a compressed one is inflated to its end (RFC 7692
    /// 7.2.2), text must not end inside a code point (8.1), and the message is handed over.
    fn finish_data_frame(&mut self, events: &mut Vec<Event>) -> Result<Flow, ProtocolError> {
        let Some(incoming) = self.incoming.as_deref_mut() else {
            return Ok(Flow::Go);
        };
        let fin = matches!(incoming.frame.take(), Some(Receiving::Data { fin: true }));
        if !fin {
            return Ok(Flow::Go);
        }
        if let (Some(assembly), Some(compression)) =
            (&mut incoming.assembly, compression_in(&mut self.extras))
        {
            // A compressed message with no payload at all is not DEFLATE (an empty one compresses to 0x00,
            // 7.2.3.6); it is taken as empty, and the decompressor, which saw none of it, is left as it was: fed the
            // tail alone it would stop inside a stored block and misread the peer's next message.
            let unfinished = |i: &&mut Box<Inflating>| i.received > 0 && !i.inflated_whole;
            if let Some(inflating) = assembly.inflating.as_mut().filter(unfinished) {
                let start = assembly.payload.len();
                let result = inflating
                    .inflater
                    .get()
                    .finish(&mut assembly.payload, compression.inflate_left);
                let progress = match result {
                    Ok(progress) => progress,
                    Err(error) => return Err(inflate_failure(assembly, start, error)),
                };
                compression.inflate_left -= progress.produced;
                let held_back = progress.status == InflateStatus::BudgetSpent;
                // Held back: the next `feed_within` finishes the frame again.
                inflating.frame_ended = held_back;
                check_utf8(assembly, start)?;
                if held_back {
                    incoming.frame = Some(Receiving::Data { fin: true });
                    return Ok(Flow::Stop);
                }
            }
        }
        let assembly = incoming.assembly.take();
        self.incoming = None;
        let Some(mut assembly) = assembly else {
            return Ok(Flow::Go);
        };
        // A lent decompressor goes back to the pool as it is dropped here; a kept one stays for the next message.
        if let (Some(inflating), Some(compression)) =
            (assembly.inflating.take(), compression_in(&mut self.extras))
        {
            if let Inflater::Kept(kept) = inflating.inflater {
                compression.kept_decompressor = Some(kept);
            }
        }
        let message = match assembly.kind {
            MessageKind::Text => {
                assembly
                    .utf8
                    .finish()
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
                Message::Text(proven_text(assembly.payload))
            }
            MessageKind::Binary => Message::Binary(assembly.payload),
        };
        events.push(Event::Message(message));
        Ok(Flow::Go)
    }

    /// A control frame is complete: a Ping is answered with a Pong (5.5.2), a Pong needs nothing (5.5.3), and a
    /// Close is checked (5.5.1, 7.4) and answered with a Close echoing its code unless ours went first (5.5.1).
    fn finish_control(&mut self, events: &mut Vec<Event>) -> Result<(), ProtocolError> {
        let Some(incoming) = self.incoming.as_deref_mut() else {
            return Ok(());
        };
        let Some(Receiving::Control { opcode, payload }) = incoming.frame.take() else {
            return Ok(());
        };
        if incoming.assembly.is_none() {
            self.incoming = None;
        }
        match opcode {
            OpCode::Ping => {
                // 5.5.2: answer with a Pong carrying the same payload, unless the peer's Close came first; ours
                // having gone out is no reason to stay silent (a Pong is a control frame, not data: 5.5.1).
                self.write_frame(OpCode::Pong, &payload);
                events.push(Event::Ping(payload));
            }
            OpCode::Pong => events.push(Event::Pong(payload)),
            OpCode::Close => {
                let frame = close::parse_close_body(&payload).map_err(ProtocolError::CloseBody)?;
                self.close_code.get_or_insert(frame.reported_code());
                if self.state == State::Open {
                    // 5.5.1: answer a Close with a Close, echoing the code (1010 included: it is the client's).
                    let mut body = Vec::with_capacity(2);
                    if let Some(code) = frame.code {
                        close::encode_close_body(code, "", &mut body);
                    }
                    self.owed_close = Some(body.into_boxed_slice());
                    self.state = State::CloseReceived;
                } else {
                    self.state = State::Closed;
                }
                self.incoming = None;
                events.push(Event::Close(frame));
            }
            OpCode::Continuation | OpCode::Text | OpCode::Binary => {}
        }
        Ok(())
    }
}

/// 8.1: the bytes appended to a text message from `start` on are checked at once, failing at the first byte that
/// cannot be UTF-8.
fn check_utf8(assembly: &mut Assembly, start: usize) -> Result<(), ProtocolError> {
    if assembly.kind == MessageKind::Text {
        let added = assembly.payload.get(start..).unwrap_or_default();
        assembly
            .utf8
            .feed(added)
            .map_err(|_| ProtocolError::InvalidUtf8)?;
    }
    Ok(())
}

/// The error an inflate call that failed after appending to the message from `start` on fails the connection
/// with. What inflated before the failure (up to the size limit, or up to the bad data) was appended, and a text
/// message's bytes are checked first (8.1): invalid UTF-8 among them came before the failure, so it is the error,
/// however the input was cut and whatever each call's inflation limit.
fn inflate_failure(assembly: &mut Assembly, start: usize, error: InflateError) -> ProtocolError {
    match check_utf8(assembly, start) {
        Err(invalid_text) => invalid_text,
        Ok(()) => inflate_error(error),
    }
}

/// The protocol error for a message that cannot be inflated: past the size limit (10.4, 1009) or not DEFLATE.
fn inflate_error(error: InflateError) -> ProtocolError {
    match error {
        InflateError::TooBig { limit } => ProtocolError::MessageTooBig { limit },
        InflateError::Corrupt => ProtocolError::BadCompression,
    }
}

/// Turns the payload of a finished text message into a `String` without checking it a second time.
///
/// Every byte of `payload`, in order, went through the message's `Utf8Validator` as it arrived
/// (`Connection::on_payload`), and its `finish` succeeded, so the bytes are UTF-8 (8.1). Checking them again was 3%
/// of the instructions of a chat fan-out. Debug builds, and so the tests and the fuzzers, check the claim anyway.
#[allow(unsafe_code)]
fn proven_text(payload: Vec<u8>) -> String {
    debug_assert!(
        std::str::from_utf8(&payload).is_ok(),
        "the incremental validator passed invalid UTF-8"
    );
    // SAFETY: the bytes are valid UTF-8, as argued above; `String`'s only invariant.
    unsafe { String::from_utf8_unchecked(payload) }
}

/// Appends the header of the frame [`encode_server_message`] writes for a payload of `payload_len` bytes: for a
/// server that sends a payload it keeps elsewhere (shared with other connections) right after it.
pub fn encode_server_message_header(kind: MessageKind, payload_len: usize, out: &mut Vec<u8>) {
    let header = FrameHeader {
        fin: true,
        rsv1: false,
        opcode: kind.opcode(),
        mask: None,
        payload_len: payload_len as u64,
    };
    header.encode(out);
}

/// Appends one complete, unmasked frame carrying `payload` as a `kind` message: the frame a server sends, which is
/// the same whichever connection it goes to (5.1: a server never masks; we never fragment, 5.4). A server that
/// sends one message to many connections encodes it once with this and shares the bytes.
pub fn encode_server_message(kind: MessageKind, payload: &[u8], out: &mut Vec<u8>) {
    encode_frame(true, kind.opcode(), payload, None, out);
}

/// Appends the frame a server sends for `payload` as a `kind` message to every connection whose messages are
/// compressed each on its own with a window of `2^window_bits` ([`Connection::shared_compression_window`]): compressed
/// with RSV1 set if it is long enough and that makes it smaller, and returns true; otherwise appends nothing and
/// returns false, and the plain frame of [`encode_server_message`] is the one to send.
pub fn encode_server_message_compressed(
    kind: MessageKind,
    payload: &[u8],
    window_bits: u8,
    out: &mut Vec<u8>,
) -> bool {
    if payload.len() < MIN_COMPRESSED_LEN {
        return false;
    }
    let header = FrameHeader {
        fin: true,
        rsv1: true,
        opcode: kind.opcode(),
        mask: None,
        payload_len: payload.len() as u64,
    };
    encode_frame_in_place(header, out, |out| {
        shared::compress_alone(payload, window_bits, out)
    })
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
        conn.close(CloseCode::NORMAL, "");
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
        reference.close(CloseCode::NORMAL, "");
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
        conn.send_owned(message.kind(), message.into_payload())
            .unwrap();
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
        let mut client = Connection::new(Role::Client, 1 << 20);
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
                Event::Message(Message::Binary(payload)),
                Event::Message(Message::Text("small".into())),
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
                Event::Message(Message::Text("héllo".into())),
            ]
        );
        assert_eq!(
            server_frames(&conn.take_output()),
            vec![(OpCode::Pong, b"are you there".to_vec())]
        );
    }

    #[test]
    fn continuation_without_a_message_fails_with_1002() {
        let mut conn = server();
        let (_, result) = feed_bytewise(&mut conn, &client_frame(true, OpCode::Continuation, b"x"));
        assert_eq!(result, Err(ProtocolError::UnexpectedContinuation));
        assert_eq!(close_code_sent(&mut conn), Some(1002));
        assert_eq!(conn.state(), State::Failed);
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
                code: Some(CloseCode::GOING_AWAY),
                reason: "bye".into()
            })]
        );
        assert_eq!(conn.state(), State::CloseReceived, "our answer is owed");
        assert_eq!(close_code_sent(&mut conn), Some(1001));
        assert_eq!(conn.state(), State::Closed);
        assert_eq!(conn.close_code(), Some(CloseCode::GOING_AWAY));
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
        conn.close(CloseCode::GOING_AWAY, "going away");
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
    fn ping_after_our_close_gets_a_pong() {
        // 5.5.2: only a Ping after the peer's Close goes unanswered.
        let mut conn = server();
        conn.close(CloseCode::NORMAL, "");
        conn.take_output();
        let (events, _) = feed_bytewise(&mut conn, &client_frame(true, OpCode::Ping, b"x"));
        assert_eq!(events, vec![Event::Ping(b"x".to_vec())]);
        assert_eq!(
            server_frames(&conn.take_output()),
            vec![(OpCode::Pong, b"x".to_vec())]
        );
        assert_eq!(conn.state(), State::CloseSent);
    }

    #[test]
    fn ping_after_the_peers_close_gets_no_pong() {
        let mut conn = server();
        let mut input = close_frame(1000, b"");
        input.extend(client_frame(true, OpCode::Ping, b"x"));
        let (events, _) = feed_bytewise(&mut conn, &input);
        assert_eq!(events.len(), 1, "input after the peer's Close is not read");
        assert_eq!(
            server_frames(&conn.take_output()),
            vec![(OpCode::Close, 1000u16.to_be_bytes().to_vec())]
        );
    }

    #[test]
    fn a_server_asked_to_close_with_1010_sends_1011() {
        // 7.4.1: 1010 is the client's code. The debug assertion flags the caller's bug; release builds send 1011.
        let mut conn = server();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            conn.close(CloseCode::MANDATORY_EXTENSION, "")
        }));
        if cfg!(debug_assertions) {
            assert!(result.is_err());
        } else {
            assert_eq!(close_code_sent(&mut conn), Some(1011));
        }
    }

    #[test]
    fn a_server_echoes_a_clients_1010() {
        let mut conn = server();
        let (_, result) = feed_bytewise(&mut conn, &close_frame(1010, b"need deflate"));
        assert_eq!(result, Ok(()));
        assert_eq!(close_code_sent(&mut conn), Some(1010));
    }

    #[test]
    fn the_close_code_is_the_first_close_seen() {
        let mut ours_first = server();
        ours_first.close(CloseCode::POLICY_VIOLATION, "slow");
        let _ = feed_bytewise(&mut ours_first, &close_frame(1000, b""));
        assert_eq!(ours_first.close_code(), Some(CloseCode::POLICY_VIOLATION));

        let mut theirs_empty = server();
        let _ = feed_bytewise(&mut theirs_empty, &client_frame(true, OpCode::Close, b""));
        assert_eq!(
            theirs_empty.close_code(),
            Some(CloseCode::NO_STATUS_RECEIVED)
        );

        let mut failed = server();
        let _ = feed_bytewise(&mut failed, &client_frame(true, OpCode::Text, &[0xFF]));
        assert_eq!(failed.close_code(), Some(CloseCode::INVALID_PAYLOAD));
        assert_eq!(server().close_code(), None);
    }

    #[test]
    fn text_is_delivered_as_a_string_and_binary_as_bytes() {
        let mut conn = server();
        let mut input = client_frame(false, OpCode::Text, &[0xE2, 0x82]);
        input.extend(client_frame(true, OpCode::Continuation, &[0xAC]));
        input.extend(client_frame(true, OpCode::Binary, &[0xFF]));
        let (events, result) = feed_bytewise(&mut conn, &input);
        assert_eq!(result, Ok(()));
        assert_eq!(
            events,
            vec![
                Event::Message(Message::Text("€".into())),
                Event::Message(Message::Binary(vec![0xFF])),
            ]
        );
    }

    #[test]
    fn a_shared_server_message_is_the_frame_a_connection_would_send() {
        let mut conn = server();
        conn.send(MessageKind::Text, &[b'x'; 300]).unwrap();
        let mut shared = Vec::new();
        encode_server_message(MessageKind::Text, &[b'x'; 300], &mut shared);
        assert_eq!(shared, conn.take_output());
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
        let mut client = Connection::new(Role::Client, 1 << 20);
        client.send(MessageKind::Text, b"hi").unwrap();
        let out = client.take_output();
        assert_eq!(out[1] & 0x80, 0x80);
        let mut events = Vec::new();
        server.feed(&out, &mut events).unwrap();
        assert_eq!(events[0], Event::Message(Message::Text("hi".into())));
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

    #[test]
    fn a_message_in_more_frames_than_allowed_fails_with_1008() {
        let mut conn = server();
        conn.limit_fragments(3);
        let mut input = client_frame(false, OpCode::Text, b"a");
        input.extend(client_frame(false, OpCode::Continuation, b""));
        input.extend(client_frame(true, OpCode::Ping, b"controls do not count"));
        input.extend(client_frame(false, OpCode::Continuation, b"b"));
        let (events, result) = feed_bytewise(&mut conn, &input);
        assert_eq!(result, Ok(()));
        assert_eq!(events.len(), 1, "the Ping");
        let (_, result) = feed_bytewise(&mut conn, &client_frame(true, OpCode::Continuation, b"c"));
        assert_eq!(result, Err(ProtocolError::TooManyFragments { limit: 3 }));
        assert_eq!(close_code_sent(&mut conn), Some(1008));
    }

    #[test]
    fn every_frame_header_is_counted_controls_and_empty_ones_included() {
        let mut conn = server();
        let mut input = client_frame(false, OpCode::Text, b"");
        for _ in 0..5 {
            input.extend(client_frame(false, OpCode::Continuation, b""));
        }
        input.extend(client_frame(true, OpCode::Ping, b""));
        let before = conn.frames_received();
        let (_, result) = feed_bytewise(&mut conn, &input);
        assert_eq!(result, Ok(()));
        assert_eq!(conn.frames_received().wrapping_sub(before), 7);
    }

    #[test]
    fn memory_is_held_only_while_a_message_is_unfinished() {
        let mut conn = server();
        assert_eq!((conn.is_mid_message(), conn.buffered_bytes()), (false, 0));
        let frame = client_frame(true, OpCode::Binary, &[7; 1000]);
        let mut events = Vec::new();
        conn.feed(&frame[..500], &mut events).unwrap();
        assert!(conn.is_mid_message());
        assert!(conn.buffered_bytes() >= 1000, "{}", conn.buffered_bytes());
        conn.feed(&frame[500..], &mut events).unwrap();
        assert_eq!((conn.is_mid_message(), conn.buffered_bytes()), (false, 0));
    }

    /// A server that reads compressed messages, each compressed on its own (RFC 7692 7.1.1).
    fn deflating_server(max_message_size: usize) -> Connection {
        let mut conn = Connection::new(Role::Server, max_message_size);
        conn.use_deflate(&DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: None,
            client_max_window_bits: None,
        });
        conn
    }

    /// A masked client frame with RSV1 set: a whole compressed message (RFC 7692 6).
    fn compressed_client_frame(opcode: OpCode, deflated: &[u8]) -> Vec<u8> {
        let header = FrameHeader {
            fin: true,
            rsv1: true,
            opcode,
            mask: Some(KEY),
            payload_len: deflated.len() as u64,
        };
        let mut out = Vec::new();
        encode_frame_in_place(header, &mut out, |out| {
            out.extend_from_slice(deflated);
            Some(deflated.len())
        });
        out
    }

    /// Feeds `input` as a server loop does with an inflation limit per call: what a call leaves is given again,
    /// and a call stopped at the limit is repeated, until the input is used or the connection fails.
    fn feed_with_inflation_limit(
        conn: &mut Connection,
        input: &[u8],
        inflated_bytes: usize,
    ) -> Result<(), ProtocolError> {
        let limits = FeedLimits {
            frames: u32::MAX,
            inflated_bytes,
        };
        let mut events = Vec::new();
        let mut rest = input;
        loop {
            let fed = conn.feed_within(rest, &mut events, limits)?;
            rest = &rest[fed.used..];
            if fed.stopped.is_none() {
                return Ok(());
            }
        }
    }

    #[test]
    fn invalid_utf8_inflated_before_corrupt_data_is_the_error_however_the_input_is_cut() {
        // A stored block holding "a", 0xFF, "b" (RFC 1951 3.2.4), then a block of the reserved type 11.
        let deflated = [0x00, 0x03, 0x00, 0xfc, 0xff, b'a', 0xff, b'b', 0x07];
        let frame = compressed_client_frame(OpCode::Text, &deflated);
        let mut whole = deflating_server(1 << 20);
        let mut events = Vec::new();
        assert_eq!(
            whole.feed(&frame, &mut events),
            Err(ProtocolError::InvalidUtf8)
        );
        let mut bytewise = deflating_server(1 << 20);
        let (_, result) = feed_bytewise(&mut bytewise, &frame);
        assert_eq!(result, Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn invalid_utf8_inflated_before_the_size_limit_is_the_error_whatever_the_inflation_limit() {
        let mut text = b"a\xff".to_vec();
        text.extend_from_slice(&[b'a'; 5000]);
        let mut deflated = Vec::new();
        MessageCompressor::new(15, true)
            .compress(&text, &mut deflated)
            .unwrap();
        let frame = compressed_client_frame(OpCode::Text, &deflated);
        for inflated_bytes in [usize::MAX, 1, 2, 1000] {
            let mut conn = deflating_server(1000);
            assert_eq!(
                feed_with_inflation_limit(&mut conn, &frame, inflated_bytes),
                Err(ProtocolError::InvalidUtf8),
                "{inflated_bytes} bytes inflated per call"
            );
            assert_eq!(close_code_sent(&mut conn), Some(1007));
        }
    }

    /// `len` letters from a xorshift generator: text that compresses to about 60% of its length.
    fn letters(len: usize) -> String {
        let mut state = 0x2545_f491u32;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                char::from(b'a' + (state % 26) as u8)
            })
            .collect()
    }

    #[test]
    fn a_compressed_message_of_many_unmask_pieces_inflates_whole_however_it_arrives() {
        let text = letters(40_000);
        let mut deflated = Vec::new();
        MessageCompressor::new(15, true)
            .compress(text.as_bytes(), &mut deflated)
            .unwrap();
        assert!(deflated.len() > 4 * UNMASK_PIECE, "{}", deflated.len());
        let frame = compressed_client_frame(OpCode::Text, &deflated);
        let expected = [Event::Message(Message::Text(text))];
        for cut in [frame.len(), UNMASK_PIECE + 3, 1000] {
            let mut conn = deflating_server(1 << 20);
            let mut events = Vec::new();
            for part in frame.chunks(cut) {
                conn.feed(part, &mut events).unwrap();
            }
            assert_eq!(events, expected, "cut in {cut}-byte parts");
        }
        for inflated_bytes in [1, 1000, 3 * UNMASK_PIECE] {
            let mut conn = deflating_server(1 << 20);
            let limits = FeedLimits {
                frames: u32::MAX,
                inflated_bytes,
            };
            let mut events = Vec::new();
            let mut rest = &frame[..];
            loop {
                let fed = conn.feed_within(rest, &mut events, limits).unwrap();
                rest = &rest[fed.used..];
                if fed.stopped.is_none() {
                    break;
                }
            }
            assert_eq!(events, expected, "{inflated_bytes} bytes inflated per call");
        }
    }

    #[test]
    fn a_compressed_message_held_back_counts_what_waits_to_be_inflated() {
        let text = letters(10_000);
        let mut deflated = Vec::new();
        MessageCompressor::new(15, true)
            .compress(text.as_bytes(), &mut deflated)
            .unwrap();
        let frame = compressed_client_frame(OpCode::Text, &deflated);
        let mut conn = deflating_server(1 << 20);
        let limits = FeedLimits {
            frames: u32::MAX,
            inflated_bytes: 10,
        };
        let mut events = Vec::new();
        let fed = conn.feed_within(&frame, &mut events, limits).unwrap();
        assert_eq!(fed.stopped, Some(FeedLimit::InflatedBytes));
        let held = conn.buffered_bytes();
        assert!(
            held >= DECOMPRESSOR_BYTES + deflated.len() - 10,
            "{held} bytes counted for {} compressed bytes waiting",
            deflated.len()
        );
    }

    fn frames(frames: u32) -> FeedLimits {
        FeedLimits {
            frames,
            ..FeedLimits::NONE
        }
    }

    fn fed(used: usize, stopped: bool) -> Fed {
        Fed {
            used,
            inflated: 0,
            stopped: stopped.then_some(FeedLimit::Frames),
        }
    }

    #[test]
    fn feeding_stops_after_the_frames_allowed_and_says_where() {
        let mut conn = server();
        let mut input = Vec::new();
        for _ in 0..5 {
            input.extend(client_frame(true, OpCode::Ping, b"p"));
        }
        let one = input.len() / 5;
        let mut events = Vec::new();
        assert_eq!(
            conn.feed_within(&input, &mut events, frames(3)),
            Ok(fed(3 * one, true))
        );
        assert_eq!(events.len(), 3);
        assert_eq!(
            server_frames(&conn.take_output()).len(),
            3,
            "three Pongs, no more"
        );
        assert_eq!(
            conn.feed_within(&input[3 * one..], &mut events, frames(9)),
            Ok(fed(2 * one, false))
        );
        assert_eq!(events.len(), 5);
    }

    #[test]
    fn what_deflate_adds_to_every_connection_is_a_few_words() {
        // Allocated by `use_deflate` for each connection that agreed; the codecs it may keep are boxed apart.
        assert!(
            std::mem::size_of::<Compression>() <= 4 * std::mem::size_of::<usize>(),
            "{} bytes",
            std::mem::size_of::<Compression>()
        );
    }
}
