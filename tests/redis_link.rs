//! `cluster::RedisLink` against a real `redis-server`, driven over a blocking `std::net::TcpStream`: the
//! handshake, pipelined commands, a script that falls back from `EVALSHA` to `EVAL`, and pub/sub between two links.
//! Each test starts its own server (`common::redis`) and is skipped, loudly, where `redis-server` is missing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use redis_protocol::resp2::types::OwnedFrame;
use roomcast::cluster::{
    Handshake, LinkError, LinkEvent, RedisLink, RedisUrl, Script, Subscription,
};

/// A link and the socket it speaks over.
struct Wired {
    stream: TcpStream,
    link: RedisLink<u32>,
}

impl Wired {
    fn connect(server: &RedisServer, handshake: &Handshake) -> Wired {
        let stream = TcpStream::connect(server.addr()).expect("connect to redis-server");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Wired {
            stream,
            link: RedisLink::new(handshake),
        }
    }

    /// Writes everything queued in one `write_all`: the pipeline goes out in one piece.
    fn flush(&mut self) {
        let pending = self.link.pending_output().to_vec();
        self.stream
            .write_all(&pending)
            .expect("write to redis-server");
        self.link.consumed(pending.len());
    }

    /// Flushes, then reads and feeds until `done` holds for the events so far (or 5 s pass).
    fn until(
        &mut self,
        mut done: impl FnMut(&RedisLink<u32>, &[LinkEvent<u32>]) -> bool,
    ) -> Result<Vec<LinkEvent<u32>>, LinkError> {
        self.flush();
        let mut events = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 4096];
        while !done(&self.link, &events) {
            assert!(Instant::now() < deadline, "no answer in 5 s: {events:?}");
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("redis-server closed the connection"),
                Ok(n) => self.link.feed(&buf[..n], &mut events)?,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("read: {e}"),
            }
            self.flush();
        }
        Ok(events)
    }

    /// Flushes and reads until every command queued so far has its reply.
    fn replies(&mut self) -> Vec<LinkEvent<u32>> {
        self.until(|link, _| link.awaiting_replies() == 0)
            .expect("link failed")
    }
}

fn url(server: &RedisServer) -> RedisUrl {
    server.url().parse().expect("url")
}

fn reply_for(events: &[LinkEvent<u32>], wanted: u32) -> &OwnedFrame {
    events
        .iter()
        .find_map(|event| match event {
            LinkEvent::Reply { tag, reply } if *tag == wanted => Some(reply.frame()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no reply for tag {wanted} in {events:?}"))
}

const ADD_AND_ECHO: &str =
    "redis.call('INCRBY', KEYS[1], ARGV[1]); return {redis.call('GET', KEYS[1]), ARGV[2]}";

#[test]
fn the_handshake_names_the_connection_and_pipelined_replies_keep_their_tags() {
    let Some(server) = RedisServer::start(
        "the_handshake_names_the_connection_and_pipelined_replies_keep_their_tags",
    ) else {
        return;
    };
    let handshake = Handshake::new(&url(&server), "roomcast-test-node");
    let mut wired = Wired::connect(&server, &handshake);
    assert!(!wired.link.is_ready());
    wired.link.queue(&[b"CLIENT", b"GETNAME"], 1).unwrap();
    wired.link.queue(&[b"SET", b"k", b"v"], 2).unwrap();
    for tag in 3..=5 {
        wired.link.queue(&[b"INCR", b"n"], tag).unwrap();
    }
    wired.link.queue(&[b"GET", b"k"], 6).unwrap();
    wired.link.queue(&[b"GET", b"missing"], 7).unwrap();
    let events = wired.replies();
    assert!(wired.link.is_ready());
    let tags: Vec<u32> = events
        .iter()
        .map(|event| match event {
            LinkEvent::Reply { tag, .. } => *tag,
            other => panic!("not a reply: {other:?}"),
        })
        .collect();
    assert_eq!(tags, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(
        reply_for(&events, 1),
        &OwnedFrame::BulkString(b"roomcast-test-node".to_vec())
    );
    assert_eq!(
        reply_for(&events, 2),
        &OwnedFrame::SimpleString(b"OK".to_vec())
    );
    assert_eq!(reply_for(&events, 5), &OwnedFrame::Integer(3));
    assert_eq!(
        reply_for(&events, 6),
        &OwnedFrame::BulkString(b"v".to_vec())
    );
    assert_eq!(reply_for(&events, 7), &OwnedFrame::Null);
}

#[test]
fn a_password_the_server_does_not_expect_fails_the_handshake_at_auth() {
    let Some(server) =
        RedisServer::start("a_password_the_server_does_not_expect_fails_the_handshake_at_auth")
    else {
        return;
    };
    let with_password: RedisUrl = format!("redis://:secret@127.0.0.1:{}", server.port)
        .parse()
        .unwrap();
    let mut wired = Wired::connect(&server, &Handshake::new(&with_password, "n"));
    let failure = wired
        .until(|link, _| link.is_ready())
        .expect_err("AUTH against a server without a password must fail");
    assert!(
        matches!(
            failure,
            LinkError::Handshake {
                command: "AUTH",
                ..
            }
        ),
        "{failure}"
    );
}

#[test]
fn a_flushed_script_is_sent_again_as_eval_and_its_tag_gets_the_result() {
    let Some(server) =
        RedisServer::start("a_flushed_script_is_sent_again_as_eval_and_its_tag_gets_the_result")
    else {
        return;
    };
    let script = Script::new(ADD_AND_ECHO);
    let handshake = Handshake::new(&url(&server), "roomcast-test").with_script(script);
    let mut wired = Wired::connect(&server, &handshake);
    wired
        .link
        .queue_script(&script, &[b"counter"], &[b"5", b"first"], 1)
        .unwrap();
    wired.link.queue(&[b"SCRIPT", b"FLUSH"], 2).unwrap();
    wired
        .link
        .queue_script(&script, &[b"counter"], &[b"2", b"second"], 3)
        .unwrap();
    let events = wired.replies();
    assert_eq!(wired.link.script_fallbacks(), 1);
    assert_eq!(
        reply_for(&events, 1),
        &OwnedFrame::Array(vec![
            OwnedFrame::BulkString(b"5".to_vec()),
            OwnedFrame::BulkString(b"first".to_vec())
        ])
    );
    assert_eq!(
        reply_for(&events, 3),
        &OwnedFrame::Array(vec![
            OwnedFrame::BulkString(b"7".to_vec()),
            OwnedFrame::BulkString(b"second".to_vec())
        ])
    );
    // The EVAL put the script back: the next EVALSHA needs no fallback.
    wired
        .link
        .queue_script(&script, &[b"counter"], &[b"1", b"third"], 4)
        .unwrap();
    let events = wired.replies();
    assert_eq!(wired.link.script_fallbacks(), 1);
    assert!(matches!(reply_for(&events, 4), OwnedFrame::Array(_)));
}

#[test]
fn a_subscribed_link_receives_what_the_other_link_publishes() {
    let Some(server) =
        RedisServer::start("a_subscribed_link_receives_what_the_other_link_publishes")
    else {
        return;
    };
    let mut subscriber = Wired::connect(&server, &Handshake::new(&url(&server), "roomcast-sub"));
    let mut publisher = Wired::connect(&server, &Handshake::new(&url(&server), "roomcast-cmd"));
    subscriber.link.subscribe(&[b"room:a", b"room:b"]).unwrap();
    let confirmations = subscriber.replies();
    assert_eq!(
        confirmations,
        [
            LinkEvent::Subscribed {
                kind: Subscription::Channel,
                channel: b"room:a".to_vec(),
                count: 1
            },
            LinkEvent::Subscribed {
                kind: Subscription::Channel,
                channel: b"room:b".to_vec(),
                count: 2
            },
        ]
    );
    publisher
        .link
        .queue(&[b"PUBLISH", b"room:b", b"one"], 1)
        .unwrap();
    publisher
        .link
        .queue(&[b"PUBLISH", b"room:c", b"nobody"], 2)
        .unwrap();
    publisher
        .link
        .queue(&[b"PUBLISH", b"room:a", b"two"], 3)
        .unwrap();
    let published = publisher.replies();
    assert_eq!(reply_for(&published, 1), &OwnedFrame::Integer(1));
    assert_eq!(reply_for(&published, 2), &OwnedFrame::Integer(0));
    // A subscribed RESP2 connection may still PING; its answer is a reply, between the pushes.
    subscriber.link.queue(&[b"PING"], 9).unwrap();
    let received = subscriber
        .until(|link, events| link.awaiting_replies() == 0 && events.len() >= 3)
        .expect("subscriber link");
    let messages: Vec<(&[u8], &[u8])> = received
        .iter()
        .filter_map(|event| match event {
            LinkEvent::Message { channel, payload } => Some((&channel[..], &payload[..])),
            _ => None,
        })
        .collect();
    assert_eq!(
        messages,
        [(&b"room:b"[..], &b"one"[..]), (&b"room:a"[..], &b"two"[..])]
    );
    assert!(matches!(reply_for(&received, 9), OwnedFrame::Array(_)));
}
