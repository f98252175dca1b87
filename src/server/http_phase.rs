//! The HTTP phase: a request head becomes a plain response, a refusal, or the WebSocket upgrade.
//!
//! Owns the moment a client stops being HTTP: it parses the head (`protocol::handshake`), routes it (`http`), and
//! either queues a response that ends the connection or writes the 101 and hands the client to `websocket.rs`,
//! with any bytes that came after the head. It must not judge the request itself: the rules are in
//! `protocol::handshake` and `http`.

use log::debug;

use super::addresses::{client_address, AddressRefusal};
use super::client::{Flags, Phase};
use super::queue::Chunk;
use super::Server;
use crate::http::{self, api, Endpoint, Refusal, Route};
use crate::protocol::deflate::DeflateParams;
use crate::protocol::handshake::{self, RequestHead};
use crate::protocol::{self, Role};

impl Server {
    /// More of the request head arrived: act once it is complete.
    pub(super) fn on_request_bytes(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let Phase::ReadingRequest { head } = &mut client.phase else {
            return;
        };
        let request = match handshake::parse_request_head(head, self.config.max_header_bytes) {
            Ok(None) => return,
            Ok(Some(request)) => request,
            Err(e) => return self.refuse(key, Refusal::Head(e)),
        };
        let leftover = head.split_off(request.len);
        if api::is_api_path(request.path()) {
            return self.on_api_request(key, &request, leftover);
        }
        if let Err(refusal) = self.admit_address(key, &request) {
            return self.refuse(key, refusal);
        }
        match http::route(&request, &self.config.origins, self.config.compression) {
            Err(refusal) => self.refuse(key, refusal),
            Ok(Route::Upgrade {
                endpoint,
                accept,
                deflate,
            }) => self.upgrade(key, &request, endpoint, &accept, deflate, leftover),
            Ok(route) => self.respond(key, route, request.method == "HEAD"),
        }
    }

    /// Answers a refused request with its HTTP status and reason; the connection ends once that is sent (RFC 6455
    /// 4.2.1: stop processing the handshake and answer with an error code; 7.2.2).
    /// Charges the request to its client's address: its rate, and, for a connection through a trusted proxy, the
    /// connection count of the address the proxy names (`X-Forwarded-For`).
    pub(super) fn admit_address(
        &mut self,
        key: usize,
        request: &RequestHead,
    ) -> Result<(), Refusal> {
        let Some(client) = self.clients.get_mut(key) else {
            return Ok(());
        };
        let limits = &self.config.addresses;
        let forwarded_for: Vec<&[u8]> = request.values("x-forwarded-for").collect();
        let address = client_address(client.address, &forwarded_for, &limits.trusted_proxies);
        if !client.flags.contains(Flags::COUNTED) {
            self.addresses
                .open(address, limits, self.now)
                .map_err(|_| Refusal::TooManyFromAddress)?;
            client.address = address;
            client.flags.set(Flags::COUNTED, true);
        }
        self.addresses
            .charge_request(address, limits, self.now)
            .map_err(|refusal| match refusal {
                AddressRefusal::TooFast { retry_after_secs } => {
                    Refusal::TooFastFromAddress { retry_after_secs }
                }
                AddressRefusal::TooManyConnections => Refusal::TooManyFromAddress,
            })
    }

    pub(super) fn refuse(&mut self, key: usize, refusal: Refusal) {
        debug!("refusing {key}: {} {refusal}", refusal.status());
        self.metrics.count_refusal(refusal);
        let mut out = Vec::new();
        refusal.write_response(&mut out);
        self.queue_response(key, out);
    }

    fn respond(&mut self, key: usize, route: Route, head_only: bool) {
        let mut out = Vec::new();
        match route {
            Route::Page => http::write_page(&mut out),
            // A node whose Redis is not ready cannot carry chat across the cluster: a load balancer should send
            // new clients elsewhere.
            Route::Healthz if self.cluster.as_ref().is_some_and(|c| !c.is_ready()) => {
                http::write_response(
                    503,
                    "text/plain; charset=utf-8",
                    &[],
                    b"redis unavailable\n",
                    &mut out,
                )
            }
            Route::Healthz => {
                http::write_response(200, "text/plain; charset=utf-8", &[], b"ok\n", &mut out)
            }
            Route::Metrics => {
                self.metrics.chat_refusals = self.chat.refusals().collect();
                self.metrics.token_cache_hits = self.chat.token_cache_stats().1;
                let text = self.metrics.render(self.gauges());
                http::write_response(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    &[],
                    text.as_bytes(),
                    &mut out,
                );
            }
            Route::Upgrade { .. } => return,
        }
        if head_only {
            http::drop_body(&mut out);
        }
        self.queue_response(key, out);
    }

    /// Queues a complete HTTP response; the connection closes once it is written.
    pub(super) fn queue_response(&mut self, key: usize, response: Vec<u8>) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        client.phase = Phase::Responding;
        client.queue.push(Chunk::Owned(response));
        self.mark_dirty(key);
    }

    /// Writes the 101 (4.2.2), naming permessage-deflate if it was agreed (RFC 7692 5), and turns the client into
    /// a WebSocket on `endpoint`.
    fn upgrade(
        &mut self,
        key: usize,
        request: &RequestHead,
        endpoint: Endpoint,
        accept: &str,
        deflate: Option<DeflateParams>,
        leftover: Vec<u8>,
    ) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let max_message_size = match endpoint {
            Endpoint::Chat => self.config.chat_max_message_size,
            Endpoint::Echo => self.config.echo_max_message_size,
        };
        let mut response = Vec::with_capacity(160);
        let extensions = deflate.map(|params| params.response_header());
        handshake::write_accept_response_with_extensions(
            accept,
            extensions.as_deref(),
            &mut response,
        );
        client.queue.push(Chunk::Owned(response));
        let mut ws = protocol::Connection::new(Role::Server, max_message_size);
        if let Some(params) = &deflate {
            ws.use_deflate(params);
            client.shared_window = ws.shared_compression_window();
            *self
                .metrics
                .deflate_upgrades_total
                .entry(endpoint.label())
                .or_default() += 1;
        }
        if self.config.max_fragments > 0 {
            ws.limit_fragments(self.config.max_fragments);
        }
        client.phase = Phase::WebSocket { ws, endpoint };
        let label = endpoint.label();
        *self.metrics.upgrades_total.entry(label).or_default() += 1;
        // The path only: a query may hold a connection token (`?token=`), which is never logged.
        debug!("{key} upgraded to {label} ({})", request.path());
        if endpoint == Endpoint::Chat && self.chat.requires_tokens() {
            let token = http::query_token(&request.target);
            let now = super::chat_time(self.now);
            self.chat
                .connect(key, token.as_deref(), now, &mut self.actions);
            self.park_if_checking(key);
            self.apply_actions();
        }
        self.mark_dirty(key);
        self.arm_timer(key);
        // RFC 6455 4.1 has a client wait for our 101 before it sends frames; bytes that came early anyway are read
        // as the first frames (a tolerance, not a rule).
        if !leftover.is_empty() {
            self.on_frames(key, &leftover);
        }
    }
}
