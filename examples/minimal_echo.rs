//! A WebSocket echo server on `roomcast::protocol` in blocking `std::net`, to read top to bottom: the protocol
//! does the RFC 6455 work (sections cited), this file moves bytes. `cargo run --example minimal_echo [PORT]`.

use std::fmt::Display;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};

use roomcast::protocol::handshake::{parse_request_head, validate_upgrade, write_accept_response};
use roomcast::protocol::{Connection, Event, Role};

fn main() -> io::Result<()> {
    let port = std::env::args().nth(1).unwrap_or_else(|| "0".into());
    let listener = TcpListener::bind(format!("127.0.0.1:{port}"))?;
    println!("listening on ws://{}/", listener.local_addr()?);
    io::stdout().flush()?;
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || serve(stream).unwrap_or_else(|e| eprintln!("connection: {e}")));
    }
    Ok(())
}

fn serve(mut stream: TcpStream) -> io::Result<()> {
    // 1. Read until the request head (at most 8 KiB) is complete (4.2.1). It may take several reads.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head = loop {
        let n = stream.read(&mut chunk)?;
        buf.extend_from_slice(&chunk[..n]);
        match parse_request_head(&buf, 8 * 1024) {
            Ok(Some(head)) => break head,
            Ok(None) if n > 0 => {}
            Ok(None) => return Ok(()), // The client left before finishing its request.
            Err(e) => return refuse(&mut stream, 400, e),
        }
    };
    // 2. Is it a WebSocket upgrade (4.2.1)? If not, answer in plain HTTP and close.
    let accept = match validate_upgrade(&head) {
        Ok(accept) => accept,
        Err(e) => return refuse(&mut stream, e.status(), e),
    };
    // 3. Accept it with 101 Switching Protocols (4.2.2). From here on, both sides speak frames.
    let mut response = Vec::new();
    write_accept_response(&accept, &mut response);
    stream.write_all(&response)?;
    // 4. The drive loop: feed what arrived, act on the events, write what the connection owes, repeat.
    let mut conn = Connection::new(Role::Server, 1 << 20);
    let mut events = Vec::new();
    let mut input = buf.split_off(head.len); // Bytes after the head, if any, are already frames: keep them.
    loop {
        // A protocol error is handled inside: a Close with its code is queued and the state becomes Failed.
        if let Err(e) = conn.feed(&input, &mut events) {
            eprintln!("the client broke the protocol: {e}");
        }
        for event in events.drain(..) {
            // Pongs to Pings and the answer to a Close are already queued (5.5.1, 5.5.2): only messages are ours.
            if let Event::Message(message) = event {
                // An answer to a message that came before the client's Close is still allowed, so this succeeds.
                let _ = conn.send(message.kind(), message.as_bytes());
            }
        }
        stream.write_all(&conn.take_output())?;
        if conn.state().is_finished() {
            return Ok(()); // Both Closes are out (or the connection failed): the server closes TCP first (7.1.1).
        }
        match stream.read(&mut chunk)? {
            0 => return Ok(()), // TCP ended without a closing handshake: the client would report 1006 (7.1.5).
            n => input = chunk[..n].to_vec(),
        }
    }
}

/// Refuses the handshake in plain HTTP (4.2.1) with the reason as the body, which ends when we close.
fn refuse(stream: &mut TcpStream, status: u16, reason: impl Display) -> io::Result<()> {
    let status_line = match status {
        426 => "426 Upgrade Required\r\nSec-WebSocket-Version: 13", // 4.4: name the version we speak.
        _ => "400 Bad Request",
    };
    let head = format!("HTTP/1.1 {status_line}\r\nConnection: close\r\n\r\n");
    writeln!(stream, "{head}{reason}")
}
