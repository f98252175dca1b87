//! RFC 7692 permessage-deflate, sans-IO: the handshake negotiation and the per-message codec.
//!
//! `negotiate` turns a client's offers into the agreed `DeflateParams` (server) or checks a server's answer
//! (client); `codec` compresses and inflates message payloads and writes compressed server frames. Neither
//! touches a socket, a frame decoder or a connection: wiring them into `Connection` (RSV1 on incoming frames,
//! which messages to compress) is the caller's job.

pub mod codec;
pub mod negotiate;

pub use codec::{
    CompressError, InflateError, InflateStatus, MessageCompressor, MessageDecompressor, Progress,
};
pub use negotiate::{
    accept_server_answer, negotiate_server, AnswerError, DeflateParams, ServerDeflatePolicy,
    TakeoverPolicy, CLIENT_OFFER,
};
