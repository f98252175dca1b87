//! What each connection's token lets it do, and the deadlines tokens set: the chat's side of `--auth-secret` and
//! `--auth-public-key`.
//!
//! Owns, per connection, the identity its last valid token carried (`sub`, `rooms`, `dm`) and when that token runs
//! out; the deadline by which a new connection must have joined; and the decisions made from them: whether a `join`
//! may go ahead, whether a `dm` may be sent, what a refused or expired token costs the connection (an `error`, then
//! Close 4003 or 4004). Tokens are verified by `crate::auth`, with the time the chat is given. With no verifier
//! (open mode, the default) every check passes and nothing is kept. It must not decide who holds a name or sits in
//! a room (`handlers.rs`), and never logs a token.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::rc::Rc;

use super::names;
use super::request::{JoinRequest, MAX_USER_CHARS};
use super::wire::ErrorCode;
use super::{Action, Chat, ClientId, Dialect, Now, Participant};
use crate::auth::{Identity, TokenError, Verifier};
use crate::id_hash::IdMap;
use crate::protocol::CloseCode;

/// Close code for a connection whose token is missing, malformed, wrongly signed or not yet valid.
pub(super) const CLOSE_UNAUTHORIZED: CloseCode = CloseCode::new(4003);
/// Close code for a connection whose token expired (refused as expired, or reached its `exp` without a refresh).
pub(super) const CLOSE_TOKEN_EXPIRED: CloseCode = CloseCode::new(4004);

const TOKEN_REQUIRED: &str =
    "this server needs a token: send it in join (\"token\") or in the URL (?token=)";
const NOT_JOINED_IN_TIME: &str = "no valid join within the handshake timeout";
const OTHER_SUB: &str = "the token is for another userId than this connection's";
const USER_NOT_SUB: &str = "\"userId\" must be the token's sub";
const ROOM_NOT_ALLOWED: &str = "the token does not allow this room";
const DM_NOT_ALLOWED: &str = "the token does not allow private messages";

/// What one connection's valid token allows.
struct Grant {
    /// `sub` as a user name (NFKC), or `None` if it breaks the name rules: then no join can match it.
    user: Option<Rc<str>>,
    identity: Identity,
    /// The loop's monotonic time at which the token runs out.
    expires_mono_ms: u64,
    /// Tells this grant's deadline from those of earlier grants of the same (or a reused) client id.
    serial: u64,
}

/// A point at which something may be due for a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Deadline {
    at_ms: u64,
    serial: u64,
    client: ClientId,
    kind: DeadlineKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum DeadlineKind {
    /// The token of the grant with `serial` runs out.
    Expiry,
    /// The connection with `serial` in `awaiting_join` must have joined.
    Join,
}

/// Every connection's grant and deadline.
#[derive(Default)]
pub(super) struct Grants {
    /// `None`: open mode, no tokens.
    verifier: Option<Verifier>,
    /// How long a new connection has to send an admitted `join`, in milliseconds.
    join_timeout_ms: u64,
    by_client: IdMap<ClientId, Grant>,
    /// Connections that have not yet sent an admitted `join`, by the serial of their deadline.
    awaiting_join: IdMap<ClientId, u64>,
    /// Deadlines in time order; an entry whose serial no longer matches is stale and skipped when it comes up.
    deadlines: BinaryHeap<Reverse<Deadline>>,
    next_serial: u64,
}

impl Grants {
    fn serial(&mut self) -> u64 {
        self.next_serial = self.next_serial.wrapping_add(1);
        self.next_serial
    }
}

impl Chat {
    /// From now on every connection needs a token checked by `verifier`, and one that has not sent a `join` it may
    /// make within `join_timeout_ms` of [`Chat::connect`] is closed with 4003.
    pub fn require_tokens(&mut self, verifier: Verifier, join_timeout_ms: u64) {
        self.grants.verifier = Some(verifier);
        self.grants.join_timeout_ms = join_timeout_ms;
    }

    /// True if connections need a token.
    pub fn requires_tokens(&self) -> bool {
        self.grants.verifier.is_some()
    }

    /// `client` opened a WebSocket on the chat route at `now`, showing `token` in its URL if it did. With tokens
    /// required, its join deadline starts, and a token it showed is checked as if it came in a `join`. Nothing
    /// happens in open mode.
    pub fn connect(
        &mut self,
        client: ClientId,
        token: Option<&str>,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        if self.grants.verifier.is_none() {
            return;
        }
        let serial = self.grants.serial();
        self.grants.awaiting_join.insert(client, serial);
        self.grants.deadlines.push(Reverse(Deadline {
            at_ms: now.mono_ms.saturating_add(self.grants.join_timeout_ms),
            serial,
            client,
            kind: DeadlineKind::Join,
        }));
        if let Some(token) = token {
            self.present_token(client, token, Dialect::V1, now, out);
        }
    }

    /// The loop's monotonic time of the next token deadline, if any: the server wakes then and calls
    /// [`Chat::expire_tokens`].
    pub fn next_token_deadline(&self) -> Option<u64> {
        self.grants.deadlines.peek().map(|Reverse(d)| d.at_ms)
    }

    /// Closes the connections whose token ran out by `now` (4004), and those that have not sent an admitted `join`
    /// within the join timeout (4003).
    pub fn expire_tokens(&mut self, now: Now, out: &mut Vec<Action>) {
        while let Some(Reverse(deadline)) = self.grants.deadlines.peek().copied() {
            if deadline.at_ms > now.mono_ms {
                return;
            }
            self.grants.deadlines.pop();
            let client = deadline.client;
            match deadline.kind {
                DeadlineKind::Expiry => {
                    let current = self.grants.by_client.get(&client).is_some_and(|grant| {
                        grant.serial == deadline.serial && grant.expires_mono_ms <= now.mono_ms
                    });
                    if current {
                        self.grants.by_client.remove(&client);
                        self.close_for_token(
                            client,
                            CLOSE_TOKEN_EXPIRED,
                            "token expired",
                            now,
                            out,
                        );
                    }
                }
                DeadlineKind::Join => {
                    if self.grants.awaiting_join.get(&client) == Some(&deadline.serial) {
                        self.grants.awaiting_join.remove(&client);
                        self.refuse_unauthorized(client, NOT_JOINED_IN_TIME, Dialect::V1, now, out);
                    }
                }
            }
        }
    }

    /// Whether `join` may go ahead: always in open mode; with tokens, when its own token (or the connection's
    /// earlier one) is valid, its `userId` is the token's `sub` and the token allows its room. A refusal has been
    /// sent when it may not: `forbidden` (the connection stays, in the room it was in), or `unauthorized` and Close
    /// 4003, or Close 4004 for an expired token.
    pub(super) fn admit_join(
        &mut self,
        client: ClientId,
        join: &JoinRequest<'_>,
        now: Now,
        out: &mut Vec<Action>,
    ) -> bool {
        if self.grants.verifier.is_none() {
            return true;
        }
        if let Some(token) = join.token.as_deref() {
            if !self.present_token(client, token, join.dialect, now, out) {
                return false;
            }
        }
        let Some(grant) = self.grants.by_client.get(&client) else {
            self.refuse_unauthorized(client, TOKEN_REQUIRED, join.dialect, now, out);
            return false;
        };
        let refusal = if grant.user.as_deref() != Some(&**join.user.shown()) {
            Some(USER_NOT_SUB)
        } else if !grant.identity.may_join(&join.room) {
            Some(ROOM_NOT_ALLOWED)
        } else {
            None
        };
        if let Some(message) = refusal {
            self.send_error(client, ErrorCode::Forbidden, message, join.dialect, out);
            return false;
        }
        self.grants.awaiting_join.remove(&client);
        true
    }

    /// Whether `client` may send a private message: always in open mode; with tokens, unless its token says
    /// `"dm": false` (then it has been told `forbidden`).
    pub(super) fn admit_dm(&mut self, client: ClientId, out: &mut Vec<Action>) -> bool {
        let forbidden = self
            .grants
            .by_client
            .get(&client)
            .is_some_and(|grant| !grant.identity.may_dm);
        if forbidden {
            self.send_error(
                client,
                ErrorCode::Forbidden,
                DM_NOT_ALLOWED,
                Dialect::V1,
                out,
            );
        }
        !forbidden
    }

    /// `refresh`: a new token for the connection's `sub`, which then lasts until the new token's `exp`. Ignored in
    /// open mode.
    pub(super) fn refresh(
        &mut self,
        client: ClientId,
        token: &str,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        if self.grants.verifier.is_some() {
            self.present_token(client, token, Dialect::V1, now, out);
        }
    }

    /// The connections whose token's `sub` is the user name `user` (as normalised).
    pub(super) fn clients_of_sub(&self, user: &str) -> Vec<ClientId> {
        self.grants
            .by_client
            .iter()
            .filter(|(_, grant)| grant.user.as_deref() == Some(user))
            .map(|(client, _)| *client)
            .collect()
    }

    /// `client` is gone: its grant and deadlines with it.
    pub(super) fn forget_grant(&mut self, client: ClientId) {
        self.grants.by_client.remove(&client);
        self.grants.awaiting_join.remove(&client);
    }

    /// Checks `token` for `client` at `now`. Valid and for the connection's `sub` (or its first): the connection's
    /// grant becomes the token's, and true. Otherwise false, after `forbidden` (a token for another `sub`; the
    /// connection keeps its grant), Close 4004 (expired) or `unauthorized` and Close 4003 (anything else).
    fn present_token(
        &mut self,
        client: ClientId,
        token: &str,
        dialect: Dialect,
        now: Now,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(verifier) = &self.grants.verifier else {
            return true;
        };
        let identity = match verifier.verify(token, now.unix_ms) {
            Ok(identity) => identity,
            Err(TokenError::Expired) => {
                self.close_for_token(client, CLOSE_TOKEN_EXPIRED, "token expired", now, out);
                return false;
            }
            Err(refused) => {
                log::debug!("connection {client}: token refused: {refused}");
                self.refuse_unauthorized(client, &refused.to_string(), dialect, now, out);
                return false;
            }
        };
        let user = names::user_name(&identity.user, MAX_USER_CHARS)
            .ok()
            .map(|name| name.shown().clone());
        if let Some(grant) = self.grants.by_client.get(&client) {
            if grant.identity.user != identity.user {
                self.send_error(client, ErrorCode::Forbidden, OTHER_SUB, dialect, out);
                return false;
            }
        }
        let lasts_ms = identity.expires_unix_ms.saturating_sub(now.unix_ms);
        let expires_mono_ms = now.mono_ms.saturating_add(lasts_ms);
        let serial = self.grants.serial();
        self.grants.deadlines.push(Reverse(Deadline {
            at_ms: expires_mono_ms,
            serial,
            client,
            kind: DeadlineKind::Expiry,
        }));
        self.grants.by_client.insert(
            client,
            Grant {
                user,
                identity,
                expires_mono_ms,
                serial,
            },
        );
        true
    }

    /// `unauthorized` with `message`, then Close 4003.
    fn refuse_unauthorized(
        &mut self,
        client: ClientId,
        message: &str,
        dialect: Dialect,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        self.send_error(client, ErrorCode::Unauthorized, message, dialect, out);
        self.close_for_token(client, CLOSE_UNAUTHORIZED, "unauthorized", now, out);
    }

    /// Closes `client` with `code`; its later frames are ignored until [`Chat::disconnect`].
    fn close_for_token(
        &mut self,
        client: ClientId,
        code: CloseCode,
        reason: &'static str,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let config = &self.config;
        if let Some(state) = self
            .participants
            .get_or_insert_with(client, || Participant::new(config, now))
        {
            state.closing = true;
        }
        self.grants.awaiting_join.remove(&client);
        out.push(Action::Close {
            client,
            code,
            reason: Cow::Borrowed(reason),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{json, Value};

    use super::*;
    use crate::auth::tests::{hs256, SECRET};
    use crate::chat::ChatConfig;

    /// 2026-01-01T00:00:00Z, when the loop's monotonic clock reads 0.
    const T0_S: u64 = 1_767_225_600;
    const JOIN_TIMEOUT_MS: u64 = 10_000;

    struct Harness {
        chat: Chat,
        mono_ms: u64,
    }

    /// What one call made happen: the messages sent, by client, and the closes.
    #[derive(Debug, Default)]
    struct Seen {
        sent: Vec<(ClientId, Value)>,
        closed: Vec<(ClientId, u16)>,
    }

    impl Seen {
        fn codes_to(&self, client: ClientId) -> Vec<String> {
            self.sent
                .iter()
                .filter(|(to, m)| *to == client && (m["type"] == "error" || m["error"] == true))
                .map(|(_, m)| m["code"].as_str().unwrap_or_default().to_owned())
                .collect()
        }

        fn types_to(&self, client: ClientId) -> Vec<String> {
            self.sent
                .iter()
                .filter(|(to, _)| *to == client)
                .map(|(_, m)| m["type"].as_str().unwrap_or_default().to_owned())
                .collect()
        }
    }

    impl Harness {
        /// A chat that requires HS256 tokens, with no leeway.
        fn new() -> Harness {
            let mut chat = Chat::new(ChatConfig::default(), [7; 32]);
            let verifier = Verifier::hs256(SECRET)
                .expect("secret")
                .with_leeway(Duration::ZERO);
            chat.require_tokens(verifier, JOIN_TIMEOUT_MS);
            Harness { chat, mono_ms: 0 }
        }

        fn now(&self) -> Now {
            Now {
                unix_ms: T0_S * 1000 + self.mono_ms,
                mono_ms: self.mono_ms,
            }
        }

        fn seen(actions: Vec<Action>) -> Seen {
            let mut seen = Seen::default();
            for action in actions {
                match action {
                    Action::Send { to, payload } => seen
                        .sent
                        .push((to, serde_json::from_str(&payload).expect("JSON"))),
                    Action::Close { client, code, .. } => seen.closed.push((client, code.get())),
                    _ => {}
                }
            }
            seen
        }

        fn connect(&mut self, client: ClientId, token: Option<&str>) -> Seen {
            let mut out = Vec::new();
            self.chat.connect(client, token, self.now(), &mut out);
            Harness::seen(out)
        }

        fn send(&mut self, client: ClientId, message: Value) -> Seen {
            let mut out = Vec::new();
            self.chat
                .handle_text(client, &message.to_string(), self.now(), &mut out);
            Harness::seen(out)
        }

        fn join(&mut self, client: ClientId, user: &str, room: &str, token: Option<&str>) -> Seen {
            let mut join = json!({"type": "join", "userId": user, "room": room, "v": 2});
            if let Some(token) = token {
                join["token"] = json!(token);
            }
            self.send(client, join)
        }

        fn at(&mut self, mono_ms: u64) -> Seen {
            self.mono_ms = mono_ms;
            let mut out = Vec::new();
            self.chat.expire_tokens(self.now(), &mut out);
            Harness::seen(out)
        }
    }

    /// A token for `sub` that expires `exp_s` seconds after T0, with `extra` claims.
    fn token(sub: &str, exp_s: u64, extra: Value) -> String {
        let mut claims = json!({"sub": sub, "exp": T0_S + exp_s});
        for (key, value) in extra.as_object().expect("object") {
            claims[key] = value.clone();
        }
        hs256(SECRET, &claims)
    }

    #[test]
    fn a_join_with_a_valid_token_for_its_user_id_joins() {
        let mut h = Harness::new();
        h.connect(1, None);
        let seen = h.join(1, "ann", "lobby", Some(&token("ann", 60, json!({}))));
        assert_eq!(h.chat.member_count(), 1);
        assert!(seen.types_to(1).contains(&"joined".to_owned()), "{seen:?}");
        assert!(seen.closed.is_empty());
    }

    #[test]
    fn a_join_without_a_token_is_unauthorized_and_closed_with_4003() {
        let mut h = Harness::new();
        h.connect(1, None);
        let seen = h.join(1, "ann", "lobby", None);
        assert_eq!(seen.codes_to(1), ["unauthorized"]);
        assert_eq!(
            seen.types_to(1),
            ["error"],
            "the v2 form, as the join announced"
        );
        assert_eq!(seen.closed, [(1, 4003)]);
        assert_eq!(h.chat.member_count(), 0);
    }

    #[test]
    fn a_wrongly_signed_token_is_unauthorized_and_closed_with_4003() {
        let mut h = Harness::new();
        let forged = hs256(
            b"not the server's secret, but as long",
            &json!({"sub": "ann", "exp": T0_S + 60}),
        );
        let seen = h.join(1, "ann", "lobby", Some(&forged));
        assert_eq!(seen.codes_to(1), ["unauthorized"]);
        assert_eq!(seen.closed, [(1, 4003)]);
    }

    #[test]
    fn a_token_not_yet_valid_is_unauthorized_and_closed_with_4003() {
        let mut h = Harness::new();
        let early = token("ann", 600, json!({"nbf": T0_S + 60}));
        let seen = h.join(1, "ann", "lobby", Some(&early));
        assert_eq!(seen.codes_to(1), ["unauthorized"]);
        assert_eq!(seen.closed, [(1, 4003)]);
    }

    #[test]
    fn an_expired_token_closes_with_4004_and_no_error() {
        let mut h = Harness::new();
        h.mono_ms = 61_000;
        let seen = h.join(1, "ann", "lobby", Some(&token("ann", 60, json!({}))));
        assert!(seen.sent.is_empty(), "{seen:?}");
        assert_eq!(seen.closed, [(1, 4004)]);
    }

    #[test]
    fn a_user_id_other_than_sub_is_forbidden_and_the_connection_stays() {
        let mut h = Harness::new();
        let seen = h.join(1, "eve", "lobby", Some(&token("ann", 60, json!({}))));
        assert_eq!(seen.codes_to(1), ["forbidden"]);
        assert!(seen.closed.is_empty());
        assert_eq!(h.chat.member_count(), 0);
        let seen = h.join(1, "ann", "lobby", None);
        assert!(seen.types_to(1).contains(&"joined".to_owned()), "{seen:?}");
    }

    #[test]
    fn sub_is_compared_with_the_user_id_after_normalisation() {
        let mut h = Harness::new();
        // NFKC: the fullwidth letters are "ann"; a name that is merely the same name ("Ann") is not the sub.
        let seen = h.join(1, "Ann", "lobby", Some(&token("ａｎｎ", 60, json!({}))));
        assert_eq!(seen.codes_to(1), ["forbidden"]);
        let seen = h.join(1, "ann", "lobby", None);
        assert!(seen.types_to(1).contains(&"joined".to_owned()), "{seen:?}");
    }

    #[test]
    fn a_room_not_in_rooms_is_forbidden_and_joins_nothing() {
        let mut h = Harness::new();
        let token = token("ann", 60, json!({"rooms": ["lobby"]}));
        h.join(1, "ann", "lobby", Some(&token));
        let seen = h.join(1, "ann", "staff", None);
        assert_eq!(seen.codes_to(1), ["forbidden"]);
        assert!(seen.closed.is_empty());
        assert_eq!(h.chat.member_count(), 1, "still in the lobby");
        assert_eq!(h.chat.room_count(), 1);
    }

    #[test]
    fn dm_false_forbids_sending_private_messages() {
        let mut h = Harness::new();
        h.join(
            1,
            "ann",
            "lobby",
            Some(&token("ann", 60, json!({"dm": false}))),
        );
        h.join(2, "bob", "lobby", Some(&token("bob", 60, json!({}))));
        let seen = h.send(1, json!({"type": "dm", "to": "bob", "content": "hi"}));
        assert_eq!(seen.codes_to(1), ["forbidden"]);
        assert!(seen.types_to(2).is_empty());
        let seen = h.send(2, json!({"type": "dm", "to": "ann", "content": "hi"}));
        assert_eq!(seen.types_to(1), ["dm"]);
    }

    #[test]
    fn a_url_token_lets_a_join_without_one_go_ahead() {
        let mut h = Harness::new();
        let seen = h.connect(1, Some(&token("ann", 60, json!({}))));
        assert!(seen.sent.is_empty() && seen.closed.is_empty());
        let seen = h.join(1, "ann", "lobby", None);
        assert!(seen.types_to(1).contains(&"joined".to_owned()), "{seen:?}");
    }

    #[test]
    fn a_bad_url_token_is_unauthorized_in_the_v1_form_and_closed_with_4003() {
        let mut h = Harness::new();
        let seen = h.connect(1, Some("not-a-token"));
        assert_eq!(seen.codes_to(1), ["unauthorized"]);
        assert_eq!(seen.types_to(1), ["system"]);
        assert_eq!(seen.closed, [(1, 4003)]);
        let seen = h.join(1, "ann", "lobby", Some(&token("ann", 60, json!({}))));
        assert!(
            seen.sent.is_empty(),
            "frames after the close are ignored: {seen:?}"
        );
    }

    #[test]
    fn a_token_for_another_sub_is_forbidden_and_the_first_identity_stays() {
        let mut h = Harness::new();
        h.connect(1, Some(&token("ann", 60, json!({}))));
        h.join(1, "ann", "lobby", None);
        let seen = h.join(1, "bob", "lobby", Some(&token("bob", 60, json!({}))));
        assert_eq!(seen.codes_to(1), ["forbidden"]);
        let seen = h.send(
            1,
            json!({"type": "refresh", "token": token("bob", 600, json!({}))}),
        );
        assert_eq!(seen.codes_to(1), ["forbidden"]);
        assert_eq!(
            h.at(60_000).closed,
            [(1, 4004)],
            "ann's token still runs out"
        );
    }

    #[test]
    fn a_connection_not_refreshed_is_closed_with_4004_at_exp() {
        let mut h = Harness::new();
        h.join(1, "ann", "lobby", Some(&token("ann", 60, json!({}))));
        assert_eq!(h.chat.next_token_deadline(), Some(60_000));
        assert!(h.at(59_999).closed.is_empty());
        assert_eq!(h.at(60_000).closed, [(1, 4004)]);
    }

    #[test]
    fn a_connection_refreshed_before_exp_stays_until_the_new_exp() {
        let mut h = Harness::new();
        h.join(1, "ann", "lobby", Some(&token("ann", 60, json!({}))));
        h.mono_ms = 50_000;
        let seen = h.send(
            1,
            json!({"type": "refresh", "token": token("ann", 120, json!({}))}),
        );
        assert!(seen.sent.is_empty() && seen.closed.is_empty(), "{seen:?}");
        assert!(h.at(60_000).closed.is_empty(), "past the first exp");
        assert!(h.at(119_999).closed.is_empty());
        assert_eq!(h.at(120_000).closed, [(1, 4004)]);
    }

    #[test]
    fn an_expired_or_bad_refresh_closes_the_connection() {
        let mut h = Harness::new();
        h.join(1, "ann", "lobby", Some(&token("ann", 60, json!({}))));
        h.mono_ms = 30_000;
        let seen = h.send(
            1,
            json!({"type": "refresh", "token": token("ann", 20, json!({}))}),
        );
        assert_eq!(seen.closed, [(1, 4004)]);
        h.join(2, "bob", "lobby", Some(&token("bob", 60, json!({}))));
        let seen = h.send(2, json!({"type": "refresh", "token": "x.y.z"}));
        assert_eq!(seen.codes_to(2), ["unauthorized"]);
        assert_eq!(seen.closed, [(2, 4003)]);
    }

    #[test]
    fn a_connection_that_has_not_joined_within_the_timeout_is_closed_with_4003() {
        let mut h = Harness::new();
        h.connect(1, None);
        h.connect(2, Some(&token("bob", 600, json!({}))));
        h.connect(3, None);
        h.join(3, "cyd", "lobby", Some(&token("cyd", 600, json!({}))));
        assert!(h.at(JOIN_TIMEOUT_MS - 1).closed.is_empty());
        let seen = h.at(JOIN_TIMEOUT_MS);
        assert_eq!(seen.closed, [(1, 4003), (2, 4003)]);
        assert_eq!(seen.codes_to(1), ["unauthorized"]);
    }

    #[test]
    fn a_reused_client_id_is_not_closed_for_the_old_connections_deadlines() {
        let mut h = Harness::new();
        h.connect(1, None);
        h.join(1, "ann", "lobby", Some(&token("ann", 5, json!({}))));
        let mut out = Vec::new();
        h.chat.disconnect(1, h.now(), &mut out);
        h.mono_ms = 1_000;
        h.connect(1, None);
        h.join(1, "bob", "lobby", Some(&token("bob", 600, json!({}))));
        assert!(h.at(JOIN_TIMEOUT_MS).closed.is_empty());
    }

    #[test]
    fn open_mode_ignores_tokens_and_refresh_and_sets_no_deadline() {
        let mut chat = Chat::new(ChatConfig::default(), [7; 32]);
        let now = Now {
            unix_ms: T0_S * 1000,
            mono_ms: 0,
        };
        let mut out = Vec::new();
        chat.connect(1, Some("anything"), now, &mut out);
        chat.handle_text(
            1,
            r#"{"type":"join","userId":"ann","room":"lobby","v":2,"token":"x"}"#,
            now,
            &mut out,
        );
        chat.handle_text(1, r#"{"type":"refresh","token":"x"}"#, now, &mut out);
        assert_eq!(chat.member_count(), 1);
        assert!(!out.iter().any(|a| matches!(a, Action::Close { .. })));
        assert_eq!(chat.next_token_deadline(), None);
        assert!(!chat.requires_tokens());
    }
}
