//! Accepting: new TCP clients off the listener, into the slab, or refused when the server is full.
//!
//! Owns the accept loop, its backoff when the process runs out of file descriptors, and the connection limit. It
//! must not read from a client: the first read happens through `read.rs`.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use log::{debug, warn};
use mio::net::TcpStream;
use mio::{Interest, Token};

use super::client::Client;
use super::Server;
use crate::http::Refusal;

/// How long to stop accepting after the process ran out of file descriptors, instead of spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

impl Server {
    /// Accepts every connection waiting on the listener (edge-triggered: until WouldBlock).
    pub(super) fn accept_waiting(&mut self) {
        if self.draining_until.is_some() || self.accept_paused_until.is_some() {
            return;
        }
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((socket, peer)) => {
                    self.accept_failing = false;
                    self.admit(socket, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS: the pending connections stay in the backlog; retry after a pause
                    // instead of spinning on a listener that stays readable.
                    self.metrics.accept_errors += 1;
                    if !self.accept_failing {
                        warn!("accept failed: {e}; retrying every {ACCEPT_BACKOFF:?} until it succeeds");
                    }
                    self.accept_failing = true;
                    self.accept_paused_until =
                        Some(self.now.plus(ACCEPT_BACKOFF.as_millis() as u32));
                    return;
                }
            }
        }
    }

    /// Takes one accepted socket into the slab, or refuses it with 503 at the connection limit (10.4) or when its
    /// address holds as many connections as one address may. A connection from a trusted proxy is counted against
    /// the client address the proxy names, once its request head arrives (`http_phase.rs`).
    fn admit(&mut self, mut socket: TcpStream, peer: SocketAddr) {
        self.metrics.accepted_total += 1;
        let limits = &self.config.addresses;
        let proxied = limits.trusted_proxies.iter().any(|c| c.contains(peer.ip()));
        let refusal = if self.clients.len() >= self.config.max_connections {
            Some(Refusal::Overloaded)
        } else if !proxied && self.addresses.open(peer.ip(), limits, self.now).is_err() {
            Some(Refusal::TooManyFromAddress)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            self.metrics.count_refusal(refusal);
            self.metrics.bytes_out += refuse_unregistered(&mut socket, refusal) as u64;
            return;
        }
        if let Err(e) = socket.set_nodelay(true) {
            debug!("set_nodelay for {peer}: {e}");
        }
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut socket, Token(key), Interest::READABLE)
        {
            warn!("cannot register {peer}: {e}");
            if !proxied {
                self.addresses.close(peer.ip());
            }
            return;
        }
        self.next_serial = self.next_serial.wrapping_add(1);
        entry.insert(Client::new(
            socket,
            self.next_serial,
            self.now,
            &self.input_limits,
            peer.ip(),
            !proxied,
        ));
        debug!("accepted {peer} as {key}");
        self.arm_timer(key);
        // The request may already be waiting: with edge-triggered readiness, read now rather than hope for an event.
        self.read_socket(key);
    }
}

/// Refuses a connection that never made it into the slab: best-effort response, then close. Returns the bytes
/// written.
fn refuse_unregistered(socket: &mut TcpStream, refusal: Refusal) -> usize {
    let mut out = Vec::new();
    refusal.write_response(&mut out);
    let written = socket.write(&out).unwrap_or(0);
    let _ = socket.shutdown(Shutdown::Write);
    written
}
