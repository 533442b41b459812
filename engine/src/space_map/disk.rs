//! The space maps on disk: loading them from a superblock, and persisting them at commit.
//!
//! Metadata space map: one index block listing the bitmaps, plus an overflow b-tree.
//! Data space map: an index b-tree (bitmap number → index entry), plus an overflow b-tree.
//! Every bitmap that changed in the transaction is moved to a block allocated in it (never
//! overwriting what the committed state references). For the metadata map this is the
//! bootstrap of spec §5.6: moving a bitmap changes counts, which may dirty more bitmaps, so
//! we repeat until no dirty bitmap is left unmoved, and only then serialise.

use super::{Bitmap, SpaceMap, DATA, METADATA};
use crate::block_manager::{BlockManager, ReadBlocks};
use crate::btree::{self, ValueKind};
use crate::error::{Error, Result};
use crate::format::space_map::{
    decode_bitmap, decode_index_block, encode_bitmap, encode_index_block, IndexEntry, BITMAP_WORDS,
    INDEX_ENTRY_SIZE,
};
use crate::format::superblock::{SmRoot, Superblock};
use crate::format::BlockKind;
use crate::limits::{ENTRIES_PER_BITMAP, MAX_METADATA_BITMAPS};
use crate::transaction_manager::{SmBlocks, TransactionManager};
use crate::units::MetaBlock;
use std::collections::BTreeMap;
use std::ops::ControlFlow;

/// Overflow trees: block number → u32 count.
pub const REF_COUNT: ValueKind = ValueKind::Plain { size: 4 };
/// The data space map's index tree: bitmap number → index entry.
pub const INDEX_ENTRY: ValueKind = ValueKind::Plain { size: INDEX_ENTRY_SIZE };

fn load_bitmap<R: ReadBlocks + ?Sized>(r: &mut R, e: &IndexEntry) -> Result<Bitmap> {
    let data = r.read_block(MetaBlock(e.blocknr), BlockKind::Bitmap)?;
    let mut words = Box::new([0u64; BITMAP_WORDS]);
    decode_bitmap(&data[..], &mut words);
    Ok(Bitmap::loaded(words, e.blocknr))
}

/// Reads an overflow tree into a map.
pub fn load_ref_counts<R: ReadBlocks + ?Sized>(
    r: &mut R,
    root: MetaBlock,
) -> Result<BTreeMap<u64, u32>> {
    let mut out = BTreeMap::new();
    btree::walk(r, root, REF_COUNT, 0, u64::MAX, &mut |k, v| {
        let mut a = [0u8; 4];
        a.copy_from_slice(v);
        out.insert(k, u32::from_le_bytes(a));
        Ok(ControlFlow::Continue(()))
    })
    .map(|_| out)
}

/// The data space map's index entries, checked to be 0, 1, 2, … without gaps.
pub fn load_data_index<R: ReadBlocks + ?Sized>(
    r: &mut R,
    root: MetaBlock,
) -> Result<Vec<IndexEntry>> {
    let mut entries = Vec::new();
    let mut gap = None;
    btree::walk(r, root, INDEX_ENTRY, 0, u64::MAX, &mut |k, v| {
        if k != entries.len() as u64 {
            gap = Some(k);
            return Ok(ControlFlow::Break(()));
        }
        entries.push(IndexEntry::decode(v));
        Ok(ControlFlow::Continue(()))
    })
    .map(drop)?;
    if let Some(k) = gap {
        return Err(Error::corrupt(
            root,
            "data space map index",
            format!("index key {k} out of sequence"),
        ));
    }
    Ok(entries)
}

fn nr_bitmaps(nr_blocks: u64) -> usize {
    nr_blocks.div_ceil(ENTRIES_PER_BITMAP) as usize
}

/// Loads both space maps from the roots a superblock gives.
pub fn load(bm: &mut BlockManager, sb: &Superblock) -> Result<(SpaceMap, SpaceMap, SmBlocks)> {
    let m = sb.metadata_sm_root;
    let n = nr_bitmaps(m.nr_blocks);
    if n as u64 > MAX_METADATA_BITMAPS {
        return Err(Error::BadSuperblock(format!(
            "metadata space map of {} blocks is too large",
            m.nr_blocks
        )));
    }
    if m.nr_blocks > bm.nr_blocks() {
        return Err(Error::BadSuperblock(format!(
            "metadata space map describes {} blocks but the device has {}",
            m.nr_blocks,
            bm.nr_blocks()
        )));
    }
    let index = bm.read(m.bitmap_root, BlockKind::Index)?;
    let entries = decode_index_block(&index[..], n);
    let bitmaps = entries.iter().map(|e| load_bitmap(bm, e)).collect::<Result<Vec<_>>>()?;
    let meta =
        SpaceMap::loaded(METADATA, m.nr_blocks, bitmaps, load_ref_counts(bm, m.ref_count_root)?);

    let d = sb.data_sm_root;
    if d.nr_blocks > crate::limits::MAX_DATA_BLOCKS_IN_MEMORY {
        return Err(Error::BadSuperblock(format!(
            "{} data blocks: more than thinly can hold",
            d.nr_blocks
        )));
    }
    let entries = load_data_index(bm, d.bitmap_root)?;
    if entries.len() != nr_bitmaps(d.nr_blocks) {
        return Err(Error::corrupt(
            d.bitmap_root,
            "data space map index",
            format!("{} bitmaps for {} data blocks", entries.len(), d.nr_blocks),
        ));
    }
    let bitmaps = entries.iter().map(|e| load_bitmap(bm, e)).collect::<Result<Vec<_>>>()?;
    let data = SpaceMap::loaded(DATA, d.nr_blocks, bitmaps, load_ref_counts(bm, d.ref_count_root)?);
    let blocks = SmBlocks {
        meta_index: m.bitmap_root,
        meta_ref_count_root: m.ref_count_root,
        data_index_root: d.bitmap_root,
        data_ref_count_root: d.ref_count_root,
    };
    Ok((meta, data, blocks))
}

/// Applies the overflow keys changed in this transaction to an overflow tree.
fn persist_overflow(
    tm: &mut TransactionManager,
    data: bool,
    mut root: MetaBlock,
) -> Result<MetaBlock> {
    loop {
        let sm = if data { &mut tm.data_sm } else { &mut tm.meta_sm };
        let keys = std::mem::take(&mut sm.overflow_dirty);
        if keys.is_empty() {
            return Ok(root);
        }
        let changes: Vec<(u64, Option<u32>)> =
            keys.into_iter().map(|k| (k, sm.overflow.get(&k).copied())).collect();
        for (k, count) in changes {
            root = match count {
                Some(c) => btree::insert(tm, root, REF_COUNT, k, &c.to_le_bytes())?.0,
                None => btree::remove(tm, root, REF_COUNT, k)?.0,
            };
        }
    }
}

/// Moves bitmap `i` to a block of this transaction unless it already is in one.
fn relocate(tm: &mut TransactionManager, data: bool, i: usize) -> Result<bool> {
    let bm = if data { &tm.data_sm.bitmaps[i] } else { &tm.meta_sm.bitmaps[i] };
    if bm.relocated {
        return Ok(false);
    }
    let old = bm.location;
    let new = tm.alloc()?;
    if old != 0 {
        tm.dec(MetaBlock(old))?;
    }
    let bm = if data { &mut tm.data_sm.bitmaps[i] } else { &mut tm.meta_sm.bitmaps[i] };
    bm.location = new.0;
    bm.relocated = true;
    Ok(true)
}

fn write_bitmap(tm: &mut TransactionManager, data: bool, i: usize) -> Result<IndexEntry> {
    let bm = if data { &mut tm.data_sm.bitmaps[i] } else { &mut tm.meta_sm.bitmaps[i] };
    bm.dirty = false;
    let (loc, words, entry) = (bm.location, bm.words.clone(), bm.index_entry());
    let block = tm.block_manager().zeroed(MetaBlock(loc), BlockKind::Bitmap)?;
    encode_bitmap(&words, &mut block[..]);
    Ok(entry)
}

/// Persists both space maps (commit steps 2 and 3 of spec §6.5) and returns their roots.
pub fn persist(tm: &mut TransactionManager) -> Result<(SmRoot, SmRoot)> {
    // Data space map: overflow tree, then every changed bitmap and its index entry.
    tm.sm_blocks.data_ref_count_root =
        persist_overflow(tm, true, tm.sm_blocks.data_ref_count_root)?;
    for i in 0..tm.data_sm.bitmaps.len() {
        if tm.data_sm.bitmaps[i].dirty {
            relocate(tm, true, i)?;
            let entry = write_bitmap(tm, true, i)?;
            let root = tm.sm_blocks.data_index_root;
            tm.sm_blocks.data_index_root =
                btree::insert(tm, root, INDEX_ENTRY, i as u64, &entry.to_bytes())?.0;
        }
    }
    // Metadata space map: overflow tree, a new index block, then bitmaps to a fixed point.
    tm.sm_blocks.meta_ref_count_root =
        persist_overflow(tm, false, tm.sm_blocks.meta_ref_count_root)?;
    let old_index = tm.sm_blocks.meta_index;
    tm.sm_blocks.meta_index = tm.alloc()?;
    if old_index.0 != 0 {
        tm.dec(old_index)?;
    }
    loop {
        let mut moved = false;
        for i in 0..tm.meta_sm.bitmaps.len() {
            if tm.meta_sm.bitmaps[i].dirty {
                moved |= relocate(tm, false, i)?;
            }
        }
        if !moved {
            break;
        }
    }
    assert!(tm.meta_sm.overflow_dirty.is_empty(), "relocating bitmaps changed an overflow count");
    let mut entries = Vec::with_capacity(tm.meta_sm.bitmaps.len());
    for i in 0..tm.meta_sm.bitmaps.len() {
        entries.push(if tm.meta_sm.bitmaps[i].dirty {
            write_bitmap(tm, false, i)?
        } else {
            tm.meta_sm.bitmaps[i].index_entry()
        });
    }
    let index = tm.sm_blocks.meta_index;
    let block = tm.block_manager().zeroed(index, BlockKind::Index)?;
    encode_index_block(&entries, &mut block[..]);
    for bm in tm.meta_sm.bitmaps.iter_mut().chain(tm.data_sm.bitmaps.iter_mut()) {
        bm.relocated = false;
    }
    let (data_root, meta_root) = tm.sm_roots();
    Ok((data_root, meta_root))
}
