//! The server API's requests on the loop: a head judged by `http::api`, its body collected, the call carried out
//! through the chat's operations for the application, and the answer queued, with the connection kept for the
//! next request when the client asked for that.
//!
//! Owns the API's phase of a connection ([`Phase::ReadingBody`]) and keep-alive: after an answer the connection
//! goes back to reading a request head, with any bytes that came after the body (pipelined requests, handled in
//! the turn's tail, not recursively). It must not judge a request (`http::api`) nor decide what a call does to the
//! chat (`chat::app`), and never logs the key or a body.

use log::debug;
use serde_json::json;

use super::client::{Flags, Phase};
use super::queue::Chunk;
use super::timeouts::Times;
use super::Server;
use crate::http::{self, api};
use crate::protocol::handshake::RequestHead;
use crate::protocol::CloseCode;

impl Server {
    /// A request head for the API arrived, with `leftover`, what came after it.
    pub(super) fn on_api_request(&mut self, key: usize, request: &RequestHead, leftover: Vec<u8>) {
        let judged = api::read_head(request, self.config.api_key.as_ref(), &self.config.origins);
        // A call with the right key is the application's backend: it is not held to the per-address request rate
        // that protects the server from strangers. Everything else is.
        if judged.is_err() {
            if let Err(refusal) = self.admit_address(key, request) {
                return self.refuse(key, refusal);
            }
        }
        let head = match judged {
            Ok(head) => head,
            Err(refusal) => return self.refuse_call(key, &refusal),
        };
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        // RFC 9110 10.1.1: a client that asked whether to send its body (curl does, for bodies over 1 KiB) is told
        // to go on, rather than left to wait for its own timeout.
        if leftover.len() < head.body_len && request.has_token("expect", "100-continue") {
            client
                .queue
                .push(Chunk::Owned(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()));
            self.mark_dirty(key);
        }
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        client.phase = Phase::ReadingBody {
            head: Box::new(head),
            body: leftover,
        };
        self.on_api_body(key, &[]);
    }

    /// More of an API request's body arrived: answer once it is whole.
    pub(super) fn on_api_body(&mut self, key: usize, bytes: &[u8]) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let Phase::ReadingBody { head, body } = &mut client.phase else {
            return;
        };
        body.extend_from_slice(bytes);
        if body.len() < head.body_len {
            return;
        }
        let Phase::ReadingBody { head, mut body } =
            std::mem::replace(&mut client.phase, Phase::Responding)
        else {
            return;
        };
        let rest = body.split_off(head.body_len);
        let answered =
            api::read_call(&head.endpoint, &body).and_then(|call| self.carry_out(key, call));
        match answered {
            Ok(Answer::Now(answer)) => self.answer_call(key, &head, Ok(answer), rest),
            Err(refusal) => self.answer_call(key, &head, Err(refusal), rest),
            Ok(Answer::Later) => {
                if let Some(client) = self.clients.get_mut(key) {
                    client.phase = Phase::AwaitingCluster { answer: head, rest };
                }
            }
        }
    }

    /// The cluster engine's answer to the request `client` (slab key and serial) waits for: its response goes out
    /// as if the call had been answered at once. Nothing if the connection is gone or no longer waits.
    pub(super) fn answer_later(
        &mut self,
        (key, serial): (usize, u32),
        answer: Result<String, api::ApiError>,
    ) {
        let Some(client) = self.clients.get_mut(key).filter(|c| c.serial == serial) else {
            return;
        };
        if !matches!(client.phase, Phase::AwaitingCluster { .. }) {
            return;
        }
        let Phase::AwaitingCluster { answer: head, rest } =
            std::mem::replace(&mut client.phase, Phase::Responding)
        else {
            return;
        };
        self.answer_call(key, &head, answer, rest);
    }

    /// Queues the response to a call, counted; with keep-alive the connection goes back to reading a request head,
    /// starting with `rest`, else it closes once the response is sent.
    fn answer_call(
        &mut self,
        key: usize,
        head: &api::Head,
        answer: Result<String, api::ApiError>,
        rest: Vec<u8>,
    ) {
        let mut response = Vec::new();
        match answer {
            Ok(answer) => {
                *self
                    .metrics
                    .api_calls
                    .entry(head.endpoint.label())
                    .or_default() += 1;
                api::write_ok(&answer, head.keep_alive, &mut response);
            }
            Err(refusal) => {
                self.metrics.count_api_refusal(refusal.label());
                refusal.write_response(head.keep_alive, &mut response);
            }
        }
        if head.head_only {
            http::drop_body(&mut response);
        }
        if !head.keep_alive {
            return self.queue_response(key, response);
        }
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        client.queue.push(Chunk::Owned(response));
        client.phase = Phase::ReadingRequest { head: rest };
        // The next request has the handshake timeout from now, as a new connection would.
        client.times = Times::accepted(self.now);
        let pipelined = matches!(&client.phase, Phase::ReadingRequest { head } if !head.is_empty());
        if pipelined && !client.flags.contains(Flags::FAILED) {
            self.pipelined.push(key);
        }
        self.mark_dirty(key);
        self.arm_timer(key);
    }

    /// Refuses an API request with its status and JSON body; the connection closes once that is sent (its body, if
    /// any, was not read).
    fn refuse_call(&mut self, key: usize, refusal: &api::ApiError) {
        debug!("refusing API request {key}: {} {refusal}", refusal.status());
        self.metrics.count_api_refusal(refusal.label());
        let mut out = Vec::new();
        refusal.write_response(false, &mut out);
        self.queue_response(key, out);
    }

    /// Carries out `call`, made on connection `key`, through the chat, applying what it asks for; the answer's
    /// JSON, or a 400 for values the chat refuses. On a node with `--redis`, a publication, a DM to a name held
    /// elsewhere and the room lists go to the cluster engine and are answered later ([`Server::answer_later`]).
    fn carry_out(&mut self, key: usize, call: api::Call) -> Result<Answer, api::ApiError> {
        let now = super::chat_time(self.now);
        let refused = |e: crate::chat::AppRefusal| match e {
            crate::chat::AppRefusal::Relayed => api::ApiError::Unavailable(e.to_string().into()),
            _ => api::ApiError::BadRequest(e.to_string().into()),
        };
        let answer = match call {
            api::Call::Publish {
                room,
                content,
                from,
            } if self.cluster.is_some() => {
                let publication = self
                    .chat
                    .relayed_publication(&room, &content, from.as_deref(), now)
                    .map_err(refused)?;
                if !self.publish_for_api(key, publication) {
                    return Err(api::ApiError::Unavailable(
                        "the cluster engine (Redis) is not reachable".into(),
                    ));
                }
                return Ok(Answer::Later);
            }
            api::Call::Publish {
                room,
                content,
                from,
            } => {
                let seq = self
                    .chat
                    .publish_from_app(&room, &content, from.as_deref(), now, &mut self.actions)
                    .map_err(refused)?;
                json!({ "seq": seq })
            }
            api::Call::Dm { to, content, from } => {
                // On a node of a cluster, a name held on another node is reached through it.
                if self.cluster.is_some() {
                    let relayed = self
                        .chat
                        .relayed_app_dm(&to, &content, from.as_deref(), now)
                        .map_err(refused)?;
                    if let Some(dm) = relayed {
                        if !self.relay_dm_for_api(key, dm) {
                            return Err(api::ApiError::Unavailable(
                                "the cluster engine (Redis) is not reachable".into(),
                            ));
                        }
                        return Ok(Answer::Later);
                    }
                }
                let delivered = self
                    .chat
                    .dm_from_app(&to, &content, from.as_deref(), now, &mut self.actions)
                    .map_err(refused)?;
                json!({ "delivered": delivered })
            }
            api::Call::Rooms => {
                // On a node of a cluster, the rooms of every node, from the hash of rooms Redis keeps.
                if self.cluster.is_some() {
                    if !self.rooms_for_api(key) {
                        return Err(api::ApiError::Unavailable(
                            "the cluster engine (Redis) is not reachable".into(),
                        ));
                    }
                    return Ok(Answer::Later);
                }
                let rooms: Vec<_> = self
                    .chat
                    .rooms()
                    .into_iter()
                    .map(|room| json!({"room": &*room.name, "members": room.members}))
                    .collect();
                json!({ "rooms": rooms })
            }
            api::Call::Room { name } => {
                // On a node of a cluster, the members of every node, from the room's presence hash in Redis.
                if self.cluster.is_some() {
                    if let Some(room) = self.chat.room_name_as_kept(&name) {
                        if !self.room_members_for_api(key, &room, name) {
                            return Err(api::ApiError::Unavailable(
                                "the cluster engine (Redis) is not reachable".into(),
                            ));
                        }
                        return Ok(Answer::Later);
                    }
                }
                let members: Vec<String> = self
                    .chat
                    .room_members(&name)
                    .iter()
                    .map(|member| member.to_string())
                    .collect();
                json!({"room": name, "count": members.len(), "members": members})
            }
            api::Call::Disconnect { user, code, reason } => {
                let closed = self
                    .chat
                    .disconnect_user(&user, CloseCode::new(code), &reason, now, &mut self.actions)
                    .map_err(refused)?;
                // On a node of a cluster, the other nodes close the user's connections they have: `closed` counts
                // this node's.
                if self.cluster.is_some() && !self.disconnect_across_cluster(&user, code, &reason) {
                    self.apply_actions();
                    return Err(api::ApiError::Unavailable(
                        "closed here; the other nodes could not be told: Redis is not reachable"
                            .into(),
                    ));
                }
                json!({ "closed": closed })
            }
        };
        self.apply_actions();
        Ok(Answer::Now(answer.to_string()))
    }
}

/// When a call is answered.
enum Answer {
    /// At once, with this JSON.
    Now(String),
    /// Once the cluster engine has answered ([`Server::answer_later`]).
    Later,
}
