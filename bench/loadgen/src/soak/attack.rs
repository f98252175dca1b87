//! The bytes the soak's flooding attackers write: each kind of flood as a prefix sent once and a cycle of whole
//! frames written over and over, as fast as TCP takes them.
//!
//! Owns building those frames (masked, as a client must, RFC 6455 5.3) and the cursor that walks them so every
//! write, however short, leaves the stream on a frame boundary after a whole number of cycles. It must not touch
//! sockets or decide when to write.

use std::rc::Rc;

use roomcast::protocol::frame::{encode_frame, OpCode};

/// Bytes of one flood cycle: big enough that a write rarely needs two slices, small enough to build once.
const CYCLE_BYTES: usize = 64 * 1024;

/// The kinds of flood.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FloodKind {
    /// A non-final text frame, then empty continuation frames forever (RFC 6455 5.4: a message may have any
    /// number of fragments).
    Continuations,
    /// 125-byte Pings (the largest control frame, 5.5), and the connection never reads the Pongs.
    Pings,
    /// Small text frames: chat messages far over the rate limit, into a room shared with innocents.
    Texts,
}

impl FloodKind {
    /// Every kind, in the order attackers are assigned them.
    pub const ALL: [FloodKind; 3] = [FloodKind::Continuations, FloodKind::Pings, FloodKind::Texts];

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            FloodKind::Continuations => "flood_continuations",
            FloodKind::Pings => "flood_pings_unread",
            FloodKind::Texts => "flood_small_texts",
        }
    }

    /// Whether the attacker reads what the server sends (the Ping flooder never does).
    pub fn reads(self) -> bool {
        self != FloodKind::Pings
    }

    /// Whether the attacker joins a room before flooding.
    pub fn joins(self) -> bool {
        self == FloodKind::Texts
    }

    /// The bytes sent once before the cycle starts.
    pub fn prefix(self, mask: [u8; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        if self == FloodKind::Continuations {
            encode_frame(false, OpCode::Text, b"{", Some(mask), &mut out);
        }
        out
    }

    /// Whole frames filling about `CYCLE_BYTES`, written over and over.
    pub fn cycle(self, mask: [u8; 4]) -> Rc<[u8]> {
        let mut frame = Vec::new();
        match self {
            FloodKind::Continuations => {
                encode_frame(false, OpCode::Continuation, b"", Some(mask), &mut frame)
            }
            FloodKind::Pings => {
                encode_frame(true, OpCode::Ping, &[b'p'; 125], Some(mask), &mut frame)
            }
            FloodKind::Texts => encode_frame(
                true,
                OpCode::Text,
                br#"{"type":"chat","content":"spam"}"#,
                Some(mask),
                &mut frame,
            ),
        }
        let copies = (CYCLE_BYTES / frame.len()).max(1);
        frame.repeat(copies).into()
    }
}

/// Where a flood stands: the prefix still to send, then a position in the shared cycle.
#[derive(Clone, Debug)]
pub struct FloodStream {
    prefix: Vec<u8>,
    prefix_sent: usize,
    cycle: Rc<[u8]>,
    position: usize,
    /// Bytes written so far.
    pub written: u64,
}

impl FloodStream {
    /// A flood that sends `prefix` once, then `cycle` forever.
    pub fn new(prefix: Vec<u8>, cycle: Rc<[u8]>) -> FloodStream {
        FloodStream {
            prefix,
            prefix_sent: 0,
            cycle,
            position: 0,
            written: 0,
        }
    }

    /// The bytes to write next.
    pub fn next_chunk(&self) -> &[u8] {
        if self.prefix_sent < self.prefix.len() {
            &self.prefix[self.prefix_sent..]
        } else {
            &self.cycle[self.position..]
        }
    }

    /// Records that the first `n` bytes of `next_chunk()` were written.
    pub fn advance(&mut self, n: usize) {
        self.written += n as u64;
        if self.prefix_sent < self.prefix.len() {
            self.prefix_sent += n;
        } else if !self.cycle.is_empty() {
            self.position = (self.position + n) % self.cycle.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast::protocol::frame::{FrameDecoder, FrameEvent, IncomingMask};

    /// The (fin, opcode, payload length) of every whole frame in `bytes`, and whether it ended on a boundary.
    fn frames(bytes: &[u8]) -> (Vec<(bool, OpCode, u64)>, bool) {
        let mut decoder = FrameDecoder::new(IncomingMask::Required);
        let mut found = Vec::new();
        let mut input = bytes;
        loop {
            let (used, event) = decoder.decode(input).expect("valid frames");
            input = &input[used..];
            match event {
                None => break,
                Some(FrameEvent::Header(h)) => found.push((h.fin, h.opcode, h.payload_len)),
                Some(FrameEvent::Payload(_)) => {}
            }
        }
        (found, decoder.at_frame_boundary())
    }

    #[test]
    fn cycles_are_whole_masked_frames_of_their_kind() {
        let mask = [1, 2, 3, 4];
        let (found, whole) = frames(&FloodKind::Continuations.cycle(mask));
        assert!(whole && found.len() > 1000);
        assert!(found.iter().all(|&f| f == (false, OpCode::Continuation, 0)));
        let (found, whole) = frames(&FloodKind::Pings.cycle(mask));
        assert!(whole && found.iter().all(|&f| f == (true, OpCode::Ping, 125)));
        let (found, whole) = frames(&FloodKind::Texts.cycle(mask));
        assert!(whole && found.iter().all(|&(fin, op, _)| fin && op == OpCode::Text));
    }

    #[test]
    fn the_continuation_flood_opens_a_message_it_never_finishes() {
        let (found, _) = frames(&FloodKind::Continuations.prefix([9, 9, 9, 9]));
        assert_eq!(found, vec![(false, OpCode::Text, 1)]);
        assert!(FloodKind::Pings.prefix([0; 4]).is_empty());
    }

    #[test]
    fn short_writes_keep_the_stream_on_frame_boundaries_across_cycles() {
        let kind = FloodKind::Pings;
        let mut stream = FloodStream::new(kind.prefix([5; 4]), kind.cycle([5; 4]));
        let mut sent = Vec::new();
        let cycle_len = kind.cycle([5; 4]).len();
        for step in [7usize, 1000, 70_000, 3, 65_000, 131]
            .iter()
            .cycle()
            .take(40)
        {
            let chunk = stream.next_chunk();
            let n = (*step).min(chunk.len());
            sent.extend_from_slice(&chunk[..n]);
            stream.advance(n);
        }
        assert_eq!(stream.written, sent.len() as u64);
        assert!(sent.len() > 2 * cycle_len);
        let whole = sent.len() - sent.len() % 131;
        let (found, boundary) = frames(&sent[..whole]);
        assert!(boundary);
        assert_eq!(found.len(), whole / 131);
    }
}
