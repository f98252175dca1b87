//! The token buckets the chat charges: every incoming text frame (and every `join`) against its connection's
//! frame bucket, and the bytes of every chat message against its sender's and its room's byte buckets.
//!
//! Owns the arithmetic of refilling, spending and counting drops. It must not read a clock (the caller passes
//! monotonic milliseconds) nor decide what to send: it only returns a [`Verdict`] or whether bytes fit.

/// What to do with the frame just charged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// A token was spent: handle the frame.
    Pass,
    /// No token: drop the frame and say so.
    Drop,
    /// No token, and more than the allowed number of frames were dropped since the bucket last had one.
    Abuse,
}

/// A token bucket holding at most `burst` tokens and refilling at `rate` tokens a second. 16 bytes: every
/// connection keeps two, and the frame bucket's count of drops is kept beside it by the caller.
#[derive(Clone, Debug)]
pub(super) struct TokenBucket {
    tokens: f64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket, as of `now_ms`.
    pub(super) fn new(burst: u32, now_ms: u64) -> Self {
        TokenBucket {
            tokens: f64::from(burst),
            last_ms: now_ms,
        }
    }

    /// Refill for the time since the last charge, then spend one token if there is one.
    ///
    /// A clock that steps backwards refills nothing. A rate that is not a positive finite number never refills.
    pub(super) fn take(&mut self, now_ms: u64, rate_per_sec: f64, burst: u32) -> bool {
        let elapsed_ms = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        if rate_per_sec.is_finite() && rate_per_sec > 0.0 {
            let refill = elapsed_ms as f64 * rate_per_sec / 1000.0;
            self.tokens = (self.tokens + refill).min(f64::from(burst));
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return true;
        }
        false
    }

    /// [`TokenBucket::take`] for a frame, with `drops` the frames dropped in a row before it (reset by a token):
    /// more than `abuse_drops` of them is abuse.
    pub(super) fn charge(
        &mut self,
        drops: &mut u32,
        now_ms: u64,
        rate_per_sec: f64,
        burst: u32,
        abuse_drops: u32,
    ) -> Verdict {
        if self.take(now_ms, rate_per_sec, burst) {
            *drops = 0;
            return Verdict::Pass;
        }
        *drops = drops.saturating_add(1);
        if *drops > abuse_drops {
            Verdict::Abuse
        } else {
            Verdict::Drop
        }
    }
}

/// A token bucket of bytes: `rate` bytes a second, at most `burst` at once; a rate of 0 is no limit.
#[derive(Clone, Debug)]
pub(super) struct ByteBucket {
    tokens: f64,
    last_ms: u64,
}

impl ByteBucket {
    /// A full bucket, as of `now_ms`.
    pub(super) fn new(burst: u32, now_ms: u64) -> Self {
        ByteBucket {
            tokens: f64::from(burst),
            last_ms: now_ms,
        }
    }

    /// True if `bytes` would fit at `now_ms`; nothing is taken or refilled.
    pub(super) fn has(&self, now_ms: u64, rate: f64, burst: u32, bytes: usize) -> bool {
        if !(rate.is_finite() && rate > 0.0) {
            return true;
        }
        let elapsed_ms = now_ms.saturating_sub(self.last_ms);
        let tokens = (self.tokens + elapsed_ms as f64 * rate / 1000.0).min(f64::from(burst));
        tokens >= bytes as f64
    }

    /// Refills for the time since the last call, then takes `bytes` if they fit; false (and nothing taken) if not.
    pub(super) fn take(&mut self, now_ms: u64, rate: f64, burst: u32, bytes: usize) -> bool {
        if !(rate.is_finite() && rate > 0.0) {
            return true;
        }
        let elapsed_ms = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed_ms as f64 * rate / 1000.0).min(f64::from(burst));
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame bucket and its count of drops in a row.
    struct Frames {
        bucket: TokenBucket,
        drops: u32,
    }

    impl Frames {
        fn new(burst: u32, now_ms: u64) -> Self {
            Frames {
                bucket: TokenBucket::new(burst, now_ms),
                drops: 0,
            }
        }

        fn charge(
            &mut self,
            now_ms: u64,
            rate_per_sec: f64,
            burst: u32,
            abuse_drops: u32,
        ) -> Verdict {
            self.bucket
                .charge(&mut self.drops, now_ms, rate_per_sec, burst, abuse_drops)
        }
    }

    fn drain(bucket: &mut Frames, now_ms: u64, n: u32) -> Vec<Verdict> {
        (0..n)
            .map(|_| bucket.charge(now_ms, 20.0, 40, 100))
            .collect()
    }

    #[test]
    fn full_bucket_passes_exactly_the_burst() {
        let mut bucket = Frames::new(40, 0);
        assert!(drain(&mut bucket, 0, 40)
            .iter()
            .all(|v| *v == Verdict::Pass));
        assert_eq!(bucket.charge(0, 20.0, 40, 100), Verdict::Drop);
    }

    #[test]
    fn refills_at_the_rate() {
        let mut bucket = Frames::new(40, 0);
        drain(&mut bucket, 0, 40);
        assert_eq!(bucket.charge(40, 20.0, 40, 100), Verdict::Drop);
        let second = drain(&mut bucket, 1_000, 21);
        assert_eq!(second.iter().filter(|v| **v == Verdict::Pass).count(), 20);
        assert_eq!(second.last(), Some(&Verdict::Drop));
    }

    #[test]
    fn refill_is_capped_at_the_burst() {
        let mut bucket = Frames::new(40, 0);
        drain(&mut bucket, 0, 40);
        let later = drain(&mut bucket, 3_600_000, 41);
        assert_eq!(later.iter().filter(|v| **v == Verdict::Pass).count(), 40);
    }

    #[test]
    fn abuse_after_more_than_the_allowed_drops() {
        let mut bucket = Frames::new(40, 0);
        drain(&mut bucket, 0, 40);
        assert!(drain(&mut bucket, 0, 100)
            .iter()
            .all(|v| *v == Verdict::Drop));
        assert_eq!(bucket.charge(0, 20.0, 40, 100), Verdict::Abuse);
    }

    #[test]
    fn a_token_resets_the_drop_count() {
        let mut bucket = Frames::new(40, 0);
        drain(&mut bucket, 0, 40 + 100);
        assert_eq!(bucket.charge(50, 20.0, 40, 100), Verdict::Pass);
        assert!(drain(&mut bucket, 50, 100)
            .iter()
            .all(|v| *v == Verdict::Drop));
    }

    #[test]
    fn take_spends_one_token_and_refuses_when_empty() {
        let mut bucket = TokenBucket::new(2, 0);
        assert!(bucket.take(0, 1.0, 2));
        assert!(bucket.take(0, 1.0, 2));
        assert!(!bucket.take(999, 1.0, 2));
        assert!(bucket.take(1_000, 1.0, 2), "one token a second");
    }

    #[test]
    fn bytes_beyond_the_burst_wait_for_the_rate_and_are_not_taken() {
        let mut bucket = ByteBucket::new(1_000, 0);
        assert!(bucket.take(0, 100.0, 1_000, 600));
        assert!(!bucket.take(0, 100.0, 1_000, 600), "400 left");
        assert!(bucket.take(0, 100.0, 1_000, 400), "a refusal took nothing");
        assert!(
            !bucket.take(500, 100.0, 1_000, 100),
            "50 refilled in half a second"
        );
        assert!(bucket.take(1_000, 100.0, 1_000, 100));
    }

    #[test]
    fn asking_whether_bytes_fit_takes_nothing_and_sees_the_refill() {
        let mut bucket = ByteBucket::new(1_000, 0);
        assert!(bucket.take(0, 100.0, 1_000, 900));
        assert!(!bucket.has(0, 100.0, 1_000, 200));
        assert!(
            bucket.has(1_000, 100.0, 1_000, 200),
            "100 refilled in a second"
        );
        assert!(bucket.has(0, 100.0, 1_000, 100), "asking took nothing");
        assert!(bucket.take(0, 100.0, 1_000, 100));
    }

    #[test]
    fn a_zero_byte_rate_is_no_limit() {
        let mut bucket = ByteBucket::new(0, 0);
        assert!(bucket.take(0, 0.0, 0, usize::MAX));
    }

    #[test]
    fn clock_stepping_back_refills_nothing() {
        let mut bucket = Frames::new(1, 1_000);
        assert_eq!(bucket.charge(1_000, 20.0, 1, 100), Verdict::Pass);
        assert_eq!(bucket.charge(0, 20.0, 1, 100), Verdict::Drop);
        assert_eq!(bucket.charge(1_049, 20.0, 1, 100), Verdict::Drop);
        assert_eq!(bucket.charge(1_050, 20.0, 1, 100), Verdict::Pass);
    }
}
