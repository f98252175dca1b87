//! roomcast: a WebSocket chat server written from the bytes up.
//!
//! The layers, top to bottom: `server` (the only code that touches sockets: a single-threaded mio loop),
//! `http` (routing and plain HTTP responses), `protocol` (sans-IO RFC 6455), `chat` (the pure chat state
//! machine) and `cluster` (the sans-IO Redis link that lets several nodes share one Redis). Data flows down and
//! back up, never sideways.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod protocol;

pub mod auth;

pub mod chat;
pub mod cluster;
pub mod config;
pub mod http;
pub mod id_hash;
pub mod server;

pub use config::Config;
pub use server::{Server, ShutdownHandle};
