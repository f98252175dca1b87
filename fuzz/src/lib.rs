//! Shared pieces of the roomcast fuzz targets and of the seed generator (`seeds.rs`).
//!
//! Owns the input grammars: how a fuzz input is read as a chunking plan plus a byte stream (`raw`), the
//! structured operation sequences of the `connection`, `deflate_connection` and `chat_message` targets
//! (`conn_ops`, `deflate_ops`, `chat_ops`), the layouts of the `extensions` and `inflate` targets
//! (`extensions_input`, `inflate_input`), the chunker that turns a plan into read sizes (`chunks`), and the
//! reference reading of a client's byte stream that the `connection` target compares the real connection with
//! (`reference`). Every grammar has an encoder next to its decoder, so the seed generator writes inputs that
//! decode to exactly the operations it means; `cargo test` in this crate checks each encoder against its decoder.

pub mod bytes;
pub mod chat_ops;
pub mod chunks;
pub mod conn_ops;
pub mod deflate_ops;
pub mod extensions_input;
pub mod inflate_input;
pub mod raw;
pub mod reference;
