//! thinly-engine: a userspace dm-thin.
//!
//! Layers, each using only the ones listed before it (see ARCHITECTURE.md):
//! `format` (bytes on disk) → `io` (block devices) → `block_manager` (validated, cached
//! metadata blocks) → `space_map` (reference counts) → `transaction_manager` (shadowing and
//! commit) → `btree` (the dm-thin node format) → `thin` (devices, snapshots, mappings).

pub mod block_manager;
pub mod btree;
pub mod error;
pub mod format;
pub mod fsck;
pub mod io;
pub mod kernel;
pub mod limits;
pub mod pool;
pub mod recount;
pub mod space_map;
pub mod thin;
pub mod transaction_manager;
pub mod units;

pub use error::{Error, Result};
pub use units::{DataBlock, DevId, MetaBlock, VirtBlock};
