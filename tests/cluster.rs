//! roomcast with `--redis`: the link to a real `redis-server` (`common::redis`, skipped loudly without one), what
//! `/healthz` and `/metrics` say about it while Redis comes and goes, `--reuse-port`, and a bad `--redis` URL.

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::attack::{gauge, series, wait_until};
use common::redis::RedisServer;
use common::TestServer;

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
