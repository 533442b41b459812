//! Thin metadata: the analogue of the kernel's dm-thin-metadata.
//!
//! The whole on-disk picture (spec §0, §3–§6):
//!
//! ```text
//! block 0: superblock ── time, trans_id, flags, held_root ──────────────► [metadata snapshot copy]
//!   │                                                                        (its two roots, shared)
//!   ├── data_mapping_root ─► top-level tree: dev id → root of that device's bottom tree
//!   │                          bottom tree: virtual block → (data block << 24 | time)
//!   ├── device_details_root ► details tree: dev id → {mapped_blocks, transaction_id,
//!   │                                                  creation_time, snapshotted_time}
//!   ├── metadata sm root ──► index block ─► bitmaps;  overflow tree (counts ≥ 3)
//!   └── data sm root ──────► index tree ──► bitmaps;  overflow tree
//! ```
//!
//! A snapshot shares its origin's bottom tree by taking one more reference on its root and
//! bumping `time`: O(1) whatever the size of the origin or the depth of the chain. A write
//! to a mapping older than the device's `snapshotted_time` must not touch the data block in
//! place (spec §6.4); the pool breaks the sharing. Device details are kept in memory and
//! written into the details tree at commit (spec §6.5 step 1).
//!
//! `ThinMetadata` is single-threaded; the pool serialises access to it.

mod changes;
mod check;
mod device;
mod mapping;
mod metadata;
mod snapshot;
mod usage;

pub use changes::Changes;
pub use check::{check, CheckOptions, Report};
pub use mapping::{Mapping, Run, RunDetail};
pub use metadata::{OpenOptions, Status, ThinMetadata};
pub use snapshot::HeldSnapshot;

use crate::btree::ValueKind;
use crate::format::thin::DEVICE_DETAILS_SIZE;

/// The details tree's values.
pub const DETAILS: ValueKind = ValueKind::Plain { size: DEVICE_DETAILS_SIZE };
/// The top-level mapping tree's values.
pub const TOP: ValueKind = ValueKind::SubtreeRoot;
/// The bottom-level mapping trees' values.
pub const BOTTOM: ValueKind = ValueKind::BlockTime;
