//! Who holds each user name, and which freed names are still reserved for the session that held them.
//!
//! Owns the claim on a name, looked up by its key (`names.rs`: two names a person cannot tell apart have one key).
//! A name is held by one client while that client is in a room. When the client leaves, disconnects or takes
//! another name, the name is not free at once: for a grace period it stays reserved for the holder's session
//! token, so that a page that reloads gets its name back and a squatter repeating `join` in a loop does not. It
//! must not decide what to send anyone: the handlers do.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use super::session::same_token;
use super::ClientId;

/// The claim on one name.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Claim {
    /// A client in a room holds it.
    Held(ClientId),
    /// Nobody holds it, but only a join showing its token may take it for a while. Boxed: a name is reserved only
    /// for the grace period, while every member's name is held, and a held claim should cost two words.
    Reserved(Box<Reservation>),
}

/// A freed name kept for the session that held it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Reservation {
    /// The session token that may take the name back.
    token: Rc<str>,
    /// When the reservation ends.
    until_ms: u64,
}

/// Why a name cannot be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// Another client holds it, and the join did not show its session token.
    Held,
    /// Its holder left moments ago; only that holder's session token may take it back during the grace period.
    Reserved,
}

/// What a join may do with a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Taking {
    /// Nobody has a claim: take it with a new session token.
    Free,
    /// The join showed the token of a reservation: take the name back with that token.
    Reclaimed(Rc<str>),
    /// The join showed the token of the live holder: the holder is replaced (4001) and the token carries over.
    Replacing(ClientId),
}

/// Every claim on a user name.
#[derive(Debug, Default)]
pub(super) struct Claims {
    /// Keyed by the allocation the holder's `Name` keeps as its key.
    by_key: HashMap<Rc<str>, Claim>,
    /// Reservations in the order they end: the grace period is the same for all, so this is a queue. An entry whose
    /// name was taken again meanwhile is skipped when it comes up.
    ending: VecDeque<(u64, Rc<str>)>,
}

impl Claims {
    /// The client holding the name with this key, if any (a reserved name has no holder).
    pub(super) fn holder(&self, key: &str) -> Option<ClientId> {
        match self.by_key.get(key) {
            Some(Claim::Held(client)) => Some(*client),
            _ => None,
        }
    }

    /// Whether `client`, showing `session` (if any), may take the name with `key` at `now_ms`. `holder_token` gives
    /// the session token of a live holder.
    pub(super) fn may_take(
        &self,
        key: &str,
        client: ClientId,
        session: Option<&str>,
        now_ms: u64,
        holder_token: impl FnOnce(ClientId) -> Option<Rc<str>>,
    ) -> Result<Taking, Refused> {
        match self.by_key.get(key) {
            None => Ok(Taking::Free),
            Some(Claim::Held(holder)) if *holder == client => Ok(Taking::Free),
            Some(Claim::Held(holder)) => match (holder_token(*holder), session) {
                (Some(held), Some(shown)) if same_token(&held, shown) => {
                    Ok(Taking::Replacing(*holder))
                }
                _ => Err(Refused::Held),
            },
            Some(Claim::Reserved(reserved)) if reserved.until_ms <= now_ms => Ok(Taking::Free),
            Some(Claim::Reserved(reserved)) => match session {
                Some(shown) if same_token(&reserved.token, shown) => {
                    Ok(Taking::Reclaimed(reserved.token.clone()))
                }
                _ => Err(Refused::Reserved),
            },
        }
    }

    /// True if anyone here holds the name with `key` or it is reserved here.
    pub(super) fn is_claimed(&self, key: &str) -> bool {
        self.by_key.contains_key(key)
    }

    /// The keys of the names clients hold here (not the reserved ones).
    pub(super) fn held_keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.by_key
            .iter()
            .filter(|(_, claim)| matches!(claim, Claim::Held(_)))
            .map(|(key, _)| &**key)
    }

    /// `client` now holds the name with `key`; the claim shares `key`'s allocation.
    pub(super) fn hold(&mut self, key: &Rc<str>, client: ClientId) {
        match self.by_key.get_mut(&**key) {
            Some(claim) => *claim = Claim::Held(client),
            None => {
                self.by_key.insert(key.clone(), Claim::Held(client));
            }
        }
    }

    /// `client` gives up the name with `key`: reserved for `token` until `now_ms + grace_ms` (freed at once with no
    /// grace, or with no token to reserve it for). Nothing happens if `client` does not hold it (a newer connection
    /// took it over).
    pub(super) fn release(
        &mut self,
        key: &str,
        client: ClientId,
        token: Option<Rc<str>>,
        now_ms: u64,
        grace_ms: u64,
    ) {
        if self.holder(key) != Some(client) {
            return;
        }
        let Some(token) = token.filter(|_| grace_ms > 0) else {
            self.by_key.remove(key);
            return;
        };
        let until_ms = now_ms.saturating_add(grace_ms);
        let reserved = Claim::Reserved(Box::new(Reservation { token, until_ms }));
        let Some(key) = self.by_key.get_key_value(key).map(|(key, _)| key.clone()) else {
            return;
        };
        self.by_key.insert(key.clone(), reserved);
        self.ending.push_back((until_ms, key));
    }

    /// Forgets the reservations that ended by `now_ms`, so their memory does not outlive the grace period.
    pub(super) fn expire(&mut self, now_ms: u64) {
        while let Some((until_ms, _)) = self.ending.front() {
            if *until_ms > now_ms {
                return;
            }
            let Some((until_ms, key)) = self.ending.pop_front() else {
                return;
            };
            if matches!(self.by_key.get(&key), Some(Claim::Reserved(reserved)) if reserved.until_ms == until_ms)
            {
                self.by_key.remove(&key);
            }
        }
    }

    /// Names with a claim, held or reserved.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> Rc<str> {
        Rc::from(text)
    }

    fn key(text: &str) -> Rc<str> {
        Rc::from(text)
    }

    fn no_holder(_: ClientId) -> Option<Rc<str>> {
        None
    }

    #[test]
    fn a_free_name_is_taken_and_then_held() {
        let mut claims = Claims::default();
        assert_eq!(
            claims.may_take("ann", 1, None, 0, no_holder),
            Ok(Taking::Free)
        );
        claims.hold(&key("ann"), 1);
        assert_eq!(claims.holder("ann"), Some(1));
        assert_eq!(
            claims.may_take("ann", 1, None, 0, no_holder),
            Ok(Taking::Free)
        );
    }

    #[test]
    fn a_held_name_is_refused_without_the_holders_token_and_replaced_with_it() {
        let mut claims = Claims::default();
        claims.hold(&key("ann"), 1);
        let held = |_: ClientId| Some(token("t1"));
        assert_eq!(claims.may_take("ann", 2, None, 0, held), Err(Refused::Held));
        assert_eq!(
            claims.may_take("ann", 2, Some("wrong"), 0, held),
            Err(Refused::Held)
        );
        assert_eq!(
            claims.may_take("ann", 2, Some("t1"), 0, held),
            Ok(Taking::Replacing(1))
        );
    }

    #[test]
    fn a_released_name_is_reserved_for_its_token_during_the_grace_period() {
        let mut claims = Claims::default();
        claims.hold(&key("ann"), 1);
        claims.release("ann", 1, Some(token("t1")), 1_000, 60_000);
        assert_eq!(claims.holder("ann"), None, "a reserved name has no holder");
        assert_eq!(
            claims.may_take("ann", 2, None, 1_005, no_holder),
            Err(Refused::Reserved),
            "a squatter 5 ms later loses"
        );
        assert_eq!(
            claims.may_take("ann", 2, Some("t1"), 30_000, no_holder),
            Ok(Taking::Reclaimed(token("t1")))
        );
        assert_eq!(
            claims.may_take("ann", 3, None, 61_000, no_holder),
            Ok(Taking::Free),
            "free once the grace period is over"
        );
    }

    #[test]
    fn a_reserved_name_is_refused_to_any_client_without_its_token() {
        // Connection ids are reused: the client that held the name is no proof of anything once it is gone.
        let mut claims = Claims::default();
        claims.hold(&key("ann"), 1);
        claims.release("ann", 1, Some(token("t1")), 0, 60_000);
        assert_eq!(
            claims.may_take("ann", 1, None, 10, no_holder),
            Err(Refused::Reserved)
        );
    }

    #[test]
    fn without_grace_a_released_name_is_free_at_once() {
        let mut claims = Claims::default();
        claims.hold(&key("ann"), 1);
        claims.release("ann", 1, Some(token("t1")), 0, 0);
        assert_eq!(claims.len(), 0);
    }

    #[test]
    fn without_a_token_a_released_name_is_free_at_once() {
        let mut claims = Claims::default();
        claims.hold(&key("ann"), 1);
        claims.release("ann", 1, None, 0, 60_000);
        assert_eq!(claims.len(), 0);
        assert!(claims.ending.is_empty());
    }

    #[test]
    fn only_the_holder_releases_a_name() {
        let mut claims = Claims::default();
        claims.hold(&key("ann"), 2);
        claims.release("ann", 1, Some(token("t1")), 0, 60_000);
        assert_eq!(claims.holder("ann"), Some(2));
    }

    #[test]
    fn ended_reservations_are_forgotten_and_a_retaken_name_is_kept() {
        let mut claims = Claims::default();
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            claims.hold(&key(name), i);
            claims.release(name, i, Some(token(name)), i as u64, 10);
        }
        claims.hold(&key("b"), 7);
        claims.expire(11);
        assert_eq!(claims.len(), 2, "a ended; b is held again; c has 1 ms left");
        assert_eq!(claims.holder("b"), Some(7));
        claims.expire(12);
        assert_eq!(claims.len(), 1);
        assert!(claims.ending.is_empty());
    }

    #[test]
    fn a_held_claim_shares_the_holders_key_and_costs_two_words() {
        let mut claims = Claims::default();
        let ann = key("ann");
        claims.hold(&ann, 1);
        claims.release("ann", 1, Some(token("t1")), 0, 60_000);
        claims.hold(&ann, 2);
        assert_eq!(
            Rc::strong_count(&ann),
            3,
            "ann, the map's key and the ending reservation's"
        );
        assert_eq!(
            std::mem::size_of::<Claim>(),
            2 * std::mem::size_of::<usize>()
        );
    }
}
