//! thinly-nbd: the NBD protocol core and server for thinly volumes.
//!
//! Module map (layers depend downward only):
//! - `limits`: every bound, with its reason.
//! - `proto`: the sans-IO protocol core — handshake state machine, request decoding
//!   and validation, reply encoding, errno mapping. No sockets, no storage.
//! - `access`: the access-policy seam (`AccessPolicy`, `Client`, `Access`) that the
//!   embedding server implements; the handshake enforces its answers.
//! - `export`: the storage seam (`Export`, `ExportRegistry`) and `ExportTable`.
//! - `mem_export`: `MemExport`, a sparse in-memory `Export` for tests and examples
//!   (only with the `testing` cargo feature, and in this crate's unit tests).
//! - `server`: listeners, connections, request dispatch, graceful shutdown.
//! - `fuzzing`: a whole-session driver over arbitrary bytes, for the fuzz target and
//!   the property tests (`testing` feature too: it serves a `MemExport`).
//!
//! The protocol reference is `spec/nbd-protocol.md`; comments cite its sections.

pub mod access;
pub mod export;
#[cfg(any(test, feature = "testing"))]
pub mod fuzzing;
pub mod limits;
#[cfg(any(test, feature = "testing"))]
pub mod mem_export;
pub mod proto;
pub mod server;

pub use access::{Access, AccessPolicy, Client, Peer, TlsIdentity};
pub use export::{Export, ExportRegistry, ExportTable, Extent, ZeroFlags};
#[cfg(any(test, feature = "testing"))]
pub use mem_export::MemExport;
pub use server::{ExportCloser, Server, ServerConfig, ServerHandle, Tls, TlsError, TlsSettings};
