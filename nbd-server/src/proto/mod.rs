//! The sans-IO NBD protocol core: handshake state machine, request decoding and
//! validation, reply encoding. Nothing here touches a socket or an export's data;
//! `server` drives it, and the fuzz target drives it with arbitrary bytes.
//!
//! Section numbers in comments refer to `spec/nbd-protocol.md`.

pub mod consts;
pub mod error;
pub mod handshake;
pub mod meta;
pub(crate) mod options;
pub mod reply;
pub mod request;
pub mod validate;
mod wire;

pub use error::{NbdErrno, ProtocolError};
pub use handshake::{transmission_flags, BlockSizes, Handshake, Negotiated, Status, TlsMode};
pub use meta::MetaContext;
pub use reply::ReplyTo;
pub use request::{HeaderMode, RequestHeader};
pub use validate::{validate, Command, Session};
