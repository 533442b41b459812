//! Reference counts of metadata and data blocks, in the dm-thin space-map format (spec §5).
//!
//! `SpaceMap` holds the counts in memory exactly as the disk does — 2-bit entries packed in
//! 510-word bitmaps, an overflow map for counts ≥ 3, `nr_free` and `none_free_before` per
//! bitmap in the kernel's convention — and remembers what changed since the last commit:
//! dirty bitmaps, changed overflow keys, and blocks freed in this transaction. A block freed
//! in the open transaction is never handed out again before the commit (the committed state
//! may still reference it, spec §6.1); `take_freed` lists them at commit so the pool can
//! hole-punch freed data blocks.
//!
//! Loading and persisting the on-disk form (index block / index tree, overflow b-trees)
//! lives in `disk.rs`, because it needs the b-tree and the transaction manager.

pub mod disk;

use crate::error::{Error, Result};
use crate::format::space_map::{free_mask, get_entry, set_entry, IndexEntry, BITMAP_WORDS};
use crate::limits::ENTRIES_PER_BITMAP;
use std::collections::{BTreeMap, BTreeSet};

/// The names of the two spaces, used in errors.
pub const METADATA: &str = "metadata";
pub const DATA: &str = "data";

const FREED_WORDS: usize = (ENTRIES_PER_BITMAP as usize).div_ceil(64);

/// One bitmap block's worth of counts and its bookkeeping.
#[derive(Clone)]
pub struct Bitmap {
    pub words: Box<[u64; BITMAP_WORDS]>,
    /// Zero entries among all 16 320 (kernel convention: entries past the end count).
    pub nr_free: u32,
    pub none_free_before: u32,
    /// Where the bitmap lives on disk; 0 = not written yet.
    pub location: u64,
    /// Changed since the last commit.
    pub dirty: bool,
    /// Already moved to a block allocated in this transaction (so it is edited in place).
    pub relocated: bool,
    /// Entries freed in this transaction: not reusable until commit.
    freed: Option<Box<[u64; FREED_WORDS]>>,
}

impl Bitmap {
    fn empty() -> Self {
        Bitmap {
            words: Box::new([0; BITMAP_WORDS]),
            nr_free: ENTRIES_PER_BITMAP as u32,
            none_free_before: 0,
            location: 0,
            dirty: true,
            relocated: false,
            freed: None,
        }
    }

    /// A bitmap loaded from disk; `nr_free` and `none_free_before` are recomputed rather
    /// than trusted (thin_restore 0.9.0 writes a truncated `nr_free`, spec §9.22).
    pub fn loaded(words: Box<[u64; BITMAP_WORDS]>, location: u64) -> Self {
        let mut b = Bitmap { words, location, dirty: false, ..Self::empty() };
        b.recount();
        b
    }

    fn recount(&mut self) {
        let free: u32 = self.words.iter().map(|&w| free_mask(w).count_ones()).sum();
        self.nr_free = free;
        self.none_free_before =
            self.first_free_from(0).map_or(ENTRIES_PER_BITMAP as u32, |j| j as u32);
    }

    fn first_free_from(&self, from: usize) -> Option<usize> {
        let mut wi = from / 32;
        let mut mask = free_mask(*self.words.get(wi)?) & (!0u64 << (2 * (from % 32)));
        loop {
            if mask != 0 {
                return Some(wi * 32 + mask.trailing_zeros() as usize / 2);
            }
            wi += 1;
            mask = free_mask(*self.words.get(wi)?);
        }
    }

    fn is_freed(&self, j: usize) -> bool {
        self.freed.as_ref().is_some_and(|f| f[j / 64] >> (j % 64) & 1 == 1)
    }

    pub fn index_entry(&self) -> IndexEntry {
        IndexEntry {
            blocknr: self.location,
            nr_free: self.nr_free,
            none_free_before: self.none_free_before,
        }
    }
}

/// Reference counts for one space: the metadata device or the data device.
pub struct SpaceMap {
    space: &'static str,
    nr_blocks: u64,
    pub(crate) bitmaps: Vec<Bitmap>,
    /// True counts of blocks whose 2-bit entry is 3.
    pub(crate) overflow: BTreeMap<u64, u32>,
    /// Overflow keys changed since the last commit.
    pub(crate) overflow_dirty: BTreeSet<u64>,
    nr_allocated: u64,
    /// Where the next allocation search starts.
    cursor: u64,
    nr_freed: u64,
    /// Count changes that crossed between 1 and ≥ 2 (a block becoming shared or exclusive),
    /// since this map was made: the epoch that `thin::usage` caches exclusive counts by.
    nr_sharing_changes: u64,
}

impl SpaceMap {
    /// A map of `nr_blocks` free blocks.
    pub fn new(space: &'static str, nr_blocks: u64) -> Self {
        let mut sm = SpaceMap {
            space,
            nr_blocks: 0,
            bitmaps: Vec::new(),
            overflow: BTreeMap::new(),
            overflow_dirty: BTreeSet::new(),
            nr_allocated: 0,
            cursor: 0,
            nr_freed: 0,
            nr_sharing_changes: 0,
        };
        sm.extend(nr_blocks);
        sm
    }

    /// A map loaded from disk.
    pub fn loaded(
        space: &'static str,
        nr_blocks: u64,
        bitmaps: Vec<Bitmap>,
        overflow: BTreeMap<u64, u32>,
    ) -> Self {
        let nr_allocated = bitmaps.iter().map(|b| ENTRIES_PER_BITMAP - b.nr_free as u64).sum();
        SpaceMap {
            space,
            nr_blocks,
            bitmaps,
            overflow,
            overflow_dirty: BTreeSet::new(),
            nr_allocated,
            cursor: 0,
            nr_freed: 0,
            nr_sharing_changes: 0,
        }
    }

    /// How many count changes crossed between 1 and ≥ 2 since the map was made (or
    /// loaded): unchanged means no block became shared or exclusive.
    pub fn nr_sharing_changes(&self) -> u64 {
        self.nr_sharing_changes
    }

    pub fn space(&self) -> &'static str {
        self.space
    }

    pub fn nr_blocks(&self) -> u64 {
        self.nr_blocks
    }

    /// Blocks with a non-zero count.
    pub fn nr_allocated(&self) -> u64 {
        self.nr_allocated
    }

    /// Blocks with count zero (including those freed in this transaction).
    pub fn nr_free(&self) -> u64 {
        self.nr_blocks - self.nr_allocated
    }

    /// Blocks with count zero that can be allocated before the next commit.
    pub fn nr_allocatable(&self) -> u64 {
        self.nr_free() - self.nr_freed
    }

    fn locate(b: u64) -> (usize, usize) {
        ((b / ENTRIES_PER_BITMAP) as usize, (b % ENTRIES_PER_BITMAP) as usize)
    }

    fn check(&self, b: u64) -> Result<()> {
        if b >= self.nr_blocks {
            return Err(Error::RefCount {
                space: self.space,
                block: b,
                reason: format!("beyond the end of the space map ({} blocks)", self.nr_blocks),
            });
        }
        Ok(())
    }

    /// The reference count of block `b`.
    pub fn get(&self, b: u64) -> Result<u32> {
        self.check(b)?;
        let (bi, j) = Self::locate(b);
        Ok(match get_entry(&self.bitmaps[bi].words, j) {
            3 => self.overflow.get(&b).copied().ok_or_else(|| Error::RefCount {
                space: self.space,
                block: b,
                reason: "count ≥ 3 in the bitmap but no overflow entry".into(),
            })?,
            v => v as u32,
        })
    }

    /// The raw 2-bit entry of `b` (3 = look in the overflow map).
    pub fn bitmap_entry(&self, b: u64) -> Option<u8> {
        (b < self.nr_blocks).then(|| {
            let (bi, j) = Self::locate(b);
            get_entry(&self.bitmaps[bi].words, j)
        })
    }

    /// Sets the count of `b`, keeping every derived figure exact.
    pub fn set(&mut self, b: u64, count: u32) -> Result<()> {
        let old = self.get(b)?;
        if old == count {
            return Ok(());
        }
        if (old >= 2) != (count >= 2) {
            self.nr_sharing_changes += 1;
        }
        let (bi, j) = Self::locate(b);
        let bm = &mut self.bitmaps[bi];
        set_entry(&mut bm.words, j, count.min(3) as u8);
        bm.dirty = true;
        if old == 0 {
            bm.nr_free -= 1;
            self.nr_allocated += 1;
            if bm.none_free_before as usize == j {
                bm.none_free_before =
                    bm.first_free_from(j).map_or(ENTRIES_PER_BITMAP as u32, |f| f as u32);
            }
            if bm.is_freed(j) {
                // Re-referenced in the same transaction (e.g. a block freed then counted again).
                if let Some(f) = bm.freed.as_mut() {
                    f[j / 64] &= !(1 << (j % 64));
                }
                self.nr_freed -= 1;
            }
        } else if count == 0 {
            bm.nr_free += 1;
            self.nr_allocated -= 1;
            bm.none_free_before = bm.none_free_before.min(j as u32);
            let f = bm.freed.get_or_insert_with(|| Box::new([0; FREED_WORDS]));
            f[j / 64] |= 1 << (j % 64);
            self.nr_freed += 1;
        }
        if old > 2 || count > 2 {
            if count > 2 {
                self.overflow.insert(b, count);
            } else {
                self.overflow.remove(&b);
            }
            self.overflow_dirty.insert(b);
        }
        Ok(())
    }

    pub fn inc(&mut self, b: u64) -> Result<()> {
        self.inc_by(b, 1)
    }

    pub fn inc_by(&mut self, b: u64, n: u32) -> Result<()> {
        let c = self.get(b)?;
        let new = c.checked_add(n).ok_or_else(|| Error::RefCount {
            space: self.space,
            block: b,
            reason: "count overflows u32".into(),
        })?;
        self.set(b, new)
    }

    /// Decrements and returns the new count.
    pub fn dec(&mut self, b: u64) -> Result<u32> {
        let c = self.get(b)?;
        if c == 0 {
            return Err(Error::RefCount {
                space: self.space,
                block: b,
                reason: "decrement of a free block".into(),
            });
        }
        self.set(b, c - 1)?;
        Ok(c - 1)
    }

    /// Allocates a block (count 1) that is free now and was not freed in this transaction,
    /// searching from the cursor and wrapping around.
    pub fn alloc(&mut self) -> Result<u64> {
        let start = self.cursor.min(self.nr_blocks);
        let b = match self.find_free(start, self.nr_blocks) {
            Some(b) => b,
            None => self.find_free(0, start).ok_or_else(|| self.no_space())?,
        };
        self.set(b, 1)?;
        self.cursor = b + 1;
        Ok(b)
    }

    fn no_space(&self) -> Error {
        if self.space == METADATA {
            Error::MetadataNoSpace { nr_blocks: self.nr_blocks }
        } else {
            Error::DataNoSpace { nr_blocks: self.nr_blocks }
        }
    }

    fn find_free(&self, from: u64, to: u64) -> Option<u64> {
        let mut b = from;
        while b < to {
            let (bi, j) = Self::locate(b);
            let bm = &self.bitmaps[bi];
            let base = bi as u64 * ENTRIES_PER_BITMAP;
            if bm.nr_free > 0 {
                let mut j = j.max(bm.none_free_before as usize);
                while let Some(f) = bm.first_free_from(j) {
                    let cand = base + f as u64;
                    if cand >= to {
                        return None;
                    }
                    if !bm.is_freed(f) {
                        return Some(cand);
                    }
                    j = f + 1;
                }
            }
            b = base + ENTRIES_PER_BITMAP;
        }
        None
    }

    /// Grows the map to `nr_blocks`; new blocks are free.
    pub fn extend(&mut self, nr_blocks: u64) {
        assert!(nr_blocks >= self.nr_blocks, "space maps never shrink");
        let need = nr_blocks.div_ceil(ENTRIES_PER_BITMAP) as usize;
        while self.bitmaps.len() < need {
            self.bitmaps.push(Bitmap::empty());
        }
        self.nr_blocks = nr_blocks;
    }

    /// Ends the transaction's bookkeeping: returns the blocks freed in it (now reusable)
    /// and forgets dirtiness.
    pub fn take_freed(&mut self) -> Vec<u64> {
        let mut out = Vec::new();
        for (bi, bm) in self.bitmaps.iter_mut().enumerate() {
            if let Some(f) = bm.freed.take() {
                for (wi, &w) in f.iter().enumerate() {
                    let mut w = w;
                    while w != 0 {
                        let bit = w.trailing_zeros() as u64;
                        out.push(bi as u64 * ENTRIES_PER_BITMAP + wi as u64 * 64 + bit);
                        w &= w - 1;
                    }
                }
            }
        }
        self.nr_freed = 0;
        out
    }

    /// Runs (start, length) of blocks with count zero, in order.
    pub fn free_runs(&self) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut push = |b: u64, n: u64| match runs.last_mut() {
            Some(r) if r.0 + r.1 == b => r.1 += n,
            _ => runs.push((b, n)),
        };
        for (bi, bm) in self.bitmaps.iter().enumerate() {
            for (wi, &w) in bm.words.iter().enumerate() {
                let base = bi as u64 * ENTRIES_PER_BITMAP + wi as u64 * 32;
                if base >= self.nr_blocks {
                    return runs;
                }
                let n = 32.min(self.nr_blocks - base);
                if w == 0 {
                    push(base, n);
                    continue;
                }
                let mask = free_mask(w);
                for j in 0..n {
                    if mask >> (2 * j) & 1 == 1 {
                        push(base + j, 1);
                    }
                }
            }
        }
        runs
    }

    /// Every block with a non-zero count, with its count (for checkers and tests).
    pub fn iter_counts(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        (0..self.nr_blocks).filter_map(move |b| match self.get(b) {
            Ok(0) => None,
            Ok(c) => Some((b, c)),
            Err(_) => Some((b, u32::MAX)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_move_between_bitmap_and_overflow() {
        let mut sm = SpaceMap::new("data", 40_000);
        for n in 1..=5 {
            sm.inc(20_000).unwrap();
            assert_eq!(sm.get(20_000).unwrap(), n);
        }
        assert_eq!(sm.overflow.get(&20_000), Some(&5));
        for n in (0..5).rev() {
            assert_eq!(sm.dec(20_000).unwrap(), n);
        }
        assert!(sm.overflow.is_empty());
        assert!(sm.dec(20_000).is_err());
        assert_eq!(sm.nr_allocated(), 0);
    }

    #[test]
    fn freed_blocks_are_not_reused_before_commit() {
        let mut sm = SpaceMap::new("metadata", 10);
        let a = sm.alloc().unwrap();
        let b = sm.alloc().unwrap();
        assert_eq!((a, b), (0, 1));
        sm.dec(a).unwrap();
        sm.cursor = 0;
        assert_eq!(sm.alloc().unwrap(), 2);
        assert_eq!(sm.take_freed(), vec![0]);
        sm.cursor = 0;
        assert_eq!(sm.alloc().unwrap(), 0);
    }

    #[test]
    fn allocation_fills_every_block_then_fails() {
        let mut sm = SpaceMap::new("data", 33_000);
        for i in 0..33_000 {
            assert_eq!(sm.alloc().unwrap(), i);
        }
        assert!(sm.alloc().is_err());
        assert_eq!(sm.nr_free(), 0);
        assert_eq!(sm.bitmaps[0].nr_free, 0);
        // The last bitmap's entries past the end stay free in the kernel convention.
        assert_eq!(sm.bitmaps[2].nr_free as u64, 3 * ENTRIES_PER_BITMAP - 33_000);
    }

    #[test]
    fn none_free_before_never_hides_a_free_block() {
        let mut sm = SpaceMap::new("data", 100);
        for _ in 0..10 {
            sm.alloc().unwrap();
        }
        assert_eq!(sm.bitmaps[0].none_free_before, 10);
        sm.dec(3).unwrap();
        assert_eq!(sm.bitmaps[0].none_free_before, 3);
    }
}
