//! RFC 7692 permessage-deflate, sans-IO: the handshake negotiation and the per-message codec.
//!
//! `negotiate` turns a client's offers into the agreed `DeflateParams` (server) or checks a server's answer
//! (client); `codec` compresses (zlib-rs, for a peer that keeps context) and inflates message payloads; `quick`
//! compresses short messages each on its own, for a server that shares one compressed frame among many peers;
//! `fixed` inflates such a message whole, without zlib-rs, when it can.
//! None of them touches a socket or a frame decoder: `Connection` wires them in.

pub mod codec;
pub mod fixed;
pub mod negotiate;
pub mod quick;
pub mod shared;
mod tables;

pub use codec::{
    CompressError, InflateError, InflateStatus, MessageCompressor, MessageDecompressor, Progress,
};
pub use negotiate::{
    accept_server_answer, negotiate_server, AnswerError, DeflateParams, ServerDeflatePolicy,
    TakeoverPolicy, CLIENT_OFFER,
};
pub use quick::QuickCompressor;
