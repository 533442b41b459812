//! thinly-engine: a userspace dm-thin.
//!
//! Layers, each using only the ones listed before it (see ARCHITECTURE.md):
//! `format` (bytes on disk) → `io` (block devices) → `block_manager` (validated, cached
//! metadata blocks) → `space_map` (reference counts) → `transaction_manager` (shadowing and
//! commit) → `btree` (the dm-thin node format) → `thin` (devices, snapshots, mappings).
//! Beside `thin`: `pool` (data file, volumes, provisioning, commit policy), `fsck` (the
//! metadata tools as library code, walking `btree`/`thin` read-only or building through
//! them) and `kernel` (the dm tables that let the Linux kernel activate a pool, for
//! `thinly kernel-script`).
//!
//! Only product lives here. Test-only devices and generators (`io::FaultyDevice`,
//! `io::FaultyData`, `fsck::gen`) exist only with the `testing` cargo feature (the engine's
//! own tests turn it on); the kernel lab and the bench harness are the development crate
//! `thinly-lab` (`lab/`), and what every test shares (finding real tools, the golden samples
//! in `tests/data/samples`) is `thinly-test-support` (`test-support/`).

/// Whether the pool keeps its statistics (counters, latency histograms): off only with
/// the `no-stats` cargo feature, which exists to measure what they cost (benches/stats.rs).
pub const STATS: bool = !cfg!(feature = "no-stats");

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
