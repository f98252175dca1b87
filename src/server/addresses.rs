//! Per-address limits: how many connections one client address may hold open, how fast it may start new ones,
//! and which address a connection counts against when it arrives through a trusted proxy.
//!
//! Owns [`AddressBook`] (a count of open connections and a token bucket of request heads per address) and
//! [`client_address`] (the `X-Forwarded-For` rule). It is pure: the loop passes the time in and acts on the
//! answers; it must not touch sockets or decide what response is sent.

use std::collections::HashMap;
use std::net::IpAddr;

use super::timeouts::Millis;
use crate::config::{AddressLimits, Cidr};

/// Why a connection from an address is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressRefusal {
    /// The address holds `max_connections_per_ip` open connections already.
    TooManyConnections,
    /// The address started requests faster than its rate; one token comes back in this many seconds.
    TooFast {
        /// Whole seconds until the next request would pass.
        retry_after_secs: u32,
    },
}

/// What one address holds and may still do.
#[derive(Clone, Copy, Debug)]
struct Entry {
    open: u32,
    tokens: f64,
    last: Millis,
}

/// Open connections and request rate, by client address.
#[derive(Debug, Default)]
pub struct AddressBook {
    entries: HashMap<IpAddr, Entry>,
    /// Entries looked at since the last sweep: a sweep runs after as many inserts as there are entries.
    inserts_since_sweep: usize,
}

impl AddressBook {
    /// Charges one request head from `ip` at `now` against its rate (`handshake_rate_per_ip`, 0 = unlimited).
    pub fn charge_request(
        &mut self,
        ip: IpAddr,
        limits: &AddressLimits,
        now: Millis,
    ) -> Result<(), AddressRefusal> {
        if limits.handshake_rate_per_ip <= 0.0 {
            return Ok(());
        }
        let entry = self.entry(ip, limits, now);
        let elapsed = now.0.saturating_sub(entry.last.0) as f64 / 1000.0;
        entry.last = now;
        entry.tokens = (entry.tokens + elapsed * limits.handshake_rate_per_ip)
            .min(f64::from(limits.handshake_burst_per_ip));
        if entry.tokens >= 1.0 {
            entry.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - entry.tokens) / limits.handshake_rate_per_ip;
        Err(AddressRefusal::TooFast {
            retry_after_secs: wait.ceil().clamp(1.0, 3600.0) as u32,
        })
    }

    /// Counts a new connection from `ip`, or refuses it when the address is at `max_connections_per_ip`.
    pub fn open(
        &mut self,
        ip: IpAddr,
        limits: &AddressLimits,
        now: Millis,
    ) -> Result<(), AddressRefusal> {
        if limits.max_connections_per_ip == 0 {
            return Ok(());
        }
        let entry = self.entry(ip, limits, now);
        if entry.open >= limits.max_connections_per_ip {
            return Err(AddressRefusal::TooManyConnections);
        }
        entry.open += 1;
        Ok(())
    }

    /// A connection counted by `open` ended.
    pub fn close(&mut self, ip: IpAddr) {
        if let Some(entry) = self.entries.get_mut(&ip) {
            entry.open = entry.open.saturating_sub(1);
        }
    }

    /// Addresses tracked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn entry(&mut self, ip: IpAddr, limits: &AddressLimits, now: Millis) -> &mut Entry {
        if !self.entries.contains_key(&ip) {
            self.inserts_since_sweep += 1;
            if self.inserts_since_sweep > self.entries.len().max(64) {
                self.sweep(limits, now);
            }
        }
        self.entries.entry(ip).or_insert(Entry {
            open: 0,
            tokens: f64::from(limits.handshake_burst_per_ip),
            last: now,
        })
    }

    /// Forgets addresses with nothing open whose request bucket has refilled: they are as if never seen. Runs in
    /// time proportional to the entries, once per as many new addresses, so memory stays proportional to the
    /// addresses active in the last few seconds.
    fn sweep(&mut self, limits: &AddressLimits, now: Millis) {
        self.inserts_since_sweep = 0;
        let refill_ms = if limits.handshake_rate_per_ip > 0.0 {
            (f64::from(limits.handshake_burst_per_ip) / limits.handshake_rate_per_ip * 1000.0)
                as u64
        } else {
            0
        };
        self.entries
            .retain(|_, entry| entry.open > 0 || now.0.saturating_sub(entry.last.0) < refill_ms);
    }
}

/// The address a request counts against: the peer's, unless the peer is a trusted proxy, in which case the
/// nearest untrusted address of `X-Forwarded-For` (its values read right to left, the order proxies append in).
/// A value that is not an address ends the walk at the last trusted hop: a client cannot hide behind garbage.
pub fn client_address(peer: IpAddr, forwarded_for: &[&[u8]], trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|cidr| cidr.contains(*ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for value in forwarded_for.iter().rev() {
        for hop in value.rsplit(|&b| b == b',') {
            let parsed = std::str::from_utf8(hop)
                .ok()
                .and_then(|text| text.trim().parse::<IpAddr>().ok());
            let Some(ip) = parsed else {
                return client;
            };
            client = ip;
            if !is_trusted(&ip) {
                return ip;
            }
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: u32, rate: f64, burst: u32) -> AddressLimits {
        AddressLimits {
            max_connections_per_ip: max,
            handshake_rate_per_ip: rate,
            handshake_burst_per_ip: burst,
            trusted_proxies: Cidr::loopback(),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_address_holds_at_most_its_connections_and_gets_them_back() {
        let mut book = AddressBook::default();
        let limits = limits(2, 0.0, 0);
        let a = ip("192.0.2.1");
        assert_eq!(book.open(a, &limits, Millis(0)), Ok(()));
        assert_eq!(book.open(a, &limits, Millis(0)), Ok(()));
        assert_eq!(
            book.open(a, &limits, Millis(0)),
            Err(AddressRefusal::TooManyConnections)
        );
        assert_eq!(book.open(ip("192.0.2.2"), &limits, Millis(0)), Ok(()));
        book.close(a);
        assert_eq!(book.open(a, &limits, Millis(0)), Ok(()));
    }

    #[test]
    fn requests_beyond_the_burst_wait_for_the_rate() {
        let mut book = AddressBook::default();
        let limits = limits(0, 2.0, 3);
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(book.charge_request(a, &limits, Millis(0)), Ok(()));
        }
        assert_eq!(
            book.charge_request(a, &limits, Millis(0)),
            Err(AddressRefusal::TooFast {
                retry_after_secs: 1
            })
        );
        assert_eq!(book.charge_request(a, &limits, Millis(500)), Ok(()));
    }

    #[test]
    fn zero_turns_each_limit_off() {
        let mut book = AddressBook::default();
        let off = limits(0, 0.0, 0);
        for _ in 0..10_000 {
            assert_eq!(book.open(ip("192.0.2.1"), &off, Millis(0)), Ok(()));
            assert_eq!(
                book.charge_request(ip("192.0.2.1"), &off, Millis(0)),
                Ok(())
            );
        }
        assert_eq!(book.len(), 0, "nothing is tracked when nothing is limited");
    }

    #[test]
    fn idle_addresses_are_forgotten() {
        let mut book = AddressBook::default();
        let limits = limits(10, 50.0, 100);
        for i in 0..200u32 {
            let a = IpAddr::from((0x0A00_0000 + i).to_be_bytes());
            book.charge_request(a, &limits, Millis(u64::from(i) * 100))
                .unwrap();
        }
        assert!(book.len() < 200, "{} addresses kept", book.len());
    }

    #[test]
    fn only_a_trusted_peer_may_name_the_client() {
        let trusted = Cidr::loopback();
        let xff: [&[u8]; 1] = [b"203.0.113.7"];
        assert_eq!(
            client_address(ip("127.0.0.1"), &xff, &trusted),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_address(ip("198.51.100.9"), &xff, &trusted),
            ip("198.51.100.9"),
            "an untrusted peer's header is ignored"
        );
    }

    #[test]
    fn the_nearest_untrusted_hop_is_the_client() {
        let trusted = vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let headers: [&[u8]; 2] = [b"198.51.100.1, 203.0.113.7", b"10.1.2.3"];
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers, &trusted),
            ip("203.0.113.7"),
            "198.51.100.1 was written by the client itself and is not believed"
        );
    }

    #[test]
    fn garbage_in_the_header_stops_at_the_last_trusted_hop() {
        let trusted = Cidr::loopback();
        let headers: [&[u8]; 1] = [b"203.0.113.7, not-an-address"];
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers, &trusted),
            ip("127.0.0.1")
        );
        let none: [&[u8]; 0] = [];
        assert_eq!(client_address(ip("::1"), &none, &trusted), ip("::1"));
    }
}
