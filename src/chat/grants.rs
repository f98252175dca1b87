//! What each connection's token lets it do, and the deadlines tokens set: the chat's side of `--auth-secret` and
//! `--auth-public-key`.
//!
//! Owns, per connection, the identity its last valid token carried (`sub`, `rooms`, `dm`) and when that token runs
//! out; the deadline by which a new connection must have joined; and the decisions made from them: whether a `join`
//! may go ahead, whether a `dm` may be sent, what a refused or expired token costs the connection (an `error`, then
//! Close 4003 or 4004). Tokens are verified by `crate::auth`, with the time the chat is given, and remembered in a
//! `TokenCache` once their signature checked out. With [`Chat::check_tokens_elsewhere`] the signature of a token
//! not in the cache is not checked in the call: the chat asks for it ([`Action::CheckToken`]), keeps the request
//! that carried it (a `join`, a `refresh`, the URL's token) and carries it on in [`Chat::token_checked`]. With no
//! verifier (open mode, the default) every check passes and nothing is kept. It must not decide who holds a name or sits in
//! a room (`handlers.rs`), and never logs a token.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::rc::Rc;

use super::names;
use super::request::{JoinRequest, MAX_USER_CHARS};
use super::wire::ErrorCode;
use super::{Action, Chat, ClientId, Dialect, Now, Participant};
use crate::auth::{
    token_digest, Identity, SignedToken, TokenCache, TokenDigest, TokenError, Verifier,
};
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
const CHECKS_BUSY: &str = "too many tokens are being checked; try again shortly";

/// How many checked tokens are remembered unless the server says otherwise.
pub const DEFAULT_TOKEN_CACHE_ENTRIES: usize = 4096;

/// The answer to an [`Action::CheckToken`], handed back through [`Chat::token_checked`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenCheck {
    /// [`Verifier::check_signature`] of the token, made by the caller (on another thread).
    Checked(Result<SignedToken, TokenError>),
    /// The caller could not take the check (its queue was full): the request that carried the token is refused
    /// with `unavailable`, and the connection stays as it was.
    Busy,
}

/// A request whose token is being checked elsewhere, to be carried on when the answer comes.
pub(super) enum Deferred {
    /// The token came in the URL ([`Chat::connect`]).
    Connect,
    /// The token came in this `join`.
    Join(JoinRequest<'static>),
    /// The token came in a `refresh`.
    Refresh,
}

/// What became of a token shown in a request.
enum Presented {
    /// Valid and for the connection's `sub`: the grant is the token's.
    Accepted,
    /// Refused; the refusal has been sent.
    Refused,
    /// Its signature is to be checked elsewhere; [`Action::CheckToken`] has been pushed.
    Deferred(Option<TokenDigest>),
}

/// Whether a `join` may go ahead.
pub(super) enum Admission {
    /// Yes.
    Admitted,
    /// No; the refusal has been sent.
    Refused,
    /// Its token's signature is being checked elsewhere: the join waits for [`Chat::token_checked`].
    Deferred(Option<TokenDigest>),
}

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
    /// Tokens not in the cache have their signature checked by the caller ([`Action::CheckToken`]).
    checks_elsewhere: bool,
    /// Tokens whose signature checked out, until their `exp`.
    cache: TokenCache,
    /// Token checks found in the cache, since the start.
    cache_hits: u64,
    /// The request each connection waits on a token check for: at most one per connection.
    awaiting_check: IdMap<ClientId, (Option<TokenDigest>, Deferred)>,
}

impl Grants {
    /// Open mode, with a cache of [`DEFAULT_TOKEN_CACHE_ENTRIES`] for when tokens are required.
    pub(super) fn new() -> Grants {
        Grants {
            cache: TokenCache::new(DEFAULT_TOKEN_CACHE_ENTRIES),
            ..Grants::default()
        }
    }

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

    /// Remembers at most `entries` tokens whose signature checked out, each until its `exp` (0: none; by default
    /// [`DEFAULT_TOKEN_CACHE_ENTRIES`]), so that a token shown again (a page that reconnects) is not checked again.
    /// The times are compared at every use.
    pub fn cache_tokens(&mut self, entries: usize) {
        self.grants.cache = TokenCache::new(entries);
    }

    /// From now on, when `elsewhere`, the signature of a token not in the cache is not checked in the call that
    /// met it: [`Action::CheckToken`] asks the caller to check it, and the request that carried the token waits
    /// for [`Chat::token_checked`]. The caller must hand that connection no other message meanwhile
    /// ([`Chat::awaits_token_check`]), so that its messages are still handled in order.
    pub fn check_tokens_elsewhere(&mut self, elsewhere: bool) {
        self.grants.checks_elsewhere = elsewhere;
    }

    /// True while `client` waits for the answer to an [`Action::CheckToken`].
    pub fn awaits_token_check(&self, client: ClientId) -> bool {
        !self.grants.awaiting_check.is_empty() && self.grants.awaiting_check.contains_key(&client)
    }

    /// Tokens remembered now, and token checks answered from them since the start.
    pub fn token_cache_stats(&self) -> (usize, u64) {
        (self.grants.cache.len(), self.grants.cache_hits)
    }

    /// The answer to the [`Action::CheckToken`] for `client`, at `now`: the request that carried the token goes on
    /// as if it had been checked in the call (its `exp` and `nbf` are compared with `now`). Nothing happens if
    /// `client` waits for no check (it was closed or disconnected meanwhile).
    pub fn token_checked(
        &mut self,
        client: ClientId,
        check: TokenCheck,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some((digest, deferred)) = self.grants.awaiting_check.remove(&client) else {
            return;
        };
        if self
            .participants
            .get(&client)
            .is_some_and(|state| state.closing)
        {
            return;
        }
        let dialect = match &deferred {
            Deferred::Join(join) => join.dialect,
            Deferred::Connect | Deferred::Refresh => Dialect::V1,
        };
        let checked = match check {
            TokenCheck::Checked(checked) => checked,
            TokenCheck::Busy => {
                self.send_error(client, ErrorCode::Unavailable, CHECKS_BUSY, dialect, out);
                return;
            }
        };
        if let (Ok(signed), Some(digest)) = (&checked, digest) {
            self.grants
                .cache
                .insert(digest, signed.clone(), now.unix_ms);
        }
        if !self.accept_checked(client, checked, dialect, now, out) {
            return;
        }
        if let Deferred::Join(join) = deferred {
            if self.admit_granted(client, &join, now, out) {
                self.join(client, join, None, now, out);
            }
            self.rooms.evict_excess(self.config.max_empty_rooms);
        }
    }

    /// Keeps `deferred` until the check of the token with `digest` (`None` with no cache) is answered.
    pub(super) fn defer(
        &mut self,
        client: ClientId,
        digest: Option<TokenDigest>,
        deferred: Deferred,
    ) {
        self.grants
            .awaiting_check
            .insert(client, (digest, deferred));
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
            if let Presented::Deferred(digest) =
                self.present_token(client, token, None, Dialect::V1, now, out)
            {
                self.defer(client, digest, Deferred::Connect);
            }
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
    /// With [`Chat::check_tokens_elsewhere`], a join whose token is not in the cache is deferred: the caller keeps
    /// it ([`Chat::defer`]) until the check is answered.
    pub(super) fn admit_join(
        &mut self,
        client: ClientId,
        join: &JoinRequest<'_>,
        now: Now,
        out: &mut Vec<Action>,
    ) -> Admission {
        if self.grants.verifier.is_none() {
            return Admission::Admitted;
        }
        if let Some(token) = join.token.as_deref() {
            match self.present_token(client, token, Some(&join.room), join.dialect, now, out) {
                Presented::Accepted => {}
                Presented::Refused => return Admission::Refused,
                Presented::Deferred(digest) => return Admission::Deferred(digest),
            }
        }
        if self.admit_granted(client, join, now, out) {
            Admission::Admitted
        } else {
            Admission::Refused
        }
    }

    /// The rest of [`Chat::admit_join`], once any token the join carried is the connection's grant: whether its
    /// `userId` is the grant's `sub` and the grant allows its room.
    fn admit_granted(
        &mut self,
        client: ClientId,
        join: &JoinRequest<'_>,
        now: Now,
        out: &mut Vec<Action>,
    ) -> bool {
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
            if let Presented::Deferred(digest) =
                self.present_token(client, token, None, Dialect::V1, now, out)
            {
                self.defer(client, digest, Deferred::Refresh);
            }
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
        self.grants.awaiting_check.remove(&client);
    }

    /// Checks `token` for `client` at `now`: its signature from the cache, here, or (with
    /// [`Chat::check_tokens_elsewhere`] and not in the cache) by the caller, which makes it `Deferred`. The rest as
    /// [`Chat::accept_checked`]. `room` is the room a `join` asks for, passed on with a check asked of the caller.
    fn present_token(
        &mut self,
        client: ClientId,
        token: &str,
        room: Option<&str>,
        dialect: Dialect,
        now: Now,
        out: &mut Vec<Action>,
    ) -> Presented {
        let Some(verifier) = &self.grants.verifier else {
            return Presented::Accepted;
        };
        // No cache, no hashing: the digest is only a cache key.
        let digest = (self.grants.cache.capacity() > 0).then(|| token_digest(token));
        let cached = digest
            .as_ref()
            .and_then(|digest| self.grants.cache.get(digest, now.unix_ms));
        let checked = if let Some(signed) = cached {
            self.grants.cache_hits += 1;
            Ok(signed.clone())
        } else if self.grants.checks_elsewhere {
            out.push(Action::CheckToken {
                client,
                token: token.into(),
                room: room.map(Box::from),
            });
            return Presented::Deferred(digest);
        } else {
            let checked = verifier.check_signature(token);
            if let (Ok(signed), Some(digest)) = (&checked, digest) {
                self.grants
                    .cache
                    .insert(digest, signed.clone(), now.unix_ms);
            }
            checked
        };
        if self.accept_checked(client, checked, dialect, now, out) {
            Presented::Accepted
        } else {
            Presented::Refused
        }
    }

    /// A token whose signature was checked (`checked`), for `client` at `now`. Valid at `now` and for the
    /// connection's `sub` (or its first): the connection's grant becomes the token's, and true. Otherwise false,
    /// after `forbidden` (a token for another `sub`; the connection keeps its grant), Close 4004 (expired) or
    /// `unauthorized` and Close 4003 (anything else).
    fn accept_checked(
        &mut self,
        client: ClientId,
        checked: Result<SignedToken, TokenError>,
        dialect: Dialect,
        now: Now,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(verifier) = &self.grants.verifier else {
            return true;
        };
        let identity = match checked.and_then(|signed| verifier.identity_at(&signed, now.unix_ms)) {
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

    /// The tokens `seen`'s actions asked the caller to check, by client.
    fn checks_asked(actions: &[Action]) -> Vec<(ClientId, String)> {
        actions
            .iter()
            .filter_map(|action| match action {
                Action::CheckToken { client, token, .. } => Some((*client, token.to_string())),
                _ => None,
            })
            .collect()
    }

    impl Harness {
        /// A chat that requires HS256 tokens checked by the caller, and the verifier the caller checks them with.
        fn elsewhere() -> (Harness, Verifier) {
            let mut h = Harness::new();
            h.chat.check_tokens_elsewhere(true);
            let verifier = Verifier::hs256(SECRET).expect("secret");
            (h, verifier)
        }

        /// Sends `message` and returns the raw actions.
        fn send_raw(&mut self, client: ClientId, message: Value) -> Vec<Action> {
            let mut out = Vec::new();
            self.chat
                .handle_text(client, &message.to_string(), self.now(), &mut out);
            out
        }

        /// Answers `client`'s check with `check`.
        fn answer(&mut self, client: ClientId, check: TokenCheck) -> Seen {
            let mut out = Vec::new();
            self.chat.token_checked(client, check, self.now(), &mut out);
            Harness::seen(out)
        }
    }

    fn join_frame(user: &str, room: &str, token: &str) -> Value {
        json!({"type": "join", "userId": user, "room": room, "v": 2, "token": token})
    }

    #[test]
    fn a_join_whose_token_is_checked_elsewhere_waits_then_joins_on_a_good_verdict() {
        let (mut h, verifier) = Harness::elsewhere();
        let token = token("ann", 60, json!({}));
        let actions = h.send_raw(1, join_frame("ann", "lobby", &token));
        assert_eq!(checks_asked(&actions), [(1, token.clone())]);
        assert_eq!(actions.len(), 1, "nothing but the check: {actions:?}");
        assert!(h.chat.awaits_token_check(1));
        assert_eq!(h.chat.member_count(), 0);
        let seen = h.answer(1, TokenCheck::Checked(verifier.check_signature(&token)));
        assert!(seen.types_to(1).contains(&"joined".to_owned()), "{seen:?}");
        assert!(!h.chat.awaits_token_check(1));
        assert_eq!(h.chat.member_count(), 1);
        assert_eq!(
            h.at(60_000).closed,
            [(1, 4004)],
            "the deadline is the token's exp"
        );
    }

    #[test]
    fn a_check_asked_for_a_join_names_its_room_and_one_for_a_url_token_names_none() {
        let (mut h, _) = Harness::elsewhere();
        let rooms_asked = |actions: &[Action]| -> Vec<Option<String>> {
            actions
                .iter()
                .filter_map(|action| match action {
                    Action::CheckToken { room, .. } => Some(room.as_deref().map(str::to_owned)),
                    _ => None,
                })
                .collect()
        };
        let actions = h.send_raw(1, join_frame("ann", "lobby", &token("ann", 60, json!({}))));
        assert_eq!(rooms_asked(&actions), [Some("lobby".to_owned())]);
        let mut out = Vec::new();
        let url_token = token("bob", 60, json!({}));
        h.chat.connect(2, Some(&url_token), h.now(), &mut out);
        assert_eq!(rooms_asked(&out), [None]);
    }

    #[test]
    fn a_bad_signature_checked_elsewhere_is_unauthorized_and_closed_with_4003() {
        let (mut h, verifier) = Harness::elsewhere();
        let forged = hs256(
            b"not the server's secret, but as long",
            &json!({"sub": "ann", "exp": T0_S + 60}),
        );
        h.send_raw(1, join_frame("ann", "lobby", &forged));
        let seen = h.answer(1, TokenCheck::Checked(verifier.check_signature(&forged)));
        assert_eq!(seen.codes_to(1), ["unauthorized"]);
        assert_eq!(seen.closed, [(1, 4003)]);
        assert_eq!(h.chat.member_count(), 0);
    }

    #[test]
    fn the_times_of_a_token_checked_elsewhere_are_compared_when_the_verdict_comes() {
        let (mut h, verifier) = Harness::elsewhere();
        let token = token("ann", 60, json!({}));
        h.send_raw(1, join_frame("ann", "lobby", &token));
        h.mono_ms = 60_000;
        let seen = h.answer(1, TokenCheck::Checked(verifier.check_signature(&token)));
        assert!(seen.sent.is_empty(), "{seen:?}");
        assert_eq!(seen.closed, [(1, 4004)]);
    }

    #[test]
    fn a_busy_verifier_answers_unavailable_and_the_connection_may_try_again() {
        let (mut h, verifier) = Harness::elsewhere();
        h.connect(1, None);
        let token = token("ann", 60, json!({}));
        h.send_raw(1, join_frame("ann", "lobby", &token));
        let seen = h.answer(1, TokenCheck::Busy);
        assert_eq!(seen.codes_to(1), ["unavailable"]);
        assert_eq!(seen.types_to(1), ["error"], "the join's v2 form");
        assert!(seen.closed.is_empty());
        assert!(!h.chat.awaits_token_check(1));
        let actions = h.send_raw(1, join_frame("ann", "lobby", &token));
        assert_eq!(
            checks_asked(&actions).len(),
            1,
            "the retry is checked again"
        );
        let seen = h.answer(1, TokenCheck::Checked(verifier.check_signature(&token)));
        assert!(seen.types_to(1).contains(&"joined".to_owned()), "{seen:?}");
    }

    #[test]
    fn a_url_token_and_a_refresh_checked_elsewhere_carry_on_when_the_verdict_comes() {
        let (mut h, verifier) = Harness::elsewhere();
        let first = token("ann", 60, json!({}));
        let mut out = Vec::new();
        h.chat.connect(1, Some(&first), h.now(), &mut out);
        assert_eq!(checks_asked(&out), [(1, first.clone())]);
        h.answer(1, TokenCheck::Checked(verifier.check_signature(&first)));
        let seen = h.join(1, "ann", "lobby", None);
        assert!(seen.types_to(1).contains(&"joined".to_owned()), "{seen:?}");
        h.mono_ms = 50_000;
        let second = token("ann", 120, json!({}));
        let actions = h.send_raw(1, json!({"type": "refresh", "token": second}));
        assert_eq!(checks_asked(&actions).len(), 1);
        let seen = h.answer(1, TokenCheck::Checked(verifier.check_signature(&second)));
        assert!(seen.sent.is_empty() && seen.closed.is_empty(), "{seen:?}");
        assert!(h.at(60_000).closed.is_empty(), "the refresh took");
        assert_eq!(h.at(120_000).closed, [(1, 4004)]);
    }

    #[test]
    fn a_verdict_for_a_disconnected_client_is_dropped() {
        let (mut h, verifier) = Harness::elsewhere();
        let token = token("ann", 60, json!({}));
        h.send_raw(1, join_frame("ann", "lobby", &token));
        let mut out = Vec::new();
        h.chat.disconnect(1, h.now(), &mut out);
        assert!(!h.chat.awaits_token_check(1));
        let seen = h.answer(1, TokenCheck::Checked(verifier.check_signature(&token)));
        assert!(seen.sent.is_empty() && seen.closed.is_empty(), "{seen:?}");
        assert_eq!(h.chat.member_count(), 0);
    }

    #[test]
    fn a_token_checked_once_is_found_in_the_cache_and_not_checked_again() {
        let (mut h, verifier) = Harness::elsewhere();
        let token = token("ann", 60, json!({}));
        let mut out = Vec::new();
        h.chat.connect(1, Some(&token), h.now(), &mut out);
        h.answer(1, TokenCheck::Checked(verifier.check_signature(&token)));
        h.chat.disconnect(1, h.now(), &mut out);
        let actions = h.send_raw(2, join_frame("ann", "lobby", &token));
        assert!(checks_asked(&actions).is_empty(), "{actions:?}");
        assert_eq!(h.chat.member_count(), 1);
        assert_eq!(h.chat.token_cache_stats(), (1, 1));
    }

    #[test]
    fn a_cached_token_still_expires_at_its_exp() {
        let mut h = Harness::new();
        let token = token("ann", 60, json!({}));
        h.connect(1, Some(&token));
        h.mono_ms = 59_000;
        let seen = h.join(2, "ann", "lobby", Some(&token));
        assert!(seen.types_to(2).contains(&"joined".to_owned()), "{seen:?}");
        assert_eq!(h.chat.token_cache_stats().1, 1, "found in the cache");
        h.mono_ms = 60_000;
        let seen = h.connect(3, Some(&token));
        assert_eq!(seen.closed, [(3, 4004)], "{seen:?}");
    }

    #[test]
    fn without_a_cache_every_join_checks_its_token() {
        let mut h = Harness::new();
        h.chat.cache_tokens(0);
        let token = token("ann", 60, json!({}));
        h.join(1, "ann", "lobby", Some(&token));
        h.join(2, "ann", "lobby", Some(&token));
        assert_eq!(h.chat.token_cache_stats(), (0, 0));
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
