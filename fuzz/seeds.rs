//! The seed-corpus generator: writes `fuzz/corpus/TARGET/seed-*` for every target.
//!
//! Run it with `cargo run --manifest-path fuzz/Cargo.toml --example seeds` (stable is fine). It deletes the old
//! `seed-*` files first and leaves every other file (regressions, minimised crashes) alone. The seeds follow the
//! Autobahn testsuite's sections: 1 and 2 (lengths 0/125/126/127/128/65535/65536, pings and pongs), 3 (reserved
//! bits), 4 (reserved opcodes), 5 (fragmentation, interleaved control frames), 6 (invalid UTF-8, fail-fast), 7
//! (closing, close codes from 7.7 and 7.9) and 9 (large messages, declared in the header only where a whole
//! frame would make the seed large), 12 and 13 (permessage-deflate: Autobahn's offers and answers, RFC 7692's
//! example payloads, compressed messages, and conversations through compressing connections), plus the
//! handshake's requirements and the chat protocol's messages.

use std::fs;
use std::path::{Path, PathBuf};

use roomcast_fuzz::chat_ops::{ChatInput, ChatOp, Content, JoinExtras, Name, RawText};
use roomcast_fuzz::conn_ops::{ClientFrame, ConnInput, LenForm, Op, Payload};
use roomcast_fuzz::deflate_ops::{Body, DeflateInput, DeflateOp, Negotiation, ReaderPlan};
use roomcast_fuzz::extensions_input::ExtensionsInput;
use roomcast_fuzz::inflate_input::{InflateInput, MessageOp};
use roomcast_fuzz::raw::RawInput;

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONT: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Chunking plans the raw seeds are written with: one read, byte by byte, odd sizes, empty reads, 1 KiB.
const PLANS: &[&[u8]] = &[&[], &[1], &[2, 3, 5], &[0, 7], &[0xF0]];

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut total = 0;
    total += write_target(&root, "frame_parser", frame_parser_seeds());
    total += write_target(&root, "handshake", handshake_seeds());
    total += write_target(&root, "utf8", utf8_seeds());
    total += write_target(&root, "connection", connection_seeds());
    total += write_target(&root, "chat_message", chat_seeds());
    total += write_target(&root, "extensions", extensions_seeds());
    total += write_target(&root, "inflate", inflate_seeds());
    total += write_target(&root, "deflate_connection", deflate_connection_seeds());
    println!("wrote {total} seeds under {}", root.display());
}

/// Replaces the `seed-*` files of one target's corpus.
fn write_target(root: &Path, target: &str, seeds: Vec<(String, Vec<u8>)>) -> usize {
    let dir = root.join(target);
    fs::create_dir_all(&dir).expect("create the corpus directory");
    for entry in fs::read_dir(&dir).expect("read the corpus directory") {
        let path = entry.expect("a directory entry").path();
        let is_seed = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("seed-"));
        if is_seed {
            fs::remove_file(&path).expect("remove an old seed");
        }
    }
    let count = seeds.len();
    let mut bytes = 0;
    for (name, data) in seeds {
        bytes += data.len();
        fs::write(dir.join(format!("seed-{name}")), data).expect("write a seed");
    }
    println!("{target}: {count} seeds, {bytes} bytes");
    count
}

/// A final frame with a byte payload, masked with a fixed key (a client's frame).
fn masked(opcode: u8, payload: &[u8]) -> ClientFrame {
    ClientFrame::masked(opcode, Payload::Bytes(payload.to_vec()))
}

fn fragment(opcode: u8, payload: &[u8]) -> ClientFrame {
    ClientFrame {
        fin: false,
        ..masked(opcode, payload)
    }
}

fn fill(opcode: u8, len: u32) -> ClientFrame {
    ClientFrame::masked(opcode, Payload::Fill { byte: b'*', len })
}

fn close_frame(code: u16, reason: &[u8]) -> ClientFrame {
    ClientFrame::masked(
        CLOSE,
        Payload::CloseBody {
            code,
            reason: reason.to_vec(),
        },
    )
}

fn unmasked(frame: ClientFrame) -> ClientFrame {
    ClientFrame {
        mask: None,
        ..frame
    }
}

fn stream(frames: &[ClientFrame]) -> Vec<u8> {
    frames.iter().flat_map(ClientFrame::to_bytes).collect()
}

/// The close codes of Autobahn 7.7 (valid) and 7.9 (invalid).
const VALID_CODES: &[u16] = &[
    1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
];
const INVALID_CODES: &[u16] = &[
    0, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
];

/// Named client frame sequences shared by `frame_parser` and `connection`.
fn frame_cases() -> Vec<(String, Vec<ClientFrame>)> {
    let mut cases: Vec<(String, Vec<ClientFrame>)> = Vec::new();
    for len in [0u32, 125, 126, 127, 128, 1000] {
        cases.push((format!("1.1-text-{len}"), vec![fill(TEXT, len)]));
        cases.push((format!("1.2-binary-{len}"), vec![fill(BINARY, len)]));
    }
    cases.push(("2.1-ping-empty".into(), vec![masked(PING, b"")]));
    cases.push(("2.2-ping-text".into(), vec![masked(PING, b"Hello, world!")]));
    cases.push((
        "2.3-ping-binary".into(),
        vec![masked(PING, &[0, 0xFF, 0xFE, 0xFD, 0xFC])],
    ));
    cases.push(("2.4-ping-125".into(), vec![fill(PING, 125)]));
    cases.push(("2.5-ping-126".into(), vec![fill(PING, 126)]));
    cases.push(("2.7-unsolicited-pong".into(), vec![masked(PONG, b"")]));
    cases.push((
        "2.8-unsolicited-pong-payload".into(),
        vec![masked(PONG, b"unsolicited")],
    ));
    cases.push((
        "2.10-ten-pings".into(),
        (0..10u8).map(|i| masked(PING, &[b'0' + i])).collect(),
    ));
    for rsv in 1..8u8 {
        let mut frame = masked(TEXT, b"Hello");
        frame.rsv = rsv;
        cases.push((
            format!("3.{rsv}-rsv-text"),
            vec![masked(TEXT, b"ok"), frame, masked(PING, b"")],
        ));
    }
    let mut rsv_ping = masked(PING, b"");
    rsv_ping.rsv = 4;
    cases.push(("3.6-rsv-ping".into(), vec![rsv_ping]));
    for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        cases.push((
            format!("4-reserved-opcode-{op:x}"),
            vec![masked(TEXT, b"ok"), masked(op, b"x")],
        ));
        cases.push((
            format!("4-reserved-opcode-{op:x}-empty"),
            vec![masked(op, b"")],
        ));
    }
    cases.push((
        "5.1-fragmented-ping".into(),
        vec![fragment(PING, b"frag"), masked(CONT, b"ment")],
    ));
    cases.push((
        "5.2-fragmented-pong".into(),
        vec![fragment(PONG, b"frag"), masked(CONT, b"ment")],
    ));
    cases.push((
        "5.3-text-two-fragments".into(),
        vec![fragment(TEXT, b"frag"), masked(CONT, b"ment")],
    ));
    cases.push((
        "5.6-text-ping-interleaved".into(),
        vec![
            fragment(TEXT, b"fragment1"),
            masked(PING, b"ping"),
            masked(CONT, b"fragment2"),
        ],
    ));
    cases.push((
        "5.8-one-byte-fragments".into(),
        b"fragmented"
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let op = if i == 0 { TEXT } else { CONT };
                if i == 9 {
                    masked(op, &[*b])
                } else {
                    fragment(op, &[*b])
                }
            })
            .collect(),
    ));
    cases.push((
        "5.9-continuation-alone".into(),
        vec![masked(CONT, b"fragment")],
    ));
    cases.push((
        "5.10-continuation-then-text".into(),
        vec![fragment(CONT, b"frag"), masked(TEXT, b"ment")],
    ));
    cases.push((
        "5.15-new-message-inside-fragmented".into(),
        vec![
            fragment(TEXT, b"f1"),
            masked(CONT, b"f2"),
            masked(CONT, b"f3"),
            masked(TEXT, b"f4"),
        ],
    ));
    cases.push((
        "5.18-text-text-no-continuation".into(),
        vec![fragment(TEXT, b"f1"), masked(TEXT, b"f2")],
    ));
    cases.push((
        "5.19-pings-between-fragments".into(),
        vec![
            fragment(TEXT, b"f1"),
            fragment(CONT, b"f2"),
            masked(PING, b"p1"),
            fragment(CONT, b"f3"),
            masked(PONG, b"p2"),
            masked(CONT, b"f4"),
        ],
    ));
    cases.push((
        "5-empty-fragments".into(),
        vec![fragment(TEXT, b""), fragment(CONT, b""), masked(CONT, b"")],
    ));
    let kosme = "κόσμε".as_bytes();
    let mut kosme_bad = kosme.to_vec();
    kosme_bad.extend_from_slice(&[0xED, 0xA0, 0x80]);
    kosme_bad.extend_from_slice(b"edited");
    cases.push(("6.3-kosme".into(), vec![masked(TEXT, kosme)]));
    cases.push((
        "6.3.1-kosme-surrogate".into(),
        vec![masked(TEXT, &kosme_bad)],
    ));
    cases.push((
        "6.4.1-fail-fast-fragments".into(),
        vec![
            fragment(TEXT, kosme),
            fragment(CONT, &[0xF4, 0x90, 0x80, 0x80]),
            masked(CONT, b"edited"),
        ],
    ));
    cases.push((
        "6.4.2-fail-fast-split-code-point".into(),
        vec![
            fragment(
                TEXT,
                &[
                    0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xF4,
                ],
            ),
            masked(CONT, &[0x90, 0x80, 0x80, 0x65]),
        ],
    ));
    cases.push((
        "6.5-split-multibyte".into(),
        vec![fragment(TEXT, &[0xE2, 0x82]), masked(CONT, &[0xAC])],
    ));
    cases.push((
        "6.14-truncated-at-end".into(),
        vec![masked(TEXT, &[b'a', 0xE2, 0x82])],
    ));
    cases.push((
        "6.16-impossible-bytes".into(),
        vec![masked(TEXT, &[0xFE, 0xFE, 0xFF, 0xFF])],
    ));
    cases.push((
        "6-binary-not-validated".into(),
        vec![masked(BINARY, &[0xFF, 0xFE])],
    ));
    cases.push(("7.1.1-close-empty".into(), vec![masked(CLOSE, b"")]));
    cases.push((
        "7.1.2-close-close".into(),
        vec![close_frame(1000, b""), close_frame(1000, b"")],
    ));
    cases.push((
        "7.1.3-close-ping".into(),
        vec![close_frame(1000, b""), masked(PING, b"x")],
    ));
    cases.push((
        "7.1.4-close-text".into(),
        vec![close_frame(1000, b""), masked(TEXT, b"after")],
    ));
    cases.push((
        "7.1.5-close-mid-message".into(),
        vec![
            fragment(TEXT, b"frag"),
            close_frame(1000, b""),
            masked(CONT, b"ment"),
        ],
    ));
    cases.push(("7.3.2-close-one-byte".into(), vec![masked(CLOSE, &[0x03])]));
    cases.push((
        "7.3.4-close-reason".into(),
        vec![close_frame(1000, b"Hello World!")],
    ));
    cases.push((
        "7.3.5-close-reason-123".into(),
        vec![close_frame(1000, &[b'*'; 123])],
    ));
    cases.push((
        "7.3.6-close-reason-124".into(),
        vec![close_frame(1000, &[b'*'; 124])],
    ));
    cases.push((
        "7.5.1-close-bad-utf8-reason".into(),
        vec![close_frame(1000, &kosme_bad)],
    ));
    for code in VALID_CODES {
        cases.push((format!("7.7-close-{code}"), vec![close_frame(*code, b"")]));
    }
    for code in INVALID_CODES {
        cases.push((format!("7.9-close-{code}"), vec![close_frame(*code, b"")]));
    }
    let mut non_minimal_16 = masked(TEXT, b"short");
    non_minimal_16.len_form = LenForm::Forced16;
    cases.push(("non-minimal-16".into(), vec![non_minimal_16]));
    let mut non_minimal_64 = fill(BINARY, 200);
    non_minimal_64.len_form = LenForm::Forced64;
    cases.push(("non-minimal-64".into(), vec![non_minimal_64]));
    cases.push((
        "unmasked-text".into(),
        vec![unmasked(masked(TEXT, b"Hello"))],
    ));
    cases
}

fn frame_parser_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (i, (name, frames)) in frame_cases().into_iter().enumerate() {
        let plan = PLANS[i % PLANS.len()];
        seeds.push((
            format!("client-{name}"),
            RawInput::encode(0, plan, &stream(&frames)),
        ));
        let server: Vec<ClientFrame> = frames.into_iter().map(unmasked).collect();
        seeds.push((
            format!("server-{name}"),
            RawInput::encode(1, plan, &stream(&server)),
        ));
    }
    // Lengths whose whole frame would make a large seed: the header and a little payload.
    for (name, header) in [
        ("9-len-65535", vec![0x82, 0xFE, 0xFF, 0xFF]),
        ("9-len-65536", vec![0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0]),
        ("9-len-16m", vec![0x82, 0xFF, 0, 0, 0, 0, 1, 0, 0, 0]),
        (
            "len-2^63-1",
            vec![0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
        ),
        ("len-high-bit", vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]),
        ("len-16-non-minimal-125", vec![0x82, 0xFE, 0, 125]),
        (
            "len-64-non-minimal-65535",
            vec![0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF],
        ),
    ] {
        let mut client = header.clone();
        client[1] |= 0x80;
        client.extend_from_slice(&[1, 2, 3, 4]);
        client.extend_from_slice(b"payload");
        seeds.push((format!("client-{name}"), RawInput::encode(0, &[3], &client)));
        let mut server = header;
        server.extend_from_slice(b"payload");
        seeds.push((format!("server-{name}"), RawInput::encode(1, &[1], &server)));
    }
    seeds.push((
        "masked-to-client".into(),
        RawInput::encode(1, &[], &stream(&[masked(TEXT, b"hi")])),
    ));
    seeds.push((
        "truncated-header".into(),
        RawInput::encode(0, &[1], &[0x81, 0xFE, 0x01]),
    ));
    seeds
}

/// The RFC 6455 1.3 sample request, line by line.
const SAMPLE: &[&str] = &[
    "GET /chat HTTP/1.1",
    "Host: server.example.com",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Origin: http://example.com",
    "Sec-WebSocket-Version: 13",
];

fn request(lines: &[&str], eol: &str) -> Vec<u8> {
    let mut out = String::new();
    for line in lines {
        out.push_str(line);
        out.push_str(eol);
    }
    out.push_str(eol);
    out.into_bytes()
}

/// The sample with the line starting with `prefix` replaced (or removed, for `None`).
fn sample_with(prefix: &str, line: Option<&str>) -> Vec<u8> {
    let lines: Vec<&str> = SAMPLE
        .iter()
        .filter_map(|l| {
            if l.starts_with(prefix) {
                line
            } else {
                Some(*l)
            }
        })
        .collect();
    request(&lines, "\r\n")
}

fn handshake_seeds() -> Vec<(String, Vec<u8>)> {
    let server_limit = 0x80;
    let mut cases: Vec<(String, u8, Vec<u8>)> = vec![
        ("rfc-sample".into(), server_limit, request(SAMPLE, "\r\n")),
        ("bare-lf".into(), server_limit, request(SAMPLE, "\n")),
        (
            "not-get".into(),
            server_limit,
            sample_with("GET", Some("POST /chat HTTP/1.1")),
        ),
        (
            "http-1.0".into(),
            server_limit,
            sample_with("GET", Some("GET /chat HTTP/1.0")),
        ),
        (
            "http-2".into(),
            server_limit,
            sample_with("GET", Some("GET /chat HTTP/2.0")),
        ),
        ("no-host".into(), server_limit, sample_with("Host", None)),
        (
            "empty-host".into(),
            server_limit,
            sample_with("Host", Some("Host:")),
        ),
        (
            "upgrade-h2c".into(),
            server_limit,
            sample_with("Upgrade", Some("Upgrade: h2c")),
        ),
        (
            "upgrade-list".into(),
            server_limit,
            sample_with("Upgrade", Some("upgrade: h2c, WebSocket")),
        ),
        (
            "connection-keep-alive".into(),
            server_limit,
            sample_with("Connection", Some("Connection: keep-alive")),
        ),
        (
            "connection-list".into(),
            server_limit,
            sample_with("Connection", Some("connection: keep-alive, UPGRADE")),
        ),
        (
            "version-8".into(),
            server_limit,
            sample_with("Sec-WebSocket-Version", Some("Sec-WebSocket-Version: 8")),
        ),
        (
            "version-list".into(),
            server_limit,
            sample_with(
                "Sec-WebSocket-Version",
                Some("Sec-WebSocket-Version: 13, 8"),
            ),
        ),
        (
            "no-version".into(),
            server_limit,
            sample_with("Sec-WebSocket-Version", None),
        ),
        (
            "no-key".into(),
            server_limit,
            sample_with("Sec-WebSocket-Key", None),
        ),
        (
            "key-short".into(),
            server_limit,
            sample_with("Sec-WebSocket-Key", Some("Sec-WebSocket-Key: c2hvcnQ=")),
        ),
        (
            "key-no-padding".into(),
            server_limit,
            sample_with(
                "Sec-WebSocket-Key",
                Some("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ"),
            ),
        ),
        (
            "key-spaces".into(),
            server_limit,
            sample_with(
                "Sec-WebSocket-Key",
                Some("Sec-WebSocket-Key:   dGhlIHNhbXBsZSBub25jZQ==   "),
            ),
        ),
        (
            "key-17-bytes".into(),
            server_limit,
            sample_with(
                "Sec-WebSocket-Key",
                Some("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA="),
            ),
        ),
    ];
    let mut two_keys = SAMPLE.to_vec();
    two_keys.push("sec-websocket-key: AQIDBAUGBwgJCgsMDQ4PEA==");
    cases.push(("two-keys".into(), server_limit, request(&two_keys, "\r\n")));
    let mut two_hosts = SAMPLE.to_vec();
    two_hosts.push("HOST: other.example.com");
    cases.push((
        "two-hosts".into(),
        server_limit,
        request(&two_hosts, "\r\n"),
    ));
    let mut with_frame = request(SAMPLE, "\r\n");
    with_frame.extend_from_slice(&[
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ]);
    cases.push(("head-then-frame".into(), server_limit, with_frame));
    let mut many = vec!["GET / HTTP/1.1"];
    many.extend(std::iter::repeat_n("X-A: b", 65));
    cases.push((
        "too-many-headers".into(),
        server_limit,
        request(&many, "\r\n"),
    ));
    let long_value = format!("X-Long: {}", "a".repeat(300));
    let mut long = SAMPLE.to_vec();
    long.push(&long_value);
    // A limit of 16 + 8 * 40 = 336 bytes: the sample fits, the sample plus the long header does not.
    cases.push(("over-small-limit".into(), 40, request(&long, "\r\n")));
    cases.push(("within-small-limit".into(), 40, request(SAMPLE, "\r\n")));
    cases.push((
        "partial".into(),
        server_limit,
        b"GET /chat HTTP/1.1\r\nHost: a\r\nUpg".to_vec(),
    ));
    cases.push((
        "tls-client-hello".into(),
        server_limit,
        vec![0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00],
    ));
    cases.push((
        "garbage-line".into(),
        server_limit,
        b"\x00GET / HTTP/1.1\r\n\r\n".to_vec(),
    ));
    cases.push((
        "header-without-colon".into(),
        server_limit,
        b"GET / HTTP/1.1\r\nHost\r\n\r\n".to_vec(),
    ));
    cases
        .into_iter()
        .enumerate()
        .map(|(i, (name, flags, bytes))| {
            (
                name,
                RawInput::encode(flags, PLANS[i % PLANS.len()], &bytes),
            )
        })
        .collect()
}

fn utf8_seeds() -> Vec<(String, Vec<u8>)> {
    let mut kosme = "κόσμε".as_bytes().to_vec();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("6.2-valid", "Hello-µ@ßöäüàá-UTF-8!!".as_bytes().to_vec()),
        ("6.3-kosme", kosme.clone()),
        ("6.3-kosme-surrogate", {
            let mut v = kosme.clone();
            v.extend_from_slice(&[0xED, 0xA0, 0x80, b'e', b'd']);
            v
        }),
        ("6.4.1-above-max", {
            kosme.extend_from_slice(&[0xF4, 0x90, 0x80, 0x80, b'e']);
            kosme.clone()
        }),
        (
            "6.4.3-five-byte",
            vec![0xCE, 0xBA, 0xF8, 0x88, 0x80, 0x80, 0x80],
        ),
        (
            "6.7-first-of-each-length",
            vec![0x00, 0xC2, 0x80, 0xE0, 0xA0, 0x80, 0xF0, 0x90, 0x80, 0x80],
        ),
        (
            "6.8-five-and-six-byte",
            vec![
                0xF8, 0x88, 0x80, 0x80, 0x80, 0xFC, 0x84, 0x80, 0x80, 0x80, 0x80,
            ],
        ),
        (
            "6.9-last-of-each-length",
            vec![0x7F, 0xDF, 0xBF, 0xEF, 0xBF, 0xBF, 0xF4, 0x8F, 0xBF, 0xBF],
        ),
        ("6.10-beyond-last", vec![0xF7, 0xBF, 0xBF, 0xBF]),
        (
            "6.11-boundaries",
            vec![
                0xED, 0x9F, 0xBF, 0xEE, 0x80, 0x80, 0xEF, 0xBF, 0xBD, 0xF4, 0x8F, 0xBF, 0xBF,
            ],
        ),
        ("6.11-above-max", vec![0xF4, 0x90, 0x80, 0x80]),
        ("6.12-continuations", vec![0x80, 0xBF, 0x80, 0xBF]),
        (
            "6.13-lonely-starts",
            vec![0xC0, 0x20, 0xC1, 0x20, 0xE0, 0x20, 0xF0, 0x20, 0xF8, 0x20],
        ),
        ("6.14-last-byte-missing", vec![0xE0, 0x80]),
        ("6.14-truncated-4", vec![0xF0, 0x9F, 0x98]),
        (
            "6.15-concatenated-incomplete",
            vec![0xC0, 0xE0, 0x80, 0xF0, 0x80, 0x80, 0xDF, 0xEF, 0xBF],
        ),
        ("6.16-impossible", vec![0xFE, 0xFE, 0xFF, 0xFF]),
        (
            "6.17-overlong-slash",
            vec![0xC0, 0xAF, 0xE0, 0x80, 0xAF, 0xF0, 0x80, 0x80, 0xAF],
        ),
        (
            "6.18-max-overlong",
            vec![0xC1, 0xBF, 0xE0, 0x9F, 0xBF, 0xF0, 0x8F, 0xBF, 0xBF],
        ),
        ("6.19-overlong-nul", vec![0xC0, 0x80, 0xE0, 0x80, 0x80]),
        (
            "6.20-lone-surrogates",
            vec![0xED, 0xA0, 0x80, 0xED, 0xBF, 0xBF],
        ),
        (
            "6.21-paired-surrogates",
            vec![0xED, 0xA0, 0x80, 0xED, 0xB0, 0x80],
        ),
        (
            "6.22-noncharacters",
            vec![0xEF, 0xBF, 0xBE, 0xEF, 0xBF, 0xBF],
        ),
        ("6.23-replacement", vec![0xEF, 0xBF, 0xBD]),
        ("emoji", "🦀 ✓ héllo 𝄞".as_bytes().to_vec()),
        ("empty", Vec::new()),
    ];
    let mut seeds = Vec::new();
    for (i, (name, bytes)) in cases.into_iter().enumerate() {
        seeds.push((format!("{name}-whole"), RawInput::encode(0, &[], &bytes)));
        let plan = PLANS[1 + i % (PLANS.len() - 1)];
        seeds.push((format!("{name}-pieces"), RawInput::encode(0, plan, &bytes)));
    }
    seeds
}

fn conn_input(limit: u8, plans: (&[u8], &[u8]), ops: Vec<Op>) -> Vec<u8> {
    ConnInput {
        limit,
        plan_a: plans.0.to_vec(),
        plan_b: plans.1.to_vec(),
        ops,
    }
    .encode()
}

fn connection_seeds() -> Vec<(String, Vec<u8>)> {
    let plan_pairs: &[(&[u8], &[u8])] = &[(&[], &[1]), (&[3], &[0, 7]), (&[0xF0], &[2, 0x81])];
    let mut seeds = Vec::new();
    for (i, (name, frames)) in frame_cases().into_iter().enumerate() {
        let ops = frames.into_iter().map(Op::Frame).collect();
        seeds.push((name, conn_input(0, plan_pairs[i % plan_pairs.len()], ops)));
    }
    for len in [65535u32, 65536] {
        seeds.push((
            format!("9-text-{len}"),
            conn_input(0, (&[0xF3], &[0xFF, 1]), vec![Op::Frame(fill(TEXT, len))]),
        ));
    }
    seeds.push((
        "9-fragmented-65536".into(),
        conn_input(
            0,
            (&[0xF0], &[0xFF]),
            vec![
                Op::Frame(ClientFrame {
                    fin: false,
                    ..fill(BINARY, 65000)
                }),
                Op::Frame(fill(CONT, 536)),
            ],
        ),
    ));
    // Limit selector 4 | 10 << 3: a ten-byte limit.
    let ten = 4 | 10 << 3;
    seeds.push((
        "limit-exact".into(),
        conn_input(ten, (&[], &[1]), vec![Op::Frame(fill(BINARY, 10))]),
    ));
    seeds.push((
        "limit-over".into(),
        conn_input(ten, (&[], &[1]), vec![Op::Frame(fill(TEXT, 11))]),
    ));
    seeds.push((
        "limit-over-fragmented".into(),
        conn_input(
            ten,
            (&[2], &[1]),
            vec![
                Op::Frame(fragment(TEXT, b"123456")),
                Op::Frame(masked(CONT, b"78901")),
            ],
        ),
    ));
    seeds.push((
        "limit-126".into(),
        conn_input(
            5 | 2 << 3,
            (&[], &[1]),
            vec![Op::Frame(fill(TEXT, 126)), Op::Frame(fill(TEXT, 127))],
        ),
    ));
    seeds.push((
        "server-sends".into(),
        conn_input(
            0,
            (&[], &[1]),
            vec![
                Op::SendText("héllo".as_bytes().to_vec()),
                Op::SendBinary(vec![0, 1, 2]),
                Op::SendPing(b"beat".to_vec()),
                Op::Frame(masked(PONG, b"beat")),
                Op::SendPing(vec![0; 126]),
                Op::SendText(vec![b'x'; 200]),
            ],
        ),
    ));
    seeds.push((
        "server-closes-first".into(),
        conn_input(
            0,
            (&[1], &[]),
            vec![
                Op::Close {
                    code: 1001,
                    reason: b"going away".to_vec(),
                },
                Op::SendText(b"late".to_vec()),
                Op::Frame(masked(PING, b"after our close")),
                Op::Frame(masked(TEXT, b"still read")),
                Op::Frame(close_frame(1001, b"")),
                Op::Frame(masked(TEXT, b"ignored")),
            ],
        ),
    ));
    seeds.push((
        "server-close-unsendable-code".into(),
        conn_input(
            0,
            (&[], &[]),
            vec![Op::Close {
                code: 1005,
                reason: vec![0xFF; 130],
            }],
        ),
    ));
    seeds.push((
        "server-close-then-protocol-error".into(),
        conn_input(
            0,
            (&[], &[3]),
            vec![
                Op::Close {
                    code: 4000,
                    reason: vec![],
                },
                Op::Frame(masked(7, b"")),
            ],
        ),
    ));
    seeds.push((
        "garbage".into(),
        conn_input(
            0,
            (&[1], &[]),
            vec![Op::Raw(b"GET / HTTP/1.1\r\n\r\n".to_vec())],
        ),
    ));
    seeds.push((
        "truncated-frame-then-command".into(),
        conn_input(
            0,
            (&[1], &[]),
            vec![
                Op::Raw(vec![0x81, 0x85, 1, 2]),
                Op::SendText(b"mid".to_vec()),
                Op::Raw(vec![3, 4, b'h' ^ 1, b'e' ^ 2, b'l' ^ 3, b'l' ^ 4, b'o' ^ 1]),
            ],
        ),
    ));
    seeds
}

fn join(conn: u8, user: u8, room: u8, flags: u8) -> ChatOp {
    ChatOp::Join {
        conn,
        user: Name::Pool(user),
        room: Name::Pool(room),
        extras: JoinExtras {
            flags,
            session: 0,
            epoch: 0,
            seq: 0,
        },
    }
}

fn chat(conn: u8, text: &str) -> ChatOp {
    ChatOp::Chat {
        conn,
        content: Content::Text(text.as_bytes().to_vec()),
    }
}

fn chat_seeds() -> Vec<(String, Vec<u8>)> {
    let (ann, bob, ann_upper, lobby, general) = (0, 1, 2, 3, 4);
    let v2 = 1;
    let mut cases: Vec<(&str, u8, Vec<ChatOp>)> = vec![
        (
            "two-users-talk",
            0,
            vec![
                join(0, ann, lobby, v2),
                join(1, bob, lobby, 0),
                chat(0, "hello"),
                chat(1, "hi ann"),
                ChatOp::Dm {
                    conn: 0,
                    to: Name::Pool(bob),
                    content: Content::Text(b"psst".to_vec()),
                },
                ChatOp::Ping { conn: 1 },
                ChatOp::Leave { conn: 0 },
                ChatOp::Disconnect { conn: 1 },
            ],
        ),
        (
            "session-reclaim",
            0,
            vec![
                join(0, ann, lobby, v2),
                chat(0, "one"),
                // flags: v2 | session | since | session seen | epoch seen.
                ChatOp::Join {
                    conn: 1,
                    user: Name::Pool(ann),
                    room: Name::Pool(lobby),
                    extras: JoinExtras {
                        flags: 0x37,
                        session: 0,
                        epoch: 0,
                        seq: 0,
                    },
                },
                chat(0, "ignored while closing"),
                ChatOp::Disconnect { conn: 0 },
            ],
        ),
        (
            "replay-gap",
            1,
            vec![
                join(0, ann, general, v2),
                chat(0, "1"),
                ChatOp::Advance { ms: 1000 },
                chat(0, "2"),
                chat(0, "3"),
                ChatOp::Advance { ms: 1000 },
                chat(0, "4"),
                chat(0, "5"),
                ChatOp::Join {
                    conn: 1,
                    user: Name::Pool(bob),
                    room: Name::Pool(general),
                    extras: JoinExtras {
                        flags: 0x25,
                        session: 0,
                        epoch: 0,
                        seq: 1,
                    },
                },
            ],
        ),
        (
            "name-taken-and-case",
            0,
            vec![
                join(0, ann, lobby, 0),
                join(1, ann, general, 0),
                join(2, ann_upper, lobby, v2),
                join(0, ann, general, 0),
            ],
        ),
        (
            "not-joined",
            0,
            vec![
                chat(0, "hi"),
                ChatOp::Leave { conn: 0 },
                ChatOp::Dm {
                    conn: 0,
                    to: Name::Pool(bob),
                    content: Content::Text(b"x".to_vec()),
                },
            ],
        ),
        (
            "limits",
            0,
            vec![
                join(0, ann, lobby, v2),
                ChatOp::Chat {
                    conn: 0,
                    content: Content::Long { ch: 0, len: 4000 },
                },
                ChatOp::Chat {
                    conn: 0,
                    content: Content::Long { ch: 2, len: 4001 },
                },
                join(1, 10, 17, v2),
                join(2, 11, 18, v2),
                join(3, 12, 3, v2),
                join(4, 5, 3, v2),
            ],
        ),
        (
            "flood-closes-1008",
            1,
            (0..20)
                .map(|_| ChatOp::Ping { conn: 0 })
                .chain([ChatOp::Advance { ms: 5000 }, ChatOp::Ping { conn: 0 }])
                .collect(),
        ),
        (
            "rooms-evicted",
            1,
            vec![
                join(0, ann, lobby, v2),
                chat(0, "kept?"),
                join(0, ann, general, v2),
                join(0, ann, 9, v2),
                ChatOp::Disconnect { conn: 0 },
                ChatOp::Join {
                    conn: 1,
                    user: Name::Pool(bob),
                    room: Name::Pool(lobby),
                    extras: JoinExtras {
                        flags: 0x25,
                        session: 0,
                        epoch: 0,
                        seq: 1,
                    },
                },
            ],
        ),
        (
            "odd-names",
            0,
            vec![
                ChatOp::Join {
                    conn: 0,
                    user: Name::Text("🦀".as_bytes().to_vec()),
                    room: Name::Text(vec![0xFF, b'r']),
                    extras: JoinExtras {
                        flags: 0x0E,
                        session: 0,
                        epoch: 0,
                        seq: 65535,
                    },
                },
                ChatOp::Dm {
                    conn: 0,
                    to: Name::Pool(14),
                    content: Content::Text("é\u{0}".as_bytes().to_vec()),
                },
            ],
        ),
    ];
    let raw_ops: Vec<ChatOp> = (0..roomcast_fuzz::chat_ops::RAW_POOL.len() as u8)
        .map(|i| ChatOp::Raw {
            conn: i % 3,
            text: RawText::Pool(i),
        })
        .chain([ChatOp::Raw {
            conn: 0,
            text: RawText::Text(b"{\"type\":\"ping\"}".to_vec()),
        }])
        .collect();
    cases.push(("raw-pool", 0, raw_ops));
    // Token mode: ann joins with a valid token for herself, bob with one for ann (forbidden), cat with a wrongly
    // signed one (unauthorized, 4003); ann refreshes with a valid token, then with one that expires in a second,
    // and the clock passes it (4004).
    let token_join = |conn: u8, user: u8, spec: u16| ChatOp::Join {
        conn,
        user: Name::Pool(user),
        room: Name::Pool(3),
        extras: JoinExtras {
            flags: 1,
            session: 0,
            epoch: 0,
            seq: spec,
        },
    };
    cases.push((
        "tokens-join-refresh-expire",
        2,
        vec![
            token_join(0, 0, 0x0005),
            token_join(1, 1, 0x0001),
            token_join(2, 0, 0x0006),
            ChatOp::Refresh {
                conn: 0,
                token: 0x0005,
            },
            ChatOp::Refresh {
                conn: 0,
                token: 0x000D,
            },
            ChatOp::Advance { ms: 5000 },
        ],
    ));
    cases
        .into_iter()
        .map(|(name, config, ops)| (name.to_owned(), ChatInput { config, ops }.encode()))
        .collect()
}

/// Autobahn's client offers (cases 12.* and 13.1-13.7), the browsers' offer, our own, and malformed ones.
fn extensions_seeds() -> Vec<(String, Vec<u8>)> {
    let autobahn_base = "permessage-deflate; client_no_context_takeover; client_max_window_bits";
    let offers: Vec<(&str, Vec<String>)> = vec![
        ("13.1-default", vec![autobahn_base.to_string()]),
        (
            "13.2-server-no-context",
            vec![format!("{autobahn_base}; server_no_context_takeover")],
        ),
        (
            "13.3-server-window-9",
            vec![format!("{autobahn_base}; server_max_window_bits=9")],
        ),
        (
            "13.6-both-15",
            vec![format!(
                "{autobahn_base}; server_no_context_takeover; server_max_window_bits=15"
            )],
        ),
        (
            "13.7-three-offers",
            vec![format!(
                "{autobahn_base}; server_no_context_takeover; server_max_window_bits=9, \
                 {autobahn_base}; server_no_context_takeover, {autobahn_base}"
            )],
        ),
        ("browser", vec!["permessage-deflate; client_max_window_bits".into()]),
        (
            "two-lines-quoted",
            vec![
                "x-webkit-deflate-frame".into(),
                "permessage-deflate; server_max_window_bits=\"10\"; client_max_window_bits=\"1\\2\"".into(),
            ],
        ),
        (
            "declined-then-accepted",
            vec!["permessage-deflate; server_max_window_bits=8, permessage-deflate; x=1, permessage-deflate".into()],
        ),
        ("answer-autobahn-13.5", vec!["permessage-deflate; client_no_context_takeover; client_max_window_bits=9".into()]),
        ("answer-server-window", vec!["permessage-deflate; server_no_context_takeover; server_max_window_bits=11".into()]),
        ("empty-elements", vec![" , ,permessage-deflate ;\tserver_no_context_takeover ,".into(), "".into()]),
        ("unterminated-quote", vec!["permessage-deflate; server_max_window_bits=\"10".into()]),
        ("duplicate-param", vec!["permessage-deflate; client_max_window_bits; CLIENT_MAX_WINDOW_BITS=9".into()]),
    ];
    // Policies: as offered with full windows, no context takeover, and narrow windows.
    let policies = [(0u8, 0xFFu8), (3, 0xFF), (1, 0x9C)];
    offers
        .into_iter()
        .enumerate()
        .map(|(i, (name, lines))| {
            let (flags, windows) = policies[i % policies.len()];
            let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
            (
                name.to_string(),
                ExtensionsInput::encode(flags, windows, &lines),
            )
        })
        .chain(std::iter::once((
            "not-utf8".to_string(),
            ExtensionsInput::encode(0, 0xFF, &[b"permessage-deflate; p=\xff\xfe"]),
        )))
        .collect()
}

/// RFC 7692 7.2.3's example payloads as raw inputs, and structured runs of messages: text under context
/// takeover, a bomb against a small limit, damaged messages, a final block, and tiny budgets.
fn inflate_seeds() -> Vec<(String, Vec<u8>)> {
    let raw = |flags: u8, limit: u16, budget: u8, plan: &[u8], bytes: &[u8]| {
        InflateInput::encode(flags, limit, budget, plan, &[], bytes)
    };
    let msg = |op: u8, arg: u8, repeat: u8, data: &'static [u8]| MessageOp {
        op,
        arg,
        repeat,
        data,
    };
    let text: &[u8] = b"{\"type\":\"chat\",\"room\":\"lobby\",\"text\":\"hello there\"} ";
    // Flags: bit 0 structured, bit 1 no context takeover, bits 2-4 window (value 6: 15 bits, value 0: 9 bits).
    let structured_15 = 1 | 6 << 2;
    let structured_9_reset = 1 | 2;
    vec![
        (
            "7.2.3.1-hello".into(),
            raw(0, 64, 0, &[], &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]),
        ),
        (
            "7.2.3.3-stored".into(),
            raw(
                0,
                64,
                0,
                &[1],
                &[
                    0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
                ],
            ),
        ),
        (
            "7.2.3.4-final-block".into(),
            raw(
                2,
                64,
                0,
                &[3],
                &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00],
            ),
        ),
        (
            "7.2.3.5-two-blocks".into(),
            raw(
                0,
                64,
                1,
                &[2, 5],
                &[
                    0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
                ],
            ),
        ),
        ("7.2.3.6-empty".into(), raw(0, 0, 0, &[], &[0x00])),
        (
            "reserved-block-type".into(),
            raw(0, 64, 0, &[], &[0x07, 0x00]),
        ),
        (
            "chat-with-context".into(),
            InflateInput::encode(
                structured_15,
                4096,
                0,
                &[0, 7],
                &[
                    msg(0, 0, 0, text),
                    msg(0, 0, 0, text),
                    msg(0, 0, 2, text),
                    msg(0, 0, 0, b""),
                ],
                &[],
            ),
        ),
        (
            "bomb-against-small-limit".into(),
            InflateInput::encode(
                structured_15,
                64,
                4,
                &[0xF0],
                &[msg(0, 0, 255, &[0; 255])],
                &[],
            ),
        ),
        (
            "damaged-then-clean".into(),
            InflateInput::encode(
                structured_15,
                8192,
                0,
                &[5],
                &[
                    msg(1, 40, 3, text),
                    msg(0, 0, 0, text),
                    msg(2, 128, 3, text),
                    msg(0, 0, 1, text),
                ],
                &[],
            ),
        ),
        (
            "final-block-then-context".into(),
            InflateInput::encode(
                structured_15,
                8192,
                0,
                &[],
                &[msg(4, 0, 2, text), msg(0, 0, 2, text), msg(0, 0, 2, text)],
                &[],
            ),
        ),
        (
            "only-if-smaller".into(),
            InflateInput::encode(
                structured_9_reset,
                8192,
                1,
                &[1, 2, 3],
                &[
                    msg(3, 0, 0, b"ab"),
                    msg(3, 0, 9, text),
                    msg(3, 0, 0, &[0x8f, 0x11, 0xe3, 0x5a, 0x02]),
                ],
                &[],
            ),
        ),
    ]
}

/// A body of `data` repeated `(repeat + 1) << scale` times.
fn body(data: &[u8], repeat: u8, scale: u8) -> Body {
    Body {
        repeat,
        scale,
        data: data.to_vec(),
    }
}

/// A reader plan: read sizes, inflation budgets, frame budgets (see `deflate_ops`).
fn reader(reads: &[u8], inflate: &[u8], frames: &[u8]) -> ReaderPlan {
    ReaderPlan {
        reads: reads.to_vec(),
        inflate: inflate.to_vec(),
        frames: frames.to_vec(),
    }
}

/// Conversations through compressing connections: the chat route's and the echo route's negotiations, small
/// windows, fragments with Pings between them, budgets of zero and one byte, bombs, damaged and misplaced RSV1
/// frames, and both closing handshakes.
fn deflate_connection_seeds() -> Vec<(String, Vec<u8>)> {
    // Negotiation flags (see `deflate_ops::Negotiation`): bit 3 offers client_max_window_bits as browsers do;
    // bits 5 and 6 are the chat route's policy (no context takeover either way); bit 7 offers nothing.
    let browser_offer = 0x08;
    let chat_route = browser_offer | 0x60;
    let no_offer = 0x80;
    let negotiation = |flags: u8, windows: u8| Negotiation {
        flags,
        windows,
        policy_windows: 0x77,
    };
    let chat = b"{\"type\":\"chat\",\"room\":\"lobby\",\"text\":\"the quick brown fox jumps over the lazy dog\"} ";
    let client = |flags: u8, body: Body, cuts: &[u8]| DeflateOp::ClientMessage {
        flags,
        body,
        cuts: cuts.to_vec(),
    };
    let server = |flags: u8, body: Body| DeflateOp::ServerMessage { flags, body };
    let input = |negotiation: Negotiation,
                 limit: u8,
                 fragment_limit: u8,
                 readers: (ReaderPlan, ReaderPlan),
                 ops: Vec<DeflateOp>| {
        DeflateInput {
            negotiation,
            limit,
            fragment_limit,
            reader_a: readers.0,
            reader_b: readers.1,
            ops,
        }
        .encode()
    };
    let plain_readers = || (reader(&[], &[], &[]), reader(&[7, 0xF0], &[], &[]));
    // Limit selectors: 0 is 64 KiB, 7 is 4 KiB.
    let (limit_64k, limit_4k) = (0, 7);
    vec![
        (
            "chat-route-shared-frames".into(),
            input(
                negotiation(chat_route, 0),
                limit_64k,
                0,
                plain_readers(),
                vec![
                    client(0, body(chat, 3, 0), &[]),
                    server(4, body(chat, 3, 0)),
                    client(0, body(b"hi", 0, 0), &[]),
                    server(4, body(b"ok", 0, 0)),
                    client(0, body(chat, 3, 0), &[]),
                    server(4, body(chat, 3, 0)),
                ],
            ),
        ),
        (
            "echo-route-context-takeover".into(),
            input(
                negotiation(browser_offer, 0),
                limit_64k,
                0,
                (reader(&[1], &[0x41], &[]), reader(&[], &[], &[])),
                vec![
                    client(0, body(chat, 3, 0), &[]),
                    client(0, body(chat, 3, 0), &[]),
                    server(2, body(chat, 3, 0)),
                    server(2, body(chat, 3, 0)),
                    client(1, body(&[1, 2, 3, 4, 5, 6, 7, 8], 255, 2), &[]),
                    server(3, body(&[9, 8, 7], 255, 3)),
                ],
            ),
        ),
        (
            "small-windows".into(),
            // Offers server_max_window_bits=9 and client_max_window_bits=10, both contexts kept.
            input(
                negotiation(0x04 | 0x08 | 0x10, 0x21),
                limit_64k,
                0,
                plain_readers(),
                vec![
                    client(0, body(chat, 40, 0), &[]),
                    server(0, body(chat, 40, 0)),
                    client(0, body(chat, 40, 0), &[]),
                    server(0, body(chat, 40, 0)),
                ],
            ),
        ),
        (
            "fragments-with-pings-one-byte-budget".into(),
            input(
                negotiation(chat_route, 0),
                limit_64k,
                0,
                (reader(&[1], &[2], &[]), reader(&[0xF0], &[0x50], &[1])),
                vec![
                    client(2, body(chat, 20, 0), &[64, 128, 192]),
                    client(3, body(&[0; 16], 255, 0), &[0, 0, 255]),
                    client(0, body(b"short", 0, 0), &[128]),
                ],
            ),
        ),
        (
            "zero-budgets-then-none".into(),
            input(
                negotiation(browser_offer, 0),
                limit_64k,
                0,
                (
                    reader(&[0x20], &[1, 1, 2], &[1]),
                    reader(&[3], &[1, 0], &[2]),
                ),
                vec![
                    client(0, body(chat, 30, 0), &[]),
                    client(0, body(chat, 30, 0), &[100]),
                    server(0, body(chat, 2, 0)),
                ],
            ),
        ),
        (
            "client-message-over-the-limit".into(),
            input(
                negotiation(chat_route, 0),
                limit_4k,
                0,
                (reader(&[], &[0x80], &[]), reader(&[0xF1], &[], &[])),
                vec![
                    client(0, body(chat, 3, 0), &[]),
                    client(0, body(b"aaaa", 255, 3), &[]),
                    server(0, body(b"after the failure", 0, 0)),
                ],
            ),
        ),
        (
            "fragment-limit".into(),
            input(
                negotiation(chat_route, 0),
                limit_64k,
                2,
                plain_readers(),
                vec![
                    client(0, body(chat, 3, 0), &[128]),
                    client(2, body(chat, 3, 0), &[64, 128]),
                ],
            ),
        ),
        (
            "injected-bomb".into(),
            input(
                negotiation(chat_route, 0),
                limit_4k,
                0,
                (reader(&[], &[0x48], &[]), reader(&[5], &[], &[])),
                // Binary, sent as two frames with a Ping between them.
                vec![DeflateOp::Deflated {
                    flags: 0x01 | 0x10 | 0x80,
                    arg: 20,
                    body: body(&[0], 255, 7),
                }],
            ),
        ),
        (
            "injected-damaged-and-final-block".into(),
            input(
                negotiation(browser_offer, 0),
                limit_64k,
                0,
                plain_readers(),
                vec![
                    DeflateOp::Deflated {
                        flags: 0x02,
                        arg: 0,
                        body: body(chat, 3, 0),
                    },
                    client(0, body(chat, 3, 0), &[]),
                    DeflateOp::Deflated {
                        flags: 0x04,
                        arg: 77,
                        body: body(chat, 3, 0),
                    },
                ],
            ),
        ),
        (
            "rsv1-on-a-continuation".into(),
            input(
                negotiation(chat_route, 0),
                limit_64k,
                0,
                plain_readers(),
                vec![DeflateOp::Deflated {
                    flags: 0x10 | 0x20,
                    arg: 128,
                    body: body(chat, 3, 0),
                }],
            ),
        ),
        (
            "rsv1-on-a-ping".into(),
            input(
                negotiation(chat_route, 0),
                limit_64k,
                0,
                plain_readers(),
                vec![
                    client(0, body(chat, 3, 0), &[]),
                    DeflateOp::Frame {
                        flags: 0x01 | 0x08,
                        opcode: 0x9,
                        payload: b"p".to_vec(),
                    },
                ],
            ),
        ),
        (
            "rsv1-without-deflate".into(),
            input(
                negotiation(no_offer, 0),
                limit_64k,
                0,
                plain_readers(),
                vec![
                    client(0, body(chat, 3, 0), &[]),
                    DeflateOp::Deflated {
                        flags: 0,
                        arg: 0,
                        body: body(chat, 3, 0),
                    },
                ],
            ),
        ),
        (
            "closing-both-ways".into(),
            input(
                negotiation(chat_route, 0),
                limit_64k,
                0,
                plain_readers(),
                vec![
                    client(0, body(chat, 3, 0), &[]),
                    DeflateOp::ServerClose {
                        code: 1001,
                        reason: b"going away".to_vec(),
                    },
                    client(0, body(chat, 3, 0), &[]),
                    server(0, body(chat, 3, 0)),
                    DeflateOp::ClientClose {
                        code: 1000,
                        reason: vec![],
                    },
                ],
            ),
        ),
        (
            "raw-garbage".into(),
            input(
                negotiation(browser_offer, 0),
                limit_64k,
                0,
                plain_readers(),
                vec![
                    client(0, body(chat, 3, 0), &[]),
                    DeflateOp::Raw(vec![0xC1, 0x83, 1, 2, 3, 4, 0xff, 0xff, 0xff]),
                ],
            ),
        ),
    ]
}
