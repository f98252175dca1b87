//! roomcast with `--redis`: the link to a real `redis-server` (`common::redis`, skipped loudly without one), what
//! `/healthz` and `/metrics` say about it while Redis comes and goes, `--reuse-port`, a bad `--redis` URL, and chat
//! across nodes that are real processes of the binary sharing one Redis.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::attack::{gauge, series, wait_until};
use common::chat::chat_msg;
use common::redis::RedisServer;
use common::{join, parse_http_response, TestClient, TestServer};
use serde_json::{json, Value};

/// The `roomcast` binary as one node of a cluster, on 127.0.0.1:0; killed on drop.
struct Process {
    child: Child,
    addr: SocketAddr,
}

impl Process {
    /// Starts a node with `--redis` and `--node-id`, and waits until its `/healthz` says Redis is ready.
    fn start(redis: &RedisServer, node_id: &str) -> Process {
        Process::start_with(redis, node_id, &[])
    }

    /// `start` with more flags.
    fn start_with(redis: &RedisServer, node_id: &str, flags: &[&str]) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .args([
                "--addr",
                "127.0.0.1:0",
                "--redis",
                &redis.url(),
                "--node-id",
                node_id,
            ])
            .args(flags)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn roomcast");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("roomcast listening on http://")
            .and_then(|rest| rest.strip_suffix('/'))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        let process = Process { child, addr };
        assert!(
            wait_until(Duration::from_secs(10), || process.healthz() == 200),
            "node {node_id} never reached Redis"
        );
        process
    }

    /// The value of a metric without labels in the node's `/metrics`.
    fn metric(&self, name: &str) -> Option<u64> {
        let mut stream = std::net::TcpStream::connect(self.addr).expect("connect");
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr);
        std::io::Write::write_all(&mut stream, request.as_bytes()).expect("write");
        let mut response = String::new();
        let _ = std::io::Read::read_to_string(&mut stream, &mut response);
        series(&parse_http_response(&response).1, name)
    }

    fn healthz(&self) -> u16 {
        let mut stream = std::net::TcpStream::connect(self.addr).expect("connect");
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr);
        std::io::Write::write_all(&mut stream, request.as_bytes()).expect("write");
        let mut response = String::new();
        let _ = std::io::Read::read_to_string(&mut stream, &mut response);
        parse_http_response(&response).0
    }

    fn ws(&self) -> TestClient {
        TestClient::connect(self.addr, "/ws").expect("websocket handshake")
    }

    /// A server API call with `API_KEY` on a connection of its own: the status and the JSON body.
    fn api(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let mut stream = std::net::TcpStream::connect(self.addr).expect("connect");
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let body = body.to_string();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {API_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        std::io::Write::write_all(&mut stream, request.as_bytes()).expect("write");
        let mut response = String::new();
        let _ = std::io::Read::read_to_string(&mut stream, &mut response);
        let (status, body) = parse_http_response(&response);
        let json =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
        (status, json)
    }

    /// A server API `GET` with `API_KEY` on a connection of its own: the status and the JSON body.
    fn get(&self, path: &str) -> (u16, Value) {
        let mut stream = std::net::TcpStream::connect(self.addr).expect("connect");
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {API_KEY}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        std::io::Write::write_all(&mut stream, request.as_bytes()).expect("write");
        let mut response = String::new();
        let _ = std::io::Read::read_to_string(&mut stream, &mut response);
        let (status, body) = parse_http_response(&response);
        let json =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
        (status, json)
    }

    /// Starts a node with a short heartbeat (`--node-heartbeat`), so that its death is noticed quickly.
    fn start_with_heartbeat(redis: &RedisServer, node_id: &str, seconds: &str) -> Process {
        Process::start_with(redis, node_id, &["--node-heartbeat", seconds])
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server API key the nodes of the API tests are started with (`--api-key`).
const API_KEY: &str = "cluster-test-api-key-0123456789abcdef";

/// True if no `chat` message arrives within 200 ms (presence and system lines may).
fn no_more_chat(client: &mut TestClient) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_millis(200);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match client.recv_timeout(left) {
            None => return true,
            Some(common::Received::Text(text)) => {
                let message: Value = serde_json::from_str(&text).expect("JSON");
                if message["type"] == "chat" {
                    return false;
                }
            }
            Some(_) => {}
        }
    }
}

/// The next `chat` message, skipping everything else (presence, system lines).
fn next_chat(client: &mut TestClient) -> Value {
    client.recv_type("chat")
}

/// A server on 127.0.0.1:0 that joins the cluster at `redis`.
fn node(redis: &RedisServer, node_id: &str) -> TestServer {
    let url = redis.url().parse().expect("redis url");
    let node_id = node_id.parse().expect("node id");
    TestServer::with_config(|config| {
        config.redis = Some(url);
        config.node_id = Some(node_id);
    })
}

fn healthz(server: &TestServer) -> u16 {
    server.get("/healthz").0
}

#[test]
fn healthz_is_503_until_redis_answers_and_while_it_is_away() {
    let Some(mut redis) =
        RedisServer::start("healthz_is_503_until_redis_answers_and_while_it_is_away")
    else {
        return;
    };
    // Redis is down when the node starts: it keeps trying, and says so.
    redis.stop();
    let server = node(&redis, "n1");
    assert_eq!(healthz(&server), 503);
    assert_eq!(gauge(&server, "roomcast_redis_up"), Some(0));
    redis.start_again();
    assert!(
        wait_until(Duration::from_secs(10), || healthz(&server) == 200),
        "the node never reached Redis"
    );
    assert_eq!(gauge(&server, "roomcast_redis_up"), Some(1));
    assert_eq!(gauge(&server, "roomcast_redis_reconnects_total"), Some(0));
    // Redis goes away: the node notices (a broken connection, or an unanswered PING) and says so.
    redis.stop();
    assert!(
        wait_until(Duration::from_secs(10), || healthz(&server) == 503),
        "the node did not notice that Redis went away"
    );
    redis.start_again();
    assert!(
        wait_until(Duration::from_secs(10), || healthz(&server) == 200),
        "the node never reconnected"
    );
    let reconnects = gauge(&server, "roomcast_redis_reconnects_total").expect("reconnects");
    assert!(reconnects >= 1, "{reconnects} reconnects counted");
}

#[test]
fn metrics_show_the_redis_round_trip_once_a_ping_came_back() {
    let Some(redis) = RedisServer::start("metrics_show_the_redis_round_trip_once_a_ping_came_back")
    else {
        return;
    };
    let server = node(&redis, "n1");
    let round_trip = || {
        let body = common::attack::scrape(&server);
        body.lines()
            .find_map(|line| line.strip_prefix("roomcast_redis_round_trip_seconds "))
            .and_then(|value| value.parse::<f64>().ok())
    };
    assert!(
        wait_until(Duration::from_secs(5), || round_trip()
            .is_some_and(|rtt| rtt > 0.0)),
        "no round trip measured: {:?}",
        round_trip()
    );
    let body = common::attack::scrape(&server);
    assert_eq!(
        series(&body, "roomcast_redis_publish_errors_total"),
        Some(0)
    );
}

#[test]
fn without_redis_the_node_is_healthy_and_has_no_redis_series() {
    let server = TestServer::start();
    assert_eq!(healthz(&server), 200);
    assert!(!common::attack::scrape(&server).contains("roomcast_redis_"));
}

#[test]
fn reuse_port_lets_two_servers_listen_on_one_port() {
    let first = TestServer::with_config(|config| config.reuse_port = true);
    let port = first.addr.port();
    let second = TestServer::with_config(|config| {
        config.addr.set_port(port);
        config.reuse_port = true;
    });
    assert_eq!(second.addr, first.addr);
    assert_eq!(healthz(&first), 200);
    assert_eq!(healthz(&second), 200);
    // Without the option on both, the port is taken as before.
    let plain = TcpListener::bind(first.addr);
    assert!(plain.is_err(), "a plain bind shared the port");
}

#[test]
fn a_bad_redis_url_exits_2_with_the_reason() {
    let output = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["--addr", "127.0.0.1:0", "--redis", "redis://cache:99999"])
        .env_remove("RUST_LOG")
        .output()
        .expect("run roomcast");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--redis") && stderr.contains("99999") && stderr.contains("port"),
        "{stderr}"
    );
}

#[test]
fn a_chat_message_reaches_members_on_both_nodes_with_one_seq_sequence() {
    let Some(redis) =
        RedisServer::start("a_chat_message_reaches_members_on_both_nodes_with_one_seq_sequence")
    else {
        return;
    };
    let a = Process::start(&redis, "node-a");
    let b = Process::start(&redis, "node-b");
    let mut ann = a.ws();
    let mut bob = b.ws();
    let mut cat = b.ws();
    join(&mut ann, "ann", "lobby");
    join(&mut bob, "bob", "lobby");
    join(&mut cat, "cat", "lobby");
    // Subscriptions are asked for at the end of the join's turn: a message sent right after may wait for them, but
    // is not lost.
    ann.send_json(&chat_msg("from a"));
    bob.send_json(&chat_msg("from b"));
    let mut orders = Vec::new();
    for (who, client) in [("ann", &mut ann), ("bob", &mut bob), ("cat", &mut cat)] {
        let first = next_chat(client);
        let second = next_chat(client);
        for message in [&first, &second] {
            assert_eq!(message["room"], "lobby", "{who}: {message}");
        }
        orders.push((
            first["seq"].as_u64().expect("seq"),
            first["content"].clone(),
            second["seq"].as_u64().expect("seq"),
            second["content"].clone(),
        ));
    }
    // Every member, on either node, saw the same two messages with the same seqs in the same order: 1 then 2.
    assert_eq!(orders[0], orders[1]);
    assert_eq!(orders[1], orders[2]);
    assert_eq!((orders[0].0, orders[0].2), (1, 2));
    // Nothing is delivered twice.
    assert!(no_more_chat(&mut ann));
    assert!(no_more_chat(&mut cat));
}

#[test]
fn a_room_with_no_member_on_a_node_is_not_delivered_there_and_seqs_go_on_across_nodes() {
    let Some(redis) = RedisServer::start(
        "a_room_with_no_member_on_a_node_is_not_delivered_there_and_seqs_go_on_across_nodes",
    ) else {
        return;
    };
    let a = Process::start(&redis, "node-a");
    let b = Process::start(&redis, "node-b");
    let mut ann = a.ws();
    let mut bob = b.ws();
    join(&mut ann, "ann", "east");
    join(&mut bob, "bob", "west");
    for i in 0..3 {
        ann.send_json(&chat_msg(&format!("east {i}")));
    }
    let seqs: Vec<u64> = (0..3)
        .map(|_| next_chat(&mut ann)["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert!(no_more_chat(&mut bob), "bob is not in east");
    // A member of east arrives on node b: the room's next message is seq 4 there too.
    let mut cat = b.ws();
    join(&mut cat, "cat", "east");
    cat.send_json(&chat_msg("east from b"));
    let seen_by_ann = next_chat(&mut ann);
    let seen_by_cat = next_chat(&mut cat);
    assert_eq!(seen_by_ann, seen_by_cat);
    assert_eq!(seen_by_cat["seq"], 4);
    assert_eq!(seen_by_cat["from"], "cat");
}

#[test]
fn while_redis_is_away_a_chat_message_is_answered_unavailable() {
    let Some(mut redis) =
        RedisServer::start("while_redis_is_away_a_chat_message_is_answered_unavailable")
    else {
        return;
    };
    let server = node(&redis, "n1");
    assert!(wait_until(Duration::from_secs(10), || healthz(&server) == 200));
    let mut ann = server.ws("/ws");
    join(&mut ann, "ann", "lobby");
    redis.stop();
    assert!(wait_until(Duration::from_secs(10), || healthz(&server) == 503));
    ann.send_json(&chat_msg("into the void"));
    let error = ann.recv_type("error");
    assert_eq!(error["code"], "unavailable", "{error}");
    redis.start_again();
    assert!(wait_until(Duration::from_secs(10), || healthz(&server) == 200));
    // Back: the connection stayed open, and chat works again (the fresh Redis starts the room's seqs anew).
    ann.send_json(&chat_msg("back"));
    let message = next_chat(&mut ann);
    assert_eq!(message["content"], "back");
    let body = common::attack::scrape(&server);
    assert_eq!(
        series(&body, "roomcast_chat_refusals_total{code=\"unavailable\"}"),
        Some(1)
    );
}

/// Joins `name` into `room` on a fresh connection; true if it was `joined`, false on an error.
fn try_join(node: &Process, name: &str, room: &str) -> bool {
    let mut client = node.ws();
    client.send_json(&json!({"type": "join", "userId": name, "room": room, "v": 2}));
    loop {
        let message = client.recv_json();
        match message["type"].as_str() {
            Some("joined") => return true,
            Some("error") => return false,
            _ => {}
        }
    }
}

#[test]
fn a_name_held_on_one_node_is_taken_on_another_and_free_once_released() {
    let Some(redis) =
        RedisServer::start("a_name_held_on_one_node_is_taken_on_another_and_free_once_released")
    else {
        return;
    };
    let a = Process::start(&redis, "node-a");
    let b = Process::start_with(&redis, "node-b", &["--name-grace", "0"]);
    let mut ann = a.ws();
    join(&mut ann, "ann", "lobby");
    // The same name, and a name a person cannot tell from it, are taken on the other node.
    for name in ["ann", "ANN"] {
        let mut impostor = b.ws();
        impostor.send_json(&json!({"type": "join", "userId": name, "room": "lobby", "v": 2}));
        let error = impostor.recv_type("error");
        assert_eq!(error["code"], "name_taken", "{name}: {error}");
    }
    // Held on b and left there (no grace on b), the name is free for a at once.
    let mut bea = b.ws();
    join(&mut bea, "bea", "attic");
    assert!(!try_join(&a, "bea", "lobby"), "bea is held on b");
    bea.send_json(&json!({"type": "leave"}));
    assert!(
        wait_until(Duration::from_secs(5), || try_join(&a, "bea", "lobby")),
        "bea was never freed"
    );
}

#[test]
fn a_dm_reaches_a_user_on_another_node_and_an_unknown_name_is_not_online() {
    let Some(redis) =
        RedisServer::start("a_dm_reaches_a_user_on_another_node_and_an_unknown_name_is_not_online")
    else {
        return;
    };
    let a = Process::start(&redis, "node-a");
    let b = Process::start(&redis, "node-b");
    let mut ann = a.ws();
    let mut bob = b.ws();
    join(&mut ann, "ann", "east");
    join(&mut bob, "bob", "west");
    ann.send_json(&json!({"type": "dm", "to": "bob", "content": "psst"}));
    let received = bob.recv_type("dm");
    assert_eq!(
        (&received["from"], &received["to"], &received["content"]),
        (&json!("ann"), &json!("bob"), &json!("psst"))
    );
    let copy = ann.recv_type("dm");
    assert_eq!((&copy["from"], &copy["to"]), (&json!("ann"), &json!("bob")));
    ann.send_json(&json!({"type": "dm", "to": "nobody", "content": "hello?"}));
    assert_eq!(ann.recv_type("error")["code"], "not_online");
}

#[test]
fn the_names_of_a_node_killed_outright_are_free_after_three_heartbeats() {
    let Some(redis) =
        RedisServer::start("the_names_of_a_node_killed_outright_are_free_after_three_heartbeats")
    else {
        return;
    };
    let a = Process::start_with_heartbeat(&redis, "node-a", "0.2");
    let b = Process::start_with_heartbeat(&redis, "node-b", "0.2");
    let mut ann = a.ws();
    join(&mut ann, "ann", "lobby");
    assert!(!try_join(&b, "ann", "lobby"), "ann is held on a");
    // SIGKILL: node a says nothing to anyone; its heartbeat stops, and its names expire 3 heartbeats (0.6 s) later.
    drop(a);
    let started = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || try_join(&b, "ann", "lobby")),
        "the dead node's name was never freed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "freed after {:?}",
        started.elapsed()
    );
}

#[test]
fn a_client_moving_to_another_node_with_since_gets_exactly_what_it_missed() {
    let Some(redis) = RedisServer::start(
        "a_client_moving_to_another_node_with_since_gets_exactly_what_it_missed",
    ) else {
        return;
    };
    let a = Process::start(&redis, "node-a");
    let b = Process::start(&redis, "node-b");
    let mut ann = a.ws();
    let joined_on_a = join(&mut ann, "ann", "lobby");
    let mut bob = b.ws();
    let joined_on_b = join(&mut bob, "bob", "lobby");
    // One numbering for the room, whichever node is asked.
    assert_eq!(joined_on_a["epoch"], joined_on_b["epoch"]);
    for i in 1..=3 {
        bob.send_json(&chat_msg(&format!("seen {i}")));
    }
    let mut last_seen = 0;
    for _ in 1..=3 {
        last_seen = next_chat(&mut ann)["seq"].as_u64().expect("seq");
    }
    assert_eq!(last_seen, 3);
    for seq in 1..=3 {
        assert_eq!(next_chat(&mut bob)["seq"], seq);
    }
    drop(ann);
    for i in 4..=5 {
        bob.send_json(&chat_msg(&format!("missed {i}")));
    }
    assert_eq!(next_chat(&mut bob)["seq"], 4);
    assert_eq!(next_chat(&mut bob)["seq"], 5);
    // Ann comes back on node b, whose history it never read from, with what it saw last; then on a fresh node c,
    // which never had a member in the room. (Under other names, so that this test is about history only: "ann"
    // stays reserved for its session, which the test did not keep.)
    let c = Process::start(&redis, "node-c");
    for (node, name) in [(&b, "ann-on-b"), (&c, "ann-on-c")] {
        let mut back = node.ws();
        back.send_json(
            &json!({"type": "join", "userId": name, "room": "lobby", "v": 2,
            "since": {"epoch": joined_on_a["epoch"], "seq": last_seen}}),
        );
        let joined = back.recv_type("joined");
        assert_eq!(joined["replay"]["complete"], true, "{name}: {joined}");
        assert_eq!(joined["replay"]["count"], 2, "{name}: {joined}");
        assert_eq!(joined["seq"], 5, "{name}: {joined}");
        let replayed: Vec<Value> = (0..2)
            .map(|_| next_chat(&mut back)["content"].clone())
            .collect();
        assert_eq!(replayed, [json!("missed 4"), json!("missed 5")], "{name}");
        assert!(no_more_chat(&mut back), "{name}: more than it missed");
    }
}

#[test]
fn after_redis_lost_its_data_a_since_of_the_old_numbering_is_incomplete() {
    let Some(mut redis) =
        RedisServer::start("after_redis_lost_its_data_a_since_of_the_old_numbering_is_incomplete")
    else {
        return;
    };
    let a = Process::start(&redis, "node-a");
    let mut ann = a.ws();
    let joined = join(&mut ann, "ann", "lobby");
    ann.send_json(&chat_msg("before"));
    assert_eq!(next_chat(&mut ann)["seq"], 1);
    redis.start_again();
    assert!(wait_until(Duration::from_secs(10), || a.healthz() == 200));
    let mut bob = a.ws();
    bob.send_json(
        &json!({"type": "join", "userId": "bob", "room": "lobby", "v": 2,
        "since": {"epoch": joined["epoch"], "seq": 1}}),
    );
    let rejoined = bob.recv_type("joined");
    assert_ne!(rejoined["epoch"], joined["epoch"], "{rejoined}");
    assert_eq!(rejoined["replay"]["complete"], false, "{rejoined}");
    assert_eq!(rejoined["replay"]["reason"], "epoch", "{rejoined}");
    // Ann, in the room all along, is told before the seqs begin again.
    let lagged = ann.recv_type("error");
    assert_eq!(lagged["code"], "lagged", "{lagged}");
    bob.send_json(&chat_msg("after"));
    assert_eq!(next_chat(&mut ann)["seq"], 1);
}

#[test]
fn a_first_member_joining_a_busy_room_on_another_node_misses_no_seq() {
    let Some(redis) =
        RedisServer::start("a_first_member_joining_a_busy_room_on_another_node_misses_no_seq")
    else {
        return;
    };
    let a = Process::start(&redis, "node-a");
    let b = Process::start(&redis, "node-b");
    let mut ann = a.ws();
    join(&mut ann, "ann", "busy");
    const SENT: u64 = 40;
    let sender = std::thread::spawn(move || {
        for i in 1..=SENT {
            ann.send_json(&chat_msg(&format!("m{i}")));
            std::thread::sleep(Duration::from_millis(5));
        }
        ann
    });
    std::thread::sleep(Duration::from_millis(40));
    // Bob is node b's first member of the room, joining while ann publishes.
    let mut bob = b.ws();
    let joined = join(&mut bob, "bob", "busy");
    let mut expected = joined["seq"].as_u64().expect("seq") + 1;
    while expected <= SENT {
        let message = next_chat(&mut bob);
        assert_eq!(
            message["seq"], expected,
            "after joining at {}",
            joined["seq"]
        );
        expected += 1;
    }
    let _ann = sender.join().expect("sender");
}

/// Runs one command on its own connection to `redis` and returns the reply.
fn redis_command(redis: &RedisServer, words: &[&[u8]]) -> roomcast::cluster::Reply {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(redis.addr()).expect("connect to redis-server");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut link: roomcast::cluster::RedisLink<()> =
        roomcast::cluster::RedisLink::new(&roomcast::cluster::Handshake::default());
    link.queue(words, ()).expect("encode");
    stream.write_all(link.pending_output()).expect("write");
    let mut events = Vec::new();
    let mut buf = [0u8; 65536];
    while events.is_empty() {
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "redis-server closed the connection");
        link.feed(&buf[..n], &mut events).expect("reply");
    }
    match events.remove(0) {
        roomcast::cluster::LinkEvent::Reply { reply, .. } => reply,
        other => panic!("not a reply: {other:?}"),
    }
}

/// `calls=` of one command in `INFO commandstats`.
fn calls(info: &str, command: &str) -> u64 {
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
        .unwrap_or(0)
}

#[test]
fn redis_commands_per_chat_message_are_below_one_when_a_turn_carries_several() {
    let Some(redis) = RedisServer::start(
        "redis_commands_per_chat_message_are_below_one_when_a_turn_carries_several",
    ) else {
        return;
    };
    let url = redis.url().parse().expect("redis url");
    let server = TestServer::with_config(|config| {
        config.redis = Some(url);
        config.chat.rate_per_sec = 1e6;
        config.chat.rate_burst = 1_000_000;
        config.chat.rate_bytes_per_sec = 0.0;
        config.chat.room_rate_bytes_per_sec = 0.0;
    });
    assert!(wait_until(Duration::from_secs(10), || healthz(&server) == 200));
    let mut ann = server.ws("/ws");
    join(&mut ann, "ann", "lobby");
    // An idle turn's PING and heartbeat are not chat: count from here, and leave them out.
    redis_command(&redis, &[b"CONFIG", b"RESETSTAT"]);
    const BURSTS: usize = 10;
    const PER_BURST: usize = 10;
    for burst in 0..BURSTS {
        let texts: Vec<String> = (0..PER_BURST)
            .map(|i| chat_msg(&format!("{burst}.{i}")).to_string())
            .collect();
        ann.send_texts_in_one_write(&texts);
        for _ in 0..PER_BURST {
            next_chat(&mut ann);
        }
    }
    let info = redis_command(&redis, &[b"INFO", b"commandstats"]);
    let info =
        String::from_utf8_lossy(info.as_bytes().expect("INFO is a bulk string")).into_owned();
    let messages = (BURSTS * PER_BURST) as f64;
    let script_calls = calls(&info, "evalsha") + calls(&info, "eval");
    let inside = calls(&info, "incrby")
        + calls(&info, "xadd")
        + calls(&info, "publish")
        + calls(&info, "xtrim");
    eprintln!(
        "INFO commandstats for {messages} chat messages in {BURSTS} bursts: {script_calls} script calls \
         ({:.2} per message), {inside} commands run inside them ({:.2} per message)",
        script_calls as f64 / messages,
        inside as f64 / messages
    );
    assert!(
        script_calls >= 1 && (script_calls as f64) < messages,
        "{info}"
    );
    // One INCRBY per publish call numbers every message of it (the other script calls are heartbeats).
    let numbering = calls(&info, "incrby");
    assert!(numbering >= 1 && numbering <= script_calls, "{info}");
    assert_eq!(
        calls(&info, "xadd"),
        BURSTS as u64 * PER_BURST as u64,
        "{info}"
    );
    let seq = redis_command(&redis, &[b"GET", b"roomcast:room:lobby:seq"]);
    assert_eq!(seq.as_bytes(), Some(b"100".as_slice()), "{seq:?}");
}

#[test]
fn presence_counts_every_node_and_a_dead_nodes_members_leave_within_three_heartbeats() {
    let Some(redis) = RedisServer::start(
        "presence_counts_every_node_and_a_dead_nodes_members_leave_within_three_heartbeats",
    ) else {
        return;
    };
    let a = Process::start_with_heartbeat(&redis, "node-a", "0.2");
    let b = Process::start_with_heartbeat(&redis, "node-b", "0.2");
    let mut ann = a.ws();
    join(&mut ann, "ann", "lobby");
    let mut bob = b.ws();
    let joined = join(&mut bob, "bob", "lobby");
    assert_eq!(joined["memberCount"], 2, "{joined}");
    assert_eq!(joined["members"], json!(["bob", "ann"]), "{joined}");
    // Ann, on the other node, is told, with the room's count over both nodes.
    assert_eq!(
        ann.recv_type("presence"),
        json!({"type": "presence", "room": "lobby", "joined": "bob", "count": 2})
    );
    let mut cat = b.ws();
    join(&mut cat, "cat", "lobby");
    assert_eq!(ann.recv_type("presence")["count"], 3);
    cat.send_json(&json!({"type": "leave"}));
    assert_eq!(
        ann.recv_type("presence"),
        json!({"type": "presence", "room": "lobby", "left": "cat", "count": 2})
    );
    // Node b dies with bob in the room: ann is told bob left, within 3 heartbeats (0.6 s) and a little.
    let started = std::time::Instant::now();
    drop(b);
    let left = ann.recv_type("presence");
    assert_eq!(
        left,
        json!({"type": "presence", "room": "lobby", "left": "bob", "count": 1})
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "told after {:?}",
        started.elapsed()
    );
    // A newcomer counts what is left.
    let mut dan = a.ws();
    assert_eq!(join(&mut dan, "dan", "lobby")["memberCount"], 2);
}

#[test]
fn a_node_whose_subscription_broke_fills_the_gap_from_the_stream_in_order_and_once() {
    let Some(redis) = RedisServer::start(
        "a_node_whose_subscription_broke_fills_the_gap_from_the_stream_in_order_and_once",
    ) else {
        return;
    };
    let a = Process::start(&redis, "node-a");
    let b = Process::start(&redis, "node-b");
    let mut ann = a.ws();
    join(&mut ann, "ann", "lobby");
    let mut bob = b.ws();
    join(&mut bob, "bob", "lobby");
    bob.send_json(&chat_msg("before"));
    assert_eq!(next_chat(&mut ann)["seq"], 1);
    // Node a's subscriber connection is cut: it reconnects after its backoff, and meanwhile bob publishes.
    let list = redis_command(&redis, &[b"CLIENT", b"LIST"]);
    let list = String::from_utf8_lossy(list.as_bytes().expect("CLIENT LIST is a bulk string"))
        .into_owned();
    let id = list
        .lines()
        .find(|line| line.contains("name=roomcast-node-a-subscriber"))
        .and_then(|line| line.split(' ').find_map(|field| field.strip_prefix("id=")))
        .expect("node a's subscriber connection")
        .to_owned();
    let killed = redis_command(&redis, &[b"CLIENT", b"KILL", b"ID", id.as_bytes()]);
    assert_eq!(killed.as_int(), Some(1), "{killed:?}");
    for i in 2..=6 {
        bob.send_json(&chat_msg(&format!("during {i}")));
    }
    for seq in 2..=6 {
        let message = next_chat(&mut ann);
        assert_eq!(message["seq"], seq, "{message}");
    }
    bob.send_json(&chat_msg("after"));
    assert_eq!(next_chat(&mut ann)["seq"], 7);
    assert!(no_more_chat(&mut ann), "something came twice");
    let recovered = a
        .metric("roomcast_redis_recovered_total")
        .expect("recovered");
    assert!(recovered >= 1, "nothing was read from the stream");
    assert_eq!(a.metric("roomcast_redis_gaps_total"), Some(0));
    assert_eq!(a.metric("roomcast_redis_reconnects_total"), Some(1));
}

#[test]
fn while_redis_is_stopped_senders_hear_unavailable_and_afterwards_nothing_comes_twice_or_out_of_order(
) {
    let Some(mut redis) = RedisServer::start(
        "while_redis_is_stopped_senders_hear_unavailable_and_afterwards_nothing_comes_twice_or_out_of_order",
    ) else {
        return;
    };
    let a = Process::start(&redis, "node-a");
    let b = Process::start(&redis, "node-b");
    let mut ann = a.ws();
    join(&mut ann, "ann", "lobby");
    let mut bob = b.ws();
    join(&mut bob, "bob", "lobby");
    bob.send_json(&chat_msg("before"));
    assert_eq!(next_chat(&mut ann)["content"], "before");
    redis.stop();
    assert!(wait_until(Duration::from_secs(10), || a.healthz() == 503
        && b.healthz() == 503));
    for i in 0..3 {
        bob.send_json(&chat_msg(&format!("lost {i}")));
        assert_eq!(bob.recv_type("error")["code"], "unavailable");
    }
    // The connections stayed open. Redis comes back empty (no persistence): a new numbering.
    redis.start_again();
    assert!(wait_until(Duration::from_secs(10), || a.healthz() == 200
        && b.healthz() == 200));
    for i in 0..5 {
        bob.send_json(&chat_msg(&format!("after {i}")));
    }
    for client in [&mut ann, &mut bob] {
        let contents: Vec<Value> = (0..5)
            .map(|_| next_chat(client)["content"].clone())
            .collect();
        let expected: Vec<Value> = (0..5).map(|i| json!(format!("after {i}"))).collect();
        assert_eq!(contents, expected);
        assert!(no_more_chat(client), "something came twice");
    }
}

#[test]
fn many_joins_and_leaves_across_nodes_leave_no_stale_presence() {
    let Some(redis) =
        RedisServer::start("many_joins_and_leaves_across_nodes_leave_no_stale_presence")
    else {
        return;
    };
    // Every connection comes from 127.0.0.1: its handshakes are not to be limited per address here.
    let unlimited = ["--handshake-rate-per-ip", "0"];
    let nodes = [
        Process::start_with(&redis, "node-a", &unlimited),
        Process::start_with(&redis, "node-b", &unlimited),
    ];
    let mut watcher = nodes[0].ws();
    join(&mut watcher, "watcher", "hall");
    // 2,000 joins and 2,000 leaves (issue 13), alternating nodes, ten connections open at once; half leave with
    // `leave`, half by closing.
    const JOINS: usize = 2_000;
    const AT_ONCE: usize = 10;
    let started = std::time::Instant::now();
    for round in 0..JOINS / AT_ONCE {
        let mut clients: Vec<TestClient> =
            (0..AT_ONCE).map(|i| nodes[(round + i) % 2].ws()).collect();
        // The joins of a round are all sent before any answer is read, so their Redis round trips overlap.
        for (i, client) in clients.iter_mut().enumerate() {
            client.send_json(
                &json!({"type": "join", "userId": format!("u{round}x{i}"), "room": "hall", "v": 2}),
            );
        }
        for client in &mut clients {
            client.recv_type("joined");
        }
        for (i, client) in clients.iter_mut().enumerate() {
            if i % 2 == 0 {
                client.send_json(&json!({"type": "leave"}));
            }
        }
    }
    eprintln!(
        "{JOINS} joins and leaves across two nodes took {:?}",
        started.elapsed()
    );
    // Every one of them is gone from the room on both nodes and in Redis.
    let members = || {
        redis_command(&redis, &[b"HKEYS", b"roomcast:room:hall:members"])
            .as_array()
            .map(<[_]>::len)
    };
    assert!(
        wait_until(Duration::from_secs(10), || members() == Some(1)),
        "members left in Redis: {:?}",
        redis_command(&redis, &[b"HKEYS", b"roomcast:room:hall:members"])
    );
    // The late joiners stay connected, so each is counted once: a closed one's departure would race the next join.
    let mut late_joiners = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut late = node.ws();
        let joined = join(&mut late, &format!("late-{}", node.addr.port()), "hall");
        assert_eq!(joined["memberCount"], 2 + i, "{joined}");
        late_joiners.push(late);
    }
}

#[test]
fn a_session_token_reclaims_a_name_from_another_node_which_closes_the_old_connection_with_4001() {
    let Some(redis) = RedisServer::start(
        "a_session_token_reclaims_a_name_from_another_node_which_closes_the_old_connection_with_4001",
    ) else {
        return;
    };
    let a = Process::start(&redis, "node-a");
    let b = Process::start(&redis, "node-b");
    let mut old = a.ws();
    let session = join(&mut old, "ann", "lobby")["session"].clone();
    let mut stranger = b.ws();
    stranger.send_json(&json!({"type": "join", "userId": "ann", "room": "lobby", "v": 2}));
    assert_eq!(stranger.recv_type("error")["code"], "name_taken");
    let mut new = b.ws();
    new.send_json(
        &json!({"type": "join", "userId": "ann", "room": "lobby", "v": 2, "session": session}),
    );
    let joined = new.recv_type("joined");
    assert_eq!(
        joined["session"], session,
        "the session carries over: {joined}"
    );
    assert_eq!(old.recv_close(), Some(4001));
    // Node b holds it now: the old node's own departure does not free it.
    std::thread::sleep(Duration::from_millis(100));
    let mut squatter = a.ws();
    squatter.send_json(&json!({"type": "join", "userId": "ann", "room": "lobby", "v": 2}));
    assert_eq!(squatter.recv_type("error")["code"], "name_taken");
}

#[test]
fn after_its_node_is_killed_a_client_takes_its_name_back_on_another_node_at_once_with_its_session()
{
    let Some(redis) = RedisServer::start(
        "after_its_node_is_killed_a_client_takes_its_name_back_on_another_node_at_once_with_its_session",
    ) else {
        return;
    };
    let a = Process::start(&redis, "node-a");
    let b = Process::start(&redis, "node-b");
    let mut ann = a.ws();
    let joined = join(&mut ann, "ann", "lobby");
    drop(a);
    // Within the default 15 s the dead node's name would still be held; the session takes it back at once.
    let mut back = b.ws();
    back.send_json(
        &json!({"type": "join", "userId": "ann", "room": "lobby", "v": 2,
        "session": joined["session"], "since": {"epoch": joined["epoch"], "seq": joined["seq"]}}),
    );
    let rejoined = back.recv_type("joined");
    assert_eq!(rejoined["replay"]["complete"], true, "{rejoined}");
}

#[test]
fn clients_of_a_node_killed_while_others_chat_reconnect_elsewhere_and_get_every_message_exactly_once(
) {
    let Some(redis) = RedisServer::start(
        "clients_of_a_node_killed_while_others_chat_reconnect_elsewhere_and_get_every_message_exactly_once",
    ) else {
        return;
    };
    let a = Process::start(&redis, "node-a");
    let b = Process::start(&redis, "node-b");
    let mut readers: Vec<(String, TestClient, Value)> = (0..3)
        .map(|i| {
            let name = format!("reader{i}");
            let mut client = a.ws();
            let joined = join(&mut client, &name, "lobby");
            (name, client, joined)
        })
        .collect();
    let mut writer = b.ws();
    join(&mut writer, "writer", "lobby");
    const SENT: u64 = 30;
    let sender = std::thread::spawn(move || {
        for i in 1..=SENT {
            writer.send_json(&chat_msg(&format!("n{i}")));
            std::thread::sleep(Duration::from_millis(10));
        }
        writer
    });
    // Each reader keeps what it has seen, by seq, until its node dies in the middle of the stream.
    std::thread::sleep(Duration::from_millis(120));
    let mut seen: Vec<Vec<u64>> = vec![Vec::new(); readers.len()];
    drop(a);
    for ((_, client, _), seen) in readers.iter_mut().zip(&mut seen) {
        while let Some(common::Received::Text(text)) =
            client.recv_timeout(Duration::from_millis(50))
        {
            let message: Value = serde_json::from_str(&text).expect("JSON");
            if message["type"] == "chat" {
                seen.push(message["seq"].as_u64().expect("seq"));
            }
        }
    }
    // They come back on node b with their session and the last seq they saw.
    for ((name, _, joined), seen) in readers.iter().zip(&mut seen) {
        let last = seen
            .last()
            .copied()
            .unwrap_or(joined["seq"].as_u64().expect("seq"));
        let mut back = b.ws();
        back.send_json(
            &json!({"type": "join", "userId": name, "room": "lobby", "v": 2,
            "session": joined["session"], "since": {"epoch": joined["epoch"], "seq": last}}),
        );
        let rejoined = back.recv_type("joined");
        assert_eq!(rejoined["replay"]["complete"], true, "{name}: {rejoined}");
        while seen.last().copied().unwrap_or(0) < SENT {
            seen.push(next_chat(&mut back)["seq"].as_u64().expect("seq"));
        }
        assert!(no_more_chat(&mut back), "{name}: something came twice");
        let first = seen.first().copied().unwrap_or(1);
        let expected: Vec<u64> = (first..=SENT).collect();
        assert_eq!(*seen, expected, "{name}: every message once, in order");
    }
    let _writer = sender.join().expect("writer");
}

#[test]
fn after_a_redis_restart_with_its_append_only_file_nothing_is_lost_and_since_is_complete() {
    let Some(mut redis) = RedisServer::start_persistent(
        "after_a_redis_restart_with_its_append_only_file_nothing_is_lost_and_since_is_complete",
    ) else {
        return;
    };
    let a = Process::start(&redis, "node-a");
    let mut ann = a.ws();
    let joined = join(&mut ann, "ann", "lobby");
    for i in 1..=3 {
        ann.send_json(&chat_msg(&format!("kept {i}")));
    }
    for seq in 1..=3 {
        assert_eq!(next_chat(&mut ann)["seq"], seq);
    }
    redis.start_again();
    assert!(wait_until(Duration::from_secs(10), || a.healthz() == 200));
    // The numbering goes on, in the same epoch.
    ann.send_json(&chat_msg("after"));
    assert_eq!(next_chat(&mut ann)["seq"], 4);
    let b = Process::start(&redis, "node-b");
    let mut bob = b.ws();
    bob.send_json(
        &json!({"type": "join", "userId": "bob", "room": "lobby", "v": 2,
        "since": {"epoch": joined["epoch"], "seq": 1}}),
    );
    let rejoined = bob.recv_type("joined");
    assert_eq!(rejoined["epoch"], joined["epoch"], "{rejoined}");
    assert_eq!(rejoined["replay"]["complete"], true, "{rejoined}");
    let replayed: Vec<Value> = (0..3)
        .map(|_| next_chat(&mut bob)["content"].clone())
        .collect();
    assert_eq!(replayed, [json!("kept 2"), json!("kept 3"), json!("after")]);
}

/// `used_memory` of `INFO memory`, in bytes.
fn used_memory(redis: &RedisServer) -> i64 {
    let info = redis_command(redis, &[b"INFO", b"memory"]);
    let info =
        String::from_utf8_lossy(info.as_bytes().expect("INFO is a bulk string")).into_owned();
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse().ok())
        .expect("used_memory")
}

#[test]
fn redis_memory_per_connection_and_per_room_is_measured() {
    let Some(redis) = RedisServer::start("redis_memory_per_connection_and_per_room_is_measured")
    else {
        return;
    };
    let url = redis.url().parse().expect("redis url");
    let server = TestServer::with_config(|config| {
        config.redis = Some(url);
        config.chat.rate_per_sec = 1e6;
        config.chat.rate_burst = 1_000_000;
        config.chat.rate_bytes_per_sec = 0.0;
        config.chat.room_rate_bytes_per_sec = 0.0;
    });
    assert!(wait_until(Duration::from_secs(10), || healthz(&server) == 200));
    const ROOMS: usize = 10;
    const PER_ROOM: usize = 20;
    const MESSAGES: usize = 100;
    // One joined connection per room first, so that the rooms' own keys are counted apart.
    let mut firsts: Vec<TestClient> = (0..ROOMS)
        .map(|room| {
            let mut client = server.ws("/ws");
            join(&mut client, &format!("first{room}"), &format!("room{room}"));
            client
        })
        .collect();
    let before_members = used_memory(&redis);
    let mut members: Vec<TestClient> = Vec::new();
    for room in 0..ROOMS {
        for i in 1..PER_ROOM {
            let mut client = server.ws("/ws");
            join(&mut client, &format!("m{room}x{i}"), &format!("room{room}"));
            members.push(client);
        }
    }
    let after_members = used_memory(&redis);
    // A full history: --history (100) messages of about 150 bytes in each room's stream.
    for (room, first) in firsts.iter_mut().enumerate() {
        let texts: Vec<String> = (0..MESSAGES)
            .map(|i| {
                chat_msg(&format!("room {room} message {i}: some ordinary chat text")).to_string()
            })
            .collect();
        first.send_texts_in_one_write(&texts);
        for _ in 0..MESSAGES {
            next_chat(first);
        }
    }
    let after_history = used_memory(&redis);
    let per_connection = (after_members - before_members) / (ROOMS * (PER_ROOM - 1)) as i64;
    let per_room_history = (after_history - after_members) / ROOMS as i64;
    eprintln!(
        "Redis memory: {per_connection} bytes per joined connection (name key, room member, node member), \
         {per_room_history} bytes per room for a history of {MESSAGES} messages (stream, seq, epoch)"
    );
    assert!(
        per_connection > 0 && per_connection < 4096,
        "{per_connection}"
    );
    assert!(per_room_history > 0, "{per_room_history}");
    drop(members);
}

#[test]
fn api_publish_on_one_node_reaches_members_on_another_in_order_with_their_messages() {
    let Some(redis) = RedisServer::start(
        "api_publish_on_one_node_reaches_members_on_another_in_order_with_their_messages",
    ) else {
        return;
    };
    let a = Process::start_with(&redis, "node-a", &["--api-key", API_KEY]);
    let b = Process::start(&redis, "node-b");
    let mut bob = b.ws();
    let mut cat = b.ws();
    let joined = join(&mut bob, "bob", "lobby");
    join(&mut cat, "cat", "lobby");
    bob.send_json(&chat_msg("first"));
    assert_eq!(next_chat(&mut bob)["seq"], 1);
    assert_eq!(next_chat(&mut cat)["seq"], 1);
    // Nobody is in the room on node A: the publication goes through the cluster all the same, numbered after bob's.
    let (status, answer) = a.api(
        "POST",
        "/api/publish",
        &json!({"room": "lobby", "content": "news one"}),
    );
    assert_eq!((status, answer), (200, json!({"seq": 2})));
    let (status, answer) = a.api(
        "POST",
        "/api/publish",
        &json!({"room": "lobby", "content": "news two", "from": "editor"}),
    );
    assert_eq!((status, answer), (200, json!({"seq": 3})));
    bob.send_json(&chat_msg("last"));
    let expected = [
        (2, "system", "news one"),
        (3, "editor", "news two"),
        (4, "bob", "last"),
    ];
    for (who, client) in [("bob", &mut bob), ("cat", &mut cat)] {
        for (seq, from, content) in expected {
            let message = next_chat(client);
            assert_eq!(message["room"], "lobby", "{who}: {message}");
            assert_eq!(message["seq"], seq, "{who}: {message}");
            assert_eq!(message["from"], from, "{who}: {message}");
            assert_eq!(message["content"], content, "{who}: {message}");
        }
    }
    assert!(no_more_chat(&mut bob));
    assert!(no_more_chat(&mut cat));
    // The published messages are in the room's history across the cluster: a newcomer on A is replayed them.
    let mut dan = a.ws();
    dan.send_json(
        &json!({"type": "join", "userId": "dan", "room": "lobby", "v": 2,
        "since": {"epoch": joined["epoch"], "seq": 0}}),
    );
    let replayed: Vec<Value> = (0..4)
        .map(|_| next_chat(&mut dan)["content"].clone())
        .collect();
    assert_eq!(replayed, ["first", "news one", "news two", "last"]);
}

#[test]
fn while_redis_is_away_an_api_publication_is_answered_503() {
    let Some(mut redis) =
        RedisServer::start("while_redis_is_away_an_api_publication_is_answered_503")
    else {
        return;
    };
    let a = Process::start_with(&redis, "node-a", &["--api-key", API_KEY]);
    redis.stop();
    assert!(wait_until(Duration::from_secs(10), || a.healthz() == 503));
    let (status, answer) = a.api(
        "POST",
        "/api/publish",
        &json!({"room": "lobby", "content": "news"}),
    );
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "unavailable", "{answer}");
}

#[test]
fn api_disconnect_on_one_node_closes_the_users_connection_on_another_with_4005() {
    let Some(redis) = RedisServer::start(
        "api_disconnect_on_one_node_closes_the_users_connection_on_another_with_4005",
    ) else {
        return;
    };
    let a = Process::start_with(&redis, "node-a", &["--api-key", API_KEY]);
    let b = Process::start(&redis, "node-b");
    let mut ann = a.ws();
    let mut bob = b.ws();
    let mut cat = b.ws();
    join(&mut ann, "ann", "lobby");
    join(&mut bob, "bob", "lobby");
    join(&mut cat, "cat", "lobby");
    // Node A has none of bob's connections: it closes nothing itself, and node B closes bob's.
    let (status, answer) = a.api("POST", "/api/disconnect", &json!({"userId": "bob"}));
    assert_eq!((status, answer), (200, json!({"closed": 0})));
    assert_eq!(bob.recv_close(), Some(4005));
    // The code and reason given travel too, and the caller's own connection of the user is closed by the caller.
    let (status, answer) = a.api(
        "POST",
        "/api/disconnect",
        &json!({"userId": "cat", "code": 4100, "reason": "banned"}),
    );
    assert_eq!((status, answer), (200, json!({"closed": 0})));
    assert_eq!(cat.recv_close(), Some(4100));
    let (status, answer) = a.api("POST", "/api/disconnect", &json!({"userId": "ann"}));
    assert_eq!((status, answer), (200, json!({"closed": 1})));
    assert_eq!(ann.recv_close(), Some(4005));
}

#[test]
fn api_dm_on_one_node_reaches_a_user_on_another_and_says_whether_it_did() {
    let Some(redis) =
        RedisServer::start("api_dm_on_one_node_reaches_a_user_on_another_and_says_whether_it_did")
    else {
        return;
    };
    let a = Process::start_with(&redis, "node-a", &["--api-key", API_KEY]);
    let b = Process::start(&redis, "node-b");
    let mut bob = b.ws();
    join(&mut bob, "bob", "lobby");
    let (status, answer) = a.api(
        "POST",
        "/api/dm",
        &json!({"to": "bob", "content": "psst", "from": "support"}),
    );
    assert_eq!((status, answer), (200, json!({"delivered": true})));
    let dm = bob.recv_type("dm");
    assert_eq!(
        (&dm["from"], &dm["content"]),
        (&json!("support"), &json!("psst"))
    );
    let (status, answer) = a.api(
        "POST",
        "/api/dm",
        &json!({"to": "nobody", "content": "psst"}),
    );
    assert_eq!((status, answer), (200, json!({"delivered": false})));
}

#[test]
fn api_room_members_on_one_node_list_the_members_of_every_node() {
    let Some(redis) =
        RedisServer::start("api_room_members_on_one_node_list_the_members_of_every_node")
    else {
        return;
    };
    let a = Process::start_with(&redis, "node-a", &["--api-key", API_KEY]);
    let b = Process::start(&redis, "node-b");
    let mut ann = a.ws();
    let mut bob = b.ws();
    join(&mut ann, "ann", "lobby");
    join(&mut bob, "bob", "lobby");
    assert_eq!(ann.recv_type("presence")["joined"], "bob");
    let (status, answer) = a.get("/api/rooms/lobby");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["room"], "lobby");
    assert_eq!(answer["count"], 2, "{answer}");
    let mut members: Vec<&str> = answer["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    members.sort_unstable();
    assert_eq!(members, ["ann", "bob"]);
}

#[test]
fn a_nodes_names_are_renewed_in_bounded_batches_spread_over_the_heartbeat_and_stay_held() {
    let Some(redis) = RedisServer::start(
        "a_nodes_names_are_renewed_in_bounded_batches_spread_over_the_heartbeat_and_stay_held",
    ) else {
        return;
    };
    const NAMES: usize = 300;
    const BATCH: usize = 25;
    const HEARTBEAT_MS: u64 = 300;
    let url = redis.url().parse().expect("redis url");
    let server = TestServer::with_config(|config| {
        config.redis = Some(url);
        config.node_heartbeat = Duration::from_millis(HEARTBEAT_MS);
        config.name_renewal_batch = BATCH;
        config.addresses = config.addresses.clone().unlimited();
    });
    assert!(wait_until(Duration::from_secs(10), || healthz(&server) == 200));
    let clients: Vec<TestClient> = (0..NAMES)
        .map(|i| {
            let mut client = server.ws("/ws");
            join(&mut client, &format!("u{i}"), &format!("room{}", i % 30));
            client
        })
        .collect();
    // Idle from here: the node's script calls are its heartbeat's.
    redis_command(&redis, &[b"CONFIG", b"RESETSTAT"]);
    // Four heartbeats: a name that was not renewed would have expired after three.
    std::thread::sleep(Duration::from_millis(4 * HEARTBEAT_MS));
    let info = redis_command(&redis, &[b"INFO", b"commandstats"]);
    let info =
        String::from_utf8_lossy(info.as_bytes().expect("INFO is a bulk string")).into_owned();
    let heartbeat_calls = calls(&info, "evalsha") + calls(&info, "eval");
    let renewals = calls(&info, "pexpire") + calls(&info, "set");
    eprintln!(
        "{NAMES} names, batches of {BATCH}, heartbeat {HEARTBEAT_MS} ms: {heartbeat_calls} heartbeat calls and \
         {renewals} renewals in 4 heartbeats"
    );
    // 12 calls per heartbeat (300 / 25), about 48 in 4 heartbeats (at least two whole cycles even on a busy
    // machine); never more than a batch each.
    assert!(heartbeat_calls >= 2 * 12, "{info}");
    assert!(renewals <= heartbeat_calls * BATCH as u64, "{info}");
    assert!(renewals >= 2 * NAMES as u64, "{info}");
    let held = redis_command(&redis, &[b"KEYS", b"roomcast:name:*"]);
    assert_eq!(
        held.as_array().map(<[_]>::len),
        Some(NAMES),
        "every name is still held: {held:?}"
    );
    drop(clients);
}

#[test]
fn api_rooms_on_one_node_lists_the_rooms_of_every_node_with_their_counts_summed() {
    let Some(redis) = RedisServer::start(
        "api_rooms_on_one_node_lists_the_rooms_of_every_node_with_their_counts_summed",
    ) else {
        return;
    };
    let a = Process::start_with(&redis, "node-a", &["--api-key", API_KEY]);
    let b = Process::start(&redis, "node-b");
    let mut ann = a.ws();
    let mut bob = b.ws();
    let mut cid = b.ws();
    join(&mut ann, "ann", "lobby");
    join(&mut bob, "bob", "lobby");
    join(&mut cid, "cid", "annex");
    assert_eq!(ann.recv_type("presence")["joined"], "bob");
    // Node B's presence calls reach Redis on B's own connection: A's answer shows them once Redis has run them.
    let lists = |rooms: Value| {
        let expected = (200, json!({ "rooms": rooms }));
        wait_until(Duration::from_secs(10), || a.get("/api/rooms") == expected)
    };
    assert!(
        lists(json!([{"room": "annex", "members": 1}, {"room": "lobby", "members": 2}])),
        "A listed {:?}",
        a.get("/api/rooms")
    );
    // A room whose last member left, on any node, is listed no more; one that keeps a member shows the new count.
    drop(cid);
    drop(bob);
    assert!(
        lists(json!([{"room": "lobby", "members": 1}])),
        "A listed {:?}",
        a.get("/api/rooms")
    );
}

#[test]
fn while_redis_is_away_the_list_of_rooms_is_answered_503() {
    let Some(mut redis) =
        RedisServer::start("while_redis_is_away_the_list_of_rooms_is_answered_503")
    else {
        return;
    };
    let a = Process::start_with(&redis, "node-a", &["--api-key", API_KEY]);
    let mut ann = a.ws();
    join(&mut ann, "ann", "lobby");
    redis.stop();
    assert!(wait_until(Duration::from_secs(10), || a.healthz() == 503));
    // The node's own rooms are not the cluster's: it does not answer with them alone.
    let (status, answer) = a.get("/api/rooms");
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "unavailable", "{answer}");
}

#[test]
fn api_rooms_forgets_the_members_of_a_dead_node_within_three_heartbeats() {
    let Some(redis) =
        RedisServer::start("api_rooms_forgets_the_members_of_a_dead_node_within_three_heartbeats")
    else {
        return;
    };
    let a = Process::start_with(
        &redis,
        "node-a",
        &["--api-key", API_KEY, "--node-heartbeat", "0.2"],
    );
    let b = Process::start_with_heartbeat(&redis, "node-b", "0.2");
    let mut ann = a.ws();
    let mut bob = b.ws();
    let mut cid = b.ws();
    join(&mut ann, "ann", "lobby");
    join(&mut bob, "bob", "lobby");
    join(&mut cid, "cid", "annex");
    let lists = |rooms: Value| {
        let expected = (200, json!({ "rooms": rooms }));
        wait_until(Duration::from_secs(10), || a.get("/api/rooms") == expected)
    };
    assert!(
        lists(json!([{"room": "annex", "members": 1}, {"room": "lobby", "members": 2}])),
        "A listed {:?}",
        a.get("/api/rooms")
    );
    // Node B dies without a word: A's heartbeat removes its members, and the room only B had is gone with them.
    drop(b);
    assert!(
        lists(json!([{"room": "lobby", "members": 1}])),
        "A listed {:?}",
        a.get("/api/rooms")
    );
}
