//! Per-client state stored by [`ClientId`] in a vector: the server's client ids are its slab keys, dense from 0 and
//! reused, so a slot per id costs less than a hash table (no stored key, no empty buckets kept for the load factor,
//! which for the chat's per-connection state was a third of its memory).
//!
//! Owns only the storage; it must not know what it stores. An id far beyond the ones in use grows the vector to
//! it, which is why the chat's ids must be the server's small, reused keys (`ClientId`'s contract).

use super::ClientId;

/// Values by client id: a slot per id up to the largest seen.
#[derive(Debug)]
pub(super) struct ByClient<T> {
    slots: Vec<Option<T>>,
}

impl<T> Default for ByClient<T> {
    fn default() -> Self {
        ByClient { slots: Vec::new() }
    }
}

impl<T> ByClient<T> {
    /// The value of `client`, if it has one.
    pub(super) fn get(&self, client: &ClientId) -> Option<&T> {
        self.slots.get(*client)?.as_ref()
    }

    /// The value of `client`, if it has one, to change.
    pub(super) fn get_mut(&mut self, client: &ClientId) -> Option<&mut T> {
        self.slots.get_mut(*client)?.as_mut()
    }

    /// The value of `client`, made by `make` if it has none; `None` only for the one id a vector cannot reach
    /// (`usize::MAX`).
    pub(super) fn get_or_insert_with(
        &mut self,
        client: ClientId,
        make: impl FnOnce() -> T,
    ) -> Option<&mut T> {
        if client >= self.slots.len() {
            self.slots.resize_with(client.checked_add(1)?, || None);
        }
        Some(self.slots.get_mut(client)?.get_or_insert_with(make))
    }

    /// Takes the value of `client` out, if it has one.
    pub(super) fn remove(&mut self, client: &ClientId) -> Option<T> {
        self.slots.get_mut(*client)?.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_made_once_and_then_found() {
        let mut by_client = ByClient::default();
        assert_eq!(by_client.get_or_insert_with(3, || "a"), Some(&mut "a"));
        assert_eq!(by_client.get_or_insert_with(3, || "b"), Some(&mut "a"));
        assert_eq!(by_client.get(&3), Some(&"a"));
        assert_eq!(by_client.get(&2), None, "ids below are empty slots");
        assert_eq!(by_client.get(&4), None, "ids beyond are not stored");
    }

    #[test]
    fn a_removed_value_is_gone_and_its_slot_reusable() {
        let mut by_client = ByClient::default();
        by_client.get_or_insert_with(0, || 1);
        if let Some(value) = by_client.get_mut(&0) {
            *value = 2;
        }
        assert_eq!(by_client.remove(&0), Some(2));
        assert_eq!(by_client.remove(&0), None);
        assert_eq!(by_client.remove(&9), None);
        assert_eq!(by_client.get_or_insert_with(0, || 3), Some(&mut 3));
    }

    #[test]
    fn the_id_past_every_vector_is_refused_not_a_panic() {
        let mut by_client = ByClient::default();
        assert_eq!(by_client.get_or_insert_with(usize::MAX, || 1), None);
    }
}
