//! Token signatures checked off the event loop: the verifier thread, its bounded queue, and the connections that
//! wait for a verdict, parked.
//!
//! With RS256 or ES256 (`config::TokenChecks`), a signature check is a public-key operation of 40-120 µs; done in
//! the loop, a burst of joins would stall every other connection for as long as the burst takes to check. So the
//! chat asks for the check (`Action::CheckToken`), this file hands the token to one `std::thread` through a bounded
//! queue, and the thread's verdicts come back through a channel and the loop's one `mio::Waker` (mio allows one
//! per `Poll`; the shutdown handle shares it). Until then the connection is parked: nothing more is read from its
//! socket, and the messages already read behind the one that waits are held here, so that the chat meets them in
//! the order they came. A verdict for a connection that ended meanwhile is dropped (its serial no longer matches).
//!
//! Checks for one room are answered together. Each join tells the room's other members who arrived, and the loop
//! writes to a member once per turn whatever it was told (`write.rs`). Answered one at a time, in the order asked,
//! a reconnect storm (a room's members all rejoining at once, after a node restart) would cost a turn per join and
//! so a write per member per join: with 20 rooms of 20, ~19 `writev` per join instead of about one. So the thread
//! takes the oldest request and, with it, the requests for the same room queued behind it ([`take_group`]), checks
//! them and sends their verdicts as one batch with one wake; the loop applies every verdict it has in one turn. The
//! rules: the oldest request always goes first, so a lone request is checked at once, never held for company; a
//! group holds at most [`MAX_GROUP`] requests (~4.5 ms of ES256 checks before the first of them is answered), from
//! the first [`GROUP_SCAN`] queued; and no request is overtaken by more than [`MAX_OVERTAKEN`] later ones in all
//! (~36 ms of ES256 checks), so that a join into a quiet room is not starved by a storm elsewhere. Requests with no
//! room (a token in the URL, a `refresh`) are answered alone.
//!
//! Owns the thread, the queue's bounds (entries, and bytes of tokens), its grouping and the held messages. It must
//! not decide what a verdict means (the chat does, in `Chat::token_checked`), and the thread touches no socket and
//! no chat state: it is given tokens and gives back `Verifier::check_signature` of each. Nothing here logs a token.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::Waker;

use super::client::{Flags, Phase};
use super::Server;
use crate::auth::{SignedToken, TokenError, Verifier};
use crate::chat::TokenCheck;

/// The most bytes of tokens waiting to be checked at once, whatever the queue's length in entries: a queue of
/// tokens as long as the largest message allowed would otherwise hold that much per entry.
pub(super) const MAX_QUEUED_TOKEN_BYTES: usize = 4 * 1024 * 1024;

/// The most requests checked and answered together: the first of them waits for the others' checks.
pub(super) const MAX_GROUP: usize = 32;

/// How far into the queue the thread looks for requests to answer with the oldest one.
pub(super) const GROUP_SCAN: usize = 1024;

/// The most later requests that may be answered before a request, over its whole wait.
pub(super) const MAX_OVERTAKEN: u32 = 256;

/// One token to check, for the connection with `key` and `serial`.
struct Job {
    key: usize,
    serial: u32,
    token: Box<str>,
    /// The room its join asks for: the requests for one room are answered together. `None`: answered alone.
    room: Option<Box<str>>,
    sent: Instant,
    /// How many requests queued after this one have been taken before it.
    overtaken: u32,
}

/// The thread's answer to one [`Job`].
pub(super) struct Verdict {
    /// The connection's slab key.
    pub(super) key: usize,
    /// The connection's serial when the job was sent: a key reused since is another connection.
    pub(super) serial: u32,
    /// `Verifier::check_signature` of the token.
    pub(super) checked: Result<SignedToken, TokenError>,
    /// When the loop sent the job.
    pub(super) sent: Instant,
    /// How long the thread spent checking it.
    pub(super) work: Duration,
    /// The token's length, counted against [`MAX_QUEUED_TOKEN_BYTES`] while it waited.
    pub(super) token_len: usize,
}

/// The requests waiting for the thread.
#[derive(Default)]
struct Waiting {
    jobs: VecDeque<Job>,
    /// The thread sleeps until a job comes: the loop must notify it.
    asleep: bool,
    /// The server is gone: the thread ends.
    closed: bool,
}

/// What the loop and the thread share: the waiting requests, and the thread's wake-up.
#[derive(Default)]
struct Queue {
    waiting: Mutex<Waiting>,
    ready: Condvar,
}

impl Queue {
    /// The waiting requests. Nothing under the lock can panic halfway through a change, so a lock poisoned by a
    /// panic elsewhere still guards a consistent queue.
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Moves the oldest job of `jobs` into `group`, and behind it the jobs for the same room among the first
/// [`GROUP_SCAN`], in their order, up to [`MAX_GROUP`] in all and while no job passed over would have been overtaken
/// more than [`MAX_OVERTAKEN`] times. The jobs passed over keep their order and count how many overtook them.
/// `scratch` is reused between calls.
fn take_group(jobs: &mut VecDeque<Job>, group: &mut Vec<Job>, scratch: &mut Vec<Job>) {
    let Some(mut oldest) = jobs.pop_front() else {
        return;
    };
    let room = oldest.room.take();
    group.push(oldest);
    let Some(room) = room.as_deref() else {
        return;
    };
    // Which jobs to take: the same room's, in order, until the group is full or a job passed over could be
    // overtaken no more. `slack` is the fewest more overtakings any job passed over so far allows.
    let mut taken = 0;
    let mut end = 0;
    let mut slack = u32::MAX;
    for (index, job) in jobs.iter().take(GROUP_SCAN).enumerate() {
        if group.len() + taken >= MAX_GROUP {
            break;
        }
        if job.room.as_deref() == Some(room) {
            if slack == 0 {
                break;
            }
            taken += 1;
            slack -= 1;
            end = index + 1;
        } else {
            slack = slack.min(MAX_OVERTAKEN.saturating_sub(job.overtaken));
            if slack == 0 {
                break;
            }
        }
    }
    if taken == 0 {
        return;
    }
    // Every job of the room before `end` is taken; each other one there is overtaken by those taken behind it.
    scratch.extend(jobs.drain(..end));
    let first_taken = group.len();
    let mut taken_behind = 0;
    for mut job in scratch.drain(..).rev() {
        if job.room.as_deref() == Some(room) {
            job.room = None;
            group.push(job);
            taken_behind += 1;
        } else {
            job.overtaken += taken_behind;
            jobs.push_front(job);
        }
    }
    group[first_taken..].reverse();
}

/// The loop's end of the verifier thread.
pub(super) struct TokenChecker {
    queue: Arc<Queue>,
    /// The most jobs waiting at once (`--token-check-queue`).
    capacity: usize,
    thread: JoinHandle<()>,
    verdicts: Receiver<Vec<Verdict>>,
    /// Set by the thread when it wakes the loop, cleared by the loop before it takes the verdicts: one wake for
    /// as many verdicts as arrive before the loop gets to them.
    woken: Arc<AtomicBool>,
    /// Jobs sent whose verdict the loop has not taken.
    in_flight: usize,
    /// The bytes of their tokens.
    in_flight_bytes: usize,
}

impl TokenChecker {
    /// Starts the thread that checks signatures with `verifier`, with room for `queue` tokens waiting.
    pub(super) fn spawn(
        verifier: Verifier,
        queue: usize,
        waker: Arc<Waker>,
    ) -> io::Result<TokenChecker> {
        let shared = Arc::new(Queue::default());
        let thread_queue = shared.clone();
        let (answers, verdicts) = mpsc::channel::<Vec<Verdict>>();
        let woken = Arc::new(AtomicBool::new(false));
        let thread_woken = woken.clone();
        let thread = thread::Builder::new()
            .name("roomcast-verify".to_owned())
            .spawn(move || {
                let mut group = Vec::with_capacity(MAX_GROUP);
                let mut scratch = Vec::new();
                loop {
                    {
                        let mut waiting = thread_queue.lock();
                        while waiting.jobs.is_empty() && !waiting.closed {
                            waiting.asleep = true;
                            waiting = thread_queue
                                .ready
                                .wait(waiting)
                                .unwrap_or_else(PoisonError::into_inner);
                        }
                        waiting.asleep = false;
                        // Ends when the server is dropped.
                        if waiting.closed {
                            return;
                        }
                        take_group(&mut waiting.jobs, &mut group, &mut scratch);
                    }
                    let batch: Vec<Verdict> = group
                        .drain(..)
                        .map(|job| {
                            let started = Instant::now();
                            let checked = verifier.check_signature(&job.token);
                            Verdict {
                                key: job.key,
                                serial: job.serial,
                                checked,
                                sent: job.sent,
                                work: started.elapsed(),
                                token_len: job.token.len(),
                            }
                        })
                        .collect();
                    if answers.send(batch).is_err() {
                        return;
                    }
                    if !thread_woken.swap(true, Ordering::SeqCst) {
                        if let Err(e) = waker.wake() {
                            warn!("the verifier thread cannot wake the loop: {e}");
                        }
                    }
                }
            })?;
        Ok(TokenChecker {
            queue: shared,
            capacity: queue.max(1),
            thread,
            verdicts,
            woken,
            in_flight: 0,
            in_flight_bytes: 0,
        })
    }

    /// Queues `token` for the connection with `key` and `serial`, to be answered with the other requests for
    /// `room` waiting; false if the queue is full (in entries or in bytes) or the thread is gone.
    fn submit(&mut self, key: usize, serial: u32, token: Box<str>, room: Option<Box<str>>) -> bool {
        let len = token.len();
        if self.in_flight_bytes + len > MAX_QUEUED_TOKEN_BYTES {
            return false;
        }
        if self.thread.is_finished() {
            warn!("the verifier thread is gone");
            return false;
        }
        let asleep = {
            let mut waiting = self.queue.lock();
            if waiting.jobs.len() >= self.capacity {
                return false;
            }
            waiting.jobs.push_back(Job {
                key,
                serial,
                token,
                room,
                sent: Instant::now(),
                overtaken: 0,
            });
            std::mem::take(&mut waiting.asleep)
        };
        if asleep {
            self.queue.ready.notify_one();
        }
        self.in_flight += 1;
        self.in_flight_bytes += len;
        true
    }

    /// The next batch of verdicts the thread has sent, if any. Call [`TokenChecker::rearm`] before taking them.
    fn next_batch(&mut self) -> Option<Vec<Verdict>> {
        let batch = self.verdicts.try_recv().ok()?;
        for verdict in &batch {
            self.in_flight = self.in_flight.saturating_sub(1);
            self.in_flight_bytes = self.in_flight_bytes.saturating_sub(verdict.token_len);
        }
        Some(batch)
    }

    /// Lets the thread wake the loop again for the verdicts sent from now on.
    fn rearm(&self) {
        self.woken.store(false, Ordering::SeqCst);
    }

    /// Tokens sent to the thread whose verdict the loop has not taken.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight
    }
}

impl Drop for TokenChecker {
    /// Ends the thread: it finishes the group in hand, if any, and takes no more.
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.ready.notify_one();
    }
}

/// A connection waiting for a token check, with the messages read behind the one that waits.
#[derive(Debug)]
pub(super) struct Parked {
    /// The connection's serial when it was parked.
    serial: u32,
    /// Text messages, in the order they arrived, for the chat once the verdict is in.
    held: VecDeque<String>,
    /// Their bytes, counted in the server's `incoming_bytes` while they are held.
    held_bytes: usize,
}

impl Parked {
    /// A connection with `serial` parked, nothing held yet.
    pub(super) fn new(serial: u32) -> Parked {
        Parked {
            serial,
            held: VecDeque::new(),
            held_bytes: 0,
        }
    }

    /// Holds a text message that arrived behind the one that waits; it goes to the chat once the verdict is in.
    /// Its bytes count in the server's `incoming_bytes` meanwhile.
    pub(super) fn hold(&mut self, text: String, incoming_bytes: &mut usize) {
        self.held_bytes += text.len();
        *incoming_bytes += text.len();
        self.held.push_back(text);
    }
}

impl Server {
    /// Parks `key` if the chat waits on a token check for it: nothing more is read from it until the verdict.
    pub(super) fn park_if_checking(&mut self, key: usize) {
        if !self.chat.awaits_token_check(key) || self.parked.contains_key(&key) {
            return;
        }
        let Some(client) = self.clients.get(key) else {
            return;
        };
        self.parked.insert(key, Parked::new(client.serial));
    }

    /// True if `key` is parked: its input waits for a token check.
    pub(super) fn is_parked(&self, key: usize) -> bool {
        !self.parked.is_empty() && self.parked.contains_key(&key)
    }

    /// Forgets what `key` held while parked (it is being removed).
    pub(super) fn unpark(&mut self, key: usize) {
        if let Some(parked) = self.parked.remove(&key) {
            self.incoming_bytes -= parked.held_bytes;
        }
    }

    /// The chat asked for `token` to be checked for `key`: sent to the verifier thread, or, with its queue full,
    /// refused at once (`unavailable`) and the connection resumed in the turn's tail.
    pub(super) fn check_token(&mut self, key: usize, token: Box<str>, room: Option<Box<str>>) {
        let Some(serial) = self.clients.get(key).map(|client| client.serial) else {
            return;
        };
        self.park_if_checking(key);
        let sent = self
            .token_checker
            .as_mut()
            .is_some_and(|checker| checker.submit(key, serial, token, room));
        if sent {
            return;
        }
        self.metrics.token_checks_busy += 1;
        debug!("{key}: token check refused, the queue is full");
        let now = super::chat_time(self.now);
        self.chat
            .token_checked(key, TokenCheck::Busy, now, &mut self.actions);
        self.resumable.push(key);
    }

    /// The waker fired: takes every verdict the thread has sent and carries each on for its connection, all in this
    /// turn, so that what they make the chat send to one member goes out in the turn's one write to it.
    pub(super) fn on_verdicts(&mut self) {
        let Some(checker) = &self.token_checker else {
            return;
        };
        checker.rearm();
        let mut now = None;
        while let Some(batch) = self
            .token_checker
            .as_mut()
            .and_then(TokenChecker::next_batch)
        {
            debug!("{} token verdict(s) in one batch", batch.len());
            for verdict in batch {
                self.metrics.token_checks += 1;
                self.metrics.token_check_work_us += verdict.work.as_micros() as u64;
                self.metrics
                    .token_check_latency
                    .observe(verdict.sent.elapsed());
                let key = verdict.key;
                let current = self
                    .clients
                    .get(key)
                    .is_some_and(|c| c.serial == verdict.serial)
                    && self
                        .parked
                        .get(&key)
                        .is_some_and(|p| p.serial == verdict.serial);
                if !current {
                    continue;
                }
                let now = *now.get_or_insert_with(|| super::chat_time(self.now));
                self.chat.token_checked(
                    key,
                    TokenCheck::Checked(verdict.checked),
                    now,
                    &mut self.actions,
                );
                self.apply_actions();
                self.resume(key);
            }
        }
    }

    /// The connections refused a check this turn (the queue was full): their held messages go to the chat.
    pub(super) fn resume_refused(&mut self) {
        for key in std::mem::take(&mut self.resumable) {
            self.resume(key);
        }
    }

    /// Hands `key`'s held messages to the chat in order, until one of them waits for a token check again or none
    /// is left; then the connection is read again.
    fn resume(&mut self, key: usize) {
        let mut now = None;
        loop {
            if self.chat.awaits_token_check(key) {
                return;
            }
            let Some(parked) = self.parked.get_mut(&key) else {
                return;
            };
            let Some(text) = parked.held.pop_front() else {
                self.unpark(key);
                if let Some(client) = self.clients.get(key) {
                    if client.flags.contains(Flags::MORE_TO_READ) {
                        self.unfinished_reads.push(key);
                    }
                }
                return;
            };
            parked.held_bytes -= text.len();
            self.incoming_bytes -= text.len();
            // Text after our Close is not acted on (RFC 6455 5.5.1), as in `on_frames`.
            let open = self.clients.get(key).is_some_and(
                |client| matches!(&client.phase, Phase::WebSocket { ws, .. } if ws.can_send()),
            );
            if open {
                let now = *now.get_or_insert_with(|| super::chat_time(self.now));
                self.chat.handle_text(key, &text, now, &mut self.actions);
                self.apply_actions();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(key: usize, room: Option<&str>) -> Job {
        Job {
            key,
            serial: 0,
            token: "not.a.token".into(),
            room: room.map(Box::from),
            sent: Instant::now(),
            overtaken: 0,
        }
    }

    fn queue_of(jobs: &[(usize, Option<&str>)]) -> VecDeque<Job> {
        jobs.iter().map(|&(key, room)| job(key, room)).collect()
    }

    /// The keys of the next group taken from `jobs`.
    fn next_group(jobs: &mut VecDeque<Job>) -> Vec<usize> {
        let mut group = Vec::new();
        take_group(jobs, &mut group, &mut Vec::new());
        group.iter().map(|job| job.key).collect()
    }

    fn keys(jobs: &VecDeque<Job>) -> Vec<usize> {
        jobs.iter().map(|job| job.key).collect()
    }

    #[test]
    fn the_oldest_request_goes_alone_when_nothing_else_waits_for_its_room() {
        let mut jobs = queue_of(&[(1, Some("a"))]);
        assert_eq!(next_group(&mut jobs), [1]);
        assert!(jobs.is_empty());
        let mut jobs = queue_of(&[(1, Some("a")), (2, Some("b")), (3, Some("c"))]);
        assert_eq!(next_group(&mut jobs), [1]);
        assert_eq!(keys(&jobs), [2, 3]);
        assert!(jobs.iter().all(|job| job.overtaken == 0));
    }

    #[test]
    fn the_requests_for_the_oldest_ones_room_go_with_it_in_order() {
        let mut jobs = queue_of(&[
            (1, Some("a")),
            (2, Some("b")),
            (3, Some("a")),
            (4, Some("c")),
            (5, Some("a")),
            (6, Some("b")),
        ]);
        assert_eq!(next_group(&mut jobs), [1, 3, 5]);
        assert_eq!(keys(&jobs), [2, 4, 6], "the others keep their order");
        let overtaken: Vec<u32> = jobs.iter().map(|job| job.overtaken).collect();
        assert_eq!(
            overtaken,
            [2, 1, 0],
            "each counts the requests taken from behind it"
        );
        assert_eq!(next_group(&mut jobs), [2, 6]);
    }

    #[test]
    fn requests_with_no_room_go_alone() {
        let mut jobs = queue_of(&[(1, None), (2, None), (3, Some("a"))]);
        assert_eq!(next_group(&mut jobs), [1]);
        assert_eq!(keys(&jobs), [2, 3]);
    }

    #[test]
    fn a_group_holds_at_most_max_group_requests() {
        let all: Vec<(usize, Option<&str>)> =
            (0..MAX_GROUP + 8).map(|key| (key, Some("a"))).collect();
        let mut jobs = queue_of(&all);
        assert_eq!(next_group(&mut jobs), (0..MAX_GROUP).collect::<Vec<_>>());
        assert_eq!(jobs.len(), 8);
    }

    #[test]
    fn a_request_overtaken_to_the_limit_ends_the_group_before_it_is_passed_again() {
        let mut jobs = queue_of(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("a")),
            (5, Some("a")),
        ]);
        jobs[2].overtaken = MAX_OVERTAKEN - 1;
        assert_eq!(next_group(&mut jobs), [1, 2, 4]);
        assert_eq!(keys(&jobs), [3, 5]);
        assert_eq!(jobs[0].overtaken, MAX_OVERTAKEN);
        assert_eq!(next_group(&mut jobs), [3], "at the limit, it is next");
    }

    #[test]
    fn in_a_storm_over_many_rooms_no_request_is_overtaken_more_than_the_bound() {
        // 20 rooms of 20 joiners, interleaved as a reconnect storm arrives, and one join into a quiet room second.
        let mut all: Vec<(usize, Option<String>)> =
            vec![(0, Some("room0".to_owned())), (1, Some("quiet".to_owned()))];
        all.extend((2..402).map(|key| (key, Some(format!("room{}", key % 20)))));
        let mut jobs: VecDeque<Job> = all
            .iter()
            .map(|(key, room)| job(*key, room.as_deref()))
            .collect();
        let mut order = Vec::new();
        let mut groups = 0;
        while !jobs.is_empty() {
            order.extend(next_group(&mut jobs));
            groups += 1;
            assert!(jobs.iter().all(|job| job.overtaken <= MAX_OVERTAKEN));
        }
        assert_eq!(order.len(), 402, "every request is answered once");
        for (position, key) in order.iter().enumerate() {
            let overtakers = order[..position]
                .iter()
                .filter(|&&other| other > *key)
                .count();
            assert!(
                overtakers <= MAX_OVERTAKEN as usize,
                "{key} was overtaken by {overtakers}"
            );
        }
        let quiet = order.iter().position(|&key| key == 1).expect("answered");
        assert!(
            quiet <= 1 + MAX_OVERTAKEN as usize,
            "the quiet room's join came {quiet}th"
        );
        assert!(
            groups < 402 / 4,
            "{groups} groups: the rooms' joins went together"
        );
    }

    /// A checker whose thread checks HS256 signatures, and the `Poll` its waker belongs to.
    fn checker(queue: usize) -> (TokenChecker, mio::Poll) {
        let poll = mio::Poll::new().expect("a poll");
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).expect("a waker"));
        let verifier = Verifier::hs256(b"0123456789abcdef0123456789abcdef").expect("a secret");
        let checker = TokenChecker::spawn(verifier, queue, waker).expect("the thread");
        (checker, poll)
    }

    fn batch_keys(checker: &TokenChecker) -> Vec<usize> {
        let batch = checker
            .verdicts
            .recv_timeout(Duration::from_secs(10))
            .expect("a batch of verdicts");
        batch.iter().map(|verdict| verdict.key).collect()
    }

    #[test]
    fn the_thread_answers_the_waiting_requests_for_a_room_in_one_batch() {
        let (checker, _poll) = checker(16);
        {
            // Queued while the thread cannot look, as a burst finds it busy.
            let mut waiting = checker.queue.lock();
            for (key, room) in [(1, "a"), (2, "b"), (3, "a"), (4, "a")] {
                waiting.jobs.push_back(job(key, Some(room)));
            }
        }
        checker.queue.ready.notify_one();
        assert_eq!(batch_keys(&checker), [1, 3, 4]);
        assert_eq!(batch_keys(&checker), [2]);
    }

    #[test]
    fn a_lone_request_is_answered_at_once_in_a_batch_of_its_own() {
        let (mut checker, _poll) = checker(16);
        assert!(checker.submit(7, 3, "not.a.token".into(), Some("a".into())));
        assert_eq!(checker.in_flight(), 1);
        let started = Instant::now();
        let batch = checker
            .verdicts
            .recv_timeout(Duration::from_secs(10))
            .expect("a verdict");
        assert_eq!(batch.len(), 1);
        assert_eq!((batch[0].key, batch[0].serial), (7, 3));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn tokens_past_the_byte_bound_are_refused_and_answered_ones_free_their_place() {
        let (mut checker, _poll) = checker(64);
        let huge = "x".repeat(MAX_QUEUED_TOKEN_BYTES + 1);
        assert!(!checker.submit(1, 0, huge.into(), None));
        for key in 0..8 {
            assert!(checker.submit(key, 0, "not.a.token".into(), Some("a".into())));
        }
        assert_eq!(checker.in_flight(), 8);
        let mut answered = 0;
        let started = Instant::now();
        while answered < 8 && started.elapsed() < Duration::from_secs(10) {
            match checker.next_batch() {
                Some(batch) => answered += batch.len(),
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        assert_eq!(answered, 8);
        assert_eq!((checker.in_flight(), checker.in_flight_bytes), (0, 0));
    }
}
