//! A WebSocket client on `roomcast::protocol` in blocking `std::net`: it sends one text message, prints the echo
//! and closes cleanly. The client side of `minimal_echo`, to read top to bottom.
//!
//! `cargo run --example minimal_client [ws://HOST:PORT/PATH] [TEXT]` (defaults: `ws://127.0.0.1:9001/` and
//! `hello`). Prints `echo: TEXT` and exits 0 once the closing handshake is complete and the server has closed
//! TCP; prints what went wrong on stderr and exits 1 otherwise.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

use roomcast::protocol::handshake::{
    parse_server_response, write_client_request, ClientHandshakeError, ClientRequest,
};
use roomcast::protocol::{
    CloseCode, Connection, Event, Message, MessageKind, ProtocolError, Role, SendError,
};

/// How long to wait for the server at each step before giving up.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Everything that can go wrong, each with a message a person can act on.
#[derive(Debug)]
enum ClientError {
    /// The argument is not `ws://host[:port][/path]`.
    BadUrl(String),
    /// The TCP connection could not be made.
    Connect(String, io::Error),
    /// Reading or writing the socket failed, or the server was silent for `TIMEOUT`.
    Io(io::Error),
    /// The server's answer to the handshake was not a valid 101 (4.1).
    Handshake(ClientHandshakeError),
    /// The server closed TCP at the named step without finishing it.
    EndedEarly(&'static str),
    /// The server broke RFC 6455; our connection sent a Close with the error's code.
    Protocol(ProtocolError),
    /// The first message back was binary, not the text we sent.
    NotText(usize),
    /// We could not queue our message (only possible on a closing connection).
    Send(SendError),
    /// The server sent its Close, with this code and reason, before echoing our message.
    ClosedBeforeEcho(CloseCode, String),
    /// The server answered our Close with a code other than 1000 (1005 for none).
    UncleanClose(CloseCode, String),
    /// The server sent this many bytes after its Close (5.5.1: nothing may follow it).
    AfterClose(usize),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::BadUrl(url) => {
                write!(
                    f,
                    "{url:?} is not a ws:// URL (expected ws://host:port/path)"
                )
            }
            ClientError::Connect(addr, e) => write!(f, "cannot connect to {addr}: {e}"),
            // A read timeout is WouldBlock on Unix and TimedOut on Windows.
            ClientError::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                write!(f, "the server said nothing for {} s", TIMEOUT.as_secs())
            }
            ClientError::Io(e) => write!(f, "socket error: {e}"),
            ClientError::Handshake(e) => {
                write!(f, "the server refused the WebSocket handshake: {e}")
            }
            ClientError::EndedEarly(step) => write!(f, "the server closed TCP {step}"),
            ClientError::Protocol(e) => write!(f, "the server broke the protocol: {e}"),
            ClientError::NotText(len) => {
                write!(f, "expected the text echoed, got {len} bytes of binary")
            }
            ClientError::Send(e) => write!(f, "cannot send: {e}"),
            ClientError::ClosedBeforeEcho(code, reason) => {
                write!(
                    f,
                    "the server closed with {code} ({reason:?}) before echoing"
                )
            }
            ClientError::UncleanClose(code, reason) => {
                write!(
                    f,
                    "the server answered our Close with {code} ({reason:?}), not 1000"
                )
            }
            ClientError::AfterClose(len) => {
                write!(f, "the server sent {len} bytes after its Close")
            }
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:9001/".into());
    let text = args.next().unwrap_or_else(|| "hello".into());
    match run(&url, &text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("minimal_client: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Splits `ws://host:port/path` into the address to connect to and the path to ask for (3: port 80 by default).
fn parse_url(url: &str) -> Result<(String, String), ClientError> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| ClientError::BadUrl(url.into()))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.is_empty() {
        return Err(ClientError::BadUrl(url.into()));
    }
    let address = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let path = if path.is_empty() { "/" } else { path };
    Ok((address, path.to_owned()))
}

fn run(url: &str, text: &str) -> Result<(), ClientError> {
    let (address, path) = parse_url(url)?;
    let mut stream =
        TcpStream::connect(&address).map_err(|e| ClientError::Connect(address.clone(), e))?;
    stream.set_read_timeout(Some(TIMEOUT))?;

    // 1. The opening handshake (4.1): a GET with a fresh random key, then wait for the whole 101 response.
    let request = ClientRequest::with_random_key();
    let mut bytes = Vec::new();
    write_client_request(&address, &path, &request, &mut bytes);
    stream.write_all(&bytes)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let response = loop {
        // 4.1: the answer is checked against what we asked: status 101, Upgrade, Connection, the accept key.
        match parse_server_response(&buf, &request).map_err(ClientError::Handshake)? {
            Some(response) => break response,
            None => match stream.read(&mut chunk)? {
                0 => return Err(ClientError::EndedEarly("during the handshake")),
                n => buf.extend_from_slice(&chunk[..n]),
            },
        }
    };

    // 2. Say something. A client masks every frame with a fresh key (5.3); the connection does that.
    let mut conn = Connection::new(Role::Client, 1 << 20);
    conn.send(MessageKind::Text, text.as_bytes())
        .map_err(ClientError::Send)?;
    stream.write_all(&conn.take_output())?;

    // 3. The drive loop: feed what arrives (first whatever came right after the 101), act on the events, write
    // what the connection owes (Pongs, our Close), until both Close frames have crossed (7.1).
    let mut input = buf.split_off(response.head_len);
    let mut events = Vec::new();
    let mut echoed = false;
    loop {
        // A protocol error leaves a Close with its code owed to the server (7.1.7); it is written below.
        let mut failure = conn
            .feed(&input, &mut events)
            .err()
            .map(ClientError::Protocol);
        for event in events.drain(..) {
            match event {
                Event::Message(Message::Text(echo)) if !echoed => {
                    println!("echo: {echo}");
                    echoed = true;
                    // 7.1.2: start the closing handshake; no data may follow our Close (5.5.1).
                    conn.close(CloseCode::NORMAL, "done");
                }
                Event::Message(Message::Binary(bytes)) if !echoed => {
                    conn.close(CloseCode::UNSUPPORTED_DATA, "expected text"); // 7.4.1
                    failure = failure.or(Some(ClientError::NotText(bytes.len())));
                }
                // The server closed first (shutting down, say): the connection has queued our answer.
                Event::Close(frame) if !echoed => {
                    let early = ClientError::ClosedBeforeEcho(frame.reported_code(), frame.reason);
                    failure = failure.or(Some(early));
                }
                Event::Close(frame) if frame.code != Some(CloseCode::NORMAL) => {
                    let unclean = ClientError::UncleanClose(frame.reported_code(), frame.reason);
                    failure = failure.or(Some(unclean));
                }
                // The answer to our Close; Pings (the connection answered them, 5.5.2), Pongs, later messages.
                _ => {}
            }
        }
        // Whatever happened, send what the connection owes: Pongs, our Close, or the answer to the server's.
        stream.write_all(&conn.take_output())?;
        if let Some(failure) = failure {
            return Err(failure);
        }
        if conn.state().is_finished() {
            break;
        }
        match stream.read(&mut chunk)? {
            0 => return Err(ClientError::EndedEarly("before the closing handshake")),
            n => input = chunk[..n].to_vec(),
        }
    }

    // 4. 7.1.1: the server closes TCP first; a client waits for that rather than closing its end at once.
    match stream.read(&mut chunk)? {
        0 => Ok(()),
        n => Err(ClientError::AfterClose(n)),
    }
}
