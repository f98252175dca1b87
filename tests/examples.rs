//! The learning examples, run for real: `minimal_client` against `minimal_echo`, an independent client
//! (`tungstenite`) against `minimal_echo`, and `minimal_client` against roomcast's own `/echo` route.
//!
//! Plain `cargo test` builds the examples into `target/<profile>/examples/`, beside this test's `deps/` directory,
//! and that is where they are looked for. A run limited to some targets (`cargo test --test examples`) does not
//! build them: run `cargo build --examples` first, or the test says so.

mod common;

use std::borrow::Cow;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::TestServer;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame};
use tungstenite::{Error, Message};

/// The compiled example `name`: `target/<profile>/examples/<name>`, found from this test's own path,
/// `target/<profile>/deps/examples-<hash>`.
fn example(name: &str) -> PathBuf {
    let test_exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps/");
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let path = profile_dir.join("examples").join(file);
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples, `cargo test --test examples` does not \
         (run `cargo build --examples` first)",
        path.display()
    );
    path
}

/// A running `minimal_echo` process, killed and reaped on drop.
struct EchoServer {
    process: Child,
    port: u16,
}

impl EchoServer {
    /// Starts `minimal_echo` on port 0 and reads the port from its first line of output.
    fn start() -> EchoServer {
        let mut process = Command::new(example("minimal_echo"))
            .arg("0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start minimal_echo");
        let stdout = process.stdout.take().expect("piped stdout");
        // Owned from here on, so that a failed start below still kills the process.
        let mut server = EchoServer { process, port: 0 };
        let (line_tx, line_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = line_tx.send(line);
        });
        let line = line_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("minimal_echo printed nothing within 5 s");
        server.port = line
            .strip_prefix("listening on ws://127.0.0.1:")
            .and_then(|rest| rest.strip_suffix("/\n"))
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from minimal_echo: {line:?}"));
        server
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port)
    }

    /// A TCP connection with read and write timeouts, so that no test can hang.
    fn tcp(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to minimal_echo");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Runs `minimal_client` with `args` to completion. It cannot hang: it gives up after 5 s of silence.
fn minimal_client(args: &[&str]) -> Output {
    Command::new(example("minimal_client"))
        .args(args)
        .output()
        .expect("run minimal_client")
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("UTF-8 output")
}

#[test]
fn minimal_client_gets_its_message_echoed_by_minimal_echo_and_exits_0() {
    let server = EchoServer::start();
    let output = minimal_client(&[&server.url(), "héllo from the test"]);
    assert_eq!(text(&output.stderr), "", "nothing on stderr");
    assert_eq!(text(&output.stdout), "echo: héllo from the test\n");
    assert!(output.status.success(), "exit status {}", output.status);

    let with_default_text = minimal_client(&[&server.url()]);
    assert_eq!(text(&with_default_text.stdout), "echo: hello\n");
    assert!(with_default_text.status.success());
}

#[test]
fn minimal_echo_speaks_with_tungstenite_fragments_pings_binary_and_a_clean_close() {
    let server = EchoServer::start();
    let (mut ws, response) = tungstenite::client::client(server.url().as_str(), server.tcp())
        .unwrap_or_else(|e| panic!("tungstenite's handshake with minimal_echo failed: {e}"));
    assert_eq!(response.status().as_u16(), 101);

    // 5.4: a text message in two fragments, with a Ping between them (5.5: control frames may interleave).
    let fragmented = "fragmented κόσμε".as_bytes();
    let first = Frame::message(fragmented[..6].to_vec(), OpCode::Data(Data::Text), false);
    let last = Frame::message(fragmented[6..].to_vec(), OpCode::Data(Data::Continue), true);
    ws.write(Message::Frame(first)).unwrap();
    ws.write(Message::Ping(b"between".to_vec())).unwrap();
    ws.write(Message::Frame(last)).unwrap();
    ws.flush().unwrap();
    // The Pong is queued when the Ping is read, before the message it interrupts is complete.
    assert_eq!(ws.read().unwrap(), Message::Pong(b"between".to_vec()));
    assert_eq!(ws.read().unwrap(), Message::Text("fragmented κόσμε".into()));

    let bytes = vec![0u8, 1, 0xFE, 0xFF, 0x80];
    ws.send(Message::Binary(bytes.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Binary(bytes));

    ws.send(Message::Ping(b"alone".to_vec())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Pong(b"alone".to_vec()));

    // 7.1.2: our Close is echoed with its code, then the server closes TCP first (7.1.1), which tungstenite
    // reports as ConnectionClosed: anything after the server's Close, or no Close, would be another error.
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: Cow::Borrowed("done"),
    }))
    .unwrap();
    match ws.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected the server's Close 1000, got {other:?}"),
    }
    match ws.read() {
        Err(Error::ConnectionClosed) => {}
        other => panic!("expected a clean end after the closing handshake, got {other:?}"),
    }
}

#[test]
fn minimal_echo_refuses_plain_http_with_400_and_another_version_with_426() {
    let server = EchoServer::start();
    let exchange = |request: &str| {
        let mut stream = server.tcp();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    let plain = exchange("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert!(plain.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{plain}");
    let version_8 = exchange(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
    );
    // 4.4: a server that does not speak the client's version names the one it speaks.
    assert!(
        version_8.starts_with("HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n"),
        "{version_8}"
    );
}

#[test]
fn minimal_client_gets_its_message_echoed_by_roomcast_echo_route() {
    let server = TestServer::start();
    let url = format!("ws://{}/echo", server.addr);
    let output = minimal_client(&[&url, "to roomcast and back"]);
    assert_eq!(text(&output.stderr), "", "nothing on stderr");
    assert_eq!(text(&output.stdout), "echo: to roomcast and back\n");
    assert!(output.status.success(), "exit status {}", output.status);
}

#[test]
fn minimal_client_exits_1_with_the_reason_when_it_cannot_talk() {
    let server = TestServer::start();
    let refused = minimal_client(&[&format!("ws://{}/no-such-route", server.addr)]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(text(&refused.stdout), "");
    assert_eq!(
        text(&refused.stderr),
        "minimal_client: the server refused the WebSocket handshake: server answered 404, not 101\n"
    );

    let not_ws = minimal_client(&["http://127.0.0.1/"]);
    assert_eq!(not_ws.status.code(), Some(1));
    assert!(
        text(&not_ws.stderr).contains("is not a ws:// URL"),
        "{}",
        text(&not_ws.stderr)
    );
}
