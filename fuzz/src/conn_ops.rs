//! The `connection` target's input: a connection setup and a sequence of operations on it.
//!
//! An operation is a client frame (any opcode, including reserved ones; any RSV bits; masked or not; minimal or
//! deliberately non-minimal length; a payload of bytes, a repeated byte, or a Close body), a run of raw bytes, or
//! a server-side command (send text or binary, ping, close). Frames are written by `ClientFrame::to_bytes`, a
//! frame writer of its own that shares no code with `roomcast::protocol::frame`.

use arbitrary::{Arbitrary, Unstructured};

use crate::bytes::{Reader, Writer};

/// The largest payload a `Fill` frame can declare: past the 64-bit length boundary (65536) with room to spare.
pub const MAX_FILL: u32 = 1 << 17;

/// How a frame writes its payload length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LenForm {
    /// The minimal form RFC 6455 5.2 requires.
    Minimal,
    /// Always the 16-bit extended form (non-minimal below 126; truncated above 65535).
    Forced16,
    /// Always the 64-bit extended form (non-minimal below 65536).
    Forced64,
}

/// A frame's payload, before masking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// These bytes.
    Bytes(Vec<u8>),
    /// `len` copies of `byte`, so long payloads cost the input a few bytes.
    Fill {
        /// The repeated byte.
        byte: u8,
        /// How many; at most `MAX_FILL`.
        len: u32,
    },
    /// A Close body: a big-endian code and a reason (any bytes).
    CloseBody {
        /// The status code.
        code: u16,
        /// The reason bytes, not necessarily UTF-8.
        reason: Vec<u8>,
    },
}

impl Payload {
    /// The payload length, without building it.
    pub fn len(&self) -> usize {
        match self {
            Payload::Bytes(b) => b.len(),
            Payload::Fill { len, .. } => *len as usize,
            Payload::CloseBody { reason, .. } => 2 + reason.len(),
        }
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The unmasked payload bytes.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Payload::Bytes(b) => b.clone(),
            Payload::Fill { byte, len } => vec![*byte; *len as usize],
            Payload::CloseBody { code, reason } => {
                let mut body = code.to_be_bytes().to_vec();
                body.extend_from_slice(reason);
                body
            }
        }
    }
}

/// A frame as a client (or a misbehaving one) would send it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFrame {
    /// FIN.
    pub fin: bool,
    /// RSV1-3, in the low three bits.
    pub rsv: u8,
    /// The 4-bit opcode, reserved values included.
    pub opcode: u8,
    /// The masking key, if the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// How the length is written.
    pub len_form: LenForm,
    /// The payload before masking.
    pub payload: Payload,
}

impl ClientFrame {
    /// A well-formed, masked, final frame.
    pub fn masked(opcode: u8, payload: Payload) -> Self {
        ClientFrame {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some([0x37, 0xfa, 0x21, 0x3d]),
            len_form: LenForm::Minimal,
            payload,
        }
    }

    /// How many bytes `to_bytes` writes (an upper bound: the 14-byte largest header), without building them.
    pub fn max_wire_len(&self) -> usize {
        self.payload.len() + 14
    }

    /// The frame on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let payload = self.payload.bytes();
        let len = payload.len() as u64;
        let mut out = Vec::with_capacity(payload.len() + 14);
        out.push(u8::from(self.fin) << 7 | (self.rsv & 7) << 4 | (self.opcode & 0x0F));
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let form = match self.len_form {
            LenForm::Minimal if len < 126 => 0,
            LenForm::Minimal if len <= 0xFFFF => 16,
            LenForm::Minimal => 64,
            LenForm::Forced16 => 16,
            LenForm::Forced64 => 64,
        };
        match form {
            0 => out.push(mask_bit | len as u8),
            16 => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        match self.mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(&payload),
        }
        out
    }

    fn flags(&self) -> u8 {
        let form = match self.len_form {
            LenForm::Minimal => 0,
            LenForm::Forced16 => 1,
            LenForm::Forced64 => 2,
        };
        u8::from(self.fin) | (self.rsv & 7) << 1 | u8::from(self.mask.is_some()) << 4 | form << 5
    }

    fn read_head(r: &mut Reader<'_>) -> (bool, u8, Option<[u8; 4]>, LenForm) {
        let flags = r.u8();
        let len_form = match (flags >> 5) & 3 {
            1 => LenForm::Forced16,
            2 => LenForm::Forced64,
            _ => LenForm::Minimal,
        };
        let mask = if flags & 0x10 != 0 {
            let k = r.bytes(4);
            let mut key = [0u8; 4];
            key[..k.len()].copy_from_slice(k);
            Some(key)
        } else {
            None
        };
        (flags & 1 != 0, (flags >> 1) & 7, mask, len_form)
    }

    fn write_head(&self, w: &mut Writer) {
        w.u8(self.flags());
        if let Some(key) = self.mask {
            w.bytes(&key);
        }
    }
}

/// One step of the `connection` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// The client sends a frame.
    Frame(ClientFrame),
    /// The client sends these bytes as they are.
    Raw(Vec<u8>),
    /// The server sends a text message (the bytes are read as lossy UTF-8).
    SendText(Vec<u8>),
    /// The server sends a binary message.
    SendBinary(Vec<u8>),
    /// The server sends a Ping (over 125 bytes must be refused).
    SendPing(Vec<u8>),
    /// The server starts the closing handshake; the target maps `code` onto a sendable code.
    Close {
        /// The raw code.
        code: u16,
        /// The reason (read as lossy UTF-8).
        reason: Vec<u8>,
    },
}

const TAG_FRAME: u8 = 0;
const TAG_RAW: u8 = 1;
const TAG_SEND_TEXT: u8 = 2;
const TAG_SEND_BINARY: u8 = 3;
const TAG_SEND_PING: u8 = 4;
const TAG_CLOSE: u8 = 5;
const TAG_CLOSE_FRAME: u8 = 6;
const TAG_FILL_FRAME: u8 = 7;
const TAGS: u8 = 8;

impl Op {
    /// Reads one operation (the grammar is in `encode`).
    pub fn read(r: &mut Reader<'_>) -> Op {
        match r.u8() % TAGS {
            TAG_FRAME => {
                let (fin, rsv, mask, len_form) = ClientFrame::read_head(r);
                let opcode = r.u8() & 0x0F;
                let payload = Payload::Bytes(r.short_bytes().to_vec());
                Op::Frame(ClientFrame {
                    fin,
                    rsv,
                    opcode,
                    mask,
                    len_form,
                    payload,
                })
            }
            TAG_RAW => Op::Raw(r.short_bytes().to_vec()),
            TAG_SEND_TEXT => Op::SendText(r.short_bytes().to_vec()),
            TAG_SEND_BINARY => Op::SendBinary(r.short_bytes().to_vec()),
            TAG_SEND_PING => Op::SendPing(r.short_bytes().to_vec()),
            TAG_CLOSE => Op::Close {
                code: r.u16(),
                reason: r.short_bytes().to_vec(),
            },
            TAG_CLOSE_FRAME => {
                let (fin, rsv, mask, len_form) = ClientFrame::read_head(r);
                let code = r.u16();
                let reason = r.short_bytes().to_vec();
                Op::Frame(ClientFrame {
                    fin,
                    rsv,
                    opcode: 0x8,
                    mask,
                    len_form,
                    payload: Payload::CloseBody { code, reason },
                })
            }
            _ => {
                let (fin, rsv, mask, len_form) = ClientFrame::read_head(r);
                let opcode = r.u8() & 0x0F;
                let byte = r.u8();
                let len = read_fill_len(r);
                Op::Frame(ClientFrame {
                    fin,
                    rsv,
                    opcode,
                    mask,
                    len_form,
                    payload: Payload::Fill { byte, len },
                })
            }
        }
    }

    /// Writes one operation. A frame whose payload is `Bytes` takes at most 255 bytes; a `CloseBody` frame is
    /// always opcode 0x8 and its reason at most 255 bytes.
    pub fn encode(&self, w: &mut Writer) {
        match self {
            Op::Frame(frame) => match &frame.payload {
                Payload::Bytes(bytes) => {
                    w.u8(TAG_FRAME);
                    frame.write_head(w);
                    w.u8(frame.opcode & 0x0F);
                    w.short_bytes(bytes);
                }
                Payload::CloseBody { code, reason } => {
                    assert_eq!(frame.opcode, 0x8, "a Close body goes in a Close frame");
                    w.u8(TAG_CLOSE_FRAME);
                    frame.write_head(w);
                    w.u16(*code);
                    w.short_bytes(reason);
                }
                Payload::Fill { byte, len } => {
                    assert!(*len <= MAX_FILL);
                    w.u8(TAG_FILL_FRAME);
                    frame.write_head(w);
                    w.u8(frame.opcode & 0x0F);
                    w.u8(*byte);
                    write_fill_len(w, *len);
                }
            },
            Op::Raw(bytes) => {
                w.u8(TAG_RAW);
                w.short_bytes(bytes);
            }
            Op::SendText(bytes) => {
                w.u8(TAG_SEND_TEXT);
                w.short_bytes(bytes);
            }
            Op::SendBinary(bytes) => {
                w.u8(TAG_SEND_BINARY);
                w.short_bytes(bytes);
            }
            Op::SendPing(bytes) => {
                w.u8(TAG_SEND_PING);
                w.short_bytes(bytes);
            }
            Op::Close { code, reason } => {
                w.u8(TAG_CLOSE);
                w.u16(*code);
                w.short_bytes(reason);
            }
        }
    }
}

/// A `Fill` length in one to three bytes, so that random bytes mostly give short payloads: a first byte below
/// 0x80 is the length itself, 0x80..=0xBF starts a 14-bit length, 0xC0..=0xFF a 22-bit one (modulo
/// `MAX_FILL + 1`).
fn read_fill_len(r: &mut Reader<'_>) -> u32 {
    let b = u32::from(r.u8());
    match b {
        0..=0x7F => b,
        0x80..=0xBF => (b & 0x3F) << 8 | u32::from(r.u8()),
        _ => ((b & 0x3F) << 16 | u32::from(r.u16())) % (MAX_FILL + 1),
    }
}

fn write_fill_len(w: &mut Writer, len: u32) {
    assert!(len <= MAX_FILL);
    if len < 0x80 {
        w.u8(len as u8);
    } else if len < 1 << 14 {
        w.u8(0x80 | (len >> 8) as u8);
        w.u8(len as u8);
    } else {
        w.u8(0xC0 | (len >> 16) as u8);
        w.u16(len as u16);
    }
}

/// The whole `connection` input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnInput {
    /// Chooses the message size limit.
    pub limit: u8,
    /// How connection A reads the client's bytes.
    pub plan_a: Vec<u8>,
    /// How connection B reads the same bytes.
    pub plan_b: Vec<u8>,
    /// What happens, in order.
    pub ops: Vec<Op>,
}

impl ConnInput {
    /// Reads an input; every byte string is one.
    pub fn read(data: &[u8]) -> ConnInput {
        let mut r = Reader::new(data);
        let limit = r.u8();
        let plan_a = r.short_bytes().to_vec();
        let plan_b = r.short_bytes().to_vec();
        let mut ops = Vec::new();
        while !r.is_empty() {
            ops.push(Op::read(&mut r));
        }
        ConnInput {
            limit,
            plan_a,
            plan_b,
            ops,
        }
    }

    /// Writes an input that `read` turns back into `self`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(self.limit);
        w.short_bytes(&self.plan_a);
        w.short_bytes(&self.plan_b);
        for op in &self.ops {
            op.encode(&mut w);
        }
        w.out
    }

    /// The message size limit `limit` selects: mostly generous, sometimes tiny or on a length boundary.
    pub fn max_message_size(&self) -> usize {
        let high = usize::from(self.limit >> 3);
        match self.limit & 7 {
            0..=3 => 1 << 20,
            4 => high,
            5 => 124 + high % 4,
            6 => 65534 + high % 4,
            _ => 4096,
        }
    }
}

impl<'a> Arbitrary<'a> for ConnInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let data = u.bytes(u.len())?;
        Ok(ConnInput::read(data))
    }

    fn arbitrary_take_rest(mut u: Unstructured<'a>) -> arbitrary::Result<Self> {
        Self::arbitrary(&mut u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_read_is_identity() {
        let input = ConnInput {
            limit: 0x2C,
            plan_a: vec![1, 0, 0xF1],
            plan_b: vec![],
            ops: vec![
                Op::Frame(ClientFrame::masked(0x1, Payload::Bytes(b"hi".to_vec()))),
                Op::Frame(ClientFrame {
                    fin: false,
                    rsv: 5,
                    opcode: 0xB,
                    mask: None,
                    len_form: LenForm::Forced64,
                    payload: Payload::Fill {
                        byte: 7,
                        len: 65536,
                    },
                }),
                Op::Frame(ClientFrame {
                    fin: true,
                    rsv: 0,
                    opcode: 0x1,
                    mask: None,
                    len_form: LenForm::Minimal,
                    payload: Payload::Fill { byte: 7, len: 300 },
                }),
                Op::Frame(ClientFrame::masked(
                    0x8,
                    Payload::CloseBody {
                        code: 1005,
                        reason: vec![0xFF],
                    },
                )),
                Op::Raw(vec![0x81]),
                Op::SendText(b"yo".to_vec()),
                Op::SendBinary(vec![]),
                Op::SendPing(vec![1; 126]),
                Op::Close {
                    code: 4000,
                    reason: b"bye".to_vec(),
                },
            ],
        };
        assert_eq!(ConnInput::read(&input.encode()), input);
    }

    #[test]
    fn frame_writer_matches_the_rfc_example() {
        // RFC 6455 5.7: a masked "Hello".
        let frame = ClientFrame::masked(0x1, Payload::Bytes(b"Hello".to_vec()));
        assert_eq!(
            frame.to_bytes(),
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    #[test]
    fn forced_length_forms_are_written_as_asked() {
        let mut frame = ClientFrame::masked(0x2, Payload::Bytes(vec![1]));
        frame.len_form = LenForm::Forced16;
        assert_eq!(frame.to_bytes()[1..4], [0xFE, 0x00, 0x01]);
        frame.len_form = LenForm::Forced64;
        assert_eq!(frame.to_bytes()[1..10], [0xFF, 0, 0, 0, 0, 0, 0, 0, 1]);
    }
}
