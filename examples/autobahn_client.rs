//! roomcast's client role against an Autobahn|Testsuite fuzzingserver: every case, echoing every message, with
//! permessage-deflate offered (RFC 7692) and used as the server answers.
//!
//! `cargo run --release --example autobahn_client -- ws://127.0.0.1:9001` asks the server how many cases it has
//! (`/getCaseCount`), runs each (`/runCase?case=N&agent=roomcast`), then asks it to write its reports
//! (`/updateReports?agent=roomcast`) and exits 0. A connection the server breaks is failed the way RFC 6455 7.1.7
//! asks (our Close with the error's code, then TCP closed); the suite judges that, not this program, so only a
//! server that cannot be reached or a handshake it refuses makes it exit 1. `tests/autobahn/run.sh client` runs
//! it and reads the reports.
//!
//! Everything WebSocket is the library's: the opening handshake (`protocol::handshake`), the offer and the check
//! of the answer (`protocol::deflate`), and the frames, masks, compression and closing handshake
//! (`protocol::Connection` in the client role). This file only moves bytes.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use roomcast::protocol::deflate::{accept_server_answer, CLIENT_OFFER};
use roomcast::protocol::handshake::{parse_server_response, write_client_request, ClientRequest};
use roomcast::protocol::{Connection, Event, Message, Role};

/// The agent name the reports file results under.
const AGENT: &str = "roomcast";

/// The largest message a case sends is 16 MiB (sections 9 and 10); allow four times that.
const MAX_MESSAGE_SIZE: usize = 64 << 20;

/// How long the server may stay silent before a case is given up on.
const SILENCE: Duration = Duration::from_secs(60);

/// After our Close (or a failure), how long to wait for the server to close TCP, as 7.1.1 asks it to, before we
/// close it ourselves.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    let Some(authority) = url
        .strip_prefix("ws://")
        .map(|rest| rest.trim_end_matches('/'))
    else {
        eprintln!("{url:?} is not a ws:// URL (expected ws://host:port)");
        return ExitCode::FAILURE;
    };
    match run(authority) {
        Ok(cases) => {
            println!("ran {cases} cases; reports written by the server");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("autobahn_client: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(authority: &str) -> io::Result<u32> {
    let answer = session(authority, "/getCaseCount", Reply::Collect)?;
    let count: u32 = answer
        .first()
        .and_then(|m| m.as_text())
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("no case count in {answer:?}")))?;
    for case in 1..=count {
        let started = Instant::now();
        session(
            authority,
            &format!("/runCase?case={case}&agent={AGENT}"),
            Reply::Echo,
        )?;
        println!(
            "case {case}/{count} in {} ms",
            started.elapsed().as_millis()
        );
    }
    session(
        authority,
        &format!("/updateReports?agent={AGENT}"),
        Reply::Collect,
    )?;
    Ok(count)
}

/// What a session does with the messages it receives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reply {
    /// Send each back as it came: a case.
    Echo,
    /// Keep them: a question to the server.
    Collect,
}

/// One WebSocket connection to `path`, from the opening handshake until TCP ends: returns the messages kept.
fn session(authority: &str, path: &str, reply: Reply) -> io::Result<Vec<Message>> {
    let mut stream = TcpStream::connect(authority)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(SILENCE))?;
    // RFC 7692 5: offer permessage-deflate, letting the server choose our window (7.1.2.2).
    let mut request = ClientRequest::with_random_key();
    request.extensions = Some(CLIENT_OFFER.to_owned());
    let mut bytes = Vec::new();
    write_client_request(authority, path, &request, &mut bytes);
    stream.write_all(&bytes)?;

    let mut input = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    let response = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::other(format!(
                "{path}: the server closed TCP during the handshake"
            )));
        }
        input.extend_from_slice(&chunk[..n]);
        match parse_server_response(&input, &request) {
            Ok(Some(response)) => break response,
            Ok(None) => continue,
            Err(e) => return Err(io::Error::other(format!("{path}: {e}"))),
        }
    };
    let mut conn = Connection::new(Role::Client, MAX_MESSAGE_SIZE);
    // RFC 7692 7.1: an answer we cannot honour fails the connection; RFC 6455 4.1 has no Close for a handshake, so
    // TCP is simply closed.
    match accept_server_answer(&response.extensions) {
        Ok(Some(params)) => conn.use_deflate(&params),
        Ok(None) => {}
        Err(e) => {
            let _ = stream.shutdown(Shutdown::Both);
            eprintln!("{path}: refused the server's extensions: {e}");
            return Ok(Vec::new());
        }
    }
    let first_frames = input.split_off(response.head_len);

    let mut kept = Vec::new();
    let mut events = Vec::new();
    let mut closing_since: Option<Instant> = None;
    let mut pending = first_frames;
    loop {
        if !pending.is_empty() {
            // An error has already queued our Close with its code (7.1.7); it is written below.
            let _ = conn.feed(&pending, &mut events);
            pending.clear();
            for event in events.drain(..) {
                let Event::Message(message) = event else {
                    continue;
                };
                match reply {
                    Reply::Echo => {
                        let _ = conn.send_owned(message.kind(), message.into_payload());
                    }
                    Reply::Collect => kept.push(message),
                }
            }
        }
        for piece in conn.take_output_pieces() {
            if stream.write_all(&piece).is_err() {
                return Ok(kept);
            }
        }
        if !conn.can_send() && closing_since.is_none() {
            closing_since = Some(Instant::now());
            stream.set_read_timeout(Some(CLOSE_WAIT))?;
        }
        // 7.1.1: the server closes TCP first; one that does not is given CLOSE_WAIT after the closing began.
        if closing_since.is_some_and(|since| since.elapsed() >= CLOSE_WAIT) {
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(kept);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(kept),
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if closing_since.is_none() {
                    eprintln!("{path}: the server was silent for {} s", SILENCE.as_secs());
                    return Ok(kept);
                }
            }
            Err(_) => return Ok(kept),
        }
    }
}
