//! Unfinished messages pinned forever: `--attackers` connections to `/echo`, each sending a non-final binary frame
//! announcing `--pin-bytes` and all of its payload, then an empty continuation frame every `--keepalive-secs`
//! (RFC 6455 5.4: a message may have any number of fragments), so the message is never finished and the
//! connection never looks idle.
//!
//! Owns the bytes the pinning connections write. The masking key is zero, so the payload is written from one
//! buffer of zeros shared by every connection (a server cannot tell a zero key from any other; RFC 6455 10.3 asks
//! a browser for unpredictable keys, not an attacker). Connections the server closes do not come back.

use serde_json::{json, Value};

use super::arena::{Arena, Role, Source};
use super::outcome::{Ended, Treatment};
use super::{AttackArgs, Plan};
use crate::client::Received;
use crate::{round3, secs_to_ns};

/// The payload is written from this many zeros at a time.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
/// An empty continuation frame, FIN clear, masked with a zero key (RFC 6455 5.2).
const EMPTY_CONTINUATION: [u8; 6] = [0x00, 0x80, 0, 0, 0, 0];

/// What one pinning connection still has to write.
#[derive(Clone, Debug)]
struct Pinning {
    header: Vec<u8>,
    header_sent: usize,
    payload_left: u64,
    next_keepalive: u64,
    /// The keepalive frame's bytes still to write (a socket that takes part of it gets the rest next).
    keepalive_left: usize,
}

impl Pinning {
    /// A non-final binary frame of `bytes`, 64-bit length, zero mask (RFC 6455 5.2).
    fn new(bytes: u64) -> Pinning {
        let mut header = vec![0x02, 0x80 | 127];
        header.extend_from_slice(&bytes.to_be_bytes());
        header.extend_from_slice(&[0; 4]);
        Pinning {
            header,
            header_sent: 0,
            payload_left: bytes,
            next_keepalive: u64::MAX,
            keepalive_left: 0,
        }
    }

    fn frame_written(&self) -> bool {
        self.header_sent == self.header.len() && self.payload_left == 0
    }
}

impl Source for Pinning {
    fn chunk(&self) -> &[u8] {
        if self.header_sent < self.header.len() {
            &self.header[self.header_sent..]
        } else if self.payload_left > 0 {
            &ZEROS[..ZEROS.len().min(self.payload_left as usize)]
        } else {
            &EMPTY_CONTINUATION[EMPTY_CONTINUATION.len() - self.keepalive_left..]
        }
    }

    fn advance(&mut self, n: usize) {
        if self.header_sent < self.header.len() {
            self.header_sent += n;
        } else if self.payload_left > 0 {
            self.payload_left -= n as u64;
        } else {
            self.keepalive_left -= n;
        }
    }
}

/// The pinning attack.
pub struct Pin<'a> {
    args: &'a AttackArgs,
    pins: Vec<Option<(usize, Pinning)>>,
    treatment: Treatment,
    start: u64,
    bytes_written: u64,
    frames_done: u64,
    last_frame_done_at: Option<u64>,
    keepalives: u64,
}

impl<'a> Pin<'a> {
    /// The attack as `args` sizes it.
    pub fn new(args: &'a AttackArgs) -> Pin<'a> {
        Pin {
            args,
            pins: vec![None; args.attackers()],
            treatment: Treatment::default(),
            start: 0,
            bytes_written: 0,
            frames_done: 0,
            last_frame_done_at: None,
            keepalives: 0,
        }
    }
}

impl Plan for Pin<'_> {
    fn start(&mut self, arena: &mut Arena, now: u64) {
        self.start = now;
        for n in 0..self.pins.len() {
            match arena.connect("/echo", Role::Attacker(n), now) {
                Ok(_) => self.treatment.connected(),
                Err(e) => self.treatment.connect_failed(&e),
            }
        }
    }

    fn act(&mut self, arena: &mut Arena, now: u64) -> u64 {
        let keepalive_ns = secs_to_ns(self.args.keepalive_secs);
        let mut next = u64::MAX;
        for (slot, pinning) in self.pins.iter_mut().flatten() {
            if pinning.frame_written()
                && pinning.keepalive_left == 0
                && now >= pinning.next_keepalive
            {
                pinning.keepalive_left = EMPTY_CONTINUATION.len();
                pinning.next_keepalive = now + keepalive_ns;
                self.keepalives += 1;
            }
            let pending = !pinning.frame_written() || pinning.keepalive_left > 0;
            if pending && arena.can_pump(*slot) {
                let was_done = pinning.frame_written();
                self.bytes_written += arena.pump(*slot, pinning, self.args.turn_bytes, now) as u64;
                if !was_done && pinning.frame_written() {
                    self.frames_done += 1;
                    self.last_frame_done_at = Some(now);
                    pinning.next_keepalive = now + keepalive_ns;
                }
                if arena.can_pump(*slot) && !pinning.frame_written() {
                    next = now;
                }
            }
            next = next.min(pinning.next_keepalive);
        }
        next
    }

    fn on_open(&mut self, _arena: &mut Arena, slot: usize, role: Role, _now: u64) {
        if let Role::Attacker(n) = role {
            self.pins[n] = Some((slot, Pinning::new(self.args.pin_bytes)));
        }
    }

    fn on_message(&mut self, role: Role, message: Received<'_>, _now: u64) {
        if let Role::Attacker(_) = role {
            self.treatment.received(&message);
        }
    }

    fn on_end(&mut self, _arena: &mut Arena, ended: &Ended, _now: u64) {
        if let Role::Attacker(n) = ended.role {
            self.treatment.ended(ended);
            self.pins[n] = None;
        }
    }

    fn report(&self, arena: &Arena) -> Value {
        let open = arena.open_with(|r| matches!(r, Role::Attacker(_)));
        let pinned: u64 = self
            .pins
            .iter()
            .flatten()
            .filter(|(slot, _)| arena.is_open(*slot))
            .map(|(_, p)| self.args.pin_bytes - p.payload_left)
            .sum();
        json!({
            "announced_bytes": self.args.pin_bytes,
            "bytes_written": self.bytes_written,
            "frames_written_whole": self.frames_done,
            "all_written_at_s": self.last_frame_done_at
                .map(|at| round3(at.saturating_sub(self.start) as f64 / 1e9)),
            "keepalives": self.keepalives,
            "payload_bytes_on_open_connections_at_end": pinned,
            "attackers": self.treatment.to_json(open),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything a source gives, written in pieces of at most `step` bytes.
    fn written(source: &mut Pinning, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let chunk = source.chunk();
            if chunk.is_empty() {
                return out;
            }
            let n = chunk.len().min(step);
            out.extend_from_slice(&chunk[..n]);
            source.advance(n);
        }
    }

    #[test]
    fn the_pinned_frame_is_a_non_final_binary_frame_of_the_announced_size() {
        let mut pinning = Pinning::new(100_000);
        let bytes = written(&mut pinning, 7_777);
        assert!(pinning.frame_written());
        assert_eq!(bytes.len(), 14 + 100_000);
        assert_eq!(bytes[0], 0x02, "FIN clear, binary");
        assert_eq!(bytes[1], 0x80 | 127, "masked, 64-bit length");
        assert_eq!(
            u64::from_be_bytes(bytes[2..10].try_into().unwrap()),
            100_000
        );
        assert!(bytes[10..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_keepalive_is_one_whole_empty_continuation() {
        let mut pinning = Pinning::new(0);
        assert_eq!(written(&mut pinning, 3).len(), 14);
        pinning.keepalive_left = EMPTY_CONTINUATION.len();
        assert_eq!(written(&mut pinning, 4), EMPTY_CONTINUATION);
        assert_eq!(pinning.keepalive_left, 0);
    }
}
