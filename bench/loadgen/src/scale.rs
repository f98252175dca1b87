//! `scale`: one of several generator processes that together hold more joined connections than one process may
//! open, for `bench/scale.sh`.
//!
//! Each process connects from a loopback source address of its own (`--source`, e.g. 127.0.0.11: towards one
//! server address the kernel hands out ephemeral ports per source address, so each adds a whole range), and joins
//! its connections in rooms of `--room-size` that belong to it alone. It prints one JSON line once every connection
//! is joined (or failed), then holds them, answering the server's Pings, until `--go-file` exists. Then the first
//! member of each of its rooms says one line, and it counts that every member of the room received that line once;
//! it prints a second JSON line and closes everything.
//!
//! It owns its connections and nothing else: it must not measure the servers (the script reads their memory from
//! /proc and Redis while the connections are held) and knows nothing of which server process holds which member.
//! Its client is its own, small one (no deflate, no fast receive path): binding a source address before connecting
//! is the one thing `client::Client` cannot do, and this scenario sends and receives little.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use roomcast::protocol::handshake::{parse_server_response, write_client_request, ClientRequest};
use roomcast::protocol::{Connection, Event, Message, MessageKind, Role};
use serde_json::{json, Value};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::stats::Histogram;

/// The largest message a scale connection accepts (join answers of rooms of a few members are small).
const MAX_MESSAGE: usize = 1 << 20;

/// Linux's errno for a non-blocking connect that is under way (connect(2): EINPROGRESS); std has no stable
/// `ErrorKind` for it.
const EINPROGRESS: i32 = 115;

/// What the first member of each room says in the check, before the room's number.
const CHECK_PREFIX: &str = "scale-check ";

/// How long the check goes on after every member received its line, for a duplicate to show.
const LINGER: Duration = Duration::from_millis(500);

/// A room whose line has not reached every member after this long no longer holds a place in --check-batch.
const STALE_ROOM: Duration = Duration::from_secs(5);

/// Options of the `scale` scenario.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// The server's address (with --reuse-port, the port every server process shares)
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// The local address to connect from, e.g. 127.0.0.11 [default: the kernel's choice]
    #[arg(long)]
    source: Option<IpAddr>,
    /// Connections this process opens and joins
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// Members per room; the rooms are this process's own
    #[arg(long, default_value_t = 10)]
    room_size: usize,
    /// Starts every user and room name of this process, so that several processes share no name
    #[arg(long, default_value = "g0")]
    prefix: String,
    /// Most connections in the middle of connecting and joining at once
    #[arg(long, default_value_t = 300)]
    connect_batch: usize,
    /// Seconds allowed for connecting and joining everyone
    #[arg(long, default_value_t = 600.0)]
    setup_timeout: f64,
    /// Once every connection is joined, hold them until this file exists, then run the chat check
    /// [default: run it at once]
    #[arg(long)]
    go_file: Option<PathBuf>,
    /// Seconds to wait for --go-file before giving up (and exiting non-zero)
    #[arg(long, default_value_t = 900.0)]
    hold_timeout: f64,
    /// Seconds allowed for every member of every room to receive its room's check line
    #[arg(long, default_value_t = 60.0)]
    check_timeout: f64,
    /// Most rooms whose check line is out and not yet received by every member, at once
    #[arg(long, default_value_t = 100)]
    check_batch: usize,
}

/// Where one connection is in its life.
#[derive(Debug)]
enum Phase {
    /// The TCP connect is under way.
    Connecting,
    /// The upgrade request is out; what came back so far is kept.
    Handshake {
        request: ClientRequest,
        response: Vec<u8>,
    },
    /// The WebSocket is open (joined or not yet).
    Open,
    /// Failed or closed.
    Closed,
}

/// One connection: a member of one room.
#[derive(Debug)]
struct Member {
    stream: TcpStream,
    phase: Phase,
    ws: Box<Connection>,
    out: Vec<u8>,
    joined: bool,
    /// Times this member received its room's check line.
    check_seen: u8,
    /// When its connect began.
    started: Instant,
}

/// Every connection of this process, on one poll.
struct Crowd {
    poll: Poll,
    events: Events,
    members: Vec<Member>,
    read_buf: Vec<u8>,
    ws_events: Vec<Event>,
    dirty: Vec<usize>,
    failed: usize,
    last_error: Option<String>,
    /// Joins the server refused (an `error` message before `joined`), by code.
    join_errors: u64,
}

/// What one received text message means to this scenario.
enum Heard {
    Joined,
    Check(usize),
    /// An `error` with its code: a refused join, or a refused chat line.
    JoinError(String),
    Other,
}

fn heard(text: &str) -> Heard {
    // Most of what arrives is presence and system lines, which roomcast writes with their type first: those are
    // told apart without parsing (parsing each cost the generators more CPU than the servers spent sending them).
    if text.starts_with(r#"{"type":"presence""#) || text.starts_with(r#"{"type":"system""#) {
        return Heard::Other;
    }
    let Ok(message) = serde_json::from_str::<Value>(text) else {
        return Heard::Other;
    };
    match message["type"].as_str() {
        Some("joined") => Heard::Joined,
        Some("chat") => message["content"]
            .as_str()
            .and_then(|c| c.strip_prefix(CHECK_PREFIX))
            .and_then(|n| n.parse().ok())
            .map_or(Heard::Other, Heard::Check),
        Some("error") => Heard::JoinError(message["code"].as_str().unwrap_or("?").to_string()),
        _ => Heard::Other,
    }
}

impl Crowd {
    fn new() -> io::Result<Crowd> {
        Ok(Crowd {
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            members: Vec::new(),
            read_buf: vec![0; 64 * 1024],
            ws_events: Vec::new(),
            dirty: Vec::new(),
            failed: 0,
            last_error: None,
            join_errors: 0,
        })
    }

    /// Starts a non-blocking connect from `source` (if given) to `addr`, as member number `members.len()`.
    fn connect(&mut self, addr: SocketAddr, source: Option<IpAddr>) -> io::Result<()> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        if let Some(ip) = source {
            socket.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
        }
        match socket.connect(&SockAddr::from(addr)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let mut stream = TcpStream::from_std(socket.into());
        let token = Token(self.members.len());
        self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.members.push(Member {
            stream,
            phase: Phase::Connecting,
            ws: Box::new(Connection::new(Role::Client, MAX_MESSAGE)),
            out: Vec::new(),
            joined: false,
            check_seen: 0,
            started: Instant::now(),
        });
        Ok(())
    }

    fn fail(&mut self, index: usize, error: String) {
        let member = &mut self.members[index];
        if matches!(member.phase, Phase::Closed) {
            return;
        }
        let _ = self.poll.registry().deregister(&mut member.stream);
        let _ = member.stream.shutdown(std::net::Shutdown::Both);
        member.phase = Phase::Closed;
        self.failed += 1;
        self.last_error = Some(format!("connection {index}: {error}"));
    }

    /// Queues a text message on an open member.
    fn send_text(&mut self, index: usize, text: &str) {
        let member = &mut self.members[index];
        if member.ws.send(MessageKind::Text, text.as_bytes()).is_ok() {
            let output = member.ws.take_output();
            member.out.extend_from_slice(&output);
            self.dirty.push(index);
        }
    }

    /// Writes every queued byte it can.
    fn flush_dirty(&mut self) {
        while let Some(index) = self.dirty.pop() {
            if let Err(e) = write_out(&mut self.members[index]) {
                self.fail(index, e.to_string());
            }
        }
    }

    /// One poll and its events. Each text message goes to `on_text(member, text)`; members whose WebSocket just
    /// opened go to `opened`.
    fn turn(
        &mut self,
        timeout: Duration,
        opened: &mut Vec<usize>,
        mut on_text: impl FnMut(usize, &str),
    ) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let ready: Vec<(usize, bool, bool)> = self
            .events
            .iter()
            .map(|e| {
                (
                    e.token().0,
                    e.is_writable(),
                    e.is_readable() || e.is_read_closed() || e.is_error(),
                )
            })
            .collect();
        for (index, writable, readable) in ready {
            if index >= self.members.len() || matches!(self.members[index].phase, Phase::Closed) {
                continue;
            }
            if writable {
                if let Err(e) = self.on_writable(index) {
                    self.fail(index, e.to_string());
                    continue;
                }
            }
            if readable {
                let was_open = matches!(self.members[index].phase, Phase::Open);
                if let Err(e) = self.on_readable(index, &mut on_text) {
                    self.fail(index, e.to_string());
                    continue;
                }
                if !was_open && matches!(self.members[index].phase, Phase::Open) {
                    opened.push(index);
                }
            }
        }
        Ok(())
    }

    fn on_writable(&mut self, index: usize) -> io::Result<()> {
        let member = &mut self.members[index];
        if matches!(member.phase, Phase::Connecting) {
            if let Some(e) = member.stream.take_error()? {
                return Err(e);
            }
            match member.stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(e),
            }
            let host = member.stream.peer_addr()?.to_string();
            let request = ClientRequest::with_random_key();
            write_client_request(&host, "/ws", &request, &mut member.out);
            member.phase = Phase::Handshake {
                request,
                response: Vec::new(),
            };
        }
        write_out(member)
    }

    fn on_readable(
        &mut self,
        index: usize,
        on_text: &mut impl FnMut(usize, &str),
    ) -> io::Result<()> {
        loop {
            let read = match self.members[index].stream.read(&mut self.read_buf) {
                Ok(0) => return Err(io::Error::other("closed by the server")),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let member = &mut self.members[index];
            let mut bytes = &self.read_buf[..read];
            let mut head_rest = Vec::new();
            if let Phase::Handshake { request, response } = &mut member.phase {
                response.extend_from_slice(bytes);
                let Some(answer) = parse_server_response(response, request)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
                else {
                    continue;
                };
                head_rest = response.split_off(answer.head_len);
                member.phase = Phase::Open;
                bytes = &head_rest;
            }
            member
                .ws
                .feed(bytes, &mut self.ws_events)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            drop(head_rest);
            for event in self.ws_events.drain(..) {
                match event {
                    Event::Message(Message::Text(text)) => on_text(index, &text),
                    Event::Close(_) => return Err(io::Error::other("closed by the server")),
                    Event::Message(Message::Binary(_)) | Event::Ping(_) | Event::Pong(_) => {}
                }
            }
            let member = &mut self.members[index];
            if member.ws.has_output() {
                // The Pong owed for a Ping (RFC 6455 5.5.2), queued by `feed`.
                let output = member.ws.take_output();
                member.out.extend_from_slice(&output);
                self.dirty.push(index);
            }
        }
        Ok(())
    }
}

/// Writes what a member has queued until the socket would block.
fn write_out(member: &mut Member) -> io::Result<()> {
    while !member.out.is_empty() {
        match member.stream.write(&member.out) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                member.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The scenario: join everyone, report, hold until told, check one line per room, report, close.
pub fn main(args: &ScaleArgs) -> ExitCode {
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("roomcast-bench scale: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The room of member `index`.
fn room_of(index: usize, room_size: usize) -> usize {
    index / room_size
}

fn run(args: &ScaleArgs) -> io::Result<bool> {
    let room_size = args.room_size.max(1);
    let conns = args.conns;
    let rooms = conns.div_ceil(room_size);
    let started = Instant::now();
    let mut crowd = Crowd::new()?;
    let mut opened = Vec::new();
    let mut joined = 0usize;
    // Messages other than the join answer and the check line: presence, system lines.
    let mut notices = 0u64;
    // From the start of each member's connect to its `joined`.
    let mut join_latency = Histogram::default();
    let setup_deadline = started + Duration::from_secs_f64(args.setup_timeout);

    // Phase 1: connect and join, at most --connect-batch in the middle of it at once.
    while joined + crowd.failed < conns {
        while crowd.members.len() < conns
            && crowd.members.len() - joined - crowd.failed < args.connect_batch.max(1)
        {
            if let Err(e) = crowd.connect(args.addr, args.source) {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "connect #{} from {:?}: {e}",
                        crowd.members.len(),
                        args.source
                    ),
                ));
            }
        }
        let mut answers = Vec::new();
        crowd.turn(
            Duration::from_millis(10),
            &mut opened,
            |index, text| match heard(text) {
                Heard::Joined => answers.push((index, None)),
                Heard::JoinError(code) => answers.push((index, Some(code))),
                Heard::Check(_) | Heard::Other => notices += 1,
            },
        )?;
        for (index, error) in answers {
            let member = &mut crowd.members[index];
            match error {
                None if !member.joined => {
                    member.joined = true;
                    joined += 1;
                    join_latency.record(
                        u64::try_from(member.started.elapsed().as_nanos()).unwrap_or(u64::MAX),
                    );
                }
                Some(code) if !member.joined => {
                    crowd.join_errors += 1;
                    crowd.fail(index, format!("join refused: {code}"));
                }
                _ => notices += 1,
            }
        }
        for index in opened.drain(..) {
            let join = json!({
                "type": "join",
                "v": 2,
                "userId": format!("{}u{index}", args.prefix),
                "room": format!("{}r{}", args.prefix, room_of(index, room_size)),
            });
            crowd.send_text(index, &join.to_string());
        }
        crowd.flush_dirty();
        if Instant::now() > setup_deadline {
            break;
        }
    }
    let join_secs = started.elapsed().as_secs_f64();
    let ms = |ns: u64| (ns as f64 / 1e4).round() / 100.0;
    let failed_at_join = crowd.failed;
    println!(
        "{}",
        json!({
            "scenario": "scale",
            "phase": "joined",
            "prefix": args.prefix,
            "source": args.source.map(|ip| ip.to_string()),
            "connections": conns,
            "joined": joined,
            "failed": crowd.failed,
            "join_errors": crowd.join_errors,
            "rooms": rooms,
            "room_size": room_size,
            "join_s": round3(join_secs),
            "joins_per_sec": round3(joined as f64 / join_secs.max(1e-9)),
            "connect_to_joined_ms": {
                "p50": ms(join_latency.quantile(0.50)),
                "p99": ms(join_latency.quantile(0.99)),
                "p999": ms(join_latency.quantile(0.999)),
                "max": ms(join_latency.max()),
            },
            "last_error": crowd.last_error,
        })
    );

    // Phase 2: hold, answering Pings, until the script says go.
    let hold_deadline = Instant::now() + Duration::from_secs_f64(args.hold_timeout);
    if let Some(go) = &args.go_file {
        while !go.exists() {
            if Instant::now() > hold_deadline {
                eprintln!(
                    "roomcast-bench scale: {} did not appear in time",
                    go.display()
                );
                return Ok(false);
            }
            crowd.turn(Duration::from_millis(100), &mut opened, |_, _| notices += 1)?;
            crowd.flush_dirty();
        }
    }
    let failed_before_check = crowd.failed;

    // Phase 3: the first member of every room says one line; every member must receive it once. At most
    // --check-batch rooms wait for their line at once (a room waiting longer than STALE_ROOM stops counting), so
    // the check measures delivery, not a queue of thousands of publications made at the same instant.
    let check_start = Instant::now();
    // A room's line can reach only its members that are joined and still open (a join Redis refused is a failure
    // reported above, not a missing delivery here).
    let present = |crowd: &Crowd, index: usize| {
        crowd
            .members
            .get(index)
            .is_some_and(|m| m.joined && matches!(m.phase, Phase::Open))
    };
    let room_members: Vec<usize> = (0..rooms)
        .map(|room| {
            (room * room_size..conns.min((room + 1) * room_size))
                .filter(|&index| present(&crowd, index))
                .count()
        })
        .collect();
    let size_of = |room: usize| room_members[room];
    let checkable: Vec<usize> = (0..rooms)
        .filter(|&room| present(&crowd, room * room_size))
        .collect();
    let expected: usize = checkable.iter().map(|&room| size_of(room)).sum();
    // Check lines the server refused (an `error`, e.g. `unavailable` while its node had lost Redis).
    let mut refused = 0u64;
    let mut next_room = 0;
    let mut sent_at = vec![None; rooms];
    let mut received = 0usize;
    let mut wrong_room = 0u64;
    let mut last_in_room = vec![None; rooms];
    let mut members_reached = vec![0usize; rooms];
    let mut waiting: Vec<usize> = Vec::new();
    let check_deadline = check_start + Duration::from_secs_f64(args.check_timeout);
    // Once every member has the line, a little longer, for a late duplicate to show.
    let mut complete_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= check_deadline || complete_at.is_some_and(|at| now >= at + LINGER) {
            break;
        }
        waiting.retain(|&room| {
            members_reached[room] < size_of(room)
                && sent_at[room].is_some_and(|sent: Instant| now < sent + STALE_ROOM)
        });
        while waiting.len() < args.check_batch.max(1) && next_room < checkable.len() {
            let room = checkable[next_room];
            next_room += 1;
            crowd.send_text(
                room * room_size,
                &json!({ "type": "chat", "content": format!("{CHECK_PREFIX}{room}") }).to_string(),
            );
            sent_at[room] = Some(Instant::now());
            waiting.push(room);
        }
        crowd.flush_dirty();
        let mut seen = Vec::new();
        crowd.turn(
            Duration::from_millis(20),
            &mut opened,
            |index, text| match heard(text) {
                Heard::Check(room) => seen.push((index, room)),
                Heard::JoinError(_) => refused += 1,
                Heard::Joined | Heard::Other => notices += 1,
            },
        )?;
        let now = Instant::now();
        for (index, room) in seen {
            if room != room_of(index, room_size) {
                wrong_room += 1;
                continue;
            }
            let member = &mut crowd.members[index];
            member.check_seen = member.check_seen.saturating_add(1);
            if member.check_seen == 1 {
                received += 1;
                members_reached[room] += 1;
                last_in_room[room] = Some(now);
            }
        }
        crowd.flush_dirty();
        if received == expected && complete_at.is_none() {
            complete_at = Some(now);
        }
    }
    let check_secs = complete_at
        .unwrap_or_else(Instant::now)
        .duration_since(check_start);
    let duplicates = crowd.members.iter().filter(|m| m.check_seen > 1).count();
    let mut latency = Histogram::default();
    for (sent, last) in sent_at.iter().zip(&last_in_room) {
        if let (Some(sent), Some(last)) = (sent, last) {
            latency
                .record(u64::try_from(last.duration_since(*sent).as_nanos()).unwrap_or(u64::MAX));
        }
    }
    let rooms_checked = sent_at.iter().filter(|s| s.is_some()).count();
    let rooms_complete = (0..rooms)
        .filter(|&room| sent_at[room].is_some() && members_reached[room] == size_of(room))
        .count();
    let open_at_end = crowd
        .members
        .iter()
        .filter(|m| matches!(m.phase, Phase::Open))
        .count();
    println!(
        "{}",
        json!({
            "scenario": "scale",
            "phase": "checked",
            "prefix": args.prefix,
            "rooms_checked": rooms_checked,
            "rooms_complete": rooms_complete,
            "deliveries_expected": expected,
            "deliveries": received,
            "refused": refused,
            "check_s": round3(check_secs.as_secs_f64()),
            "duplicates": duplicates,
            "wrong_room": wrong_room,
            "room_complete_ms": {
                "p50": ms(latency.quantile(0.50)),
                "p99": ms(latency.quantile(0.99)),
                "max": ms(latency.max()),
            },
            "failed_while_held": failed_before_check - failed_at_join,
            "failed_in_check": crowd.failed - failed_before_check,
            "open_at_end": open_at_end,
            "notices": notices,
            "last_error": crowd.last_error,
        })
    );
    for member in &mut crowd.members {
        let _ = member.stream.shutdown(std::net::Shutdown::Both);
    }
    Ok(crowd.failed == 0
        && received == expected
        && refused == 0
        && duplicates == 0
        && wrong_room == 0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joined_answer_is_told_apart() {
        let text =
            r#"{"type":"joined","v":2,"room":"g0r1","userId":"g0u10","members":["g0u10"],"seq":0}"#;
        assert!(matches!(heard(text), Heard::Joined));
    }

    #[test]
    fn a_check_line_names_its_room() {
        let text = r#"{"type":"chat","room":"g0r7","seq":1,"from":"g0u70","content":"scale-check 7","timestamp":1}"#;
        assert!(matches!(heard(text), Heard::Check(7)));
    }

    #[test]
    fn other_chat_is_not_a_check_line() {
        let text =
            r#"{"type":"chat","room":"g0r7","seq":1,"from":"g0u70","content":"scale-check seven"}"#;
        assert!(matches!(heard(text), Heard::Other));
    }

    #[test]
    fn an_error_carries_its_code() {
        let text = r#"{"type":"error","code":"unavailable","message":"try again"}"#;
        assert!(matches!(heard(text), Heard::JoinError(code) if code == "unavailable"));
    }

    #[test]
    fn presence_and_system_lines_are_other() {
        for text in [
            r#"{"type":"presence","room":"g0r1","joined":"g0u11","count":2}"#,
            r#"{"type":"system","content":"g0u11 joined"}"#,
            "not json",
        ] {
            assert!(matches!(heard(text), Heard::Other), "{text}");
        }
    }

    #[test]
    fn consecutive_members_share_a_room() {
        assert_eq!(room_of(0, 10), 0);
        assert_eq!(room_of(9, 10), 0);
        assert_eq!(room_of(10, 10), 1);
    }
}
