//! A real `redis-server` for the tests that need one: started on a free 127.0.0.1 port without persistence
//! (`--save '' --appendonly no`), or with an append-only file where persistence is the point, in a directory of its
//! own; stopped (and its directory removed) when dropped.
//!
//! Owns finding the binary, starting it, waiting until it answers, and killing it. It must not decide what a test
//! does with Redis. Without `redis-server` installed, `RedisServer::start` says loudly which test is skipped and
//! why and returns `None`, so plain `cargo test` passes on a machine without Redis; under `CI=true` a missing
//! `redis-server` panics instead, because in CI a skipped test is a failed one.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `redis-server` package installs the server.
const DEBIAN_PATH: &str = "/usr/bin/redis-server";

/// How long a started server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child process on 127.0.0.1; killed and reaped on drop.
pub struct RedisServer {
    /// The port it listens on (and listens on again after `start_again`).
    pub port: u16,
    binary: PathBuf,
    /// With an append-only file (`--appendonly yes --appendfsync always`), kept across `start_again`.
    persistent: bool,
    /// Its working directory, its own.
    dir: PathBuf,
    /// `None` while stopped.
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server for the test named `test`, or returns `None` (after saying so on stderr) when
    /// `redis-server` is not installed. Panics when it is missing under `CI=true`, or when it will not start.
    pub fn start(test: &str) -> Option<RedisServer> {
        RedisServer::start_as(test, false)
    }

    /// `start` with an append-only file, fsynced at every write: what Redis acknowledged survives `start_again`.
    pub fn start_persistent(test: &str) -> Option<RedisServer> {
        RedisServer::start_as(test, true)
    }

    fn start_as(test: &str, persistent: bool) -> Option<RedisServer> {
        let Some(binary) = find_binary() else {
            let why = format!(
                "redis-server is not installed (looked in $ROOMCAST_REDIS_SERVER, $PATH and {DEBIAN_PATH}); \
                 install Debian's `redis-server` package to run it"
            );
            if std::env::var("CI").is_ok_and(|value| value == "true") {
                panic!("{test}: CI=true and {why}: a skipped test fails in CI");
            }
            // Straight to stderr, not through `eprintln!`, which the test harness captures and hides for a
            // test that passes.
            let _ = writeln!(std::io::stderr(), "\n!!! SKIPPED {test}: {why}\n");
            return None;
        };
        // A port taken by another process between our probe and redis-server's bind is tried again.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let dir =
                std::env::temp_dir().join(format!("roomcast-redis-{}-{port}", std::process::id()));
            match RedisServer::spawn(&binary, port, persistent, dir) {
                Ok(server) => return Some(server),
                Err(error) => last_error = error,
            }
        }
        panic!("{test}: {} would not start: {last_error}", binary.display());
    }

    fn spawn(
        binary: &PathBuf,
        port: u16,
        persistent: bool,
        dir: PathBuf,
    ) -> Result<RedisServer, String> {
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let appendonly = if persistent { "yes" } else { "no" };
        let child = Command::new(binary)
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", appendonly])
            .args(["--appendfsync", "always"])
            .args(["--dir", &dir.display().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut server = RedisServer {
            port,
            binary: binary.clone(),
            persistent,
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = server.child.as_mut().map(Child::try_wait) {
                return Err(format!(
                    "redis-server exited with {status} (port {port} taken?)"
                ));
            }
            if server.answers_ping() {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "redis-server did not answer PING on port {port} within {START_TIMEOUT:?}"
        ))
    }

    /// Kills the server (SIGKILL: nothing is saved, connections break at once); the port stays this server's.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port after `stop`: empty, or, when persistent, with what its
    /// append-only file holds.
    pub fn start_again(&mut self) {
        self.stop();
        let mut again =
            RedisServer::spawn(&self.binary, self.port, self.persistent, self.dir.clone())
                .unwrap_or_else(|e| panic!("restarting redis-server: {e}"));
        self.child = again.child.take();
        // The directory stays this server's: the other value must not remove it when dropped.
        again.dir = PathBuf::new();
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(self.addr()) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut answer = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Its `redis://` URL, for `--redis`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `$ROOMCAST_REDIS_SERVER` when set (a path that is not a file counts as missing, which is how the skip is
/// tried out), else `redis-server` on the `PATH`, else Debian's path.
fn find_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ROOMCAST_REDIS_SERVER") {
        return Some(PathBuf::from(path)).filter(|path| path.is_file());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-server"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| Some(PathBuf::from(DEBIAN_PATH)).filter(|path| path.is_file()))
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}
