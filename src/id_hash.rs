//! A fast hash for the ids this process hands out itself: connection keys and room ids.
//!
//! Maps keyed by them are touched for every chat message. Their keys are never chosen by a peer, so the flood
//! resistance of std's SipHash buys nothing there; a multiply-and-rotate per word (the Fx hash of rustc) does.
//! Maps keyed by anything a peer sends (names, room names) keep SipHash.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` keyed by process-assigned ids.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// The hasher of [`IdMap`].
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

impl IdHasher {
    /// An odd constant with well-spread bits: the multiplier of the Fx hash.
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.add(u64::from(byte));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    #[test]
    fn consecutive_ids_spread_over_the_buckets_hashbrown_reads() {
        // hashbrown takes the bucket from the low bits and a 7-bit tag from the top bits: both must vary.
        let build = BuildHasherDefault::<IdHasher>::default();
        let hashes: Vec<u64> = (0..1024usize).map(|id| build.hash_one(id)).collect();
        let low: HashSet<u64> = hashes.iter().map(|h| h & 1023).collect();
        let top: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(low.len() > 600, "{} distinct low-bit buckets", low.len());
        assert_eq!(top.len(), 128);
    }

    #[test]
    fn an_id_map_behaves_as_a_map() {
        let mut map: IdMap<usize, &str> = IdMap::default();
        for id in 0..10_000 {
            map.insert(id, "x");
        }
        map.remove(&5);
        assert_eq!(map.len(), 9_999);
        assert!(map.contains_key(&9_999) && !map.contains_key(&5));
    }
}
