//! The sans-IO RFC 6455 core: bytes in, events out; commands in, bytes out.
//!
//! Nothing here touches a socket or a clock, so every rule can be unit-tested and fuzzed on plain byte slices.
//! `handshake` is section 4 (the opening handshake), `frame` and `mask` are section 5.2-5.3 (framing),
//! `connection` is sections 5.4-7 (messages, control frames, closing), `utf8` is 8.1 and `close` is 7.4.
//! `extensions` is 9.1 (the `Sec-WebSocket-Extensions` grammar) and `deflate` is RFC 7692 (permessage-deflate).

pub mod close;
pub mod connection;
pub mod deflate;
pub mod extensions;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use connection::{
    encode_server_message, encode_server_message_compressed, encode_server_message_header,
    Connection, Event, Fed, FeedLimit, FeedLimits, Message, MessageKind, ProtocolError, Role,
    SendError, State,
};
