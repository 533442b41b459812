//! thin_dump as library code: walks binary metadata read-only and feeds the event stream
//! to a [`MetadataVisitor`] (an XML or human-readable writer, a restorer, a checker).
//!
//! Streaming: one device's mappings flow leaf by leaf into the visitor, coalesced into
//! runs on the way; only the device list (ids, roots, details) is held in memory.
//! Devices come in dev_id order from the details tree, as 0.9.0 prints them; a device
//! whose mapping tree is missing is an error. `--repair` is [`super::repair`]'s salvage.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::error::{Error, Result};
use super::ir::{Device, MetadataVisitor, Superblock};
use super::restore::Overrides;
use super::stream::RunJoiner;
use crate::block_manager::{BlockManager, ReadBlocks};
use crate::btree;
use crate::format::node;
use crate::format::superblock::Superblock as DiskSuperblock;
use crate::format::thin::{BlockTime, DeviceDetails};
use crate::format::BlockKind;
use crate::io::BlockDevice;
use crate::limits::{DEFAULT_CACHE_BYTES, MAX_BTREE_DEPTH};
use crate::thin::{DETAILS, TOP};
use crate::units::MetaBlock;

/// Which metadata to dump and how much of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DumpOptions {
    /// `-m[=BLOCK]`: dump the metadata snapshot (`Some(None)`: the one the superblock
    /// holds; `Some(Some(b))`: the snapshot superblock copy at block b).
    pub metadata_snap: Option<Option<u64>>,
    /// `--dev-id`: only this device.
    pub dev_id: Option<u32>,
    /// `--skip-mappings`: devices without their mappings.
    pub skip_mappings: bool,
    /// `--transaction-id`, `--data-block-size`, `--nr-data-blocks`: applied to the
    /// printed superblock as 1.x applies them (see [`Overrides::apply_to_read`]).
    pub overrides: Overrides,
}

/// What a dump saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DumpStats {
    pub nr_devices: u64,
    pub nr_mappings: u64,
}

/// The superblock and roots a dump (or ls, delta, rmap) reads from.
#[derive(Debug, Clone)]
pub struct Roots {
    pub sb: DiskSuperblock,
    pub mapping_root: MetaBlock,
    pub details_root: MetaBlock,
    /// The IR superblock a dump prints.
    pub ir: Superblock,
}

/// Reads and checks block 0 (checksum; magic).
pub fn read_superblock(bm: &BlockManager) -> Result<DiskSuperblock> {
    let raw = bm.read_validated(MetaBlock(0), BlockKind::Superblock)?;
    let sb = DiskSuperblock::decode(&raw[..]);
    if sb.magic != crate::format::superblock::SUPERBLOCK_MAGIC {
        return Err(Error::Unusable(format!(
            "superblock: bad magic {} (not dm-thin metadata)",
            sb.magic
        )));
    }
    Ok(sb)
}

/// The roots to read: the live ones, or those of a metadata snapshot.
pub fn select_roots(bm: &mut BlockManager, metadata_snap: Option<Option<u64>>) -> Result<Roots> {
    let sb = read_superblock(bm)?;
    let source = match metadata_snap {
        None => sb.clone(),
        Some(explicit) => {
            let h = explicit.unwrap_or(sb.held_root.0);
            if h == 0 {
                return Err(Error::Unusable("no current metadata snap".into()));
            }
            let raw = bm.read(MetaBlock(h), BlockKind::Superblock)?;
            DiskSuperblock::decode(&raw[..])
        }
    };
    let ir = Superblock {
        uuid: String::new(),
        time: source.time,
        transaction: source.trans_id,
        flags: Some(source.flags),
        version: Some(source.version),
        data_block_size: source.data_block_size_sectors,
        nr_data_blocks: source.data_sm_root.nr_blocks,
        // 0.9.0 never prints metadata_snap, even when a snapshot is held.
        metadata_snap: None,
    };
    Ok(Roots {
        mapping_root: source.data_mapping_root,
        details_root: source.device_details_root,
        sb,
        ir,
    })
}

/// Every device's details, in id order.
pub fn read_details<R: ReadBlocks + ?Sized>(
    r: &mut R,
    root: MetaBlock,
) -> Result<BTreeMap<u64, DeviceDetails>> {
    let mut out = BTreeMap::new();
    btree::for_each(r, root, DETAILS, 0, u64::MAX, &mut |k, v| {
        out.insert(k, DeviceDetails::decode(v));
        Ok(())
    })?;
    Ok(out)
}

/// Every device's bottom-level root, in id order.
pub fn read_top_level<R: ReadBlocks + ?Sized>(
    r: &mut R,
    root: MetaBlock,
) -> Result<BTreeMap<u64, MetaBlock>> {
    let mut out = BTreeMap::new();
    btree::for_each(r, root, TOP, 0, u64::MAX, &mut |k, v| {
        let mut a = [0u8; 8];
        a.copy_from_slice(v);
        out.insert(k, MetaBlock(u64::from_le_bytes(a)));
        Ok(())
    })?;
    Ok(out)
}

/// Calls `f(virtual block, block_time)` for every mapping of the bottom tree at `root`,
/// in key order. Checks leaf shape and key order on the way.
pub fn walk_mappings<R: ReadBlocks + ?Sized>(
    r: &mut R,
    root: MetaBlock,
    f: &mut dyn FnMut(u64, BlockTime) -> Result<()>,
) -> Result<()> {
    let mut last = None;
    walk_rec(r, root, 0, &mut last, &mut None, f)
}

/// As [`walk_mappings`], but skips every node already in `seen` (and adds the nodes it
/// visits): a subtree shared by several devices is reported for the first only, which is
/// how 0.9.0's thin_rmap walks.
pub fn walk_mappings_once<R: ReadBlocks + ?Sized>(
    r: &mut R,
    root: MetaBlock,
    seen: &mut std::collections::HashSet<u64>,
    f: &mut dyn FnMut(u64, BlockTime) -> Result<()>,
) -> Result<()> {
    let mut last = None;
    walk_rec(r, root, 0, &mut last, &mut Some(seen), f)
}

fn walk_rec<R: ReadBlocks + ?Sized>(
    r: &mut R,
    b: MetaBlock,
    depth: usize,
    last: &mut Option<u64>,
    seen: &mut Option<&mut std::collections::HashSet<u64>>,
    f: &mut dyn FnMut(u64, BlockTime) -> Result<()>,
) -> Result<()> {
    if let Some(seen) = seen.as_mut() {
        if !seen.insert(b.0) {
            return Ok(());
        }
    }
    if depth >= MAX_BTREE_DEPTH {
        return Err(
            crate::error::Error::corrupt(b, "btree node", "tree too deep (a cycle?)").into()
        );
    }
    let data = r.read_block(b, BlockKind::Node)?;
    let blk = &data[..];
    let n = node::nr_entries(blk);
    if node::is_leaf(blk) {
        if node::value_size(blk) != 8 {
            return Err(crate::error::Error::corrupt(
                b,
                "btree node",
                format!("mapping leaf with value_size {}", node::value_size(blk)),
            )
            .into());
        }
        for i in 0..n {
            let k = node::key(blk, i);
            if last.is_some_and(|l| k <= l) {
                return Err(crate::error::Error::corrupt(
                    b,
                    "btree node",
                    format!("key {k} out of order"),
                )
                .into());
            }
            *last = Some(k);
            f(k, BlockTime::unpack(node::value_u64(blk, i)))?;
        }
        return Ok(());
    }
    let children: Vec<u64> = (0..n).map(|i| node::value_u64(blk, i)).collect();
    drop(data);
    for c in children {
        walk_rec(r, MetaBlock(c), depth + 1, last, seen, f)?;
    }
    Ok(())
}

/// Feeds the mappings of the tree at `root` to `v` as coalesced runs.
pub fn emit_mappings<R: ReadBlocks + ?Sized, V: MetadataVisitor + ?Sized>(
    r: &mut R,
    root: MetaBlock,
    v: &mut V,
) -> Result<u64> {
    let mut runs = RunJoiner::default();
    let mut n = 0u64;
    walk_mappings(r, root, &mut |k, bt| {
        n += 1;
        runs.push(v, k, bt.block, bt.time)
    })?;
    runs.finish(v)?;
    Ok(n)
}

/// Opens a block manager for reading a metadata device.
pub fn reader(dev: Arc<dyn BlockDevice>) -> BlockManager {
    BlockManager::new(dev, DEFAULT_CACHE_BYTES)
}

/// Dumps the metadata on `dev` into `v` (ending with `eof`).
pub fn dump<V: MetadataVisitor + ?Sized>(
    dev: Arc<dyn BlockDevice>,
    opts: &DumpOptions,
    v: &mut V,
) -> Result<DumpStats> {
    let mut bm = reader(dev);
    let roots = select_roots(&mut bm, opts.metadata_snap)?;
    let details = read_details(&mut bm, roots.details_root)?;
    let tops = read_top_level(&mut bm, roots.mapping_root)?;
    let mut stats = DumpStats::default();
    let mut ir = roots.ir.clone();
    opts.overrides.apply_to_read(&mut ir);
    v.superblock_b(&ir)?;
    for (&id, d) in &details {
        if opts.dev_id.is_some_and(|want| u64::from(want) != id) {
            continue;
        }
        let root = *tops.get(&id).ok_or_else(|| Error::Invalid {
            dev_id: u32::try_from(id).ok(),
            reason: "has device details but no mapping tree".into(),
        })?;
        v.device_b(&ir_device(id, d))?;
        if !opts.skip_mappings {
            stats.nr_mappings += emit_mappings(&mut bm, root, v)?;
        }
        v.device_e()?;
        stats.nr_devices += 1;
    }
    v.superblock_e()?;
    v.eof()?;
    Ok(stats)
}

/// The `<device>` attributes of a details value.
pub fn ir_device(id: u64, d: &DeviceDetails) -> Device {
    Device {
        dev_id: id as u32,
        mapped_blocks: d.mapped_blocks,
        transaction: d.transaction_id,
        creation_time: d.creation_time,
        snap_time: d.snapshotted_time,
    }
}
