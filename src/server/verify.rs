//! Token signatures checked off the event loop: the verifier thread, its bounded queue, and the connections that
//! wait for a verdict, parked.
//!
//! With RS256 or ES256 (`config::TokenChecks`), a signature check is a public-key operation of 40-120 µs; done in
//! the loop, a burst of joins would stall every other connection for as long as the burst takes to check. So the
//! chat asks for the check (`Action::CheckToken`), this file hands the token to one `std::thread` through a bounded
//! channel, and the thread's verdict comes back through a channel and the loop's one `mio::Waker` (mio allows one
//! per `Poll`; the shutdown handle shares it). Until then the connection is parked: nothing more is read from its
//! socket, and the messages already read behind the one that waits are held here, so that the chat meets them in
//! the order they came. A verdict for a connection that ended meanwhile is dropped (its serial no longer matches).
//!
//! Owns the thread, the queue's bounds (entries, and bytes of tokens) and the held messages. It must not decide
//! what a verdict means (the chat does, in `Chat::token_checked`), and the thread touches no socket and no chat
//! state: it is given a token and gives back `Verifier::check_signature` of it. Nothing here logs a token.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
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

/// One token to check, for the connection with `key` and `serial`.
struct Job {
    key: usize,
    serial: u32,
    token: Box<str>,
    sent: Instant,
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

/// The loop's end of the verifier thread.
pub(super) struct TokenChecker {
    jobs: SyncSender<Job>,
    verdicts: Receiver<Verdict>,
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
        let (jobs, incoming) = mpsc::sync_channel::<Job>(queue.max(1));
        let (answers, verdicts) = mpsc::channel::<Verdict>();
        let woken = Arc::new(AtomicBool::new(false));
        let thread_woken = woken.clone();
        thread::Builder::new()
            .name("roomcast-verify".to_owned())
            .spawn(move || {
                // Ends when the server is dropped: its sender goes, and `recv` fails.
                while let Ok(job) = incoming.recv() {
                    let started = Instant::now();
                    let checked = verifier.check_signature(&job.token);
                    let verdict = Verdict {
                        key: job.key,
                        serial: job.serial,
                        checked,
                        sent: job.sent,
                        work: started.elapsed(),
                        token_len: job.token.len(),
                    };
                    if answers.send(verdict).is_err() {
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
            jobs,
            verdicts,
            woken,
            in_flight: 0,
            in_flight_bytes: 0,
        })
    }

    /// Queues `token` for the connection with `key` and `serial`; false if the queue is full (in entries or in
    /// bytes) or the thread is gone.
    fn submit(&mut self, key: usize, serial: u32, token: Box<str>) -> bool {
        let len = token.len();
        if self.in_flight_bytes + len > MAX_QUEUED_TOKEN_BYTES {
            return false;
        }
        let job = Job {
            key,
            serial,
            token,
            sent: Instant::now(),
        };
        match self.jobs.try_send(job) {
            Ok(()) => {
                self.in_flight += 1;
                self.in_flight_bytes += len;
                true
            }
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Disconnected(_)) => {
                warn!("the verifier thread is gone");
                false
            }
        }
    }

    /// The next verdict the thread has sent, if any. Call [`TokenChecker::rearm`] before taking a batch.
    fn next_verdict(&mut self) -> Option<Verdict> {
        let verdict = self.verdicts.try_recv().ok()?;
        self.in_flight = self.in_flight.saturating_sub(1);
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(verdict.token_len);
        Some(verdict)
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
    pub(super) fn check_token(&mut self, key: usize, token: Box<str>) {
        let Some(serial) = self.clients.get(key).map(|client| client.serial) else {
            return;
        };
        self.park_if_checking(key);
        let sent = self
            .token_checker
            .as_mut()
            .is_some_and(|checker| checker.submit(key, serial, token));
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

    /// The waker fired: takes every verdict the thread has sent and carries each on for its connection.
    pub(super) fn on_verdicts(&mut self) {
        let Some(checker) = &self.token_checker else {
            return;
        };
        checker.rearm();
        let mut now = None;
        while let Some(verdict) = self
            .token_checker
            .as_mut()
            .and_then(TokenChecker::next_verdict)
        {
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
