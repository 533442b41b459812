//! The metadata tools as library code. On binary metadata: [`check`] (thin_check),
//! [`dump`] (thin_dump, streaming into a [`MetadataVisitor`]), [`restore`] (thin_restore,
//! a visitor that bulk-builds trees with `btree::builder`), [`repair`] (thin_repair and
//! `thin_dump --repair`: salvage by scanning every block), [`ls`], [`delta`], [`rmap`] and
//! [`trim`]. The `thinly` binary (tools crate) only parses arguments and calls these.
//!
//! The tools' formats, as pure code (no metadata I/O): the intermediate
//! representation the dump/restore tools share ([`ir`]), its event stream and adapters
//! ([`stream`]), validation ([`validate`]), thin_dump's XML ([`xml`]) and human-readable
//! ([`human`]) formats, `thin_metadata_size`'s estimate ([`metadata_size`]) and a
//! deterministic generator of valid pools (`gen`) for tests and benchmarks, which exists only
//! with the `testing` cargo feature (and in the engine's unit tests).
//!
//! Invariants: readers never panic on input and keep memory bounded (the `MAX_*`
//! constants here and in `xml`); writers print byte-for-byte what Debian's
//! thin-provisioning-tools 0.9.0 prints for the same metadata. The tools walk `btree`/
//! `thin` and feed a [`MetadataVisitor`] (dump), or take one from [`read_xml`] (restore).

pub mod check;
pub mod delta;
pub mod dump;
pub mod error;
#[cfg(any(test, feature = "testing"))]
pub mod gen;
pub mod human;
pub mod ir;
pub mod ls;
pub mod metadata_size;
pub mod repair;
pub mod restore;
pub mod rmap;
pub mod stream;
pub mod trim;
pub mod validate;
pub mod xml;

#[cfg(test)]
mod tests;

pub use error::{Error, Result};
pub use ir::{Device, Item, Metadata, MetadataVisitor, Run, SharedDef, Superblock, ThinDevice};
pub use stream::{Coalesce, ExpandRefs, MetadataBuilder};
pub use validate::Validator;
pub use xml::{dump_writer, parse_xml, read_xml, to_xml_string, Dialect, XmlWriter};

/// Most runs all `<def>`s of one document may hold together: they are kept in memory to
/// expand `<ref>`s (16 M runs × 24 bytes ≈ 400 MiB at worst).
pub const MAX_DEF_RUNS: u64 = 16 << 20;
