//! Tokens whose signature already checked out, remembered until their `exp` so that a page that reconnects with
//! the same token costs a hash and a lookup instead of a public-key operation.
//!
//! Owns the entries, keyed by the SHA-256 of the token's text (the text itself is not kept), the order in which
//! they run out, and the bound on how many there are. It keeps only what [`super::Verifier::check_signature`]
//! returns, which no clock enters: the times are still compared at every use ([`super::Verifier::identity_at`]).
//! It must not read a clock (the caller passes the time) and never holds a refused token.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use sha2::{Digest, Sha256};

use super::SignedToken;

/// The SHA-256 of a token's text: what the cache is keyed by.
pub type TokenDigest = [u8; 32];

/// The key of `token` in a [`TokenCache`].
pub fn token_digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// At most `capacity` checked tokens, each until its `exp`.
#[derive(Debug, Default)]
pub struct TokenCache {
    capacity: usize,
    by_digest: HashMap<TokenDigest, SignedToken>,
    /// Every entry's `exp` once, soonest first: what runs out next, and what goes when the cache is full.
    ending: BinaryHeap<Reverse<(u64, TokenDigest)>>,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens; 0 keeps none.
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            capacity,
            by_digest: HashMap::new(),
            ending: BinaryHeap::new(),
        }
    }

    /// The most tokens it keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many tokens it keeps now.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// True when it keeps none.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The checked token with `digest`, unless it is not kept or its `exp` has passed at `now_unix_ms`.
    pub fn get(&mut self, digest: &TokenDigest, now_unix_ms: u64) -> Option<&SignedToken> {
        self.forget_ended(now_unix_ms);
        self.by_digest.get(digest)
    }

    /// Keeps `signed` under `digest` until its `exp`, making room by forgetting the entry that runs out soonest.
    /// Nothing is kept with a capacity of 0, or for a token whose `exp` has passed at `now_unix_ms`.
    pub fn insert(&mut self, digest: TokenDigest, signed: SignedToken, now_unix_ms: u64) {
        self.forget_ended(now_unix_ms);
        let exp = signed.exp_unix_ms();
        if self.capacity == 0 || exp <= now_unix_ms || self.by_digest.contains_key(&digest) {
            return;
        }
        if self.by_digest.len() >= self.capacity {
            if let Some(Reverse((_, soonest))) = self.ending.pop() {
                self.by_digest.remove(&soonest);
            }
        }
        self.by_digest.insert(digest, signed);
        self.ending.push(Reverse((exp, digest)));
    }

    /// Forgets the entries whose `exp` is at or before `now_unix_ms`.
    fn forget_ended(&mut self, now_unix_ms: u64) {
        while let Some(Reverse((exp, digest))) = self.ending.peek().copied() {
            if exp > now_unix_ms {
                return;
            }
            self.ending.pop();
            self.by_digest.remove(&digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{hs256, SECRET};
    use super::super::Verifier;
    use super::*;

    const NOW_S: u64 = 1_767_225_600;
    const NOW_MS: u64 = NOW_S * 1000;

    /// A checked token for `sub` whose `exp` is `exp_s` seconds after `NOW_S`, and its digest.
    fn signed(sub: &str, exp_s: u64) -> (TokenDigest, SignedToken) {
        let token = hs256(SECRET, &json!({"sub": sub, "exp": NOW_S + exp_s}));
        let signed = Verifier::hs256(SECRET)
            .expect("secret")
            .check_signature(&token)
            .expect("valid");
        (token_digest(&token), signed)
    }

    #[test]
    fn a_kept_token_is_found_by_the_digest_of_its_text() {
        let mut cache = TokenCache::new(4);
        let (digest, ann) = signed("ann", 60);
        cache.insert(digest, ann.clone(), NOW_MS);
        assert_eq!(cache.get(&digest, NOW_MS), Some(&ann));
        let (other, _) = signed("bob", 60);
        assert_eq!(cache.get(&other, NOW_MS), None);
    }

    #[test]
    fn a_token_is_forgotten_at_its_exp() {
        let mut cache = TokenCache::new(4);
        let (digest, ann) = signed("ann", 60);
        cache.insert(digest, ann, NOW_MS);
        assert!(cache.get(&digest, NOW_MS + 59_999).is_some());
        assert!(cache.get(&digest, NOW_MS + 60_000).is_none());
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_forgets_the_token_that_runs_out_soonest() {
        let mut cache = TokenCache::new(2);
        let (late, late_token) = signed("late", 600);
        let (soon, soon_token) = signed("soon", 60);
        let (new, new_token) = signed("new", 300);
        cache.insert(late, late_token, NOW_MS);
        cache.insert(soon, soon_token, NOW_MS);
        cache.insert(new, new_token, NOW_MS);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&soon, NOW_MS).is_none());
        assert!(cache.get(&late, NOW_MS).is_some());
        assert!(cache.get(&new, NOW_MS).is_some());
    }

    #[test]
    fn a_capacity_of_zero_keeps_nothing() {
        let mut cache = TokenCache::new(0);
        let (digest, ann) = signed("ann", 60);
        cache.insert(digest, ann, NOW_MS);
        assert!(cache.get(&digest, NOW_MS).is_none());
    }

    #[test]
    fn an_expired_token_is_not_kept_and_a_second_insert_keeps_one_entry() {
        let mut cache = TokenCache::new(4);
        let (digest, ann) = signed("ann", 60);
        cache.insert(digest, ann.clone(), NOW_MS + 60_000);
        assert!(cache.is_empty());
        cache.insert(digest, ann.clone(), NOW_MS);
        cache.insert(digest, ann, NOW_MS);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.ending.len(), 1);
    }
}
