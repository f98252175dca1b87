//! A connection's outbound bytes: a queue of owned or shared chunks flushed with vectored writes.
//!
//! Owns the order of outgoing bytes and how much of the front chunk the kernel has taken. A broadcast frame is
//! one `Rc<[u8]>` shared by every recipient's queue, so fan-out costs a reference count per recipient, not a copy.
//! An empty queue holds no allocation.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::ops::Deref;
use std::rc::Rc;

/// The most slices handed to one `write_vectored` call (Linux's IOV_MAX is 1024; a few dozen fill a socket
/// buffer).
const MAX_IOVECS: usize = 64;

/// A piece of outgoing data.
#[derive(Clone, Debug)]
pub enum Chunk {
    /// Bytes for this connection only (handshake responses, control frames, echoes).
    Owned(Vec<u8>),
    /// A frame shared with other connections (broadcasts).
    Shared(Rc<[u8]>),
}

impl Deref for Chunk {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Chunk::Owned(bytes) => bytes,
            Chunk::Shared(bytes) => bytes,
        }
    }
}

/// Outgoing bytes in order.
#[derive(Debug, Default)]
pub struct WriteQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    front_written: usize,
    /// Bytes not yet written, over all chunks.
    queued: usize,
}

impl WriteQueue {
    /// Appends a chunk; empty ones are skipped.
    pub fn push(&mut self, chunk: Chunk) {
        if chunk.is_empty() {
            return;
        }
        self.queued += chunk.len();
        self.chunks.push_back(chunk);
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Writes until the queue is empty or the writer would block; returns the bytes written. A `WouldBlock` is not
    /// an error here: the caller sees it as a non-empty queue.
    pub fn write_to<W: Write>(&mut self, writer: &mut W) -> io::Result<usize> {
        let mut total = 0;
        while !self.is_empty() {
            let written = {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let mut count = 0;
                for (i, chunk) in self.chunks.iter().take(MAX_IOVECS).enumerate() {
                    let start = if i == 0 { self.front_written } else { 0 };
                    slices[i] = IoSlice::new(&chunk[start..]);
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
        let dropped: usize = self.chunks.iter().skip(keep).map(|c| c.len()).sum();
        self.chunks.truncate(keep);
        self.queued -= dropped;
        dropped
    }

    fn consume(&mut self, mut written: usize) {
        self.queued -= written;
        while written > 0 {
            let Some(front) = self.chunks.front() else {
                return;
            };
            let left = front.len() - self.front_written;
            if written >= left {
                written -= left;
                self.front_written = 0;
                self.chunks.pop_front();
            } else {
                self.front_written += written;
                written = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let shared: Rc<[u8]> = Rc::from(&b"shared"[..]);
        let mut q = WriteQueue::default();
        q.push(Chunk::Owned(b"abc".to_vec()));
        q.push(Chunk::Shared(shared.clone()));
        q.push(Chunk::Owned(b"xyz".to_vec()));
        let mut sink = Trickle {
            taken: Vec::new(),
            budget: 4,
            calls: 0,
        };
        assert_eq!(q.write_to(&mut sink).unwrap(), 4);
        assert_eq!(q.queued_bytes(), 8);
        sink.budget = 100;
        assert_eq!(q.write_to(&mut sink).unwrap(), 8);
        assert_eq!(sink.taken, b"abcsharedxyz");
        assert!(q.is_empty());
    }

    #[test]
    fn many_chunks_go_out_in_one_vectored_write() {
        let mut q = WriteQueue::default();
        for _ in 0..10 {
            q.push(Chunk::Owned(vec![1; 10]));
        }
        let mut sink = Trickle {
            taken: Vec::new(),
            budget: 1000,
            calls: 0,
        };
        q.write_to(&mut sink).unwrap();
        assert_eq!(sink.calls, 1);
    }

    #[test]
    fn truncation_keeps_a_started_frame_whole() {
        let mut q = WriteQueue::default();
        q.push(Chunk::Owned(b"frame-one".to_vec()));
        q.push(Chunk::Owned(b"frame-two".to_vec()));
        let mut sink = Trickle {
            taken: Vec::new(),
            budget: 3,
            calls: 0,
        };
        q.write_to(&mut sink).unwrap();
        assert_eq!(q.truncate_to_started_frame(), 9);
        sink.budget = 100;
        q.write_to(&mut sink).unwrap();
        assert_eq!(sink.taken, b"frame-one");
    }

    #[test]
    fn truncation_of_an_unstarted_queue_drops_everything() {
        let mut q = WriteQueue::default();
        q.push(Chunk::Owned(b"a".to_vec()));
        assert_eq!(q.truncate_to_started_frame(), 1);
        assert!(q.is_empty());
    }
}
