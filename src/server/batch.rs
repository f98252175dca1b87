//! Turn batches: the frames broadcast to one audience during a loop turn, laid end to end in one buffer that every
//! recipient's write queue slices. A member owed k broadcasts in a turn is sent them as one iovec from one queue
//! entry instead of k, and a broadcast frame costs no allocation of its own.
//!
//! Owns the open buffers (one per audience: a room and the form its members read), their sealing into shared
//! `Rc<[u8]>` before anything is written, and the ids that queue entries name batches by until then. It knows
//! nothing of members or sockets: `WriteQueue` turns a [`Span`] into bytes through [`Batches::sealed`].

use std::hash::Hash;
use std::rc::Rc;

use crate::id_hash::IdMap;

/// A batch grows no further than this: the next frame for its audience starts a new one. Bounds the buffers kept
/// for reuse; a single larger frame still gets a batch of its own.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// How many emptied buffers are kept for the next turn, and the largest capacity worth keeping.
const SPARE_BUFFERS: usize = 32;
const SPARE_CAPACITY: usize = 64 * 1024;

/// Names a batch. Valid only during the turn that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchId {
    turn: u32,
    index: u32,
}

/// Where one appended frame lies in its batch. Offsets are `u32` to keep queue entries small: a batch starts
/// below `MAX_BATCH_BYTES` and a broadcast frame is bounded by the chat's message size limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The batch holding the frame.
    pub batch: BatchId,
    /// Offset of the frame's first byte.
    pub start: u32,
    /// Offset just past its last byte.
    pub end: u32,
}

impl Span {
    /// Bytes in the span.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }
}

/// The broadcast frames of one loop turn, grouped by audience.
#[derive(Debug)]
pub struct Batches<K> {
    turn: u32,
    /// Every batch of this turn by index: `None` while it is still open.
    sealed: Vec<Option<Rc<[u8]>>>,
    /// The open batch of each audience: its index and its bytes so far.
    open: IdMap<K, (u32, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
}

impl<K: Hash + Eq> Default for Batches<K> {
    fn default() -> Self {
        Batches {
            turn: 0,
            sealed: Vec::new(),
            open: IdMap::default(),
            spare: Vec::new(),
        }
    }
}

impl<K: Hash + Eq> Batches<K> {
    /// Appends one frame for `audience`, written into the batch by `encode`, and returns where it lies; `None`
    /// (and nothing appended) for a frame too large for `u32` offsets, over 4 GiB.
    pub fn append(&mut self, audience: K, encode: impl FnOnce(&mut Vec<u8>)) -> Option<Span> {
        self.append_if(audience, |bytes| {
            encode(bytes);
            true
        })
    }

    /// Like `append`, for an `encode` that may decline (return false): then nothing is appended and the answer is
    /// `None`.
    pub fn append_if(
        &mut self,
        audience: K,
        encode: impl FnOnce(&mut Vec<u8>) -> bool,
    ) -> Option<Span> {
        let Batches {
            sealed,
            open,
            spare,
            turn,
        } = self;
        let (index, bytes) = open.entry(audience).or_insert_with(|| {
            let index = new_index(sealed);
            (index, spare.pop().unwrap_or_default())
        });
        if bytes.len() >= MAX_BATCH_BYTES {
            seal_into(sealed, *index, bytes);
            bytes.clear();
            *index = new_index(sealed);
        }
        let start = bytes.len();
        if !encode(bytes) {
            bytes.truncate(start);
            return None;
        }
        let offsets =
            u32::try_from(start).and_then(|start| Ok((start, u32::try_from(bytes.len())?)));
        let Ok((start, end)) = offsets else {
            bytes.truncate(start);
            return None;
        };
        Some(Span {
            batch: BatchId {
                turn: *turn,
                index: *index,
            },
            start,
            end,
        })
    }

    /// Closes every open batch to further frames and makes its bytes shareable. Cheap when nothing is open; call
    /// it before writing anything that may hold a [`Span`].
    pub fn seal(&mut self) {
        for (_, (index, bytes)) in self.open.drain() {
            seal_into(&mut self.sealed, index, &bytes);
            recycle(&mut self.spare, bytes);
        }
    }

    /// The bytes of a sealed batch of this turn; `None` for an open batch or one of an earlier turn.
    pub fn sealed(&self, batch: BatchId) -> Option<&Rc<[u8]>> {
        if batch.turn != self.turn {
            return None;
        }
        self.sealed.get(batch.index as usize)?.as_ref()
    }

    /// Ends the turn: batches are dropped here (queues that took a slice keep their own reference) and every id
    /// handed out so far stops resolving.
    pub fn end_turn(&mut self) {
        for (_, (_, bytes)) in self.open.drain() {
            recycle(&mut self.spare, bytes);
        }
        self.sealed.clear();
        self.turn = self.turn.wrapping_add(1);
    }
}

fn new_index(sealed: &mut Vec<Option<Rc<[u8]>>>) -> u32 {
    sealed.push(None);
    // A turn opens a batch per audience and per 256 KiB broadcast: far from 2^32 of them.
    u32::try_from(sealed.len() - 1).unwrap_or(u32::MAX)
}

fn seal_into(sealed: &mut [Option<Rc<[u8]>>], index: u32, bytes: &[u8]) {
    if let Some(slot) = sealed.get_mut(index as usize) {
        *slot = Some(Rc::from(bytes));
    }
}

fn recycle(spare: &mut Vec<Vec<u8>>, mut bytes: Vec<u8>) {
    if spare.len() < SPARE_BUFFERS && bytes.capacity() <= SPARE_CAPACITY {
        bytes.clear();
        spare.push(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(bytes: &[u8]) -> impl FnOnce(&mut Vec<u8>) + '_ {
        move |out| out.extend_from_slice(bytes)
    }

    #[test]
    fn frames_for_one_audience_lie_end_to_end_in_one_batch() {
        let mut batches = Batches::default();
        let a = batches.append("room", push(b"one")).unwrap();
        let b = batches.append("room", push(b"two!")).unwrap();
        assert_eq!(a.batch, b.batch);
        assert_eq!((a.start, a.end, b.start, b.end), (0, 3, 3, 7));
        batches.seal();
        assert_eq!(&batches.sealed(a.batch).unwrap()[..], b"onetwo!");
    }

    #[test]
    fn a_declined_frame_appends_nothing_and_the_next_one_follows_the_last() {
        let mut batches = Batches::default();
        let a = batches.append("room", push(b"one")).unwrap();
        let declined = batches.append_if("room", |out| {
            out.extend_from_slice(b"partial");
            false
        });
        assert_eq!(declined, None);
        let b = batches.append("room", push(b"two")).unwrap();
        assert_eq!((a.end, b.start), (3, 3));
        batches.seal();
        assert_eq!(&batches.sealed(a.batch).unwrap()[..], b"onetwo");
    }

    #[test]
    fn audiences_get_separate_batches() {
        let mut batches = Batches::default();
        let a = batches.append(1, push(b"aa")).unwrap();
        let b = batches.append(2, push(b"b")).unwrap();
        assert_ne!(a.batch, b.batch);
        batches.seal();
        assert_eq!(&batches.sealed(a.batch).unwrap()[..], b"aa");
        assert_eq!(&batches.sealed(b.batch).unwrap()[..], b"b");
    }

    #[test]
    fn an_open_batch_does_not_resolve_until_sealed() {
        let mut batches = Batches::default();
        let a = batches.append("room", push(b"x")).unwrap();
        assert!(batches.sealed(a.batch).is_none());
        batches.seal();
        assert!(batches.sealed(a.batch).is_some());
    }

    #[test]
    fn frames_after_a_seal_start_a_new_batch() {
        let mut batches = Batches::default();
        let a = batches.append("room", push(b"before")).unwrap();
        batches.seal();
        let b = batches.append("room", push(b"after")).unwrap();
        assert_ne!(a.batch, b.batch);
        assert_eq!(b.start, 0);
        batches.seal();
        assert_eq!(&batches.sealed(a.batch).unwrap()[..], b"before");
        assert_eq!(&batches.sealed(b.batch).unwrap()[..], b"after");
    }

    #[test]
    fn a_full_batch_is_sealed_and_the_next_frame_starts_another() {
        let mut batches = Batches::default();
        let big = vec![7u8; MAX_BATCH_BYTES];
        let a = batches.append("room", push(&big)).unwrap();
        let b = batches.append("room", push(b"next")).unwrap();
        assert_ne!(a.batch, b.batch);
        assert_eq!(batches.sealed(a.batch).unwrap().len(), MAX_BATCH_BYTES);
        batches.seal();
        assert_eq!(&batches.sealed(b.batch).unwrap()[..], b"next");
    }

    #[test]
    fn ids_of_an_ended_turn_no_longer_resolve() {
        let mut batches = Batches::default();
        let a = batches.append("room", push(b"old")).unwrap();
        batches.seal();
        batches.end_turn();
        assert!(batches.sealed(a.batch).is_none());
        let b = batches.append("room", push(b"new")).unwrap();
        assert_eq!(b.batch.index, a.batch.index);
        batches.seal();
        assert!(batches.sealed(a.batch).is_none());
        assert_eq!(&batches.sealed(b.batch).unwrap()[..], b"new");
    }
}
