//! Transactions over the metadata device: shadowing (copy-on-write) and commit.
//!
//! Within a transaction a block that the committed state references is never written: the
//! first change to it *shadows* it into a freshly allocated block (spec §6.1). A block
//! allocated in this transaction whose count is 1 is edited in place. When a shared block
//! (count > 1) is shadowed, the copy holds new references to everything the original
//! references; `shadow` reports that so the b-tree, which knows what its values mean, can
//! apply the inc_children rule.
//!
//! The manager owns both space maps because every b-tree change may touch both (mapping
//! values reference data blocks). Commit follows spec §6.5: persist the data space map, then
//! the metadata space map to a fixed point, write and flush every dirty block, then write
//! the superblock and flush again. A failure during commit poisons the manager.

use crate::block_manager::{BlockManager, BlockSet};
use crate::error::{Error, Result};
use crate::format::superblock::{SmRoot, Superblock};
use crate::format::BlockKind;
use crate::io::{Block, BlockDevice};
use crate::limits::{metadata_reserve_blocks, MAX_METADATA_BLOCKS};
use crate::space_map::{disk, SpaceMap, DATA, METADATA};
use crate::units::MetaBlock;
use std::sync::Arc;

/// On-disk roots of the space maps' own structures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SmBlocks {
    /// Metadata sm index block (0 until the first commit writes one).
    pub meta_index: MetaBlock,
    pub meta_ref_count_root: MetaBlock,
    pub data_index_root: MetaBlock,
    pub data_ref_count_root: MetaBlock,
}

pub struct TransactionManager {
    pub(crate) bm: BlockManager,
    pub(crate) meta_sm: SpaceMap,
    pub(crate) data_sm: SpaceMap,
    pub(crate) sm_blocks: SmBlocks,
    /// Blocks allocated in the open transaction.
    shadowed: BlockSet,
    /// Set while the commit itself allocates: it may use the reserve.
    in_commit: bool,
    poisoned: bool,
}

impl TransactionManager {
    /// A fresh metadata device: block 0 reserved for the superblock, empty space-map trees.
    /// Nothing is durable until `commit`.
    pub fn format(
        dev: Arc<dyn BlockDevice>,
        nr_data_blocks: u64,
        cache_bytes: usize,
    ) -> Result<Self> {
        check_nr_data_blocks(nr_data_blocks)?;
        let nr_meta = dev.nr_blocks().min(MAX_METADATA_BLOCKS);
        if nr_meta < 16 {
            return Err(Error::Invalid(format!(
                "metadata device of {nr_meta} blocks is too small (at least 16 needed)"
            )));
        }
        let mut tm = TransactionManager {
            bm: BlockManager::new(dev, cache_bytes),
            meta_sm: SpaceMap::new(METADATA, nr_meta),
            data_sm: SpaceMap::new(DATA, nr_data_blocks),
            sm_blocks: SmBlocks::default(),
            shadowed: BlockSet::default(),
            in_commit: false,
            poisoned: false,
        };
        let sb = tm.meta_sm.alloc()?;
        debug_assert_eq!(sb, 0, "the superblock takes block 0");
        tm.sm_blocks.meta_ref_count_root = crate::btree::empty_tree(&mut tm, disk::REF_COUNT)?;
        tm.sm_blocks.data_index_root = crate::btree::empty_tree(&mut tm, disk::INDEX_ENTRY)?;
        tm.sm_blocks.data_ref_count_root = crate::btree::empty_tree(&mut tm, disk::REF_COUNT)?;
        Ok(tm)
    }

    /// Opens the committed state a superblock describes.
    pub fn open(dev: Arc<dyn BlockDevice>, sb: &Superblock, cache_bytes: usize) -> Result<Self> {
        let mut bm = BlockManager::new(dev, cache_bytes);
        let (meta_sm, data_sm, sm_blocks) = disk::load(&mut bm, sb)?;
        Ok(TransactionManager {
            bm,
            meta_sm,
            data_sm,
            sm_blocks,
            shadowed: BlockSet::default(),
            in_commit: false,
            poisoned: false,
        })
    }

    pub fn block_manager(&mut self) -> &mut BlockManager {
        &mut self.bm
    }

    pub fn metadata_sm(&self) -> &SpaceMap {
        &self.meta_sm
    }

    pub fn data_sm(&self) -> &SpaceMap {
        &self.data_sm
    }

    /// The metadata space map for direct edits (repair tools only).
    pub(crate) fn metadata_sm_mut(&mut self) -> &mut SpaceMap {
        &mut self.meta_sm
    }

    pub fn data_sm_mut(&mut self) -> &mut SpaceMap {
        &mut self.data_sm
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn check_writable(&self) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// Allocates a metadata block for this transaction. Outside a commit the last
    /// `metadata_reserve_blocks` free blocks are kept for the commit itself.
    pub fn alloc(&mut self) -> Result<MetaBlock> {
        self.check_writable()?;
        let reserve =
            if self.in_commit { 0 } else { metadata_reserve_blocks(self.meta_sm.nr_blocks()) };
        if self.meta_sm.nr_allocatable() <= reserve {
            return Err(Error::MetadataNoSpace { nr_blocks: self.meta_sm.nr_blocks() });
        }
        let b = self.meta_sm.alloc()?;
        self.shadowed.insert(b);
        Ok(MetaBlock(b))
    }

    /// A new zeroed block of `kind`, allocated in this transaction.
    pub fn new_block(&mut self, kind: BlockKind) -> Result<(MetaBlock, &mut Block)> {
        let b = self.alloc()?;
        let data = self.bm.zeroed(b, kind)?;
        Ok((b, data))
    }

    pub fn read(&mut self, b: MetaBlock, kind: BlockKind) -> Result<Arc<Block>> {
        self.bm.read(b, kind)
    }

    /// The block for editing. It must be one this transaction owns (allocated or shadowed).
    pub fn get_mut(&mut self, b: MetaBlock, kind: BlockKind) -> Result<&mut Block> {
        debug_assert!(self.shadowed.contains(&b.0), "editing block {b} without shadowing it");
        self.bm.get_mut(b, kind)
    }

    /// Is `b` owned by this transaction and unshared, i.e. editable in place?
    pub fn is_exclusive(&self, b: MetaBlock) -> Result<bool> {
        Ok(self.shadowed.contains(&b.0) && self.meta_sm.get(b.0)? == 1)
    }

    /// Makes `b` editable: returns the block to edit and whether `b` was shared (then the
    /// caller must increment everything the copy references: the inc_children rule).
    pub fn shadow(&mut self, b: MetaBlock, kind: BlockKind) -> Result<(MetaBlock, bool)> {
        self.check_writable()?;
        let count = self.meta_sm.get(b.0)?;
        if count == 0 {
            return Err(Error::RefCount {
                space: METADATA,
                block: b.0,
                reason: "shadowing a block that is not in use".into(),
            });
        }
        if count == 1 && self.shadowed.contains(&b.0) {
            return Ok((b, false));
        }
        let n = self.alloc()?;
        self.bm.copy(b, n, kind)?;
        self.meta_sm.dec(b.0)?;
        Ok((n, count > 1))
    }

    pub fn inc(&mut self, b: MetaBlock) -> Result<()> {
        self.meta_sm.inc(b.0)
    }

    /// Decrements a metadata block's count; a block that reaches zero leaves the cache.
    pub fn dec(&mut self, b: MetaBlock) -> Result<u32> {
        let c = self.meta_sm.dec(b.0)?;
        if c == 0 {
            self.bm.forget(b);
        }
        Ok(c)
    }

    pub fn ref_count(&self, b: MetaBlock) -> Result<u32> {
        self.meta_sm.get(b.0)
    }

    /// Commits the transaction: `sb` carries everything but the space-map roots, which this
    /// fills in. Returns the data blocks freed by the transaction (now reusable; the pool
    /// hole-punches them).
    pub fn commit(&mut self, sb: &mut Superblock) -> Result<Vec<u64>> {
        self.check_writable()?;
        self.in_commit = true;
        let r = self.commit_inner(sb);
        self.in_commit = false;
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    fn commit_inner(&mut self, sb: &mut Superblock) -> Result<Vec<u64>> {
        let (data_root, meta_root) = disk::persist(self)?;
        sb.data_sm_root = data_root;
        sb.metadata_sm_root = meta_root;
        self.bm.flush()?;
        let mut block = [0u8; crate::limits::META_BLOCK_SIZE];
        sb.encode(&mut block);
        self.bm.write_superblock(&block)?;
        self.shadowed.clear();
        self.meta_sm.take_freed();
        Ok(self.data_sm.take_freed())
    }

    /// The space-map roots as they would be written now (for status figures).
    pub fn sm_roots(&self) -> (SmRoot, SmRoot) {
        let data = SmRoot {
            nr_blocks: self.data_sm.nr_blocks(),
            nr_allocated: self.data_sm.nr_allocated(),
            bitmap_root: self.sm_blocks.data_index_root,
            ref_count_root: self.sm_blocks.data_ref_count_root,
        };
        let meta = SmRoot {
            nr_blocks: self.meta_sm.nr_blocks(),
            nr_allocated: self.meta_sm.nr_allocated(),
            bitmap_root: self.sm_blocks.meta_index,
            ref_count_root: self.sm_blocks.meta_ref_count_root,
        };
        (data, meta)
    }

    /// Grows the metadata space map after the device grew (spec §6.8).
    pub fn extend_metadata(&mut self, nr_blocks: u64) -> Result<()> {
        let nr = nr_blocks.min(MAX_METADATA_BLOCKS);
        if nr < self.meta_sm.nr_blocks() {
            return Err(Error::Invalid("the metadata space map cannot shrink".into()));
        }
        if self.bm.nr_blocks() < nr {
            return Err(Error::Invalid(format!(
                "metadata device has {} blocks, fewer than {nr}",
                self.bm.nr_blocks()
            )));
        }
        self.meta_sm.extend(nr);
        Ok(())
    }

    /// Grows the data space map (spec §6.8).
    pub fn extend_data(&mut self, nr_blocks: u64) -> Result<()> {
        if nr_blocks < self.data_sm.nr_blocks() {
            return Err(Error::Invalid("the data space map cannot shrink".into()));
        }
        check_nr_data_blocks(nr_blocks)?;
        self.data_sm.extend(nr_blocks);
        Ok(())
    }
}

/// Data block counts the format (40-bit block numbers) and memory allow.
fn check_nr_data_blocks(nr_blocks: u64) -> Result<()> {
    use crate::limits::{MAX_DATA_BLOCKS, MAX_DATA_BLOCKS_IN_MEMORY};
    if nr_blocks > MAX_DATA_BLOCKS.min(MAX_DATA_BLOCKS_IN_MEMORY) {
        return Err(Error::Invalid(format!(
            "{nr_blocks} data blocks: at most {MAX_DATA_BLOCKS_IN_MEMORY} (use larger data blocks)"
        )));
    }
    Ok(())
}

impl crate::block_manager::ReadBlocks for TransactionManager {
    fn read_block(&mut self, b: MetaBlock, kind: BlockKind) -> Result<Arc<Block>> {
        self.bm.read(b, kind)
    }
}
