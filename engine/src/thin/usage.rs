//! How many of a device's mapped blocks are its own: the `exclusive` figure of `thinly
//! list` (thin_ls's EXCLUSIVE), kept cheap on a live pool.
//!
//! Definition (the exact sharing test of spec §6.4, as `is_shared_exact`): a mapped block
//! is *exclusive* when every node on the path from the device's root to its leaf has
//! reference count 1 and its data block has reference count 1; every other mapped block is
//! *shared*. So `shared = mapped_blocks − exclusive`, and only `exclusive` is computed.
//!
//! Cost. An O(1) snapshot only takes a reference on the origin's root, so no per-block
//! counter can be kept in step with it; instead the count is computed by a walk that
//! descends only into nodes of count 1 (a node of count > 1 holds nothing exclusive, so its
//! whole subtree is skipped unread) and cached per device. The walk therefore reads the
//! device's *unshared* part of the tree only: O(1) right after a snapshot, O(blocks written
//! since) afterwards, O(mapped) for a device that shares nothing.
//!
//! Invalidation. A cached count stays exact while neither
//! - the device's own tree changes: every mapping edit and every creation ticks
//!   `edit_clock` into the device's `last_edit`; nor
//! - any block anywhere crosses between count 1 and count ≥ 2 (a snapshot taking its
//!   origin's root, a shared node or data block losing its last other holder, sharing
//!   being broken by copy-on-write): both space maps count such crossings
//!   (`nr_sharing_changes`), and their sum is the pool-wide *sharing epoch*.
//!
//! A count change that stays on one side of 1 (3 → 2, 1 → 0 of a block the device's tree
//! just dropped, 0 → 1 of a fresh allocation) cannot change which of another device's blocks
//! are exclusive. So writes to unshared volumes invalidate only the writer's count, and a
//! `list` of an idle pool is O(volumes) after the first. A `ThinMetadata` that aborts is
//! reopened from disk, cache included, so an epoch never repeats within one cache.

use super::metadata::ThinMetadata;
use crate::error::{Error, Result};
use crate::format::node;
use crate::format::thin::BlockTime;
use crate::format::BlockKind;
use crate::limits::MAX_BTREE_DEPTH;
use crate::units::{DevId, MetaBlock};
use std::collections::HashMap;

/// The epoch a cached count was computed at: the device's `last_edit` and the sharing
/// epoch.
type Epoch = (u64, u64);

/// Cached exclusive counts by device.
#[derive(Debug, Default)]
pub(crate) struct UsageCache {
    counts: HashMap<DevId, (Epoch, u64)>,
    /// Walks done (cache misses), for tests and measurements.
    nr_walks: u64,
}

impl UsageCache {
    /// Drops a deleted device's entry.
    pub(crate) fn forget(&mut self, id: DevId) {
        self.counts.remove(&id);
    }
}

impl ThinMetadata {
    /// The sharing epoch (module doc): changes whenever some block becomes shared or
    /// exclusive.
    fn sharing_epoch(&self) -> u64 {
        let m = self.tm.metadata_sm().nr_sharing_changes();
        m.wrapping_add(self.tm.data_sm().nr_sharing_changes())
    }

    pub(crate) fn tick_edit_clock(&mut self) -> u64 {
        self.edit_clock += 1;
        self.edit_clock
    }

    /// The number of device `id`'s mapped blocks that no other device shares (module doc):
    /// cached; a walk of the device's unshared nodes when something changed.
    pub fn exclusive_blocks(&mut self, id: DevId) -> Result<u64> {
        let dev = *self.device(id)?;
        let epoch = (dev.last_edit, self.sharing_epoch());
        if let Some(&(at, n)) = self.usage.counts.get(&id) {
            if at == epoch {
                return Ok(n);
            }
        }
        let n = self.count_exclusive(dev.root, 0)?;
        self.usage.nr_walks += 1;
        self.usage.counts.insert(id, (epoch, n));
        Ok(n)
    }

    /// Walks (not cache hits) `exclusive_blocks` has done.
    pub fn nr_usage_walks(&self) -> u64 {
        self.usage.nr_walks
    }

    /// Exclusive mappings under node `b`, reading only nodes of count 1.
    fn count_exclusive(&mut self, b: MetaBlock, depth: usize) -> Result<u64> {
        if depth >= MAX_BTREE_DEPTH {
            return Err(Error::corrupt(b, "btree node", "tree deeper than any valid tree"));
        }
        if self.tm.ref_count(b)? > 1 {
            return Ok(0);
        }
        let data = self.tm.read(b, BlockKind::Node)?;
        let blk = &data[..];
        let mut n = 0;
        for i in 0..node::nr_entries(blk) {
            let v = node::value_u64(blk, i);
            if node::is_leaf(blk) {
                n += u64::from(self.tm.data_sm().get(BlockTime::unpack(v).block)? == 1);
            } else {
                n += self.count_exclusive(MetaBlock(v), depth + 1)?;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemDevice;
    use crate::thin::RunDetail;
    use crate::units::VirtBlock;
    use std::sync::Arc;

    /// The oracle: the exact per-block test over every mapping.
    fn exclusive_by_exact_test(md: &mut ThinMetadata, id: DevId) -> u64 {
        let runs = md.runs(id, VirtBlock(0), VirtBlock(1 << 30), RunDetail::Sharing).unwrap();
        runs.iter().filter(|r| r.mapped && !r.shared).map(|r| r.len).sum()
    }

    fn write(md: &mut ThinMetadata, id: DevId, v: u64) {
        let b = md.alloc_data_block().unwrap();
        md.insert_mapping(id, VirtBlock(v), b).unwrap();
    }

    fn assert_all_exact(md: &mut ThinMetadata, step: &str) {
        for id in md.device_ids() {
            let want = exclusive_by_exact_test(md, id);
            assert_eq!(md.exclusive_blocks(id).unwrap(), want, "device {id} after {step}");
        }
    }

    #[test]
    fn exclusive_counts_follow_snapshots_copy_on_write_and_deletes() {
        let dev = Arc::new(MemDevice::new(8192));
        let mut md = ThinMetadata::format(dev, 128, 1 << 20, 16 << 20).unwrap();
        let (a, s, t) = (DevId(1), DevId(2), DevId(3));
        md.create_thin(a).unwrap();
        for v in 0..2_000 {
            write(&mut md, a, v);
        }
        assert_all_exact(&mut md, "writes");
        assert_eq!(md.exclusive_blocks(a).unwrap(), 2_000);
        md.commit().unwrap();
        md.create_snap(s, a).unwrap();
        assert_all_exact(&mut md, "a snapshot");
        assert_eq!(md.exclusive_blocks(a).unwrap(), 0, "a snapshot shares everything");
        // Copy-on-write in the origin: its new blocks are its own; one leaf of the snapshot
        // becomes unshared, and the snapshot's count must follow though its tree did not change.
        for v in [3, 700, 1_999] {
            write(&mut md, a, v);
            assert_all_exact(&mut md, &format!("a write to {v}"));
        }
        md.commit().unwrap();
        md.create_snap(t, s).unwrap();
        write(&mut md, t, 5);
        md.remove_mapping(s, VirtBlock(900)).unwrap();
        assert_all_exact(&mut md, "a snapshot of a snapshot, a write and a discard");
        md.delete(a).unwrap();
        assert_all_exact(&mut md, "deleting the origin");
        md.delete(s).unwrap();
        assert_all_exact(&mut md, "deleting the middle");
        assert_eq!(md.exclusive_blocks(t).unwrap(), 2_000, "t alone holds all it maps");
    }

    #[test]
    fn an_unchanged_pool_answers_from_the_cache_and_a_write_elsewhere_keeps_it() {
        let dev = Arc::new(MemDevice::new(8192));
        let mut md = ThinMetadata::format(dev, 128, 1 << 20, 16 << 20).unwrap();
        let (a, b) = (DevId(1), DevId(2));
        md.create_thin(a).unwrap();
        md.create_thin(b).unwrap();
        for v in 0..500 {
            write(&mut md, a, v);
            write(&mut md, b, v);
        }
        md.exclusive_blocks(a).unwrap();
        md.exclusive_blocks(b).unwrap();
        let walks = md.nr_usage_walks();
        md.exclusive_blocks(a).unwrap();
        md.exclusive_blocks(b).unwrap();
        assert_eq!(md.nr_usage_walks(), walks, "nothing changed: no walk");
        write(&mut md, b, 10_000);
        assert_eq!(md.exclusive_blocks(a).unwrap(), 500);
        assert_eq!(md.nr_usage_walks(), walks, "a write to b leaves a's count cached");
        assert_eq!(md.exclusive_blocks(b).unwrap(), 501);
        assert_eq!(md.nr_usage_walks(), walks + 1);
    }
}
