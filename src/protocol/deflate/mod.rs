//! RFC 7692 permessage-deflate, sans-IO: the handshake negotiation and the per-message codec.
//!
//! `negotiate` turns a client's offers into the agreed `DeflateParams` (server) or checks a server's answer
//! (client). It touches no socket, frame decoder or connection.

pub mod negotiate;

pub use negotiate::{
    accept_server_answer, negotiate_server, AnswerError, DeflateParams, ServerDeflatePolicy,
    TakeoverPolicy, CLIENT_OFFER,
};
