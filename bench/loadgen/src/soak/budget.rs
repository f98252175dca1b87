//! An innocent's own sending budget: token buckets for messages and content bytes, kept well under the server's
//! limits so that nothing an innocent sends is ever rate-limited.
//!
//! Owns the arithmetic only: time comes in as generator-clock nanoseconds, and it must not send anything.

/// A token bucket refilling at `rate` per second up to `burst`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last_ns: u64,
}

impl Bucket {
    fn new(rate: f64, burst: f64, now_ns: u64) -> Bucket {
        Bucket {
            tokens: burst,
            rate,
            burst,
            last_ns: now_ns,
        }
    }

    fn refill(&mut self, now_ns: u64) {
        let elapsed = now_ns.saturating_sub(self.last_ns) as f64 / 1e9;
        self.last_ns = self.last_ns.max(now_ns);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }
}

/// What an innocent may still send: messages (every text frame, `join` included) and content bytes.
#[derive(Clone, Copy, Debug)]
pub struct SendBudget {
    messages: Bucket,
    bytes: Bucket,
}

impl SendBudget {
    /// A full budget of `message_rate` frames/s and `byte_rate` content bytes/s, each with a burst of two
    /// seconds' worth, as of `now_ns`.
    pub fn new(message_rate: f64, byte_rate: f64, now_ns: u64) -> SendBudget {
        SendBudget {
            messages: Bucket::new(message_rate, 2.0 * message_rate, now_ns),
            bytes: Bucket::new(byte_rate, 2.0 * byte_rate, now_ns),
        }
    }

    /// Spends one message of `bytes` content bytes if both buckets hold enough; false (and nothing spent) if not.
    pub fn try_spend(&mut self, now_ns: u64, bytes: usize) -> bool {
        self.messages.refill(now_ns);
        self.bytes.refill(now_ns);
        if self.messages.tokens < 1.0 || self.bytes.tokens < bytes as f64 {
            return false;
        }
        self.messages.tokens -= 1.0;
        self.bytes.tokens -= bytes as f64;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_full_budget_allows_the_burst_then_refuses() {
        let mut budget = SendBudget::new(10.0, 1e9, 0);
        assert!((0..20).all(|_| budget.try_spend(0, 100)));
        assert!(!budget.try_spend(0, 100));
    }

    #[test]
    fn messages_come_back_at_the_rate() {
        let mut budget = SendBudget::new(10.0, 1e9, 0);
        while budget.try_spend(0, 1) {}
        assert!(!budget.try_spend(SECOND / 20, 1));
        assert!(budget.try_spend(SECOND / 10, 1));
        assert!(!budget.try_spend(SECOND / 10, 1));
    }

    #[test]
    fn content_bytes_are_limited_too() {
        let mut budget = SendBudget::new(1000.0, 1000.0, 0);
        assert!(budget.try_spend(0, 1500));
        assert!(!budget.try_spend(0, 600));
        assert!(budget.try_spend(0, 500));
        assert!(budget.try_spend(SECOND, 1000));
    }
}
