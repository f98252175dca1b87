//! Rooms: who sits in each, its chat history and epoch, the bound on rooms kept while empty, and the one byte budget
//! every room's history shares (the least recently active room's oldest messages go first).
//!
//! Owns the member lists (a `Vec` with swap-remove, handing positions back to the caller to store), the replay
//! decision for `since` (the messages themselves are kept by `history.rs`), and forgetting the longest-empty room. It must not build protocol
//! messages, hold per-connection state beyond a seat, or make ids of its own (epochs come from the caller).

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use super::history::{History, SharedText};
use super::rate::ByteBucket;
use super::{ClientId, Dialect, RoomId};
use crate::id_hash::IdMap;

/// One connection's place in a room. 24 bytes: every member has one, in a vector with room to grow.
#[derive(Clone, Debug)]
pub(super) struct Seat {
    /// The connection sitting here, in 32 bits (see [`Seat::new`]).
    client: u32,
    /// The dialect it joined with.
    pub(super) dialect: Dialect,
    /// The name it joined with.
    pub(super) user: Rc<str>,
}

impl Seat {
    /// `client`'s seat, or `None` for an id past 32 bits, which the server's keys never reach (its timers keep
    /// them in 32 bits too).
    pub(super) fn new(client: ClientId, dialect: Dialect, user: Rc<str>) -> Option<Seat> {
        Some(Seat {
            client: u32::try_from(client).ok()?,
            dialect,
            user,
        })
    }

    /// The connection sitting here.
    pub(super) fn client(&self) -> ClientId {
        self.client as ClientId
    }
}

/// Why a replay is incomplete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Gap {
    /// The client is further behind than the history buffer reaches.
    Gap,
    /// The room's history began anew since the client's `since`.
    Epoch,
}

impl Gap {
    /// The `reason` on the wire.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Gap::Gap => "gap",
            Gap::Epoch => "epoch",
        }
    }
}

/// What a joiner is about to be resent: history from position `start` to the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Replay {
    /// `None` when every message after `since` follows.
    pub(super) gap: Option<Gap>,
    /// Position in the history buffer of the first message to resend.
    pub(super) start: usize,
    /// How many messages will be resent.
    pub(super) count: usize,
}

/// One room: its members, its epoch, and its last chat messages.
pub(super) struct Room {
    name: Rc<str>,
    epoch: Rc<str>,
    seq: u64,
    history: History,
    seats: Vec<Seat>,
    /// With a cluster engine: the names of the room's members on other nodes.
    remote: Vec<Rc<str>>,
    empty_stamp: Option<u64>,
    /// When a chat message was last kept here, in the order of `Rooms::activity`.
    last_active: u64,
    /// The bytes of chat the room may still carry.
    volume: ByteBucket,
}

impl Room {
    /// The room's name, as joined.
    pub(super) fn name(&self) -> &Rc<str> {
        &self.name
    }

    /// The id fixed when this room's history began.
    pub(super) fn epoch(&self) -> &Rc<str> {
        &self.epoch
    }

    /// The seq of the latest chat message, 0 before the first.
    pub(super) fn latest_seq(&self) -> u64 {
        self.seq
    }

    /// The members, in no particular order.
    pub(super) fn seats(&self) -> &[Seat] {
        &self.seats
    }

    /// With a cluster engine: the names of the members on other nodes.
    pub(super) fn remote(&self) -> &[Rc<str>] {
        &self.remote
    }

    /// Members here and, with a cluster engine, on other nodes.
    pub(super) fn online(&self) -> usize {
        self.seats.len() + self.remote.len()
    }

    /// With a cluster engine: the members on other nodes are these.
    pub(super) fn set_remote(&mut self, names: Vec<Rc<str>>) {
        self.remote = names;
    }

    /// With a cluster engine: `name` joined (or left) on another node; false if that changes nothing.
    pub(super) fn note_remote(&mut self, name: &str, joined: bool) -> bool {
        let at = self.remote.iter().position(|held| &**held == name);
        match (joined, at) {
            (true, None) => {
                self.remote.push(Rc::from(name));
                true
            }
            (false, Some(at)) => {
                self.remote.swap_remove(at);
                true
            }
            _ => false,
        }
    }

    /// The position in the history of the first message with a seq above `seen`.
    pub(super) fn position_after(&self, seen: u64) -> usize {
        self.history.position_after(seen)
    }

    /// The seq of the oldest message the history still holds.
    pub(super) fn oldest_kept_seq(&self) -> Option<u64> {
        self.history.oldest_seq()
    }

    /// The latest position from `start` on whose messages to the end fit in `max_bytes`, in the form a client of
    /// `dialect` is sent.
    pub(super) fn start_within(&self, start: usize, max_bytes: usize, dialect: Dialect) -> usize {
        self.history.start_within(start, max_bytes, dialect)
    }

    /// Charges `bytes` of chat at `now_ms` against the room's volume (`rate` a second, `burst` at once); false if
    /// they do not fit.
    pub(super) fn carry(&mut self, now_ms: u64, rate: f64, burst: u32, bytes: usize) -> bool {
        self.volume.take(now_ms, rate, burst, bytes)
    }

    /// True if the room could carry `bytes` more now; nothing is charged.
    pub(super) fn could_carry(&self, now_ms: u64, rate: f64, burst: u32, bytes: usize) -> bool {
        self.volume.has(now_ms, rate, burst, bytes)
    }

    /// A chat message numbered `seq` elsewhere (by a cluster engine) is the latest now, if it is later than the latest.
    pub(super) fn advance_seq(&mut self, seq: u64) {
        self.seq = self.seq.max(seq);
    }

    /// Take the seq for a new chat message.
    pub(super) fn next_seq(&mut self) -> u64 {
        self.seq = self.seq.saturating_add(1);
        self.seq
    }

    /// What to resend to a joiner of `dialect` that last saw `since` = (epoch, seq); `None` means it asked for
    /// nothing. At most `max_bytes` of history, counted in the form that dialect is sent, are resent: when more was
    /// missed, the newest messages that fit are, as a gap.
    pub(super) fn replay(
        &self,
        since: Option<(&str, u64)>,
        max_bytes: usize,
        dialect: Dialect,
    ) -> Replay {
        let replay = self.replay_unbounded(since);
        let start = self.history.start_within(replay.start, max_bytes, dialect);
        if start == replay.start {
            return replay;
        }
        Replay {
            gap: Some(replay.gap.unwrap_or(Gap::Gap)),
            start,
            count: self.history.len() - start,
        }
    }

    fn replay_unbounded(&self, since: Option<(&str, u64)>) -> Replay {
        let len = self.history.len();
        let whole = |gap| Replay {
            gap: Some(gap),
            start: 0,
            count: len,
        };
        let Some((epoch, seen)) = since else {
            return Replay {
                gap: None,
                start: len,
                count: 0,
            };
        };
        // Another epoch, or a seq this history never reached: what the client saw is not this room's history.
        if epoch != &*self.epoch || seen > self.seq {
            return whole(Gap::Epoch);
        }
        let oldest = self
            .history
            .oldest_seq()
            .unwrap_or(self.seq.saturating_add(1));
        if seen < self.seq && seen.saturating_add(1) < oldest {
            return whole(Gap::Gap);
        }
        let start = self.history.position_after(seen);
        Replay {
            gap: None,
            start,
            count: len - start,
        }
    }

    /// Remove `client`, expected at `index`. Returns the connection moved into `index` and that position.
    fn unseat(&mut self, index: usize, client: ClientId) -> Option<(ClientId, usize)> {
        let index = match self.seats.get(index) {
            Some(seat) if seat.client() == client => index,
            _ => self.seats.iter().position(|seat| seat.client() == client)?,
        };
        self.seats.swap_remove(index);
        self.seats.get(index).map(|moved| (moved.client(), index))
    }
}

/// Every room the chat remembers, by id and by name.
pub(super) struct Rooms {
    by_name: HashMap<Rc<str>, RoomId>,
    rooms: IdMap<RoomId, Room>,
    /// Empty rooms by the stamp taken when they emptied: the first is the longest-empty.
    empty: BTreeMap<u64, RoomId>,
    next_id: u64,
    next_stamp: u64,
    seated: usize,
    /// Bytes every room's history holds.
    history_bytes: usize,
    /// With a cluster engine: the names of rooms that gained their first member or lost their last since the engine
    /// last asked (`None`, and nothing recorded, on a single node).
    occupancy_changes: Option<Vec<Rc<str>>>,
    /// Counts chat messages kept, for `Room::last_active`.
    activity: u64,
}

impl Rooms {
    /// No rooms.
    pub(super) fn new() -> Self {
        Rooms {
            by_name: HashMap::new(),
            rooms: IdMap::default(),
            empty: BTreeMap::new(),
            next_id: 0,
            next_stamp: 0,
            seated: 0,
            history_bytes: 0,
            activity: 0,
            occupancy_changes: None,
        }
    }

    /// From now on, record the rooms that gain their first member or lose their last (`take_occupancy_changes`).
    pub(super) fn track_occupancy(&mut self) {
        self.occupancy_changes.get_or_insert_with(Vec::new);
    }

    /// The names of the rooms whose occupancy changed since the last call (a name may repeat), oldest first.
    pub(super) fn take_occupancy_changes(&mut self) -> Vec<Rc<str>> {
        self.occupancy_changes
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// True if room `name` is remembered and has a member.
    pub(super) fn is_occupied(&self, name: &str) -> bool {
        self.lookup(name)
            .and_then(|id| self.rooms.get(&id))
            .is_some_and(|room| !room.seats.is_empty())
    }

    /// The room with this id, if it is still remembered.
    pub(super) fn get(&self, id: RoomId) -> Option<&Room> {
        self.rooms.get(&id)
    }

    /// The room with this id, to change, if it is still remembered.
    pub(super) fn get_mut(&mut self, id: RoomId) -> Option<&mut Room> {
        self.rooms.get_mut(&id)
    }

    /// The id of the room with this name, if it is remembered.
    pub(super) fn lookup(&self, name: &str) -> Option<RoomId> {
        self.by_name.get(name).copied()
    }

    /// The members of a room; none if it is forgotten.
    pub(super) fn seats(&self, id: RoomId) -> &[Seat] {
        self.rooms
            .get(&id)
            .map_or(&[], |room| room.seats.as_slice())
    }

    /// The room with this name, created (empty, with a new epoch from `epoch`) if it is not remembered.
    pub(super) fn open(&mut self, name: &str, epoch: impl FnOnce() -> Rc<str>) -> RoomId {
        if let Some(id) = self.lookup(name) {
            return id;
        }
        let id = RoomId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        let name: Rc<str> = Rc::from(name);
        self.by_name.insert(name.clone(), id);
        self.rooms.insert(
            id,
            Room {
                name,
                epoch: epoch(),
                seq: 0,
                history: History::default(),
                seats: Vec::new(),
                remote: Vec::new(),
                empty_stamp: None,
                last_active: 0,
                volume: ByteBucket::new(u32::MAX, 0),
            },
        );
        self.mark_empty(id);
        id
    }

    /// Add a member; returns its position, or `None` if the room is forgotten.
    pub(super) fn seat(&mut self, id: RoomId, seat: Seat) -> Option<usize> {
        let room = self.rooms.get_mut(&id)?;
        if let Some(stamp) = room.empty_stamp.take() {
            self.empty.remove(&stamp);
        }
        if let (true, Some(changes)) = (room.seats.is_empty(), self.occupancy_changes.as_mut()) {
            changes.push(room.name.clone());
        }
        room.seats.push(seat);
        self.seated += 1;
        Some(room.seats.len() - 1)
    }

    /// Remove `client`, expected at `index`. Returns the connection moved into `index` and that position, for the
    /// caller to record. A room left empty starts counting as empty; it is forgotten only by
    /// [`Rooms::evict_excess`], so that a leave and a join in one step keep its history.
    pub(super) fn unseat(
        &mut self,
        id: RoomId,
        index: usize,
        client: ClientId,
    ) -> Option<(ClientId, usize)> {
        let room = self.rooms.get_mut(&id)?;
        let before = room.seats.len();
        let moved = room.unseat(index, client);
        let now_empty = room.seats.is_empty();
        let removed = room.seats.len() < before;
        if removed {
            self.seated = self.seated.saturating_sub(1);
            if let (true, Some(changes)) = (now_empty, self.occupancy_changes.as_mut()) {
                changes.push(room.name.clone());
            }
        }
        if now_empty {
            self.mark_empty(id);
        }
        moved
    }

    /// Room `id`'s numbering began again elsewhere (a cluster engine lost the room's data): it gets the new epoch
    /// `epoch`, its seq goes back to 0 and its history is dropped, so that no `since` of the old numbering is
    /// mistaken for one of the new.
    pub(super) fn restart(&mut self, id: RoomId, epoch: Rc<str>) {
        let Some(room) = self.rooms.get_mut(&id) else {
            return;
        };
        self.history_bytes = self.history_bytes.saturating_sub(room.history.bytes());
        room.history = History::default();
        room.seq = 0;
        room.epoch = epoch;
    }

    /// Forget the longest-empty rooms until at most `max_empty` empty ones remain.
    pub(super) fn evict_excess(&mut self, max_empty: usize) {
        while self.empty.len() > max_empty {
            let Some((_, id)) = self.empty.pop_first() else {
                return;
            };
            if let Some(room) = self.rooms.remove(&id) {
                self.by_name.remove(&*room.name);
                self.history_bytes -= room.history.bytes();
            }
        }
    }

    /// Keeps a chat message of room `id` (`text`, its V2 form, and `v1_text`, its V1 form when that differs), at
    /// most `capacity` per room, then drops history until every room's together holds at most `max_bytes`, both
    /// forms counted: the oldest segments of the least recently active rooms first.
    pub(super) fn remember(
        &mut self,
        id: RoomId,
        seq: u64,
        text: &str,
        v1_text: Option<&str>,
        capacity: usize,
        max_bytes: usize,
    ) {
        let Some(room) = self.rooms.get_mut(&id) else {
            return;
        };
        self.activity += 1;
        room.last_active = self.activity;
        let change = room.history.push(seq, text, v1_text, capacity);
        self.history_bytes = self.history_bytes.saturating_add_signed(change);
        while self.history_bytes > max_bytes {
            let coldest = self
                .rooms
                .values_mut()
                .filter(|room| room.history.len() > 0)
                .min_by_key(|room| room.last_active);
            let Some(room) = coldest else {
                break;
            };
            self.history_bytes -= room.history.drop_oldest_segment();
        }
    }

    /// The messages of room `id` kept from position `start` on, as first sent to clients of `dialect`, shared with
    /// its history.
    pub(super) fn history_from(
        &mut self,
        id: RoomId,
        start: usize,
        dialect: Dialect,
    ) -> Vec<SharedText> {
        let Some(room) = self.rooms.get_mut(&id) else {
            return Vec::new();
        };
        let before = room.history.bytes();
        let texts = room.history.texts_from(start, dialect);
        self.history_bytes = self.history_bytes + room.history.bytes() - before;
        texts
    }

    /// Bytes every room's history holds.
    pub(super) fn history_bytes(&self) -> usize {
        self.history_bytes
    }

    /// Rooms with at least one member.
    pub(super) fn occupied(&self) -> usize {
        self.rooms.len().saturating_sub(self.empty.len())
    }

    /// Members over all rooms.
    pub(super) fn seated(&self) -> usize {
        self.seated
    }

    /// The rooms with at least one member, in no particular order.
    pub(super) fn occupied_rooms(&self) -> impl Iterator<Item = &Room> + '_ {
        self.rooms.values().filter(|room| !room.seats.is_empty())
    }

    fn mark_empty(&mut self, id: RoomId) {
        let Some(room) = self.rooms.get_mut(&id) else {
            return;
        };
        if room.empty_stamp.is_some() {
            return;
        }
        let stamp = self.next_stamp;
        self.next_stamp = self.next_stamp.wrapping_add(1);
        room.empty_stamp = Some(stamp);
        self.empty.insert(stamp, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(client: ClientId) -> Seat {
        Seat::new(client, Dialect::V2, Rc::from(format!("u{client}"))).unwrap()
    }

    #[test]
    fn a_seat_keeps_its_client_in_32_bits_and_refuses_a_wider_id() {
        assert_eq!(seat(7).client(), 7);
        let widest = u32::MAX as ClientId;
        assert_eq!(seat(widest).client(), widest);
        if let Some(wider) = widest.checked_add(1) {
            assert!(Seat::new(wider, Dialect::V1, Rc::from("u")).is_none());
        }
    }

    fn room_with_history(seqs: std::ops::RangeInclusive<u64>, capacity: usize) -> (Rooms, RoomId) {
        let mut rooms = Rooms::new();
        let id = rooms.open("r", || Rc::from("E"));
        let room = rooms.get_mut(id).expect("just opened");
        for _ in 1..*seqs.start() {
            room.next_seq();
        }
        for _ in seqs {
            let seq = rooms.get_mut(id).expect("room").next_seq();
            rooms.remember(id, seq, &format!("m{seq}"), None, capacity, usize::MAX);
        }
        (rooms, id)
    }

    fn texts(texts: Vec<SharedText>) -> Vec<String> {
        texts
            .iter()
            .map(|t| String::from_utf8(t.as_bytes().to_vec()).unwrap())
            .collect()
    }

    fn replayed(
        rooms: &mut Rooms,
        id: RoomId,
        since: Option<(&str, u64)>,
    ) -> (Replay, Vec<String>) {
        replayed_within(rooms, id, since, usize::MAX)
    }

    fn replayed_within(
        rooms: &mut Rooms,
        id: RoomId,
        since: Option<(&str, u64)>,
        max_bytes: usize,
    ) -> (Replay, Vec<String>) {
        let replay = rooms
            .get(id)
            .expect("room")
            .replay(since, max_bytes, Dialect::V2);
        (
            replay,
            texts(rooms.history_from(id, replay.start, Dialect::V2)),
        )
    }

    #[test]
    fn history_keeps_only_the_last_capacity_messages() {
        let (mut rooms, id) = room_with_history(1..=5, 3);
        let (_, msgs) = replayed(&mut rooms, id, Some(("E", 0)));
        assert_eq!(msgs, ["m3", "m4", "m5"]);
    }

    #[test]
    fn a_replay_over_the_byte_cap_sends_the_newest_that_fit_as_a_gap() {
        let (mut rooms, id) = room_with_history(1..=5, 10);
        let (replay, msgs) = replayed_within(&mut rooms, id, Some(("E", 1)), 5);
        assert_eq!(replay.gap, Some(Gap::Gap));
        assert_eq!(msgs, ["m4", "m5"]);
        let (replay, msgs) = replayed_within(&mut rooms, id, Some(("E", 3)), 5);
        assert_eq!(replay.gap, None, "what was missed fits");
        assert_eq!(msgs, ["m4", "m5"]);
        let (replay, _) = replayed_within(&mut rooms, id, Some(("X", 3)), 5);
        assert_eq!(replay.gap, Some(Gap::Epoch), "an epoch change stays one");
    }

    #[test]
    fn every_rooms_history_shares_one_budget_and_the_coldest_room_pays() {
        let mut rooms = Rooms::new();
        let cold = rooms.open("cold", || Rc::from("E"));
        let hot = rooms.open("hot", || Rc::from("E"));
        let text = "z".repeat(4_000);
        for seq in 1..=20 {
            rooms.remember(cold, seq, &text, None, 1_000, usize::MAX);
        }
        let budget = rooms.history_bytes() + 8_000;
        for seq in 1..=20 {
            rooms.remember(hot, seq, &text, None, 1_000, budget);
            assert!(rooms.history_bytes() <= budget);
        }
        let (cold_left, hot_left) = (
            rooms.get(cold).unwrap().history.len(),
            rooms.get(hot).unwrap().history.len(),
        );
        assert!(cold_left < 20, "the cold room paid: {cold_left} left");
        assert_eq!(hot_left, 20, "the active room kept all it could");
    }

    #[test]
    fn a_v1_form_counts_against_the_budget_and_the_coldest_room_pays_for_it() {
        let mut rooms = Rooms::new();
        let cold = rooms.open("cold", || Rc::from("E"));
        let hot = rooms.open("hot", || Rc::from("E"));
        let (text, v1_text) = ("<".repeat(4_000), "&lt;".repeat(4_000));
        rooms.remember(cold, 1, &text, None, 10, usize::MAX);
        rooms.history_from(cold, 0, Dialect::V2);
        assert_eq!(rooms.history_bytes(), 4_000, "no V1 form, nothing extra");
        // Room for the cold message and one hot one with its V1 form, not for a second: the cold room must pay.
        let budget = 4_000 + 2 * 20_000 - 1;
        rooms.remember(hot, 1, &text, Some(&v1_text), 10, budget);
        assert_eq!(rooms.history_bytes(), 24_000, "both forms counted");
        rooms.remember(hot, 2, &text, Some(&v1_text), 10, budget);
        assert!(rooms.history_bytes() <= budget);
        assert_eq!(
            rooms.get(cold).unwrap().history.len(),
            0,
            "the cold room paid"
        );
        assert_eq!(rooms.get(hot).unwrap().history.len(), 2);
    }

    #[test]
    fn a_replay_is_cut_on_the_bytes_its_dialect_is_sent() {
        let mut rooms = Rooms::new();
        let id = rooms.open("r", || Rc::from("E"));
        for _ in 1..=3 {
            let seq = rooms.get_mut(id).expect("room").next_seq();
            rooms.remember(id, seq, "<<", Some("&lt;&lt;"), 10, usize::MAX);
        }
        let room = rooms.get(id).expect("room");
        let since = Some(("E", 0));
        let v2 = room.replay(since, 6, Dialect::V2);
        assert_eq!((v2.gap, v2.count), (None, 3));
        let v1 = room.replay(since, 16, Dialect::V1);
        assert_eq!((v1.gap, v1.count), (Some(Gap::Gap), 2));
        let texts = texts(rooms.history_from(id, v1.start, Dialect::V1));
        assert_eq!(texts, ["&lt;&lt;", "&lt;&lt;"]);
    }

    #[test]
    fn a_forgotten_room_gives_its_history_bytes_back() {
        let mut rooms = Rooms::new();
        let id = rooms.open("gone", || Rc::from("E"));
        rooms.remember(id, 1, "hello", None, 10, usize::MAX);
        assert!(rooms.history_bytes() > 0);
        rooms.evict_excess(0);
        assert_eq!(rooms.history_bytes(), 0);
    }

    #[test]
    fn replay_within_buffer_is_complete() {
        let (mut rooms, id) = room_with_history(1..=5, 3);
        let (replay, msgs) = replayed(&mut rooms, id, Some(("E", 3)));
        assert_eq!(replay.gap, None);
        assert_eq!(replay.count, 2);
        assert_eq!(msgs, ["m4", "m5"]);
    }

    #[test]
    fn replay_just_before_oldest_is_complete() {
        let (mut rooms, id) = room_with_history(1..=5, 3);
        let (replay, msgs) = replayed(&mut rooms, id, Some(("E", 2)));
        assert_eq!(replay.gap, None);
        assert_eq!(msgs, ["m3", "m4", "m5"]);
    }

    #[test]
    fn replay_behind_buffer_is_a_gap() {
        let (mut rooms, id) = room_with_history(1..=5, 3);
        let (replay, msgs) = replayed(&mut rooms, id, Some(("E", 1)));
        assert_eq!(replay.gap, Some(Gap::Gap));
        assert_eq!(msgs, ["m3", "m4", "m5"]);
    }

    #[test]
    fn replay_from_other_epoch_sends_whole_buffer() {
        let (mut rooms, id) = room_with_history(1..=5, 3);
        let (replay, msgs) = replayed(&mut rooms, id, Some(("F", 4)));
        assert_eq!(replay.gap, Some(Gap::Epoch));
        assert_eq!(replay.count, 3);
        assert_eq!(msgs, ["m3", "m4", "m5"]);
    }

    #[test]
    fn replay_at_latest_is_complete_and_empty() {
        let (mut rooms, id) = room_with_history(1..=5, 3);
        let (replay, msgs) = replayed(&mut rooms, id, Some(("E", 5)));
        assert_eq!(replay.gap, None);
        assert_eq!(replay.count, 0);
        assert!(msgs.is_empty());
    }

    #[test]
    fn replay_past_latest_is_another_history_and_resends_the_buffer() {
        let (mut rooms, id) = room_with_history(1..=5, 3);
        for seen in [6, u64::MAX] {
            let (replay, msgs) = replayed(&mut rooms, id, Some(("E", seen)));
            assert_eq!(replay.gap, Some(Gap::Epoch));
            assert_eq!(replay.count, 3);
            assert_eq!(msgs, ["m3", "m4", "m5"]);
        }
    }

    #[test]
    fn no_since_replays_nothing() {
        let (mut rooms, id) = room_with_history(1..=5, 3);
        let (replay, msgs) = replayed(&mut rooms, id, None);
        assert_eq!(replay.gap, None);
        assert_eq!(replay.count, 0);
        assert!(msgs.is_empty());
    }

    #[test]
    fn without_history_any_miss_is_a_gap() {
        let (mut rooms, id) = room_with_history(1..=5, 0);
        let (replay, msgs) = replayed(&mut rooms, id, Some(("E", 4)));
        assert_eq!(replay.gap, Some(Gap::Gap));
        assert!(msgs.is_empty());
    }

    #[test]
    fn unseat_moves_the_last_member_into_the_gap() {
        let mut rooms = Rooms::new();
        let id = rooms.open("r", || Rc::from("E"));
        for client in 0..3 {
            rooms.seat(id, seat(client));
        }
        assert_eq!(rooms.unseat(id, 0, 0), Some((2, 0)));
        assert_eq!(rooms.unseat(id, 1, 1), None);
        let left: Vec<_> = rooms.seats(id).iter().map(|s| s.client()).collect();
        assert_eq!(left, [2]);
        assert_eq!(rooms.seated(), 1);
    }

    #[test]
    fn unseat_with_a_stale_index_still_finds_the_member() {
        let mut rooms = Rooms::new();
        let id = rooms.open("r", || Rc::from("E"));
        for client in 0..3 {
            rooms.seat(id, seat(client));
        }
        assert_eq!(rooms.unseat(id, 2, 0), Some((2, 0)));
        assert_eq!(rooms.seats(id).len(), 2);
    }

    #[test]
    fn the_longest_empty_room_is_forgotten_first() {
        let mut rooms = Rooms::new();
        let ids: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|name| rooms.open(name, || Rc::from("E")))
            .collect();
        for (client, id) in ids.iter().enumerate() {
            rooms.seat(*id, seat(client));
        }
        rooms.unseat(ids[1], 0, 1);
        rooms.unseat(ids[0], 0, 0);
        rooms.unseat(ids[2], 0, 2);
        rooms.evict_excess(2);
        assert!(rooms.lookup("b").is_none());
        assert!(rooms.lookup("a").is_some());
        assert!(rooms.lookup("c").is_some());
        assert_eq!(rooms.occupied(), 0);
    }

    #[test]
    fn a_refilled_room_is_no_longer_empty() {
        let mut rooms = Rooms::new();
        let id = rooms.open("a", || Rc::from("E"));
        rooms.seat(id, seat(0));
        rooms.unseat(id, 0, 0);
        rooms.seat(id, seat(1));
        rooms.evict_excess(0);
        assert_eq!(rooms.lookup("a"), Some(id));
        assert_eq!(rooms.occupied(), 1);
    }
}
