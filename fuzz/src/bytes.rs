//! The byte reader and writer under every input grammar.
//!
//! Reading past the end yields zeros and empty slices rather than an error, so every input decodes to something
//! and the fuzzer never wastes an execution on a rejected input. The writer is the exact inverse for seeds.

/// Reads a fuzz input front to back.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over the whole input.
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    /// True when every byte was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte, or 0 at the end.
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// The next `n` bytes, or as many as are left.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    /// A byte string prefixed by its one-byte length.
    pub fn short_bytes(&mut self) -> &'a [u8] {
        let len = usize::from(self.u8());
        self.bytes(len)
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Writes what `Reader` reads.
#[derive(Clone, Debug, Default)]
pub struct Writer {
    /// The input written so far.
    pub out: Vec<u8>,
}

impl Writer {
    /// An empty input.
    pub fn new() -> Self {
        Self::default()
    }

    /// One byte.
    pub fn u8(&mut self, b: u8) {
        self.out.push(b);
    }

    /// Two bytes, big-endian.
    pub fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    /// Raw bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }

    /// A byte string prefixed by its one-byte length; `b` must be at most 255 bytes.
    pub fn short_bytes(&mut self, b: &[u8]) {
        let len = u8::try_from(b.len()).expect("short_bytes takes at most 255 bytes");
        self.out.push(len);
        self.out.extend_from_slice(b);
    }
}
