//! Changed blocks between two devices: the virtual blocks whose mapping differs (mapped
//! to different data blocks, or mapped in one device only), thin_delta's notion at
//! data-block granularity. Computed by `btree::diff`, which steps over the subtrees the two
//! devices share, so the cost grows with the changes, not with the devices' size.
//!
//! Two mappings to the same data block are the same: the pool never writes a data block
//! in place while another device maps it (it breaks the sharing first), so an unchanged
//! block number means unchanged contents.
//!
//! Bounded per call: at most `max_runs` runs and `MAX_DIFF_ITEMS_PER_CALL` steps of the
//! diff (the caller holds the pool's metadata lock meanwhile); the answer says how far it
//! is final, so a caller can continue from there.

use super::metadata::ThinMetadata;
use super::BOTTOM;
use crate::btree::{self, DiffItem, Shared};
use crate::error::Result;
use crate::format::le_u64;
use crate::format::thin::BlockTime;
use crate::limits::MAX_DIFF_ITEMS_PER_CALL;
use crate::units::{DevId, VirtBlock};
use std::ops::ControlFlow;

/// Runs of changed virtual blocks within a range.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// (first virtual block, number of blocks), in order, neither empty nor adjacent.
    pub runs: Vec<(u64, u64)>,
    /// Everything before this virtual block is described: blocks in no run are unchanged.
    /// The end of the range unless the call stopped at `max_runs`.
    pub complete_to: u64,
}

impl ThinMetadata {
    /// The blocks of `[begin, end)` whose mapping differs between devices `a` and `b`; at
    /// most `max_runs` (≥ 1) runs, and at most `MAX_DIFF_ITEMS_PER_CALL` diff steps.
    /// Reads the current (uncommitted) transaction.
    pub fn changed_blocks(
        &mut self,
        a: DevId,
        b: DevId,
        begin: VirtBlock,
        end: VirtBlock,
        max_runs: usize,
    ) -> Result<Changes> {
        self.changed_blocks_bounded(a, b, begin.0, end.0, max_runs, MAX_DIFF_ITEMS_PER_CALL)
    }

    fn changed_blocks_bounded(
        &mut self,
        a: DevId,
        b: DevId,
        begin: u64,
        end: u64,
        max_runs: usize,
        max_items: usize,
    ) -> Result<Changes> {
        let (ra, rb) = (self.device_root(a)?, self.device_root(b)?);
        let mut out = Changes { runs: Vec::new(), complete_to: end };
        let max_runs = max_runs.max(1);
        let mut nr_items = 0usize;
        let visit = &mut |item: DiffItem| {
            nr_items += 1;
            let (key, changed) = match item {
                DiffItem::LeftOnly { key, .. } | DiffItem::RightOnly { key, .. } => (key, true),
                DiffItem::Both { key, left, right } => (key, data_block(left) != data_block(right)),
                DiffItem::Shared { lo, .. } => (lo, false),
            };
            // Every key before this item's has been reported (a shared subtree's keys are
            // ≥ its lower bound), so stopping here leaves a final answer up to `key`. Only
            // past `begin`, so that every call makes progress.
            if nr_items > max_items && key > begin {
                out.complete_to = key;
                return Ok(ControlFlow::Break(()));
            }
            if !changed {
                return Ok(ControlFlow::Continue(()));
            }
            let full = out.runs.len() >= max_runs;
            match out.runs.last_mut() {
                Some((first, len)) if *first + *len == key => *len += 1,
                _ if full => {
                    out.complete_to = key;
                    return Ok(ControlFlow::Break(()));
                }
                _ => out.runs.push((key, 1)),
            }
            Ok(ControlFlow::Continue(()))
        };
        let _stopped = btree::diff(&mut self.tm, ra, rb, BOTTOM, begin, end, Shared::Skip, visit)?;
        Ok(out)
    }
}

fn data_block(v: &[u8]) -> u64 {
    BlockTime::unpack(le_u64(v, 0)).block
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemDevice;
    use std::sync::Arc;

    /// A device of `n` mappings and a snapshot of it in which `writes` were remapped.
    fn snapshot_with_writes(n: u64, writes: &[u64]) -> ThinMetadata {
        let dev = Arc::new(MemDevice::new(8192));
        let mut md = ThinMetadata::format(dev, 128, 1 << 20, 16 << 20).unwrap();
        md.create_thin(DevId(0)).unwrap();
        for v in 0..n {
            let b = md.alloc_data_block().unwrap();
            md.insert_mapping(DevId(0), VirtBlock(v), b).unwrap();
        }
        md.commit().unwrap();
        md.create_snap(DevId(1), DevId(0)).unwrap();
        for &v in writes {
            let b = md.alloc_data_block().unwrap();
            md.insert_mapping(DevId(1), VirtBlock(v), b).unwrap();
        }
        md
    }

    #[test]
    fn a_diff_reads_only_the_leaves_that_changed_and_skips_the_shared_rest() {
        let mut md = snapshot_with_writes(100_000, &[5, 50_000, 99_999]);
        let (ra, rb) = (md.device_root(DevId(0)).unwrap(), md.device_root(DevId(1)).unwrap());
        let (mut entries, mut shared) = (0, 0);
        let flow =
            btree::diff(&mut md.tm, ra, rb, BOTTOM, 0, u64::MAX, Shared::Skip, &mut |item| {
                match item {
                    DiffItem::Shared { .. } => shared += 1,
                    _ => entries += 1,
                }
                Ok(ControlFlow::Continue(()))
            })
            .unwrap();
        assert!(flow.is_continue());
        // Three leaves (at most 254 entries each) were compared entry by entry; the other
        // several hundred leaves were stepped over a subtree at a time.
        assert!(entries <= 3 * 254, "{entries} entries compared");
        assert!(shared > 0 && shared < 100_000 / 126, "{shared} shared subtrees skipped");
        let ch = md.changed_blocks(DevId(0), DevId(1), VirtBlock(0), VirtBlock(u64::MAX), 10);
        let want = Changes { runs: vec![(5, 1), (50_000, 1), (99_999, 1)], complete_to: u64::MAX };
        assert_eq!(ch.unwrap(), want);
    }

    #[test]
    fn walking_shared_subtrees_reports_every_key_once_in_order() {
        let mut md = snapshot_with_writes(3_000, &[7, 2_999]);
        md.remove_mapping(DevId(0), VirtBlock(1_000)).unwrap();
        let (ra, rb) = (md.device_root(DevId(0)).unwrap(), md.device_root(DevId(1)).unwrap());
        let mut keys = Vec::new();
        let flow = btree::diff(&mut md.tm, ra, rb, BOTTOM, 100, 2_000, Shared::Walk, &mut |item| {
            match item {
                DiffItem::Both { key, .. } | DiffItem::LeftOnly { key, .. } => keys.push(key),
                DiffItem::RightOnly { key, .. } => keys.push(key + 1_000_000),
                DiffItem::Shared { .. } => panic!("nothing is skipped when walking"),
            }
            Ok(ControlFlow::Continue(()))
        })
        .unwrap();
        assert!(flow.is_continue());
        let mut want: Vec<u64> = (100..2_000).filter(|&k| k != 1_000).collect();
        want.insert(900, 1_001_000);
        assert_eq!(keys, want);
    }

    #[test]
    fn a_diff_stopped_by_its_step_budget_continues_to_the_same_answer() {
        let writes: Vec<u64> = (0..60).map(|i| (i * 7_919) % 30_000).collect();
        let mut md = snapshot_with_writes(30_000, &writes);
        md.remove_mapping(DevId(0), VirtBlock(12_345)).unwrap();
        let whole = md.changed_blocks(DevId(0), DevId(1), VirtBlock(0), VirtBlock(u64::MAX), 1000);
        let whole = whole.unwrap();
        assert_eq!(whole.complete_to, u64::MAX);
        for max_items in [1, 5, 50] {
            let (mut at, mut runs, mut calls) = (0u64, Vec::new(), 0);
            while at < u64::MAX {
                let ch = md
                    .changed_blocks_bounded(DevId(0), DevId(1), at, u64::MAX, 1000, max_items)
                    .unwrap();
                assert!(ch.complete_to > at, "every call makes progress");
                for (first, len) in ch.runs {
                    match runs.last_mut() {
                        Some((f, l)) if *f + *l == first => *l += len,
                        _ => runs.push((first, len)),
                    }
                }
                at = ch.complete_to;
                calls += 1;
            }
            assert_eq!(runs, whole.runs, "budget {max_items}");
            assert!(calls > 1, "the budget of {max_items} steps bit");
        }
    }
}
