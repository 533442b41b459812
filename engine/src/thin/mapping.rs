//! Mappings of one device: lookup, insert/overwrite, remove, ranges as runs, and the
//! is-shared decisions of spec §6.4.

use super::metadata::ThinMetadata;
use super::BOTTOM;
use crate::btree;
use crate::error::{Error, Result};
use crate::format::node;
use crate::format::thin::BlockTime;
use crate::format::BlockKind;
use crate::limits::{MAX_BTREE_DEPTH, MAX_DATA_BLOCKS};
use crate::units::{DataBlock, DevId, MetaBlock, VirtBlock};
use std::ops::ControlFlow;

/// Where a virtual block lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub data_block: DataBlock,
    /// The pool time the mapping was written at.
    pub time: u32,
    /// The kernel's conservative test (spec §6.4): the mapping predates the device's last
    /// snapshot, so the data block may be shared and must not be written in place.
    pub maybe_shared: bool,
}

/// A run of consecutive virtual blocks in the same state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub begin: u64,
    pub len: u64,
    pub mapped: bool,
    /// Mapped and reachable from another device too (exact: a shared node on the path, or a
    /// data block referenced by more than one leaf). Only `RunDetail::Sharing` sets it.
    pub shared: bool,
}

/// How much `runs` works out about mapped blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunDetail {
    /// Mapped or not (NBD `base:allocation`): one walk of the leaves in the range;
    /// `Run::shared` is always false.
    Mapped,
    /// Also exact sharing (NBD `qemu:allocation-depth`): besides the walk, the reference
    /// count of every node on the way and of every mapped data block.
    Sharing,
}

impl ThinMetadata {
    /// The mapping of `vblock` in device `dev`.
    pub fn lookup(&mut self, dev: DevId, vblock: VirtBlock) -> Result<Option<Mapping>> {
        let stime = self.device(dev)?.details.snapshotted_time;
        let root = self.device_root(dev)?;
        let mut out = [0u8; 8];
        let (found, depth) = btree::lookup_depth(&mut self.tm, root, BOTTOM, vblock.0, &mut out)?;
        if crate::STATS {
            self.lookup_depths[depth] += 1;
        }
        Ok(found.then(|| {
            let bt = BlockTime::unpack(u64::from_le_bytes(out));
            Mapping {
                data_block: DataBlock(bt.block),
                time: bt.time,
                maybe_shared: stime > bt.time,
            }
        }))
    }

    /// Maps `vblock` to `data` at the current time. The data block's reference must be the
    /// caller's (fresh from `alloc_data_block`). An overwritten mapping's data block loses its
    /// reference. Returns whether the mapping is new.
    pub fn insert_mapping(
        &mut self,
        dev: DevId,
        vblock: VirtBlock,
        data: DataBlock,
    ) -> Result<bool> {
        self.begin_change()?;
        self.device(dev)?;
        if data.0 >= MAX_DATA_BLOCKS || data.0 >= self.tm.data_sm().nr_blocks() {
            return Err(Error::Invalid(format!("data block {data} is beyond the data device")));
        }
        let v = BlockTime { block: data.0, time: self.sb.time }.pack().to_le_bytes();
        let is_new =
            self.edit_device(dev, |tm, root| btree::insert(tm, root, BOTTOM, vblock.0, &v))?;
        if is_new {
            self.device_mut(dev)?.details.mapped_blocks += 1;
        }
        Ok(is_new)
    }

    /// Unmaps `vblock`; its data block loses a reference. Returns whether it was mapped.
    pub fn remove_mapping(&mut self, dev: DevId, vblock: VirtBlock) -> Result<bool> {
        self.begin_change()?;
        self.device(dev)?;
        let found = self.edit_device(dev, |tm, root| btree::remove(tm, root, BOTTOM, vblock.0))?;
        if found {
            self.device_mut(dev)?.details.mapped_blocks -= 1;
        }
        Ok(found)
    }

    /// Unmaps every block in `[begin, end)`; returns how many were mapped.
    pub fn remove_range(&mut self, dev: DevId, begin: VirtBlock, end: VirtBlock) -> Result<u64> {
        let keys: Vec<u64> = self.mapped_keys(dev, begin.0, end.0)?;
        for &k in &keys {
            self.remove_mapping(dev, VirtBlock(k))?;
        }
        Ok(keys.len() as u64)
    }

    fn mapped_keys(&mut self, dev: DevId, begin: u64, end: u64) -> Result<Vec<u64>> {
        let root = self.device_root(dev)?;
        let mut keys = Vec::new();
        btree::for_each(&mut self.tm, root, BOTTOM, begin, end, &mut |k, _| {
            keys.push(k);
            Ok(())
        })?;
        Ok(keys)
    }

    /// Calls `f(vblock, mapping)` for every mapping in `[begin, end)`, in order.
    pub fn for_each_mapping(
        &mut self,
        dev: DevId,
        begin: VirtBlock,
        end: VirtBlock,
        f: &mut dyn FnMut(VirtBlock, Mapping) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        let stime = self.device(dev)?.details.snapshotted_time;
        let root = self.device_root(dev)?;
        btree::walk(&mut self.tm, root, BOTTOM, begin.0, end.0, &mut |k, v| {
            let bt = BlockTime::unpack(crate::format::le_u64(v, 0));
            let m = Mapping {
                data_block: DataBlock(bt.block),
                time: bt.time,
                maybe_shared: stime > bt.time,
            };
            f(VirtBlock(k), m)
        })
        .map(drop)
    }

    /// The exact sharing test (spec §6.4): every node on the path from the device's root to
    /// the leaf has count 1 and the data block has count 1. `None` if unmapped.
    pub fn is_shared_exact(&mut self, dev: DevId, vblock: VirtBlock) -> Result<Option<bool>> {
        let mut b = self.device_root(dev)?;
        let mut path_shared = false;
        for _ in 0..MAX_BTREE_DEPTH {
            path_shared |= self.tm.ref_count(b)? > 1;
            let data = self.tm.read(b, BlockKind::Node)?;
            let blk = &data[..];
            let Some(i) = node::lower_bound(blk, vblock.0) else {
                return Ok(None);
            };
            if node::is_leaf(blk) {
                if node::key(blk, i) != vblock.0 {
                    return Ok(None);
                }
                let bt = BlockTime::unpack(node::value_u64(blk, i));
                return Ok(Some(path_shared || self.tm.data_sm().get(bt.block)? > 1));
            }
            b = MetaBlock(node::value_u64(blk, i));
        }
        Err(Error::corrupt(b, "btree node", "tree deeper than any valid tree"))
    }

    /// The blocks of `[begin, end)` as runs of unmapped and mapped blocks, for block-status
    /// queries; with `RunDetail::Sharing` mapped runs are also split into exclusive and
    /// shared (exact sharing).
    pub fn runs(
        &mut self,
        dev: DevId,
        begin: VirtBlock,
        end: VirtBlock,
        detail: RunDetail,
    ) -> Result<Vec<Run>> {
        let mut runs: Vec<Run> = Vec::new();
        let mut next = begin.0;
        let push = |runs: &mut Vec<Run>, begin: u64, len: u64, mapped: bool, shared: bool| {
            if len == 0 {
                return;
            }
            match runs.last_mut() {
                Some(r) if r.mapped == mapped && r.shared == shared && r.begin + r.len == begin => {
                    r.len += len
                }
                _ => runs.push(Run { begin, len, mapped, shared }),
            }
        };
        let entries: Vec<(u64, bool)> = match detail {
            RunDetail::Mapped => {
                self.mapped_keys(dev, begin.0, end.0)?.into_iter().map(|k| (k, false)).collect()
            }
            RunDetail::Sharing => {
                let root = self.device_root(dev)?;
                let mut entries = Vec::new();
                self.collect_sharing(root, begin.0, end.0, false, &mut entries, 0)?;
                entries
            }
        };
        for (k, shared) in entries {
            push(&mut runs, next, k - next, false, false);
            push(&mut runs, k, 1, true, shared);
            next = k + 1;
        }
        push(&mut runs, next, end.0.saturating_sub(next), false, false);
        Ok(runs)
    }

    fn collect_sharing(
        &mut self,
        b: MetaBlock,
        begin: u64,
        end: u64,
        path_shared: bool,
        out: &mut Vec<(u64, bool)>,
        depth: usize,
    ) -> Result<()> {
        if depth >= MAX_BTREE_DEPTH {
            return Err(Error::corrupt(b, "btree node", "tree deeper than any valid tree"));
        }
        let shared = path_shared || self.tm.ref_count(b)? > 1;
        let data = self.tm.read(b, BlockKind::Node)?;
        let blk = &data[..];
        let n = node::nr_entries(blk);
        let first = node::lower_bound(blk, begin).unwrap_or(0);
        for i in first..n {
            let k = node::key(blk, i);
            if k >= end {
                break;
            }
            if node::is_leaf(blk) {
                if k >= begin {
                    let bt = BlockTime::unpack(node::value_u64(blk, i));
                    out.push((k, shared || self.tm.data_sm().get(bt.block)? > 1));
                }
            } else {
                self.collect_sharing(
                    MetaBlock(node::value_u64(blk, i)),
                    begin,
                    end,
                    shared,
                    out,
                    depth + 1,
                )?;
            }
        }
        Ok(())
    }

    /// The highest mapped virtual block of a device, if any.
    pub fn highest_mapped(&mut self, dev: DevId) -> Result<Option<VirtBlock>> {
        let mut b = self.device_root(dev)?;
        for _ in 0..MAX_BTREE_DEPTH {
            let data = self.tm.read(b, BlockKind::Node)?;
            let blk = &data[..];
            let n = node::nr_entries(blk);
            if n == 0 {
                return Ok(None);
            }
            if node::is_leaf(blk) {
                return Ok(Some(VirtBlock(node::key(blk, n - 1))));
            }
            b = MetaBlock(node::value_u64(blk, n - 1));
        }
        Err(Error::corrupt(b, "btree node", "tree deeper than any valid tree"))
    }
}
