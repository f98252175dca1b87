//! Per-address limits over real sockets: connections one address may hold, request heads it may start per
//! second, and the client address a trusted proxy names in `X-Forwarded-For`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{parse_http_response, TestServer};
use roomcast::config::{AddressLimits, Cidr};

/// A server with the given per-address limits.
fn server(limits: AddressLimits) -> TestServer {
    TestServer::with_config(|c| c.addresses = limits)
}

/// Sends a request and returns the whole response (the server closes after it).
fn request(stream: &mut TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

fn healthz(forwarded_for: Option<&str>) -> String {
    let header = forwarded_for
        .map(|a| format!("X-Forwarded-For: {a}\r\n"))
        .unwrap_or_default();
    format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{header}\r\n")
}

/// True once the server answers `stream` with nothing (it is held open, not refused).
fn is_held_open(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(150)))
        .unwrap();
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
}

#[test]
fn an_address_holds_at_most_its_connections_and_the_next_gets_503_with_retry_after() {
    let server = server(AddressLimits {
        max_connections_per_ip: 3,
        handshake_rate_per_ip: 0.0,
        trusted_proxies: Vec::new(),
        ..AddressLimits::default()
    });
    let mut held: Vec<TcpStream> = (0..3).map(|_| server.tcp()).collect();
    for stream in &mut held {
        assert!(is_held_open(stream));
    }
    let refused = request(&mut server.tcp(), "");
    let (status, body) = parse_http_response(&refused);
    assert_eq!(status, 503, "{refused}");
    assert!(refused.contains("\r\nRetry-After: 10\r\n"), "{refused}");
    assert!(body.contains("too many connections from your address"));
    drop(held.pop());
    std::thread::sleep(Duration::from_millis(100));
    let mut again = server.tcp();
    assert!(is_held_open(&mut again), "a freed slot is given back");
    drop(again);
    std::thread::sleep(Duration::from_millis(100));
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("roomcast_handshake_failures_total{reason=\"too_many_from_address\"} 1\n"),
        "{metrics}"
    );
}

#[test]
fn requests_beyond_the_rate_get_429_with_retry_after() {
    let server = server(AddressLimits {
        max_connections_per_ip: 0,
        handshake_rate_per_ip: 2.0,
        handshake_burst_per_ip: 3,
        trusted_proxies: Vec::new(),
    });
    for _ in 0..3 {
        let (status, _) = parse_http_response(&request(&mut server.tcp(), &healthz(None)));
        assert_eq!(status, 200);
    }
    let refused = request(&mut server.tcp(), &healthz(None));
    assert!(
        refused.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{refused}"
    );
    assert!(refused.contains("\r\nRetry-After: 1\r\n"), "{refused}");
    std::thread::sleep(Duration::from_millis(600));
    let (status, _) = parse_http_response(&request(&mut server.tcp(), &healthz(None)));
    assert_eq!(status, 200, "the rate gives a token back");
}

#[test]
fn behind_a_trusted_proxy_each_forwarded_address_has_its_own_limits() {
    let server = server(AddressLimits {
        max_connections_per_ip: 0,
        handshake_rate_per_ip: 1.0,
        handshake_burst_per_ip: 2,
        trusted_proxies: Cidr::loopback(),
    });
    for client in ["203.0.113.1", "203.0.113.2"] {
        for _ in 0..2 {
            let (status, _) =
                parse_http_response(&request(&mut server.tcp(), &healthz(Some(client))));
            assert_eq!(status, 200, "{client}");
        }
    }
    let (status, _) =
        parse_http_response(&request(&mut server.tcp(), &healthz(Some("203.0.113.1"))));
    assert_eq!(status, 429);
    // A client cannot pick its address: the proxy appends the real one, and that is the one counted.
    let (status, _) = parse_http_response(&request(
        &mut server.tcp(),
        &healthz(Some("198.51.100.77, 203.0.113.1")),
    ));
    assert_eq!(status, 429);
}

#[test]
fn an_untrusted_peer_cannot_name_another_address() {
    let server = server(AddressLimits {
        max_connections_per_ip: 0,
        handshake_rate_per_ip: 1.0,
        handshake_burst_per_ip: 2,
        trusted_proxies: Vec::new(),
    });
    for i in 0..2 {
        let forged = format!("203.0.113.{i}");
        let (status, _) = parse_http_response(&request(&mut server.tcp(), &healthz(Some(&forged))));
        assert_eq!(status, 200);
    }
    let (status, _) =
        parse_http_response(&request(&mut server.tcp(), &healthz(Some("203.0.113.99"))));
    assert_eq!(status, 429, "every request counted against 127.0.0.1");
}

#[test]
fn a_proxied_connection_counts_against_the_forwarded_address() {
    let server = server(AddressLimits {
        max_connections_per_ip: 2,
        handshake_rate_per_ip: 0.0,
        trusted_proxies: Cidr::loopback(),
        ..AddressLimits::default()
    });
    let upgrade = |forwarded: &str| {
        format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             X-Forwarded-For: {forwarded}\r\n\r\n"
        )
    };
    let mut open = Vec::new();
    for client in ["203.0.113.1", "203.0.113.1", "203.0.113.2"] {
        let mut stream = server.tcp();
        stream.write_all(upgrade(client).as_bytes()).unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 101", "{client}");
        open.push(stream);
    }
    let refused = request(&mut server.tcp(), &upgrade("203.0.113.1"));
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
}
