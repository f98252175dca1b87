//! A reference reading of a client's byte stream, for the `connection` target to compare the real connection
//! with.
//!
//! Owns an independent, whole-buffer implementation of what a server connection must report for a stream
//! (RFC 6455 5.1-5.6, 5.5.1, 7.4 and 8.1): the events in order, and the error that fails the connection, with the
//! error a connection that reads incrementally would report when the stream ends early. It shares no code with
//! `roomcast::protocol` beyond the event and error types it answers in. Where one frame breaks several rules, it
//! reports them in the order `roomcast` checks them: opcode, RSV bits, control-frame rules, masking, length
//! encoding, then message rules (continuation, size), then the payload (UTF-8, Close body).

use roomcast::protocol::close::{CloseBodyError, CloseCode, CloseFrame};
use roomcast::protocol::frame::FrameError;
use roomcast::protocol::{Event, Message, MessageKind, ProtocolError};

/// What a server connection must make of `stream` with messages limited to `limit` bytes: its events, and the
/// error it fails with, if any. Input after the peer's Close or after an error is ignored.
pub fn expected(stream: &[u8], limit: usize) -> (Vec<Event>, Option<ProtocolError>) {
    let mut reader = Reference {
        limit,
        events: Vec::new(),
        message: None,
    };
    let error = reader.read(stream).err();
    (reader.events, error)
}

struct Reference {
    limit: usize,
    events: Vec<Event>,
    /// The data message being assembled: its kind and payload so far.
    message: Option<(MessageKind, Vec<u8>)>,
}

/// Why reading stopped without an error.
enum Stop {
    /// The stream ended.
    End,
    /// The peer's Close arrived.
    Closed,
}

impl Reference {
    fn read(&mut self, mut rest: &[u8]) -> Result<Stop, ProtocolError> {
        loop {
            let Some((frame_len, fin, opcode, mask, payload_len)) = header(rest)? else {
                return Ok(Stop::End);
            };
            let control = opcode >= 0x8;
            if !control {
                self.check_message_rules(opcode, payload_len)?;
            }
            let body = &rest[frame_len..];
            let available = body
                .len()
                .min(usize::try_from(payload_len).unwrap_or(usize::MAX));
            let payload: Vec<u8> = body[..available]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            let complete = available as u64 == payload_len;
            if !control {
                let (kind, assembled) = self.message.as_mut().expect("checked above");
                assembled.extend_from_slice(&payload);
                // 8.1, failing fast: text fails as soon as a byte arrives that no valid UTF-8 can continue with.
                if *kind == MessageKind::Text && can_not_become_utf8(assembled) {
                    return Err(ProtocolError::InvalidUtf8);
                }
            }
            if !complete {
                return Ok(Stop::End);
            }
            rest = &body[available..];
            if control {
                if let Stop::Closed = self.control(opcode, payload)? {
                    return Ok(Stop::Closed);
                }
            } else if fin {
                let (kind, payload) = self.message.take().expect("checked above");
                let message = match kind {
                    MessageKind::Text => Message::Text(
                        String::from_utf8(payload).map_err(|_| ProtocolError::InvalidUtf8)?,
                    ),
                    MessageKind::Binary => Message::Binary(payload),
                };
                self.events.push(Event::Message(message));
            }
        }
    }

    /// 5.4 and 10.4, judged from a data frame's header.
    fn check_message_rules(&mut self, opcode: u8, payload_len: u64) -> Result<(), ProtocolError> {
        let assembled = match (&self.message, opcode) {
            (None, 0x0) => return Err(ProtocolError::UnexpectedContinuation),
            (Some(_), 0x1 | 0x2) => return Err(ProtocolError::ExpectedContinuation),
            (Some((_, payload)), _) => payload.len() as u64,
            (None, _) => 0,
        };
        if assembled + payload_len > self.limit as u64 {
            return Err(ProtocolError::MessageTooBig { limit: self.limit });
        }
        if self.message.is_none() {
            let kind = if opcode == 0x1 {
                MessageKind::Text
            } else {
                MessageKind::Binary
            };
            self.message = Some((kind, Vec::new()));
        }
        Ok(())
    }

    /// A complete control frame.
    fn control(&mut self, opcode: u8, payload: Vec<u8>) -> Result<Stop, ProtocolError> {
        match opcode {
            0x9 => self.events.push(Event::Ping(payload)),
            0xA => self.events.push(Event::Pong(payload)),
            _ => {
                let frame = close_body(&payload).map_err(ProtocolError::CloseBody)?;
                self.events.push(Event::Close(frame));
                return Ok(Stop::Closed);
            }
        }
        Ok(Stop::End)
    }
}

/// Reads a frame header from the front of `bytes`: `None` if it has not all arrived (and the bytes that have
/// break no rule), else its length, FIN, opcode, masking key and payload length.
#[allow(clippy::type_complexity)]
fn header(bytes: &[u8]) -> Result<Option<(usize, bool, u8, [u8; 4], u64)>, ProtocolError> {
    let (Some(&b0), Some(&b1)) = (bytes.first(), bytes.get(1)) else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    let len7 = b1 & 0x7F;
    let fail = |e: FrameError| Err(ProtocolError::Frame(e));
    // The opcode is judged before the RSV bits, as the decoder does: with permessage-deflate, whether RSV1 is
    // allowed depends on the opcode (RFC 7692 6.1). Both are 1002.
    if !matches!(opcode, 0x0..=0x2 | 0x8..=0xA) {
        return fail(FrameError::ReservedOpcode(opcode));
    }
    if b0 & 0x70 != 0 {
        return fail(FrameError::ReservedBits);
    }
    if opcode >= 0x8 && !fin {
        return fail(FrameError::FragmentedControl);
    }
    if opcode >= 0x8 && len7 > 125 {
        return fail(FrameError::ControlTooLong);
    }
    if b1 & 0x80 == 0 {
        return fail(FrameError::Unmasked);
    }
    let length_bytes = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let frame_len = 2 + length_bytes + 4;
    if bytes.len() < frame_len {
        return Ok(None);
    }
    let len = bytes[2..2 + length_bytes]
        .iter()
        .fold(0u64, |acc, b| acc << 8 | u64::from(*b));
    let payload_len = match len7 {
        126 if len < 126 => return fail(FrameError::NonMinimalLength),
        127 if len >> 63 != 0 => return fail(FrameError::LengthTooLarge),
        127 if len < 1 << 16 => return fail(FrameError::NonMinimalLength),
        126 | 127 => len,
        short => u64::from(short),
    };
    let mut mask = [0u8; 4];
    mask.copy_from_slice(&bytes[2 + length_bytes..frame_len]);
    Ok(Some((frame_len, fin, opcode, mask, payload_len)))
}

/// True when `bytes` is not the start of any valid UTF-8 (an unfinished last code point is fine).
fn can_not_become_utf8(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_err_and(|e| e.error_len().is_some())
}

/// A Close body (5.5.1): empty, or a sendable code (7.4.1, 7.4.2 and the IANA registry) and a UTF-8 reason.
fn close_body(body: &[u8]) -> Result<CloseFrame, CloseBodyError> {
    match body {
        [] => Ok(CloseFrame {
            code: None,
            reason: String::new(),
        }),
        [_] => Err(CloseBodyError::Truncated),
        [hi, lo, reason @ ..] => {
            let code = u16::from(*hi) << 8 | u16::from(*lo);
            if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                return Err(CloseBodyError::InvalidCode(code));
            }
            let reason =
                String::from_utf8(reason.to_vec()).map_err(|_| CloseBodyError::InvalidReason)?;
            Ok(CloseFrame {
                code: Some(CloseCode::new(code)),
                reason,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn_ops::{ClientFrame, Payload};

    fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        ClientFrame {
            fin,
            ..ClientFrame::masked(opcode, Payload::Bytes(payload.to_vec()))
        }
        .to_bytes()
    }

    #[test]
    fn fragmented_text_with_a_ping_between() {
        let mut stream = frame(0x1, false, "hé".as_bytes());
        stream.extend(frame(0x9, true, b"p"));
        stream.extend(frame(0x0, true, b"llo"));
        let (events, error) = expected(&stream, 100);
        assert_eq!(error, None);
        assert_eq!(
            events,
            vec![
                Event::Ping(b"p".to_vec()),
                Event::Message(Message::Text("héllo".into()))
            ]
        );
    }

    #[test]
    fn invalid_utf8_fails_before_the_frame_is_complete() {
        let whole = frame(0x1, true, &[b'a', 0xFF, b'b', b'c']);
        assert_eq!(
            expected(&whole[..8], 100),
            (vec![], Some(ProtocolError::InvalidUtf8))
        );
        assert_eq!(expected(&whole[..7], 100), (vec![], None));
    }

    #[test]
    fn input_after_close_is_ignored() {
        let mut stream = frame(0x8, true, &[0x03, 0xE8]);
        stream.extend(frame(0x7, true, b""));
        let (events, error) = expected(&stream, 100);
        assert_eq!(error, None);
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn size_is_judged_from_the_header() {
        let stream = frame(0x2, true, &[0; 11]);
        assert_eq!(
            expected(&stream[..2], 10).1,
            None,
            "the length is in the second byte, but the mask has not arrived"
        );
        assert_eq!(
            expected(&stream[..6], 10).1,
            Some(ProtocolError::MessageTooBig { limit: 10 })
        );
    }
}
