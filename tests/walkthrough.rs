//! Generates docs/walkthrough.md, one whole WebSocket session narrated byte by byte, from the real protocol code,
//! and fails when the file differs from what the code produces now. `UPDATE_WALKTHROUGH=1 cargo test --test
//! walkthrough` rewrites it.
//!
//! The session is driven with fixed keys so that it comes out the same every run: the handshake uses the sample
//! key of RFC 6455 1.3, and the client's frames are made by `encode_frame` with chosen masking keys (a real client
//! draws them at random, 5.3). The server side is the real thing: `parse_request_head`, `validate_upgrade`,
//! `write_accept_response`, and a server `Connection` whose output is shown as it comes out. The prose lives here,
//! beside the code that makes the bytes it describes; the facts in it (lengths, offsets, codes, states) are
//! computed, not typed.

use std::fmt::Write as _;
use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use roomcast::protocol::close::encode_close_body;
use roomcast::protocol::frame::{encode_frame, FrameDecoder, FrameEvent, IncomingMask, OpCode};
use roomcast::protocol::handshake::{
    accept_key, parse_request_head, parse_server_response, validate_upgrade, write_accept_response,
    write_client_request, ClientRequest, WEBSOCKET_GUID,
};
use roomcast::protocol::mask::apply_mask;
use roomcast::protocol::{CloseCode, Connection, Event, Message, Role, State};
use sha1::{Digest, Sha1};

/// The environment variable that makes the test rewrite the document instead of comparing it.
const UPDATE_VARIABLE: &str = "UPDATE_WALKTHROUGH";

/// The host and resource of the RFC's own handshake example (1.2, 1.3).
const HOST: &str = "server.example.com";
const PATH: &str = "/chat";
/// The sample `Sec-WebSocket-Key` of 1.3 and 4.2.2.
const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The masking key of the 5.7 examples, used for the client's first frame.
const HELLO_MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// Fresh keys for the client's later frames (5.3: one per frame).
const FIRST_FRAGMENT_MASK: [u8; 4] = [0x5b, 0x0e, 0x93, 0xc4];
const PING_MASK: [u8; 4] = [0xc2, 0x19, 0x7d, 0x60];
const LAST_FRAGMENT_MASK: [u8; 4] = [0x0f, 0xe4, 0xa8, 0x31];
const CLOSE_MASK: [u8; 4] = [0x94, 0x2d, 0x6b, 0xe1];

/// The opening handshake, both directions.
struct Handshake {
    request: Vec<u8>,
    request_head_len: usize,
    /// The 16 bytes the key is the base64 of.
    nonce: Vec<u8>,
    /// SHA-1 of the key followed by the GUID.
    digest: Vec<u8>,
    accept: String,
    response: Vec<u8>,
    response_head_len: usize,
}

/// One client frame, and what the server did with it.
struct Exchange {
    client_frame: Vec<u8>,
    /// What the server's `feed` reported.
    events: Vec<Event>,
    /// The server's state after `feed`.
    state_after_feed: State,
    /// The server's frames written after it: the protocol's own answers and the echo application's.
    server_frames: Vec<Vec<u8>>,
    /// The server's state after its output was taken.
    state: State,
}

/// The whole session.
struct Session {
    handshake: Handshake,
    hello: Exchange,
    first_fragment: Exchange,
    ping: Exchange,
    last_fragment: Exchange,
    close: Exchange,
    close_code: Option<CloseCode>,
}

fn run_handshake() -> Handshake {
    let request = ClientRequest::with_key(SAMPLE_KEY);
    let mut request_bytes = Vec::new();
    write_client_request(HOST, PATH, &request, &mut request_bytes);
    let head = parse_request_head(&request_bytes, 8192)
        .expect("a well-formed head")
        .expect("a complete head");
    let accept = validate_upgrade(&head).expect("a valid upgrade");
    let mut response = Vec::new();
    write_accept_response(&accept, &mut response);
    let answer = parse_server_response(&response, &request)
        .expect("the client accepts the answer")
        .expect("a complete head");
    let digest = Sha1::new()
        .chain_update(SAMPLE_KEY)
        .chain_update(WEBSOCKET_GUID)
        .finalize()
        .to_vec();
    assert_eq!(
        BASE64.encode(&digest),
        accept,
        "the computation shown is the one made"
    );
    Handshake {
        request_head_len: head.len,
        nonce: BASE64.decode(SAMPLE_KEY).expect("base64"),
        request: request_bytes,
        digest,
        accept,
        response,
        response_head_len: answer.head_len,
    }
}

/// Feeds one client frame to the server, lets the echo application answer any message, and takes the output.
fn exchange(server: &mut Connection, client_frame: Vec<u8>) -> Exchange {
    let mut events = Vec::new();
    server
        .feed(&client_frame, &mut events)
        .expect("a valid client frame");
    let state_after_feed = server.state();
    for event in &events {
        if let Event::Message(message) = event {
            server
                .send(message.kind(), message.as_bytes())
                .expect("the echo may be sent");
        }
    }
    let output = server.take_output();
    Exchange {
        server_frames: split_frames(&output, IncomingMask::Forbidden),
        client_frame,
        events,
        state_after_feed,
        state: server.state(),
    }
}

fn client_frame(fin: bool, opcode: OpCode, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut frame = Vec::new();
    encode_frame(fin, opcode, payload, Some(mask), &mut frame);
    frame
}

fn run_session() -> Session {
    let handshake = run_handshake();
    let mut server = Connection::new(Role::Server, 1 << 20);
    let hello = exchange(
        &mut server,
        client_frame(true, OpCode::Text, b"Hello", HELLO_MASK),
    );
    let first_fragment = exchange(
        &mut server,
        client_frame(false, OpCode::Text, b"Hel", FIRST_FRAGMENT_MASK),
    );
    let ping = exchange(
        &mut server,
        client_frame(true, OpCode::Ping, b"ping", PING_MASK),
    );
    let last_fragment = exchange(
        &mut server,
        client_frame(true, OpCode::Continuation, b"lo", LAST_FRAGMENT_MASK),
    );
    let mut close_body = Vec::new();
    encode_close_body(CloseCode::NORMAL, "bye", &mut close_body);
    let close = exchange(
        &mut server,
        client_frame(true, OpCode::Close, &close_body, CLOSE_MASK),
    );
    Session {
        handshake,
        hello,
        first_fragment,
        ping,
        last_fragment,
        close,
        close_code: server.close_code(),
    }
}

/// Splits a byte stream into whole frames, using the real decoder to find where each ends.
fn split_frames(mut bytes: &[u8], incoming: IncomingMask) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let (_, event) = FrameDecoder::new(incoming)
            .decode(bytes)
            .expect("a valid frame");
        let Some(FrameEvent::Header(header)) = event else {
            panic!("an incomplete frame header")
        };
        let len = header.encoded_len() + header.payload_len as usize;
        frames.push(bytes[..len].to_vec());
        bytes = &bytes[len..];
    }
    frames
}

/// The parts of one whole frame, read with the real decoder.
struct FrameParts<'a> {
    fin: bool,
    opcode: OpCode,
    length_field: u8,
    extended_length: &'a [u8],
    mask: Option<[u8; 4]>,
    /// The payload as it is on the wire (masked if there is a key).
    payload: &'a [u8],
    /// The payload after unmasking.
    unmasked: Vec<u8>,
}

fn frame_parts(frame: &[u8], incoming: IncomingMask) -> FrameParts<'_> {
    let mut decoder = FrameDecoder::new(incoming);
    let (header_len, event) = decoder.decode(frame).expect("a valid frame");
    let Some(FrameEvent::Header(header)) = event else {
        panic!("an incomplete frame header")
    };
    let mut unmasked = Vec::new();
    let mut rest = &frame[header_len..];
    while let (used, Some(FrameEvent::Payload(chunk))) = decoder.decode(rest).expect("payload") {
        chunk.unmask_into(&mut unmasked);
        rest = &rest[used..];
    }
    assert!(rest.is_empty(), "one whole frame");
    let key_len = if header.mask.is_some() { 4 } else { 0 };
    FrameParts {
        fin: header.fin,
        opcode: header.opcode,
        length_field: frame[1] & 0x7f,
        extended_length: &frame[2..header_len - key_len],
        mask: header.mask,
        payload: &frame[header_len..],
        unmasked,
    }
}

/// Bytes as lowercase hex pairs separated by spaces: `81 05 48`.
fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A classic hex dump: offset, 16 bytes in two groups of 8, the printable ASCII.
fn hexdump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (row, chunk) in bytes.chunks(16).enumerate() {
        let mut pairs = String::new();
        for (i, byte) in chunk.iter().enumerate() {
            if i == 8 {
                pairs.push(' ');
            }
            write!(pairs, "{byte:02x} ").unwrap();
        }
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        writeln!(out, "{:04x}  {pairs:<49} |{ascii}|", row * 16).unwrap();
    }
    out
}

/// Payload bytes for a table cell: the text in quotes when it is printable, else nothing more.
fn quoted(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.is_empty() && !text.chars().any(char::is_control) => {
            format!("\"{text}\"")
        }
        _ => String::new(),
    }
}

fn opcode_meaning(opcode: OpCode) -> &'static str {
    match opcode {
        OpCode::Continuation => "continuation: the next fragment of the message under way (5.4)",
        OpCode::Text => "text: a message in UTF-8 (5.6)",
        OpCode::Binary => "binary (5.6)",
        OpCode::Close => "Close, a control frame (5.5.1)",
        OpCode::Ping => "Ping, a control frame (5.5.2)",
        OpCode::Pong => "Pong, a control frame (5.5.3)",
    }
}

fn fin_meaning(fin: bool, opcode: OpCode) -> &'static str {
    match (fin, opcode) {
        (false, _) => "0: more fragments of this message follow (5.4)",
        (true, OpCode::Continuation) => "1: the last fragment: the message is complete (5.4)",
        (true, opcode) if opcode.is_control() => "1: control frames are never fragmented (5.5)",
        (true, _) => "1: the final fragment of its message, here the only one",
    }
}

/// The table that explains a frame, byte group by byte group (5.2).
fn frame_table(frame: &[u8], incoming: IncomingMask) -> String {
    let parts = frame_parts(frame, incoming);
    let mut rows = vec![
        "| bytes | bits | field (5.2) | value |".to_owned(),
        "| --- | --- | --- | --- |".to_owned(),
    ];
    let b0 = frame[0];
    let b1 = frame[1];
    rows.push(format!(
        "| `{b0:02x}` | `{}... ....` | FIN | {} |",
        b0 >> 7,
        fin_meaning(parts.fin, parts.opcode)
    ));
    rows.push(format!(
        "| | `.{:03b} ....` | RSV1, RSV2, RSV3 | 0: no extension was negotiated, so all three must be 0 |",
        (b0 >> 4) & 0x7
    ));
    rows.push(format!(
        "| | `.... {:04b}` | opcode | 0x{:X}, {} |",
        b0 & 0xf,
        b0 & 0xf,
        opcode_meaning(parts.opcode)
    ));
    let mask_meaning = match parts.mask {
        Some(_) => {
            "1: masked, as every frame from a client must be (5.1); the key follows the length"
        }
        None => "0: not masked: a server never masks (5.1)",
    };
    rows.push(format!(
        "| `{b1:02x}` | `{}... ....` | MASK | {mask_meaning} |",
        b1 >> 7
    ));
    let length_meaning = match parts.length_field {
        126 => "126: the length is in the next 2 bytes".to_owned(),
        127 => "127: the length is in the next 8 bytes".to_owned(),
        n => format!("{n}: the payload length in bytes"),
    };
    rows.push(format!(
        "| | `.{:03b} {:04b}` | payload length | {length_meaning} |",
        (b1 >> 4) & 0x7,
        b1 & 0xf
    ));
    if !parts.extended_length.is_empty() {
        rows.push(format!(
            "| `{}` | | extended payload length | {} bytes, big-endian |",
            hex(parts.extended_length),
            parts.payload.len()
        ));
    }
    if let Some(key) = parts.mask {
        rows.push(format!(
            "| `{}` | | masking key | chosen by the client for this frame only (5.3) |",
            hex(&key)
        ));
    }
    if parts.payload.is_empty() {
        rows.push("| | | payload | none |".to_owned());
    } else if parts.mask.is_some() {
        rows.push(format!(
            "| `{}` | | payload, masked | unmasked (5.3): `{}` {} |",
            hex(parts.payload),
            hex(&parts.unmasked),
            payload_meaning(parts.opcode, &parts.unmasked)
        ));
    } else if parts.opcode == OpCode::Close {
        rows.extend(close_rows(parts.payload));
    } else {
        rows.push(format!(
            "| `{}` | | payload | {} |",
            hex(parts.payload),
            payload_meaning(parts.opcode, parts.payload)
        ));
    }
    rows.join("\n") + "\n"
}

/// What an unmasked payload says, for the last column of a table.
fn payload_meaning(opcode: OpCode, payload: &[u8]) -> String {
    match opcode {
        OpCode::Close => match payload {
            [hi, lo, reason @ ..] => format!(
                "= the status code {} (`{hi:02x} {lo:02x}`), then the reason {}",
                u16::from_be_bytes([*hi, *lo]),
                quoted(reason)
            ),
            _ => "no status code".to_owned(),
        },
        _ => format!("= {} in UTF-8", quoted(payload)),
    }
}

/// The rows for an unmasked Close payload: the code, then the reason if any (5.5.1).
fn close_rows(payload: &[u8]) -> Vec<String> {
    let mut rows = Vec::new();
    if let [hi, lo, reason @ ..] = payload {
        let code = u16::from_be_bytes([*hi, *lo]);
        rows.push(format!(
            "| `{hi:02x} {lo:02x}` | | payload: status code | {code}, big-endian (5.5.1, 7.4.1) |"
        ));
        if !reason.is_empty() {
            rows.push(format!(
                "| `{}` | | payload: reason | {} in UTF-8 |",
                hex(reason),
                quoted(reason)
            ));
        }
    }
    rows
}

/// The XOR of each payload byte with its key byte, as a table (5.3).
fn unmasking_table(frame: &[u8]) -> String {
    let parts = frame_parts(frame, IncomingMask::Required);
    let key = parts.mask.expect("a masked frame");
    let mut unmasked = parts.payload.to_vec();
    apply_mask(&mut unmasked, key, 0);
    assert_eq!(
        unmasked, parts.unmasked,
        "apply_mask agrees with the decoder"
    );
    let mut out =
        String::from("| i | masked byte | key byte `i % 4` | masked XOR key | character |\n");
    out.push_str("| --- | --- | --- | --- | --- |\n");
    for (i, (&masked, &clear)) in parts.payload.iter().zip(&unmasked).enumerate() {
        writeln!(
            out,
            "| {i} | `{masked:02x}` | `{:02x}` (key[{}]) | `{clear:02x}` | `{}` |",
            key[i % 4],
            i % 4,
            clear as char
        )
        .unwrap();
    }
    out
}

fn describe_event(event: &Event) -> String {
    match event {
        Event::Message(Message::Text(text)) => format!("`Event::Message(Message::Text({text:?}))`"),
        Event::Message(Message::Binary(bytes)) => {
            format!("`Event::Message(Message::Binary({} bytes))`", bytes.len())
        }
        Event::Ping(payload) => format!("`Event::Ping(b\"{}\".to_vec())`", payload.escape_ascii()),
        Event::Pong(payload) => format!("`Event::Pong(b\"{}\".to_vec())`", payload.escape_ascii()),
        Event::Close(frame) => {
            let code = match frame.code {
                Some(code) => format!("Some(CloseCode::new({code}))"),
                None => "None".to_owned(),
            };
            format!(
                "`Event::Close(CloseFrame {{ code: {code}, reason: {:?}.into() }})`",
                frame.reason
            )
        }
    }
}

fn describe_events(events: &[Event]) -> String {
    match events {
        [] => "no event".to_owned(),
        events => events
            .iter()
            .map(describe_event)
            .collect::<Vec<_>>()
            .join(", then "),
    }
}

/// The line-by-line explanation of a request or response head.
fn head_table(head: &[u8], explain: fn(&str) -> String) -> String {
    let text = std::str::from_utf8(head).expect("an ASCII head");
    let mut out = String::from("| offset | line | meaning |\n| --- | --- | --- |\n");
    let mut offset = 0;
    for line in text.split_inclusive("\r\n") {
        let content = line.trim_end_matches("\r\n");
        let shown = if content.is_empty() {
            "(empty line)".to_owned()
        } else {
            format!("`{content}`")
        };
        writeln!(
            out,
            "| `{offset:04x}` | {shown} `\\r\\n` | {} |",
            explain(content)
        )
        .unwrap();
        offset += line.len();
    }
    assert_eq!(offset, head.len(), "every byte of the head is explained");
    out
}

fn explain_request_line(line: &str) -> String {
    let Some((name, value)) = line.split_once(": ") else {
        return match line {
            "" => "the empty line that ends the head".to_owned(),
            _ => format!(
                "a GET of the resource `{PATH}` in HTTP/1.1: the handshake is a GET, HTTP/1.1 or later \
                 (4.1; the server checks it, 4.2.1 item 1)"
            ),
        };
    };
    let meaning = match name.to_ascii_lowercase().as_str() {
        "host" => "the host the client means, so that both ends agree on it (4.1; 4.2.1 item 2)",
        "upgrade" => {
            "asks to switch this connection to the `websocket` protocol (4.1; 4.2.1 item 3)"
        }
        "connection" => {
            "the token `Upgrade`: the upgrade concerns this connection, not a proxy's next hop \
             (4.1; 4.2.1 item 4)"
        }
        "sec-websocket-key" => {
            let nonce = BASE64.decode(value).expect("base64");
            return format!(
                "the nonce: base64 of 16 bytes that a real client draws at random for each connection \
                 (4.1, 10.3). This is the RFC's sample key, the base64 of the 16 ASCII bytes \"{}\" (1.3)",
                String::from_utf8_lossy(&nonce)
            );
        }
        "sec-websocket-version" => "13, the version RFC 6455 defines (4.1; 4.2.1 item 6)",
        other => {
            panic!("the walkthrough has no prose for the request header {other:?}: write some")
        }
    };
    meaning.to_owned()
}

fn explain_response_line(line: &str) -> String {
    let meaning = match line.split_once(": ") {
        None if line.is_empty() => {
            "the end of the head: from the next byte on, both directions carry frames"
        }
        None => {
            "status 101: the server switches protocols. With any other status there is no WebSocket, \
             and the client handles the answer as plain HTTP (4.1, 4.2.2)"
        }
        Some((name, _)) => match name.to_ascii_lowercase().as_str() {
            "upgrade" => {
                "the protocol switched to; the client checks that it is `websocket`, in any case \
                 (4.2.2; 4.1)"
            }
            "connection" => "the token `Upgrade`; the client checks it too (4.2.2; 4.1)",
            "sec-websocket-accept" => {
                "computed from the key as shown above. The client computes the same value and fails the \
                 connection if they differ (4.2.2; 4.1)"
            }
            other => panic!("the walkthrough has no prose for the response header {other:?}: write some"),
        },
    };
    meaning.to_owned()
}

/// The width prose is wrapped at, like the rest of docs/.
const WIDTH: usize = 116;

/// Wraps `words` at `WIDTH` columns, starting with `first_prefix` and continuing with `rest_prefix`. A line that
/// would start with something Markdown reads as a list, heading, quote or table is refused: reword the prose.
fn wrap(words: &str, first_prefix: &str, rest_prefix: &str) -> String {
    let mut out = String::new();
    let mut line = first_prefix.to_owned();
    let mut line_is_empty = true;
    for word in unbreakable_words(words) {
        if !line_is_empty && line.len() + 1 + word.len() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = rest_prefix.to_owned();
            line_is_empty = true;
            let digits = word.trim_start_matches(|c: char| c.is_ascii_digit());
            let looks_like_markdown = ["-", "*", "+", "#", ">", "|"].contains(&word)
                || word.starts_with('#')
                || (digits.len() < word.len() && (digits == "." || digits == ")"));
            assert!(
                !looks_like_markdown,
                "a wrapped line would start with {word:?}, which Markdown reads as markup: reword"
            );
        }
        if !line_is_empty {
            line.push(' ');
        }
        line.push_str(word);
        line_is_empty = false;
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// The words of `text`, split at spaces outside inline code: a code span such as `37 fa 21 3d` stays on one line.
fn unbreakable_words(text: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut in_code = false;
    let mut start = 0;
    for (at, c) in text.char_indices() {
        match c {
            '`' => in_code = !in_code,
            ' ' if !in_code => {
                if at > start {
                    words.push(&text[start..at]);
                }
                start = at + 1;
            }
            _ => {}
        }
    }
    if start < text.len() {
        words.push(&text[start..]);
    }
    words
}

/// The Markdown document, in order.
struct Doc(String);

impl Doc {
    /// A paragraph, a list (items start with "- ") or a quote ("> "), wrapped at `WIDTH` columns.
    fn text(&mut self, paragraph: &str) {
        for item in paragraph.trim().lines() {
            let (first_prefix, rest_prefix, words) = if let Some(rest) = item.strip_prefix("- ") {
                ("- ", "  ", rest)
            } else if let Some(rest) = item.strip_prefix("> ") {
                ("> ", "> ", rest)
            } else {
                ("", "", item)
            };
            self.0.push_str(&wrap(words, first_prefix, rest_prefix));
        }
        self.0.push('\n');
    }

    fn block(&mut self, content: &str) {
        self.0.push_str("```\n");
        self.0.push_str(content);
        if !content.ends_with('\n') {
            self.0.push('\n');
        }
        self.0.push_str("```\n\n");
    }

    fn table(&mut self, table: &str) {
        self.0.push_str(table);
        self.0.push('\n');
    }

    /// A frame: its direction, its bytes, and the table that explains them.
    fn frame(&mut self, title: &str, frame: &[u8], incoming: IncomingMask, intro: &str) {
        writeln!(self.0, "### {title}\n").unwrap();
        self.text(intro);
        self.block(&hex(frame));
        self.table(&frame_table(frame, incoming));
    }

    /// What the server made of a client frame: the events, what the application did, the output and the state.
    fn server_reaction(&mut self, exchange: &Exchange, application: &str, comment: &str) {
        let mut text = format!(
            "The server's `feed` reports {}.",
            describe_events(&exchange.events)
        );
        if !application.is_empty() {
            write!(text, " {application}").unwrap();
        }
        let output_len: usize = exchange.server_frames.iter().map(Vec::len).sum();
        match output_len {
            0 => text.push_str(" `take_output` returns nothing"),
            n => write!(text, " `take_output` returns {n} bytes").unwrap(),
        }
        if exchange.state_after_feed == exchange.state {
            write!(text, ", and the state stays `State::{:?}`.", exchange.state).unwrap();
        } else {
            write!(
                text,
                ". The state was `State::{:?}` after `feed`, and is `State::{:?}` after `take_output`.",
                exchange.state_after_feed, exchange.state
            )
            .unwrap();
        }
        if !comment.is_empty() {
            write!(text, " {comment}").unwrap();
        }
        self.text(&text);
    }
}

fn render(session: &Session) -> String {
    let handshake = &session.handshake;
    let mut doc = Doc(String::new());
    doc.0.push_str("# One WebSocket session, byte by byte\n\n");
    doc.text(&format!(
        "> This file is generated by `tests/walkthrough.rs` from the real protocol code, and `cargo test` fails when \
         it is out of date. Do not edit it by hand: change the prose in the generator, then run \
         `{UPDATE_VARIABLE}=1 cargo test --test walkthrough` to rewrite it."
    ));
    doc.text(
        "A client opens a WebSocket to an echo server, sends \"Hello\", sends \"Hello\" again in two fragments with a \
         Ping between them, and closes. Every byte below was produced by roomcast's `src/protocol/`: the handshake \
         functions, `encode_frame` for the client's frames, and a server `Connection` driven the way \
         `examples/minimal_echo.rs` drives it. The sections of [RFC 6455](https://www.rfc-editor.org/rfc/rfc6455) \
         are cited where their rules show in the bytes, and the frames follow the examples of section 5.7, two of \
         them byte for byte.",
    );
    doc.text(&format!(
        "So that the bytes are the same on every run, the client uses the RFC's sample key and fixed masking keys: \
         `{}` (the key of 5.7), then `{}`, `{}`, `{}` and `{}`. A real client draws both at random, and a fresh \
         masking key for every frame (4.1, 5.3, 10.3).",
        hex(&HELLO_MASK),
        hex(&FIRST_FRAGMENT_MASK),
        hex(&PING_MASK),
        hex(&LAST_FRAGMENT_MASK),
        hex(&CLOSE_MASK)
    ));

    doc.0
        .push_str("## 1. The opening handshake (1.3, 4.1, 4.2)\n\n");
    doc.text(
        "The client opens a TCP connection and sends an HTTP request asking to upgrade it. Then it waits for the \
         answer before it sends anything more (4.1).",
    );
    writeln!(
        doc.0,
        "### Client to server: the upgrade request ({} bytes)\n",
        handshake.request.len()
    )
    .unwrap();
    doc.text(&format!(
        "Written by `write_client_request` for the host `{HOST}` and the resource `{PATH}`, with \
         `ClientRequest::with_key(\"{SAMPLE_KEY}\")`. Each line ends with CR LF, `0d 0a`:"
    ));
    doc.block(&hexdump(&handshake.request));
    doc.table(&head_table(&handshake.request, explain_request_line));
    doc.text(&format!(
        "The server reads until `parse_request_head` returns the head; until the empty line has arrived, which may \
         take several reads, it returns `Ok(None)`. The head is {} bytes, the whole request. `validate_upgrade` \
         checks its lines against 4.2.1 and returns the value for `Sec-WebSocket-Accept`.",
        handshake.request_head_len
    ));
    doc.0.push_str("### The accept value (1.3, 4.2.2)\n\n");
    doc.text(&format!(
        "The server appends the GUID `{WEBSOCKET_GUID}` to the key as sent (the base64 text, not the {} bytes it \
         encodes), hashes that with SHA-1, and answers with the 20-byte digest in base64. `accept_key` does it:",
        handshake.nonce.len()
    ));
    doc.block(&format!(
        "key + GUID  {SAMPLE_KEY}{WEBSOCKET_GUID}\nSHA-1       {}\nbase64      {}\n",
        hex(&handshake.digest),
        handshake.accept
    ));
    doc.text(
        "With it the server proves that it received this very handshake and read it as a WebSocket one: a server \
         that knows nothing of WebSockets cannot produce the value, and an answer made for another key does not \
         match (1.3).",
    );
    writeln!(
        doc.0,
        "### Server to client: 101 Switching Protocols ({} bytes)\n",
        handshake.response.len()
    )
    .unwrap();
    doc.text(&format!(
        "Written by `write_accept_response(\"{}\", &mut out)`:",
        handshake.accept
    ));
    doc.block(&hexdump(&handshake.response));
    doc.table(&head_table(&handshake.response, explain_response_line));
    doc.text(&format!(
        "The client reads until `parse_server_response` returns the answer. It checks the status, `Upgrade`, \
         `Connection` and `Sec-WebSocket-Accept` against its own request (4.1), and reports a head of {} bytes, no \
         extension and no subprotocol. The WebSocket connection is established (4.1).",
        handshake.response_head_len
    ));

    doc.0.push_str("## 2. How to read a frame (5.2)\n\n");
    doc.text(
        "Each frame starts with two bytes of bit fields, most significant bit first. Numbers wider than a byte are \
         big-endian (network byte order).",
    );
    doc.text(
        "- byte 0: **FIN** (1 bit), set on the last frame of a message; **RSV1, RSV2, RSV3** (1 bit each), for \
         extensions, 0 without one; **opcode** (4 bits): 0x0 continuation, 0x1 text, 0x2 binary, 0x8 Close, 0x9 \
         Ping, 0xA Pong. Opcodes 0x8 and above are control frames (5.5).\n\
         - byte 1: **MASK** (1 bit), set when a masking key follows; **payload length** (7 bits): 0 to 125 is the \
         length itself, 126 says the length is in the next 2 bytes, 127 in the next 8 (whose most significant bit is \
         0). A length is always written in the fewest bytes that hold it.\n\
         - then the **masking key**, 4 bytes, if MASK is set. A client masks every frame and a server none (5.1).\n\
         - then the **payload**. Masked, its byte `i` is the original byte `i` XOR byte `i % 4` of the key (5.3).",
    );

    let hello = &session.hello;
    doc.0
        .push_str("## 3. A text message and its echo (5.7)\n\n");
    doc.frame(
        "Client to server: \"Hello\", masked",
        &hello.client_frame,
        IncomingMask::Required,
        "The second example of 5.7, a single-frame masked text message, byte for byte. It was written by \
         `encode_frame(true, OpCode::Text, b\"Hello\", Some([0x37, 0xfa, 0x21, 0x3d]), &mut out)`; a client's \
         `Connection::send` does the same with a key of its own.",
    );
    doc.text("Unmasking the payload, byte by byte (5.3):");
    doc.table(&unmasking_table(&hello.client_frame));
    doc.server_reaction(
        hello,
        "The echo application answers the message with `send(MessageKind::Text, b\"Hello\")`.",
        "",
    );
    doc.frame(
        "Server to client: the echo",
        &hello.server_frames[0],
        IncomingMask::Forbidden,
        "The first example of 5.7, a single-frame unmasked text message: the same message from the server, without \
         a masking key, so four bytes shorter.",
    );

    doc.0.push_str(
        "## 4. A fragmented message with a Ping in the middle (5.4, 5.5, 5.5.2, 5.5.3)\n\n",
    );
    doc.text(
        "A message may be sent in fragments: the first frame carries the opcode with FIN 0, the ones after it are \
         continuations (opcode 0x0), and the last has FIN 1 (5.4). Control frames may come between the fragments, \
         and are never fragmented themselves (5.4, 5.5). Here is the fragmented \"Hello\" of 5.7, masked since a \
         client sends it.",
    );
    let first = &session.first_fragment;
    doc.frame(
        "Client to server: \"Hel\", the first fragment",
        &first.client_frame,
        IncomingMask::Required,
        "The opcode says text; FIN 0 says that more is coming.",
    );
    doc.server_reaction(
        first,
        "",
        "The connection keeps the three unmasked bytes until the message ends, checking them as UTF-8 as they come \
         (8.1).",
    );
    let ping = &session.ping;
    doc.frame(
        "Client to server: a Ping between the fragments",
        &ping.client_frame,
        IncomingMask::Required,
        "A control frame in the middle of the fragmented message (5.4). Its payload, here \"ping\", is \
         application data that the Pong must carry back (5.5.3).",
    );
    doc.server_reaction(
        ping,
        "The connection queued the Pong as it read the Ping (5.5.2: answer as soon as practical), so the \
         application has nothing to do.",
        "",
    );
    doc.frame(
        "Server to client: the Pong",
        &ping.server_frames[0],
        IncomingMask::Forbidden,
        "The Ping's payload, carried back (5.5.3). It goes out before the message the Ping interrupted is complete.",
    );
    let last = &session.last_fragment;
    doc.frame(
        "Client to server: \"lo\", the last fragment",
        &last.client_frame,
        IncomingMask::Required,
        "Opcode 0x0 continues the text message, and FIN 1 ends it. Like every client frame, it has a masking key of \
         its own (5.3).",
    );
    doc.server_reaction(
        last,
        "Only now is the message reported, whole: the application never sees fragments. The echo application \
         sends it back.",
        "",
    );
    doc.frame(
        "Server to client: the echo, unfragmented",
        &last.server_frames[0],
        IncomingMask::Forbidden,
        "The same bytes as the first echo. Fragmentation belongs to the frames, not to the message, and roomcast \
         sends every message in one frame.",
    );

    doc.0
        .push_str("## 5. The closing handshake (5.5.1, 7.1)\n\n");
    let close = &session.close;
    doc.frame(
        "Client to server: Close 1000 \"bye\"",
        &close.client_frame,
        IncomingMask::Required,
        "The client starts the closing handshake (7.1.2). The body of a Close is optional; when there is one, it \
         starts with a 2-byte status code, here 1000, normal closure (7.4.1), and the rest is a reason in UTF-8, \
         useful for debugging and not necessarily readable by people (5.5.1). After its Close the client sends no \
         more data (5.5.1).",
    );
    doc.server_reaction(
        close,
        "",
        "A Close received before one was sent must be answered with a Close (5.5.1): the connection owed it, and \
         `take_output` wrote it.",
    );
    doc.frame(
        "Server to client: the answering Close",
        &close.server_frames[0],
        IncomingMask::Forbidden,
        "It echoes the status code, as 5.5.1 suggests, and gives no reason.",
    );
    doc.text(&format!(
        "Each side has sent and received a Close: the closing handshake is complete, and the connection's close \
         code is {}, the code in the client's Close (7.1.5). What remains is TCP. The server closes it at once, and \
         first, so that the server and not the client holds the TIME_WAIT state; the client waits for that rather \
         than closing its end itself (5.5.1, 7.1.1), as `examples/minimal_client.rs` does. Once TCP is closed, so \
         is the WebSocket connection (7.1.4).",
        session.close_code.map_or(0, CloseCode::get)
    ));

    doc.0.push_str("## 6. The whole session\n\n");
    let mut client_stream = handshake.request.clone();
    let mut server_stream = handshake.response.clone();
    for exchange in [
        &session.hello,
        &session.first_fragment,
        &session.ping,
        &session.last_fragment,
        &session.close,
    ] {
        client_stream.extend_from_slice(&exchange.client_frame);
        server_stream.extend(exchange.server_frames.iter().flatten());
    }
    doc.text(&format!(
        "Everything the client sent, {} bytes; the frames start at offset `{:04x}`:",
        client_stream.len(),
        handshake.request.len()
    ));
    doc.block(&hexdump(&client_stream));
    doc.text(&format!(
        "Everything the server sent, {} bytes; the frames start at offset `{:04x}`:",
        server_stream.len(),
        handshake.response.len()
    ));
    doc.block(&hexdump(&server_stream));
    doc.0.trim_end().to_owned() + "\n"
}

fn walkthrough_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/walkthrough.md")
}

#[test]
fn docs_walkthrough_md_is_what_the_code_generates() {
    let generated = render(&run_session());
    let path = walkthrough_path();
    if std::env::var_os(UPDATE_VARIABLE).is_some() {
        std::fs::write(&path, &generated).expect("write docs/walkthrough.md");
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    if on_disk == generated {
        return;
    }
    let first_difference = on_disk
        .lines()
        .zip(generated.lines())
        .position(|(old, new)| old != new)
        .unwrap_or_else(|| on_disk.lines().count().min(generated.lines().count()));
    panic!(
        "docs/walkthrough.md is out of date with the code that generates it (tests/walkthrough.rs).\n\
         First difference at line {}:\n  in the file: {:?}\n  generated:   {:?}\n\
         If the change is intended, run `{UPDATE_VARIABLE}=1 cargo test --test walkthrough` and commit the file.",
        first_difference + 1,
        on_disk.lines().nth(first_difference).unwrap_or("(end of file)"),
        generated.lines().nth(first_difference).unwrap_or("(end of file)"),
    );
}

#[test]
fn the_session_is_the_rfc_examples_byte_for_byte() {
    let session = run_session();
    // 1.3 and 4.2.2: the sample key and its accept value.
    assert_eq!(session.handshake.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_eq!(session.handshake.accept, accept_key(SAMPLE_KEY.as_bytes()));
    assert_eq!(session.handshake.nonce, b"the sample nonce");
    // 5.7: a single-frame masked text message, and the unmasked one.
    assert_eq!(
        session.hello.client_frame,
        [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
    );
    assert_eq!(
        session.hello.server_frames,
        [vec![0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]]
    );
    // 5.7's fragmented "Hel" + "lo" (unmasked there) is reassembled into one message and echoed in one frame.
    assert!(session.first_fragment.events.is_empty());
    assert_eq!(
        session.last_fragment.events,
        [Event::Message(Message::Text("Hello".into()))]
    );
    assert_eq!(
        session.last_fragment.server_frames,
        session.hello.server_frames
    );
    // 5.5.2, 5.5.3: the Pong carries the Ping's payload, unmasked.
    assert_eq!(
        session.ping.server_frames,
        [vec![0x8a, 0x04, b'p', b'i', b'n', b'g']]
    );
    // 5.5.1: the Close is answered with its code; both sent, the connection is closed (7.1.4).
    assert_eq!(session.close.server_frames, [vec![0x88, 0x02, 0x03, 0xe8]]);
    assert_eq!(session.close.state, State::Closed);
    assert_eq!(session.close_code, Some(CloseCode::NORMAL));
}
