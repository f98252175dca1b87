//! One Redis connection without the connection: commands in, bytes out; bytes in, tagged replies and pub/sub
//! events out.
//!
//! A `RedisLink` owns the bytes waiting to be written, the bytes read but not yet a whole reply, and a FIFO of
//! what each command sent is waiting for, each with the caller's tag (any type `T`). Redis answers the commands
//! of one connection in the order it received them, so the first reply belongs to the oldest entry: that is all
//! the pairing there is, and it is what lets the caller pipeline
//! (<https://redis.io/docs/latest/develop/use/pipelining/>). Replies are decoded by the `redis-protocol` crate
//! (RESP2); nothing here parses RESP by hand. Commands, arrays of bulk strings, are written here (`encode_command`),
//! checked against the crate's encoder in the tests.
//!
//! It also owns the two things that change what a frame means: the handshake (`AUTH`, `SELECT`,
//! `CLIENT SETNAME`, `SCRIPT LOAD` of the scripts it is given, each checked before the link is ready), and
//! subscriber mode, entered at the first subscription confirmation, after which `message` and `pmessage` arrays are
//! pushes, not replies (a subscribed RESP2 connection receives nothing else but confirmations, `PING` replies and
//! errors). A script call that comes back `NOSCRIPT` is sent again as `EVAL` here, so its tag still gets one reply;
//! that second call runs after whatever was pipelined behind the first, so a caller that needs two calls to run in
//! the order it queued them must not rely on the fallback for that. The handshake loads every script, so only a
//! `SCRIPT FLUSH` on a live connection gets that far.
//!
//! It must not touch a socket, a clock or a timer: the server's `redis.rs` reads and writes, decides when a
//! connection is dead, and then takes the tags that will never be answered with `into_unanswered`.

use std::collections::VecDeque;
use std::fmt;

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;

use super::script::{is_noscript, Script, ScriptCall};
use super::url::RedisUrl;

/// The most bytes one reply may take by default while it arrives; a longer one fails the link
/// (`LinkError::ReplyTooLarge`) instead of growing the buffer without end.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// A read buffer grown past this is freed once it is empty again.
const KEPT_INPUT_CAPACITY: usize = 64 * 1024;

/// One reply from Redis: a RESP2 frame, with helpers for the shapes commands answer with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply(OwnedFrame);

impl Reply {
    /// The frame as decoded.
    pub fn frame(&self) -> &OwnedFrame {
        &self.0
    }

    /// The frame, by value.
    pub fn into_frame(self) -> OwnedFrame {
        self.0
    }

    /// The text of an error reply (`-ERR ...`, `-NOSCRIPT ...`), or `None` for any other reply.
    pub fn error(&self) -> Option<&str> {
        match &self.0 {
            OwnedFrame::Error(message) => Some(message),
            _ => None,
        }
    }

    /// True for an error reply.
    pub fn is_error(&self) -> bool {
        self.error().is_some()
    }

    /// The value of an integer reply (`:42`).
    pub fn as_int(&self) -> Option<i64> {
        match &self.0 {
            OwnedFrame::Integer(value) => Some(*value),
            _ => None,
        }
    }

    /// The bytes of a bulk string (`$3 abc`) or a simple string (`+OK`).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.0 {
            OwnedFrame::BulkString(bytes) | OwnedFrame::SimpleString(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// The elements of an array reply.
    pub fn as_array(&self) -> Option<&[OwnedFrame]> {
        match &self.0 {
            OwnedFrame::Array(items) => Some(items),
            _ => None,
        }
    }

    /// True for a nil bulk string or nil array (`$-1`, `*-1`).
    pub fn is_nil(&self) -> bool {
        self.0 == OwnedFrame::Null
    }

    /// True for `+OK`.
    pub fn is_ok(&self) -> bool {
        matches!(&self.0, OwnedFrame::SimpleString(s) if s == b"OK")
    }
}

impl From<OwnedFrame> for Reply {
    fn from(frame: OwnedFrame) -> Reply {
        Reply(frame)
    }
}

/// What a new connection says before anything else, and what it must hear back before it is ready.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Handshake {
    /// `AUTH [user] password` when set.
    pub password: Option<String>,
    /// The ACL user for `AUTH` (only with a password).
    pub username: Option<String>,
    /// `SELECT db` when not 0.
    pub db: u32,
    /// `CLIENT SETNAME name` when set, so `CLIENT LIST` shows which node a connection is.
    pub client_name: Option<String>,
    /// Each is sent as `SCRIPT LOAD`, and Redis must answer with its SHA1.
    pub scripts: Vec<Script>,
}

impl Handshake {
    /// The login and database of `url`, with `client_name`; no scripts.
    pub fn new(url: &RedisUrl, client_name: impl Into<String>) -> Handshake {
        Handshake {
            password: url.password().map(str::to_owned),
            username: url.username().map(str::to_owned),
            db: url.db(),
            client_name: Some(client_name.into()),
            scripts: Vec::new(),
        }
    }

    /// The same handshake, also loading `script`.
    pub fn with_script(mut self, script: Script) -> Handshake {
        self.scripts.push(script);
        self
    }
}

/// The password stays out of logs.
impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("username", &self.username)
            .field("db", &self.db)
            .field("client_name", &self.client_name)
            .field("scripts", &self.scripts)
            .finish()
    }
}

/// A channel subscription (`SUBSCRIBE`) or a pattern subscription (`PSUBSCRIBE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscription {
    /// `SUBSCRIBE` / `UNSUBSCRIBE`: one channel by name.
    Channel,
    /// `PSUBSCRIBE` / `PUNSUBSCRIBE`: every channel matching a glob pattern.
    Pattern,
}

/// What `feed` decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent<T> {
    /// The reply to the command queued with `tag`. Error replies (`-ERR ...`) are replies too.
    Reply {
        /// The tag the command was queued with.
        tag: T,
        /// What Redis answered.
        reply: Reply,
    },
    /// A message published to a channel this link subscribed to.
    Message {
        /// The channel.
        channel: Vec<u8>,
        /// What was published.
        payload: Vec<u8>,
    },
    /// A message published to a channel that matches a pattern this link subscribed to.
    PatternMessage {
        /// The pattern that matched.
        pattern: Vec<u8>,
        /// The channel it was published to.
        channel: Vec<u8>,
        /// What was published.
        payload: Vec<u8>,
    },
    /// Redis confirmed one channel or pattern of a (P)SUBSCRIBE.
    Subscribed {
        /// Channel or pattern.
        kind: Subscription,
        /// Its name.
        channel: Vec<u8>,
        /// How many subscriptions the connection now has, of both kinds.
        count: i64,
    },
    /// Redis confirmed one channel or pattern of a (P)UNSUBSCRIBE.
    Unsubscribed {
        /// Channel or pattern.
        kind: Subscription,
        /// Its name.
        channel: Vec<u8>,
        /// How many subscriptions the connection has left; at 0 it is an ordinary connection again.
        count: i64,
    },
    /// Redis refused a (P)(UN)SUBSCRIBE with an error (an ACL that denies the channel, say).
    SubscriptionRefused {
        /// Channel or pattern.
        kind: Subscription,
        /// The error text.
        message: String,
    },
}

/// Why a link cannot go on: the connection behind it must be dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// The bytes are not RESP2 (the decoder's words).
    Malformed(String),
    /// A reply longer than the link's limit is arriving.
    ReplyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A reply arrived when no command was waiting for one, or a confirmation no subscription asked for.
    UnexpectedReply,
    /// Redis refused a step of the handshake (a wrong password, a database that does not exist).
    Handshake {
        /// The command refused: `AUTH`, `SELECT`, `CLIENT SETNAME` or `SCRIPT LOAD`.
        command: &'static str,
        /// What Redis said, or what it answered instead of what was expected.
        message: String,
    },
    /// The crate could not encode a command (it sizes the buffer itself, so this is not expected).
    Encode(String),
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Malformed(detail) => write!(f, "malformed reply from Redis: {detail}"),
            LinkError::ReplyTooLarge { limit } => {
                write!(f, "a reply from Redis is longer than {limit} bytes")
            }
            LinkError::UnexpectedReply => {
                f.write_str("Redis sent a reply no command was waiting for")
            }
            LinkError::Handshake { command, message } => {
                write!(f, "Redis refused {command}: {message}")
            }
            LinkError::Encode(detail) => write!(f, "cannot encode a Redis command: {detail}"),
        }
    }
}

impl std::error::Error for LinkError {}

/// What one entry of the FIFO is waiting for.
#[derive(Debug)]
enum Awaiting<T> {
    /// A handshake step's reply, checked here.
    Handshake(Step),
    /// A command's reply, handed to the caller with its tag.
    Reply(T),
    /// An `EVALSHA`'s reply; on `NOSCRIPT` the call goes out again as `EVAL`.
    Script(T, Box<ScriptCall>),
    /// The confirmations of a (P)(UN)SUBSCRIBE: one per channel named.
    Confirmations {
        /// What was (un)subscribed.
        kind: Subscription,
        /// `SUBSCRIBE`/`PSUBSCRIBE` rather than their `UN` forms.
        subscribing: bool,
        /// Confirmations still to come.
        remaining: usize,
    },
}

/// A handshake command, for checking its reply.
#[derive(Debug)]
enum Step {
    Auth,
    Select,
    SetName,
    ScriptLoad(Script),
}

impl Step {
    fn command(&self) -> &'static str {
        match self {
            Step::Auth => "AUTH",
            Step::Select => "SELECT",
            Step::SetName => "CLIENT SETNAME",
            Step::ScriptLoad(_) => "SCRIPT LOAD",
        }
    }

    /// `+OK` for the first three, the script's SHA1 for `SCRIPT LOAD`.
    fn check(&self, reply: &OwnedFrame) -> Result<(), LinkError> {
        let accepted = match (self, reply) {
            (Step::ScriptLoad(script), OwnedFrame::BulkString(sha)) => {
                sha.as_slice() == script.sha().as_bytes()
            }
            (Step::ScriptLoad(_), _) => false,
            (_, OwnedFrame::SimpleString(ok)) => ok == b"OK",
            _ => false,
        };
        if accepted {
            return Ok(());
        }
        let message = match reply {
            OwnedFrame::Error(message) => message.clone(),
            other => format!("unexpected reply {other:?}"),
        };
        Err(LinkError::Handshake {
            command: self.command(),
            message,
        })
    }
}

/// One Redis connection's protocol state. `T` is the caller's tag for each command.
#[derive(Debug)]
pub struct RedisLink<T> {
    /// Encoded commands; `output[written..]` is still to be written.
    output: Vec<u8>,
    written: usize,
    /// Bytes read that do not yet make a whole frame.
    input: Vec<u8>,
    awaiting: VecDeque<Awaiting<T>>,
    /// Handshake replies still to come; the link is ready at 0.
    handshake_left: usize,
    /// Subscriptions the connection holds (Redis's count from the last confirmation); above 0, `message` and
    /// `pmessage` arrays are pushes.
    subscriptions: i64,
    max_reply_bytes: usize,
    script_fallbacks: u64,
}

impl<T> RedisLink<T> {
    /// A link for a new connection, with the handshake already queued as its first commands.
    pub fn new(handshake: &Handshake) -> RedisLink<T> {
        let mut link = RedisLink {
            output: Vec::new(),
            written: 0,
            input: Vec::new(),
            awaiting: VecDeque::new(),
            handshake_left: 0,
            subscriptions: 0,
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
            script_fallbacks: 0,
        };
        link.queue_handshake(handshake);
        link
    }

    /// The same link with another limit on how long one reply may be while it arrives.
    pub fn with_max_reply_bytes(mut self, limit: usize) -> RedisLink<T> {
        self.max_reply_bytes = limit;
        self
    }

    fn queue_handshake(&mut self, handshake: &Handshake) {
        let mut steps: Vec<(Vec<&[u8]>, Step)> = Vec::new();
        // AUTH [username] password (https://redis.io/commands/auth): the one-word form logs in as `default`.
        if let Some(password) = &handshake.password {
            let mut words: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &handshake.username {
                words.push(user.as_bytes());
            }
            words.push(password.as_bytes());
            steps.push((words, Step::Auth));
        }
        let db = handshake.db.to_string();
        if handshake.db != 0 {
            steps.push((vec![b"SELECT", db.as_bytes()], Step::Select));
        }
        // CLIENT SETNAME answers +OK; a name may not hold spaces (https://redis.io/commands/client-setname).
        if let Some(name) = &handshake.client_name {
            steps.push((vec![b"CLIENT", b"SETNAME", name.as_bytes()], Step::SetName));
        }
        // SCRIPT LOAD answers the script's SHA1 as a bulk string (https://redis.io/commands/script-load).
        for script in &handshake.scripts {
            steps.push((
                vec![b"SCRIPT", b"LOAD", script.source().as_bytes()],
                Step::ScriptLoad(*script),
            ));
        }
        for (words, step) in steps {
            // A handshake that cannot be encoded is refused at its first reply, which never comes: `Encode` is not
            // expected (the buffer is sized by the crate), so the link just stays not ready.
            if encode_command(&mut self.output, &[&words]).is_ok() {
                self.awaiting.push_back(Awaiting::Handshake(step));
                self.handshake_left += 1;
            }
        }
    }

    /// True once every handshake reply arrived and was what it should be.
    pub fn is_ready(&self) -> bool {
        self.handshake_left == 0
    }

    /// True while the connection holds subscriptions (it receives pushes, and only subscription commands and
    /// `PING` may be sent on it).
    pub fn is_subscribed(&self) -> bool {
        self.subscriptions > 0
    }

    /// Commands sent or queued whose replies have not arrived, handshake and subscriptions included.
    pub fn awaiting_replies(&self) -> usize {
        self.awaiting.len()
    }

    /// How many script calls came back `NOSCRIPT` and were sent again as `EVAL`.
    pub fn script_fallbacks(&self) -> u64 {
        self.script_fallbacks
    }

    /// Queues one command (an array of bulk strings, such as `[b"GET", key]`); its reply will come back from
    /// `feed` with `tag`. Commands may be queued before the link is ready: they follow the handshake.
    pub fn queue(&mut self, words: &[&[u8]], tag: T) -> Result<(), LinkError> {
        encode_command(&mut self.output, &[words])?;
        self.awaiting.push_back(Awaiting::Reply(tag));
        Ok(())
    }

    /// Queues a call of `script` as `EVALSHA sha numkeys keys... args...`; if Redis no longer knows the script,
    /// the call is sent again as `EVAL` and `tag` gets that reply instead.
    pub fn queue_script(
        &mut self,
        script: &Script,
        keys: &[&[u8]],
        args: &[&[u8]],
        tag: T,
    ) -> Result<(), LinkError> {
        let mut digits = [0u8; 20];
        let numkeys = decimal(keys.len(), &mut digits);
        encode_command(
            &mut self.output,
            &[&[b"EVALSHA", script.sha().as_bytes(), numkeys], keys, args],
        )?;
        // EVALSHA sha1 numkeys key... arg... (https://redis.io/commands/evalsha).
        let call = ScriptCall::new(*script, keys, args);
        self.awaiting
            .push_back(Awaiting::Script(tag, Box::new(call)));
        Ok(())
    }

    /// Sends a call that came back `NOSCRIPT` again as `EVAL source numkeys keys... args...`, which also puts the
    /// script back in the cache (<https://redis.io/docs/latest/develop/reference/errors/common/noscript/>).
    fn resend_as_eval(&mut self, tag: T, call: &ScriptCall) -> Result<(), LinkError> {
        let mut digits = [0u8; 20];
        let numkeys = decimal(call.key_count(), &mut digits);
        let words: Vec<&[u8]> = call.words().collect();
        encode_command(
            &mut self.output,
            &[
                &[b"EVAL", call.script().source().as_bytes(), numkeys],
                &words,
            ],
        )?;
        self.awaiting.push_back(Awaiting::Reply(tag));
        self.script_fallbacks += 1;
        Ok(())
    }

    /// Subscribes to `channels`; each confirmation comes back as `LinkEvent::Subscribed`, and from the first one
    /// on, messages as `LinkEvent::Message`. Nothing is sent for an empty list.
    pub fn subscribe(&mut self, channels: &[&[u8]]) -> Result<(), LinkError> {
        self.queue_subscription(b"SUBSCRIBE", Subscription::Channel, true, channels)
    }

    /// Subscribes to every channel matching one of `patterns` (`LinkEvent::PatternMessage`).
    pub fn psubscribe(&mut self, patterns: &[&[u8]]) -> Result<(), LinkError> {
        self.queue_subscription(b"PSUBSCRIBE", Subscription::Pattern, true, patterns)
    }

    /// Unsubscribes from `channels` (never from all at once: each confirmation must be counted).
    pub fn unsubscribe(&mut self, channels: &[&[u8]]) -> Result<(), LinkError> {
        self.queue_subscription(b"UNSUBSCRIBE", Subscription::Channel, false, channels)
    }

    /// Unsubscribes from `patterns`.
    pub fn punsubscribe(&mut self, patterns: &[&[u8]]) -> Result<(), LinkError> {
        self.queue_subscription(b"PUNSUBSCRIBE", Subscription::Pattern, false, patterns)
    }

    /// Redis confirms each channel or pattern of a (P)(UN)SUBSCRIBE with its own pushed array instead of one
    /// reply (<https://redis.io/commands/subscribe>), so the FIFO entry counts them down.
    fn queue_subscription(
        &mut self,
        command: &'static [u8],
        kind: Subscription,
        subscribing: bool,
        names: &[&[u8]],
    ) -> Result<(), LinkError> {
        if names.is_empty() {
            return Ok(());
        }
        encode_command(&mut self.output, &[&[command], names])?;
        self.awaiting.push_back(Awaiting::Confirmations {
            kind,
            subscribing,
            remaining: names.len(),
        });
        Ok(())
    }

    /// The bytes still to be written, oldest first.
    pub fn pending_output(&self) -> &[u8] {
        self.output.get(self.written..).unwrap_or_default()
    }

    /// True if there is anything to write.
    pub fn has_output(&self) -> bool {
        self.written < self.output.len()
    }

    /// `n` bytes of `pending_output` were written.
    pub fn consumed(&mut self, n: usize) {
        self.written = (self.written + n).min(self.output.len());
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
        }
    }

    /// Decodes every whole frame in what was read so far plus `bytes`, pushing what each means onto `events`;
    /// a partial frame is kept for the next call. An error means the connection must be dropped (events pushed
    /// before it stand).
    pub fn feed(&mut self, bytes: &[u8], events: &mut Vec<LinkEvent<T>>) -> Result<(), LinkError> {
        if self.input.is_empty() {
            // The common case: decode straight from the caller's buffer and keep only a partial frame.
            let used = self.decode_frames(bytes, events)?;
            self.input
                .extend_from_slice(bytes.get(used..).unwrap_or_default());
        } else {
            self.input.extend_from_slice(bytes);
            let input = std::mem::take(&mut self.input);
            let decoded = self.decode_frames(&input, events);
            self.input = input;
            let used = decoded?;
            self.input.drain(..used.min(self.input.len()));
            if self.input.is_empty() && self.input.capacity() > KEPT_INPUT_CAPACITY {
                self.input = Vec::new();
            }
        }
        if self.input.len() > self.max_reply_bytes {
            return Err(LinkError::ReplyTooLarge {
                limit: self.max_reply_bytes,
            });
        }
        Ok(())
    }

    /// Decodes frames from the front of `buf` until one is incomplete; returns the bytes used.
    fn decode_frames(
        &mut self,
        buf: &[u8],
        events: &mut Vec<LinkEvent<T>>,
    ) -> Result<usize, LinkError> {
        let mut used = 0;
        while let Some(rest) = buf.get(used..).filter(|rest| !rest.is_empty()) {
            match decode(rest) {
                Ok(Some((frame, len))) if len > 0 => {
                    used += len;
                    self.on_frame(frame, events)?;
                }
                Ok(_) => break,
                Err(e) => return Err(LinkError::Malformed(e.to_string())),
            }
        }
        Ok(used)
    }

    /// One whole frame: a push, or the reply to the oldest entry of the FIFO.
    fn on_frame(
        &mut self,
        frame: OwnedFrame,
        events: &mut Vec<LinkEvent<T>>,
    ) -> Result<(), LinkError> {
        let Some(frame) = self.on_push(frame, events)? else {
            return Ok(());
        };
        let Some(waiting) = self.awaiting.pop_front() else {
            return Err(LinkError::UnexpectedReply);
        };
        match waiting {
            Awaiting::Handshake(step) => {
                step.check(&frame)?;
                self.handshake_left = self.handshake_left.saturating_sub(1);
            }
            Awaiting::Reply(tag) => events.push(LinkEvent::Reply {
                tag,
                reply: Reply(frame),
            }),
            Awaiting::Script(tag, call) => {
                let reply = Reply(frame);
                if is_noscript(&reply) {
                    self.resend_as_eval(tag, &call)?;
                } else {
                    events.push(LinkEvent::Reply { tag, reply });
                }
            }
            Awaiting::Confirmations { kind, .. } => match frame {
                OwnedFrame::Error(message) => {
                    events.push(LinkEvent::SubscriptionRefused { kind, message })
                }
                _ => return Err(LinkError::UnexpectedReply),
            },
        }
        Ok(())
    }

    /// Takes a pushed message or a subscription confirmation off the stream; gives any other frame back.
    fn on_push(
        &mut self,
        frame: OwnedFrame,
        events: &mut Vec<LinkEvent<T>>,
    ) -> Result<Option<OwnedFrame>, LinkError> {
        let OwnedFrame::Array(items) = &frame else {
            return Ok(Some(frame));
        };
        let Some(OwnedFrame::BulkString(word)) = items.first() else {
            return Ok(Some(frame));
        };
        let confirmation = match word.as_slice() {
            b"message" if self.is_subscribed() && items.len() == 3 => {
                let [_, channel, payload] = take_bulks(frame)?;
                events.push(LinkEvent::Message { channel, payload });
                return Ok(None);
            }
            b"pmessage" if self.is_subscribed() && items.len() == 4 => {
                let [_, pattern, channel, payload] = take_bulks(frame)?;
                events.push(LinkEvent::PatternMessage {
                    pattern,
                    channel,
                    payload,
                });
                return Ok(None);
            }
            b"subscribe" => (Subscription::Channel, true),
            b"psubscribe" => (Subscription::Pattern, true),
            b"unsubscribe" => (Subscription::Channel, false),
            b"punsubscribe" => (Subscription::Pattern, false),
            _ => return Ok(Some(frame)),
        };
        let (kind, subscribed) = confirmation;
        match self.awaiting.front_mut() {
            Some(Awaiting::Confirmations {
                kind: expected,
                subscribing,
                remaining,
            }) if *expected == kind && *subscribing == subscribed && items.len() == 3 => {
                *remaining = remaining.saturating_sub(1);
                if *remaining == 0 {
                    self.awaiting.pop_front();
                }
            }
            _ => return Ok(Some(frame)),
        }
        let OwnedFrame::Array(items) = frame else {
            return Err(LinkError::UnexpectedReply);
        };
        let mut items = items.into_iter().skip(1);
        let channel = match items.next() {
            Some(OwnedFrame::BulkString(name)) => name,
            _ => return Err(LinkError::UnexpectedReply),
        };
        let Some(OwnedFrame::Integer(count)) = items.next() else {
            return Err(LinkError::UnexpectedReply);
        };
        self.subscriptions = count;
        events.push(if subscribed {
            LinkEvent::Subscribed {
                kind,
                channel,
                count,
            }
        } else {
            LinkEvent::Unsubscribed {
                kind,
                channel,
                count,
            }
        });
        Ok(None)
    }

    /// The connection is gone: the tags of every command that will now never be answered, oldest first (the
    /// handshake and subscriptions have no tags). A new connection gets a new link.
    pub fn into_unanswered(self) -> impl Iterator<Item = T> {
        self.awaiting
            .into_iter()
            .filter_map(|waiting| match waiting {
                Awaiting::Reply(tag) | Awaiting::Script(tag, _) => Some(tag),
                Awaiting::Handshake(_) | Awaiting::Confirmations { .. } => None,
            })
    }
}

/// The `N` bulk strings of an array of `N` bulk strings (a pushed message), moved out without copying.
fn take_bulks<const N: usize>(frame: OwnedFrame) -> Result<[Vec<u8>; N], LinkError> {
    let OwnedFrame::Array(items) = frame else {
        return Err(LinkError::UnexpectedReply);
    };
    let bulks: Vec<Vec<u8>> = items
        .into_iter()
        .map(|item| match item {
            OwnedFrame::BulkString(bytes) => Ok(bytes),
            _ => Err(LinkError::UnexpectedReply),
        })
        .collect::<Result<_, _>>()?;
    bulks.try_into().map_err(|_| LinkError::UnexpectedReply)
}

/// Appends one command, the words of `parts` in order, as a RESP2 array of bulk strings (the only form Redis
/// takes commands in): `*<count>\r\n`, then `$<length>\r\n<bytes>\r\n` for each word
/// (<https://redis.io/docs/latest/develop/reference/protocol-spec/#arrays>). Written here rather than by the crate's
/// encoder, which sizes every word with a floating-point `log10` twice (to size the buffer, then to check it): that
/// was a measurable part of a node's work per published message (docs/benchmarks.md). A test checks that both
/// encodings are the same bytes; replies are still decoded by the crate.
fn encode_command(out: &mut Vec<u8>, parts: &[&[&[u8]]]) -> Result<(), LinkError> {
    let words = || parts.iter().flat_map(|part| part.iter());
    let count: usize = parts.iter().map(|part| part.len()).sum();
    // Each word's header and trailer take at most 1 + 20 + 2 + 2 bytes.
    out.reserve(25 + words().map(|word| word.len() + 25).sum::<usize>());
    let mut digits = [0u8; 20];
    out.push(b'*');
    out.extend_from_slice(decimal(count, &mut digits));
    out.extend_from_slice(b"\r\n");
    for word in words() {
        out.push(b'$');
        out.extend_from_slice(decimal(word.len(), &mut digits));
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(word);
        out.extend_from_slice(b"\r\n");
    }
    Ok(())
}

/// `n` in decimal ASCII, written into `digits`.
fn decimal(mut n: usize, digits: &mut [u8; 20]) -> &[u8] {
    // usize::MAX has 20 digits on a 64-bit target, so the buffer holds any usize.
    let mut start = digits.len();
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        start -= 1;
        if n == 0 {
            break;
        }
    }
    digits.get(start..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link with no handshake, ready at once.
    fn bare() -> RedisLink<u32> {
        RedisLink::new(&Handshake::default())
    }

    fn fed(link: &mut RedisLink<u32>, bytes: &[u8]) -> Vec<LinkEvent<u32>> {
        let mut events = Vec::new();
        link.feed(bytes, &mut events).expect("feed");
        events
    }

    fn reply(tag: u32, frame: OwnedFrame) -> LinkEvent<u32> {
        LinkEvent::Reply {
            tag,
            reply: Reply(frame),
        }
    }

    #[test]
    fn commands_are_encoded_as_the_crates_encoder_would() {
        use redis_protocol::resp2::encode::encode_borrowed;
        use redis_protocol::resp2::types::BorrowedFrame;
        let long = vec![b'x'; 12_345];
        let words: [&[u8]; 5] = [
            b"EVALSHA",
            b"",
            b"0123456789",
            &long,
            "\u{e9}t\u{e9}".as_bytes(),
        ];
        for count in 0..=words.len() {
            let mut ours = Vec::new();
            encode_command(&mut ours, &[&words[..count]]).unwrap();
            let frames: Vec<BorrowedFrame> = words[..count]
                .iter()
                .map(|w| BorrowedFrame::BulkString(w))
                .collect();
            let frame = BorrowedFrame::Array(&frames);
            let mut theirs = vec![0; frame.encode_len(false)];
            let written = encode_borrowed(&mut theirs, &frame, false).unwrap();
            theirs.truncate(written);
            assert_eq!(ours, theirs, "{count} words");
        }
    }

    #[test]
    fn a_command_is_encoded_as_an_array_of_bulk_strings() {
        let mut link = bare();
        link.queue(&[b"SET", b"k", b""], 1).unwrap();
        assert_eq!(
            link.pending_output(),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
        );
    }

    #[test]
    fn commands_with_many_words_are_encoded_whole() {
        let mut link = bare();
        let words: Vec<Vec<u8>> = (0..40).map(|i| format!("w{i}").into_bytes()).collect();
        let borrowed: Vec<&[u8]> = words.iter().map(Vec::as_slice).collect();
        link.queue(&borrowed, 1).unwrap();
        let (frame, len) = decode(link.pending_output()).unwrap().unwrap();
        assert_eq!(len, link.pending_output().len());
        let OwnedFrame::Array(items) = frame else {
            panic!("not an array")
        };
        assert_eq!(items.len(), 40);
        assert_eq!(items[39], OwnedFrame::BulkString(b"w39".to_vec()));
    }

    #[test]
    fn pipelined_replies_come_back_in_order_with_their_tags() {
        let mut link = bare();
        for tag in 1..=3 {
            link.queue(&[b"PING"], tag).unwrap();
        }
        let events = fed(&mut link, b"+PONG\r\n:7\r\n$-1\r\n");
        assert_eq!(
            events,
            [
                reply(1, OwnedFrame::SimpleString(b"PONG".to_vec())),
                reply(2, OwnedFrame::Integer(7)),
                reply(3, OwnedFrame::Null),
            ]
        );
        assert_eq!(link.awaiting_replies(), 0);
    }

    #[test]
    fn a_reply_split_across_reads_is_decoded_once_whole() {
        let whole = b"$11\r\nhello world\r\n";
        for cut in 1..whole.len() {
            let mut link = bare();
            link.queue(&[b"GET", b"k"], 9).unwrap();
            assert!(fed(&mut link, &whole[..cut]).is_empty(), "cut at {cut}");
            assert_eq!(
                fed(&mut link, &whole[cut..]),
                [reply(9, OwnedFrame::BulkString(b"hello world".to_vec()))]
            );
        }
    }

    #[test]
    fn output_is_consumed_as_it_is_written() {
        let mut link = bare();
        link.queue(&[b"PING"], 1).unwrap();
        let total = link.pending_output().len();
        link.consumed(3);
        assert_eq!(link.pending_output().len(), total - 3);
        link.consumed(total);
        assert!(!link.has_output());
        assert!(link.pending_output().is_empty());
    }

    #[test]
    fn error_replies_are_replies_with_their_text() {
        let mut link = bare();
        link.queue(&[b"INCR", b"k"], 4).unwrap();
        let events = fed(&mut link, b"-ERR value is not an integer\r\n");
        let [LinkEvent::Reply { tag: 4, reply }] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(reply.error(), Some("ERR value is not an integer"));
    }

    #[test]
    fn a_reply_nobody_waits_for_fails_the_link() {
        let mut link = bare();
        let mut events = Vec::new();
        assert_eq!(
            link.feed(b"+OK\r\n", &mut events),
            Err(LinkError::UnexpectedReply)
        );
    }

    #[test]
    fn bytes_that_are_not_resp_fail_the_link() {
        let mut link = bare();
        link.queue(&[b"PING"], 1).unwrap();
        let mut events = Vec::new();
        assert!(matches!(
            link.feed(b"?what\r\n", &mut events),
            Err(LinkError::Malformed(_))
        ));
    }

    #[test]
    fn a_reply_longer_than_the_limit_fails_the_link() {
        let mut link = bare().with_max_reply_bytes(16);
        link.queue(&[b"GET", b"k"], 1).unwrap();
        let mut events = Vec::new();
        assert_eq!(
            link.feed(b"$1000000\r\n0123456789abcdef", &mut events),
            Err(LinkError::ReplyTooLarge { limit: 16 })
        );
    }

    #[test]
    fn the_handshake_is_sent_first_and_checked() {
        let url: RedisUrl = "redis://app:pw@h/2".parse().unwrap();
        let mut link: RedisLink<u32> = RedisLink::new(&Handshake::new(&url, "roomcast-n1"));
        link.queue(&[b"PING"], 1).unwrap();
        let expected: Vec<u8> = [
            &b"*3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n$2\r\npw\r\n"[..],
            b"*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n",
            b"*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$11\r\nroomcast-n1\r\n",
            b"*1\r\n$4\r\nPING\r\n",
        ]
        .concat();
        assert_eq!(link.pending_output(), expected);
        assert!(!link.is_ready());
        assert_eq!(fed(&mut link, b"+OK\r\n+OK\r\n"), []);
        assert!(!link.is_ready());
        let events = fed(&mut link, b"+OK\r\n+PONG\r\n");
        assert!(link.is_ready());
        assert_eq!(
            events,
            [reply(1, OwnedFrame::SimpleString(b"PONG".to_vec()))]
        );
    }

    #[test]
    fn a_refused_handshake_step_fails_the_link_with_what_redis_said() {
        let url: RedisUrl = "redis://:wrong@h".parse().unwrap();
        let mut link: RedisLink<u32> = RedisLink::new(&Handshake::new(&url, "n"));
        let mut events = Vec::new();
        assert_eq!(
            link.feed(
                b"-WRONGPASS invalid username-password pair\r\n",
                &mut events
            ),
            Err(LinkError::Handshake {
                command: "AUTH",
                message: "WRONGPASS invalid username-password pair".into()
            })
        );
    }

    #[test]
    fn scripts_in_the_handshake_must_come_back_with_their_sha() {
        let script = Script::new("return 1");
        let handshake = Handshake::default().with_script(script);
        let mut ok: RedisLink<u32> = RedisLink::new(&handshake);
        let sha_reply = format!("$40\r\n{}\r\n", script.sha());
        assert_eq!(fed(&mut ok, sha_reply.as_bytes()), []);
        assert!(ok.is_ready());
        let mut wrong: RedisLink<u32> = RedisLink::new(&handshake);
        let mut events = Vec::new();
        assert!(matches!(
            wrong.feed(b"$3\r\nabc\r\n", &mut events),
            Err(LinkError::Handshake {
                command: "SCRIPT LOAD",
                ..
            })
        ));
    }

    #[test]
    fn a_script_call_is_sent_as_evalsha_with_its_key_count() {
        let script = Script::new("return 1");
        let mut link = bare();
        link.queue_script(&script, &[b"k"], &[b"a", b"b"], 1)
            .unwrap();
        let expected = format!(
            "*6\r\n$7\r\nEVALSHA\r\n$40\r\n{}\r\n$1\r\n1\r\n$1\r\nk\r\n$1\r\na\r\n$1\r\nb\r\n",
            script.sha()
        );
        assert_eq!(link.pending_output(), expected.as_bytes());
    }

    #[test]
    fn noscript_sends_the_call_again_as_eval_and_the_tag_gets_that_reply() {
        let script = Script::new("return 1");
        let mut link = bare();
        link.queue_script(&script, &[b"k"], &[b"a"], 5).unwrap();
        link.consumed(link.pending_output().len());
        assert_eq!(fed(&mut link, b"-NOSCRIPT No matching script.\r\n"), []);
        assert_eq!(
            link.pending_output(),
            b"*5\r\n$4\r\nEVAL\r\n$8\r\nreturn 1\r\n$1\r\n1\r\n$1\r\nk\r\n$1\r\na\r\n"
        );
        assert_eq!(link.script_fallbacks(), 1);
        assert_eq!(
            fed(&mut link, b":1\r\n"),
            [reply(5, OwnedFrame::Integer(1))]
        );
    }

    #[test]
    fn other_script_errors_are_the_callers_reply() {
        let mut link = bare();
        link.queue_script(&Script::new("x"), &[], &[], 2).unwrap();
        let events = fed(&mut link, b"-ERR user_script:1: oops\r\n");
        assert_eq!(
            events,
            [reply(
                2,
                OwnedFrame::Error("ERR user_script:1: oops".into())
            )]
        );
        assert_eq!(link.script_fallbacks(), 0);
    }

    #[test]
    fn subscribed_links_turn_messages_into_events() {
        let mut link = bare();
        link.subscribe(&[b"a", b"b"]).unwrap();
        link.queue(&[b"PING"], 7).unwrap();
        let events = fed(
            &mut link,
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n\
              *3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n\
              *3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n\
              *2\r\n$4\r\npong\r\n$0\r\n\r\n\
              *3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$0\r\n\r\n",
        );
        assert_eq!(
            events,
            [
                LinkEvent::Subscribed {
                    kind: Subscription::Channel,
                    channel: b"a".to_vec(),
                    count: 1
                },
                LinkEvent::Message {
                    channel: b"a".to_vec(),
                    payload: b"hi".to_vec()
                },
                LinkEvent::Subscribed {
                    kind: Subscription::Channel,
                    channel: b"b".to_vec(),
                    count: 2
                },
                reply(
                    7,
                    OwnedFrame::Array(vec![
                        OwnedFrame::BulkString(b"pong".to_vec()),
                        OwnedFrame::BulkString(Vec::new())
                    ])
                ),
                LinkEvent::Message {
                    channel: b"b".to_vec(),
                    payload: Vec::new()
                },
            ]
        );
        assert!(link.is_subscribed());
    }

    #[test]
    fn pattern_messages_name_their_pattern() {
        let mut link = bare();
        link.psubscribe(&[b"room.*"]).unwrap();
        let events = fed(
            &mut link,
            b"*3\r\n$10\r\npsubscribe\r\n$6\r\nroom.*\r\n:1\r\n\
              *4\r\n$8\r\npmessage\r\n$6\r\nroom.*\r\n$6\r\nroom.a\r\n$1\r\nx\r\n",
        );
        assert_eq!(
            events.last(),
            Some(&LinkEvent::PatternMessage {
                pattern: b"room.*".to_vec(),
                channel: b"room.a".to_vec(),
                payload: b"x".to_vec()
            })
        );
    }

    #[test]
    fn an_array_reply_that_looks_like_a_message_is_a_reply_before_subscribing() {
        let mut link = bare();
        link.queue(&[b"LRANGE", b"k", b"0", b"-1"], 3).unwrap();
        let bytes = b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n";
        let events = fed(&mut link, bytes);
        assert!(matches!(
            events.as_slice(),
            [LinkEvent::Reply { tag: 3, .. }]
        ));
    }

    #[test]
    fn unsubscribing_from_the_last_channel_leaves_subscriber_mode() {
        let mut link = bare();
        link.subscribe(&[b"a"]).unwrap();
        link.unsubscribe(&[b"a"]).unwrap();
        let events = fed(
            &mut link,
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n",
        );
        assert_eq!(events.len(), 2);
        assert!(!link.is_subscribed());
        assert_eq!(link.awaiting_replies(), 0);
    }

    #[test]
    fn an_unsubscribe_confirmation_while_a_subscribe_is_awaited_fails_the_link() {
        let mut link = bare();
        link.subscribe(&[b"a"]).unwrap();
        let mut events = Vec::new();
        assert_eq!(
            link.feed(
                b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n",
                &mut events
            ),
            Err(LinkError::UnexpectedReply)
        );
    }

    #[test]
    fn a_refused_subscription_is_an_event_not_a_failure() {
        let mut link = bare();
        link.subscribe(&[b"secret"]).unwrap();
        let events = fed(
            &mut link,
            b"-NOPERM no permissions to access the 'secret' channel\r\n",
        );
        assert!(matches!(
            events.as_slice(),
            [LinkEvent::SubscriptionRefused {
                kind: Subscription::Channel,
                ..
            }]
        ));
    }

    #[test]
    fn unanswered_tags_come_back_in_order_without_handshake_steps() {
        let url: RedisUrl = "redis://:pw@h".parse().unwrap();
        let mut link: RedisLink<u32> = RedisLink::new(&Handshake::new(&url, "n"));
        link.queue(&[b"PING"], 1).unwrap();
        link.queue_script(&Script::new("x"), &[], &[], 2).unwrap();
        link.subscribe(&[b"c"]).unwrap();
        link.queue(&[b"PING"], 3).unwrap();
        let mut events = Vec::new();
        link.feed(b"+OK\r\n+OK\r\n+PONG\r\n", &mut events).unwrap();
        assert_eq!(link.into_unanswered().collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn decimal_writes_plain_digits() {
        let mut digits = [0u8; 20];
        assert_eq!(decimal(0, &mut digits), b"0");
        assert_eq!(decimal(1234, &mut digits), b"1234");
        assert_eq!(
            decimal(usize::MAX, &mut digits),
            usize::MAX.to_string().as_bytes()
        );
    }
}
