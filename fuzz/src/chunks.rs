//! Chunking plans: how a byte stream is cut into the reads a socket would return.
//!
//! A plan is a list of bytes, used in a cycle. Byte 0 is an empty read (the next read is then at least one
//! byte, so a plan of zeros still makes progress), 1..=0xEF read that many bytes, and 0xF0..=0xFF read 1 to 16
//! KiB. An empty plan reads everything at once. A read budget bounds the work of one execution: once it is
//! spent, the rest of every stream arrives in one read.

/// Cuts streams into reads according to a plan; it remembers its place in the plan across streams.
#[derive(Clone, Debug)]
pub struct Chunker<'a> {
    plan: &'a [u8],
    next: usize,
    after_empty: bool,
    budget: usize,
}

impl<'a> Chunker<'a> {
    /// A chunker at the start of `plan`, with no limit on the number of reads.
    pub fn new(plan: &'a [u8]) -> Self {
        Self::with_budget(plan, usize::MAX)
    }

    /// A chunker at the start of `plan` that follows it for at most `budget` reads.
    pub fn with_budget(plan: &'a [u8], budget: usize) -> Self {
        Chunker {
            plan,
            next: 0,
            after_empty: false,
            budget,
        }
    }

    /// The size of the next read, for a stream with `left` bytes left (never more than `left`).
    pub fn next_size(&mut self, left: usize) -> usize {
        if self.plan.is_empty() || self.budget == 0 {
            return left;
        }
        self.budget -= 1;
        let b = self.plan[self.next % self.plan.len()];
        self.next = self.next.wrapping_add(1);
        let size = match b {
            0 if self.after_empty => 1,
            0 => 0,
            1..=0xEF => usize::from(b),
            _ => usize::from(b - 0xEF) * 1024,
        };
        self.after_empty = size == 0;
        size.min(left)
    }

    /// Cuts all of `data` into reads. An empty `data` gives no reads.
    pub fn split<'d>(&mut self, data: &'d [u8]) -> Vec<&'d [u8]> {
        let mut pieces = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let size = self.next_size(rest.len());
            let (piece, tail) = rest.split_at(size);
            pieces.push(piece);
            rest = tail;
        }
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_stream_in_order() {
        let data: Vec<u8> = (0..=255).collect();
        for plan in [&[][..], &[0], &[0, 0, 3], &[1, 0xF0], &[7, 200]] {
            let pieces = Chunker::new(plan).split(&data);
            assert_eq!(pieces.concat(), data, "plan {plan:?}");
        }
    }

    #[test]
    fn spent_budget_reads_the_rest_at_once() {
        let pieces = Chunker::with_budget(&[1], 2).split(b"abcde");
        assert_eq!(pieces, vec![&b"a"[..], b"b", b"cde"]);
    }

    #[test]
    fn empty_plan_is_one_read() {
        assert_eq!(Chunker::new(&[]).split(b"abc"), vec![&b"abc"[..]]);
    }

    #[test]
    fn zero_is_an_empty_read_then_progress() {
        let pieces = Chunker::new(&[0]).split(b"ab");
        assert_eq!(pieces, vec![&b""[..], b"a", b"", b"b"]);
    }
}
