//! Pure encode/decode of every dm-thin on-disk structure (spec `dm-thin-metadata.md`).
//!
//! No I/O and no policy: each structure is a plain struct with `decode(&[u8])` and
//! `encode(&self, &mut [u8])`, or, for b-tree nodes, a view over the raw block so that the
//! hot paths never copy. Everything is little-endian and written explicitly so.

pub mod checksum;
pub mod node;
pub mod space_map;
pub mod superblock;
pub mod thin;

pub use checksum::BlockKind;

/// Reads a little-endian u32 at `off`.
#[inline]
pub fn le_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

/// Reads a little-endian u64 at `off`.
#[inline]
pub fn le_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

#[inline]
pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

#[inline]
pub fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
