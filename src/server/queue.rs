//! A connection's outbound bytes: a queue of owned or shared chunks flushed with vectored writes.
//!
//! Owns the order of outgoing bytes and how much of the front chunk the kernel has taken. Broadcast frames arrive
//! as spans of the turn's [`Batches`]: consecutive frames of one batch merge into one entry, so a member owed a
//! turn's worth of a room's messages is sent them from one slice of one shared buffer. Spans are resolved into
//! `Rc<[u8]>` slices when the queue is written, after the batches are sealed. An empty queue holds no allocation.

use std::collections::VecDeque;
use std::hash::Hash;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;

use super::batch::{Batches, Span};

/// The most slices handed to one `write_vectored` call (Linux's IOV_MAX is 1024; a few dozen fill a socket
/// buffer).
const MAX_IOVECS: usize = 64;

/// The longest chunk a queue holds, so that the written part of its front chunk fits in 32 bits (shared and pending
/// chunks are bounded by their `u32` offsets already; a longer owned one is split when pushed).
const MAX_CHUNK_LEN: usize = u32::MAX as usize;

/// A piece of outgoing data.
#[derive(Clone, Debug)]
pub enum Chunk {
    /// Bytes for this connection only (handshake responses, control frames, echoes, personal messages).
    Owned(Vec<u8>),
    /// Part of a buffer shared with other connections: `bytes[start..end]` of a sealed broadcast batch.
    Shared {
        /// The whole batch.
        bytes: Rc<[u8]>,
        /// Offset of the first byte owed.
        start: u32,
        /// Offset just past the last byte owed.
        end: u32,
    },
    /// Frames of a broadcast batch of this turn, not yet sealed.
    Pending(Span),
}

impl Chunk {
    /// Bytes in the chunk.
    pub fn len(&self) -> usize {
        match self {
            Chunk::Owned(bytes) => bytes.len(),
            Chunk::Shared { start, end, .. } => (end - start) as usize,
            Chunk::Pending(span) => span.len(),
        }
    }

    /// The bytes, once they exist in memory of their own (`None` for a pending span).
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Chunk::Owned(bytes) => Some(bytes),
            Chunk::Shared { bytes, start, end } => bytes.get(*start as usize..*end as usize),
            Chunk::Pending(_) => None,
        }
    }
}

/// `WriteQueue::first_pending` when no chunk is pending.
const NO_PENDING: u32 = u32::MAX;

/// Outgoing bytes in order.
#[derive(Debug)]
pub struct WriteQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written (at most [`MAX_CHUNK_LEN`]: 32 bits, as every connection carries
    /// this queue).
    front_written: u32,
    /// Bytes not yet written, over all chunks.
    queued: usize,
    /// Position of the first `Pending` chunk; `NO_PENDING` when there is none. (A queue is cut off at 1 MiB by
    /// default, far from 2^32 entries.)
    first_pending: u32,
}

impl Default for WriteQueue {
    fn default() -> Self {
        WriteQueue {
            chunks: VecDeque::new(),
            front_written: 0,
            queued: 0,
            first_pending: NO_PENDING,
        }
    }
}

impl WriteQueue {
    /// Appends a chunk; empty ones are skipped.
    pub fn push(&mut self, chunk: Chunk) {
        match chunk {
            Chunk::Owned(bytes) if bytes.len() > MAX_CHUNK_LEN => {
                self.push_in_pieces(bytes, MAX_CHUNK_LEN)
            }
            chunk => self.push_within_bound(chunk),
        }
    }

    /// Appends `bytes` as owned chunks of at most `most` bytes each, in order.
    fn push_in_pieces(&mut self, mut bytes: Vec<u8>, most: usize) {
        while bytes.len() > most {
            let rest = bytes.split_off(most);
            self.push_within_bound(Chunk::Owned(bytes));
            bytes = rest;
        }
        self.push_within_bound(Chunk::Owned(bytes));
    }

    fn push_within_bound(&mut self, chunk: Chunk) {
        let len = chunk.len();
        if len == 0 {
            return;
        }
        if matches!(chunk, Chunk::Pending(_)) && self.first_pending == NO_PENDING {
            self.first_pending = u32::try_from(self.chunks.len()).unwrap_or(0);
        }
        self.queued += len;
        self.chunks.push_back(chunk);
    }

    /// Appends a broadcast frame, merged into the last entry when it directly follows it in the same batch.
    pub fn push_span(&mut self, span: Span) {
        if let Some(Chunk::Pending(last)) = self.chunks.back_mut() {
            if last.batch == span.batch && last.end == span.start {
                last.end = span.end;
                self.queued += span.len();
                return;
            }
        }
        self.push(Chunk::Pending(span));
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Resolves pending spans through `batches` (sealed by the caller), then writes until the queue is empty or
    /// the writer would block; returns the bytes written. A `WouldBlock` is not an error here: the caller sees it
    /// as a non-empty queue. A span whose batch is not sealed is an error, never a silent gap in the stream.
    pub fn write_to<W: Write, K: Hash + Eq>(
        &mut self,
        writer: &mut W,
        batches: &Batches<K>,
    ) -> io::Result<usize> {
        self.resolve(batches)?;
        let mut total = 0;
        while !self.is_empty() {
            let written = {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let mut count = 0;
                for (i, chunk) in self.chunks.iter().take(MAX_IOVECS).enumerate() {
                    let Some(bytes) = chunk.bytes() else {
                        break;
                    };
                    let start = if i == 0 {
                        self.front_written as usize
                    } else {
                        0
                    };
                    slices[i] = IoSlice::new(bytes.get(start..).unwrap_or_default());
                    count += 1;
                }
                match writer.write_vectored(&slices[..count]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            self.consume(written);
            total += written;
        }
        // A member owed a burst every turn keeps its deque (re-growing it each turn was a fifth of a fan-out's
        // instructions); one that grew past a burst gives the memory back.
        if self.chunks.is_empty() && self.chunks.capacity() > 256 {
            self.chunks = VecDeque::new();
        }
        Ok(total)
    }

    /// Drops everything but the part of the front chunk already started, so that a frame is never cut in half.
    /// Used before a last Close to a peer that stopped reading. Returns the bytes dropped.
    pub fn truncate_to_started_frame(&mut self) -> usize {
        let keep = if self.front_written > 0 { 1 } else { 0 };
        let dropped: usize = self.chunks.iter().skip(keep).map(Chunk::len).sum();
        self.chunks.truncate(keep);
        if self.first_pending as usize >= keep {
            self.first_pending = NO_PENDING;
        }
        self.queued -= dropped;
        dropped
    }

    fn resolve<K: Hash + Eq>(&mut self, batches: &Batches<K>) -> io::Result<()> {
        let first = std::mem::replace(&mut self.first_pending, NO_PENDING);
        if first == NO_PENDING {
            return Ok(());
        }
        for chunk in self
            .chunks
            .range_mut((first as usize).min(self.chunks.len())..)
        {
            if let Chunk::Pending(span) = *chunk {
                let Some(bytes) = batches.sealed(span.batch) else {
                    return Err(io::Error::other(
                        "a broadcast batch was not sealed before the write",
                    ));
                };
                *chunk = Chunk::Shared {
                    bytes: bytes.clone(),
                    start: span.start,
                    end: span.end,
                };
            }
        }
        Ok(())
    }

    fn consume(&mut self, mut written: usize) {
        self.queued -= written;
        while written > 0 {
            let Some(front) = self.chunks.front() else {
                return;
            };
            let left = front.len() - self.front_written as usize;
            if written >= left {
                written -= left;
                self.front_written = 0;
                self.chunks.pop_front();
            } else {
                // `written < left <= MAX_CHUNK_LEN`, so the sum stays within the front chunk and 32 bits.
                self.front_written += written as u32;
                written = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_batches() -> Batches<&'static str> {
        Batches::default()
    }

    fn sink(budget: usize) -> Trickle {
        Trickle {
            taken: Vec::new(),
            budget,
            calls: 0,
        }
    }

    /// Accepts at most `budget` bytes per call, then blocks.
    struct Trickle {
        taken: Vec<u8>,
        budget: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.budget - n);
                self.taken.extend_from_slice(&b[..take]);
                n += take;
                if n == self.budget {
                    break;
                }
            }
            self.budget -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_resume_where_they_stopped_in_order() {
        let shared: Rc<[u8]> = Rc::from(&b"unshared!"[..]);
        let mut q = WriteQueue::default();
        q.push(Chunk::Owned(b"abc".to_vec()));
        q.push(Chunk::Shared {
            bytes: shared.clone(),
            start: 2,
            end: 8,
        });
        q.push(Chunk::Owned(b"xyz".to_vec()));
        let mut sink = sink(4);
        assert_eq!(q.write_to(&mut sink, &no_batches()).unwrap(), 4);
        assert_eq!(q.queued_bytes(), 8);
        sink.budget = 100;
        assert_eq!(q.write_to(&mut sink, &no_batches()).unwrap(), 8);
        assert_eq!(sink.taken, b"abcsharedxyz");
        assert!(q.is_empty());
    }

    #[test]
    fn an_owned_chunk_longer_than_the_bound_is_split_in_order() {
        let mut queue = WriteQueue::default();
        queue.push_in_pieces((0..=9).collect(), 4);
        assert_eq!(queue.chunks.len(), 3);
        assert!(queue.chunks.iter().all(|chunk| chunk.len() <= 4));
        assert_eq!(queue.queued_bytes(), 10);
        let mut out = sink(6);
        assert_eq!(queue.write_to(&mut out, &no_batches()).unwrap(), 6);
        assert_eq!(queue.queued_bytes(), 4);
        out.budget = 100;
        assert_eq!(queue.write_to(&mut out, &no_batches()).unwrap(), 4);
        assert_eq!(out.taken, (0..=9).collect::<Vec<u8>>());
    }

    #[test]
    fn many_chunks_go_out_in_one_vectored_write() {
        let mut q = WriteQueue::default();
        for _ in 0..10 {
            q.push(Chunk::Owned(vec![1; 10]));
        }
        let mut sink = sink(1000);
        q.write_to(&mut sink, &no_batches()).unwrap();
        assert_eq!(sink.calls, 1);
    }

    #[test]
    fn truncation_keeps_a_started_frame_whole() {
        let mut q = WriteQueue::default();
        q.push(Chunk::Owned(b"frame-one".to_vec()));
        q.push(Chunk::Owned(b"frame-two".to_vec()));
        let mut sink = sink(3);
        q.write_to(&mut sink, &no_batches()).unwrap();
        assert_eq!(q.truncate_to_started_frame(), 9);
        sink.budget = 100;
        q.write_to(&mut sink, &no_batches()).unwrap();
        assert_eq!(sink.taken, b"frame-one");
    }

    #[test]
    fn truncation_of_an_unstarted_queue_drops_everything() {
        let mut q = WriteQueue::default();
        q.push(Chunk::Owned(b"a".to_vec()));
        assert_eq!(q.truncate_to_started_frame(), 1);
        assert!(q.is_empty());
    }

    #[test]
    fn consecutive_spans_of_a_batch_merge_into_one_write() {
        let mut batches = Batches::default();
        let mut q = WriteQueue::default();
        for frame in [&b"one"[..], b"two", b"three"] {
            q.push_span(
                batches
                    .append("room", |out| out.extend_from_slice(frame))
                    .unwrap(),
            );
        }
        assert_eq!(q.chunks.len(), 1);
        assert_eq!(q.queued_bytes(), 11);
        batches.seal();
        let mut sink = sink(100);
        q.write_to(&mut sink, &batches).unwrap();
        assert_eq!(sink.taken, b"onetwothree");
        assert_eq!(sink.calls, 1);
    }

    #[test]
    fn a_skipped_frame_or_a_personal_chunk_keeps_its_place() {
        let mut batches = Batches::default();
        let mut q = WriteQueue::default();
        q.push_span(
            batches
                .append("room", |out| out.extend_from_slice(b"[1]"))
                .unwrap(),
        );
        batches.append("room", |out| out.extend_from_slice(b"[not for us]"));
        q.push_span(
            batches
                .append("room", |out| out.extend_from_slice(b"[2]"))
                .unwrap(),
        );
        q.push(Chunk::Owned(b"<personal>".to_vec()));
        q.push_span(
            batches
                .append("other", |out| out.extend_from_slice(b"(a)"))
                .unwrap(),
        );
        q.push_span(
            batches
                .append("room", |out| out.extend_from_slice(b"[3]"))
                .unwrap(),
        );
        assert_eq!(q.chunks.len(), 5);
        batches.seal();
        let mut sink = sink(100);
        q.write_to(&mut sink, &batches).unwrap();
        assert_eq!(sink.taken, b"[1][2]<personal>(a)[3]");
    }

    #[test]
    fn spans_resolved_in_one_turn_survive_into_the_next() {
        let mut batches = Batches::default();
        let mut q = WriteQueue::default();
        q.push_span(
            batches
                .append("room", |out| out.extend_from_slice(b"0123456789"))
                .unwrap(),
        );
        batches.seal();
        let mut sink = sink(4);
        assert_eq!(q.write_to(&mut sink, &batches).unwrap(), 4);
        batches.end_turn();
        q.push_span(
            batches
                .append("room", |out| out.extend_from_slice(b"AB"))
                .unwrap(),
        );
        batches.seal();
        sink.budget = 100;
        q.write_to(&mut sink, &batches).unwrap();
        assert_eq!(sink.taken, b"0123456789AB");
        assert!(q.is_empty());
    }

    #[test]
    fn a_span_of_an_unsealed_batch_fails_the_write_instead_of_leaving_a_gap() {
        let mut batches = Batches::default();
        let mut q = WriteQueue::default();
        q.push(Chunk::Owned(b"before".to_vec()));
        q.push_span(
            batches
                .append("room", |out| out.extend_from_slice(b"open"))
                .unwrap(),
        );
        let mut sink = sink(100);
        assert!(q.write_to(&mut sink, &batches).is_err());
        assert!(sink.taken.is_empty());
    }

    #[test]
    fn truncation_drops_pending_spans_too() {
        let mut batches = Batches::default();
        let mut q = WriteQueue::default();
        q.push(Chunk::Owned(b"frame-one".to_vec()));
        q.push_span(
            batches
                .append("room", |out| out.extend_from_slice(b"frame-two"))
                .unwrap(),
        );
        let mut sink = sink(3);
        batches.seal();
        q.write_to(&mut sink, &batches).unwrap();
        assert_eq!(q.truncate_to_started_frame(), 9);
        batches.end_turn();
        sink.budget = 100;
        q.write_to(&mut sink, &batches).unwrap();
        assert_eq!(sink.taken, b"frame-one");
    }
}
