//! Every bound the engine relies on, with the reason beside it.

/// Metadata block size in bytes: fixed by the dm-thin format (spec §1).
pub const META_BLOCK_SIZE: usize = 4096;

/// Sectors are 512 bytes everywhere in dm-thin.
pub const SECTOR_SIZE: u64 = 512;

/// Two-bit entries held by one space-map bitmap block: (4096 − 16) × 4 (spec §1).
pub const ENTRIES_PER_BITMAP: u64 = 16_320;

/// Bitmaps one metadata space-map index block can describe (spec §5.2).
pub const MAX_METADATA_BITMAPS: u64 = 255;

/// The largest metadata device the format can describe, in blocks: 255 × 16 320.
pub const MAX_METADATA_BLOCKS: u64 = MAX_METADATA_BITMAPS * ENTRIES_PER_BITMAP;

/// Data block numbers in a mapping are 40 bits wide (spec §4.5 block_time).
pub const MAX_DATA_BLOCKS: u64 = 1 << 40;

/// Data blocks a pool may have: the space maps live in memory at 2 bits a block (plus a
/// bitmap's bookkeeping), so 2^35 blocks (2 PiB at 64 KiB blocks) cost 8 GiB of memory.
pub const MAX_DATA_BLOCKS_IN_MEMORY: u64 = 1 << 35;

/// Thin device ids are 24 bits in the kernel's message parser (spec §1).
pub const MAX_DEV_ID: u64 = (1 << 24) - 1;

/// Mapping times are 24 bits; the superblock `time` must never reach this (spec §9.8).
pub const MAX_TIME: u32 = (1 << 24) - 1;

/// Data block size bounds in sectors: 64 KiB … 1 GiB, a multiple of 64 KiB (spec §1).
pub const MIN_DATA_BLOCK_SECTORS: u32 = 128;
pub const MAX_DATA_BLOCK_SECTORS: u32 = 2_097_152;

/// Deepest b-tree any walker follows. A 4 KiB node holds at least 84 children, so a
/// tree of 2^64 keys is 11 levels deep; anything deeper is a cycle or corruption.
pub const MAX_BTREE_DEPTH: usize = 16;

/// Steps (entries compared or shared subtrees skipped) one changed-blocks query may take
/// before it returns a partial answer: the pool's metadata lock is held meanwhile, so this
/// keeps one query to a few milliseconds of other volumes' I/O waiting.
pub const MAX_DIFF_ITEMS_PER_CALL: usize = 1 << 16;

/// Default byte budget of the metadata block cache. 64 MiB holds every node of a
/// volume with ~4M mappings, enough that lookups in typical pools never touch the disk.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// Metadata block cache of the offline tools that stream (restore, repair): they build or
/// read each tree once, in key order, so the working set is a root-to-leaf path per
/// open tree plus the space-map bitmaps being counted; a larger cache only costs memory
/// (with 64 MiB, restoring 2 M mappings took 5x the real thin_restore's resident size).
pub const TOOLS_CACHE_BYTES: usize = 8 << 20;

/// Metadata blocks kept back for the commit itself (space-map bitmaps, index, roots)
/// so that a transaction that fills the device can still be committed. The kernel keeps
/// min(4096, nr_blocks / 10); we use the same rule.
pub fn metadata_reserve_blocks(nr_metadata_blocks: u64) -> u64 {
    (nr_metadata_blocks / 10).min(4096)
}

/// Bytes zeroed per BLKZEROOUT when a pool is created on a block device: small enough that
/// the progress bar moves (and an interrupt lands) within a second on a slow device.
pub const ZEROING_CHUNK_BYTES: u64 = 64 << 20;

/// Free metadata blocks at or below which the metadata low water mark fires (the automatic
/// metadata extend, when configured): the kernel's threshold, a quarter of the metadata or
/// 4 MiB (1024 blocks), whichever is less.
pub fn metadata_low_water_mark_blocks(nr_metadata_blocks: u64) -> u64 {
    (nr_metadata_blocks / 4).min(1024)
}
