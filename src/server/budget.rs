//! What one WebSocket may make the server read: frames per second and bytes per second, each a token bucket.
//!
//! Owns the arithmetic of [`InputAllowance`], a pure type over the loop's milliseconds: every frame counts (control
//! frames and empty continuations included, since they cost the server as much work as any other), and every byte
//! read. It must not read a clock or decide what happens to a connection over its allowance: the loop fails it.

use super::timeouts::Millis;

/// Token buckets hold this many seconds' worth of their rate: the burst a quiet connection may send at once.
const BURST_SECONDS: f32 = 2.0;

/// The limits, per second; 0 turns a limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputLimits {
    /// Frames per second.
    pub frames_per_sec: u32,
    /// Bytes per second.
    pub bytes_per_sec: u32,
}

/// What a connection went over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overdrawn {
    /// More frames than its allowance.
    Frames,
    /// More bytes than its allowance.
    Bytes,
}

/// One connection's input allowance: two token buckets refilled at the limits' rates. 12 bytes.
#[derive(Clone, Copy, Debug)]
pub struct InputAllowance {
    frames: f32,
    bytes: f32,
    /// The low 32 bits of the last refill's point (see `timeouts::Stamp`: only differences are used, and a
    /// connection quiet for 49 days has full buckets anyway).
    last: u32,
}

impl InputAllowance {
    /// Full buckets at `now`.
    pub fn full(limits: &InputLimits, now: Millis) -> InputAllowance {
        InputAllowance {
            frames: limits.frames_per_sec as f32 * BURST_SECONDS,
            bytes: limits.bytes_per_sec as f32 * BURST_SECONDS,
            last: now.0 as u32,
        }
    }

    /// Charges `frames` frames and `bytes` bytes read at `now`; an error names the allowance they overdrew.
    #[cfg(test)]
    fn charge(
        &mut self,
        limits: &InputLimits,
        frames: u32,
        bytes: usize,
        now: Millis,
    ) -> Result<(), Overdrawn> {
        self.refill(limits, now);
        self.spend(limits, frames, bytes)
    }

    /// Adds what the time since the last refill earned, up to the burst.
    pub fn refill(&mut self, limits: &InputLimits, now: Millis) {
        let elapsed_ms = (now.0 as u32).wrapping_sub(self.last);
        self.last = now.0 as u32;
        let seconds = (elapsed_ms as f32 / 1000.0).min(BURST_SECONDS);
        let refill = |tokens: &mut f32, rate: u32| {
            let cap = rate as f32 * BURST_SECONDS;
            *tokens = (*tokens + rate as f32 * seconds).min(cap);
        };
        refill(&mut self.frames, limits.frames_per_sec);
        refill(&mut self.bytes, limits.bytes_per_sec);
    }

    /// How many more frames may be read now (`u32::MAX` without a frame limit).
    pub fn frames_left(&self, limits: &InputLimits) -> u32 {
        if limits.frames_per_sec == 0 {
            return u32::MAX;
        }
        self.frames.max(0.0) as u32
    }

    /// How many more bytes may be read now (`usize::MAX` without a byte limit).
    pub fn bytes_left(&self, limits: &InputLimits) -> usize {
        if limits.bytes_per_sec == 0 {
            return usize::MAX;
        }
        self.bytes.max(0.0) as usize
    }

    /// True if `bytes` more may be read now.
    pub fn has_bytes_for(&self, limits: &InputLimits, bytes: usize) -> bool {
        limits.bytes_per_sec == 0 || self.bytes >= bytes as f32
    }

    /// Spends `frames` frames and `bytes` bytes, refilled already; an error names the allowance they overdrew.
    pub fn spend(
        &mut self,
        limits: &InputLimits,
        frames: u32,
        bytes: usize,
    ) -> Result<(), Overdrawn> {
        if limits.frames_per_sec > 0 {
            self.frames -= frames as f32;
            if self.frames < 0.0 {
                return Err(Overdrawn::Frames);
            }
        }
        if limits.bytes_per_sec > 0 {
            self.bytes -= bytes as f32;
            if self.bytes < 0.0 {
                return Err(Overdrawn::Bytes);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: InputLimits = InputLimits {
        frames_per_sec: 100,
        bytes_per_sec: 1000,
    };

    #[test]
    fn a_quiet_connection_may_send_two_seconds_worth_at_once() {
        let mut allowance = InputAllowance::full(&LIMITS, Millis(0));
        assert_eq!(allowance.charge(&LIMITS, 200, 2000, Millis(0)), Ok(()));
        assert_eq!(
            allowance.charge(&LIMITS, 1, 0, Millis(0)),
            Err(Overdrawn::Frames)
        );
    }

    #[test]
    fn the_allowance_refills_at_the_rate() {
        let mut allowance = InputAllowance::full(&LIMITS, Millis(0));
        allowance.charge(&LIMITS, 200, 0, Millis(0)).unwrap();
        assert_eq!(allowance.charge(&LIMITS, 50, 0, Millis(500)), Ok(()));
        assert_eq!(
            allowance.charge(&LIMITS, 1, 0, Millis(500)),
            Err(Overdrawn::Frames)
        );
    }

    #[test]
    fn bytes_are_limited_on_their_own() {
        let mut allowance = InputAllowance::full(&LIMITS, Millis(0));
        assert_eq!(
            allowance.charge(&LIMITS, 1, 2001, Millis(0)),
            Err(Overdrawn::Bytes)
        );
    }

    #[test]
    fn what_is_left_is_what_may_still_be_read() {
        let mut allowance = InputAllowance::full(&LIMITS, Millis(0));
        assert_eq!(allowance.frames_left(&LIMITS), 200);
        assert!(allowance.has_bytes_for(&LIMITS, 2000));
        allowance.spend(&LIMITS, 150, 1500).unwrap();
        assert_eq!(allowance.frames_left(&LIMITS), 50);
        assert!(!allowance.has_bytes_for(&LIMITS, 501));
        allowance.refill(&LIMITS, Millis(100));
        assert_eq!(allowance.frames_left(&LIMITS), 60);
        let off = InputLimits {
            frames_per_sec: 0,
            bytes_per_sec: 0,
        };
        assert_eq!(allowance.frames_left(&off), u32::MAX);
    }

    #[test]
    fn a_zero_limit_is_no_limit() {
        let off = InputLimits {
            frames_per_sec: 0,
            bytes_per_sec: 0,
        };
        let mut allowance = InputAllowance::full(&off, Millis(0));
        assert_eq!(
            allowance.charge(&off, u32::MAX, usize::MAX, Millis(0)),
            Ok(())
        );
    }

    #[test]
    fn a_long_quiet_refills_no_more_than_the_burst() {
        let mut allowance = InputAllowance::full(&LIMITS, Millis(0));
        allowance.charge(&LIMITS, 200, 0, Millis(0)).unwrap();
        assert_eq!(allowance.charge(&LIMITS, 200, 0, Millis(3_600_000)), Ok(()));
        assert_eq!(
            allowance.charge(&LIMITS, 1, 0, Millis(3_600_000)),
            Err(Overdrawn::Frames)
        );
    }
}
