//! Benchmark peer: room fan-out over raw TCP with batched writes. No WebSocket, no JSON, no rate limit: what is
//! left is the kernel's cost of moving the bytes, which makes it the machine's limit for `roomcast-bench`.
//!
//! Framing, both ways: a 4-byte big-endian body length, then the body, whose first byte is the kind.
//!
//! | kind | direction | rest of the body | what the server does |
//! | --- | --- | --- | --- |
//! | `J` | client to server | the room name | joins that room (leaving any other) and answers `A` |
//! | `C` | client to server | the content | sends `M` + content to every member of the room, the sender included |
//! | `E` | client to server | anything | sends the same frame back (echo) |
//!
//! One thread, one edge-triggered `mio::Poll`. Every frame a member is owed in a loop turn is appended to its
//! output buffer, and each buffer is written once at the end of the turn.
//!
//! Usage: `rawtcp [ADDR]` (default `127.0.0.1:8083`, or the `ADDR` environment variable).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);

/// The longest body accepted; a longer announced length closes the connection.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// An output buffer that drained and grew beyond this is released rather than kept.
const KEEP_CAPACITY: usize = 64 * 1024;

/// One client connection.
struct Client {
    stream: TcpStream,
    /// Received bytes not yet parsed into whole frames.
    input: Vec<u8>,
    /// Bytes owed to the client; `written` of them are already sent.
    output: Vec<u8>,
    written: usize,
    /// The room the client is in, with its index in the room's member list.
    room: Option<usize>,
    /// Waiting in the loop's list of clients to flush this turn.
    dirty: bool,
}

/// The whole server state.
struct Server {
    poll: Poll,
    listener: TcpListener,
    clients: Slab<Client>,
    rooms: HashMap<Vec<u8>, usize>,
    members: Vec<Vec<usize>>,
    dirty: Vec<usize>,
    read_buf: Vec<u8>,
}

fn main() -> io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:8083".into())
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("rawtcp listening on {}", listener.local_addr()?);
    let mut server = Server {
        poll,
        listener,
        clients: Slab::new(),
        rooms: HashMap::new(),
        members: Vec::new(),
        dirty: Vec::new(),
        read_buf: vec![0; 64 * 1024],
    };
    server.run()
}

impl Server {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    Token(key) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read_all(key);
                        }
                        if event.is_writable() {
                            self.mark_dirty(key);
                        }
                    }
                }
            }
            while let Some(key) = self.dirty.pop() {
                self.flush(key);
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let entry = self.clients.vacant_entry();
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, Token(entry.key()), interest)
                        .is_ok()
                    {
                        entry.insert(Client {
                            stream,
                            input: Vec::new(),
                            output: Vec::new(),
                            written: 0,
                            room: None,
                            dirty: false,
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("rawtcp: accept: {e}");
                    return;
                }
            }
        }
    }

    /// Reads until WouldBlock, then acts on every whole frame received.
    fn read_all(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let mut closed = false;
        loop {
            match client.stream.read(&mut self.read_buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => client.input.extend_from_slice(&self.read_buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let input = std::mem::take(&mut client.input);
        let mut used = 0;
        while let Some((start, end)) = frame_at(&input, used) {
            if end - start > MAX_BODY {
                closed = true;
                break;
            }
            self.on_frame(key, &input[start..end]);
            used = end;
        }
        if closed {
            self.remove(key);
            return;
        }
        if let Some(client) = self.clients.get_mut(key) {
            client.input = input;
            client.input.drain(..used);
        }
    }

    fn on_frame(&mut self, key: usize, body: &[u8]) {
        let Some((&kind, rest)) = body.split_first() else {
            return;
        };
        match kind {
            b'J' => {
                self.leave(key);
                let next_id = self.members.len();
                let room = *self.rooms.entry(rest.to_vec()).or_insert(next_id);
                if room == next_id {
                    self.members.push(Vec::new());
                }
                self.members[room].push(key);
                if let Some(client) = self.clients.get_mut(key) {
                    client.room = Some(room);
                }
                self.queue(key, b'A', &[]);
            }
            b'C' => {
                let Some(room) = self.clients.get(key).and_then(|c| c.room) else {
                    return;
                };
                let Server {
                    clients,
                    members,
                    dirty,
                    ..
                } = self;
                let header = frame_header(b'M', rest.len());
                for &member in &members[room] {
                    if let Some(client) = clients.get_mut(member) {
                        client.output.extend_from_slice(&header);
                        client.output.extend_from_slice(rest);
                        if !client.dirty {
                            client.dirty = true;
                            dirty.push(member);
                        }
                    }
                }
            }
            b'E' => self.queue(key, b'E', rest),
            _ => {}
        }
    }

    fn queue(&mut self, key: usize, kind: u8, rest: &[u8]) {
        if let Some(client) = self.clients.get_mut(key) {
            client
                .output
                .extend_from_slice(&frame_header(kind, rest.len()));
            client.output.extend_from_slice(rest);
            self.mark_dirty(key);
        }
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(client) = self.clients.get_mut(key) {
            if !client.dirty {
                client.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Writes what the client is owed until done or WouldBlock; the next WRITABLE event resumes it.
    fn flush(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        client.dirty = false;
        while client.written < client.output.len() {
            match client.stream.write(&client.output[client.written..]) {
                Ok(0) => return self.remove(key),
                Ok(n) => client.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.remove(key),
            }
        }
        client.written = 0;
        client.output.clear();
        if client.output.capacity() > KEEP_CAPACITY {
            client.output = Vec::new();
        }
    }

    fn leave(&mut self, key: usize) {
        let Some(room) = self.clients.get_mut(key).and_then(|c| c.room.take()) else {
            return;
        };
        let list = &mut self.members[room];
        if let Some(pos) = list.iter().position(|&m| m == key) {
            list.swap_remove(pos);
        }
    }

    fn remove(&mut self, key: usize) {
        self.leave(key);
        if self.clients.contains(key) {
            let mut client = self.clients.remove(key);
            let _ = self.poll.registry().deregister(&mut client.stream);
        }
    }
}

/// The body of the whole frame starting at `at`, as a range of `input`, once all of it has arrived.
fn frame_at(input: &[u8], at: usize) -> Option<(usize, usize)> {
    let header: [u8; 4] = input.get(at..at + 4)?.try_into().ok()?;
    let len = u32::from_be_bytes(header) as usize;
    let start = at + 4;
    let end = start.checked_add(len)?;
    if len > MAX_BODY {
        return Some((start, end));
    }
    (end <= input.len()).then_some((start, end))
}

/// The length prefix and kind byte of a frame whose body is `kind` followed by `rest_len` bytes.
fn frame_header(kind: u8, rest_len: usize) -> [u8; 5] {
    let len = u32::try_from(rest_len + 1)
        .unwrap_or(u32::MAX)
        .to_be_bytes();
    [len[0], len[1], len[2], len[3], kind]
}
