//! The codec state an event loop shares between its connections: a compressor per window size for messages
//! compressed each on their own, and a few idle decompressors for messages that arrive compressed.
//!
//! Owns thread-local pools, so that a connection holds no codec state while it is idle (RFC 7692 without context
//! takeover needs none between messages) and a message costs no allocation of zlib state: a connection borrows a
//! decompressor while one message arrives and gives it back at its end. It must not be used for a connection that
//! keeps context between messages: that connection keeps its own codec.

use std::cell::RefCell;
use std::fmt;
use std::ops::{Deref, DerefMut};

use super::codec::MessageDecompressor;
use super::negotiate::MAX_WINDOW_BITS;
use super::quick::QuickCompressor;

/// Idle decompressors kept for reuse; beyond this many, one given back is dropped.
const SPARE_DECOMPRESSORS: usize = 8;

/// Memory one decompressor holds while a message arrives (zlib-rs's inflate state and its 32 KiB window), for a
/// caller that budgets the memory of unfinished messages.
pub const DECOMPRESSOR_BYTES: usize = 48 * 1024;

thread_local! {
    static COMPRESSORS: RefCell<[Option<QuickCompressor>; 8]> = const {
        RefCell::new([None, None, None, None, None, None, None, None])
    };
    static DECOMPRESSORS: RefCell<Vec<MessageDecompressor>> = const { RefCell::new(Vec::new()) };
}

/// Appends `payload` compressed on its own with a window of `2^window_bits` to `out` if that is shorter, with
/// this thread's compressor for that window, and returns its length; `None` leaves `out` untouched.
pub fn compress_alone(payload: &[u8], window_bits: u8, out: &mut Vec<u8>) -> Option<usize> {
    let bits = window_bits.clamp(8, MAX_WINDOW_BITS);
    COMPRESSORS.with(|compressors| {
        let mut compressors = compressors.borrow_mut();
        let slot = &mut compressors[usize::from(bits - 8)];
        slot.get_or_insert_with(|| QuickCompressor::new(bits))
            .compress_if_smaller(payload, out)
    })
}

/// A decompressor lent by this thread's pool for one message that does not keep context: it goes back to the pool
/// when dropped, whether its message finished or was abandoned (a failure, a peer gone mid-message).
pub struct LentDecompressor(Option<MessageDecompressor>);

impl LentDecompressor {
    /// An idle decompressor of this thread's, or a new one, for a message of at most `max_message_len` bytes
    /// inflated.
    pub fn borrow(max_message_len: usize) -> LentDecompressor {
        let spare = DECOMPRESSORS.with(|pool| pool.borrow_mut().pop());
        let decompressor = match spare {
            Some(mut decompressor) => {
                decompressor.set_max_message_len(max_message_len);
                decompressor
            }
            None => MessageDecompressor::new(true, max_message_len),
        };
        LentDecompressor(Some(decompressor))
    }
}

impl Deref for LentDecompressor {
    type Target = MessageDecompressor;

    fn deref(&self) -> &MessageDecompressor {
        self.0.as_ref().expect("lent until dropped")
    }
}

impl DerefMut for LentDecompressor {
    fn deref_mut(&mut self) -> &mut MessageDecompressor {
        self.0.as_mut().expect("lent until dropped")
    }
}

impl Drop for LentDecompressor {
    fn drop(&mut self) {
        let Some(mut decompressor) = self.0.take() else {
            return;
        };
        decompressor.reset();
        // A thread being torn down has no pool left to give back to; the decompressor is simply freed.
        let _ = DECOMPRESSORS.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < SPARE_DECOMPRESSORS {
                pool.push(decompressor);
            }
        });
    }
}

impl fmt::Debug for LentDecompressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LentDecompressor").field(&self.0).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spare_decompressors() -> usize {
        DECOMPRESSORS.with(|pool| pool.borrow().len())
    }

    #[test]
    fn a_decompressor_dropped_goes_back_to_the_pool_and_is_reused_clean() {
        let mut first = LentDecompressor::borrow(1 << 20);
        let mut out = Vec::new();
        // An unfinished message: a stored block header and part of its bytes.
        let _ = first.feed(&[0x00, 0x05, 0x00, 0xfa, 0xff, b'h'], &mut out, usize::MAX);
        let spare = spare_decompressors();
        drop(first);
        assert_eq!(spare_decompressors(), spare + 1, "given back");
        let mut second = LentDecompressor::borrow(10);
        assert_eq!(spare_decompressors(), spare, "reused");
        let mut out = Vec::new();
        let mut compressed = Vec::new();
        compress_alone(&b"hello hello hello hello".repeat(3), 15, &mut compressed).unwrap();
        assert!(
            second.decompress_message(&compressed, &mut out).is_err(),
            "the new limit applies"
        );
        drop(second);
        let mut third = LentDecompressor::borrow(1 << 20);
        let mut out = Vec::new();
        third.decompress_message(&compressed, &mut out).unwrap();
        assert_eq!(out, b"hello hello hello hello".repeat(3));
    }
}
