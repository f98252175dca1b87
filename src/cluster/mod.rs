//! What lets several roomcast nodes share one Redis: the link to Redis, sans-IO like `protocol`.
//!
//! Nothing here touches a socket or a clock; the server's `redis.rs` drives these types from the mio loop (one
//! connection for commands, one for subscriptions), so the loop never blocks on Redis. RESP2 is encoded and
//! decoded by the `redis-protocol` crate.
//!
//! | file | what it owns |
//! | --- | --- |
//! | `url.rs` | the `--redis` URL: `redis://[user:password@]host[:port][/db]`, and its errors |
//! | `node.rs` | the `--node-id`: what a node's name may look like |
//! | `link.rs` | one connection's protocol state: queued commands, the FIFO of tags awaiting replies, the handshake, subscriber mode |
//! | `script.rs` | a Lua script: its SHA1, `EVALSHA`, and the `EVAL` fallback on `NOSCRIPT` |
//! | `keys.rs`, `*.lua` | the names of the keys and channels, and the scripts: publish a room's messages, join (a name and the room's state), release a name, a node's heartbeat, relay a DM, presence, recover a room's gap |
//! | `renewal.rs` | when the heartbeat runs and which names each call renews: spread over the interval in bounded batches |
//! | `backoff.rs` | when to try again after a connection failed: 100 ms doubling to 5 s, jittered |

pub mod backoff;
pub mod keys;
pub mod link;
pub mod node;
pub mod renewal;
pub mod script;
pub mod url;

pub use link::{Handshake, LinkError, LinkEvent, RedisLink, Reply, Subscription};
pub use node::NodeId;
pub use script::Script;
pub use url::RedisUrl;
