//! RFC 6455 section 5.3 client-to-server masking: the XOR transform and where a client's keys come from.
//!
//! Owns the transform, which works a machine word at a time and knows nothing of frames (callers give it the key
//! and how far into the payload the slice starts), and [`MaskKeys`], the source of fresh keys. It must not decide
//! which frames are masked: that is the connection's role (5.1).

use std::cell::RefCell;
use std::num::NonZeroU64;

/// XORs `data` with the 4-byte masking `key`, as if `data` started `offset` bytes into a masked payload.
///
/// Masking and unmasking are the same operation (5.3: "the same algorithm applies regardless of the direction").
///
/// ```
/// use roomcast::protocol::mask::apply_mask;
///
/// // RFC 6455 5.7: "Hello" masked with the key 37 fa 21 3d. Byte i is XORed with key[i % 4] (5.3).
/// let key = [0x37, 0xfa, 0x21, 0x3d];
/// let mut payload = *b"Hello";
/// apply_mask(&mut payload, key, 0);
/// assert_eq!(payload, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
/// // The same call unmasks, also piece by piece: `offset` says how far into the payload a piece starts.
/// let (he, llo) = payload.split_at_mut(2);
/// apply_mask(he, key, 0);
/// apply_mask(llo, key, 2);
/// assert_eq!(&payload, b"Hello");
/// ```
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    // Rotate the key so that key[0] lines up with data[0].
    let key = rotate_key(key, offset);
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut words = data.chunks_exact_mut(8);
    for chunk in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

/// The key as seen from `offset` bytes into the payload.
fn rotate_key(key: [u8; 4], offset: usize) -> [u8; 4] {
    let shift = offset % 4;
    [
        key[shift],
        key[(shift + 1) % 4],
        key[(shift + 2) % 4],
        key[(shift + 3) % 4],
    ]
}

/// Where a client's masking keys come from.
///
/// 5.3 and 10.3: each frame gets a fresh key that the application (and so a script in a browser page) cannot
/// predict; a predictable key would let the page shape the bytes an intermediary sees. [`MaskKeys::Strong`] draws
/// them from the operating system's random generator. [`MaskKeys::Predictable`] is a fast generator for load
/// generators and tests that talk to their own servers, and must not be used by a client that runs other
/// people's code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskKeys {
    /// Keys from the operating system's cryptographic random generator (`getrandom`), read 256 bytes at a time.
    Strong,
    /// Keys from xorshift64* seeded by the caller: fast and well spread, and anyone who knows the seed knows them.
    Predictable(NonZeroU64),
}

impl MaskKeys {
    /// A predictable source from `seed` (zero is replaced by a fixed non-zero value).
    pub fn predictable(seed: u64) -> MaskKeys {
        MaskKeys::Predictable(NonZeroU64::new(seed).unwrap_or(NonZeroU64::MIN))
    }

    /// The key for the next frame.
    pub fn next_key(&mut self) -> [u8; 4] {
        match self {
            MaskKeys::Strong => STRONG_KEYS.with(|pool| pool.borrow_mut().next_key()),
            MaskKeys::Predictable(state) => xorshift_key(state),
        }
    }
}

/// Random bytes read from the operating system ahead of use, so a key costs a copy rather than a system call.
struct EntropyPool {
    bytes: [u8; 256],
    used: usize,
}

impl EntropyPool {
    /// The next four unused bytes of operating-system entropy: a fresh, unpredictable key (5.3, 10.3).
    fn next_key(&mut self) -> [u8; 4] {
        if self.used + 4 > self.bytes.len() {
            fill_random(&mut self.bytes);
            self.used = 0;
        }
        let mut key = [0u8; 4];
        key.copy_from_slice(&self.bytes[self.used..self.used + 4]);
        self.used += 4;
        key
    }
}

thread_local! {
    static STRONG_KEYS: RefCell<EntropyPool> = const {
        RefCell::new(EntropyPool { bytes: [0; 256], used: 256 })
    };
}

/// Fills `bytes` from the operating system's random generator. Should that ever fail, the bytes come from std's
/// randomly keyed SipHash over a counter and the clock: still unknown to a page, though not a cryptographic
/// generator. The one source of randomness of the crate: masking keys, handshake nonces, the server's secret.
pub fn fill_random(bytes: &mut [u8]) {
    if getrandom::fill(bytes).is_ok() {
        return;
    }
    use std::hash::{BuildHasher, Hasher};
    let keys = std::collections::hash_map::RandomState::new();
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let mut hasher = keys.build_hasher();
        hasher.write_usize(i);
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let word = hasher.finish().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// xorshift64*: a non-zero state stays non-zero. Predictable from its seed, so not the strong source of entropy 5.3
/// asks for: only [`MaskKeys::Predictable`] uses it.
fn xorshift_key(state: &mut NonZeroU64) -> [u8; 4] {
    let mut x = state.get();
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = NonZeroU64::new(x).unwrap_or(NonZeroU64::MIN);
    let word = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
    let bytes = word.to_be_bytes();
    [bytes[0], bytes[1], bytes[2], bytes[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_bytewise(data: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= key[(offset + i) % 4];
        }
    }

    #[test]
    fn rfc_example_hello_unmasks() {
        // RFC 6455 5.7: a masked "Hello" with key 37 fa 21 3d.
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }

    #[test]
    fn wordwise_matches_bytewise_for_every_length_and_offset() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        for len in 0..40 {
            for offset in 0..8 {
                let original: Vec<u8> = (0..len as u8).collect();
                let mut fast = original.clone();
                let mut slow = original.clone();
                apply_mask(&mut fast, key, offset);
                mask_bytewise(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn masking_in_pieces_equals_masking_whole() {
        let key = [1, 2, 3, 4];
        let mut whole: Vec<u8> = (0..100).collect();
        let mut pieces = whole.clone();
        apply_mask(&mut whole, key, 0);
        let (a, b) = pieces.split_at_mut(37);
        apply_mask(a, key, 0);
        apply_mask(b, key, 37);
        assert_eq!(whole, pieces);
    }

    #[test]
    fn strong_keys_differ_from_frame_to_frame_and_across_refills() {
        let mut keys = MaskKeys::Strong;
        let drawn: Vec<[u8; 4]> = (0..200).map(|_| keys.next_key()).collect();
        let distinct: std::collections::HashSet<_> = drawn.iter().collect();
        // 200 draws of 32 random bits: a repeat has odds of about 5 in a million.
        assert!(distinct.len() >= 199, "{} distinct keys", distinct.len());
    }

    #[test]
    fn predictable_keys_repeat_for_the_same_seed() {
        let mut a = MaskKeys::predictable(42);
        let mut b = MaskKeys::predictable(42);
        for _ in 0..10 {
            assert_eq!(a.next_key(), b.next_key());
        }
        assert_ne!(MaskKeys::predictable(0).next_key(), [0; 4]);
    }
}
