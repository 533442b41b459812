//! A bounded cache of validated metadata blocks.
//!
//! Every block that enters the cache from the device is validated for the type the caller
//! expects (checksum with that type's salt, its own block number, and for b-tree nodes the
//! header shape); every block that leaves it for the device is sealed (self block number
//! and checksum). Dirty blocks may be written out early when the cache is over its byte
//! budget: that is safe because a dirty block is always one allocated in the open
//! transaction, so the committed state cannot reference it. The superblock is the one block
//! written in place, by `write_superblock`.
//!
//! Readers get `Arc<Block>` snapshots; writers edit through `get_mut`, which copies only if a
//! reader still holds the old snapshot.

use crate::error::{Error, Result};
use crate::format::checksum::{self, BlockKind};
use crate::format::node::NodeHeader;
use crate::io::{Block, BlockDevice};
use crate::limits::META_BLOCK_SIZE;
use crate::units::MetaBlock;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// A hasher for block numbers: one multiply, good enough for dense u64 keys.
#[derive(Default, Clone, Copy)]
pub struct BlockHasher(u64);

impl Hasher for BlockHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ *b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub type BlockMap<V> = HashMap<u64, V, BuildHasherDefault<BlockHasher>>;
pub type BlockSet = std::collections::HashSet<u64, BuildHasherDefault<BlockHasher>>;

struct Entry {
    data: Arc<Block>,
    kind: BlockKind,
    dirty: bool,
    last_used: u64,
}

pub struct BlockManager {
    dev: Arc<dyn BlockDevice>,
    cache: BlockMap<Entry>,
    capacity_blocks: usize,
    tick: u64,
    /// Metadata blocks written since this manager was made (evictions, commits and the
    /// superblock alike): the pool's statistics take differences of it.
    nr_written: u64,
}

impl BlockManager {
    pub fn new(dev: Arc<dyn BlockDevice>, cache_bytes: usize) -> Self {
        BlockManager {
            dev,
            cache: BlockMap::default(),
            capacity_blocks: (cache_bytes / META_BLOCK_SIZE).max(64),
            tick: 0,
            nr_written: 0,
        }
    }

    /// Metadata blocks written so far (a running total; never reset).
    pub fn nr_blocks_written(&self) -> u64 {
        self.nr_written
    }

    /// The cache's byte budget.
    pub fn cache_bytes(&self) -> usize {
        self.capacity_blocks * META_BLOCK_SIZE
    }

    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.dev
    }

    pub fn nr_blocks(&self) -> u64 {
        self.dev.nr_blocks()
    }

    fn check_bounds(&self, b: MetaBlock) -> Result<()> {
        let n = self.dev.nr_blocks();
        if b.0 >= n {
            return Err(Error::OutOfBounds { block: b, nr_blocks: n });
        }
        Ok(())
    }

    /// Reads and validates a block from the device, bypassing the cache.
    pub fn read_validated(&self, b: MetaBlock, kind: BlockKind) -> Result<Box<Block>> {
        self.check_bounds(b)?;
        let mut buf = Box::new([0u8; META_BLOCK_SIZE]);
        self.dev
            .read_block(b.0, &mut buf)
            .map_err(|e| Error::io(format!("reading metadata block {b}"), e))?;
        checksum::verify(&buf[..], b, kind)?;
        if kind == BlockKind::Node {
            NodeHeader::check(&buf[..], b)?;
        }
        Ok(buf)
    }

    /// A validated block of type `kind`.
    pub fn read(&mut self, b: MetaBlock, kind: BlockKind) -> Result<Arc<Block>> {
        self.tick += 1;
        if let Some(e) = self.cache.get_mut(&b.0) {
            if e.kind != kind {
                return Err(Error::corrupt(
                    b,
                    kind.name(),
                    format!("block is in use as a {}", e.kind.name()),
                ));
            }
            e.last_used = self.tick;
            return Ok(e.data.clone());
        }
        let data: Arc<Block> = Arc::from(self.read_validated(b, kind)?);
        self.insert(b, Entry { data: data.clone(), kind, dirty: false, last_used: self.tick })?;
        Ok(data)
    }

    /// The block for editing; marks it dirty. Reads it back if it was evicted.
    pub fn get_mut(&mut self, b: MetaBlock, kind: BlockKind) -> Result<&mut Block> {
        if !self.cache.contains_key(&b.0) {
            self.read(b, kind)?;
        }
        self.tick += 1;
        let tick = self.tick;
        let e =
            self.cache.get_mut(&b.0).ok_or_else(|| Error::corrupt(b, kind.name(), "vanished"))?;
        assert_eq!(
            e.kind,
            kind,
            "block {b} edited as {} but cached as {}",
            kind.name(),
            e.kind.name()
        );
        e.dirty = true;
        e.last_used = tick;
        Ok(Arc::make_mut(&mut e.data))
    }

    /// A new zeroed block of `kind` at `b` (a freshly allocated block): dirty, not read.
    pub fn zeroed(&mut self, b: MetaBlock, kind: BlockKind) -> Result<&mut Block> {
        self.check_bounds(b)?;
        self.put(b, kind, Arc::new([0u8; META_BLOCK_SIZE]))?;
        self.get_mut(b, kind)
    }

    /// Copies `src` to the freshly allocated block `dst` (the shadow copy).
    pub fn copy(&mut self, src: MetaBlock, dst: MetaBlock, kind: BlockKind) -> Result<()> {
        self.check_bounds(dst)?;
        let data = self.read(src, kind)?;
        self.put(dst, kind, Arc::new(*data))
    }

    fn put(&mut self, b: MetaBlock, kind: BlockKind, data: Arc<Block>) -> Result<()> {
        self.tick += 1;
        let e = Entry { data, kind, dirty: true, last_used: self.tick };
        self.insert(b, e)
    }

    fn insert(&mut self, b: MetaBlock, e: Entry) -> Result<()> {
        self.cache.insert(b.0, e);
        if self.cache.len() > self.capacity_blocks {
            self.evict()?;
        }
        Ok(())
    }

    /// Drops a block from the cache without writing it (its contents no longer matter:
    /// it was freed).
    pub fn forget(&mut self, b: MetaBlock) {
        self.cache.remove(&b.0);
    }

    /// Evicts the least recently used quarter of the cache, writing dirty blocks out.
    fn evict(&mut self) -> Result<()> {
        let target = self.capacity_blocks * 3 / 4;
        let excess = self.cache.len().saturating_sub(target);
        if excess == 0 {
            return Ok(());
        }
        let mut ages: Vec<(u64, u64)> = self.cache.iter().map(|(b, e)| (e.last_used, *b)).collect();
        ages.select_nth_unstable(excess - 1);
        let victims: Vec<u64> = ages[..excess].iter().map(|&(_, b)| b).collect();
        let mut dirty: Vec<(u64, Box<Block>)> = Vec::new();
        for b in victims {
            if let Some(e) = self.cache.remove(&b) {
                if e.dirty {
                    let mut data = Box::new(*e.data);
                    checksum::seal(&mut data[..], MetaBlock(b), e.kind);
                    dirty.push((b, data));
                }
            }
        }
        self.write_out(&dirty)
    }

    fn write_out(&mut self, blocks: &[(u64, Box<Block>)]) -> Result<()> {
        if blocks.is_empty() {
            return Ok(());
        }
        self.nr_written += blocks.len() as u64;
        let writes: Vec<(u64, &Block)> = blocks.iter().map(|(b, d)| (*b, &**d)).collect();
        self.dev.write_many(&writes).map_err(|e| Error::io("writing metadata blocks", e))
    }

    /// Writes every dirty block (sealed) and flushes the device: commit step 4 (spec §6.5).
    pub fn flush(&mut self) -> Result<()> {
        let mut dirty: Vec<(u64, Box<Block>)> = Vec::new();
        for (b, e) in self.cache.iter_mut() {
            if e.dirty {
                let mut data = Box::new(*e.data);
                checksum::seal(&mut data[..], MetaBlock(*b), e.kind);
                dirty.push((*b, data));
                e.dirty = false;
            }
        }
        self.write_out(&dirty)?;
        self.dev.flush().map_err(|e| Error::io("flushing the metadata device", e))
    }

    /// Seals and writes the superblock at block 0, then flushes: commit step 5.
    pub fn write_superblock(&mut self, sb: &Block) -> Result<()> {
        let mut data = Box::new(*sb);
        checksum::seal(&mut data[..], MetaBlock(0), BlockKind::Superblock);
        self.nr_written += 1;
        self.dev.write_block(0, &data).map_err(|e| Error::io("writing the superblock", e))?;
        self.dev.flush().map_err(|e| Error::io("flushing the superblock", e))?;
        self.cache.remove(&0);
        Ok(())
    }

    /// Number of dirty blocks (for tests and statistics).
    pub fn nr_dirty(&self) -> usize {
        self.cache.values().filter(|e| e.dirty).count()
    }

    /// Drops every cached block (used after an abort: the device holds the committed state).
    pub fn clear(&mut self) {
        self.cache.clear();
    }
}

/// Anything that hands out validated metadata blocks: the block manager itself (read-only
/// tools, loading) or a transaction.
pub trait ReadBlocks {
    fn read_block(&mut self, b: MetaBlock, kind: BlockKind) -> Result<Arc<Block>>;
}

impl ReadBlocks for BlockManager {
    fn read_block(&mut self, b: MetaBlock, kind: BlockKind) -> Result<Arc<Block>> {
        self.read(b, kind)
    }
}
